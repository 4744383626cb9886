//! The two browser legs of a sign-in through an identity provider, on the console's port:
//!
//! - `GET /sso/{provider}/start?code_challenge=C[&redirect_uri=R]`: the client (the console, or
//!   fluxctl with a loopback `redirect_uri`, RFC 8252) sent the browser here with the S256
//!   challenge of a verifier it keeps. FluxGate stores the pending sign-in, sets a cookie with its
//!   `state` (so that only this browser can finish it: no login CSRF) and redirects to the
//!   provider.
//! - `GET /sso/{provider}/callback?code=…&state=…[&iss=…]`: the provider's answer. The pending
//!   sign-in is taken (once), the cookie, the provider and `iss` (RFC 9207) checked, the code
//!   exchanged and the ID token checked ([`crate::oidc`]); the use case finds the user and leaves
//!   a one-time code, which goes back to the client (`/sso/done?code=…` in the console, the
//!   loopback address for fluxctl). The client collects its session with
//!   `AuthService.CompleteSsoSignIn` and its verifier.
//!
//! A refusal is audited and sent back the same way as `?error=…`.

use std::sync::Arc;

use bytes::Bytes;
use fluxgate_core::secrets::random_token;
use fluxgate_core::sso::{Begin, Finish, RecordFailure, TakePending};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use openidconnect::url::{Url, form_urlencoded};
use subtle::ConstantTimeEq as _;
use tonic::body::Body;

use crate::error::ApiError;
use crate::state::AppState;

/// The cookie that binds a sign-in to the browser that started it.
const STATE_COOKIE: &str = "fluxgate_sso";
/// Where the console collects its session.
const CONSOLE_DONE: &str = "/sso/done";

/// Whether `path` is one of the two legs (`/sso/{id}/start`, `/sso/{id}/callback`).
pub fn is_sso_path(path: &str) -> bool {
    leg(path).is_some()
}

fn leg(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/sso/")?;
    let (id, leg) = rest.split_once('/')?;
    matches!(leg, "start" | "callback").then_some((id, leg))
}

/// Serves one leg.
pub async fn handle(state: Arc<AppState>, req: Request<Body>) -> Response<Body> {
    if req.method() != Method::GET {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        );
    }
    let Some((id, which)) = leg(req.uri().path()) else {
        return plain(StatusCode::NOT_FOUND, "not found\n".into());
    };
    let query: Vec<(String, String)> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let peer = crate::incoming::remote_addr(req.extensions()).map(|a| a.to_string());
    let origin = fluxgate_core::Origin {
        request_id: Some(uuid::Uuid::new_v4().to_string()),
        peer_addr: peer,
    };
    let call = Leg {
        state,
        provider: id.to_owned(),
        query,
        origin,
    };
    match which {
        "start" => call.start().await,
        _ => call.callback(req.headers()).await,
    }
}

struct Leg {
    state: Arc<AppState>,
    provider: String,
    query: Vec<(String, String)>,
    origin: fluxgate_core::Origin,
}

impl Leg {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The client's IP address (without the port), for the rate limit.
    fn client_ip(&self) -> String {
        let peer = self.origin.peer_addr.as_deref().unwrap_or("unknown");
        peer.parse::<std::net::SocketAddr>()
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|_| peer.to_owned())
    }

    fn secure(&self) -> bool {
        let c = &self.state.config;
        c.tls.cert_path.is_some() || c.public_url.starts_with("https://")
    }

    async fn start(self) -> Response<Body> {
        let st = self.state.clone();
        let Some(p) = st.sso.get(&self.provider) else {
            return plain(StatusCode::NOT_FOUND, "no such identity provider\n".into());
        };
        let challenge = self.param("code_challenge").unwrap_or("");
        if !valid_challenge(challenge) {
            return plain(
                StatusCode::BAD_REQUEST,
                "code_challenge: required, the S256 challenge of the client's verifier (43 \
                 characters of base64url)\n"
                    .into(),
            );
        }
        let return_to = match self.param("redirect_uri") {
            None => None,
            Some(r) => match loopback(r) {
                Some(u) => Some(u),
                None => {
                    return plain(
                        StatusCode::BAD_REQUEST,
                        "redirect_uri: must be an http:// loopback address (127.0.0.1, [::1] or \
                         localhost) with a port\n"
                            .into(),
                    );
                }
            },
        };
        let (state, nonce, verifier) = (random_token(32), random_token(32), random_token(48));
        let url = match st.sso.authorize_url(p, &state, &nonce, &verifier).await {
            Ok(u) => u,
            Err(why) => {
                tracing::warn!(provider = %self.provider, %why, "identity provider unreachable");
                return plain(
                    StatusCode::BAD_GATEWAY,
                    format!("the identity provider cannot be reached: {why}\n"),
                );
            }
        };
        let begin = Begin {
            provider: self.provider.clone(),
            state: state.clone(),
            nonce,
            pkce_verifier: verifier,
            client_challenge: challenge.to_owned(),
            return_to,
            client: self.client_ip(),
        };
        if let Err(e) = st.execute_from(self.origin.clone(), None, begin).await {
            return failure_page(e);
        }
        let mut r = redirect(&url);
        let secure = if self.secure() { "; Secure" } else { "" };
        set_cookie(
            &mut r,
            &format!(
                "{STATE_COOKIE}={state}; Path=/sso/; Max-Age=600; HttpOnly; SameSite=Lax{secure}"
            ),
        );
        r
    }

    async fn callback(self, headers: &HeaderMap) -> Response<Body> {
        let st = self.state.clone();
        let state = self.param("state").unwrap_or("").to_owned();
        if state.is_empty() || state.len() > 256 {
            return self
                .refuse(None, "the provider's answer has no valid state")
                .await;
        }
        let take = TakePending {
            provider: self.provider.clone(),
            state: state.clone(),
        };
        let pending = match st.execute_from(self.origin.clone(), None, take).await {
            Ok(d) => match d.value {
                Ok(p) => p,
                Err(n) => return self.refuse(n.return_to, &n.why).await,
            },
            Err(e) => return self.refuse(None, &reason(e)).await,
        };
        let back = pending.return_to.clone();
        let cookie = cookie(headers, STATE_COOKIE).unwrap_or_default();
        if !bool::from(cookie.as_bytes().ct_eq(state.as_bytes())) {
            let why = "the sign-in was not started in this browser (wrong state)";
            return self.refuse(back, why).await;
        }
        let Some(p) = st.sso.get(&self.provider) else {
            return self
                .refuse(back, "the identity provider is no longer configured")
                .await;
        };
        if let Some(err) = self.param("error") {
            let desc = self.param("error_description").unwrap_or("");
            let why = format!("the provider refused: {err} {desc}");
            return self.refuse(back, why.trim()).await;
        }
        if let Some(iss) = self.param("iss")
            && iss.trim_end_matches('/') != p.issuer().trim_end_matches('/')
        {
            let why = format!("the answer names issuer {iss:?}, not this provider's (mix-up)");
            return self.refuse(back, &why).await;
        }
        let Some(code) = self
            .param("code")
            .filter(|c| !c.is_empty() && c.len() <= 2048)
        else {
            return self.refuse(back, "the provider's answer has no code").await;
        };
        let vouched = match st
            .sso
            .exchange(p, code, &pending.pkce_verifier, &pending.nonce)
            .await
        {
            Ok(v) => v,
            Err(why) => return self.refuse(back, &why).await,
        };
        let subject = vouched.subject.clone();
        let handoff = random_token(32);
        let finish = Finish {
            rules: p.rules(),
            vouched,
            client_challenge: pending.client_challenge,
            handoff_code: handoff.clone(),
        };
        match st.execute_from(self.origin.clone(), None, finish).await {
            Ok(done) => {
                let (user, missing) = &done.value;
                if !missing.is_empty() {
                    tracing::warn!(provider = %self.provider, missing = ?missing, "group mapping names what does not exist");
                }
                tracing::info!(user = %user.username, provider = %self.provider, "sso sign-in vouched");
                self.back_to(back, "code", &handoff)
            }
            Err(e) => {
                let why = reason(e);
                self.record(Some(subject), &why).await;
                self.back_to(back, "error", &why)
            }
        }
    }

    /// Audits a refusal and sends it back to the client.
    async fn refuse(&self, back: Option<String>, why: &str) -> Response<Body> {
        self.record(None, why).await;
        self.back_to(back, "error", why)
    }

    async fn record(&self, subject: Option<String>, why: &str) {
        let cmd = RecordFailure {
            provider: self.provider.clone(),
            subject,
            why: why.to_owned(),
        };
        tracing::info!(provider = %self.provider, %why, "sso sign-in refused");
        if let Err(e) = self
            .state
            .execute_from(self.origin.clone(), None, cmd)
            .await
        {
            tracing::error!(error = %e, "recording a refused sso sign-in failed");
        }
    }

    /// Redirects to the client (`back`, or the console) with `key=value` added; the state
    /// cookie is cleared.
    fn back_to(&self, back: Option<String>, key: &str, value: &str) -> Response<Body> {
        let base =
            back.unwrap_or_else(|| format!("{}{CONSOLE_DONE}", self.state.config.public_url));
        let Ok(mut url) = Url::parse(&base) else {
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "bad return address\n".into(),
            );
        };
        url.query_pairs_mut().append_pair(key, value);
        let mut r = redirect(url.as_str());
        set_cookie(
            &mut r,
            &format!("{STATE_COOKIE}=; Path=/sso/; Max-Age=0; HttpOnly; SameSite=Lax"),
        );
        r
    }
}

/// What a refusal says, for the client and the audit trail.
fn reason(e: ApiError) -> String {
    let s = tonic::Status::from(e);
    let m = s.message();
    m.strip_prefix("single sign-on failed: ")
        .unwrap_or(m)
        .to_owned()
}

fn failure_page(e: ApiError) -> Response<Body> {
    let s = tonic::Status::from(e);
    let status = match s.code() {
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    plain(status, format!("{}\n", s.message()))
}

/// A PKCE S256 challenge: 43 characters of base64url.
fn valid_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A native client's loopback redirect (RFC 8252 7.3): `http://127.0.0.1:PORT/…`,
/// `http://[::1]:PORT/…` or `http://localhost:PORT/…`, without credentials or fragment.
fn loopback(r: &str) -> Option<String> {
    let u = Url::parse(r).ok()?;
    let host_ok = matches!(
        u.host_str(),
        Some("127.0.0.1") | Some("[::1]") | Some("localhost")
    );
    let ok = u.scheme() == "http"
        && host_ok
        && u.port().is_some()
        && u.username().is_empty()
        && u.password().is_none()
        && u.fragment().is_none()
        && r.len() <= 512;
    ok.then(|| u.to_string())
}

fn cookie(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
}

fn set_cookie(r: &mut Response<Body>, c: &str) {
    if let Ok(v) = HeaderValue::from_str(c) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn redirect(to: &str) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    crate::lockdown::lock_down(r.headers_mut());
    r
}

fn plain(status: StatusCode, text: String) -> Response<Body> {
    let mut r = Response::new(Body::new(Full::new(Bytes::from(text))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    crate::lockdown::lock_down(r.headers_mut());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_with_a_port_are_native_redirects() {
        assert!(loopback("http://127.0.0.1:8765/callback").is_some());
        assert!(loopback("http://localhost:1/").is_some());
        assert!(loopback("http://[::1]:9000/cb").is_some());
        assert!(loopback("http://127.0.0.1/callback").is_none());
        assert!(loopback("https://127.0.0.1:8765/").is_none());
        assert!(loopback("http://evil.example:8765/").is_none());
        assert!(loopback("http://127.0.0.1.evil.example:8765/").is_none());
        assert!(loopback("http://user:pw@127.0.0.1:8765/").is_none());
        assert!(loopback("http://127.0.0.1:8765/#x").is_none());
    }

    #[test]
    fn legs_and_challenges() {
        assert_eq!(leg("/sso/corp/start"), Some(("corp", "start")));
        assert_eq!(leg("/sso/corp/callback"), Some(("corp", "callback")));
        assert_eq!(leg("/sso/done"), None);
        assert_eq!(leg("/sso/corp/other"), None);
        assert!(valid_challenge(&fluxgate_core::sso::s256(
            "x".repeat(43).as_str()
        )));
        assert!(!valid_challenge("short"));
    }
}
