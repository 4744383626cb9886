//! AuditService: the adapter over [`fluxgate_core::trail`] (query, verify and export the
//! trail; internal services append their events; the activity report).

use std::pin::Pin;
use std::sync::Arc;

use fluxgate_core::trail::{
    self, Activity, Event, Filter, Ingest, PeriodCount, PrincipalCount, Reported,
};
use fluxgate_domain::Violations;
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::audit_service_server::AuditService;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::reply;
use crate::audit_json::{event_pb, json_line};
use crate::auth::RequestCtx;
use crate::convert::{PageToken, field, micros, parse_principal, timestamp};
use crate::directory::Principal;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Most events one ingest call may carry.
pub const MAX_INGEST: usize = 500;
/// Events per export chunk.
const EXPORT_CHUNK: i64 = 1000;
const DAY: i64 = 86_400_000_000;

#[derive(Debug, Clone)]
pub struct AuditSvc {
    pub state: Arc<AppState>,
}

/// A protobuf timestamp as microseconds, or a violation on `field`.
fn text(v: &mut Violations, field: &str, s: &str, max: usize) -> Option<String> {
    if s.is_empty() {
        return None;
    }
    if s.chars().count() > max || s.chars().any(char::is_control) {
        v.add(
            field,
            format!("must be at most {max} characters, without control characters"),
        );
        return None;
    }
    Some(s.to_owned())
}

fn range(v: &mut Violations, from: Option<i64>, to: Option<i64>) {
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        v.add("end_time", "must be after start_time");
    }
}

type ExportStream =
    Pin<Box<dyn Stream<Item = Result<pb::ExportAuditEventsResponse, Status>> + Send>>;

/// The filters a listing's page tokens are bound to.
type ListKey = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

fn outcome(v: &mut Violations, o: &str) -> Option<String> {
    match o {
        "" => None,
        o @ ("success" | "failure" | "denied" | "reported") => Some(o.to_owned()),
        _ => {
            v.add("outcome", "must be success, failure, denied or reported");
            None
        }
    }
}

fn list_limit(v: &mut Violations, size: i32) -> i64 {
    match size {
        n if n < 0 => {
            v.add("page_size", "must not be negative");
            0
        }
        0 => 100,
        n => i64::from(n.min(1000)),
    }
}

fn list_after(token: &str, key: &ListKey) -> ApiResult<Option<(i64, i64)>> {
    let bad = || ApiError::invalid("page_token", "is not a page token issued by this service");
    PageToken::decode(token, key)?
        .map(|a| {
            a.split_once(':')
                .and_then(|(t, s)| Some((t.parse::<i64>().ok()?, s.parse::<i64>().ok()?)))
                .ok_or_else(bad)
        })
        .transpose()
}

fn period_pb(p: &PeriodCount) -> pb::PeriodCount {
    pb::PeriodCount {
        period_start: Some(timestamp(p.start)),
        count: p.count,
    }
}

fn principal_pb(p: &PrincipalCount) -> pb::PrincipalCount {
    pb::PrincipalCount {
        principal: p.principal.clone(),
        display_name: p.display_name.clone(),
        count: p.count,
    }
}

fn activity_pb(a: Activity) -> pb::GetActivityReportResponse {
    let periods = |v: &[PeriodCount]| v.iter().map(period_pb).collect();
    let principals = |v: &[PrincipalCount]| v.iter().map(principal_pb).collect();
    pb::GetActivityReportResponse {
        active_users_per_day: periods(&a.active_users_per_day),
        active_users_per_week: periods(&a.active_users_per_week),
        feature_evaluations_by_user: principals(&a.feature_evaluations_by_user),
        most_active_contributors: principals(&a.most_active_contributors),
        failed_sign_ins_per_day: periods(&a.failed_sign_ins_per_day),
        lockouts_per_day: periods(&a.lockouts_per_day),
        approval_response_times: a
            .approval_response_times
            .map(crate::convert::approval_metrics),
    }
}

/// An activity report's range and list length.
fn report_window(r: pb::GetActivityReportRequest) -> ApiResult<(i64, i64, i64)> {
    let pb::GetActivityReportRequest {
        start_time,
        end_time,
        top,
    } = r;
    let mut v = Violations::new();
    let from = micros(&mut v, "start_time", &start_time);
    let to = micros(&mut v, "end_time", &end_time);
    if start_time.is_none() {
        v.add("start_time", "is required");
    }
    if end_time.is_none() {
        v.add("end_time", "is required");
    }
    range(&mut v, from, to);
    if let (Some(f), Some(t)) = (from, to)
        && t - f > 400 * DAY
    {
        v.add("end_time", "the range may span at most 400 days");
    }
    let top = match top {
        0 => 10,
        n if (1..=100).contains(&n) => i64::from(n),
        _ => {
            v.add("top", "must be between 1 and 100");
            10
        }
    };
    v.finish()?;
    let missing = || ApiError::Internal("validation passed without a range".into());
    Ok((from.ok_or_else(missing)?, to.ok_or_else(missing)?, top))
}

fn action_ok(a: &str) -> bool {
    !a.is_empty()
        && a.len() <= 100
        && a.contains('.')
        && a.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
}

fn target_type_ok(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A reported event's action: well formed, outside FluxGate's own namespaces.
fn check_action(v: &mut Violations, f: &impl Fn(&str) -> String, action: &str) {
    if !action_ok(action) {
        let must = "must be 1 to 100 characters of a-z, 0-9, _ and ., with a namespace (e.g. \
                    feature.evaluated)";
        v.add(f("action"), must);
    } else if trail::is_reserved(action) {
        v.add(f("action"), "uses a namespace FluxGate writes itself");
    }
}

impl AuditSvc {
    /// An actor or target filter: events name principals by id, so `users/{username}` is
    /// resolved to the user's id here (or refused when nobody has that name: an empty answer
    /// would wrongly say the user did nothing). Other names are matched as given.
    fn principal_filter(&self, v: &mut Violations, field: &str, s: &str) -> Option<String> {
        let name = text(v, field, s, 300)?;
        if !name.starts_with("users/") {
            return Some(name);
        }
        let username = match crate::convert::parse_user_name(field, &name) {
            Ok(crate::convert::UserRef::Id(_)) => return Some(name),
            Ok(crate::convert::UserRef::Username(n)) => n,
            Err(e) => {
                crate::convert::field::<()>(v, Err(e));
                return None;
            }
        };
        match self.state.directory.user_by_name(&username) {
            Some(id) => Some(format!("users/{id}")),
            None => {
                let why = "no user has this username; name a deleted user by id (users/{id})";
                v.add(field, why);
                None
            }
        }
    }

    fn list_filter(&self, r: pb::ListAuditEventsRequest) -> ApiResult<(Filter, i64, String)> {
        let pb::ListAuditEventsRequest {
            page_size,
            page_token,
            actor,
            target,
            action,
            start_time,
            end_time,
            outcome: o,
        } = r;
        let mut v = Violations::new();
        let filter = Filter {
            actor: self.principal_filter(&mut v, "actor", &actor),
            target: self.principal_filter(&mut v, "target", &target),
            action: text(&mut v, "action", &action, 100),
            from: micros(&mut v, "start_time", &start_time),
            to: micros(&mut v, "end_time", &end_time),
            outcome: outcome(&mut v, &o),
        };
        range(&mut v, filter.from, filter.to);
        let limit = list_limit(&mut v, page_size);
        v.finish()?;
        Ok((filter, limit, page_token))
    }

    async fn list(
        &self,
        ctx: &RequestCtx,
        p: &Principal,
        r: pb::ListAuditEventsRequest,
    ) -> ApiResult<pb::ListAuditEventsResponse> {
        self.state.judge(ctx, p, trail::may_read)?;
        let (filter, limit, token) = self.list_filter(r)?;
        let key: ListKey = (
            filter.actor.clone(),
            filter.target.clone(),
            filter.action.clone(),
            filter.from,
            filter.to,
            filter.outcome.clone(),
        );
        let after = list_after(&token, &key)?;
        let mut page = self
            .state
            .query(ctx, p, move |cx, conn| {
                trail::query(cx, conn, &filter, after, limit + 1)
            })
            .await?;
        let more = page.len() as i64 > limit;
        page.truncate(limit as usize);
        let next_page_token = match (more, page.last()) {
            (true, Some(last)) => {
                let after = format!("{}:{}", last.occurred_at, last.seq);
                PageToken { after, filter: key }.encode()
            }
            _ => String::new(),
        };
        let events = page.iter().map(event_pb).collect();
        Ok(pb::ListAuditEventsResponse {
            events,
            next_page_token,
        })
    }

    /// A reported event's actor (a principal's name, if given) and that principal's name now.
    fn reported_actor(
        &self,
        v: &mut Violations,
        field_name: &str,
        actor: String,
    ) -> (Option<String>, Option<String>) {
        if actor.is_empty() {
            return (None, None);
        }
        if field(v, parse_principal(field_name, &actor)).is_none() {
            return (None, None);
        }
        let name = actor
            .parse::<fluxgate_domain::PrincipalId>()
            .ok()
            .and_then(|id| self.state.directory.principal(id))
            .map(|p| p.name);
        (Some(actor), name)
    }

    /// One reported event, checked (violations under `events[i]`).
    fn reported(&self, v: &mut Violations, i: usize, e: pb::IngestedEvent, now: i64) -> Reported {
        let pb::IngestedEvent {
            actor,
            action,
            target_type,
            target,
            detail,
            time,
        } = e;
        let f = |n: &str| format!("events[{i}].{n}");
        check_action(v, &f, &action);
        let (actor, actor_name) = self.reported_actor(v, &f("actor"), actor);
        if !target_type_ok(&target_type) {
            v.add(
                f("target_type"),
                "must be 1 to 64 characters of a-z, 0-9 and _",
            );
        }
        let target = text(v, &f("target"), &target, 300);
        let detail = text(v, &f("detail"), &detail, 1000);
        let at = micros(v, &f("time"), &time).unwrap_or(now);
        if at > now + 300_000_000 {
            v.add(
                f("time"),
                "must not be more than five minutes in the future",
            );
        }
        Reported {
            action,
            target_type,
            target,
            actor,
            actor_name,
            detail,
            at,
        }
    }

    fn ingest_cmd(&self, r: pb::IngestAuditEventsRequest) -> ApiResult<Ingest> {
        let pb::IngestAuditEventsRequest { events } = r;
        let mut v = Violations::new();
        if events.is_empty() || events.len() > MAX_INGEST {
            v.add("events", format!("must hold 1 to {MAX_INGEST} events"));
        }
        let now = fluxgate_core::time::now_micros();
        let events = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| self.reported(&mut v, i, e, now))
            .collect();
        v.finish()?;
        Ok(Ingest { events })
    }
}

/// One export chunk: the events as JSON lines, with the (time, sequence) of the last.
fn chunk(batch: &[Event]) -> Option<(pb::ExportAuditEventsResponse, (i64, i64))> {
    let last = batch.last()?;
    let mut json_lines = Vec::with_capacity(batch.len() * 512);
    for e in batch {
        json_line(e, &mut json_lines);
    }
    let event_count = batch.len() as i32;
    let msg = pb::ExportAuditEventsResponse {
        json_lines,
        event_count,
    };
    Some((msg, (last.occurred_at, last.seq)))
}

/// Sends the events of `filter` in chain order, a chunk at a time (read and encoded on the
/// blocking pool), until there are no more or the client goes away.
async fn export(
    svc: AuditSvc,
    ctx: RequestCtx,
    p: Principal,
    filter: Filter,
    tx: tokio::sync::mpsc::Sender<Result<pb::ExportAuditEventsResponse, Status>>,
) {
    let mut after = None;
    loop {
        let f = filter.clone();
        let read = svc.state.query(&ctx, &p, move |cx, conn| {
            Ok(chunk(&trail::query(cx, conn, &f, after, EXPORT_CHUNK)?))
        });
        let (msg, last) = match read.await {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        after = Some(last);
        if tx.send(Ok(msg)).await.is_err() {
            return; // the client went away
        }
    }
}

#[tonic::async_trait]
impl AuditService for AuditSvc {
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let msg = self.list(&ctx, &p, req).await?;
        Ok(reply(msg, &ctx, None))
    }

    async fn verify_audit_chain(
        &self,
        request: Request<pb::VerifyAuditChainRequest>,
    ) -> Result<Response<pb::VerifyAuditChainResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::VerifyAuditChainRequest {} = req;
        let v = self.state.query(&ctx, &p, trail::verify).await?;
        let cp = v.checkpoint.unwrap_or_default();
        let msg = pb::VerifyAuditChainResponse {
            valid: v.broken.is_none(),
            first_broken_sequence: v.broken.unwrap_or(0),
            events_checked: v.checked,
            checkpoint_sequence: cp.seq,
            checkpoint_hash: cp.hash,
            checkpoint_archive: cp.archive,
            checkpoint_archive_sha256: cp.archive_sha256,
        };
        Ok(reply(msg, &ctx, None))
    }

    type ExportAuditEventsStream = ExportStream;

    async fn export_audit_events(
        &self,
        request: Request<pb::ExportAuditEventsRequest>,
    ) -> Result<Response<ExportStream>, Status> {
        let (ctx, p, req) = authed!(self, request);
        self.state.judge(&ctx, &p, trail::may_read)?;
        let pb::ExportAuditEventsRequest {
            start_time,
            end_time,
        } = req;
        let mut v = Violations::new();
        let filter = Filter {
            from: micros(&mut v, "start_time", &start_time),
            to: micros(&mut v, "end_time", &end_time),
            ..Filter::default()
        };
        range(&mut v, filter.from, filter.to);
        v.finish().map_err(ApiError::from)?;
        // A bounded channel: the reader stays at most a few chunks ahead of the client.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(export(self.clone(), ctx.clone(), p, filter, tx));
        Ok(reply(
            Box::pin(ReceiverStream::new(rx)) as ExportStream,
            &ctx,
            None,
        ))
    }

    async fn ingest_audit_events(
        &self,
        request: Request<pb::IngestAuditEventsRequest>,
    ) -> Result<Response<pb::IngestAuditEventsResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        self.state.judge(&ctx, &p, trail::may_ingest)?;
        let done = self
            .state
            .execute(&ctx, Some(&p), self.ingest_cmd(req)?)
            .await?;
        let msg = pb::IngestAuditEventsResponse {
            sequences: done.value,
        };
        Ok(reply(msg, &ctx, None))
    }

    async fn get_activity_report(
        &self,
        request: Request<pb::GetActivityReportRequest>,
    ) -> Result<Response<pb::GetActivityReportResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        self.state.judge(&ctx, &p, trail::may_view_activity)?;
        let (from, to, top) = report_window(req)?;
        let a = self
            .state
            .query(&ctx, &p, move |cx, conn| {
                trail::activity(cx, conn, from, to, top)
            })
            .await?;
        Ok(reply(activity_pb(a), &ctx, None))
    }
}
