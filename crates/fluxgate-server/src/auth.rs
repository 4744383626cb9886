//! Per-request context and authentication: the bearer token is verified, then its session and
//! user are looked up in the in-memory directory, so role changes, deactivations and logouts
//! apply to tokens already issued.

use fluxgate_authz::{Action, Resource, decide};
use fluxgate_store::audit::NewEvent;
use tonic::Request;

use crate::directory::Principal;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub const REQUEST_ID_HEADER: &str = "x-request-id";
pub const REVISION_HEADER: &str = "x-fluxgate-revision";
pub const MIN_REVISION_HEADER: &str = "x-fluxgate-min-revision";

/// Who asked, from where, under which request id.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    pub request_id: String,
    pub peer: Option<String>,
    pub min_revision: Option<i64>,
}

impl RequestCtx {
    pub fn of<T>(req: &Request<T>) -> ApiResult<Self> {
        let md = req.metadata();
        let request_id = md
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= 128
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
            })
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        let min_revision = match md.get(MIN_REVISION_HEADER) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .filter(|r| *r >= 0)
                    .ok_or_else(|| {
                        ApiError::invalid(MIN_REVISION_HEADER, "must be a non-negative integer")
                    })?,
            ),
        };
        Ok(Self {
            request_id,
            peer: req.remote_addr().map(|a| a.to_string()),
            min_revision,
        })
    }

    /// An audit event of this request, by `actor` (when known).
    pub fn event(
        &self,
        actor: Option<&Principal>,
        action: &str,
        target_type: &str,
        target_id: Option<String>,
    ) -> NewEvent {
        NewEvent {
            actor_id: actor.map(|p| p.user_id.to_string()),
            actor_name: actor.map(|p| p.facts.username.clone()),
            actor_role: actor.map(|p| p.facts.role.as_str().to_owned()),
            action: action.into(),
            target_type: target_type.into(),
            target_id,
            outcome: "success".into(),
            request_id: Some(self.request_id.clone()),
            peer_addr: self.peer.clone(),
            ..Default::default()
        }
    }
}

fn bearer<T>(req: &Request<T>) -> Option<&str> {
    let v = req.metadata().get("authorization")?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl AppState {
    /// The caller behind the request's bearer token, as the directory knows them now.
    pub async fn authenticate<T>(
        &self,
        req: &Request<T>,
        ctx: &RequestCtx,
    ) -> ApiResult<Principal> {
        if let Some(rev) = ctx.min_revision {
            self.directory.ensure(rev).await?;
        }
        let token = bearer(req).ok_or_else(ApiError::unauthenticated)?;
        let t = self
            .keys
            .verify(token)
            .ok_or_else(ApiError::unauthenticated)?;
        let p = self
            .directory
            .principal(t.user_id, t.session_id)
            .ok_or_else(ApiError::unauthenticated)?;
        if !p.facts.active {
            return Err(ApiError::unauthenticated());
        }
        Ok(p)
    }

    /// Asks the engine; a denial becomes PERMISSION_DENIED carrying the engine's reason.
    pub fn authorize(&self, p: &Principal, action: Action, resource: Resource) -> ApiResult<()> {
        let d = decide(&p.subject(), action, resource);
        if d.allowed {
            Ok(())
        } else {
            Err(ApiError::PermissionDenied(format!(
                "{} denied: {}",
                action.as_str(),
                d.reason
            )))
        }
    }
}
