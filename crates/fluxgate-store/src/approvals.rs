//! Approval policies, change requests and their reviews.

use diesel::dsl::{exists, not};
use diesel::prelude::*;

use fluxgate_domain::{
    ApplicationId, ApprovalPolicy, ChangeKind, ChangeRequestId, EnvironmentId, PortfolioId,
    PrincipalId, RequestState, Role, UserId, Verdict,
};

use crate::schema::{approval_policies, change_request_reviews, change_requests};
use crate::{DbConnection, StoreError, StoreResult};

/// An environment's stored policy (environments without one use the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub environment: EnvironmentId,
    pub policy: ApprovalPolicy,
    pub updated_at: i64,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = approval_policies)]
struct PolicyRow {
    environment_id: String,
    required_approvals: i64,
    peer_review: bool,
    admin_override: bool,
    ttl_secs: i64,
    updated_at: i64,
    version: i64,
    require_requested_reviewer: bool,
}

impl PolicyRow {
    fn of(p: &Policy) -> Self {
        PolicyRow {
            environment_id: p.environment.to_string(),
            required_approvals: i64::from(p.policy.required_approvals),
            peer_review: p.policy.peer_review,
            admin_override: p.policy.admin_override,
            ttl_secs: p.policy.ttl_secs as i64,
            updated_at: p.updated_at,
            version: p.version,
            require_requested_reviewer: p.policy.require_requested_reviewer,
        }
    }

    fn typed(self) -> StoreResult<Policy> {
        Ok(Policy {
            environment: parse("approval_policies.environment_id", &self.environment_id)?,
            policy: ApprovalPolicy {
                required_approvals: self.required_approvals.clamp(0, i64::from(u32::MAX)) as u32,
                peer_review: self.peer_review,
                admin_override: self.admin_override,
                ttl_secs: self.ttl_secs.max(0) as u64,
                require_requested_reviewer: self.require_requested_reviewer,
            },
            updated_at: self.updated_at,
            version: self.version,
        })
    }
}

/// Reads a stored value that must parse, or calls the row corrupt.
fn parse<T: std::str::FromStr>(column: &str, v: &str) -> StoreResult<T> {
    v.parse()
        .map_err(|_| StoreError::Corrupt(format!("{column} {v:?}")))
}

/// A change request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRequest {
    pub id: ChangeRequestId,
    pub portfolio: PortfolioId,
    pub application: ApplicationId,
    pub environment: EnvironmentId,
    pub feature_key: String,
    pub kind: ChangeKind,
    /// The payload as JSON text.
    pub payload: String,
    pub title: String,
    pub description: String,
    pub submitter: PrincipalId,
    pub submitter_name: String,
    pub state: RequestState,
    /// The revision of its content: an edit starts a new round of reviews.
    pub round: i64,
    /// The policy it is held to, read when it was submitted or last edited.
    pub required_approvals: u32,
    pub peer_review: bool,
    pub admin_override: bool,
    pub overridden: bool,
    pub override_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: i64,
    pub first_review_at: Option<i64>,
    pub decided_at: Option<i64>,
    pub applied_at: Option<i64>,
    pub applied_by: Option<PrincipalId>,
    pub version: i64,
    /// The submitter's idempotency key, if it sent one.
    pub client_request_id: Option<String>,
    /// The reviewers the submitter named.
    pub requested_reviewers: Vec<UserId>,
    /// Whether one of them must be among the approvers (from the policy).
    pub require_requested_reviewer: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = change_requests, treat_none_as_null = true)]
struct Row {
    id: String,
    portfolio_id: String,
    application_id: String,
    environment_id: String,
    feature_key: String,
    kind: String,
    payload: String,
    title: String,
    description: String,
    /// The submitter's resource name (`users/…` or `serviceAccounts/…`).
    submitter_id: String,
    submitter_name: String,
    state: String,
    round: i64,
    required_approvals: i64,
    peer_review: bool,
    admin_override: bool,
    overridden: bool,
    override_reason: Option<String>,
    created_at: i64,
    updated_at: i64,
    expires_at: i64,
    first_review_at: Option<i64>,
    decided_at: Option<i64>,
    applied_at: Option<i64>,
    applied_by: Option<String>,
    version: i64,
    client_request_id: Option<String>,
    /// `users/{id}` names, space-separated.
    requested_reviewers: String,
    require_requested_reviewer: bool,
}

impl Row {
    fn of(r: &ChangeRequest) -> Self {
        Row {
            id: r.id.to_string(),
            portfolio_id: r.portfolio.to_string(),
            application_id: r.application.to_string(),
            environment_id: r.environment.to_string(),
            feature_key: r.feature_key.clone(),
            kind: r.kind.as_str().to_owned(),
            payload: r.payload.clone(),
            title: r.title.clone(),
            description: r.description.clone(),
            submitter_id: r.submitter.to_string(),
            submitter_name: r.submitter_name.clone(),
            state: r.state.as_str().to_owned(),
            round: r.round,
            required_approvals: i64::from(r.required_approvals),
            peer_review: r.peer_review,
            admin_override: r.admin_override,
            overridden: r.overridden,
            override_reason: r.override_reason.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            expires_at: r.expires_at,
            first_review_at: r.first_review_at,
            decided_at: r.decided_at,
            applied_at: r.applied_at,
            applied_by: r.applied_by.map(|p| p.to_string()),
            version: r.version,
            client_request_id: r.client_request_id.clone(),
            requested_reviewers: r
                .requested_reviewers
                .iter()
                .map(|u| format!("users/{u}"))
                .collect::<Vec<_>>()
                .join(" "),
            require_requested_reviewer: r.require_requested_reviewer,
        }
    }

    fn typed(self) -> StoreResult<ChangeRequest> {
        Ok(ChangeRequest {
            id: parse("change_requests.id", &self.id)?,
            portfolio: parse("change_requests.portfolio_id", &self.portfolio_id)?,
            application: parse("change_requests.application_id", &self.application_id)?,
            environment: parse("change_requests.environment_id", &self.environment_id)?,
            feature_key: self.feature_key,
            kind: parse("change_requests.kind", &self.kind)?,
            payload: self.payload,
            title: self.title,
            description: self.description,
            submitter: parse("change_requests.submitter_id", &self.submitter_id)?,
            submitter_name: self.submitter_name,
            state: parse("change_requests.state", &self.state)?,
            round: self.round,
            required_approvals: self.required_approvals.clamp(0, i64::from(u32::MAX)) as u32,
            peer_review: self.peer_review,
            admin_override: self.admin_override,
            overridden: self.overridden,
            override_reason: self.override_reason,
            created_at: self.created_at,
            updated_at: self.updated_at,
            expires_at: self.expires_at,
            first_review_at: self.first_review_at,
            decided_at: self.decided_at,
            applied_at: self.applied_at,
            applied_by: self
                .applied_by
                .map(|a| parse("change_requests.applied_by", &a))
                .transpose()?,
            version: self.version,
            client_request_id: self.client_request_id,
            requested_reviewers: self
                .requested_reviewers
                .split_whitespace()
                .map(|n| {
                    parse(
                        "change_requests.requested_reviewers",
                        n.strip_prefix("users/").unwrap_or(n),
                    )
                })
                .collect::<StoreResult<_>>()?,
            require_requested_reviewer: self.require_requested_reviewer,
        })
    }
}

fn typed(rows: Vec<Row>) -> StoreResult<Vec<ChangeRequest>> {
    rows.into_iter().map(Row::typed).collect()
}

/// One verdict on one round of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    pub id: String,
    pub request: ChangeRequestId,
    pub round: i64,
    pub reviewer: PrincipalId,
    pub reviewer_name: String,
    pub reviewer_role: Role,
    pub verdict: Verdict,
    pub comment: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = change_request_reviews)]
struct ReviewRow {
    id: String,
    request_id: String,
    round: i64,
    reviewer_id: String,
    reviewer_name: String,
    reviewer_role: String,
    verdict: String,
    comment: String,
    created_at: i64,
}

impl ReviewRow {
    fn of(r: &Review) -> Self {
        ReviewRow {
            id: r.id.clone(),
            request_id: r.request.to_string(),
            round: r.round,
            reviewer_id: r.reviewer.to_string(),
            reviewer_name: r.reviewer_name.clone(),
            reviewer_role: r.reviewer_role.as_str().to_owned(),
            verdict: r.verdict.as_str().to_owned(),
            comment: r.comment.clone(),
            created_at: r.created_at,
        }
    }

    fn typed(self) -> StoreResult<Review> {
        Ok(Review {
            request: parse("change_request_reviews.request_id", &self.request_id)?,
            reviewer: parse("change_request_reviews.reviewer_id", &self.reviewer_id)?,
            reviewer_role: parse("change_request_reviews.reviewer_role", &self.reviewer_role)?,
            verdict: parse("change_request_reviews.verdict", &self.verdict)?,
            id: self.id,
            round: self.round,
            reviewer_name: self.reviewer_name,
            comment: self.comment,
            created_at: self.created_at,
        })
    }
}

fn typed_reviews(rows: Vec<ReviewRow>) -> StoreResult<Vec<Review>> {
    rows.into_iter().map(ReviewRow::typed).collect()
}

pub fn policy(conn: &mut DbConnection, environment: EnvironmentId) -> StoreResult<Option<Policy>> {
    approval_policies::table
        .filter(approval_policies::environment_id.eq(environment.to_string()))
        .select(PolicyRow::as_select())
        .first(conn)
        .optional()?
        .map(PolicyRow::typed)
        .transpose()
}

/// The stored policies of several environments.
pub fn policies(
    conn: &mut DbConnection,
    environments: &[EnvironmentId],
) -> StoreResult<Vec<Policy>> {
    if environments.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = environments.iter().map(ToString::to_string).collect();
    approval_policies::table
        .filter(approval_policies::environment_id.eq_any(ids))
        .select(PolicyRow::as_select())
        .load(conn)?
        .into_iter()
        .map(PolicyRow::typed)
        .collect()
}

/// Inserts or replaces an environment's policy (callers hold the write lock).
pub fn save_policy(conn: &mut DbConnection, p: &Policy) -> StoreResult<()> {
    let row = PolicyRow::of(p);
    let n = diesel::update(approval_policies::table.find(&row.environment_id))
        .set(&row)
        .execute(conn)?;
    if n == 0 {
        diesel::insert_into(approval_policies::table)
            .values(&row)
            .execute(conn)?;
    }
    Ok(())
}

pub fn insert(conn: &mut DbConnection, r: &ChangeRequest) -> StoreResult<()> {
    diesel::insert_into(change_requests::table)
        .values(Row::of(r))
        .execute(conn)?;
    Ok(())
}

/// Saves every column of a request.
pub fn save(conn: &mut DbConnection, r: &ChangeRequest) -> StoreResult<()> {
    let row = Row::of(r);
    diesel::update(change_requests::table.find(&row.id))
        .set(&row)
        .execute(conn)?;
    Ok(())
}

pub fn find(conn: &mut DbConnection, id: ChangeRequestId) -> StoreResult<Option<ChangeRequest>> {
    change_requests::table
        .find(id.to_string())
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .map(Row::typed)
        .transpose()
}

/// The request `submitter` submitted with idempotency key `key`, if any.
pub fn find_by_client_id(
    conn: &mut DbConnection,
    submitter: PrincipalId,
    key: &str,
) -> StoreResult<Option<ChangeRequest>> {
    change_requests::table
        .filter(change_requests::submitter_id.eq(submitter.to_string()))
        .filter(change_requests::client_request_id.eq(key))
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .map(Row::typed)
        .transpose()
}

/// A request's reviews, oldest first.
pub fn reviews(conn: &mut DbConnection, request: ChangeRequestId) -> StoreResult<Vec<Review>> {
    typed_reviews(
        change_request_reviews::table
            .filter(change_request_reviews::request_id.eq(request.to_string()))
            .order((
                change_request_reviews::created_at.asc(),
                change_request_reviews::id.asc(),
            ))
            .select(ReviewRow::as_select())
            .load(conn)?,
    )
}

pub fn insert_review(conn: &mut DbConnection, r: &Review) -> StoreResult<()> {
    diesel::insert_into(change_request_reviews::table)
        .values(ReviewRow::of(r))
        .execute(conn)?;
    Ok(())
}

/// What a listing selects; empty or `None` fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub states: Vec<RequestState>,
    pub environment: Option<EnvironmentId>,
    /// A principal's resource name (a name that names nobody matches nothing).
    pub submitter: Option<String>,
    /// Pending requests that this principal did not submit and has not reviewed in their
    /// current round (whether it may review them is the engine's question).
    pub awaiting: Option<PrincipalId>,
    /// The clock reading that decides which pending requests have expired.
    pub now: i64,
}

/// A page of requests, newest first, strictly before `before`.
pub fn list(
    conn: &mut DbConnection,
    f: &ListFilter,
    before: Option<ChangeRequestId>,
    limit: i64,
) -> StoreResult<Vec<ChangeRequest>> {
    let mut q = change_requests::table.into_boxed();
    if !f.states.is_empty() {
        let states: Vec<&str> = f.states.iter().map(|s| s.as_str()).collect();
        q = q.filter(change_requests::state.eq_any(states));
    }
    if let Some(e) = &f.environment {
        q = q.filter(change_requests::environment_id.eq(e.to_string()));
    }
    if let Some(s) = &f.submitter {
        q = q.filter(change_requests::submitter_id.eq(s.clone()));
    }
    if let Some(me) = &f.awaiting {
        let me = me.to_string();
        q = q
            .filter(change_requests::state.eq(RequestState::Pending.as_str()))
            .filter(change_requests::expires_at.gt(f.now))
            .filter(change_requests::submitter_id.ne(me.clone()))
            .filter(not(exists(
                change_request_reviews::table
                    .filter(change_request_reviews::request_id.eq(change_requests::id))
                    .filter(change_request_reviews::round.eq(change_requests::round))
                    .filter(change_request_reviews::reviewer_id.eq(me)),
            )));
    }
    if let Some(b) = before {
        q = q.filter(change_requests::id.lt(b.to_string()));
    }
    typed(
        q.order(change_requests::id.desc())
            .limit(limit)
            .select(Row::as_select())
            .load(conn)?,
    )
}

/// Pending requests whose time is up, oldest deadline first.
pub fn due_to_expire(
    conn: &mut DbConnection,
    now: i64,
    limit: i64,
) -> StoreResult<Vec<ChangeRequest>> {
    typed(
        change_requests::table
            .filter(change_requests::state.eq(RequestState::Pending.as_str()))
            .filter(change_requests::expires_at.le(now))
            .order(change_requests::expires_at.asc())
            .limit(limit)
            .select(Row::as_select())
            .load(conn)?,
    )
}

const OPEN: [&str; 2] = ["pending", "approved"];

/// Pending or approved (not yet applied) requests in any of `environments`.
pub fn open_in(
    conn: &mut DbConnection,
    environments: &[String],
) -> StoreResult<Vec<ChangeRequest>> {
    if environments.is_empty() {
        return Ok(Vec::new());
    }
    typed(
        change_requests::table
            .filter(change_requests::environment_id.eq_any(environments))
            .filter(change_requests::state.eq_any(OPEN))
            .select(Row::as_select())
            .load(conn)?,
    )
}

/// Pending or approved (not yet applied) requests submitted by `submitter`.
pub fn open_by(conn: &mut DbConnection, submitter: PrincipalId) -> StoreResult<Vec<ChangeRequest>> {
    typed(
        change_requests::table
            .filter(change_requests::submitter_id.eq(submitter.to_string()))
            .filter(change_requests::state.eq_any(OPEN))
            .select(Row::as_select())
            .load(conn)?,
    )
}

/// Timings of one request, for approval metrics.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct Timing {
    pub environment_id: String,
    pub state: String,
    pub created_at: i64,
    pub first_review_at: Option<i64>,
    pub decided_at: Option<i64>,
}

/// Timings of requests submitted in `[from, to)`, optionally in one environment.
pub fn timings(
    conn: &mut DbConnection,
    environment: Option<&str>,
    from: i64,
    to: i64,
) -> StoreResult<Vec<Timing>> {
    let mut q = change_requests::table
        .filter(change_requests::created_at.ge(from))
        .filter(change_requests::created_at.lt(to))
        .into_boxed();
    if let Some(e) = environment {
        q = q.filter(change_requests::environment_id.eq(e.to_owned()));
    }
    Ok(q.select((
        change_requests::environment_id,
        change_requests::state,
        change_requests::created_at,
        change_requests::first_review_at,
        change_requests::decided_at,
    ))
    .load(conn)?)
}

/// One review with its request's submission time, for approval metrics.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct ReviewTiming {
    pub reviewer_id: String,
    pub reviewer_name: String,
    pub verdict: String,
    pub reviewed_at: i64,
    pub submitted_at: i64,
}

/// Reviews of requests submitted in `[from, to)`, optionally in one environment.
pub fn review_timings(
    conn: &mut DbConnection,
    environment: Option<&str>,
    from: i64,
    to: i64,
) -> StoreResult<Vec<ReviewTiming>> {
    let mut q = change_request_reviews::table
        .inner_join(change_requests::table)
        .filter(change_requests::created_at.ge(from))
        .filter(change_requests::created_at.lt(to))
        .into_boxed();
    if let Some(e) = environment {
        q = q.filter(change_requests::environment_id.eq(e.to_owned()));
    }
    Ok(q.select((
        change_request_reviews::reviewer_id,
        change_request_reviews::reviewer_name,
        change_request_reviews::verdict,
        change_request_reviews::created_at,
        change_requests::created_at,
    ))
    .load(conn)?)
}

/// (environment id, submission time) of every pending request, optionally in one environment.
pub fn pending(
    conn: &mut DbConnection,
    environment: Option<&str>,
) -> StoreResult<Vec<(String, i64)>> {
    let mut q = change_requests::table
        .filter(change_requests::state.eq("pending"))
        .into_boxed();
    if let Some(e) = environment {
        q = q.filter(change_requests::environment_id.eq(e.to_owned()));
    }
    Ok(
        q.select((change_requests::environment_id, change_requests::created_at))
            .load(conn)?,
    )
}

/// The reviews of several requests.
pub fn reviews_of(
    conn: &mut DbConnection,
    requests: &[ChangeRequestId],
) -> StoreResult<Vec<Review>> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = requests.iter().map(ToString::to_string).collect();
    typed_reviews(
        change_request_reviews::table
            .filter(change_request_reviews::request_id.eq_any(ids))
            .order((
                change_request_reviews::created_at.asc(),
                change_request_reviews::id.asc(),
            ))
            .select(ReviewRow::as_select())
            .load(conn)?,
    )
}

/// (environment id, application id, portfolio id) of the environments that still exist.
pub fn environment_paths(
    conn: &mut DbConnection,
    environments: &[String],
) -> StoreResult<Vec<(String, String, String)>> {
    use crate::schema::{applications, environments as envs};
    if environments.is_empty() {
        return Ok(Vec::new());
    }
    Ok(envs::table
        .inner_join(applications::table)
        .filter(envs::id.eq_any(environments))
        .select((envs::id, applications::id, applications::portfolio_id))
        .load(conn)?)
}

/// How many requests are pending.
pub fn count_pending(conn: &mut DbConnection) -> StoreResult<i64> {
    Ok(change_requests::table
        .filter(change_requests::state.eq("pending"))
        .count()
        .get_result(conn)?)
}
