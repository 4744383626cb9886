//! ApprovalService: per-environment approval policies, change requests and their reviews, the
//! wait stream, and approval metrics.
//!
//! Who may do what to a request is the engine's question ([`Snapshot::change_request`]); the
//! life cycle (only pending requests are reviewed, an approved one is applied once) is checked
//! here, inside the write transaction, against the row as it is when the store-wide write lock
//! is held. So two reviewers acting at once, or a review racing an edit, are serialised and
//! the second sees the first.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fluxgate_authz::{
    Action, Decision, RequestAction, RequestFacts, ResourceRef, Snapshot, Target,
};
use fluxgate_domain::{
    ApplicationId, ApprovalPolicy, ChangeKind, ChangeRequestId, EnvironmentId, FeatureKey,
    PortfolioId, PrincipalId, RequestState, ValidationError, Verdict, Violations, state_after,
};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::approval_service_server::ApprovalService;
use fluxgate_store::approvals::{self as store, ListFilter};
use fluxgate_store::catalog::{self, Kind};
use fluxgate_store::changes::EntityKind;
use fluxgate_store::{DbConnection, Tx, audit};
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::reply;
use crate::auth::RequestCtx;
use crate::convert::{
    PageToken, check_etag, description, duration, duration_secs, environment_name, etag, field,
    json_to_struct, mask_paths, micros, page_size, parse_ids, parse_principal, struct_to_json,
    timestamp, title,
};
use crate::directory::{ANY_REQUEST, Principal};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Largest payload, as JSON text.
const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Rows a listing reads per query while it filters by what the caller may see.
const SCAN_BATCH: i64 = 200;
/// Rows one listing call reads at most; it then returns what it found with a page token.
const SCAN_LIMIT: usize = 5_000;
/// A watcher re-reads its request at least this often, whatever it heard.
const WATCH_RECHECK: Duration = Duration::from_secs(30);
/// Expired requests closed per sweep.
const EXPIRE_BATCH: i64 = 100;

const EDITABLE: [&str; 5] = ["feature_key", "kind", "payload", "title", "description"];
const POLICY_FIELDS: [&str; 4] = [
    "required_approvals",
    "peer_review",
    "admin_override",
    "pending_ttl",
];

#[derive(Debug, Clone)]
pub struct ApprovalSvc {
    pub state: Arc<AppState>,
}

fn request_name(id: &str) -> String {
    format!("changeRequests/{id}")
}

/// An environment's path, as ids.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EnvPath {
    portfolio: PortfolioId,
    application: ApplicationId,
    environment: EnvironmentId,
}

impl EnvPath {
    fn name(&self) -> String {
        environment_name(
            &self.portfolio.to_string(),
            &self.application.to_string(),
            &self.environment.to_string(),
        )
    }
}

fn parse_env(field: &str, name: &str) -> ApiResult<EnvPath> {
    let ids = parse_ids(field, name, &["portfolios", "applications", "environments"])?;
    Ok(EnvPath {
        portfolio: PortfolioId(ids[0]),
        application: ApplicationId(ids[1]),
        environment: EnvironmentId(ids[2]),
    })
}

fn parse_policy_name(field: &str, name: &str) -> ApiResult<EnvPath> {
    match name.strip_suffix("/approvalPolicy") {
        Some(env) => parse_env(field, env),
        None if name.is_empty() => Err(ApiError::invalid(field, "is required")),
        None => Err(ApiError::invalid(
            field,
            "must be portfolios/{id}/applications/{id}/environments/{id}/approvalPolicy",
        )),
    }
}

fn parse_request(field: &str, name: &str) -> ApiResult<String> {
    Ok(ChangeRequestId(parse_ids(field, name, &["changeRequests"])?[0]).to_string())
}

/// Checks the environment exists (in the directory, which is current after the caller's
/// authentication) under the named portfolio and application.
fn locate(snap: &Snapshot, path: &EnvPath) -> ApiResult<()> {
    match snap.parents(ResourceRef::Environment(path.environment)) {
        Some((p, a)) if p == path.portfolio && a == path.application => Ok(()),
        _ => Err(ApiError::NotFound("no such environment".into())),
    }
}

fn kind_from_proto(v: i32) -> Result<ChangeKind, ValidationError> {
    use pb::ChangeKind as K;
    match K::try_from(v) {
        Ok(K::Unspecified) => Err(ValidationError::field("", "is required")),
        Ok(K::CreateFeature) => Ok(ChangeKind::CreateFeature),
        Ok(K::EditFeature) => Ok(ChangeKind::EditFeature),
        Ok(K::DeleteFeature) => Ok(ChangeKind::DeleteFeature),
        Ok(K::ChangeValue) => Ok(ChangeKind::ChangeValue),
        Ok(K::Lock) => Ok(ChangeKind::Lock),
        Ok(K::Unlock) => Ok(ChangeKind::Unlock),
        Ok(K::Retire) => Ok(ChangeKind::Retire),
        Err(_) => Err(ValidationError::field(
            "",
            format!("unknown change kind value {v}"),
        )),
    }
}

fn kind_to_proto(k: ChangeKind) -> pb::ChangeKind {
    use pb::ChangeKind as K;
    match k {
        ChangeKind::CreateFeature => K::CreateFeature,
        ChangeKind::EditFeature => K::EditFeature,
        ChangeKind::DeleteFeature => K::DeleteFeature,
        ChangeKind::ChangeValue => K::ChangeValue,
        ChangeKind::Lock => K::Lock,
        ChangeKind::Unlock => K::Unlock,
        ChangeKind::Retire => K::Retire,
    }
}

fn state_to_proto(s: RequestState) -> pb::ChangeRequestState {
    use pb::ChangeRequestState as S;
    match s {
        RequestState::Pending => S::Pending,
        RequestState::Approved => S::Approved,
        RequestState::Rejected => S::Rejected,
        RequestState::Cancelled => S::Cancelled,
        RequestState::Expired => S::Expired,
        RequestState::Applied => S::Applied,
    }
}

fn state_from_proto(v: i32) -> Result<RequestState, ValidationError> {
    use pb::ChangeRequestState as S;
    match S::try_from(v) {
        Ok(S::Pending) => Ok(RequestState::Pending),
        Ok(S::Approved) => Ok(RequestState::Approved),
        Ok(S::Rejected) => Ok(RequestState::Rejected),
        Ok(S::Cancelled) => Ok(RequestState::Cancelled),
        Ok(S::Expired) => Ok(RequestState::Expired),
        Ok(S::Applied) => Ok(RequestState::Applied),
        Ok(S::Unspecified) | Err(_) => Err(ValidationError::field(
            "",
            format!("unknown change request state value {v}"),
        )),
    }
}

fn verdict_to_proto(v: &str) -> pb::Verdict {
    match v.parse::<Verdict>() {
        Ok(Verdict::Approve) => pb::Verdict::Approve,
        Ok(Verdict::Reject) => pb::Verdict::Reject,
        Ok(Verdict::Override) => pb::Verdict::Override,
        Err(_) => pb::Verdict::Unspecified,
    }
}

/// A principal's resource name back to its id.
fn principal_id(name: &str) -> ApiResult<PrincipalId> {
    name.parse()
        .map_err(|_| ApiError::Internal(format!("stored principal name {name:?} is malformed")))
}

/// The typed view of a stored request that the rules need.
#[derive(Debug, Clone)]
struct Parsed {
    kind: ChangeKind,
    state: RequestState,
    environment: EnvironmentId,
    submitter: PrincipalId,
}

impl Parsed {
    fn of(r: &store::ChangeRequest) -> ApiResult<Parsed> {
        let corrupt =
            |what: &str| ApiError::Internal(format!("change request {}: bad {what}", r.id));
        Ok(Parsed {
            kind: r.kind.parse().map_err(|_| corrupt("kind"))?,
            state: r.state.parse().map_err(|_| corrupt("state"))?,
            environment: r
                .environment_id
                .parse()
                .map_err(|_| corrupt("environment"))?,
            submitter: principal_id(&r.submitter_id)?,
        })
    }

    fn facts<'a>(
        &'a self,
        r: &store::ChangeRequest,
        approvers: &'a [PrincipalId],
    ) -> RequestFacts<'a> {
        RequestFacts {
            submitter: &self.submitter,
            kind: self.kind,
            environment: self.environment,
            peer_review: r.peer_review,
            admin_override: r.admin_override,
            approvers,
        }
    }
}

/// Who approved (or overrode) the request's current revision.
fn approvers(r: &store::ChangeRequest, reviews: &[store::Review]) -> Vec<PrincipalId> {
    reviews
        .iter()
        .filter(|v| v.round == r.round && v.verdict != Verdict::Reject.as_str())
        .filter_map(|v| v.reviewer_id.parse().ok())
        .collect()
}

/// The approvals of the current revision that count: from principals still active, and never
/// from the submitter's party (a key rotated since can make it so). A deactivated or deleted
/// approver's approval stops counting for requests still pending.
fn counted_approvals(
    snap: &Snapshot,
    r: &store::ChangeRequest,
    submitter: &PrincipalId,
    reviews: &[store::Review],
) -> usize {
    reviews
        .iter()
        .filter(|v| v.round == r.round && v.verdict == Verdict::Approve.as_str())
        .filter_map(|v| v.reviewer_id.parse::<PrincipalId>().ok())
        .filter(|id| snap.is_active(id) && snap.shared_party(id, submitter).is_none())
        .count()
}

fn denied(action: RequestAction, d: Decision) -> ApiError {
    ApiError::PermissionDenied(format!(
        "{} change request denied: {}",
        action.as_str(),
        d.reason
    ))
}

/// Asks the engine whether `p` may do `action` to the stored request.
fn allowed(
    snap: &Snapshot,
    p: &PrincipalId,
    action: RequestAction,
    r: &store::ChangeRequest,
) -> ApiResult<Parsed> {
    let parsed = Parsed::of(r)?;
    let d = snap.change_request(p, action, &parsed.facts(r, &[]));
    if d.allowed {
        Ok(parsed)
    } else {
        Err(denied(action, d))
    }
}

/// The request as the API shows it; `approvals` counts the approvals that count now (see
/// [`counted_approvals`]).
fn to_pb(
    snap: &Snapshot,
    r: &store::ChangeRequest,
    reviews: &[store::Review],
) -> pb::ChangeRequest {
    let approvals = principal_id(&r.submitter_id).map_or(0, |submitter| {
        counted_approvals(snap, r, &submitter, reviews)
    });
    let state = r
        .state
        .parse::<RequestState>()
        .map_or(pb::ChangeRequestState::Unspecified, state_to_proto);
    let kind = r
        .kind
        .parse::<ChangeKind>()
        .map_or(pb::ChangeKind::Unspecified, kind_to_proto);
    pb::ChangeRequest {
        name: request_name(&r.id),
        environment: environment_name(&r.portfolio_id, &r.application_id, &r.environment_id),
        application: crate::convert::application_name(&r.portfolio_id, &r.application_id),
        feature_key: r.feature_key.clone(),
        kind: kind as i32,
        payload: serde_json::from_str::<serde_json::Value>(&r.payload)
            .ok()
            .map(|v| json_to_struct(&v)),
        title: r.title.clone(),
        description: r.description.clone(),
        submitter: r.submitter_id.clone(),
        submitter_display_name: r.submitter_name.clone(),
        state: state as i32,
        required_approvals: r.required_approvals as i32,
        approvals: approvals as i32,
        peer_review: r.peer_review,
        admin_override: r.admin_override,
        overridden: r.overridden,
        override_reason: r.override_reason.clone().unwrap_or_default(),
        reviews: reviews
            .iter()
            .map(|v| pb::Review {
                reviewer: v.reviewer_id.clone(),
                reviewer_display_name: v.reviewer_name.clone(),
                verdict: verdict_to_proto(&v.verdict) as i32,
                comment: v.comment.clone(),
                create_time: Some(timestamp(v.created_at)),
                revision: v.round,
                current: v.round == r.round,
            })
            .collect(),
        revision: r.round,
        create_time: Some(timestamp(r.created_at)),
        update_time: Some(timestamp(r.updated_at)),
        expire_time: Some(timestamp(r.expires_at)),
        decide_time: r.decided_at.map(timestamp),
        apply_time: r.applied_at.map(timestamp),
        applied_by: r.applied_by.clone().unwrap_or_default(),
        etag: etag(&r.id, r.version),
    }
}

/// What the audit trail keeps of a request.
fn audit_json(r: &store::ChangeRequest, approvals: Option<usize>) -> Option<String> {
    let payload: serde_json::Value = serde_json::from_str(&r.payload).unwrap_or_default();
    serde_json::to_string(&serde_json::json!({
        "state": r.state,
        "revision": r.round,
        "environment_id": r.environment_id,
        "feature_key": r.feature_key,
        "kind": r.kind,
        "payload": payload,
        "title": r.title,
        "required_approvals": r.required_approvals,
        "approvals": approvals,
        "overridden": r.overridden,
    }))
    .ok()
}

fn policy_of(p: Option<&store::Policy>) -> ApprovalPolicy {
    match p {
        None => ApprovalPolicy::default(),
        Some(p) => ApprovalPolicy {
            required_approvals: p.required_approvals.clamp(0, i64::from(u32::MAX)) as u32,
            peer_review: p.peer_review,
            admin_override: p.admin_override,
            ttl_secs: p.ttl_secs.max(0) as u64,
        },
    }
}

fn policy_pb(path: &EnvPath, p: Option<&store::Policy>) -> pb::ApprovalPolicy {
    let v = policy_of(p);
    pb::ApprovalPolicy {
        name: format!("{}/approvalPolicy", path.name()),
        required_approvals: v.required_approvals as i32,
        peer_review: v.peer_review,
        admin_override: v.admin_override,
        pending_ttl: Some(duration(v.ttl_secs)),
        update_time: p.map(|p| timestamp(p.updated_at)),
        etag: etag(path.environment, p.map_or(0, |p| p.version)),
    }
}

fn policy_json(p: &ApprovalPolicy) -> Option<String> {
    serde_json::to_string(&serde_json::json!({
        "required_approvals": p.required_approvals,
        "peer_review": p.peer_review,
        "admin_override": p.admin_override,
        "pending_ttl_secs": p.ttl_secs,
    }))
    .ok()
}

/// A payload as stored JSON text, checked for size and finiteness.
fn payload_text(v: &mut Violations, field: &str, s: Option<&prost_types::Struct>) -> String {
    let json = match s.map(struct_to_json).transpose() {
        Ok(j) => j.unwrap_or_else(|| serde_json::json!({})),
        Err(e) => {
            v.check::<()>(field, Err(e));
            return String::new();
        }
    };
    let text = json.to_string();
    if text.len() > MAX_PAYLOAD_BYTES {
        v.add(field, "must be at most 64 KiB as JSON");
    }
    text
}

fn is_empty_payload(text: &str) -> bool {
    text.is_empty() || text == "{}"
}

/// The policy an environment's new or edited request is held to.
fn snapshot_policy(
    conn: &mut DbConnection,
    r: &mut store::ChangeRequest,
    now: i64,
) -> ApiResult<()> {
    let kind: ChangeKind = r
        .kind
        .parse()
        .map_err(|_| ApiError::Internal(format!("change request {}: bad kind", r.id)))?;
    let p = if kind.permission().value().is_some() {
        policy_of(store::policy(conn, &r.environment_id)?.as_ref())
    } else {
        // A feature change reaches every environment of the application: the strictest of
        // their policies applies.
        let envs: Vec<String> = catalog::environment_parents(conn, Some(&r.application_id))?
            .into_iter()
            .map(|(e, _)| e)
            .collect();
        let stored = store::policies(conn, &envs)?;
        let mut all: Vec<ApprovalPolicy> = stored.iter().map(|p| policy_of(Some(p))).collect();
        all.resize(envs.len().max(1), ApprovalPolicy::default());
        ApprovalPolicy::strictest(&all)
    };
    r.required_approvals = i64::from(p.required_approvals);
    r.peer_review = p.peer_review;
    r.admin_override = p.admin_override;
    if p.required_approvals == 0 {
        r.state = RequestState::Approved.as_str().into();
        r.decided_at = Some(now);
    } else {
        r.state = RequestState::Pending.as_str().into();
        r.decided_at = None;
    }
    Ok(())
}

/// Writes `r` as the next version of `before`, with its change-log entry and its audit event
/// (`action`, by `actor`; `None` for the server itself), in the caller's transaction.
fn record(
    tx: &mut Tx<'_>,
    before: &store::ChangeRequest,
    mut r: store::ChangeRequest,
    mut event: audit::NewEvent,
    approvals: Option<usize>,
    detail: Option<String>,
) -> ApiResult<store::ChangeRequest> {
    r.version = before.version + 1;
    r.updated_at = tx.now;
    store::save(tx.conn, &r)?;
    tx.changed(EntityKind::ChangeRequest, r.id.clone());
    event.before_json = audit_json(before, None);
    event.after_json = audit_json(&r, approvals);
    event.detail = detail.filter(|d| !d.is_empty());
    audit::append(tx.conn, event, tx.now)?;
    Ok(r)
}

/// An audit event about the request `id`.
fn request_event(ctx: &RequestCtx, actor: &Principal, action: &str, id: &str) -> audit::NewEvent {
    ctx.event(
        Some(actor),
        action,
        "change_request",
        Some(request_name(id)),
    )
}

/// The paths of an update mask; an absent or empty mask means every allowed path.
fn mask_or_all(mask: Option<&prost_types::FieldMask>, allowed: &[&str]) -> ApiResult<Vec<String>> {
    match mask {
        Some(m) if !m.paths.is_empty() => mask_paths(Some(m), allowed),
        _ => Ok(allowed.iter().map(|s| s.to_string()).collect()),
    }
}

fn load(conn: &mut DbConnection, id: &str) -> ApiResult<store::ChangeRequest> {
    store::find(conn, id)?.ok_or_else(|| ApiError::NotFound("no such change request".into()))
}

/// Refuses unless the request is pending and not past its expiry (the sweeper closes those
/// within a poll interval).
fn ensure_pending(
    r: &store::ChangeRequest,
    parsed: &Parsed,
    now: i64,
    what: &str,
) -> ApiResult<()> {
    if parsed.state != RequestState::Pending {
        return Err(ApiError::FailedPrecondition(format!(
            "the change request is {}; only pending requests are {what}",
            parsed.state
        )));
    }
    if r.expires_at <= now {
        return Err(ApiError::FailedPrecondition(
            "the change request has expired".into(),
        ));
    }
    Ok(())
}

/// Filters of a listing, bound into its page tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ListTokenFilter {
    states: Vec<i32>,
    environment: String,
    submitter: String,
    awaiting: bool,
}

type WatchStream = Pin<
    Box<dyn tokio_stream::Stream<Item = Result<pb::WatchChangeRequestResponse, Status>> + Send>,
>;

impl ApprovalSvc {
    /// Commits `f`, brings the directory up to date (which wakes watchers) and returns the
    /// value with the write's revision.
    async fn commit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<(T, Option<i64>)> {
        let committed = self.state.db.write(f).await?;
        self.state.directory.settle().await;
        Ok((committed.value, committed.revision))
    }

    async fn update_policy(
        &self,
        ctx: RequestCtx,
        p: Principal,
        req: pb::UpdateApprovalPolicyRequest,
    ) -> ApiResult<Response<pb::UpdateApprovalPolicyResponse>> {
        let Some(x) = req.policy else {
            return Err(ApiError::invalid("policy", "is required"));
        };
        let paths = mask_or_all(req.update_mask.as_ref(), &POLICY_FIELDS)?;
        let has = |f: &str| paths.iter().any(|p| p == f);
        let mut v = Violations::new();
        let path = field(&mut v, parse_policy_name("policy.name", &x.name));
        let mut given = ApprovalPolicy::default();
        if has("required_approvals") {
            if x.required_approvals < 0 {
                v.add("policy.required_approvals", "must not be negative");
            }
            given.required_approvals = x.required_approvals.max(0) as u32;
        }
        if has("pending_ttl") {
            match &x.pending_ttl {
                None => v.add("policy.pending_ttl", "is required when the mask names it"),
                Some(d) => {
                    if let Some(s) = v.check("policy.pending_ttl", duration_secs(d)) {
                        given.ttl_secs = s;
                    }
                }
            }
        }
        v.check("policy", given.validate());
        v.finish()?;
        let path = path.ok_or_else(|| ApiError::Internal("validated name missing".into()))?;
        let (set_required, set_peer, set_override, set_ttl) = (
            has("required_approvals"),
            has("peer_review"),
            has("admin_override"),
            has("pending_ttl"),
        );
        self.state
            .authorize(&p, Action::ManageApprovalPolicies, Target::Org)?;
        locate(&self.state.directory.snapshot(), &path)?;
        let (pol, rev) = {
            let ctx = ctx.clone();
            let path = path.clone();
            self.commit(move |tx| {
                let env = path.environment.to_string();
                catalog::find(tx.conn, Kind::Environment, &env)?
                    .ok_or_else(|| ApiError::NotFound("no such environment".into()))?;
                let before = store::policy(tx.conn, &env)?;
                check_etag(&x.etag, &env, before.as_ref().map_or(0, |b| b.version))?;
                let old = policy_of(before.as_ref());
                let new = ApprovalPolicy {
                    required_approvals: if set_required {
                        given.required_approvals
                    } else {
                        old.required_approvals
                    },
                    peer_review: if set_peer {
                        x.peer_review
                    } else {
                        old.peer_review
                    },
                    admin_override: if set_override {
                        x.admin_override
                    } else {
                        old.admin_override
                    },
                    ttl_secs: if set_ttl {
                        given.ttl_secs
                    } else {
                        old.ttl_secs
                    },
                };
                let row = store::Policy {
                    environment_id: env,
                    required_approvals: i64::from(new.required_approvals),
                    peer_review: new.peer_review,
                    admin_override: new.admin_override,
                    ttl_secs: new.ttl_secs as i64,
                    updated_at: tx.now,
                    version: before.as_ref().map_or(0, |b| b.version) + 1,
                };
                store::save_policy(tx.conn, &row)?;
                let mut e = ctx.event(
                    Some(&p),
                    "approval_policy.updated",
                    "approval_policy",
                    Some(format!("{}/approvalPolicy", path.name())),
                );
                e.before_json = policy_json(&old);
                e.after_json = policy_json(&new);
                audit::append(tx.conn, e, tx.now)?;
                Ok(row)
            })
            .await?
        };
        Ok(reply(
            pb::UpdateApprovalPolicyResponse {
                policy: Some(policy_pb(&path, Some(&pol))),
            },
            &ctx,
            rev,
        ))
    }

    async fn submit(
        &self,
        ctx: RequestCtx,
        p: Principal,
        req: pb::SubmitChangeRequestRequest,
    ) -> ApiResult<Response<pb::SubmitChangeRequestResponse>> {
        let Some(x) = req.change_request.as_ref() else {
            return Err(ApiError::invalid("change_request", "is required"));
        };
        let mut v = Violations::new();
        let path = field(
            &mut v,
            parse_env("change_request.environment", &x.environment),
        );
        let key = v.check(
            "change_request.feature_key",
            FeatureKey::parse(&x.feature_key),
        );
        let kind = v.check("change_request.kind", kind_from_proto(x.kind));
        let payload = payload_text(&mut v, "change_request.payload", x.payload.as_ref());
        if kind.is_some_and(ChangeKind::needs_payload) && is_empty_payload(&payload) {
            v.add("change_request.payload", "is required for a value change");
        }
        let t = v.check("", title("change_request.title", &x.title));
        let d = v.check(
            "",
            description("change_request.description", &x.description),
        );
        let client_id = (!req.request_id.is_empty()).then(|| req.request_id.clone());
        if client_id.as_ref().is_some_and(|k| {
            k.len() > 64
                || !k
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        }) {
            v.add("request_id", "must be 1 to 64 letters, digits, '-' or '_'");
        }
        v.finish()?;
        let (Some(path), Some(key), Some(kind), Some(t), Some(d)) = (path, key, kind, t, d) else {
            return Err(ApiError::Internal(
                "validation passed without values".into(),
            ));
        };
        let snap = self.state.directory.snapshot();
        locate(&snap, &path)?;
        let facts = RequestFacts {
            submitter: &p.id,
            kind,
            environment: path.environment,
            peer_review: false,
            admin_override: false,
            approvers: &[],
        };
        let dec = snap.change_request(&p.id, RequestAction::Submit, &facts);
        if !dec.allowed {
            return Err(denied(RequestAction::Submit, dec));
        }
        let ((row, reviews), rev) = {
            let ctx = ctx.clone();
            self.commit(move |tx| {
                if let Some(k) = &client_id
                    && let Some(first) = store::find_by_client_id(tx.conn, &p.id.to_string(), k)?
                {
                    let reviews = store::reviews(tx.conn, &first.id)?;
                    return Ok((first, reviews));
                }
                let env = path.environment.to_string();
                catalog::find(tx.conn, Kind::Environment, &env)?
                    .ok_or_else(|| ApiError::NotFound("no such environment".into()))?;
                let ttl = policy_of(store::policy(tx.conn, &env)?.as_ref()).ttl_secs;
                let mut r = store::ChangeRequest {
                    id: ChangeRequestId::generate().to_string(),
                    portfolio_id: path.portfolio.to_string(),
                    application_id: path.application.to_string(),
                    environment_id: env,
                    feature_key: key.as_str().to_owned(),
                    kind: kind.as_str().to_owned(),
                    payload,
                    title: t.as_str().to_owned(),
                    description: d.as_str().to_owned(),
                    submitter_id: p.id.to_string(),
                    submitter_name: p.name.clone(),
                    state: String::new(),
                    round: 1,
                    required_approvals: 0,
                    peer_review: false,
                    admin_override: false,
                    overridden: false,
                    override_reason: None,
                    created_at: tx.now,
                    updated_at: tx.now,
                    expires_at: tx
                        .now
                        .saturating_add((ttl as i64).saturating_mul(1_000_000)),
                    first_review_at: None,
                    decided_at: None,
                    applied_at: None,
                    applied_by: None,
                    version: 1,
                    client_request_id: client_id,
                };
                snapshot_policy(tx.conn, &mut r, tx.now)?;
                store::insert(tx.conn, &r)?;
                tx.changed(EntityKind::ChangeRequest, r.id.clone());
                let mut e = ctx.event(
                    Some(&p),
                    "change_request.submitted",
                    "change_request",
                    Some(request_name(&r.id)),
                );
                e.after_json = audit_json(&r, Some(0));
                audit::append(tx.conn, e, tx.now)?;
                Ok((r, Vec::new()))
            })
            .await?
        };
        Ok(reply(
            pb::SubmitChangeRequestResponse {
                change_request: Some(to_pb(&self.state.directory.snapshot(), &row, &reviews)),
            },
            &ctx,
            rev,
        ))
    }

    /// Reads a request with its reviews, if `p` may see it.
    async fn visible(
        &self,
        p: &Principal,
        id: String,
    ) -> ApiResult<(store::ChangeRequest, Vec<store::Review>)> {
        let (row, reviews) = self
            .state
            .db
            .read(move |conn| {
                let r = load(conn, &id)?;
                let reviews = store::reviews(conn, &id)?;
                Ok((r, reviews))
            })
            .await?;
        allowed(
            &self.state.directory.snapshot(),
            &p.id,
            RequestAction::View,
            &row,
        )?;
        Ok((row, reviews))
    }

    async fn list(
        &self,
        ctx: RequestCtx,
        p: Principal,
        req: pb::ListChangeRequestsRequest,
    ) -> ApiResult<Response<pb::ListChangeRequestsResponse>> {
        let mut v = Violations::new();
        let mut states = Vec::new();
        for (i, s) in req.states.iter().enumerate() {
            if let Some(s) = v.check(&format!("states[{i}]"), state_from_proto(*s)) {
                states.push(s.as_str().to_owned());
            }
        }
        let environment = if req.environment.is_empty() {
            None
        } else {
            field(&mut v, parse_env("environment", &req.environment))
                .map(|e| e.environment.to_string())
        };
        let submitter = if req.submitter.is_empty() {
            None
        } else {
            match field(&mut v, parse_principal("submitter", &req.submitter)) {
                Some(crate::convert::PrincipalRef::ServiceAccount(id)) => {
                    Some(PrincipalId::ServiceAccount(id).to_string())
                }
                Some(crate::convert::PrincipalRef::User(crate::convert::UserRef::Id(id))) => {
                    Some(PrincipalId::User(id).to_string())
                }
                Some(crate::convert::PrincipalRef::User(crate::convert::UserRef::Username(u))) => {
                    // An unknown username matches nobody.
                    Some(self.state.directory.user_by_name(&u).map_or_else(
                        || format!("users/{u}"),
                        |id| PrincipalId::User(id).to_string(),
                    ))
                }
                None => None,
            }
        };
        let limit = field(&mut v, page_size(req.page_size));
        v.finish()?;
        let limit = limit.unwrap_or(50) as usize;
        let token_filter = ListTokenFilter {
            states: req.states.clone(),
            environment: req.environment.clone(),
            submitter: req.submitter.clone(),
            awaiting: req.awaiting_my_review,
        };
        let after = PageToken::decode(&req.page_token, &token_filter)?;
        self.state.authorize(&p, Action::ReadCatalog, Target::Org)?;
        let filter = ListFilter {
            states,
            environment,
            submitter,
            awaiting: req.awaiting_my_review.then(|| p.id.to_string()),
            now: fluxgate_store::now_micros(),
        };
        let snap = self.state.directory.snapshot();
        let me = p.id;
        let awaiting = req.awaiting_my_review;
        let (page, next) = self
            .state
            .db
            .read(move |conn| {
                let mut out = Vec::new();
                let mut cursor = after;
                let mut scanned = 0usize;
                let mut more = false;
                'scan: loop {
                    let batch = store::list(conn, &filter, cursor.as_deref(), SCAN_BATCH)?;
                    let full = batch.len() as i64 == SCAN_BATCH;
                    for (i, r) in batch.iter().enumerate() {
                        cursor = Some(r.id.clone());
                        scanned += 1;
                        let see = allowed(&snap, &me, RequestAction::View, r).is_ok()
                            && (!awaiting || allowed(&snap, &me, RequestAction::Review, r).is_ok());
                        if see {
                            out.push(r.clone());
                        }
                        if out.len() == limit || scanned >= SCAN_LIMIT {
                            more = full || i + 1 < batch.len();
                            break 'scan;
                        }
                    }
                    if !full {
                        break;
                    }
                }
                let ids: Vec<String> = out.iter().map(|r| r.id.clone()).collect();
                let mut reviews: HashMap<String, Vec<store::Review>> = HashMap::new();
                for r in store::reviews_of(conn, &ids)? {
                    reviews.entry(r.request_id.clone()).or_default().push(r);
                }
                let page: Vec<pb::ChangeRequest> = out
                    .iter()
                    .map(|r| to_pb(&snap, r, reviews.get(&r.id).map_or(&[][..], Vec::as_slice)))
                    .collect();
                let next = match (more, cursor) {
                    (true, Some(after)) => PageToken {
                        after,
                        filter: token_filter,
                    }
                    .encode(),
                    _ => String::new(),
                };
                Ok((page, next))
            })
            .await?;
        Ok(reply(
            pb::ListChangeRequestsResponse {
                change_requests: page,
                next_page_token: next,
            },
            &ctx,
            None,
        ))
    }

    async fn edit(
        &self,
        ctx: RequestCtx,
        p: Principal,
        req: pb::UpdateChangeRequestRequest,
    ) -> ApiResult<Response<pb::UpdateChangeRequestResponse>> {
        let Some(x) = req.change_request else {
            return Err(ApiError::invalid("change_request", "is required"));
        };
        let paths = mask_or_all(req.update_mask.as_ref(), &EDITABLE)?;
        let has = |f: &str| paths.iter().any(|p| p == f);
        let mut v = Violations::new();
        let id = field(&mut v, parse_request("change_request.name", &x.name));
        let key = if has("feature_key") {
            v.check(
                "change_request.feature_key",
                FeatureKey::parse(&x.feature_key),
            )
        } else {
            None
        };
        let kind = if has("kind") {
            v.check("change_request.kind", kind_from_proto(x.kind))
        } else {
            None
        };
        let payload = has("payload")
            .then(|| payload_text(&mut v, "change_request.payload", x.payload.as_ref()));
        let t = if has("title") {
            v.check("", title("change_request.title", &x.title))
        } else {
            None
        };
        let d = if has("description") {
            v.check(
                "",
                description("change_request.description", &x.description),
            )
        } else {
            None
        };
        v.finish()?;
        let id = id.ok_or_else(|| ApiError::Internal("validated name missing".into()))?;
        let snap = self.state.directory.snapshot();
        let etag_given = x.etag;
        let ((row, reviews), rev) = {
            let ctx = ctx.clone();
            self.commit(move |tx| {
                let before = load(tx.conn, &id)?;
                let parsed = allowed(&snap, &p.id, RequestAction::Edit, &before)?;
                check_etag(&etag_given, &before.id, before.version)?;
                let new_kind = kind.unwrap_or(parsed.kind);
                let dec = snap.may_change(&p.id, new_kind, parsed.environment);
                if !dec.allowed {
                    return Err(denied(RequestAction::Edit, dec));
                }
                ensure_pending(&before, &parsed, tx.now, "edited")?;
                let mut r = before.clone();
                if let Some(k) = &key {
                    r.feature_key = k.as_str().to_owned();
                }
                r.kind = new_kind.as_str().to_owned();
                if let Some(pl) = payload {
                    r.payload = pl;
                }
                if let Some(t) = &t {
                    r.title = t.as_str().to_owned();
                }
                if let Some(d) = &d {
                    r.description = d.as_str().to_owned();
                }
                if new_kind.needs_payload() && is_empty_payload(&r.payload) {
                    return Err(ApiError::invalid(
                        "change_request.payload",
                        "is required for a value change",
                    ));
                }
                let reviews = store::reviews(tx.conn, &id)?;
                let unchanged = (
                    &r.feature_key,
                    &r.kind,
                    &r.payload,
                    &r.title,
                    &r.description,
                ) == (
                    &before.feature_key,
                    &before.kind,
                    &before.payload,
                    &before.title,
                    &before.description,
                );
                if unchanged {
                    // Nothing to review anew: keep the approvals.
                    return Ok((before, reviews));
                }
                r.round += 1;
                snapshot_policy(tx.conn, &mut r, tx.now)?;
                let e = request_event(&ctx, &p, "change_request.updated", &r.id);
                let r = record(tx, &before, r, e, Some(0), None)?;
                Ok((r, reviews))
            })
            .await?
        };
        Ok(reply(
            pb::UpdateChangeRequestResponse {
                change_request: Some(to_pb(&self.state.directory.snapshot(), &row, &reviews)),
            },
            &ctx,
            rev,
        ))
    }

    async fn cancel(
        &self,
        ctx: RequestCtx,
        p: Principal,
        req: pb::CancelChangeRequestRequest,
    ) -> ApiResult<Response<pb::CancelChangeRequestResponse>> {
        let mut v = Violations::new();
        let id = field(&mut v, parse_request("name", &req.name));
        let reason = v.check("", description("reason", &req.reason));
        v.finish()?;
        let (Some(id), Some(reason)) = (id, reason) else {
            return Err(ApiError::Internal(
                "validation passed without values".into(),
            ));
        };
        let snap = self.state.directory.snapshot();
        let ((row, reviews), rev) = {
            let ctx = ctx.clone();
            self.commit(move |tx| {
                let before = load(tx.conn, &id)?;
                let parsed = allowed(&snap, &p.id, RequestAction::Cancel, &before)?;
                check_etag(&req.etag, &before.id, before.version)?;
                if parsed.state == RequestState::Pending && before.expires_at <= tx.now {
                    return Err(ApiError::FailedPrecondition(
                        "the change request has expired".into(),
                    ));
                }
                if !matches!(parsed.state, RequestState::Pending | RequestState::Approved) {
                    return Err(ApiError::FailedPrecondition(format!(
                        "the change request is {}; only pending or approved requests are cancelled",
                        parsed.state
                    )));
                }
                let mut r = before.clone();
                r.state = RequestState::Cancelled.as_str().into();
                let e = request_event(&ctx, &p, "change_request.cancelled", &r.id);
                let r = record(tx, &before, r, e, None, Some(reason.as_str().to_owned()))?;
                Ok((r, store::reviews(tx.conn, &id)?))
            })
            .await?
        };
        Ok(reply(
            pb::CancelChangeRequestResponse {
                change_request: Some(to_pb(&self.state.directory.snapshot(), &row, &reviews)),
            },
            &ctx,
            rev,
        ))
    }

    /// Approve, reject or override.
    async fn review(
        &self,
        ctx: &RequestCtx,
        p: Principal,
        name: &str,
        revision: i64,
        verdict: Verdict,
        comment: &str,
    ) -> ApiResult<(pb::ChangeRequest, Option<i64>)> {
        let comment_field = if verdict == Verdict::Override {
            "reason"
        } else {
            "comment"
        };
        let mut v = Violations::new();
        let id = field(&mut v, parse_request("name", name));
        let comment = v.check("", description(comment_field, comment));
        if verdict != Verdict::Approve && comment.as_ref().is_some_and(|c| c.as_str().is_empty()) {
            v.add(comment_field, "is required");
        }
        if revision < 0 || (revision == 0 && verdict != Verdict::Reject) {
            v.add(
                "revision",
                "is required: the revision of the request you reviewed",
            );
        }
        v.finish()?;
        let (Some(id), Some(comment)) = (id, comment) else {
            return Err(ApiError::Internal(
                "validation passed without values".into(),
            ));
        };
        let action = if verdict == Verdict::Override {
            RequestAction::Override
        } else {
            RequestAction::Review
        };
        let snap = self.state.directory.snapshot();
        let ctx2 = ctx.clone();
        let ((row, reviews), rev) = self
            .commit(move |tx| {
                let before = load(tx.conn, &id)?;
                let parsed = allowed(&snap, &p.id, action, &before)?;
                if revision != 0 && revision != before.round {
                    return Err(ApiError::Aborted(format!(
                        "the request was edited: you reviewed revision {revision}, it is now at \
                         revision {}; read it again",
                        before.round
                    )));
                }
                ensure_pending(&before, &parsed, tx.now, "reviewed")?;
                let me = p.id.to_string();
                let mut reviews = store::reviews(tx.conn, &id)?;
                let mine = reviews
                    .iter()
                    .any(|v| v.round == before.round && v.reviewer_id == me);
                if mine && verdict != Verdict::Override {
                    return Err(ApiError::FailedPrecondition(format!(
                        "you have already reviewed revision {} of this change request",
                        before.round
                    )));
                }
                if !mine {
                    let review = store::Review {
                        id: uuid::Uuid::now_v7().to_string(),
                        request_id: id.clone(),
                        round: before.round,
                        reviewer_id: me,
                        reviewer_name: p.name.clone(),
                        reviewer_role: p.role.as_str().to_owned(),
                        verdict: verdict.as_str().to_owned(),
                        comment: comment.as_str().to_owned(),
                        created_at: tx.now,
                    };
                    store::insert_review(tx.conn, &review)?;
                    reviews.push(review);
                }
                let approvals = counted_approvals(&snap, &before, &parsed.submitter, &reviews);
                let state = state_after(
                    verdict,
                    approvals as u32,
                    before.required_approvals.max(0) as u32,
                );
                let mut r = before.clone();
                r.state = state.as_str().into();
                r.first_review_at.get_or_insert(tx.now);
                if state.is_decided() {
                    r.decided_at = Some(tx.now);
                }
                if verdict == Verdict::Override {
                    r.overridden = true;
                    r.override_reason = Some(comment.as_str().to_owned());
                }
                let action = match verdict {
                    Verdict::Approve => "change_request.approved",
                    Verdict::Reject => "change_request.rejected",
                    Verdict::Override => "change_request.overridden",
                };
                let e = request_event(&ctx2, &p, action, &r.id);
                let detail = Some(comment.as_str().to_owned());
                let r = record(tx, &before, r, e, Some(approvals), detail)?;
                Ok((r, reviews))
            })
            .await?;
        Ok((to_pb(&self.state.directory.snapshot(), &row, &reviews), rev))
    }

    async fn apply(
        &self,
        ctx: RequestCtx,
        p: Principal,
        req: pb::MarkChangeRequestAppliedRequest,
    ) -> ApiResult<Response<pb::MarkChangeRequestAppliedResponse>> {
        let id = parse_request("name", &req.name)?;
        let snap = self.state.directory.snapshot();
        let ((row, reviews), rev) = {
            let ctx = ctx.clone();
            self.commit(move |tx| {
                let before = load(tx.conn, &id)?;
                let reviews = store::reviews(tx.conn, &id)?;
                let parsed = Parsed::of(&before)?;
                let by = approvers(&before, &reviews);
                let d =
                    snap.change_request(&p.id, RequestAction::Apply, &parsed.facts(&before, &by));
                if !d.allowed {
                    return Err(denied(RequestAction::Apply, d));
                }
                match parsed.state {
                    RequestState::Approved => {}
                    RequestState::Applied => {
                        return Err(ApiError::FailedPrecondition(format!(
                            "the change request was already applied by {}",
                            before.applied_by.as_deref().unwrap_or("an earlier call")
                        )));
                    }
                    s => {
                        return Err(ApiError::FailedPrecondition(format!(
                            "the change request is {s}; only approved requests are applied"
                        )));
                    }
                }
                let mut r = before.clone();
                r.state = RequestState::Applied.as_str().into();
                r.applied_at = Some(tx.now);
                r.applied_by = Some(p.id.to_string());
                let e = request_event(&ctx, &p, "change_request.applied", &r.id);
                let r = record(tx, &before, r, e, None, None)?;
                Ok((r, store::reviews(tx.conn, &id)?))
            })
            .await?
        };
        Ok(reply(
            pb::MarkChangeRequestAppliedResponse {
                change_request: Some(to_pb(&self.state.directory.snapshot(), &row, &reviews)),
            },
            &ctx,
            rev,
        ))
    }

    async fn watch(
        &self,
        ctx: RequestCtx,
        p: Principal,
        req: pb::WatchChangeRequestRequest,
    ) -> ApiResult<Response<WatchStream>> {
        let id = parse_request("name", &req.name)?;
        // Subscribe before the first read, so that no change slips between the two.
        let mut changes = self.state.directory.watch_requests();
        let (row, reviews) = self.visible(&p, id.clone()).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let state = self.state.clone();
        let mut stopping = self.state.stopping.subscribe();
        tokio::spawn(async move {
            let mut current = (row, reviews);
            let mut sent_version = None;
            loop {
                let (row, reviews) = &current;
                if sent_version != Some(row.version) {
                    sent_version = Some(row.version);
                    let msg = pb::WatchChangeRequestResponse {
                        change_request: Some(to_pb(&state.directory.snapshot(), row, reviews)),
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
                if row
                    .state
                    .parse::<RequestState>()
                    .is_ok_and(RequestState::is_final)
                {
                    return;
                }
                // Wait until this request (or possibly any) changed, the client left, or the
                // periodic re-check is due.
                let woke = tokio::select! {
                    () = tx.closed() => return,
                    _ = stopping.wait_for(|stop| *stop) => false,
                    _ = tokio::time::sleep(WATCH_RECHECK) => true,
                    r = async {
                        loop {
                            match changes.recv().await {
                                Ok(changed) if *changed == *id || *changed == *ANY_REQUEST => {
                                    return true;
                                }
                                Ok(_) => {}
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                                    return true;
                                }
                                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                    return false;
                                }
                            }
                        }
                    } => r,
                };
                if !woke {
                    let _ = tx.try_send(Err(Status::unavailable("the server is shutting down")));
                    return;
                }
                // The watcher may have lost its rights meanwhile.
                let Some(me) = state.directory.principal(p.id).filter(|m| m.active) else {
                    let _ = tx
                        .send(Err(Status::unauthenticated(
                            "the caller is no longer active",
                        )))
                        .await;
                    return;
                };
                let svc = ApprovalSvc {
                    state: state.clone(),
                };
                match svc.visible(&me, id.clone()).await {
                    Ok(next) => current = next,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
            }
        });
        Ok(reply(
            Box::pin(ReceiverStream::new(rx)) as WatchStream,
            &ctx,
            None,
        ))
    }

    async fn metrics(
        &self,
        ctx: RequestCtx,
        p: Principal,
        req: pb::GetApprovalMetricsRequest,
    ) -> ApiResult<Response<pb::GetApprovalMetricsResponse>> {
        let mut v = Violations::new();
        let env = if req.environment.is_empty() {
            None
        } else {
            field(&mut v, parse_env("environment", &req.environment))
        };
        let to = match &req.end_time {
            Some(_) => micros(&mut v, "end_time", &req.end_time),
            None => Some(fluxgate_store::now_micros()),
        };
        let from = match &req.start_time {
            Some(_) => micros(&mut v, "start_time", &req.start_time),
            None => to.map(|t| t - 30 * 86_400 * 1_000_000),
        };
        if let (Some(f), Some(t)) = (from, to)
            && f >= t
        {
            v.add("end_time", "must be after start_time");
        }
        v.finish()?;
        let (Some(from), Some(to)) = (from, to) else {
            return Err(ApiError::Internal(
                "validation passed without values".into(),
            ));
        };
        self.state
            .authorize(&p, Action::ViewApprovalMetrics, Target::Org)?;
        if let Some(e) = &env {
            locate(&self.state.directory.snapshot(), e)?;
        }
        let env_id = env.map(|e| e.environment.to_string());
        let report = self
            .state
            .db
            .read(move |conn| metrics::compute(conn, env_id.as_deref(), from, to))
            .await?;
        Ok(reply(report, &ctx, None))
    }
}

/// Closes pending requests whose time is up: each becomes expired with an audit event, in one
/// transaction per sweep. Returns how many it closed.
pub async fn expire_due(state: &AppState) -> ApiResult<usize> {
    let now = fluxgate_store::now_micros();
    let due = state
        .db
        .read(move |conn| Ok(store::due_to_expire(conn, now, EXPIRE_BATCH)?))
        .await?;
    if due.is_empty() {
        return Ok(0);
    }
    let committed = state
        .db
        .write(move |tx| {
            let mut n = 0;
            for d in due {
                // Re-read under the write lock: a review may have decided it meanwhile.
                let Some(before) = store::find(tx.conn, &d.id)? else {
                    continue;
                };
                if before.state != RequestState::Pending.as_str() || before.expires_at > tx.now {
                    continue;
                }
                let mut r = before.clone();
                r.state = RequestState::Expired.as_str().into();
                let e = audit::NewEvent {
                    action: "change_request.expired".into(),
                    target_type: "change_request".into(),
                    target_id: Some(request_name(&r.id)),
                    outcome: "success".into(),
                    ..Default::default()
                };
                let detail = "pending past the environment's time to live";
                record(tx, &before, r, e, None, Some(detail.into()))?;
                n += 1;
            }
            Ok::<_, ApiError>(n)
        })
        .await?;
    state.directory.settle().await;
    Ok(committed.value)
}

/// Cancels the open requests of environments being deleted (inside the deleting
/// transaction), each with its own audit event.
pub fn cancel_for_deleted_environments(
    tx: &mut Tx<'_>,
    open: Vec<store::ChangeRequest>,
    event: impl Fn(&str) -> audit::NewEvent,
) -> ApiResult<()> {
    cancel_all(tx, open, event, "its environment was deleted")
}

/// Cancels the open (pending or approved, not yet applied) requests of a submitter who leaves:
/// deactivated or deleted. Nobody is left to answer for them, so they are not approved, applied
/// or left hanging; each cancellation is audited. Returns how many.
pub fn cancel_for_departed_submitter(
    tx: &mut Tx<'_>,
    ctx: &RequestCtx,
    actor: &Principal,
    submitter: &PrincipalId,
    why: &str,
) -> ApiResult<usize> {
    let open = store::open_by(tx.conn, &submitter.to_string())?;
    let n = open.len();
    cancel_all(
        tx,
        open,
        |target| {
            ctx.event(
                Some(actor),
                "change_request.cancelled",
                "change_request",
                Some(target.to_owned()),
            )
        },
        why,
    )?;
    Ok(n)
}

fn cancel_all(
    tx: &mut Tx<'_>,
    open: Vec<store::ChangeRequest>,
    event: impl Fn(&str) -> audit::NewEvent,
    why: &str,
) -> ApiResult<()> {
    for before in open {
        let mut r = before.clone();
        r.state = RequestState::Cancelled.as_str().into();
        let e = event(&request_name(&r.id));
        record(tx, &before, r, e, None, Some(why.into()))?;
    }
    Ok(())
}

pub mod metrics {
    //! Approval response times and pending work, computed from the stored timings.

    use std::collections::{BTreeMap, HashMap};

    use fluxgate_proto::v1 as pb;
    use fluxgate_store::DbConnection;
    use fluxgate_store::approvals as store;

    use crate::convert::environment_name;
    use crate::error::ApiResult;

    /// Nearest-rank percentile of sorted samples.
    fn rank(sorted: &[i64], pct: usize) -> i64 {
        if sorted.is_empty() {
            return 0;
        }
        let k = (pct * sorted.len()).div_ceil(100).max(1);
        sorted[k - 1]
    }

    fn dur(micros: i64) -> prost_types::Duration {
        let m = micros.max(0);
        prost_types::Duration {
            seconds: m / 1_000_000,
            nanos: ((m % 1_000_000) * 1000) as i32,
        }
    }

    /// Median and p90 of durations in microseconds.
    pub fn summary(mut samples: Vec<i64>) -> pb::DurationSummary {
        samples.sort_unstable();
        pb::DurationSummary {
            count: samples.len() as i64,
            median: (!samples.is_empty()).then(|| dur(rank(&samples, 50))),
            p90: (!samples.is_empty()).then(|| dur(rank(&samples, 90))),
        }
    }

    #[derive(Default)]
    struct EnvAcc {
        submitted: i64,
        approved: i64,
        rejected: i64,
        first_review: Vec<i64>,
        decision: Vec<i64>,
        pending_ages: Vec<i64>,
    }

    impl EnvAcc {
        fn finish(mut self, environment: String) -> pb::EnvironmentApprovalMetrics {
            self.pending_ages.sort_unstable();
            pb::EnvironmentApprovalMetrics {
                environment,
                submitted: self.submitted,
                approved: self.approved,
                rejected: self.rejected,
                time_to_first_review: Some(summary(self.first_review)),
                time_to_decision: Some(summary(self.decision)),
                pending: self.pending_ages.len() as i64,
                oldest_pending_age: self.pending_ages.last().map(|&a| dur(a)),
                median_pending_age: (!self.pending_ages.is_empty())
                    .then(|| dur(rank(&self.pending_ages, 50))),
            }
        }
    }

    /// The whole report for requests submitted in `[from, to)` (pending counts are as of now).
    pub fn compute(
        conn: &mut DbConnection,
        environment: Option<&str>,
        from: i64,
        to: i64,
    ) -> ApiResult<pb::GetApprovalMetricsResponse> {
        let now = fluxgate_store::now_micros();
        let timings = store::timings(conn, environment, from, to)?;
        let reviews = store::review_timings(conn, environment, from, to)?;
        let pending = store::pending(conn, environment)?;
        let mut overall = EnvAcc::default();
        let mut per_env: BTreeMap<String, EnvAcc> = BTreeMap::new();
        for t in &timings {
            for acc in [
                &mut overall,
                per_env.entry(t.environment_id.clone()).or_default(),
            ] {
                acc.submitted += 1;
                if let Some(f) = t.first_review_at {
                    acc.first_review.push(f - t.created_at);
                }
                // Requests that needed no approval were never decided by anyone.
                if let (Some(d), Some(_)) = (t.decided_at, t.first_review_at) {
                    match t.state.as_str() {
                        "rejected" => acc.rejected += 1,
                        _ => acc.approved += 1,
                    }
                    acc.decision.push(d - t.created_at);
                }
            }
        }
        for (env, created) in &pending {
            for acc in [&mut overall, per_env.entry(env.clone()).or_default()] {
                acc.pending_ages.push(now - created);
            }
        }
        // Names of the environments (deleted ones keep their bare id).
        let ids: Vec<String> = per_env.keys().cloned().collect();
        let names: HashMap<String, String> = store::environment_paths(conn, &ids)?
            .into_iter()
            .map(|(e, a, p)| (e.clone(), environment_name(&p, &a, &e)))
            .collect();
        let mut environments: Vec<pb::EnvironmentApprovalMetrics> = per_env
            .into_iter()
            .map(|(id, acc)| {
                let name = names
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| format!("environments/{id}"));
                acc.finish(name)
            })
            .collect();
        environments.sort_by(|a, b| a.environment.cmp(&b.environment));

        struct RevAcc {
            name: String,
            latest: i64,
            approvals: i64,
            rejections: i64,
            times: Vec<i64>,
        }
        let mut per_reviewer: HashMap<String, RevAcc> = HashMap::new();
        for r in reviews {
            let acc = per_reviewer
                .entry(r.reviewer_id.clone())
                .or_insert_with(|| RevAcc {
                    name: r.reviewer_name.clone(),
                    latest: r.reviewed_at,
                    approvals: 0,
                    rejections: 0,
                    times: Vec::new(),
                });
            if r.reviewed_at >= acc.latest {
                acc.latest = r.reviewed_at;
                acc.name = r.reviewer_name.clone();
            }
            if r.verdict == "reject" {
                acc.rejections += 1;
            } else {
                acc.approvals += 1;
            }
            acc.times.push(r.reviewed_at - r.submitted_at);
        }
        let mut reviewers: Vec<pb::ReviewerApprovalMetrics> = per_reviewer
            .into_iter()
            .map(|(id, acc)| pb::ReviewerApprovalMetrics {
                reviewer: id,
                reviewer_display_name: acc.name,
                approvals: acc.approvals,
                rejections: acc.rejections,
                response_time: Some(summary(acc.times)),
            })
            .collect();
        reviewers.sort_by(|a, b| {
            (b.approvals + b.rejections)
                .cmp(&(a.approvals + a.rejections))
                .then_with(|| a.reviewer.cmp(&b.reviewer))
        });
        Ok(pb::GetApprovalMetricsResponse {
            overall: Some(overall.finish(String::new())),
            environments,
            reviewers,
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn nearest_rank() {
            let s: Vec<i64> = (1..=10).collect();
            assert_eq!(rank(&s, 50), 5);
            assert_eq!(rank(&s, 90), 9);
            assert_eq!(rank(&[7], 90), 7);
            let sum = summary(vec![3_000_000, 1_000_000, 2_000_000]);
            assert_eq!(sum.count, 3);
            assert_eq!(sum.median.unwrap().seconds, 2);
            assert_eq!(sum.p90.unwrap().seconds, 3);
            assert!(summary(Vec::new()).median.is_none());
        }
    }
}

#[tonic::async_trait]
impl ApprovalService for ApprovalSvc {
    async fn get_approval_policy(
        &self,
        request: Request<pb::GetApprovalPolicyRequest>,
    ) -> Result<Response<pb::GetApprovalPolicyResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let path = parse_policy_name("name", &req.name)?;
        self.state.authorize(&p, Action::ReadCatalog, Target::Org)?;
        locate(&self.state.directory.snapshot(), &path)?;
        let env = path.environment.to_string();
        let pol = self
            .state
            .db
            .read(move |conn| Ok(store::policy(conn, &env)?))
            .await?;
        Ok(reply(
            pb::GetApprovalPolicyResponse {
                policy: Some(policy_pb(&path, pol.as_ref())),
            },
            &ctx,
            None,
        ))
    }

    async fn update_approval_policy(
        &self,
        request: Request<pb::UpdateApprovalPolicyRequest>,
    ) -> Result<Response<pb::UpdateApprovalPolicyResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        Ok(self.update_policy(ctx, p, req).await?)
    }

    async fn submit_change_request(
        &self,
        request: Request<pb::SubmitChangeRequestRequest>,
    ) -> Result<Response<pb::SubmitChangeRequestResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        Ok(self.submit(ctx, p, req).await?)
    }

    async fn get_change_request(
        &self,
        request: Request<pb::GetChangeRequestRequest>,
    ) -> Result<Response<pb::GetChangeRequestResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let id = parse_request("name", &req.name)?;
        let (row, reviews) = self.visible(&p, id).await?;
        Ok(reply(
            pb::GetChangeRequestResponse {
                change_request: Some(to_pb(&self.state.directory.snapshot(), &row, &reviews)),
            },
            &ctx,
            None,
        ))
    }

    async fn list_change_requests(
        &self,
        request: Request<pb::ListChangeRequestsRequest>,
    ) -> Result<Response<pb::ListChangeRequestsResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        Ok(self.list(ctx, p, req).await?)
    }

    async fn update_change_request(
        &self,
        request: Request<pb::UpdateChangeRequestRequest>,
    ) -> Result<Response<pb::UpdateChangeRequestResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        Ok(self.edit(ctx, p, req).await?)
    }

    async fn cancel_change_request(
        &self,
        request: Request<pb::CancelChangeRequestRequest>,
    ) -> Result<Response<pb::CancelChangeRequestResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        Ok(self.cancel(ctx, p, req).await?)
    }

    async fn approve_change_request(
        &self,
        request: Request<pb::ApproveChangeRequestRequest>,
    ) -> Result<Response<pb::ApproveChangeRequestResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let (cr, rev) = self
            .review(
                &ctx,
                p,
                &req.name,
                req.revision,
                Verdict::Approve,
                &req.comment,
            )
            .await?;
        Ok(reply(
            pb::ApproveChangeRequestResponse {
                change_request: Some(cr),
            },
            &ctx,
            rev,
        ))
    }

    async fn reject_change_request(
        &self,
        request: Request<pb::RejectChangeRequestRequest>,
    ) -> Result<Response<pb::RejectChangeRequestResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let (cr, rev) = self
            .review(
                &ctx,
                p,
                &req.name,
                req.revision,
                Verdict::Reject,
                &req.comment,
            )
            .await?;
        Ok(reply(
            pb::RejectChangeRequestResponse {
                change_request: Some(cr),
            },
            &ctx,
            rev,
        ))
    }

    async fn override_change_request(
        &self,
        request: Request<pb::OverrideChangeRequestRequest>,
    ) -> Result<Response<pb::OverrideChangeRequestResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let (cr, rev) = self
            .review(
                &ctx,
                p,
                &req.name,
                req.revision,
                Verdict::Override,
                &req.reason,
            )
            .await?;
        Ok(reply(
            pb::OverrideChangeRequestResponse {
                change_request: Some(cr),
            },
            &ctx,
            rev,
        ))
    }

    async fn mark_change_request_applied(
        &self,
        request: Request<pb::MarkChangeRequestAppliedRequest>,
    ) -> Result<Response<pb::MarkChangeRequestAppliedResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        Ok(self.apply(ctx, p, req).await?)
    }

    type WatchChangeRequestStream = WatchStream;

    async fn watch_change_request(
        &self,
        request: Request<pb::WatchChangeRequestRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let (ctx, p, req) = authed!(self, request);
        Ok(self.watch(ctx, p, req).await?)
    }

    async fn get_approval_metrics(
        &self,
        request: Request<pb::GetApprovalMetricsRequest>,
    ) -> Result<Response<pb::GetApprovalMetricsResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        Ok(self.metrics(ctx, p, req).await?)
    }
}
