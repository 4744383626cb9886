//! Approval policies and the change-request life cycle: submit, edit, review (approve, reject,
//! override), cancel, apply, expire.
//!
//! Who may do what to a request is the engine's question ([`Snapshot::change_request`]); where
//! a request may go from where it is, the domain's ([`Life::step`]). Both are asked inside the
//! write transaction, against the row as it is once the store-wide write lock is held, so two
//! reviewers acting at once, or a review racing an edit, are serialised and the second sees the
//! first.

use fluxgate_authz::{
    Action, Decision, RequestAction, RequestFacts, ResourceRef, Snapshot, Target,
};
use fluxgate_domain::{
    ApprovalPolicy, ChangeKind, ChangeRequestId, Description, FeatureKey, Life, PrincipalId,
    Refusal, RequestState, Step, Title, UserId, Verdict, opening_state,
};
use fluxgate_store::approvals as store;
pub use fluxgate_store::approvals::{ChangeRequest, ListFilter, Policy, Review};
use fluxgate_store::catalog::{self, Kind};
use fluxgate_store::changes::EntityKind;
use fluxgate_store::{DbConnection, Tx, audit};

use crate::audit::AuditAction;
use crate::context::{Command, Ctx};
use crate::error::{Error, Result};
use crate::etag;
use crate::mail::Template;
use crate::names::{self, EnvPath, UserRef};

/// Rows a listing reads per query while it filters by what the caller may see.
const SCAN_BATCH: i64 = 200;
/// Rows one listing call reads at most; it then returns what it found with a cursor.
const SCAN_LIMIT: usize = 5_000;
/// Expired requests closed per sweep.
pub const EXPIRE_BATCH: i64 = 100;

/// The audit trail's target type for requests.
const TARGET: &str = "change_request";

/// A request with its reviews, as a caller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestView {
    pub request: ChangeRequest,
    pub reviews: Vec<Review>,
}

impl RequestView {
    /// The approvals that count now (see [`counted_approvals`]).
    pub fn approvals(&self, snap: &Snapshot) -> usize {
        counted_approvals(snap, &self.request, &self.reviews)
    }
}

/// Checks that the environment exists (in the snapshot, which is current after the caller's
/// authentication) under the named portfolio and application.
pub(crate) fn locate_in(snap: &Snapshot, path: &EnvPath) -> Result<()> {
    match snap.parents(ResourceRef::Environment(path.environment)) {
        Some((p, a)) if p == path.portfolio && a == path.application => Ok(()),
        _ => Err(Error::not_found("environment")),
    }
}

fn facts<'a>(r: &'a ChangeRequest, approvers: &'a [PrincipalId]) -> RequestFacts<'a> {
    RequestFacts {
        submitter: &r.submitter,
        kind: r.kind,
        environment: r.environment,
        peer_review: r.peer_review,
        admin_override: r.admin_override,
        approvers,
    }
}

/// Emails everyone who may review `r` now (the engine decides who), in the caller's
/// transaction. Answers how many were told.
fn notify_reviewers(cx: &Ctx<'_>, tx: &mut Tx<'_>, r: &ChangeRequest) -> Result<usize> {
    let Some(outbox) = cx.outbox else {
        return Ok(0);
    };
    let env = catalog::find(tx.conn, Kind::Environment, &r.environment.to_string())?
        .map(|e| e.display_name)
        .unwrap_or_default();
    let link = outbox.page(&names::change_request(r.id));
    let revision = r.round.to_string();
    let vars = [
        ("submitter", r.submitter_name.as_str()),
        ("title", r.title.as_str()),
        ("feature", r.feature_key.as_str()),
        ("environment", env.as_str()),
        ("revision", revision.as_str()),
        ("link", link.as_str()),
    ];
    let mut told = 0;
    let eligible = cx.snap.reviewers(&facts(r, &[]));
    // Named reviewers are the ones asked; without names, everyone who may review.
    let asked: Vec<PrincipalId> = if r.requested_reviewers.is_empty() {
        eligible
    } else {
        eligible
            .into_iter()
            .filter(|p| matches!(p, PrincipalId::User(u) if r.requested_reviewers.contains(u)))
            .collect()
    };
    for p in asked {
        let PrincipalId::User(uid) = p else {
            continue;
        };
        let Some(u) = fluxgate_store::users::find(tx.conn, uid)? else {
            continue;
        };
        if u.email.ends_with("@scim.invalid")
            || !crate::preferences::wants_each_review(tx.conn, uid)?
        {
            continue;
        }
        outbox.queue(tx.conn, Template::ReviewRequested, &u, &vars, tx.now)?;
        told += 1;
    }
    Ok(told)
}

/// Emails the submitter (a user) that their request was decided.
fn notify_submitter(cx: &Ctx<'_>, tx: &mut Tx<'_>, r: &ChangeRequest, comment: &str) -> Result<()> {
    let (Some(outbox), PrincipalId::User(uid)) = (cx.outbox, r.submitter) else {
        return Ok(());
    };
    let verdict = match r.state {
        RequestState::Approved => "approved",
        RequestState::Rejected => "rejected",
        _ => return Ok(()),
    };
    let Some(u) = fluxgate_store::users::find(tx.conn, uid)? else {
        return Ok(());
    };
    if !crate::preferences::wants_decisions(tx.conn, uid)? {
        return Ok(());
    }
    let reviewer = cx.actor()?.name.clone();
    let link = outbox.page(&names::change_request(r.id));
    let vars = [
        ("verdict", verdict),
        ("reviewer", reviewer.as_str()),
        ("title", r.title.as_str()),
        ("feature", r.feature_key.as_str()),
        ("comment", comment),
        ("link", link.as_str()),
    ];
    outbox.queue(tx.conn, Template::RequestDecided, &u, &vars, tx.now)?;
    Ok(())
}

fn denied(action: RequestAction, d: Decision) -> Error {
    Error::denied(&format!("{} change request", action.as_str()), d.reason)
}

/// Asks the engine whether `p` may do `action` to the stored request.
fn allowed(
    snap: &Snapshot,
    p: &PrincipalId,
    action: RequestAction,
    r: &ChangeRequest,
) -> Result<()> {
    let d = snap.change_request(p, action, &facts(r, &[]));
    if d.allowed {
        Ok(())
    } else {
        Err(denied(action, d))
    }
}

fn life(r: &ChangeRequest) -> Life<'_> {
    Life {
        state: r.state,
        expires_at: r.expires_at,
        applied_by: None,
    }
}

/// Who approved (or overrode) the request's current revision.
pub fn approvers(r: &ChangeRequest, reviews: &[Review]) -> Vec<PrincipalId> {
    reviews
        .iter()
        .filter(|v| v.round == r.round && v.verdict != Verdict::Reject)
        .map(|v| v.reviewer)
        .collect()
}

/// The approvals of the current revision that count: from principals still active, and never
/// from the submitter's party (a key rotated since can make it so). A deactivated or deleted
/// approver's approval stops counting for requests still pending.
pub fn counted_approvals(snap: &Snapshot, r: &ChangeRequest, reviews: &[Review]) -> usize {
    counted(snap, r, reviews).count()
}

/// The reviews [`counted_approvals`] counts.
fn counted<'a>(
    snap: &'a Snapshot,
    r: &'a ChangeRequest,
    reviews: &'a [Review],
) -> impl Iterator<Item = &'a Review> {
    reviews
        .iter()
        .filter(move |v| v.round == r.round && v.verdict == Verdict::Approve)
        .filter(move |v| {
            snap.is_active(&v.reviewer) && snap.shared_party(&v.reviewer, &r.submitter).is_none()
        })
}

/// The approvals that move the request towards approval: [`counted_approvals`], except that
/// when its policy requires a requested reviewer and none of the counted approvals is one of
/// theirs, the count stops one short of what is required.
pub fn approvals_toward(snap: &Snapshot, r: &ChangeRequest, reviews: &[Review]) -> usize {
    let n = counted_approvals(snap, r, reviews);
    let named = counted(snap, r, reviews)
        .any(|v| matches!(v.reviewer, PrincipalId::User(u) if r.requested_reviewers.contains(&u)));
    if !r.require_requested_reviewer || named {
        n
    } else {
        n.min((r.required_approvals as usize).saturating_sub(1))
    }
}

/// Most reviewers one request may name.
pub const MAX_REQUESTED_REVIEWERS: usize = 10;

/// Resolves and checks the reviewers a submitter names: users, each one who may review `r`
/// under its policy (the engine's word), at most [`MAX_REQUESTED_REVIEWERS`]; and at least one
/// when the policy requires it.
fn requested_reviewers(
    cx: &Ctx<'_>,
    conn: &mut DbConnection,
    r: &ChangeRequest,
    refs: &[UserRef],
) -> Result<Vec<UserId>> {
    const FIELD: &str = "change_request.requested_reviewers";
    let mut v = fluxgate_domain::Violations::new();
    if refs.len() > MAX_REQUESTED_REVIEWERS {
        v.add(
            FIELD,
            format!("at most {MAX_REQUESTED_REVIEWERS} reviewers"),
        );
    }
    if refs.is_empty() && r.require_requested_reviewer {
        v.add(
            FIELD,
            "this environment's policy requires naming at least one reviewer",
        );
    }
    let mut out: Vec<UserId> = Vec::new();
    for (i, rf) in refs.iter().enumerate() {
        let found = match rf {
            UserRef::Id(id) => fluxgate_store::users::find(conn, *id)?,
            UserRef::Username(n) => fluxgate_store::users::find_by_username(conn, n)?,
        };
        let Some(u) = found else {
            v.add(format!("{FIELD}[{i}]"), "no such user");
            continue;
        };
        let d = cx.snap.change_request(
            &PrincipalId::User(u.id),
            RequestAction::Review,
            &facts(r, &[]),
        );
        if !d.allowed {
            v.add(
                format!("{FIELD}[{i}]"),
                format!("{} cannot review this request: {}", u.username, d.reason),
            );
        } else if !out.contains(&u.id) {
            out.push(u.id);
        }
    }
    v.finish()?;
    Ok(out)
}

/// What the audit trail keeps of a request.
fn audit_json(r: &ChangeRequest, approvals: Option<usize>) -> Option<String> {
    let payload: serde_json::Value = serde_json::from_str(&r.payload).unwrap_or_default();
    serde_json::to_string(&serde_json::json!({
        "state": r.state.as_str(),
        "revision": r.round,
        "environment_id": r.environment.to_string(),
        "feature_key": r.feature_key,
        "kind": r.kind.as_str(),
        "payload": payload,
        "title": r.title,
        "required_approvals": r.required_approvals,
        "approvals": approvals,
        "overridden": r.overridden,
    }))
    .ok()
}

fn policy_json(p: &ApprovalPolicy) -> Option<String> {
    serde_json::to_string(&serde_json::json!({
        "required_approvals": p.required_approvals,
        "peer_review": p.peer_review,
        "admin_override": p.admin_override,
        "pending_ttl_secs": p.ttl_secs,
        "require_requested_reviewer": p.require_requested_reviewer,
    }))
    .ok()
}

fn policy_of(p: Option<&Policy>) -> ApprovalPolicy {
    p.map_or_else(ApprovalPolicy::default, |p| p.policy)
}

/// An empty payload: none, or `{}`.
pub fn is_empty_payload(text: &str) -> bool {
    text.is_empty() || text == "{}"
}

/// The policy a new or edited request is held to: its environment's for a value change; for a
/// feature change, which reaches every environment of the application, the strictest of theirs.
fn policy_for(conn: &mut DbConnection, r: &ChangeRequest) -> Result<ApprovalPolicy> {
    if r.kind.permission().value().is_some() {
        return Ok(policy_of(store::policy(conn, r.environment)?.as_ref()));
    }
    let envs = catalog::environment_parents(conn, Some(&r.application.to_string()))?
        .into_iter()
        .map(|(e, _)| {
            e.parse()
                .map_err(|_| Error::Broken(format!("environment id {e:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut all: Vec<ApprovalPolicy> = store::policies(conn, &envs)?
        .iter()
        .map(|p| p.policy)
        .collect();
    all.resize(envs.len().max(1), ApprovalPolicy::default());
    Ok(ApprovalPolicy::strictest(&all))
}

/// Holds `r` to its current policy and (re)opens it: pending, or approved at once when the
/// policy needs no approval.
fn open(conn: &mut DbConnection, r: &mut ChangeRequest, now: i64) -> Result<()> {
    let p = policy_for(conn, r)?;
    r.required_approvals = p.required_approvals;
    r.peer_review = p.peer_review;
    r.admin_override = p.admin_override;
    r.require_requested_reviewer = p.require_requested_reviewer;
    r.state = opening_state(p.required_approvals);
    r.decided_at = (r.state == RequestState::Approved).then_some(now);
    Ok(())
}

/// Writes `r` as the next version of `before`, with its change-log entry and its audit event,
/// in the caller's transaction.
fn record(
    tx: &mut Tx<'_>,
    before: &ChangeRequest,
    mut r: ChangeRequest,
    mut event: audit::NewEvent,
    approvals: Option<usize>,
    detail: Option<String>,
) -> Result<ChangeRequest> {
    r.version = before.version + 1;
    r.updated_at = tx.now;
    store::save(tx.conn, &r)?;
    tx.changed(EntityKind::ChangeRequest, r.id.to_string());
    event.before_json = audit_json(before, None);
    event.after_json = audit_json(&r, approvals);
    event.detail = detail.filter(|d| !d.is_empty());
    audit::append(tx.conn, event, tx.now)?;
    Ok(r)
}

fn load(conn: &mut DbConnection, id: ChangeRequestId) -> Result<ChangeRequest> {
    store::find(conn, id)?.ok_or_else(|| Error::not_found("change request"))
}

fn view(conn: &mut DbConnection, request: ChangeRequest) -> Result<RequestView> {
    let reviews = store::reviews(conn, request.id)?;
    Ok(RequestView { request, reviews })
}

/// Sets an environment's approval policy; `None` fields keep their current value.
#[derive(Debug, Clone)]
pub struct UpdatePolicy {
    pub path: EnvPath,
    pub etag: String,
    pub required_approvals: Option<u32>,
    pub peer_review: Option<bool>,
    pub admin_override: Option<bool>,
    pub ttl_secs: Option<u64>,
    pub require_requested_reviewer: Option<bool>,
}

impl Command for UpdatePolicy {
    type Output = Policy;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        cx.authorize(Action::ManageApprovalPolicies, Target::Org)?;
        locate_in(cx.snap, &self.path)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<Policy> {
        let env = self.path.environment;
        catalog::find(tx.conn, Kind::Environment, &env.to_string())?
            .ok_or_else(|| Error::not_found("environment"))?;
        let before = store::policy(tx.conn, env)?;
        let version = before.as_ref().map_or(0, |b| b.version);
        etag::check(&self.etag, env, version)?;
        let old = policy_of(before.as_ref());
        let new = ApprovalPolicy {
            required_approvals: self.required_approvals.unwrap_or(old.required_approvals),
            peer_review: self.peer_review.unwrap_or(old.peer_review),
            admin_override: self.admin_override.unwrap_or(old.admin_override),
            ttl_secs: self.ttl_secs.unwrap_or(old.ttl_secs),
            require_requested_reviewer: self
                .require_requested_reviewer
                .unwrap_or(old.require_requested_reviewer),
        };
        new.validate().map_err(|mut e| {
            for f in &mut e.violations {
                f.field = format!("policy.{}", f.field);
            }
            Error::Invalid(e)
        })?;
        let row = Policy {
            environment: env,
            policy: new,
            updated_at: tx.now,
            version: version + 1,
        };
        store::save_policy(tx.conn, &row)?;
        let mut e = cx.event(
            AuditAction::ApprovalPolicyUpdated,
            "approval_policy",
            Some(self.path.policy_name()),
        );
        e.before_json = policy_json(&old);
        e.after_json = policy_json(&new);
        audit::append(tx.conn, e, tx.now)?;
        Ok(row)
    }
}

/// An environment's policy (the default when none was set).
pub fn policy(cx: &Ctx<'_>, conn: &mut DbConnection, path: &EnvPath) -> Result<Option<Policy>> {
    cx.authorize(Action::ReadCatalog, Target::Org)?;
    locate_in(cx.snap, path)?;
    Ok(store::policy(conn, path.environment)?)
}

/// A new change request.
#[derive(Debug, Clone)]
pub struct Submit {
    pub path: EnvPath,
    pub feature_key: FeatureKey,
    pub kind: ChangeKind,
    /// The payload as JSON text (see [`is_empty_payload`]).
    pub payload: String,
    pub title: Title,
    pub description: Description,
    /// The submitter's own key for the request: a second submission with it answers with the
    /// first request.
    pub client_id: Option<String>,
    /// Reviewers the submitter asks for.
    pub requested_reviewers: Vec<UserRef>,
}

impl Command for Submit {
    type Output = RequestView;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        let p = cx.actor()?;
        locate_in(cx.snap, &self.path)?;
        let facts = RequestFacts {
            submitter: &p.id,
            kind: self.kind,
            environment: self.path.environment,
            peer_review: false,
            admin_override: false,
            approvers: &[],
        };
        let d = cx.snap.change_request(&p.id, RequestAction::Submit, &facts);
        if d.allowed {
            Ok(())
        } else {
            Err(denied(RequestAction::Submit, d))
        }
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<RequestView> {
        let p = cx.actor()?;
        if let Some(k) = &self.client_id
            && let Some(first) = store::find_by_client_id(tx.conn, p.id, k)?
        {
            return view(tx.conn, first);
        }
        let env = self.path.environment;
        catalog::find(tx.conn, Kind::Environment, &env.to_string())?
            .ok_or_else(|| Error::not_found("environment"))?;
        let ttl = policy_of(store::policy(tx.conn, env)?.as_ref()).ttl_secs;
        let mut r = ChangeRequest {
            id: ChangeRequestId::generate(),
            portfolio: self.path.portfolio,
            application: self.path.application,
            environment: env,
            feature_key: self.feature_key.as_str().to_owned(),
            kind: self.kind,
            payload: self.payload,
            title: self.title.as_str().to_owned(),
            description: self.description.as_str().to_owned(),
            submitter: p.id,
            submitter_name: p.name.clone(),
            state: RequestState::Pending,
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
            client_request_id: self.client_id,
            requested_reviewers: Vec::new(),
            require_requested_reviewer: false,
        };
        open(tx.conn, &mut r, tx.now)?;
        r.requested_reviewers = requested_reviewers(cx, tx.conn, &r, &self.requested_reviewers)?;
        store::insert(tx.conn, &r)?;
        tx.changed(EntityKind::ChangeRequest, r.id.to_string());
        let mut e = cx.event(
            AuditAction::ChangeRequestSubmitted,
            TARGET,
            Some(names::change_request(r.id)),
        );
        e.after_json = audit_json(&r, Some(0));
        let told = notify_reviewers(cx, tx, &r)?;
        e.detail = Some(format!("{told} reviewer(s) notified"));
        audit::append(tx.conn, e, tx.now)?;
        Ok(RequestView {
            request: r,
            reviews: Vec::new(),
        })
    }
}

/// Changes a pending request's content; `None` fields stay. A change starts a new round of
/// reviews under the policy as it is now.
#[derive(Debug, Clone)]
pub struct Edit {
    pub id: ChangeRequestId,
    pub etag: String,
    pub feature_key: Option<FeatureKey>,
    pub kind: Option<ChangeKind>,
    pub payload: Option<String>,
    pub title: Option<Title>,
    pub description: Option<Description>,
    /// A new list of requested reviewers.
    pub requested_reviewers: Option<Vec<UserRef>>,
}

impl Command for Edit {
    type Output = RequestView;

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<RequestView> {
        let p = cx.actor()?;
        let before = load(tx.conn, self.id)?;
        allowed(cx.snap, &p.id, RequestAction::Edit, &before)?;
        etag::check(&self.etag, before.id, before.version)?;
        let kind = self.kind.unwrap_or(before.kind);
        let d = cx.snap.may_change(&p.id, kind, before.environment);
        if !d.allowed {
            return Err(denied(RequestAction::Edit, d));
        }
        life(&before).ensure_open(tx.now, "edited")?;
        let mut r = before.clone();
        if let Some(k) = &self.feature_key {
            r.feature_key = k.as_str().to_owned();
        }
        r.kind = kind;
        if let Some(pl) = self.payload {
            r.payload = pl;
        }
        if let Some(t) = &self.title {
            r.title = t.as_str().to_owned();
        }
        if let Some(d) = &self.description {
            r.description = d.as_str().to_owned();
        }
        if kind.needs_payload() && is_empty_payload(&r.payload) {
            return Err(Error::invalid(
                "change_request.payload",
                "is required for a value change",
            ));
        }
        r.round += 1;
        open(tx.conn, &mut r, tx.now)?;
        match &self.requested_reviewers {
            Some(refs) => r.requested_reviewers = requested_reviewers(cx, tx.conn, &r, refs)?,
            None if r.require_requested_reviewer && r.requested_reviewers.is_empty() => {
                requested_reviewers(cx, tx.conn, &r, &[])?;
            }
            None => {}
        }
        type Content<'a> = (&'a String, ChangeKind, &'a String, &'a String, &'a String);
        fn same(a: &ChangeRequest) -> (Content<'_>, &Vec<UserId>) {
            (
                (&a.feature_key, a.kind, &a.payload, &a.title, &a.description),
                &a.requested_reviewers,
            )
        }
        if same(&r) == same(&before) {
            // Nothing to review anew: keep the approvals.
            return view(tx.conn, before);
        }
        let e = cx.event(
            AuditAction::ChangeRequestUpdated,
            TARGET,
            Some(names::change_request(r.id)),
        );
        let told = notify_reviewers(cx, tx, &r)?;
        let detail = Some(format!("{told} reviewer(s) notified"));
        let r = record(tx, &before, r, e, Some(0), detail)?;
        view(tx.conn, r)
    }
}

/// Withdraws a pending or approved request.
#[derive(Debug, Clone)]
pub struct Cancel {
    pub id: ChangeRequestId,
    pub etag: String,
    pub reason: Description,
}

impl Command for Cancel {
    type Output = RequestView;

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<RequestView> {
        let p = cx.actor()?;
        let before = load(tx.conn, self.id)?;
        allowed(cx.snap, &p.id, RequestAction::Cancel, &before)?;
        etag::check(&self.etag, before.id, before.version)?;
        let mut r = before.clone();
        r.state = life(&before).step(tx.now, Step::Cancel)?;
        let e = cx.event(
            AuditAction::ChangeRequestCancelled,
            TARGET,
            Some(names::change_request(r.id)),
        );
        let detail = Some(self.reason.as_str().to_owned());
        let r = record(tx, &before, r, e, None, detail)?;
        view(tx.conn, r)
    }
}

/// A verdict on a pending request: approve, reject, or (a Team Admin, where the policy allows)
/// override.
#[derive(Debug, Clone)]
pub struct Decide {
    pub id: ChangeRequestId,
    /// The revision the reviewer read; 0 (rejections only) for whatever it is now.
    pub revision: i64,
    pub verdict: Verdict,
    /// The reviewer's comment (an override's reason).
    pub comment: Description,
}

impl Command for Decide {
    type Output = RequestView;

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<RequestView> {
        let p = cx.actor()?;
        let action = if self.verdict == Verdict::Override {
            RequestAction::Override
        } else {
            RequestAction::Review
        };
        let before = load(tx.conn, self.id)?;
        allowed(cx.snap, &p.id, action, &before)?;
        if self.revision != 0 && self.revision != before.round {
            return Err(Refusal::StaleRevision {
                reviewed: self.revision,
                current: before.round,
            }
            .into());
        }
        life(&before).ensure_open(tx.now, "reviewed")?;
        let mut reviews = store::reviews(tx.conn, self.id)?;
        let mine = reviews
            .iter()
            .any(|v| v.round == before.round && v.reviewer == p.id);
        if mine && self.verdict != Verdict::Override {
            return Err(Refusal::AlreadyReviewed {
                round: before.round,
            }
            .into());
        }
        if !mine {
            let review = Review {
                id: uuid::Uuid::now_v7().to_string(),
                request: self.id,
                round: before.round,
                reviewer: p.id,
                reviewer_name: p.name.clone(),
                reviewer_role: p.role,
                verdict: self.verdict,
                comment: self.comment.as_str().to_owned(),
                created_at: tx.now,
            };
            store::insert_review(tx.conn, &review)?;
            reviews.push(review);
        }
        let approvals = approvals_toward(cx.snap, &before, &reviews);
        let mut r = before.clone();
        r.state = life(&before).step(
            tx.now,
            Step::Review {
                verdict: self.verdict,
                approvals: approvals as u32,
                required: before.required_approvals,
            },
        )?;
        r.first_review_at.get_or_insert(tx.now);
        if r.state.is_decided() {
            r.decided_at = Some(tx.now);
        }
        if self.verdict == Verdict::Override {
            r.overridden = true;
            r.override_reason = Some(self.comment.as_str().to_owned());
        }
        let action = match self.verdict {
            Verdict::Approve => AuditAction::ChangeRequestApproved,
            Verdict::Reject => AuditAction::ChangeRequestRejected,
            Verdict::Override => AuditAction::ChangeRequestOverridden,
        };
        let e = cx.event(action, TARGET, Some(names::change_request(r.id)));
        let detail = Some(self.comment.as_str().to_owned());
        if r.state.is_decided() && !before.state.is_decided() {
            notify_submitter(cx, tx, &r, self.comment.as_str())?;
        }
        let r = record(tx, &before, r, e, Some(approvals), detail)?;
        Ok(RequestView {
            request: r,
            reviews,
        })
    }
}

/// The flag store reports an approved request done.
#[derive(Debug, Clone)]
pub struct MarkApplied {
    pub id: ChangeRequestId,
}

impl Command for MarkApplied {
    type Output = RequestView;

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<RequestView> {
        let p = cx.actor()?;
        let before = load(tx.conn, self.id)?;
        let reviews = store::reviews(tx.conn, self.id)?;
        let by = approvers(&before, &reviews);
        let d = cx
            .snap
            .change_request(&p.id, RequestAction::Apply, &facts(&before, &by));
        if !d.allowed {
            return Err(denied(RequestAction::Apply, d));
        }
        let applied_by = before.applied_by.map(|a| a.to_string());
        let state = Life {
            applied_by: applied_by.as_deref(),
            ..life(&before)
        }
        .step(tx.now, Step::Apply)?;
        let mut r = before.clone();
        r.state = state;
        r.applied_at = Some(tx.now);
        r.applied_by = Some(p.id);
        let e = cx.event(
            AuditAction::ChangeRequestApplied,
            TARGET,
            Some(names::change_request(r.id)),
        );
        let r = record(tx, &before, r, e, None, None)?;
        view(tx.conn, r)
    }
}

/// Closes requests left pending past their time, each with an audit event; the server's own
/// work (its context has no actor). Answers how many it closed.
#[derive(Debug, Clone)]
pub struct ExpireDue {
    pub ids: Vec<ChangeRequestId>,
}

/// The requests due to expire at `now`, a sweep's worth.
pub fn due(conn: &mut DbConnection, now: i64) -> Result<ExpireDue> {
    let ids = store::due_to_expire(conn, now, EXPIRE_BATCH)?
        .into_iter()
        .map(|r| r.id)
        .collect();
    Ok(ExpireDue { ids })
}

impl Command for ExpireDue {
    type Output = usize;

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<usize> {
        let mut n = 0;
        for id in self.ids {
            // Read again under the write lock: a review may have decided it meanwhile.
            let Some(before) = store::find(tx.conn, id)? else {
                continue;
            };
            let Ok(state) = life(&before).step(tx.now, Step::Expire) else {
                continue;
            };
            let mut r = before.clone();
            r.state = state;
            let e = cx.event(
                AuditAction::ChangeRequestExpired,
                TARGET,
                Some(names::change_request(r.id)),
            );
            let detail = "pending past the environment's time to live";
            record(tx, &before, r, e, None, Some(detail.into()))?;
            n += 1;
        }
        Ok(n)
    }
}

/// Cancels open requests (pending, or approved and not applied) in the caller's transaction,
/// each with its own audit event giving `why`. Answers how many.
fn cancel_all(cx: &Ctx<'_>, tx: &mut Tx<'_>, open: Vec<ChangeRequest>, why: &str) -> Result<usize> {
    let n = open.len();
    for before in open {
        let mut r = before.clone();
        r.state = RequestState::Cancelled;
        let e = cx.event(
            AuditAction::ChangeRequestCancelled,
            TARGET,
            Some(names::change_request(r.id)),
        );
        record(tx, &before, r, e, None, Some(why.into()))?;
    }
    Ok(n)
}

/// The open requests of environments being deleted, cancelled in the deleting transaction.
pub fn cancel_in_environments(
    cx: &Ctx<'_>,
    tx: &mut Tx<'_>,
    environments: &[String],
) -> Result<usize> {
    let open = store::open_in(tx.conn, environments)?;
    cancel_all(cx, tx, open, "its environment was deleted")
}

/// Cancels the open requests of a submitter who leaves (deactivated or deleted): nobody is
/// left to answer for them, so they are not approved, applied or left hanging.
pub fn cancel_for_departed_submitter(
    cx: &Ctx<'_>,
    tx: &mut Tx<'_>,
    submitter: PrincipalId,
    why: &str,
) -> Result<usize> {
    let open = store::open_by(tx.conn, submitter)?;
    cancel_all(cx, tx, open, why)
}

/// A request with its reviews, if the actor may see it.
pub fn visible(cx: &Ctx<'_>, conn: &mut DbConnection, id: ChangeRequestId) -> Result<RequestView> {
    let p = cx.actor()?;
    let v = read(conn, id)?;
    may_view(cx.snap, &p.id, &v)?;
    Ok(v)
}

/// The request and its reviews as stored, whoever asks: for a feed shared by several watchers,
/// each of whom is then held to [`may_view`].
pub fn read(conn: &mut DbConnection, id: ChangeRequestId) -> Result<RequestView> {
    let r = load(conn, id)?;
    view(conn, r)
}

/// Whether `p` may see the request, on the snapshot `snap` (no I/O).
pub fn may_view(snap: &Snapshot, p: &PrincipalId, v: &RequestView) -> Result<()> {
    allowed(snap, p, RequestAction::View, &v.request)
}

/// A listing: the store's filter, where the previous page ended, how many to return, and
/// whether only requests the actor may review now.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub filter: ListFilter,
    pub after: Option<ChangeRequestId>,
    pub limit: usize,
    pub awaiting_my_review: bool,
}

/// A page of requests, and where the next one starts.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub requests: Vec<RequestView>,
    pub next: Option<ChangeRequestId>,
}

/// Requests the actor may see, newest first. Reads at most [`SCAN_LIMIT`] rows per call and
/// then answers with what it found and a cursor.
pub fn list(cx: &Ctx<'_>, conn: &mut DbConnection, mut q: ListQuery) -> Result<ListPage> {
    cx.authorize(Action::ReadCatalog, Target::Org)?;
    let me = cx.actor()?.id;
    if q.awaiting_my_review {
        q.filter.awaiting = Some(me);
    }
    let mut out = Vec::new();
    let mut cursor = q.after;
    let mut scanned = 0usize;
    let mut more = false;
    'scan: loop {
        let batch = store::list(conn, &q.filter, cursor, SCAN_BATCH)?;
        let full = batch.len() as i64 == SCAN_BATCH;
        for (i, r) in batch.iter().enumerate() {
            cursor = Some(r.id);
            scanned += 1;
            let see = allowed(cx.snap, &me, RequestAction::View, r).is_ok()
                && (!q.awaiting_my_review
                    || allowed(cx.snap, &me, RequestAction::Review, r).is_ok());
            if see {
                out.push(r.clone());
            }
            if out.len() == q.limit || scanned >= SCAN_LIMIT {
                more = full || i + 1 < batch.len();
                break 'scan;
            }
        }
        if !full {
            break;
        }
    }
    let ids: Vec<ChangeRequestId> = out.iter().map(|r| r.id).collect();
    let mut reviews: std::collections::HashMap<ChangeRequestId, Vec<Review>> =
        std::collections::HashMap::new();
    for r in store::reviews_of(conn, &ids)? {
        reviews.entry(r.request).or_default().push(r);
    }
    let requests = out
        .into_iter()
        .map(|r| RequestView {
            reviews: reviews.remove(&r.id).unwrap_or_default(),
            request: r,
        })
        .collect();
    Ok(ListPage {
        requests,
        next: if more { cursor } else { None },
    })
}

/// Sends the day's review digests (the server's own work, from a timer): once per UTC day, at
/// or after `hour_utc`, each user who chose a digest gets one email listing the pending
/// requests they may review now (the engine decides, as for a review), if there are any.
/// Answers how many were queued.
#[derive(Debug, Clone)]
pub struct SendDigests {
    pub hour_utc: u32,
}

/// The UTC day of `now` when its digest hour has come, else `None`.
fn digest_day(now: i64, hour_utc: u32) -> Option<i64> {
    const DAY: i64 = 86_400_000_000;
    const HOUR: i64 = 3_600_000_000;
    (now.rem_euclid(DAY) / HOUR >= i64::from(hour_utc)).then(|| now.div_euclid(DAY))
}

/// Whether some digest is due now (a cheap read before [`SendDigests`]).
pub fn digests_due(conn: &mut DbConnection, now: i64, hour_utc: u32) -> Result<bool> {
    Ok(match digest_day(now, hour_utc) {
        Some(day) => !fluxgate_store::preferences::digest_due(conn, day)?.is_empty(),
        None => false,
    })
}

impl Command for SendDigests {
    type Output = usize;

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<usize> {
        let Some(day) = digest_day(tx.now, self.hour_utc) else {
            return Ok(0);
        };
        let outbox = cx.outbox()?;
        let mut sent = 0;
        for p in fluxgate_store::preferences::digest_due(tx.conn, day)? {
            fluxgate_store::preferences::digest_done(tx.conn, &p.user_id, day)?;
            let Ok(uid) = p.user_id.parse::<UserId>() else {
                continue;
            };
            let Some(u) = fluxgate_store::users::find(tx.conn, uid)?.filter(|u| u.active) else {
                continue;
            };
            let me = PrincipalId::User(uid);
            let filter = store::ListFilter {
                awaiting: Some(me),
                now: tx.now,
                ..Default::default()
            };
            let mine: Vec<ChangeRequest> = store::list(tx.conn, &filter, None, 200)?
                .into_iter()
                .filter(|r| {
                    cx.snap
                        .change_request(&me, RequestAction::Review, &facts(r, &[]))
                        .allowed
                })
                .collect();
            if mine.is_empty() {
                continue;
            }
            let lines: Vec<String> = mine
                .iter()
                .map(|r| {
                    format!(
                        "- {} ({} {}, from {}): {}",
                        r.title,
                        r.kind.as_str(),
                        r.feature_key,
                        r.submitter_name,
                        outbox.page(&names::change_request(r.id))
                    )
                })
                .collect();
            let (count, requests, link) = (
                mine.len().to_string(),
                lines.join("\n"),
                outbox.page("changes"),
            );
            let vars = [
                ("count", count.as_str()),
                ("requests", requests.as_str()),
                ("link", link.as_str()),
            ];
            outbox.queue(tx.conn, Template::ReviewDigest, &u, &vars, tx.now)?;
            sent += 1;
        }
        Ok(sent)
    }
}
