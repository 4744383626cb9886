//! `settings`: the run-time settings (Team Admins) and the password policy in force (anyone).

use clap::Subcommand;
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::settings_service_client::SettingsServiceClient;

use crate::client::{Call, Ctx};
use crate::error::{CliError, Result};
use crate::output::{self, emit};

/// `fluxctl settings …`
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Show the run-time settings (Team Admins)
    Get,
    /// Change settings: `--set PATH=VALUE` (repeatable), e.g.
    /// `--set password_policy.min_length=14 --set lockout_policy.lockout_duration=900s`
    Update {
        /// A field path and its value: a number, `true`/`false`, a duration (`900s`), a JSON
        /// list (`["team_admin"]`), or text
        #[arg(long = "set", required = true, value_parser = parse_assignment)]
        set: Vec<(String, serde_json::Value)>,
        #[arg(long)]
        etag: Option<String>,
    },
    /// Show the password policy in force (any signed-in caller)
    PasswordPolicy,
}

/// `path=value`, the value read as JSON where it parses, else as text.
fn parse_assignment(s: &str) -> std::result::Result<(String, serde_json::Value), String> {
    let (path, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected PATH=VALUE"))?;
    let path = path.trim();
    if path.is_empty() || !path.split('.').all(|p| !p.is_empty()) {
        return Err(format!("{s:?}: the path is empty or malformed"));
    }
    let value =
        serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
    Ok((path.to_owned(), value))
}

/// The camelCase JSON form of a snake_case path segment.
fn camel(s: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in s.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A Settings message holding the assigned values, built through the JSON mapping so that
/// every field (and any added later) can be set by its path.
fn settings_from(set: &[(String, serde_json::Value)], etag: &str) -> Result<pb::Settings> {
    let mut root = serde_json::json!({ "name": "settings", "etag": etag });
    for (path, value) in set {
        let mut node = &mut root;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let key = camel(part);
            let obj = node
                .as_object_mut()
                .ok_or_else(|| CliError::usage(format!("{path}: {part} is not a message")))?;
            if i + 1 == parts.len() {
                obj.insert(key, value.clone());
                break;
            }
            node = obj.entry(key).or_insert_with(|| serde_json::json!({}));
        }
    }
    output::from_json(root).map_err(|e| CliError::usage(format!("--set: {e}")))
}

/// Runs a `settings` command.
pub async fn run(ctx: &mut Ctx, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Get => {
            let req = pb::GetSettingsRequest {
                name: "settings".into(),
            };
            let r = rpc!(ctx, Call::Read, SettingsServiceClient::get_settings, req)?;
            let json = output::to_json(&r)?;
            emit(ctx.format(), &r, |_| output::print_flat(&json["settings"]))
        }
        Cmd::Update { set, etag } => {
            let settings = settings_from(&set, etag.as_deref().unwrap_or_default())?;
            let req = pb::UpdateSettingsRequest {
                settings: Some(settings),
                update_mask: Some(prost_types::FieldMask {
                    paths: set.into_iter().map(|(p, _)| p).collect(),
                }),
            };
            let r = rpc!(
                ctx,
                Call::Write,
                SettingsServiceClient::update_settings,
                req
            )?;
            let json = output::to_json(&r)?;
            emit(ctx.format(), &r, |_| output::print_flat(&json["settings"]))
        }
        Cmd::PasswordPolicy => {
            let r = rpc!(
                ctx,
                Call::Read,
                SettingsServiceClient::get_password_policy,
                pb::GetPasswordPolicyRequest {}
            )?;
            let json = output::to_json(&r)?;
            emit(ctx.format(), &r, |_| {
                output::print_flat(&json["passwordPolicy"])
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_read_json_or_text() {
        assert_eq!(
            parse_assignment("password_policy.min_length=14"),
            Ok(("password_policy.min_length".into(), serde_json::json!(14)))
        );
        assert_eq!(
            parse_assignment("lockout_policy.lockout_duration=900s"),
            Ok((
                "lockout_policy.lockout_duration".into(),
                serde_json::json!("900s")
            ))
        );
        assert!(parse_assignment("nothing").is_err());
        assert!(parse_assignment("a..b=1").is_err());
        assert_eq!(
            camel("second_factor_grace_period"),
            "secondFactorGracePeriod"
        );
    }
}
