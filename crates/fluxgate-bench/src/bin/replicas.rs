//! Two FluxGate replicas on one PostgreSQL.
//!
//! * CheckPermission throughput and latency with the load on one replica, then spread over two,
//!   with the same load client in the same run.
//! * Propagation: a permission change made through replica A (a group member added or removed),
//!   and the time until replica B answers the new way to a caller who does not pass the write's
//!   revision (median and max), with the default `directory_poll_ms`; and, for contrast, with
//!   the revision passed.
//!
//! `replicas [--seconds 2] [--rounds 3] [--levels 16,64] [--changes 40]`. Needs PostgreSQL
//! (`FLUXGATE_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fluxgate_bench::support::{
    Pool, arg, bearer, channels, check_allowed as allowed, measure, seed_reader, start_server, with,
};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::group_service_client::GroupServiceClient;
use tonic::transport::Channel;

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs: u64 = arg("--seconds").map_or(Ok(2), |s| s.parse())?;
    let rounds: usize = arg("--rounds").map_or(Ok(3), |s| s.parse())?;
    let changes: usize = arg("--changes").map_or(Ok(40), |s| s.parse())?;
    let levels: Vec<usize> = arg("--levels")
        .unwrap_or_else(|| "16,64".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let schema = fluxgate_store::testing::fresh_postgres()
        .ok_or_else(|| anyhow::anyhow!("PostgreSQL is unreachable"))?;
    let (a, admin): (SocketAddr, String) = start_server(schema.url.clone()).await?;
    let seeded = seed_reader(a, &admin).await?;
    let (b, _) = start_server(schema.url.clone()).await?;
    let (token, check) = (bearer(&seeded.user_token)?, seeded.check.clone());
    let on_a = channels(a, 4).await?;
    let on_b = channels(b, 4).await?;
    while !allowed(on_b[0].clone(), &token, &check, 0).await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    println!("### CheckPermission, one replica against two (one PostgreSQL)\n");
    println!(
        "| in flight | one replica req/s | p50 µs | p99 µs | two replicas req/s | p50 µs | p99 µs | throughput ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let spread: Vec<Channel> = on_a[..2].iter().chain(&on_b[..2]).cloned().collect();
    for &n in &levels {
        let call = {
            let (token, check) = (token.clone(), check.clone());
            move |ch: Channel| {
                let (token, check) = (token.clone(), check.clone());
                async move { allowed(ch, &token, &check, 0).await }
            }
        };
        measure(&on_a, n, 1, call.clone()).await;
        measure(&spread, n, 1, call.clone()).await;
        let (mut one, mut two) = (Pool::default(), Pool::default());
        for _ in 0..rounds {
            one.add(measure(&on_a, n, secs, call.clone()).await);
            two.add(measure(&spread, n, secs, call.clone()).await);
        }
        let (one, two) = (one.figures(), two.figures());
        println!(
            "| {n} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |",
            one.rps,
            one.p50_us,
            one.p99_us,
            two.rps,
            two.p50_us,
            two.p99_us,
            two.rps / one.rps
        );
    }

    // Propagation: alternate removing and adding the reader through A; time B's first answer
    // the new way. First without the revision (B learns from PostgreSQL's change notification, or
    // its poll), then with it.
    let mut groups = GroupServiceClient::new(on_a[0].clone());
    let mut lag = Vec::with_capacity(changes);
    let mut lag_with_revision = Vec::with_capacity(changes);
    for i in 0..2 * changes {
        let now_allowed = i % 2 == 1;
        let membership = (seeded.group.clone(), seeded.user.clone());
        let rev = if now_allowed {
            let (group, member) = membership;
            let r = groups
                .add_group_member(with(
                    &admin,
                    pb::AddGroupMemberRequest {
                        group,
                        member,
                        reason: String::new(),
                    },
                ))
                .await?;
            revision(r.metadata())
        } else {
            let (group, member) = membership;
            let r = groups
                .remove_group_member(with(
                    &admin,
                    pb::RemoveGroupMemberRequest {
                        group,
                        member,
                        reason: String::new(),
                    },
                ))
                .await?;
            revision(r.metadata())
        };
        let t = Instant::now();
        if i < changes {
            while allowed(on_b[0].clone(), &token, &check, 0).await != now_allowed {
                anyhow::ensure!(t.elapsed() < Duration::from_secs(30), "B never caught up");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            lag.push(t.elapsed());
        } else {
            let answer = allowed(on_b[0].clone(), &token, &check, rev).await;
            lag_with_revision.push(t.elapsed());
            anyhow::ensure!(answer == now_allowed, "B answered from an older view");
        }
        // Spread the writes over the phases of B's poll cycle.
        tokio::time::sleep(Duration::from_millis((i as u64 * 389) % 1000)).await;
    }
    lag.sort();
    lag_with_revision.sort();
    let median = |v: &[Duration]| v[v.len() / 2];
    println!("\n### Propagation of a permission change to another replica ({changes} changes)\n");
    println!("| how the reader asks | median ms | max ms |");
    println!("|---|---|---|");
    println!(
        "| without a revision (change notifications; poll fallback 500 ms) | {:.1} | {:.1} |",
        millis(median(&lag)),
        millis(lag[lag.len() - 1])
    );
    println!(
        "| with the write's revision (`min_revision`) | {:.1} | {:.1} |",
        millis(median(&lag_with_revision)),
        millis(lag_with_revision[lag_with_revision.len() - 1])
    );
    Ok(())
}

fn revision(md: &tonic::metadata::MetadataMap) -> i64 {
    md.get("x-fluxgate-revision")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
