//! SettingsService: the run-time settings (password policy, lockout, token lifetimes).

use std::sync::Arc;

use fluxgate_authz::{Action, Target};
use fluxgate_domain::{PasswordPolicy, Settings, Violations};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::settings_service_server::SettingsService;
use fluxgate_store::changes::EntityKind;
use fluxgate_store::{audit, settings};
use tonic::{Request, Response, Status};

use super::reply;
use crate::auth::RequestCtx;
use crate::convert::{check_etag, duration, duration_secs, etag, mask_paths, timestamp};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub const SETTINGS_NAME: &str = "settings";

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

fn settings_to_proto(s: &settings::Stored) -> pb::Settings {
    let st = &s.settings;
    pb::Settings {
        name: SETTINGS_NAME.into(),
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
];
const GROUPS: &[&str] = &["password_policy", "lockout_policy", "token_policy"];

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

/// Applies the masked fields of `new` to `cur`.
fn apply_mask(cur: &Settings, new: &pb::Settings, paths: &[String]) -> ApiResult<Settings> {
    let mut out = cur.clone();
    let mut v = Violations::new();
    let leaves: Vec<&str> = paths
        .iter()
        .flat_map(|p| {
            if GROUPS.contains(&p.as_str()) {
                LEAVES
                    .iter()
                    .copied()
                    .filter(|l| l.starts_with(&format!("{p}.")))
                    .collect::<Vec<_>>()
            } else {
                LEAVES
                    .iter()
                    .copied()
                    .filter(|l| *l == p.as_str())
                    .collect()
            }
        })
        .collect();
    let pp = new.password_policy;
    let lp = new.lockout_policy;
    let tp = new.token_policy;
    for leaf in leaves {
        let (group, _) = leaf.split_once('.').unwrap_or((leaf, ""));
        let field = format!("settings.{leaf}");
        let missing = match group {
            "password_policy" => pp.is_none(),
            "lockout_policy" => lp.is_none(),
            _ => tp.is_none(),
        };
        if missing {
            v.add(
                format!("settings.{group}"),
                "is required when the mask names it",
            );
            continue;
        }
        let pp = pp.unwrap_or_default();
        let lp = lp.unwrap_or_default();
        let tp = tp.unwrap_or_default();
        let o: &mut Settings = &mut out;
        match leaf {
            "password_policy.min_length" => {
                o.password_policy.min_length = count(pp.min_length, &field, &mut v)
            }
            "password_policy.max_length" => {
                o.password_policy.max_length = count(pp.max_length, &field, &mut v)
            }
            "password_policy.require_uppercase" => {
                o.password_policy.require_uppercase = pp.require_uppercase
            }
            "password_policy.require_lowercase" => {
                o.password_policy.require_lowercase = pp.require_lowercase
            }
            "password_policy.require_digit" => o.password_policy.require_digit = pp.require_digit,
            "password_policy.require_symbol" => {
                o.password_policy.require_symbol = pp.require_symbol
            }
            "password_policy.reject_common" => o.password_policy.reject_common = pp.reject_common,
            "lockout_policy.max_failed_attempts" => {
                o.lockout_policy.max_failed_attempts = count(lp.max_failed_attempts, &field, &mut v)
            }
            "lockout_policy.lockout_duration" => {
                o.lockout_policy.lockout_duration_secs =
                    secs(lp.lockout_duration.as_ref(), &field, &mut v)
            }
            "token_policy.access_token_ttl" => {
                o.token_policy.access_token_ttl_secs =
                    secs(tp.access_token_ttl.as_ref(), &field, &mut v)
            }
            "token_policy.refresh_token_ttl" => {
                o.token_policy.refresh_token_ttl_secs =
                    secs(tp.refresh_token_ttl.as_ref(), &field, &mut v)
            }
            _ => {}
        }
    }
    // Name every problem at once: conversion errors, then policy bounds not already reported.
    let mut reported = match v.finish() {
        Ok(()) => Vec::new(),
        Err(e) => e.violations,
    };
    if let Err(e) = out.validate() {
        for mut f in e.violations {
            f.field = format!("settings.{}", f.field);
            if !reported.iter().any(|r| r.field == f.field) {
                reported.push(f);
            }
        }
    }
    if reported.is_empty() {
        Ok(out)
    } else {
        Err(fluxgate_domain::ValidationError {
            violations: reported,
        }
        .into())
    }
}

fn snapshot(s: &Settings) -> Option<String> {
    serde_json::to_string(s).ok()
}

impl SettingsSvc {
    async fn update(
        &self,
        ctx: RequestCtx,
        request: Request<pb::UpdateSettingsRequest>,
    ) -> ApiResult<Response<pb::UpdateSettingsResponse>> {
        let st = &self.state;
        let p = st.authenticate(&request, &ctx).await?;
        st.authorize(&p, Action::UpdateSettings, Target::Org)?;
        let req = request.into_inner();
        let Some(new) = req.settings else {
            return Err(ApiError::invalid("settings", "is required"));
        };
        if !new.name.is_empty() && new.name != SETTINGS_NAME {
            return Err(ApiError::invalid("settings.name", "must be \"settings\""));
        }
        let mut allowed: Vec<&str> = GROUPS.to_vec();
        allowed.extend_from_slice(LEAVES);
        let paths = mask_paths(req.update_mask.as_ref(), &allowed)?;
        // Validate against what is in force now; re-checked against the stored row below.
        apply_mask(&st.directory.settings().settings, &new, &paths)?;
        let ctx2 = ctx.clone();
        let committed = st
            .db
            .write(move |tx| {
                let cur = settings::load(tx.conn)?
                    .ok_or_else(|| ApiError::Internal("no settings".into()))?;
                check_etag(&new.etag, "settings", cur.version)?;
                let next = apply_mask(&cur.settings, &new, &paths)?;
                if next == cur.settings {
                    return Ok(cur);
                }
                settings::save(tx.conn, &next, tx.now)?;
                tx.changed(EntityKind::Settings, SETTINGS_NAME);
                let mut e = ctx2.event(
                    Some(&p),
                    "settings.updated",
                    "settings",
                    Some(SETTINGS_NAME.into()),
                );
                e.before_json = snapshot(&cur.settings);
                e.after_json = snapshot(&next);
                e.detail = Some(format!("paths: {}", paths.join(", ")));
                audit::append(tx.conn, e, tx.now)?;
                settings::load(tx.conn)?.ok_or_else(|| ApiError::Internal("no settings".into()))
            })
            .await?;
        st.directory.settle().await;
        Ok(reply(
            pb::UpdateSettingsResponse {
                settings: Some(settings_to_proto(&committed.value)),
            },
            &ctx,
            committed.revision,
        ))
    }
}

#[tonic::async_trait]
impl SettingsService for SettingsSvc {
    async fn get_settings(
        &self,
        request: Request<pb::GetSettingsRequest>,
    ) -> Result<Response<pb::GetSettingsResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        let p = self.state.authenticate(&request, &ctx).await?;
        self.state
            .authorize(&p, Action::ReadSettings, Target::Org)?;
        let name = &request.get_ref().name;
        if !name.is_empty() && name != SETTINGS_NAME {
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
        let ctx = RequestCtx::of(&request)?;
        Ok(self.update(ctx, request).await?)
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
