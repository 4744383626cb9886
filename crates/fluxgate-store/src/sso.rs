//! Sign-in through OpenID providers: the identities linked to users, the sign-ins sent to a
//! provider and not back yet, and the handoffs that wait for their client to collect a session.
//! Secrets (the state, the handoff code) are stored by digest; both are single use.

use diesel::prelude::*;
use fluxgate_domain::UserId;

use crate::schema::{sso_handoffs, sso_logins, user_identities};
use crate::{DbConnection, StoreResult};

/// An identity at a provider, linked to one user.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = user_identities)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    pub user_id: String,
    pub provider: String,
    pub email: Option<String>,
    pub created_at: i64,
    pub last_sign_in_at: Option<i64>,
}

/// The user an identity is linked to.
pub fn find_identity(
    conn: &mut DbConnection,
    issuer: &str,
    subject: &str,
) -> StoreResult<Option<Identity>> {
    Ok(user_identities::table
        .find((issuer, subject))
        .select(Identity::as_select())
        .first(conn)
        .optional()?)
}

/// The identities linked to a user.
pub fn identities_of(conn: &mut DbConnection, user: UserId) -> StoreResult<Vec<Identity>> {
    Ok(user_identities::table
        .filter(user_identities::user_id.eq(user.to_string()))
        .order((user_identities::issuer, user_identities::subject))
        .select(Identity::as_select())
        .load(conn)?)
}

pub fn link(conn: &mut DbConnection, i: &Identity) -> StoreResult<()> {
    diesel::insert_into(user_identities::table)
        .values(i)
        .execute(conn)?;
    Ok(())
}

/// Records a sign-in through the identity (and the email it came with).
pub fn touch_identity(
    conn: &mut DbConnection,
    issuer: &str,
    subject: &str,
    email: Option<&str>,
    now: i64,
) -> StoreResult<()> {
    diesel::update(user_identities::table.find((issuer, subject)))
        .set((
            user_identities::last_sign_in_at.eq(Some(now)),
            user_identities::email.eq(email),
        ))
        .execute(conn)?;
    Ok(())
}

/// Unlinks one identity of a user; true when there was one.
pub fn unlink(
    conn: &mut DbConnection,
    user: UserId,
    issuer: &str,
    subject: &str,
) -> StoreResult<bool> {
    let n = diesel::delete(
        user_identities::table
            .find((issuer, subject))
            .filter(user_identities::user_id.eq(user.to_string())),
    )
    .execute(conn)?;
    Ok(n > 0)
}

/// A sign-in sent to a provider.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = sso_logins)]
pub struct Pending {
    pub state_hash: String,
    pub provider: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub client_challenge: String,
    pub return_to: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// Stores a pending sign-in, and drops the expired ones.
pub fn put_pending(conn: &mut DbConnection, p: &Pending, now: i64) -> StoreResult<()> {
    diesel::delete(sso_logins::table.filter(sso_logins::expires_at.le(now))).execute(conn)?;
    diesel::insert_into(sso_logins::table)
        .values(p)
        .execute(conn)?;
    Ok(())
}

/// Takes a pending sign-in by its state's digest: it is gone after this, whatever comes next.
pub fn take_pending(conn: &mut DbConnection, state_hash: &str) -> StoreResult<Option<Pending>> {
    let p = sso_logins::table
        .find(state_hash)
        .select(Pending::as_select())
        .first(conn)
        .optional()?;
    // Only the call whose delete took the row has it (two racing callbacks: one wins).
    let taken =
        p.is_some() && diesel::delete(sso_logins::table.find(state_hash)).execute(conn)? == 1;
    Ok(p.filter(|_| taken))
}

/// A sign-in waiting for its client.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = sso_handoffs)]
pub struct Handoff {
    pub code_hash: String,
    pub user_id: String,
    pub provider: String,
    pub client_challenge: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// Stores a handoff, and drops the expired ones.
pub fn put_handoff(conn: &mut DbConnection, h: &Handoff, now: i64) -> StoreResult<()> {
    diesel::delete(sso_handoffs::table.filter(sso_handoffs::expires_at.le(now))).execute(conn)?;
    diesel::insert_into(sso_handoffs::table)
        .values(h)
        .execute(conn)?;
    Ok(())
}

/// Takes a handoff by its code's digest (single use).
pub fn take_handoff(conn: &mut DbConnection, code_hash: &str) -> StoreResult<Option<Handoff>> {
    let h = sso_handoffs::table
        .find(code_hash)
        .select(Handoff::as_select())
        .first(conn)
        .optional()?;
    let taken =
        h.is_some() && diesel::delete(sso_handoffs::table.find(code_hash)).execute(conn)? == 1;
    Ok(h.filter(|_| taken))
}
