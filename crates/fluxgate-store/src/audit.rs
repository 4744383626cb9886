//! The audit trail: append-only, each event chained to its predecessor by a SHA-256 hash.
//! Events are appended inside the write transaction of the change they record.

use diesel::prelude::*;
use sha2::{Digest, Sha256};

use crate::schema::{audit_checkpoints, audit_events};
use crate::{DbConnection, StoreResult};

/// The hash the first event is chained to.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event to append.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewEvent {
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
    pub actor_role: Option<String>,
    pub action: String,
    pub target_type: String,
    pub target_id: Option<String>,
    pub before_json: Option<String>,
    pub after_json: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    pub detail: Option<String>,
    pub request_id: Option<String>,
    pub peer_addr: Option<String>,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_events)]
pub struct Event {
    pub seq: i64,
    pub occurred_at: i64,
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
    pub actor_role: Option<String>,
    pub action: String,
    pub target_type: String,
    pub target_id: Option<String>,
    pub before_json: Option<String>,
    pub after_json: Option<String>,
    pub outcome: String,
    pub detail: Option<String>,
    pub request_id: Option<String>,
    pub peer_addr: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

impl Event {
    /// The hash of this event's content chained to `prev_hash`. Every field is length-prefixed
    /// so that no two different events hash alike.
    pub fn compute_hash(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |v: Option<&str>| match v {
            Some(s) => {
                h.update((s.len() as u64).to_be_bytes());
                h.update(s.as_bytes());
            }
            None => h.update(u64::MAX.to_be_bytes()),
        };
        field(Some(&self.prev_hash));
        field(Some(&self.seq.to_string()));
        field(Some(&self.occurred_at.to_string()));
        field(self.actor_id.as_deref());
        field(self.actor_name.as_deref());
        field(self.actor_role.as_deref());
        field(Some(&self.action));
        field(Some(&self.target_type));
        field(self.target_id.as_deref());
        field(self.before_json.as_deref());
        field(self.after_json.as_deref());
        field(Some(&self.outcome));
        field(self.detail.as_deref());
        field(self.request_id.as_deref());
        field(self.peer_addr.as_deref());
        let digest = h.finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Appends an event (call inside a write transaction, which serialises appends).
pub fn append(conn: &mut DbConnection, e: NewEvent, now: i64) -> StoreResult<Event> {
    let (seq, prev_hash) = head(conn)?;
    let event = chained(e, seq, prev_hash, now);
    diesel::insert_into(audit_events::table)
        .values(&event)
        .execute(conn)?;
    Ok(event)
}

/// Appends events in order, each chained to the one before, with multi-row statements (a
/// batch of creations, say).
pub fn append_many(
    conn: &mut DbConnection,
    es: Vec<NewEvent>,
    now: i64,
) -> StoreResult<Vec<Event>> {
    let (mut seq, mut prev_hash) = head(conn)?;
    let mut out = Vec::with_capacity(es.len());
    for e in es {
        let event = chained(e, seq, prev_hash, now);
        (seq, prev_hash) = (seq + 1, event.hash.clone());
        out.push(event);
    }
    for chunk in out.chunks(200) {
        insert_rows!(conn, audit_events::table, chunk);
    }
    Ok(out)
}

/// The next sequence number and the hash it chains to.
fn head(conn: &mut DbConnection) -> StoreResult<(i64, String)> {
    let last: Option<(i64, String)> = audit_events::table
        .order(audit_events::seq.desc())
        .select((audit_events::seq, audit_events::hash))
        .first(conn)
        .optional()?;
    Ok(match last {
        Some((seq, hash)) => (seq + 1, hash),
        // A pruning appends its own event before it deletes, so a trail is never empty again.
        None => (1, GENESIS_HASH.to_owned()),
    })
}

/// The event `e` as number `seq`, chained to `prev_hash`.
fn chained(e: NewEvent, seq: i64, prev_hash: String, now: i64) -> Event {
    let mut event = Event {
        seq,
        occurred_at: now,
        actor_id: e.actor_id,
        actor_name: e.actor_name,
        actor_role: e.actor_role,
        action: e.action,
        target_type: e.target_type,
        target_id: e.target_id,
        before_json: e.before_json,
        after_json: e.after_json,
        outcome: e.outcome,
        detail: e.detail,
        request_id: e.request_id,
        peer_addr: e.peer_addr,
        prev_hash,
        hash: String::new(),
    };
    event.hash = event.compute_hash();
    event
}

/// Events after `after_seq`, oldest first.
pub fn list(conn: &mut DbConnection, after_seq: i64, limit: i64) -> StoreResult<Vec<Event>> {
    Ok(audit_events::table
        .filter(audit_events::seq.gt(after_seq))
        .order(audit_events::seq.asc())
        .limit(limit)
        .select(Event::as_select())
        .load(conn)?)
}

/// Walks the chain; returns the sequence number of the first event whose hash or link is
/// wrong, or `None` when the whole chain verifies.
pub fn verify(conn: &mut DbConnection) -> StoreResult<Option<i64>> {
    Ok(verify_counting(conn)?.0)
}

/// Filters of [`query`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub actor: Option<String>,
    pub target: Option<String>,
    pub action: Option<String>,
    /// Inclusive lower bound on `occurred_at`.
    pub from: Option<i64>,
    /// Exclusive upper bound on `occurred_at`.
    pub to: Option<i64>,
    /// `success`, `failure`, `denied` or `reported`.
    pub outcome: Option<String>,
}

/// Where a page of [`query`] resumes: after this (time, sequence).
pub type Cursor = (i64, i64);

/// Events matching `f`, ordered by (time, sequence), after `after` (keyset pagination: every
/// filter is an index range scan, so a page costs the same at any depth and any trail size).
pub fn query(
    conn: &mut DbConnection,
    f: &Filter,
    after: Option<Cursor>,
    limit: i64,
) -> StoreResult<Vec<Event>> {
    let mut q = audit_events::table.into_boxed();
    if let Some(a) = &f.actor {
        q = q.filter(audit_events::actor_id.eq(a.clone()));
    }
    if let Some(t) = &f.target {
        q = q.filter(audit_events::target_id.eq(t.clone()));
    }
    if let Some(a) = &f.action {
        q = q.filter(audit_events::action.eq(a.clone()));
    }
    if let Some(o) = &f.outcome {
        q = q.filter(audit_events::outcome.eq(o.clone()));
    }
    if let Some(from) = f.from {
        q = q.filter(audit_events::occurred_at.ge(from));
    }
    if let Some(to) = f.to {
        q = q.filter(audit_events::occurred_at.lt(to));
    }
    if let Some((at, seq)) = after {
        // `time >= at` first gives the index scan its starting point; the rest skips the
        // events of that same instant already returned.
        q = q.filter(audit_events::occurred_at.ge(at)).filter(
            audit_events::occurred_at
                .gt(at)
                .or(audit_events::seq.gt(seq)),
        );
    }
    Ok(
        q.order((audit_events::occurred_at.asc(), audit_events::seq.asc()))
            .limit(limit)
            .select(Event::as_select())
            .load(conn)?,
    )
}

/// (actor, time) of every successful login in `[from, to)`.
pub fn logins(
    conn: &mut DbConnection,
    from: i64,
    to: i64,
) -> StoreResult<Vec<(Option<String>, i64)>> {
    Ok(audit_events::table
        .filter(audit_events::action.eq("auth.login"))
        .filter(audit_events::outcome.eq("success"))
        .filter(audit_events::occurred_at.ge(from))
        .filter(audit_events::occurred_at.lt(to))
        .select((audit_events::actor_id, audit_events::occurred_at))
        .load(conn)?)
}

/// (time, detail) of every failed login in `[from, to)`.
pub fn failed_logins(
    conn: &mut DbConnection,
    from: i64,
    to: i64,
) -> StoreResult<Vec<(i64, Option<String>)>> {
    Ok(audit_events::table
        .filter(audit_events::action.eq("auth.login"))
        .filter(audit_events::outcome.eq("failure"))
        .filter(audit_events::occurred_at.ge(from))
        .filter(audit_events::occurred_at.lt(to))
        .select((audit_events::occurred_at, audit_events::detail))
        .load(conn)?)
}

/// Which events a top list counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted<'a> {
    /// Events with this action.
    Action(&'a str),
    /// Successful changes: outcome `success`, logins and other `auth.` events excluded.
    Changes,
}

/// The actors with the most counted events in `[from, to)`: (actor, count), most first.
pub fn top_actors(
    conn: &mut DbConnection,
    counted: Counted<'_>,
    from: i64,
    to: i64,
    limit: i64,
) -> StoreResult<Vec<(String, i64)>> {
    let in_range = audit_events::occurred_at
        .ge(from)
        .and(audit_events::occurred_at.lt(to))
        .and(audit_events::actor_id.is_not_null());
    let rows: Vec<(Option<String>, i64)> = match counted {
        Counted::Action(a) => audit_events::table
            .filter(in_range.and(audit_events::action.eq(a.to_owned())))
            .group_by(audit_events::actor_id)
            .select((audit_events::actor_id, diesel::dsl::count_star()))
            .load(conn)?,
        Counted::Changes => audit_events::table
            .filter(
                in_range
                    .and(audit_events::outcome.eq("success"))
                    .and(audit_events::action.not_like("auth.%")),
            )
            .group_by(audit_events::actor_id)
            .select((audit_events::actor_id, diesel::dsl::count_star()))
            .load(conn)?,
    };
    let mut out: Vec<(String, i64)> = rows
        .into_iter()
        .filter_map(|(a, n)| a.map(|a| (a, n)))
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out.truncate(limit.max(0) as usize);
    Ok(out)
}

/// The display name the latest event of `actor` recorded.
pub fn latest_actor_name(conn: &mut DbConnection, actor: &str) -> StoreResult<Option<String>> {
    Ok(audit_events::table
        .filter(audit_events::actor_id.eq(actor))
        .order(audit_events::seq.desc())
        .select(audit_events::actor_name)
        .first::<Option<String>>(conn)
        .optional()?
        .flatten())
}

/// Walks the whole chain in batches, from the genesis or the last pruning's checkpoint;
/// returns (first broken sequence, events checked).
pub fn verify_counting(conn: &mut DbConnection) -> StoreResult<(Option<i64>, i64)> {
    let (broken, checked, _) = verify_with_checkpoint(conn)?;
    Ok((broken, checked))
}

/// [`verify_counting`], also answering the checkpoint the walk started from. A pruning that
/// commits during the walk moves the start: the walk is then made again from the new one.
pub fn verify_with_checkpoint(
    conn: &mut DbConnection,
) -> StoreResult<(Option<i64>, i64, Option<Checkpoint>)> {
    let mut tries = 0;
    loop {
        let cp = latest_checkpoint(conn)?;
        let (broken, checked) = walk(conn, cp.as_ref())?;
        tries += 1;
        if broken.is_none() || tries >= 3 || latest_checkpoint(conn)? == cp {
            return Ok((broken, checked, cp));
        }
    }
}

fn walk(conn: &mut DbConnection, cp: Option<&Checkpoint>) -> StoreResult<(Option<i64>, i64)> {
    let (mut prev, mut after) = match cp {
        Some(c) => (c.hash.clone(), c.seq),
        None => (GENESIS_HASH.to_owned(), 0),
    };
    let start = after;
    loop {
        let batch = list(conn, after, 1000)?;
        if batch.is_empty() {
            return Ok((None, after - start));
        }
        for e in batch {
            if e.prev_hash != prev || e.compute_hash() != e.hash || e.seq != after + 1 {
                return Ok((Some(e.seq), after - start));
            }
            prev = e.hash;
            after = e.seq;
        }
    }
}

/// Where the trail was pruned: the last pruned event, which the first remaining one chains to,
/// and the archive the pruned events were written to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_checkpoints)]
pub struct Checkpoint {
    /// The last pruned event's sequence number.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
    /// How many events this pruning removed.
    pub events: i64,
    /// The archive file's name.
    pub archive: String,
    /// Hex SHA-256 of the archive file.
    pub archive_sha256: String,
    pub created_at: i64,
}

/// The latest pruning's checkpoint.
pub fn latest_checkpoint(conn: &mut DbConnection) -> StoreResult<Option<Checkpoint>> {
    Ok(audit_checkpoints::table
        .order(audit_checkpoints::seq.desc())
        .select(Checkpoint::as_select())
        .first(conn)
        .optional()?)
}

/// The last event that occurred before `before`, no later than `max_seq`.
pub fn last_before(
    conn: &mut DbConnection,
    before: i64,
    max_seq: i64,
) -> StoreResult<Option<Event>> {
    Ok(audit_events::table
        .filter(audit_events::occurred_at.lt(before))
        .filter(audit_events::seq.le(max_seq))
        .order(audit_events::seq.desc())
        .select(Event::as_select())
        .first(conn)
        .optional()?)
}

/// Removes the events up to and including `cp.seq` and records the checkpoint (call in a write
/// transaction, after the archive is safely written, and after appending the event that
/// records the pruning, so that the trail is never left empty).
pub fn prune(conn: &mut DbConnection, cp: &Checkpoint) -> StoreResult<i64> {
    let n =
        diesel::delete(audit_events::table.filter(audit_events::seq.le(cp.seq))).execute(conn)?;
    diesel::insert_into(audit_checkpoints::table)
        .values(cp)
        .execute(conn)?;
    Ok(n as i64)
}

/// The first event with this action after sequence number `after`.
pub fn first_with_action_after(
    conn: &mut DbConnection,
    action: &str,
    after: i64,
) -> StoreResult<Option<Event>> {
    Ok(audit_events::table
        .filter(audit_events::action.eq(action))
        .filter(audit_events::seq.gt(after))
        .order(audit_events::seq.asc())
        .select(Event::as_select())
        .first(conn)
        .optional()?)
}

/// The sequence number of the newest event (0 for an empty trail).
pub fn head_seq(conn: &mut DbConnection) -> StoreResult<i64> {
    Ok(audit_events::table
        .select(diesel::dsl::max(audit_events::seq))
        .first::<Option<i64>>(conn)?
        .unwrap_or(0))
}
