//! PostgreSQL goes away during a write load and comes back: while it is away, calls that need
//! it answer UNAVAILABLE (never INTERNAL) and permission checks keep answering from memory;
//! once it is back, full service resumes without restarting FluxGate, and no acknowledged write
//! is lost. The outage is a TCP proxy between FluxGate and PostgreSQL that the test cuts (every
//! open connection dropped, new ones refused) and restores, so the shared server is untouched.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fluxgate_proto::v1 as pb;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic::Code;

use crate::harness::{Backend, TestServer, authed};

/// Forwards 127.0.0.1:<port> to PostgreSQL until cut.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    /// Bumped on every cut: live connections end when they see it change.
    cuts: watch::Sender<u64>,
}

impl Proxy {
    async fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (cuts, _) = watch::channel(0u64);
        let (up2, cuts2, target) = (up.clone(), cuts.clone(), target.to_owned());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cut = cuts2.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy { port, up, cuts }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// PostgreSQL only: SQLite has no server to lose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_and_recovery() {
    let Some(b) = Backend::postgres() else {
        return;
    };
    let Backend::Postgres(schema) = &b else {
        unreachable!("Backend::postgres gives a PostgreSQL backend");
    };
    // The schema's URL, through the proxy.
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let url = schema
        .url
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port));
    assert_ne!(url, schema.url, "the test URL names 127.0.0.1:5432");
    let s = TestServer::start_configured(b.clone(), |c| {
        c.database_url = url;
        c.database_pool_size = 4;
    })
    .await;
    let admin = s.admin_token().await;
    let p = s.portfolio(&admin, "Payments").await;
    let app = s.application(&admin, &p.name, "Checkout").await;
    let env = s.environment(&admin, &app.name, "production").await;

    // One writer creates users throughout; it records what was acknowledged and every code.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let codes = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, codes, stop, admin) =
            (acked.clone(), codes.clone(), stop.clone(), admin.clone());
        let mut users = s.users();
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let name = format!("load{i}");
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
                            initial_password: "Outage-pass-123".into(),
                            require_password_change: false,
                        },
                        &admin,
                    ))
                    .await;
                match r {
                    Ok(_) => {
                        acked.lock().unwrap().insert(name);
                    }
                    Err(st) => {
                        codes.lock().unwrap().push(st.code());
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    proxy.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Reads that need the database: UNAVAILABLE, never INTERNAL.
    let r = s
        .users()
        .list_users(authed(pb::ListUsersRequest::default(), &admin))
        .await;
    assert_eq!(r.unwrap_err().code(), Code::Unavailable);
    // Permission checks are answered from memory, database or not.
    let d = s.check(&admin, "", pb::Permission::Read, &env.name).await;
    assert!(d.allowed);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    proxy.restore();
    let back = Instant::now();
    loop {
        let r = s
            .users()
            .list_users(authed(pb::ListUsersRequest::default(), &admin))
            .await;
        if r.is_ok() {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "service did not resume: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = acked.lock().unwrap().len();
    // Writes resume too.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < before + 5 {
        assert!(Instant::now() < deadline, "writes did not resume");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();

    let codes = codes.lock().unwrap().clone();
    assert!(!codes.is_empty(), "the outage was felt");
    assert!(
        codes.iter().all(|c| *c == Code::Unavailable),
        "failed writes answer UNAVAILABLE only: {codes:?}"
    );

    // Every acknowledged write is there, and the audit chain is whole.
    let stored: BTreeSet<String> = s
        .store()
        .read(fluxgate_store::users::all)
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    let acked = acked.lock().unwrap().clone();
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    let v = s
        .audit()
        .verify_audit_chain(authed(pb::VerifyAuditChainRequest {}, &admin))
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid, "{v:?}");
}
