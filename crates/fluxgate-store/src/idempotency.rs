//! Idempotency keys: the reservation written in a call's own write transaction, and the reply
//! recorded after it, so that a retried call is answered with the first outcome.

use diesel::prelude::*;

use crate::schema::idempotency_keys as ik;
use crate::{DbConnection, StoreResult};

/// A key to reserve in the transaction of a call's write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The caller (user or service account id).
    pub scope: String,
    /// A digest of the client's idempotency key (never the key itself: the key seals the reply).
    pub key: String,
    /// The gRPC method path.
    pub method: String,
    /// SHA-256 (hex) of the request message.
    pub request_hash: String,
    /// A digest of the caller's standing when the call was made.
    pub standing: String,
}

/// A stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub method: String,
    pub request_hash: String,
    pub standing: String,
    pub created_at: i64,
    /// The reply (message frames and status metadata), once recorded.
    pub reply: Option<(Vec<u8>, String)>,
}

/// Reserves `r` (inside the write transaction, under the write lock). Returns `false` when the
/// key is already taken: the caller's transaction must then roll back.
pub fn reserve(conn: &mut DbConnection, r: &Reservation, now: i64) -> StoreResult<bool> {
    let taken = ik::table
        .filter(ik::scope.eq(&r.scope))
        .filter(ik::idempotency_key.eq(&r.key))
        .count()
        .get_result::<i64>(conn)?
        > 0;
    if taken {
        return Ok(false);
    }
    diesel::insert_into(ik::table)
        .values((
            ik::scope.eq(&r.scope),
            ik::idempotency_key.eq(&r.key),
            ik::method.eq(&r.method),
            ik::request_hash.eq(&r.request_hash),
            ik::standing.eq(&r.standing),
            ik::created_at.eq(now),
        ))
        .execute(conn)?;
    Ok(true)
}

/// The stored key `key` of `scope`, if any.
pub fn find(conn: &mut DbConnection, scope: &str, key: &str) -> StoreResult<Option<Record>> {
    type Row = (String, String, String, i64, Option<Vec<u8>>, Option<String>);
    let row: Option<Row> = ik::table
        .filter(ik::scope.eq(scope))
        .filter(ik::idempotency_key.eq(key))
        .select((
            ik::method,
            ik::request_hash,
            ik::standing,
            ik::created_at,
            ik::response_body,
            ik::response_meta,
        ))
        .first(conn)
        .optional()?;
    Ok(row.map(
        |(method, request_hash, standing, created_at, body, meta)| Record {
            method,
            request_hash,
            standing,
            created_at,
            reply: body.zip(meta),
        },
    ))
}

/// Records the reply of a reserved key (a single-row update, outside the write lock). `body` is
/// the sealed reply: the store never sees it in the clear.
pub fn record_reply(
    conn: &mut DbConnection,
    scope: &str,
    key: &str,
    body: &[u8],
    meta: &str,
) -> StoreResult<bool> {
    let n = diesel::update(
        ik::table
            .filter(ik::scope.eq(scope))
            .filter(ik::idempotency_key.eq(key)),
    )
    .set((ik::response_body.eq(body), ik::response_meta.eq(meta)))
    .execute(conn)?;
    Ok(n == 1)
}

/// Forgets keys created before `cutoff` (micros).
pub fn prune(conn: &mut DbConnection, cutoff: i64) -> StoreResult<usize> {
    Ok(diesel::delete(ik::table.filter(ik::created_at.lt(cutoff))).execute(conn)?)
}
