//! Admin password resets, self-service reset links and registration links (SPEC section 5).
//!
//! Link tokens are 256 random bits, stored only as SHA-256, single-use, and superseded by the
//! next token of the same purpose. Every change, its audit event and the email it causes commit
//! in one transaction; the email is delivered afterwards.

use fluxgate_authz::{Action, Target};
use fluxgate_domain::{Email, Refusal, UserId};
use fluxgate_store::changes::EntityKind;
use fluxgate_store::user_tokens::{self, Purpose, UserToken};
use fluxgate_store::{DbConnection, Tx, audit, rate_limits, sessions, throttle, users};

pub use fluxgate_store::user_tokens::Purpose as LinkPurpose;

use crate::audit::AuditAction;
use crate::context::{Command, Ctx};
use crate::error::{Error, Result};
use crate::etag;
use crate::mail::Template;
use crate::names::UserRef;
use crate::secrets::{random_token, token_hash};
use crate::time::rfc3339;
use crate::users::{self as uc, IssuedLink, TOKEN_BYTES, User, issue_registration};

const HOUR_MICROS: i64 = 3_600_000_000;

fn name(id: UserId) -> Option<String> {
    Some(format!("users/{id}"))
}

/// A token that may be used now for `purpose`, or the precise reason it may not.
pub fn usable(t: Option<UserToken>, purpose: Purpose, now: i64) -> Result<UserToken> {
    let Some(t) = t else {
        return Err(Error::NotFound(
            "the link is not valid (mistyped, or too old to be known): ask for a new one".into(),
        ));
    };
    let refusal = if t.purpose != purpose {
        Refusal::WrongLink {
            registration: t.purpose == Purpose::Registration,
        }
    } else if t.used_at.is_some() {
        Refusal::LinkUsed
    } else if t.superseded_at.is_some() {
        Refusal::LinkSuperseded
    } else if t.expires_at <= now {
        Refusal::LinkExpired {
            at: rfc3339(t.expires_at),
        }
    } else {
        return Ok(t);
    };
    Err(refusal.into())
}

/// The active account a link belongs to.
fn active_user(conn: &mut DbConnection, id: UserId) -> Result<User> {
    let u = users::find(conn, id)?
        .ok_or_else(|| Error::NotFound("the link's account no longer exists".into()))?;
    if !u.active {
        return Err(Refusal::LinkAccountDeactivated.into());
    }
    Ok(u)
}

/// A token (by its hash) that may be redeemed for `purpose`, with its account: a registration
/// link only while the account has no password.
pub fn redeemable(
    conn: &mut DbConnection,
    hash: &str,
    purpose: Purpose,
    now: i64,
) -> Result<(UserToken, User)> {
    let t = usable(user_tokens::find(conn, hash)?, purpose, now)?;
    let u = active_user(conn, t.user_id)?;
    if purpose == Purpose::Registration && u.password_hash.is_some() {
        return Err(Refusal::AlreadyHasPassword.into());
    }
    Ok((t, u))
}

/// Who may reset other users' passwords (asked before their name is even read).
pub fn may_reset(cx: &Ctx<'_>) -> Result<()> {
    cx.authorize(Action::ResetUserPassword, Target::Org)
}

/// Who may issue registration links (asked before the user's name is even read).
pub fn may_issue_registration(cx: &Ctx<'_>) -> Result<()> {
    cx.authorize(Action::IssueRegistrationLink, Target::Org)
}

/// The user a Team Admin resets, checked before the new password is made: the function-level
/// right first (so nobody else can probe for usernames), then the right over this user, its
/// etag, and that it is active.
pub fn reset_target(
    cx: &Ctx<'_>,
    conn: &mut DbConnection,
    r: &UserRef,
    given: &str,
) -> Result<User> {
    cx.authorize(Action::ResetUserPassword, Target::Org)?;
    let user = uc::find(conn, r)?;
    cx.authorize(Action::ResetUserPassword, Target::User(user.id))?;
    etag::check(given, user.id, user.version)?;
    if !user.active {
        return Err(Refusal::UserDeactivated.into());
    }
    if crate::sso::sso_only(conn, user.id)? {
        return Err(Refusal::SsoOnly.into());
    }
    Ok(user)
}

/// A Team Admin sets a temporary password (already hashed) that must be changed at the next
/// sign-in: every session ends, outstanding reset links stop working, the user is told.
#[derive(Debug, Clone)]
pub struct AdminReset {
    pub user: UserId,
    /// The version [`reset_target`] saw; a change since refuses the reset.
    pub version: i64,
    pub hash: String,
}

impl Command for AdminReset {
    type Output = User;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        cx.authorize(Action::ResetUserPassword, Target::User(self.user))
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<User> {
        let mut u = users::find(tx.conn, self.user)?.ok_or_else(|| Error::not_found("user"))?;
        if u.version != self.version {
            return Err(Refusal::UserChanged.into());
        }
        if crate::sso::sso_only(tx.conn, u.id)? {
            return Err(Refusal::SsoOnly.into());
        }
        u.password_hash = Some(self.hash);
        u.must_change_password = true;
        users::update(tx.conn, &u, tx.now)?;
        let revoked = sessions::revoke_all(tx.conn, u.id, "password_reset_by_admin", tx.now)?;
        // An outstanding self-service link must not undo the reset.
        user_tokens::supersede(tx.conn, u.id, Purpose::PasswordReset, tx.now)?;
        throttle::clear(tx.conn, &format!("user:{}", u.id))?;
        tx.changed(EntityKind::User, u.id.to_string());
        let mut e = cx.event(AuditAction::UserPasswordResetByAdmin, "user", name(u.id));
        e.detail = Some(format!(
            "temporary password set; {revoked} session(s) revoked"
        ));
        audit::append(tx.conn, e, tx.now)?;
        let admin = cx.actor()?.name.clone();
        let vars = [("admin", admin.as_str())];
        cx.outbox()?
            .queue(tx.conn, Template::PasswordResetByAdmin, &u, &vars, tx.now)?;
        users::find(tx.conn, u.id)?.ok_or_else(|| Error::Broken("user vanished".into()))
    }
}

/// Counts a reset request against its client's hourly limit: the one write every request makes
/// alike, whether or not the address has an account.
#[derive(Debug, Clone)]
pub struct CountRequest {
    pub client: String,
}

impl Command for CountRequest {
    type Output = ();

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<()> {
        let key = format!("password_reset:client:{}", self.client);
        let by_client = rate_limits::hit(tx.conn, &key, HOUR_MICROS, tx.now)?;
        if by_client > cx.limits.reset_requests_per_client_per_hour as i32 {
            return Err(Refusal::TooManyResetRequests.into());
        }
        Ok(())
    }
}

/// The part of a reset request that depends on the address: the per-account limit, and for an
/// active account a link, emailed. The server runs it after the caller has its answer.
#[derive(Debug, Clone)]
pub struct IssueReset {
    pub email: Email,
}

impl IssueReset {
    /// Issues the link and queues its email; answers the audit detail.
    fn send(cx: &Ctx<'_>, tx: &mut Tx<'_>, u: &User) -> Result<String> {
        let token = random_token(TOKEN_BYTES);
        let expires_at = tx.now + cx.limits.reset_ttl_secs as i64 * 1_000_000;
        let hash = token_hash(&token);
        let purpose = Purpose::PasswordReset;
        let superseded = user_tokens::issue(tx.conn, &hash, u.id, purpose, tx.now, expires_at)?;
        let outbox = cx.outbox()?;
        let url = outbox.link("reset-password", &token);
        let vars = [
            ("link", url.as_str()),
            ("expire_time", &rfc3339(expires_at)),
        ];
        outbox.queue(tx.conn, Template::PasswordReset, u, &vars, tx.now)?;
        Ok(format!(
            "reset link emailed; {superseded} earlier link(s) superseded"
        ))
    }
}

impl Command for IssueReset {
    type Output = ();

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<()> {
        let email = self.email.as_str();
        let key = format!("password_reset:email:{email}");
        let by_account = rate_limits::hit(tx.conn, &key, HOUR_MICROS, tx.now)?;
        let mut e = cx.event(AuditAction::PasswordResetRequested, "user", None);
        let (outcome, detail) = match users::find_by_email(tx.conn, email)? {
            Some(u) if u.active && crate::sso::sso_only(tx.conn, u.id)? => {
                e.target_id = name(u.id);
                (
                    "denied",
                    "the account signs in through an identity provider only; no link sent".into(),
                )
            }
            Some(u) if u.active => {
                e.target_id = name(u.id);
                if by_account > cx.limits.reset_requests_per_account_per_hour as i32 {
                    (
                        "denied",
                        "rate limit for this account reached; no link sent".into(),
                    )
                } else {
                    ("success", Self::send(cx, tx, &u)?)
                }
            }
            Some(u) => {
                e.target_id = name(u.id);
                ("denied", "account deactivated; no link sent".into())
            }
            None => (
                "denied",
                format!("no account has the address {email}; no link sent"),
            ),
        };
        e.outcome = outcome.into();
        e.detail = Some(detail);
        audit::append(tx.conn, e, tx.now)?;
        Ok(())
    }
}

/// Sets a password from a link (its new hash already made): the token is used, the user's other
/// links of the purpose retired, every session revoked, any lockout lifted. Answers the user.
#[derive(Debug, Clone)]
pub struct Redeem {
    pub token_hash: String,
    pub purpose: Purpose,
    pub hash: String,
}

impl Command for Redeem {
    type Output = User;

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<User> {
        // Checked again under the write lock: the token may have been used meanwhile.
        let (t, mut u) = redeemable(tx.conn, &self.token_hash, self.purpose, tx.now)?;
        if crate::sso::sso_only(tx.conn, u.id)? {
            return Err(Refusal::SsoOnly.into());
        }
        if !user_tokens::mark_used(tx.conn, &t.token_hash, tx.now)? {
            return Err(Refusal::LinkUsed.into());
        }
        user_tokens::supersede(tx.conn, t.user_id, t.purpose, tx.now)?;
        u.password_hash = Some(self.hash);
        u.must_change_password = false;
        users::update(tx.conn, &u, tx.now)?;
        let (reason, action) = match self.purpose {
            Purpose::PasswordReset => ("password_reset", AuditAction::UserPasswordReset),
            Purpose::Registration => ("registration_completed", AuditAction::UserRegistered),
        };
        let revoked = sessions::revoke_all(tx.conn, u.id, reason, tx.now)?;
        throttle::clear(tx.conn, &format!("user:{}", u.id))?;
        tx.changed(EntityKind::User, u.id.to_string());
        // The actor is the user holding the link (who has no session).
        let mut e = cx.event(action, "user", name(u.id));
        e.actor_id = name(u.id);
        e.actor_name = Some(u.username.clone());
        e.actor_role = Some(u.role.as_str().to_owned());
        e.detail = Some(format!("{revoked} session(s) revoked"));
        audit::append(tx.conn, e, tx.now)?;
        users::find(tx.conn, u.id)?.ok_or_else(|| Error::Broken("user vanished".into()))
    }
}

/// Issues a new registration link for a user who has not set a password yet; earlier links stop
/// working.
#[derive(Debug, Clone)]
pub struct IssueRegistration {
    pub user: UserRef,
}

impl Command for IssueRegistration {
    type Output = IssuedLink;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        may_issue_registration(cx)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<IssuedLink> {
        let u = uc::find(tx.conn, &self.user)?;
        cx.authorize(Action::IssueRegistrationLink, Target::User(u.id))?;
        if !u.active {
            return Err(Refusal::UserDeactivated.into());
        }
        if u.password_hash.is_some() {
            return Err(Refusal::PasswordAlreadySet.into());
        }
        if crate::sso::sso_only(tx.conn, u.id)? {
            return Err(Refusal::SsoOnly.into());
        }
        let link = issue_registration(cx, tx, &u)?;
        let mut e = cx.event(AuditAction::UserRegistrationLinkIssued, "user", name(u.id));
        e.detail = Some("earlier registration links no longer work".into());
        audit::append(tx.conn, e, tx.now)?;
        Ok(link)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(purpose: Purpose) -> UserToken {
        UserToken {
            token_hash: "h".into(),
            user_id: UserId::generate(),
            purpose,
            created_at: 0,
            expires_at: 100,
            used_at: None,
            superseded_at: None,
        }
    }

    #[test]
    fn each_unusable_token_says_why() {
        let msg = |r: Result<UserToken>| r.unwrap_err().to_string();
        let reset = Purpose::PasswordReset;
        assert!(usable(Some(token(reset)), reset, 50).is_ok());
        assert!(msg(usable(None, reset, 50)).contains("not valid"));
        let other = usable(Some(token(Purpose::Registration)), reset, 50);
        assert!(msg(other).contains("registration link"));
        let mut used = token(reset);
        used.used_at = Some(10);
        assert!(msg(usable(Some(used), reset, 50)).contains("already been used"));
        let mut old = token(reset);
        old.superseded_at = Some(10);
        assert!(msg(usable(Some(old), reset, 50)).contains("newer link"));
        assert!(msg(usable(Some(token(reset)), reset, 100)).contains("expired"));
    }
}
