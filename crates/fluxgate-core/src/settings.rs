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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    SecondFactorRoles(Vec<fluxgate_domain::Role>),
    SecondFactorGraceSecs(u64),
    PasswordSignInDisabled(bool),
    BreakGlassUsers(Vec<fluxgate_domain::UserId>),
}

impl Change {
    fn apply(self, s: &mut Settings) {
        let (p, l, t, si) = (
            &mut s.password_policy,
            &mut s.lockout_policy,
            &mut s.token_policy,
            &mut s.sign_in_policy,
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
            Change::SecondFactorRoles(r) => si.second_factor_roles = r,
            Change::SecondFactorGraceSecs(s) => si.second_factor_grace_secs = s,
            Change::PasswordSignInDisabled(b) => si.password_sign_in_disabled = b,
            Change::BreakGlassUsers(u) => si.break_glass_users = u,
        }
    }
}

/// `cur` with `changes` applied, or every bound the result breaks (fields under `settings.`).
pub fn patched(cur: &Settings, changes: &[Change]) -> Result<Settings, ValidationError> {
    let mut out = cur.clone();
    for c in changes {
        c.clone().apply(&mut out);
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
        break_glass_admins(tx, &next.sign_in_policy)?;
        lift_lapsed_requirements(cx, tx, &next.sign_in_policy)?;
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

/// Break-glass users must be active Team Admins.
fn break_glass_admins(tx: &mut Tx<'_>, p: &fluxgate_domain::SignInPolicy) -> Result<()> {
    for id in &p.break_glass_users {
        let ok = fluxgate_store::users::find(tx.conn, *id)?
            .is_some_and(|u| u.active && u.role == fluxgate_domain::Role::TeamAdmin);
        if !ok {
            return Err(ValidationError::field(
                "settings.sign_in_policy.break_glass_users",
                format!("users/{id} is not an active Team Admin"),
            )
            .into());
        }
    }
    Ok(())
}

/// Users held to enrolment by a rule the new policy no longer has are let go at once.
fn lift_lapsed_requirements(
    cx: &Ctx<'_>,
    tx: &mut Tx<'_>,
    p: &fluxgate_domain::SignInPolicy,
) -> Result<()> {
    use fluxgate_store::sign_in;
    for mut s in sign_in::all(tx.conn)? {
        if s.second_factor_due_at.is_none() {
            continue;
        }
        let Ok(id) = s.user_id.parse::<fluxgate_domain::UserId>() else {
            continue;
        };
        let role = fluxgate_store::users::find(tx.conn, id)?.map(|u| u.role);
        if role.is_some_and(|r| !p.requires_second_factor(r)) {
            s.second_factor_due_at = None;
            s.second_factor_overdue = false;
            sign_in::put(tx.conn, &s)?;
            tx.changed(EntityKind::User, id.to_string());
            let target = Some(format!("users/{id}"));
            let mut e = cx.event(AuditAction::SecondFactorDeadline, "user", target);
            e.detail =
                Some("no second factor required any more: the sign-in policy changed".into());
            audit::append(tx.conn, e, tx.now)?;
        }
    }
    Ok(())
}

/// Who may change the settings.
pub fn may_update(cx: &Ctx<'_>) -> Result<()> {
    cx.authorize(Action::UpdateSettings, Target::Org)
}

/// Who may read the settings.
pub fn may_read(cx: &Ctx<'_>) -> Result<()> {
    cx.authorize(Action::ReadSettings, Target::Org)
}
