//! The run-time settings: password policy, lockout, token lifetimes.

use fluxgate_authz::{Action, Target};
use fluxgate_domain::{Settings, ValidationError};
use fluxgate_store::changes::EntityKind;
use fluxgate_store::{Tx, audit, settings};

pub use fluxgate_store::settings::Stored;

use crate::audit::AuditAction;
use crate::context::{Command, Ctx};
use crate::error::{Error, Result};
use crate::etag;

/// The settings' one resource name.
pub const NAME: &str = "settings";

/// One setting given a new value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    MinLength(u32),
    MaxLength(u32),
    RequireUppercase(bool),
    RequireLowercase(bool),
    RequireDigit(bool),
    RequireSymbol(bool),
    RejectCommon(bool),
    MaxFailedAttempts(u32),
    LockoutDurationSecs(u64),
    AccessTokenTtlSecs(u64),
    RefreshTokenTtlSecs(u64),
}

impl Change {
    fn apply(self, s: &mut Settings) {
        let (p, l, t) = (
            &mut s.password_policy,
            &mut s.lockout_policy,
            &mut s.token_policy,
        );
        match self {
            Change::MinLength(n) => p.min_length = n,
            Change::MaxLength(n) => p.max_length = n,
            Change::RequireUppercase(b) => p.require_uppercase = b,
            Change::RequireLowercase(b) => p.require_lowercase = b,
            Change::RequireDigit(b) => p.require_digit = b,
            Change::RequireSymbol(b) => p.require_symbol = b,
            Change::RejectCommon(b) => p.reject_common = b,
            Change::MaxFailedAttempts(n) => l.max_failed_attempts = n,
            Change::LockoutDurationSecs(s) => l.lockout_duration_secs = s,
            Change::AccessTokenTtlSecs(s) => t.access_token_ttl_secs = s,
            Change::RefreshTokenTtlSecs(s) => t.refresh_token_ttl_secs = s,
        }
    }
}

/// `cur` with `changes` applied, or every bound the result breaks (fields under `settings.`).
pub fn patched(cur: &Settings, changes: &[Change]) -> Result<Settings, ValidationError> {
    let mut out = cur.clone();
    for c in changes {
        c.apply(&mut out);
    }
    out.validate().map_err(|mut e| {
        for f in &mut e.violations {
            f.field = format!("settings.{}", f.field);
        }
        e
    })?;
    Ok(out)
}

/// Changes settings.
#[derive(Debug, Clone)]
pub struct Update {
    pub etag: String,
    pub changes: Vec<Change>,
    /// The update mask's paths, for the audit trail.
    pub paths: Vec<String>,
}

fn snapshot(s: &Settings) -> Option<String> {
    serde_json::to_string(s).ok()
}

fn load(tx: &mut Tx<'_>) -> Result<Stored> {
    settings::load(tx.conn)?.ok_or_else(|| Error::Broken("no settings".into()))
}

impl Command for Update {
    type Output = Stored;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        may_update(cx)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<Stored> {
        let cur = load(tx)?;
        etag::check(&self.etag, NAME, cur.version)?;
        let next = patched(&cur.settings, &self.changes)?;
        if next == cur.settings {
            return Ok(cur);
        }
        settings::save(tx.conn, &next, tx.now)?;
        tx.changed(EntityKind::Settings, NAME);
        let mut e = cx.event(AuditAction::SettingsUpdated, "settings", Some(NAME.into()));
        e.before_json = snapshot(&cur.settings);
        e.after_json = snapshot(&next);
        e.detail = Some(format!("paths: {}", self.paths.join(", ")));
        audit::append(tx.conn, e, tx.now)?;
        load(tx)
    }
}

/// Who may change the settings.
pub fn may_update(cx: &Ctx<'_>) -> Result<()> {
    cx.authorize(Action::UpdateSettings, Target::Org)
}

/// Who may read the settings.
pub fn may_read(cx: &Ctx<'_>) -> Result<()> {
    cx.authorize(Action::ReadSettings, Target::Org)
}
