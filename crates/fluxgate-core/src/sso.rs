//! Sign-in through an organisation's identity provider (OpenID Connect): the rules once the
//! server has checked what the provider said. The protocol (discovery, the code exchange, the ID
//! token's signature, issuer, audience, expiry and nonce) lives in the server; this module takes
//! a [`Vouched`] identity and decides who it is here.
//!
//! A sign-in is four writes:
//! 1. [`Begin`] stores the pending sign-in: the digest of its `state`, the nonce and PKCE
//!    verifier sent to the provider, and the S256 challenge of the client that will collect the
//!    session (the console, or fluxctl on a loopback address).
//! 2. [`TakePending`] takes it back when the provider answers (single use: a replayed answer
//!    finds nothing), refusing an answer that came back to another provider's address.
//! 3. [`Finish`] finds the user (by the linked identity; else by verified email where the
//!    provider allows it; else created where allowed), applies the provider's claims to the
//!    role and the mapped groups, audits each change, and leaves a one-time handoff code.
//! 4. [`Collect`] opens an ordinary session for the client holding the verifier.
//!
//! Every refusal is audited ([`RecordFailure`]) with one clear reason.

use fluxgate_domain::{DisplayName, Email, Refusal, Role, UserId, Username};
use fluxgate_store::changes::EntityKind;
use fluxgate_store::{Tx, audit, catalog, groups, sign_in, sso, users};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use crate::audit::AuditAction;
use crate::context::{Command, Ctx};
use crate::error::{Error, Result};
use crate::secrets::token_hash;
use crate::sessions::{IssuedRefresh, as_actor, open_session};
use crate::users::User;

/// How long a sign-in may stay at the provider.
pub const PENDING_TTL_MICROS: i64 = 10 * 60 * 1_000_000;
/// How long a handoff code waits for its client.
pub const HANDOFF_TTL_MICROS: i64 = 2 * 60 * 1_000_000;
/// Sign-ins one client address may start in ten minutes (each stores a pending row).
pub const STARTS_PER_CLIENT: i32 = 100;

/// A FluxGate group a provider's claim value maps to, by names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupTarget {
    pub portfolio: String,
    pub group: String,
}

/// What an administrator allows a provider to do (from the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// The provider's identifier in the configuration.
    pub provider: String,
    /// Link a first sign-in to the account with the same email, when the provider says the
    /// email is verified.
    pub link_by_email: bool,
    /// Create an account for an identity that matches none.
    pub create_users: bool,
    /// The role of a created account, and of any account when role mapping finds no value.
    pub default_role: Role,
    /// The claim whose values map to the organisation role (`roles`, say), if any.
    pub role_claim: Option<String>,
    /// (claim value, role): the highest role among the values present wins.
    pub role_map: Vec<(String, Role)>,
    /// The claim whose values map to portfolio groups (`groups`, say), if any.
    pub groups_claim: Option<String>,
    /// (claim value, group): membership of each mapped group follows the claim at every
    /// sign-in; groups no value maps to are left alone.
    pub group_map: Vec<(String, GroupTarget)>,
}

/// An identity the provider vouched for, its ID token checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Vouched {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub preferred_username: Option<String>,
    /// The values of the role claim (a string or an array of strings in the token).
    pub roles: Vec<String>,
    /// The values of the groups claim.
    pub groups: Vec<String>,
}

/// The S256 challenge of a PKCE verifier (RFC 7636).
pub fn s256(verifier: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Stores a pending sign-in.
#[derive(Debug, Clone)]
pub struct Begin {
    pub provider: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub client_challenge: String,
    pub return_to: Option<String>,
    /// The client's address, for the rate limit.
    pub client: String,
}

impl Command for Begin {
    type Output = ();

    fn apply(self, _cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<()> {
        let key = format!("sso_start:client:{}", self.client);
        if fluxgate_store::rate_limits::hit(tx.conn, &key, 10 * 60 * 1_000_000, tx.now)?
            > STARTS_PER_CLIENT
        {
            return Err(Refusal::TooManySignIns.into());
        }
        let p = sso::Pending {
            state_hash: token_hash(&self.state),
            provider: self.provider,
            nonce: self.nonce,
            pkce_verifier: self.pkce_verifier,
            client_challenge: self.client_challenge,
            return_to: self.return_to,
            created_at: tx.now,
            expires_at: tx.now + PENDING_TTL_MICROS,
        };
        sso::put_pending(tx.conn, &p, tx.now)?;
        Ok(())
    }
}

fn failed(why: impl Into<String>) -> Error {
    Refusal::SsoFailed { why: why.into() }.into()
}

/// Takes a pending sign-in back, by the `state` the provider returned, for the provider whose
/// address the answer came to. Whatever comes next, the pending sign-in is gone: the inner
/// [`NotTaken`] (a state that is unknown, used, expired, or sent to another provider) commits
/// its removal too, and says why.
#[derive(Debug, Clone)]
pub struct TakePending {
    pub provider: String,
    pub state: String,
}

/// Why a provider's answer found no sign-in to finish, and where its client waits (when the
/// sign-in was found, and used up, after all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotTaken {
    pub why: String,
    pub return_to: Option<String>,
}

impl Command for TakePending {
    type Output = std::result::Result<sso::Pending, NotTaken>;

    fn apply(self, _cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<Self::Output> {
        let Some(p) = sso::take_pending(tx.conn, &token_hash(&self.state))? else {
            return Ok(Err(NotTaken {
                why: "the sign-in is unknown, already used or expired (wrong state): start again"
                    .into(),
                return_to: None,
            }));
        };
        let why = if p.expires_at <= tx.now {
            "the sign-in took too long: start again".to_owned()
        } else if p.provider != self.provider {
            // The mix-up attack: an answer meant for one provider delivered to another's.
            format!(
                "the answer came back to provider {:?}, but the sign-in went to {:?}",
                self.provider, p.provider
            )
        } else {
            return Ok(Ok(p));
        };
        Ok(Err(NotTaken {
            why,
            return_to: p.return_to,
        }))
    }
}

/// Records a refused sign-in through a provider.
#[derive(Debug, Clone)]
pub struct RecordFailure {
    pub provider: String,
    /// The identity, when the provider's answer got far enough to name one.
    pub subject: Option<String>,
    pub why: String,
}

impl Command for RecordFailure {
    type Output = ();

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<()> {
        let target = format!("identityProviders/{}", self.provider);
        let mut e = cx.event(
            AuditAction::AuthSsoFailed,
            "identity_provider",
            Some(target),
        );
        e.outcome = "failure".into();
        e.detail = Some(match &self.subject {
            Some(s) => format!("{} (subject {s:?})", self.why),
            None => self.why,
        });
        audit::append(tx.conn, e, tx.now)?;
        Ok(())
    }
}

/// Finds (or links, or creates) the user of a vouched identity, applies the provider's claims,
/// and leaves a handoff for the client: answers the user.
#[derive(Debug, Clone)]
pub struct Finish {
    pub rules: Rules,
    pub vouched: Vouched,
    pub client_challenge: String,
    /// The one-time code the client collects the session with (stored by digest).
    pub handoff_code: String,
}

impl Finish {
    /// The user of the identity: linked before, linked now by verified email, or created.
    fn resolve(&self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<User> {
        let v = &self.vouched;
        if let Some(i) = sso::find_identity(tx.conn, &v.issuer, &v.subject)? {
            let id: UserId = i
                .user_id
                .parse()
                .map_err(|_| Error::Broken("bad user id in user_identities".into()))?;
            sso::touch_identity(tx.conn, &v.issuer, &v.subject, v.email.as_deref(), tx.now)?;
            return users::find(tx.conn, id)?
                .ok_or_else(|| Error::Broken("linked user gone".into()));
        }
        let email = v.email.as_deref().map(str::to_lowercase);
        let by_email = match &email {
            Some(e) => users::find_by_email(tx.conn, e)?,
            None => None,
        };
        let (user, how) = match by_email {
            Some(u) if self.rules.link_by_email && v.email_verified => (u, "by verified email"),
            Some(_) if self.rules.link_by_email => {
                return Err(failed(
                    "the provider did not say the email is verified: it cannot link this \
                     identity to the account with that email",
                ));
            }
            Some(_) => {
                return Err(failed(
                    "an account with this email exists, and this provider may not link to it \
                     by email: ask a Team Admin",
                ));
            }
            None if self.rules.create_users => (self.create(cx, tx)?, "to a new account"),
            None => return Err(Refusal::SsoNoAccount.into()),
        };
        sso::link(
            tx.conn,
            &sso::Identity {
                issuer: v.issuer.clone(),
                subject: v.subject.clone(),
                user_id: user.id.to_string(),
                provider: self.rules.provider.clone(),
                email: email.clone(),
                created_at: tx.now,
                last_sign_in_at: Some(tx.now),
            },
        )?;
        let actor = as_actor(&user);
        let cx = Ctx {
            actor: Some(&actor),
            ..*cx
        };
        let mut e = cx.event(
            AuditAction::UserIdentityLinked,
            "user",
            Some(format!("users/{}", user.id)),
        );
        e.detail = Some(format!(
            "{} identity {:?} of {} linked {how}",
            self.rules.provider, v.subject, v.issuer
        ));
        audit::append(tx.conn, e, tx.now)?;
        Ok(user)
    }

    /// A new account for the identity: no password (it signs in through the provider only).
    fn create(&self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<User> {
        let v = &self.vouched;
        let Some(email) = v.email.as_deref().filter(|_| v.email_verified) else {
            return Err(failed(
                "the provider gave no verified email: an account cannot be created for it",
            ));
        };
        let email = Email::parse(email).map_err(|_| failed("the provider's email is not valid"))?;
        // The provider's preferred username, else the email's local part.
        let raw = v
            .preferred_username
            .as_deref()
            .unwrap_or(email.as_str())
            .split('@')
            .next()
            .unwrap_or_default();
        let username = free_username(tx.conn, raw)?;
        let shown = v
            .name
            .clone()
            .unwrap_or_else(|| username.as_str().to_owned());
        let display = DisplayName::parse(&shown)
            .or_else(|_| DisplayName::parse(username.as_str()))
            .map_err(|_| failed("the provider's name is not valid"))?;
        let id = UserId::generate();
        let role = self.role_of(None);
        users::insert(
            tx.conn,
            &users::NewUser {
                id,
                username: username.as_str(),
                email: email.as_str(),
                display_name: display.as_str(),
                role,
                must_change_password: false,
                password_hash: None,
            },
            tx.now,
        )?;
        sign_in::put(
            tx.conn,
            &sign_in::SignIn {
                user_id: id.to_string(),
                sso_only: true,
                ..Default::default()
            },
        )?;
        tx.changed(EntityKind::User, id.to_string());
        let user =
            users::find(tx.conn, id)?.ok_or_else(|| Error::Broken("user vanished".into()))?;
        let actor = as_actor(&user);
        let cx = Ctx {
            actor: Some(&actor),
            ..*cx
        };
        let mut e = cx.event(
            AuditAction::UserCreated,
            "user",
            Some(format!("users/{id}")),
        );
        e.detail = Some(format!(
            "created at first sign-in through {} (role {}), signs in through it only",
            self.rules.provider,
            role.as_str()
        ));
        audit::append(tx.conn, e, tx.now)?;
        Ok(user)
    }

    /// The role the claims give (the highest mapped value present), or the default; `current`
    /// when role mapping is not configured.
    fn role_of(&self, current: Option<Role>) -> Role {
        if self.rules.role_claim.is_none() {
            return current.unwrap_or(self.rules.default_role);
        }
        self.rules
            .role_map
            .iter()
            .filter(|(value, _)| self.vouched.roles.iter().any(|r| r == value))
            .map(|(_, role)| *role)
            .max()
            .unwrap_or(self.rules.default_role)
    }

    /// Applies the role the claims give; never demotes the last active Team Admin.
    fn map_role(&self, cx: &Ctx<'_>, tx: &mut Tx<'_>, user: &User) -> Result<User> {
        let role = self.role_of(Some(user.role));
        if role == user.role {
            return Ok(user.clone());
        }
        let mut e = cx.event(
            AuditAction::UserUpdated,
            "user",
            Some(format!("users/{}", user.id)),
        );
        let last = user.role == Role::TeamAdmin
            && user.active
            && users::count_active_admins(tx.conn, Some(user.id))? == 0;
        if last {
            e.outcome = "denied".into();
            e.detail = Some(format!(
                "role {} -> {} from {} claims not applied: the last active Team Admin",
                user.role, role, self.rules.provider
            ));
            audit::append(tx.conn, e, tx.now)?;
            return Ok(user.clone());
        }
        let after = User {
            role,
            ..user.clone()
        };
        users::update(tx.conn, &after, tx.now)?;
        tx.changed(EntityKind::User, user.id.to_string());
        e.detail = Some(format!(
            "role {} -> {} from {} claims",
            user.role, role, self.rules.provider
        ));
        audit::append(tx.conn, e, tx.now)?;
        users::find(tx.conn, user.id)?.ok_or_else(|| Error::Broken("user vanished".into()))
    }

    /// Makes membership of every mapped group follow the claims. Answers the mapped groups
    /// that do not exist here (for the server's log).
    fn map_groups(&self, cx: &Ctx<'_>, tx: &mut Tx<'_>, user: &User) -> Result<Vec<String>> {
        let mut missing = Vec::new();
        if self.rules.groups_claim.is_none() {
            return Ok(missing);
        }
        let uid = user.id.to_string();
        let mut targets: Vec<(&GroupTarget, bool)> = Vec::new();
        for (value, target) in &self.rules.group_map {
            let wanted = self.vouched.groups.iter().any(|g| g == value);
            match targets.iter_mut().find(|(t, _)| *t == target) {
                Some((_, w)) => *w |= wanted,
                None => targets.push((target, wanted)),
            }
        }
        for (target, wanted) in targets {
            let Some(p) =
                catalog::find_by_name(tx.conn, catalog::Kind::Portfolio, "", &target.portfolio)?
            else {
                missing.push(format!("portfolio {:?}", target.portfolio));
                continue;
            };
            let Some(g) = groups::find_by_name(tx.conn, &p.id, &target.group)? else {
                missing.push(format!(
                    "group {:?} of {:?}",
                    target.group, target.portfolio
                ));
                continue;
            };
            let is = groups::is_member(tx.conn, &g.id, "user", &uid)?;
            let action = match (wanted, is) {
                (true, false) => {
                    groups::add_member(tx.conn, &g.id, "user", &uid, tx.now)?;
                    AuditAction::GroupMemberAdded
                }
                (false, true) => {
                    groups::remove_member(tx.conn, &g.id, "user", &uid)?;
                    AuditAction::GroupMemberRemoved
                }
                _ => continue,
            };
            groups::touch(tx.conn, &g.id, tx.now)?;
            tx.changed(EntityKind::Group, g.id.clone());
            let name = crate::names::group(&p.id, &g.id);
            let mut e = cx.event(action, "group", Some(name));
            e.detail = Some(format!(
                "users/{uid}; from {} claims at sign-in",
                self.rules.provider
            ));
            audit::append(tx.conn, e, tx.now)?;
        }
        Ok(missing)
    }
}

/// The username [`free_username`] tries first for `raw`: lower-cased, other characters than
/// letters, digits, '.', '_' and '-' replaced.
pub(crate) fn username_base(raw: &str) -> String {
    let base: String = raw
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .take(56)
        .collect();
    if base.len() < 2 {
        format!("user{base}")
    } else {
        base
    }
}

/// A username made from `raw` ([`username_base`]), with a number added while taken.
pub(crate) fn free_username(
    conn: &mut fluxgate_store::DbConnection,
    raw: &str,
) -> Result<Username> {
    let base = username_base(raw);
    for n in 1..1000 {
        let candidate = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let Ok(u) = Username::parse(&candidate) else {
            continue;
        };
        if users::find_by_username(conn, u.as_str())?.is_none() {
            return Ok(u);
        }
    }
    Err(failed("no free username could be made for the new account"))
}

impl Command for Finish {
    /// The user, and the mapped groups that do not exist here.
    type Output = (User, Vec<String>);

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<(User, Vec<String>)> {
        let user = self.resolve(cx, tx)?;
        if !user.active {
            return Err(Refusal::SsoAccountDeactivated.into());
        }
        let actor = as_actor(&user);
        let cx = Ctx {
            actor: Some(&actor),
            ..*cx
        };
        let user = self.map_role(&cx, tx, &user)?;
        let missing = self.map_groups(&cx, tx, &user)?;
        sso::put_handoff(
            tx.conn,
            &sso::Handoff {
                code_hash: token_hash(&self.handoff_code),
                user_id: user.id.to_string(),
                provider: self.rules.provider.clone(),
                client_challenge: self.client_challenge,
                created_at: tx.now,
                expires_at: tx.now + HANDOFF_TTL_MICROS,
            },
            tx.now,
        )?;
        Ok((user, missing))
    }
}

/// Opens the session of a sign-in the provider vouched for, for the client that started it.
/// `None` for a code that is unknown, used, expired or presented with another verifier: the
/// code is used up all the same (a wrong verifier burns it, as RFC 7636 has it), and the
/// refusal of a known code is audited.
#[derive(Debug, Clone)]
pub struct Collect {
    pub code: String,
    pub code_verifier: String,
    pub refresh_ttl_secs: u64,
}

impl Command for Collect {
    type Output = Option<(IssuedRefresh, User)>;

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<Option<(IssuedRefresh, User)>> {
        let Some(h) = sso::take_handoff(tx.conn, &token_hash(&self.code))? else {
            return Ok(None);
        };
        let challenge = s256(&self.code_verifier);
        let same: bool = challenge
            .as_bytes()
            .ct_eq(h.client_challenge.as_bytes())
            .into();
        if h.expires_at <= tx.now || !same {
            let why = if same {
                "the sign-in code expired before its client collected it"
            } else {
                "the sign-in code was presented with another verifier (PKCE); it is used up"
            };
            let target = Some(format!("identityProviders/{}", h.provider));
            let mut e = cx.event(AuditAction::AuthSsoFailed, "identity_provider", target);
            e.outcome = "failure".into();
            e.detail = Some(format!("{why} (users/{})", h.user_id));
            audit::append(tx.conn, e, tx.now)?;
            return Ok(None);
        }
        let id: UserId = h
            .user_id
            .parse()
            .map_err(|_| Error::Broken("bad user id in sso_handoffs".into()))?;
        let user = users::find(tx.conn, id)?
            .filter(|u| u.active)
            .ok_or_else(|| Error::from(Refusal::SsoAccountDeactivated))?;
        users::touch_login(tx.conn, id, tx.now)?;
        let issued = open_session(tx, id, self.refresh_ttl_secs)?;
        let actor = as_actor(&user);
        let cx = Ctx {
            actor: Some(&actor),
            ..*cx
        };
        let mut e = cx.event(
            AuditAction::AuthSsoLogin,
            "user",
            Some(format!("users/{id}")),
        );
        e.detail = Some(format!(
            "session {}, through {}",
            issued.session_id, h.provider
        ));
        audit::append(tx.conn, e, tx.now)?;
        let user =
            users::find(tx.conn, id)?.ok_or_else(|| Error::Broken("user vanished".into()))?;
        Ok(Some((issued, user)))
    }
}

/// Whether `user` signs in only through a provider (and so has no password to reset).
pub fn sso_only(conn: &mut fluxgate_store::DbConnection, user: UserId) -> Result<bool> {
    Ok(sign_in::get(conn, user)?.sso_only)
}
