//! Portfolio groups, their grants and their members. Each portfolio's Administrators group is
//! fixed: it keeps its name, holds every permission and cannot be deleted.

use std::collections::{HashMap, HashSet};

use fluxgate_authz::{Action, Target};
use fluxgate_domain::{
    Description, FeaturePermission, PortfolioId, PrincipalId, Refusal, Title, ValuePermissions,
};
use fluxgate_store::catalog::{self, Kind};
use fluxgate_store::changes::EntityKind;
use fluxgate_store::groups::{self as store, Filter};
use fluxgate_store::{DbConnection, Tx, audit, service_accounts, users};

pub use fluxgate_store::groups::{ADMINISTRATORS, Grants, Group};

use crate::audit::AuditAction;
use crate::context::{Command, Ctx};
use crate::error::{Error, Result};
use crate::etag;
use crate::names::{self, PrincipalRef, UserRef};

/// Where a page ended: a (name, id) or (kind, id) pair.
pub type Cursor = Option<(String, String)>;
/// Grant rows to store: applications with permissions, environments with permission bits.
type GrantRows = (Option<Vec<(String, String)>>, Option<Vec<(String, i32)>>);

/// A grant on an application: (portfolio id, application id, permission).
pub type AppGrant = (String, String, FeaturePermission);
/// A grant on an environment: (portfolio id, application id, environment id, permissions).
pub type EnvGrant = (String, String, String, ValuePermissions);

/// A group as callers see it: with its grants, member count, and each granted environment's
/// application (for the environment's resource name).
#[derive(Debug, Clone)]
pub struct GroupView {
    pub group: Group,
    pub grants: Grants,
    pub member_count: i64,
    pub environment_applications: HashMap<String, String>,
}

/// Several groups with their grants and member counts, in a fixed number of queries.
pub fn views(conn: &mut DbConnection, gs: Vec<Group>) -> Result<Vec<GroupView>> {
    let ids: Vec<String> = gs.iter().map(|g| g.id.clone()).collect();
    let mut grants = store::grants_of(conn, &ids)?;
    let counts = store::member_counts(conn, &ids)?;
    let mut env_ids: Vec<String> = grants
        .values()
        .flat_map(|g| g.environments.iter().map(|(e, _)| e.clone()))
        .collect();
    env_ids.sort();
    env_ids.dedup();
    let env_app: HashMap<String, String> = catalog::environment_applications(conn, &env_ids)?
        .into_iter()
        .collect();
    Ok(gs
        .into_iter()
        .map(|g| {
            let gr = grants.remove(&g.id).unwrap_or_default();
            let environment_applications = gr
                .environments
                .iter()
                .filter_map(|(e, _)| env_app.get(e).map(|a| (e.clone(), a.clone())))
                .collect();
            GroupView {
                member_count: counts.get(&g.id).copied().unwrap_or(0),
                group: g,
                grants: gr,
                environment_applications,
            }
        })
        .collect())
}

fn view(conn: &mut DbConnection, g: Group) -> Result<GroupView> {
    views(conn, vec![g])?
        .pop()
        .ok_or_else(|| Error::Broken("a group went missing".into()))
}

/// Loads a group, checking that it sits in the portfolio its name says.
fn load(conn: &mut DbConnection, portfolio: &str, id: &str) -> Result<Group> {
    store::find(conn, id)?
        .filter(|g| g.portfolio_id == portfolio)
        .ok_or_else(|| Error::not_found("group"))
}

fn authorize_in(cx: &Ctx<'_>, action: Action, portfolio: &str) -> Result<()> {
    let id: PortfolioId = portfolio
        .parse()
        .map_err(|_| Error::Broken(format!("bad portfolio id {portfolio}")))?;
    cx.authorize(action, Target::Portfolio(id))
}

/// Checks that every granted application and environment exists in the group's portfolio, in
/// two queries whatever the number of grants.
fn check_targets(
    conn: &mut DbConnection,
    portfolio: &str,
    apps: &[AppGrant],
    envs: &[EnvGrant],
) -> Result<()> {
    if apps.is_empty() && envs.is_empty() {
        return Ok(());
    }
    let mut v = fluxgate_domain::Violations::new();
    let apps_here: HashSet<String> = catalog::application_parents(conn, Some(portfolio))?
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    for (i, (p, a, _)) in apps.iter().enumerate() {
        if p != portfolio || !apps_here.contains(a) {
            v.add(
                format!("group.application_grants[{i}].application"),
                "is not an application of the group's portfolio",
            );
        }
    }
    let env_ids: Vec<String> = envs.iter().map(|(_, _, e, _)| e.clone()).collect();
    let env_app: HashMap<String, String> = if env_ids.is_empty() {
        HashMap::new()
    } else {
        catalog::environment_applications(conn, &env_ids)?
            .into_iter()
            .collect()
    };
    for (i, (p, a, e, _)) in envs.iter().enumerate() {
        let ok = p == portfolio
            && env_app.get(e).map(String::as_str) == Some(a.as_str())
            && apps_here.contains(a);
        if !ok {
            v.add(
                format!("group.environment_grants[{i}].environment"),
                "is not an environment of the group's portfolio",
            );
        }
    }
    Ok(v.finish()?)
}

/// The grant checks on a read connection, before any write, so that bad input never waits
/// for (or holds) the write lock: the portfolio (and the group, when given) must exist first,
/// as the write would find. The write checks again.
pub fn precheck(
    conn: &mut DbConnection,
    portfolio: &str,
    group: Option<&str>,
    apps: &[AppGrant],
    envs: &[EnvGrant],
) -> Result<()> {
    catalog::find(conn, Kind::Portfolio, portfolio)?
        .ok_or_else(|| Error::not_found("portfolio"))?;
    if let Some(g) = group {
        load(conn, portfolio, g)?;
    }
    check_targets(conn, portfolio, apps, envs)
}

fn app_rows(apps: &[AppGrant]) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = apps
        .iter()
        .map(|(_, a, p)| (a.clone(), p.as_str().to_owned()))
        .collect();
    rows.sort();
    rows
}

fn env_rows(envs: &[EnvGrant]) -> Vec<(String, i32)> {
    let mut rows: Vec<(String, i32)> = envs
        .iter()
        .map(|(_, _, e, b)| (e.clone(), i32::from(b.bits())))
        .collect();
    rows.sort();
    rows
}

fn snapshot(conn: &mut DbConnection, g: &Group) -> Result<Option<String>> {
    let gr = store::grants(conn, &g.id)?;
    let apps: Vec<serde_json::Value> = gr
        .applications
        .iter()
        .map(|(a, p)| serde_json::json!({"application": a, "feature_permission": p}))
        .collect();
    let envs: Vec<serde_json::Value> = gr
        .environments
        .iter()
        .map(|(e, b)| {
            let perms = ValuePermissions::from_bits(*b as u8).to_string();
            serde_json::json!({"environment": e, "permissions": perms})
        })
        .collect();
    let v = serde_json::json!({
        "application_grants": apps,
        "environment_grants": envs,
        "display_name": g.display_name,
        "description": g.description,
    });
    Ok(serde_json::to_string(&v).ok())
}

fn name_taken(name: &str) -> Error {
    Refusal::GroupNameTaken {
        name: name.to_owned(),
    }
    .into()
}

/// A new group.
#[derive(Debug, Clone)]
pub struct Create {
    pub portfolio: String,
    pub display_name: Title,
    pub description: Description,
    pub applications: Vec<AppGrant>,
    pub environments: Vec<EnvGrant>,
}

impl Command for Create {
    type Output = GroupView;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        authorize_in(cx, Action::ManageGroups, &self.portfolio)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<GroupView> {
        let portfolio = &self.portfolio;
        catalog::find(tx.conn, Kind::Portfolio, portfolio)?
            .ok_or_else(|| Error::not_found("portfolio"))?;
        if store::find_by_name(tx.conn, portfolio, self.display_name.as_str())?.is_some() {
            return Err(name_taken(self.display_name.as_str()));
        }
        check_targets(tx.conn, portfolio, &self.applications, &self.environments)?;
        let g = Group {
            id: uuid::Uuid::now_v7().to_string(),
            portfolio_id: portfolio.clone(),
            display_name: self.display_name.as_str().to_owned(),
            description: self.description.as_str().to_owned(),
            administrators: false,
            created_at: tx.now,
            updated_at: tx.now,
            version: 1,
        };
        store::insert(tx.conn, &g)?;
        store::set_application_grants(tx.conn, &g.id, &app_rows(&self.applications))?;
        store::set_environment_grants(tx.conn, &g.id, &env_rows(&self.environments))?;
        tx.changed(EntityKind::Group, g.id.clone());
        let target = names::group(portfolio, &g.id);
        let mut e = cx.event(AuditAction::GroupCreated, "group", Some(target));
        e.after_json = snapshot(tx.conn, &g)?;
        audit::append(tx.conn, e, tx.now)?;
        view(tx.conn, g)
    }
}

/// Changes a group; `None` fields stay (grants given replace the group's grants).
#[derive(Debug, Clone)]
pub struct Update {
    pub portfolio: String,
    pub id: String,
    pub etag: String,
    pub display_name: Option<Title>,
    pub description: Option<Description>,
    pub applications: Option<Vec<AppGrant>>,
    pub environments: Option<Vec<EnvGrant>>,
}

impl Update {
    /// The grants that differ from the stored ones, as rows to store.
    fn grant_changes(&self, conn: &mut DbConnection) -> Result<GrantRows> {
        let stored = store::grants(conn, &self.id)?;
        let apps = self
            .applications
            .as_deref()
            .map(app_rows)
            .filter(|a| *a != stored.applications);
        let envs = self
            .environments
            .as_deref()
            .map(env_rows)
            .filter(|e| *e != stored.environments);
        Ok((apps, envs))
    }
}

impl Command for Update {
    type Output = GroupView;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        authorize_in(cx, Action::ManageGroups, &self.portfolio)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<GroupView> {
        let (portfolio, id) = (&self.portfolio, &self.id);
        let before = load(tx.conn, portfolio, id)?;
        etag::check(&self.etag, &before.id, before.version)?;
        let regrants = self.applications.is_some() || self.environments.is_some();
        if before.administrators && (self.display_name.is_some() || regrants) {
            return Err(Refusal::AdministratorsFixed.into());
        }
        let before_json = snapshot(tx.conn, &before)?;
        let mut after = before.clone();
        if let Some(n) = &self.display_name {
            if n.key() != before.display_name.to_lowercase()
                && store::find_by_name(tx.conn, portfolio, n.as_str())?.is_some()
            {
                return Err(name_taken(n.as_str()));
            }
            after.display_name = n.as_str().to_owned();
        }
        if let Some(d) = &self.description {
            after.description = d.as_str().to_owned();
        }
        let apps = self.applications.as_deref().unwrap_or_default();
        let envs = self.environments.as_deref().unwrap_or_default();
        check_targets(tx.conn, portfolio, apps, envs)?;
        let (new_apps, new_envs) = self.grant_changes(tx.conn)?;
        if after == before && new_apps.is_none() && new_envs.is_none() {
            // Nothing changes: answer with the group as it is, write nothing.
            return view(tx.conn, before);
        }
        if let Some(rows) = &new_apps {
            store::set_application_grants(tx.conn, id, rows)?;
        }
        if let Some(rows) = &new_envs {
            store::set_environment_grants(tx.conn, id, rows)?;
        }
        store::update(tx.conn, &after, tx.now)?;
        let fresh = load(tx.conn, portfolio, id)?;
        tx.changed(EntityKind::Group, id.clone());
        let mut e = cx.event(
            AuditAction::GroupUpdated,
            "group",
            Some(names::group(portfolio, id)),
        );
        e.before_json = before_json;
        e.after_json = snapshot(tx.conn, &fresh)?;
        audit::append(tx.conn, e, tx.now)?;
        view(tx.conn, fresh)
    }
}

/// Deletes a group: refused for the Administrators group, and while it has members unless
/// `force`.
#[derive(Debug, Clone)]
pub struct Delete {
    pub portfolio: String,
    pub id: String,
    pub etag: String,
    pub force: bool,
}

impl Command for Delete {
    type Output = ();

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        authorize_in(cx, Action::ManageGroups, &self.portfolio)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<()> {
        let before = load(tx.conn, &self.portfolio, &self.id)?;
        etag::check(&self.etag, &before.id, before.version)?;
        if before.administrators {
            return Err(Refusal::AdministratorsUndeletable.into());
        }
        let members = store::member_count(tx.conn, &self.id)?;
        if members > 0 && !self.force {
            return Err(Refusal::GroupHasMembers { members }.into());
        }
        let target = names::group(&self.portfolio, &self.id);
        let mut e = cx.event(AuditAction::GroupDeleted, "group", Some(target));
        e.before_json = snapshot(tx.conn, &before)?;
        if self.force && members > 0 {
            e.detail = Some(format!("forced: {members} membership(s) removed"));
        }
        store::delete(tx.conn, &self.id)?;
        tx.changed(EntityKind::Group, self.id.clone());
        audit::append(tx.conn, e, tx.now)?;
        Ok(())
    }
}

/// Resolves a member reference to (kind, id), checking that it exists and may join.
fn resolve_member(
    conn: &mut DbConnection,
    r: &PrincipalRef,
    portfolio: &str,
) -> Result<(&'static str, String)> {
    match r {
        PrincipalRef::User(u) => {
            let found = match u {
                UserRef::Id(id) => users::find(conn, *id)?,
                UserRef::Username(n) => users::find_by_username(conn, n)?,
            };
            let u = found.ok_or_else(|| Error::not_found("user"))?;
            Ok(("user", u.id.to_string()))
        }
        PrincipalRef::ServiceAccount(id) => {
            let sa = service_accounts::find(conn, &id.to_string())?
                .ok_or_else(|| Error::not_found("service account"))?;
            if sa.portfolio_id.as_ref().is_some_and(|p| p != portfolio) {
                return Err(Refusal::ForeignServiceAccount.into());
            }
            Ok(("service_account", sa.id))
        }
    }
}

/// A member's resource name.
pub fn member_name(kind: &str, id: &str) -> String {
    match kind {
        "user" => format!("users/{id}"),
        _ => format!("serviceAccounts/{id}"),
    }
}

/// Adds a member to a group, or (`add` false) removes one; `reason` goes to the audit trail.
#[derive(Debug, Clone)]
pub struct Membership {
    pub portfolio: String,
    pub id: String,
    pub member: PrincipalRef,
    pub reason: String,
    pub add: bool,
}

impl Command for Membership {
    type Output = GroupView;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        authorize_in(cx, Action::ManageMembers, &self.portfolio)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<GroupView> {
        let (portfolio, id) = (&self.portfolio, &self.id);
        load(tx.conn, portfolio, id)?;
        let (kind, mid) = resolve_member(tx.conn, &self.member, portfolio)?;
        let is = store::is_member(tx.conn, id, kind, &mid)?;
        match (self.add, is) {
            (true, true) => return Err(Refusal::AlreadyMember.into()),
            (false, false) => return Err(Error::NotFound("not a member of the group".into())),
            (true, false) => store::add_member(tx.conn, id, kind, &mid, tx.now)?,
            (false, true) => drop(store::remove_member(tx.conn, id, kind, &mid)?),
        }
        store::touch(tx.conn, id, tx.now)?;
        tx.changed(EntityKind::Group, id.clone());
        let action = if self.add {
            AuditAction::GroupMemberAdded
        } else {
            AuditAction::GroupMemberRemoved
        };
        let mut e = cx.event(action, "group", Some(names::group(portfolio, id)));
        e.detail = Some(crate::audit::with_reason(
            member_name(kind, &mid),
            &self.reason,
        ));
        audit::append(tx.conn, e, tx.now)?;
        let fresh = load(tx.conn, portfolio, id)?;
        view(tx.conn, fresh)
    }
}

/// One group, for a caller who may read the catalog.
pub fn get(cx: &Ctx<'_>, conn: &mut DbConnection, portfolio: &str, id: &str) -> Result<GroupView> {
    cx.authorize(Action::ReadCatalog, Target::Org)?;
    let g = load(conn, portfolio, id)?;
    view(conn, g)
}

/// A listing: one portfolio's groups (or every portfolio's), optionally only those `member`
/// belongs to, after `after` ((lower-cased name, id) of the previous page's last).
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub portfolio: Option<String>,
    pub member: Option<PrincipalRef>,
    pub after: Option<(String, String)>,
    pub limit: i64,
}

/// The (kind, id) of a member filter; an unknown username matches nobody.
fn member_filter(conn: &mut DbConnection, r: &PrincipalRef) -> Result<(String, String)> {
    Ok(match r {
        PrincipalRef::User(UserRef::Id(id)) => ("user".into(), id.to_string()),
        PrincipalRef::User(UserRef::Username(n)) => (
            "user".into(),
            users::find_by_username(conn, n)?.map_or_else(String::new, |u| u.id.to_string()),
        ),
        PrincipalRef::ServiceAccount(id) => ("service_account".into(), id.to_string()),
    })
}

/// Whose groups may be listed: one's own, or (for those who may ask about others) anyone's.
fn may_list(cx: &Ctx<'_>, q: &ListQuery, member: Option<&(String, String)>) -> Result<()> {
    cx.authorize(Action::ReadCatalog, Target::Org)?;
    let me = cx.actor()?.id;
    let own = match member {
        None => true,
        Some((kind, id)) => {
            let them = PrincipalId::from_parts(kind, id).ok();
            them == Some(me)
        }
    };
    if own {
        return Ok(());
    }
    let target = match &q.portfolio {
        Some(p) => Target::Portfolio(
            p.parse()
                .map_err(|_| Error::invalid("parent", "must be portfolios/{id} or portfolios/-"))?,
        ),
        None => Target::Org,
    };
    cx.authorize(Action::CheckOthers, target)
}

/// A page of groups, and the (name, id) the next page starts after, if there is more.
pub fn list(
    cx: &Ctx<'_>,
    conn: &mut DbConnection,
    q: ListQuery,
) -> Result<(Vec<GroupView>, Cursor)> {
    let member = q
        .member
        .as_ref()
        .map(|m| member_filter(conn, m))
        .transpose()?;
    may_list(cx, &q, member.as_ref())?;
    let f = Filter {
        portfolio: q.portfolio.clone(),
        portfolios_in: None,
        member,
    };
    let after = q.after.as_ref().map(|(n, i)| (n.as_str(), i.as_str()));
    let mut page = store::list(conn, &f, after, q.limit + 1)?;
    let more = page.len() as i64 > q.limit;
    page.truncate(q.limit as usize);
    let next = page
        .last()
        .filter(|_| more)
        .map(|l| (l.display_name.to_lowercase(), l.id.clone()));
    Ok((views(conn, page)?, next))
}

/// A page of a group's members as (kind, id), and the pair the next page starts after.
pub fn members(
    cx: &Ctx<'_>,
    conn: &mut DbConnection,
    (portfolio, id): (&str, &str),
    after: Option<(String, String)>,
    limit: i64,
) -> Result<(Vec<(String, String)>, Cursor)> {
    cx.authorize(Action::ReadCatalog, Target::Org)?;
    load(conn, portfolio, id)?;
    let after = after.as_ref().map(|(k, m)| (k.as_str(), m.as_str()));
    let mut page = store::members(conn, id, after, limit + 1)?;
    let more = page.len() as i64 > limit;
    page.truncate(limit as usize);
    let next = page.last().filter(|_| more).cloned();
    Ok((page, next))
}
