//! Approval policies, change requests and their reviews.

use diesel::dsl::{exists, not};
use diesel::prelude::*;

use crate::schema::{approval_policies, change_request_reviews, change_requests};
use crate::{DbConnection, StoreResult};

/// An environment's stored policy (environments without one use the default).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = approval_policies)]
pub struct Policy {
    pub environment_id: String,
    pub required_approvals: i64,
    pub peer_review: bool,
    pub admin_override: bool,
    pub ttl_secs: i64,
    pub updated_at: i64,
    pub version: i64,
}

/// A change request as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = change_requests, treat_none_as_null = true)]
pub struct ChangeRequest {
    pub id: String,
    pub portfolio_id: String,
    pub application_id: String,
    pub environment_id: String,
    pub feature_key: String,
    pub kind: String,
    /// The payload as JSON text.
    pub payload: String,
    pub title: String,
    pub description: String,
    /// The submitter's resource name (`users/…` or `serviceAccounts/…`).
    pub submitter_id: String,
    pub submitter_name: String,
    pub state: String,
    pub round: i64,
    pub required_approvals: i64,
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
    pub applied_by: Option<String>,
    pub version: i64,
    /// The submitter's idempotency key, if it sent one.
    pub client_request_id: Option<String>,
}

/// One verdict on one round of a request.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = change_request_reviews)]
pub struct Review {
    pub id: String,
    pub request_id: String,
    pub round: i64,
    /// The reviewer's resource name.
    pub reviewer_id: String,
    pub reviewer_name: String,
    pub reviewer_role: String,
    /// `approve`, `reject` or `override`.
    pub verdict: String,
    pub comment: String,
    pub created_at: i64,
}

pub fn policy(conn: &mut DbConnection, environment: &str) -> StoreResult<Option<Policy>> {
    Ok(approval_policies::table
        .filter(approval_policies::environment_id.eq(environment))
        .select(Policy::as_select())
        .first(conn)
        .optional()?)
}

/// The stored policies of several environments.
pub fn policies(conn: &mut DbConnection, environments: &[String]) -> StoreResult<Vec<Policy>> {
    if environments.is_empty() {
        return Ok(Vec::new());
    }
    Ok(approval_policies::table
        .filter(approval_policies::environment_id.eq_any(environments))
        .select(Policy::as_select())
        .load(conn)?)
}

/// Inserts or replaces an environment's policy (callers hold the write lock).
pub fn save_policy(conn: &mut DbConnection, p: &Policy) -> StoreResult<()> {
    let n = diesel::update(approval_policies::table.find(&p.environment_id))
        .set(p)
        .execute(conn)?;
    if n == 0 {
        diesel::insert_into(approval_policies::table)
            .values(p)
            .execute(conn)?;
    }
    Ok(())
}

pub fn insert(conn: &mut DbConnection, r: &ChangeRequest) -> StoreResult<()> {
    diesel::insert_into(change_requests::table)
        .values(r)
        .execute(conn)?;
    Ok(())
}

/// Saves every column of a request.
pub fn save(conn: &mut DbConnection, r: &ChangeRequest) -> StoreResult<()> {
    diesel::update(change_requests::table.find(&r.id))
        .set(r)
        .execute(conn)?;
    Ok(())
}

pub fn find(conn: &mut DbConnection, id: &str) -> StoreResult<Option<ChangeRequest>> {
    Ok(change_requests::table
        .find(id)
        .select(ChangeRequest::as_select())
        .first(conn)
        .optional()?)
}

/// The request `submitter` submitted with idempotency key `key`, if any.
pub fn find_by_client_id(
    conn: &mut DbConnection,
    submitter: &str,
    key: &str,
) -> StoreResult<Option<ChangeRequest>> {
    Ok(change_requests::table
        .filter(change_requests::submitter_id.eq(submitter))
        .filter(change_requests::client_request_id.eq(key))
        .select(ChangeRequest::as_select())
        .first(conn)
        .optional()?)
}

/// A request's reviews, oldest first.
pub fn reviews(conn: &mut DbConnection, request: &str) -> StoreResult<Vec<Review>> {
    Ok(change_request_reviews::table
        .filter(change_request_reviews::request_id.eq(request))
        .order((
            change_request_reviews::created_at.asc(),
            change_request_reviews::id.asc(),
        ))
        .select(Review::as_select())
        .load(conn)?)
}

pub fn insert_review(conn: &mut DbConnection, r: &Review) -> StoreResult<()> {
    diesel::insert_into(change_request_reviews::table)
        .values(r)
        .execute(conn)?;
    Ok(())
}

/// What a listing selects; `None` fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub states: Vec<String>,
    pub environment: Option<String>,
    pub submitter: Option<String>,
    /// Pending requests that this principal did not submit and has not reviewed in their
    /// current round (whether it may review them is the engine's question).
    pub awaiting: Option<String>,
    /// The clock reading that decides which pending requests have expired.
    pub now: i64,
}

/// A page of requests, newest first, strictly before `before` (an id).
pub fn list(
    conn: &mut DbConnection,
    f: &ListFilter,
    before: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<ChangeRequest>> {
    let mut q = change_requests::table.into_boxed();
    if !f.states.is_empty() {
        q = q.filter(change_requests::state.eq_any(f.states.clone()));
    }
    if let Some(e) = &f.environment {
        q = q.filter(change_requests::environment_id.eq(e.clone()));
    }
    if let Some(s) = &f.submitter {
        q = q.filter(change_requests::submitter_id.eq(s.clone()));
    }
    if let Some(me) = &f.awaiting {
        q = q
            .filter(change_requests::state.eq("pending"))
            .filter(change_requests::expires_at.gt(f.now))
            .filter(change_requests::submitter_id.ne(me.clone()))
            .filter(not(exists(
                change_request_reviews::table
                    .filter(change_request_reviews::request_id.eq(change_requests::id))
                    .filter(change_request_reviews::round.eq(change_requests::round))
                    .filter(change_request_reviews::reviewer_id.eq(me.clone())),
            )));
    }
    if let Some(b) = before {
        q = q.filter(change_requests::id.lt(b.to_owned()));
    }
    Ok(q.order(change_requests::id.desc())
        .limit(limit)
        .select(ChangeRequest::as_select())
        .load(conn)?)
}

/// Pending requests whose time is up, oldest deadline first.
pub fn due_to_expire(
    conn: &mut DbConnection,
    now: i64,
    limit: i64,
) -> StoreResult<Vec<ChangeRequest>> {
    Ok(change_requests::table
        .filter(change_requests::state.eq("pending"))
        .filter(change_requests::expires_at.le(now))
        .order(change_requests::expires_at.asc())
        .limit(limit)
        .select(ChangeRequest::as_select())
        .load(conn)?)
}

/// Pending or approved (not yet applied) requests in any of `environments`.
pub fn open_in(
    conn: &mut DbConnection,
    environments: &[String],
) -> StoreResult<Vec<ChangeRequest>> {
    if environments.is_empty() {
        return Ok(Vec::new());
    }
    Ok(change_requests::table
        .filter(change_requests::environment_id.eq_any(environments))
        .filter(change_requests::state.eq_any(["pending", "approved"]))
        .select(ChangeRequest::as_select())
        .load(conn)?)
}

/// Pending or approved (not yet applied) requests submitted by `submitter` (a principal's
/// resource name).
pub fn open_by(conn: &mut DbConnection, submitter: &str) -> StoreResult<Vec<ChangeRequest>> {
    Ok(change_requests::table
        .filter(change_requests::submitter_id.eq(submitter))
        .filter(change_requests::state.eq_any(["pending", "approved"]))
        .select(ChangeRequest::as_select())
        .load(conn)?)
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
pub fn reviews_of(conn: &mut DbConnection, requests: &[String]) -> StoreResult<Vec<Review>> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    Ok(change_request_reviews::table
        .filter(change_request_reviews::request_id.eq_any(requests))
        .order((
            change_request_reviews::created_at.asc(),
            change_request_reviews::id.asc(),
        ))
        .select(Review::as_select())
        .load(conn)?)
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
