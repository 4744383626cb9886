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

/// `admin backup` copies a running server's SQLite database; a server started on the copy has
/// everything written before it (users, the audit chain) and nothing after.
#[test]
fn sqlite_online_backup_restores() {
    use fluxgate_proto::v1::audit_service_client::AuditServiceClient;
    use fluxgate_proto::v1::user_service_client::UserServiceClient;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("fg.db").display());
    let running = serve(&db);
    // A permanent password for the bootstrap admin, set on the host.
    let mut reset = command(
        &db,
        &[
            "admin",
            "reset-password",
            "--username",
            "admin",
            "--password-stdin",
        ],
    )
    .stdin(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    std::io::Write::write_all(reset.stdin.as_mut().unwrap(), b"Backup-admin-pass-1\n").unwrap();
    assert!(reset.wait().unwrap().success());
    let token = running
        .login("admin", "Backup-admin-pass-1")
        .unwrap()
        .tokens
        .unwrap()
        .access_token;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let create = |addr: String, name: &'static str| {
        let token = token.clone();
        rt.block_on(async move {
            let mut c = UserServiceClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            let mut req = tonic::Request::new(pb::CreateUserRequest {
                user: Some(pb::User {
                    username: name.into(),
                    email: format!("{name}@example.com"),
                    display_name: name.into(),
                    role: pb::Role::Requester as i32,
                    ..Default::default()
                }),
                initial_password: "Backup-user-pass-1".into(),
                require_password_change: false,
            });
            req.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            c.create_user(req).await.map(|_| ())
        })
    };
    create(running.addr.clone(), "before").unwrap();

    // The copy, taken while the server runs.
    let copy = dir.path().join("copy.db");
    let out = command(&db, &["admin", "backup", "--to", copy.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    create(running.addr.clone(), "after").unwrap();
    // An existing file is never overwritten.
    let again = command(&db, &["admin", "backup", "--to", copy.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    running.terminate();

    // Restoring is starting on the copy.
    let restored = serve(&format!("sqlite://{}", copy.display()));
    assert_eq!(
        restored.password(),
        None,
        "the copy is bootstrapped already"
    );
    let token = restored
        .login("admin", "Backup-admin-pass-1")
        .unwrap()
        .tokens
        .unwrap()
        .access_token;
    let addr = format!("http://{}", restored.addr);
    rt.block_on(async move {
        let mut users = UserServiceClient::connect(addr.clone()).await.unwrap();
        for (name, present) in [("before", true), ("after", false)] {
            let mut req = tonic::Request::new(pb::GetUserRequest {
                name: format!("users/{name}"),
            });
            req.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            assert_eq!(users.get_user(req).await.is_ok(), present, "{name}");
        }
        let mut audit = AuditServiceClient::connect(addr).await.unwrap();
        let mut req = tonic::Request::new(pb::VerifyAuditChainRequest::default());
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let v = audit.verify_audit_chain(req).await.unwrap().into_inner();
        assert!(v.valid && v.events_checked > 0, "{v:?}");
    });
    restored.terminate();
}

/// PostgreSQL copies are pg_dump's job: `admin backup` says so.
#[test]
fn backup_of_postgres_points_to_pg_dump() {
    let Some(schema) = fluxgate_store::testing::fresh_postgres() else {
        return;
    };
    let out = command(
        &schema.url,
        &["admin", "backup", "--to", "/tmp/never-written.db"],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pg_dump"));
}
