//! FluxGate's persistence: diesel on SQLite (the embedded default) and PostgreSQL.
//!
//! * [`Store`] owns the r2d2 pool. [`Store::read`] lends a connection; [`Store::write`] runs a
//!   closure in one transaction that first takes the store-wide write lock, so a change, its
//!   audit event and its change-log entry commit together or not at all, in one global order.
//! * Repository modules ([`users`], [`sessions`], …) are plain functions taking `&mut
//!   DbConnection`, so the server composes several of them inside one transaction.
//! * Every call blocks: the server runs them on blocking threads, never on async workers.
//!
//! Architecture invariant: diesel is used in this crate only. It knows nothing of tokio, tonic
//! or protobuf.

/// Rows one multi-row statement names at most (an `INSERT`'s rows, an `IN` list's values): well
/// inside SQLite's and PostgreSQL's limits on bound parameters for every table here.
pub(crate) const CHUNK: usize = 500;

/// One multi-row `INSERT` of `rows` into `table` (`?` on its error). Diesel's multi-backend
/// connection has no multi-row `INSERT`, so the statement runs on the backend's own connection.
macro_rules! insert_rows {
    ($conn:expr, $table:expr, $rows:expr) => {{
        let q = diesel::insert_into($table).values($rows);
        match $conn {
            $crate::DbConnection::Sqlite(c) => q.execute(c)?,
            $crate::DbConnection::Postgres(c) => q.execute(c)?,
        };
    }};
}

pub mod approvals;
pub mod audit;
pub mod catalog;
pub mod changes;
mod connection;
mod error;
pub mod groups;
pub mod idempotency;
pub mod notify;
pub mod outbox;
pub mod preferences;
pub mod rate_limits;
pub mod schema;
pub mod scim;
pub mod second_factors;
pub mod service_accounts;
pub mod sessions;
pub mod settings;
pub mod sign_in;
pub mod sso;
pub mod state;
pub mod testing;
pub mod throttle;
pub mod user_tokens;
pub mod users;
pub mod webhooks;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub use connection::{Backend, DbConnection, Manager};
pub use error::{StoreError, StoreResult};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// Advisory lock key held while migrations run on PostgreSQL, so that replicas starting together
/// apply them once.
const MIGRATION_LOCK_KEY: i64 = 0x666c_7578_6761_7465; // "fluxgate"

/// Microseconds since the Unix epoch: the store's clock unit.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_size: u32,
    pub connection_timeout: Duration,
    pub sqlite_busy_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_size: 8,
            connection_timeout: Duration::from_secs(5),
            sqlite_busy_timeout: Duration::from_secs(10),
        }
    }
}

/// The database: a pool of connections to one backend.
#[derive(Clone)]
pub struct Store {
    pool: r2d2::Pool<Manager>,
    backend: Backend,
    suspicion: connection::Suspicion,
    /// The driver's URL, for a [`notify::Listener`] (PostgreSQL only).
    listen_url: Option<String>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

/// A write transaction in progress: the connection plus the change-log entries to append.
pub struct Tx<'c> {
    pub conn: &'c mut DbConnection,
    /// The transaction's clock reading, shared by every row it writes.
    pub now: i64,
    changes: Vec<(changes::EntityKind, String)>,
}

impl Tx<'_> {
    /// Records that an entity the servers cache has changed; they reload it when they see the
    /// revision this transaction commits.
    pub fn changed(&mut self, kind: changes::EntityKind, id: impl Into<String>) {
        self.changes.push((kind, id.into()));
    }
}

/// The result of a committed write, with the change-log revision it produced (if it changed
/// anything the servers cache).
#[derive(Debug)]
pub struct Committed<T> {
    pub value: T,
    pub revision: Option<i64>,
}

impl Store {
    /// Opens a pool on the database named by `url`. Creates a SQLite file if needed.
    pub fn open(url: &str, options: &PoolOptions) -> StoreResult<Store> {
        let (backend, driver_url) = Backend::from_url(url)?;
        if backend == Backend::Sqlite {
            let dir = std::path::Path::new(&driver_url)
                .parent()
                .filter(|d| !d.as_os_str().is_empty());
            if let Some(dir) = dir
                && !dir.is_dir()
            {
                return Err(StoreError::BadUrl(format!(
                    "{url:?}: the folder {} does not exist; create it, or point database_url \
                     elsewhere",
                    dir.display()
                )));
            }
        }
        let listen_url = (backend == Backend::Postgres).then(|| driver_url.clone());
        let manager = Manager::new(backend, driver_url, options.sqlite_busy_timeout);
        let suspicion = manager.suspicion();
        let pool = r2d2::Pool::builder()
            .max_size(options.max_size.max(1))
            .connection_timeout(options.connection_timeout)
            .test_on_check_out(false)
            .build_unchecked(manager);
        Ok(Store {
            pool,
            backend,
            suspicion,
            listen_url,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A listener for other replicas' changes ([`notify`]); `None` on SQLite, which has no
    /// notifications (and no other replicas).
    pub fn listener(&self) -> Option<StoreResult<notify::Listener>> {
        self.listen_url.as_deref().map(notify::Listener::connect)
    }

    /// Pool usage: (connections open, connections idle).
    pub fn pool_state(&self) -> (u32, u32) {
        let s = self.pool.state();
        (s.connections, s.idle_connections)
    }

    /// Takes every idle connection out of the pool and hands it back, on a thread of its own,
    /// so that each is checked now (the pool being suspected) rather than when next used: the
    /// connections to a server that stopped taking writes are dropped at once, not served
    /// stale reads from.
    fn sweep(&self) {
        let pool = self.pool.clone();
        let swept = std::thread::Builder::new()
            .name("fluxgate-sweep".into())
            .spawn(move || {
                let mut idle = Vec::new();
                while let Some(c) = pool.try_get() {
                    idle.push(c);
                }
                drop(idle);
            });
        if let Err(e) = swept {
            tracing::warn!(error = %e, "could not sweep the pool; its connections are checked as used");
        }
    }

    fn conn(&self) -> StoreResult<r2d2::PooledConnection<Manager>> {
        Ok(self.pool.get()?)
    }

    /// Applies pending migrations; returns the names of those applied. On PostgreSQL a session
    /// advisory lock makes concurrent callers wait for the first one.
    pub fn migrate(&self) -> StoreResult<Vec<String>> {
        let mut conn = self.conn()?;
        let conn = &mut *conn;
        let run = |conn: &mut DbConnection| -> StoreResult<Vec<String>> {
            let applied = match conn {
                DbConnection::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS),
                DbConnection::Postgres(c) => c.run_pending_migrations(POSTGRES_MIGRATIONS),
            }
            .map_err(|e| StoreError::Migration(e.to_string()))?;
            Ok(applied.iter().map(ToString::to_string).collect())
        };
        match self.backend {
            Backend::Sqlite => run(conn),
            Backend::Postgres => {
                conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))?;
                let result = run(conn);
                conn.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))?;
                result
            }
        }
    }

    /// Reverts migrations, newest first, down to and including `version` (e.g. `2026-12-05-000008`,
    /// as the folder name starts; used by the migration tests).
    pub fn revert_through(&self, version: &str) -> StoreResult<()> {
        let mut conn = self.conn()?;
        let conn = &mut *conn;
        let version = version.replace('-', "");
        loop {
            let applied = match &mut *conn {
                DbConnection::Sqlite(c) => c.applied_migrations(),
                DbConnection::Postgres(c) => c.applied_migrations(),
            }
            .map_err(|e| StoreError::Migration(e.to_string()))?;
            if !applied.iter().any(|v| v.to_string().starts_with(&version)) {
                return Ok(());
            }
            match &mut *conn {
                DbConnection::Sqlite(c) => c.revert_last_migration(SQLITE_MIGRATIONS).map(drop),
                DbConnection::Postgres(c) => c.revert_last_migration(POSTGRES_MIGRATIONS).map(drop),
            }
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        }
    }

    /// Reverts every migration, newest first (used by the schema tests).
    pub fn revert_all(&self) -> StoreResult<()> {
        let mut conn = self.conn()?;
        match &mut *conn {
            DbConnection::Sqlite(c) => c.revert_all_migrations(SQLITE_MIGRATIONS).map(drop),
            DbConnection::Postgres(c) => c.revert_all_migrations(POSTGRES_MIGRATIONS).map(drop),
        }
        .map_err(|e| StoreError::Migration(e.to_string()))
    }

    /// Writes a consistent copy of a SQLite database to `path` while servers keep running on
    /// it (`VACUUM INTO`: one read transaction, so every write is either in the copy or not).
    /// The file must not exist yet. PostgreSQL has its own tools (`pg_dump`, base backups):
    /// asking for a copy of it here is [`StoreError::BadUrl`].
    pub fn backup_to(&self, path: &std::path::Path) -> StoreResult<()> {
        if self.backend != Backend::Sqlite {
            return Err(StoreError::BadUrl(
                "backups of PostgreSQL are taken with pg_dump or a base backup \
                 (docs/deployment.md)"
                    .into(),
            ));
        }
        if path.exists() {
            return Err(StoreError::BadUrl(format!(
                "{} exists already: give a new file",
                path.display()
            )));
        }
        let target = path
            .to_str()
            .ok_or_else(|| StoreError::BadUrl(format!("{} is not a UTF-8 path", path.display())))?;
        let mut conn = self.conn()?;
        conn.batch_execute(&format!("VACUUM INTO '{}'", target.replace('\'', "''")))?;
        Ok(())
    }

    /// After a bulk load on PostgreSQL, does at once what autovacuum would within a minute or
    /// so (`VACUUM ANALYZE`): the planner's statistics, so that queries plan for the data they
    /// will meet (a rare-term user search by its trigram index, say), and the GIN indexes'
    /// pending entries merged, so that searches do not read them one by one. SQLite: nothing
    /// to do.
    pub fn analyze(&self) -> StoreResult<()> {
        if self.backend == Backend::Postgres {
            self.conn()?.batch_execute("VACUUM ANALYZE")?;
        }
        Ok(())
    }

    /// Runs `f` with a pooled connection, outside any transaction.
    pub fn read<T, E>(&self, f: impl FnOnce(&mut DbConnection) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let mut conn = self.conn()?;
        f(&mut conn)
    }

    /// Runs `f` in one write transaction holding the store-wide write lock, appends the
    /// change-log entries `f` recorded, and commits. An `Err` from `f` rolls everything back.
    pub fn write<T, E>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, E>,
    ) -> Result<Committed<T>, E>
    where
        E: From<StoreError>,
    {
        self.write_reserving(None, f)
    }

    /// [`Store::write`], first reserving an idempotency key in the same transaction: when the
    /// key is already taken nothing is written and the answer is
    /// [`StoreError::IdempotencyKeyTaken`].
    pub fn write_reserving<T, E>(
        &self,
        reservation: Option<&idempotency::Reservation>,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, E>,
    ) -> Result<Committed<T>, E>
    where
        E: From<StoreError>,
    {
        let mut conn = self.conn()?;
        let conn: &mut DbConnection = &mut conn;
        conn.transaction::<_, TxError<E>, _>(|conn| {
            take_write_lock(conn)?;
            let now = now_micros();
            if let Some(r) = reservation
                && !idempotency::reserve(conn, r, now)?
            {
                return Err(TxError::Store(StoreError::IdempotencyKeyTaken));
            }
            let mut tx = Tx {
                conn,
                now,
                changes: Vec::new(),
            };
            let value = f(&mut tx).map_err(TxError::Caller)?;
            let revision = changes::append(tx.conn, &tx.changes, tx.now)?;
            if let (Some(r), DbConnection::Postgres(pg)) = (revision, &mut *tx.conn) {
                notify::send(pg, r)?;
            }
            Ok(Committed { value, revision })
        })
        .map_err(|e| match e {
            TxError::Caller(e) => e,
            TxError::Store(e) => {
                if connection::is_read_only(&e) && self.suspicion.raise() {
                    self.sweep();
                }
                E::from(e)
            }
        })
    }
}

/// The first statement of every write transaction: a write to one row, which makes SQLite take
/// its write lock at once (waiting out the busy timeout rather than failing on upgrade) and
/// makes PostgreSQL queue writers on a row lock until commit.
fn take_write_lock(conn: &mut DbConnection) -> StoreResult<()> {
    use schema::server_state::dsl::*;
    diesel::update(server_state.filter(key.eq("write_lock")))
        .set(value.eq("1"))
        .execute(conn)?;
    Ok(())
}

/// Errors inside a transaction closure: the caller's own, or the store's.
enum TxError<E> {
    Caller(E),
    Store(StoreError),
}

impl<E> From<diesel::result::Error> for TxError<E> {
    fn from(e: diesel::result::Error) -> Self {
        TxError::Store(e.into())
    }
}

impl<E> From<StoreError> for TxError<E> {
    fn from(e: StoreError) -> Self {
        TxError::Store(e)
    }
}

#[cfg(test)]
mod tests;
