//! Conversions between protobuf messages and domain values. Bad input becomes
//! INVALID_ARGUMENT with field violations here.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fluxgate_core::approval_metrics::{EnvironmentMetrics, Report, Summary};
use fluxgate_domain::{GroupId, PortfolioId, Role, UserId, Username, ValidationError};
use fluxgate_proto::v1 as pb;
use fluxgate_store::users;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};

pub fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// A timestamp field as microseconds since the epoch; `None` when unset or invalid (recorded).
pub fn micros(
    v: &mut fluxgate_domain::Violations,
    field: &str,
    t: &Option<prost_types::Timestamp>,
) -> Option<i64> {
    let t = t.as_ref()?;
    if !(0..1_000_000_000).contains(&t.nanos) || !(0..=253_402_300_799).contains(&t.seconds) {
        v.add(field, "is not a valid time");
        return None;
    }
    Some(t.seconds * 1_000_000 + i64::from(t.nanos) / 1000)
}

pub fn duration(secs: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: secs as i64,
        nanos: 0,
    }
}

/// A protobuf duration as whole seconds (fractions refused).
pub fn duration_secs(d: &prost_types::Duration) -> Result<u64, ValidationError> {
    if d.nanos != 0 || d.seconds < 0 {
        return Err(ValidationError::field(
            "",
            "must be a whole, non-negative number of seconds",
        ));
    }
    Ok(d.seconds as u64)
}

pub fn role_to_proto(r: Role) -> pb::Role {
    match r {
        Role::Requester => pb::Role::Requester,
        Role::Approver => pb::Role::Approver,
        Role::TeamAdmin => pb::Role::TeamAdmin,
    }
}

/// A role field: `None` when unspecified, an error for numbers outside the enum.
pub fn role_from_proto(v: i32) -> Result<Option<Role>, ValidationError> {
    match pb::Role::try_from(v) {
        Ok(pb::Role::Unspecified) => Ok(None),
        Ok(pb::Role::Requester) => Ok(Some(Role::Requester)),
        Ok(pb::Role::Approver) => Ok(Some(Role::Approver)),
        Ok(pb::Role::TeamAdmin) => Ok(Some(Role::TeamAdmin)),
        Err(_) => Err(ValidationError::field(
            "",
            format!("unknown role value {v}"),
        )),
    }
}

/// A resource's etag: its version, tagged with a digest of its id, so that one resource's etag
/// never matches another's (`W/"3-1a2b3c4d"`).
pub fn etag(id: impl std::fmt::Display, version: i64) -> String {
    let digest = crate::tokens::token_hash(&id.to_string());
    format!("W/\"{version}-{}\"", &digest[..8])
}

/// Checks a client's etag (when given) against the resource's current one.
pub fn check_etag(given: &str, id: impl std::fmt::Display, version: i64) -> ApiResult<()> {
    let current = etag(id, version);
    if given.is_empty() || given == current {
        Ok(())
    } else {
        Err(ApiError::Aborted(format!(
            "etag {given:?} is stale or belongs to another resource (current {current}): read \
             again and retry"
        )))
    }
}

pub fn user_name(id: UserId) -> String {
    format!("users/{id}")
}

pub fn user_to_proto(u: &users::User) -> pb::User {
    pb::User {
        name: user_name(u.id),
        username: u.username.clone(),
        email: u.email.clone(),
        display_name: u.display_name.clone(),
        role: role_to_proto(u.role) as i32,
        active: u.active,
        must_change_password: u.must_change_password,
        create_time: Some(timestamp(u.created_at)),
        update_time: Some(timestamp(u.updated_at)),
        last_login_time: u.last_login_at.map(timestamp),
        last_seen_time: u.last_seen_at.map(timestamp),
        etag: etag(u.id, u.version),
    }
}

pub use fluxgate_core::names::{PrincipalRef, UserRef};

/// Parses `users/{user_id}` or `users/{username}` from the field `field`.
pub fn parse_user_name(field: &str, name: &str) -> ApiResult<UserRef> {
    let Some(rest) = name.strip_prefix("users/") else {
        return Err(ApiError::invalid(
            field,
            "must be users/{user_id} or users/{username}",
        ));
    };
    if let Ok(id) = rest.parse::<UserId>() {
        return Ok(UserRef::Id(id));
    }
    match Username::parse(rest) {
        Ok(u) => Ok(UserRef::Username(u.as_str().to_owned())),
        Err(_) => Err(ApiError::invalid(
            field,
            "must be users/{user_id} or users/{username}",
        )),
    }
}

/// Resolves a user reference (NOT_FOUND when nobody has it).
pub fn find_user(conn: &mut fluxgate_store::DbConnection, r: &UserRef) -> ApiResult<users::User> {
    let found = match r {
        UserRef::Id(id) => users::find(conn, *id)?,
        UserRef::Username(n) => users::find_by_username(conn, n)?,
    };
    found.ok_or_else(|| ApiError::NotFound("no such user".into()))
}

/// Paging: the page size to use for a request's `page_size`.
pub fn page_size(v: i32) -> ApiResult<i64> {
    match v {
        n if n < 0 => Err(ApiError::invalid("page_size", "must not be negative")),
        0 => Ok(50),
        n => Ok(i64::from(n.min(1000))),
    }
}

/// A page token: where the previous page ended and the filters it was issued for, so that a
/// token is refused with other filters (AIP-158). Opaque to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageToken<F> {
    pub after: String,
    pub filter: F,
}

impl<F: Serialize + for<'de> Deserialize<'de> + PartialEq> PageToken<F> {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Decodes `token` (empty means the first page) and checks it was issued for `filter`.
    pub fn decode(token: &str, filter: &F) -> ApiResult<Option<String>> {
        if token.is_empty() {
            return Ok(None);
        }
        let bad = || ApiError::invalid("page_token", "is not a page token issued by this service");
        if token.len() > 2048 {
            return Err(bad());
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
        let t: PageToken<F> = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if &t.filter != filter {
            return Err(ApiError::invalid(
                "page_token",
                "was issued for other filters: repeat the request's filters unchanged",
            ));
        }
        Ok(Some(t.after))
    }
}

/// Checks a field mask against the paths a method allows. Empty masks are refused.
pub fn mask_paths(
    mask: Option<&prost_types::FieldMask>,
    allowed: &[&str],
) -> ApiResult<Vec<String>> {
    let paths = mask.map(|m| m.paths.clone()).unwrap_or_default();
    if paths.is_empty() {
        return Err(ApiError::invalid(
            "update_mask",
            format!("is required; allowed paths: {}", allowed.join(", ")),
        ));
    }
    let mut v = fluxgate_domain::Violations::new();
    for p in &paths {
        if !allowed.contains(&p.as_str()) {
            v.add(
                "update_mask",
                format!(
                    "unknown or read-only path {p:?}; allowed: {}",
                    allowed.join(", ")
                ),
            );
        }
    }
    v.finish()?;
    Ok(paths)
}

/// A protobuf `Struct` as JSON. Non-finite numbers have no JSON form and are refused.
pub fn struct_to_json(s: &prost_types::Struct) -> Result<serde_json::Value, ValidationError> {
    let mut map = serde_json::Map::with_capacity(s.fields.len());
    for (k, v) in &s.fields {
        map.insert(k.clone(), value_to_json(v)?);
    }
    Ok(serde_json::Value::Object(map))
}

fn value_to_json(v: &prost_types::Value) -> Result<serde_json::Value, ValidationError> {
    use prost_types::value::Kind;
    Ok(match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n)
            .map(serde_json::Value::Number)
            .ok_or_else(|| ValidationError::field("", "numbers must be finite"))?,
        Some(Kind::StructValue(s)) => struct_to_json(s)?,
        Some(Kind::ListValue(l)) => serde_json::Value::Array(
            l.values
                .iter()
                .map(value_to_json)
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// JSON as a protobuf `Struct` (a non-object becomes an empty struct).
pub fn json_to_struct(v: &serde_json::Value) -> prost_types::Struct {
    match v {
        serde_json::Value::Object(m) => prost_types::Struct {
            fields: m
                .iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect(),
        },
        _ => prost_types::Struct::default(),
    }
}

fn json_to_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(_) => Kind::StructValue(json_to_struct(v)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// Parses a resource name made of `collection/{uuid}` pairs, e.g. `portfolios/{p}/groups/{g}`
/// with `collections = ["portfolios", "groups"]`; returns the ids in order.
pub fn parse_ids(field: &str, name: &str, collections: &[&str]) -> ApiResult<Vec<uuid::Uuid>> {
    let bad = || {
        let shape = collections
            .iter()
            .map(|c| format!("{c}/{{id}}"))
            .collect::<Vec<_>>()
            .join("/");
        ApiError::invalid(field, format!("must be {shape}"))
    };
    if name.is_empty() {
        return Err(ApiError::invalid(field, "is required"));
    }
    match id_pairs(name, collections) {
        Some(ids) if ids.len() == collections.len() => Ok(ids),
        _ => Err(bad()),
    }
}

/// The ids of `name` when it is `collection/{uuid}` pairs following `collections` in order,
/// all of them or the first few (`portfolios/{p}/applications/{a}` against
/// `["portfolios", "applications", "environments"]` gives two ids); `None` for any other
/// shape. One pass, no allocation but the result's: every CheckPermission parses a name.
pub fn id_pairs(name: &str, collections: &[&str]) -> Option<Vec<uuid::Uuid>> {
    let mut ids = Vec::with_capacity(collections.len());
    let mut rest = name;
    for c in collections {
        if !ids.is_empty() {
            if rest.is_empty() {
                break;
            }
            rest = rest.strip_prefix('/')?;
        }
        rest = rest.strip_prefix(c)?.strip_prefix('/')?;
        let (id, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        ids.push(uuid::Uuid::try_parse(id).ok()?);
        rest = tail;
    }
    rest.is_empty().then_some(ids)
}

pub fn portfolio_name(p: &str) -> String {
    format!("portfolios/{p}")
}

pub fn application_name(p: &str, a: &str) -> String {
    format!("portfolios/{p}/applications/{a}")
}

pub fn environment_name(p: &str, a: &str, e: &str) -> String {
    format!("portfolios/{p}/applications/{a}/environments/{e}")
}

/// `portfolios/{p}/groups/{g}`, written straight into one allocation (every CheckPermission
/// reply names the group that granted it; `format!` cost twice as much).
pub fn group_name(p: &str, g: &str) -> String {
    const PREFIX: &str = "portfolios/";
    const MIDDLE: &str = "/groups/";
    let mut s = String::with_capacity(PREFIX.len() + p.len() + MIDDLE.len() + g.len());
    s.push_str(PREFIX);
    s.push_str(p);
    s.push_str(MIDDLE);
    s.push_str(g);
    s
}

/// [`group_name`] of a group known by its ids.
pub fn group_name_of(p: PortfolioId, g: GroupId) -> String {
    let (mut a, mut b) = (uuid::Uuid::encode_buffer(), uuid::Uuid::encode_buffer());
    group_name(
        p.0.hyphenated().encode_lower(&mut a),
        g.0.hyphenated().encode_lower(&mut b),
    )
}

pub fn parse_principal(field: &str, name: &str) -> ApiResult<PrincipalRef> {
    if name.starts_with("users/") {
        return Ok(PrincipalRef::User(parse_user_name(field, name)?));
    }
    if name.starts_with("serviceAccounts/") {
        let ids = parse_ids(field, name, &["serviceAccounts"])?;
        return Ok(PrincipalRef::ServiceAccount(
            fluxgate_domain::ServiceAccountId(ids[0]),
        ));
    }
    if name.is_empty() {
        return Err(ApiError::invalid(field, "is required"));
    }
    Err(ApiError::invalid(
        field,
        "must be users/{id}, users/{username} or serviceAccounts/{id}",
    ))
}

/// A value the checks of a request promised; its absence is a bug.
pub fn checked<T>(v: Option<T>) -> ApiResult<T> {
    v.ok_or_else(|| ApiError::Internal("validation passed without a value".into()))
}

/// `Some(value)` of an update-mask path that is named, else `None`.
pub fn when<T>(named: bool, f: impl FnOnce() -> Option<T>) -> Option<T> {
    if named { f() } else { None }
}

/// A parsed field, or `None` with its violations recorded, so that one answer names every bad
/// field of a request. (The parsers here only ever fail with `ApiError::Invalid`.)
pub fn field<T>(v: &mut fluxgate_domain::Violations, r: ApiResult<T>) -> Option<T> {
    match r {
        Ok(x) => Some(x),
        Err(ApiError::Invalid(e)) => v.check::<T>("", Err(e)),
        Err(other) => {
            v.add("", other.to_string());
            None
        }
    }
}

/// A title field (display name of a catalog object).
pub fn title(field: &str, v: &str) -> Result<fluxgate_domain::Title, ValidationError> {
    fluxgate_domain::Title::parse(v).map_err(|e| rename(e, field))
}

/// A description field.
pub fn description(field: &str, v: &str) -> Result<fluxgate_domain::Description, ValidationError> {
    fluxgate_domain::Description::parse(v).map_err(|e| rename(e, field))
}

fn rename(mut e: ValidationError, field: &str) -> ValidationError {
    for v in &mut e.violations {
        v.field = if v.field.is_empty() {
            field.to_owned()
        } else {
            format!("{field}.{}", v.field)
        };
    }
    e
}

fn micros_duration(micros: i64) -> prost_types::Duration {
    let m = micros.max(0);
    prost_types::Duration {
        seconds: m / 1_000_000,
        nanos: ((m % 1_000_000) * 1000) as i32,
    }
}

/// A duration summary as the API shows it.
pub fn summary_pb(s: Summary) -> pb::DurationSummary {
    pb::DurationSummary {
        count: s.count,
        median: s.median.map(micros_duration),
        p90: s.p90.map(micros_duration),
    }
}

fn env_metrics_pb(e: EnvironmentMetrics) -> pb::EnvironmentApprovalMetrics {
    pb::EnvironmentApprovalMetrics {
        environment: e.environment,
        submitted: e.submitted,
        approved: e.approved,
        rejected: e.rejected,
        time_to_first_review: Some(summary_pb(e.time_to_first_review)),
        time_to_decision: Some(summary_pb(e.time_to_decision)),
        pending: e.pending,
        oldest_pending_age: e.oldest_pending_age.map(micros_duration),
        median_pending_age: e.median_pending_age.map(micros_duration),
    }
}

/// The approval metrics report as the API shows it.
pub fn approval_metrics(r: Report) -> pb::GetApprovalMetricsResponse {
    pb::GetApprovalMetricsResponse {
        overall: Some(env_metrics_pb(r.overall)),
        environments: r.environments.into_iter().map(env_metrics_pb).collect(),
        reviewers: r
            .reviewers
            .into_iter()
            .map(|x| pb::ReviewerApprovalMetrics {
                reviewer: x.reviewer,
                reviewer_display_name: x.reviewer_display_name,
                approvals: x.approvals,
                rejections: x.rejections,
                response_time: Some(summary_pb(x.response_time)),
            })
            .collect(),
    }
}

/// A registration link as the API shows it.
pub fn registration_link(l: &fluxgate_core::users::IssuedLink) -> pb::RegistrationLink {
    pb::RegistrationLink {
        url: l.url.clone(),
        token: l.token.clone(),
        expire_time: Some(timestamp(l.expires_at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_pairs_take_a_whole_prefix_of_the_shape() {
        let (p, a, e) = (
            uuid::Uuid::new_v4(),
            uuid::Uuid::new_v4(),
            uuid::Uuid::new_v4(),
        );
        let shape = ["portfolios", "applications", "environments"];
        let app = format!("portfolios/{p}/applications/{a}");
        let env = format!("{app}/environments/{e}");
        assert_eq!(id_pairs(&env, &shape), Some(vec![p, a, e]));
        assert_eq!(id_pairs(&app, &shape), Some(vec![p, a]));
        for bad in [
            String::new(),
            format!("{env}/"),
            format!("{app}/"),
            format!("{app}/environments"),
            format!("{app}/environments/"),
            format!("{env}/flags/{e}"),
            format!("portfolios/{p}/groups/{a}"),
            format!("portfolios/{p}//applications/{a}"),
            format!("/portfolios/{p}"),
            format!("portfolios/{p}/applications/not-a-uuid"),
        ] {
            assert_eq!(id_pairs(&bad, &shape), None, "{bad}");
        }
    }

    #[test]
    fn group_names_are_the_formatted_form() {
        let (p, g) = (PortfolioId::generate(), GroupId::generate());
        let name = group_name_of(p, g);
        assert_eq!(name, format!("portfolios/{p}/groups/{g}"));
        assert_eq!(name.len(), name.capacity());
        assert_eq!(
            parse_ids("g", &name, &["portfolios", "groups"]).unwrap(),
            vec![p.0, g.0]
        );
    }

    #[test]
    fn resource_names_parse_whole_or_not_at_all() {
        let (p, a) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let shape = ["portfolios", "applications"];
        let ok = format!("portfolios/{p}/applications/{a}");
        assert_eq!(parse_ids("parent", &ok, &shape).unwrap(), vec![p, a]);
        for bad in [
            format!("{ok}/environments"),
            format!("{ok}/"),
            format!("portfolios/{p}/applications"),
            format!("portfolios/{p}"),
            format!("portfolios/{p}/groups/{a}"),
            format!("portfolios/{p}/applications/not-a-uuid"),
            format!("/portfolios/{p}/applications/{a}"),
        ] {
            let e = parse_ids("parent", &bad, &shape).unwrap_err();
            assert!(
                e.to_string()
                    .contains("must be portfolios/{id}/applications/{id}"),
                "{bad}: {e}"
            );
        }
        assert!(
            parse_ids("parent", "", &shape)
                .unwrap_err()
                .to_string()
                .contains("is required")
        );
    }

    #[test]
    fn user_names_parse() {
        let id = UserId::generate();
        assert_eq!(
            parse_user_name("name", &format!("users/{id}")).unwrap(),
            UserRef::Id(id)
        );
        assert_eq!(
            parse_user_name("name", "users/Alice").unwrap(),
            UserRef::Username("alice".into())
        );
        for bad in [
            "",
            "alice",
            "users/",
            "users/a b",
            "groups/x",
            "users/alice/extra",
        ] {
            assert!(parse_user_name("name", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn page_tokens_round_trip_and_bind_filters() {
        let t = PageToken {
            after: "bob".to_string(),
            filter: ("x".to_string(), 1),
        };
        let s = t.encode();
        assert_eq!(
            PageToken::decode(&s, &("x".to_string(), 1)).unwrap(),
            Some("bob".into())
        );
        assert!(PageToken::decode(&s, &("y".to_string(), 1)).is_err());
        assert!(PageToken::<(String, i32)>::decode("!!", &("x".to_string(), 1)).is_err());
        assert_eq!(PageToken::decode("", &("x".to_string(), 1)).unwrap(), None);
    }

    #[test]
    fn timestamps_convert() {
        let t = timestamp(1_500_000);
        assert_eq!((t.seconds, t.nanos), (1, 500_000_000));
    }
}
