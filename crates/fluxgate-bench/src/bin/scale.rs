//! FluxGate at scale: 100,000 users, 10,000 groups and 1,000,000 audit events, against the same
//! at 1% of that size, on a real `fluxgate` server process (the release binary beside this one).
//!
//! For each size: seed the database directly through the store, start the server and time it
//! to its first answered Login, run each list and query page 25 times over gRPC (median), and
//! read the server's peak RSS (`VmHWM`) at the end.
//!
//! `scale [--backend sqlite|postgres] [--users 100000] [--groups 10000] [--events 1000000]`

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fluxgate_bench::support::{arg, login, service_account_key, with};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::audit_service_client::AuditServiceClient;
use fluxgate_proto::v1::group_service_client::GroupServiceClient;
use fluxgate_proto::v1::user_service_client::UserServiceClient;
use fluxgate_store::audit::{self, NewEvent};
use fluxgate_store::catalog::{self, Item, Kind};
use fluxgate_store::{PoolOptions, Store, StoreError, groups, now_micros, users};
use tonic::transport::Channel;

const ADMIN_PW: &str = "Scale-admin-pass-1";

struct Size {
    users: usize,
    groups: usize,
    events: usize,
}

/// A running server process.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the release binary and waits for its "listening" line.
    fn start(url: &str) -> anyhow::Result<Server> {
        let bin = std::env::current_exe()?.with_file_name("fluxgate");
        anyhow::ensure!(
            bin.exists(),
            "{} is missing: cargo build --release -p fluxgate-server --bin fluxgate",
            bin.display()
        );
        let mut child = Command::new(bin)
            .arg("serve")
            .env("FLUXGATE_DATABASE_URL", url)
            .env("FLUXGATE_LISTEN", "127.0.0.1:0")
            .env("FLUXGATE_BOOTSTRAP_PASSWORD", ADMIN_PW)
            .env("FLUXGATE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = BufReader::new(out).lines();
        let addr = loop {
            let line = lines
                .next()
                .ok_or_else(|| anyhow::anyhow!("the server exited"))??;
            if let Some(a) = line.strip_prefix("FluxGate listening on ") {
                break a.to_owned();
            }
        };
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Ok(Server { child, addr })
    }

    /// Peak and current resident memory in MiB.
    fn memory(&self) -> anyhow::Result<(f64, f64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| -> f64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
                .map_or(0.0, |kib| kib / 1024.0)
        };
        Ok((field("VmHWM:"), field("VmRSS:")))
    }
}

fn uid(i: usize) -> String {
    format!("00000000-0000-7000-8000-{i:012}")
}
fn gid(i: usize) -> String {
    format!("00000000-0000-7000-9000-{i:012}")
}

/// Portfolios of 100 groups each, with two applications of three environments; users in two
/// groups each; audit events spread over 30 days.
fn seed(store: &Store, size: &Size) -> anyhow::Result<()> {
    let now = now_micros();
    let portfolios = size.groups.div_ceil(100).max(1);
    // An Argon2id hash of nothing in particular: seeded users never log in.
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2VlZHNlZWRzZWVk$YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE";
    store.write(|tx| {
        for p in 0..portfolios {
            let pid = format!("00000000-0000-7000-a000-{p:012}");
            let item = |id: String, parent: Option<String>, name: String| Item {
                id,
                parent_id: parent,
                display_name: name,
                description: String::new(),
                production: false,
                created_at: now,
                updated_at: now,
                version: 1,
            };
            catalog::insert(
                tx.conn,
                Kind::Portfolio,
                &item(pid.clone(), None, format!("Portfolio {p}")),
            )?;
            for a in 0..2 {
                let aid = format!("00000000-0000-7000-b000-{:012}", p * 2 + a);
                catalog::insert(
                    tx.conn,
                    Kind::Application,
                    &item(aid.clone(), Some(pid.clone()), format!("App {a}")),
                )?;
                for e in 0..3 {
                    let eid = format!("00000000-0000-7000-c000-{:012}", (p * 2 + a) * 3 + e);
                    catalog::insert(
                        tx.conn,
                        Kind::Environment,
                        &item(eid, Some(aid.clone()), format!("env {e}")),
                    )?;
                }
            }
        }
        for g in 0..size.groups {
            let p = g % portfolios;
            groups::insert(
                tx.conn,
                &groups::Group {
                    id: gid(g),
                    portfolio_id: format!("00000000-0000-7000-a000-{p:012}"),
                    display_name: format!("Group {g}"),
                    description: String::new(),
                    administrators: false,
                    created_at: now,
                    updated_at: now,
                    version: 1,
                },
            )?;
            let env = format!("00000000-0000-7000-c000-{:012}", p * 6 + g % 6);
            groups::set_environment_grants(tx.conn, &gid(g), &[(env, 1)])?;
        }
        Ok::<_, StoreError>(())
    })?;
    for chunk in (0..size.users).collect::<Vec<_>>().chunks(10_000) {
        store.write(|tx| {
            for &i in chunk {
                let name = format!("user{i:06}");
                users::insert(
                    tx.conn,
                    &users::NewUser {
                        id: uid(i).parse().map_err(|_| StoreError::NotFound)?,
                        username: &name,
                        email: &format!("{name}@example.com"),
                        display_name: &format!("User {i}"),
                        role: fluxgate_domain::Role::Requester,
                        must_change_password: false,
                        password_hash: Some(hash),
                    },
                    now,
                )?;
                let (a, b) = (i % size.groups, (i * 7 + 3) % size.groups);
                groups::add_member(tx.conn, &gid(a), "user", &uid(i), now)?;
                if b != a {
                    groups::add_member(tx.conn, &gid(b), "user", &uid(i), now)?;
                }
            }
            Ok::<_, StoreError>(())
        })?;
    }
    let start = now - 30 * 86_400_000_000;
    let step = (30 * 86_400_000_000 / size.events.max(1)) as i64;
    for chunk in (0..size.events).collect::<Vec<_>>().chunks(10_000) {
        store.write(|tx| {
            for &i in chunk {
                let e = NewEvent {
                    actor_id: Some(format!("users/{}", uid(i % 50))),
                    actor_name: Some(format!("user{:06}", i % 50)),
                    actor_role: Some("requester".into()),
                    action: ["user.updated", "group.updated", "feature.evaluated"][i % 3].into(),
                    target_type: "feature".into(),
                    target_id: Some(format!("feature-{}", i % 2000)),
                    outcome: "success".into(),
                    ..Default::default()
                };
                audit::append(tx.conn, e, start + i as i64 * step)?;
            }
            Ok::<_, StoreError>(())
        })?;
    }
    Ok(())
}

/// The median of 25 runs of `f`, in milliseconds.
async fn median_ms<F, Fut>(mut f: F) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    f().await?;
    let mut v = Vec::new();
    for _ in 0..25 {
        let t = Instant::now();
        f().await?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(f64::total_cmp);
    Ok(v[v.len() / 2])
}

struct Measured {
    seed_s: f64,
    startup_ms: f64,
    queries: Vec<(&'static str, f64)>,
    writes: Vec<(&'static str, f64)>,
    bulk_per_s: f64,
    scim_per_s: f64,
    peak_mib: f64,
    rss_mib: f64,
    /// After the bulk creations (10,000 more users).
    bulk_peak_mib: f64,
    bulk_rss_mib: f64,
}

async fn measure(url: &str, size: &Size) -> anyhow::Result<Measured> {
    // First start: migrations and the bootstrap admin; then seed with the server stopped.
    drop(Server::start(url)?);
    let store = Store::open(url, &PoolOptions::default())?;
    let t = Instant::now();
    {
        let store = store.clone();
        let size = Size { ..*size };
        tokio::task::spawn_blocking(move || seed(&store, &size)).await??;
    }
    // The statistics autovacuum would gather within a minute of the load (PostgreSQL).
    store.analyze()?;
    let seed_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let server = Server::start(url)?;
    let ch = Channel::from_shared(format!("http://{}", server.addr))?
        .connect()
        .await?;
    let token = login(ch.clone(), "admin", ADMIN_PW).await?;
    let startup_ms = t.elapsed().as_secs_f64() * 1e3;

    let users = UserServiceClient::new(ch.clone());
    let groups_c = GroupServiceClient::new(ch.clone());
    let audit_c = AuditServiceClient::new(ch.clone());
    let mut queries = Vec::new();
    let tk = token.clone();
    let list_users = |page_token: String, role: i32, query: String| {
        let (mut c, tk) = (users.clone(), tk.clone());
        async move {
            let r = c
                .list_users(with(
                    &tk,
                    pb::ListUsersRequest {
                        signed_in_before: None,
                        never_signed_in: None,
                        order_by: String::new(),
                        page_size: 50,
                        page_token,
                        role,
                        active: None,
                        query,
                    },
                ))
                .await?
                .into_inner();
            Ok::<_, anyhow::Error>(r)
        }
    };
    queries.push((
        "ListUsers, first page of 50",
        median_ms(|| async {
            list_users(String::new(), 0, String::new())
                .await
                .map(|_| ())
        })
        .await?,
    ));
    // A page deep in the list: follow ten pages, then time the next.
    let mut deep = String::new();
    for _ in 0..10 {
        deep = list_users(deep, 0, String::new()).await?.next_page_token;
    }
    queries.push((
        "ListUsers, page 11 (page token)",
        median_ms(|| async { list_users(deep.clone(), 0, String::new()).await.map(|_| ()) })
            .await?,
    ));
    queries.push((
        "ListUsers, role filter",
        median_ms(|| async {
            list_users(String::new(), pb::Role::Requester as i32, String::new())
                .await
                .map(|_| ())
        })
        .await?,
    ));
    queries.push((
        "ListUsers, text search (common term)",
        median_ms(|| async {
            list_users(String::new(), 0, "user 1".into())
                .await
                .map(|_| ())
        })
        .await?,
    ));
    queries.push((
        "ListUsers, text search (rare term)",
        median_ms(|| async {
            list_users(String::new(), 0, "user 000042".into())
                .await
                .map(|_| ())
        })
        .await?,
    ));
    let portfolio = "portfolios/00000000-0000-7000-a000-000000000000".to_owned();
    queries.push((
        "ListGroups of a portfolio, first page",
        median_ms(|| {
            let (mut c, tk, parent) = (groups_c.clone(), token.clone(), portfolio.clone());
            async move {
                c.list_groups(with(
                    &tk,
                    pb::ListGroupsRequest {
                        parent,
                        page_size: 50,
                        ..Default::default()
                    },
                ))
                .await?;
                Ok(())
            }
        })
        .await?,
    ));
    let group = format!("{portfolio}/groups/{}", gid(0));
    queries.push((
        "ListGroupMembers, first page",
        median_ms(|| {
            let (mut c, tk, group) = (groups_c.clone(), token.clone(), group.clone());
            async move {
                c.list_group_members(with(
                    &tk,
                    pb::ListGroupMembersRequest {
                        group,
                        page_size: 50,
                        ..Default::default()
                    },
                ))
                .await?;
                Ok(())
            }
        })
        .await?,
    ));
    let week_ago = now_micros() - 7 * 86_400_000_000;
    queries.push((
        "ListAuditEvents, action + last 7 days",
        median_ms(|| {
            let (mut c, tk) = (audit_c.clone(), token.clone());
            async move {
                c.list_audit_events(with(
                    &tk,
                    pb::ListAuditEventsRequest {
                        page_size: 100,
                        action: "feature.evaluated".into(),
                        start_time: Some(prost_types::Timestamp {
                            seconds: week_ago / 1_000_000,
                            nanos: 0,
                        }),
                        ..Default::default()
                    },
                ))
                .await?;
                Ok(())
            }
        })
        .await?,
    ));
    queries.push((
        "ListAuditEvents, by actor",
        median_ms(|| {
            let (mut c, tk) = (audit_c.clone(), token.clone());
            async move {
                c.list_audit_events(with(
                    &tk,
                    pb::ListAuditEventsRequest {
                        page_size: 100,
                        actor: format!("users/{}", uid(7)),
                        ..Default::default()
                    },
                ))
                .await?;
                Ok(())
            }
        })
        .await?,
    ));
    let writes = measure_writes(&ch, &token, size).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (peak_mib, rss_mib) = server.memory()?;
    let bulk_per_s = measure_bulk(&ch, &token).await?;
    let scim_per_s = measure_scim_bulk(&ch, &server.addr, &token).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (bulk_peak_mib, bulk_rss_mib) = server.memory()?;
    Ok(Measured {
        seed_s,
        startup_ms,
        queries,
        writes,
        bulk_per_s,
        scim_per_s,
        peak_mib,
        rss_mib,
        bulk_peak_mib,
        bulk_rss_mib,
    })
}

/// Users a second through SCIM bulk requests (`POST /scim/v2/Bulk`) of 1,000 user creations,
/// as an identity provider pushes them, over three requests after one to warm up.
async fn measure_scim_bulk(ch: &Channel, addr: &str, token: &str) -> anyhow::Result<f64> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let account = pb::ServiceAccount {
        display_name: "identity provider".into(),
        provisioner: true,
        ..Default::default()
    };
    let key = service_account_key(ch.clone(), token, account).await?;
    let mut next = 0usize;
    let mut request = || {
        let ops: Vec<serde_json::Value> = (next..next + 1_000)
            .map(|n| {
                serde_json::json!({
                    "method": "POST", "path": "/Users", "bulkId": format!("u{n}"),
                    "data": {"userName": format!("scim{n:07}"), "emails": [{"value": format!("scim{n:07}@example.com")}]},
                })
            })
            .collect();
        next += 1_000;
        serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops}).to_string()
    };
    let send = async |body: String| -> anyhow::Result<()> {
        let mut st = tokio::net::TcpStream::connect(addr).await?;
        let head = format!(
            "POST /scim/v2/Bulk HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/scim+json\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        st.write_all(head.as_bytes()).await?;
        st.write_all(body.as_bytes()).await?;
        let mut raw = String::new();
        st.read_to_string(&mut raw).await?;
        anyhow::ensure!(
            raw.starts_with("HTTP/1.1 200"),
            "bulk request refused: {}",
            &raw[..raw.len().min(300)]
        );
        anyhow::ensure!(
            raw.matches("\"201\"").count() == 1_000,
            "not every user was created"
        );
        Ok(())
    };
    send(request()).await?;
    let t = Instant::now();
    for _ in 0..3 {
        send(request()).await?;
    }
    Ok(3_000.0 / t.elapsed().as_secs_f64())
}

/// Users a second through BatchCreateUsers, 1,000 users (registration links, no passwords) a
/// call, over five calls after one to warm up: each call waits for its commit and for the
/// directory to hold the new users.
async fn measure_bulk(ch: &Channel, token: &str) -> anyhow::Result<f64> {
    let mut c = UserServiceClient::new(ch.clone());
    let mut next = 0usize;
    let mut call = || {
        let requests = (next..next + 1_000)
            .map(|n| pb::CreateUserRequest {
                user: Some(pb::User {
                    username: format!("bulk{n:07}"),
                    email: format!("bulk{n:07}@example.com"),
                    display_name: format!("Bulk {n}"),
                    role: pb::Role::Requester as i32,
                    ..Default::default()
                }),
                initial_password: String::new(),
                require_password_change: false,
            })
            .collect();
        next += 1_000;
        with(token, pb::BatchCreateUsersRequest { requests })
    };
    c.batch_create_users(call()).await?;
    let t = Instant::now();
    for _ in 0..5 {
        let n = c
            .batch_create_users(call())
            .await?
            .into_inner()
            .results
            .len();
        anyhow::ensure!(n == 1_000, "{n} users created of 1,000");
    }
    Ok(5_000.0 / t.elapsed().as_secs_f64())
}

/// Authorisation-relevant writes over gRPC, each answered after the server's directory and
/// engine snapshot reflect it (read-your-writes): the median of 25, each on another user.
async fn measure_writes(
    ch: &Channel,
    token: &str,
    size: &Size,
) -> anyhow::Result<Vec<(&'static str, f64)>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let users = UserServiceClient::new(ch.clone());
    let groups_c = GroupServiceClient::new(ch.clone());
    let portfolio = "portfolios/00000000-0000-7000-a000-000000000000";
    // Group 0 is in portfolio 0, like every group numbered a multiple of the portfolio count.
    let group = format!("{portfolio}/groups/{}", gid(0));
    let next = AtomicUsize::new(0);
    // Users who are not members of group 0 (seeded user i is in groups i and 7i + 3), taken in
    // turn from the middle of the directory.
    let outsiders: Vec<usize> = (size.users / 2..size.users)
        .filter(|&u| u % size.groups != 0 && (u * 7 + 3) % size.groups != 0)
        .take(64)
        .collect();
    let user = || {
        let i = next.fetch_add(1, Ordering::Relaxed);
        format!("users/{}", uid(outsiders[i % outsiders.len()]))
    };
    let mut out = Vec::new();
    let member = |add: bool| {
        let (mut c, tk, group) = (groups_c.clone(), token.to_owned(), group.clone());
        let member = user();
        async move {
            if add {
                c.add_group_member(with(
                    &tk,
                    pb::AddGroupMemberRequest {
                        group,
                        member,
                        reason: String::new(),
                    },
                ))
                .await?;
            } else {
                c.remove_group_member(with(
                    &tk,
                    pb::RemoveGroupMemberRequest {
                        group,
                        member,
                        reason: String::new(),
                    },
                ))
                .await?;
            }
            Ok(())
        }
    };
    out.push(("AddGroupMember", median_ms(|| member(true)).await?));
    next.store(0, Ordering::Relaxed);
    out.push(("RemoveGroupMember", median_ms(|| member(false)).await?));
    let grants = AtomicUsize::new(0);
    out.push((
        "UpdateGroup, environment grants",
        median_ms(|| {
            let (mut c, tk, name) = (groups_c.clone(), token.to_owned(), group.clone());
            let bits = grants.fetch_add(1, Ordering::Relaxed);
            async move {
                let env = |e: usize| {
                    format!(
                        "{portfolio}/applications/00000000-0000-7000-b000-000000000000/\
                         environments/00000000-0000-7000-c000-{e:012}"
                    )
                };
                let permissions = [pb::ValuePermission::Read as i32]
                    .into_iter()
                    .chain((bits % 2 == 1).then_some(pb::ValuePermission::ChangeValue as i32))
                    .collect::<Vec<_>>();
                c.update_group(with(
                    &tk,
                    pb::UpdateGroupRequest {
                        group: Some(pb::Group {
                            name,
                            environment_grants: vec![pb::EnvironmentGrant {
                                environment: env(bits % 3),
                                permissions,
                            }],
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["environment_grants".into()],
                        }),
                    },
                ))
                .await?;
                Ok(())
            }
        })
        .await?,
    ));
    next.store(0, Ordering::Relaxed);
    out.push((
        "UpdateUser, role",
        median_ms(|| {
            let (mut c, tk, name) = (users.clone(), token.to_owned(), user());
            async move {
                c.update_user(with(
                    &tk,
                    pb::UpdateUserRequest {
                        user: Some(pb::User {
                            name,
                            role: pb::Role::Approver as i32,
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["role".into()],
                        }),
                        reason: String::new(),
                    },
                ))
                .await?;
                Ok(())
            }
        })
        .await?,
    ));
    next.store(0, Ordering::Relaxed);
    out.push((
        "DeactivateUser",
        median_ms(|| {
            let (mut c, tk, name) = (users.clone(), token.to_owned(), user());
            async move {
                c.deactivate_user(with(
                    &tk,
                    pb::DeactivateUserRequest {
                        name,
                        etag: String::new(),
                    },
                ))
                .await?;
                Ok(())
            }
        })
        .await?,
    ));
    let created = AtomicUsize::new(0);
    out.push((
        "CreateUser (registration link, no password)",
        median_ms(|| {
            let (mut c, tk) = (users.clone(), token.to_owned());
            let n = created.fetch_add(1, Ordering::Relaxed);
            async move {
                c.create_user(with(
                    &tk,
                    pb::CreateUserRequest {
                        user: Some(pb::User {
                            username: format!("new{n:06}"),
                            email: format!("new{n:06}@example.com"),
                            display_name: format!("New {n}"),
                            role: pb::Role::Requester as i32,
                            ..Default::default()
                        }),
                        initial_password: String::new(),
                        require_password_change: false,
                    },
                ))
                .await?;
                Ok(())
            }
        })
        .await?,
    ));
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let backend = arg("--backend").unwrap_or_else(|| "sqlite".into());
    let full = Size {
        users: arg("--users").map_or(Ok(100_000), |s| s.parse())?,
        groups: arg("--groups").map_or(Ok(10_000), |s| s.parse())?,
        events: arg("--events").map_or(Ok(1_000_000), |s| s.parse())?,
    };
    let small = Size {
        users: (full.users / 100).max(1),
        groups: (full.groups / 100).max(1),
        events: (full.events / 100).max(1),
    };
    let dir = tempfile::tempdir()?;
    let mut results = Vec::new();
    for (name, size) in [("1%", &small), ("100%", &full)] {
        let (url, _schema) = match backend.as_str() {
            "postgres" => {
                let s = fluxgate_store::testing::fresh_postgres()
                    .ok_or_else(|| anyhow::anyhow!("PostgreSQL is unreachable"))?;
                (s.url.clone(), Some(s))
            }
            _ => (
                format!(
                    "sqlite://{}",
                    dir.path().join(format!("{name}.db")).display()
                ),
                None,
            ),
        };
        results.push(measure(&url, size).await?);
    }
    let (s, f) = (&results[0], &results[1]);
    println!(
        "### {backend}: {} users, {} groups, {} audit events against 1% of that\n",
        full.users, full.groups, full.events
    );
    println!("| query (median of 25, over gRPC) | 1% (ms) | 100% (ms) | ratio |");
    println!("|---|---|---|---|");
    for ((q, a), (_, b)) in s.queries.iter().zip(&f.queries) {
        println!("| {q} | {a:.2} | {b:.2} | {:.2} |", b / a);
    }
    println!(
        "\n| authorisation-relevant write (median of 25, over gRPC; target ratio <= 1.5) | 1% (ms) | 100% (ms) | ratio |"
    );
    println!("|---|---|---|---|");
    for ((q, a), (_, b)) in s.writes.iter().zip(&f.writes) {
        println!("| {q} | {a:.2} | {b:.2} | {:.2} |", b / a);
    }
    println!("\n| | 1% | 100% |");
    println!("|---|---|---|");
    println!(
        "| BatchCreateUsers, 1,000 users a call (users/s; target >= 2,000 at 100%) | {:.0} | {:.0} |",
        s.bulk_per_s, f.bulk_per_s
    );
    println!(
        "| SCIM bulk request, 1,000 user creations (users/s) | {:.0} | {:.0} |",
        s.scim_per_s, f.scim_per_s
    );
    println!("| seeding (s) | {:.1} | {:.1} |", s.seed_s, f.seed_s);
    println!(
        "| start-up to first answered Login (ms) | {:.0} | {:.0} |",
        s.startup_ms, f.startup_ms
    );
    println!(
        "| server peak RSS (MiB; target < 256 at 100%) | {:.1} | {:.1} |",
        s.peak_mib, f.peak_mib
    );
    println!(
        "| server RSS after the queries (MiB) | {:.1} | {:.1} |",
        s.rss_mib, f.rss_mib
    );
    println!(
        "| server peak RSS, with the bulk creations' 10,000 users (MiB) | {:.1} | {:.1} |",
        s.bulk_peak_mib, f.bulk_peak_mib
    );
    println!(
        "| server RSS after the bulk creations (MiB) | {:.1} | {:.1} |",
        s.bulk_rss_mib, f.bulk_rss_mib
    );
    Ok(())
}
