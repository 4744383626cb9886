//! The web console: its files and headers over plain HTTP/1.1, gRPC-Web on the gRPC port, and
//! every flow in a real browser (headless Chromium driven by Playwright,
//! `tests/support/console_test.py`).
//!
//! The browser tests need Debian's `chromium` and the virtualenv's Playwright and axe-core
//! (`make test` installs the Python side; `.ci/run` installs Chromium). Without them they are
//! skipped loudly, unless `FLUXGATE_TEST_REQUIRE_BROWSER=1`, when they fail. Screenshots go to
//! `FLUXGATE_CONSOLE_SCREENSHOTS` when set (`make screenshots`), else to a temporary folder.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{ADMIN_PASSWORD, Backend, TestServer};

struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// One HTTP/1.1 request on a fresh connection, read to its end.
async fn http(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> Reply {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{head}\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v == "chunked")
    {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 4 + size..];
    }
}

async fn the_console_is_served_locked_down(b: Backend) {
    let s = TestServer::start(b).await;
    for path in ["/", "/users", "/register?token=abc", "/reset-password"] {
        let r = http(s.addr, &format!("GET {path} HTTP/1.1"), b"").await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.headers["content-type"].starts_with("text/html"), "{path}");
        let csp = &r.headers["content-security-policy"];
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(r.headers["x-frame-options"], "DENY");
        assert_eq!(r.headers["referrer-policy"], "no-referrer");
        assert_eq!(r.headers["x-content-type-options"], "nosniff");
        let page = String::from_utf8_lossy(&r.body);
        assert!(page.contains(r#"<script type="module" src="/assets/console.js">"#));
        // No inline script anywhere: the policy would block it.
        assert!(!page.contains("<script>"), "{page}");
    }

    // The script, gzipped for those who accept it, plain for the rest; revalidated by etag.
    let gz = http(
        s.addr,
        "GET /assets/console.js HTTP/1.1\r\nAccept-Encoding: gzip",
        b"",
    )
    .await;
    assert_eq!(gz.status, 200);
    assert_eq!(gz.headers["content-encoding"], "gzip");
    assert_eq!(&gz.body[..2], &[0x1f, 0x8b]);
    assert!(gz.headers["content-type"].starts_with("text/javascript"));
    let plain = http(s.addr, "GET /assets/console.js HTTP/1.1", b"").await;
    assert!(!plain.headers.contains_key("content-encoding"));
    assert!(plain.body.len() > gz.body.len());
    let tag = plain.headers["etag"].clone();
    let again = http(
        s.addr,
        &format!("GET /assets/console.js HTTP/1.1\r\nIf-None-Match: {tag}"),
        b"",
    )
    .await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    // A missing asset is a 404; a form post is not a page; HEAD has no body.
    assert_eq!(
        http(s.addr, "GET /assets/nope.js HTTP/1.1", b"")
            .await
            .status,
        404
    );
    assert_eq!(
        http(s.addr, "POST /users HTTP/1.1", b"x=1").await.status,
        405
    );
    let head = http(s.addr, "HEAD / HTTP/1.1", b"").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    s.stop().await;
}

async fn grpc_web_reaches_the_services(b: Backend) {
    let s = TestServer::start(b).await;
    // GetPasswordPolicy needs no authentication: an empty message in one gRPC-Web frame.
    let r = http(
        s.addr,
        "POST /fluxgate.v1.SettingsService/GetPasswordPolicy HTTP/1.1\r\n\
         Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1",
        &[0, 0, 0, 0, 0],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"].starts_with("application/grpc-web"));
    // A data frame (flag 0) with the policy, then the trailers frame (flag 0x80).
    assert_eq!(r.body[0], 0);
    let len = u32::from_be_bytes(r.body[1..5].try_into().unwrap()) as usize;
    assert!(len > 0);
    let trailers = String::from_utf8_lossy(&r.body[5 + len + 5..]).to_ascii_lowercase();
    assert_eq!(r.body[5 + len], 0x80);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");

    // An authenticated method without a token: UNAUTHENTICATED, as over gRPC.
    let r = http(
        s.addr,
        "POST /fluxgate.v1.UserService/ListUsers HTTP/1.1\r\n\
         Content-Type: application/grpc-web+proto",
        &[0, 0, 0, 0, 0],
    )
    .await;
    let all = format!("{:?}{}", r.headers, String::from_utf8_lossy(&r.body)).to_ascii_lowercase();
    assert!(all.contains("grpc-status") && all.contains("16"), "{all}");

    // An unknown method is still UNIMPLEMENTED, not the console's page.
    let r = http(
        s.addr,
        "POST /fluxgate.v1.NoService/Nothing HTTP/1.1\r\nContent-Type: application/grpc-web+proto",
        &[0, 0, 0, 0, 0],
    )
    .await;
    let all = format!("{:?}{}", r.headers, String::from_utf8_lossy(&r.body)).to_ascii_lowercase();
    assert!(all.contains("grpc-status") && all.contains("12"), "{all}");
    s.stop().await;
}

/// The frames of a gRPC-Web body: (flag, payload).
fn frames(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 5 {
        let len = u32::from_be_bytes(b[1..5].try_into().unwrap()) as usize;
        out.push((b[0], b[5..5 + len].to_vec()));
        b = &b[5 + len..];
    }
    out
}

/// A refusal that still writes (a wrong current password counts towards the lockout), sent
/// with an idempotency key as the console sends every write: the browser must get its status,
/// first time and on retry (it once got an empty trailers frame, "missing message").
async fn a_keyed_refusal_reaches_the_browser_with_its_status(b: Backend) {
    use tonic_prost::prost::Message as _;
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let msg = fluxgate_proto::v1::ChangePasswordRequest {
        current_password: "Not-the-pass-1".into(),
        new_password: "Brand-new-pass-2".into(),
    }
    .encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    for attempt in 0..2 {
        let r = http(
            s.addr,
            &format!(
                "POST /fluxgate.v1.AuthService/ChangePassword HTTP/1.1\r\n\
                 Content-Type: application/grpc-web+proto\r\nAuthorization: Bearer {admin}\r\n\
                 Idempotency-Key: cp-browser"
            ),
            &body,
        )
        .await;
        assert_eq!(r.status, 200);
        let trailers: Vec<_> = frames(&r.body)
            .into_iter()
            .filter(|(flag, _)| flag & 0x80 != 0)
            .map(|(_, t)| String::from_utf8_lossy(&t).to_ascii_lowercase())
            .collect();
        let status = match trailers.as_slice() {
            [] => r.headers.get("grpc-status").cloned().unwrap_or_default(),
            [t] => t
                .lines()
                .find_map(|l| l.strip_prefix("grpc-status:"))
                .unwrap_or_default()
                .trim()
                .to_owned(),
            more => panic!("attempt {attempt}: several trailer frames {more:?}"),
        };
        assert_eq!(
            status, "3",
            "attempt {attempt}: {:?} {trailers:?}",
            r.headers
        );
    }
    s.stop().await;
}

/// The browser's session: the refresh token only ever in an HttpOnly cookie, honoured only with
/// the console's header (another site's page cannot send it).
async fn the_refresh_token_lives_in_an_http_only_cookie(b: Backend) {
    use fluxgate_proto::v1 as pb;
    use tonic::Request;
    let s = TestServer::start(b).await;
    fn browser<T>(mut r: Request<T>) -> Request<T> {
        r.metadata_mut()
            .insert("x-fluxgate-session-cookie", "1".parse().unwrap());
        r
    }
    let login = s
        .auth()
        .login(browser(Request::new(pb::LoginRequest {
            username: "admin".into(),
            password: ADMIN_PASSWORD.into(),
            ..Default::default()
        })))
        .await
        .unwrap();
    let cookie = login
        .metadata()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let tokens = login.into_inner().tokens.unwrap();
    assert!(
        tokens.refresh_token.is_empty(),
        "the message keeps no refresh token"
    );
    assert!(!tokens.access_token.is_empty());
    for attr in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/fluxgate.v1.AuthService/",
        "Max-Age=",
    ] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let pair = cookie.split(';').next().unwrap().to_owned();
    assert!(
        pair.starts_with("fluxgate_refresh=") && pair.len() > 40,
        "{pair}"
    );

    // Without the header the cookie is not a credential: a forged cross-site call gets nothing.
    let mut forged = Request::new(pb::RefreshSessionRequest::default());
    forged
        .metadata_mut()
        .insert("cookie", pair.parse().unwrap());
    let e = s.auth().refresh_session(forged).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    // With it, the cookie refreshes, and the new token replaces it (the old one is spent).
    let mut refresh = browser(Request::new(pb::RefreshSessionRequest::default()));
    refresh
        .metadata_mut()
        .insert("cookie", pair.parse().unwrap());
    let r = s.auth().refresh_session(refresh).await.unwrap();
    let next = r
        .metadata()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!next.starts_with(&pair), "the refresh token rotates");
    let access = r.into_inner().tokens.unwrap().access_token;

    // A gRPC client that sends no header keeps getting its token in the message, as before.
    let plain = s.login("admin", ADMIN_PASSWORD).await;
    assert!(!plain.tokens.unwrap().refresh_token.is_empty());

    // Logout clears the cookie.
    let mut out = browser(Request::new(pb::LogoutRequest {}));
    out.metadata_mut()
        .insert("authorization", format!("Bearer {access}").parse().unwrap());
    let r = s.auth().logout(out).await.unwrap();
    let cleared = r.metadata().get("set-cookie").unwrap().to_str().unwrap();
    assert!(
        cleared.starts_with("fluxgate_refresh=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    s.stop().await;
}

fn chromium() -> PathBuf {
    std::env::var_os("FLUXGATE_TEST_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// The Python with Playwright and axe-core, or `None` (after saying why) when something is
/// missing and the browser tests are not required.
fn browser_tools() -> Option<String> {
    let python = std::env::var("FLUXGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_python = Command::new(&python)
        .args(["-c", "import playwright, axe_playwright_python, grpc_tools"])
        .status()
        .is_ok_and(|s| s.success());
    let why = match (has_python, chromium().exists()) {
        (true, true) => return Some(python),
        (false, _) => format!(
            "{python} with playwright and axe-playwright-python is needed \
             (tests/support/requirements.txt; `make test` installs them)"
        ),
        (true, false) => format!(
            "Chromium is needed at {} (Debian: apt-get install chromium; or set \
             FLUXGATE_TEST_CHROMIUM)",
            chromium().display()
        ),
    };
    if std::env::var("FLUXGATE_TEST_REQUIRE_BROWSER").is_ok_and(|v| v == "1" || v == "true") {
        panic!("browser tests required (FLUXGATE_TEST_REQUIRE_BROWSER=1): {why}");
    }
    eprintln!("\n*** SKIPPING browser test: {why}.\n");
    None
}

async fn every_flow_in_a_real_browser(b: Backend) {
    let Some(python) = browser_tools() else {
        return;
    };
    let sqlite = matches!(b, Backend::Sqlite);
    // The webhooks flow's receiver listens on loopback.
    let s = TestServer::start_configured(b, |c| {
        c.webhooks.allowed_private_networks = vec!["127.0.0.1/32".into()];
        c.webhooks.poll_ms = 50;
    })
    .await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("support/console_test.py");
    let keep = tempfile::tempdir().unwrap();
    let shots = match std::env::var_os("FLUXGATE_CONSOLE_SCREENSHOTS") {
        Some(d) if sqlite => PathBuf::from(d),
        _ => keep.path().to_path_buf(),
    };
    let (base, grpc) = (format!("http://{}", s.addr), s.channel_addr());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args([base, grpc, ADMIN_PASSWORD.into()])
            .arg(&shots)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("console: ok"),
        "the browser flows failed:\n{stdout}\n{stderr}"
    );
    s.stop().await;
}

crate::both_backends!(
    the_console_is_served_locked_down,
    a_keyed_refusal_reaches_the_browser_with_its_status,
    the_refresh_token_lives_in_an_http_only_cookie,
    grpc_web_reaches_the_services,
    every_flow_in_a_real_browser
);
