//! One struct per gRPC service, each holding the shared state.

/// Reads the request context, authenticates the caller and unwraps the message.
macro_rules! authed {
    ($self:ident, $request:ident) => {{
        let ctx = RequestCtx::of(&$request)?;
        let p = $self.state.authenticate(&$request, &ctx).await?;
        (ctx, p, $request.into_inner())
    }};
}

pub mod approvals;
pub mod audit;
pub mod auth;
pub mod catalog;
pub mod email;
pub mod groups;
pub mod password_reset;
pub mod permissions;
pub mod service_accounts;
pub mod settings;
pub mod users;
pub mod webhooks;

use fluxgate_domain::UserId;
use tonic::Response;
use tonic::metadata::MetadataValue;

use crate::auth::{REVISION_HEADER, RequestCtx};
use crate::convert::timestamp;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use fluxgate_proto::v1 as pb;

/// Wraps a reply with, after a write, the revision that write produced. (The request id is put
/// on every reply by [`crate::telemetry`].)
pub fn reply<T>(msg: T, _ctx: &RequestCtx, revision: Option<i64>) -> Response<T> {
    let mut r = Response::new(msg);
    if let Some(rev) = revision
        && let Ok(v) = MetadataValue::try_from(rev.to_string())
    {
        r.metadata_mut().insert(REVISION_HEADER, v);
    }
    r
}

pub use fluxgate_core::sessions::IssuedRefresh;

impl AppState {
    /// The client's view of a session: a fresh access token plus the refresh token.
    pub fn session_tokens(&self, user: UserId, r: &IssuedRefresh) -> ApiResult<pb::SessionTokens> {
        let ttl = self
            .directory
            .settings()
            .settings
            .token_policy
            .access_token_ttl_secs;
        let now = jsonwebtoken::get_current_timestamp();
        let access = self
            .keys
            .issue(user, r.session_id, now, ttl)
            .map_err(|e| ApiError::Internal(format!("signing access token: {e}")))?;
        Ok(pb::SessionTokens {
            access_token: access,
            access_token_expire_time: Some(timestamp(((now + ttl) * 1_000_000) as i64)),
            refresh_token: r.token.clone(),
            refresh_token_expire_time: Some(timestamp(r.expires_at)),
            session_id: r.session_id.to_string(),
        })
    }
}
