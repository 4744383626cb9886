//! CatalogService: portfolios, applications and environments.

use std::sync::Arc;

use fluxgate_core::catalog::{self, Create, Delete, Group, Item, Kind, Path, Placed, Update, noun};
use fluxgate_domain::Violations;
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::catalog_service_server::CatalogService;
use tonic::{Request, Response, Status};

use super::reply;
use crate::auth::RequestCtx;
use crate::convert::{
    PageToken, application_name, checked, description, environment_name, etag, field, group_name,
    mask_paths, page_size, parse_ids, portfolio_name, timestamp, title, when,
};
use crate::directory::Principal;
use crate::error::{ApiError, ApiResult};
use crate::runner::Done;
use crate::state::AppState;

#[derive(Debug, Clone)]
pub struct CatalogSvc {
    pub state: Arc<AppState>,
}

fn portfolio_pb(i: &Item, admin_group: Option<&Group>) -> pb::Portfolio {
    pb::Portfolio {
        name: portfolio_name(&i.id),
        display_name: i.display_name.clone(),
        description: i.description.clone(),
        administrators_group: admin_group
            .map(|g| group_name(&g.portfolio_id, &g.id))
            .unwrap_or_default(),
        create_time: Some(timestamp(i.created_at)),
        update_time: Some(timestamp(i.updated_at)),
        etag: etag(&i.id, i.version),
    }
}

fn application_pb(portfolio: &str, i: &Item) -> pb::Application {
    pb::Application {
        name: application_name(portfolio, &i.id),
        display_name: i.display_name.clone(),
        description: i.description.clone(),
        create_time: Some(timestamp(i.created_at)),
        update_time: Some(timestamp(i.updated_at)),
        etag: etag(&i.id, i.version),
    }
}

fn environment_pb(portfolio: &str, app: &str, i: &Item) -> pb::Environment {
    pb::Environment {
        name: environment_name(portfolio, app, &i.id),
        display_name: i.display_name.clone(),
        description: i.description.clone(),
        production: i.production,
        create_time: Some(timestamp(i.created_at)),
        update_time: Some(timestamp(i.updated_at)),
        etag: etag(&i.id, i.version),
    }
}

fn parse_path(field: &str, kind: Kind, name: &str) -> ApiResult<Path> {
    Ok(match kind {
        Kind::Portfolio => {
            let ids = parse_ids(field, name, &["portfolios"])?;
            Path {
                portfolio: ids[0].to_string(),
                application: None,
                id: ids[0].to_string(),
            }
        }
        Kind::Application => {
            let ids = parse_ids(field, name, &["portfolios", "applications"])?;
            Path {
                portfolio: ids[0].to_string(),
                application: None,
                id: ids[1].to_string(),
            }
        }
        Kind::Environment => {
            let ids = parse_ids(field, name, &["portfolios", "applications", "environments"])?;
            Path {
                portfolio: ids[0].to_string(),
                application: Some(ids[1].to_string()),
                id: ids[2].to_string(),
            }
        }
    })
}

/// What a client sets on a new catalog item.
struct NewFields<'a> {
    display_name: &'a str,
    description: &'a str,
    production: bool,
}

impl CatalogSvc {
    async fn create(
        &self,
        ctx: &RequestCtx,
        p: Principal,
        kind: Kind,
        parent: &str,
        fields: NewFields<'_>,
    ) -> ApiResult<Done<Placed>> {
        let mut v = Violations::new();
        let n = noun(kind);
        let name = v.check("", title(&format!("{n}.display_name"), fields.display_name));
        let desc = v.check(
            "",
            description(&format!("{n}.description"), fields.description),
        );
        let parent = match kind {
            Kind::Portfolio => None,
            Kind::Application => field(&mut v, parse_path("parent", Kind::Portfolio, parent)),
            Kind::Environment => field(&mut v, parse_path("parent", Kind::Application, parent)),
        };
        v.finish()?;
        let cmd = Create {
            kind,
            parent,
            display_name: checked(name)?,
            description: checked(desc)?,
            production: fields.production,
        };
        self.state.execute(ctx, Some(&p), cmd).await
    }

    async fn get(
        &self,
        ctx: &RequestCtx,
        p: &Principal,
        kind: Kind,
        name: &str,
    ) -> ApiResult<Placed> {
        let path = parse_path("name", kind, name)?;
        self.state
            .query(ctx, p, move |cx, conn| catalog::get(cx, conn, kind, path))
            .await
    }

    async fn list(
        &self,
        ctx: &RequestCtx,
        p: &Principal,
        kind: Kind,
        parent: &str,
        (size, token): (i32, &str),
    ) -> ApiResult<(Vec<Placed>, String)> {
        let path = match kind {
            Kind::Portfolio => Path::default(),
            Kind::Application => parse_path("parent", Kind::Portfolio, parent)?,
            Kind::Environment => parse_path("parent", Kind::Application, parent)?,
        };
        let limit = page_size(size)?;
        let after = PageToken::decode(token, &parent.to_owned())?;
        let (items, next) = self
            .state
            .query(ctx, p, move |cx, conn| {
                catalog::list(cx, conn, kind, &path, after.as_deref(), limit)
            })
            .await?;
        let filter = parent.to_owned();
        let next = next.map(|after| PageToken { after, filter }.encode());
        Ok((items, next.unwrap_or_default()))
    }

    /// Applies the masked fields and writes; returns the new item.
    async fn update(
        &self,
        ctx: &RequestCtx,
        p: Principal,
        kind: Kind,
        new: (String, String, String, bool, String),
        mask: Option<&prost_types::FieldMask>,
    ) -> ApiResult<Done<Placed>> {
        let allowed: &[&str] = if kind == Kind::Environment {
            &["display_name", "description", "production"]
        } else {
            &["display_name", "description"]
        };
        let n = noun(kind);
        let (name, display_name, desc, production, etag) = new;
        let path = parse_path(&format!("{n}.name"), kind, &name)?;
        let paths = mask_paths(mask, allowed)?;
        let has = |f: &str| paths.iter().any(|p| p == f);
        let mut v = Violations::new();
        let display_name = when(has("display_name"), || {
            v.check("", title(&format!("{n}.display_name"), &display_name))
        });
        let description = when(has("description"), || {
            v.check("", description(&format!("{n}.description"), &desc))
        });
        v.finish()?;
        let production = has("production").then_some(production);
        let cmd = Update {
            kind,
            path,
            etag,
            display_name,
            description,
            production,
        };
        self.state.execute(ctx, Some(&p), cmd).await
    }

    async fn delete(
        &self,
        ctx: &RequestCtx,
        p: Principal,
        kind: Kind,
        (name, etag, force): (&str, String, bool),
    ) -> ApiResult<Done<()>> {
        let path = parse_path("name", kind, name)?;
        let cmd = Delete {
            kind,
            path,
            etag,
            force,
        };
        self.state.execute(ctx, Some(&p), cmd).await
    }
}

#[tonic::async_trait]
impl CatalogService for CatalogSvc {
    async fn create_portfolio(
        &self,
        request: Request<pb::CreatePortfolioRequest>,
    ) -> Result<Response<pb::CreatePortfolioResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::CreatePortfolioRequest { portfolio } = req;
        let x = portfolio.ok_or_else(|| ApiError::invalid("portfolio", "is required"))?;
        let fields = NewFields {
            display_name: &x.display_name,
            description: &x.description,
            production: false,
        };
        let done = self.create(&ctx, p, Kind::Portfolio, "", fields).await?;
        Ok(done.reply(&ctx, |pl| pb::CreatePortfolioResponse {
            portfolio: Some(portfolio_pb(&pl.item, pl.administrators.as_ref())),
        }))
    }

    async fn get_portfolio(
        &self,
        request: Request<pb::GetPortfolioRequest>,
    ) -> Result<Response<pb::GetPortfolioResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::GetPortfolioRequest { name } = req;
        let pl = self.get(&ctx, &p, Kind::Portfolio, &name).await?;
        Ok(reply(
            pb::GetPortfolioResponse {
                portfolio: Some(portfolio_pb(&pl.item, pl.administrators.as_ref())),
            },
            &ctx,
            None,
        ))
    }

    async fn list_portfolios(
        &self,
        request: Request<pb::ListPortfoliosRequest>,
    ) -> Result<Response<pb::ListPortfoliosResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::ListPortfoliosRequest {
            page_size,
            page_token,
        } = req;
        let page = (page_size, page_token.as_str());
        let (items, next_page_token) = self.list(&ctx, &p, Kind::Portfolio, "", page).await?;
        let portfolios = items
            .iter()
            .map(|pl| portfolio_pb(&pl.item, pl.administrators.as_ref()))
            .collect();
        Ok(reply(
            pb::ListPortfoliosResponse {
                portfolios,
                next_page_token,
            },
            &ctx,
            None,
        ))
    }

    async fn update_portfolio(
        &self,
        request: Request<pb::UpdatePortfolioRequest>,
    ) -> Result<Response<pb::UpdatePortfolioResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::UpdatePortfolioRequest {
            portfolio,
            update_mask,
        } = req;
        let x = portfolio.ok_or_else(|| ApiError::invalid("portfolio", "is required"))?;
        let new = (x.name, x.display_name, x.description, false, x.etag);
        let done = self
            .update(&ctx, p, Kind::Portfolio, new, update_mask.as_ref())
            .await?;
        Ok(done.reply(&ctx, |pl| pb::UpdatePortfolioResponse {
            portfolio: Some(portfolio_pb(&pl.item, pl.administrators.as_ref())),
        }))
    }

    async fn delete_portfolio(
        &self,
        request: Request<pb::DeletePortfolioRequest>,
    ) -> Result<Response<pb::DeletePortfolioResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::DeletePortfolioRequest { name, etag, force } = req;
        let done = self
            .delete(&ctx, p, Kind::Portfolio, (&name, etag, force))
            .await?;
        Ok(done.reply(&ctx, |()| pb::DeletePortfolioResponse {}))
    }

    async fn create_application(
        &self,
        request: Request<pb::CreateApplicationRequest>,
    ) -> Result<Response<pb::CreateApplicationResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::CreateApplicationRequest {
            parent,
            application,
        } = req;
        let x = application.ok_or_else(|| ApiError::invalid("application", "is required"))?;
        let fields = NewFields {
            display_name: &x.display_name,
            description: &x.description,
            production: false,
        };
        let done = self
            .create(&ctx, p, Kind::Application, &parent, fields)
            .await?;
        Ok(done.reply(&ctx, |pl| pb::CreateApplicationResponse {
            application: Some(application_pb(&pl.path.portfolio, &pl.item)),
        }))
    }

    async fn get_application(
        &self,
        request: Request<pb::GetApplicationRequest>,
    ) -> Result<Response<pb::GetApplicationResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::GetApplicationRequest { name } = req;
        let pl = self.get(&ctx, &p, Kind::Application, &name).await?;
        Ok(reply(
            pb::GetApplicationResponse {
                application: Some(application_pb(&pl.path.portfolio, &pl.item)),
            },
            &ctx,
            None,
        ))
    }

    async fn list_applications(
        &self,
        request: Request<pb::ListApplicationsRequest>,
    ) -> Result<Response<pb::ListApplicationsResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::ListApplicationsRequest {
            parent,
            page_size,
            page_token,
        } = req;
        let page = (page_size, page_token.as_str());
        let (items, next_page_token) = self
            .list(&ctx, &p, Kind::Application, &parent, page)
            .await?;
        let applications = items
            .iter()
            .map(|pl| application_pb(&pl.path.portfolio, &pl.item))
            .collect();
        Ok(reply(
            pb::ListApplicationsResponse {
                applications,
                next_page_token,
            },
            &ctx,
            None,
        ))
    }

    async fn update_application(
        &self,
        request: Request<pb::UpdateApplicationRequest>,
    ) -> Result<Response<pb::UpdateApplicationResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::UpdateApplicationRequest {
            application,
            update_mask,
        } = req;
        let x = application.ok_or_else(|| ApiError::invalid("application", "is required"))?;
        let new = (x.name, x.display_name, x.description, false, x.etag);
        let done = self
            .update(&ctx, p, Kind::Application, new, update_mask.as_ref())
            .await?;
        Ok(done.reply(&ctx, |pl| pb::UpdateApplicationResponse {
            application: Some(application_pb(&pl.path.portfolio, &pl.item)),
        }))
    }

    async fn delete_application(
        &self,
        request: Request<pb::DeleteApplicationRequest>,
    ) -> Result<Response<pb::DeleteApplicationResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::DeleteApplicationRequest { name, etag, force } = req;
        let done = self
            .delete(&ctx, p, Kind::Application, (&name, etag, force))
            .await?;
        Ok(done.reply(&ctx, |()| pb::DeleteApplicationResponse {}))
    }

    async fn create_environment(
        &self,
        request: Request<pb::CreateEnvironmentRequest>,
    ) -> Result<Response<pb::CreateEnvironmentResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::CreateEnvironmentRequest {
            parent,
            environment,
        } = req;
        let x = environment.ok_or_else(|| ApiError::invalid("environment", "is required"))?;
        let fields = NewFields {
            display_name: &x.display_name,
            description: &x.description,
            production: x.production,
        };
        let done = self
            .create(&ctx, p, Kind::Environment, &parent, fields)
            .await?;
        Ok(done.reply(&ctx, |pl| pb::CreateEnvironmentResponse {
            environment: Some(environment_pb(
                &pl.path.portfolio,
                pl.path.application.as_deref().unwrap_or(""),
                &pl.item,
            )),
        }))
    }

    async fn get_environment(
        &self,
        request: Request<pb::GetEnvironmentRequest>,
    ) -> Result<Response<pb::GetEnvironmentResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::GetEnvironmentRequest { name } = req;
        let pl = self.get(&ctx, &p, Kind::Environment, &name).await?;
        Ok(reply(
            pb::GetEnvironmentResponse {
                environment: Some(environment_pb(
                    &pl.path.portfolio,
                    pl.path.application.as_deref().unwrap_or(""),
                    &pl.item,
                )),
            },
            &ctx,
            None,
        ))
    }

    async fn list_environments(
        &self,
        request: Request<pb::ListEnvironmentsRequest>,
    ) -> Result<Response<pb::ListEnvironmentsResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::ListEnvironmentsRequest {
            parent,
            page_size,
            page_token,
        } = req;
        let page = (page_size, page_token.as_str());
        let (items, next_page_token) = self
            .list(&ctx, &p, Kind::Environment, &parent, page)
            .await?;
        let environments = items
            .iter()
            .map(|pl| environment_pb(&pl.path.portfolio, &pl.path.id, &pl.item))
            .collect();
        Ok(reply(
            pb::ListEnvironmentsResponse {
                environments,
                next_page_token,
            },
            &ctx,
            None,
        ))
    }

    async fn update_environment(
        &self,
        request: Request<pb::UpdateEnvironmentRequest>,
    ) -> Result<Response<pb::UpdateEnvironmentResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::UpdateEnvironmentRequest {
            environment,
            update_mask,
        } = req;
        let x = environment.ok_or_else(|| ApiError::invalid("environment", "is required"))?;
        let new = (x.name, x.display_name, x.description, x.production, x.etag);
        let done = self
            .update(&ctx, p, Kind::Environment, new, update_mask.as_ref())
            .await?;
        Ok(done.reply(&ctx, |pl| pb::UpdateEnvironmentResponse {
            environment: Some(environment_pb(
                &pl.path.portfolio,
                pl.path.application.as_deref().unwrap_or(""),
                &pl.item,
            )),
        }))
    }

    async fn delete_environment(
        &self,
        request: Request<pb::DeleteEnvironmentRequest>,
    ) -> Result<Response<pb::DeleteEnvironmentResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::DeleteEnvironmentRequest { name, etag, force } = req;
        let done = self
            .delete(&ctx, p, Kind::Environment, (&name, etag, force))
            .await?;
        Ok(done.reply(&ctx, |()| pb::DeleteEnvironmentResponse {}))
    }
}
