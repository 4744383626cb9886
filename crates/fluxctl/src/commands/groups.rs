//! `groups`: portfolio groups, their grants and members.

use clap::{Args, Subcommand};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::group_service_client::GroupServiceClient;

use super::mask;
use crate::args::{parse_app_grant, parse_env_grant, principal};
use crate::client::{Call, Ctx};
use crate::error::Result;
use crate::names::{self, EnvironmentScope, PortfolioScope};
use crate::output::{self, Fields, Table, emit, next_page_hint};

/// `fluxctl groups …`
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create a group in a portfolio, with its grants
    Create(CreateArgs),
    /// Show a group with its grants (its name or id, with --portfolio where it is not unique)
    Get {
        name: String,
        #[command(flatten)]
        scope: PortfolioScope,
    },
    /// List a portfolio's groups (`--portfolio -` for every portfolio)
    List(ListArgs),
    /// Change display name or description, or replace the grants
    Update(UpdateArgs),
    /// Delete a group
    Delete {
        name: String,
        #[command(flatten)]
        scope: PortfolioScope,
        #[arg(long)]
        etag: Option<String>,
        /// Delete even when it has members
        #[arg(long)]
        force: bool,
    },
    /// Group members
    #[command(subcommand)]
    Members(MemberCmd),
}

/// `fluxctl groups members …`
#[derive(Debug, Subcommand)]
pub enum MemberCmd {
    /// Add a user (`users/…` or a username) or service account (`serviceAccounts/…`)
    Add {
        group: String,
        member: String,
        #[command(flatten)]
        scope: PortfolioScope,
        /// Why, kept in the audit trail
        #[arg(long)]
        reason: Option<String>,
    },
    /// Remove a member
    Remove {
        group: String,
        member: String,
        #[command(flatten)]
        scope: PortfolioScope,
        /// Why, kept in the audit trail
        #[arg(long)]
        reason: Option<String>,
    },
    /// List a group's members
    List {
        group: String,
        #[command(flatten)]
        scope: PortfolioScope,
        #[arg(long, default_value_t = 0)]
        page_size: i32,
        #[arg(long)]
        page_token: Option<String>,
    },
}

/// Grant flags, repeatable.
#[derive(Debug, Args)]
pub struct GrantArgs {
    /// Feature permission on an application of the group's portfolio (name or id):
    /// APPLICATION=create|create-edit-delete
    #[arg(long = "app-grant", value_name = "APP=PERM", value_parser = parse_app_grant)]
    pub app_grants: Vec<pb::ApplicationGrant>,
    /// Value permissions in an environment of the group's portfolio: ENVIRONMENT=read,lock,…
    /// where ENVIRONMENT is `APPLICATION/ENVIRONMENT` by names, or a name or id found in one
    /// application only
    #[arg(long = "env-grant", value_name = "ENV=PERMS", value_parser = parse_env_grant)]
    pub env_grants: Vec<pb::EnvironmentGrant>,
}

/// Arguments of `groups create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The portfolio: its display name, id or `portfolios/{id}`
    #[arg(long)]
    pub portfolio: String,
    pub display_name: String,
    #[arg(long)]
    pub description: Option<String>,
    #[command(flatten)]
    pub grants: GrantArgs,
}

/// Arguments of `groups list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The portfolio (name or id), or `-` for every portfolio
    #[arg(long, default_value = "-")]
    pub portfolio: String,
    /// Only groups with this member
    #[arg(long)]
    pub member: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub page_size: i32,
    #[arg(long)]
    pub page_token: Option<String>,
}

/// Arguments of `groups update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    pub name: String,
    #[command(flatten)]
    pub scope: PortfolioScope,
    #[arg(long)]
    pub display_name: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    /// Replace the application grants with those given by --app-grant
    #[arg(long)]
    pub set_app_grants: bool,
    /// Replace the environment grants with those given by --env-grant
    #[arg(long)]
    pub set_env_grants: bool,
    #[command(flatten)]
    pub grants: GrantArgs,
    #[arg(long)]
    pub etag: Option<String>,
}

/// Runs a `groups` command.
pub async fn run(ctx: &mut Ctx, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Create(a) => create(ctx, a).await,
        Cmd::Get { name, scope } => {
            let name = names::group(ctx, &name, scope.portfolio.as_deref()).await?;
            let req = pb::GetGroupRequest { name };
            let r = rpc!(ctx, Call::Read, GroupServiceClient::get_group, req)?;
            emit(ctx.format(), &r, |r| show(r.group.as_ref()))
        }
        Cmd::List(a) => list(ctx, a).await,
        Cmd::Update(a) => update(ctx, a).await,
        Cmd::Delete {
            name,
            scope,
            etag,
            force,
        } => {
            let name = names::group(ctx, &name, scope.portfolio.as_deref()).await?;
            let req = pb::DeleteGroupRequest {
                name: name.clone(),
                etag: etag.unwrap_or_default(),
                force,
            };
            let r = rpc!(ctx, Call::Write, GroupServiceClient::delete_group, req)?;
            emit(ctx.format(), &r, |_| println!("Deleted {name}."))
        }
        Cmd::Members(m) => members(ctx, m).await,
    }
}

/// The grants with their applications and environments resolved within the portfolio.
async fn resolve_grants(ctx: &mut Ctx, portfolio: &str, grants: GrantArgs) -> Result<GrantArgs> {
    let mut out = GrantArgs {
        app_grants: Vec::with_capacity(grants.app_grants.len()),
        env_grants: Vec::with_capacity(grants.env_grants.len()),
    };
    for mut g in grants.app_grants {
        g.application = names::application(ctx, &g.application, Some(portfolio)).await?;
        out.app_grants.push(g);
    }
    let scope = EnvironmentScope {
        portfolio: Some(portfolio.to_owned()),
        application: None,
    };
    for mut g in grants.env_grants {
        g.environment = names::environment(ctx, &g.environment, &scope).await?;
        out.env_grants.push(g);
    }
    Ok(out)
}

/// `portfolios/{p}` of `portfolios/{p}/groups/{g}`.
fn portfolio_of(group: &str) -> &str {
    group.split("/groups/").next().unwrap_or(group)
}

async fn create(ctx: &mut Ctx, a: CreateArgs) -> Result<()> {
    let parent = names::portfolio(ctx, &a.portfolio).await?;
    let grants = resolve_grants(ctx, &parent, a.grants).await?;
    let req = pb::CreateGroupRequest {
        parent,
        group: Some(pb::Group {
            display_name: a.display_name,
            description: a.description.unwrap_or_default(),
            application_grants: grants.app_grants,
            environment_grants: grants.env_grants,
            ..Default::default()
        }),
    };
    let r = rpc!(ctx, Call::Write, GroupServiceClient::create_group, req)?;
    emit(ctx.format(), &r, |r| show(r.group.as_ref()))
}

async fn list(ctx: &mut Ctx, a: ListArgs) -> Result<()> {
    let parent = if a.portfolio == "-" {
        "portfolios/-".to_owned()
    } else {
        names::portfolio(ctx, &a.portfolio).await?
    };
    let req = pb::ListGroupsRequest {
        parent,
        page_size: a.page_size,
        page_token: a.page_token.unwrap_or_default(),
        member: a.member.map(|m| principal(&m)).unwrap_or_default(),
    };
    let r = rpc!(ctx, Call::Read, GroupServiceClient::list_groups, req)?;
    emit(ctx.format(), &r, |r| {
        let mut t = Table::new(&["name", "display name", "members", "administrators"]);
        for g in &r.groups {
            t.row(vec![
                g.name.clone(),
                g.display_name.clone(),
                g.member_count.to_string(),
                output::yes_no(g.administrators),
            ]);
        }
        t.print();
        next_page_hint(&r.next_page_token);
    })
}

async fn update(ctx: &mut Ctx, a: UpdateArgs) -> Result<()> {
    let update_mask = mask(&[
        ("display_name", a.display_name.is_some()),
        ("description", a.description.is_some()),
        (
            "application_grants",
            a.set_app_grants || !a.grants.app_grants.is_empty(),
        ),
        (
            "environment_grants",
            a.set_env_grants || !a.grants.env_grants.is_empty(),
        ),
    ])?;
    let name = names::group(ctx, &a.name, a.scope.portfolio.as_deref()).await?;
    let grants = resolve_grants(ctx, portfolio_of(&name), a.grants).await?;
    let req = pb::UpdateGroupRequest {
        group: Some(pb::Group {
            name,
            display_name: a.display_name.unwrap_or_default(),
            description: a.description.unwrap_or_default(),
            application_grants: grants.app_grants,
            environment_grants: grants.env_grants,
            etag: a.etag.unwrap_or_default(),
            ..Default::default()
        }),
        update_mask: Some(update_mask),
    };
    let r = rpc!(ctx, Call::Write, GroupServiceClient::update_group, req)?;
    emit(ctx.format(), &r, |r| show(r.group.as_ref()))
}

async fn members(ctx: &mut Ctx, cmd: MemberCmd) -> Result<()> {
    match cmd {
        MemberCmd::Add {
            group,
            member,
            scope,
            reason,
        } => {
            let req = pb::AddGroupMemberRequest {
                group: names::group(ctx, &group, scope.portfolio.as_deref()).await?,
                member: principal(&member),
                reason: reason.unwrap_or_default(),
            };
            let r = rpc!(ctx, Call::Write, GroupServiceClient::add_group_member, req)?;
            emit(ctx.format(), &r, |r| show(r.group.as_ref()))
        }
        MemberCmd::Remove {
            group,
            member,
            scope,
            reason,
        } => {
            let req = pb::RemoveGroupMemberRequest {
                group: names::group(ctx, &group, scope.portfolio.as_deref()).await?,
                member: principal(&member),
                reason: reason.unwrap_or_default(),
            };
            let r = rpc!(
                ctx,
                Call::Write,
                GroupServiceClient::remove_group_member,
                req
            )?;
            emit(ctx.format(), &r, |r| show(r.group.as_ref()))
        }
        MemberCmd::List {
            group,
            scope,
            page_size,
            page_token,
        } => {
            let req = pb::ListGroupMembersRequest {
                group: names::group(ctx, &group, scope.portfolio.as_deref()).await?,
                page_size,
                page_token: page_token.unwrap_or_default(),
            };
            let r = rpc!(ctx, Call::Read, GroupServiceClient::list_group_members, req)?;
            emit(ctx.format(), &r, |r| {
                let mut t = Table::new(&["member"]);
                r.members.iter().for_each(|m| t.row(vec![m.clone()]));
                t.print();
                next_page_hint(&r.next_page_token);
            })
        }
    }
}

fn show(group: Option<&pb::Group>) {
    let Some(g) = group else { return };
    Fields::new()
        .add("name", g.name.clone())
        .add("display name", g.display_name.clone())
        .add("description", g.description.clone())
        .add("administrators", output::yes_no(g.administrators))
        .add("members", g.member_count.to_string())
        .add("etag", g.etag.clone())
        .print();
    if !g.application_grants.is_empty() || !g.environment_grants.is_empty() {
        let mut t = Table::new(&["grant on", "permissions"]);
        for a in &g.application_grants {
            let p = pb::FeaturePermission::try_from(a.feature_permission)
                .ok()
                .map(|p| p.as_str_name());
            t.row(vec![
                a.application.clone(),
                output::enum_name(p, "FEATURE_PERMISSION_"),
            ]);
        }
        for e in &g.environment_grants {
            let perms: Vec<String> = e
                .permissions
                .iter()
                .map(|v| {
                    let p = pb::ValuePermission::try_from(*v)
                        .ok()
                        .map(|p| p.as_str_name());
                    output::enum_name(p, "VALUE_PERMISSION_")
                })
                .collect();
            t.row(vec![e.environment.clone(), perms.join(",")]);
        }
        println!();
        t.print();
    }
}
