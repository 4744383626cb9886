//! SettingsService: the run-time settings (password policy, lockout, token lifetimes).

use std::sync::Arc;

use fluxgate_core::settings::{Change, NAME, Stored, Update};
use fluxgate_domain::{PasswordPolicy, Settings, ValidationError, Violations};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::settings_service_server::SettingsService;
use tonic::{Request, Response, Status};

use super::reply;
use crate::auth::RequestCtx;
use crate::convert::{
    duration, duration_secs, etag, mask_paths, role_from_proto, role_to_proto, timestamp,
};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Debug, Clone)]
pub struct SettingsSvc {
    pub state: Arc<AppState>,
}

pub fn password_policy_to_proto(p: &PasswordPolicy) -> pb::PasswordPolicy {
    pb::PasswordPolicy {
        min_length: p.min_length as i32,
        max_length: p.max_length as i32,
        require_uppercase: p.require_uppercase,
        require_lowercase: p.require_lowercase,
        require_digit: p.require_digit,
        require_symbol: p.require_symbol,
        reject_common: p.reject_common,
    }
}

fn settings_to_proto(s: &Stored) -> pb::Settings {
    let st = &s.settings;
    pb::Settings {
        name: NAME.into(),
        password_policy: Some(password_policy_to_proto(&st.password_policy)),
        lockout_policy: Some(pb::LockoutPolicy {
            max_failed_attempts: st.lockout_policy.max_failed_attempts as i32,
            lockout_duration: Some(duration(st.lockout_policy.lockout_duration_secs)),
        }),
        token_policy: Some(pb::TokenPolicy {
            access_token_ttl: Some(duration(st.token_policy.access_token_ttl_secs)),
            refresh_token_ttl: Some(duration(st.token_policy.refresh_token_ttl_secs)),
        }),
        etag: etag("settings", s.version),
        update_time: Some(timestamp(s.updated_at)),
        sign_in_policy: Some(pb::SignInPolicy {
            second_factor_required_roles: st
                .sign_in_policy
                .second_factor_roles
                .iter()
                .map(|r| role_to_proto(*r) as i32)
                .collect(),
            second_factor_grace_period: Some(duration(st.sign_in_policy.second_factor_grace_secs)),
            password_sign_in_disabled: st.sign_in_policy.password_sign_in_disabled,
            break_glass_users: st
                .sign_in_policy
                .break_glass_users
                .iter()
                .map(|u| format!("users/{u}"))
                .collect(),
        }),
    }
}

/// Every leaf path of the settings, and the sub-messages that stand for all their leaves.
const LEAVES: &[&str] = &[
    "password_policy.min_length",
    "password_policy.max_length",
    "password_policy.require_uppercase",
    "password_policy.require_lowercase",
    "password_policy.require_digit",
    "password_policy.require_symbol",
    "password_policy.reject_common",
    "lockout_policy.max_failed_attempts",
    "lockout_policy.lockout_duration",
    "token_policy.access_token_ttl",
    "token_policy.refresh_token_ttl",
    "sign_in_policy.second_factor_required_roles",
    "sign_in_policy.second_factor_grace_period",
    "sign_in_policy.password_sign_in_disabled",
    "sign_in_policy.break_glass_users",
];
const GROUPS: &[&str] = &[
    "password_policy",
    "lockout_policy",
    "token_policy",
    "sign_in_policy",
];

fn count(v: i32, field: &str, viol: &mut Violations) -> u32 {
    if v < 0 {
        viol.add(field, "must not be negative");
        0
    } else {
        v as u32
    }
}

fn secs(d: Option<&prost_types::Duration>, field: &str, viol: &mut Violations) -> u64 {
    match d {
        None => {
            viol.add(field, "is required when the mask names it");
            0
        }
        Some(d) => viol.check(field, duration_secs(d)).unwrap_or(0),
    }
}

/// The leaves a mask names (a sub-message stands for all of its leaves).
fn leaves(paths: &[String]) -> Vec<&'static str> {
    paths
        .iter()
        .flat_map(|p| {
            let group = GROUPS.contains(&p.as_str());
            LEAVES.iter().copied().filter(move |l| {
                if group {
                    l.starts_with(&format!("{p}."))
                } else {
                    *l == p
                }
            })
        })
        .collect()
}

/// The roles of a repeated role field.
fn roles(values: &[i32], field: &str, v: &mut Violations) -> Vec<fluxgate_domain::Role> {
    let mut out = Vec::new();
    for (i, r) in values.iter().enumerate() {
        match role_from_proto(*r) {
            Ok(Some(r)) => out.push(r),
            Ok(None) => v.add(format!("{field}[{i}]"), "must be a role"),
            Err(e) => v.add(format!("{field}[{i}]"), e.to_string()),
        }
    }
    out
}

/// The users (by id or username, as the directory knows them) of a repeated user-name field.
fn user_ids(
    state: &AppState,
    names: &[String],
    field: &str,
    v: &mut Violations,
) -> Vec<fluxgate_domain::UserId> {
    let mut out = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let f = format!("{field}[{i}]");
        match crate::convert::parse_user_name(&f, n) {
            Ok(fluxgate_core::names::UserRef::Id(id)) => out.push(id),
            Ok(fluxgate_core::names::UserRef::Username(u)) => {
                match state.directory.user_by_name(&u) {
                    Some(id) => out.push(id),
                    None => v.add(f, format!("no user named {u:?}")),
                }
            }
            Err(_) => v.add(f, "must be users/{user_id} or users/{username}"),
        }
    }
    out
}

/// The change one leaf of the sign-in policy names.
fn sign_in_change(
    state: &AppState,
    leaf: &str,
    new: &pb::Settings,
    v: &mut Violations,
) -> Option<Change> {
    let field = format!("settings.{leaf}");
    let sp = new.sign_in_policy.clone().unwrap_or_default();
    Some(match leaf {
        "sign_in_policy.second_factor_required_roles" => {
            Change::SecondFactorRoles(roles(&sp.second_factor_required_roles, &field, v))
        }
        "sign_in_policy.second_factor_grace_period" => {
            Change::SecondFactorGraceSecs(secs(sp.second_factor_grace_period.as_ref(), &field, v))
        }
        "sign_in_policy.password_sign_in_disabled" => {
            Change::PasswordSignInDisabled(sp.password_sign_in_disabled)
        }
        "sign_in_policy.break_glass_users" => {
            Change::BreakGlassUsers(user_ids(state, &sp.break_glass_users, &field, v))
        }
        _ => return None,
    })
}

/// The change one leaf names, from the message's sub-messages.
fn change(state: &AppState, leaf: &str, new: &pb::Settings, v: &mut Violations) -> Option<Change> {
    if leaf.starts_with("sign_in_policy.") {
        return sign_in_change(state, leaf, new, v);
    }
    let field = format!("settings.{leaf}");
    let pp = new.password_policy.unwrap_or_default();
    let lp = new.lockout_policy.unwrap_or_default();
    let tp = new.token_policy.unwrap_or_default();
    Some(match leaf {
        "password_policy.min_length" => Change::MinLength(count(pp.min_length, &field, v)),
        "password_policy.max_length" => Change::MaxLength(count(pp.max_length, &field, v)),
        "password_policy.require_uppercase" => Change::RequireUppercase(pp.require_uppercase),
        "password_policy.require_lowercase" => Change::RequireLowercase(pp.require_lowercase),
        "password_policy.require_digit" => Change::RequireDigit(pp.require_digit),
        "password_policy.require_symbol" => Change::RequireSymbol(pp.require_symbol),
        "password_policy.reject_common" => Change::RejectCommon(pp.reject_common),
        "lockout_policy.max_failed_attempts" => {
            Change::MaxFailedAttempts(count(lp.max_failed_attempts, &field, v))
        }
        "lockout_policy.lockout_duration" => {
            Change::LockoutDurationSecs(secs(lp.lockout_duration.as_ref(), &field, v))
        }
        "token_policy.access_token_ttl" => {
            Change::AccessTokenTtlSecs(secs(tp.access_token_ttl.as_ref(), &field, v))
        }
        "token_policy.refresh_token_ttl" => {
            Change::RefreshTokenTtlSecs(secs(tp.refresh_token_ttl.as_ref(), &field, v))
        }
        _ => return None,
    })
}

/// The masked fields of `new` as changes, each bad one a violation.
fn changes(
    state: &AppState,
    new: &pb::Settings,
    paths: &[String],
    v: &mut Violations,
) -> Vec<Change> {
    let mut out = Vec::new();
    for leaf in leaves(paths) {
        let (group, _) = leaf.split_once('.').unwrap_or((leaf, ""));
        let missing = match group {
            "password_policy" => new.password_policy.is_none(),
            "lockout_policy" => new.lockout_policy.is_none(),
            "sign_in_policy" => new.sign_in_policy.is_none(),
            _ => new.token_policy.is_none(),
        };
        if missing {
            v.add(
                format!("settings.{group}"),
                "is required when the mask names it",
            );
            continue;
        }
        out.extend(change(state, leaf, new, v));
    }
    out
}

/// Names every problem at once: conversion errors, then the bounds `current` with the changes
/// would break, not already reported.
fn checked(current: &Settings, changes: &[Change], v: Violations) -> ApiResult<()> {
    let mut reported = v.finish().err().map(|e| e.violations).unwrap_or_default();
    if let Err(e) = fluxgate_core::settings::patched(current, changes) {
        for f in e.violations {
            if !reported.iter().any(|r| r.field == f.field) {
                reported.push(f);
            }
        }
    }
    if reported.is_empty() {
        Ok(())
    } else {
        Err(ValidationError {
            violations: reported,
        }
        .into())
    }
}

fn update_cmd(state: &AppState, req: pb::UpdateSettingsRequest) -> ApiResult<Update> {
    let pb::UpdateSettingsRequest {
        settings,
        update_mask,
    } = req;
    let new = settings.ok_or_else(|| ApiError::invalid("settings", "is required"))?;
    if !new.name.is_empty() && new.name != NAME {
        return Err(ApiError::invalid("settings.name", "must be \"settings\""));
    }
    let mut allowed: Vec<&str> = GROUPS.to_vec();
    allowed.extend_from_slice(LEAVES);
    let paths = mask_paths(update_mask.as_ref(), &allowed)?;
    let mut v = Violations::new();
    let changes = changes(state, &new, &paths, &mut v);
    // Checked against what is in force now; the use case checks the stored row again.
    checked(&state.directory.settings().settings, &changes, v)?;
    Ok(Update {
        etag: new.etag,
        changes,
        paths,
    })
}

#[tonic::async_trait]
impl SettingsService for SettingsSvc {
    async fn get_settings(
        &self,
        request: Request<pb::GetSettingsRequest>,
    ) -> Result<Response<pb::GetSettingsResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        self.state
            .judge(&ctx, &p, fluxgate_core::settings::may_read)?;
        let pb::GetSettingsRequest { name } = req;
        if !name.is_empty() && name != NAME {
            return Err(ApiError::invalid("name", "must be \"settings\"").into());
        }
        let s = self.state.directory.settings();
        Ok(reply(
            pb::GetSettingsResponse {
                settings: Some(settings_to_proto(&s)),
            },
            &ctx,
            None,
        ))
    }

    async fn update_settings(
        &self,
        request: Request<pb::UpdateSettingsRequest>,
    ) -> Result<Response<pb::UpdateSettingsResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        // Refuse the unauthorised before judging their input (the use case checks again).
        self.state
            .judge(&ctx, &p, fluxgate_core::settings::may_update)?;
        let cmd = update_cmd(&self.state, req)?;
        let done = self.state.execute(&ctx, Some(&p), cmd).await?;
        Ok(done.reply(&ctx, |s| pb::UpdateSettingsResponse {
            settings: Some(settings_to_proto(&s)),
        }))
    }

    async fn get_password_policy(
        &self,
        request: Request<pb::GetPasswordPolicyRequest>,
    ) -> Result<Response<pb::GetPasswordPolicyResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        let s = self.state.directory.settings();
        Ok(reply(
            pb::GetPasswordPolicyResponse {
                password_policy: Some(password_policy_to_proto(&s.settings.password_policy)),
            },
            &ctx,
            None,
        ))
    }
}
