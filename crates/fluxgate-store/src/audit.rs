//! The audit trail: append-only, each event chained to its predecessor by a SHA-256 hash.
//! Events are appended inside the write transaction of the change they record.

use diesel::prelude::*;
use sha2::{Digest, Sha256};

use crate::schema::audit_events;
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
    let last: Option<(i64, String)> = audit_events::table
        .order(audit_events::seq.desc())
        .select((audit_events::seq, audit_events::hash))
        .first(conn)
        .optional()?;
    let (seq, prev_hash) = match last {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, GENESIS_HASH.to_owned()),
    };
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
    diesel::insert_into(audit_events::table)
        .values(&event)
        .execute(conn)?;
    Ok(event)
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
    let mut prev = GENESIS_HASH.to_owned();
    let mut after = 0;
    loop {
        let batch = list(conn, after, 1000)?;
        if batch.is_empty() {
            return Ok(None);
        }
        for e in batch {
            if e.prev_hash != prev || e.compute_hash() != e.hash || e.seq != after + 1 {
                return Ok(Some(e.seq));
            }
            prev = e.hash;
            after = e.seq;
        }
    }
}
