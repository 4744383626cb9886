//! WatchChangeRequest fan-out: many streams on one change request, against the `fluxgate`
//! binary as its own process.
//!
//! 1. A bystander, a client of its own (thread, runtime, connection), logs in `--logins` times,
//!    one after another, on an idle server: its p50 and p99.
//! 2. `--watchers` streams open on one pending change request (over 16 connections); the
//!    server's resident memory before and after (`/proc/{pid}/status`).
//! 3. The request is edited, one edit every `--every-ms`, then four times as often, then back to
//!    back, each edit a new version every stream is owed (a stream that falls behind skips to
//!    the newest), while the bystander logs in `--logins` times again: its p50 and p99 against
//!    idle, the edits made, the messages sent, the database reads the server's watch feeds made
//!    (`fluxgate_watch_reads_total`), and the peak memory. Every stream must be sent the last
//!    edit.
//!
//! Targets: 1,500 watchers cost under 50 MB, and the bystander's p99 during the paced fan-out
//! stays within 1.5x of idle (back to back, the edits take every core the machine has: that row
//! is the stress figure). `watchers [--watchers 1500] [--logins 200] [--every-ms 200]
//! [--database-url URL] [--bin PATH]`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fluxgate_bench::support::{arg, channels, login, proc_status, seed_reader, spawn_server, with};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::approval_service_client::ApprovalServiceClient;

const ADMIN_PASSWORD: &str = "Watch-admin-pass-1";

fn rss_kib(pid: u32) -> Option<u64> {
    proc_status(pid, "VmRSS")
}

fn threads(pid: u32) -> Option<u64> {
    proc_status(pid, "Threads")
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let watchers: usize = arg("--watchers").map_or(Ok(1500), |s| s.parse())?;
    let logins: usize = arg("--logins").map_or(Ok(200), |s| s.parse())?;
    let every_ms: u64 = arg("--every-ms").map_or(Ok(200), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let db = arg("--database-url")
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("watch.db").display()));
    let metrics = free_port()?;
    let env = [("FLUXGATE_METRICS_LISTEN", metrics.to_string())];
    let server = spawn_server(&db, ADMIN_PASSWORD, &env)?;
    let result = run(
        server.addr,
        metrics,
        server.pid(),
        (watchers, logins, every_ms),
    )
    .await;
    drop(server);
    result
}

/// `n` logins one after another: their latencies, sorted. The bystander is a client of its
/// own, as another service would be: its own thread, runtime and connection. (Sharing this
/// process's runtime, its replies waited in the queue behind the 1,500 streams' tasks, a
/// client-side delay that is not the server's.)
async fn bystander(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<Duration>> {
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let ch = channels(addr, 1).await?.remove(0);
            let mut lat = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                login(ch.clone(), "loader", "Loader-pass-12").await?;
                lat.push(t.elapsed());
            }
            lat.sort();
            anyhow::Ok(lat)
        })
    });
    tokio::task::spawn_blocking(move || thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the bystander's thread panicked"))?
}

fn pct(lat: &[Duration], p: f64) -> f64 {
    lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// The highest resident memory of `pid` until `stop`, sampled every 20 ms.
async fn peak_rss(pid: u32, stop: Arc<AtomicBool>) -> u64 {
    let mut peak = 0;
    while !stop.load(Ordering::Relaxed) {
        peak = rss_kib(pid).unwrap_or(0).max(peak);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    peak
}

async fn metric(addr: SocketAddr, name: &str) -> anyhow::Result<f64> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    Ok(body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0))
}

async fn run(
    addr: SocketAddr,
    metrics: SocketAddr,
    pid: u32,
    (watchers, logins, every_ms): (usize, usize, u64),
) -> anyhow::Result<()> {
    let ch = channels(addr, 1).await?.remove(0);
    let admin = login(ch.clone(), "admin", ADMIN_PASSWORD).await?;
    let seeded = seed_reader(addr, &admin).await?;
    let environment = seeded.check.resource.clone();
    let mut api = ApprovalServiceClient::new(ch.clone());
    let cr = api
        .submit_change_request(with(
            &admin,
            pb::SubmitChangeRequestRequest {
                change_request: Some(pb::ChangeRequest {
                    environment,
                    feature_key: "FANOUT".into(),
                    kind: pb::ChangeKind::Lock as i32,
                    title: "fan-out".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await?
        .into_inner()
        .change_request
        .context("change request")?;

    // 1. Idle.
    bystander(addr, 3).await?;
    let rss_start = rss_kib(pid).context("rss")?;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(peak_rss(pid, stop.clone()));
    let idle = bystander(addr, logins).await?;
    stop.store(true, Ordering::Relaxed);
    let idle_peak = sampler.await?;

    // 2. The streams.
    let rss_before = rss_kib(pid).context("rss")?;
    let threads_before = threads(pid).unwrap_or(0);
    let conns = channels(addr, 16).await?;
    let received = Arc::new(AtomicU64::new(0));
    // The number of the last edit each stream was sent (titles are "fan-out {n}").
    let mut last_seen = Vec::with_capacity(watchers);
    let mut streams = Vec::with_capacity(watchers);
    for i in 0..watchers {
        let mut s = ApprovalServiceClient::new(conns[i % conns.len()].clone())
            .watch_change_request(with(
                &admin,
                pb::WatchChangeRequestRequest {
                    name: cr.name.clone(),
                },
            ))
            .await?
            .into_inner();
        s.message().await?.context("the first message")?;
        let (received, seen) = (received.clone(), Arc::new(AtomicU64::new(0)));
        last_seen.push(seen.clone());
        streams.push(tokio::spawn(async move {
            while let Ok(Some(m)) = s.message().await {
                received.fetch_add(1, Ordering::Relaxed);
                let n = m
                    .change_request
                    .and_then(|c| c.title.strip_prefix("fan-out ")?.parse().ok())
                    .unwrap_or(0);
                seen.store(n, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_open = rss_kib(pid).context("rss")?;
    let threads_open = threads(pid).unwrap_or(0);

    // 3. Edits, paced and then back to back, while the bystander logs in.
    let mut phases = Vec::new();
    let mut edit_no = 0u64;
    let paces = [
        Some(Duration::from_millis(every_ms)),
        Some(Duration::from_millis(every_ms / 4)),
        None,
    ];
    for pace in paces {
        let reads_before = metric(metrics, "fluxgate_watch_reads_total").await?;
        let received_before = received.load(Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let editor = {
            let (mut api, name, admin, stop) =
                (api.clone(), cr.name.clone(), admin.clone(), stop.clone());
            tokio::spawn(async move {
                let mut edits = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    edit_no += 1;
                    let t = Instant::now();
                    api.update_change_request(with(
                        &admin,
                        pb::UpdateChangeRequestRequest {
                            change_request: Some(pb::ChangeRequest {
                                name: name.clone(),
                                title: format!("fan-out {edit_no}"),
                                ..Default::default()
                            }),
                            update_mask: Some(prost_types::FieldMask {
                                paths: vec!["title".into()],
                            }),
                        },
                    ))
                    .await?;
                    edits += 1;
                    if let Some(p) = pace {
                        tokio::time::sleep(p.saturating_sub(t.elapsed())).await;
                    }
                }
                anyhow::Ok((edits, edit_no))
            })
        };
        let sampler = tokio::spawn(peak_rss(pid, stop.clone()));
        let started = Instant::now();
        let busy = bystander(addr, logins).await?;
        let secs = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let (edits, last) = editor.await??;
        edit_no = last;
        let peak = sampler.await?;
        // Every stream must be sent the last edit (a stream that falls behind skips to the
        // newest version: it is owed the latest state, not every step).
        let deadline = Instant::now() + Duration::from_secs(60);
        while last_seen.iter().any(|s| s.load(Ordering::Relaxed) != last) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "a stream was not sent the last edit within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got = received.load(Ordering::Relaxed) - received_before;
        let reads = metric(metrics, "fluxgate_watch_reads_total").await? - reads_before;
        phases.push((pace, busy, secs, edits, got, reads, peak));
    }
    for s in streams {
        s.abort();
    }

    let mib = |kib: u64| kib as f64 / 1024.0;
    let idle_p99 = pct(&idle, 0.99);
    println!("### WatchChangeRequest fan-out: {watchers} streams on one change request\n");
    println!(
        "Server memory {:.1} MiB idle, {:.1} MiB with the streams open: +{:.1} MiB, {:.1} KiB a \
         stream (target: 1,500 streams under 50 MB). Threads {threads_before} → {threads_open}. \
         Bystander login idle: p50 {:.1} ms, p99 {:.1} ms; its logins alone raise the peak \
         memory by {:.1} MiB (Argon2id's 19 MiB a hash).\n",
        mib(rss_before),
        mib(rss_open),
        mib(rss_open.saturating_sub(rss_before)),
        rss_open.saturating_sub(rss_before) as f64 / watchers as f64,
        pct(&idle, 0.5),
        idle_p99,
        mib(idle_peak.saturating_sub(rss_start)),
    );
    println!(
        "| edits | made | messages sent | database reads | peak memory over streams open | bystander login p50 | p99 | p99 against idle (target ≤ 1.5x) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (pace, busy, secs, edits, got, reads, peak) in phases {
        let pace = pace.map_or("back to back".to_owned(), |p| {
            format!("one every {} ms", p.as_millis())
        });
        println!(
            "| {pace} | {edits} in {secs:.1} s | {got} ({:.0}/s) | {reads:.0} ({:.2} an edit) | {:.1} MiB | {:.1} ms | {:.1} ms | {:.2}x |",
            got as f64 / secs,
            reads / edits.max(1) as f64,
            mib(peak.saturating_sub(rss_open)),
            pct(&busy, 0.5),
            pct(&busy, 0.99),
            pct(&busy, 0.99) / idle_p99,
        );
    }
    Ok(())
}
