//! The store seen from async code: every call runs on tokio's blocking pool, never on the async
//! workers. A call named with an idempotency key ([`crate::idempotency`]) runs inside
//! [`keyed`], and its first committed write reserves the key in its own transaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fluxgate_store::idempotency::Reservation;
use fluxgate_store::{Committed, DbConnection, Store, Tx};

use crate::error::{ApiError, ApiResult};

#[derive(Clone, Debug)]
pub struct Db {
    store: Store,
    /// Told of every committed write, so that the webhook worker hands its events out at once.
    commits: Arc<tokio::sync::Notify>,
}

impl Db {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            commits: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Completes after the next committed write ([`Db::write`]; not [`Db::write_quietly`]).
    pub fn commits(&self) -> Arc<tokio::sync::Notify> {
        self.commits.clone()
    }

    /// [`Db::write`] without telling [`Db::commits`]: the webhook worker's own bookkeeping.
    pub async fn write_quietly<T, F>(&self, f: F) -> ApiResult<Committed<T>>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> ApiResult<T> + Send + 'static,
    {
        let store = self.store.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| store.write::<T, ApiError>(f))).await?
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs `f` with a connection on a blocking thread.
    pub async fn read<T, F>(&self, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> ApiResult<T> + Send + 'static,
    {
        let store = self.store.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| store.read(f))).await?
    }

    /// Runs `f` in one write transaction on a blocking thread (see [`Store::write`]).
    pub async fn write<T, F>(&self, f: F) -> ApiResult<Committed<T>>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> ApiResult<T> + Send + 'static,
    {
        let store = self.store.clone();
        let span = tracing::Span::current();
        // A call named with an idempotency key reserves it in its (first committed) write.
        let Some(call) = claim() else {
            let outcome = tokio::task::spawn_blocking(move || {
                span.in_scope(|| store.write::<T, ApiError>(f))
            })
            .await?;
            if outcome.is_ok() {
                self.commits.notify_one();
            }
            return outcome;
        };
        let keyed = call.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            span.in_scope(|| store.write_reserving(Some(keyed.reservation()), f))
        })
        .await?;
        call.settle(&outcome);
        if outcome.is_ok() {
            self.commits.notify_one();
        }
        outcome
    }
}

/// The reply header carrying the revision a write produced.
pub const REVISION_HEADER: &str = "x-fluxgate-revision";

/// The idempotency key a call's writes must reserve, and what became of it.
#[derive(Debug)]
pub struct KeyedWrite {
    reservation: Reservation,
    /// A write of this call is reserving (or has reserved) the key.
    claimed: AtomicBool,
    /// The key committed with a write of this call.
    committed: AtomicBool,
    /// The key was already taken when this call's write tried to reserve it.
    collided: AtomicBool,
}

tokio::task_local! {
    static CALL: Arc<KeyedWrite>;
}

/// Runs `f` (a call's handler) with `key` for its writes to reserve.
pub async fn keyed<F: std::future::Future>(key: Arc<KeyedWrite>, f: F) -> F::Output {
    CALL.scope(key, f).await
}

/// The key the current call's next write must reserve, at most once per call.
fn claim() -> Option<Arc<KeyedWrite>> {
    CALL.try_with(|c| (!c.claimed.swap(true, Ordering::SeqCst)).then(|| c.clone()))
        .ok()
        .flatten()
}

impl KeyedWrite {
    pub fn new(reservation: Reservation) -> Self {
        Self {
            reservation,
            claimed: AtomicBool::new(false),
            committed: AtomicBool::new(false),
            collided: AtomicBool::new(false),
        }
    }

    pub fn reservation(&self) -> &Reservation {
        &self.reservation
    }

    /// Whether a write of the call committed the key.
    pub fn committed(&self) -> bool {
        self.committed.load(Ordering::SeqCst)
    }

    /// Whether the key was taken by a concurrent call when this call's write tried it.
    pub fn collided(&self) -> bool {
        self.collided.load(Ordering::SeqCst)
    }

    /// Called with the outcome of the write that claimed the key.
    fn settle<T>(&self, outcome: &Result<T, ApiError>) {
        match outcome {
            Ok(_) => self.committed.store(true, Ordering::SeqCst),
            Err(ApiError::IdempotencyKeyTaken) => self.collided.store(true, Ordering::SeqCst),
            // Rolled back: a later write of the call may reserve the key.
            Err(_) => self.claimed.store(false, Ordering::SeqCst),
        }
    }
}
