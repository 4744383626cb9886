//! Service accounts (admin ones, with an organisation role; portfolio ones, always Requesters)
//! and their API keys: created, rotated with a grace period, revoked. A deactivated or deleted
//! account's open change requests are cancelled.

use fluxgate_authz::{Action, Target};
use fluxgate_domain::{
    Description, KeyId, PortfolioId, PrincipalId, Refusal, Role, ServiceAccountId, Title,
};
use fluxgate_store::catalog::{self, Kind};
use fluxgate_store::changes::EntityKind;
use fluxgate_store::service_accounts as store;
use fluxgate_store::{DbConnection, Tx, audit, groups};

pub use fluxgate_store::service_accounts::{Key, ServiceAccount};

use crate::audit::AuditAction;
use crate::change_requests::cancel_for_departed_submitter;
use crate::context::{Command, Ctx};
use crate::error::{Error, Result};
use crate::etag;
use crate::secrets::{format_api_key, random_token, token_hash};

/// Longest grace a rotated key may keep.
pub const MAX_GRACE_SECS: u64 = 7 * 86_400;

/// The audit trail's target types.
const TARGET: &str = "service_account";
const KEY_TARGET: &str = "service_account_key";

pub fn name(id: &str) -> String {
    format!("serviceAccounts/{id}")
}

pub fn key_name(sa: &str, key: &str) -> String {
    format!("serviceAccounts/{sa}/keys/{key}")
}

fn snapshot(sa: &ServiceAccount) -> Option<String> {
    serde_json::to_string(&serde_json::json!({
        "display_name": sa.display_name,
        "description": sa.description,
        "portfolio_id": sa.portfolio_id,
        "role": sa.role.as_str(),
        "active": sa.active,
        "audit_writer": sa.audit_writer,
        "provisioner": sa.provisioner,
    }))
    .ok()
}

/// Who manages an account: the organisation's, or its portfolio's, administrators.
fn scope(portfolio: Option<&str>) -> Result<Target> {
    match portfolio {
        None => Ok(Target::Org),
        Some(p) => Ok(Target::Portfolio(
            p.parse::<PortfolioId>()
                .map_err(|_| Error::Broken(format!("bad portfolio id {p}")))?,
        )),
    }
}

fn load(conn: &mut DbConnection, id: &str) -> Result<ServiceAccount> {
    store::find(conn, id)?.ok_or_else(|| Error::not_found("service account"))
}

/// The account `id`, if the actor may manage it.
pub fn managed(cx: &Ctx<'_>, conn: &mut DbConnection, id: &str) -> Result<ServiceAccount> {
    let sa = load(conn, id)?;
    let target = scope(sa.portfolio_id.as_deref())?;
    cx.authorize(Action::ManageServiceAccounts, target)?;
    Ok(sa)
}

/// The account's principal id.
fn principal_of(id: &str) -> Result<PrincipalId> {
    id.parse::<ServiceAccountId>()
        .map(PrincipalId::ServiceAccount)
        .map_err(|_| Error::Broken(format!("bad service account id {id}")))
}

/// A new key for account `sa`, created by the actor (the account then acts for it too), and
/// the API key to show once.
fn new_key(
    cx: &Ctx<'_>,
    now: i64,
    sa: &str,
    display_name: String,
    expires_at: Option<i64>,
) -> Result<(Key, String)> {
    let id = KeyId::generate();
    let secret = random_token(32);
    let key = Key {
        id: id.to_string(),
        service_account_id: sa.to_owned(),
        display_name,
        secret_hash: token_hash(&secret),
        created_at: now,
        expires_at,
        revoked_at: None,
        created_by: Some(cx.actor()?.id.to_string()),
    };
    Ok((key, format_api_key(id, &secret)))
}

/// A new account.
#[derive(Debug, Clone)]
pub struct Create {
    pub display_name: Title,
    pub description: Description,
    pub role: Role,
    pub portfolio: Option<String>,
    pub audit_writer: bool,
    /// A provisioning account (SCIM): organisation-wide, a Requester, nothing else.
    pub provisioner: bool,
}

impl Command for Create {
    type Output = ServiceAccount;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        cx.authorize(
            Action::ManageServiceAccounts,
            scope(self.portfolio.as_deref())?,
        )?;
        if self.role != Role::Requester || self.audit_writer || self.provisioner {
            cx.authorize(Action::ChangeServiceAccountRole, Target::Org)?;
        }
        if self.provisioner && (self.portfolio.is_some() || self.audit_writer) {
            return Err(Error::invalid(
                "service_account.provisioner",
                "a provisioning account is an organisation's (no portfolio) and does nothing \
                 else (no audit writing)",
            ));
        }
        if self.portfolio.is_some() && self.audit_writer {
            return Err(Error::invalid(
                "service_account.audit_writer",
                "only admin service accounts may write audit events",
            ));
        }
        Ok(())
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<ServiceAccount> {
        if let Some(po) = &self.portfolio {
            catalog::find(tx.conn, Kind::Portfolio, po)?
                .ok_or_else(|| Error::not_found("portfolio"))?;
        }
        let sa = ServiceAccount {
            id: ServiceAccountId::generate().to_string(),
            display_name: self.display_name.as_str().to_owned(),
            description: self.description.as_str().to_owned(),
            portfolio_id: self.portfolio,
            role: self.role,
            active: true,
            created_at: tx.now,
            updated_at: tx.now,
            version: 1,
            audit_writer: self.audit_writer,
            created_by: Some(cx.actor()?.id.to_string()),
            provisioner: self.provisioner,
        };
        store::insert(tx.conn, &sa)?;
        tx.changed(EntityKind::ServiceAccount, sa.id.clone());
        let mut e = cx.event(
            AuditAction::ServiceAccountCreated,
            TARGET,
            Some(name(&sa.id)),
        );
        e.after_json = snapshot(&sa);
        audit::append(tx.conn, e, tx.now)?;
        Ok(sa)
    }
}

/// A page of accounts (of one portfolio, or the organisation's admin ones) after the id
/// `after`; one more than `limit` tells the caller there is more.
pub fn list(
    cx: &Ctx<'_>,
    conn: &mut DbConnection,
    portfolio: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<ServiceAccount>> {
    cx.authorize(Action::ManageServiceAccounts, scope(portfolio)?)?;
    Ok(store::list(conn, portfolio, after, limit)?)
}

/// Changes an account; `None` fields stay.
#[derive(Debug, Clone)]
pub struct Update {
    pub id: String,
    pub etag: String,
    pub display_name: Option<Title>,
    pub description: Option<Description>,
    pub role: Option<Role>,
    pub active: Option<bool>,
    pub audit_writer: Option<bool>,
}

impl Update {
    /// Role and audit-writer changes: admin accounts only, and a right of their own.
    fn check_powers(&self, cx: &Ctx<'_>, before: &ServiceAccount) -> Result<()> {
        if let Some(r) = self.role
            && r != before.role
        {
            if before.portfolio_id.is_some() {
                return Err(Refusal::PortfolioAccountRole.into());
            }
            cx.authorize(Action::ChangeServiceAccountRole, Target::Org)?;
        }
        if let Some(w) = self.audit_writer
            && w != before.audit_writer
        {
            if before.portfolio_id.is_some() {
                return Err(Refusal::PortfolioAccountAuditWriter.into());
            }
            cx.authorize(Action::ChangeServiceAccountRole, Target::Org)?;
        }
        Ok(())
    }

    fn changed(&self, before: &ServiceAccount) -> ServiceAccount {
        let mut after = before.clone();
        if let Some(n) = &self.display_name {
            after.display_name = n.as_str().to_owned();
        }
        if let Some(d) = &self.description {
            after.description = d.as_str().to_owned();
        }
        after.role = self.role.unwrap_or(after.role);
        after.active = self.active.unwrap_or(after.active);
        after.audit_writer = self.audit_writer.unwrap_or(after.audit_writer);
        after
    }
}

impl Command for Update {
    type Output = ServiceAccount;

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<ServiceAccount> {
        let before = managed(cx, tx.conn, &self.id)?;
        self.check_powers(cx, &before)?;
        etag::check(&self.etag, &before.id, before.version)?;
        let after = self.changed(&before);
        if after == before {
            return Ok(before);
        }
        store::update(tx.conn, &after, tx.now)?;
        tx.changed(EntityKind::ServiceAccount, before.id.clone());
        if before.active && !after.active {
            let why = "its submitter was deactivated";
            cancel_for_departed_submitter(cx, tx, principal_of(&before.id)?, why)?;
        }
        let mut e = cx.event(
            AuditAction::ServiceAccountUpdated,
            TARGET,
            Some(name(&before.id)),
        );
        e.before_json = snapshot(&before);
        e.after_json = snapshot(&after);
        audit::append(tx.conn, e, tx.now)?;
        load(tx.conn, &before.id)
    }
}

/// Deletes an account, with its keys, memberships and open change requests.
#[derive(Debug, Clone)]
pub struct Delete {
    pub id: String,
    pub etag: String,
}

impl Command for Delete {
    type Output = ();

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<()> {
        let before = managed(cx, tx.conn, &self.id)?;
        etag::check(&self.etag, &before.id, before.version)?;
        let why = "its submitter was deleted";
        cancel_for_departed_submitter(cx, tx, principal_of(&before.id)?, why)?;
        for g in groups::remove_principal(tx.conn, "service_account", &before.id)? {
            groups::touch(tx.conn, &g, tx.now)?;
            tx.changed(EntityKind::Group, g);
        }
        store::delete(tx.conn, &before.id)?;
        tx.changed(EntityKind::ServiceAccount, before.id.clone());
        let mut e = cx.event(
            AuditAction::ServiceAccountDeleted,
            TARGET,
            Some(name(&before.id)),
        );
        e.before_json = snapshot(&before);
        audit::append(tx.conn, e, tx.now)?;
        Ok(())
    }
}

/// A new API key for an account. Answers the key and the API key (shown once).
#[derive(Debug, Clone)]
pub struct CreateKey {
    pub account: String,
    pub display_name: String,
    pub expires_at: Option<i64>,
}

impl Command for CreateKey {
    type Output = (Key, String);

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<(Key, String)> {
        let sa = managed(cx, tx.conn, &self.account)?;
        let (key, secret) = new_key(cx, tx.now, &sa.id, self.display_name, self.expires_at)?;
        store::insert_key(tx.conn, &key)?;
        tx.changed(EntityKind::ServiceAccount, sa.id.clone());
        let target = Some(key_name(&sa.id, &key.id));
        let mut e = cx.event(AuditAction::ServiceAccountKeyCreated, KEY_TARGET, target);
        e.detail = key.expires_at.map(|x| format!("expires at {x} µs"));
        audit::append(tx.conn, e, tx.now)?;
        Ok((key, secret))
    }
}

/// The keys of an account the actor manages.
pub fn keys(cx: &Ctx<'_>, conn: &mut DbConnection, account: &str) -> Result<Vec<Key>> {
    let sa = managed(cx, conn, account)?;
    Ok(store::keys(conn, &sa.id)?)
}

/// Rotates a key (`grace`: how long the old one keeps working) or revokes it (`None`).
/// Answers the old key and, for a rotation, the new key with its API key (shown once).
#[derive(Debug, Clone)]
pub struct RetireKey {
    pub account: String,
    pub key: String,
    pub grace_secs: Option<u64>,
}

impl Command for RetireKey {
    type Output = (Key, Option<(Key, String)>);

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<(Key, Option<(Key, String)>)> {
        let sa = managed(cx, tx.conn, &self.account)?.id;
        let mut old = store::find_key(tx.conn, &self.key)?
            .filter(|k| k.service_account_id == sa)
            .ok_or_else(|| Error::not_found("key"))?;
        let live = old.revoked_at.is_none() && old.expires_at.is_none_or(|e| e > tx.now);
        if !live {
            return Err(Refusal::KeyNotLive.into());
        }
        let (action, fresh) = match self.grace_secs {
            Some(g) => {
                let until = tx.now + (g as i64) * 1_000_000;
                old.expires_at = Some(old.expires_at.map_or(until, |e| e.min(until)));
                let (k, secret) = new_key(cx, tx.now, &sa, old.display_name.clone(), None)?;
                store::insert_key(tx.conn, &k)?;
                (AuditAction::ServiceAccountKeyRotated, Some((k, secret)))
            }
            None => {
                old.revoked_at = Some(tx.now);
                (AuditAction::ServiceAccountKeyRevoked, None)
            }
        };
        store::update_key(tx.conn, &old)?;
        tx.changed(EntityKind::ServiceAccount, sa.clone());
        let mut e = cx.event(action, KEY_TARGET, Some(key_name(&sa, &old.id)));
        if let Some((k, _)) = &fresh {
            let grace = self.grace_secs.unwrap_or(0);
            e.detail = Some(format!(
                "replaced by {}; grace {grace} s",
                key_name(&sa, &k.id)
            ));
        }
        audit::append(tx.conn, e, tx.now)?;
        Ok((old, fresh))
    }
}
