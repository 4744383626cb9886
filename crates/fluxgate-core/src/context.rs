//! What every use case is given: who acts, from where, and the engine's view of the world.

use fluxgate_authz::{Action, Snapshot, Target};
use fluxgate_domain::{KeyId, PrincipalId, Role, SessionId, UserId};
use fluxgate_store::Tx;
use fluxgate_store::audit::NewEvent;

use crate::audit::{self, AuditAction};
use crate::error::{Error, Result};
use crate::mail::Outbox;

/// An authenticated caller, as the directory knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub id: PrincipalId,
    /// The session of a user's access token.
    pub session_id: Option<SessionId>,
    /// The API key a service account authenticated with.
    pub key_id: Option<KeyId>,
    /// Username, or a service account's display name.
    pub name: String,
    pub role: Role,
    pub active: bool,
    pub must_change_password: bool,
}

impl Actor {
    pub fn user_id(&self) -> Option<UserId> {
        match self.id {
            PrincipalId::User(u) => Some(u),
            PrincipalId::ServiceAccount(_) => None,
        }
    }
}

/// Where a request came from, for the audit trail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The request id (`x-request-id`); `None` for the server's own work.
    pub request_id: Option<String>,
    /// The client's address.
    pub peer_addr: Option<String>,
}

/// What the server's configuration sets for the use cases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// How long a registration link works.
    pub registration_ttl_secs: u64,
    /// How long a password-reset link works.
    pub reset_ttl_secs: u64,
    /// Whether a user created with a password is sent a welcome.
    pub welcome_email: bool,
    /// Reset links one account is sent per hour at most.
    pub reset_requests_per_account_per_hour: u32,
    /// Reset requests one client address may make per hour.
    pub reset_requests_per_client_per_hour: u32,
    /// How long a rotated refresh token may be presented again (a client's retry) before its
    /// reuse counts as theft.
    pub refresh_reuse_grace_micros: i64,
    /// The portfolio whose groups SCIM names by their name alone (else `{portfolio}/{group}`).
    pub scim_default_portfolio: Option<String>,
    /// Whether webhooks may use http:// to any host (else only to a loopback address).
    pub webhook_allow_http: bool,
    /// Private networks webhooks may be sent to despite the request-forgery rule.
    pub webhook_private_networks: Vec<crate::destinations::Network>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            registration_ttl_secs: 7 * 86_400,
            reset_ttl_secs: 3_600,
            welcome_email: true,
            reset_requests_per_account_per_hour: 3,
            reset_requests_per_client_per_hour: 30,
            refresh_reuse_grace_micros: 2_000_000,
            scim_default_portfolio: None,
            webhook_allow_http: false,
            webhook_private_networks: Vec::new(),
        }
    }
}

/// A use case's context: the actor (`None` when the server acts on its own, as the expiry sweep
/// does), the origin, the engine snapshot the call is judged against, where email goes, and
/// the configured limits.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub actor: Option<&'a Actor>,
    pub origin: &'a Origin,
    pub snap: &'a Snapshot,
    pub outbox: Option<&'a dyn Outbox>,
    pub limits: &'a Limits,
}

impl<'a> Ctx<'a> {
    /// The acting principal; a use case that needs one and runs without is a bug.
    pub fn actor(&self) -> Result<&'a Actor> {
        self.actor
            .ok_or_else(|| Error::Broken("a use case that needs an actor ran without one".into()))
    }

    /// Where email goes; a use case that sends some and runs without one is a bug.
    pub fn outbox(&self) -> Result<&'a dyn Outbox> {
        self.outbox.ok_or_else(|| {
            Error::Broken("a use case that sends email ran without an outbox".into())
        })
    }

    /// Asks the engine whether the actor may do `action` to `target`.
    pub fn authorize(&self, action: Action, target: Target) -> Result<()> {
        let actor = self.actor()?;
        let d = self.snap.authorize(&actor.id, action, target);
        if d.allowed {
            Ok(())
        } else {
            Err(Error::denied(action.as_str(), d.reason))
        }
    }

    /// An audit event of this call: `action` on `target`, by the actor, from the origin.
    pub fn event(
        &self,
        action: AuditAction,
        target_type: &str,
        target: Option<String>,
    ) -> NewEvent {
        let mut e = audit::event(action, target_type, target);
        if let Some(a) = self.actor {
            e.actor_id = Some(a.id.to_string());
            e.actor_name = Some(a.name.clone());
            e.actor_role = Some(a.role.as_str().to_owned());
        }
        e.request_id = self.origin.request_id.clone();
        e.peer_addr = self.origin.peer_addr.clone();
        e
    }
}

/// A typed operation: checked against the snapshot first, then applied in one write
/// transaction.
pub trait Command: Send + 'static {
    type Output: Send + 'static;

    /// What can be decided without the database (the engine's verdict, say), before the
    /// store-wide write lock is taken. Whatever can change meanwhile is checked again in
    /// [`Command::apply`].
    fn check(&self, _cx: &Ctx<'_>) -> Result<()> {
        Ok(())
    }

    /// The change, in the caller's transaction.
    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<Self::Output>;
}
