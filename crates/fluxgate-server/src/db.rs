//! The store seen from async code: every call runs on tokio's blocking pool, never on the async
//! workers.

use fluxgate_store::{Committed, DbConnection, Store, Tx};

use crate::error::{ApiError, ApiResult};

#[derive(Clone, Debug)]
pub struct Db {
    store: Store,
}

impl Db {
    pub fn new(store: Store) -> Self {
        Self { store }
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
        let Some(call) = crate::idempotency::claim() else {
            return tokio::task::spawn_blocking(move || {
                span.in_scope(|| store.write::<T, ApiError>(f))
            })
            .await?;
        };
        let keyed = call.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            span.in_scope(|| store.write_reserving(Some(keyed.reservation()), f))
        })
        .await?;
        call.settle(&outcome);
        outcome
    }
}
