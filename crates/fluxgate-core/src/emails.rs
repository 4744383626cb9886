//! The outbox, for Team Admins: what was sent, what failed, and sending a failed or held
//! message again.

use fluxgate_authz::{Action, Target};
use fluxgate_domain::{EmailId, Refusal};
use fluxgate_store::outbox;
use fluxgate_store::{DbConnection, Tx, audit};

pub use fluxgate_store::outbox::{Email, EmailState, Filter};

use crate::audit::AuditAction;
use crate::context::{Command, Ctx};
use crate::error::{Error, Result};

fn name(id: EmailId) -> String {
    format!("emails/{id}")
}

/// Who may read and retry the outbox.
pub fn may_manage(cx: &Ctx<'_>) -> Result<()> {
    cx.authorize(Action::ManageEmail, Target::Org)
}

fn find(conn: &mut DbConnection, id: EmailId) -> Result<Email> {
    outbox::find(conn, id)?.ok_or_else(|| Error::NotFound(format!("{} not found", name(id))))
}

/// A page of messages, newest first, before `before`; one more than `limit` tells the caller
/// there is more.
pub fn list(
    cx: &Ctx<'_>,
    conn: &mut DbConnection,
    f: &Filter,
    before: Option<EmailId>,
    limit: i64,
) -> Result<Vec<Email>> {
    may_manage(cx)?;
    Ok(outbox::list(conn, f, before, limit)?)
}

/// One message.
pub fn get(cx: &Ctx<'_>, conn: &mut DbConnection, id: EmailId) -> Result<Email> {
    may_manage(cx)?;
    find(conn, id)
}

/// Sends a failed or held message again.
#[derive(Debug, Clone)]
pub struct Retry {
    pub id: EmailId,
}

impl Command for Retry {
    type Output = Email;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        may_manage(cx)?;
        if !cx.outbox()?.delivers() {
            return Err(Refusal::NoSmtp.into());
        }
        Ok(())
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<Email> {
        let e = find(tx.conn, self.id)?;
        if !matches!(e.state, EmailState::Failed | EmailState::Held) {
            let state = e.state.as_str();
            return Err(Refusal::NotRetryable { state }.into());
        }
        outbox::requeue(tx.conn, self.id, tx.now)?;
        let mut ev = cx.event(AuditAction::EmailRequeued, "email", Some(name(self.id)));
        ev.detail = Some(format!("was {}", e.state.as_str()));
        audit::append(tx.conn, ev, tx.now)?;
        cx.outbox()?.queued();
        find(tx.conn, self.id)
    }
}
