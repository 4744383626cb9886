//! fluxctl over TLS, and over mutual TLS, with certificates made by rcgen.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{ADMIN, ADMIN_PASSWORD, Backend, Operator, TestServer};
use fluxgate_e2e::pki::{Pki, write};

fn tls_server(b: Backend, pki: &Pki, certs: &Path, client_ca: bool) -> TestServer {
    let (cert, key) = pki.issue("localhost");
    let cert = write(certs, "server.pem", &cert);
    let key = write(certs, "server.key", &key);
    let ca = write(certs, "ca.pem", &pki.ca_pem);
    TestServer::start_with(b, move |config, _| {
        config.tls.cert_path = Some(cert);
        config.tls.key_path = Some(key);
        if client_ca {
            config.tls.client_ca_path = Some(ca);
        }
    })
}

fn logs_in_over_tls_with_the_ca_certificate(b: Backend) {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new("FluxGate test CA");
    let server = tls_server(b, &pki, certs.path(), false);
    assert!(server.url.starts_with("https://"));
    let ca = certs.path().join("ca.pem");

    let untrusting = Operator::new(&server.url, certs.path(), "untrusting");
    let refused = untrusting.login(ADMIN, ADMIN_PASSWORD);
    assert_eq!(refused.code, 7, "{refused:?}");
    assert!(refused.stderr.contains("certificate"), "{refused:?}");
    assert!(!untrusting.session.exists());

    let admin = Operator::new(&server.url, certs.path(), "admin")
        .with_env("FLUXGATE_CA_CERT", ca.to_str().unwrap());
    admin.login(ADMIN, ADMIN_PASSWORD).ok();
    let who = admin.run(&["-o", "json", "whoami"]).json();
    assert_eq!(who["role"], "ROLE_TEAM_ADMIN");
    // The flag works as well as the variable.
    let flagged = Operator::new(&server.url, certs.path(), "admin");
    let who = flagged.run(&["--ca-cert", ca.to_str().unwrap(), "whoami"]);
    assert!(who.ok().contains("team_admin"), "{who:?}");
}

fn presents_a_client_certificate_for_mutual_tls(b: Backend) {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new("FluxGate test CA");
    let server = tls_server(b, &pki, certs.path(), true);
    let ca = certs.path().join("ca.pem");
    let (cert, key) = pki.issue("fluxctl");
    let cert = write(certs.path(), "client.pem", &cert);
    let key = write(certs.path(), "client.key", &key);

    let anonymous = Operator::new(&server.url, certs.path(), "anonymous")
        .with_env("FLUXGATE_CA_CERT", ca.to_str().unwrap());
    assert_ne!(anonymous.login(ADMIN, ADMIN_PASSWORD).code, 0);

    let admin = anonymous
        .with_env("FLUXGATE_CLIENT_CERT", cert.to_str().unwrap())
        .with_env("FLUXGATE_CLIENT_KEY", key.to_str().unwrap());
    admin.login(ADMIN, ADMIN_PASSWORD).ok();
    admin.run(&["whoami"]).ok();
}

crate::both_backends!(
    logs_in_over_tls_with_the_ca_certificate,
    presents_a_client_certificate_for_mutual_tls
);
