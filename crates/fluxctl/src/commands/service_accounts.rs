//! `service-accounts`: accounts and their API keys.

use std::time::Duration;

use clap::{Args, Subcommand};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::service_account_service_client::ServiceAccountServiceClient;

use super::mask;
use crate::args::{Role, parse_duration, parse_time, proto_duration, qualify};
use crate::client::{Call, Ctx};
use crate::error::Result;
use crate::output::{self, Fields, Table, emit, next_page_hint};

/// `fluxctl service-accounts …`
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create a service account (organisation-wide, or of one portfolio with --portfolio)
    Create(CreateArgs),
    /// Show a service account (`serviceAccounts/{id}` or the bare id)
    Get { name: String },
    /// List the organisation's service accounts, or one portfolio's
    List(ListArgs),
    /// Change display name, description, role, audit writer or active state
    Update(UpdateArgs),
    /// Delete a service account with its keys and memberships
    Delete {
        name: String,
        #[arg(long)]
        etag: Option<String>,
    },
    /// API keys of a service account
    #[command(subcommand)]
    Keys(KeyCmd),
}

/// `fluxctl service-accounts keys …`
#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Create an API key; its secret is printed once
    Create(KeyCreateArgs),
    /// List a service account's keys (never their secrets)
    List { service_account: String },
    /// Replace a key (`serviceAccounts/{id}/keys/{key}`); the new secret is printed once
    Rotate {
        key: String,
        /// How long the old key keeps working (0 to 7d)
        #[arg(long, value_parser = parse_duration)]
        grace_period: Option<Duration>,
    },
    /// Revoke a key at once
    Revoke { key: String },
}

/// Arguments of `service-accounts create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(long)]
    pub display_name: String,
    #[arg(long)]
    pub description: Option<String>,
    /// The portfolio (name or id) for a portfolio service account
    #[arg(long)]
    pub portfolio: Option<String>,
    #[arg(long, value_parser = crate::args::AnySpelling::<Role>::new())]
    pub role: Option<Role>,
    /// May append audit events
    #[arg(long)]
    pub audit_writer: bool,
    /// A provisioning account: its keys work on the SCIM endpoint (/scim/v2) and nothing else
    #[arg(long)]
    pub provisioner: bool,
}

/// Arguments of `service-accounts list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// A portfolio (name or id): its accounts instead of the organisation's
    #[arg(long)]
    pub portfolio: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub page_size: i32,
    #[arg(long)]
    pub page_token: Option<String>,
}

/// Arguments of `service-accounts update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    pub name: String,
    #[arg(long)]
    pub display_name: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long, value_parser = crate::args::AnySpelling::<Role>::new())]
    pub role: Option<Role>,
    #[arg(long)]
    pub audit_writer: Option<bool>,
    #[arg(long)]
    pub active: Option<bool>,
    #[arg(long)]
    pub etag: Option<String>,
}

/// Arguments of `service-accounts keys create`.
#[derive(Debug, Args)]
pub struct KeyCreateArgs {
    pub service_account: String,
    #[arg(long)]
    pub display_name: Option<String>,
    /// When the key stops working (RFC 3339)
    #[arg(long, value_parser = parse_time)]
    pub expire_time: Option<prost_types::Timestamp>,
}

/// Runs a `service-accounts` command.
pub async fn run(ctx: &mut Ctx, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Create(a) => create(ctx, a).await,
        Cmd::Get { name } => get(ctx, &name).await,
        Cmd::List(a) => list(ctx, a).await,
        Cmd::Update(a) => update(ctx, a).await,
        Cmd::Delete { name, etag } => delete(ctx, &name, etag).await,
        Cmd::Keys(KeyCmd::Create(a)) => create_key(ctx, a).await,
        Cmd::Keys(KeyCmd::List { service_account }) => list_keys(ctx, &service_account).await,
        Cmd::Keys(KeyCmd::Rotate { key, grace_period }) => {
            rotate_key(ctx, &key, grace_period).await
        }
        Cmd::Keys(KeyCmd::Revoke { key }) => revoke_key(ctx, &key).await,
    }
}

fn sa_name(name: &str) -> String {
    qualify("serviceAccounts", name)
}

/// The portfolio a `--portfolio` names, or none.
async fn portfolio(ctx: &mut Ctx, given: Option<&str>) -> Result<String> {
    match given {
        Some(p) => crate::names::portfolio(ctx, p).await,
        None => Ok(String::new()),
    }
}

async fn create(ctx: &mut Ctx, a: CreateArgs) -> Result<()> {
    let portfolio = portfolio(ctx, a.portfolio.as_deref()).await?;
    let req = pb::CreateServiceAccountRequest {
        service_account: Some(pb::ServiceAccount {
            display_name: a.display_name,
            description: a.description.unwrap_or_default(),
            portfolio,
            role: a.role.map_or(0, |r| pb::Role::from(r) as i32),
            audit_writer: a.audit_writer,
            provisioner: a.provisioner,
            ..Default::default()
        }),
    };
    let resp = rpc!(
        ctx,
        Call::Write,
        ServiceAccountServiceClient::create_service_account,
        req
    )?;
    emit(ctx.format(), &resp, |r| show(r.service_account.as_ref()))
}

async fn get(ctx: &mut Ctx, name: &str) -> Result<()> {
    let req = pb::GetServiceAccountRequest {
        name: sa_name(name),
    };
    let resp = rpc!(
        ctx,
        Call::Read,
        ServiceAccountServiceClient::get_service_account,
        req
    )?;
    emit(ctx.format(), &resp, |r| show(r.service_account.as_ref()))
}

async fn list(ctx: &mut Ctx, a: ListArgs) -> Result<()> {
    let req = pb::ListServiceAccountsRequest {
        portfolio: portfolio(ctx, a.portfolio.as_deref()).await?,
        page_size: a.page_size,
        page_token: a.page_token.unwrap_or_default(),
    };
    let resp = rpc!(
        ctx,
        Call::Read,
        ServiceAccountServiceClient::list_service_accounts,
        req
    )?;
    emit(ctx.format(), &resp, |r| {
        let mut t = Table::new(&["name", "display name", "portfolio", "role", "active"]);
        for s in &r.service_accounts {
            t.row(vec![
                s.name.clone(),
                s.display_name.clone(),
                s.portfolio.clone(),
                output::role(s.role),
                output::yes_no(s.active),
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
        ("role", a.role.is_some()),
        ("audit_writer", a.audit_writer.is_some()),
        ("active", a.active.is_some()),
    ])?;
    let req = pb::UpdateServiceAccountRequest {
        service_account: Some(pb::ServiceAccount {
            name: sa_name(&a.name),
            display_name: a.display_name.unwrap_or_default(),
            description: a.description.unwrap_or_default(),
            role: a.role.map_or(0, |r| pb::Role::from(r) as i32),
            audit_writer: a.audit_writer.unwrap_or_default(),
            active: a.active.unwrap_or_default(),
            etag: a.etag.unwrap_or_default(),
            ..Default::default()
        }),
        update_mask: Some(update_mask),
    };
    let resp = rpc!(
        ctx,
        Call::Write,
        ServiceAccountServiceClient::update_service_account,
        req
    )?;
    emit(ctx.format(), &resp, |r| show(r.service_account.as_ref()))
}

async fn delete(ctx: &mut Ctx, name: &str, etag: Option<String>) -> Result<()> {
    let name = sa_name(name);
    let req = pb::DeleteServiceAccountRequest {
        name: name.clone(),
        etag: etag.unwrap_or_default(),
    };
    let resp = rpc!(
        ctx,
        Call::Write,
        ServiceAccountServiceClient::delete_service_account,
        req
    )?;
    emit(ctx.format(), &resp, |_| println!("Deleted {name}."))
}

async fn create_key(ctx: &mut Ctx, a: KeyCreateArgs) -> Result<()> {
    let req = pb::CreateServiceAccountKeyRequest {
        parent: sa_name(&a.service_account),
        key: Some(pb::ServiceAccountKey {
            display_name: a.display_name.unwrap_or_default(),
            expire_time: a.expire_time,
            ..Default::default()
        }),
    };
    let resp = rpc!(
        ctx,
        Call::Write,
        ServiceAccountServiceClient::create_service_account_key,
        req
    )?;
    emit(ctx.format(), &resp, |r| {
        show_key(r.key.as_ref());
        print_secret(&r.secret);
    })
}

async fn list_keys(ctx: &mut Ctx, service_account: &str) -> Result<()> {
    let req = pb::ListServiceAccountKeysRequest {
        parent: sa_name(service_account),
    };
    let resp = rpc!(
        ctx,
        Call::Read,
        ServiceAccountServiceClient::list_service_account_keys,
        req
    )?;
    emit(ctx.format(), &resp, |r| {
        let mut t = Table::new(&["name", "display name", "created", "expires", "revoked"]);
        for k in &r.keys {
            t.row(vec![
                k.name.clone(),
                k.display_name.clone(),
                output::time(&k.create_time),
                output::time(&k.expire_time),
                output::time(&k.revoke_time),
            ]);
        }
        t.print();
    })
}

async fn rotate_key(ctx: &mut Ctx, key: &str, grace: Option<Duration>) -> Result<()> {
    let req = pb::RotateServiceAccountKeyRequest {
        name: key.to_owned(),
        grace_period: grace.map(proto_duration),
    };
    let resp = rpc!(
        ctx,
        Call::Write,
        ServiceAccountServiceClient::rotate_service_account_key,
        req
    )?;
    emit(ctx.format(), &resp, |r| {
        show_key(r.key.as_ref());
        if let Some(old) = &r.previous_key {
            println!(
                "previous key {} expires {}",
                old.name,
                output::time(&old.expire_time)
            );
        }
        print_secret(&r.secret);
    })
}

async fn revoke_key(ctx: &mut Ctx, key: &str) -> Result<()> {
    let req = pb::RevokeServiceAccountKeyRequest {
        name: key.to_owned(),
    };
    let resp = rpc!(
        ctx,
        Call::Write,
        ServiceAccountServiceClient::revoke_service_account_key,
        req
    )?;
    emit(ctx.format(), &resp, |r| show_key(r.key.as_ref()))
}

fn print_secret(secret: &str) {
    println!("secret: {secret}");
    eprintln!("Store the secret now: it is shown only once.");
}

fn show(sa: Option<&pb::ServiceAccount>) {
    let Some(s) = sa else { return };
    Fields::new()
        .add("name", s.name.clone())
        .add("display name", s.display_name.clone())
        .add("description", s.description.clone())
        .add("portfolio", s.portfolio.clone())
        .add("role", output::role(s.role))
        .add("active", output::yes_no(s.active))
        .add("audit writer", output::yes_no(s.audit_writer))
        .add("provisioner (SCIM)", output::yes_no(s.provisioner))
        .add("created", output::time(&s.create_time))
        .add("etag", s.etag.clone())
        .print();
}

fn show_key(key: Option<&pb::ServiceAccountKey>) {
    let Some(k) = key else { return };
    Fields::new()
        .add("key", k.name.clone())
        .add("display name", k.display_name.clone())
        .add("created", output::time(&k.create_time))
        .add("expires", output::time(&k.expire_time))
        .add("revoked", output::time(&k.revoke_time))
        .print();
}
