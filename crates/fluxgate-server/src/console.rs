//! The web console's files, embedded in the binary and served beside the gRPC services on the
//! same port. The console is one more client of the public API (gRPC-Web); this module only
//! hands out its page, script, stylesheet and icon, with the headers that lock them down.
//!
//! Built from `web/` by `make web` into `console/` (committed, so the build needs no Node.js).
//! [`ConsoleLayer`] sits in front of the gRPC stack: a request whose content type is not gRPC's
//! (or gRPC-Web's) is the console's, and every path that is not an asset gets the page, whose
//! script routes by path (`/users`, `/register?token=…`, …).

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use sha2::{Digest, Sha256};
use tonic::body::Body;

pub use crate::lockdown::{CONTENT_SECURITY_POLICY, lock_down};

/// One embedded file: its bytes and their gzip copy.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    plain: &'static [u8],
    gzip: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $file:literal, $type:literal) => {
        Asset {
            path: $path,
            content_type: $type,
            plain: include_bytes!(concat!("../console/", $file)),
            gzip: include_bytes!(concat!("../console/", $file, ".gz")),
        }
    };
}

const PAGE: Asset = asset!("/", "index.html", "text/html; charset=utf-8");
const ASSETS: [Asset; 3] = [
    asset!(
        "/assets/console.js",
        "console.js",
        "text/javascript; charset=utf-8"
    ),
    asset!(
        "/assets/console.css",
        "console.css",
        "text/css; charset=utf-8"
    ),
    asset!("/assets/favicon.svg", "favicon.svg", "image/svg+xml"),
];

/// The entity tag of an asset: a digest of its bytes, computed once.
fn etag(a: &Asset) -> &'static str {
    static TAGS: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        std::iter::once(&PAGE)
            .chain(ASSETS.iter())
            .map(|a| {
                let d = Sha256::digest(a.plain);
                let hex: String = d[..12].iter().map(|b| format!("{b:02x}")).collect();
                (a.path, format!("\"{hex}\""))
            })
            .collect()
    });
    tags.iter()
        .find(|(p, _)| *p == a.path)
        .map_or("\"\"", |(_, t)| t.as_str())
}

/// Serves the console in front of `S`, which gets every gRPC and gRPC-Web call.
/// The sign-in legs of identity providers (`/sso/{id}/start`, `/sso/{id}/callback`) go to
/// [`crate::sso_http`].
#[derive(Debug, Clone)]
pub struct ConsoleLayer {
    state: std::sync::Arc<crate::state::AppState>,
}

impl ConsoleLayer {
    pub fn new(state: std::sync::Arc<crate::state::AppState>) -> Self {
        ConsoleLayer { state }
    }
}

impl<S> tower::Layer<S> for ConsoleLayer {
    type Service = Console<S>;
    fn layer(&self, inner: S) -> Console<S> {
        Console {
            inner,
            state: self.state.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Console<S> {
    inner: S,
    state: std::sync::Arc<crate::state::AppState>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> tower::Service<Request<Body>> for Console<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if is_api_call(req.headers()) {
            return Box::pin(self.inner.call(req));
        }
        if crate::scim_http::is_scim_path(req.uri().path()) {
            let state = self.state.clone();
            return Box::pin(async move { Ok(crate::scim_http::handle(state, req).await) });
        }
        if crate::sso_http::is_sso_path(req.uri().path()) {
            let state = self.state.clone();
            return Box::pin(async move { Ok(crate::sso_http::handle(state, req).await) });
        }
        let r = serve(req.method(), req.uri().path(), req.headers());
        Box::pin(async move { Ok(r) })
    }
}

/// gRPC and gRPC-Web calls (`application/grpc`, `application/grpc-web+proto`, …).
fn is_api_call(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/grpc"))
}

fn serve(method: &Method, path: &str, headers: &HeaderMap) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    let asset = match ASSETS.iter().find(|a| a.path == path) {
        Some(a) => a,
        None if path == "/favicon.ico" => &ASSETS[2],
        // A missing asset is a 404, not the page (a stale page asks for what is gone).
        None if path.starts_with("/assets/") => {
            return plain(StatusCode::NOT_FOUND, "not found\n");
        }
        None => &PAGE,
    };
    respond(asset, headers, method == Method::HEAD)
}

fn body(b: &'static [u8]) -> Body {
    Body::new(Full::new(Bytes::from_static(b)))
}

fn respond(a: &Asset, headers: &HeaderMap, head_only: bool) -> Response<Body> {
    let tag = etag(a);
    let gzip = accepts_gzip(headers);
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let (status, body): (StatusCode, &'static [u8]) = if unchanged {
        (StatusCode::NOT_MODIFIED, b"")
    } else if gzip {
        (StatusCode::OK, a.gzip)
    } else {
        (StatusCode::OK, a.plain)
    };
    let mut r = Response::new(if head_only || unchanged {
        Body::empty()
    } else {
        self::body(body)
    });
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    h.insert(header::ETAG, HeaderValue::from_static(tag));
    // Always revalidated: the names carry no hash, and a new binary must serve its own files.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if gzip && !unchanged {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    lock_down(h);
    r
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(body(text.as_bytes()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    lock_down(r.headers_mut());
    r
}

fn accepts_gzip(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT_ENCODING).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|e| {
                let mut it = e.split(';');
                let name = it.next().unwrap_or("").trim();
                let refused = it.any(|p| {
                    let p = p.trim().replace(' ', "");
                    p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
                });
                name.eq_ignore_ascii_case("gzip") && !refused
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn gzip_is_served_only_to_those_who_accept_it() {
        assert!(accepts_gzip(&headers(&[("accept-encoding", "gzip, br")])));
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "br;q=1, GZIP;q=0.5"
        )])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "gzip;q=0")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "br")])));
        assert!(!accepts_gzip(&headers(&[])));
    }

    #[test]
    fn every_asset_has_a_distinct_tag_and_a_real_gzip_copy() {
        let mut tags: Vec<&str> = ASSETS.iter().map(etag).collect();
        tags.push(etag(&PAGE));
        let n = tags.len();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), n);
        for a in ASSETS.iter().chain(std::iter::once(&PAGE)) {
            assert_eq!(&a.gzip[..2], &[0x1f, 0x8b], "{} gzip magic", a.path);
            assert!(!a.plain.is_empty());
        }
    }
}
