//! ApprovalService: the adapter over [`fluxgate_core::change_requests`] and
//! [`fluxgate_core::approval_metrics`]. Each handler turns its request into a command (the
//! parsing functions below destructure the message, so a new field does not compile until it
//! is handled), runs it, and turns the result into the reply. The watch stream lives here: it is
//! transport (each stream its own watcher on the request's shared feed, [`crate::watch`]).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fluxgate_authz::Snapshot;
use fluxgate_core::approval_metrics;
use fluxgate_core::change_requests::{
    self as uc, Cancel, ChangeRequest, Decide, Edit, ListFilter, ListQuery, MarkApplied, Policy,
    RequestView, Submit, UpdatePolicy,
};
use fluxgate_core::names::{self, EnvPath};
use fluxgate_domain::{
    ApplicationId, ApprovalPolicy, ChangeKind, ChangeRequestId, EnvironmentId, FeatureKey,
    PortfolioId, PrincipalId, RequestState, ValidationError, Verdict, Violations,
};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::approval_service_server::ApprovalService;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use super::reply;
use crate::auth::RequestCtx;
use crate::convert::{
    PageToken, PrincipalRef, UserRef, checked, description, duration, duration_secs, etag, field,
    json_to_struct, mask_paths, micros, page_size, parse_ids, parse_principal, parse_user_name,
    struct_to_json, timestamp, title, user_name, when,
};
use crate::directory::Principal;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Largest payload, as JSON text.
const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// A watcher re-reads its request at least this often, whatever it heard.
const WATCH_RECHECK: Duration = Duration::from_secs(30);

/// What an edit may change; without a mask, the content (the reviewers stay as they are).
const EDITABLE: [&str; 6] = [
    "feature_key",
    "kind",
    "payload",
    "title",
    "description",
    "requested_reviewers",
];
const POLICY_FIELDS: [&str; 5] = [
    "required_approvals",
    "peer_review",
    "admin_override",
    "pending_ttl",
    "require_requested_reviewer",
];

#[derive(Debug, Clone)]
pub struct ApprovalSvc {
    pub state: Arc<AppState>,
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

fn parse_request(field: &str, name: &str) -> ApiResult<ChangeRequestId> {
    Ok(ChangeRequestId(
        parse_ids(field, name, &["changeRequests"])?[0],
    ))
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

fn verdict_to_proto(v: Verdict) -> pb::Verdict {
    match v {
        Verdict::Approve => pb::Verdict::Approve,
        Verdict::Reject => pb::Verdict::Reject,
        Verdict::Override => pb::Verdict::Override,
    }
}

fn review_pb(r: &ChangeRequest, v: &uc::Review) -> pb::Review {
    pb::Review {
        reviewer: v.reviewer.to_string(),
        reviewer_display_name: v.reviewer_name.clone(),
        verdict: verdict_to_proto(v.verdict) as i32,
        comment: v.comment.clone(),
        create_time: Some(timestamp(v.created_at)),
        revision: v.round,
        current: v.round == r.round,
    }
}

/// The request as the API shows it, its approvals counted on `snap`.
fn to_pb(snap: &Snapshot, dir: &crate::directory::Directory, v: &RequestView) -> pb::ChangeRequest {
    let r = &v.request;
    pb::ChangeRequest {
        name: names::change_request(r.id),
        environment: names::environment(r.portfolio, r.application, r.environment),
        application: names::application(r.portfolio, r.application),
        feature_key: r.feature_key.clone(),
        kind: kind_to_proto(r.kind) as i32,
        payload: payload_pb(&r.payload),
        title: r.title.clone(),
        description: r.description.clone(),
        submitter: r.submitter.to_string(),
        submitter_display_name: r.submitter_name.clone(),
        state: state_to_proto(r.state) as i32,
        required_approvals: r.required_approvals as i32,
        approvals: v.approvals(snap) as i32,
        peer_review: r.peer_review,
        admin_override: r.admin_override,
        overridden: r.overridden,
        override_reason: r.override_reason.clone().unwrap_or_default(),
        reviews: v.reviews.iter().map(|x| review_pb(r, x)).collect(),
        revision: r.round,
        create_time: Some(timestamp(r.created_at)),
        update_time: Some(timestamp(r.updated_at)),
        expire_time: Some(timestamp(r.expires_at)),
        decide_time: r.decided_at.map(timestamp),
        apply_time: r.applied_at.map(timestamp),
        applied_by: r.applied_by.map(|a| a.to_string()).unwrap_or_default(),
        etag: etag(r.id, r.version),
        requested_reviewers: r
            .requested_reviewers
            .iter()
            .map(|u| user_name(*u))
            .collect(),
        require_requested_reviewer: r.require_requested_reviewer,
        requested_reviewer_usernames: usernames(dir, &r.requested_reviewers),
    }
}

/// A stored payload (JSON text) as a protobuf `Struct`.
fn payload_pb(text: &str) -> Option<prost_types::Struct> {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .map(|v| json_to_struct(&v))
}

/// The usernames of `users`, as the directory knows them now.
fn usernames(dir: &crate::directory::Directory, users: &[fluxgate_domain::UserId]) -> Vec<String> {
    users
        .iter()
        .map(|u| {
            dir.principal(PrincipalId::User(*u))
                .map(|p| p.name)
                .unwrap_or_default()
        })
        .collect()
}

fn policy_pb(path: &EnvPath, p: Option<&Policy>) -> pb::ApprovalPolicy {
    let v = p.map_or_else(ApprovalPolicy::default, |p| p.policy);
    pb::ApprovalPolicy {
        name: path.policy_name(),
        required_approvals: v.required_approvals as i32,
        peer_review: v.peer_review,
        admin_override: v.admin_override,
        pending_ttl: Some(duration(v.ttl_secs)),
        update_time: p.map(|p| timestamp(p.updated_at)),
        etag: etag(path.environment, p.map_or(0, |p| p.version)),
        require_requested_reviewer: v.require_requested_reviewer,
    }
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

/// The paths of an update mask; an absent or empty mask means every allowed path.
fn mask_or_all(mask: Option<&prost_types::FieldMask>, allowed: &[&str]) -> ApiResult<Vec<String>> {
    match mask {
        Some(m) if !m.paths.is_empty() => mask_paths(Some(m), allowed),
        _ => Ok(allowed.iter().map(|s| s.to_string()).collect()),
    }
}

/// The numbers a policy update names, checked (the rest at their defaults).
fn given_policy(
    v: &mut Violations,
    x: &pb::ApprovalPolicy,
    has: impl Fn(&str) -> bool,
) -> ApprovalPolicy {
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
                given.ttl_secs = v
                    .check("policy.pending_ttl", duration_secs(d))
                    .unwrap_or(given.ttl_secs)
            }
        }
    }
    v.check("policy", given.validate());
    given
}

fn update_policy_cmd(req: pb::UpdateApprovalPolicyRequest) -> ApiResult<UpdatePolicy> {
    let pb::UpdateApprovalPolicyRequest {
        policy,
        update_mask,
    } = req;
    let x = policy.ok_or_else(|| ApiError::invalid("policy", "is required"))?;
    let paths = mask_or_all(update_mask.as_ref(), &POLICY_FIELDS)?;
    let has = |f: &str| paths.iter().any(|p| p == f);
    let mut v = Violations::new();
    let path = field(&mut v, parse_policy_name("policy.name", &x.name));
    let given = given_policy(&mut v, &x, has);
    v.finish()?;
    Ok(UpdatePolicy {
        path: checked(path)?,
        etag: x.etag,
        required_approvals: has("required_approvals").then_some(given.required_approvals),
        peer_review: has("peer_review").then_some(x.peer_review),
        admin_override: has("admin_override").then_some(x.admin_override),
        ttl_secs: has("pending_ttl").then_some(given.ttl_secs),
        require_requested_reviewer: has("require_requested_reviewer")
            .then_some(x.require_requested_reviewer),
    })
}

/// Checks a client's own key for a submission.
fn client_id(v: &mut Violations, request_id: String) -> Option<String> {
    let ok = |k: &str| {
        k.len() <= 64
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !request_id.is_empty() && !ok(&request_id) {
        v.add("request_id", "must be 1 to 64 letters, digits, '-' or '_'");
    }
    (!request_id.is_empty()).then_some(request_id)
}

fn submit_cmd(req: pb::SubmitChangeRequestRequest) -> ApiResult<Submit> {
    let pb::SubmitChangeRequestRequest {
        change_request,
        request_id,
    } = req;
    let x = change_request.ok_or_else(|| ApiError::invalid("change_request", "is required"))?;
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
    if kind.is_some_and(ChangeKind::needs_payload) && uc::is_empty_payload(&payload) {
        v.add("change_request.payload", "is required for a value change");
    }
    let t = v.check("", title("change_request.title", &x.title));
    let d = v.check(
        "",
        description("change_request.description", &x.description),
    );
    let client_id = client_id(&mut v, request_id);
    let reviewers = reviewer_refs(&mut v, &x.requested_reviewers);
    v.finish()?;
    Ok(Submit {
        path: checked(path)?,
        feature_key: checked(key)?,
        kind: checked(kind)?,
        payload,
        title: checked(t)?,
        description: checked(d)?,
        client_id,
        requested_reviewers: reviewers,
    })
}

/// The reviewers a request names, parsed (whether each may review is the use case's question).
fn reviewer_refs(v: &mut Violations, names: &[String]) -> Vec<UserRef> {
    names
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            field(
                v,
                parse_user_name(&format!("change_request.requested_reviewers[{i}]"), n),
            )
        })
        .collect()
}

/// The new values an edit's mask names, checked.
type Edited = (
    Option<FeatureKey>,
    Option<ChangeKind>,
    Option<String>,
    Option<fluxgate_domain::Title>,
    Option<fluxgate_domain::Description>,
);

fn edited(v: &mut Violations, x: &pb::ChangeRequest, has: impl Fn(&str) -> bool) -> Edited {
    let key = when(has("feature_key"), || {
        v.check(
            "change_request.feature_key",
            FeatureKey::parse(&x.feature_key),
        )
    });
    let kind = when(has("kind"), || {
        v.check("change_request.kind", kind_from_proto(x.kind))
    });
    let payload =
        has("payload").then(|| payload_text(v, "change_request.payload", x.payload.as_ref()));
    let t = when(has("title"), || {
        v.check("", title("change_request.title", &x.title))
    });
    let d = when(has("description"), || {
        v.check(
            "",
            description("change_request.description", &x.description),
        )
    });
    (key, kind, payload, t, d)
}

fn edit_cmd(req: pb::UpdateChangeRequestRequest) -> ApiResult<Edit> {
    let pb::UpdateChangeRequestRequest {
        change_request,
        update_mask,
    } = req;
    let x = change_request.ok_or_else(|| ApiError::invalid("change_request", "is required"))?;
    let paths = match update_mask.as_ref() {
        Some(m) if !m.paths.is_empty() => mask_paths(Some(m), &EDITABLE)?,
        _ => EDITABLE[..5].iter().map(|s| s.to_string()).collect(),
    };
    let mut v = Violations::new();
    let id = field(&mut v, parse_request("change_request.name", &x.name));
    let (feature_key, kind, payload, title, description) =
        edited(&mut v, &x, |f| paths.iter().any(|p| p == f));
    let requested_reviewers = paths
        .iter()
        .any(|p| p == "requested_reviewers")
        .then(|| reviewer_refs(&mut v, &x.requested_reviewers));
    v.finish()?;
    Ok(Edit {
        id: checked(id)?,
        etag: x.etag,
        feature_key,
        kind,
        payload,
        title,
        description,
        requested_reviewers,
    })
}

fn cancel_cmd(req: pb::CancelChangeRequestRequest) -> ApiResult<Cancel> {
    let pb::CancelChangeRequestRequest { name, etag, reason } = req;
    let mut v = Violations::new();
    let id = field(&mut v, parse_request("name", &name));
    let reason = v.check("", description("reason", &reason));
    v.finish()?;
    Ok(Cancel {
        id: checked(id)?,
        etag,
        reason: checked(reason)?,
    })
}

/// A verdict's command: `comment` is named `reason` for an override.
fn decide_cmd(name: &str, revision: i64, verdict: Verdict, comment: &str) -> ApiResult<Decide> {
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
    Ok(Decide {
        id: checked(id)?,
        revision,
        verdict,
        comment: checked(comment)?,
    })
}

/// Filters of a listing, bound into its page tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ListTokenFilter {
    states: Vec<i32>,
    environment: String,
    submitter: String,
    awaiting: bool,
}

/// The submitter filter as a resource name (an unknown username matches nobody).
fn submitter_filter(state: &AppState, r: PrincipalRef) -> String {
    match r {
        PrincipalRef::ServiceAccount(id) => PrincipalId::ServiceAccount(id).to_string(),
        PrincipalRef::User(UserRef::Id(id)) => PrincipalId::User(id).to_string(),
        PrincipalRef::User(UserRef::Username(u)) => state.directory.user_by_name(&u).map_or_else(
            || format!("users/{u}"),
            |id| PrincipalId::User(id).to_string(),
        ),
    }
}

/// The states a listing asks for.
fn states_filter(v: &mut Violations, states: &[i32]) -> Vec<RequestState> {
    states
        .iter()
        .enumerate()
        .filter_map(|(i, s)| v.check(&format!("states[{i}]"), state_from_proto(*s)))
        .collect()
}

/// Where the previous page ended, from a token issued for `filter`.
fn after(token: &str, filter: &ListTokenFilter) -> ApiResult<Option<ChangeRequestId>> {
    PageToken::decode(token, filter)?
        .map(|a| a.parse::<ChangeRequestId>())
        .transpose()
        .map_err(|_| ApiError::invalid("page_token", "is not a page token issued by this service"))
}

/// The store's filter for a listing's filters (violations go to `v`).
fn list_filter(v: &mut Violations, state: &AppState, token: &ListTokenFilter) -> ListFilter {
    let states = states_filter(v, &token.states);
    let env = when(!token.environment.is_empty(), || {
        field(v, parse_env("environment", &token.environment))
    });
    let who = when(!token.submitter.is_empty(), || {
        field(v, parse_principal("submitter", &token.submitter))
    });
    ListFilter {
        states,
        environment: env.map(|e| e.environment),
        submitter: who.map(|w| submitter_filter(state, w)),
        awaiting: None,
        now: fluxgate_core::time::now_micros(),
    }
}

fn list_query(
    state: &AppState,
    req: pb::ListChangeRequestsRequest,
) -> ApiResult<(ListQuery, ListTokenFilter)> {
    let pb::ListChangeRequestsRequest {
        states,
        environment,
        submitter,
        awaiting_my_review,
        page_size: size,
        page_token,
    } = req;
    let token = ListTokenFilter {
        states,
        environment,
        submitter,
        awaiting: awaiting_my_review,
    };
    let mut v = Violations::new();
    let filter = list_filter(&mut v, state, &token);
    let limit = field(&mut v, page_size(size));
    v.finish()?;
    let after = after(&page_token, &token)?;
    let limit = limit.unwrap_or(50) as usize;
    let q = ListQuery {
        filter,
        after,
        limit,
        awaiting_my_review,
    };
    Ok((q, token))
}

fn metrics_window(req: pb::GetApprovalMetricsRequest) -> ApiResult<(Option<EnvPath>, i64, i64)> {
    let pb::GetApprovalMetricsRequest {
        environment,
        start_time,
        end_time,
    } = req;
    let mut v = Violations::new();
    let env = when(!environment.is_empty(), || {
        field(&mut v, parse_env("environment", &environment))
    });
    let to = match &end_time {
        Some(_) => micros(&mut v, "end_time", &end_time),
        None => Some(fluxgate_core::time::now_micros()),
    };
    let from = match &start_time {
        Some(_) => micros(&mut v, "start_time", &start_time),
        None => to.map(|t| t - 30 * 86_400 * 1_000_000),
    };
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        v.add("end_time", "must be after start_time");
    }
    v.finish()?;
    Ok((env, checked(from)?, checked(to)?))
}

type WatchStream = Pin<
    Box<dyn tokio_stream::Stream<Item = Result<pb::WatchChangeRequestResponse, Status>> + Send>,
>;

impl ApprovalSvc {
    /// The request as the API shows it, counted on the snapshot in force now.
    fn shown(&self, v: &RequestView) -> Option<pb::ChangeRequest> {
        Some(to_pb(
            &self.state.directory.snapshot(),
            &self.state.directory,
            v,
        ))
    }

    /// A verdict, run.
    async fn decide(
        &self,
        ctx: &RequestCtx,
        p: &Principal,
        cmd: Decide,
    ) -> ApiResult<crate::runner::Done<Option<pb::ChangeRequest>>> {
        let done = self.state.execute(ctx, Some(p), cmd).await?;
        Ok(crate::runner::Done {
            value: self.shown(&done.value),
            revision: done.revision,
        })
    }

    async fn visible(
        &self,
        ctx: &RequestCtx,
        p: &Principal,
        id: ChangeRequestId,
    ) -> ApiResult<RequestView> {
        self.state
            .query(ctx, p, move |cx, conn| uc::visible(cx, conn, id))
            .await
    }
}

/// A watch stream's state between two messages. The stream is the watcher: polled by the
/// transport when the client is ready for a message, it waits for its feed
/// ([`crate::watch`]), which reads once per change for all the request's watchers, and holds
/// each watcher to its own rights here, in memory. No task or channel of its own: a client
/// that reads slowly is sent the newest version when it is ready, and one that leaves drops it.
struct Watching {
    svc: ApprovalSvc,
    p: Principal,
    watcher: crate::watch::Watcher,
    stopping: tokio::sync::watch::Receiver<bool>,
    /// The request as first read, until it is sent.
    first: Option<RequestView>,
    /// The version last sent.
    sent: i64,
    /// The last message has been sent (the request is final, or the stream ends on a status).
    ended: bool,
}

impl Watching {
    /// The stream's next message: the request when it changes, until it is final, the watcher
    /// loses its rights or the server stops.
    async fn next(&mut self) -> Option<Result<pb::WatchChangeRequestResponse, Status>> {
        if self.ended {
            return None;
        }
        if let Some(first) = self.first.take() {
            self.sent = first.request.version;
            self.ended = first.request.state.is_final();
            return Some(Ok(pb::WatchChangeRequestResponse {
                change_request: self.svc.shown(&first),
            }));
        }
        let unavailable = || Status::unavailable("the server is shutting down");
        loop {
            let (latest, running) = tokio::select! {
                _ = self.stopping.wait_for(|stop| *stop) => {
                    self.ended = true;
                    return Some(Err(unavailable()));
                }
                next = self.watcher.next() => next,
            };
            let (item, last) = match turn(&self.svc, &self.p, latest, &mut self.sent) {
                Ok(Some((msg, last))) => (Ok(msg), last),
                Ok(None) if running => continue,
                // The feed stops short of a final state only when the server stops.
                Ok(None) => (Err(unavailable()), true),
                Err(status) => (Err(status), true),
            };
            self.ended = last;
            return Some(item);
        }
    }
}

/// What a watcher sends for what its feed holds: a new version it may see (and whether it is
/// final), nothing (no new version), or the status that ends its stream (it is no longer
/// active, or may no longer see the request).
fn turn(
    svc: &ApprovalSvc,
    p: &Principal,
    latest: crate::watch::Latest,
    sent: &mut i64,
) -> Result<Option<(pb::WatchChangeRequestResponse, bool)>, Status> {
    let Some(me) = svc.state.directory.principal(p.id).filter(|m| m.active) else {
        return Err(Status::unauthenticated("the caller is no longer active"));
    };
    let v = match latest {
        crate::watch::Latest::View(v) => v,
        crate::watch::Latest::Gone(status) => return Err(status),
        crate::watch::Latest::Pending => return Ok(None),
    };
    let snap = svc.state.directory.snapshot();
    uc::may_view(&snap, &me.id, &v.view).map_err(|e| Status::from(ApiError::from(e)))?;
    if v.view.request.version <= *sent {
        return Ok(None);
    }
    *sent = v.view.request.version;
    let msg = v.message.get_or_init(|| pb::WatchChangeRequestResponse {
        change_request: svc.shown(&v.view),
    });
    Ok(Some((msg.clone(), v.view.request.state.is_final())))
}

#[tonic::async_trait]
impl ApprovalService for ApprovalSvc {
    async fn get_approval_policy(
        &self,
        request: Request<pb::GetApprovalPolicyRequest>,
    ) -> Result<Response<pb::GetApprovalPolicyResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::GetApprovalPolicyRequest { name } = req;
        let path = parse_policy_name("name", &name)?;
        let pol = self
            .state
            .query(&ctx, &p, move |cx, conn| uc::policy(cx, conn, &path))
            .await?;
        let policy = Some(policy_pb(&path, pol.as_ref()));
        Ok(reply(pb::GetApprovalPolicyResponse { policy }, &ctx, None))
    }

    async fn update_approval_policy(
        &self,
        request: Request<pb::UpdateApprovalPolicyRequest>,
    ) -> Result<Response<pb::UpdateApprovalPolicyResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let cmd = update_policy_cmd(req)?;
        let path = cmd.path;
        let done = self.state.execute(&ctx, Some(&p), cmd).await?;
        Ok(done.reply(&ctx, |pol| pb::UpdateApprovalPolicyResponse {
            policy: Some(policy_pb(&path, Some(&pol))),
        }))
    }

    async fn submit_change_request(
        &self,
        request: Request<pb::SubmitChangeRequestRequest>,
    ) -> Result<Response<pb::SubmitChangeRequestResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let done = self.state.execute(&ctx, Some(&p), submit_cmd(req)?).await?;
        Ok(done.reply(&ctx, |v| pb::SubmitChangeRequestResponse {
            change_request: self.shown(&v),
        }))
    }

    async fn get_change_request(
        &self,
        request: Request<pb::GetChangeRequestRequest>,
    ) -> Result<Response<pb::GetChangeRequestResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::GetChangeRequestRequest { name } = req;
        let v = self
            .visible(&ctx, &p, parse_request("name", &name)?)
            .await?;
        Ok(reply(
            pb::GetChangeRequestResponse {
                change_request: self.shown(&v),
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
        let (q, filter) = list_query(&self.state, req)?;
        let page = self
            .state
            .query(&ctx, &p, move |cx, conn| uc::list(cx, conn, q))
            .await?;
        let snap = self.state.directory.snapshot();
        let next_page_token = page
            .next
            .map(|after| {
                PageToken {
                    after: after.to_string(),
                    filter,
                }
                .encode()
            })
            .unwrap_or_default();
        let dir = &self.state.directory;
        let change_requests = page.requests.iter().map(|v| to_pb(&snap, dir, v)).collect();
        let msg = pb::ListChangeRequestsResponse {
            change_requests,
            next_page_token,
        };
        Ok(reply(msg, &ctx, None))
    }

    async fn update_change_request(
        &self,
        request: Request<pb::UpdateChangeRequestRequest>,
    ) -> Result<Response<pb::UpdateChangeRequestResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let done = self.state.execute(&ctx, Some(&p), edit_cmd(req)?).await?;
        Ok(done.reply(&ctx, |v| pb::UpdateChangeRequestResponse {
            change_request: self.shown(&v),
        }))
    }

    async fn cancel_change_request(
        &self,
        request: Request<pb::CancelChangeRequestRequest>,
    ) -> Result<Response<pb::CancelChangeRequestResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let done = self.state.execute(&ctx, Some(&p), cancel_cmd(req)?).await?;
        Ok(done.reply(&ctx, |v| pb::CancelChangeRequestResponse {
            change_request: self.shown(&v),
        }))
    }

    async fn approve_change_request(
        &self,
        request: Request<pb::ApproveChangeRequestRequest>,
    ) -> Result<Response<pb::ApproveChangeRequestResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::ApproveChangeRequestRequest {
            name,
            revision,
            comment,
        } = req;
        let cmd = decide_cmd(&name, revision, Verdict::Approve, &comment)?;
        let done = self.decide(&ctx, &p, cmd).await?;
        Ok(
            done.reply(&ctx, |change_request| pb::ApproveChangeRequestResponse {
                change_request,
            }),
        )
    }

    async fn reject_change_request(
        &self,
        request: Request<pb::RejectChangeRequestRequest>,
    ) -> Result<Response<pb::RejectChangeRequestResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::RejectChangeRequestRequest {
            name,
            revision,
            comment,
        } = req;
        let cmd = decide_cmd(&name, revision, Verdict::Reject, &comment)?;
        let done = self.decide(&ctx, &p, cmd).await?;
        Ok(
            done.reply(&ctx, |change_request| pb::RejectChangeRequestResponse {
                change_request,
            }),
        )
    }

    async fn override_change_request(
        &self,
        request: Request<pb::OverrideChangeRequestRequest>,
    ) -> Result<Response<pb::OverrideChangeRequestResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::OverrideChangeRequestRequest {
            name,
            revision,
            reason,
        } = req;
        let cmd = decide_cmd(&name, revision, Verdict::Override, &reason)?;
        let done = self.decide(&ctx, &p, cmd).await?;
        Ok(
            done.reply(&ctx, |change_request| pb::OverrideChangeRequestResponse {
                change_request,
            }),
        )
    }

    async fn mark_change_request_applied(
        &self,
        request: Request<pb::MarkChangeRequestAppliedRequest>,
    ) -> Result<Response<pb::MarkChangeRequestAppliedResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::MarkChangeRequestAppliedRequest { name } = req;
        let cmd = MarkApplied {
            id: parse_request("name", &name)?,
        };
        let done = self.state.execute(&ctx, Some(&p), cmd).await?;
        Ok(done.reply(&ctx, |v| pb::MarkChangeRequestAppliedResponse {
            change_request: self.shown(&v),
        }))
    }

    type WatchChangeRequestStream = WatchStream;

    async fn watch_change_request(
        &self,
        request: Request<pb::WatchChangeRequestRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::WatchChangeRequestRequest { name } = req;
        let id = parse_request("name", &name)?;
        // Join the request's feed before the first read, so that no change slips between the
        // two.
        let watcher = self.state.watch_feeds.watch(id, WATCH_RECHECK);
        let first = self.visible(&ctx, &p, id).await?;
        let watching = Watching {
            svc: self.clone(),
            p,
            watcher,
            stopping: self.state.stopping.subscribe(),
            first: Some(first),
            sent: 0,
            ended: false,
        };
        let open = self.state.metrics.watch_stream();
        let stream = futures_util::stream::unfold((watching, open), |(mut w, open)| async move {
            Some((w.next().await?, (w, open)))
        });
        Ok(reply(Box::pin(stream) as WatchStream, &ctx, None))
    }

    async fn get_approval_metrics(
        &self,
        request: Request<pb::GetApprovalMetricsRequest>,
    ) -> Result<Response<pb::GetApprovalMetricsResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let (env, from, to) = metrics_window(req)?;
        let report = self
            .state
            .query(&ctx, &p, move |cx, conn| {
                approval_metrics::report(cx, conn, env, from, to)
            })
            .await?;
        Ok(reply(crate::convert::approval_metrics(report), &ctx, None))
    }
}
