//! `portfolios`, `applications`, `environments`: the catalog permissions refer to.

use clap::{Args, Subcommand};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::catalog_service_client::CatalogServiceClient;

use super::mask;
use crate::client::{Call, Ctx};
use crate::error::Result;
use crate::names::{self, EnvironmentScope, PortfolioScope};
use crate::output::{self, Fields, Table, emit, next_page_hint};

/// `fluxctl portfolios …`
#[derive(Debug, Subcommand)]
pub enum PortfolioCmd {
    /// Create a portfolio (and its Administrators group)
    Create(CreateArgs),
    /// Show a portfolio (its display name, id or `portfolios/{id}`)
    Get { name: String },
    /// List portfolios
    List(PageArgs),
    /// Change display name or description
    Update(UpdateArgs),
    /// Delete a portfolio
    Delete(DeleteArgs),
}

/// `fluxctl applications …`
#[derive(Debug, Subcommand)]
pub enum ApplicationCmd {
    /// Create an application in a portfolio (`--portfolio Shop`: name or id)
    Create {
        #[arg(long)]
        portfolio: String,
        #[command(flatten)]
        fields: CreateArgs,
    },
    /// Show an application (its name or id, with --portfolio where it is not unique)
    Get {
        name: String,
        #[command(flatten)]
        scope: PortfolioScope,
    },
    /// List a portfolio's applications
    List {
        #[arg(long)]
        portfolio: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Change display name or description
    Update {
        #[command(flatten)]
        fields: UpdateArgs,
        #[command(flatten)]
        scope: PortfolioScope,
    },
    /// Delete an application
    Delete {
        #[command(flatten)]
        target: DeleteArgs,
        #[command(flatten)]
        scope: PortfolioScope,
    },
}

/// `fluxctl environments …`
#[derive(Debug, Subcommand)]
pub enum EnvironmentCmd {
    /// Create an environment in an application (`--application web`, with --portfolio where
    /// the application's name is not unique)
    Create {
        #[arg(long)]
        application: String,
        #[command(flatten)]
        scope: PortfolioScope,
        #[command(flatten)]
        fields: CreateArgs,
        /// Mark it as a production environment
        #[arg(long)]
        production: bool,
    },
    /// Show an environment (its name or id, with --application and --portfolio where it is
    /// not unique)
    Get {
        name: String,
        #[command(flatten)]
        scope: EnvironmentScope,
    },
    /// List an application's environments
    List {
        #[arg(long)]
        application: String,
        #[command(flatten)]
        scope: PortfolioScope,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Change display name, description or the production flag
    Update {
        #[command(flatten)]
        fields: UpdateArgs,
        #[arg(long)]
        production: Option<bool>,
        #[command(flatten)]
        scope: EnvironmentScope,
    },
    /// Delete an environment
    Delete {
        #[command(flatten)]
        target: DeleteArgs,
        #[command(flatten)]
        scope: EnvironmentScope,
    },
}

/// Display name and description of a new resource.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Display name, unique among its siblings
    pub display_name: String,
    #[arg(long)]
    pub description: Option<String>,
}

/// Paging of a list.
#[derive(Debug, Args)]
pub struct PageArgs {
    #[arg(long, default_value_t = 0)]
    pub page_size: i32,
    #[arg(long)]
    pub page_token: Option<String>,
}

/// Changes to a resource.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    pub name: String,
    #[arg(long)]
    pub display_name: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long)]
    pub etag: Option<String>,
}

/// Deletion of a resource.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    pub name: String,
    #[arg(long)]
    pub etag: Option<String>,
    /// Delete what it contains with it
    #[arg(long)]
    pub force: bool,
}

/// Runs a `portfolios` command.
pub async fn run_portfolios(ctx: &mut Ctx, cmd: PortfolioCmd) -> Result<()> {
    match cmd {
        PortfolioCmd::Create(a) => {
            let req = pb::CreatePortfolioRequest {
                portfolio: Some(pb::Portfolio {
                    display_name: a.display_name,
                    description: a.description.unwrap_or_default(),
                    ..Default::default()
                }),
            };
            let r = rpc!(
                ctx,
                Call::Write,
                CatalogServiceClient::create_portfolio,
                req
            )?;
            emit(ctx.format(), &r, |r| show_portfolio(r.portfolio.as_ref()))
        }
        PortfolioCmd::Get { name } => {
            let req = pb::GetPortfolioRequest {
                name: names::portfolio(ctx, &name).await?,
            };
            let r = rpc!(ctx, Call::Read, CatalogServiceClient::get_portfolio, req)?;
            emit(ctx.format(), &r, |r| show_portfolio(r.portfolio.as_ref()))
        }
        PortfolioCmd::List(p) => {
            let req = pb::ListPortfoliosRequest {
                page_size: p.page_size,
                page_token: p.page_token.unwrap_or_default(),
            };
            let r = rpc!(ctx, Call::Read, CatalogServiceClient::list_portfolios, req)?;
            emit(ctx.format(), &r, |r| {
                let rows = r.portfolios.iter().map(|p| {
                    vec![
                        p.name.clone(),
                        p.display_name.clone(),
                        p.description.clone(),
                    ]
                });
                print_list(rows, &r.next_page_token);
            })
        }
        PortfolioCmd::Update(a) => {
            let update_mask = name_mask(&a)?;
            let req = pb::UpdatePortfolioRequest {
                portfolio: Some(pb::Portfolio {
                    name: names::portfolio(ctx, &a.name).await?,
                    display_name: a.display_name.unwrap_or_default(),
                    description: a.description.unwrap_or_default(),
                    etag: a.etag.unwrap_or_default(),
                    ..Default::default()
                }),
                update_mask: Some(update_mask),
            };
            let r = rpc!(
                ctx,
                Call::Write,
                CatalogServiceClient::update_portfolio,
                req
            )?;
            emit(ctx.format(), &r, |r| show_portfolio(r.portfolio.as_ref()))
        }
        PortfolioCmd::Delete(a) => {
            let name = names::portfolio(ctx, &a.name).await?;
            let req = pb::DeletePortfolioRequest {
                name: name.clone(),
                etag: a.etag.unwrap_or_default(),
                force: a.force,
            };
            let r = rpc!(
                ctx,
                Call::Write,
                CatalogServiceClient::delete_portfolio,
                req
            )?;
            emit(ctx.format(), &r, |_| println!("Deleted {name}."))
        }
    }
}

/// Runs an `applications` command.
pub async fn run_applications(ctx: &mut Ctx, cmd: ApplicationCmd) -> Result<()> {
    match cmd {
        ApplicationCmd::Create { portfolio, fields } => {
            let req = pb::CreateApplicationRequest {
                parent: names::portfolio(ctx, &portfolio).await?,
                application: Some(pb::Application {
                    display_name: fields.display_name,
                    description: fields.description.unwrap_or_default(),
                    ..Default::default()
                }),
            };
            let r = rpc!(
                ctx,
                Call::Write,
                CatalogServiceClient::create_application,
                req
            )?;
            emit(ctx.format(), &r, |r| {
                show_application(r.application.as_ref())
            })
        }
        ApplicationCmd::Get { name, scope } => {
            let name = names::application(ctx, &name, scope.portfolio.as_deref()).await?;
            let req = pb::GetApplicationRequest { name };
            let r = rpc!(ctx, Call::Read, CatalogServiceClient::get_application, req)?;
            emit(ctx.format(), &r, |r| {
                show_application(r.application.as_ref())
            })
        }
        ApplicationCmd::List { portfolio, page } => {
            let req = pb::ListApplicationsRequest {
                parent: names::portfolio(ctx, &portfolio).await?,
                page_size: page.page_size,
                page_token: page.page_token.unwrap_or_default(),
            };
            let r = rpc!(
                ctx,
                Call::Read,
                CatalogServiceClient::list_applications,
                req
            )?;
            emit(ctx.format(), &r, |r| {
                let rows = r.applications.iter().map(|a| {
                    vec![
                        a.name.clone(),
                        a.display_name.clone(),
                        a.description.clone(),
                    ]
                });
                print_list(rows, &r.next_page_token);
            })
        }
        ApplicationCmd::Update { fields: a, scope } => {
            let update_mask = name_mask(&a)?;
            let req = pb::UpdateApplicationRequest {
                application: Some(pb::Application {
                    name: names::application(ctx, &a.name, scope.portfolio.as_deref()).await?,
                    display_name: a.display_name.unwrap_or_default(),
                    description: a.description.unwrap_or_default(),
                    etag: a.etag.unwrap_or_default(),
                    ..Default::default()
                }),
                update_mask: Some(update_mask),
            };
            let r = rpc!(
                ctx,
                Call::Write,
                CatalogServiceClient::update_application,
                req
            )?;
            emit(ctx.format(), &r, |r| {
                show_application(r.application.as_ref())
            })
        }
        ApplicationCmd::Delete { target: a, scope } => {
            let name = names::application(ctx, &a.name, scope.portfolio.as_deref()).await?;
            let req = pb::DeleteApplicationRequest {
                name: name.clone(),
                etag: a.etag.unwrap_or_default(),
                force: a.force,
            };
            let r = rpc!(
                ctx,
                Call::Write,
                CatalogServiceClient::delete_application,
                req
            )?;
            emit(ctx.format(), &r, |_| println!("Deleted {name}."))
        }
    }
}

/// Runs an `environments` command.
pub async fn run_environments(ctx: &mut Ctx, cmd: EnvironmentCmd) -> Result<()> {
    match cmd {
        EnvironmentCmd::Create {
            application,
            scope,
            fields,
            production,
        } => {
            let req = pb::CreateEnvironmentRequest {
                parent: names::application(ctx, &application, scope.portfolio.as_deref()).await?,
                environment: Some(pb::Environment {
                    display_name: fields.display_name,
                    description: fields.description.unwrap_or_default(),
                    production,
                    ..Default::default()
                }),
            };
            let r = rpc!(
                ctx,
                Call::Write,
                CatalogServiceClient::create_environment,
                req
            )?;
            emit(ctx.format(), &r, |r| {
                show_environment(r.environment.as_ref())
            })
        }
        EnvironmentCmd::Get { name, scope } => {
            let name = names::environment(ctx, &name, &scope).await?;
            let req = pb::GetEnvironmentRequest { name };
            let r = rpc!(ctx, Call::Read, CatalogServiceClient::get_environment, req)?;
            emit(ctx.format(), &r, |r| {
                show_environment(r.environment.as_ref())
            })
        }
        EnvironmentCmd::List {
            application,
            scope,
            page,
        } => {
            let req = pb::ListEnvironmentsRequest {
                parent: names::application(ctx, &application, scope.portfolio.as_deref()).await?,
                page_size: page.page_size,
                page_token: page.page_token.unwrap_or_default(),
            };
            let r = rpc!(
                ctx,
                Call::Read,
                CatalogServiceClient::list_environments,
                req
            )?;
            emit(ctx.format(), &r, |r| {
                let mut t = Table::new(&["name", "display name", "production"]);
                for e in &r.environments {
                    t.row(vec![
                        e.name.clone(),
                        e.display_name.clone(),
                        output::yes_no(e.production),
                    ]);
                }
                t.print();
                next_page_hint(&r.next_page_token);
            })
        }
        EnvironmentCmd::Update {
            fields,
            production,
            scope,
        } => {
            let update_mask = mask(&[
                ("display_name", fields.display_name.is_some()),
                ("description", fields.description.is_some()),
                ("production", production.is_some()),
            ])?;
            let req = pb::UpdateEnvironmentRequest {
                environment: Some(pb::Environment {
                    name: names::environment(ctx, &fields.name, &scope).await?,
                    display_name: fields.display_name.unwrap_or_default(),
                    description: fields.description.unwrap_or_default(),
                    production: production.unwrap_or_default(),
                    etag: fields.etag.unwrap_or_default(),
                    ..Default::default()
                }),
                update_mask: Some(update_mask),
            };
            let r = rpc!(
                ctx,
                Call::Write,
                CatalogServiceClient::update_environment,
                req
            )?;
            emit(ctx.format(), &r, |r| {
                show_environment(r.environment.as_ref())
            })
        }
        EnvironmentCmd::Delete { target: a, scope } => {
            let name = names::environment(ctx, &a.name, &scope).await?;
            let req = pb::DeleteEnvironmentRequest {
                name: name.clone(),
                etag: a.etag.unwrap_or_default(),
                force: a.force,
            };
            let r = rpc!(
                ctx,
                Call::Write,
                CatalogServiceClient::delete_environment,
                req
            )?;
            emit(ctx.format(), &r, |_| println!("Deleted {name}."))
        }
    }
}

fn name_mask(a: &UpdateArgs) -> Result<prost_types::FieldMask> {
    mask(&[
        ("display_name", a.display_name.is_some()),
        ("description", a.description.is_some()),
    ])
}

fn print_list(rows: impl Iterator<Item = Vec<String>>, next_page_token: &str) {
    let mut t = Table::new(&["name", "display name", "description"]);
    rows.for_each(|r| t.row(r));
    t.print();
    next_page_hint(next_page_token);
}

fn show_portfolio(p: Option<&pb::Portfolio>) {
    let Some(p) = p else { return };
    Fields::new()
        .add("name", p.name.clone())
        .add("display name", p.display_name.clone())
        .add("description", p.description.clone())
        .add("administrators", p.administrators_group.clone())
        .add("created", output::time(&p.create_time))
        .add("etag", p.etag.clone())
        .print();
}

fn show_application(a: Option<&pb::Application>) {
    let Some(a) = a else { return };
    Fields::new()
        .add("name", a.name.clone())
        .add("display name", a.display_name.clone())
        .add("description", a.description.clone())
        .add("created", output::time(&a.create_time))
        .add("etag", a.etag.clone())
        .print();
}

fn show_environment(e: Option<&pb::Environment>) {
    let Some(e) = e else { return };
    Fields::new()
        .add("name", e.name.clone())
        .add("display name", e.display_name.clone())
        .add("description", e.description.clone())
        .add("production", output::yes_no(e.production))
        .add("created", output::time(&e.create_time))
        .add("etag", e.etag.clone())
        .print();
}
