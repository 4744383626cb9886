//! Audit trail at scale: seeds a database with N events (a valid hash chain), then measures a
//! filtered page query (by actor and time range, keyset-paginated) at 10,000 and at 1,000,000
//! events, and export throughput through the real server's ExportAuditEvents stream.
//!
//! `audit_scale [--backend sqlite|postgres] [--small 10000] [--large 1000000]`
//! (PostgreSQL: `FLUXGATE_TEST_POSTGRES_URL`, default postgres://postgres@127.0.0.1:5432/test.)

use std::time::Instant;

use fluxgate_bench::support::{arg, start_server};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::audit_service_client::AuditServiceClient;
use fluxgate_store::audit::{self, Filter, NewEvent};
use fluxgate_store::{PoolOptions, Store, StoreError, now_micros};

/// Actors: few enough that one has a full page at 10,000 events.
const ACTORS: usize = 50;
const ACTIONS: [&str; 5] = [
    "user.updated",
    "group.updated",
    "feature.evaluated",
    "auth.login",
    "settings.updated",
];

/// Appends `n` events spread over the last 30 days, in transactions of 10,000.
fn seed(store: &Store, n: usize) -> anyhow::Result<()> {
    let start = now_micros() - 30 * 86_400_000_000;
    let step = (30 * 86_400_000_000 / n.max(1)) as i64;
    let mut done = 0;
    while done < n {
        let batch = (n - done).min(10_000);
        store.write(|tx| {
            for i in done..done + batch {
                let e = NewEvent {
                    actor_id: Some(format!("users/00000000-0000-7000-8000-{:012}", i % ACTORS)),
                    actor_name: Some(format!("user{}", i % ACTORS)),
                    actor_role: Some("requester".into()),
                    action: ACTIONS[i % ACTIONS.len()].into(),
                    target_type: "feature".into(),
                    target_id: Some(format!("feature-{}", i % 2000)),
                    outcome: "success".into(),
                    detail: Some("seeded".into()),
                    ..Default::default()
                };
                audit::append(tx.conn, e, start + i as i64 * step)?;
            }
            Ok::<_, StoreError>(())
        })?;
        done += batch;
    }
    Ok(())
}

/// Median times of filtered pages of 100 events (action + last 7 days; target alone), first
/// page and the page after a cursor in the middle of the first.
fn page_query(store: &Store) -> anyhow::Result<Vec<(String, f64, f64)>> {
    let filters = [
        (
            "action + 7 days",
            Filter {
                action: Some("feature.evaluated".into()),
                from: Some(now_micros() - 7 * 86_400_000_000),
                ..Filter::default()
            },
        ),
        (
            "actor",
            Filter {
                actor: Some("users/00000000-0000-7000-8000-000000000007".into()),
                ..Filter::default()
            },
        ),
    ];
    let mut out = Vec::new();
    for (name, f) in filters {
        let (mut first, mut deep) = (Vec::new(), Vec::new());
        for _ in 0..25 {
            let t = Instant::now();
            let page = store.read(|c| audit::query(c, &f, None, 100))?;
            first.push(t.elapsed().as_secs_f64() * 1e3);
            anyhow::ensure!(
                page.len() == 100,
                "{name}: a full page is needed to compare ({} events)",
                page.len()
            );
            let cursor = page.get(page.len() / 2).map(|e| (e.occurred_at, e.seq));
            let t = Instant::now();
            store.read(|c| audit::query(c, &f, cursor, 100))?;
            deep.push(t.elapsed().as_secs_f64() * 1e3);
        }
        first.sort_by(f64::total_cmp);
        deep.sort_by(f64::total_cmp);
        out.push((
            name.to_owned(),
            first[first.len() / 2],
            deep[deep.len() / 2],
        ));
    }
    Ok(out)
}

async fn export_rate(url: &str) -> anyhow::Result<(usize, f64)> {
    let (addr, token) = start_server(url.to_owned()).await?;
    let url = format!("http://{addr}");
    let mut req = tonic::Request::new(pb::ExportAuditEventsRequest::default());
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let t = Instant::now();
    let mut stream = AuditServiceClient::connect(url)
        .await?
        .max_decoding_message_size(64 << 20)
        .export_audit_events(req)
        .await?
        .into_inner();
    let mut n = 0usize;
    while let Some(chunk) = stream.message().await? {
        n += chunk.event_count as usize;
    }
    Ok((n, n as f64 / t.elapsed().as_secs_f64()))
}

fn open(
    backend: &str,
    dir: &std::path::Path,
    name: &str,
) -> anyhow::Result<(Store, String, Option<fluxgate_store::testing::TestSchema>)> {
    let (url, schema) = match backend {
        "postgres" => {
            let s = fluxgate_store::testing::fresh_postgres()
                .ok_or_else(|| anyhow::anyhow!("PostgreSQL unreachable"))?;
            (s.url.clone(), Some(s))
        }
        _ => (
            format!("sqlite://{}", dir.join(format!("{name}.db")).display()),
            None,
        ),
    };
    let store = Store::open(&url, &PoolOptions::default())?;
    store.migrate()?;
    Ok((store, url, schema))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let backend = arg("--backend").unwrap_or_else(|| "sqlite".into());
    let small: usize = arg("--small").map_or(Ok(10_000), |s| s.parse())?;
    let large: usize = arg("--large").map_or(Ok(1_000_000), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    println!(
        "| backend | events | seed (s) | filter | first page (ms) | page after cursor (ms) | export (events/s) | chain |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for n in [small, large] {
        let (store, url, _schema) = open(&backend, dir.path(), &format!("a{n}"))?;
        let t = Instant::now();
        let s2 = store.clone();
        tokio::task::spawn_blocking(move || seed(&s2, n)).await??;
        let seed_s = t.elapsed().as_secs_f64();
        let s2 = store.clone();
        let pages = tokio::task::spawn_blocking(move || page_query(&s2)).await??;
        let (exported, rate) = export_rate(&url).await?;
        let s2 = store.clone();
        let valid = tokio::task::spawn_blocking(move || s2.read(audit::verify))
            .await??
            .is_none();
        for (filter, first, deep) in pages {
            println!(
                "| {backend} | {n} | {seed_s:.1} | {filter} | {first:.3} | {deep:.3} | {rate:.0} ({exported} exported) | {} |",
                if valid { "valid" } else { "BROKEN" }
            );
        }
    }
    Ok(())
}
