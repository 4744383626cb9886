//! Sign-in through identity providers (OpenID Connect), end to end: a real OpenID provider
//! (`oidc-provider-mock`) and a hostile one, started on loopback by
//! `tests/support/sso_test.py`, the console in Chromium, fluxctl's loopback sign-in, and every
//! attack refused. This side configures the server, sets up what the claims map to, and reads
//! the audit trail afterwards: every sign-in, link, creation, mapping change and refusal is in
//! it.
//!
//! Needs the virtualenv's Playwright and oidc-provider-mock, Debian's Chromium and the fluxctl
//! binary (`cargo test --workspace` builds it); skipped loudly without them unless
//! `FLUXGATE_TEST_REQUIRE_BROWSER=1`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use fluxgate_domain::Role;
use fluxgate_proto::v1 as pb;
use fluxgate_server::config::{OidcGroupMapping, OidcProvider};

use crate::harness::{ADMIN_PASSWORD, Backend, TestServer, free_port};

/// The fluxctl binary beside this test's (both in the target directory's profile folder).
fn fluxctl() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("fluxctl"))
        .unwrap()
}

/// The Python with Playwright and oidc-provider-mock, Chromium and fluxctl; or `None` (after
/// saying why) when something is missing and the browser tests are not required.
fn tools() -> Option<String> {
    let python = std::env::var("FLUXGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_python = Command::new(&python)
        .args([
            "-c",
            "import playwright, oidc_provider_mock, joserfc, httpx, grpc_tools",
        ])
        .status()
        .is_ok_and(|s| s.success());
    let chromium = std::env::var_os("FLUXGATE_TEST_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    let why = if !has_python {
        format!("{python} with playwright and oidc-provider-mock (tests/support/requirements.txt)")
    } else if !chromium.exists() {
        format!("Chromium at {}", chromium.display())
    } else if !fluxctl().exists() {
        format!(
            "the fluxctl binary at {} (cargo build -p fluxctl)",
            fluxctl().display()
        )
    } else {
        return Some(python);
    };
    if std::env::var("FLUXGATE_TEST_REQUIRE_BROWSER").is_ok_and(|v| v == "1" || v == "true") {
        panic!("SSO tests required (FLUXGATE_TEST_REQUIRE_BROWSER=1): {why} is needed");
    }
    eprintln!("\n*** SKIPPING SSO test: {why} is needed.\n");
    None
}

fn providers(mock_port: u16, hostile_port: u16) -> Vec<OidcProvider> {
    let mock = OidcProvider {
        id: "mock".into(),
        display_name: "Mock IdP".into(),
        issuer: format!("http://127.0.0.1:{mock_port}"),
        client_id: "fluxgate".into(),
        client_secret: Some("mock-client-secret".into()),
        create_users: true,
        default_role: Role::Requester,
        role_claim: Some("roles".into()),
        role_map: BTreeMap::from([("fluxgate-approver".into(), Role::Approver)]),
        groups_claim: Some("groups".into()),
        group_map: vec![OidcGroupMapping {
            claim: "payments-approvers".into(),
            portfolio: "Payments".into(),
            group: "Approvers".into(),
        }],
        ..OidcProvider::default()
    };
    let hostile = OidcProvider {
        id: "hostile".into(),
        display_name: "Hostile IdP".into(),
        issuer: format!("http://127.0.0.1:{hostile_port}"),
        client_id: "fluxgate".into(),
        client_secret: Some("hostile-client-secret-0123456789abcdef".into()),
        link_by_email: true,
        create_users: false,
        role_claim: Some("roles".into()),
        role_map: BTreeMap::from([("admins".into(), Role::TeamAdmin)]),
        ..OidcProvider::default()
    };
    vec![mock, hostile]
}

async fn sign_in_through_identity_providers(b: Backend) {
    let Some(python) = tools() else {
        return;
    };
    let (mock_port, hostile_port) = (free_port(), free_port());
    let s = TestServer::start_configured(b, |c| {
        c.oidc.providers = providers(mock_port, hostile_port);
    })
    .await;
    let admin = s.admin_token().await;
    let payments = s.portfolio(&admin, "Payments").await;
    let approvers = s
        .group(&admin, &payments.name, "Approvers", vec![], vec![])
        .await;
    s.create_user(&admin, "carol", pb::Role::Requester, "Carol-Pass-1234")
        .await;

    let shots = tempfile::tempdir().unwrap();
    let args: Vec<String> = vec![
        format!("http://{}", s.addr),
        s.channel_addr(),
        ADMIN_PASSWORD.into(),
        mock_port.to_string(),
        hostile_port.to_string(),
        fluxctl().display().to_string(),
        shots.path().display().to_string(),
    ];
    crate::harness::run_support_script(python, "sso_test.py", args, "sso: ok").await;

    // The audit trail has every step.
    let events = s.audit_events();
    let with = |action: &str, words: &str| {
        events
            .iter()
            .filter(|e| e.action == action && e.detail.as_deref().unwrap_or("").contains(words))
            .count()
    };
    assert!(with("user.created", "created at first sign-in through mock") == 2);
    assert!(
        with("auth.sso_login", "through mock") >= 3,
        "alice twice, bob"
    );
    assert!(with("auth.sso_login", "through hostile") >= 3);
    assert_eq!(
        with("user.identity_linked", "by verified email"),
        2,
        "carol, admin"
    );
    assert_eq!(
        with("user.identity_linked", "to a new account"),
        2,
        "alice, bob"
    );
    assert_eq!(
        with(
            "user.updated",
            "role approver -> requester from mock claims"
        ),
        1
    );
    assert_eq!(
        with("user.updated", "not applied: the last active Team Admin"),
        1
    );
    let group = |action: &str| {
        events
            .iter()
            .filter(|e| {
                e.action == action
                    && e.target_id.as_deref() == Some(approvers.name.as_str())
                    && e.detail
                        .as_deref()
                        .unwrap_or("")
                        .contains("from mock claims")
            })
            .count()
    };
    assert_eq!(group("group.member_added"), 1);
    assert_eq!(group("group.member_removed"), 1);
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e.action == "auth.sso_failed")
        .map(|e| e.detail.clone().unwrap_or_default())
        .collect();
    for words in [
        "audience",
        "expired",
        "nonce",
        "another issuer",
        "does not publish",
        "HS256",
        "none",
        "access_denied",
        "mix-up",
        "wrong state",
        "not started in this browser",
        "already used",
        "refused the authorization code",
        "came back to provider",
        "not say the email is verified",
        "deactivated",
        "another verifier (PKCE)",
    ] {
        assert!(
            refused.iter().any(|d| d.contains(words)),
            "no audited refusal saying {words:?} in {refused:#?}"
        );
    }
    assert!(
        events
            .iter()
            .all(|e| e.outcome != "failure" || e.action != "auth.sso_login")
    );
    s.stop().await;
}

/// One GET over HTTP/1.1, its whole answer (head and body) as text.
async fn http_get(addr: std::net::SocketAddr, path: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut st = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    st.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    st.read_to_end(&mut raw).await.unwrap();
    String::from_utf8_lossy(&raw).into_owned()
}

/// The two legs refuse bad input with a clear 4xx, and name no provider they do not know.
async fn the_legs_validate_their_input(b: Backend) {
    let s = TestServer::start_configured(b, |c| {
        c.oidc.providers = providers(free_port(), free_port());
    })
    .await;
    let get = |path: String| http_get(s.addr, path);
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let r = get("/sso/nobody/start?code_challenge=x".into()).await;
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    let r = get("/sso/mock/start".into()).await;
    assert!(
        r.starts_with("HTTP/1.1 400") && r.contains("code_challenge"),
        "{r}"
    );
    let r = get(format!(
        "/sso/mock/start?code_challenge={challenge}&redirect_uri=https://evil.example/"
    ))
    .await;
    assert!(
        r.starts_with("HTTP/1.1 400") && r.contains("loopback"),
        "{r}"
    );
    // The provider is down: said plainly, nothing stored.
    let r = get(format!("/sso/mock/start?code_challenge={challenge}")).await;
    assert!(
        r.starts_with("HTTP/1.1 502") && r.contains("cannot be reached"),
        "{r}"
    );
    // A callback nobody started: back to the console with the reason, audited.
    let r = get("/sso/mock/callback?code=abc&state=nothing-pending".into()).await;
    assert!(r.starts_with("HTTP/1.1 303"), "{r}");
    assert!(r.contains("/sso/done?error="), "{r}");
    let r = get("/sso/mock/callback".into()).await;
    assert!(r.starts_with("HTTP/1.1 303") && r.contains("error="), "{r}");
    // The API: the one-time code and verifier are checked before anything is looked up.
    let e = s
        .auth()
        .complete_sso_sign_in(pb::CompleteSsoSignInRequest {
            code: String::new(),
            code_verifier: "short".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = s
        .auth()
        .complete_sso_sign_in(pb::CompleteSsoSignInRequest {
            code: "no-such-code".into(),
            code_verifier: "v".repeat(43),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let list = s
        .auth()
        .list_sso_providers(pb::ListSsoProvidersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.providers.len(), 2);
    assert_eq!(list.providers[1].display_name, "Hostile IdP");
    assert!(!list.password_sign_in_disabled);
    s.stop().await;
}

crate::both_backends!(
    sign_in_through_identity_providers,
    the_legs_validate_their_input
);
