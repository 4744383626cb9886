//! Fixed-window request counters kept in the database, so that every replica counts against
//! the same limit.

use diesel::prelude::*;

use crate::schema::rate_limits;
use crate::{DbConnection, StoreResult};

/// Counts one hit against `key` in the window of `window_micros` containing `now`, and returns
/// the hits in that window including this one. Call inside a write transaction.
pub fn hit(conn: &mut DbConnection, key: &str, window_micros: i64, now: i64) -> StoreResult<i32> {
    let window_start = now - now.rem_euclid(window_micros.max(1));
    let existing: Option<(i64, i32)> = rate_limits::table
        .filter(rate_limits::key.eq(key))
        .select((rate_limits::window_start, rate_limits::hits))
        .first(conn)
        .optional()?;
    let hits = match existing {
        Some((start, hits)) if start == window_start => hits.saturating_add(1),
        _ => 1,
    };
    if existing.is_some() {
        diesel::update(rate_limits::table.filter(rate_limits::key.eq(key)))
            .set((
                rate_limits::window_start.eq(window_start),
                rate_limits::hits.eq(hits),
            ))
            .execute(conn)?;
    } else {
        diesel::insert_into(rate_limits::table)
            .values((
                rate_limits::key.eq(key),
                rate_limits::window_start.eq(window_start),
                rate_limits::hits.eq(hits),
            ))
            .execute(conn)?;
    }
    Ok(hits)
}

/// Deletes counters whose window started before `cutoff`.
pub fn prune(conn: &mut DbConnection, cutoff: i64) -> StoreResult<usize> {
    Ok(
        diesel::delete(rate_limits::table.filter(rate_limits::window_start.lt(cutoff)))
            .execute(conn)?,
    )
}
