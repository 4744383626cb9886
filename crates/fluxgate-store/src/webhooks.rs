//! Webhook subscriptions and their deliveries.
//!
//! A subscription's feed is the audit trail: [`feed_after`] reads the events after its cursor,
//! the caller turns those it selects into deliveries and moves the cursor, all in one write
//! transaction (so every event reaches a subscription once, whichever replica does the work).
//! Deliveries go out in feed order: only a subscription's head (its oldest pending delivery) and
//! the due run behind it are ever claimed.

use diesel::prelude::*;
use fluxgate_domain::{DeliveryId, WebhookId};

use crate::schema::{webhook_deliveries as wd, webhooks as wh};
use crate::{DbConnection, StoreError, StoreResult};

/// What a subscription is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// One Standard Webhooks message (a JSON envelope) per selected event.
    Events,
    /// Every audit event, as batches of JSON lines in chain order (a SIEM's feed).
    AuditStream,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Events => "events",
            Format::AuditStream => "audit_stream",
        }
    }

    fn parse(s: &str) -> StoreResult<Format> {
        match s {
            "events" => Ok(Format::Events),
            "audit_stream" => Ok(Format::AuditStream),
            other => Err(StoreError::Corrupt(format!("webhooks.format {other:?}"))),
        }
    }
}

/// A subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: WebhookId,
    pub display_name: String,
    pub url: String,
    pub format: Format,
    /// Audit actions, `prefix.*` patterns, or `*`.
    pub event_types: Vec<String>,
    pub secret: String,
    /// The secret before the last rotation, and until when it still signs.
    pub previous_secret: Option<(String, i64)>,
    pub enabled: bool,
    /// The last audit sequence number handed to this subscription.
    pub cursor_seq: i64,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = wh, treat_none_as_null = true)]
struct Row {
    id: String,
    display_name: String,
    url: String,
    format: String,
    event_types: String,
    secret: String,
    previous_secret: Option<String>,
    previous_secret_expires_at: Option<i64>,
    enabled: bool,
    cursor_seq: i64,
    version: i64,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<Row> for Webhook {
    type Error = StoreError;
    fn try_from(r: Row) -> StoreResult<Webhook> {
        Ok(Webhook {
            id: r
                .id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("webhooks.id {:?}", r.id)))?,
            format: Format::parse(&r.format)?,
            event_types: r.event_types.split_whitespace().map(String::from).collect(),
            previous_secret: r.previous_secret.zip(r.previous_secret_expires_at),
            display_name: r.display_name,
            url: r.url,
            secret: r.secret,
            enabled: r.enabled,
            cursor_seq: r.cursor_seq,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

impl From<&Webhook> for Row {
    fn from(w: &Webhook) -> Row {
        Row {
            id: w.id.to_string(),
            display_name: w.display_name.clone(),
            url: w.url.clone(),
            format: w.format.as_str().to_owned(),
            event_types: w.event_types.join(" "),
            secret: w.secret.clone(),
            previous_secret: w.previous_secret.as_ref().map(|p| p.0.clone()),
            previous_secret_expires_at: w.previous_secret.as_ref().map(|p| p.1),
            enabled: w.enabled,
            cursor_seq: w.cursor_seq,
            version: w.version,
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

pub fn insert(conn: &mut DbConnection, w: &Webhook) -> StoreResult<()> {
    diesel::insert_into(wh::table)
        .values(Row::from(w))
        .execute(conn)?;
    Ok(())
}

/// Saves every field of `w` as it is.
pub fn save(conn: &mut DbConnection, w: &Webhook) -> StoreResult<()> {
    diesel::update(wh::table.find(w.id.to_string()))
        .set(Row::from(w))
        .execute(conn)?;
    Ok(())
}

/// Deletes a subscription and its deliveries; false when there was none.
pub fn delete(conn: &mut DbConnection, id: WebhookId) -> StoreResult<bool> {
    diesel::delete(wd::table.filter(wd::webhook_id.eq(id.to_string()))).execute(conn)?;
    Ok(diesel::delete(wh::table.find(id.to_string())).execute(conn)? > 0)
}

pub fn find(conn: &mut DbConnection, id: WebhookId) -> StoreResult<Option<Webhook>> {
    wh::table
        .find(id.to_string())
        .select(Row::as_select())
        .first::<Row>(conn)
        .optional()?
        .map(Webhook::try_from)
        .transpose()
}

/// Every subscription, oldest first.
pub fn list(conn: &mut DbConnection) -> StoreResult<Vec<Webhook>> {
    wh::table
        .order(wh::id.asc())
        .select(Row::as_select())
        .load::<Row>(conn)?
        .into_iter()
        .map(Webhook::try_from)
        .collect()
}

pub fn count(conn: &mut DbConnection) -> StoreResult<i64> {
    Ok(wh::table.count().get_result(conn)?)
}

/// Moves a subscription's cursor (the worker's fan-out; not a change of the subscription, so
/// its version stays).
pub fn set_cursor(conn: &mut DbConnection, id: WebhookId, seq: i64) -> StoreResult<()> {
    diesel::update(wh::table.find(id.to_string()))
        .set(wh::cursor_seq.eq(seq))
        .execute(conn)?;
    Ok(())
}

/// The lowest cursor of the enabled subscriptions: audit events after it are not yet handed to
/// all of them, so the trail must keep them.
pub fn min_enabled_cursor(conn: &mut DbConnection) -> StoreResult<Option<i64>> {
    Ok(wh::table
        .filter(wh::enabled.eq(true))
        .select(diesel::dsl::min(wh::cursor_seq))
        .first::<Option<i64>>(conn)?)
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Waiting for its turn, an attempt, or the next attempt after a failure.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Given up after the last attempt.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> StoreResult<DeliveryState> {
        match s {
            "pending" => Ok(DeliveryState::Pending),
            "delivered" => Ok(DeliveryState::Delivered),
            "failed" => Ok(DeliveryState::Failed),
            other => Err(StoreError::Corrupt(format!(
                "webhook_deliveries.state {other:?}"
            ))),
        }
    }
}

/// One message to one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: DeliveryId,
    pub webhook_id: WebhookId,
    /// The audit events it carries: one for an event message, a run for a stream batch.
    pub first_seq: i64,
    pub last_seq: i64,
    pub event_type: String,
    /// The request body, exactly as signed.
    pub payload: String,
    pub state: DeliveryState,
    pub attempts: i32,
    pub next_attempt_at: Option<i64>,
    pub last_attempt_at: Option<i64>,
    /// The HTTP status of the last attempt (none when it got no answer).
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = wd)]
struct DeliveryRow {
    id: String,
    webhook_id: String,
    first_seq: i64,
    last_seq: i64,
    event_type: String,
    payload: String,
    state: String,
    attempts: i32,
    next_attempt_at: Option<i64>,
    last_attempt_at: Option<i64>,
    last_status: Option<i32>,
    last_error: Option<String>,
    created_at: i64,
    delivered_at: Option<i64>,
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = StoreError;
    fn try_from(r: DeliveryRow) -> StoreResult<Delivery> {
        let corrupt =
            |what: &str, v: &str| StoreError::Corrupt(format!("webhook_deliveries.{what} {v:?}"));
        Ok(Delivery {
            id: r.id.parse().map_err(|_| corrupt("id", &r.id))?,
            webhook_id: r
                .webhook_id
                .parse()
                .map_err(|_| corrupt("webhook_id", &r.webhook_id))?,
            state: DeliveryState::parse(&r.state)?,
            first_seq: r.first_seq,
            last_seq: r.last_seq,
            event_type: r.event_type,
            payload: r.payload,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            last_attempt_at: r.last_attempt_at,
            last_status: r.last_status,
            last_error: r.last_error,
            created_at: r.created_at,
            delivered_at: r.delivered_at,
        })
    }
}

/// A message to queue for a subscription; due at once.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub first_seq: i64,
    pub last_seq: i64,
    pub event_type: String,
    pub payload: String,
}

pub fn enqueue(
    conn: &mut DbConnection,
    webhook: WebhookId,
    d: NewDelivery,
    now: i64,
) -> StoreResult<DeliveryId> {
    let id = DeliveryId::generate();
    diesel::insert_into(wd::table)
        .values(DeliveryRow {
            id: id.to_string(),
            webhook_id: webhook.to_string(),
            first_seq: d.first_seq,
            last_seq: d.last_seq,
            event_type: d.event_type,
            payload: d.payload,
            state: DeliveryState::Pending.as_str().to_owned(),
            attempts: 0,
            next_attempt_at: Some(now),
            last_attempt_at: None,
            last_status: None,
            last_error: None,
            created_at: now,
            delivered_at: None,
        })
        .execute(conn)?;
    Ok(id)
}

/// Claims the due run at the head of a subscription's feed: its oldest pending deliveries, up
/// to `limit`, stopping at the first that is not due (leased to another attempt or backing
/// off). Each counts an attempt and is leased for `lease_micros`. Call inside a write
/// transaction, so that no two replicas claim the same delivery.
pub fn claim_run(
    conn: &mut DbConnection,
    webhook: WebhookId,
    now: i64,
    lease_micros: i64,
    limit: i64,
    token: &str,
) -> StoreResult<Vec<Delivery>> {
    let rows: Vec<DeliveryRow> = wd::table
        .filter(wd::webhook_id.eq(webhook.to_string()))
        .filter(wd::state.eq(DeliveryState::Pending.as_str()))
        .order(wd::first_seq.asc())
        .limit(limit)
        .select(DeliveryRow::as_select())
        .load(conn)?;
    let mut run = Vec::new();
    for r in rows {
        if r.next_attempt_at.is_some_and(|t| t > now) {
            break;
        }
        run.push(Delivery::try_from(r)?);
    }
    if !run.is_empty() {
        let ids: Vec<String> = run.iter().map(|d| d.id.to_string()).collect();
        diesel::update(wd::table.filter(wd::id.eq_any(&ids)))
            .set((
                wd::attempts.eq(wd::attempts + 1),
                wd::next_attempt_at.eq(now + lease_micros),
                wd::lease_token.eq(token),
            ))
            .execute(conn)?;
        for d in &mut run {
            d.attempts += 1;
        }
    }
    Ok(run)
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answered 2xx.
    Delivered { status: i32 },
    /// Refused or unanswered: due again at `retry_at`, or given up when that is `None`.
    Failed {
        status: Option<i32>,
        error: String,
        retry_at: Option<i64>,
    },
    /// Not attempted (an earlier delivery of the run failed): due again at once, behind it.
    Released,
}

/// Records an attempt's outcome, if the delivery is still leased to the claim `token` (a
/// record that comes late, after the lease ran out and another claim took it, changes nothing).
pub fn record(
    conn: &mut DbConnection,
    id: DeliveryId,
    outcome: &Outcome,
    now: i64,
    token: &str,
) -> StoreResult<()> {
    let row = wd::table
        .find(id.to_string())
        .filter(wd::lease_token.eq(token));
    let none = None::<String>;
    match outcome {
        Outcome::Delivered { status } => diesel::update(row)
            .set((
                wd::state.eq(DeliveryState::Delivered.as_str()),
                wd::next_attempt_at.eq(None::<i64>),
                wd::last_attempt_at.eq(now),
                wd::last_status.eq(*status),
                wd::last_error.eq(None::<String>),
                wd::delivered_at.eq(now),
                wd::lease_token.eq(none),
            ))
            .execute(conn)?,
        Outcome::Failed {
            status,
            error,
            retry_at,
        } => diesel::update(row)
            .set((
                wd::state.eq(if retry_at.is_some() {
                    DeliveryState::Pending.as_str()
                } else {
                    DeliveryState::Failed.as_str()
                }),
                wd::next_attempt_at.eq(*retry_at),
                wd::last_attempt_at.eq(now),
                wd::last_status.eq(*status),
                wd::last_error.eq(error),
                wd::lease_token.eq(none),
            ))
            .execute(conn)?,
        Outcome::Released => diesel::update(row)
            .set((
                wd::attempts.eq(wd::attempts - 1),
                wd::next_attempt_at.eq(now),
                wd::lease_token.eq(none),
            ))
            .execute(conn)?,
    };
    Ok(())
}

/// Gives back, due at once, the pending deliveries leased to the claim `token` that were never
/// attempted (a claim whose outcome the claimer could not learn); how many.
pub fn release(conn: &mut DbConnection, token: &str, now: i64) -> StoreResult<usize> {
    Ok(diesel::update(
        wd::table
            .filter(wd::lease_token.eq(token))
            .filter(wd::state.eq(DeliveryState::Pending.as_str())),
    )
    .set((
        wd::attempts.eq(wd::attempts - 1),
        wd::next_attempt_at.eq(now),
        wd::lease_token.eq(None::<String>),
    ))
    .execute(conn)?)
}

pub fn find_delivery(conn: &mut DbConnection, id: DeliveryId) -> StoreResult<Option<Delivery>> {
    wd::table
        .find(id.to_string())
        .select(DeliveryRow::as_select())
        .first::<DeliveryRow>(conn)
        .optional()?
        .map(Delivery::try_from)
        .transpose()
}

/// A page of a subscription's deliveries, newest first, before `before` (ids are time-ordered).
pub fn list_deliveries(
    conn: &mut DbConnection,
    webhook: WebhookId,
    states: &[DeliveryState],
    before: Option<DeliveryId>,
    limit: i64,
) -> StoreResult<Vec<Delivery>> {
    let mut q = wd::table
        .filter(wd::webhook_id.eq(webhook.to_string()))
        .into_boxed();
    if !states.is_empty() {
        q = q.filter(wd::state.eq_any(states.iter().map(|s| s.as_str())));
    }
    if let Some(b) = before {
        q = q.filter(wd::id.lt(b.to_string()));
    }
    q.order(wd::id.desc())
        .limit(limit)
        .select(DeliveryRow::as_select())
        .load::<DeliveryRow>(conn)?
        .into_iter()
        .map(Delivery::try_from)
        .collect()
}

/// Puts a delivery back in its subscription's feed, due at once with a fresh count of
/// attempts. Being older than what is pending behind it, it goes first.
pub fn requeue(conn: &mut DbConnection, id: DeliveryId, now: i64) -> StoreResult<()> {
    diesel::update(wd::table.find(id.to_string()))
        .set((
            wd::state.eq(DeliveryState::Pending.as_str()),
            wd::attempts.eq(0),
            wd::next_attempt_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// Drops a subscription's pending deliveries (before its feed is restarted elsewhere).
pub fn drop_pending(conn: &mut DbConnection, webhook: WebhookId) -> StoreResult<usize> {
    Ok(diesel::delete(
        wd::table
            .filter(wd::webhook_id.eq(webhook.to_string()))
            .filter(wd::state.eq(DeliveryState::Pending.as_str())),
    )
    .execute(conn)?)
}

/// (pending, failed) deliveries of a subscription.
pub fn backlog(conn: &mut DbConnection, webhook: WebhookId) -> StoreResult<(i64, i64)> {
    let rows: Vec<(String, i64)> = wd::table
        .filter(wd::webhook_id.eq(webhook.to_string()))
        .filter(wd::state.ne(DeliveryState::Delivered.as_str()))
        .group_by(wd::state)
        .select((wd::state, diesel::dsl::count_star()))
        .load(conn)?;
    let get = |s: DeliveryState| rows.iter().find(|r| r.0 == s.as_str()).map_or(0, |r| r.1);
    Ok((get(DeliveryState::Pending), get(DeliveryState::Failed)))
}

/// Whether an enabled subscription has a pending delivery that is due.
pub fn has_due(conn: &mut DbConnection, now: i64) -> StoreResult<bool> {
    let n: i64 = wd::table
        .inner_join(wh::table)
        .filter(wh::enabled.eq(true))
        .filter(wd::state.eq(DeliveryState::Pending.as_str()))
        .filter(wd::next_attempt_at.le(now))
        .count()
        .get_result(conn)?;
    Ok(n > 0)
}

/// Delivered messages older than `before` are forgotten (the log keeps failures and recent
/// history).
pub fn forget_delivered(conn: &mut DbConnection, before: i64) -> StoreResult<usize> {
    Ok(diesel::delete(
        wd::table
            .filter(wd::state.eq(DeliveryState::Delivered.as_str()))
            .filter(wd::delivered_at.lt(before)),
    )
    .execute(conn)?)
}
