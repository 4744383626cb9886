//! How each user signs in beside their password: whether they may use one at all (`sso_only`:
//! an account an identity provider created), and the second factor their role requires (the
//! enrolment deadline, and whether it has passed). A user without a row has the defaults.

use diesel::prelude::*;
use fluxgate_domain::UserId;

use crate::schema::user_sign_in;
use crate::{DbConnection, StoreResult};

/// A user's sign-in state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = user_sign_in)]
pub struct SignIn {
    pub user_id: String,
    /// Signs in only through an identity provider: no password, none given by a reset.
    pub sso_only: bool,
    /// When the second factor their role requires must be enrolled by.
    pub second_factor_due_at: Option<i64>,
    /// The deadline passed without an enrolment: until there is one, the user may only manage
    /// their own session (and so enrol).
    pub second_factor_overdue: bool,
}

/// The user's state (the defaults when none is stored).
pub fn get(conn: &mut DbConnection, user: UserId) -> StoreResult<SignIn> {
    Ok(user_sign_in::table
        .find(user.to_string())
        .select(SignIn::as_select())
        .first(conn)
        .optional()?
        .unwrap_or_else(|| SignIn {
            user_id: user.to_string(),
            ..SignIn::default()
        }))
}

/// Stores the user's state.
pub fn put(conn: &mut DbConnection, s: &SignIn) -> StoreResult<()> {
    let n = diesel::update(user_sign_in::table.find(&s.user_id))
        .set((
            user_sign_in::sso_only.eq(s.sso_only),
            user_sign_in::second_factor_due_at.eq(s.second_factor_due_at),
            user_sign_in::second_factor_overdue.eq(s.second_factor_overdue),
        ))
        .execute(conn)?;
    if n == 0 {
        diesel::insert_into(user_sign_in::table)
            .values(s)
            .execute(conn)?;
    }
    Ok(())
}

/// The stored states of `ids` (users without a row have the defaults): one statement per
/// [`CHUNK`](crate::CHUNK) ids.
pub fn get_many(conn: &mut DbConnection, ids: &[UserId]) -> StoreResult<Vec<SignIn>> {
    let mut out = Vec::new();
    for chunk in ids.chunks(crate::CHUNK) {
        let keys: Vec<String> = chunk.iter().map(ToString::to_string).collect();
        out.extend(
            user_sign_in::table
                .filter(user_sign_in::user_id.eq_any(keys))
                .select(SignIn::as_select())
                .load(conn)?,
        );
    }
    Ok(out)
}

/// Every stored state, for the directory (a few rows: most users have the defaults).
pub fn all(conn: &mut DbConnection) -> StoreResult<Vec<SignIn>> {
    Ok(user_sign_in::table.select(SignIn::as_select()).load(conn)?)
}
