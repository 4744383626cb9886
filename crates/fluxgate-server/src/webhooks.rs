//! The webhook worker: every replica runs one.
//!
//! A pass hands newly committed audit events to the subscriptions ([`webhooks::fan_out`]),
//! then claims the due run at the head of each subscription's feed ([`webhooks::claim`]), both
//! under the store's write lock, so no two replicas hand out or send the same delivery. Each run
//! is sent in order by its own task (at most `webhooks.concurrency` at once), so an endpoint that
//! hangs holds up only its own feed, for `webhooks.timeout_ms` per attempt. A failed attempt is
//! retried with exponential back-off; the run's later deliveries wait behind it.
//!
//! A claim or a record cut off by a database outage may have committed or not. Either way the
//! worker settles it by the claim's token at the start of its next pass, once the database is
//! back: an unconfirmed claim is released (its deliveries due again at once), an unrecorded run
//! is recorded. The subscription resumes then, not when the lease would have run out (up to
//! `run_length` times the time-out), and what was delivered is not sent again.
//!
//! Requests follow the Standard Webhooks convention: `webhook-id` (the delivery id, the same on
//! every attempt), `webhook-timestamp` (Unix seconds), and `webhook-signature`
//! (`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per live secret, space
//! separated). Redirects are not followed, proxies are not used, and every address a name
//! resolves to must pass [`fluxgate_core::destinations::permitted`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fluxgate_core::destinations::{self, Network};
use fluxgate_core::webhooks::{self, Delivery, Format, Outcome, Run};
use fluxgate_domain::DeliveryId;
use ring::hmac;
use tokio::sync::{Notify, Semaphore};

use crate::audit_json::AuditJson;
use crate::config::WebhooksConfig;
use crate::db::Db;
use crate::error::ApiResult;
use crate::metrics::Metrics;

/// Events handed out per fan-out transaction.
const FAN_OUT_BATCH: i64 = 1000;

/// Resolves names for the HTTP client, refusing any name with an address FluxGate may not
/// reach: the request-forgery rule applied at each connection, so a name that later resolves
/// inward (DNS rebinding) is refused too.
#[derive(Debug, Clone)]
struct GuardedResolver {
    allowed: Arc<Vec<Network>>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allowed = self.allowed.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for a in &addrs {
                destinations::permitted(a.ip(), &allowed)
                    .map_err(|e| format!("{host} resolves to {e}"))?;
            }
            let out: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(out)
        })
    }
}

/// Signs a message for every live secret: the `webhook-signature` header's value.
pub fn signature(secrets: &[String], id: &str, timestamp: i64, body: &str) -> String {
    let content = format!("{id}.{timestamp}.{body}");
    secrets
        .iter()
        .filter_map(|s| {
            let key = STANDARD
                .decode(s.strip_prefix("whsec_").unwrap_or(s))
                .ok()?;
            let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), content.as_bytes());
            Some(format!("v1,{}", STANDARD.encode(tag.as_ref())))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Delivers webhooks and audit streams.
#[derive(Debug)]
pub struct Dispatcher {
    client: reqwest::Client,
    config: WebhooksConfig,
    allowed: Arc<Vec<Network>>,
    /// Wakes the worker when a run finishes (the feed behind it may be due).
    kick: Notify,
    slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    /// Claims and records whose commit the worker could not confirm, to settle first.
    unsettled: std::sync::Mutex<Vec<Unsettled>>,
}

/// A write the database went away during.
#[derive(Debug)]
enum Unsettled {
    /// A claim: release what it may have leased.
    Claim(String),
    /// A run's outcomes: record them (by the claim's token).
    Record(String, Vec<(DeliveryId, Outcome)>),
}

impl Dispatcher {
    pub fn new(
        config: &WebhooksConfig,
        allowed: Vec<Network>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Dispatcher>> {
        let allowed = Arc::new(allowed);
        let timeout = Duration::from_millis(config.timeout_ms);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(4)
            .user_agent(concat!("FluxGate-Webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver {
                allowed: allowed.clone(),
            }))
            .build()?;
        Ok(Arc::new(Dispatcher {
            client,
            config: config.clone(),
            allowed,
            kick: Notify::new(),
            slots: Arc::new(Semaphore::new(config.concurrency as usize)),
            metrics,
            unsettled: std::sync::Mutex::default(),
        }))
    }

    /// Runs passes until the server stops: on every commit, every finished run, and every
    /// `poll_ms` (for the other replicas' commits and for retries coming due).
    pub async fn run(self: Arc<Self>, db: Db, mut stopping: tokio::sync::watch::Receiver<bool>) {
        let commits = db.commits();
        let every = Duration::from_millis(self.config.poll_ms);
        loop {
            if let Err(e) = self.pass(&db).await {
                tracing::warn!(error = %e, "webhook pass failed");
            }
            tokio::select! {
                () = commits.notified() => {}
                () = self.kick.notified() => {}
                () = tokio::time::sleep(every) => {}
                _ = stopping.changed() => return,
            }
            if *stopping.borrow() {
                return;
            }
        }
    }

    fn unsettled(&self) -> std::sync::MutexGuard<'_, Vec<Unsettled>> {
        self.unsettled.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Settles the claims and records cut off by an outage; stops at the first that fails
    /// again (the database is still away), keeping it and those after it.
    async fn settle(&self, db: &Db) -> ApiResult<()> {
        let pending = std::mem::take(&mut *self.unsettled());
        let mut pending = pending.into_iter();
        while let Some(u) = pending.next() {
            let result = match &u {
                Unsettled::Claim(token) => {
                    let token = token.clone();
                    db.write_quietly(move |tx| Ok(webhooks::release(tx, &token)?))
                        .await
                        .map(|c| {
                            tracing::info!(
                                released = c.value,
                                "settled a claim cut off by an outage"
                            );
                        })
                }
                Unsettled::Record(token, outcomes) => {
                    let (token, outcomes) = (token.clone(), outcomes.clone());
                    db.write_quietly(move |tx| Ok(webhooks::record(tx, &token, &outcomes)?))
                        .await
                        .map(|_| ())
                }
            };
            if let Err(e) = result {
                let mut left = self.unsettled();
                left.push(u);
                left.extend(pending);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Settles what an outage cut off, hands out what committed, then starts the runs that
    /// are due.
    pub async fn pass(self: &Arc<Self>, db: &Db) -> ApiResult<()> {
        self.settle(db).await?;
        while db.read(|c| Ok(webhooks::behind(c)?)).await? {
            let queued = db
                .write_quietly(|tx| Ok(webhooks::fan_out(tx, &AuditJson, FAN_OUT_BATCH)?))
                .await?
                .value;
            self.metrics.webhook_queued(queued as u64);
            if queued == 0 && !db.read(|c| Ok(webhooks::behind(c)?)).await? {
                break;
            }
        }
        let free = self.slots.available_permits() as i64;
        if free == 0
            || !db
                .read(|c| Ok(webhooks::due(c, fluxgate_store::now_micros())?))
                .await?
        {
            return Ok(());
        }
        let lease = (self.config.timeout_ms as i64 + 5_000) * 1_000;
        let per_run = i64::from(self.config.run_length);
        let token = uuid::Uuid::new_v4().to_string();
        let claim = token.clone();
        let runs = match db
            .write_quietly(move |tx| Ok(webhooks::claim(tx, &claim, lease, per_run, free)?))
            .await
        {
            Ok(c) => c.value,
            Err(e) => {
                self.unsettled().push(Unsettled::Claim(token));
                return Err(e);
            }
        };
        for run in runs {
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                break;
            };
            let (me, db) = (self.clone(), db.clone());
            tokio::spawn(async move {
                me.send_run(&db, run).await;
                drop(permit);
                me.kick.notify_one();
            });
        }
        Ok(())
    }

    /// Sends a run in order, stopping at the first failure; records every outcome.
    async fn send_run(&self, db: &Db, run: Run) {
        let mut outcomes: Vec<(DeliveryId, Outcome)> = Vec::with_capacity(run.deliveries.len());
        let mut failed = false;
        for d in &run.deliveries {
            if failed {
                outcomes.push((d.id, Outcome::Released));
                continue;
            }
            let started = Instant::now();
            let result = self.attempt(&run, d).await;
            self.metrics
                .webhook_attempt(result.is_ok(), started.elapsed().as_secs_f64());
            let outcome = match result {
                Ok(status) => {
                    let lag = fluxgate_store::now_micros() - d.created_at;
                    self.metrics.webhook_delivered(lag as f64 / 1e6);
                    Outcome::Delivered { status }
                }
                Err((status, error)) => {
                    failed = true;
                    let give_up = d.attempts as u32 >= self.config.max_attempts;
                    tracing::warn!(
                        webhook = %run.webhook, delivery = %d.id, attempts = d.attempts,
                        give_up, %error, "webhook delivery failed"
                    );
                    Outcome::Failed {
                        status,
                        error,
                        retry_at: (!give_up)
                            .then(|| fluxgate_store::now_micros() + self.backoff(d.attempts)),
                    }
                }
            };
            outcomes.push((d.id, outcome));
        }
        let (token, recorded) = (run.token.clone(), outcomes.clone());
        if let Err(e) = db
            .write_quietly(move |tx| Ok(webhooks::record(tx, &token, &recorded)?))
            .await
        {
            // Recorded by the next pass once the database is back (or, should this replica
            // stop first, sent again when the lease runs out: at least once, never lost).
            tracing::warn!(error = %e, webhook = %run.webhook, "recording deliveries failed; retrying");
            self.unsettled()
                .push(Unsettled::Record(run.token.clone(), outcomes));
        }
    }

    /// Microseconds to wait after `attempts` failed attempts: doubling from `retry_initial_ms`,
    /// at most an hour, with up to a tenth more at random so that retries spread out.
    fn backoff(&self, attempts: i32) -> i64 {
        use rand::RngExt as _;
        let base = (self.config.retry_initial_ms as i64 * 1_000)
            .saturating_mul(1 << attempts.clamp(1, 30).saturating_sub(1).min(20))
            .min(3_600_000_000);
        base + rand::rng().random_range(0..=base / 10)
    }

    /// One request: `Ok(status)` on 2xx, else the status (if any) and what went wrong.
    async fn attempt(&self, run: &Run, d: &Delivery) -> Result<i32, (Option<i32>, String)> {
        let url = reqwest::Url::parse(&run.url).map_err(|e| (None, format!("bad URL: {e}")))?;
        if let Some(ip) = url.host_str().and_then(literal_ip) {
            destinations::permitted(ip, &self.allowed).map_err(|e| (None, e))?;
        }
        let id = d.id.to_string();
        let ts = fluxgate_store::now_micros() / 1_000_000;
        let mut req = self
            .client
            .post(url)
            .header("webhook-id", &id)
            .header("webhook-timestamp", ts.to_string())
            .header(
                "webhook-signature",
                signature(&run.secrets, &id, ts, &d.payload),
            )
            .header("fluxgate-event-type", &d.event_type)
            .header("fluxgate-first-sequence", d.first_seq.to_string())
            .header("fluxgate-last-sequence", d.last_seq.to_string());
        req = match run.format {
            Format::Events => req.header("content-type", "application/json"),
            Format::AuditStream => req.header("content-type", "application/x-ndjson"),
        };
        let resp = req.body(d.payload.clone()).send().await.map_err(|e| {
            let what = if e.is_timeout() {
                format!("no answer within {} ms", self.config.timeout_ms)
            } else {
                error_chain(&e)
            };
            (None, what)
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(i32::from(status.as_u16()));
        }
        let body = tokio::time::timeout(Duration::from_secs(2), resp.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let body: String = body.chars().take(200).collect();
        Err((
            Some(i32::from(status.as_u16())),
            format!("HTTP {status}: {}", body.trim()),
        ))
    }
}

fn literal_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// An error and its causes, one line (reqwest's own message hides the interesting part).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn signatures_follow_the_standard_webhooks_convention() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned();
        let sig = signature(
            std::slice::from_ref(&secret),
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let two = signature(&[secret.clone(), secret], "m", 1, "b");
        assert_eq!(two.split(' ').count(), 2);
    }
}
