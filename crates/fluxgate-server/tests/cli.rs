//! The `fluxgate` binary as an operator runs it: first start prints the bootstrap admin's
//! password once, SIGTERM stops it gracefully, `migrate` and `admin reset-password` work
//! against the configured database. On SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Running, command, serve};

use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::auth_service_client::AuthServiceClient;

impl Running {
    fn password(&self) -> Option<String> {
        self.stdout
            .iter()
            .find_map(|l| l.trim().strip_prefix("password: ").map(str::to_owned))
    }

    fn login(&self, username: &str, password: &str) -> Result<pb::LoginResponse, tonic::Status> {
        let addr = format!("http://{}", self.addr);
        let (u, p) = (username.to_owned(), password.to_owned());
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move {
                let mut c = AuthServiceClient::connect(addr).await.unwrap();
                c.login(pb::LoginRequest {
                    username: u,
                    password: p,
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner())
            })
    }
}

fn operator_flow(db: &str) {
    let migrated = command(db, &["migrate"]).output().unwrap();
    assert!(migrated.status.success());
    let shipped = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../migrations/sqlite"
    ))
    .unwrap()
    .count();
    let out = String::from_utf8_lossy(&migrated.stdout);
    assert!(
        out.contains(&format!("{shipped} migration(s) applied")),
        "{out}"
    );

    // First start: the bootstrap admin, with a generated password shown once.
    let first = serve(db);
    let password = first.password().expect("bootstrap password printed");
    let l = first.login("admin", &password).unwrap();
    assert!(l.user.unwrap().must_change_password);
    first.terminate();

    // Later starts never recreate it nor print a password.
    let second = serve(db);
    assert_eq!(second.password(), None, "{:?}", second.stdout);
    second.login("admin", &password).unwrap();

    // Break-glass recovery on the host, while the server runs: a new temporary password; the
    // running server honours it (and the old password stops working) without a restart.
    let out = command(db, &["admin", "reset-password", "--username", "admin"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let temp = text
        .split_whitespace()
        .skip_while(|w| *w != "\"admin\":")
        .nth(1)
        .expect("temporary password printed")
        .to_owned();
    second.login("admin", &temp).unwrap();
    assert_eq!(
        second.login("admin", &password).unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    second.terminate();

    let unknown = command(db, &["admin", "reset-password", "--username", "nobody"])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no user named"));
}

#[test]
fn operator_flow_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("fg.db").display());
    operator_flow(&db);
}

#[test]
fn operator_flow_on_postgres() {
    if let Some(schema) = fluxgate_store::testing::fresh_postgres() {
        operator_flow(&schema.url);
    }
}

#[test]
fn bad_configuration_is_reported() {
    let out = command("mysql://nowhere/db", &["migrate"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported database url"));
}

/// The review's finding: on a fresh database, a start whose port was taken wrote the bootstrap
/// admin and then failed to bind, so its password was never printed. The port is bound first.
fn busy_port_keeps_the_bootstrap(db: &str) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = command(db, &["serve"])
        .env("FLUXGATE_LISTEN", &addr)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("password:"));
    drop(taken);
    // The next start is still the first: it creates the admin and prints the password.
    let first = serve(db);
    let password = first.password().expect("bootstrap password printed");
    first.login("admin", &password).unwrap();
    first.terminate();
}

#[test]
fn busy_port_keeps_the_bootstrap_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    busy_port_keeps_the_bootstrap(&format!("sqlite://{}", dir.path().join("fg.db").display()));
}

#[test]
fn busy_port_keeps_the_bootstrap_on_postgres() {
    if let Some(schema) = fluxgate_store::testing::fresh_postgres() {
        busy_port_keeps_the_bootstrap(&schema.url);
    }
}

/// A SQLite path in a folder that does not exist: one clear sentence, not a pool's retries.
#[test]
fn missing_sqlite_folder_is_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("nope/fg.db").display());
    let out = command(&db, &["serve"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");
    assert!(err.lines().count() <= 3, "{err}");
}
