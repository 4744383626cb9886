//! Login sessions and their refresh tokens (stored as SHA-256 hashes only).

use diesel::prelude::*;
use fluxgate_domain::{SessionId, UserId};

use crate::schema::{refresh_tokens, sessions};
use crate::{DbConnection, StoreError, StoreResult};

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    pub created_at: i64,
    /// When the newest refresh token of the session expires.
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub revoke_reason: Option<String>,
}

impl Session {
    /// Neither revoked nor expired at `now`.
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = sessions)]
struct Row {
    id: String,
    user_id: String,
    created_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
    revoke_reason: Option<String>,
}

impl TryFrom<Row> for Session {
    type Error = StoreError;
    fn try_from(r: Row) -> StoreResult<Session> {
        let bad = |what: &str, v: &str| StoreError::Corrupt(format!("sessions.{what} {v:?}"));
        Ok(Session {
            id: r.id.parse().map_err(|_| bad("id", &r.id))?,
            user_id: r.user_id.parse().map_err(|_| bad("user_id", &r.user_id))?,
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            revoke_reason: r.revoke_reason,
        })
    }
}

fn collect(rows: Vec<Row>) -> StoreResult<Vec<Session>> {
    rows.into_iter().map(Session::try_from).collect()
}

pub fn create(
    conn: &mut DbConnection,
    id: SessionId,
    user_id: UserId,
    now: i64,
    expires_at: i64,
) -> StoreResult<()> {
    diesel::insert_into(sessions::table)
        .values(Row {
            id: id.to_string(),
            user_id: user_id.to_string(),
            created_at: now,
            expires_at,
            revoked_at: None,
            revoke_reason: None,
        })
        .execute(conn)?;
    Ok(())
}

pub fn find(conn: &mut DbConnection, id: SessionId) -> StoreResult<Option<Session>> {
    sessions::table
        .filter(sessions::id.eq(id.to_string()))
        .select(Row::as_select())
        .first::<Row>(conn)
        .optional()?
        .map(Session::try_from)
        .transpose()
}

/// Sessions neither revoked nor expired at `now`, of one user or (with `None`) of everyone.
pub fn live(conn: &mut DbConnection, user: Option<UserId>, now: i64) -> StoreResult<Vec<Session>> {
    let mut q = sessions::table
        .filter(sessions::revoked_at.is_null())
        .filter(sessions::expires_at.gt(now))
        .into_boxed();
    if let Some(u) = user {
        q = q.filter(sessions::user_id.eq(u.to_string()));
    }
    collect(q.select(Row::as_select()).load::<Row>(conn)?)
}

/// The sessions of the users of `ids` live at `now`: one statement per
/// [`CHUNK`](crate::CHUNK) ids.
pub fn live_of(conn: &mut DbConnection, ids: &[UserId], now: i64) -> StoreResult<Vec<Session>> {
    let mut out = Vec::new();
    for chunk in ids.chunks(crate::CHUNK) {
        let keys: Vec<String> = chunk.iter().map(ToString::to_string).collect();
        out.extend(collect(
            sessions::table
                .filter(sessions::revoked_at.is_null())
                .filter(sessions::expires_at.gt(now))
                .filter(sessions::user_id.eq_any(keys))
                .select(Row::as_select())
                .load::<Row>(conn)?,
        )?);
    }
    Ok(out)
}

pub fn extend(conn: &mut DbConnection, id: SessionId, expires_at: i64) -> StoreResult<()> {
    diesel::update(sessions::table.filter(sessions::id.eq(id.to_string())))
        .set(sessions::expires_at.eq(expires_at))
        .execute(conn)?;
    Ok(())
}

/// Revokes one session. Returns false when it was already revoked.
pub fn revoke(conn: &mut DbConnection, id: SessionId, reason: &str, now: i64) -> StoreResult<bool> {
    let n = diesel::update(
        sessions::table
            .filter(sessions::id.eq(id.to_string()))
            .filter(sessions::revoked_at.is_null()),
    )
    .set((
        sessions::revoked_at.eq(now),
        sessions::revoke_reason.eq(reason),
    ))
    .execute(conn)?;
    Ok(n > 0)
}

/// Revokes every live session of a user; returns how many.
pub fn revoke_all(
    conn: &mut DbConnection,
    user: UserId,
    reason: &str,
    now: i64,
) -> StoreResult<usize> {
    Ok(diesel::update(
        sessions::table
            .filter(sessions::user_id.eq(user.to_string()))
            .filter(sessions::revoked_at.is_null()),
    )
    .set((
        sessions::revoked_at.eq(now),
        sessions::revoke_reason.eq(reason),
    ))
    .execute(conn)?)
}

/// A refresh token as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = refresh_tokens)]
pub struct RefreshToken {
    pub token_hash: String,
    pub session_id: String,
    pub issued_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

pub fn insert_refresh(conn: &mut DbConnection, t: &RefreshToken) -> StoreResult<()> {
    diesel::insert_into(refresh_tokens::table)
        .values(t.clone())
        .execute(conn)?;
    Ok(())
}

pub fn find_refresh(
    conn: &mut DbConnection,
    token_hash: &str,
) -> StoreResult<Option<RefreshToken>> {
    Ok(refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(token_hash))
        .select(RefreshToken::as_select())
        .first(conn)
        .optional()?)
}

pub fn mark_refresh_used(conn: &mut DbConnection, token_hash: &str, now: i64) -> StoreResult<()> {
    diesel::update(refresh_tokens::table.filter(refresh_tokens::token_hash.eq(token_hash)))
        .set(refresh_tokens::used_at.eq(now))
        .execute(conn)?;
    Ok(())
}
