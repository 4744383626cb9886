//! What each user wants to be told by email. A user without a row wants everything.

use diesel::prelude::*;
use fluxgate_domain::UserId;

use crate::schema::user_preferences;
use crate::{DbConnection, StoreResult};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = user_preferences)]
pub struct Preferences {
    pub user_id: String,
    /// Change requests the user may review.
    pub review_emails: bool,
    /// Decisions on the user's own change requests.
    pub decision_emails: bool,
    pub updated_at: i64,
}

/// The user's preferences (the defaults when none are stored).
pub fn get(conn: &mut DbConnection, user: UserId) -> StoreResult<Preferences> {
    Ok(user_preferences::table
        .find(user.to_string())
        .select(Preferences::as_select())
        .first(conn)
        .optional()?
        .unwrap_or(Preferences {
            user_id: user.to_string(),
            review_emails: true,
            decision_emails: true,
            updated_at: 0,
        }))
}

pub fn put(conn: &mut DbConnection, p: &Preferences) -> StoreResult<()> {
    let n = diesel::update(user_preferences::table.find(&p.user_id))
        .set((
            user_preferences::review_emails.eq(p.review_emails),
            user_preferences::decision_emails.eq(p.decision_emails),
            user_preferences::updated_at.eq(p.updated_at),
        ))
        .execute(conn)?;
    if n == 0 {
        diesel::insert_into(user_preferences::table)
            .values(p)
            .execute(conn)?;
    }
    Ok(())
}
