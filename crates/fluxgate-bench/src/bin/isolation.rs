//! Login isolation: CheckPermission latency at 16 in flight on its own, then while logins (at
//! the default OWASP Argon2id parameters) run flat out against the same server. Argon2 work runs
//! on blocking threads behind a semaphore, so it must not starve the permission checks.
//! Target: p99 with logins within 2x of p99 without.
//!
//! `isolation [--seconds 3] [--rounds 3] [--logins 4]`: a SQLite server in this process; every
//! request goes over loopback gRPC.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use fluxgate_bench::support::{
    Pool, arg, bearer, channels, check_allowed, measure, seed_reader, start_server_hashing,
};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::auth_service_client::AuthServiceClient;
use fluxgate_server::config::HashingConfig;
use tonic::transport::Channel;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs: u64 = arg("--seconds").map_or(Ok(3), |s| s.parse())?;
    let rounds: usize = arg("--rounds").map_or(Ok(3), |s| s.parse())?;
    let logins: usize = arg("--logins").map_or(Ok(4), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let (addr, admin) = start_server_hashing(
        format!("sqlite://{}", dir.path().join("iso.db").display()),
        HashingConfig::default(),
    )
    .await?;
    let seeded = seed_reader(addr, &admin).await?;
    let checks = channels(addr, 4).await?;
    let login_ch = channels(addr, 2).await?;
    let auth = bearer(&seeded.user_token)?;
    let check = seeded.check.clone();
    let call = move |ch: Channel| {
        let (auth, check) = (auth.clone(), check.clone());
        async move { check_allowed(ch, &auth, &check, 0).await }
    };
    measure(&checks, 16, 1, call.clone()).await;

    let (mut alone, mut loaded) = (Pool::default(), Pool::default());
    let done_logins = Arc::new(AtomicU64::new(0));
    let mut login_secs = 0.0;
    for _ in 0..rounds {
        alone.add(measure(&checks, 16, secs, call.clone()).await);
        // Logins flat out while the checks run.
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for i in 0..logins {
            let (ch, stop, done) = (
                login_ch[i % login_ch.len()].clone(),
                stop.clone(),
                done_logins.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut c = AuthServiceClient::new(ch);
                while !stop.load(Ordering::Relaxed) {
                    let ok = c
                        .login(pb::LoginRequest {
                            username: "loader".into(),
                            password: "Loader-pass-12".into(),
                            ..Default::default()
                        })
                        .await
                        .is_ok();
                    assert!(ok, "login failed");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let m = measure(&checks, 16, secs, call.clone()).await;
        login_secs += m.1;
        loaded.add(m);
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await?;
        }
    }
    let (a, l) = (alone.figures(), loaded.figures());
    println!(
        "### Login isolation (CheckPermission at 16 in flight; {logins} login loops, Argon2id 19 MiB t=2)\n"
    );
    println!("| | req/s | p50 µs | p99 µs |");
    println!("|---|---|---|---|");
    println!(
        "| checks alone | {:.0} | {:.0} | {:.0} |",
        a.rps, a.p50_us, a.p99_us
    );
    println!(
        "| checks while logins run ({:.1} logins/s) | {:.0} | {:.0} | {:.0} |",
        done_logins.load(Ordering::Relaxed) as f64 / login_secs.max(1e-9),
        l.rps,
        l.p50_us,
        l.p99_us
    );
    println!(
        "\np99 with logins / p99 alone: **{:.2}** (target ≤ 2)",
        l.p99_us / a.p99_us
    );
    Ok(())
}
