//! Connections: one diesel `MultiConnection` over SQLite and PostgreSQL, the backend chosen by
//! the database URL, pooled with r2d2.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::R2D2Connection;
use diesel::{Connection, PgConnection, RunQueryDsl, SqliteConnection};

use crate::{StoreError, StoreResult};

/// A connection to either backend. Queries written against it run on both.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Postgres(PgConnection),
    Sqlite(SqliteConnection),
}

/// The database engine behind a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Sorts a database URL: `postgres://` or `postgresql://` is PostgreSQL; `sqlite://PATH`,
    /// `sqlite:PATH` or a bare path is a SQLite file. Returns the URL the driver takes.
    pub fn from_url(url: &str) -> StoreResult<(Backend, String)> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok((Backend::Postgres, url.to_owned()));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        if path.is_empty() || path.contains("://") || path == ":memory:" {
            return Err(StoreError::BadUrl(format!(
                "{url:?}: use postgres://…, sqlite://PATH or a file path"
            )));
        }
        Ok((Backend::Sqlite, path.to_owned()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// An r2d2 connection manager that opens the right backend and sets SQLite up for a server:
/// WAL journal, foreign keys enforced, a busy timeout instead of instant "database is locked".
///
/// On PostgreSQL, after a write was refused as read-only (the host it reached is a standby
/// now), every connection handed back within [`SUSPECT_FOR`] is asked whether its server is in
/// recovery and discarded if so: the pool then reconnects through the URL's hosts to whichever
/// is primary, without a check on every checkout in normal times.
#[derive(Debug, Clone)]
pub struct Manager {
    backend: Backend,
    url: String,
    busy_timeout: Duration,
    suspect_until: Arc<AtomicI64>,
}

/// How long connections are checked on return after a read-only refusal.
pub const SUSPECT_FOR: Duration = Duration::from_secs(30);

impl Manager {
    pub fn new(backend: Backend, url: String, busy_timeout: Duration) -> Self {
        Self {
            backend,
            url,
            busy_timeout,
            suspect_until: Arc::new(AtomicI64::new(0)),
        }
    }

    /// The handle a store uses to report a read-only refusal.
    pub fn suspicion(&self) -> Suspicion {
        Suspicion(self.suspect_until.clone())
    }
}

/// Reports to the pool that a server refused a write as read-only.
#[derive(Debug, Clone)]
pub struct Suspicion(Arc<AtomicI64>);

impl Suspicion {
    /// Connections handed back during the next [`SUSPECT_FOR`] are checked. Whether the pool
    /// was not suspected already.
    pub fn raise(&self) -> bool {
        let now = crate::now_micros();
        let until = now + SUSPECT_FOR.as_micros() as i64;
        self.0.fetch_max(until, Ordering::Relaxed) <= now
    }
}

/// Whether the server behind `pg` takes no writes: a standby (in recovery), or a primary made
/// read-only (`default_transaction_read_only`, as an operator fences an old primary during a
/// switchover). The same test libpq's `target_session_attrs=read-write` makes.
pub fn read_only(pg: &mut PgConnection) -> Result<bool, StoreError> {
    Ok(diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(
        "pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'",
    ))
    .get_result(pg)?)
}

/// Whether an error means the server is a standby (read-only, or in recovery).
pub fn is_read_only(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(m)
        if ["read-only", "recovery", "hot standby", "is a standby"]
            .iter()
            .any(|p| m.contains(p)))
}

impl r2d2::ManageConnection for Manager {
    type Connection = DbConnection;
    type Error = StoreError;

    fn connect(&self) -> Result<DbConnection, StoreError> {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = SqliteConnection::establish(&self.url)?;
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = {};
                     PRAGMA journal_mode = WAL;
                     PRAGMA synchronous = NORMAL;
                     PRAGMA foreign_keys = ON;",
                    self.busy_timeout.as_millis()
                ))?;
                Ok(DbConnection::Sqlite(conn))
            }
            Backend::Postgres => Ok(DbConnection::Postgres(PgConnection::establish(&self.url)?)),
        }
    }

    /// Run on every checkout. On PostgreSQL it also asks whether the server is in recovery:
    /// a connection to a standby (a primary demoted behind a multi-host URL's back) is
    /// discarded, so that the pool reconnects to whichever host is primary now.
    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), StoreError> {
        match conn {
            DbConnection::Postgres(pg) => {
                if read_only(pg)? {
                    return Err(StoreError::Unavailable(
                        "the PostgreSQL server is a standby or read-only: not written to".into(),
                    ));
                }
                Ok(())
            }
            DbConnection::Sqlite(_) => conn.ping().map_err(StoreError::from),
        }
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        if conn.is_broken() {
            return true;
        }
        self.backend == Backend::Postgres
            && self.suspect_until.load(Ordering::Relaxed) > crate::now_micros()
            && self.is_valid(conn).is_err()
    }
}
