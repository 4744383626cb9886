//! The store's error type: diesel's errors sorted into the kinds callers act on.

use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// What can go wrong in the store, sorted into the kinds the server answers differently.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness or foreign-key constraint refused the write.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database cannot be reached, or is too busy to answer in time.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A row holds a value this version cannot read.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The idempotency key of the write was reserved by an earlier call.
    #[error("idempotency key already used")]
    IdempotencyKeyTaken,
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("unsupported database url: {0}")]
    BadUrl(String),
    #[error("database error: {0}")]
    Database(DieselError),
}

impl From<DieselError> for StoreError {
    fn from(e: DieselError) -> Self {
        match e {
            DieselError::NotFound => StoreError::NotFound,
            DieselError::DatabaseError(kind, info) => {
                let msg = info.message().to_owned();
                match kind {
                    DatabaseErrorKind::UniqueViolation | DatabaseErrorKind::ForeignKeyViolation => {
                        StoreError::Conflict(msg)
                    }
                    DatabaseErrorKind::ClosedConnection => StoreError::Unavailable(msg),
                    _ if is_unavailable(&msg) => StoreError::Unavailable(msg),
                    _ => StoreError::Database(DieselError::DatabaseError(kind, info)),
                }
            }
            DieselError::BrokenTransactionManager => {
                StoreError::Unavailable("broken transaction".into())
            }
            other => StoreError::Database(other),
        }
    }
}

/// Messages of errors that mean "try again later" rather than "this query is wrong".
fn is_unavailable(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    [
        "database is locked",
        "database is busy",
        "could not connect",
        "connection refused",
        "server closed the connection",
        "terminating connection",
        "no connection to the server",
        "the database system is starting up",
        "the database system is shutting down",
        // A standby, or a primary demoted to one: it must not be written to, and another host
        // of a multi-host URL is (or will soon be) the primary.
        "read-only transaction",
        "recovery is in progress",
        "the database system is in recovery mode",
        "the database system is not yet accepting connections",
        "server is in hot standby mode",
        "session is read-only",
        "is a standby",
        "timeout expired",
    ]
    .iter()
    .any(|p| m.contains(p))
}

impl From<r2d2::Error> for StoreError {
    fn from(e: r2d2::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

impl From<diesel::ConnectionError> for StoreError {
    fn from(e: diesel::ConnectionError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use super::is_unavailable;

    /// What PostgreSQL and libpq say while a failover is under way means "try again later".
    #[test]
    fn failover_messages_are_unavailable() {
        for m in [
            "cannot execute INSERT in a read-only transaction",
            "recovery is in progress",
            "FATAL:  the database system is in recovery mode",
            "connection to server at \"127.0.0.1\", port 5433 failed: session is read-only",
            "server is in hot standby mode",
            "timeout expired",
        ] {
            assert!(is_unavailable(m), "{m}");
        }
        assert!(!is_unavailable("syntax error at or near \"SELEC\""));
    }
}
