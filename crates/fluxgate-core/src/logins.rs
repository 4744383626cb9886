//! Failed sign-ins in the audit trail: how an attempt names its subject, how a lockout's
//! refusals are coalesced, and how the activity report reads the counts back.

use std::collections::HashMap;
use std::sync::Mutex;

use fluxgate_domain::UserId;
use fluxgate_store::{Tx, audit};
use sha2::{Digest, Sha256};

use crate::audit::AuditAction;
use crate::context::{Command, Ctx};
use crate::error::Result;

/// What a failed sign-in that locked its account adds to the event's detail.
pub const LOCKED_NOW: &str = "; account locked";

/// How a failed sign-in names its subject in the audit trail, as (target, shown): an account by
/// its resource name and username; a name that matches no account never verbatim (it may be a
/// password typed into the wrong box), only by a digest a query can filter on
/// (`logins/{digest}`) and its first character.
pub fn failed_login_subject(user: Option<(UserId, &str)>, login: &str) -> (String, String) {
    match user {
        Some((id, username)) => (format!("users/{id}"), format!("{username:?}")),
        None => {
            let digest: String = Sha256::digest(login.to_lowercase().as_bytes())
                .iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect();
            let first: String = login.chars().take(1).collect();
            (
                format!("logins/{digest}"),
                format!("unknown login {first:?}… (logins/{digest})"),
            )
        }
    }
}

/// How many sign-in attempts a failed-login event records, read back from the detail this
/// module writes: one, plus the earlier refusals it carries, or for a coalesced event the
/// refusals it counts (the activity report sums them).
pub fn attempts_recorded(detail: Option<&str>) -> i64 {
    let Some(d) = detail else { return 1 };
    let n = d
        .split("; ")
        .nth(1)
        .and_then(|x| x.split(' ').next())
        .and_then(|n| n.parse::<i64>().ok());
    match n {
        Some(n) if d.contains("earlier attempt(s)") => 1 + n,
        Some(n) if d.contains("attempt(s) refused") => n,
        _ => 1,
    }
}

/// Whether a failed-login event is the failure that locked its account.
pub fn locked_an_account(detail: Option<&str>) -> bool {
    detail.is_some_and(|d| d.ends_with(LOCKED_NOW))
}

/// Sign-in attempts refused during a lockout and not yet in the audit trail. The first refusal
/// of each second per subject is recorded at once; the others are counted here (a flood of
/// locked attempts must not become a write per request) and recorded later as one event with
/// their count ([`FlushRefused`]).
#[derive(Debug, Default)]
pub struct RefusedLogins {
    pending: Mutex<HashMap<String, Refused>>,
}

/// The refusals counted for one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub target: String,
    pub shown: String,
    pub count: u64,
    pub first_at: i64,
    pub peer: Option<String>,
}

impl RefusedLogins {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Refused>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one refusal of `subject`.
    pub fn add(
        &self,
        subject: String,
        target: String,
        shown: String,
        now: i64,
        peer: Option<String>,
    ) {
        self.lock()
            .entry(subject)
            .or_insert(Refused {
                target,
                shown,
                count: 0,
                first_at: now,
                peer,
            })
            .count += 1;
    }

    /// The refusals counted for `subject`, which the caller records with its own event.
    pub fn take(&self, subject: &str) -> Option<Refused> {
        self.lock().remove(subject)
    }

    /// Every count, for [`FlushRefused`].
    pub fn take_all(&self) -> FlushRefused {
        FlushRefused(self.lock().drain().map(|(_, r)| r).collect())
    }
}

/// Records counted refusals: one failed-login event per subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushRefused(pub Vec<Refused>);

impl Command for FlushRefused {
    type Output = usize;

    fn apply(self, _cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<usize> {
        let n = self.0.len();
        for r in self.0 {
            let mut e = crate::audit::event(AuditAction::AuthLogin, "user", Some(r.target));
            e.outcome = "failure".into();
            e.detail = Some(format!(
                "locked out: {}; {} attempt(s) refused since {} µs",
                r.shown, r.count, r.first_at
            ));
            e.peer_addr = r.peer;
            audit::append(tx.conn, e, tx.now)?;
        }
        Ok(n)
    }
}
