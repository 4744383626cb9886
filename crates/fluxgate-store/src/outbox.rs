//! The email outbox: every message FluxGate sends, written in the transaction of the change that
//! caused it, then delivered (and retried) by a background worker. Without SMTP, messages are
//! `held` here for a Team Admin to read.

use diesel::prelude::*;
use fluxgate_domain::{EmailId, UserId};

use crate::schema::outbox;
use crate::{CHUNK, DbConnection, StoreError, StoreResult};

/// Where a message is in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EmailState {
    /// Waiting for (another) delivery attempt.
    Pending,
    /// Accepted by the SMTP server. The body is discarded then: it may hold a secret link.
    Sent,
    /// Given up: a permanent SMTP error, or the attempts ran out.
    Failed,
    /// No SMTP server is configured: kept for a Team Admin to read.
    Held,
}

impl EmailState {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailState::Pending => "pending",
            EmailState::Sent => "sent",
            EmailState::Failed => "failed",
            EmailState::Held => "held",
        }
    }

    fn parse(s: &str) -> StoreResult<EmailState> {
        Ok(match s {
            "pending" => EmailState::Pending,
            "sent" => EmailState::Sent,
            "failed" => EmailState::Failed,
            "held" => EmailState::Held,
            other => return Err(StoreError::Corrupt(format!("outbox.state {other:?}"))),
        })
    }
}

/// A message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub id: EmailId,
    /// Which template produced it (`password_reset`, `registration`, …).
    pub template: String,
    pub recipient: String,
    pub user_id: Option<UserId>,
    pub subject: String,
    pub body: String,
    pub state: EmailState,
    pub attempts: i32,
    pub next_attempt_at: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = outbox)]
struct Row {
    id: String,
    template: String,
    recipient: String,
    user_id: Option<String>,
    subject: String,
    body: String,
    state: String,
    attempts: i32,
    next_attempt_at: Option<i64>,
    last_error: Option<String>,
    created_at: i64,
    sent_at: Option<i64>,
}

impl TryFrom<Row> for Email {
    type Error = StoreError;
    fn try_from(r: Row) -> StoreResult<Email> {
        let corrupt = |what: &str, v: &str| StoreError::Corrupt(format!("outbox.{what} {v:?}"));
        Ok(Email {
            id: r.id.parse().map_err(|_| corrupt("id", &r.id))?,
            user_id: match &r.user_id {
                Some(u) => Some(u.parse().map_err(|_| corrupt("user_id", u))?),
                None => None,
            },
            state: EmailState::parse(&r.state)?,
            template: r.template,
            recipient: r.recipient,
            subject: r.subject,
            body: r.body,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            last_error: r.last_error,
            created_at: r.created_at,
            sent_at: r.sent_at,
        })
    }
}

/// A message to queue.
#[derive(Debug, Clone)]
pub struct NewEmail {
    pub template: String,
    pub recipient: String,
    pub user_id: Option<UserId>,
    pub subject: String,
    pub body: String,
    /// `Pending` to deliver, `Held` when there is nowhere to deliver to.
    pub state: EmailState,
}

fn new_row(id: EmailId, m: NewEmail, now: i64) -> Row {
    let due = (m.state == EmailState::Pending).then_some(now);
    Row {
        id: id.to_string(),
        template: m.template,
        recipient: m.recipient,
        user_id: m.user_id.map(|u| u.to_string()),
        subject: m.subject,
        body: m.body,
        state: m.state.as_str().to_owned(),
        attempts: 0,
        next_attempt_at: due,
        last_error: None,
        created_at: now,
        sent_at: None,
    }
}

/// Queues a message; it is due at once.
pub fn enqueue(conn: &mut DbConnection, m: NewEmail, now: i64) -> StoreResult<EmailId> {
    let id = EmailId::generate();
    diesel::insert_into(outbox::table)
        .values(new_row(id, m, now))
        .execute(conn)?;
    Ok(id)
}

/// Queues many messages with multi-row statements; each is due at once.
pub fn enqueue_many(conn: &mut DbConnection, messages: Vec<NewEmail>, now: i64) -> StoreResult<()> {
    let rows: Vec<Row> = messages
        .into_iter()
        .map(|m| new_row(EmailId::generate(), m, now))
        .collect();
    for chunk in rows.chunks(CHUNK) {
        insert_rows!(conn, outbox::table, chunk);
    }
    Ok(())
}

/// Takes up to `limit` pending messages that are due, counting an attempt on each and leasing
/// them for `lease_micros` (a replica that dies mid-send leaves them due again after the lease).
/// Call inside a write transaction, so that replicas never claim the same message.
pub fn claim_due(
    conn: &mut DbConnection,
    now: i64,
    lease_micros: i64,
    limit: i64,
) -> StoreResult<Vec<Email>> {
    let rows: Vec<Row> = outbox::table
        .filter(outbox::state.eq(EmailState::Pending.as_str()))
        .filter(outbox::next_attempt_at.le(now))
        .order(outbox::next_attempt_at.asc())
        .limit(limit)
        .select(Row::as_select())
        .load(conn)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let mut e = Email::try_from(r)?;
        e.attempts += 1;
        diesel::update(outbox::table.filter(outbox::id.eq(e.id.to_string())))
            .set((
                outbox::attempts.eq(e.attempts),
                outbox::next_attempt_at.eq(now + lease_micros),
            ))
            .execute(conn)?;
        out.push(e);
    }
    Ok(out)
}

/// Records a delivery. The body is discarded: it may hold a single-use link.
pub fn mark_sent(conn: &mut DbConnection, id: EmailId, now: i64) -> StoreResult<()> {
    diesel::update(outbox::table.filter(outbox::id.eq(id.to_string())))
        .set((
            outbox::state.eq(EmailState::Sent.as_str()),
            outbox::body.eq(""),
            outbox::sent_at.eq(now),
            outbox::next_attempt_at.eq(None::<i64>),
            outbox::last_error.eq(None::<String>),
        ))
        .execute(conn)?;
    Ok(())
}

/// Records a failed attempt: due again at `retry_at`, or given up when that is `None`.
pub fn mark_attempt_failed(
    conn: &mut DbConnection,
    id: EmailId,
    error: &str,
    retry_at: Option<i64>,
) -> StoreResult<()> {
    let state = if retry_at.is_some() {
        EmailState::Pending
    } else {
        EmailState::Failed
    };
    diesel::update(outbox::table.filter(outbox::id.eq(id.to_string())))
        .set((
            outbox::state.eq(state.as_str()),
            outbox::next_attempt_at.eq(retry_at),
            outbox::last_error.eq(error),
        ))
        .execute(conn)?;
    Ok(())
}

/// Puts a failed or held message back in the queue with a fresh count of attempts.
pub fn requeue(conn: &mut DbConnection, id: EmailId, now: i64) -> StoreResult<()> {
    diesel::update(outbox::table.filter(outbox::id.eq(id.to_string())))
        .set((
            outbox::state.eq(EmailState::Pending.as_str()),
            outbox::attempts.eq(0),
            outbox::next_attempt_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn find(conn: &mut DbConnection, id: EmailId) -> StoreResult<Option<Email>> {
    outbox::table
        .filter(outbox::id.eq(id.to_string()))
        .select(Row::as_select())
        .first::<Row>(conn)
        .optional()?
        .map(Email::try_from)
        .transpose()
}

/// Filters of [`list`].
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub states: Vec<EmailState>,
    /// Exact recipient address (lower case).
    pub recipient: Option<String>,
}

/// One page of messages, newest first, starting before `before` (ids are time-ordered).
pub fn list(
    conn: &mut DbConnection,
    filter: &Filter,
    before: Option<EmailId>,
    limit: i64,
) -> StoreResult<Vec<Email>> {
    let mut q = outbox::table.into_boxed();
    if !filter.states.is_empty() {
        q = q.filter(outbox::state.eq_any(filter.states.iter().map(|s| s.as_str())));
    }
    if let Some(r) = &filter.recipient {
        q = q.filter(outbox::recipient.eq(r.clone()));
    }
    if let Some(b) = before {
        q = q.filter(outbox::id.lt(b.to_string()));
    }
    q.order(outbox::id.desc())
        .limit(limit)
        .select(Row::as_select())
        .load::<Row>(conn)?
        .into_iter()
        .map(Email::try_from)
        .collect()
}

/// Messages in each state (for metrics and the operator).
pub fn count_in(conn: &mut DbConnection, state: EmailState) -> StoreResult<i64> {
    Ok(outbox::table
        .filter(outbox::state.eq(state.as_str()))
        .count()
        .get_result(conn)?)
}

/// (state, number of messages) for every state with messages.
pub fn count_by_state(conn: &mut DbConnection) -> StoreResult<Vec<(String, i64)>> {
    Ok(outbox::table
        .group_by(outbox::state)
        .select((outbox::state, diesel::dsl::count_star()))
        .load(conn)?)
}
