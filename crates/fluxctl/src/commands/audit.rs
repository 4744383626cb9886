//! `audit`: list, export and verify the audit trail.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::audit_service_client::AuditServiceClient;

use crate::args::{parse_time, principal};
use crate::client::{Call, Ctx};
use crate::error::{CliError, Result};
use crate::names;
use crate::output::{Fields, Table, emit, next_page_hint};

/// `fluxctl audit …`
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// List events in time order, filtered
    List(ListArgs),
    /// Export events as JSON lines (one event per line) to a file or standard output
    Export(ExportArgs),
    /// Check the hash chain; exits 1 when it is broken
    Verify,
    /// The activity report: active users, most active contributors, approval times (the last
    /// 30 days unless a range is given)
    Activity {
        #[command(flatten)]
        range: Range,
        /// How many principals the top lists name
        #[arg(long, default_value_t = 10)]
        top: i32,
    },
    /// Append events an internal service reports (audit-writer service accounts): JSON lines,
    /// one IngestedEvent each (`{"action": "feature.evaluated", "targetType": "feature", …}`)
    Ingest {
        /// The file of JSON lines; `-` for standard input
        file: PathBuf,
    },
}

/// A time range.
#[derive(Debug, Args)]
pub struct Range {
    /// Only events at or after this time (RFC 3339)
    #[arg(long, value_parser = parse_time)]
    pub start_time: Option<prost_types::Timestamp>,
    /// Only events before this time (RFC 3339)
    #[arg(long, value_parser = parse_time)]
    pub end_time: Option<prost_types::Timestamp>,
}

/// Arguments of `audit list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only events by this actor (`users/…`, a username or `serviceAccounts/…`)
    #[arg(long)]
    pub actor: Option<String>,
    /// Only events on this target: a full name (`portfolios/…`, `changeRequests/…`,
    /// `users/rita`, `serviceAccounts/…`)
    #[arg(long, conflicts_with_all = ["portfolio", "application", "environment", "group"])]
    pub target: Option<String>,
    /// Only events on this portfolio (name or id), or the scope of the flags below
    #[arg(long)]
    pub portfolio: Option<String>,
    /// Only events on this application (name or id)
    #[arg(long)]
    pub application: Option<String>,
    /// Only events on this environment (name or id)
    #[arg(long)]
    pub environment: Option<String>,
    /// Only events on this group (name or id)
    #[arg(long)]
    pub group: Option<String>,
    /// Only events with this action, e.g. `user.created`
    #[arg(long)]
    pub action: Option<String>,
    /// Only events with this outcome: success, failure, denied or reported
    #[arg(long)]
    pub outcome: Option<String>,
    #[command(flatten)]
    pub range: Range,
    #[arg(long, default_value_t = 0)]
    pub page_size: i32,
    #[arg(long)]
    pub page_token: Option<String>,
}

/// Arguments of `audit export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub range: Range,
    /// Write to this file instead of standard output
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// Show progress on stderr even when it is not a terminal
    #[arg(long)]
    pub progress: bool,
}

/// Runs an `audit` command.
pub async fn run(ctx: &mut Ctx, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::List(a) => list(ctx, a).await,
        Cmd::Export(a) => export(ctx, a).await,
        Cmd::Verify => verify(ctx).await,
        Cmd::Activity { range, top } => {
            let (start, end) = crate::args::range_or_last_30_days(range.start_time, range.end_time);
            let req = pb::GetActivityReportRequest {
                start_time: Some(start),
                end_time: Some(end),
                top,
            };
            let r = rpc!(
                ctx,
                Call::Read,
                AuditServiceClient::get_activity_report,
                req
            )?;
            let json = crate::output::to_json(&r)?;
            emit(ctx.format(), &r, |_| crate::output::print_flat(&json))
        }
        Cmd::Ingest { file } => ingest(ctx, &file).await,
    }
}

/// Reads JSON lines of IngestedEvent and sends them, 500 per call.
async fn ingest(ctx: &mut Ctx, file: &std::path::Path) -> Result<()> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file)?
    };
    let mut events = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let json: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| CliError::usage(format!("line {}: not JSON: {e}", i + 1)))?;
        let e: pb::IngestedEvent = crate::output::from_json(json)
            .map_err(|e| CliError::usage(format!("line {}: {e}", i + 1)))?;
        events.push(e);
    }
    let mut sequences = Vec::with_capacity(events.len());
    for chunk in events.chunks(500) {
        let req = pb::IngestAuditEventsRequest {
            events: chunk.to_vec(),
        };
        let r = rpc!(
            ctx,
            Call::Write,
            AuditServiceClient::ingest_audit_events,
            req
        )?;
        sequences.extend(r.sequences);
    }
    let r = pb::IngestAuditEventsResponse { sequences };
    emit(ctx.format(), &r, |r| {
        println!("appended {} event(s)", r.sequences.len());
    })
}

/// The target the flags select: `--target` as given, else the most specific of `--group`,
/// `--environment`, `--application` and `--portfolio`, the others scoping it.
async fn target(ctx: &mut Ctx, a: &ListArgs) -> Result<String> {
    let portfolio = a.portfolio.as_deref();
    Ok(
        match (
            &a.target,
            &a.group,
            &a.environment,
            &a.application,
            portfolio,
        ) {
            (Some(t), ..) => principal_or_name(t),
            (None, Some(g), ..) => names::group(ctx, g, portfolio).await?,
            (None, None, Some(e), ..) => {
                let scope = names::EnvironmentScope {
                    portfolio: a.portfolio.clone(),
                    application: a.application.clone(),
                };
                names::environment(ctx, e, &scope).await?
            }
            (None, None, None, Some(app), _) => names::application(ctx, app, portfolio).await?,
            (None, None, None, None, Some(p)) => names::portfolio(ctx, p).await?,
            (None, None, None, None, None) => String::new(),
        },
    )
}

/// A target as given; a bare word is taken as a username.
fn principal_or_name(t: &str) -> String {
    if t.contains('/') {
        t.to_owned()
    } else {
        principal(t)
    }
}

async fn list(ctx: &mut Ctx, a: ListArgs) -> Result<()> {
    let target = target(ctx, &a).await?;
    let req = pb::ListAuditEventsRequest {
        page_size: a.page_size,
        page_token: a.page_token.unwrap_or_default(),
        actor: a.actor.map(|s| principal(&s)).unwrap_or_default(),
        target,
        action: a.action.unwrap_or_default(),
        outcome: a.outcome.unwrap_or_default(),
        start_time: a.range.start_time,
        end_time: a.range.end_time,
    };
    let r = rpc!(ctx, Call::Read, AuditServiceClient::list_audit_events, req)?;
    emit(ctx.format(), &r, |r| {
        let mut t = Table::new(&["seq", "time", "actor", "action", "target", "outcome"]);
        for e in &r.events {
            let actor = if e.actor_display_name.is_empty() {
                e.actor.clone()
            } else {
                e.actor_display_name.clone()
            };
            t.row(vec![
                e.sequence.to_string(),
                crate::output::time(&e.time),
                actor,
                e.action.clone(),
                e.target.clone(),
                e.outcome.clone(),
            ]);
        }
        t.print();
        next_page_hint(&r.next_page_token);
    })
}

async fn export(ctx: &mut Ctx, a: ExportArgs) -> Result<()> {
    let req = pb::ExportAuditEventsRequest {
        start_time: a.range.start_time,
        end_time: a.range.end_time,
    };
    let deadline = ctx.opts.timeout;
    let mut stream = ctx
        .call_with_deadline(Call::Read, deadline, req, |ch, r| async move {
            AuditServiceClient::new(ch).export_audit_events(r).await
        })
        .await?;
    let mut out: Box<dyn Write> = match &a.file {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| CliError::other(format!("cannot create {}: {e}", path.display())))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let show_progress = a.progress || std::io::stderr().is_terminal();
    let mut events: u64 = 0;
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| CliError::from_status(&s, ""))?
    {
        // The server's lines leave default values out; print them as `-o json` does.
        for line in chunk
            .json_lines
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
        {
            let json: serde_json::Value = serde_json::from_slice(line)?;
            let event: pb::AuditEvent = crate::output::from_json(json)?;
            serde_json::to_writer(&mut out, &crate::output::to_json(&event)?)?;
            out.write_all(b"\n")?;
        }
        events += u64::try_from(chunk.event_count).unwrap_or(0);
        if show_progress {
            eprint!("\rexported {events} events");
        }
    }
    out.flush()?;
    if show_progress {
        eprintln!();
    }
    if let Some(path) = &a.file {
        eprintln!("Exported {events} events to {}.", path.display());
    }
    Ok(())
}

async fn verify(ctx: &mut Ctx) -> Result<()> {
    let req = pb::VerifyAuditChainRequest {};
    let r = rpc!(ctx, Call::Read, AuditServiceClient::verify_audit_chain, req)?;
    emit(ctx.format(), &r, |r| {
        Fields::new()
            .add("valid", crate::output::yes_no(r.valid))
            .add("events checked", r.events_checked.to_string())
            .add(
                "first broken",
                if r.valid {
                    String::new()
                } else {
                    r.first_broken_sequence.to_string()
                },
            )
            .print();
    })?;
    if r.valid {
        Ok(())
    } else {
        Err(CliError::other(format!(
            "the audit chain is broken at event {}",
            r.first_broken_sequence
        )))
    }
}
