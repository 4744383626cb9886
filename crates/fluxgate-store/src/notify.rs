//! Change notifications on PostgreSQL. Every write that logs a change sends a notification on
//! [`CHANNEL`] in its own transaction (PostgreSQL delivers it at commit, and not at all on
//! rollback); a [`Listener`] on another replica hears of it within milliseconds, so replicas
//! need not poll the change log to see each other's writes. Polling stays as the fallback (and
//! is all SQLite, a single-machine database, needs).

use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, RunQueryDsl};

use crate::{StoreError, StoreResult};

/// The channel every change-log write notifies.
pub const CHANNEL: &str = "fluxgate_changes";

/// How often a waiting listener looks at what its connection has received. Nothing is sent to
/// the server: it only drains the connection's socket, so this costs microseconds.
const LOOK_EVERY: Duration = Duration::from_millis(2);

/// A dedicated connection listening on [`CHANNEL`].
pub struct Listener {
    conn: PgConnection,
    /// The schema the store's tables are in: notifications carry theirs, and those of another
    /// schema in the same database (another deployment, a test) are not ours.
    schema: String,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").finish_non_exhaustive()
    }
}

impl Listener {
    /// Connects to `url` (a PostgreSQL URL as the driver takes it; with several hosts and
    /// `target_session_attrs=read-write`, to the primary) and listens. A standby refuses to
    /// listen, so a listener is always on the server that takes the writes.
    pub fn connect(url: &str) -> StoreResult<Listener> {
        let mut conn = PgConnection::establish(url)?;
        diesel::sql_query(format!("LISTEN {CHANNEL}")).execute(&mut conn)?;
        let schema: String = diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(
            "current_schema()",
        ))
        .get_result(&mut conn)?;
        // Named, so that an operator sees it in pg_stat_activity for what it is.
        diesel::sql_query("SET application_name = 'fluxgate-listener'").execute(&mut conn)?;
        Ok(Listener { conn, schema })
    }

    /// Waits up to `max` for notifications; whether any came (all that came are consumed). An
    /// error means the connection is lost: connect again.
    pub fn wait(&mut self, max: Duration) -> StoreResult<bool> {
        let until = Instant::now() + max;
        loop {
            let mut heard = false;
            for n in self.conn.notifications_iter() {
                let n = n.map_err(StoreError::from)?;
                heard |= n.payload.split_once(':').map(|(s, _)| s) == Some(&self.schema);
            }
            if heard {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= until {
                // An idle connection whose server went away reports nothing, and a server
                // that stopped taking writes hears none: ask it.
                if crate::connection::read_only(&mut self.conn)? {
                    return Err(StoreError::Unavailable(
                        "the server listened to takes no writes any more".into(),
                    ));
                }
                return Ok(false);
            }
            std::thread::sleep(LOOK_EVERY.min(until - now));
        }
    }
}

/// Sends the change notification (`{schema}:{revision}`), inside the caller's write
/// transaction.
pub(crate) fn send(conn: &mut PgConnection, revision: i64) -> StoreResult<()> {
    diesel::sql_query(format!(
        "SELECT pg_notify('{CHANNEL}', current_schema() || ':{revision}')"
    ))
    .execute(conn)?;
    Ok(())
}
