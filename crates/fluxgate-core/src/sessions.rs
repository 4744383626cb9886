//! Sessions: sign-in with the lockout rules, refresh-token rotation (a rotated token presented
//! again ends the session, but for a short grace that lets a client's retry through), logout,
//! changing one's own password.
//!
//! Password hashing is slow and runs on the server's own pool, so a sign-in is three steps:
//! [`lookup`] (who, and is the subject locked), the server's check of the password, then
//! [`CompleteLogin`] or [`RecordFailure`], which check again under the write lock what the
//! password check saw.

use fluxgate_authz::{Action, Target};
use fluxgate_domain::{LockoutPolicy, Refusal, Role, SessionId, UserId};
use fluxgate_store::changes::EntityKind;
use fluxgate_store::{DbConnection, Tx, audit, sessions, settings, sign_in, throttle, users};

pub use fluxgate_store::throttle::Throttle;

use crate::audit::AuditAction;
use crate::context::{Actor, Command, Ctx};
use crate::error::{Error, Result};
use crate::logins::{LOCKED_NOW, Refused, failed_login_subject};
use crate::secrets::{random_token, token_hash};
use crate::users::User;

/// A refresh token issued inside a write transaction (shown once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedRefresh {
    pub session_id: SessionId,
    pub token: String,
    pub expires_at: i64,
}

/// Creates a session with its first refresh token.
pub fn open_session(tx: &mut Tx<'_>, user: UserId, refresh_ttl_secs: u64) -> Result<IssuedRefresh> {
    let id = SessionId::generate();
    let expires_at = tx.now + (refresh_ttl_secs as i64) * 1_000_000;
    sessions::create(tx.conn, id, user, tx.now, expires_at)?;
    let issued = add_refresh(tx, id, expires_at)?;
    tx.changed(EntityKind::Session, id.to_string());
    Ok(issued)
}

/// Stores a new refresh token for a session.
fn add_refresh(tx: &mut Tx<'_>, session: SessionId, expires_at: i64) -> Result<IssuedRefresh> {
    let token = random_token(32);
    let row = sessions::RefreshToken {
        token_hash: token_hash(&token),
        session_id: session.to_string(),
        issued_at: tx.now,
        expires_at,
        used_at: None,
    };
    sessions::insert_refresh(tx.conn, &row)?;
    Ok(IssuedRefresh {
        session_id: session,
        token,
        expires_at,
    })
}

/// What the lockout counts failures against: an account, or a name that matches none.
pub fn throttle_subject(user: Option<&User>, login: &str) -> String {
    match user {
        Some(u) => format!("user:{}", u.id),
        None => format!("name:{}", login.to_lowercase()),
    }
}

/// Whether `user` may sign in with a password at all: not while the organisation has password
/// sign-in disabled (but for its break-glass Team Admins). Asked before the password is checked,
/// so that it tells nothing about the password; an unknown login gets the same answer.
pub fn password_allowed(conn: &mut DbConnection, user: Option<&User>) -> Result<()> {
    let policy = settings::load(conn)?
        .map(|s| s.settings.sign_in_policy)
        .unwrap_or_default();
    let break_glass =
        |u: &User| u.role == Role::TeamAdmin && policy.break_glass_users.contains(&u.id);
    if policy.password_sign_in_disabled && !user.is_some_and(break_glass) {
        return Err(Refusal::PasswordSignInDisabled.into());
    }
    Ok(())
}

/// Who a sign-in names (by username or email, normalised) and the lockout state of its subject.
/// Refused when password sign-in is disabled for them ([`password_allowed`]).
pub fn lookup(conn: &mut DbConnection, login: &str) -> Result<(Option<User>, Option<Throttle>)> {
    let user = users::find_by_login(conn, login)?;
    password_allowed(conn, user.as_ref())?;
    let t = throttle::get(conn, &throttle_subject(user.as_ref(), login))?;
    Ok((user, t))
}

/// Whether `subject` is locked out at `now`.
pub fn is_locked(conn: &mut DbConnection, subject: &str, now: i64) -> Result<bool> {
    Ok(throttle::get(conn, subject)?
        .and_then(|t| t.locked_until)
        .is_some_and(|until| until > now))
}

/// The actor a user is as they sign in (before they hold a session).
pub fn as_actor(u: &User) -> Actor {
    Actor {
        id: fluxgate_domain::PrincipalId::User(u.id),
        session_id: None,
        key_id: None,
        name: u.username.clone(),
        role: u.role,
        active: u.active,
        must_change_password: u.must_change_password,
    }
}

/// Opens a session for a user whose password checked out. Refused if, meanwhile, racing
/// failures locked the subject, the password changed or the account was deactivated.
#[derive(Debug, Clone)]
pub struct CompleteLogin {
    pub user: UserId,
    pub subject: String,
    /// The hash the password was checked against.
    pub verified_hash: Option<String>,
    /// A new hash of the same password, when the hashing parameters changed.
    pub new_hash: Option<String>,
    pub refresh_ttl_secs: u64,
    /// The second-factor code sent with the password, if any ([`crate::second_factor`]).
    pub second_factor: Option<String>,
}

/// A session opened by a password sign-in, with what the organisation asks of the user's
/// second factor.
pub type SignedIn = (IssuedRefresh, User, crate::second_factor::Requirement);

impl Command for CompleteLogin {
    type Output = SignedIn;

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<SignedIn> {
        if is_locked(tx.conn, &self.subject, tx.now)? {
            return Err(Refusal::LockedOut.into());
        }
        let current = users::find(tx.conn, self.user)?;
        let same = |c: &User| c.active && c.password_hash == self.verified_hash;
        if !current.as_ref().is_some_and(same) {
            return Err(Refusal::BadCredentials.into());
        }
        password_allowed(tx.conn, current.as_ref())?;
        let factor = crate::second_factor::verify(tx, self.user, self.second_factor.as_deref())?;
        throttle::clear(tx.conn, &self.subject)?;
        if let Some(h) = &self.new_hash {
            users::set_password_hash(tx.conn, self.user, h)?;
        }
        users::touch_login(tx.conn, self.user, tx.now)?;
        let issued = open_session(tx, self.user, self.refresh_ttl_secs)?;
        let user = users::find(tx.conn, self.user)?
            .ok_or_else(|| Error::Broken("user vanished".into()))?;
        let actor = as_actor(&user);
        let cx = Ctx {
            actor: Some(&actor),
            ..*cx
        };
        let mut e = cx.event(
            AuditAction::AuthLogin,
            "user",
            Some(format!("users/{}", self.user)),
        );
        e.detail = Some(match factor {
            crate::second_factor::Verified::NotNeeded => format!("session {}", issued.session_id),
            crate::second_factor::Verified::Totp => {
                format!("session {}, with a TOTP code", issued.session_id)
            }
            crate::second_factor::Verified::RecoveryCode => {
                format!("session {}, with a recovery code", issued.session_id)
            }
        });
        audit::append(tx.conn, e, tx.now)?;
        let required = crate::second_factor::enforce(&cx, tx, &user)?;
        Ok((issued, user, required))
    }
}

/// Records a failed sign-in (or a failed check of one's current password): a bad password
/// counts towards the lockout and may lock the subject; an attempt while locked is noted.
/// Answers whether this failure locked the account.
#[derive(Debug, Clone)]
pub struct RecordFailure {
    pub user: Option<(UserId, String)>,
    /// The login as typed.
    pub login: String,
    pub subject: String,
    /// Whether the subject was locked (the password was not even checked).
    pub locked: bool,
    /// Refusals counted for the subject and not yet recorded.
    pub earlier: Option<Refused>,
    pub lockout: LockoutPolicy,
}

impl Command for RecordFailure {
    type Output = bool;

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<bool> {
        let user = self.user.as_ref().map(|(id, name)| (*id, name.as_str()));
        let (target, shown) = failed_login_subject(user, &self.login);
        let mut e = cx.event(AuditAction::AuthLogin, "user", Some(target));
        e.outcome = "failure".into();
        let earlier = self
            .earlier
            .map(|r| {
                format!(
                    "; {} earlier attempt(s) refused since {} µs",
                    r.count, r.first_at
                )
            })
            .unwrap_or_default();
        let mut locked_now = false;
        if self.locked {
            e.detail = Some(format!("locked out: {shown}{earlier}"));
            throttle::touch(tx.conn, &self.subject, tx.now)?;
        } else {
            e.detail = Some(format!("bad credentials: {shown}"));
            let lock = (self.lockout.lockout_duration_secs as i64) * 1_000_000;
            let max = self.lockout.max_failed_attempts;
            let t = throttle::record_failure(tx.conn, &self.subject, max, lock, tx.now)?;
            if t.locked_until.is_some() {
                locked_now = true;
                e.detail = Some(format!("bad credentials: {shown}{LOCKED_NOW}"));
            }
        }
        audit::append(tx.conn, e, tx.now)?;
        Ok(locked_now)
    }
}

/// Rotates a refresh token: a new one for the same session, the old one used. `None` when the
/// token is unknown, expired, or its session or user is gone; a used token presented again
/// past the grace ends its session (a copy was stolen).
#[derive(Debug, Clone)]
pub struct Refresh {
    pub token_hash: String,
    pub refresh_ttl_secs: u64,
}

/// The audit event of a refresh, by the session's user.
fn refresh_event(
    cx: &Ctx<'_>,
    action: AuditAction,
    sid: SessionId,
    user: Option<&User>,
    uid: UserId,
) -> audit::NewEvent {
    let mut e = cx.event(action, "session", Some(format!("sessions/{sid}")));
    e.actor_id = Some(format!("users/{uid}"));
    e.actor_name = user.map(|u| u.username.clone());
    e.actor_role = user.map(|u| u.role.as_str().to_owned());
    e
}

impl Command for Refresh {
    type Output = Option<(IssuedRefresh, UserId)>;

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<Option<(IssuedRefresh, UserId)>> {
        let Some(old) = sessions::find_refresh(tx.conn, &self.token_hash)? else {
            return Ok(None);
        };
        let sid: SessionId = old
            .session_id
            .parse()
            .map_err(|_| Error::Broken("bad session id".into()))?;
        let Some(session) = sessions::find(tx.conn, sid)? else {
            return Ok(None);
        };
        let user = users::find(tx.conn, session.user_id)?;
        // A token rotated a moment ago, presented again: the same client sent one refresh
        // twice at once (RFC 9700 allows a short grace). The late call gets tokens of its own
        // for the same session, and the winner's keep working.
        let grace = cx.limits.refresh_reuse_grace_micros;
        let racing = old
            .used_at
            .is_some_and(|used| tx.now - used <= grace && grace > 0);
        if old.used_at.is_some() && !racing {
            // A rotated token presented again: a copy was stolen. End the session.
            if sessions::revoke(tx.conn, sid, "refresh_token_reuse", tx.now)? {
                tx.changed(EntityKind::Session, sid.to_string());
            }
            let action = AuditAction::AuthRefreshTokenReuse;
            let mut e = refresh_event(cx, action, sid, user.as_ref(), session.user_id);
            e.outcome = "denied".into();
            e.detail = Some("a used refresh token was presented again; session revoked".into());
            audit::append(tx.conn, e, tx.now)?;
            return Ok(None);
        }
        let Some(user) = user.filter(|u| u.active) else {
            return Ok(None);
        };
        if !session.is_live(tx.now) || old.expires_at <= tx.now {
            return Ok(None);
        }
        if !racing {
            sessions::mark_refresh_used(tx.conn, &self.token_hash, tx.now)?;
        }
        let expires_at = tx.now + (self.refresh_ttl_secs as i64) * 1_000_000;
        sessions::extend(tx.conn, sid, expires_at)?;
        users::touch_seen(tx.conn, user.id, tx.now)?;
        let issued = add_refresh(tx, sid, expires_at)?;
        tx.changed(EntityKind::Session, sid.to_string());
        // A deadline running out is noticed at a refresh too, not only at the next sign-in.
        if sign_in::get(tx.conn, user.id)?
            .second_factor_due_at
            .is_some()
        {
            let actor = as_actor(&user);
            let cx = Ctx {
                actor: Some(&actor),
                ..*cx
            };
            crate::second_factor::enforce(&cx, tx, &user)?;
        }
        let mut e = refresh_event(cx, AuditAction::AuthRefresh, sid, Some(&user), user.id);
        if racing {
            let why = "a refresh token rotated moments ago, presented again within the grace";
            e.detail = Some(why.into());
        }
        audit::append(tx.conn, e, tx.now)?;
        Ok(Some((issued, user.id)))
    }
}

/// The user and session of an actor that must be a signed-in user, if they may manage their
/// own session.
pub fn own_session(cx: &Ctx<'_>) -> Result<(UserId, SessionId)> {
    let p = cx.actor()?;
    let (Some(u), Some(s)) = (p.user_id(), p.session_id) else {
        return Err(Refusal::NotASession.into());
    };
    cx.authorize(Action::ManageOwnSession, Target::User(u))?;
    Ok((u, s))
}

/// The signed-in actor's own account.
pub fn own_user(cx: &Ctx<'_>, conn: &mut DbConnection) -> Result<User> {
    let (uid, _) = own_session(cx)?;
    users::find(conn, uid)?.ok_or_else(Error::unauthenticated)
}

/// Who the actor is: their account, for a user.
pub fn who_am_i(cx: &Ctx<'_>, conn: &mut DbConnection) -> Result<Option<User>> {
    let p = cx.actor()?;
    let target = p.user_id().map_or(Target::Org, Target::User);
    cx.authorize(Action::ManageOwnSession, target)?;
    match p.user_id() {
        Some(uid) => Ok(Some(
            users::find(conn, uid)?.ok_or_else(Error::unauthenticated)?,
        )),
        None => Ok(None),
    }
}

/// Ends the actor's session.
#[derive(Debug, Clone)]
pub struct Logout;

impl Command for Logout {
    type Output = ();

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        own_session(cx).map(drop)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<()> {
        let (_, sid) = own_session(cx)?;
        sessions::revoke(tx.conn, sid, "logout", tx.now)?;
        tx.changed(EntityKind::Session, sid.to_string());
        let e = cx.event(
            AuditAction::AuthLogout,
            "session",
            Some(format!("sessions/{sid}")),
        );
        audit::append(tx.conn, e, tx.now)?;
        Ok(())
    }
}

/// Sets the actor's own password (its new hash made once the current one checked out): every
/// session ends and a new one opens. Refused if the password changed meanwhile.
#[derive(Debug, Clone)]
pub struct ChangeOwnPassword {
    pub verified_hash: Option<String>,
    pub new_hash: String,
    pub refresh_ttl_secs: u64,
}

impl Command for ChangeOwnPassword {
    type Output = (IssuedRefresh, User);

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        own_session(cx).map(drop)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<(IssuedRefresh, User)> {
        let mut u = own_user(cx, tx.conn)?;
        if u.password_hash != self.verified_hash {
            return Err(Refusal::PasswordChangedMeanwhile.into());
        }
        u.password_hash = Some(self.new_hash);
        u.must_change_password = false;
        users::update(tx.conn, &u, tx.now)?;
        let revoked = sessions::revoke_all(tx.conn, u.id, "password_changed", tx.now)?;
        tx.changed(EntityKind::User, u.id.to_string());
        let issued = open_session(tx, u.id, self.refresh_ttl_secs)?;
        let target = Some(format!("users/{}", u.id));
        let mut e = cx.event(AuditAction::UserPasswordChanged, "user", target);
        e.detail = Some(format!("{revoked} session(s) revoked"));
        audit::append(tx.conn, e, tx.now)?;
        let u = users::find(tx.conn, u.id)?.ok_or_else(Error::unauthenticated)?;
        Ok((issued, u))
    }
}
