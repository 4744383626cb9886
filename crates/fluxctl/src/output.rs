//! Output: human tables by default, or the canonical protobuf JSON mapping (as grpcurl prints
//! it) with `--output json`.

use std::sync::OnceLock;

use clap::ValueEnum;
use fluxgate_proto::v1 as pb;
use prost_reflect::{DescriptorPool, DynamicMessage};

use crate::error::{CliError, Result};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable tables and key/value listings.
    Table,
    /// The response message in the protobuf JSON mapping, one document per command.
    Json,
    /// Only the resource name of the answer (for scripts), e.g. `changeRequests/…`.
    Name,
}

/// A generated message whose full protobuf name is known, so it can be printed as JSON.
pub trait Named: prost::Message {
    /// `fluxgate.v1.<Message>`.
    const NAME: &'static str;
}

macro_rules! named {
    ($($t:ident),* $(,)?) => {
        $(impl Named for pb::$t {
            const NAME: &'static str = concat!("fluxgate.v1.", stringify!($t));
        })*
        /// Every message printed as JSON, for the test that each one is in the descriptor set.
        #[cfg(test)]
        const ALL_NAMES: &[&str] = &[$(concat!("fluxgate.v1.", stringify!($t))),*];
    };
}

named!(
    LoginResponse,
    WhoAmIResponse,
    ChangePasswordResponse,
    CreateUserResponse,
    BatchCreateUsersResponse,
    GetUserResponse,
    ListUsersResponse,
    UpdateUserResponse,
    DeactivateUserResponse,
    ReactivateUserResponse,
    DeleteUserResponse,
    CreateServiceAccountResponse,
    GetServiceAccountResponse,
    ListServiceAccountsResponse,
    UpdateServiceAccountResponse,
    DeleteServiceAccountResponse,
    CreateServiceAccountKeyResponse,
    ListServiceAccountKeysResponse,
    RotateServiceAccountKeyResponse,
    RevokeServiceAccountKeyResponse,
    CreatePortfolioResponse,
    GetPortfolioResponse,
    ListPortfoliosResponse,
    UpdatePortfolioResponse,
    DeletePortfolioResponse,
    CreateApplicationResponse,
    GetApplicationResponse,
    ListApplicationsResponse,
    UpdateApplicationResponse,
    DeleteApplicationResponse,
    CreateEnvironmentResponse,
    GetEnvironmentResponse,
    ListEnvironmentsResponse,
    UpdateEnvironmentResponse,
    DeleteEnvironmentResponse,
    CreateGroupResponse,
    GetGroupResponse,
    ListGroupsResponse,
    UpdateGroupResponse,
    DeleteGroupResponse,
    AddGroupMemberResponse,
    RemoveGroupMemberResponse,
    ListGroupMembersResponse,
    CheckPermissionResponse,
    BatchCheckPermissionsResponse,
    ExplainPermissionResponse,
    SubmitChangeRequestResponse,
    GetChangeRequestResponse,
    ListChangeRequestsResponse,
    CancelChangeRequestResponse,
    ApproveChangeRequestResponse,
    RejectChangeRequestResponse,
    OverrideChangeRequestResponse,
    MarkChangeRequestAppliedResponse,
    WatchChangeRequestResponse,
    GetApprovalPolicyResponse,
    UpdateApprovalPolicyResponse,
    ResetUserPasswordResponse,
    RequestPasswordResetResponse,
    ListAuditEventsResponse,
    VerifyAuditChainResponse,
    Settings,
    AuditEvent,
    ChangeRequest,
    GetSettingsResponse,
    UpdateSettingsResponse,
    GetPasswordPolicyResponse,
    ListEmailsResponse,
    GetEmailResponse,
    RetryEmailResponse,
    LookupResourcesResponse,
    LookupPrincipalsResponse,
    UpdateChangeRequestResponse,
    GetApprovalMetricsResponse,
    GetActivityReportResponse,
    IngestAuditEventsResponse,
    IngestedEvent,
    IssueRegistrationLinkResponse,
    CompleteRegistrationResponse,
    ConfirmPasswordResetResponse,
    GetSecondFactorResponse,
    BeginTotpEnrollmentResponse,
    ConfirmTotpEnrollmentResponse,
    RemoveSecondFactorResponse,
    GetNotificationPreferencesResponse,
    UpdateNotificationPreferencesResponse,
    ListSsoProvidersResponse,
    CreateWebhookResponse,
    GetWebhookResponse,
    ListWebhooksResponse,
    UpdateWebhookResponse,
    DeleteWebhookResponse,
    RotateWebhookSecretResponse,
    ListWebhookDeliveriesResponse,
    GetWebhookDeliveryResponse,
    RedeliverWebhookDeliveryResponse,
    RewindWebhookResponse,
    ListWebhookEventTypesResponse,
);

fn pool() -> Result<&'static DescriptorPool> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(fluxgate_proto::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| CliError::other(format!("embedded descriptor set: {e}")))
}

/// The message in the protobuf JSON mapping (lowerCamelCase names, enums by name), as grpcurl
/// and buf curl print it, except that fields at their default value are printed too.
pub fn to_json<M: Named>(message: &M) -> Result<serde_json::Value> {
    let desc = pool()?
        .get_message_by_name(M::NAME)
        .ok_or_else(|| CliError::other(format!("{} is not in the descriptor set", M::NAME)))?;
    let dynamic = DynamicMessage::decode(desc, message.encode_to_vec().as_slice())
        .map_err(|e| CliError::other(format!("decoding {}: {e}", M::NAME)))?;
    // Every field, defaults too: a script reads `false`, `0` and `[]` instead of a missing key.
    let options = prost_reflect::SerializeOptions::new().skip_default_fields(false);
    Ok(dynamic.serialize_with_options(serde_json::value::Serializer, &options)?)
}

/// The message `M` read from its protobuf JSON mapping (what `to_json` prints).
pub fn from_json<M: Named + Default>(json: serde_json::Value) -> Result<M> {
    let desc = pool()?
        .get_message_by_name(M::NAME)
        .ok_or_else(|| CliError::other(format!("{} is not in the descriptor set", M::NAME)))?;
    let dynamic = DynamicMessage::deserialize(desc, json)
        .map_err(|e| CliError::usage(format!("not a valid {}: {e}", M::NAME)))?;
    M::decode(prost::Message::encode_to_vec(&dynamic).as_slice())
        .map_err(|e| CliError::other(format!("decoding {}: {e}", M::NAME)))
}

/// Prints a JSON object as `path: value` lines, nested objects flattened (`a.b: 1`).
pub fn print_flat(v: &serde_json::Value) {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&p, v, out);
                }
            }
            serde_json::Value::String(s) => out.push((prefix.to_owned(), s.clone())),
            other => out.push((prefix.to_owned(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    walk("", v, &mut out);
    let width = out.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in out {
        println!("{k:width$}  {v}");
    }
}

/// The `name` of the answer: its own, or that of the one message it wraps.
fn resource_name(json: &serde_json::Value) -> Option<String> {
    let obj = json.as_object()?;
    if let Some(n) = obj.get("name").and_then(|n| n.as_str()) {
        return Some(n.to_owned());
    }
    obj.values()
        .find_map(|v| v.get("name").and_then(|n| n.as_str()))
        .map(str::to_owned)
}

/// For a list answer (a repeated field of messages with names, or of names), every name.
fn list_names(json: &serde_json::Value) -> Option<Vec<String>> {
    let obj = json.as_object()?;
    obj.values().find_map(|v| {
        let items = v.as_array()?;
        let names: Vec<String> = items
            .iter()
            .filter_map(|i| match i {
                serde_json::Value::String(s) if s.contains('/') => Some(s.clone()),
                other => other.get("name")?.as_str().map(str::to_owned),
            })
            .collect();
        (!names.is_empty() || items.is_empty()).then_some(names)
    })
}

/// Prints one JSON document, pretty.
pub fn print_json<M: Named>(message: &M) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(&to_json(message)?)?);
    Ok(())
}

/// Prints `message` as JSON, or as `human` renders it.
pub fn emit<M: Named>(format: Format, message: &M, human: impl FnOnce(&M)) -> Result<()> {
    match format {
        Format::Json => print_json(message),
        Format::Name => {
            let json = to_json(message)?;
            match list_names(&json) {
                Some(names) => names.iter().for_each(|n| println!("{n}")),
                None => {
                    if let Some(name) = resource_name(&json) {
                        println!("{name}");
                    }
                }
            }
            Ok(())
        }
        Format::Table => {
            human(message);
            Ok(())
        }
    }
}

/// Column-aligned rows under an upper-case header.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Appends a row (one cell per header).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, every line ending with a newline.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        let headers: Vec<String> = self.headers.iter().map(|h| h.to_uppercase()).collect();
        push_line(&mut out, &headers, &widths);
        for row in &self.rows {
            push_line(&mut out, row, &widths);
        }
        out
    }

    /// Prints the table to stdout.
    pub fn print(&self) {
        print!("{}", self.render());
    }
}

fn push_line(out: &mut String, cells: &[String], widths: &[usize]) {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        let width = widths.get(i).copied().unwrap_or(0);
        let pad = width.saturating_sub(cell.chars().count());
        line.push_str(cell);
        line.push_str(&" ".repeat(pad + 2));
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

/// Aligned `key: value` lines for one resource.
#[derive(Debug, Default)]
pub struct Fields(Vec<(&'static str, String)>);

impl Fields {
    /// An empty listing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a line (empty values are skipped).
    pub fn add(mut self, key: &'static str, value: impl Into<String>) -> Self {
        let value = value.into();
        if !value.is_empty() {
            self.0.push((key, value));
        }
        self
    }

    /// The listing as text.
    pub fn render(&self) -> String {
        let width = self.0.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
        self.0
            .iter()
            .map(|(k, v)| format!("{:<width$}  {v}\n", format!("{k}:")))
            .collect()
    }

    /// Prints the listing to stdout.
    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// A timestamp as RFC 3339, or empty.
pub fn time(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref().map(ToString::to_string).unwrap_or_default()
}

/// A duration as seconds (`86400s`), or empty.
pub fn duration(d: &Option<prost_types::Duration>) -> String {
    d.as_ref()
        .map(|d| format!("{}s", d.seconds))
        .unwrap_or_default()
}

/// `yes` or `no`.
pub fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

/// An enum value's name without its type prefix, lower-cased: `ROLE_TEAM_ADMIN` → `team_admin`.
pub fn enum_name(name: Option<&str>, prefix: &str) -> String {
    name.map(|n| n.strip_prefix(prefix).unwrap_or(n).to_lowercase())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A role's short name.
pub fn role(value: i32) -> String {
    enum_name(
        pb::Role::try_from(value).ok().map(|r| r.as_str_name()),
        "ROLE_",
    )
}

/// Tells on stderr how to fetch the next page, when there is one.
pub fn next_page_hint(token: &str) {
    if !token.is_empty() {
        eprintln!("more results: repeat with --page-token {token}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_printed_message_is_in_the_descriptor_set() {
        let pool = pool().unwrap();
        for name in ALL_NAMES {
            assert!(pool.get_message_by_name(name).is_some(), "{name}");
        }
    }

    #[test]
    fn json_uses_the_mapping_with_every_field() {
        let msg = pb::WhoAmIResponse {
            principal: "users/x".into(),
            role: pb::Role::TeamAdmin as i32,
            session_id: String::new(),
            user: None,
        };
        let json = to_json(&msg).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"principal": "users/x", "role": "ROLE_TEAM_ADMIN", "sessionId": ""}),
            "defaults are printed; an unset message is left out"
        );
    }

    #[test]
    fn fields_align_values() {
        let f = Fields::new()
            .add("name", "a")
            .add("display name", "b")
            .add("x", "");
        assert_eq!(f.render(), "name:          a\ndisplay name:  b\n");
    }

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["name", "role"]);
        t.row(vec!["users/a".into(), "requester".into()]);
        t.row(vec!["users/bb".into(), "team_admin".into()]);
        assert_eq!(
            t.render(),
            "NAME      ROLE\nusers/a   requester\nusers/bb  team_admin\n"
        );
    }
}
