//! Portfolios, applications and environments. Names are unique case-insensitively within their
//! parent (`name_key` is the lower-cased display name).

use diesel::prelude::*;

use crate::schema::{applications, environments, portfolios};
use crate::{DbConnection, StoreResult};

/// A catalog object as stored: a portfolio, application or environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: String,
    /// The portfolio of an application, the application of an environment; `None` for a
    /// portfolio.
    pub parent_id: Option<String>,
    pub display_name: String,
    pub description: String,
    /// Environments only.
    pub production: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
}

/// The kinds of catalog object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Portfolio,
    Application,
    Environment,
}

type PortfolioRow = (String, String, String, i64, i64, i64);
type ChildRow = (String, String, String, String, i64, i64, i64);
type EnvRow = (String, String, String, String, bool, i64, i64, i64);

fn from_portfolio(r: PortfolioRow) -> Item {
    Item {
        id: r.0,
        parent_id: None,
        display_name: r.1,
        description: r.2,
        production: false,
        created_at: r.3,
        updated_at: r.4,
        version: r.5,
    }
}

fn from_child(r: ChildRow) -> Item {
    Item {
        id: r.0,
        parent_id: Some(r.1),
        display_name: r.2,
        description: r.3,
        production: false,
        created_at: r.4,
        updated_at: r.5,
        version: r.6,
    }
}

fn from_env(r: EnvRow) -> Item {
    Item {
        id: r.0,
        parent_id: Some(r.1),
        display_name: r.2,
        description: r.3,
        production: r.4,
        created_at: r.5,
        updated_at: r.6,
        version: r.7,
    }
}

macro_rules! portfolio_cols {
    () => {
        (
            portfolios::id,
            portfolios::display_name,
            portfolios::description,
            portfolios::created_at,
            portfolios::updated_at,
            portfolios::version,
        )
    };
}
macro_rules! app_cols {
    () => {
        (
            applications::id,
            applications::portfolio_id,
            applications::display_name,
            applications::description,
            applications::created_at,
            applications::updated_at,
            applications::version,
        )
    };
}
macro_rules! env_cols {
    () => {
        (
            environments::id,
            environments::application_id,
            environments::display_name,
            environments::description,
            environments::production,
            environments::created_at,
            environments::updated_at,
            environments::version,
        )
    };
}

/// Inserts an item of `kind` (version 1).
pub fn insert(conn: &mut DbConnection, kind: Kind, item: &Item) -> StoreResult<()> {
    let key = item.display_name.to_lowercase();
    let parent = item.parent_id.clone().unwrap_or_default();
    match kind {
        Kind::Portfolio => diesel::insert_into(portfolios::table)
            .values((
                portfolios::id.eq(&item.id),
                portfolios::display_name.eq(&item.display_name),
                portfolios::name_key.eq(&key),
                portfolios::description.eq(&item.description),
                portfolios::created_at.eq(item.created_at),
                portfolios::updated_at.eq(item.updated_at),
                portfolios::version.eq(1),
            ))
            .execute(conn)?,
        Kind::Application => diesel::insert_into(applications::table)
            .values((
                applications::id.eq(&item.id),
                applications::portfolio_id.eq(&parent),
                applications::display_name.eq(&item.display_name),
                applications::name_key.eq(&key),
                applications::description.eq(&item.description),
                applications::created_at.eq(item.created_at),
                applications::updated_at.eq(item.updated_at),
                applications::version.eq(1),
            ))
            .execute(conn)?,
        Kind::Environment => diesel::insert_into(environments::table)
            .values((
                environments::id.eq(&item.id),
                environments::application_id.eq(&parent),
                environments::display_name.eq(&item.display_name),
                environments::name_key.eq(&key),
                environments::description.eq(&item.description),
                environments::production.eq(item.production),
                environments::created_at.eq(item.created_at),
                environments::updated_at.eq(item.updated_at),
                environments::version.eq(1),
            ))
            .execute(conn)?,
    };
    Ok(())
}

pub fn find(conn: &mut DbConnection, kind: Kind, id: &str) -> StoreResult<Option<Item>> {
    Ok(match kind {
        Kind::Portfolio => portfolios::table
            .filter(portfolios::id.eq(id))
            .select(portfolio_cols!())
            .first::<PortfolioRow>(conn)
            .optional()?
            .map(from_portfolio),
        Kind::Application => applications::table
            .filter(applications::id.eq(id))
            .select(app_cols!())
            .first::<ChildRow>(conn)
            .optional()?
            .map(from_child),
        Kind::Environment => environments::table
            .filter(environments::id.eq(id))
            .select(env_cols!())
            .first::<EnvRow>(conn)
            .optional()?
            .map(from_env),
    })
}

/// The item of `kind` under `parent` (ignored for portfolios) whose name matches
/// case-insensitively.
pub fn find_by_name(
    conn: &mut DbConnection,
    kind: Kind,
    parent: &str,
    name: &str,
) -> StoreResult<Option<Item>> {
    let key = name.to_lowercase();
    Ok(match kind {
        Kind::Portfolio => portfolios::table
            .filter(portfolios::name_key.eq(&key))
            .select(portfolio_cols!())
            .first::<PortfolioRow>(conn)
            .optional()?
            .map(from_portfolio),
        Kind::Application => applications::table
            .filter(applications::portfolio_id.eq(parent))
            .filter(applications::name_key.eq(&key))
            .select(app_cols!())
            .first::<ChildRow>(conn)
            .optional()?
            .map(from_child),
        Kind::Environment => environments::table
            .filter(environments::application_id.eq(parent))
            .filter(environments::name_key.eq(&key))
            .select(env_cols!())
            .first::<EnvRow>(conn)
            .optional()?
            .map(from_env),
    })
}

/// A page of items of `kind` under `parent` (ignored for portfolios), ordered by lower-cased
/// name, after the name key `after`.
pub fn list(
    conn: &mut DbConnection,
    kind: Kind,
    parent: &str,
    after: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<Item>> {
    let after = after.unwrap_or("").to_owned();
    Ok(match kind {
        Kind::Portfolio => portfolios::table
            .filter(portfolios::name_key.gt(after))
            .order(portfolios::name_key.asc())
            .limit(limit)
            .select(portfolio_cols!())
            .load::<PortfolioRow>(conn)?
            .into_iter()
            .map(from_portfolio)
            .collect(),
        Kind::Application => applications::table
            .filter(applications::portfolio_id.eq(parent))
            .filter(applications::name_key.gt(after))
            .order(applications::name_key.asc())
            .limit(limit)
            .select(app_cols!())
            .load::<ChildRow>(conn)?
            .into_iter()
            .map(from_child)
            .collect(),
        Kind::Environment => environments::table
            .filter(environments::application_id.eq(parent))
            .filter(environments::name_key.gt(after))
            .order(environments::name_key.asc())
            .limit(limit)
            .select(env_cols!())
            .load::<EnvRow>(conn)?
            .into_iter()
            .map(from_env)
            .collect(),
    })
}

/// Writes display name, description and production flag back, bumping the version.
pub fn update(conn: &mut DbConnection, kind: Kind, item: &Item, now: i64) -> StoreResult<()> {
    let key = item.display_name.to_lowercase();
    let v = item.version + 1;
    match kind {
        Kind::Portfolio => diesel::update(portfolios::table.filter(portfolios::id.eq(&item.id)))
            .set((
                portfolios::display_name.eq(&item.display_name),
                portfolios::name_key.eq(&key),
                portfolios::description.eq(&item.description),
                portfolios::updated_at.eq(now),
                portfolios::version.eq(v),
            ))
            .execute(conn)?,
        Kind::Application => {
            diesel::update(applications::table.filter(applications::id.eq(&item.id)))
                .set((
                    applications::display_name.eq(&item.display_name),
                    applications::name_key.eq(&key),
                    applications::description.eq(&item.description),
                    applications::updated_at.eq(now),
                    applications::version.eq(v),
                ))
                .execute(conn)?
        }
        Kind::Environment => {
            diesel::update(environments::table.filter(environments::id.eq(&item.id)))
                .set((
                    environments::display_name.eq(&item.display_name),
                    environments::name_key.eq(&key),
                    environments::description.eq(&item.description),
                    environments::production.eq(item.production),
                    environments::updated_at.eq(now),
                    environments::version.eq(v),
                ))
                .execute(conn)?
        }
    };
    Ok(())
}

/// Deletes an item; the database cascades to its children and grants.
pub fn delete(conn: &mut DbConnection, kind: Kind, id: &str) -> StoreResult<()> {
    match kind {
        Kind::Portfolio => {
            diesel::delete(portfolios::table.filter(portfolios::id.eq(id))).execute(conn)?
        }
        Kind::Application => {
            diesel::delete(applications::table.filter(applications::id.eq(id))).execute(conn)?
        }
        Kind::Environment => {
            diesel::delete(environments::table.filter(environments::id.eq(id))).execute(conn)?
        }
    };
    Ok(())
}

/// Every portfolio id.
pub fn portfolio_ids(conn: &mut DbConnection) -> StoreResult<Vec<String>> {
    Ok(portfolios::table.select(portfolios::id).load(conn)?)
}

/// (application id, portfolio id) of every application, or of one portfolio's.
pub fn application_parents(
    conn: &mut DbConnection,
    portfolio: Option<&str>,
) -> StoreResult<Vec<(String, String)>> {
    let mut q = applications::table
        .select((applications::id, applications::portfolio_id))
        .into_boxed();
    if let Some(p) = portfolio {
        q = q.filter(applications::portfolio_id.eq(p.to_owned()));
    }
    Ok(q.load(conn)?)
}

/// (environment id, application id) of every environment, or of one application's.
pub fn environment_parents(
    conn: &mut DbConnection,
    application: Option<&str>,
) -> StoreResult<Vec<(String, String)>> {
    let mut q = environments::table
        .select((environments::id, environments::application_id))
        .into_boxed();
    if let Some(a) = application {
        q = q.filter(environments::application_id.eq(a.to_owned()));
    }
    Ok(q.load(conn)?)
}

/// (environment id, application id) of the given environments.
pub fn environment_applications(
    conn: &mut DbConnection,
    envs: &[String],
) -> StoreResult<Vec<(String, String)>> {
    Ok(environments::table
        .filter(environments::id.eq_any(envs))
        .select((environments::id, environments::application_id))
        .load(conn)?)
}
