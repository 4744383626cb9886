//! A sustained mixed load against the `fluxgate` binary, watching its memory.
//!
//! The server runs as its own process (its resident memory is read from `/proc`), on a
//! temporary SQLite database or the PostgreSQL at `--database-url`. For `--seconds`, loops run
//! side by side: permission checks, logins (and logouts), writes (a portfolio created and
//! deleted, a group member added and removed) and approvals (a change request submitted by one
//! admin, approved by another, marked applied by a service account). Every call must succeed:
//! any error fails the run. Memory is sampled every second; the run fails if the peak of its
//! last third exceeds the peak of its first third by more than 20% plus 16 MiB.
//!
//! `soak [--seconds 300] [--checkers 8] [--database-url URL] [--bin PATH]`; `make soak` runs it
//! for five minutes on a release build, CI for 15 seconds on the debug build.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fluxgate_bench::support::{
    arg, bearer, channels, check_allowed, proc_status, seed_reader, service_account_key,
    spawn_server, with,
};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::approval_service_client::ApprovalServiceClient;
use fluxgate_proto::v1::auth_service_client::AuthServiceClient;
use fluxgate_proto::v1::catalog_service_client::CatalogServiceClient;
use fluxgate_proto::v1::group_service_client::GroupServiceClient;
use fluxgate_proto::v1::user_service_client::UserServiceClient;
use tokio::sync::Mutex;

const ADMIN_PASSWORD: &str = "Soak-admin-pass-1";
const APPROVER_PASSWORD: &str = "Soak-approver-pass-1";

/// Per kind of work: calls, failures, and the first few failures' statuses.
#[derive(Default)]
struct Counts {
    calls: u64,
    failures: u64,
    examples: Vec<String>,
}

#[derive(Default)]
struct Tally(Mutex<BTreeMap<&'static str, Counts>>);

impl Tally {
    async fn add<T>(&self, kind: &'static str, r: Result<T, tonic::Status>) -> Option<T> {
        let mut t = self.0.lock().await;
        let c = t.entry(kind).or_default();
        c.calls += 1;
        match r {
            Ok(v) => Some(v),
            Err(s) => {
                c.failures += 1;
                if c.examples.len() < 5 {
                    c.examples.push(format!("{:?}: {}", s.code(), s.message()));
                }
                None
            }
        }
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    proc_status(pid, "VmRSS")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs: u64 = arg("--seconds").map_or(Ok(300), |s| s.parse())?;
    let checkers: usize = arg("--checkers").map_or(Ok(8), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let db = arg("--database-url")
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("soak.db").display()));
    let server = spawn_server(&db, ADMIN_PASSWORD, &[])?;
    let result = run(server.addr, server.pid(), secs, checkers).await;
    drop(server);
    result
}

struct World {
    admin: String,
    approver: String,
    flagstore: String,
    reader: String,
    environment: String,
    group: String,
    check: pb::PermissionCheck,
}

async fn seed(addr: SocketAddr) -> anyhow::Result<World> {
    let ch = channels(addr, 1).await?.remove(0);
    let login = |u: &str, p: &str| {
        let (mut c, u, p) = (
            AuthServiceClient::new(ch.clone()),
            u.to_owned(),
            p.to_owned(),
        );
        async move {
            anyhow::Ok(
                c.login(pb::LoginRequest {
                    username: u,
                    password: p,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .tokens
                .context("tokens")?
                .access_token,
            )
        }
    };
    let admin = login("admin", ADMIN_PASSWORD).await?;
    let seeded = seed_reader(addr, &admin).await?;
    UserServiceClient::new(ch.clone())
        .create_user(with(
            &admin,
            pb::CreateUserRequest {
                user: Some(pb::User {
                    username: "soak-approver".into(),
                    display_name: "Soak approver".into(),
                    email: "soak-approver@example.com".into(),
                    role: pb::Role::TeamAdmin as i32,
                    ..Default::default()
                }),
                initial_password: APPROVER_PASSWORD.into(),
                ..Default::default()
            },
        ))
        .await?;
    let approver = login("soak-approver", APPROVER_PASSWORD).await?;
    let environment = seeded.check.resource.clone();
    ApprovalServiceClient::new(ch.clone())
        .update_approval_policy(with(
            &admin,
            pb::UpdateApprovalPolicyRequest {
                policy: Some(pb::ApprovalPolicy {
                    name: format!("{environment}/approvalPolicy"),
                    required_approvals: 1,
                    pending_ttl: Some(prost_types::Duration {
                        seconds: 3600,
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
                update_mask: None,
            },
        ))
        .await?;
    let account = pb::ServiceAccount {
        display_name: "flag store".into(),
        role: pb::Role::TeamAdmin as i32,
        ..Default::default()
    };
    let flagstore = service_account_key(ch.clone(), &admin, account).await?;
    Ok(World {
        admin,
        approver,
        flagstore,
        reader: seeded.user,
        environment,
        group: seeded.group,
        check: seeded.check,
    })
}

async fn run(addr: SocketAddr, pid: u32, secs: u64, checkers: usize) -> anyhow::Result<()> {
    let w = Arc::new(seed(addr).await?);
    let chans = channels(addr, 4).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::new();

    // Checks.
    let auth = bearer(&w.admin)?;
    for i in 0..checkers {
        let (ch, stop, tally, w, auth) = (
            chans[i % chans.len()].clone(),
            stop.clone(),
            tally.clone(),
            w.clone(),
            auth.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let ok = check_allowed(ch.clone(), &auth, &w.check, 0).await;
                let r = if ok {
                    Ok(())
                } else {
                    Err(tonic::Status::unknown("check not allowed"))
                };
                tally.add("check", r).await;
            }
        }));
    }
    // Logins and logouts (each one a full Argon2 verification).
    {
        let (ch, stop, tally) = (chans[0].clone(), stop.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = AuthServiceClient::new(ch);
            while !stop.load(Ordering::Relaxed) {
                let r = c
                    .login(pb::LoginRequest {
                        username: "soak-approver".into(),
                        password: APPROVER_PASSWORD.into(),
                        ..Default::default()
                    })
                    .await;
                if let Some(r) = tally.add("login", r).await {
                    let token = r.into_inner().tokens.unwrap_or_default().access_token;
                    let r = c.logout(with(&token, pb::LogoutRequest::default())).await;
                    tally.add("logout", r).await;
                }
            }
        }));
    }
    // Writes.
    {
        let (ch, stop, tally, w) = (chans[1].clone(), stop.clone(), tally.clone(), w.clone());
        tasks.push(tokio::spawn(async move {
            let mut catalog = CatalogServiceClient::new(ch.clone());
            let mut groups = GroupServiceClient::new(ch);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let r = catalog
                    .create_portfolio(with(
                        &w.admin,
                        pb::CreatePortfolioRequest {
                            portfolio: Some(pb::Portfolio {
                                display_name: format!("soak {n}"),
                                ..Default::default()
                            }),
                        },
                    ))
                    .await;
                if let Some(p) = tally.add("create portfolio", r).await {
                    let name = p.into_inner().portfolio.unwrap_or_default().name;
                    let r = catalog
                        .delete_portfolio(with(
                            &w.admin,
                            pb::DeletePortfolioRequest {
                                name,
                                ..Default::default()
                            },
                        ))
                        .await;
                    tally.add("delete portfolio", r).await;
                }
                let r = groups
                    .remove_group_member(with(
                        &w.admin,
                        pb::RemoveGroupMemberRequest {
                            reason: String::new(),
                            group: w.group.clone(),
                            member: w.reader.clone(),
                        },
                    ))
                    .await;
                tally.add("remove member", r).await;
                let r = groups
                    .add_group_member(with(
                        &w.admin,
                        pb::AddGroupMemberRequest {
                            reason: String::new(),
                            group: w.group.clone(),
                            member: w.reader.clone(),
                        },
                    ))
                    .await;
                tally.add("add member", r).await;
            }
        }));
    }
    // Approvals: submit, approve, mark applied.
    {
        let (ch, stop, tally, w) = (chans[2].clone(), stop.clone(), tally.clone(), w.clone());
        tasks.push(tokio::spawn(async move {
            let mut api = ApprovalServiceClient::new(ch);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let r = api
                    .submit_change_request(with(
                        &w.admin,
                        pb::SubmitChangeRequestRequest {
                            change_request: Some(pb::ChangeRequest {
                                environment: w.environment.clone(),
                                feature_key: format!("SOAK_{}", n % 50),
                                kind: pb::ChangeKind::ChangeValue as i32,
                                title: format!("soak {n}"),
                                payload: Some(prost_types::Struct {
                                    fields: [(
                                        "enabled".to_owned(),
                                        prost_types::Value {
                                            kind: Some(prost_types::value::Kind::BoolValue(
                                                n.is_multiple_of(2),
                                            )),
                                        },
                                    )]
                                    .into(),
                                }),
                                ..Default::default()
                            }),
                            request_id: String::new(),
                        },
                    ))
                    .await;
                let Some(cr) = tally.add("submit", r).await else {
                    continue;
                };
                let cr = cr.into_inner().change_request.unwrap_or_default();
                let r = api
                    .approve_change_request(with(
                        &w.approver,
                        pb::ApproveChangeRequestRequest {
                            name: cr.name.clone(),
                            revision: cr.revision,
                            comment: String::new(),
                        },
                    ))
                    .await;
                if tally.add("approve", r).await.is_some() {
                    let r = api
                        .mark_change_request_applied(with(
                            &w.flagstore,
                            pb::MarkChangeRequestAppliedRequest { name: cr.name },
                        ))
                        .await;
                    tally.add("mark applied", r).await;
                }
            }
        }));
    }

    // Memory, once a second.
    let started = Instant::now();
    let mut samples: Vec<u64> = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push(rss_kib(pid).context("the server is gone")?);
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();

    let t = tally.0.lock().await;
    let (mut calls, mut failed) = (0u64, 0u64);
    println!("soak: {elapsed:.0} s, server pid {pid}");
    println!("| work | calls | per second | failures |");
    println!("|---|---:|---:|---:|");
    for (kind, c) in t.iter() {
        calls += c.calls;
        failed += c.failures;
        println!(
            "| {kind} | {} | {:.0} | {} |",
            c.calls,
            c.calls as f64 / elapsed,
            c.failures
        );
    }
    let third = (samples.len() / 3).max(1);
    let first = samples[..third].iter().max().copied().unwrap_or(0);
    let last = samples[samples.len() - third..]
        .iter()
        .max()
        .copied()
        .unwrap_or(0);
    let peak = samples.iter().max().copied().unwrap_or(0);
    println!(
        "calls {calls}, failures {failed}; server RSS peak {:.1} MiB, first third {:.1} MiB, last third {:.1} MiB",
        peak as f64 / 1024.0,
        first as f64 / 1024.0,
        last as f64 / 1024.0
    );
    let mut ok = true;
    for (kind, c) in t.iter() {
        for e in &c.examples {
            eprintln!("FAIL {kind}: {e}");
        }
        ok &= c.failures == 0;
    }
    if last as f64 > first as f64 * 1.2 + 16.0 * 1024.0 {
        eprintln!("FAIL memory grew: {first} KiB in the first third, {last} KiB in the last");
        ok = false;
    }
    anyhow::ensure!(ok, "soak failed");
    println!("soak: ok");
    Ok(())
}
