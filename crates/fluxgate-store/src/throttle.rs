//! Consecutive login failures and lockouts, keyed by login subject (an account, or the name
//! tried when no account has it, so unknown names lock out exactly like real ones).

use diesel::prelude::*;

use crate::schema::login_throttle;
use crate::{DbConnection, StoreResult};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = login_throttle)]
#[diesel(treat_none_as_null = true)]
pub struct Throttle {
    pub subject: String,
    pub failures: i32,
    pub locked_until: Option<i64>,
    pub updated_at: i64,
}

pub fn get(conn: &mut DbConnection, subject: &str) -> StoreResult<Option<Throttle>> {
    Ok(login_throttle::table
        .filter(login_throttle::subject.eq(subject))
        .select(Throttle::as_select())
        .first(conn)
        .optional()?)
}

/// Counts one more failure; locks the subject for `lock_micros` once `max_failures` is reached
/// (the counter then starts again). Returns the new state.
pub fn record_failure(
    conn: &mut DbConnection,
    subject: &str,
    max_failures: u32,
    lock_micros: i64,
    now: i64,
) -> StoreResult<Throttle> {
    let existing = get(conn, subject)?;
    let mut failures = existing.as_ref().map_or(0, |t| t.failures) + 1;
    // A lock still in force stays: attempts that raced past the check must not lift it.
    let mut locked_until = existing
        .as_ref()
        .and_then(|t| t.locked_until)
        .filter(|until| *until > now);
    if locked_until.is_some() {
        // Attempts during a lock do not count towards the next one.
        failures -= 1;
    } else if failures >= max_failures as i32 {
        locked_until = Some(now + lock_micros);
        failures = 0;
    }
    let t = Throttle {
        subject: subject.to_owned(),
        failures,
        locked_until,
        updated_at: now,
    };
    if existing.is_some() {
        diesel::update(login_throttle::table.filter(login_throttle::subject.eq(subject)))
            .set(&t)
            .execute(conn)?;
    } else {
        diesel::insert_into(login_throttle::table)
            .values(&t)
            .execute(conn)?;
    }
    Ok(t)
}

pub fn clear(conn: &mut DbConnection, subject: &str) -> StoreResult<()> {
    diesel::delete(login_throttle::table.filter(login_throttle::subject.eq(subject)))
        .execute(conn)?;
    Ok(())
}

/// Notes an attempt without counting it (an attempt on a locked subject).
pub fn touch(conn: &mut DbConnection, subject: &str, now: i64) -> StoreResult<()> {
    diesel::update(login_throttle::table.filter(login_throttle::subject.eq(subject)))
        .set(login_throttle::updated_at.eq(now))
        .execute(conn)?;
    Ok(())
}
