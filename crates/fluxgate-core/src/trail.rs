//! The audit trail as callers use it: queried, verified, exported, appended to by internal
//! services (in namespaces of their own), and summed up in the activity report.

use std::collections::{BTreeMap, HashSet};

use fluxgate_authz::{Action, Target};
use fluxgate_store::audit::{self, Counted};
use fluxgate_store::{DbConnection, Tx};

pub use fluxgate_store::audit::{Checkpoint, Event, Filter};

use crate::approval_metrics::{self, Report};
use crate::audit::AuditAction;
use crate::context::{Command, Ctx};
use crate::error::Result;
use crate::logins::{attempts_recorded, locked_an_account};

const DAY: i64 = 86_400_000_000;
const WEEK: i64 = 7 * DAY;
/// 1970-01-01 was a Thursday: weeks starting on Monday are offset by four days.
const WEEK_OFFSET: i64 = 4 * DAY;

/// Namespaces FluxGate writes itself; ingested events may not use them.
const RESERVED: &[&str] = &[
    "auth.",
    "user.",
    "settings.",
    "portfolio.",
    "application.",
    "environment.",
    "group.",
    "service_account.",
    "change_request.",
    "audit.",
];

/// Whether `action` is in a namespace FluxGate writes itself.
pub fn is_reserved(action: &str) -> bool {
    RESERVED.iter().any(|ns| action.starts_with(ns))
}

/// Who may read (query, verify, export) the trail.
pub fn may_read(cx: &Ctx<'_>) -> Result<()> {
    cx.authorize(Action::ReadAudit, Target::Org)
}

/// Who may append events reported by an internal service.
pub fn may_ingest(cx: &Ctx<'_>) -> Result<()> {
    cx.authorize(Action::IngestAudit, Target::Org)
}

/// Who may see the activity report.
pub fn may_view_activity(cx: &Ctx<'_>) -> Result<()> {
    cx.authorize(Action::ViewAnalytics, Target::Org)
}

/// A page of events in chain order after `after` ((time, sequence) of the previous page's
/// last); one more than `limit` tells the caller there is more.
pub fn query(
    cx: &Ctx<'_>,
    conn: &mut DbConnection,
    f: &Filter,
    after: Option<(i64, i64)>,
    limit: i64,
) -> Result<Vec<Event>> {
    may_read(cx)?;
    Ok(audit::query(conn, f, after, limit)?)
}

/// What a walk of the chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The first event whose hash or link is wrong.
    pub broken: Option<i64>,
    /// Events checked.
    pub checked: i64,
    /// Where the chain starts when it was pruned: it links to this event's hash.
    pub checkpoint: Option<Checkpoint>,
}

/// Checks the hash chain, from the genesis or the last pruning's checkpoint. A checkpoint must
/// be vouched for by the `audit.pruned` event its pruning chained after it, so that a
/// checkpoint moved to hide more deleted events is caught.
pub fn verify(cx: &Ctx<'_>, conn: &mut DbConnection) -> Result<Verification> {
    may_read(cx)?;
    let (mut broken, checked, checkpoint) = audit::verify_with_checkpoint(conn)?;
    if let Some(c) = &checkpoint {
        // The pruning's own event, the first `audit.pruned` after its checkpoint.
        let vouched =
            audit::first_with_action_after(conn, AuditAction::AuditPruned.as_str(), c.seq)?
                .and_then(|e| e.after_json)
                .and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
                .is_some_and(|v| {
                    v.get("seq").and_then(|s| s.as_i64()) == Some(c.seq)
                        && v.get("hash").and_then(|h| h.as_str()) == Some(c.hash.as_str())
                });
        if !vouched {
            broken = Some(broken.map_or(c.seq + 1, |b| b.min(c.seq + 1)));
        }
    }
    Ok(Verification {
        broken,
        checked,
        checkpoint,
    })
}

/// The events a pruning may remove: up to the last that occurred before `before`, after the
/// last checkpoint, and none that an enabled webhook subscription has not been handed yet.
/// Answers (first, last event) of that range.
pub fn prunable(conn: &mut DbConnection, before: i64) -> Result<Option<(i64, Event)>> {
    let floor = audit::latest_checkpoint(conn)?.map_or(0, |c| c.seq);
    let limit = match fluxgate_store::webhooks::min_enabled_cursor(conn)? {
        Some(c) => c,
        None => audit::head_seq(conn)?,
    };
    Ok(audit::last_before(conn, before, limit)?
        .filter(|e| e.seq > floor)
        .map(|e| (floor + 1, e)))
}

/// Prunes the trail through `cut` (its events already archived): records the checkpoint, and
/// chains an `audit.pruned` event that vouches for it. The server's own work (no actor).
#[derive(Debug, Clone)]
pub struct Prune {
    pub cut_seq: i64,
    pub cut_hash: String,
    pub archive: String,
    pub archive_sha256: String,
    pub retention_days: u32,
}

impl Command for Prune {
    /// Events pruned (0 when another replica pruned first).
    type Output = i64;

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<i64> {
        let floor = audit::latest_checkpoint(tx.conn)?.map_or(0, |c| c.seq);
        let cut = audit::list(tx.conn, self.cut_seq - 1, 1)?;
        let intact = cut
            .first()
            .is_some_and(|e| e.seq == self.cut_seq && e.hash == self.cut_hash);
        if self.cut_seq <= floor || !intact {
            return Ok(0);
        }
        let cp = Checkpoint {
            seq: self.cut_seq,
            hash: self.cut_hash,
            events: self.cut_seq - floor,
            archive: self.archive,
            archive_sha256: self.archive_sha256,
            created_at: tx.now,
        };
        let mut e = cx.event(AuditAction::AuditPruned, "audit", None);
        e.after_json = Some(
            serde_json::json!({
                "seq": cp.seq,
                "hash": cp.hash,
                "events": cp.events,
                "archive": cp.archive,
                "archive_sha256": cp.archive_sha256,
            })
            .to_string(),
        );
        e.detail = Some(format!(
            "events {}..{} older than {} days archived to {} and pruned",
            floor + 1,
            cp.seq,
            self.retention_days,
            cp.archive
        ));
        audit::append(tx.conn, e, tx.now)?;
        let n = audit::prune(tx.conn, &cp)?;
        Ok(n)
    }
}

/// An event an internal service reports, checked.
#[derive(Debug, Clone)]
pub struct Reported {
    pub action: String,
    pub target_type: String,
    pub target: Option<String>,
    pub actor: Option<String>,
    pub actor_name: Option<String>,
    pub detail: Option<String>,
    /// When it happened (microseconds).
    pub at: i64,
}

/// Appends reported events (outcome `reported`, the reporter named in the detail). Answers
/// their sequence numbers.
#[derive(Debug, Clone)]
pub struct Ingest {
    pub events: Vec<Reported>,
}

impl Command for Ingest {
    type Output = Vec<i64>;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        may_ingest(cx)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<Vec<i64>> {
        let reporter = cx.actor()?.id;
        let mut seqs = Vec::with_capacity(self.events.len());
        for r in self.events {
            let ev = audit::NewEvent {
                actor_id: r.actor,
                actor_name: r.actor_name,
                action: r.action,
                target_type: r.target_type,
                target_id: r.target,
                outcome: "reported".into(),
                detail: Some(match r.detail {
                    Some(d) => format!("reported by {reporter}: {d}"),
                    None => format!("reported by {reporter}"),
                }),
                request_id: cx.origin.request_id.clone(),
                peer_addr: cx.origin.peer_addr.clone(),
                ..Default::default()
            };
            seqs.push(audit::append(tx.conn, ev, r.at)?.seq);
        }
        Ok(seqs)
    }
}

/// How many in one period (a day or a week) starting at `start` (microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodCount {
    pub start: i64,
    pub count: i64,
}

/// A principal, its latest display name, and how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalCount {
    pub principal: String,
    pub display_name: String,
    pub count: i64,
}

/// The activity report.
#[derive(Debug, Clone)]
pub struct Activity {
    pub active_users_per_day: Vec<PeriodCount>,
    pub active_users_per_week: Vec<PeriodCount>,
    pub feature_evaluations_by_user: Vec<PrincipalCount>,
    pub most_active_contributors: Vec<PrincipalCount>,
    pub failed_sign_ins_per_day: Vec<PeriodCount>,
    pub lockouts_per_day: Vec<PeriodCount>,
    /// Only for those who may see approval metrics.
    pub approval_response_times: Option<Report>,
}

/// Distinct users signing in per period.
fn active_users(logins: &[(Option<String>, i64)], period: i64, offset: i64) -> Vec<PeriodCount> {
    let mut m: BTreeMap<i64, HashSet<&str>> = BTreeMap::new();
    for (actor, at) in logins {
        if let Some(a) = actor {
            m.entry((at - offset).div_euclid(period))
                .or_default()
                .insert(a);
        }
    }
    m.into_iter()
        .map(|(b, set)| PeriodCount {
            start: b * period + offset,
            count: set.len() as i64,
        })
        .collect()
}

fn named(conn: &mut DbConnection, rows: Vec<(String, i64)>) -> Result<Vec<PrincipalCount>> {
    rows.into_iter()
        .map(|(principal, count)| {
            let display_name = audit::latest_actor_name(conn, &principal)?.unwrap_or_default();
            Ok(PrincipalCount {
                principal,
                display_name,
                count,
            })
        })
        .collect()
}

fn per_day(m: BTreeMap<i64, i64>) -> Vec<PeriodCount> {
    m.into_iter()
        .map(|(d, count)| PeriodCount {
            start: d * DAY,
            count,
        })
        .collect()
}

/// Failed sign-ins (a coalesced event of refusals during a lockout counts each attempt it
/// records) and lockouts (the failure that locked an account), per day.
fn sign_in_failures(
    conn: &mut DbConnection,
    from: i64,
    to: i64,
) -> Result<(Vec<PeriodCount>, Vec<PeriodCount>)> {
    let mut failed: BTreeMap<i64, i64> = BTreeMap::new();
    let mut locked: BTreeMap<i64, i64> = BTreeMap::new();
    for (at, detail) in audit::failed_logins(conn, from, to)? {
        let day = at.div_euclid(DAY);
        *failed.entry(day).or_default() += attempts_recorded(detail.as_deref());
        if locked_an_account(detail.as_deref()) {
            *locked.entry(day).or_default() += 1;
        }
    }
    Ok((per_day(failed), per_day(locked)))
}

/// The activity report for `[from, to)`, with the `top` principals of each list.
pub fn activity(
    cx: &Ctx<'_>,
    conn: &mut DbConnection,
    from: i64,
    to: i64,
    top: i64,
) -> Result<Activity> {
    may_view_activity(cx)?;
    // Approval metrics are an Approver's right; others get the rest of the report.
    let approvals = cx
        .authorize(Action::ViewApprovalMetrics, Target::Org)
        .is_ok();
    let logins = audit::logins(conn, from, to)?;
    let evaluations = audit::top_actors(conn, Counted::Action("feature.evaluated"), from, to, top)?;
    let changes = audit::top_actors(conn, Counted::Changes, from, to, top)?;
    let (failed, locked) = sign_in_failures(conn, from, to)?;
    Ok(Activity {
        active_users_per_day: active_users(&logins, DAY, 0),
        active_users_per_week: active_users(&logins, WEEK, WEEK_OFFSET),
        feature_evaluations_by_user: named(conn, evaluations)?,
        most_active_contributors: named(conn, changes)?,
        failed_sign_ins_per_day: failed,
        lockouts_per_day: locked,
        approval_response_times: match approvals {
            true => Some(approval_metrics::compute(conn, None, from, to)?),
            false => None,
        },
    })
}
