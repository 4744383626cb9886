//! `policy`: an environment's approval policy.

use std::time::Duration;

use clap::{Args, Subcommand};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::approval_service_client::ApprovalServiceClient;

use super::mask;
use crate::args::{parse_duration, proto_duration};
use crate::client::{Call, Ctx};
use crate::error::Result;
use crate::names::{self, EnvironmentScope};
use crate::output::{self, Fields, emit};

/// `fluxctl policy …`
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Show an environment's approval policy
    Get {
        /// The environment: its name or id (with --application and --portfolio where it is not
        /// unique), or its full name
        environment: String,
        #[command(flatten)]
        scope: EnvironmentScope,
    },
    /// Change an environment's approval policy (Team Admins)
    Update(UpdateArgs),
}

/// Arguments of `policy update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The environment: its name or id (with --application and --portfolio where it is not
    /// unique), or its full name
    pub environment: String,
    #[command(flatten)]
    pub scope: EnvironmentScope,
    /// Distinct approvals a change needs (0 to 10)
    #[arg(long)]
    pub required_approvals: Option<i32>,
    /// Whether Requesters may review
    #[arg(long)]
    pub peer_review: Option<bool>,
    /// Whether a Team Admin may approve past the policy
    #[arg(long)]
    pub admin_override: Option<bool>,
    /// How long a pending request lives (1m to 90d)
    #[arg(long, value_parser = parse_duration)]
    pub pending_ttl: Option<Duration>,
    /// Whether requests must name reviewers, one of whom must approve
    #[arg(long)]
    pub require_requested_reviewer: Option<bool>,
    #[arg(long)]
    pub etag: Option<String>,
}

/// The policy of the environment a reference names.
async fn policy_name(ctx: &mut Ctx, environment: &str, scope: &EnvironmentScope) -> Result<String> {
    let environment = environment
        .strip_suffix("/approvalPolicy")
        .unwrap_or(environment);
    let environment = names::environment(ctx, environment, scope).await?;
    Ok(format!("{environment}/approvalPolicy"))
}

/// Runs a `policy` command.
pub async fn run(ctx: &mut Ctx, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Get { environment, scope } => {
            let req = pb::GetApprovalPolicyRequest {
                name: policy_name(ctx, &environment, &scope).await?,
            };
            let r = rpc!(
                ctx,
                Call::Read,
                ApprovalServiceClient::get_approval_policy,
                req
            )?;
            emit(ctx.format(), &r, |r| show(r.policy.as_ref()))
        }
        Cmd::Update(a) => {
            let update_mask = mask(&[
                ("required_approvals", a.required_approvals.is_some()),
                ("peer_review", a.peer_review.is_some()),
                ("admin_override", a.admin_override.is_some()),
                ("pending_ttl", a.pending_ttl.is_some()),
                (
                    "require_requested_reviewer",
                    a.require_requested_reviewer.is_some(),
                ),
            ])?;
            let req = pb::UpdateApprovalPolicyRequest {
                policy: Some(pb::ApprovalPolicy {
                    name: policy_name(ctx, &a.environment, &a.scope).await?,
                    required_approvals: a.required_approvals.unwrap_or_default(),
                    peer_review: a.peer_review.unwrap_or_default(),
                    admin_override: a.admin_override.unwrap_or_default(),
                    pending_ttl: a.pending_ttl.map(proto_duration),
                    require_requested_reviewer: a.require_requested_reviewer.unwrap_or_default(),
                    etag: a.etag.unwrap_or_default(),
                    ..Default::default()
                }),
                update_mask: Some(update_mask),
            };
            let r = rpc!(
                ctx,
                Call::Write,
                ApprovalServiceClient::update_approval_policy,
                req
            )?;
            emit(ctx.format(), &r, |r| show(r.policy.as_ref()))
        }
    }
}

fn show(p: Option<&pb::ApprovalPolicy>) {
    let Some(p) = p else { return };
    Fields::new()
        .add("name", p.name.clone())
        .add("required approvals", p.required_approvals.to_string())
        .add("peer review", output::yes_no(p.peer_review))
        .add("admin override", output::yes_no(p.admin_override))
        .add("pending ttl", output::duration(&p.pending_ttl))
        .add(
            "named reviewer",
            output::yes_no(p.require_requested_reviewer),
        )
        .add("updated", output::time(&p.update_time))
        .add("etag", p.etag.clone())
        .print();
}
