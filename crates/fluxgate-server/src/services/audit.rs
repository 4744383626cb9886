//! AuditService: query, verify and export the trail; internal services append their events;
//! the activity report.

use std::collections::{BTreeMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;

use fluxgate_authz::{Action, Target};
use fluxgate_domain::Violations;
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::audit_service_server::AuditService;
use fluxgate_store::audit::{self, Counted, Event, Filter};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::reply;
use crate::auth::RequestCtx;
use crate::convert::{PageToken, field, micros, parse_principal, timestamp};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Most events one ingest call may carry.
pub const MAX_INGEST: usize = 500;
/// Events per export chunk.
const EXPORT_CHUNK: i64 = 1000;
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

#[derive(Debug, Clone)]
pub struct AuditSvc {
    pub state: Arc<AppState>,
}

fn event_pb(e: &Event) -> pb::AuditEvent {
    pb::AuditEvent {
        sequence: e.seq,
        time: Some(timestamp(e.occurred_at)),
        actor: e.actor_id.clone().unwrap_or_default(),
        actor_display_name: e.actor_name.clone().unwrap_or_default(),
        actor_role: e.actor_role.clone().unwrap_or_default(),
        action: e.action.clone(),
        target_type: e.target_type.clone(),
        target: e.target_id.clone().unwrap_or_default(),
        before_json: e.before_json.clone().unwrap_or_default(),
        after_json: e.after_json.clone().unwrap_or_default(),
        outcome: e.outcome.clone(),
        detail: e.detail.clone().unwrap_or_default(),
        request_id: e.request_id.clone().unwrap_or_default(),
        peer: e.peer_addr.clone().unwrap_or_default(),
        hash: e.hash.clone(),
        previous_hash: e.prev_hash.clone(),
    }
}

/// The one JSON form of an event, for export lines as for ListAuditEvents through grpcurl or
/// `fluxctl -o json`: the canonical protobuf JSON mapping of `AuditEvent` (lowerCamelCase names,
/// 64-bit numbers as strings, RFC 3339 times, defaults omitted).
fn json_line(e: &Event, out: &mut Vec<u8>) {
    use prost::Message as _;
    static DESCRIPTOR: std::sync::OnceLock<Option<prost_reflect::MessageDescriptor>> =
        std::sync::OnceLock::new();
    let Some(desc) = DESCRIPTOR.get_or_init(|| {
        prost_reflect::DescriptorPool::decode(fluxgate_proto::FILE_DESCRIPTOR_SET)
            .ok()?
            .get_message_by_name("fluxgate.v1.AuditEvent")
    }) else {
        tracing::error!("fluxgate.v1.AuditEvent is not in the descriptor set");
        return;
    };
    let Ok(dynamic) =
        prost_reflect::DynamicMessage::decode(desc.clone(), event_pb(e).encode_to_vec().as_slice())
    else {
        return;
    };
    if serde_json::to_writer(&mut *out, &dynamic).is_ok() {
        out.push(b'\n');
    }
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
                v.add(
                    field,
                    "no user has this username; name a deleted user by id (users/{id})",
                );
                None
            }
        }
    }

    async fn list(
        &self,
        ctx: RequestCtx,
        req: Request<pb::ListAuditEventsRequest>,
    ) -> ApiResult<Response<pb::ListAuditEventsResponse>> {
        let p = self.state.authenticate(&req, &ctx).await?;
        self.state.authorize(&p, Action::ReadAudit, Target::Org)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let filter = Filter {
            actor: self.principal_filter(&mut v, "actor", &r.actor),
            target: self.principal_filter(&mut v, "target", &r.target),
            action: text(&mut v, "action", &r.action, 100),
            from: micros(&mut v, "start_time", &r.start_time),
            to: micros(&mut v, "end_time", &r.end_time),
            outcome: match r.outcome.as_str() {
                "" => None,
                o @ ("success" | "failure" | "denied" | "reported") => Some(o.to_owned()),
                _ => {
                    v.add("outcome", "must be success, failure, denied or reported");
                    None
                }
            },
        };
        range(&mut v, filter.from, filter.to);
        let limit = match r.page_size {
            n if n < 0 => {
                v.add("page_size", "must not be negative");
                0
            }
            0 => 100,
            n => i64::from(n.min(1000)),
        };
        v.finish()?;
        let key = (
            filter.actor.clone(),
            filter.target.clone(),
            filter.action.clone(),
            filter.from,
            filter.to,
            filter.outcome.clone(),
        );
        let after = match PageToken::decode(&r.page_token, &key)? {
            None => None,
            Some(a) => Some(
                a.split_once(':')
                    .and_then(|(t, s)| Some((t.parse::<i64>().ok()?, s.parse::<i64>().ok()?)))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "page_token",
                            "is not a page token issued by this service",
                        )
                    })?,
            ),
        };
        let mut page = self
            .state
            .db
            .read(move |conn| Ok(audit::query(conn, &filter, after, limit + 1)?))
            .await?;
        let more = page.len() as i64 > limit;
        page.truncate(limit as usize);
        let next_page_token = match (more, page.last()) {
            (true, Some(last)) => PageToken {
                after: format!("{}:{}", last.occurred_at, last.seq),
                filter: key,
            }
            .encode(),
            _ => String::new(),
        };
        Ok(reply(
            pb::ListAuditEventsResponse {
                events: page.iter().map(event_pb).collect(),
                next_page_token,
            },
            &ctx,
            None,
        ))
    }

    async fn ingest(
        &self,
        ctx: RequestCtx,
        req: Request<pb::IngestAuditEventsRequest>,
    ) -> ApiResult<Response<pb::IngestAuditEventsResponse>> {
        let p = self.state.authenticate(&req, &ctx).await?;
        self.state.authorize(&p, Action::IngestAudit, Target::Org)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        if r.events.is_empty() || r.events.len() > MAX_INGEST {
            v.add("events", format!("must hold 1 to {MAX_INGEST} events"));
        }
        let now = fluxgate_store::now_micros();
        let mut rows = Vec::with_capacity(r.events.len());
        for (i, e) in r.events.iter().enumerate() {
            let f = |n: &str| format!("events[{i}].{n}");
            let action_ok = !e.action.is_empty()
                && e.action.len() <= 100
                && e.action.contains('.')
                && e.action
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
            if !action_ok {
                v.add(f("action"), "must be 1 to 100 characters of a-z, 0-9, _ and ., with a namespace (e.g. feature.evaluated)");
            } else if RESERVED.iter().any(|ns| e.action.starts_with(ns)) {
                v.add(f("action"), "uses a namespace FluxGate writes itself");
            }
            let actor = if e.actor.is_empty() {
                None
            } else {
                field(&mut v, parse_principal(&f("actor"), &e.actor)).map(|_| e.actor.clone())
            };
            if e.target_type.is_empty()
                || e.target_type.len() > 64
                || !e
                    .target_type
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                v.add(
                    f("target_type"),
                    "must be 1 to 64 characters of a-z, 0-9 and _",
                );
            }
            let target = text(&mut v, &f("target"), &e.target, 300);
            let detail = text(&mut v, &f("detail"), &e.detail, 1000);
            let at = micros(&mut v, &f("time"), &e.time).unwrap_or(now);
            if at > now + 300_000_000 {
                v.add(
                    f("time"),
                    "must not be more than five minutes in the future",
                );
            }
            let actor_name = actor.as_deref().and_then(|a| {
                let id = a
                    .strip_prefix("users/")
                    .and_then(|u| u.parse().ok())
                    .map(fluxgate_domain::PrincipalId::User)
                    .or_else(|| {
                        a.strip_prefix("serviceAccounts/")
                            .and_then(|s| s.parse().ok())
                            .map(fluxgate_domain::PrincipalId::ServiceAccount)
                    })?;
                self.state.directory.principal(id).map(|p| p.name)
            });
            let mut ev = ctx.event(None, &e.action, &e.target_type, target);
            ev.actor_id = actor;
            ev.actor_name = actor_name;
            ev.outcome = "reported".into();
            ev.detail = Some(match detail {
                Some(d) => format!("reported by {}: {d}", p.id),
                None => format!("reported by {}", p.id),
            });
            rows.push((ev, at));
        }
        v.finish()?;
        let committed = self
            .state
            .db
            .write(move |tx| {
                let mut seqs = Vec::with_capacity(rows.len());
                for (ev, at) in rows {
                    seqs.push(audit::append(tx.conn, ev, at)?.seq);
                }
                Ok(seqs)
            })
            .await?;
        Ok(reply(
            pb::IngestAuditEventsResponse {
                sequences: committed.value,
            },
            &ctx,
            None,
        ))
    }

    async fn report(
        &self,
        ctx: RequestCtx,
        req: Request<pb::GetActivityReportRequest>,
    ) -> ApiResult<Response<pb::GetActivityReportResponse>> {
        let p = self.state.authenticate(&req, &ctx).await?;
        self.state
            .authorize(&p, Action::ViewAnalytics, Target::Org)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let from = micros(&mut v, "start_time", &r.start_time);
        let to = micros(&mut v, "end_time", &r.end_time);
        if r.start_time.is_none() {
            v.add("start_time", "is required");
        }
        if r.end_time.is_none() {
            v.add("end_time", "is required");
        }
        range(&mut v, from, to);
        if let (Some(f), Some(t)) = (from, to)
            && t - f > 400 * DAY
        {
            v.add("end_time", "the range may span at most 400 days");
        }
        let top = match r.top {
            0 => 10,
            n if (1..=100).contains(&n) => i64::from(n),
            _ => {
                v.add("top", "must be between 1 and 100");
                10
            }
        };
        v.finish()?;
        let (Some(from), Some(to)) = (from, to) else {
            return Err(ApiError::Internal(
                "validation passed without a range".into(),
            ));
        };
        // Approval metrics are an Approver's right; others get the rest of the report.
        let approvals = self
            .state
            .authorize(&p, Action::ViewApprovalMetrics, Target::Org)
            .is_ok();
        let resp = self
            .state
            .db
            .read(move |conn| {
                let logins = audit::logins(conn, from, to)?;
                let bucket = |period: i64, offset: i64| {
                    let mut m: BTreeMap<i64, HashSet<String>> = BTreeMap::new();
                    for (actor, at) in &logins {
                        if let Some(a) = actor {
                            m.entry((at - offset).div_euclid(period))
                                .or_default()
                                .insert(a.clone());
                        }
                    }
                    m.into_iter()
                        .map(|(b, set)| pb::PeriodCount {
                            period_start: Some(timestamp(b * period + offset)),
                            count: set.len() as i64,
                        })
                        .collect::<Vec<_>>()
                };
                fn named(
                    conn: &mut fluxgate_store::DbConnection,
                    rows: Vec<(String, i64)>,
                ) -> ApiResult<Vec<pb::PrincipalCount>> {
                    rows.into_iter()
                        .map(|(principal, count)| {
                            let display_name =
                                audit::latest_actor_name(conn, &principal)?.unwrap_or_default();
                            Ok(pb::PrincipalCount {
                                principal,
                                display_name,
                                count,
                            })
                        })
                        .collect()
                }
                let evaluations =
                    audit::top_actors(conn, Counted::Action("feature.evaluated"), from, to, top)?;
                let evaluations = named(conn, evaluations)?;
                let changes = audit::top_actors(conn, Counted::Changes, from, to, top)?;
                let changes = named(conn, changes)?;
                // Failed sign-ins (a coalesced event of refusals during a lockout counts each
                // attempt it records) and lockouts (the failure that locked an account), per day.
                let mut failed: BTreeMap<i64, i64> = BTreeMap::new();
                let mut locked: BTreeMap<i64, i64> = BTreeMap::new();
                for (at, detail) in audit::failed_logins(conn, from, to)? {
                    let day = at.div_euclid(DAY);
                    *failed.entry(day).or_default() +=
                        fluxgate_core::logins::attempts_recorded(detail.as_deref());
                    if fluxgate_core::logins::locked_an_account(detail.as_deref()) {
                        *locked.entry(day).or_default() += 1;
                    }
                }
                let per_day = |m: BTreeMap<i64, i64>| {
                    m.into_iter()
                        .map(|(d, count)| pb::PeriodCount {
                            period_start: Some(timestamp(d * DAY)),
                            count,
                        })
                        .collect::<Vec<_>>()
                };
                Ok(pb::GetActivityReportResponse {
                    active_users_per_day: bucket(DAY, 0),
                    active_users_per_week: bucket(WEEK, WEEK_OFFSET),
                    feature_evaluations_by_user: evaluations,
                    most_active_contributors: changes,
                    failed_sign_ins_per_day: per_day(failed),
                    lockouts_per_day: per_day(locked),
                    approval_response_times: if approvals {
                        Some(crate::convert::approval_metrics(
                            fluxgate_core::approval_metrics::compute(conn, None, from, to)?,
                        ))
                    } else {
                        None
                    },
                })
            })
            .await?;
        Ok(reply(resp, &ctx, None))
    }
}

#[tonic::async_trait]
impl AuditService for AuditSvc {
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        Ok(self.list(ctx, request).await?)
    }

    async fn verify_audit_chain(
        &self,
        request: Request<pb::VerifyAuditChainRequest>,
    ) -> Result<Response<pb::VerifyAuditChainResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        let p = self.state.authenticate(&request, &ctx).await?;
        self.state.authorize(&p, Action::ReadAudit, Target::Org)?;
        let (broken, checked) = self
            .state
            .db
            .read(|conn| Ok(audit::verify_counting(conn)?))
            .await?;
        Ok(reply(
            pb::VerifyAuditChainResponse {
                valid: broken.is_none(),
                first_broken_sequence: broken.unwrap_or(0),
                events_checked: checked,
            },
            &ctx,
            None,
        ))
    }

    type ExportAuditEventsStream = ExportStream;

    async fn export_audit_events(
        &self,
        request: Request<pb::ExportAuditEventsRequest>,
    ) -> Result<Response<ExportStream>, Status> {
        let ctx = RequestCtx::of(&request)?;
        let p = self.state.authenticate(&request, &ctx).await?;
        self.state.authorize(&p, Action::ReadAudit, Target::Org)?;
        let r = request.into_inner();
        let mut v = Violations::new();
        let filter = Filter {
            from: micros(&mut v, "start_time", &r.start_time),
            to: micros(&mut v, "end_time", &r.end_time),
            ..Filter::default()
        };
        range(&mut v, filter.from, filter.to);
        v.finish().map_err(ApiError::from)?;
        // A bounded channel: the reader stays at most a few chunks ahead of the client.
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<pb::ExportAuditEventsResponse, Status>>(4);
        let store = self.state.db.store().clone();
        tokio::task::spawn_blocking(move || {
            let mut after = None;
            loop {
                let batch =
                    match store.read(|conn| audit::query(conn, &filter, after, EXPORT_CHUNK)) {
                        Ok(b) => b,
                        Err(e) => {
                            let _ = tx.blocking_send(Err(ApiError::from(e).into()));
                            return;
                        }
                    };
                let Some(last) = batch.last() else { return };
                after = Some((last.occurred_at, last.seq));
                let mut json_lines = Vec::with_capacity(batch.len() * 512);
                for e in &batch {
                    json_line(e, &mut json_lines);
                }
                let chunk = pb::ExportAuditEventsResponse {
                    json_lines,
                    event_count: batch.len() as i32,
                };
                if tx.blocking_send(Ok(chunk)).is_err() {
                    return; // the client went away
                }
            }
        });
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
        let ctx = RequestCtx::of(&request)?;
        Ok(self.ingest(ctx, request).await?)
    }

    async fn get_activity_report(
        &self,
        request: Request<pb::GetActivityReportRequest>,
    ) -> Result<Response<pb::GetActivityReportResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        Ok(self.report(ctx, request).await?)
    }
}
