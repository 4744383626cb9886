//! Single-use tokens mailed to users: password-reset links and registration links. Only the
//! SHA-256 of a token is stored; a newer token of the same purpose supersedes the older ones.

use diesel::prelude::*;
use fluxgate_domain::UserId;

use crate::schema::user_tokens;
use crate::{DbConnection, StoreError, StoreResult};

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    PasswordReset,
    Registration,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::PasswordReset => "password_reset",
            Purpose::Registration => "registration",
        }
    }

    fn parse(s: &str) -> StoreResult<Purpose> {
        match s {
            "password_reset" => Ok(Purpose::PasswordReset),
            "registration" => Ok(Purpose::Registration),
            other => Err(StoreError::Corrupt(format!(
                "user_tokens.purpose {other:?}"
            ))),
        }
    }
}

/// A token as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserToken {
    pub token_hash: String,
    pub user_id: UserId,
    pub purpose: Purpose,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub superseded_at: Option<i64>,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = user_tokens)]
struct Row {
    token_hash: String,
    user_id: String,
    purpose: String,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
    superseded_at: Option<i64>,
}

impl TryFrom<Row> for UserToken {
    type Error = StoreError;
    fn try_from(r: Row) -> StoreResult<UserToken> {
        Ok(UserToken {
            user_id: r
                .user_id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("user_tokens.user_id {:?}", r.user_id)))?,
            purpose: Purpose::parse(&r.purpose)?,
            token_hash: r.token_hash,
            created_at: r.created_at,
            expires_at: r.expires_at,
            used_at: r.used_at,
            superseded_at: r.superseded_at,
        })
    }
}

/// Stores a new token and supersedes the user's earlier unused tokens of the same purpose.
/// Returns how many were superseded.
pub fn issue(
    conn: &mut DbConnection,
    token_hash: &str,
    user: UserId,
    purpose: Purpose,
    now: i64,
    expires_at: i64,
) -> StoreResult<usize> {
    let superseded = supersede(conn, user, purpose, now)?;
    diesel::insert_into(user_tokens::table)
        .values(Row {
            token_hash: token_hash.to_owned(),
            user_id: user.to_string(),
            purpose: purpose.as_str().to_owned(),
            created_at: now,
            expires_at,
            used_at: None,
            superseded_at: None,
        })
        .execute(conn)?;
    Ok(superseded)
}

/// A token of a user who has none of its purpose yet (a user created in the same
/// transaction), for [`issue_first`].
#[derive(Debug, Clone)]
pub struct First {
    pub token_hash: String,
    pub user: UserId,
    pub purpose: Purpose,
    pub expires_at: i64,
}

/// Stores the first tokens of new users with multi-row statements: nothing to supersede.
pub fn issue_first(conn: &mut DbConnection, tokens: &[First], now: i64) -> StoreResult<()> {
    for chunk in tokens.chunks(crate::CHUNK) {
        let rows: Vec<Row> = chunk
            .iter()
            .map(|t| Row {
                token_hash: t.token_hash.clone(),
                user_id: t.user.to_string(),
                purpose: t.purpose.as_str().to_owned(),
                created_at: now,
                expires_at: t.expires_at,
                used_at: None,
                superseded_at: None,
            })
            .collect();
        insert_rows!(conn, user_tokens::table, &rows);
    }
    Ok(())
}

/// Marks every unused, not yet superseded token of the user and purpose as superseded.
pub fn supersede(
    conn: &mut DbConnection,
    user: UserId,
    purpose: Purpose,
    now: i64,
) -> StoreResult<usize> {
    Ok(diesel::update(
        user_tokens::table
            .filter(user_tokens::user_id.eq(user.to_string()))
            .filter(user_tokens::purpose.eq(purpose.as_str()))
            .filter(user_tokens::used_at.is_null())
            .filter(user_tokens::superseded_at.is_null()),
    )
    .set(user_tokens::superseded_at.eq(now))
    .execute(conn)?)
}

pub fn find(conn: &mut DbConnection, token_hash: &str) -> StoreResult<Option<UserToken>> {
    user_tokens::table
        .filter(user_tokens::token_hash.eq(token_hash))
        .select(Row::as_select())
        .first::<Row>(conn)
        .optional()?
        .map(UserToken::try_from)
        .transpose()
}

/// Marks a token used. Returns false when it was used already (a lost race).
pub fn mark_used(conn: &mut DbConnection, token_hash: &str, now: i64) -> StoreResult<bool> {
    let n = diesel::update(
        user_tokens::table
            .filter(user_tokens::token_hash.eq(token_hash))
            .filter(user_tokens::used_at.is_null()),
    )
    .set(user_tokens::used_at.eq(now))
    .execute(conn)?;
    Ok(n > 0)
}

/// Deletes tokens that expired before `cutoff` (after that they are simply unknown).
pub fn prune(conn: &mut DbConnection, cutoff: i64) -> StoreResult<usize> {
    Ok(
        diesel::delete(user_tokens::table.filter(user_tokens::expires_at.lt(cutoff)))
            .execute(conn)?,
    )
}
