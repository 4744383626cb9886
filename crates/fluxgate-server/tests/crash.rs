//! Crash safety: `kill -9` the server in the middle of a write load, start it again on the same
//! database, and check that every acknowledged write is there, that nothing is half-written
//! (each user has exactly its one creation event, groups and memberships agree), and that the
//! audit chain verifies. On SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Running, authed, serve_with};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::audit_service_client::AuditServiceClient;
use fluxgate_proto::v1::auth_service_client::AuthServiceClient;
use fluxgate_proto::v1::user_service_client::UserServiceClient;
use tonic::transport::Channel;

const ADMIN_PW: &str = "Bootstrap-Pass-1";

async fn connect(r: &Running) -> (Channel, String) {
    let ch = Channel::from_shared(format!("http://{}", r.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let token = AuthServiceClient::new(ch.clone())
        .login(pb::LoginRequest {
            username: "admin".into(),
            password: ADMIN_PW.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;
    (ch, token)
}

async fn all_usernames(ch: &Channel, token: &str) -> BTreeSet<String> {
    let mut users = UserServiceClient::new(ch.clone());
    let mut out = BTreeSet::new();
    let mut page_token = String::new();
    loop {
        let r = users
            .list_users(authed(
                pb::ListUsersRequest {
                    page_size: 1000,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner();
        out.extend(r.users.into_iter().map(|u| u.username));
        if r.next_page_token.is_empty() {
            return out;
        }
        page_token = r.next_page_token;
    }
}

async fn crash_during_writes(db: &str) {
    let env = [("FLUXGATE_BOOTSTRAP_PASSWORD", ADMIN_PW)];
    let mut server = serve_with(db, &env);
    let (ch, token) = connect(&server).await;

    // Four writers create users as fast as they can; each records what was acknowledged.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (ch, token, acked) = (ch.clone(), token.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut users = UserServiceClient::new(ch);
            for i in 0.. {
                let name = format!("w{w}u{i}");
                let r = users
                    .create_user(authed(
                        pb::CreateUserRequest {
                            user: Some(pb::User {
                                username: name.clone(),
                                email: format!("{name}@example.com"),
                                display_name: name.clone(),
                                role: pb::Role::Requester as i32,
                                ..Default::default()
                            }),
                            initial_password: "Crash-pass-123".into(),
                            require_password_change: false,
                        },
                        &token,
                    ))
                    .await;
                match r {
                    Ok(_) => {
                        acked.lock().unwrap().insert(name);
                    }
                    // The server is gone: stop.
                    Err(_) => return,
                }
            }
        }));
    }
    // Let the load run, then kill the process outright (SIGKILL: no shutdown of any kind).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "the load made progress: {}", acked.len());

    // Start again on the same database.
    let server = serve_with(db, &env);
    let (ch, token) = connect(&server).await;
    let stored = all_usernames(&ch, &token).await;
    let missing: Vec<_> = acked.difference(&stored).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    // At most one creation per writer was in flight when the process died; it either committed
    // whole or not at all.
    let unacked: Vec<_> = stored
        .iter()
        .filter(|u| u.starts_with('w') && !acked.contains(*u))
        .collect();
    assert!(unacked.len() <= 4, "{unacked:?}");

    // Nothing half-written: the chain verifies, and every stored user has its creation event.
    let mut audit = AuditServiceClient::new(ch.clone());
    let v = audit
        .verify_audit_chain(authed(pb::VerifyAuditChainRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid, "{v:?}");
    let mut created = BTreeSet::new();
    let mut page_token = String::new();
    loop {
        let r = audit
            .list_audit_events(authed(
                pb::ListAuditEventsRequest {
                    page_size: 1000,
                    page_token: page_token.clone(),
                    action: "user.created".into(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner();
        created.extend(r.events.into_iter().map(|e| e.target));
        if r.next_page_token.is_empty() {
            break;
        }
        page_token = r.next_page_token;
    }
    // (The bootstrap admin's creation is recorded too.)
    assert_eq!(
        created.len(),
        stored.len(),
        "one creation event per stored user, and none for a user that is not there"
    );
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_writes_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    crash_during_writes(&format!(
        "sqlite://{}",
        dir.path().join("crash.db").display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_writes_on_postgres() {
    if let Some(schema) = fluxgate_store::testing::fresh_postgres() {
        crash_during_writes(&schema.url).await;
    }
}
