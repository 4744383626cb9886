//! TLS: with a certificate and key the server speaks only TLS; with a client CA it also demands
//! a client certificate signed by that CA. Certificates are made for the test with rcgen.

use std::path::Path;

use fluxgate_e2e::pki::{Pki, write};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::auth_service_client::AuthServiceClient;
use fluxgate_server::Server;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::harness::{ADMIN, ADMIN_PASSWORD, Backend, authed, service_account_key, test_config};

/// Starts a server with TLS (and, when `client_ca`, client certificates required); returns its
/// address.
async fn start_tls(
    b: &Backend,
    pki: &Pki,
    client_ca: bool,
    certs: &Path,
) -> (std::net::SocketAddr, Option<tempfile::TempDir>) {
    start_tls_with(b, pki, client_ca, certs, |_| {}).await
}

async fn start_tls_with(
    b: &Backend,
    pki: &Pki,
    client_ca: bool,
    certs: &Path,
    tweak: impl FnOnce(&mut fluxgate_server::Config),
) -> (std::net::SocketAddr, Option<tempfile::TempDir>) {
    let (mut config, dir) = test_config(b);
    tweak(&mut config);
    let (cert, key) = pki.issue("localhost");
    config.tls.cert_path = Some(write(certs, "server.pem", &cert));
    config.tls.key_path = Some(write(certs, "server.key", &key));
    if client_ca {
        config.tls.client_ca_path = Some(write(certs, "ca.pem", &pki.ca_pem));
    }
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.run(std::future::pending()));
    (addr, dir)
}

/// Logs the admin in; the access token.
async fn login(ch: Channel) -> Result<String, tonic::Status> {
    let r = AuthServiceClient::new(ch)
        .login(pb::LoginRequest {
            username: ADMIN.into(),
            password: ADMIN_PASSWORD.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(r.tokens.unwrap_or_default().access_token)
}

async fn channel(addr: std::net::SocketAddr, tls: Option<ClientTlsConfig>) -> Option<Channel> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut ep = Channel::from_shared(format!("{scheme}://{addr}")).unwrap();
    if let Some(tls) = tls {
        ep = ep.tls_config(tls).unwrap();
    }
    ep.connect().await.ok()
}

/// A client's TLS settings, trusting `pki`'s CA for `localhost`.
fn trusting(pki: &Pki) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost")
}

/// The `peer` of each audit event with `action` (by `actor`, when not empty).
async fn audit_peers(ch: Channel, token: &str, action: &str, actor: &str) -> Vec<String> {
    fluxgate_proto::v1::audit_service_client::AuditServiceClient::new(ch)
        .list_audit_events(authed(
            pb::ListAuditEventsRequest {
                action: action.into(),
                actor: actor.into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .events
        .into_iter()
        .map(|e| e.peer)
        .collect()
}

/// Connects and logs in; `false` when the connection or the call is refused.
async fn works(addr: std::net::SocketAddr, tls: Option<ClientTlsConfig>) -> bool {
    match channel(addr, tls).await {
        Some(ch) => login(ch).await.is_ok(),
        None => false,
    }
}

async fn serves_over_tls(b: Backend) {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new("FluxGate test CA");
    let (addr, _dir) = start_tls(&b, &pki, false, certs.path()).await;
    assert!(
        works(addr, Some(trusting(&pki))).await,
        "a client trusting the CA gets through"
    );
    // The peer's address reaches the audit trail through TLS as it does without.
    let ch = channel(addr, Some(trusting(&pki))).await.unwrap();
    let token = login(ch.clone()).await.unwrap();
    let peers = audit_peers(ch, &token, "auth.login", "").await;
    assert!(!peers.is_empty());
    for p in &peers {
        assert!(p.starts_with("127.0.0.1:"), "{p:?}");
    }
    assert!(!works(addr, None).await, "plaintext is refused");
    let stranger = Pki::new("Another CA");
    let distrusting = trusting(&stranger);
    assert!(
        !works(addr, Some(distrusting)).await,
        "an unknown server certificate is refused"
    );
}

async fn requires_client_certificates(b: Backend) {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new("FluxGate test CA");
    let (addr, _dir) = start_tls(&b, &pki, true, certs.path()).await;
    let base = || trusting(&pki);
    assert!(
        !works(addr, Some(base())).await,
        "no client certificate: refused"
    );
    let (cert, key) = pki.issue("flag-store");
    assert!(
        works(addr, Some(base().identity(Identity::from_pem(&cert, &key)))).await,
        "a client certificate from the CA gets through"
    );
    let (cert, key) = Pki::new("Another CA").issue("intruder");
    assert!(
        !works(addr, Some(base().identity(Identity::from_pem(&cert, &key)))).await,
        "a client certificate from another CA is refused"
    );
}

/// Over TLS, an HTTP/1.1-only client (ALPN `http/1.1`, as reqwest without HTTP/2 offers) gets
/// through to SCIM, and the request's audit event names the peer, as a gRPC call's does.
async fn scim_over_tls_speaks_http1_and_names_the_peer(b: Backend) {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new("FluxGate test CA");
    let (addr, _dir) = start_tls(&b, &pki, false, certs.path()).await;
    let ch = channel(addr, Some(trusting(&pki))).await.unwrap();
    let admin = login(ch.clone()).await.unwrap();
    let (key, account) = service_account_key(ch.clone(), &admin, true).await;

    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let created = https
        .post(format!("https://localhost:{}/scim/v2/Users", addr.port()))
        .bearer_auth(&key)
        .header("content-type", "application/scim+json")
        .body(r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"tls-ann"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{:?}", created.text().await);

    let peers = audit_peers(ch, &admin, "user.created", &account).await;
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert!(peers[0].starts_with("127.0.0.1:"), "{peers:?}");
}

crate::both_backends!(
    serves_over_tls,
    requires_client_certificates,
    scim_over_tls_speaks_http1_and_names_the_peer,
    a_stalled_tls_handshake_is_closed
);

/// A client that starts a TLS handshake and stalls is closed at the handshake timeout, and
/// others get through meanwhile.
async fn a_stalled_tls_handshake_is_closed(b: Backend) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new("FluxGate test CA");
    let (addr, _dir) = start_tls_with(&b, &pki, false, certs.path(), |c| {
        c.handshake_timeout_ms = 300;
    })
    .await;
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The first bytes of a TLS record holding a ClientHello, and nothing more.
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    assert!(
        works(addr, Some(trusting(&pki))).await,
        "others get through"
    );
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), stalled.read(&mut buf))
        .await
        .expect("closed well before 10 s");
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "closed without an answer: {read:?}"
    );
}
