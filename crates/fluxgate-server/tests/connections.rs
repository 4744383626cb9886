//! Idle connections cannot lock clients out (the review found 1,100 silent TCP connections, under
//! the common 1,024 open-file limit, refusing every new client while they stayed open). The
//! server runs under a low open-file limit that it cannot raise; more silent connections than the
//! limit allows are opened; a real client still gets in, and the silent ones are closed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{BIN, Running, command};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::auth_service_client::AuthServiceClient;

/// `fluxgate serve` under `ulimit -n 200` (soft and hard: the server cannot raise it).
fn serve_low_limit(db: &str) -> Running {
    // The environment `command` gives the binary, on a shell that lowers the limit first.
    let c = command(db, &[]);
    let mut bash = std::process::Command::new("bash");
    bash.args(["-c", &format!("ulimit -n 200 && exec {BIN} serve")]);
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => bash.env(k, v),
            None => bash.env_remove(k),
        };
    }
    bash.env("FLUXGATE_BOOTSTRAP_PASSWORD", "Bootstrap-Pass-1")
        .env("FLUXGATE_HANDSHAKE_TIMEOUT_MS", "3000");
    bash.stderr(std::process::Stdio::null());
    common::spawn_serving(bash)
}

fn silent_connections_do_not_lock_clients_out(db: &str) {
    let server = serve_low_limit(db);
    let addr = server.addr.clone();
    // More silent connections than the server has descriptors.
    let mut silent = Vec::new();
    for _ in 0..300 {
        if let Ok(s) = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2)) {
            silent.push(s);
        }
    }
    assert!(silent.len() >= 250, "{} connections opened", silent.len());

    // A real client gets in, while the silent ones are still open.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let logged_in = rt.block_on(async {
        loop {
            let attempt = async {
                let mut c = AuthServiceClient::connect(format!("http://{addr}"))
                    .await
                    .ok()?;
                c.login(pb::LoginRequest {
                    username: "admin".into(),
                    password: "Bootstrap-Pass-1".into(),
                    ..Default::default()
                })
                .await
                .ok()
            };
            if let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(5), attempt).await {
                return Some(r);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    assert!(
        logged_in.is_some(),
        "a client got in past the silent connections"
    );

    // The silent connections are closed by the server (evicted, or past the handshake timeout).
    let mut closed = 0;
    for s in silent.iter_mut().take(20) {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Ok(0) | Err(_) => closed += 1,
            Ok(_) => {}
        }
    }
    assert_eq!(closed, 20, "silent connections are closed");
    server.terminate();
}

#[test]
fn silent_connections_do_not_lock_clients_out_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    silent_connections_do_not_lock_clients_out(&format!(
        "sqlite://{}",
        dir.path().join("fg.db").display()
    ));
}

#[test]
fn silent_connections_do_not_lock_clients_out_on_postgres() {
    if let Some(schema) = fluxgate_store::testing::fresh_postgres() {
        silent_connections_do_not_lock_clients_out(&schema.url);
    }
}
