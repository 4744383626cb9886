//! Events out, measured against a real HTTP receiver on loopback.
//!
//! * Throughput: `--events` audit events ingested in batches of 500 as fast as the server takes
//!   them, with one webhook subscription (`*`, one message per event) and, separately, one
//!   audit stream; events delivered per second, from the first ingest to the last receipt.
//! * Delay: `--paced` events ingested one per call at `--rate` per second; for each, the time
//!   from the ingest's answer (its commit) to the receiver's receipt: median, p99, max.
//!
//! `webhooks [--backend sqlite|postgres] [--events 20000] [--paced 500] [--rate 100]`.
//! PostgreSQL: `FLUXGATE_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fluxgate_bench::support::{ADMIN_PASSWORD, arg, with};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::audit_service_client::AuditServiceClient;
use fluxgate_proto::v1::auth_service_client::AuthServiceClient;
use fluxgate_proto::v1::service_account_service_client::ServiceAccountServiceClient;
use fluxgate_proto::v1::webhook_service_client::WebhookServiceClient;
use fluxgate_server::config::HashingConfig;
use fluxgate_server::{Config, Server};
use tonic::transport::Channel;

/// Receipt time of each audit sequence number (events) and the count of lines (streams).
#[derive(Default)]
struct Received {
    at: HashMap<i64, Instant>,
    lines: usize,
}

type Shared = Arc<Mutex<Received>>;

async fn receive(
    axum::extract::State(r): axum::extract::State<Shared>,
    body: String,
) -> axum::http::StatusCode {
    let now = Instant::now();
    let mut r = r.lock().unwrap_or_else(|e| e.into_inner());
    if body.starts_with("{\"data\":") {
        if let Some(seq) = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["data"]["sequence"].as_str()?.parse::<i64>().ok())
        {
            r.at.insert(seq, now);
        }
    } else {
        r.lines += body.lines().count();
    }
    axum::http::StatusCode::NO_CONTENT
}

async fn receiver() -> anyhow::Result<(String, Shared)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let shared: Shared = Arc::default();
    let app = axum::Router::new()
        .route("/in", axum::routing::post(receive))
        .with_state(shared.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://127.0.0.1:{port}/in"), shared))
}

struct Bench {
    ch: Channel,
    admin: String,
    writer: String,
}

impl Bench {
    async fn start(database_url: String) -> anyhow::Result<Bench> {
        let mut config = Config {
            listen: "127.0.0.1:0".parse()?,
            database_url,
            password_hashing: HashingConfig {
                memory_kib: 256,
                iterations: 1,
                parallelism: 1,
                max_concurrent: 2,
            },
            ..Config::default()
        };
        config.bootstrap.password = Some(ADMIN_PASSWORD.into());
        config.webhooks.allowed_private_networks = vec!["127.0.0.0/8".into()];
        let server = Server::bind(config).await?;
        let addr = server.local_addr()?;
        tokio::spawn(server.run(std::future::pending()));
        let ch = Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        let admin = AuthServiceClient::new(ch.clone())
            .login(pb::LoginRequest {
                username: "admin".into(),
                password: ADMIN_PASSWORD.into(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .tokens
            .ok_or_else(|| anyhow::anyhow!("no tokens"))?
            .access_token;
        let mut sas = ServiceAccountServiceClient::new(ch.clone());
        let sa = sas
            .create_service_account(with(
                &admin,
                pb::CreateServiceAccountRequest {
                    service_account: Some(pb::ServiceAccount {
                        display_name: "load".into(),
                        role: pb::Role::TeamAdmin as i32,
                        audit_writer: true,
                        ..Default::default()
                    }),
                },
            ))
            .await?
            .into_inner()
            .service_account
            .ok_or_else(|| anyhow::anyhow!("no account"))?;
        let writer = sas
            .create_service_account_key(with(
                &admin,
                pb::CreateServiceAccountKeyRequest {
                    parent: sa.name,
                    key: Some(pb::ServiceAccountKey {
                        display_name: "load".into(),
                        ..Default::default()
                    }),
                },
            ))
            .await?
            .into_inner()
            .secret;
        Ok(Bench { ch, admin, writer })
    }

    async fn subscribe(&self, url: &str, stream: bool) -> anyhow::Result<String> {
        let w = WebhookServiceClient::new(self.ch.clone())
            .create_webhook(with(
                &self.admin,
                pb::CreateWebhookRequest {
                    webhook: Some(pb::Webhook {
                        display_name: "bench".into(),
                        url: url.into(),
                        format: if stream {
                            pb::WebhookFormat::AuditStream as i32
                        } else {
                            pb::WebhookFormat::Events as i32
                        },
                        event_types: if stream { vec![] } else { vec!["*".into()] },
                        enabled: true,
                        ..Default::default()
                    }),
                    start_after_sequence: None,
                },
            ))
            .await?
            .into_inner()
            .webhook
            .ok_or_else(|| anyhow::anyhow!("no webhook"))?;
        Ok(w.name)
    }

    async fn unsubscribe(&self, name: String) -> anyhow::Result<()> {
        WebhookServiceClient::new(self.ch.clone())
            .delete_webhook(with(
                &self.admin,
                pb::DeleteWebhookRequest {
                    name,
                    etag: String::new(),
                },
            ))
            .await?;
        Ok(())
    }

    /// Ingests `n` events in one call; answers their sequence numbers.
    async fn ingest(&self, n: usize) -> anyhow::Result<Vec<i64>> {
        let events = (0..n)
            .map(|i| pb::IngestedEvent {
                action: "feature.evaluated".into(),
                target_type: "feature".into(),
                target: format!("F{i}"),
                ..Default::default()
            })
            .collect();
        Ok(AuditServiceClient::new(self.ch.clone())
            .ingest_audit_events(with(&self.writer, pb::IngestAuditEventsRequest { events }))
            .await?
            .into_inner()
            .sequences)
    }
}

async fn wait(mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !done() {
        anyhow::ensure!(Instant::now() < deadline, "deliveries stalled");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let backend = arg("--backend").unwrap_or_else(|| "sqlite".into());
    let events: usize = arg("--events").map_or(Ok(20_000), |s| s.parse())?;
    let paced: usize = arg("--paced").map_or(Ok(500), |s| s.parse())?;
    let rate: f64 = arg("--rate").map_or(Ok(100.0), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let _schema;
    let url = match backend.as_str() {
        "sqlite" => format!("sqlite://{}", dir.path().join("bench.db").display()),
        "postgres" => {
            let s = fluxgate_store::testing::fresh_postgres()
                .ok_or_else(|| anyhow::anyhow!("PostgreSQL is unreachable"))?;
            let url = s.url.clone();
            _schema = s;
            url
        }
        other => anyhow::bail!("--backend sqlite|postgres, not {other}"),
    };
    let b = Bench::start(url).await?;
    println!("### Webhook delivery ({backend}, one replica, receiver on loopback)\n");
    println!("| what | events | seconds | events/s |");
    println!("|---|---|---|---|");
    for stream in [false, true] {
        let (url, got) = receiver().await?;
        let hook = b.subscribe(&url, stream).await?;
        let started = Instant::now();
        let mut last = 0;
        for _ in 0..events.div_ceil(500) {
            last = *b.ingest(500).await?.last().unwrap_or(&0);
        }
        let total = events.div_ceil(500) * 500;
        wait(|| {
            let r = got.lock().unwrap_or_else(|e| e.into_inner());
            if stream {
                r.lines >= total
            } else {
                r.at.contains_key(&last)
            }
        })
        .await?;
        let secs = started.elapsed().as_secs_f64();
        let what = if stream {
            "audit stream (100 per request)"
        } else {
            "webhook (one per request)"
        };
        println!(
            "| {what} | {total} | {secs:.2} | {:.0} |",
            total as f64 / secs
        );
        b.unsubscribe(hook).await?;
    }

    let (url, got) = receiver().await?;
    let hook = b.subscribe(&url, false).await?;
    let mut committed: Vec<(i64, Instant)> = Vec::with_capacity(paced);
    let every = Duration::from_secs_f64(1.0 / rate);
    let mut next = Instant::now();
    for _ in 0..paced {
        tokio::time::sleep_until(next.into()).await;
        next += every;
        let seq = b.ingest(1).await?[0];
        committed.push((seq, Instant::now()));
    }
    let last = committed.last().map_or(0, |c| c.0);
    wait(|| {
        got.lock()
            .unwrap_or_else(|e| e.into_inner())
            .at
            .contains_key(&last)
    })
    .await?;
    let mut delays: Vec<Duration> = {
        let r = got.lock().unwrap_or_else(|e| e.into_inner());
        committed
            .iter()
            .filter_map(|(seq, at)| r.at.get(seq).map(|got| got.saturating_duration_since(*at)))
            .collect()
    };
    delays.sort();
    let pick = |q: f64| delays[((delays.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "\n### Commit to delivery ({backend}): {paced} events at {rate}/s, each its own commit\n"
    );
    println!("| median ms | p99 ms | max ms |");
    println!("|---|---|---|");
    println!(
        "| {:.1} | {:.1} | {:.1} |",
        ms(pick(0.5)),
        ms(pick(0.99)),
        ms(pick(1.0))
    );
    b.unsubscribe(hook).await?;
    Ok(())
}
