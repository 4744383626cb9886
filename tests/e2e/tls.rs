//! TLS: with a certificate and key the server speaks only TLS; with a client CA it also demands
//! a client certificate signed by that CA. Certificates are made for the test with rcgen.

use std::path::Path;

use fluxgate_e2e::pki::{Pki, write};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::auth_service_client::AuthServiceClient;
use fluxgate_server::Server;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::harness::{ADMIN, ADMIN_PASSWORD, Backend, test_config};

/// Starts a server with TLS (and, when `client_ca`, client certificates required); returns its
/// address.
async fn start_tls(
    b: &Backend,
    pki: &Pki,
    client_ca: bool,
    certs: &Path,
) -> (std::net::SocketAddr, Option<tempfile::TempDir>) {
    let (mut config, dir) = test_config(b);
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

async fn login(ch: Channel) -> Result<(), tonic::Status> {
    AuthServiceClient::new(ch)
        .login(pb::LoginRequest {
            username: ADMIN.into(),
            password: ADMIN_PASSWORD.into(),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

async fn channel(addr: std::net::SocketAddr, tls: Option<ClientTlsConfig>) -> Option<Channel> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut ep = Channel::from_shared(format!("{scheme}://{addr}")).unwrap();
    if let Some(tls) = tls {
        ep = ep.tls_config(tls).unwrap();
    }
    ep.connect().await.ok()
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
    let trusting = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    assert!(
        works(addr, Some(trusting)).await,
        "a client trusting the CA gets through"
    );
    assert!(!works(addr, None).await, "plaintext is refused");
    let stranger = Pki::new("Another CA");
    let distrusting = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&stranger.ca_pem))
        .domain_name("localhost");
    assert!(
        !works(addr, Some(distrusting)).await,
        "an unknown server certificate is refused"
    );
}

async fn requires_client_certificates(b: Backend) {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new("FluxGate test CA");
    let (addr, _dir) = start_tls(&b, &pki, true, certs.path()).await;
    let base = || {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pki.ca_pem))
            .domain_name("localhost")
    };
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

crate::both_backends!(serves_over_tls, requires_client_certificates);
