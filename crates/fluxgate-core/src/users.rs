//! The user life cycle (SPEC section 4): create (with a registration link or a welcome), update
//! (a role change needs its own right, and nobody changes their own role), deactivate (sessions
//! end, open change requests are cancelled), reactivate, delete (only once deactivated). The
//! organisation always keeps an active Team Admin.

use fluxgate_authz::{Action, Target};
use fluxgate_domain::{DisplayName, Email, PrincipalId, Refusal, Role, UserId, Username};
use fluxgate_store::changes::EntityKind;
use fluxgate_store::outbox::NewEmail;
use fluxgate_store::user_tokens::{self, Purpose};
use fluxgate_store::{DbConnection, Tx, audit, groups, sessions, users};

pub use fluxgate_store::users::{After, Filter, User};

use crate::audit::{AuditAction, with_reason};
use crate::context::{Command, Ctx};
use crate::error::{Error, Result};
use crate::mail::Template;
use crate::names::UserRef;
use crate::secrets::{random_token, token_hash};
use crate::time::rfc3339;
use crate::{change_requests, etag};

/// Bytes of randomness in a reset or registration token.
pub const TOKEN_BYTES: usize = 32;

/// The audit snapshot of a user: what an event's before/after shows (never the hash).
pub(crate) fn snapshot(u: &User) -> Option<String> {
    serde_json::to_string(&serde_json::json!({
        "username": u.username,
        "email": u.email,
        "display_name": u.display_name,
        "role": u.role.as_str(),
        "active": u.active,
        "must_change_password": u.must_change_password,
    }))
    .ok()
}

pub(crate) fn name(id: UserId) -> Option<String> {
    Some(format!("users/{id}"))
}

pub(crate) fn ensure_email_free(
    conn: &mut DbConnection,
    email: &str,
    except: Option<UserId>,
) -> Result<()> {
    match users::find_by_email(conn, email)? {
        Some(other) if Some(other.id) != except => Err(Refusal::EmailTaken {
            email: email.to_owned(),
        }
        .into()),
        _ => Ok(()),
    }
}

/// Refuses to leave the organisation without an active Team Admin.
pub(crate) fn ensure_other_admin(
    conn: &mut DbConnection,
    u: &User,
    what: &'static str,
) -> Result<()> {
    if u.role == Role::TeamAdmin && u.active && users::count_active_admins(conn, Some(u.id))? == 0 {
        return Err(Refusal::LastTeamAdmin { what }.into());
    }
    Ok(())
}

/// A user by reference (NOT_FOUND when nobody has it).
pub fn find(conn: &mut DbConnection, r: &UserRef) -> Result<User> {
    let found = match r {
        UserRef::Id(id) => users::find(conn, *id)?,
        UserRef::Username(n) => users::find_by_username(conn, n)?,
    };
    found.ok_or_else(|| Error::not_found("user"))
}

pub(crate) fn is_self(cx: &Ctx<'_>, r: &UserRef) -> Result<bool> {
    let p = cx.actor()?;
    Ok(match r {
        UserRef::Id(id) => p.user_id() == Some(*id),
        UserRef::Username(n) => p.user_id().is_some() && *n == p.name,
    })
}

/// The function-level check for `action` on another user, before anything is looked up, so
/// that a caller without the right learns nothing about other users' existence.
fn gate(cx: &Ctx<'_>, r: &UserRef, action: Action) -> Result<()> {
    if is_self(cx, r)? {
        Ok(())
    } else {
        cx.authorize(action, Target::Org)
    }
}

/// The user `r` names, if the actor may do `action` to them.
fn resolve(cx: &Ctx<'_>, conn: &mut DbConnection, r: &UserRef, action: Action) -> Result<User> {
    gate(cx, r, action)?;
    let user = find(conn, r)?;
    cx.authorize(action, Target::User(user.id))?;
    Ok(user)
}

/// One user, for a caller who may view them.
pub fn get(cx: &Ctx<'_>, conn: &mut DbConnection, r: &UserRef) -> Result<User> {
    resolve(cx, conn, r, Action::ViewUser)
}

/// Who may list users.
pub fn may_list(cx: &Ctx<'_>) -> Result<()> {
    cx.authorize(Action::ListUsers, Target::Org)
}

/// A page of users (one more than `limit` tells the caller there is more).
pub fn list(
    cx: &Ctx<'_>,
    conn: &mut DbConnection,
    f: &Filter,
    after: Option<&After>,
    limit: i64,
) -> Result<Vec<User>> {
    may_list(cx)?;
    Ok(users::list(conn, f, after, limit)?)
}

/// A registration or reset link as issued: the token (shown once), its URL, its expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedLink {
    pub token: String,
    pub url: String,
    pub expires_at: i64,
}

/// Issues a registration link for `user` (superseding earlier ones) and queues its email, in
/// the caller's transaction.
pub fn issue_registration(cx: &Ctx<'_>, tx: &mut Tx<'_>, user: &User) -> Result<IssuedLink> {
    let (link, t, email) = registration_link(cx, tx.now, user)?;
    cx.outbox()?.queue_many(tx.conn, vec![email], tx.now)?;
    user_tokens::issue(
        tx.conn,
        &t.token_hash,
        t.user,
        t.purpose,
        tx.now,
        t.expires_at,
    )?;
    Ok(link)
}

/// A new user. Without a password hash the user chooses a password through a registration
/// link, sent by email and answered once.
#[derive(Debug, Clone)]
pub struct Create {
    pub username: Username,
    pub email: Email,
    pub display_name: DisplayName,
    pub role: Role,
    pub must_change_password: bool,
    pub password_hash: Option<String>,
}

/// Who may create users.
pub fn may_create(cx: &Ctx<'_>) -> Result<()> {
    cx.authorize(Action::CreateUser, Target::Org)
}

impl Command for Create {
    type Output = (User, Option<IssuedLink>);

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        may_create(cx)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<(User, Option<IssuedLink>)> {
        self.create(cx, tx)
    }
}

/// Up to [`MAX_BATCH`] new users in one transaction: all are created, or none.
#[derive(Debug, Clone)]
pub struct CreateMany(pub Vec<Create>);

/// The most users one [`CreateMany`] takes.
pub const MAX_BATCH: usize = 1_000;

impl Command for CreateMany {
    type Output = Vec<(User, Option<IssuedLink>)>;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        may_create(cx)
    }

    /// As [`Create`] for each, with a statement per step for the whole batch rather than per
    /// user (the emails excepted: each is rendered and queued on its own).
    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<Self::Output> {
        let batch = self.0;
        if batch.is_empty() || batch.len() > MAX_BATCH {
            return Err(Error::invalid(
                "requests",
                format!("1 to {MAX_BATCH} users a batch"),
            ));
        }
        let names: Vec<&str> = batch.iter().map(|c| c.username.as_str()).collect();
        if let Some(name) = users::taken_usernames(tx.conn, &names)?.into_iter().next() {
            return Err(Refusal::UsernameTaken { name }.into());
        }
        let emails: Vec<&str> = batch.iter().map(|c| c.email.as_str()).collect();
        if let Some(email) = users::taken_emails(tx.conn, &emails)?.into_iter().next() {
            return Err(Refusal::EmailTaken { email }.into());
        }
        let new: Vec<users::NewUser<'_>> = batch
            .iter()
            .map(|c| users::NewUser {
                id: UserId::generate(),
                username: c.username.as_str(),
                email: c.email.as_str(),
                display_name: c.display_name.as_str(),
                role: c.role,
                must_change_password: c.must_change_password,
                password_hash: c.password_hash.as_deref(),
            })
            .collect();
        let created = users::insert_many(tx.conn, &new, tx.now)?;
        let mut links = Vec::with_capacity(created.len());
        let mut firsts = Vec::new();
        let mut emails = Vec::with_capacity(created.len());
        let mut events = Vec::with_capacity(created.len());
        for user in &created {
            tx.changed(EntityKind::User, user.id.to_string());
            let mut e = cx.event(AuditAction::UserCreated, "user", name(user.id));
            e.after_json = snapshot(user);
            let link = if user.password_hash.is_none() {
                e.detail = Some("registration link issued".into());
                let (link, first, email) = registration_link(cx, tx.now, user)?;
                firsts.push(first);
                emails.push(email);
                Some(link)
            } else {
                if cx.limits.welcome_email {
                    emails.push(cx.outbox()?.render(Template::Welcome, user, &[]));
                }
                None
            };
            links.push(link);
            events.push(e);
        }
        user_tokens::issue_first(tx.conn, &firsts, tx.now)?;
        if !emails.is_empty() {
            cx.outbox()?.queue_many(tx.conn, emails, tx.now)?;
        }
        audit::append_many(tx.conn, events, tx.now)?;
        Ok(created.into_iter().zip(links).collect())
    }
}

/// A registration link for `user`: the link, its token to store and its email to queue (a
/// batch stores and queues all of its users' at once).
fn registration_link(
    cx: &Ctx<'_>,
    now: i64,
    user: &User,
) -> Result<(IssuedLink, user_tokens::First, NewEmail)> {
    let outbox = cx.outbox()?;
    let token = random_token(TOKEN_BYTES);
    let expires_at = now + cx.limits.registration_ttl_secs as i64 * 1_000_000;
    let url = outbox.link("register", &token);
    let vars = [
        ("link", url.as_str()),
        ("expire_time", &rfc3339(expires_at)),
    ];
    let email = outbox.render(Template::Registration, user, &vars);
    let first = user_tokens::First {
        token_hash: token_hash(&token),
        user: user.id,
        purpose: Purpose::Registration,
        expires_at,
    };
    let link = IssuedLink {
        token,
        url,
        expires_at,
    };
    Ok((link, first, email))
}

impl Create {
    fn create(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<(User, Option<IssuedLink>)> {
        if users::find_by_username(tx.conn, self.username.as_str())?.is_some() {
            let name = self.username.as_str().to_owned();
            return Err(Refusal::UsernameTaken { name }.into());
        }
        ensure_email_free(tx.conn, self.email.as_str(), None)?;
        let id = UserId::generate();
        let new = users::NewUser {
            id,
            username: self.username.as_str(),
            email: self.email.as_str(),
            display_name: self.display_name.as_str(),
            role: self.role,
            must_change_password: self.must_change_password,
            password_hash: self.password_hash.as_deref(),
        };
        users::insert(tx.conn, &new, tx.now)?;
        tx.changed(EntityKind::User, id.to_string());
        let user =
            users::find(tx.conn, id)?.ok_or_else(|| Error::Broken("user vanished".into()))?;
        let mut e = cx.event(AuditAction::UserCreated, "user", name(id));
        e.after_json = snapshot(&user);
        let link = if user.password_hash.is_none() {
            e.detail = Some("registration link issued".into());
            Some(issue_registration(cx, tx, &user)?)
        } else {
            if cx.limits.welcome_email {
                cx.outbox()?
                    .queue(tx.conn, Template::Welcome, &user, &[], tx.now)?;
            }
            None
        };
        audit::append(tx.conn, e, tx.now)?;
        Ok((user, link))
    }
}

/// Changes a user's email, display name or role; `None` fields stay. `reason` (a role change's
/// rationale, say) goes to the audit trail.
#[derive(Debug, Clone)]
pub struct Update {
    pub user: UserRef,
    pub etag: String,
    pub email: Option<Email>,
    pub display_name: Option<DisplayName>,
    pub role: Option<Role>,
    pub reason: String,
}

impl Update {
    /// The new values on `before`, with the role rules: nobody changes their own role, and the
    /// last active Team Admin is not demoted.
    fn changed(&self, cx: &Ctx<'_>, conn: &mut DbConnection, before: &User) -> Result<User> {
        let mut after = before.clone();
        if let Some(e) = &self.email {
            if e.as_str() != before.email {
                ensure_email_free(conn, e.as_str(), Some(before.id))?;
            }
            after.email = e.as_str().to_owned();
        }
        if let Some(d) = &self.display_name {
            after.display_name = d.as_str().to_owned();
        }
        if let Some(r) = self.role {
            // The role may have changed since the request was authorised: nobody changes
            // their own role, whatever it was when they asked.
            if r != before.role && cx.actor()?.user_id() == Some(before.id) {
                return Err(Error::Denied(
                    "change_user_role denied: a Team Admin may not change their own role".into(),
                ));
            }
            if r != Role::TeamAdmin {
                ensure_other_admin(conn, before, "demote")?;
            }
            after.role = r;
        }
        Ok(after)
    }
}

impl Command for Update {
    type Output = User;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        gate(cx, &self.user, Action::UpdateUser)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<User> {
        let before = resolve(cx, tx.conn, &self.user, Action::UpdateUser)?;
        if self.role.is_some_and(|r| r != before.role) {
            cx.authorize(Action::ChangeUserRole, Target::User(before.id))?;
        }
        etag::check(&self.etag, before.id, before.version)?;
        let after = self.changed(cx, tx.conn, &before)?;
        if after == before {
            return Ok(before);
        }
        users::update(tx.conn, &after, tx.now)?;
        tx.changed(EntityKind::User, before.id.to_string());
        let mut e = cx.event(AuditAction::UserUpdated, "user", name(before.id));
        e.before_json = snapshot(&before);
        e.after_json = snapshot(&after);
        if before.role != after.role {
            e.detail = Some(format!("role {} -> {}", before.role, after.role));
        }
        if !self.reason.is_empty() {
            let detail = e.detail.take().unwrap_or_else(|| "updated".into());
            e.detail = Some(with_reason(detail, &self.reason));
        }
        audit::append(tx.conn, e, tx.now)?;
        users::find(tx.conn, before.id)?.ok_or_else(|| Error::Broken("user vanished".into()))
    }
}

/// Where a user's life goes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Deactivate,
    Reactivate,
    Delete,
}

impl Step {
    fn action(self) -> Action {
        match self {
            Step::Deactivate => Action::DeactivateUser,
            Step::Reactivate => Action::ReactivateUser,
            Step::Delete => Action::DeleteUser,
        }
    }
}

/// Deactivates, reactivates or deletes a user. Answers the user as it is after (`None` once
/// deleted).
#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub user: UserRef,
    pub etag: String,
    pub step: Step,
}

/// Ends a user's access: sessions revoked, open change requests cancelled. Answers the audit
/// detail.
pub(crate) fn deactivate(cx: &Ctx<'_>, tx: &mut Tx<'_>, before: &User) -> Result<Option<String>> {
    if !before.active {
        return Err(Refusal::AlreadyDeactivated.into());
    }
    ensure_other_admin(tx.conn, before, "deactivate")?;
    let after = User {
        active: false,
        ..before.clone()
    };
    users::update(tx.conn, &after, tx.now)?;
    let n = sessions::revoke_all(tx.conn, before.id, "deactivated", tx.now)?;
    let submitter = PrincipalId::User(before.id);
    let why = "its submitter was deactivated";
    let c = change_requests::cancel_for_departed_submitter(cx, tx, submitter, why)?;
    Ok(Some(format!(
        "{n} session(s) revoked, {c} open change request(s) cancelled"
    )))
}

/// Removes a deactivated user, with their memberships and any requests left open.
fn delete(cx: &Ctx<'_>, tx: &mut Tx<'_>, before: &User) -> Result<Option<String>> {
    if before.active {
        return Err(Refusal::NotDeactivated.into());
    }
    // Requests left open (deactivated before their cancellation was the rule).
    let submitter = PrincipalId::User(before.id);
    change_requests::cancel_for_departed_submitter(cx, tx, submitter, "its submitter was deleted")?;
    // Memberships go with the user (they hold no foreign key).
    for g in groups::remove_principal(tx.conn, "user", &before.id.to_string())? {
        groups::touch(tx.conn, &g, tx.now)?;
        tx.changed(EntityKind::Group, g);
    }
    users::delete(tx.conn, before.id)?;
    Ok(None)
}

impl Command for Lifecycle {
    type Output = Option<User>;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        gate(cx, &self.user, self.step.action())
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<Option<User>> {
        let before = resolve(cx, tx.conn, &self.user, self.step.action())?;
        etag::check(&self.etag, before.id, before.version)?;
        let (action, detail) = match self.step {
            Step::Deactivate => (AuditAction::UserDeactivated, deactivate(cx, tx, &before)?),
            Step::Reactivate => {
                if before.active {
                    return Err(Refusal::AlreadyActive.into());
                }
                let after = User {
                    active: true,
                    ..before.clone()
                };
                users::update(tx.conn, &after, tx.now)?;
                (AuditAction::UserReactivated, None)
            }
            Step::Delete => (AuditAction::UserDeleted, delete(cx, tx, &before)?),
        };
        tx.changed(EntityKind::User, before.id.to_string());
        let now = users::find(tx.conn, before.id)?;
        let mut e = cx.event(action, "user", name(before.id));
        e.before_json = snapshot(&before);
        e.after_json = now.as_ref().and_then(snapshot);
        e.detail = detail;
        audit::append(tx.conn, e, tx.now)?;
        Ok(now)
    }
}
