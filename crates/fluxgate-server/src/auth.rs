//! Per-request context and authentication: the bearer token is verified, then its session and
//! user are looked up in the in-memory directory, so role changes, deactivations and logouts
//! apply to tokens already issued.

use fluxgate_authz::{Action, Target};
use fluxgate_domain::KeyId;
use std::sync::LazyLock;
use tonic::Request;
use tonic::metadata::{Ascii, MetadataKey};

use crate::directory::Principal;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub use crate::db::REVISION_HEADER;
pub use crate::telemetry::REQUEST_ID_HEADER;
pub const MIN_REVISION_HEADER: &str = "x-fluxgate-min-revision";

/// The metadata keys every call reads, parsed once (a key given as `&str` is parsed on every
/// look-up).
static REQUEST_ID_KEY: LazyLock<MetadataKey<Ascii>> =
    LazyLock::new(|| MetadataKey::from_static(REQUEST_ID_HEADER));
static MIN_REVISION_KEY: LazyLock<MetadataKey<Ascii>> =
    LazyLock::new(|| MetadataKey::from_static(MIN_REVISION_HEADER));
static AUTHORIZATION_KEY: LazyLock<MetadataKey<Ascii>> =
    LazyLock::new(|| MetadataKey::from_static("authorization"));

/// A bearer credential, once parsed (and, for an access token, its signature verified).
enum Credential {
    Key(KeyId, String),
    Session(fluxgate_domain::UserId, fluxgate_domain::SessionId),
}

/// Who asked, from where, under which request id.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    /// The request's `x-request-id`: the client's, or the one [`crate::telemetry`] gave it.
    client_request_id: Option<String>,
    /// Generated on first use when there is none (a call that did not pass the telemetry
    /// layer).
    generated: std::sync::OnceLock<String>,
    peer: Option<std::net::SocketAddr>,
    pub min_revision: Option<i64>,
}

impl RequestCtx {
    pub fn of<T>(req: &Request<T>) -> ApiResult<Self> {
        let md = req.metadata();
        let client_request_id = md
            .get(&*REQUEST_ID_KEY)
            .and_then(|v| v.to_str().ok())
            .filter(|v| crate::telemetry::valid_request_id(v))
            .map(str::to_owned);
        let min_revision = match md.get(&*MIN_REVISION_KEY) {
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
            client_request_id,
            generated: std::sync::OnceLock::new(),
            peer: req.remote_addr(),
            min_revision,
        })
    }

    /// The request id: the client's, or one generated for this request.
    pub fn request_id(&self) -> &str {
        match &self.client_request_id {
            Some(id) => id,
            None => self
                .generated
                .get_or_init(|| uuid::Uuid::new_v4().to_string()),
        }
    }

    /// The client's IP address (the TCP peer: a proxy's address when behind one).
    pub fn peer_ip(&self) -> Option<std::net::IpAddr> {
        self.peer.map(|a| a.ip())
    }

    /// Where the request came from, as the use cases record it.
    pub fn origin(&self) -> fluxgate_core::Origin {
        fluxgate_core::Origin {
            request_id: Some(self.request_id().to_owned()),
            peer_addr: self.peer.map(|a| a.to_string()),
        }
    }
}

fn bearer<T>(req: &Request<T>) -> Option<&str> {
    let v = req.metadata().get(&*AUTHORIZATION_KEY)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub use fluxgate_core::secrets::{API_KEY_PREFIX, format_api_key, parse_api_key};

impl AppState {
    /// The caller behind the request's bearer credential (a user's access token or a service
    /// account's API key), as the directory knows them now, or as of `x-fluxgate-min-revision`.
    pub async fn authenticate<T>(
        &self,
        req: &Request<T>,
        ctx: &RequestCtx,
    ) -> ApiResult<Principal> {
        self.authenticate_at(req, ctx.min_revision).await
    }

    /// [`AppState::authenticate`], with the directory first brought up to `min_revision`
    /// (once the credential has proved itself: only an authenticated caller may make the
    /// server catch up with the database).
    pub async fn authenticate_at<T>(
        &self,
        req: &Request<T>,
        min_revision: Option<i64>,
    ) -> ApiResult<Principal> {
        let arrived = std::time::Instant::now();
        let token = bearer(req).ok_or_else(ApiError::unauthenticated)?;
        let credential = if let Some((key, secret)) = parse_api_key(token) {
            Credential::Key(key, crate::tokens::token_hash(secret))
        } else {
            let t = self
                .keys
                .verify(token)
                .ok_or_else(ApiError::unauthenticated)?;
            Credential::Session(t.user_id, t.session_id)
        };
        let p = match self.lookup(&credential) {
            Some(p) => p,
            // A session or key this replica has not seen yet: perhaps created through another
            // replica a moment ago (a key it knows but refuses is refused without a sync).
            None if !matches!(&credential, Credential::Key(k, _) if self.directory.knows_key(*k)) =>
            {
                self.directory.catch_up(arrived).await?;
                self.lookup(&credential)
                    .ok_or_else(ApiError::unauthenticated)?
            }
            None => return Err(ApiError::unauthenticated()),
        };
        match min_revision {
            Some(rev) if rev > 0 && self.directory.revision() < rev => {
                self.directory.ensure(rev).await?;
                // Answer as of that revision: the caller may have been changed by it.
                self.lookup(&credential)
                    .ok_or_else(ApiError::unauthenticated)
            }
            _ => Ok(p),
        }
    }

    /// The service account behind an API key sent as `Authorization: Bearer <key>` over plain
    /// HTTP (the SCIM endpoint): only API keys, never session tokens.
    pub async fn authenticate_key_header(&self, header: Option<&str>) -> Option<Principal> {
        let arrived = std::time::Instant::now();
        let (scheme, token) = header?.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let (key, secret) = parse_api_key(token.trim())?;
        let credential = Credential::Key(key, crate::tokens::token_hash(secret));
        if let Some(p) = self.lookup(&credential) {
            return Some(p);
        }
        if self.directory.knows_key(key) {
            return None;
        }
        self.directory.catch_up(arrived).await.ok()?;
        self.lookup(&credential)
    }

    /// The active principal behind a credential, as the directory knows it.
    fn lookup(&self, c: &Credential) -> Option<Principal> {
        match c {
            Credential::Key(key, hash) => self.directory.key_principal(*key, hash),
            Credential::Session(user, session) => self.directory.session_principal(*user, *session),
        }
        .filter(|p| p.active)
    }

    /// Asks the engine; a denial becomes PERMISSION_DENIED carrying the engine's reason.
    pub fn authorize(&self, p: &Principal, action: Action, target: Target) -> ApiResult<()> {
        self.authorize_in(&self.directory.snapshot(), p, action, target)
    }

    /// [`AppState::authorize`] against a snapshot the caller already holds.
    pub fn authorize_in(
        &self,
        snap: &fluxgate_authz::Snapshot,
        p: &Principal,
        action: Action,
        target: Target,
    ) -> ApiResult<()> {
        let d = snap.authorize(&p.id, action, target);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_round_trip() {
        let id = KeyId::generate();
        let k = format_api_key(id, "s3cr3t");
        assert_eq!(parse_api_key(&k), Some((id, "s3cr3t")));
        assert_eq!(parse_api_key("fgk_short_x"), None);
        assert_eq!(parse_api_key("eyJhbGciOi"), None);
    }
}
