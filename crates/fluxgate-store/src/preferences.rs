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
    /// Review requests gathered in one daily digest instead of one email each.
    pub review_digest: bool,
    /// The UTC day (days since 1970-01-01) the last digest covered.
    pub digest_day: i64,
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
            review_digest: false,
            digest_day: 0,
        }))
}

pub fn put(conn: &mut DbConnection, p: &Preferences) -> StoreResult<()> {
    let n = diesel::update(user_preferences::table.find(&p.user_id))
        .set((
            user_preferences::review_emails.eq(p.review_emails),
            user_preferences::decision_emails.eq(p.decision_emails),
            user_preferences::updated_at.eq(p.updated_at),
            user_preferences::review_digest.eq(p.review_digest),
            user_preferences::digest_day.eq(p.digest_day),
        ))
        .execute(conn)?;
    if n == 0 {
        diesel::insert_into(user_preferences::table)
            .values(p)
            .execute(conn)?;
    }
    Ok(())
}

/// Users who asked for a daily digest of review requests and have not had one for `day`.
pub fn digest_due(conn: &mut DbConnection, day: i64) -> StoreResult<Vec<Preferences>> {
    Ok(user_preferences::table
        .filter(user_preferences::review_digest.eq(true))
        .filter(user_preferences::review_emails.eq(true))
        .filter(user_preferences::digest_day.lt(day))
        .select(Preferences::as_select())
        .load(conn)?)
}

/// Records that `user`'s digest for `day` is done.
pub fn digest_done(conn: &mut DbConnection, user: &str, day: i64) -> StoreResult<()> {
    diesel::update(user_preferences::table.find(user))
        .set(user_preferences::digest_day.eq(day))
        .execute(conn)?;
    Ok(())
}
