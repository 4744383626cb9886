//! Parsing of command-line values: durations, times, resource names and enum choices.

use std::marker::PhantomData;
use std::time::Duration;

use clap::ValueEnum;
use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use fluxgate_proto::v1 as pb;

/// `90s`, `15m`, `2h`, `7d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 30s, 15m, 2h or 7d"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}: use s, m, h or d")),
    };
    n.checked_mul(factor)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// A duration argument as a protobuf Duration.
pub fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: 0,
    }
}

/// An RFC 3339 time, e.g. `2026-01-31T12:00:00Z`.
/// A time range, the last 30 days where a bound is not given.
pub fn range_or_last_30_days(
    start: Option<prost_types::Timestamp>,
    end: Option<prost_types::Timestamp>,
) -> (prost_types::Timestamp, prost_types::Timestamp) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let end = end.unwrap_or(prost_types::Timestamp {
        seconds: now,
        nanos: 0,
    });
    let start = start.unwrap_or(prost_types::Timestamp {
        seconds: end.seconds - 30 * 86_400,
        nanos: 0,
    });
    (start, end)
}

pub fn parse_time(s: &str) -> Result<prost_types::Timestamp, String> {
    s.parse::<prost_types::Timestamp>()
        .map_err(|_| format!("{s:?} is not an RFC 3339 time such as 2026-01-31T12:00:00Z"))
}

/// Prefixes `collection/` unless the name already has it: `rita` → `users/rita`.
pub fn qualify(collection: &str, name: &str) -> String {
    let prefix = format!("{collection}/");
    if name.starts_with(&prefix) {
        name.to_owned()
    } else {
        format!("{prefix}{name}")
    }
}

/// A principal: `users/…` or `serviceAccounts/…` as given, a bare name taken as a user.
pub fn principal(name: &str) -> String {
    if name.starts_with("serviceAccounts/") {
        name.to_owned()
    } else {
        qualify("users", name)
    }
}

/// A choice that mirrors a protobuf enum, whose values are printed as `approver` in tables
/// and `ROLE_APPROVER` in JSON.
pub trait ProtoEnum: ValueEnum + Clone + Send + Sync + 'static {
    /// The protobuf value prefix, e.g. `ROLE_`.
    const PREFIX: &'static str;
}

/// Reads a choice in any of the spellings fluxctl prints or accepts: `team-admin`,
/// `team_admin`, `TEAM_ADMIN`, `ROLE_TEAM_ADMIN`, any case.
pub fn any_spelling<E: ProtoEnum>(input: &str) -> Option<E> {
    let upper = input.trim().to_ascii_uppercase().replace('-', "_");
    let bare = upper.strip_prefix(E::PREFIX).unwrap_or(&upper);
    E::from_str(&bare.replace('_', "-"), true).ok()
}

/// The clap parser of a [`ProtoEnum`]: [`any_spelling`], with the kebab-case names listed in
/// help, completions and errors.
#[derive(Clone)]
pub struct AnySpelling<E>(PhantomData<E>);

impl<E> AnySpelling<E> {
    /// The parser.
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<E: ProtoEnum> TypedValueParser for AnySpelling<E> {
    type Value = E;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<E, clap::Error> {
        let text = value.to_string_lossy();
        any_spelling::<E>(&text).ok_or_else(|| {
            let mut err = clap::Error::new(ErrorKind::InvalidValue).with_cmd(cmd);
            if let Some(arg) = arg {
                err.insert(
                    ContextKind::InvalidArg,
                    ContextValue::String(arg.to_string()),
                );
            }
            err.insert(
                ContextKind::InvalidValue,
                ContextValue::String(text.into_owned()),
            );
            let valid = E::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value())
                .map(|v| v.get_name().to_owned())
                .collect();
            err.insert(ContextKind::ValidValue, ContextValue::Strings(valid));
            err
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            E::value_variants()
                .iter()
                .filter_map(ValueEnum::to_possible_value),
        ))
    }
}

/// An organisation role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Requester
    Requester,
    /// Approver
    Approver,
    /// Team Admin
    TeamAdmin,
}

impl ProtoEnum for Role {
    const PREFIX: &'static str = "ROLE_";
}

impl From<Role> for pb::Role {
    fn from(r: Role) -> Self {
        match r {
            Role::Requester => pb::Role::Requester,
            Role::Approver => pb::Role::Approver,
            Role::TeamAdmin => pb::Role::TeamAdmin,
        }
    }
}

/// A permission to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Permission {
    /// View feature values
    Read,
    /// Lock features
    Lock,
    /// Unlock features
    Unlock,
    /// Change values
    ChangeValue,
    /// Create features
    CreateFeature,
    /// Edit features
    EditFeature,
    /// Delete features
    DeleteFeature,
}

impl Permission {
    /// Whether it is held on an environment (value permissions) rather than an application
    /// (feature permissions).
    pub fn on_environment(self) -> bool {
        matches!(
            self,
            Permission::Read | Permission::Lock | Permission::Unlock | Permission::ChangeValue
        )
    }
}

impl ProtoEnum for Permission {
    const PREFIX: &'static str = "PERMISSION_";
}

impl From<Permission> for pb::Permission {
    fn from(p: Permission) -> Self {
        match p {
            Permission::Read => pb::Permission::Read,
            Permission::Lock => pb::Permission::Lock,
            Permission::Unlock => pb::Permission::Unlock,
            Permission::ChangeValue => pb::Permission::ChangeValue,
            Permission::CreateFeature => pb::Permission::CreateFeature,
            Permission::EditFeature => pb::Permission::EditFeature,
            Permission::DeleteFeature => pb::Permission::DeleteFeature,
        }
    }
}

/// What a change request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChangeKind {
    /// Create a feature
    CreateFeature,
    /// Edit a feature's definition
    EditFeature,
    /// Delete a feature
    DeleteFeature,
    /// Change its value in the environment (needs --payload)
    ChangeValue,
    /// Lock it in the environment
    Lock,
    /// Unlock it in the environment
    Unlock,
    /// Retire it in the environment
    Retire,
}

impl ProtoEnum for ChangeKind {
    const PREFIX: &'static str = "CHANGE_KIND_";
}

impl From<ChangeKind> for pb::ChangeKind {
    fn from(k: ChangeKind) -> Self {
        match k {
            ChangeKind::CreateFeature => pb::ChangeKind::CreateFeature,
            ChangeKind::EditFeature => pb::ChangeKind::EditFeature,
            ChangeKind::DeleteFeature => pb::ChangeKind::DeleteFeature,
            ChangeKind::ChangeValue => pb::ChangeKind::ChangeValue,
            ChangeKind::Lock => pb::ChangeKind::Lock,
            ChangeKind::Unlock => pb::ChangeKind::Unlock,
            ChangeKind::Retire => pb::ChangeKind::Retire,
        }
    }
}

/// A change request's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum State {
    /// Waiting for reviews
    Pending,
    /// Approved, not yet applied
    Approved,
    /// Rejected
    Rejected,
    /// Cancelled
    Cancelled,
    /// Expired
    Expired,
    /// Applied
    Applied,
}

impl ProtoEnum for State {
    const PREFIX: &'static str = "CHANGE_REQUEST_STATE_";
}

impl From<State> for pb::ChangeRequestState {
    fn from(s: State) -> Self {
        match s {
            State::Pending => pb::ChangeRequestState::Pending,
            State::Approved => pb::ChangeRequestState::Approved,
            State::Rejected => pb::ChangeRequestState::Rejected,
            State::Cancelled => pb::ChangeRequestState::Cancelled,
            State::Expired => pb::ChangeRequestState::Expired,
            State::Applied => pb::ChangeRequestState::Applied,
        }
    }
}

/// A group's feature permission on an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FeaturePermission {
    /// Create features only
    Create,
    /// Create, edit and delete features
    CreateEditDelete,
}

impl ProtoEnum for FeaturePermission {
    const PREFIX: &'static str = "FEATURE_PERMISSION_";
}

impl From<FeaturePermission> for pb::FeaturePermission {
    fn from(p: FeaturePermission) -> Self {
        match p {
            FeaturePermission::Create => pb::FeaturePermission::Create,
            FeaturePermission::CreateEditDelete => pb::FeaturePermission::CreateEditDelete,
        }
    }
}

/// A value permission in an environment.
fn value_permission(s: &str) -> Result<pb::ValuePermission, String> {
    let upper = s.trim().to_ascii_uppercase().replace('-', "_");
    let bare = upper.strip_prefix("VALUE_PERMISSION_").unwrap_or(&upper);
    match bare.to_ascii_lowercase().as_str() {
        "read" => Ok(pb::ValuePermission::Read),
        "lock" => Ok(pb::ValuePermission::Lock),
        "unlock" => Ok(pb::ValuePermission::Unlock),
        "change_value" => Ok(pb::ValuePermission::ChangeValue),
        other => Err(format!(
            "unknown value permission {other:?}: use read, lock, unlock or change-value"
        )),
    }
}

/// `APPLICATION=create|create-edit-delete`.
pub fn parse_app_grant(s: &str) -> Result<pb::ApplicationGrant, String> {
    let (app, perm) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("{s:?}: expected APPLICATION=create|create-edit-delete"))?;
    let perm = any_spelling::<FeaturePermission>(perm).ok_or_else(|| {
        format!("unknown feature permission {perm:?}: use create or create-edit-delete")
    })?;
    Ok(pb::ApplicationGrant {
        application: app.to_owned(),
        feature_permission: pb::FeaturePermission::from(perm) as i32,
    })
}

/// `ENVIRONMENT=perm[,perm…]` with perms among read, lock, unlock, change-value.
pub fn parse_env_grant(s: &str) -> Result<pb::EnvironmentGrant, String> {
    let (env, perms) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("{s:?}: expected ENVIRONMENT=read,lock,unlock,change-value"))?;
    let permissions = perms
        .split(',')
        .map(|p| value_permission(p).map(|v| v as i32))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(pb::EnvironmentGrant {
        environment: env.to_owned(),
        permissions,
    })
}

/// A JSON object as a `google.protobuf.Struct`.
pub fn parse_payload(s: &str) -> Result<prost_types::Struct, String> {
    let value: serde_json::Value =
        serde_json::from_str(s).map_err(|e| format!("payload is not JSON: {e}"))?;
    match value {
        serde_json::Value::Object(map) => Ok(to_struct(map)),
        _ => Err("the payload must be a JSON object".to_owned()),
    }
}

fn to_struct(map: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
    }
}

fn to_value(v: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        J::String(s) => Kind::StringValue(s),
        J::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(to_value).collect(),
        }),
        J::Object(o) => Kind::StructValue(to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        let p = parse_payload(r#"{"value": true, "rollout": [1, "a"], "n": null}"#).unwrap();
        assert_eq!(p.fields.len(), 3);
        assert!(parse_payload("[1]").is_err());
        assert!(parse_payload("{").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn names() {
        assert_eq!(qualify("users", "rita"), "users/rita");
        assert_eq!(qualify("users", "users/rita"), "users/rita");
        assert_eq!(principal("serviceAccounts/x"), "serviceAccounts/x");
        assert_eq!(principal("rita"), "users/rita");
    }

    #[test]
    fn every_printed_spelling_is_accepted() {
        for s in [
            "approver",
            "APPROVER",
            "ROLE_APPROVER",
            "role_approver",
            " Approver ",
        ] {
            assert_eq!(any_spelling::<Role>(s), Some(Role::Approver), "{s}");
        }
        for s in ["team-admin", "team_admin", "TEAM_ADMIN", "ROLE_TEAM_ADMIN"] {
            assert_eq!(any_spelling::<Role>(s), Some(Role::TeamAdmin), "{s}");
        }
        for s in ["change-value", "change_value", "PERMISSION_CHANGE_VALUE"] {
            assert_eq!(
                any_spelling::<Permission>(s),
                Some(Permission::ChangeValue),
                "{s}"
            );
        }
        assert_eq!(
            any_spelling::<State>("CHANGE_REQUEST_STATE_PENDING"),
            Some(State::Pending)
        );
        assert_eq!(any_spelling::<Role>("ROLE_"), None);
        assert_eq!(any_spelling::<Role>("admin"), None);
        assert!(parse_env_grant("e=VALUE_PERMISSION_READ,LOCK").is_ok());
        assert!(parse_app_grant("a=FEATURE_PERMISSION_CREATE_EDIT_DELETE").is_ok());
    }

    #[test]
    fn grants() {
        let g = parse_env_grant("portfolios/p/applications/a/environments/e=read,change-value")
            .unwrap();
        assert_eq!(
            g.permissions,
            vec![
                pb::ValuePermission::Read as i32,
                pb::ValuePermission::ChangeValue as i32
            ]
        );
        let a = parse_app_grant("portfolios/p/applications/a=create-edit-delete").unwrap();
        assert_eq!(
            a.feature_permission,
            pb::FeaturePermission::CreateEditDelete as i32
        );
        assert!(parse_env_grant("nope").is_err());
    }
}
