//! What a signed-in user wants to be told by email: the change requests they may review, and
//! the decisions on their own. Each user changes only their own; every change is audited.

use fluxgate_store::{DbConnection, Tx, audit, preferences};

pub use fluxgate_store::preferences::Preferences;

use crate::audit::AuditAction;
use crate::context::{Command, Ctx};
use crate::error::Result;
use crate::sessions::own_session;

/// The signed-in user's preferences.
pub fn own(cx: &Ctx<'_>, conn: &mut DbConnection) -> Result<Preferences> {
    let (uid, _) = own_session(cx)?;
    Ok(preferences::get(conn, uid)?)
}

/// Changes the signed-in user's preferences; `None` fields stay.
#[derive(Debug, Clone, Default)]
pub struct UpdateOwn {
    pub review_emails: Option<bool>,
    pub decision_emails: Option<bool>,
    pub review_digest: Option<bool>,
}

impl Command for UpdateOwn {
    type Output = Preferences;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        own_session(cx).map(drop)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<Preferences> {
        let (uid, _) = own_session(cx)?;
        let before = preferences::get(tx.conn, uid)?;
        let after = Preferences {
            review_emails: self.review_emails.unwrap_or(before.review_emails),
            decision_emails: self.decision_emails.unwrap_or(before.decision_emails),
            review_digest: self.review_digest.unwrap_or(before.review_digest),
            updated_at: tx.now,
            ..before.clone()
        };
        let key = |p: &Preferences| (p.review_emails, p.decision_emails, p.review_digest);
        if key(&after) == key(&before) {
            return Ok(before);
        }
        preferences::put(tx.conn, &after)?;
        let mut e = cx.event(
            AuditAction::UserPreferencesUpdated,
            "user",
            Some(format!("users/{uid}")),
        );
        e.detail = Some(format!(
            "review emails {}{}, decision emails {}",
            on_off(after.review_emails),
            if after.review_digest {
                " (daily digest)"
            } else {
                ""
            },
            on_off(after.decision_emails)
        ));
        audit::append(tx.conn, e, tx.now)?;
        Ok(after)
    }
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// Whether the user wants each review request by email as it comes (true without a row;
/// false for one who opted out or takes a daily digest instead).
pub fn wants_each_review(conn: &mut DbConnection, user: fluxgate_domain::UserId) -> Result<bool> {
    let p = preferences::get(conn, user)?;
    Ok(p.review_emails && !p.review_digest)
}

/// Whether the user wants the decisions on their requests (true without a row).
pub fn wants_decisions(conn: &mut DbConnection, user: fluxgate_domain::UserId) -> Result<bool> {
    Ok(preferences::get(conn, user)?.decision_emails)
}
