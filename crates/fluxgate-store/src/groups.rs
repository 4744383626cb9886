//! Portfolio groups, their members and their grants.

use diesel::prelude::*;

use crate::schema::{application_grants, environment_grants, group_members, portfolio_groups};
use crate::{DbConnection, StoreResult};

/// The display name of every portfolio's built-in group.
pub const ADMINISTRATORS: &str = "Administrators";

/// A group as stored (without members and grants).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = portfolio_groups)]
pub struct Group {
    pub id: String,
    pub portfolio_id: String,
    pub display_name: String,
    pub description: String,
    pub administrators: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
}

/// A group's grants: (application id, feature permission) and (environment id, bit set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub applications: Vec<(String, String)>,
    pub environments: Vec<(String, i32)>,
}

pub fn insert(conn: &mut DbConnection, g: &Group) -> StoreResult<()> {
    diesel::insert_into(portfolio_groups::table)
        .values((
            portfolio_groups::id.eq(&g.id),
            portfolio_groups::portfolio_id.eq(&g.portfolio_id),
            portfolio_groups::display_name.eq(&g.display_name),
            portfolio_groups::name_key.eq(g.display_name.to_lowercase()),
            portfolio_groups::description.eq(&g.description),
            portfolio_groups::administrators.eq(g.administrators),
            portfolio_groups::created_at.eq(g.created_at),
            portfolio_groups::updated_at.eq(g.updated_at),
            portfolio_groups::version.eq(1),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn find(conn: &mut DbConnection, id: &str) -> StoreResult<Option<Group>> {
    Ok(portfolio_groups::table
        .filter(portfolio_groups::id.eq(id))
        .select(Group::as_select())
        .first(conn)
        .optional()?)
}

pub fn find_by_name(
    conn: &mut DbConnection,
    portfolio: &str,
    name: &str,
) -> StoreResult<Option<Group>> {
    Ok(portfolio_groups::table
        .filter(portfolio_groups::portfolio_id.eq(portfolio))
        .filter(portfolio_groups::name_key.eq(name.to_lowercase()))
        .select(Group::as_select())
        .first(conn)
        .optional()?)
}

/// The Administrators group of a portfolio.
pub fn administrators_of(conn: &mut DbConnection, portfolio: &str) -> StoreResult<Option<Group>> {
    Ok(portfolio_groups::table
        .filter(portfolio_groups::portfolio_id.eq(portfolio))
        .filter(portfolio_groups::administrators.eq(true))
        .select(Group::as_select())
        .first(conn)
        .optional()?)
}

/// Filters of [`list`].
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this portfolio's groups.
    pub portfolio: Option<String>,
    /// Only these portfolios' groups (what a caller may see), when set.
    pub portfolios_in: Option<Vec<String>>,
    /// Only groups with this member: (kind, id).
    pub member: Option<(String, String)>,
}

/// A page of groups ordered by (name key, id), after `after`.
pub fn list(
    conn: &mut DbConnection,
    filter: &Filter,
    after: Option<(&str, &str)>,
    limit: i64,
) -> StoreResult<Vec<Group>> {
    let mut q = portfolio_groups::table.into_boxed();
    if let Some(p) = &filter.portfolio {
        q = q.filter(portfolio_groups::portfolio_id.eq(p.clone()));
    }
    if let Some(ps) = &filter.portfolios_in {
        q = q.filter(portfolio_groups::portfolio_id.eq_any(ps.clone()));
    }
    if let Some((kind, id)) = &filter.member {
        let ids = group_members::table
            .filter(group_members::principal_kind.eq(kind.clone()))
            .filter(group_members::principal_id.eq(id.clone()))
            .select(group_members::group_id);
        q = q.filter(portfolio_groups::id.eq_any(ids));
    }
    if let Some((key, id)) = after {
        q = q.filter(
            portfolio_groups::name_key
                .gt(key.to_owned())
                .or(portfolio_groups::name_key
                    .eq(key.to_owned())
                    .and(portfolio_groups::id.gt(id.to_owned()))),
        );
    }
    Ok(
        q.order((portfolio_groups::name_key.asc(), portfolio_groups::id.asc()))
            .limit(limit)
            .select(Group::as_select())
            .load(conn)?,
    )
}

/// Every group of a portfolio.
pub fn in_portfolio(conn: &mut DbConnection, portfolio: &str) -> StoreResult<Vec<Group>> {
    Ok(portfolio_groups::table
        .filter(portfolio_groups::portfolio_id.eq(portfolio))
        .select(Group::as_select())
        .load(conn)?)
}

pub fn all(conn: &mut DbConnection) -> StoreResult<Vec<Group>> {
    Ok(portfolio_groups::table
        .select(Group::as_select())
        .load(conn)?)
}

pub fn update(conn: &mut DbConnection, g: &Group, now: i64) -> StoreResult<()> {
    diesel::update(portfolio_groups::table.filter(portfolio_groups::id.eq(&g.id)))
        .set((
            portfolio_groups::display_name.eq(&g.display_name),
            portfolio_groups::name_key.eq(g.display_name.to_lowercase()),
            portfolio_groups::description.eq(&g.description),
            portfolio_groups::updated_at.eq(now),
            portfolio_groups::version.eq(g.version + 1),
        ))
        .execute(conn)?;
    Ok(())
}

/// Bumps a group's version (its members or grants changed).
pub fn touch(conn: &mut DbConnection, id: &str, now: i64) -> StoreResult<()> {
    diesel::update(portfolio_groups::table.filter(portfolio_groups::id.eq(id)))
        .set((
            portfolio_groups::updated_at.eq(now),
            portfolio_groups::version.eq(portfolio_groups::version + 1),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn delete(conn: &mut DbConnection, id: &str) -> StoreResult<()> {
    diesel::delete(portfolio_groups::table.filter(portfolio_groups::id.eq(id))).execute(conn)?;
    Ok(())
}

/// Members of a group as (kind, id), ordered, after `after`.
pub fn members(
    conn: &mut DbConnection,
    group: &str,
    after: Option<(&str, &str)>,
    limit: i64,
) -> StoreResult<Vec<(String, String)>> {
    let mut q = group_members::table
        .filter(group_members::group_id.eq(group.to_owned()))
        .into_boxed();
    if let Some((kind, id)) = after {
        q = q.filter(
            group_members::principal_kind
                .gt(kind.to_owned())
                .or(group_members::principal_kind
                    .eq(kind.to_owned())
                    .and(group_members::principal_id.gt(id.to_owned()))),
        );
    }
    Ok(q.order((
        group_members::principal_kind.asc(),
        group_members::principal_id.asc(),
    ))
    .limit(limit)
    .select((group_members::principal_kind, group_members::principal_id))
    .load(conn)?)
}

pub fn member_count(conn: &mut DbConnection, group: &str) -> StoreResult<i64> {
    Ok(group_members::table
        .filter(group_members::group_id.eq(group))
        .count()
        .get_result(conn)?)
}

pub fn is_member(conn: &mut DbConnection, group: &str, kind: &str, id: &str) -> StoreResult<bool> {
    let n: i64 = group_members::table
        .filter(group_members::group_id.eq(group))
        .filter(group_members::principal_kind.eq(kind))
        .filter(group_members::principal_id.eq(id))
        .count()
        .get_result(conn)?;
    Ok(n > 0)
}

pub fn add_member(
    conn: &mut DbConnection,
    group: &str,
    kind: &str,
    id: &str,
    now: i64,
) -> StoreResult<()> {
    diesel::insert_into(group_members::table)
        .values((
            group_members::group_id.eq(group),
            group_members::principal_kind.eq(kind),
            group_members::principal_id.eq(id),
            group_members::created_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn remove_member(
    conn: &mut DbConnection,
    group: &str,
    kind: &str,
    id: &str,
) -> StoreResult<bool> {
    let n = diesel::delete(
        group_members::table
            .filter(group_members::group_id.eq(group))
            .filter(group_members::principal_kind.eq(kind))
            .filter(group_members::principal_id.eq(id)),
    )
    .execute(conn)?;
    Ok(n > 0)
}

/// Removes a principal from every group; returns the groups it was in.
pub fn remove_principal(conn: &mut DbConnection, kind: &str, id: &str) -> StoreResult<Vec<String>> {
    let groups: Vec<String> = group_members::table
        .filter(group_members::principal_kind.eq(kind))
        .filter(group_members::principal_id.eq(id))
        .select(group_members::group_id)
        .load(conn)?;
    diesel::delete(
        group_members::table
            .filter(group_members::principal_kind.eq(kind))
            .filter(group_members::principal_id.eq(id)),
    )
    .execute(conn)?;
    Ok(groups)
}

/// Every membership as (group id, kind, principal id).
pub fn all_members(conn: &mut DbConnection) -> StoreResult<Vec<(String, String, String)>> {
    Ok(group_members::table
        .select((
            group_members::group_id,
            group_members::principal_kind,
            group_members::principal_id,
        ))
        .load(conn)?)
}

pub fn grants(conn: &mut DbConnection, group: &str) -> StoreResult<Grants> {
    Ok(Grants {
        applications: application_grants::table
            .filter(application_grants::group_id.eq(group))
            .order(application_grants::application_id.asc())
            .select((
                application_grants::application_id,
                application_grants::feature_permission,
            ))
            .load(conn)?,
        environments: environment_grants::table
            .filter(environment_grants::group_id.eq(group))
            .order(environment_grants::environment_id.asc())
            .select((
                environment_grants::environment_id,
                environment_grants::permissions,
            ))
            .load(conn)?,
    })
}

/// The grants of several groups at once (two queries), by group id; groups without grants
/// are absent.
pub fn grants_of(
    conn: &mut DbConnection,
    groups: &[String],
) -> StoreResult<std::collections::HashMap<String, Grants>> {
    let mut out: std::collections::HashMap<String, Grants> = std::collections::HashMap::new();
    let apps: Vec<(String, String, String)> = application_grants::table
        .filter(application_grants::group_id.eq_any(groups))
        .order((
            application_grants::group_id.asc(),
            application_grants::application_id.asc(),
        ))
        .select((
            application_grants::group_id,
            application_grants::application_id,
            application_grants::feature_permission,
        ))
        .load(conn)?;
    for (g, a, p) in apps {
        out.entry(g).or_default().applications.push((a, p));
    }
    let envs: Vec<(String, String, i32)> = environment_grants::table
        .filter(environment_grants::group_id.eq_any(groups))
        .order((
            environment_grants::group_id.asc(),
            environment_grants::environment_id.asc(),
        ))
        .select((
            environment_grants::group_id,
            environment_grants::environment_id,
            environment_grants::permissions,
        ))
        .load(conn)?;
    for (g, e, bits) in envs {
        out.entry(g).or_default().environments.push((e, bits));
    }
    Ok(out)
}

/// The member counts of several groups at once, by group id; empty groups are absent.
pub fn member_counts(
    conn: &mut DbConnection,
    groups: &[String],
) -> StoreResult<std::collections::HashMap<String, i64>> {
    let rows: Vec<(String, i64)> = group_members::table
        .filter(group_members::group_id.eq_any(groups))
        .group_by(group_members::group_id)
        .select((group_members::group_id, diesel::dsl::count_star()))
        .load(conn)?;
    Ok(rows.into_iter().collect())
}

/// Replaces a group's application grants.
pub fn set_application_grants(
    conn: &mut DbConnection,
    group: &str,
    grants: &[(String, String)],
) -> StoreResult<()> {
    diesel::delete(application_grants::table.filter(application_grants::group_id.eq(group)))
        .execute(conn)?;
    for (app, perm) in grants {
        diesel::insert_into(application_grants::table)
            .values((
                application_grants::group_id.eq(group),
                application_grants::application_id.eq(app),
                application_grants::feature_permission.eq(perm),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Replaces a group's environment grants.
pub fn set_environment_grants(
    conn: &mut DbConnection,
    group: &str,
    grants: &[(String, i32)],
) -> StoreResult<()> {
    diesel::delete(environment_grants::table.filter(environment_grants::group_id.eq(group)))
        .execute(conn)?;
    for (env, bits) in grants {
        diesel::insert_into(environment_grants::table)
            .values((
                environment_grants::group_id.eq(group),
                environment_grants::environment_id.eq(env),
                environment_grants::permissions.eq(bits),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Every application grant as (group, application, permission).
pub fn all_application_grants(
    conn: &mut DbConnection,
) -> StoreResult<Vec<(String, String, String)>> {
    Ok(application_grants::table
        .select((
            application_grants::group_id,
            application_grants::application_id,
            application_grants::feature_permission,
        ))
        .load(conn)?)
}

/// Every environment grant as (group, environment, bits).
pub fn all_environment_grants(conn: &mut DbConnection) -> StoreResult<Vec<(String, String, i32)>> {
    Ok(environment_grants::table
        .select((
            environment_grants::group_id,
            environment_grants::environment_id,
            environment_grants::permissions,
        ))
        .load(conn)?)
}

/// Groups holding a grant on an application.
pub fn granting_application(conn: &mut DbConnection, app: &str) -> StoreResult<Vec<String>> {
    Ok(application_grants::table
        .filter(application_grants::application_id.eq(app))
        .select(application_grants::group_id)
        .load(conn)?)
}

/// Groups holding a grant on one of these environments.
pub fn granting_environments(conn: &mut DbConnection, envs: &[String]) -> StoreResult<Vec<String>> {
    let mut g: Vec<String> = environment_grants::table
        .filter(environment_grants::environment_id.eq_any(envs.to_vec()))
        .select(environment_grants::group_id)
        .load(conn)?;
    g.sort();
    g.dedup();
    Ok(g)
}
