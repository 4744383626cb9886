//! The change log: one row per changed entity that servers cache in memory, numbered by a
//! revision that grows in commit order (writers hold the write lock). Every server tails it to
//! keep its directory current, whichever server made the change.

use diesel::prelude::*;

use crate::schema::change_log;
use crate::{DbConnection, StoreResult};

/// Kinds of cached entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntityKind {
    /// A user and, with it, its sessions.
    User,
    /// One session.
    Session,
    /// The run-time settings.
    Settings,
    Portfolio,
    Application,
    Environment,
    /// A group with its members and grants.
    Group,
    /// A service account with its keys.
    ServiceAccount,
    /// A change request (servers wake the clients watching it).
    ChangeRequest,
    /// A kind written by a newer release: skipped, so that replicas can be upgraded one at a
    /// time.
    Unknown,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::User => "user",
            EntityKind::Session => "session",
            EntityKind::Settings => "settings",
            EntityKind::Portfolio => "portfolio",
            EntityKind::Application => "application",
            EntityKind::Environment => "environment",
            EntityKind::Group => "group",
            EntityKind::ServiceAccount => "service_account",
            EntityKind::ChangeRequest => "change_request",
            EntityKind::Unknown => "unknown",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "user" => EntityKind::User,
            "session" => EntityKind::Session,
            "settings" => EntityKind::Settings,
            "portfolio" => EntityKind::Portfolio,
            "application" => EntityKind::Application,
            "environment" => EntityKind::Environment,
            "group" => EntityKind::Group,
            "service_account" => EntityKind::ServiceAccount,
            "change_request" => EntityKind::ChangeRequest,
            _ => EntityKind::Unknown,
        }
    }
}

/// One change-log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub revision: i64,
    pub kind: EntityKind,
    pub id: String,
    /// When it was written (micros): with the revision, what tells one log from another.
    pub created_at: i64,
}

/// The newest revision (0 for an empty log).
pub fn current(conn: &mut DbConnection) -> StoreResult<i64> {
    let max: Option<i64> = change_log::table
        .select(diesel::dsl::max(change_log::revision))
        .first(conn)?;
    Ok(max.unwrap_or(0))
}

type Row = (i64, String, String, i64);

fn change((revision, kind, id, created_at): Row) -> Change {
    Change {
        revision,
        kind: EntityKind::parse(&kind),
        id,
        created_at,
    }
}

/// Entries after `revision`, oldest first, at most `limit`.
pub fn since(conn: &mut DbConnection, revision: i64, limit: i64) -> StoreResult<Vec<Change>> {
    let rows: Vec<Row> = change_log::table
        .filter(change_log::revision.gt(revision))
        .order(change_log::revision.asc())
        .limit(limit)
        .select((
            change_log::revision,
            change_log::entity_kind,
            change_log::entity_id,
            change_log::created_at,
        ))
        .load(conn)?;
    Ok(rows.into_iter().map(change).collect())
}

/// The entry at `revision`, if the log (still) has it.
pub fn at(conn: &mut DbConnection, revision: i64) -> StoreResult<Option<Change>> {
    let row: Option<Row> = change_log::table
        .filter(change_log::revision.eq(revision))
        .select((
            change_log::revision,
            change_log::entity_kind,
            change_log::entity_id,
            change_log::created_at,
        ))
        .first(conn)
        .optional()?;
    Ok(row.map(change))
}

/// Appends entries (inside the write transaction); returns the last revision written.
pub(crate) fn append(
    conn: &mut DbConnection,
    entries: &[(EntityKind, String)],
    now: i64,
) -> StoreResult<Option<i64>> {
    if entries.is_empty() {
        return Ok(None);
    }
    let first = current(conn)? + 1;
    let rows: Vec<_> = entries
        .iter()
        .zip(first..)
        .map(|((kind, id), revision)| {
            (
                change_log::revision.eq(revision),
                change_log::entity_kind.eq(kind.as_str()),
                change_log::entity_id.eq(id),
                change_log::created_at.eq(now),
            )
        })
        .collect();
    for chunk in rows.chunks(crate::CHUNK) {
        insert_rows!(conn, change_log::table, chunk);
    }
    Ok(Some(first + entries.len() as i64 - 1))
}

/// Deletes entries older than `before` (micros), keeping the newest one so that the current
/// revision never goes backwards.
pub fn prune(conn: &mut DbConnection, before: i64) -> StoreResult<usize> {
    let newest = current(conn)?;
    Ok(diesel::delete(
        change_log::table
            .filter(change_log::created_at.lt(before))
            .filter(change_log::revision.lt(newest)),
    )
    .execute(conn)?)
}
