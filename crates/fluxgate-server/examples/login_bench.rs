//! Login latency and throughput against a running server, next to the raw Argon2id verify rate
//! of the same parameters on the same machine.
//!
//! `login_bench --addr 127.0.0.1:50051 --username admin --password … [--requests 200]
//! [--concurrency 1,4]` (loopback only; bounded in count).

use std::time::{Duration, Instant};

use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::auth_service_client::AuthServiceClient;
use fluxgate_server::config::HashingConfig;
use fluxgate_server::passwords::Hasher;

fn arg(name: &str) -> Option<String> {
    let mut it = std::env::args();
    while let Some(a) = it.next() {
        if a == name {
            return it.next();
        }
    }
    None
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = arg("--addr").unwrap_or_else(|| "127.0.0.1:50051".into());
    anyhow::ensure!(
        addr.starts_with("127.0.0.1:")
            || addr.starts_with("localhost:")
            || addr.starts_with("[::1]:"),
        "this load client only targets loopback"
    );
    let username = arg("--username").unwrap_or_else(|| "admin".into());
    let password = arg("--password").ok_or_else(|| anyhow::anyhow!("--password is required"))?;
    let requests: usize = arg("--requests").map_or(Ok(200), |s| s.parse())?;
    let levels: Vec<usize> = arg("--concurrency")
        .unwrap_or_else(|| "1,4".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let hashing = HashingConfig::default();

    // Raw verify rate: the ceiling a login can reach on this machine.
    let hasher = Hasher::new(&hashing)?;
    let phc = hasher.hash_now(&password)?;
    println!(
        "# Argon2id m={} KiB t={} p={}; {} CPU(s)",
        hashing.memory_kib,
        hashing.iterations,
        hashing.parallelism,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("| measure | in flight | requests | throughput (/s) | p50 (ms) | p99 (ms) |");
    println!("|---|---|---|---|---|---|");
    for &c in &levels {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..c {
            let (h, phc, pw) = (hasher.clone(), phc.clone(), password.clone());
            let n = requests / c + usize::from(w < requests % c);
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(n);
                for _ in 0..n {
                    let t = Instant::now();
                    let v = h
                        .verify(pw.clone(), Some(phc.clone()))
                        .await
                        .expect("verify");
                    assert!(v.ok);
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await?);
        }
        let elapsed = start.elapsed();
        lat.sort();
        println!(
            "| raw Argon2id verify | {c} | {} | {:.1} | {:.1} | {:.1} |",
            lat.len(),
            lat.len() as f64 / elapsed.as_secs_f64(),
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99))
        );
    }

    for &c in &levels {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..c {
            let mut client = AuthServiceClient::connect(format!("http://{addr}")).await?;
            let (u, p) = (username.clone(), password.clone());
            let n = requests / c + usize::from(w < requests % c);
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(n);
                for _ in 0..n {
                    let t = Instant::now();
                    client
                        .login(pb::LoginRequest {
                            username: u.clone(),
                            password: p.clone(),
                            ..Default::default()
                        })
                        .await
                        .expect("login");
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await?);
        }
        let elapsed = start.elapsed();
        lat.sort();
        println!(
            "| Login RPC | {c} | {} | {:.1} | {:.1} | {:.1} |",
            lat.len(),
            lat.len() as f64 / elapsed.as_secs_f64(),
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99))
        );
    }
    Ok(())
}
