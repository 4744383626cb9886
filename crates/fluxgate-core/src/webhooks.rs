//! Webhooks: Team Admins subscribe an endpoint to events, and FluxGate tells it of each as it
//! commits, signed per the Standard Webhooks convention.
//!
//! The feed is the audit trail, which every change appends to in its own transaction and in
//! commit order: a rolled-back change has no event, so nothing is sent for it. [`fan_out`] (the
//! server's worker, after commit) copies the events past each subscription's cursor that it
//! selects into deliveries and moves the cursor, in one write transaction, so each event reaches
//! a subscription once whichever replica does it. [`claim`] and [`record`] hand the deliveries
//! out in feed order, one due run per subscription, and keep their log.

use fluxgate_authz::{Action, Target};
use fluxgate_domain::{DeliveryId, Refusal, ValidationError, Violations, WebhookId};
use fluxgate_store::audit::Event;
use fluxgate_store::webhooks::{self as store, NewDelivery};
use fluxgate_store::{DbConnection, Tx, audit};

pub use fluxgate_store::webhooks::{Delivery, DeliveryState, Format, Outcome, Webhook};

use crate::audit::AuditAction;
use crate::context::{Command, Ctx, Limits};
use crate::destinations;
use crate::error::{Error, Result};
use crate::etag;

/// Most subscriptions an organisation may have.
pub const MAX_WEBHOOKS: i64 = 100;
/// Most event types one subscription may select.
const MAX_EVENT_TYPES: usize = 100;
/// Longest secret overlap after a rotation (7 days, in seconds).
pub const MAX_OVERLAP_SECS: u64 = 7 * 86_400;
/// Events per audit-stream delivery at most.
pub const STREAM_BATCH: usize = 100;
/// The event type of an audit-stream batch.
pub const STREAM_TYPE: &str = "audit.events";

/// Event types that are not audit actions: derived from one (a `user.updated` that changed the
/// role is also a `user.role_changed`).
pub const DERIVED_TYPES: &[&str] = &["user.role_changed"];

pub fn name(id: WebhookId) -> String {
    format!("webhooks/{id}")
}

pub fn delivery_name(w: WebhookId, d: DeliveryId) -> String {
    format!("webhooks/{w}/deliveries/{d}")
}

/// Who may manage subscriptions and read their deliveries: Team Admins.
pub fn may_manage(cx: &Ctx<'_>) -> Result<()> {
    cx.authorize(Action::ManageWebhooks, Target::Org)
}

/// A new signing secret: `whsec_` and 32 random bytes in base64, as Standard Webhooks has it.
pub fn new_secret() -> String {
    use base64::Engine as _;
    use rand::Rng as _;
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// Every event type a subscription may name (besides `*` and `prefix.*`).
pub fn event_types() -> Vec<&'static str> {
    let mut all: Vec<&str> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
    all.extend_from_slice(DERIVED_TYPES);
    all.sort_unstable();
    all
}

fn check_event_types(v: &mut Violations, format: Format, types: &[String]) -> Vec<String> {
    let known = event_types();
    let mut out: Vec<String> = Vec::new();
    if format == Format::AuditStream {
        if !(types.is_empty() || types == ["*"]) {
            v.add(
                "webhook.event_types",
                "an audit stream carries every audit event: leave it empty or [\"*\"]",
            );
        }
        return vec!["*".into()];
    }
    if types.is_empty() {
        v.add(
            "webhook.event_types",
            "name at least one event type, or \"*\"",
        );
    }
    if types.len() > MAX_EVENT_TYPES {
        v.add(
            "webhook.event_types",
            format!("at most {MAX_EVENT_TYPES} event types"),
        );
    }
    for (i, t) in types.iter().enumerate() {
        let t = t.trim();
        let ok = t == "*"
            || known.contains(&t)
            || t.strip_suffix(".*").is_some_and(|p| {
                known
                    .iter()
                    .any(|k| k.split_once('.').is_some_and(|(n, _)| n == p))
            });
        if !ok {
            v.add(
                format!("webhook.event_types[{i}]"),
                format!("{t:?} is not an event type; use an audit action such as \"change_request.approved\", \"user.role_changed\", a namespace such as \"user.*\", or \"*\""),
            );
        } else if !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    }
    out
}

fn check_display_name(v: &mut Violations, s: &str) -> String {
    let s = s.trim();
    if s.is_empty() || s.chars().count() > 100 || s.chars().any(char::is_control) {
        v.add(
            "webhook.display_name",
            "must be 1 to 100 characters, without control characters",
        );
    }
    s.to_owned()
}

/// Checks a destination: HTTPS (HTTP only to a loopback address, or when the configuration
/// allows it), no credentials or fragment, and no special-purpose address unless its network is
/// allowed. Names are checked again, address by address, when the worker connects.
pub fn check_url(limits: &Limits, raw: &str) -> std::result::Result<String, String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > 2000 {
        return Err("must be an absolute https:// URL of at most 2000 characters".into());
    }
    let u = url::Url::parse(raw).map_err(|e| format!("is not a URL: {e}"))?;
    if !u.username().is_empty() || u.password().is_some() {
        return Err("must not carry credentials; the signature authenticates FluxGate".into());
    }
    if u.fragment().is_some() {
        return Err("must not have a #fragment".into());
    }
    let loopback_ip = match u.host() {
        Some(url::Host::Ipv4(a)) => Some(std::net::IpAddr::V4(a)),
        Some(url::Host::Ipv6(a)) => Some(std::net::IpAddr::V6(a)),
        Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => {
            Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
        }
        Some(url::Host::Domain(_)) => None,
        None => return Err("must name a host".into()),
    };
    match u.scheme() {
        "https" => {}
        "http"
            if limits.webhook_allow_http
                || loopback_ip.is_some_and(|ip| destinations::special(ip) == Some("loopback")) => {}
        "http" => {
            return Err(
                "must be https:// (http:// only to a loopback address, or with \
                 webhooks.allow_http)"
                    .into(),
            );
        }
        other => {
            return Err(format!(
                "the scheme {other}:// is not supported; use https://"
            ));
        }
    }
    // An address in the URL is judged now; a name (`localhost` too) when the worker resolves
    // it, at every connection.
    if let Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) = u.host()
        && let Some(ip) = loopback_ip
    {
        destinations::permitted(ip, &limits.webhook_private_networks)?;
    }
    Ok(u.to_string())
}

fn find(conn: &mut DbConnection, id: WebhookId) -> Result<Webhook> {
    store::find(conn, id)?.ok_or_else(|| Error::NotFound(format!("{} not found", name(id))))
}

/// The public view of a subscription, for the audit trail (never its secrets).
fn snapshot(w: &Webhook) -> Option<String> {
    Some(
        serde_json::json!({
            "display_name": w.display_name,
            "url": w.url,
            "format": w.format.as_str(),
            "event_types": w.event_types,
            "enabled": w.enabled,
        })
        .to_string(),
    )
}

/// Where a feed may start: at or after the last pruned event, at or before the newest (what
/// is past the ends now is OUT_OF_RANGE; a negative number was refused as invalid already).
fn check_start(conn: &mut DbConnection, seq: i64) -> Result<i64> {
    let head = audit::head_seq(conn)?;
    let floor = audit::latest_checkpoint(conn)?.map_or(0, |c| c.seq);
    if seq < floor || seq > head {
        return Err(Refusal::SequenceOutOfRange { floor, head }.into());
    }
    Ok(seq)
}

/// Every subscription, oldest first.
pub fn list(cx: &Ctx<'_>, conn: &mut DbConnection) -> Result<Vec<Webhook>> {
    may_manage(cx)?;
    Ok(store::list(conn)?)
}

/// One subscription.
pub fn get(cx: &Ctx<'_>, conn: &mut DbConnection, id: WebhookId) -> Result<Webhook> {
    may_manage(cx)?;
    find(conn, id)
}

/// A subscription's pending and failed deliveries.
pub fn backlog(cx: &Ctx<'_>, conn: &mut DbConnection, id: WebhookId) -> Result<(i64, i64)> {
    may_manage(cx)?;
    Ok(store::backlog(conn, id)?)
}

/// A page of a subscription's deliveries, newest first; one more than `limit` tells the caller
/// there is more.
pub fn deliveries(
    cx: &Ctx<'_>,
    conn: &mut DbConnection,
    id: WebhookId,
    states: &[DeliveryState],
    before: Option<DeliveryId>,
    limit: i64,
) -> Result<Vec<Delivery>> {
    may_manage(cx)?;
    find(conn, id)?;
    Ok(store::list_deliveries(conn, id, states, before, limit)?)
}

/// One delivery of a subscription.
pub fn delivery(
    cx: &Ctx<'_>,
    conn: &mut DbConnection,
    id: WebhookId,
    d: DeliveryId,
) -> Result<Delivery> {
    may_manage(cx)?;
    find_delivery(conn, id, d)
}

fn find_delivery(conn: &mut DbConnection, id: WebhookId, d: DeliveryId) -> Result<Delivery> {
    store::find_delivery(conn, d)?
        .filter(|x| x.webhook_id == id)
        .ok_or_else(|| Error::NotFound(format!("{} not found", delivery_name(id, d))))
}

/// Subscribes an endpoint.
#[derive(Debug, Clone)]
pub struct Create {
    pub display_name: String,
    pub url: String,
    pub format: Format,
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// Start after this audit sequence number (default: the newest, so only what comes next).
    pub start_after: Option<i64>,
}

impl Command for Create {
    type Output = Webhook;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        may_manage(cx)?;
        let mut v = Violations::new();
        check_display_name(&mut v, &self.display_name);
        if let Err(e) = check_url(cx.limits, &self.url) {
            v.add("webhook.url", e);
        }
        check_event_types(&mut v, self.format, &self.event_types);
        if self.start_after.is_some_and(|s| s < 0) {
            v.add("start_after_sequence", "must not be negative");
        }
        Ok(v.finish()?)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<Webhook> {
        let mut v = Violations::new();
        let display_name = check_display_name(&mut v, &self.display_name);
        let url = check_url(cx.limits, &self.url).map_err(|e| invalid("webhook.url", e))?;
        let event_types = check_event_types(&mut v, self.format, &self.event_types);
        v.finish()?;
        if store::count(tx.conn)? >= MAX_WEBHOOKS {
            return Err(Refusal::TooMany {
                what: "webhooks",
                max: MAX_WEBHOOKS as u64,
            }
            .into());
        }
        let cursor = match self.start_after {
            Some(s) => check_start(tx.conn, s)?,
            None => audit::head_seq(tx.conn)?,
        };
        let w = Webhook {
            id: WebhookId::generate(),
            display_name,
            url,
            format: self.format,
            event_types,
            secret: new_secret(),
            previous_secret: None,
            enabled: self.enabled,
            cursor_seq: cursor,
            version: 1,
            created_at: tx.now,
            updated_at: tx.now,
        };
        store::insert(tx.conn, &w)?;
        let mut e = cx.event(AuditAction::WebhookCreated, "webhook", Some(name(w.id)));
        e.after_json = snapshot(&w);
        e.detail = Some(format!("feed starts after event {cursor}"));
        audit::append(tx.conn, e, tx.now)?;
        Ok(w)
    }
}

fn invalid(field: &str, msg: String) -> Error {
    let mut v = Violations::new();
    v.add(field, msg);
    match v.finish() {
        Err(e) => Error::Invalid(e),
        Ok(()) => Error::Invalid(ValidationError { violations: vec![] }),
    }
}

/// Changes a subscription; `None` fields stay.
#[derive(Debug, Clone, Default)]
pub struct Update {
    pub id: Option<WebhookId>,
    pub etag: String,
    pub display_name: Option<String>,
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

impl Command for Update {
    type Output = Webhook;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        may_manage(cx)?;
        let mut v = Violations::new();
        if let Some(n) = &self.display_name {
            check_display_name(&mut v, n);
        }
        if let Some(u) = &self.url
            && let Err(e) = check_url(cx.limits, u)
        {
            v.add("webhook.url", e);
        }
        if let Some(t) = &self.event_types
            && !(t.is_empty() || t == &["*"])
        {
            check_event_types(&mut v, Format::Events, t);
        }
        Ok(v.finish()?)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<Webhook> {
        let id = self
            .id
            .ok_or_else(|| Error::Broken("an update without a webhook".into()))?;
        let before = find(tx.conn, id)?;
        etag::check(&self.etag, id, before.version)?;
        let mut v = Violations::new();
        let mut after = before.clone();
        if let Some(n) = &self.display_name {
            after.display_name = check_display_name(&mut v, n);
        }
        if let Some(u) = &self.url {
            match check_url(cx.limits, u) {
                Ok(u) => after.url = u,
                Err(e) => v.add("webhook.url", e),
            }
        }
        if let Some(t) = &self.event_types {
            after.event_types = check_event_types(&mut v, before.format, t);
        }
        if let Some(e) = self.enabled {
            after.enabled = e;
        }
        v.finish()?;
        if after == before {
            return Ok(before);
        }
        if after.enabled && !before.enabled {
            // Re-enabled: resume where the trail still is, if it was pruned meanwhile.
            let floor = audit::latest_checkpoint(tx.conn)?.map_or(0, |c| c.seq);
            after.cursor_seq = after.cursor_seq.max(floor);
        }
        after.version += 1;
        after.updated_at = tx.now;
        store::save(tx.conn, &after)?;
        let mut e = cx.event(AuditAction::WebhookUpdated, "webhook", Some(name(id)));
        e.before_json = snapshot(&before);
        e.after_json = snapshot(&after);
        audit::append(tx.conn, e, tx.now)?;
        Ok(after)
    }
}

/// Deletes a subscription and its delivery log.
#[derive(Debug, Clone)]
pub struct Delete {
    pub id: WebhookId,
    pub etag: String,
}

impl Command for Delete {
    type Output = ();

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        may_manage(cx)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<()> {
        let before = find(tx.conn, self.id)?;
        etag::check(&self.etag, self.id, before.version)?;
        store::delete(tx.conn, self.id)?;
        let mut e = cx.event(AuditAction::WebhookDeleted, "webhook", Some(name(self.id)));
        e.before_json = snapshot(&before);
        audit::append(tx.conn, e, tx.now)?;
        Ok(())
    }
}

/// Replaces the signing secret; the old one keeps signing alongside for `overlap_secs`, so the
/// receiver can switch without losing a message.
#[derive(Debug, Clone)]
pub struct RotateSecret {
    pub id: WebhookId,
    pub overlap_secs: u64,
}

impl Command for RotateSecret {
    type Output = Webhook;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        may_manage(cx)?;
        if self.overlap_secs > MAX_OVERLAP_SECS {
            return Err(invalid(
                "overlap",
                format!("must be at most {MAX_OVERLAP_SECS} seconds (7 days)"),
            ));
        }
        Ok(())
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<Webhook> {
        let mut w = find(tx.conn, self.id)?;
        let old = std::mem::replace(&mut w.secret, new_secret());
        w.previous_secret =
            (self.overlap_secs > 0).then(|| (old, tx.now + self.overlap_secs as i64 * 1_000_000));
        w.version += 1;
        w.updated_at = tx.now;
        store::save(tx.conn, &w)?;
        let mut e = cx.event(
            AuditAction::WebhookSecretRotated,
            "webhook",
            Some(name(self.id)),
        );
        e.detail = Some(format!(
            "the previous secret signs too for {} s",
            self.overlap_secs
        ));
        audit::append(tx.conn, e, tx.now)?;
        Ok(w)
    }
}

/// Sends a delivered or failed message again, ahead of what is pending (same `webhook-id`, so
/// a receiver that already has it can tell).
#[derive(Debug, Clone)]
pub struct Redeliver {
    pub webhook: WebhookId,
    pub delivery: DeliveryId,
}

impl Command for Redeliver {
    type Output = Delivery;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        may_manage(cx)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<Delivery> {
        let d = find_delivery(tx.conn, self.webhook, self.delivery)?;
        if d.state == DeliveryState::Pending {
            return Err(Refusal::NotRetryable { state: "pending" }.into());
        }
        store::requeue(tx.conn, d.id, tx.now)?;
        let mut e = cx.event(
            AuditAction::WebhookRedelivered,
            "webhook",
            Some(delivery_name(self.webhook, self.delivery)),
        );
        e.detail = Some(format!(
            "was {}; events {}..{}",
            d.state.as_str(),
            d.first_seq,
            d.last_seq
        ));
        audit::append(tx.conn, e, tx.now)?;
        find_delivery(tx.conn, self.webhook, self.delivery)
    }
}

/// Restarts a subscription's feed after an audit sequence number (a SIEM that lost data asks
/// again from where it has it): the pending deliveries are dropped and the events after it are
/// delivered afresh.
#[derive(Debug, Clone)]
pub struct Rewind {
    pub id: WebhookId,
    pub after_seq: i64,
}

impl Command for Rewind {
    type Output = Webhook;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        may_manage(cx)?;
        if self.after_seq < 0 {
            return Err(invalid("after_sequence", "must not be negative".into()));
        }
        Ok(())
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<Webhook> {
        let mut w = find(tx.conn, self.id)?;
        let seq = check_start(tx.conn, self.after_seq)?;
        let dropped = store::drop_pending(tx.conn, self.id)?;
        let was = w.cursor_seq;
        w.cursor_seq = seq;
        store::set_cursor(tx.conn, self.id, seq)?;
        let mut e = cx.event(AuditAction::WebhookRewound, "webhook", Some(name(self.id)));
        e.detail = Some(format!(
            "feed restarts after event {seq} (was at {was}); {dropped} pending deliveries dropped"
        ));
        audit::append(tx.conn, e, tx.now)?;
        Ok(w)
    }
}

/// How the server renders events for the wire: the one JSON form of an audit event (as
/// ExportAuditEvents has it).
pub trait Render {
    fn event_json(&self, e: &Event) -> String;
}

/// The event types an event answers to: its action, and those derived from it.
fn types_of(e: &Event) -> Vec<&str> {
    let mut t = vec![e.action.as_str()];
    if e.action == AuditAction::UserUpdated.as_str() && role_changed(e) {
        t.insert(0, "user.role_changed");
    }
    t
}

fn role_changed(e: &Event) -> bool {
    let role = |j: &Option<String>| {
        j.as_deref()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
            .and_then(|v| v.get("role").cloned())
    };
    role(&e.before_json) != role(&e.after_json)
}

fn selects(patterns: &[String], t: &str) -> bool {
    patterns.iter().any(|p| {
        p == "*"
            || p == t
            || p.strip_suffix(".*")
                .is_some_and(|ns| t.strip_prefix(ns).is_some_and(|rest| rest.starts_with('.')))
    })
}

/// The type a subscription receives `e` as, if it selects it: the most specific that matches.
fn selected_type<'e>(w: &Webhook, e: &'e Event) -> Option<&'e str> {
    types_of(e).into_iter().find(|t| selects(&w.event_types, t))
}

/// A Standard Webhooks message: `{"data":…,"timestamp":…,"type":…}` (keys sorted, no spaces).
fn envelope(event_type: &str, e: &Event, data: &str) -> String {
    format!(
        "{{\"data\":{data},\"timestamp\":{},\"type\":{}}}",
        serde_json::Value::String(crate::time::rfc3339(e.occurred_at)),
        serde_json::Value::String(event_type.to_owned()),
    )
}

/// Hands the audit events committed since each enabled subscription's cursor to it, as
/// deliveries, and moves the cursors; at most `batch` events per call. Answers the deliveries
/// queued. Runs in the caller's write transaction, so two replicas never hand out an event
/// twice.
pub fn fan_out(tx: &mut Tx<'_>, render: &dyn Render, batch: i64) -> Result<usize> {
    let hooks: Vec<Webhook> = store::list(tx.conn)?
        .into_iter()
        .filter(|w| w.enabled)
        .collect();
    let Some(from) = hooks.iter().map(|w| w.cursor_seq).min() else {
        return Ok(0);
    };
    let events = audit::list(tx.conn, from, batch)?;
    let Some(last) = events.last().map(|e| e.seq) else {
        return Ok(0);
    };
    let mut rendered: Vec<Option<String>> = vec![None; events.len()];
    let mut queued = 0;
    for w in hooks.iter().filter(|w| w.cursor_seq < last) {
        let mine = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.seq > w.cursor_seq);
        match w.format {
            Format::Events => {
                for (i, e) in mine {
                    let Some(t) = selected_type(w, e) else {
                        continue;
                    };
                    let data = rendered[i].get_or_insert_with(|| render.event_json(e));
                    let d = NewDelivery {
                        first_seq: e.seq,
                        last_seq: e.seq,
                        event_type: t.to_owned(),
                        payload: envelope(t, e, data),
                    };
                    store::enqueue(tx.conn, w.id, d, tx.now)?;
                    queued += 1;
                }
            }
            Format::AuditStream => {
                let mine: Vec<(usize, &Event)> = mine.collect();
                for chunk in mine.chunks(STREAM_BATCH) {
                    let mut lines = String::new();
                    for (i, e) in chunk {
                        lines.push_str(rendered[*i].get_or_insert_with(|| render.event_json(e)));
                        lines.push('\n');
                    }
                    let (Some(first), Some(end)) = (chunk.first(), chunk.last()) else {
                        continue;
                    };
                    let d = NewDelivery {
                        first_seq: first.1.seq,
                        last_seq: end.1.seq,
                        event_type: STREAM_TYPE.to_owned(),
                        payload: lines,
                    };
                    store::enqueue(tx.conn, w.id, d, tx.now)?;
                    queued += 1;
                }
            }
        }
        store::set_cursor(tx.conn, w.id, last)?;
    }
    Ok(queued)
}

/// What a subscription's claimed run needs to be sent.
#[derive(Debug, Clone)]
pub struct Run {
    pub webhook: WebhookId,
    pub url: String,
    pub format: Format,
    /// The secrets that sign: the current one, and the previous one within its overlap.
    pub secrets: Vec<String>,
    pub deliveries: Vec<Delivery>,
    /// The claim the deliveries are leased to (see [`record`]).
    pub token: String,
}

/// Claims, for up to `max_runs` enabled subscriptions, the due run at the head of its feed (up
/// to `per_run` deliveries), leased to the claim `token` for `lease_per_delivery` each. In the
/// caller's write transaction. A claimer that cannot tell whether its claim committed (the
/// database went away meanwhile) gives the deliveries back with [`release`].
pub fn claim(
    tx: &mut Tx<'_>,
    token: &str,
    lease_per_delivery: i64,
    per_run: i64,
    max_runs: i64,
) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    for w in store::list(tx.conn)?.into_iter().filter(|w| w.enabled) {
        if runs.len() as i64 >= max_runs {
            break;
        }
        let lease = lease_per_delivery * per_run;
        let deliveries = store::claim_run(tx.conn, w.id, tx.now, lease, per_run, token)?;
        if deliveries.is_empty() {
            continue;
        }
        let mut secrets = vec![w.secret];
        if let Some((s, until)) = w.previous_secret
            && until > tx.now
        {
            secrets.push(s);
        }
        runs.push(Run {
            webhook: w.id,
            url: w.url,
            format: w.format,
            secrets,
            deliveries,
            token: token.to_owned(),
        });
    }
    Ok(runs)
}

/// Records the outcomes of a run's attempts, for the deliveries still leased to its claim
/// `token`: recording again after a failed record is safe, and a late record changes nothing
/// that another claim has taken since.
pub fn record(tx: &mut Tx<'_>, token: &str, outcomes: &[(DeliveryId, Outcome)]) -> Result<()> {
    for (id, o) in outcomes {
        store::record(tx.conn, *id, o, tx.now, token)?;
    }
    Ok(())
}

/// Gives back the deliveries of a claim that were never attempted, due at once; how many.
pub fn release(tx: &mut Tx<'_>, token: &str) -> Result<usize> {
    Ok(store::release(tx.conn, token, tx.now)?)
}

/// Whether some delivery is due (a cheap read before a claim).
pub fn due(conn: &mut DbConnection, now: i64) -> Result<bool> {
    Ok(store::has_due(conn, now)?)
}

/// Forgets deliveries that succeeded before `before` (the log keeps failures).
pub fn forget_delivered(tx: &mut Tx<'_>, before: i64) -> Result<usize> {
    Ok(store::forget_delivered(tx.conn, before)?)
}

/// Whether there is anything past the lowest enabled cursor (a cheap read before a fan-out).
pub fn behind(conn: &mut DbConnection) -> Result<bool> {
    let Some(min) = store::min_enabled_cursor(conn)? else {
        return Ok(false);
    };
    Ok(audit::head_seq(conn)? > min)
}

/// Checks an event-type list without a subscription (for the console's form).
pub fn validate_event_types(types: &[String]) -> std::result::Result<(), ValidationError> {
    let mut v = Violations::new();
    check_event_types(&mut v, Format::Events, types);
    v.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(action: &str, before: Option<&str>, after: Option<&str>) -> Event {
        Event {
            seq: 1,
            occurred_at: 0,
            actor_id: None,
            actor_name: None,
            actor_role: None,
            action: action.into(),
            target_type: "user".into(),
            target_id: None,
            before_json: before.map(String::from),
            after_json: after.map(String::from),
            outcome: "success".into(),
            detail: None,
            request_id: None,
            peer_addr: None,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn patterns_select_actions_namespaces_and_derived_types() {
        let p = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(selects(&p(&["*"]), "user.created"));
        assert!(selects(&p(&["user.*"]), "user.created"));
        assert!(!selects(&p(&["user.*"]), "users.created"));
        assert!(!selects(
            &p(&["change_request.approved"]),
            "change_request.applied"
        ));
        let role = ev(
            "user.updated",
            Some(r#"{"role":"requester"}"#),
            Some(r#"{"role":"approver"}"#),
        );
        assert_eq!(types_of(&role), ["user.role_changed", "user.updated"]);
        let other = ev(
            "user.updated",
            Some(r#"{"role":"x"}"#),
            Some(r#"{"role":"x"}"#),
        );
        assert_eq!(types_of(&other), ["user.updated"]);
    }

    #[test]
    fn event_type_lists_are_checked() {
        let ok = |t: &[&str]| {
            validate_event_types(&t.iter().map(|s| s.to_string()).collect::<Vec<_>>()).is_ok()
        };
        assert!(ok(&["change_request.submitted", "user.role_changed"]));
        assert!(ok(&["change_request.*", "*"]));
        assert!(!ok(&[]));
        assert!(!ok(&["change_request.nope"]));
        assert!(!ok(&["nope.*"]));
    }

    #[test]
    fn urls_must_be_https_or_loopback_http_and_public_unless_allowed() {
        let mut l = Limits::default();
        assert!(check_url(&l, "https://hooks.example.com/x").is_ok());
        assert!(check_url(&l, "http://hooks.example.com/x").is_err());
        assert!(check_url(&l, "https://user:pw@hooks.example.com/").is_err());
        assert!(check_url(&l, "ftp://hooks.example.com/").is_err());
        assert!(check_url(&l, "https://169.254.169.254/latest").is_err());
        assert!(
            check_url(&l, "http://127.0.0.1:9/").is_err(),
            "loopback not allowed"
        );
        assert!(
            check_url(&l, "http://localhost:9/").is_ok(),
            "a name is judged when it is resolved"
        );
        l.webhook_private_networks = vec!["127.0.0.0/8".parse().unwrap_or(destinations::Network {
            addr: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            prefix: 8,
        })];
        assert!(check_url(&l, "http://127.0.0.1:9/").is_ok());
        assert!(check_url(&l, "http://localhost:9/").is_ok());
        assert!(check_url(&l, "http://10.0.0.1/").is_err());
        l.webhook_allow_http = true;
        assert!(check_url(&l, "http://hooks.example.com/x").is_ok());
    }
}
