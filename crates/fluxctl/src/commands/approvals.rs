//! `change-requests`: submit, review, wait for the decision, mark applied.

use std::time::Duration;

use clap::{Args, Subcommand};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::approval_service_client::ApprovalServiceClient;
use tokio::time::Instant;

use crate::args::{ChangeKind, State, parse_payload, principal, qualify};
use crate::client::{Call, Ctx};
use crate::error::{CliError, Result, exit};
use crate::names::{self, EnvironmentScope};
use crate::output::{self, Fields, Format, Table, emit, next_page_hint};

/// Pause before watching again after the server ended the stream (e.g. it restarted).
const REWATCH_DELAY: Duration = Duration::from_secs(1);
/// Consecutive failed watches before `wait` gives up, when no `--timeout` bounds it.
const MAX_REWATCHES: u32 = 30;

/// `fluxctl change-requests …`
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Submit a change request
    Submit(SubmitArgs),
    /// Show a change request with its reviews (`changeRequests/{id}` or the bare id)
    Get { name: String },
    /// List change requests, newest first
    List(ListArgs),
    /// Approve a pending request
    Approve {
        name: String,
        /// The revision you reviewed [default: the current one, which is printed]
        #[arg(long)]
        revision: Option<i64>,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Reject a pending request
    Reject {
        name: String,
        /// Why (required)
        #[arg(long)]
        comment: String,
        /// The revision you reviewed [default: whatever it now says]
        #[arg(long)]
        revision: Option<i64>,
    },
    /// Cancel a pending or approved request
    Cancel {
        name: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        etag: Option<String>,
    },
    /// Approve past the policy (Team Admins, where the policy allows it)
    Override {
        name: String,
        /// Why the policy is bypassed (required)
        #[arg(long)]
        reason: String,
        /// The revision you reviewed [default: the current one, which is printed]
        #[arg(long)]
        revision: Option<i64>,
    },
    /// Wait for the decision: exit 0 when approved, 10 rejected, 11 cancelled or expired,
    /// 12 when --timeout runs out first
    Wait { name: String },
    /// Mark an approved request applied (the flag store's service account)
    MarkApplied { name: String },
    /// Change a pending request you submitted (a new revision; its approvals start over)
    Edit(EditArgs),
    /// Approval response times and pending work (Approvers and Team Admins)
    Metrics {
        /// Only this environment (name or id, with --application and --portfolio where it is
        /// not unique)
        #[arg(long)]
        environment: Option<String>,
        #[command(flatten)]
        scope: EnvironmentScope,
        /// From [default: 30 days before the end]
        #[arg(long, value_parser = crate::args::parse_time)]
        start_time: Option<prost_types::Timestamp>,
        /// Until [default: now]
        #[arg(long, value_parser = crate::args::parse_time)]
        end_time: Option<prost_types::Timestamp>,
    },
}

/// Arguments of `change-requests edit`: only the given fields change.
#[derive(Debug, Args)]
pub struct EditArgs {
    /// `changeRequests/{id}` or the id
    pub name: String,
    #[arg(long)]
    pub feature: Option<String>,
    #[arg(long, value_parser = crate::args::AnySpelling::<ChangeKind>::new())]
    pub kind: Option<ChangeKind>,
    #[arg(long)]
    pub title: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    /// The new payload, a JSON object
    #[arg(long, value_parser = parse_payload)]
    pub payload: Option<prost_types::Struct>,
    /// The reviewers to ask instead (repeatable; `--reviewer ''` asks nobody by name)
    #[arg(long = "reviewer")]
    pub reviewers: Option<Vec<String>>,
    #[arg(long)]
    pub etag: Option<String>,
}

/// Arguments of `change-requests submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The environment: its name or id (with --application and --portfolio where it is not
    /// unique), or its full name
    #[arg(long)]
    pub environment: String,
    #[command(flatten)]
    pub scope: EnvironmentScope,
    /// The feature's key
    #[arg(long)]
    pub feature: String,
    #[arg(long, value_parser = crate::args::AnySpelling::<ChangeKind>::new())]
    pub kind: ChangeKind,
    /// 1 to 100 characters
    #[arg(long)]
    pub title: String,
    #[arg(long)]
    pub description: Option<String>,
    /// What the flag store needs, as a JSON object (e.g. '{"value": true}')
    #[arg(long, value_parser = parse_payload, conflicts_with = "payload_file")]
    pub payload: Option<prost_types::Struct>,
    /// Read the JSON payload from a file
    #[arg(long)]
    pub payload_file: Option<std::path::PathBuf>,
    /// A reviewer to ask (a username or `users/…`; repeatable). Only they are emailed.
    #[arg(long = "reviewer")]
    pub reviewers: Vec<String>,
}

/// Arguments of `change-requests list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only these states (repeatable)
    #[arg(long = "state", value_parser = crate::args::AnySpelling::<State>::new())]
    pub states: Vec<State>,
    /// Only this environment (name or id, with --application and --portfolio where it is not
    /// unique)
    #[arg(long)]
    pub environment: Option<String>,
    #[command(flatten)]
    pub scope: EnvironmentScope,
    /// `users/…`, a username or `serviceAccounts/…`
    #[arg(long)]
    pub submitter: Option<String>,
    /// Only pending requests you may review and have not reviewed yet
    #[arg(long)]
    pub awaiting_my_review: bool,
    #[arg(long, default_value_t = 0)]
    pub page_size: i32,
    #[arg(long)]
    pub page_token: Option<String>,
}

/// Runs a `change-requests` command.
pub async fn run(ctx: &mut Ctx, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Submit(a) => submit(ctx, a).await,
        Cmd::Edit(a) => edit(ctx, a).await,
        Cmd::Metrics {
            environment,
            scope,
            start_time,
            end_time,
        } => {
            let (start, end) = crate::args::range_or_last_30_days(start_time, end_time);
            let environment = match environment {
                Some(e) => names::environment(ctx, &e, &scope).await?,
                None => String::new(),
            };
            let req = pb::GetApprovalMetricsRequest {
                environment,
                start_time: Some(start),
                end_time: Some(end),
            };
            let r = rpc!(
                ctx,
                Call::Read,
                ApprovalServiceClient::get_approval_metrics,
                req
            )?;
            let json = output::to_json(&r)?;
            emit(ctx.format(), &r, |_| output::print_flat(&json))
        }
        Cmd::Get { name } => {
            let req = pb::GetChangeRequestRequest {
                name: cr_name(&name),
            };
            let r = rpc!(
                ctx,
                Call::Read,
                ApprovalServiceClient::get_change_request,
                req
            )?;
            emit(ctx.format(), &r, |r| show(r.change_request.as_ref()))
        }
        Cmd::List(a) => list(ctx, a).await,
        Cmd::Approve {
            name,
            revision,
            comment,
        } => approve(ctx, &name, revision, comment).await,
        Cmd::Reject {
            name,
            comment,
            revision,
        } => {
            let req = pb::RejectChangeRequestRequest {
                name: cr_name(&name),
                revision: revision.unwrap_or(0),
                comment,
            };
            let r = rpc!(
                ctx,
                Call::Write,
                ApprovalServiceClient::reject_change_request,
                req
            )?;
            emit(ctx.format(), &r, |r| show(r.change_request.as_ref()))
        }
        Cmd::Cancel { name, reason, etag } => {
            let req = pb::CancelChangeRequestRequest {
                name: cr_name(&name),
                etag: etag.unwrap_or_default(),
                reason: reason.unwrap_or_default(),
            };
            let r = rpc!(
                ctx,
                Call::Write,
                ApprovalServiceClient::cancel_change_request,
                req
            )?;
            emit(ctx.format(), &r, |r| show(r.change_request.as_ref()))
        }
        Cmd::Override {
            name,
            reason,
            revision,
        } => {
            let name = cr_name(&name);
            let revision = reviewed_revision(ctx, &name, revision).await?;
            let req = pb::OverrideChangeRequestRequest {
                name,
                revision,
                reason,
            };
            let r = rpc!(
                ctx,
                Call::Write,
                ApprovalServiceClient::override_change_request,
                req
            )?;
            emit(ctx.format(), &r, |r| show(r.change_request.as_ref()))
        }
        Cmd::Wait { name } => wait(ctx, &cr_name(&name)).await,
        Cmd::MarkApplied { name } => {
            let req = pb::MarkChangeRequestAppliedRequest {
                name: cr_name(&name),
            };
            let r = rpc!(
                ctx,
                Call::Write,
                ApprovalServiceClient::mark_change_request_applied,
                req
            )?;
            emit(ctx.format(), &r, |r| show(r.change_request.as_ref()))
        }
    }
}

fn cr_name(name: &str) -> String {
    qualify("changeRequests", name)
}

async fn submit(ctx: &mut Ctx, a: SubmitArgs) -> Result<()> {
    let payload = match (&a.payload_file, a.payload) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?;
            Some(parse_payload(&text).map_err(CliError::usage)?)
        }
        (None, p) => p,
    };
    let environment = names::environment(ctx, &a.environment, &a.scope).await?;
    let req = pb::SubmitChangeRequestRequest {
        change_request: Some(pb::ChangeRequest {
            environment,
            feature_key: a.feature,
            kind: pb::ChangeKind::from(a.kind) as i32,
            payload,
            title: a.title,
            description: a.description.unwrap_or_default(),
            requested_reviewers: reviewer_names(a.reviewers),
            ..Default::default()
        }),
        request_id: submit_request_id(ctx.idempotency_key()),
    };
    let r = rpc!(
        ctx,
        Call::Write,
        ApprovalServiceClient::submit_change_request,
        req
    )?;
    emit(ctx.format(), &r, |r| show(r.change_request.as_ref()))
}

/// The idempotency key as SubmitChangeRequest's `request_id` when it fits the field's rules
/// (1 to 64 letters, digits, `-` or `_`), so that a retried submission returns the first one.
fn submit_request_id(key: &str) -> String {
    let fits = (1..=64).contains(&key.len())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if fits { key.to_owned() } else { String::new() }
}

async fn list(ctx: &mut Ctx, a: ListArgs) -> Result<()> {
    let environment = match &a.environment {
        Some(e) => names::environment(ctx, e, &a.scope).await?,
        None => String::new(),
    };
    let req = pb::ListChangeRequestsRequest {
        states: a
            .states
            .into_iter()
            .map(|s| pb::ChangeRequestState::from(s) as i32)
            .collect(),
        environment,
        submitter: a.submitter.map(|s| principal(&s)).unwrap_or_default(),
        awaiting_my_review: a.awaiting_my_review,
        page_size: a.page_size,
        page_token: a.page_token.unwrap_or_default(),
    };
    let r = rpc!(
        ctx,
        Call::Read,
        ApprovalServiceClient::list_change_requests,
        req
    )?;
    emit(ctx.format(), &r, |r| {
        let mut t = Table::new(&["name", "state", "kind", "feature", "approvals", "title"]);
        for c in &r.change_requests {
            t.row(vec![
                c.name.clone(),
                state_name(c.state),
                kind_name(c.kind),
                c.feature_key.clone(),
                format!("{}/{}", c.approvals, c.required_approvals),
                c.title.clone(),
            ]);
        }
        t.print();
        next_page_hint(&r.next_page_token);
    })
}

async fn approve(
    ctx: &mut Ctx,
    name: &str,
    revision: Option<i64>,
    comment: Option<String>,
) -> Result<()> {
    let name = cr_name(name);
    let revision = reviewed_revision(ctx, &name, revision).await?;
    let req = pb::ApproveChangeRequestRequest {
        name,
        revision,
        comment: comment.unwrap_or_default(),
    };
    let r = rpc!(
        ctx,
        Call::Write,
        ApprovalServiceClient::approve_change_request,
        req
    )?;
    emit(ctx.format(), &r, |r| show(r.change_request.as_ref()))
}

/// The revision given, else the request's current one (said on stderr).
async fn reviewed_revision(ctx: &mut Ctx, name: &str, given: Option<i64>) -> Result<i64> {
    if let Some(r) = given {
        return Ok(r);
    }
    let req = pb::GetChangeRequestRequest {
        name: name.to_owned(),
    };
    let r = rpc!(
        ctx,
        Call::Read,
        ApprovalServiceClient::get_change_request,
        req
    )?;
    let cr = r.change_request.unwrap_or_default();
    eprintln!(
        "reviewing revision {} of {name}: {} ({} {})",
        cr.revision,
        cr.title,
        kind_name(cr.kind),
        cr.feature_key
    );
    Ok(cr.revision)
}

/// How a wait ends.
enum Outcome {
    Decided(pb::WatchChangeRequestResponse),
    TimedOut(Option<pb::WatchChangeRequestResponse>),
}

/// Follows WatchChangeRequest until the request is decided or `--timeout` runs out.
async fn wait(ctx: &mut Ctx, name: &str) -> Result<()> {
    let deadline = ctx.opts.timeout.map(|t| Instant::now() + t);
    let outcome = match deadline {
        Some(d) => {
            let mut last = None;
            let result = tokio::time::timeout_at(d, watch(ctx, name, deadline, &mut last)).await;
            match result {
                Ok(r) => Outcome::Decided(r?),
                Err(_) => Outcome::TimedOut(last),
            }
        }
        None => Outcome::Decided(watch(ctx, name, None, &mut None).await?),
    };
    match outcome {
        Outcome::Decided(msg) => report_decision(ctx.format(), name, &msg),
        Outcome::TimedOut(last) => {
            let state = last
                .as_ref()
                .and_then(|m| m.change_request.as_ref())
                .map(|c| {
                    format!(
                        " (state {}, {}/{} approvals)",
                        state_name(c.state),
                        c.approvals,
                        c.required_approvals
                    )
                })
                .unwrap_or_default();
            Err(CliError::new(
                exit::WAIT_TIMEOUT,
                format!("timed out waiting for a decision on {name}{state}"),
            ))
        }
    }
}

/// Watches until a message shows a decided request, watching again when the stream breaks.
async fn watch(
    ctx: &mut Ctx,
    name: &str,
    deadline: Option<Instant>,
    last: &mut Option<pb::WatchChangeRequestResponse>,
) -> Result<pb::WatchChangeRequestResponse> {
    let mut failures = 0;
    loop {
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let req = pb::WatchChangeRequestRequest {
            name: name.to_owned(),
        };
        let opened = ctx
            .call_with_deadline(Call::Read, remaining, req, |ch, r| async move {
                ApprovalServiceClient::new(ch).watch_change_request(r).await
            })
            .await;
        let mut stream = match opened {
            Ok(s) => s,
            Err(e) if e.code == exit::UNAVAILABLE && failures < MAX_REWATCHES => {
                failures += 1;
                tokio::time::sleep(REWATCH_DELAY).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        loop {
            match stream.message().await {
                Ok(Some(msg)) => {
                    failures = 0;
                    let state = msg.change_request.as_ref().map_or(0, |c| c.state);
                    progress(ctx.format(), name, msg.change_request.as_ref());
                    *last = Some(msg.clone());
                    if is_decided(state) {
                        return Ok(msg);
                    }
                }
                // The stream ended or broke before a decision: watch again.
                Ok(None) => break,
                Err(s) if crate::error::exit_code(s.code()) == exit::UNAVAILABLE => break,
                Err(s) => return Err(CliError::from_status(&s, "")),
            }
        }
        failures += 1;
        if failures > MAX_REWATCHES {
            return Err(CliError::new(
                exit::UNAVAILABLE,
                format!("the watch of {name} kept breaking; giving up"),
            ));
        }
        tokio::time::sleep(REWATCH_DELAY).await;
    }
}

fn is_decided(state: i32) -> bool {
    state != pb::ChangeRequestState::Pending as i32
        && state != pb::ChangeRequestState::Unspecified as i32
}

fn progress(format: Format, name: &str, cr: Option<&pb::ChangeRequest>) {
    if format != Format::Table {
        return;
    }
    if let Some(c) = cr {
        eprintln!(
            "{name}: {} ({}/{} approvals)",
            state_name(c.state),
            c.approvals,
            c.required_approvals
        );
    }
}

/// Prints the decided request and maps its state to the exit code.
fn report_decision(format: Format, name: &str, msg: &pb::WatchChangeRequestResponse) -> Result<()> {
    emit(format, msg, |m| show(m.change_request.as_ref()))?;
    let cr = msg.change_request.clone().unwrap_or_default();
    match pb::ChangeRequestState::try_from(cr.state) {
        Ok(pb::ChangeRequestState::Approved | pb::ChangeRequestState::Applied) => Ok(()),
        Ok(pb::ChangeRequestState::Rejected) => {
            let why = cr
                .reviews
                .iter()
                .rev()
                .find(|r| r.verdict == pb::Verdict::Reject as i32)
                .map(|r| format!(" by {}: {}", r.reviewer_display_name, r.comment))
                .unwrap_or_default();
            Err(CliError::new(
                exit::REJECTED,
                format!("{name} was rejected{why}"),
            ))
        }
        _ => Err(CliError::new(
            exit::NOT_APPROVED,
            format!("{name} ended {} without approval", state_name(cr.state)),
        )),
    }
}

fn state_name(state: i32) -> String {
    let n = pb::ChangeRequestState::try_from(state)
        .ok()
        .map(|s| s.as_str_name());
    output::enum_name(n, "CHANGE_REQUEST_STATE_")
}

fn kind_name(kind: i32) -> String {
    let n = pb::ChangeKind::try_from(kind).ok().map(|k| k.as_str_name());
    output::enum_name(n, "CHANGE_KIND_")
}

fn show(cr: Option<&pb::ChangeRequest>) {
    let Some(c) = cr else { return };
    Fields::new()
        .add("name", c.name.clone())
        .add("state", state_name(c.state))
        .add("title", c.title.clone())
        .add("environment", c.environment.clone())
        .add("feature", c.feature_key.clone())
        .add("kind", kind_name(c.kind))
        .add(
            "payload",
            output::to_json(c)
                .map(|j| j["payload"].to_string())
                .unwrap_or_default(),
        )
        .add("submitter", c.submitter.clone())
        .add(
            "approvals",
            format!("{}/{}", c.approvals, c.required_approvals),
        )
        .add("revision", c.revision.to_string())
        .add(
            "reviewers",
            format!(
                "{}{}",
                c.requested_reviewer_usernames.join(", "),
                if c.require_requested_reviewer {
                    " (one must approve)"
                } else {
                    ""
                }
            ),
        )
        .add(
            "overridden",
            if c.overridden {
                c.override_reason.clone()
            } else {
                String::new()
            },
        )
        .add("created", output::time(&c.create_time))
        .add("expires", output::time(&c.expire_time))
        .add("decided", output::time(&c.decide_time))
        .add("applied", output::time(&c.apply_time))
        .add("applied by", c.applied_by.clone())
        .add("etag", c.etag.clone())
        .print();
    if !c.reviews.is_empty() {
        println!();
        let mut t = Table::new(&["reviewer", "verdict", "revision", "comment"]);
        for r in &c.reviews {
            let v = pb::Verdict::try_from(r.verdict)
                .ok()
                .map(|v| v.as_str_name());
            t.row(vec![
                r.reviewer_display_name.clone(),
                output::enum_name(v, "VERDICT_"),
                r.revision.to_string(),
                r.comment.clone(),
            ]);
        }
        t.print();
    }
}

fn reviewer_names(names: Vec<String>) -> Vec<String> {
    names
        .into_iter()
        .filter(|r| !r.is_empty())
        .map(|r| {
            if r.starts_with("users/") {
                r
            } else {
                format!("users/{r}")
            }
        })
        .collect()
}

async fn edit(ctx: &mut Ctx, a: EditArgs) -> Result<()> {
    let update_mask = super::mask(&[
        ("feature_key", a.feature.is_some()),
        ("kind", a.kind.is_some()),
        ("title", a.title.is_some()),
        ("description", a.description.is_some()),
        ("payload", a.payload.is_some()),
        ("requested_reviewers", a.reviewers.is_some()),
    ])?;
    let req = pb::UpdateChangeRequestRequest {
        change_request: Some(pb::ChangeRequest {
            name: cr_name(&a.name),
            feature_key: a.feature.unwrap_or_default(),
            kind: a.kind.map_or(0, |k| pb::ChangeKind::from(k) as i32),
            title: a.title.unwrap_or_default(),
            description: a.description.unwrap_or_default(),
            payload: a.payload,
            requested_reviewers: reviewer_names(a.reviewers.unwrap_or_default()),
            etag: a.etag.unwrap_or_default(),
            ..Default::default()
        }),
        update_mask: Some(update_mask),
    };
    let r = rpc!(
        ctx,
        Call::Write,
        ApprovalServiceClient::update_change_request,
        req
    )?;
    emit(ctx.format(), &r, |r| show(r.change_request.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_follow_the_field_rules() {
        let uuid = "3f2b6c1e-0d7a-4e8b-9c1d-2a3b4c5d6e7f";
        assert_eq!(submit_request_id(uuid), uuid);
        assert_eq!(submit_request_id("ci run 7"), "");
        assert_eq!(submit_request_id(&"a".repeat(65)), "");
    }
}
