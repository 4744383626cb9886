//! Prometheus metrics: per-RPC requests, codes and latencies (recorded by
//! [`crate::telemetry`]), logins, lockouts, and gauges read at scrape time (pending approvals,
//! database pool, directory revision, email outbox). Served as text on `GET /metrics` of the
//! `metrics_listen` address.
//!
//! Each server has its own registry (no global recorder), so that several servers in one
//! process (the tests) keep separate counts.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::db::Db;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub method: &'static str,
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: &'static str,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum LoginOutcome {
    Success,
    /// Unknown user or wrong password.
    Failure,
    /// Refused because the account is locked.
    Locked,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: LoginOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// An open stream, counted by a gauge until dropped.
#[derive(Debug)]
pub struct StreamGuard(Gauge);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

type HistogramFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs to about 13 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

pub struct Metrics {
    registry: Registry,
    rpc_requests: Family<RpcLabels, Counter>,
    rpc_duration: HistogramFamily,
    logins: Family<OutcomeLabels, Counter>,
    lockouts: Counter,
    pending_approvals: Gauge,
    pool_connections: Family<StateLabels, Gauge>,
    pool_max: Gauge,
    directory_revision: Gauge,
    outbox: Family<StateLabels, Gauge>,
    webhook_queued: Counter,
    webhook_attempts: Family<StateLabels, Counter>,
    webhook_attempt_duration: Histogram,
    webhook_delivery_lag: Histogram,
    watch_streams: Gauge,
    watch_feeds: Gauge,
    watch_reads: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fluxgate");
        let rpc_requests = Family::<RpcLabels, Counter>::default();
        registry.register(
            "rpc_requests",
            "Finished gRPC calls by method and status code",
            rpc_requests.clone(),
        );
        let rpc_duration = HistogramFamily::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "rpc_duration",
            "Time from a call's arrival to its status, by method",
            prometheus_client::registry::Unit::Seconds,
            rpc_duration.clone(),
        );
        let logins = Family::<OutcomeLabels, Counter>::default();
        registry.register("logins", "Password logins by outcome", logins.clone());
        let lockouts = Counter::default();
        registry.register(
            "lockouts",
            "Accounts locked after too many failed logins",
            lockouts.clone(),
        );
        let pending_approvals = Gauge::default();
        registry.register(
            "pending_approvals",
            "Change requests waiting for a decision",
            pending_approvals.clone(),
        );
        let pool_connections = Family::<StateLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Database pool connections by state (idle or in use)",
            pool_connections.clone(),
        );
        let pool_max = Gauge::default();
        registry.register(
            "db_pool_max_connections",
            "Database pool size limit",
            pool_max.clone(),
        );
        let directory_revision = Gauge::default();
        registry.register(
            "directory_revision",
            "Change-log revision the in-memory directory has caught up with",
            directory_revision.clone(),
        );
        let outbox = Family::<StateLabels, Gauge>::default();
        registry.register("outbox_messages", "Email messages by state", outbox.clone());
        let webhook_queued = Counter::default();
        registry.register(
            "webhook_deliveries_queued",
            "Webhook and audit-stream deliveries handed to subscriptions",
            webhook_queued.clone(),
        );
        let webhook_attempts = Family::<StateLabels, Counter>::default();
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts by outcome (delivered or failed)",
            webhook_attempts.clone(),
        );
        let webhook_attempt_duration = latency_histogram();
        registry.register_with_unit(
            "webhook_attempt_duration",
            "Time one webhook request took",
            prometheus_client::registry::Unit::Seconds,
            webhook_attempt_duration.clone(),
        );
        let webhook_delivery_lag = latency_histogram();
        registry.register_with_unit(
            "webhook_delivery_lag",
            "Time from a delivery's queueing (its event's commit) to its acceptance",
            prometheus_client::registry::Unit::Seconds,
            webhook_delivery_lag.clone(),
        );
        let watch_streams = Gauge::default();
        registry.register(
            "watch_streams",
            "Open WatchChangeRequest streams",
            watch_streams.clone(),
        );
        let watch_feeds = Gauge::default();
        registry.register(
            "watch_feeds",
            "Change requests watched now (one shared feed each)",
            watch_feeds.clone(),
        );
        let watch_reads = Counter::default();
        registry.register(
            "watch_reads",
            "Database reads made by the watch feeds (one per change of a watched request)",
            watch_reads.clone(),
        );
        Self {
            registry,
            watch_streams,
            watch_feeds,
            watch_reads,
            webhook_queued,
            webhook_attempts,
            webhook_attempt_duration,
            webhook_delivery_lag,
            rpc_requests,
            rpc_duration,
            logins,
            lockouts,
            pending_approvals,
            pool_connections,
            pool_max,
            directory_revision,
            outbox,
        }
    }

    /// Records a finished call.
    pub fn rpc(&self, method: &'static str, code: &'static str, seconds: f64) {
        self.rpc_requests
            .get_or_create(&RpcLabels { method, code })
            .inc();
        self.rpc_duration
            .get_or_create(&MethodLabels { method })
            .observe(seconds);
    }

    pub fn login(&self, outcome: LoginOutcome) {
        self.logins.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn lockout(&self) {
        self.lockouts.inc();
    }

    pub fn webhook_queued(&self, n: u64) {
        self.webhook_queued.inc_by(n);
    }

    pub fn webhook_attempt(&self, delivered: bool, seconds: f64) {
        let state = if delivered { "delivered" } else { "failed" };
        self.webhook_attempts
            .get_or_create(&StateLabels { state })
            .inc();
        self.webhook_attempt_duration.observe(seconds);
    }

    /// Counts an open watch stream until the guard drops.
    pub fn watch_stream(&self) -> StreamGuard {
        self.watch_streams.inc();
        StreamGuard(self.watch_streams.clone())
    }

    pub fn watch_feeds(&self, n: usize) {
        self.watch_feeds.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn watch_read(&self) {
        self.watch_reads.inc();
    }

    pub fn webhook_delivered(&self, lag_seconds: f64) {
        self.webhook_delivery_lag.observe(lag_seconds);
    }

    /// The text exposition, with the scrape-time gauges read first.
    pub async fn render(&self, db: &Db, pool_max: u32, directory_revision: i64) -> String {
        let (open, idle) = db.store().pool_state();
        self.pool_connections
            .get_or_create(&StateLabels { state: "idle" })
            .set(i64::from(idle));
        self.pool_connections
            .get_or_create(&StateLabels { state: "in_use" })
            .set(i64::from(open.saturating_sub(idle)));
        self.pool_max.set(i64::from(pool_max));
        self.directory_revision.set(directory_revision);
        let counts = db
            .read(|conn| {
                let pending = fluxgate_store::approvals::count_pending(conn)?;
                let outbox = fluxgate_store::outbox::count_by_state(conn)?;
                Ok((pending, outbox))
            })
            .await;
        match counts {
            Ok((pending, outbox)) => {
                self.pending_approvals.set(pending);
                for s in ["pending", "sent", "failed", "held"] {
                    let n = outbox
                        .iter()
                        .find(|(state, _)| state == s)
                        .map_or(0, |(_, n)| *n);
                    self.outbox.get_or_create(&StateLabels { state: s }).set(n);
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading metrics from the database failed"),
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}
