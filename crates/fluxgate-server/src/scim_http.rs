//! The SCIM 2.0 service provider (RFC 7643, 7644) at `/scim/v2`, on the console's port: the
//! adapter between SCIM's JSON resources and [`fluxgate_core::provisioning`]. Only the keys of
//! provisioning service accounts get in (`Authorization: Bearer fgk_…`).
//!
//! - `Users`: create, get, replace, patch, delete, list with filters (the `scim_v2` crate parses
//!   them; they are evaluated here on the resources), `startIndex` and `count`, `attributes` and
//!   `excludedAttributes`; ETags (`meta.version`, `ETag`, `If-Match`).
//! - PATCH is applied to the resource as JSON (add, replace, remove; with or without a path;
//!   value paths such as `emails[type eq "work"].value`; the forms Okta and Entra ID send), and
//!   the result written like a PUT: one transaction, or nothing.
//! - Discovery: `ServiceProviderConfig`, `ResourceTypes`, `Schemas`.
//! - Errors in SCIM's schema, with `scimType` where RFC 7644 names one.

use std::sync::Arc;

use bytes::Bytes;
use fluxgate_core::provisioning::{self as uc, Desired, Provisioned};
use fluxgate_domain::{Role, UserId};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use serde_json::{Map, Value, json};
use tonic::body::Body;

use crate::directory::Principal;
use crate::error::ApiError;
use crate::scim_patch::{ScimError, get_ci};
use crate::state::AppState;

const PREFIX: &str = "/scim/v2";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const FLUXGATE_USER: &str = "urn:ietf:params:scim:schemas:extension:fluxgate:2.0:User";
const LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// The largest request body read.
const MAX_BODY: usize = 1 << 20;
/// The most resources one page holds.
const MAX_COUNT: usize = 1000;
/// Attributes FluxGate keeps in its own columns; everything else a provider sends is kept as
/// sent.
const MODELLED: &[&str] = &[
    "schemas",
    "id",
    "meta",
    "username",
    "externalid",
    "displayname",
    "active",
    "password",
    FLUXGATE_USER,
];

/// Whether `path` is SCIM's.
pub fn is_scim_path(path: &str) -> bool {
    path == PREFIX || path.starts_with("/scim/v2/")
}

fn bad(scim_type: &'static str, detail: impl Into<String>) -> ScimError {
    ScimError(StatusCode::BAD_REQUEST, Some(scim_type), detail.into())
}

impl From<ApiError> for ScimError {
    fn from(e: ApiError) -> Self {
        use StatusCode as S;
        let (status, kind) = match &e {
            ApiError::Invalid(_) => (S::BAD_REQUEST, Some("invalidValue")),
            ApiError::Unauthenticated(_) => (S::UNAUTHORIZED, None),
            ApiError::PermissionDenied(_) => (S::FORBIDDEN, None),
            ApiError::NotFound(_) => (S::NOT_FOUND, None),
            ApiError::AlreadyExists(_) => (S::CONFLICT, Some("uniqueness")),
            ApiError::FailedPrecondition(_) => (S::CONFLICT, None),
            ApiError::Aborted(_) => (S::PRECONDITION_FAILED, None),
            ApiError::ResourceExhausted(_) => (S::TOO_MANY_REQUESTS, Some("tooMany")),
            ApiError::OutOfRange(_) => (S::BAD_REQUEST, Some("invalidValue")),
            ApiError::Unavailable(_) | ApiError::IdempotencyKeyTaken => {
                (S::SERVICE_UNAVAILABLE, None)
            }
            ApiError::Internal(_) => (S::INTERNAL_SERVER_ERROR, None),
        };
        let detail = match &e {
            ApiError::Invalid(v) => v
                .violations
                .iter()
                .map(|f| format!("{}: {}", f.field, f.description))
                .collect::<Vec<_>>()
                .join("; "),
            ApiError::Internal(d) => {
                tracing::error!(detail = %d, "SCIM request failed");
                "internal error".into()
            }
            other => other.to_string(),
        };
        ScimError(status, kind, detail)
    }
}

type Answer = Result<Response<Body>, ScimError>;

/// Serves one SCIM request.
pub async fn handle(state: Arc<AppState>, req: Request<Body>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let peer = crate::incoming::remote_addr(&parts.extensions).map(|a| a.to_string());
    let origin = fluxgate_core::Origin {
        request_id: Some(uuid::Uuid::new_v4().to_string()),
        peer_addr: peer,
    };
    let auth = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(who) = state.authenticate_key_header(auth).await else {
        let mut r = error(ScimError(
            StatusCode::UNAUTHORIZED,
            None,
            "a provisioning service account's API key is required (Authorization: Bearer fgk_…)"
                .into(),
        ));
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"scim\""),
        );
        return r;
    };
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(ScimError(
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
                "the body is too large".into(),
            ));
        }
    };
    let scim = Scim {
        state,
        who,
        origin,
        base: String::new(),
    };
    let scim = Scim {
        base: format!("{}{PREFIX}", scim.state.config.public_url),
        ..scim
    };
    match scim
        .route(
            &parts.method,
            parts.uri.path(),
            parts.uri.query(),
            &parts.headers,
            &body,
        )
        .await
    {
        Ok(r) => r,
        Err(e) => error(e),
    }
}

struct Scim {
    state: Arc<AppState>,
    who: Principal,
    origin: fluxgate_core::Origin,
    base: String,
}

impl Scim {
    async fn route(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Answer {
        self.state
            .judge_from(self.origin.clone(), &self.who, uc::may_provision)?;
        if path.strip_prefix(PREFIX).map(|p| p.trim_end_matches('/')) == Some("/Bulk") {
            return match *method {
                Method::POST => self.bulk(body).await,
                _ => Err(method_not_allowed()),
            };
        }
        self.dispatch(method, path, query, headers, body).await
    }

    /// One request to a resource endpoint (a bulk request's operations come here too).
    async fn dispatch(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Answer {
        let rest = path
            .strip_prefix(PREFIX)
            .unwrap_or("")
            .trim_end_matches('/');
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let if_match = headers
            .get(header::IF_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match (method, segments.as_slice()) {
            (&Method::GET, ["ServiceProviderConfig"]) => ok(service_provider_config(&self.base)),
            (&Method::GET, ["ResourceTypes"]) => ok(list_of(resource_types(&self.base), 1, 2)),
            (&Method::GET, ["ResourceTypes", id]) => resource_types(&self.base)
                .into_iter()
                .find(|r| r["id"] == *id)
                .map(ok)
                .unwrap_or_else(|| Err(not_found("resource type"))),
            (&Method::GET, ["Schemas"]) => ok(list_of(schemas(), 1, 3)),
            (&Method::GET, ["Schemas", id]) => schemas()
                .into_iter()
                .find(|s| s["id"] == *id)
                .map(ok)
                .unwrap_or_else(|| Err(not_found("schema"))),
            (&Method::GET, ["Users"]) => self.list_users(query).await,
            (&Method::POST, ["Users", ".search"]) => self.search_users(body).await,
            (&Method::POST, ["Users"]) => self.create_user(body).await,
            (&Method::GET, ["Users", id]) => {
                let u = self.get_user(id).await?;
                let q = params(query);
                Ok(with_etag(ok(project(self.user_json(&u), &q)?)?, &u.etag))
            }
            (&Method::PUT, ["Users", id]) => self.replace_user(id, if_match, body).await,
            (&Method::PATCH, ["Users", id]) => self.patch_user(id, if_match, body).await,
            (&Method::DELETE, ["Users", id]) => self.delete_user(id, if_match).await,
            (&Method::POST, [".search"]) => self.search_all(body).await,
            (&Method::GET, ["Groups"]) => self.list_groups(&params(query)).await,
            (&Method::POST, ["Groups", ".search"]) => {
                let q = search_params(&json_body(body)?);
                self.list_groups(&q).await
            }
            (&Method::POST, ["Groups"]) => self.create_group(body).await,
            (&Method::GET, ["Groups", id]) => {
                let g = self.get_group(id).await?;
                let v = project(self.group_json(&g), &params(query))?;
                Ok(with_etag(ok(v)?, &g.etag))
            }
            (&Method::PUT, ["Groups", id]) => {
                let v = json_body(body)?;
                self.write_group(id, if_match, desired_group(&v)?).await
            }
            (&Method::PATCH, ["Groups", id]) => self.patch_group(id, if_match, body).await,
            (&Method::DELETE, ["Groups", id]) => self.delete_group(id, if_match).await,
            (_, ["Users" | "Groups"] | ["Users" | "Groups", _])
            | (_, ["ServiceProviderConfig" | "ResourceTypes" | "Schemas", ..]) => {
                Err(method_not_allowed())
            }
            _ => Err(not_found("endpoint")),
        }
    }

    fn user_json(&self, u: &Provisioned) -> Value {
        user_json(&self.base, u)
    }

    fn group_json(&self, g: &uc::ProvisionedGroup) -> Value {
        let default = self.state.limits.scim_default_portfolio.as_deref();
        group_json(&self.base, g, default)
    }

    async fn get_user(&self, id: &str) -> Result<Provisioned, ScimError> {
        let id = user_id(id)?;
        Ok(self
            .state
            .query_from(self.origin.clone(), &self.who, move |cx, conn| {
                uc::get(cx, conn, id)
            })
            .await?)
    }

    async fn all_users(&self) -> Result<Vec<Value>, ScimError> {
        let all = self
            .state
            .query_from(self.origin.clone(), &self.who, uc::all)
            .await?;
        Ok(all.iter().map(|u| self.user_json(u)).collect())
    }

    async fn list_users(&self, query: Option<&str>) -> Answer {
        let q = params(query);
        self.listed(&q).await
    }

    async fn search_users(&self, body: &Bytes) -> Answer {
        let q = search_params(&json_body(body)?);
        self.listed(&q).await
    }

    /// A search at the root: users and groups alike.
    async fn search_all(&self, body: &Bytes) -> Answer {
        let q = search_params(&json_body(body)?);
        let mut all = self.all_users().await?;
        let groups = self
            .state
            .query_from(self.origin.clone(), &self.who, uc::all_groups)
            .await?;
        all.extend(groups.iter().map(|g| self.group_json(g)));
        page_of(all, &q)
    }

    async fn listed(&self, q: &Map<String, Value>) -> Answer {
        // `userName eq "…"` (every provider's lookup before a create) by index, not by scan.
        if let Some(name) = user_name_eq(q) {
            let found = self
                .state
                .query_from(self.origin.clone(), &self.who, move |cx, conn| {
                    uc::by_user_name(cx, conn, &name)
                })
                .await?;
            return page_of(found.iter().map(|u| self.user_json(u)).collect(), q);
        }
        let all = self.all_users().await?;
        page_of(all, q)
    }

    async fn get_group(&self, id: &str) -> Result<uc::ProvisionedGroup, ScimError> {
        let id = group_id(id)?;
        Ok(self
            .state
            .query_from(self.origin.clone(), &self.who, move |cx, conn| {
                uc::group(cx, conn, &id)
            })
            .await?)
    }

    async fn list_groups(&self, q: &Map<String, Value>) -> Answer {
        let all = self
            .state
            .query_from(self.origin.clone(), &self.who, uc::all_groups)
            .await?;
        page_of(all.iter().map(|g| self.group_json(g)).collect(), q)
    }

    async fn create_group(&self, body: &Bytes) -> Answer {
        let desired = desired_group(&json_body(body)?)?;
        let cmd = uc::CreateGroup(desired);
        let done = self
            .state
            .execute_from(self.origin.clone(), Some(&self.who), cmd)
            .await?;
        let g = done.value;
        let mut r = with_etag(ok(self.group_json(&g))?, &g.etag);
        *r.status_mut() = StatusCode::CREATED;
        if let Ok(loc) = HeaderValue::from_str(&format!("{}/Groups/{}", self.base, g.id)) {
            r.headers_mut().insert(header::LOCATION, loc);
        }
        Ok(r)
    }

    async fn write_group(
        &self,
        id: &str,
        if_match: Option<String>,
        desired: uc::DesiredGroup,
    ) -> Answer {
        let id = group_id(id)?;
        let cmd = uc::ReplaceGroup {
            id,
            if_match,
            desired,
        };
        let done = self
            .state
            .execute_from(self.origin.clone(), Some(&self.who), cmd)
            .await?;
        let g = done.value;
        Ok(with_etag(ok(self.group_json(&g))?, &g.etag))
    }

    async fn patch_group(&self, id: &str, if_match: Option<String>, body: &Bytes) -> Answer {
        let current = self.get_group(id).await?;
        let mut doc = self.group_json(&current);
        for op in patch_ops(body)? {
            crate::scim_patch::apply(&mut doc, op)?;
        }
        self.write_group(
            id,
            Some(if_match.unwrap_or(current.etag)),
            desired_group(&doc)?,
        )
        .await
    }

    async fn delete_group(&self, id: &str, if_match: Option<String>) -> Answer {
        let id = group_id(id)?;
        let cmd = uc::RemoveGroup { id, if_match };
        self.state
            .execute_from(self.origin.clone(), Some(&self.who), cmd)
            .await?;
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        Ok(r)
    }

    async fn create_user(&self, body: &Bytes) -> Answer {
        let v = json_body(body)?;
        let desired = desired(&v)?;
        let done = self
            .state
            .execute_from(self.origin.clone(), Some(&self.who), uc::Create(desired))
            .await?;
        let u = done.value;
        let mut r = with_etag(ok(self.user_json(&u))?, &u.etag);
        *r.status_mut() = StatusCode::CREATED;
        if let Ok(loc) = HeaderValue::from_str(&format!("{}/Users/{}", self.base, u.user.id)) {
            r.headers_mut().insert(header::LOCATION, loc);
        }
        Ok(r)
    }

    async fn replace_user(&self, id: &str, if_match: Option<String>, body: &Bytes) -> Answer {
        let id = user_id(id)?;
        let v = json_body(body)?;
        if let Some(given) = v.get("id").and_then(Value::as_str)
            && given != id.to_string()
        {
            return Err(bad(
                "mutability",
                "id is read-only: it must be the resource's",
            ));
        }
        self.write(id, if_match, desired(&v)?).await
    }

    async fn write(&self, id: UserId, if_match: Option<String>, desired: Desired) -> Answer {
        let cmd = uc::Replace {
            id,
            if_match,
            desired,
        };
        let done = self
            .state
            .execute_from(self.origin.clone(), Some(&self.who), cmd)
            .await?;
        let u = done.value;
        Ok(with_etag(ok(self.user_json(&u))?, &u.etag))
    }

    async fn patch_user(&self, id: &str, if_match: Option<String>, body: &Bytes) -> Answer {
        let current = self.get_user(id).await?;
        let mut doc = self.user_json(&current);
        for op in patch_ops(body)? {
            crate::scim_patch::apply(&mut doc, op)?;
        }
        self.write(
            current.user.id,
            Some(if_match.unwrap_or(current.etag)),
            desired(&doc)?,
        )
        .await
    }

    async fn delete_user(&self, id: &str, if_match: Option<String>) -> Answer {
        let id = user_id(id)?;
        self.state
            .execute_from(
                self.origin.clone(),
                Some(&self.who),
                uc::Remove { id, if_match },
            )
            .await?;
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        Ok(r)
    }
}

/// The name of a filter that is exactly `userName eq "…"`.
fn user_name_eq(q: &Map<String, Value>) -> Option<String> {
    use scim_v2::filter::{AttrExp, CompValue, CompareOp, Filter};
    let f: Filter = q.get("filter")?.as_str()?.parse().ok()?;
    match f {
        Filter::Attr(AttrExp::Comparison(p, CompareOp::Eq, CompValue::Str(v)))
            if p.name.eq_ignore_ascii_case("userName")
                && p.sub_attr.is_none()
                && p.uri
                    .as_deref()
                    .is_none_or(|u| u.eq_ignore_ascii_case(USER_SCHEMA)) =>
        {
            Some(v)
        }
        _ => None,
    }
}

/// The operations of a PatchOp message.
fn patch_ops(body: &Bytes) -> Result<Vec<scim_v2::models::others::PatchOperation>, ScimError> {
    let v = json_body(body)?;
    let ops: scim_v2::models::others::PatchOp = serde_json::from_value(v)
        .map_err(|e| bad("invalidSyntax", format!("not a PatchOp: {e}")))?;
    if !ops.schemas.iter().any(|s| s == PATCH_OP) {
        return Err(bad(
            "invalidSyntax",
            format!("schemas must name {PATCH_OP}"),
        ));
    }
    Ok(ops.operations)
}

/// A `.search` body's parameters, as a query string's.
fn search_params(v: &Value) -> Map<String, Value> {
    let mut q = Map::new();
    for k in [
        "filter",
        "startIndex",
        "count",
        "attributes",
        "excludedAttributes",
    ] {
        if let Some(x) = v.get(k) {
            let s = match x {
                Value::String(s) => s.clone(),
                Value::Array(a) => a
                    .iter()
                    .filter_map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            q.insert(k.to_lowercase(), Value::String(s));
        }
    }
    q
}

/// Filters, pages and projects `all` as a ListResponse.
fn page_of(mut all: Vec<Value>, q: &Map<String, Value>) -> Answer {
    let filter = match q.get("filter").and_then(Value::as_str) {
        Some(f) if !f.trim().is_empty() => Some(
            f.parse::<scim_v2::filter::Filter>()
                .map_err(|e| bad("invalidFilter", format!("the filter does not parse: {e}")))?,
        ),
        _ => None,
    };
    let start = number(q, "startindex")?.unwrap_or(1).max(1);
    let count = number(q, "count")?.unwrap_or(100).min(MAX_COUNT);
    if let Some(f) = &filter {
        check_filter(f)?;
        all.retain(|u| matches(f, u));
    }
    let total = all.len();
    let page: Vec<Value> = all
        .into_iter()
        .skip(start - 1)
        .take(count)
        .map(|u| project(u, q))
        .collect::<Result<_, _>>()?;
    ok(list_of(page, start, total))
}

fn group_id(id: &str) -> Result<String, ScimError> {
    uuid::Uuid::try_parse(id)
        .map(|u| u.to_string())
        .map_err(|_| not_found("group"))
}

/// A group as a SCIM resource.
fn group_json(base: &str, g: &uc::ProvisionedGroup, default_portfolio: Option<&str>) -> Value {
    let members: Vec<Value> = g
        .members
        .iter()
        .map(|(id, _)| {
            json!({
                "value": id.to_string(),

                "type": "User",
                "$ref": format!("{base}/Users/{id}"),
            })
        })
        .collect();
    let mut o = json!({
        "schemas": [GROUP_SCHEMA],
        "id": g.id,
        "displayName": g.display_name(default_portfolio),
        "members": members,
        "meta": {
            "resourceType": "Group",
            "created": rfc3339(g.created_at),
            "lastModified": rfc3339(g.updated_at),
            "location": format!("{base}/Groups/{}", g.id),
            "version": g.etag,
        },
    });
    if let Some(x) = &g.external_id {
        o["externalId"] = Value::String(x.clone());
    }
    o
}

/// What a group resource says, as the state the provider wants.
fn desired_group(v: &Value) -> Result<uc::DesiredGroup, ScimError> {
    let o = v
        .as_object()
        .ok_or_else(|| bad("invalidSyntax", "not an object"))?;
    let display_name = match get_ci(o, "displayName") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        _ => {
            return Err(bad(
                "invalidValue",
                "displayName is required: \"{portfolio}/{group}\"",
            ));
        }
    };
    let external_id = match get_ci(o, "externalId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad("invalidValue", "externalId must be a string")),
    };
    let mut members = Vec::new();
    match get_ci(o, "members") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for m in items {
                let id = m
                    .get("value")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("invalidValue", "each member needs a value (a user id)"))?;
                let id: UserId = id
                    .parse()
                    .map_err(|_| bad("invalidValue", format!("member {id:?} is not a user id")))?;
                if !members.contains(&id) {
                    members.push(id);
                }
            }
        }
        Some(_) => return Err(bad("invalidValue", "members must be an array")),
    }
    Ok(uc::DesiredGroup {
        display_name,
        external_id,
        members,
    })
}

fn user_id(id: &str) -> Result<UserId, ScimError> {
    id.parse().map_err(|_| not_found("user"))
}

fn method_not_allowed() -> ScimError {
    ScimError(
        StatusCode::METHOD_NOT_ALLOWED,
        None,
        "method not allowed".into(),
    )
}

fn not_found(what: &str) -> ScimError {
    ScimError(StatusCode::NOT_FOUND, None, format!("no such {what}"))
}

fn json_body(body: &Bytes) -> Result<Value, ScimError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| bad("invalidSyntax", format!("the body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(bad("invalidSyntax", "the body must be a JSON object"));
    }
    Ok(v)
}

/// The query parameters, by lower-cased name.
fn params(query: Option<&str>) -> Map<String, Value> {
    openidconnect::url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.to_lowercase(), Value::String(v.into_owned())))
        .collect()
}

fn number(q: &Map<String, Value>, key: &str) -> Result<Option<usize>, ScimError> {
    match q.get(key).and_then(Value::as_str) {
        None => Ok(None),
        Some(s) => s
            .trim()
            .parse::<i64>()
            .map(|n| Some(n.max(0) as usize))
            .map_err(|_| bad("invalidValue", format!("{key} must be an integer"))),
    }
}

/// What a resource says, as the state the provider wants.
fn desired(v: &Value) -> Result<Desired, ScimError> {
    let o = v
        .as_object()
        .ok_or_else(|| bad("invalidSyntax", "not an object"))?;
    let text = |k: &str| -> Result<Option<String>, ScimError> {
        match get_ci(o, k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad("invalidValue", format!("{k} must be a string"))),
        }
    };
    let user_name = text("userName")?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| bad("invalidValue", "userName is required"))?;
    let active = match get_ci(o, "active") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        // Some providers send the boolean as a string.
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
        Some(_) => return Err(bad("invalidValue", "active must be a boolean")),
    };
    let email = primary_email(get_ci(o, "emails"))?;
    let display_name = text("displayName")?.or_else(|| formatted_name(get_ci(o, "name")));
    let role = match get_ci(o, FLUXGATE_USER).and_then(|x| x.get("role")) {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) => Some(r.parse::<Role>().map_err(|_| {
            bad(
                "invalidValue",
                format!("{FLUXGATE_USER}:role must be requester, approver or team_admin"),
            )
        })?),
        Some(_) => return Err(bad("invalidValue", "role must be a string")),
    };
    let mut extra = Map::new();
    for (k, val) in o {
        if !MODELLED.iter().any(|m| k.eq_ignore_ascii_case(m)) && !val.is_null() {
            extra.insert(k.clone(), val.clone());
        }
    }
    Ok(Desired {
        user_name,
        external_id: text("externalId")?,
        email,
        display_name,
        active,
        role,
        extra: Value::Object(extra).to_string(),
    })
}

/// The primary email (else the first) of an `emails` attribute.
fn primary_email(v: Option<&Value>) -> Result<Option<String>, ScimError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let items = v
        .as_array()
        .ok_or_else(|| bad("invalidValue", "emails must be an array"))?;
    let value = |x: &Value| x.get("value").and_then(Value::as_str).map(str::to_owned);
    let primary = items
        .iter()
        .find(|x| x.get("primary").and_then(Value::as_bool) == Some(true))
        .or_else(|| items.first());
    Ok(primary.and_then(value))
}

fn formatted_name(v: Option<&Value>) -> Option<String> {
    let n = v?.as_object()?;
    if let Some(f) = get_ci(n, "formatted").and_then(Value::as_str) {
        return Some(f.to_owned());
    }
    let parts: Vec<&str> = ["givenName", "familyName"]
        .iter()
        .filter_map(|k| get_ci(n, k).and_then(Value::as_str))
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

fn rfc3339(micros: i64) -> String {
    fluxgate_core::time::rfc3339(micros)
}

/// A user as a SCIM resource.
fn user_json(base: &str, u: &Provisioned) -> Value {
    let mut o: Map<String, Value> = serde_json::from_str(&u.extra).unwrap_or_default();
    let placeholder = u.user.email.ends_with("@scim.invalid");
    match o.get_mut("emails").and_then(Value::as_array_mut) {
        // The emails as sent, with the primary one as FluxGate has it now.
        Some(items) if !placeholder => {
            let at = items
                .iter()
                .position(|x| x.get("primary").and_then(Value::as_bool) == Some(true))
                .unwrap_or(0);
            if let Some(Value::Object(m)) = items.get_mut(at) {
                m.insert("value".into(), Value::String(u.user.email.clone()));
            }
        }
        Some(_) => {}
        None if !placeholder => {
            o.insert(
                "emails".into(),
                json!([{ "value": u.user.email, "primary": true, "type": "work" }]),
            );
        }
        None => {}
    }
    o.insert("schemas".into(), json!([USER_SCHEMA, FLUXGATE_USER]));
    o.insert("id".into(), Value::String(u.user.id.to_string()));
    if let Some(x) = &u.external_id {
        o.insert("externalId".into(), Value::String(x.clone()));
    }
    o.insert("userName".into(), Value::String(u.user_name.clone()));
    o.insert(
        "displayName".into(),
        Value::String(u.user.display_name.clone()),
    );
    o.insert("active".into(), Value::Bool(u.user.active));
    o.insert(
        FLUXGATE_USER.into(),
        json!({ "role": u.user.role.as_str() }),
    );
    o.insert(
        "meta".into(),
        json!({
            "resourceType": "User",
            "created": rfc3339(u.user.created_at),
            "lastModified": rfc3339(u.user.updated_at),
            "location": format!("{base}/Users/{}", u.user.id),
            "version": u.etag,
        }),
    );
    Value::Object(o)
}

/// `attributes` and `excludedAttributes` (top-level names, or `name.sub`); `id` and `schemas`
/// always stay.
fn project(v: Value, q: &Map<String, Value>) -> Result<Value, ScimError> {
    let list = |k: &str| -> Vec<String> {
        q.get(k)
            .and_then(Value::as_str)
            .map(|s| {
                s.split(',')
                    .map(|x| x.trim().to_lowercase())
                    .filter(|x| !x.is_empty())
                    .map(|x| {
                        x.strip_prefix(&format!("{}:", USER_SCHEMA.to_lowercase()))
                            .map(str::to_owned)
                            .unwrap_or(x)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (only, except) = (list("attributes"), list("excludedattributes"));
    let Value::Object(mut o) = v else {
        return Ok(v);
    };
    let always = |k: &str| k == "id" || k == "schemas";
    if !only.is_empty() {
        let mut kept = Map::new();
        for (k, val) in std::mem::take(&mut o) {
            let key = k.to_lowercase();
            if always(&key) || only.contains(&key) {
                kept.insert(k, val);
            } else if let Value::Object(inner) = &val {
                let subs: Map<String, Value> = inner
                    .iter()
                    .filter(|(s, _)| {
                        only.iter()
                            .any(|a| *a == format!("{key}.{}", s.to_lowercase()))
                    })
                    .map(|(s, x)| (s.clone(), x.clone()))
                    .collect();
                if !subs.is_empty() {
                    kept.insert(k, Value::Object(subs));
                }
            }
        }
        o = kept;
    }
    if !except.is_empty() {
        o.retain(|k, _| always(&k.to_lowercase()) || !except.contains(&k.to_lowercase()));
    }
    Ok(Value::Object(o))
}

fn list_of(resources: Vec<Value>, start: usize, total: usize) -> Value {
    json!({
        "schemas": [LIST],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

/// Refuses filters on what is not there, or with operators this server does not offer.
fn check_filter(f: &scim_v2::filter::Filter) -> Result<(), ScimError> {
    use scim_v2::filter::{AttrExp, CompareOp, Filter};
    let attr_ok = |a: &AttrExp| match a {
        AttrExp::Present(_) => Ok(()),
        AttrExp::Comparison(_, op, _) => match op {
            CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le => Err(bad(
                "invalidFilter",
                "gt, ge, lt and le are not supported: use eq, ne, co, sw, ew or pr",
            )),
            _ => Ok(()),
        },
    };
    match f {
        Filter::Attr(a) => attr_ok(a),
        Filter::ValuePath(_) => Ok(()),
        Filter::Not(x) => check_filter(x),
        Filter::And(xs) | Filter::Or(xs) => xs.iter().try_for_each(check_filter),
    }
}

/// Whether resource `u` matches filter `f`.
fn matches(f: &scim_v2::filter::Filter, u: &Value) -> bool {
    use scim_v2::filter::Filter;
    match f {
        Filter::Attr(a) => crate::scim_patch::attr_matches(a, u),
        Filter::ValuePath(vp) => {
            let Some(items) = crate::scim_patch::resolve(u, &vp.attr).and_then(Value::as_array)
            else {
                return false;
            };
            items
                .iter()
                .any(|x| crate::scim_patch::val_matches(&vp.filter, x))
        }
        Filter::Not(x) => !matches(x, u),
        Filter::And(xs) => xs.iter().all(|x| matches(x, u)),
        Filter::Or(xs) => xs.iter().any(|x| matches(x, u)),
    }
}

fn service_provider_config(base: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://github.com/fluxgate/fluxgate#provisioning-scim-20",
        "patch": { "supported": true },
        "bulk": { "supported": true, "maxOperations": MAX_OPERATIONS, "maxPayloadSize": MAX_BODY },
        "filter": { "supported": true, "maxResults": MAX_COUNT },
        "changePassword": { "supported": false },
        "sort": { "supported": false },
        "etag": { "supported": true },
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "API key",
            "description": "The API key of a FluxGate provisioning service account, as a bearer token",
            "primary": true,
        }],
        "meta": { "resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig") },
    })
}

fn resource_types(base: &str) -> Vec<Value> {
    vec![
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "User",
            "name": "User",
            "endpoint": "/Users",
            "description": "A FluxGate user",
            "schema": USER_SCHEMA,
            "schemaExtensions": [{ "schema": FLUXGATE_USER, "required": true }],
            "meta": { "resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User") },
        }),
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "Group",
            "name": "Group",
            "endpoint": "/Groups",
            "description": "A portfolio group, named \"{portfolio}/{group}\"",
            "schema": GROUP_SCHEMA,
            "meta": { "resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group") },
        }),
    ]
}

fn attr(name: &str, kind: &str, extra: Value) -> Value {
    let mut a = json!({
        "name": name,
        "type": kind,
        "multiValued": false,
        "required": false,
        "caseExact": false,
        "mutability": "readWrite",
        "returned": "default",
        "uniqueness": "none",
    });
    if let (Value::Object(a), Value::Object(e)) = (&mut a, extra) {
        a.extend(e);
    }
    a
}

/// The schemas this server serves: the User attributes it keeps, and FluxGate's extension.
fn schemas() -> Vec<Value> {
    let email_subs = json!([
        attr("value", "string", json!({ "description": "The address" })),
        attr(
            "type",
            "string",
            json!({ "canonicalValues": ["work", "home", "other"] })
        ),
        attr("primary", "boolean", json!({})),
    ]);
    vec![
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
            "id": USER_SCHEMA,
            "name": "User",
            "description": "User Account",
            "attributes": [
                attr("userName", "string", json!({ "required": true, "uniqueness": "server", "description": "Unique identifier for the User" })),
                attr("displayName", "string", json!({ "required": true, "description": "The name shown for the User" })),
                attr("active", "boolean", json!({ "required": true, "description": "False: deactivated (sessions end)" })),
                attr("emails", "complex", json!({ "multiValued": true, "required": true, "subAttributes": email_subs, "description": "Email addresses; the primary one is FluxGate's" })),
            ],
            "meta": { "resourceType": "Schema", "location": format!("/Schemas/{USER_SCHEMA}") },
        }),
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
            "id": GROUP_SCHEMA,
            "name": "Group",
            "description": "A portfolio group",
            "attributes": [
                attr("displayName", "string", json!({ "required": true, "uniqueness": "server", "description": "\"{portfolio}/{group}\": the portfolio must exist" })),
                attr("members", "complex", json!({ "multiValued": true, "subAttributes": [
                    attr("value", "string", json!({ "mutability": "immutable", "description": "A user's id" })),
                    attr("$ref", "reference", json!({ "mutability": "immutable", "referenceTypes": ["User"] })),
                    attr("type", "string", json!({ "mutability": "immutable", "canonicalValues": ["User"] })),
                ], "description": "The group's users" })),
            ],
            "meta": { "resourceType": "Schema", "location": format!("/Schemas/{GROUP_SCHEMA}") },
        }),
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
            "id": FLUXGATE_USER,
            "name": "FluxGateUser",
            "description": "FluxGate's attributes of a user",
            "attributes": [
                attr("role", "string", json!({ "required": true, "canonicalValues": ["requester", "approver", "team_admin"], "description": "The organisation role" })),
            ],
            "meta": { "resourceType": "Schema", "location": format!("/Schemas/{FLUXGATE_USER}") },
        }),
    ]
}

const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
const BULK_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";
/// The most operations one bulk request holds.
const MAX_OPERATIONS: usize = 1000;

/// One operation of a bulk request, checked for shape.
#[derive(Debug, Clone)]
struct Operation {
    method: Method,
    path: String,
    bulk_id: Option<String>,
    version: Option<String>,
    data: Option<Value>,
}

impl Operation {
    /// Whether its data names another operation's resource (`bulkId:…`).
    fn refers(&self) -> bool {
        fn any(v: &Value) -> bool {
            match v {
                Value::String(s) => s.starts_with("bulkId:"),
                Value::Array(a) => a.iter().any(any),
                Value::Object(o) => o.values().any(any),
                _ => false,
            }
        }
        self.path.contains("bulkId:") || self.data.as_ref().is_some_and(any)
    }

    /// A user creation that can go in one transaction with its neighbours.
    fn plain_user_create(&self) -> bool {
        self.method == Method::POST && self.path == "/Users" && !self.refers()
    }
}

/// A bulk request's operations, or why it is malformed (400, naming the operation).
fn operations(v: &Value) -> Result<(Vec<Operation>, Option<usize>), ScimError> {
    let schemas = v.get("schemas").and_then(Value::as_array);
    if !schemas.is_some_and(|s| s.iter().any(|x| x == BULK_REQUEST)) {
        return Err(bad(
            "invalidSyntax",
            format!("schemas must name {BULK_REQUEST}"),
        ));
    }
    let fail_on_errors = match v.get("failOnErrors") {
        None | Some(Value::Null) => None,
        Some(n) => match n.as_u64() {
            Some(n) if n > 0 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            _ => {
                return Err(bad(
                    "invalidValue",
                    "failOnErrors must be a positive integer",
                ));
            }
        },
    };
    let top = v
        .as_object()
        .ok_or_else(|| bad("invalidSyntax", "the body must be an object"))?;
    let Some(raw) = get_ci(top, "Operations").and_then(Value::as_array) else {
        return Err(bad("invalidSyntax", "Operations must be an array"));
    };
    if raw.is_empty() {
        return Err(bad("invalidValue", "Operations is empty"));
    }
    if raw.len() > MAX_OPERATIONS {
        return Err(ScimError(
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("tooMany"),
            format!("at most {MAX_OPERATIONS} operations a request"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let mut ops = Vec::with_capacity(raw.len());
    for (i, o) in raw.iter().enumerate() {
        let at = |why: &str| bad("invalidValue", format!("Operations[{i}]: {why}"));
        let o = o.as_object().ok_or_else(|| at("must be an object"))?;
        let text = |k: &str| get_ci(o, k).and_then(Value::as_str).map(str::to_owned);
        let method = match text("method").map(|m| m.to_ascii_uppercase()).as_deref() {
            Some("POST") => Method::POST,
            Some("PUT") => Method::PUT,
            Some("PATCH") => Method::PATCH,
            Some("DELETE") => Method::DELETE,
            _ => return Err(at("method must be POST, PUT, PATCH or DELETE")),
        };
        let path = text("path").ok_or_else(|| at("path is required"))?;
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let shape_ok = match (&method, segments.as_slice()) {
            (&Method::POST, ["Users" | "Groups"]) => true,
            (&Method::POST, _) => false,
            (_, ["Users" | "Groups", _]) => true,
            _ => false,
        };
        if !shape_ok || !path.starts_with('/') {
            return Err(at(
                "path must be /Users or /Groups (POST), or one of their resources",
            ));
        }
        let bulk_id = text("bulkId");
        if method == Method::POST && bulk_id.as_deref().is_none_or(str::is_empty) {
            return Err(at("bulkId is required with POST"));
        }
        if let Some(id) = &bulk_id
            && !seen.insert(id.clone())
        {
            return Err(at("bulkId repeats an earlier operation's"));
        }
        let data = get_ci(o, "data").cloned();
        if method != Method::DELETE && !data.as_ref().is_some_and(Value::is_object) {
            return Err(at("data must be an object"));
        }
        ops.push(Operation {
            method,
            path,
            bulk_id,
            version: text("version"),
            data,
        });
    }
    Ok((ops, fail_on_errors))
}

/// Replaces each `bulkId:…` string with the id that operation created; the first it cannot.
fn resolve(v: &mut Value, ids: &std::collections::HashMap<String, String>) -> Result<(), String> {
    match v {
        Value::String(s) => {
            if let Some(r) = s.strip_prefix("bulkId:") {
                *s = ids.get(r).cloned().ok_or_else(|| r.to_owned())?;
            }
            Ok(())
        }
        Value::Array(a) => a.iter_mut().try_for_each(|x| resolve(x, ids)),
        Value::Object(o) => o.values_mut().try_for_each(|x| resolve(x, ids)),
        _ => Ok(()),
    }
}

impl Scim {
    /// A bulk request (RFC 7644 section 3.7): the operations in order, each on its own (one
    /// failing does not undo another), until `failOnErrors` errors. A run of user creations
    /// that name no other operation goes in one transaction; should any of them fail, the run
    /// is done again one by one, so that each gets its own status.
    async fn bulk(&self, body: &Bytes) -> Answer {
        let (ops, fail_on_errors) = operations(&json_body(body)?)?;
        let mut ids = std::collections::HashMap::new();
        let mut results = Vec::with_capacity(ops.len());
        let (mut errors, mut i) = (0, 0);
        while i < ops.len() && fail_on_errors.is_none_or(|n| errors < n) {
            let run = ops[i..]
                .iter()
                .take_while(|o| o.plain_user_create())
                .count();
            if run > 1
                && let Some(done) = self.create_run(&ops[i..i + run], &mut ids).await
            {
                results.extend(done);
                i += run;
                continue;
            }
            let (result, failed) = self.one(&ops[i], &mut ids).await;
            results.push(result);
            errors += usize::from(failed);
            i += 1;
        }
        ok(json!({ "schemas": [BULK_RESPONSE], "Operations": results }))
    }

    /// A run of user creations in one transaction: their results, or `None` when it failed.
    async fn create_run(
        &self,
        run: &[Operation],
        ids: &mut std::collections::HashMap<String, String>,
    ) -> Option<Vec<Value>> {
        let desired = run
            .iter()
            .map(|o| desired(o.data.as_ref()?).ok())
            .collect::<Option<Vec<_>>>()?;
        let done = self
            .state
            .execute_from(
                self.origin.clone(),
                Some(&self.who),
                uc::CreateMany(desired),
            )
            .await
            .ok()?;
        Some(
            run.iter()
                .zip(done.value)
                .map(|(o, u)| {
                    let id = u.user.id.to_string();
                    if let Some(b) = &o.bulk_id {
                        ids.insert(b.clone(), id.clone());
                    }
                    json!({
                        "method": "POST",
                        "bulkId": o.bulk_id,
                        "location": format!("{}/Users/{id}", self.base),
                        "version": u.etag,
                        "status": "201",
                    })
                })
                .collect(),
        )
    }

    /// One operation, as its own request would be answered: its result, and whether it failed.
    async fn one(
        &self,
        op: &Operation,
        ids: &mut std::collections::HashMap<String, String>,
    ) -> (Value, bool) {
        let mut data = op.data.clone().unwrap_or(Value::Null);
        // The path's segments may name another operation's resource too (`/Users/bulkId:a`).
        let mut segments: Vec<Value> = op.path.split('/').map(|s| json!(s)).collect();
        let resolved = resolve(&mut data, ids)
            .and_then(|()| segments.iter_mut().try_for_each(|s| resolve(s, ids)));
        let path = segments
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("/");
        let r = match resolved {
            Err(missing) => error(ScimError(
                StatusCode::CONFLICT,
                None,
                format!("bulkId {missing} names no operation that succeeded before this one"),
            )),
            Ok(()) => {
                let mut headers = HeaderMap::new();
                if let Some(v) = op
                    .version
                    .as_deref()
                    .and_then(|v| HeaderValue::from_str(v).ok())
                {
                    headers.insert(header::IF_MATCH, v);
                }
                let body = Bytes::from(if data.is_null() {
                    String::new()
                } else {
                    data.to_string()
                });
                let full = format!("{PREFIX}{path}");
                self.dispatch(&op.method, &full, None, &headers, &body)
                    .await
                    .unwrap_or_else(error)
            }
        };
        let status = r.status();
        let (location, version) = {
            let h = r.headers();
            let get =
                |n: header::HeaderName| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
            (get(header::LOCATION), get(header::ETAG))
        };
        if let (Some(b), Some(loc)) = (&op.bulk_id, &location) {
            ids.insert(
                b.clone(),
                loc.rsplit('/').next().unwrap_or_default().to_owned(),
            );
        }
        let failed = status.as_u16() >= 400;
        let mut result = json!({
            "method": op.method.as_str(),
            "status": status.as_u16().to_string(),
        });
        if let Some(b) = &op.bulk_id {
            result["bulkId"] = json!(b);
        }
        // An operation's location is where its resource is, created or not.
        let location = location
            .or_else(|| (op.method != Method::POST).then(|| format!("{}{path}", self.base)));
        if let Some(l) = location {
            result["location"] = json!(l);
        }
        if let Some(v) = version {
            result["version"] = json!(v);
        }
        if failed {
            let bytes = r
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            result["response"] = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        }
        (result, failed)
    }
}

fn ok(v: Value) -> Answer {
    let mut r = Response::new(Body::new(Full::new(Bytes::from(v.to_string()))));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/scim+json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

fn with_etag(mut r: Response<Body>, etag: &str) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

fn error(e: ScimError) -> Response<Body> {
    let ScimError(status, kind, detail) = e;
    let mut body = json!({
        "schemas": [ERROR],
        "status": status.as_u16().to_string(),
        "detail": detail,
    });
    if let Some(k) = kind {
        body["scimType"] = Value::String(k.into());
    }
    let mut r = ok(body).unwrap_or_else(|_| Response::new(Body::empty()));
    *r.status_mut() = status;
    r
}
