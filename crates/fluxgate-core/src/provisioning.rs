//! Provisioning from an identity provider (SCIM 2.0): users created, replaced and removed by a
//! provisioning service account, under the same rules as every other front door. The protocol
//! (resources as JSON, filters, PATCH) lives in the server's adapter, which turns every write into
//! the whole state the provider wants ([`Desired`]); this module makes FluxGate's user so.
//!
//! - `userName` is kept as sent (case-insensitively unique); FluxGate's username is the same when
//!   it is a valid one, else made from it.
//! - `active: false` deactivates (sessions end, open change requests are cancelled), and never
//!   the last active Team Admin; a SCIM DELETE deactivates too and hides the resource (FluxGate
//!   deletes only deactivated users, by an admin); creating the same `userName` again brings the
//!   user back.
//! - Every change is audited in its transaction, by the provisioning account.

use fluxgate_authz::{Action, Target};
use fluxgate_domain::{DisplayName, Email, Refusal, Role, UserId, Username, ValidationError};
use fluxgate_store::changes::EntityKind;
use fluxgate_store::scim::{self, ScimUser};
use fluxgate_store::{DbConnection, Tx, audit, users};

use crate::audit::AuditAction;
use crate::context::{Command, Ctx};
use crate::error::{Error, Result};
use crate::users::{User, deactivate, ensure_email_free, ensure_other_admin, name, snapshot};

/// A user as SCIM sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    pub user: User,
    pub user_name: String,
    pub external_id: Option<String>,
    /// The attributes FluxGate does not model, as the provider sent them (a JSON object).
    pub extra: String,
    /// The resource's version tag: the user's version and the SCIM row's.
    pub etag: String,
}

/// The state a provider wants a user in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub user_name: String,
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub active: bool,
    /// `None`: as it is (Requester for a new user).
    pub role: Option<Role>,
    pub extra: String,
}

/// Who may provision.
pub fn may_provision(cx: &Ctx<'_>) -> Result<()> {
    cx.authorize(Action::Provision, Target::Org)
}

fn etag_of(user: &User, row: Option<&ScimUser>) -> String {
    format!("W/\"{}.{}\"", user.version, row.map_or(0, |r| r.version))
}

fn view(user: User, row: Option<ScimUser>) -> Provisioned {
    let etag = etag_of(&user, row.as_ref());
    match row {
        Some(r) => Provisioned {
            user,
            user_name: r.user_name,
            external_id: r.external_id,
            extra: r.extra,
            etag,
        },
        None => Provisioned {
            user_name: user.username.clone(),
            user,
            external_id: None,
            extra: "{}".into(),
            etag,
        },
    }
}

/// One user (NOT_FOUND when there is none, or the provider deleted it).
pub fn get(cx: &Ctx<'_>, conn: &mut DbConnection, id: UserId) -> Result<Provisioned> {
    may_provision(cx)?;
    let user = users::find(conn, id)?.ok_or_else(|| Error::not_found("user"))?;
    let row = scim::find(conn, id)?;
    if row.as_ref().is_some_and(|r| r.deleted) {
        return Err(Error::not_found("user"));
    }
    Ok(view(user, row))
}

/// Every user the provider may see (all but those it deleted), by username.
pub fn all(cx: &Ctx<'_>, conn: &mut DbConnection) -> Result<Vec<Provisioned>> {
    may_provision(cx)?;
    let mut rows: std::collections::HashMap<String, ScimUser> = scim::all(conn)?
        .into_iter()
        .map(|r| (r.user_id.clone(), r))
        .collect();
    Ok(users::all(conn)?
        .into_iter()
        .filter_map(|u| {
            let row = rows.remove(&u.id.to_string());
            (!row.as_ref().is_some_and(|r| r.deleted)).then(|| view(u, row))
        })
        .collect())
}

/// The user whose `userName` is `name` (case-insensitively), if the provider may see one: the
/// indexed lookup behind `userName eq "…"`, the filter every provider sends before a create.
pub fn by_user_name(cx: &Ctx<'_>, conn: &mut DbConnection, name: &str) -> Result<Vec<Provisioned>> {
    may_provision(cx)?;
    let key = name.trim().to_lowercase();
    if let Some(row) = scim::find_by_key(conn, &key)? {
        let id: UserId = row
            .user_id
            .parse()
            .map_err(|_| Error::Broken("bad user id in scim_users".into()))?;
        return Ok(match users::find(conn, id)? {
            Some(u) if !row.deleted => vec![view(u, Some(row))],
            _ => Vec::new(),
        });
    }
    // A user FluxGate made, never provisioned: known to SCIM by their username.
    Ok(match users::find_by_username(conn, &key)? {
        Some(u) if scim::find(conn, u.id)?.is_none() => vec![view(u, None)],
        _ => Vec::new(),
    })
}

/// An `If-Match` (a resource's ETag, or `*`) against the resource's current ETag.
fn check_if_match(given: Option<String>, current: &str) -> Result<()> {
    match given {
        Some(given) if given != "*" && given != current => Err(Refusal::StaleEtag {
            given,
            current: current.to_owned(),
        }
        .into()),
        _ => Ok(()),
    }
}

fn invalid(field: &str, why: &str) -> Error {
    ValidationError::field(field, why).into()
}

/// Checks what the provider sent: a userName, an email and a name FluxGate accepts.
fn checked(d: &Desired) -> Result<(Option<Email>, Option<DisplayName>)> {
    let n = d.user_name.trim();
    if n.is_empty() || n.len() > 256 || n.chars().any(char::is_control) {
        return Err(invalid(
            "userName",
            "is required: 1 to 256 printable characters",
        ));
    }
    if d.external_id.as_ref().is_some_and(|e| e.len() > 256) {
        return Err(invalid("externalId", "is at most 256 characters"));
    }
    let email = match &d.email {
        Some(e) => Some(Email::parse(e).map_err(|_| invalid("emails", "is not an email address"))?),
        None => None,
    };
    let display = match d
        .display_name
        .as_deref()
        .map(str::trim)
        .filter(|x| !x.is_empty())
    {
        Some(x) => Some(DisplayName::parse(x).map_err(|_| invalid("displayName", "is not valid"))?),
        None => None,
    };
    Ok((email, display))
}

/// Refuses a `userName` another user has (FluxGate's own usernames count too).
fn ensure_user_name_free(conn: &mut DbConnection, key: &str, except: Option<UserId>) -> Result<()> {
    let mine = |id: &str| except.is_some_and(|e| e.to_string() == id);
    if let Some(r) = scim::find_by_key(conn, key)?
        && !mine(&r.user_id)
    {
        return Err(Refusal::UsernameTaken { name: key.into() }.into());
    }
    if let Some(u) = users::find_by_username(conn, key)?
        && Some(u.id) != except
        && scim::find(conn, u.id)?.is_none_or(|r| r.user_name_key == key)
    {
        return Err(Refusal::UsernameTaken { name: key.into() }.into());
    }
    Ok(())
}

/// A FluxGate username for a new user: the userName itself when valid and free, else one made
/// from it (letters, digits, '.', '_', '-'), with a number added while taken.
fn username_for(conn: &mut DbConnection, user_name: &str) -> Result<Username> {
    let key = user_name.to_lowercase();
    if let Ok(u) = Username::parse(&key)
        && users::find_by_username(conn, u.as_str())?.is_none()
    {
        return Ok(u);
    }
    let local = key.split('@').next().unwrap_or(&key);
    crate::sso::free_username(conn, local)
        .map_err(|_| invalid("userName", "no username can be made from it"))
}

fn event(
    cx: &Ctx<'_>,
    action: AuditAction,
    before: Option<&User>,
    after: &User,
) -> audit::NewEvent {
    let mut e = cx.event(action, "user", name(after.id));
    e.before_json = before.and_then(snapshot);
    e.after_json = snapshot(after);
    e
}

/// Creates a user (or brings back one the provider deleted, by the same `userName`).
#[derive(Debug, Clone)]
pub struct Create(pub Desired);

impl Command for Create {
    type Output = Provisioned;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        may_provision(cx)?;
        checked(&self.0).map(drop)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<Provisioned> {
        let (email, display) = checked(&self.0)?;
        let key = self.0.user_name.trim().to_lowercase();
        if let Some(r) = scim::find_by_key(tx.conn, &key)?
            && r.deleted
        {
            let id: UserId = r
                .user_id
                .parse()
                .map_err(|_| Error::Broken("bad user id in scim_users".into()))?;
            return set(cx, tx, id, None, self.0, true);
        }
        ensure_user_name_free(tx.conn, &key, None)?;
        let id = UserId::generate();
        let email = match email {
            Some(e) => e.as_str().to_owned(),
            // FluxGate needs an address; a provider that sends none gets a placeholder that
            // can receive nothing, and no email attribute back.
            None => format!("{id}@scim.invalid"),
        };
        ensure_email_free(tx.conn, &email, None)?;
        let username = username_for(tx.conn, &self.0.user_name)?;
        let display = display.map_or_else(
            || self.0.user_name.trim().to_owned(),
            |d| d.as_str().to_owned(),
        );
        users::insert(
            tx.conn,
            &users::NewUser {
                id,
                username: username.as_str(),
                email: &email,
                display_name: &display,
                role: self.0.role.unwrap_or(Role::Requester),
                must_change_password: false,
                password_hash: None,
            },
            tx.now,
        )?;
        let row = ScimUser {
            user_id: id.to_string(),
            user_name: self.0.user_name.trim().to_owned(),
            user_name_key: key,
            external_id: self.0.external_id.clone(),
            extra: self.0.extra.clone(),
            version: 1,
            deleted: false,
        };
        scim::put(tx.conn, &row)?;
        tx.changed(EntityKind::User, id.to_string());
        let user =
            users::find(tx.conn, id)?.ok_or_else(|| Error::Broken("user vanished".into()))?;
        let mut e = event(cx, AuditAction::UserCreated, None, &user);
        e.detail = Some("provisioned through SCIM".into());
        audit::append(tx.conn, e, tx.now)?;
        if !self.0.active {
            return set(cx, tx, id, None, self.0, false);
        }
        Ok(view(user, Some(row)))
    }
}

/// Several creations in one transaction (a SCIM bulk request's run of them): all or none.
#[derive(Debug, Clone)]
pub struct CreateMany(pub Vec<Desired>);

impl Command for CreateMany {
    type Output = Vec<Provisioned>;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        may_provision(cx)?;
        self.0.iter().try_for_each(|d| checked(d).map(drop))
    }

    /// A plain batch (see [`plain`]) takes a statement per step for all its users; any other is
    /// made one by one, each under every rule [`Create`] has.
    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<Vec<Provisioned>> {
        match plain(tx.conn, &self.0)? {
            Some(checked) => create_plain(cx, tx, self.0, checked),
            None => self
                .0
                .into_iter()
                .map(|d| Create(d).apply(cx, tx))
                .collect(),
        }
    }
}

/// What [`plain`] found for each user of a batch: its address, name and username.
type Plain = (Option<Email>, Option<DisplayName>, Username);

/// Whether a batch is plain: every user active; its `userName` unknown to SCIM and FluxGate and
/// once in the batch; the username made from it free and once in the batch; every address free
/// and once in the batch. Then each user is created exactly as [`Create`] would, and no
/// rule can refuse one. `None` otherwise (a refusal, a revival, a made-up username).
fn plain(conn: &mut DbConnection, batch: &[Desired]) -> Result<Option<Vec<Plain>>> {
    let mut keys = std::collections::HashSet::new();
    let mut emails = std::collections::HashSet::new();
    let mut usernames = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(batch.len());
    for d in batch {
        let (email, display) = checked(d)?;
        let key = d.user_name.trim().to_lowercase();
        // The username [`username_for`] makes when it is free: the userName itself, else one
        // from the part before any '@'.
        let whole = d.user_name.to_lowercase();
        let made = match Username::parse(&whole) {
            Ok(u) => Ok(u),
            Err(_) => Username::parse(&crate::sso::username_base(
                whole.split('@').next().unwrap_or(&whole),
            )),
        };
        let Ok(username) = made else {
            return Ok(None);
        };
        let fresh_email = email
            .as_ref()
            .is_none_or(|e| emails.insert(e.as_str().to_owned()));
        if !d.active
            || !keys.insert(key)
            || !usernames.insert(username.as_str().to_owned())
            || !fresh_email
        {
            return Ok(None);
        }
        out.push((email, display, username));
    }
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let names: Vec<&str> = usernames.iter().map(String::as_str).collect();
    let emails: Vec<&str> = emails.iter().map(String::as_str).collect();
    let known = !scim::find_by_keys(conn, &keys)?.is_empty()
        || !users::taken_usernames(conn, &keys)?.is_empty()
        || !users::taken_usernames(conn, &names)?.is_empty()
        || !users::taken_emails(conn, &emails)?.is_empty();
    Ok((!known).then_some(out))
}

/// Creates a plain batch: one multi-row statement each for the users, their SCIM rows and
/// their audit events.
fn create_plain(
    cx: &Ctx<'_>,
    tx: &mut Tx<'_>,
    batch: Vec<Desired>,
    checked: Vec<Plain>,
) -> Result<Vec<Provisioned>> {
    let ids: Vec<UserId> = batch.iter().map(|_| UserId::generate()).collect();
    let emails: Vec<String> = checked
        .iter()
        .zip(&ids)
        .map(|((email, ..), id)| {
            email
                .as_ref()
                .map_or_else(|| format!("{id}@scim.invalid"), |e| e.as_str().to_owned())
        })
        .collect();
    let displays: Vec<String> = checked
        .iter()
        .zip(&batch)
        .map(|((_, display, _), d)| {
            display
                .as_ref()
                .map_or_else(|| d.user_name.trim().to_owned(), |n| n.as_str().to_owned())
        })
        .collect();
    let new: Vec<users::NewUser<'_>> = (0..batch.len())
        .map(|i| users::NewUser {
            id: ids[i],
            username: checked[i].2.as_str(),
            email: &emails[i],
            display_name: &displays[i],
            role: batch[i].role.unwrap_or(Role::Requester),
            must_change_password: false,
            password_hash: None,
        })
        .collect();
    let created = users::insert_many(tx.conn, &new, tx.now)?;
    let rows: Vec<ScimUser> = batch
        .into_iter()
        .zip(&ids)
        .map(|(d, id)| ScimUser {
            user_id: id.to_string(),
            user_name: d.user_name.trim().to_owned(),
            user_name_key: d.user_name.trim().to_lowercase(),
            external_id: d.external_id,
            extra: d.extra,
            version: 1,
            deleted: false,
        })
        .collect();
    scim::insert_many(tx.conn, &rows)?;
    let events = created
        .iter()
        .map(|user| {
            tx.changed(EntityKind::User, user.id.to_string());
            let mut e = event(cx, AuditAction::UserCreated, None, user);
            e.detail = Some("provisioned through SCIM".into());
            e
        })
        .collect();
    audit::append_many(tx.conn, events, tx.now)?;
    Ok(created
        .into_iter()
        .zip(rows)
        .map(|(user, row)| view(user, Some(row)))
        .collect())
}

/// Replaces a user with the state the provider wants (PUT, and PATCH once applied).
#[derive(Debug, Clone)]
pub struct Replace {
    pub id: UserId,
    /// The ETag an `If-Match` named, if any.
    pub if_match: Option<String>,
    pub desired: Desired,
}

impl Command for Replace {
    type Output = Provisioned;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        may_provision(cx)?;
        checked(&self.desired).map(drop)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<Provisioned> {
        set(cx, tx, self.id, self.if_match, self.desired, false)
    }
}

/// Makes user `id` as `d` says; `revive` brings back a user the provider deleted.
fn set(
    cx: &Ctx<'_>,
    tx: &mut Tx<'_>,
    id: UserId,
    if_match: Option<String>,
    d: Desired,
    revive: bool,
) -> Result<Provisioned> {
    let (email, display) = checked(&d)?;
    let before = users::find(tx.conn, id)?.ok_or_else(|| Error::not_found("user"))?;
    let row = scim::find(tx.conn, id)?;
    if row.as_ref().is_some_and(|r| r.deleted) && !revive {
        return Err(Error::not_found("user"));
    }
    let current = etag_of(&before, row.as_ref());
    check_if_match(if_match, &current)?;
    let key = d.user_name.trim().to_lowercase();
    ensure_user_name_free(tx.conn, &key, Some(id))?;
    let mut after = before.clone();
    if let Some(e) = &email
        && e.as_str() != before.email
    {
        ensure_email_free(tx.conn, e.as_str(), Some(id))?;
        after.email = e.as_str().to_owned();
    }
    if let Some(n) = &display {
        after.display_name = n.as_str().to_owned();
    }
    if let Some(r) = d.role
        && r != before.role
    {
        if r != Role::TeamAdmin {
            ensure_other_admin(tx.conn, &before, "demote")?;
        }
        after.role = r;
    }
    let fields_changed = (after.email != before.email)
        || (after.display_name != before.display_name)
        || (after.role != before.role);
    if fields_changed {
        users::update(tx.conn, &after, tx.now)?;
        let now = users::find(tx.conn, id)?.ok_or_else(|| Error::Broken("user vanished".into()))?;
        let mut e = event(cx, AuditAction::UserUpdated, Some(&before), &now);
        e.detail = Some(if after.role != before.role {
            format!("role {} -> {} through SCIM", before.role, after.role)
        } else {
            "updated through SCIM".into()
        });
        audit::append(tx.conn, e, tx.now)?;
    }
    let mid = users::find(tx.conn, id)?.ok_or_else(|| Error::Broken("user vanished".into()))?;
    if mid.active != d.active {
        let (action, detail) = if d.active {
            users::update(
                tx.conn,
                &User {
                    active: true,
                    ..mid.clone()
                },
                tx.now,
            )?;
            (AuditAction::UserReactivated, None)
        } else {
            (AuditAction::UserDeactivated, deactivate(cx, tx, &mid)?)
        };
        let now = users::find(tx.conn, id)?.ok_or_else(|| Error::Broken("user vanished".into()))?;
        let mut e = event(cx, action, Some(&mid), &now);
        e.detail = Some(format!(
            "through SCIM{}",
            detail.map(|d| format!("; {d}")).unwrap_or_default()
        ));
        audit::append(tx.conn, e, tx.now)?;
    }
    let new_row = ScimUser {
        user_id: id.to_string(),
        user_name: d.user_name.trim().to_owned(),
        user_name_key: key,
        external_id: d.external_id,
        extra: d.extra,
        version: row.as_ref().map_or(1, |r| r.version + 1),
        deleted: false,
    };
    scim::put(tx.conn, &new_row)?;
    tx.changed(EntityKind::User, id.to_string());
    let user = users::find(tx.conn, id)?.ok_or_else(|| Error::Broken("user vanished".into()))?;
    Ok(view(user, Some(new_row)))
}

/// A SCIM DELETE: deactivates the user (never the last active Team Admin) and hides the
/// resource.
#[derive(Debug, Clone)]
pub struct Remove {
    pub id: UserId,
    pub if_match: Option<String>,
}

impl Command for Remove {
    type Output = ();

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        may_provision(cx)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<()> {
        let current = get(cx, tx.conn, self.id)?;
        check_if_match(self.if_match, &current.etag)?;
        let before = current.user;
        let detail = if before.active {
            let d = deactivate(cx, tx, &before)?;
            let now = users::find(tx.conn, self.id)?
                .ok_or_else(|| Error::Broken("user vanished".into()))?;
            let mut e = event(cx, AuditAction::UserDeactivated, Some(&before), &now);
            e.detail = Some(format!(
                "deleted through SCIM: deactivated{}",
                d.map(|d| format!("; {d}")).unwrap_or_default()
            ));
            audit::append(tx.conn, e, tx.now)?;
            true
        } else {
            false
        };
        let row = scim::find(tx.conn, self.id)?;
        let key = current.user_name.to_lowercase();
        scim::put(
            tx.conn,
            &ScimUser {
                user_id: self.id.to_string(),
                user_name: current.user_name,
                user_name_key: key,
                external_id: current.external_id,
                extra: current.extra,
                version: row.map_or(1, |r| r.version + 1),
                deleted: true,
            },
        )?;
        if !detail {
            let mut e = event(cx, AuditAction::UserUpdated, Some(&before), &before);
            e.detail = Some("deleted through SCIM (already deactivated)".into());
            audit::append(tx.conn, e, tx.now)?;
        }
        tx.changed(EntityKind::User, self.id.to_string());
        Ok(())
    }
}

/// A portfolio group as SCIM sees it: named `{portfolio}/{group}` by display names, its user
/// members (service accounts are FluxGate's business and stay out of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedGroup {
    pub id: String,
    pub portfolio: String,
    pub name: String,
    pub administrators: bool,
    pub external_id: Option<String>,
    /// (user id, username), by username.
    pub members: Vec<(UserId, String)>,
    pub created_at: i64,
    pub updated_at: i64,
    pub etag: String,
}

impl ProvisionedGroup {
    /// Its SCIM `displayName`: `{portfolio}/{group}`, or the name alone in the default
    /// portfolio.
    pub fn display_name(&self, default_portfolio: Option<&str>) -> String {
        if default_portfolio.is_some_and(|d| d.eq_ignore_ascii_case(&self.portfolio)) {
            self.name.clone()
        } else {
            format!("{}/{}", self.portfolio, self.name)
        }
    }
}

/// The state a provider wants a group in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredGroup {
    /// `{portfolio}/{group}`, by display names.
    pub display_name: String,
    pub external_id: Option<String>,
    pub members: Vec<UserId>,
}

use fluxgate_store::{catalog, groups as gstore};

fn group_view(
    conn: &mut DbConnection,
    g: gstore::Group,
    row: Option<scim::ScimGroup>,
    members: Vec<(UserId, String)>,
) -> Result<ProvisionedGroup> {
    let portfolio = catalog::find(conn, catalog::Kind::Portfolio, &g.portfolio_id)?
        .map(|p| p.display_name)
        .unwrap_or_default();
    Ok(ProvisionedGroup {
        etag: format!(
            "W/\"{}.{}\"",
            g.version,
            row.as_ref().map_or(0, |r| r.version)
        ),
        external_id: row.and_then(|r| r.external_id),
        id: g.id,
        portfolio,
        name: g.display_name,
        administrators: g.administrators,
        members,
        created_at: g.created_at,
        updated_at: g.updated_at,
    })
}

fn user_members(conn: &mut DbConnection, group: &str) -> Result<Vec<(UserId, String)>> {
    let mut out = Vec::new();
    for (kind, id) in gstore::members(conn, group, None, i64::MAX)? {
        if kind != "user" {
            continue;
        }
        if let Ok(uid) = id.parse::<UserId>()
            && let Some(u) = users::find(conn, uid)?
        {
            out.push((uid, u.username));
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// One group (NOT_FOUND when there is none).
pub fn group(cx: &Ctx<'_>, conn: &mut DbConnection, id: &str) -> Result<ProvisionedGroup> {
    may_provision(cx)?;
    let g = gstore::find(conn, id)?.ok_or_else(|| Error::not_found("group"))?;
    let row = scim::find_group(conn, id)?;
    let members = user_members(conn, id)?;
    group_view(conn, g, row, members)
}

/// Every portfolio group, with its user members.
pub fn all_groups(cx: &Ctx<'_>, conn: &mut DbConnection) -> Result<Vec<ProvisionedGroup>> {
    may_provision(cx)?;
    let names: std::collections::HashMap<String, String> = users::all(conn)?
        .into_iter()
        .map(|u| (u.id.to_string(), u.username))
        .collect();
    let mut members: std::collections::HashMap<String, Vec<(UserId, String)>> = Default::default();
    for (g, kind, id) in gstore::all_members(conn)? {
        if kind == "user"
            && let (Ok(uid), Some(n)) = (id.parse::<UserId>(), names.get(&id))
        {
            members.entry(g).or_default().push((uid, n.clone()));
        }
    }
    let mut rows: std::collections::HashMap<String, scim::ScimGroup> = scim::all_groups(conn)?
        .into_iter()
        .map(|r| (r.group_id.clone(), r))
        .collect();
    let mut out = Vec::new();
    for g in gstore::all(conn)? {
        let mut m = members.remove(&g.id).unwrap_or_default();
        m.sort_by(|a, b| a.1.cmp(&b.1));
        let row = rows.remove(&g.id);
        out.push(group_view(conn, g, row, m)?);
    }
    Ok(out)
}

/// `{portfolio}/{group}` (or a name alone, in the default portfolio): the portfolio (which
/// must exist) and the group's name.
fn split_name(
    cx: &Ctx<'_>,
    conn: &mut DbConnection,
    display: &str,
) -> Result<(catalog::Item, fluxgate_domain::Title)> {
    let (p, g) = match (display.split_once('/'), &cx.limits.scim_default_portfolio) {
        (Some(pg), _) => pg,
        (None, Some(d)) => (d.as_str(), display),
        (None, None) => {
            return Err(invalid(
                "displayName",
                "must be \"{portfolio}/{group}\", the portfolio's and the group's display names",
            ));
        }
    };
    let portfolio = catalog::find_by_name(conn, catalog::Kind::Portfolio, "", p.trim())?
        .ok_or_else(|| {
            invalid(
                "displayName",
                "names no portfolio: create the portfolio in FluxGate first",
            )
        })?;
    let name = fluxgate_domain::Title::parse(g.trim()).map_err(|_| {
        invalid(
            "displayName",
            "the group's name must be 1 to 100 characters",
        )
    })?;
    Ok((portfolio, name))
}

/// Makes the group's user members exactly `want`, each change audited.
fn set_members(cx: &Ctx<'_>, tx: &mut Tx<'_>, g: &gstore::Group, want: &[UserId]) -> Result<bool> {
    let have: Vec<UserId> = user_members(tx.conn, &g.id)?
        .into_iter()
        .map(|(u, _)| u)
        .collect();
    for u in want {
        if users::find(tx.conn, *u)?.is_none() {
            return Err(invalid("members", &format!("no user {u}")));
        }
    }
    let target = Some(crate::names::group(&g.portfolio_id, &g.id));
    let mut changed = false;
    for u in want.iter().filter(|u| !have.contains(u)) {
        gstore::add_member(tx.conn, &g.id, "user", &u.to_string(), tx.now)?;
        let mut e = cx.event(AuditAction::GroupMemberAdded, "group", target.clone());
        e.detail = Some(format!("users/{u}; through SCIM"));
        audit::append(tx.conn, e, tx.now)?;
        changed = true;
    }
    for u in have.iter().filter(|u| !want.contains(u)) {
        gstore::remove_member(tx.conn, &g.id, "user", &u.to_string())?;
        let mut e = cx.event(AuditAction::GroupMemberRemoved, "group", target.clone());
        e.detail = Some(format!("users/{u}; through SCIM"));
        audit::append(tx.conn, e, tx.now)?;
        changed = true;
    }
    Ok(changed)
}

fn check_group_input(d: &DesiredGroup) -> Result<()> {
    if d.external_id.as_ref().is_some_and(|e| e.len() > 256) {
        return Err(invalid("externalId", "is at most 256 characters"));
    }
    if d.members.len() > 100_000 {
        return Err(invalid("members", "at most 100000"));
    }
    Ok(())
}

/// Creates a group (or takes over the portfolio's group of that name, when no provider has).
#[derive(Debug, Clone)]
pub struct CreateGroup(pub DesiredGroup);

impl Command for CreateGroup {
    type Output = ProvisionedGroup;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        may_provision(cx)?;
        check_group_input(&self.0)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<ProvisionedGroup> {
        let (portfolio, name) = split_name(cx, tx.conn, &self.0.display_name)?;
        let g = match gstore::find_by_name(tx.conn, &portfolio.id, name.as_str())? {
            Some(g) if scim::find_group(tx.conn, &g.id)?.is_some() => {
                return Err(Refusal::GroupNameTaken {
                    name: self.0.display_name.clone(),
                }
                .into());
            }
            Some(g) => g,
            None => {
                let g = gstore::Group {
                    id: uuid::Uuid::now_v7().to_string(),
                    portfolio_id: portfolio.id.clone(),
                    display_name: name.as_str().to_owned(),
                    description: String::new(),
                    administrators: false,
                    created_at: tx.now,
                    updated_at: tx.now,
                    version: 1,
                };
                gstore::insert(tx.conn, &g)?;
                let target = Some(crate::names::group(&g.portfolio_id, &g.id));
                let mut e = cx.event(AuditAction::GroupCreated, "group", target);
                e.detail = Some(format!("{} through SCIM", self.0.display_name));
                audit::append(tx.conn, e, tx.now)?;
                g
            }
        };
        scim::put_group(
            tx.conn,
            &scim::ScimGroup {
                group_id: g.id.clone(),
                external_id: self.0.external_id.clone(),
                version: 1,
            },
        )?;
        if set_members(cx, tx, &g, &self.0.members)? {
            gstore::touch(tx.conn, &g.id, tx.now)?;
        }
        tx.changed(EntityKind::Group, g.id.clone());
        group(cx, tx.conn, &g.id)
    }
}

/// Replaces a group with the state the provider wants (PUT, and PATCH once applied).
#[derive(Debug, Clone)]
pub struct ReplaceGroup {
    pub id: String,
    pub if_match: Option<String>,
    pub desired: DesiredGroup,
}

impl Command for ReplaceGroup {
    type Output = ProvisionedGroup;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        may_provision(cx)?;
        check_group_input(&self.desired)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<ProvisionedGroup> {
        let current = group(cx, tx.conn, &self.id)?;
        check_if_match(self.if_match, &current.etag)?;
        let mut g = gstore::find(tx.conn, &self.id)?.ok_or_else(|| Error::not_found("group"))?;
        let (portfolio, name) = split_name(cx, tx.conn, &self.desired.display_name)?;
        if portfolio.id != g.portfolio_id {
            return Err(invalid(
                "displayName",
                "a group cannot move to another portfolio",
            ));
        }
        if name.as_str() != g.display_name {
            if g.administrators {
                return Err(Refusal::AdministratorsFixed.into());
            }
            if gstore::find_by_name(tx.conn, &portfolio.id, name.as_str())?
                .is_some_and(|o| o.id != g.id)
            {
                return Err(Refusal::GroupNameTaken {
                    name: self.desired.display_name.clone(),
                }
                .into());
            }
            let before = g.display_name.clone();
            g.display_name = name.as_str().to_owned();
            gstore::update(tx.conn, &g, tx.now)?;
            let target = Some(crate::names::group(&g.portfolio_id, &g.id));
            let mut e = cx.event(AuditAction::GroupUpdated, "group", target);
            e.detail = Some(format!(
                "renamed {before:?} -> {:?} through SCIM",
                g.display_name
            ));
            audit::append(tx.conn, e, tx.now)?;
            g = gstore::find(tx.conn, &self.id)?.ok_or_else(|| Error::not_found("group"))?;
        }
        if set_members(cx, tx, &g, &self.desired.members)? {
            gstore::touch(tx.conn, &g.id, tx.now)?;
        }
        let row = scim::find_group(tx.conn, &g.id)?;
        scim::put_group(
            tx.conn,
            &scim::ScimGroup {
                group_id: g.id.clone(),
                external_id: self.desired.external_id,
                version: row.map_or(1, |r| r.version + 1),
            },
        )?;
        tx.changed(EntityKind::Group, g.id.clone());
        group(cx, tx.conn, &g.id)
    }
}

/// Deletes a group and its memberships (never a portfolio's Administrators group).
#[derive(Debug, Clone)]
pub struct RemoveGroup {
    pub id: String,
    pub if_match: Option<String>,
}

impl Command for RemoveGroup {
    type Output = ();

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        may_provision(cx)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<()> {
        let current = group(cx, tx.conn, &self.id)?;
        check_if_match(self.if_match, &current.etag)?;
        if current.administrators {
            return Err(Refusal::AdministratorsUndeletable.into());
        }
        let g = gstore::find(tx.conn, &self.id)?.ok_or_else(|| Error::not_found("group"))?;
        let members = gstore::member_count(tx.conn, &g.id)?;
        gstore::delete(tx.conn, &g.id)?;
        tx.changed(EntityKind::Group, g.id.clone());
        let target = Some(crate::names::group(&g.portfolio_id, &g.id));
        let mut e = cx.event(AuditAction::GroupDeleted, "group", target);
        e.detail = Some(format!(
            "{} deleted through SCIM; {members} membership(s) removed",
            current.display_name(cx.limits.scim_default_portfolio.as_deref())
        ));
        audit::append(tx.conn, e, tx.now)?;
        Ok(())
    }
}
