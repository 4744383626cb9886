//! Connections: one diesel `MultiConnection` over SQLite and PostgreSQL, the backend chosen by
//! the database URL, pooled with r2d2.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::R2D2Connection;
use diesel::{Connection, PgConnection, SqliteConnection};

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
#[derive(Debug, Clone)]
pub struct Manager {
    backend: Backend,
    url: String,
    busy_timeout: Duration,
}

impl Manager {
    pub fn new(backend: Backend, url: String, busy_timeout: Duration) -> Self {
        Self {
            backend,
            url,
            busy_timeout,
        }
    }
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

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), StoreError> {
        conn.ping().map_err(StoreError::from)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        conn.is_broken()
    }
}
