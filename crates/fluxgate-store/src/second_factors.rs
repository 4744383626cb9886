//! Users' second factors: a TOTP secret (pending until a first code confirms it, with the last
//! time step used so that no code is accepted twice) and single-use recovery codes, stored as
//! SHA-256 digests.

use diesel::prelude::*;
use fluxgate_domain::UserId;

use crate::schema::{user_recovery_codes, user_totp};
use crate::{DbConnection, StoreResult};

/// A user's TOTP factor as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Totp {
    /// The shared secret, base32 (RFC 4648, no padding).
    pub secret: String,
    pub created_at: i64,
    /// Set once a first code confirmed the enrolment; until then it does not guard sign-in.
    pub confirmed_at: Option<i64>,
    /// The last time step a code was accepted for (0: none yet).
    pub last_step: i64,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = user_totp)]
struct TotpRow {
    user_id: String,
    secret: String,
    created_at: i64,
    confirmed_at: Option<i64>,
    last_step: i64,
}

pub fn find_totp(conn: &mut DbConnection, user: UserId) -> StoreResult<Option<Totp>> {
    Ok(user_totp::table
        .find(user.to_string())
        .select(TotpRow::as_select())
        .first::<TotpRow>(conn)
        .optional()?
        .map(|r| Totp {
            secret: r.secret,
            created_at: r.created_at,
            confirmed_at: r.confirmed_at,
            last_step: r.last_step,
        }))
}

/// Starts an enrolment: a new pending secret, replacing any earlier one (pending or not).
pub fn begin_totp(
    conn: &mut DbConnection,
    user: UserId,
    secret: &str,
    now: i64,
) -> StoreResult<()> {
    remove_totp(conn, user)?;
    diesel::insert_into(user_totp::table)
        .values(TotpRow {
            user_id: user.to_string(),
            secret: secret.to_owned(),
            created_at: now,
            confirmed_at: None,
            last_step: 0,
        })
        .execute(conn)?;
    Ok(())
}

/// Confirms the pending secret with the step of the code that proved it.
pub fn confirm_totp(conn: &mut DbConnection, user: UserId, step: i64, now: i64) -> StoreResult<()> {
    diesel::update(user_totp::table.find(user.to_string()))
        .set((
            user_totp::confirmed_at.eq(now),
            user_totp::last_step.eq(step),
        ))
        .execute(conn)?;
    Ok(())
}

/// Records the step of an accepted code. False when a code of this step or a later one was
/// accepted already (a replay, or a lost race).
pub fn use_step(conn: &mut DbConnection, user: UserId, step: i64) -> StoreResult<bool> {
    let n = diesel::update(
        user_totp::table
            .find(user.to_string())
            .filter(user_totp::last_step.lt(step)),
    )
    .set(user_totp::last_step.eq(step))
    .execute(conn)?;
    Ok(n > 0)
}

/// Removes the user's TOTP factor and recovery codes. True when there was a factor.
pub fn remove_totp(conn: &mut DbConnection, user: UserId) -> StoreResult<bool> {
    diesel::delete(
        user_recovery_codes::table.filter(user_recovery_codes::user_id.eq(user.to_string())),
    )
    .execute(conn)?;
    let n = diesel::delete(user_totp::table.find(user.to_string())).execute(conn)?;
    Ok(n > 0)
}

/// Replaces the user's recovery codes with these digests.
pub fn set_recovery_codes(
    conn: &mut DbConnection,
    user: UserId,
    digests: &[String],
    now: i64,
) -> StoreResult<()> {
    diesel::delete(
        user_recovery_codes::table.filter(user_recovery_codes::user_id.eq(user.to_string())),
    )
    .execute(conn)?;
    for d in digests {
        diesel::insert_into(user_recovery_codes::table)
            .values((
                user_recovery_codes::code_hash.eq(d),
                user_recovery_codes::user_id.eq(user.to_string()),
                user_recovery_codes::created_at.eq(now),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// Uses one of the user's recovery codes. False when it is not theirs or was used already.
pub fn use_recovery_code(
    conn: &mut DbConnection,
    user: UserId,
    digest: &str,
    now: i64,
) -> StoreResult<bool> {
    let n = diesel::update(
        user_recovery_codes::table
            .find(digest)
            .filter(user_recovery_codes::user_id.eq(user.to_string()))
            .filter(user_recovery_codes::used_at.is_null()),
    )
    .set(user_recovery_codes::used_at.eq(now))
    .execute(conn)?;
    Ok(n > 0)
}

/// How many of the user's recovery codes are still unused.
pub fn recovery_codes_left(conn: &mut DbConnection, user: UserId) -> StoreResult<i64> {
    Ok(user_recovery_codes::table
        .filter(user_recovery_codes::user_id.eq(user.to_string()))
        .filter(user_recovery_codes::used_at.is_null())
        .count()
        .get_result(conn)?)
}
