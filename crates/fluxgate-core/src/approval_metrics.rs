//! Approval response times and pending work, computed from the stored timings.

use std::collections::{BTreeMap, HashMap};

use fluxgate_authz::{Action, Target};
use fluxgate_domain::EnvironmentId;
use fluxgate_store::DbConnection;
use fluxgate_store::approvals as store;

use crate::context::Ctx;
use crate::error::Result;
use crate::names::{self, EnvPath};

/// Median and 90th percentile of durations, in microseconds (nearest rank).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub count: i64,
    pub median: Option<i64>,
    pub p90: Option<i64>,
}

/// Nearest-rank percentile of sorted samples.
fn rank(sorted: &[i64], pct: usize) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let k = (pct * sorted.len()).div_ceil(100).max(1);
    sorted[k - 1]
}

impl Summary {
    pub fn of(mut samples: Vec<i64>) -> Summary {
        samples.sort_unstable();
        Summary {
            count: samples.len() as i64,
            median: (!samples.is_empty()).then(|| rank(&samples, 50)),
            p90: (!samples.is_empty()).then(|| rank(&samples, 90)),
        }
    }
}

/// The figures of one environment (or, with an empty name, of all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvironmentMetrics {
    /// The environment's resource name (`environments/{id}` once it is deleted).
    pub environment: String,
    pub submitted: i64,
    pub approved: i64,
    pub rejected: i64,
    pub time_to_first_review: Summary,
    pub time_to_decision: Summary,
    /// Requests pending now, and how long they have waited (microseconds).
    pub pending: i64,
    pub oldest_pending_age: Option<i64>,
    pub median_pending_age: Option<i64>,
}

/// One reviewer's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewerMetrics {
    pub reviewer: String,
    pub reviewer_display_name: String,
    pub approvals: i64,
    pub rejections: i64,
    pub response_time: Summary,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub overall: EnvironmentMetrics,
    pub environments: Vec<EnvironmentMetrics>,
    pub reviewers: Vec<ReviewerMetrics>,
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
    fn finish(mut self, environment: String) -> EnvironmentMetrics {
        self.pending_ages.sort_unstable();
        EnvironmentMetrics {
            environment,
            submitted: self.submitted,
            approved: self.approved,
            rejected: self.rejected,
            time_to_first_review: Summary::of(self.first_review),
            time_to_decision: Summary::of(self.decision),
            pending: self.pending_ages.len() as i64,
            oldest_pending_age: self.pending_ages.last().copied(),
            median_pending_age: (!self.pending_ages.is_empty())
                .then(|| rank(&self.pending_ages, 50)),
        }
    }
}

/// The approval metrics the actor asked for: requests submitted in `[from, to)`, in one
/// environment or all (pending counts are as of now).
pub fn report(
    cx: &Ctx<'_>,
    conn: &mut DbConnection,
    environment: Option<EnvPath>,
    from: i64,
    to: i64,
) -> Result<Report> {
    cx.authorize(Action::ViewApprovalMetrics, Target::Org)?;
    if let Some(e) = &environment {
        crate::change_requests::locate_in(cx.snap, e)?;
    }
    compute(conn, environment.map(|e| e.environment), from, to)
}

/// The report, for whoever the caller has already authorised (the activity report reuses it).
pub fn compute(
    conn: &mut DbConnection,
    environment: Option<EnvironmentId>,
    from: i64,
    to: i64,
) -> Result<Report> {
    let now = fluxgate_store::now_micros();
    let environment = environment.map(|e| e.to_string());
    let environment = environment.as_deref();
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
        .map(|(e, a, p)| (e.clone(), names::environment(&p, &a, &e)))
        .collect();
    let mut environments: Vec<EnvironmentMetrics> = per_env
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
    Ok(Report {
        overall: overall.finish(String::new()),
        environments,
        reviewers: reviewers(reviews),
    })
}

fn reviewers(reviews: Vec<store::ReviewTiming>) -> Vec<ReviewerMetrics> {
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
    let mut out: Vec<ReviewerMetrics> = per_reviewer
        .into_iter()
        .map(|(id, acc)| ReviewerMetrics {
            reviewer: id,
            reviewer_display_name: acc.name,
            approvals: acc.approvals,
            rejections: acc.rejections,
            response_time: Summary::of(acc.times),
        })
        .collect();
    out.sort_by(|a, b| {
        (b.approvals + b.rejections)
            .cmp(&(a.approvals + a.rejections))
            .then_with(|| a.reviewer.cmp(&b.reviewer))
    });
    out
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
        let sum = Summary::of(vec![3_000_000, 1_000_000, 2_000_000]);
        assert_eq!(sum.count, 3);
        assert_eq!(sum.median, Some(2_000_000));
        assert_eq!(sum.p90, Some(3_000_000));
        assert!(Summary::of(Vec::new()).median.is_none());
    }
}
