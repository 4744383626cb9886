//! Idempotent retries. A client may name a mutating call with an `idempotency-key` header; a
//! retry of that call (after a time-out, say) is answered with the first call's reply and
//! writes nothing.
//!
//! How: this layer authenticates the caller (keys are per caller) and hashes the request. A key
//! seen before is answered from its record: the recorded reply, or INVALID_ARGUMENT when the
//! key was used for a different request. A new key is put in a task-local for the call, and
//! [`crate::db::Db::write`] reserves it in the call's write transaction, so the key and the
//! write commit together: a retry can never repeat a committed write, even after a crash. The
//! reply is recorded just after the handler answers, and replayed byte for byte.
//!
//! A call whose write never committed (refused input, denied, conflict) leaves no record, so
//! its retry is evaluated afresh.
//!
//! Replies can carry secrets (a new API key, a temporary password, a registration link, session
//! tokens), so nothing readable is kept: the record holds a digest of the idempotency key, and
//! the reply is sealed (ChaCha20-Poly1305) under a key derived from the idempotency key itself,
//! which only the client holds. A replay is re-authorized: the caller must authenticate, its
//! standing (role, state, groups) must be what it was when the call was made, and a secret in
//! the reply must still be live (an API key not revoked, a session not ended); otherwise the
//! call is refused and nothing is replayed. Which methods are mutating comes from the contracts: every
//! unary method not marked `idempotency_level = NO_SIDE_EFFECTS`.

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use fluxgate_proto::v1 as pb;
use fluxgate_store::idempotency::{self as store, Record, Reservation};
use http_body::Frame;
use http_body_util::{BodyExt, Limited, StreamBody};
use rand::Rng as _;
use ring::aead;
use sha2::{Digest, Sha256};
use tonic::Status;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tracing::Instrument as _;

use crate::db::KeyedWrite;
use crate::error::ApiError;
use crate::state::AppState;

pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// [`IDEMPOTENCY_KEY_HEADER`], parsed once (every call asks whether it carries one).
static IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static(IDEMPOTENCY_KEY_HEADER);
/// Set on a reply that was replayed from the record of an earlier call.
pub const REPLAYED_HEADER: &str = "x-fluxgate-idempotent-replay";

/// How long keys (and their replies) are kept.
pub const RETENTION_MICROS: i64 = 24 * 3_600 * 1_000_000;
/// How long a retry waits for the first call's reply to be recorded.
const REPLY_WAIT: Duration = Duration::from_secs(5);
/// The largest request message buffered (the services' decoding limit, plus framing).
const MAX_REQUEST_BYTES: usize = crate::incoming::MAX_MESSAGE_BYTES + 5;
/// Response headers and trailers that make up a recorded reply.
const RECORDED_METADATA: [&str; 4] = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    crate::db::REVISION_HEADER,
];

/// The mutating unary methods of the contracts.
pub fn mutating_methods() -> HashSet<String> {
    use prost_types::method_options::IdempotencyLevel;
    fluxgate_proto::methods(fluxgate_proto::FILE_DESCRIPTOR_SET)
        .into_iter()
        .filter(|(_, m)| {
            let read_only = m
                .options
                .as_ref()
                .is_some_and(|o| o.idempotency_level() == IdempotencyLevel::NoSideEffects);
            !(read_only || m.client_streaming() || m.server_streaming())
        })
        .map(|(path, _)| path)
        .collect()
}

/// Whether `key` is a usable idempotency key: the same rule as request ids.
pub fn valid_key(key: &str) -> bool {
    crate::telemetry::valid_request_id(key)
}

/// The tower layer, outermost but for request ids and metrics.
#[derive(Clone)]
pub struct IdempotencyLayer {
    state: Arc<AppState>,
    methods: Arc<HashSet<String>>,
}

impl IdempotencyLayer {
    pub fn new(state: Arc<AppState>) -> Self {
        Self {
            state,
            methods: Arc::new(mutating_methods()),
        }
    }
}

impl<S> tower::Layer<S> for IdempotencyLayer {
    type Service = Idempotent<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Idempotent {
            inner,
            state: self.state.clone(),
            methods: self.methods.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Idempotent<S> {
    inner: S,
    state: Arc<AppState>,
    methods: Arc<HashSet<String>>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> tower::Service<http::Request<Body>> for Idempotent<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if !req.headers().contains_key(&IDEMPOTENCY_KEY) || !self.methods.contains(req.uri().path())
        {
            return Box::pin(self.inner.call(req));
        }
        // The ready service goes with this call; its clone serves the next.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        // A task of its own: a client that gives up (its deadline passes, say) does not cut
        // the call off between its write and the recording of its reply.
        let call = tokio::spawn(keyed(self.state.clone(), inner, req).in_current_span());
        Box::pin(async move {
            call.await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "a keyed call failed");
                Ok(refuse(Status::internal("internal error")))
            })
        })
    }
}

fn refuse(status: Status) -> http::Response<Body> {
    status.into_http()
}

async fn keyed<S>(
    state: Arc<AppState>,
    mut inner: S,
    req: http::Request<Body>,
) -> Result<http::Response<Body>, S::Error>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
{
    let key = req
        .headers()
        .get(IDEMPOTENCY_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if !valid_key(&key) {
        return Ok(refuse(
            ApiError::invalid(
                IDEMPOTENCY_KEY_HEADER,
                "must be 1 to 128 letters, digits, '-', '_', '.' or ':'",
            )
            .into(),
        ));
    }
    // Keys belong to the caller. A caller that does not authenticate is refused by the
    // handler, which is the answer it gets here too.
    let (parts, body) = req.into_parts();
    let probe = tonic::Request::from_parts(
        MetadataMap::from_headers(parts.headers.clone()),
        Default::default(),
        (),
    );
    let Ok(principal) = state.authenticate_at(&probe, None).await else {
        return inner.call(http::Request::from_parts(parts, body)).await;
    };
    let message = match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return Ok(refuse(Status::resource_exhausted(
                "request message too large",
            )));
        }
    };
    let scope = principal.id.to_string();
    let seal = sealing_key(&scope, &key);
    let reservation = Reservation {
        key: hex(&Sha256::digest(format!("fluxgate idempotency key\0{key}"))),
        scope,
        method: parts.uri.path().to_owned(),
        request_hash: hex(&Sha256::digest(&message)),
        standing: standing(&state, &principal.id),
    };
    match find(&state, &reservation).await {
        Err(e) => return Ok(refuse(e.into())),
        Ok(Some(record)) => return Ok(answer(&state, &reservation, &seal, record).await),
        Ok(None) => {}
    }

    let call = Arc::new(KeyedWrite::new(reservation));
    let req = http::Request::from_parts(parts, Body::new(http_body_util::Full::new(message)));
    let response = crate::db::keyed(call.clone(), inner.call(req)).await?;
    let r = call.reservation();
    if call.collided() {
        // A concurrent call with the same key committed first: answer with its reply.
        return Ok(match find(&state, r).await {
            Ok(Some(record)) => answer(&state, r, &seal, record).await,
            Ok(None) => response,
            Err(e) => refuse(e.into()),
        });
    }
    if !call.committed() {
        // Nothing was written under the key: a retry is evaluated afresh.
        return Ok(response);
    }
    Ok(record_reply(&state, r, &seal, response).await)
}

/// The key that seals a reply: derived from the client's idempotency key (never stored) and the
/// caller it belongs to.
fn sealing_key(scope: &str, key: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"fluxgate reply seal v1\0");
    h.update((scope.len() as u64).to_be_bytes());
    h.update(scope.as_bytes());
    h.update(key.as_bytes());
    h.finalize().into()
}

fn aead_key(seal: &[u8; 32]) -> Option<aead::LessSafeKey> {
    aead::UnboundKey::new(&aead::CHACHA20_POLY1305, seal)
        .ok()
        .map(aead::LessSafeKey::new)
}

/// `nonce ‖ ciphertext ‖ tag`.
fn seal_reply(seal: &[u8; 32], data: &[u8]) -> Option<Vec<u8>> {
    let key = aead_key(seal)?;
    let mut nonce = [0u8; aead::NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let mut out = data.to_vec();
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::empty(),
        &mut out,
    )
    .ok()?;
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&out);
    Some(sealed)
}

fn open_reply(seal: &[u8; 32], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < aead::NONCE_LEN {
        return None;
    }
    let (nonce, data) = sealed.split_at(aead::NONCE_LEN);
    let key = aead_key(seal)?;
    let mut buf = data.to_vec();
    let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
    let plain = key
        .open_in_place(nonce, aead::Aad::empty(), &mut buf)
        .ok()?;
    Some(plain.to_vec())
}

/// A digest of what the caller holds now (role, state, groups): a replay needs the same.
fn standing(state: &AppState, p: &fluxgate_domain::PrincipalId) -> String {
    let s = state.directory.snapshot().standing(p).unwrap_or_default();
    hex(&Sha256::digest(s.as_bytes()))
}

/// Whether the secrets a recorded reply carries still work: a replay never hands out an API key
/// since revoked, or the tokens of a session since ended.
async fn secrets_live(state: &AppState, method: &str, frames: &[u8]) -> bool {
    use prost::Message as _;
    // One length-prefixed message: 1 byte flag, 4 bytes length.
    let Some(msg) = frames.get(5..) else {
        return true;
    };
    let credential = match method {
        "/fluxgate.v1.ServiceAccountService/CreateServiceAccountKey" => {
            pb::CreateServiceAccountKeyResponse::decode(msg)
                .ok()
                .map(|r| r.secret)
        }
        "/fluxgate.v1.ServiceAccountService/RotateServiceAccountKey" => {
            pb::RotateServiceAccountKeyResponse::decode(msg)
                .ok()
                .map(|r| r.secret)
        }
        "/fluxgate.v1.AuthService/Login" => pb::LoginResponse::decode(msg)
            .ok()
            .and_then(|r| r.tokens)
            .map(|t| t.access_token),
        "/fluxgate.v1.AuthService/RefreshSession" => pb::RefreshSessionResponse::decode(msg)
            .ok()
            .and_then(|r| r.tokens)
            .map(|t| t.access_token),
        "/fluxgate.v1.AuthService/CompleteSsoSignIn" => pb::CompleteSsoSignInResponse::decode(msg)
            .ok()
            .and_then(|r| r.tokens)
            .map(|t| t.access_token),
        "/fluxgate.v1.AuthService/ChangePassword" => pb::ChangePasswordResponse::decode(msg)
            .ok()
            .and_then(|r| r.tokens)
            .map(|t| t.access_token),
        _ => return true,
    };
    let Some(credential) = credential.filter(|c| !c.is_empty()) else {
        return true;
    };
    let mut probe = tonic::Request::new(());
    match format!("Bearer {credential}").parse() {
        Ok(v) => {
            probe.metadata_mut().insert("authorization", v);
        }
        Err(_) => return false,
    }
    state.authenticate_at(&probe, None).await.is_ok()
}

async fn find(state: &AppState, r: &Reservation) -> Result<Option<Record>, ApiError> {
    let (scope, key) = (r.scope.clone(), r.key.clone());
    state
        .db
        .read(move |conn| Ok(store::find(conn, &scope, &key)?))
        .await
}

/// Answers a call whose key is on record: its reply, once recorded, re-authorized.
async fn answer(
    state: &AppState,
    r: &Reservation,
    seal: &[u8; 32],
    mut record: Record,
) -> http::Response<Body> {
    if record.method != r.method || record.request_hash != r.request_hash {
        return refuse(
            ApiError::invalid(
                IDEMPOTENCY_KEY_HEADER,
                "was used for a different request; use a new key for a new request",
            )
            .into(),
        );
    }
    let deadline = tokio::time::Instant::now() + REPLY_WAIT;
    loop {
        if let Some((sealed, meta)) = record.reply {
            if record.standing != r.standing {
                return refuse(Status::permission_denied(
                    "your role, state or groups changed since the call with this idempotency \
                     key was applied; its reply is not replayed (read the resource instead)",
                ));
            }
            let Some(body) = open_reply(seal, &sealed) else {
                return refuse(Status::failed_precondition(
                    "the call with this idempotency key was applied, but its recorded reply \
                     cannot be opened; read the resource to see the outcome",
                ));
            };
            if !secrets_live(state, &r.method, &body).await {
                return refuse(Status::failed_precondition(
                    "the call with this idempotency key was applied, but the secret its reply \
                     carried has since been revoked or ended; it is not replayed",
                ));
            }
            return replay(Bytes::from(body), &meta);
        }
        if tokio::time::Instant::now() >= deadline {
            return refuse(Status::aborted(
                "a call with this idempotency key was applied, but its reply is not recorded \
                 (it is still running, or the server stopped before answering); read the \
                 resource to see the outcome",
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        record = match find(state, r).await {
            Ok(Some(record)) => record,
            Ok(None) => return refuse(Status::aborted("the idempotency key expired; retry")),
            Err(e) => return refuse(e.into()),
        };
    }
}

/// Buffers the reply of a call whose key committed, records it, and passes it on.
async fn record_reply(
    state: &AppState,
    r: &Reservation,
    seal: &[u8; 32],
    response: http::Response<Body>,
) -> http::Response<Body> {
    let (mut parts, body) = response.into_parts();
    let collected = match body.collect().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "reading a reply to record it failed");
            return refuse(Status::unavailable(
                "the call was applied but its reply was lost; retry with the same key",
            ));
        }
    };
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let data = collected.to_bytes();
    let mut meta = serde_json::Map::new();
    for name in RECORDED_METADATA {
        if let Some(v) = trailers
            .get(name)
            .or_else(|| parts.headers.get(name))
            .and_then(|v| v.to_str().ok())
        {
            meta.insert(name.to_owned(), v.into());
        }
    }
    let meta = serde_json::Value::Object(meta).to_string();
    let Some(body) = seal_reply(seal, &data) else {
        tracing::warn!("sealing a reply to record it failed");
        parts.headers.remove(http::header::CONTENT_LENGTH);
        return http::Response::from_parts(parts, with_trailers(data, trailers));
    };
    let (scope, key) = (r.scope.clone(), r.key.clone());
    let recorded = state
        .db
        .read(move |conn| Ok(store::record_reply(conn, &scope, &key, &body, &meta)?))
        .await;
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "recording an idempotent reply failed");
    }
    parts.headers.remove(http::header::CONTENT_LENGTH);
    http::Response::from_parts(parts, with_trailers(data, trailers))
}

/// A recorded reply, as the first call got it.
fn replay(data: Bytes, meta: &str) -> http::Response<Body> {
    let meta: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(meta).unwrap_or_default();
    let mut response = http::Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    headers.insert(REPLAYED_HEADER, http::HeaderValue::from_static("true"));
    let mut trailers = http::HeaderMap::new();
    for (name, value) in &meta {
        let (Ok(name), Some(Ok(value))) = (
            http::HeaderName::try_from(name.as_str()),
            value.as_str().map(http::HeaderValue::try_from),
        ) else {
            continue;
        };
        if name.as_str().starts_with("grpc-") {
            trailers.insert(name, value);
        } else {
            response.headers_mut().insert(name, value);
        }
    }
    if !trailers.contains_key("grpc-status") {
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    }
    *response.body_mut() = with_trailers(data, trailers);
    response
}

/// A reply body: its message frames, then its trailers. A trailers-only reply (the status in
/// the headers, as tonic sends a refusal) stays one: an empty trailers frame after it would hide
/// the status from the client ("no status received").
fn with_trailers(data: Bytes, trailers: http::HeaderMap) -> Body {
    if data.is_empty() && trailers.is_empty() {
        return Body::empty();
    }
    let mut frames = Vec::with_capacity(2);
    if !data.is_empty() {
        frames.push(Ok::<_, Infallible>(Frame::data(data)));
    }
    frames.push(Ok(Frame::trailers(trailers)));
    Body::new(StreamBody::new(tokio_stream::iter(frames)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contracts_say_which_methods_mutate() {
        let m = mutating_methods();
        for write in [
            "/fluxgate.v1.CatalogService/CreatePortfolio",
            "/fluxgate.v1.ApprovalService/ApproveChangeRequest",
            "/fluxgate.v1.ServiceAccountService/CreateServiceAccountKey",
            "/fluxgate.v1.UserService/DeleteUser",
        ] {
            assert!(m.contains(write), "{write}");
        }
        for read in [
            "/fluxgate.v1.CatalogService/GetPortfolio",
            "/fluxgate.v1.UserService/ListUsers",
            "/fluxgate.v1.PermissionService/CheckPermission",
            "/fluxgate.v1.ApprovalService/WatchChangeRequest",
            "/fluxgate.v1.AuditService/ExportAuditEvents",
            "/fluxgate.v1.AuthService/WhoAmI",
        ] {
            assert!(!m.contains(read), "{read}");
        }
        assert_eq!(m.len(), 57);
    }

    #[test]
    fn keys_are_short_and_plain() {
        assert!(valid_key("0b6f9a1e-5a1d-4c4e-9f7e-3c2d1b0a9f8e"));
        assert!(valid_key("deploy:42.retry_1"));
        for bad in ["", "has space", "line\nbreak", "ünïcode", &"k".repeat(129)] {
            assert!(!valid_key(bad), "{bad:?}");
        }
    }
}
