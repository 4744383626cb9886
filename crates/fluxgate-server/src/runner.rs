//! The one way a service runs a use case of [`fluxgate_core`]: the command is checked on the
//! engine snapshot, applied in one write transaction (which also reserves the call's
//! idempotency key, see [`crate::idempotency`]), and followed by the post-commit work every
//! write needs: the directory brought up to date, so the caller reads its own write (one policy
//! for a sync that fails then: [`crate::directory::Directory::settle`]), and the write's
//! revision put on the reply.

use fluxgate_core::{Command, Ctx};
use fluxgate_store::DbConnection;
use tonic::Response;

use crate::auth::RequestCtx;
use crate::directory::Principal;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// A use case's committed output, with the revision its write produced.
#[derive(Debug)]
pub struct Done<T> {
    pub value: T,
    pub revision: Option<i64>,
}

impl<T> Done<T> {
    /// The reply: `f` turns the output into the response message; the revision header is set.
    pub fn reply<M>(self, ctx: &RequestCtx, f: impl FnOnce(T) -> M) -> Response<M> {
        crate::services::reply(f(self.value), ctx, self.revision)
    }
}

impl AppState {
    /// Runs `cmd` for `actor` (`None`: the server itself) and does the post-commit work.
    pub async fn execute<C: Command>(
        &self,
        ctx: &RequestCtx,
        actor: Option<&Principal>,
        cmd: C,
    ) -> ApiResult<Done<C::Output>> {
        self.execute_from(ctx.origin(), actor, cmd).await
    }

    /// [`AppState::execute`] from an explicit origin (the server's own work has no request).
    pub async fn execute_from<C: Command>(
        &self,
        origin: fluxgate_core::Origin,
        actor: Option<&Principal>,
        cmd: C,
    ) -> ApiResult<Done<C::Output>> {
        let call = self.call(origin, actor, true);
        cmd.check(&call.cx())?;
        let committed = self
            .db
            .write(move |tx| cmd.apply(&call.cx(), tx).map_err(ApiError::from))
            .await?;
        self.mailer.wake_if_queued();
        if committed.revision.is_some() {
            self.directory.settle().await;
        }
        Ok(Done {
            value: committed.value,
            revision: committed.revision,
        })
    }

    /// Runs a read-only use case for `actor` on a pooled connection, off the async workers.
    pub async fn query<T, F>(&self, ctx: &RequestCtx, actor: &Principal, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Ctx<'_>, &mut DbConnection) -> fluxgate_core::Result<T> + Send + 'static,
    {
        self.query_as(ctx, Some(actor), f).await
    }

    /// [`AppState::query`] for a caller who may be anonymous (a link's holder, say).
    pub async fn query_as<T, F>(
        &self,
        ctx: &RequestCtx,
        actor: Option<&Principal>,
        f: F,
    ) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Ctx<'_>, &mut DbConnection) -> fluxgate_core::Result<T> + Send + 'static,
    {
        let call = self.call(ctx.origin(), actor, false);
        self.db
            .read(move |conn| f(&call.cx(), conn).map_err(ApiError::from))
            .await
    }

    /// [`AppState::query`] from an origin of the caller's own (an HTTP front door).
    pub async fn query_from<T, F>(
        &self,
        origin: fluxgate_core::Origin,
        actor: &Principal,
        f: F,
    ) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Ctx<'_>, &mut DbConnection) -> fluxgate_core::Result<T> + Send + 'static,
    {
        let call = self.call(origin, Some(actor), false);
        self.db
            .read(move |conn| f(&call.cx(), conn).map_err(ApiError::from))
            .await
    }

    /// [`AppState::judge`] from an origin of the caller's own (an HTTP front door).
    pub fn judge_from<T>(
        &self,
        origin: fluxgate_core::Origin,
        actor: &Principal,
        f: impl FnOnce(&Ctx<'_>) -> fluxgate_core::Result<T>,
    ) -> ApiResult<T> {
        Ok(f(&self.call(origin, Some(actor), false).cx())?)
    }

    /// Runs a use case that needs only the engine snapshot (no database).
    pub fn judge<T>(
        &self,
        ctx: &RequestCtx,
        actor: &Principal,
        f: impl FnOnce(&Ctx<'_>) -> fluxgate_core::Result<T>,
    ) -> ApiResult<T> {
        Ok(f(&self.call(ctx.origin(), Some(actor), false).cx())?)
    }

    /// What a use case's context is made of, owned so it can move to a blocking thread.
    fn call(&self, origin: fluxgate_core::Origin, actor: Option<&Principal>, mail: bool) -> Call {
        Call {
            actor: actor.cloned(),
            origin,
            snap: self.directory.snapshot(),
            outbox: mail.then(|| self.mailer.clone()),
            limits: self.limits.clone(),
        }
    }
}

/// The owned parts of a [`Ctx`].
struct Call {
    actor: Option<Principal>,
    origin: fluxgate_core::Origin,
    snap: std::sync::Arc<fluxgate_authz::Snapshot>,
    outbox: Option<std::sync::Arc<crate::mail::Mailer>>,
    limits: fluxgate_core::Limits,
}

impl Call {
    fn cx(&self) -> Ctx<'_> {
        Ctx {
            actor: self.actor.as_ref(),
            origin: &self.origin,
            snap: &self.snap,
            outbox: self
                .outbox
                .as_deref()
                .map(|m| m as &dyn fluxgate_core::mail::Outbox),
            limits: &self.limits,
        }
    }
}
