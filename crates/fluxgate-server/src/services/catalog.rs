//! CatalogService: portfolios, applications and environments.

use std::sync::Arc;

use fluxgate_authz::{Action, Target};
use fluxgate_domain::{PortfolioId, Violations};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::catalog_service_server::CatalogService;
use fluxgate_store::catalog::{self, Item, Kind};
use fluxgate_store::changes::EntityKind;
use fluxgate_store::{DbConnection, Tx, approvals, audit, groups, service_accounts};
use tonic::{Request, Response, Status};

use super::reply;
use crate::auth::RequestCtx;
use crate::convert::{
    PageToken, application_name, check_etag, description, environment_name, etag, field,
    group_name, in_use, mask_paths, page_size, parse_ids, portfolio_name, timestamp, title,
};
use crate::directory::Principal;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Debug, Clone)]
pub struct CatalogSvc {
    pub state: Arc<AppState>,
}

fn snapshot(i: &Item) -> Option<String> {
    serde_json::to_string(&serde_json::json!({
        "display_name": i.display_name,
        "description": i.description,
        "production": i.production,
    }))
    .ok()
}

fn portfolio_pb(i: &Item, admin_group: Option<&groups::Group>) -> pb::Portfolio {
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

/// Where an item sits: (portfolio id, application id, item id) as strings.
#[derive(Debug, Clone)]
struct Path {
    portfolio: String,
    application: Option<String>,
    id: String,
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

fn noun(kind: Kind) -> &'static str {
    match kind {
        Kind::Portfolio => "portfolio",
        Kind::Application => "application",
        Kind::Environment => "environment",
    }
}

fn entity(kind: Kind) -> EntityKind {
    match kind {
        Kind::Portfolio => EntityKind::Portfolio,
        Kind::Application => EntityKind::Application,
        Kind::Environment => EntityKind::Environment,
    }
}

/// Loads an item and checks that it sits where its name says.
fn load(conn: &mut DbConnection, kind: Kind, path: &Path) -> ApiResult<Item> {
    let not_found = || ApiError::NotFound(format!("no such {}", noun(kind)));
    let item = catalog::find(conn, kind, &path.id)?.ok_or_else(not_found)?;
    match kind {
        Kind::Portfolio => {}
        Kind::Application => {
            if item.parent_id.as_deref() != Some(path.portfolio.as_str()) {
                return Err(not_found());
            }
        }
        Kind::Environment => {
            if item.parent_id != path.application {
                return Err(not_found());
            }
            let app_path = Path {
                portfolio: path.portfolio.clone(),
                application: None,
                id: path.application.clone().unwrap_or_default(),
            };
            load(conn, Kind::Application, &app_path).map_err(|_| not_found())?;
        }
    }
    Ok(item)
}

fn portfolio_id(p: &str) -> ApiResult<PortfolioId> {
    p.parse()
        .map_err(|_| ApiError::Internal(format!("bad portfolio id {p}")))
}

/// The parent's id a child's name-uniqueness is scoped to.
fn scope(kind: Kind, path: &Path) -> String {
    match kind {
        Kind::Portfolio => String::new(),
        Kind::Application => path.portfolio.clone(),
        Kind::Environment => path.application.clone().unwrap_or_default(),
    }
}

fn ensure_name_free(
    conn: &mut DbConnection,
    kind: Kind,
    parent: &str,
    name: &str,
    except: Option<&str>,
) -> ApiResult<()> {
    if let Some(other) = catalog::find_by_name(conn, kind, parent, name)?
        && Some(other.id.as_str()) != except
    {
        return Err(ApiError::AlreadyExists(format!(
            "a {} named {name:?} already exists here",
            noun(kind)
        )));
    }
    Ok(())
}

/// What a client sets on a new catalog item.
struct NewFields<'a> {
    display_name: &'a str,
    description: &'a str,
    production: bool,
}

/// Ids removed with a forced delete, for the change log.
#[derive(Default)]
struct Cascade {
    applications: Vec<String>,
    environments: Vec<String>,
    groups: Vec<String>,
    service_accounts: Vec<String>,
}

impl Cascade {
    fn record(&self, tx: &mut Tx<'_>) {
        for a in &self.applications {
            tx.changed(EntityKind::Application, a.clone());
        }
        for e in &self.environments {
            tx.changed(EntityKind::Environment, e.clone());
        }
        for g in &self.groups {
            tx.changed(EntityKind::Group, g.clone());
        }
        for s in &self.service_accounts {
            tx.changed(EntityKind::ServiceAccount, s.clone());
        }
    }
}

impl CatalogSvc {
    fn portfolio_target(&self, p: &Principal, action: Action, portfolio: &str) -> ApiResult<()> {
        self.state
            .authorize(p, action, Target::Portfolio(portfolio_id(portfolio)?))
    }

    async fn create(
        &self,
        ctx: &RequestCtx,
        p: Principal,
        kind: Kind,
        parent: &str,
        fields: NewFields<'_>,
    ) -> ApiResult<(Item, Path, Option<groups::Group>, Option<i64>)> {
        let st = &self.state;
        let mut v = Violations::new();
        let NewFields {
            display_name,
            description: desc,
            production,
        } = fields;
        let name = v.check(
            "",
            title(&format!("{}.display_name", noun(kind)), display_name),
        );
        let description = v.check(
            "",
            description(&format!("{}.description", noun(kind)), desc),
        );
        let parent_path = match kind {
            Kind::Portfolio => None,
            Kind::Application => field(&mut v, parse_path("parent", Kind::Portfolio, parent)),
            Kind::Environment => field(&mut v, parse_path("parent", Kind::Application, parent)),
        };
        v.finish()?;
        let (Some(name), Some(description)) = (name, description) else {
            return Err(ApiError::Internal(
                "validation passed without values".into(),
            ));
        };
        match &parent_path {
            None => st.authorize(&p, Action::CreatePortfolio, Target::Org)?,
            Some(pp) => self.portfolio_target(&p, Action::ManageApplications, &pp.portfolio)?,
        }
        let ctx2 = ctx.clone();
        let committed = st
            .db
            .write(move |tx| {
                let id = uuid::Uuid::now_v7().to_string();
                let path = match &parent_path {
                    None => Path {
                        portfolio: id.clone(),
                        application: None,
                        id: id.clone(),
                    },
                    Some(pp) => {
                        let parent_kind = if kind == Kind::Application {
                            Kind::Portfolio
                        } else {
                            Kind::Application
                        };
                        load(tx.conn, parent_kind, pp)?;
                        Path {
                            portfolio: pp.portfolio.clone(),
                            application: (kind == Kind::Environment).then(|| pp.id.clone()),
                            id: id.clone(),
                        }
                    }
                };
                ensure_name_free(tx.conn, kind, &scope(kind, &path), name.as_str(), None)?;
                let item = Item {
                    id: id.clone(),
                    parent_id: match kind {
                        Kind::Portfolio => None,
                        Kind::Application => Some(path.portfolio.clone()),
                        Kind::Environment => path.application.clone(),
                    },
                    display_name: name.as_str().to_owned(),
                    description: description.as_str().to_owned(),
                    production,
                    created_at: tx.now,
                    updated_at: tx.now,
                    version: 1,
                };
                catalog::insert(tx.conn, kind, &item)?;
                tx.changed(entity(kind), id.clone());
                let mut admin = None;
                if kind == Kind::Portfolio {
                    let g = groups::Group {
                        id: uuid::Uuid::now_v7().to_string(),
                        portfolio_id: id.clone(),
                        display_name: groups::ADMINISTRATORS.into(),
                        description:
                            "Members administer this portfolio and hold every permission in it."
                                .into(),
                        administrators: true,
                        created_at: tx.now,
                        updated_at: tx.now,
                        version: 1,
                    };
                    groups::insert(tx.conn, &g)?;
                    tx.changed(EntityKind::Group, g.id.clone());
                    admin = Some(g);
                }
                let target = match kind {
                    Kind::Portfolio => portfolio_name(&id),
                    Kind::Application => application_name(&path.portfolio, &id),
                    Kind::Environment => environment_name(
                        &path.portfolio,
                        path.application.as_deref().unwrap_or(""),
                        &id,
                    ),
                };
                let mut e = ctx2.event(
                    Some(&p),
                    &format!("{}.created", noun(kind)),
                    noun(kind),
                    Some(target),
                );
                e.after_json = snapshot(&item);
                audit::append(tx.conn, e, tx.now)?;
                Ok((item, path, admin))
            })
            .await?;
        st.directory.settle().await;
        let (item, path, admin) = committed.value;
        Ok((item, path, admin, committed.revision))
    }

    async fn get(
        &self,
        p: &Principal,
        kind: Kind,
        name: &str,
    ) -> ApiResult<(Item, Path, Option<groups::Group>)> {
        let path = parse_path("name", kind, name)?;
        self.state.authorize(p, Action::ReadCatalog, Target::Org)?;
        self.state
            .db
            .read(move |conn| {
                let item = load(conn, kind, &path)?;
                let admin = if kind == Kind::Portfolio {
                    groups::administrators_of(conn, &item.id)?
                } else {
                    None
                };
                Ok((item, path, admin))
            })
            .await
    }

    async fn list(
        &self,
        p: &Principal,
        kind: Kind,
        parent: &str,
        size: i32,
        token: &str,
    ) -> ApiResult<(Vec<(Item, Option<groups::Group>)>, Path, String)> {
        let path = match kind {
            Kind::Portfolio => Path {
                portfolio: String::new(),
                application: None,
                id: String::new(),
            },
            Kind::Application => parse_path("parent", Kind::Portfolio, parent)?,
            Kind::Environment => parse_path("parent", Kind::Application, parent)?,
        };
        let limit = page_size(size)?;
        let after = PageToken::decode(token, &parent.to_owned())?;
        self.state.authorize(p, Action::ReadCatalog, Target::Org)?;
        let parent_owned = parent.to_owned();
        let path2 = path.clone();
        self.state
            .db
            .read(move |conn| {
                match kind {
                    Kind::Portfolio => {}
                    Kind::Application => {
                        load(conn, Kind::Portfolio, &path2)?;
                    }
                    Kind::Environment => {
                        load(conn, Kind::Application, &path2)?;
                    }
                }
                let mut items = catalog::list(conn, kind, &path2.id, after.as_deref(), limit + 1)?;
                let more = items.len() as i64 > limit;
                items.truncate(limit as usize);
                let next = match (more, items.last()) {
                    (true, Some(last)) => PageToken {
                        after: last.display_name.to_lowercase(),
                        filter: parent_owned,
                    }
                    .encode(),
                    _ => String::new(),
                };
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    let admin = if kind == Kind::Portfolio {
                        groups::administrators_of(conn, &i.id)?
                    } else {
                        None
                    };
                    out.push((i, admin));
                }
                Ok((out, path2, next))
            })
            .await
    }

    /// Applies the masked fields and writes; returns the new item.
    async fn update(
        &self,
        ctx: &RequestCtx,
        p: Principal,
        kind: Kind,
        name: &str,
        new: (String, String, bool, String),
        mask: Option<&prost_types::FieldMask>,
    ) -> ApiResult<(Item, Path, Option<groups::Group>, Option<i64>)> {
        let st = &self.state;
        let allowed: &[&str] = if kind == Kind::Environment {
            &["display_name", "description", "production"]
        } else {
            &["display_name", "description"]
        };
        let field = noun(kind);
        let path = parse_path(&format!("{field}.name"), kind, name)?;
        let paths = mask_paths(mask, allowed)?;
        let (display_name, desc, production, etag_given) = new;
        let mut v = Violations::new();
        let name_v = if paths.iter().any(|p| p == "display_name") {
            v.check("", title(&format!("{field}.display_name"), &display_name))
        } else {
            None
        };
        let desc_v = if paths.iter().any(|p| p == "description") {
            v.check("", description(&format!("{field}.description"), &desc))
        } else {
            None
        };
        v.finish()?;
        match kind {
            Kind::Portfolio => {
                self.portfolio_target(&p, Action::UpdatePortfolio, &path.portfolio)?
            }
            _ => self.portfolio_target(&p, Action::ManageApplications, &path.portfolio)?,
        }
        let set_production = paths.iter().any(|p| p == "production");
        let ctx2 = ctx.clone();
        let committed = st
            .db
            .write(move |tx| {
                let before = load(tx.conn, kind, &path)?;
                check_etag(&etag_given, &before.id, before.version)?;
                let mut after = before.clone();
                if let Some(n) = &name_v {
                    if n.key() != before.display_name.to_lowercase() {
                        ensure_name_free(
                            tx.conn,
                            kind,
                            &scope(kind, &path),
                            n.as_str(),
                            Some(&before.id),
                        )?;
                    }
                    after.display_name = n.as_str().to_owned();
                }
                if let Some(d) = &desc_v {
                    after.description = d.as_str().to_owned();
                }
                if set_production {
                    after.production = production;
                }
                let admin = if kind == Kind::Portfolio {
                    groups::administrators_of(tx.conn, &before.id)?
                } else {
                    None
                };
                if after == before {
                    return Ok((before, path, admin));
                }
                catalog::update(tx.conn, kind, &after, tx.now)?;
                let mut e = ctx2.event(
                    Some(&p),
                    &format!("{}.updated", noun(kind)),
                    noun(kind),
                    Some(name_of(kind, &path)),
                );
                e.before_json = snapshot(&before);
                e.after_json = snapshot(&after);
                audit::append(tx.conn, e, tx.now)?;
                tx.changed(entity(kind), before.id.clone());
                let fresh = load(tx.conn, kind, &path)?;
                Ok((fresh, path, admin))
            })
            .await?;
        st.directory.settle().await;
        let (item, path, admin) = committed.value;
        Ok((item, path, admin, committed.revision))
    }

    async fn delete(
        &self,
        ctx: &RequestCtx,
        p: Principal,
        kind: Kind,
        name: &str,
        etag_given: String,
        force: bool,
    ) -> ApiResult<Option<i64>> {
        let st = &self.state;
        let path = parse_path("name", kind, name)?;
        match kind {
            Kind::Portfolio => {
                self.portfolio_target(&p, Action::DeletePortfolio, &path.portfolio)?
            }
            _ => self.portfolio_target(&p, Action::ManageApplications, &path.portfolio)?,
        }
        let ctx2 = ctx.clone();
        let snap = st.directory.snapshot();
        let committed = st
            .db
            .write(move |tx| {
                let before = load(tx.conn, kind, &path)?;
                check_etag(&etag_given, &before.id, before.version)?;
                let mut cascade = Cascade::default();
                let mut touched_groups: Vec<String> = Vec::new();
                match kind {
                    Kind::Portfolio => {
                        cascade.applications = catalog::application_parents(tx.conn, Some(&before.id))?
                            .into_iter()
                            .map(|(a, _)| a)
                            .collect();
                        for a in &cascade.applications {
                            cascade.environments.extend(catalog::environment_parents(tx.conn, Some(a))?.into_iter().map(|(e, _)| e));
                        }
                        let gs = groups::in_portfolio(tx.conn, &before.id)?;
                        let admin_members = match gs.iter().find(|g| g.administrators) {
                            Some(g) => groups::member_count(tx.conn, &g.id)? as usize,
                            None => 0,
                        };
                        cascade.groups = gs.iter().map(|g| g.id.clone()).collect();
                        cascade.service_accounts = service_accounts::ids_in_portfolio(tx.conn, &before.id)?;
                        let others = gs.iter().filter(|g| !g.administrators).count();
                        if !force && (cascade.applications.len() + others + cascade.service_accounts.len() + admin_members) > 0 {
                            let open = approvals::open_in(tx.conn, &cascade.environments)?.len();
                            return Err(in_use(
                                "the portfolio",
                                &[
                                    (cascade.applications.len(), "application(s)"),
                                    (others, "group(s) besides Administrators"),
                                    (admin_members, "Administrators member(s)"),
                                    (cascade.service_accounts.len(), "service account(s)"),
                                    (open, "open change request(s)"),
                                ],
                            ));
                        }
                        for sa in &cascade.service_accounts {
                            groups::remove_principal(tx.conn, "service_account", sa)?;
                        }
                    }
                    Kind::Application => {
                        cascade.environments =
                            catalog::environment_parents(tx.conn, Some(&before.id))?.into_iter().map(|(e, _)| e).collect();
                        touched_groups = groups::granting_application(tx.conn, &before.id)?;
                        touched_groups.extend(groups::granting_environments(tx.conn, &cascade.environments)?);
                        touched_groups.sort();
                        touched_groups.dedup();
                        if !force && cascade.environments.len() + touched_groups.len() > 0 {
                            let open = approvals::open_in(tx.conn, &cascade.environments)?.len();
                            return Err(in_use(
                                "the application",
                                &[
                                    (cascade.environments.len(), "environment(s)"),
                                    (touched_groups.len(), "group(s) with grants on it"),
                                    (open, "open change request(s)"),
                                ],
                            ));
                        }
                    }
                    Kind::Environment => {
                        touched_groups = groups::granting_environments(tx.conn, std::slice::from_ref(&before.id))?;
                        let open = approvals::open_in(tx.conn, std::slice::from_ref(&before.id))?.len();
                        if !force && touched_groups.len() + open > 0 {
                            return Err(in_use(
                                "the environment",
                                &[(touched_groups.len(), "group(s) with grants on it"), (open, "open change request(s)")],
                            ));
                        }
                    }
                }
                let mut doomed = cascade.environments.clone();
                if kind == Kind::Environment {
                    doomed.push(before.id.clone());
                }
                // Every branch above refused open requests unless forced; these are cancelled.
                crate::runner::cancel_in_environments(tx, &ctx2, &p, &snap, &doomed)?;
                catalog::delete(tx.conn, kind, &before.id)?;
                tx.changed(entity(kind), before.id.clone());
                cascade.record(tx);
                for g in &touched_groups {
                    groups::touch(tx.conn, g, tx.now)?;
                    tx.changed(EntityKind::Group, g.clone());
                }
                let mut e = ctx2.event(Some(&p), &format!("{}.deleted", noun(kind)), noun(kind), Some(name_of(kind, &path)));
                e.before_json = snapshot(&before);
                if force {
                    e.detail = Some(format!(
                        "forced: {} application(s), {} environment(s), {} group(s), {} service account(s) removed, {} group(s) lost grants",
                        cascade.applications.len(),
                        cascade.environments.len(),
                        cascade.groups.len(),
                        cascade.service_accounts.len(),
                        touched_groups.len()
                    ));
                }
                audit::append(tx.conn, e, tx.now)?;
                Ok(())
            })
            .await?;
        st.directory.settle().await;
        Ok(committed.revision)
    }
}

fn name_of(kind: Kind, path: &Path) -> String {
    match kind {
        Kind::Portfolio => portfolio_name(&path.portfolio),
        Kind::Application => application_name(&path.portfolio, &path.id),
        Kind::Environment => environment_name(
            &path.portfolio,
            path.application.as_deref().unwrap_or(""),
            &path.id,
        ),
    }
}

#[tonic::async_trait]
impl CatalogService for CatalogSvc {
    async fn create_portfolio(
        &self,
        request: Request<pb::CreatePortfolioRequest>,
    ) -> Result<Response<pb::CreatePortfolioResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let Some(x) = req.portfolio else {
            return Err(ApiError::invalid("portfolio", "is required").into());
        };
        let (item, _, admin, rev) = self
            .create(
                &ctx,
                p,
                Kind::Portfolio,
                "",
                NewFields {
                    display_name: &x.display_name,
                    description: &x.description,
                    production: false,
                },
            )
            .await?;
        Ok(reply(
            pb::CreatePortfolioResponse {
                portfolio: Some(portfolio_pb(&item, admin.as_ref())),
            },
            &ctx,
            rev,
        ))
    }

    async fn get_portfolio(
        &self,
        request: Request<pb::GetPortfolioRequest>,
    ) -> Result<Response<pb::GetPortfolioResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let (item, _, admin) = self.get(&p, Kind::Portfolio, &req.name).await?;
        Ok(reply(
            pb::GetPortfolioResponse {
                portfolio: Some(portfolio_pb(&item, admin.as_ref())),
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
        let (items, _, next) = self
            .list(&p, Kind::Portfolio, "", req.page_size, &req.page_token)
            .await?;
        Ok(reply(
            pb::ListPortfoliosResponse {
                portfolios: items
                    .iter()
                    .map(|(i, a)| portfolio_pb(i, a.as_ref()))
                    .collect(),
                next_page_token: next,
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
        let Some(x) = req.portfolio else {
            return Err(ApiError::invalid("portfolio", "is required").into());
        };
        let (item, _, admin, rev) = self
            .update(
                &ctx,
                p,
                Kind::Portfolio,
                &x.name,
                (x.display_name, x.description, false, x.etag),
                req.update_mask.as_ref(),
            )
            .await?;
        Ok(reply(
            pb::UpdatePortfolioResponse {
                portfolio: Some(portfolio_pb(&item, admin.as_ref())),
            },
            &ctx,
            rev,
        ))
    }

    async fn delete_portfolio(
        &self,
        request: Request<pb::DeletePortfolioRequest>,
    ) -> Result<Response<pb::DeletePortfolioResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let rev = self
            .delete(&ctx, p, Kind::Portfolio, &req.name, req.etag, req.force)
            .await?;
        Ok(reply(pb::DeletePortfolioResponse {}, &ctx, rev))
    }

    async fn create_application(
        &self,
        request: Request<pb::CreateApplicationRequest>,
    ) -> Result<Response<pb::CreateApplicationResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let Some(x) = req.application else {
            return Err(ApiError::invalid("application", "is required").into());
        };
        let (item, path, _, rev) = self
            .create(
                &ctx,
                p,
                Kind::Application,
                &req.parent,
                NewFields {
                    display_name: &x.display_name,
                    description: &x.description,
                    production: false,
                },
            )
            .await?;
        Ok(reply(
            pb::CreateApplicationResponse {
                application: Some(application_pb(&path.portfolio, &item)),
            },
            &ctx,
            rev,
        ))
    }

    async fn get_application(
        &self,
        request: Request<pb::GetApplicationRequest>,
    ) -> Result<Response<pb::GetApplicationResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let (item, path, _) = self.get(&p, Kind::Application, &req.name).await?;
        Ok(reply(
            pb::GetApplicationResponse {
                application: Some(application_pb(&path.portfolio, &item)),
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
        let (items, path, next) = self
            .list(
                &p,
                Kind::Application,
                &req.parent,
                req.page_size,
                &req.page_token,
            )
            .await?;
        Ok(reply(
            pb::ListApplicationsResponse {
                applications: items
                    .iter()
                    .map(|(i, _)| application_pb(&path.portfolio, i))
                    .collect(),
                next_page_token: next,
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
        let Some(x) = req.application else {
            return Err(ApiError::invalid("application", "is required").into());
        };
        let (item, path, _, rev) = self
            .update(
                &ctx,
                p,
                Kind::Application,
                &x.name,
                (x.display_name, x.description, false, x.etag),
                req.update_mask.as_ref(),
            )
            .await?;
        Ok(reply(
            pb::UpdateApplicationResponse {
                application: Some(application_pb(&path.portfolio, &item)),
            },
            &ctx,
            rev,
        ))
    }

    async fn delete_application(
        &self,
        request: Request<pb::DeleteApplicationRequest>,
    ) -> Result<Response<pb::DeleteApplicationResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let rev = self
            .delete(&ctx, p, Kind::Application, &req.name, req.etag, req.force)
            .await?;
        Ok(reply(pb::DeleteApplicationResponse {}, &ctx, rev))
    }

    async fn create_environment(
        &self,
        request: Request<pb::CreateEnvironmentRequest>,
    ) -> Result<Response<pb::CreateEnvironmentResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let Some(x) = req.environment else {
            return Err(ApiError::invalid("environment", "is required").into());
        };
        let (item, path, _, rev) = self
            .create(
                &ctx,
                p,
                Kind::Environment,
                &req.parent,
                NewFields {
                    display_name: &x.display_name,
                    description: &x.description,
                    production: x.production,
                },
            )
            .await?;
        let app = path.application.unwrap_or_default();
        Ok(reply(
            pb::CreateEnvironmentResponse {
                environment: Some(environment_pb(&path.portfolio, &app, &item)),
            },
            &ctx,
            rev,
        ))
    }

    async fn get_environment(
        &self,
        request: Request<pb::GetEnvironmentRequest>,
    ) -> Result<Response<pb::GetEnvironmentResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let (item, path, _) = self.get(&p, Kind::Environment, &req.name).await?;
        let app = path.application.unwrap_or_default();
        Ok(reply(
            pb::GetEnvironmentResponse {
                environment: Some(environment_pb(&path.portfolio, &app, &item)),
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
        let (items, path, next) = self
            .list(
                &p,
                Kind::Environment,
                &req.parent,
                req.page_size,
                &req.page_token,
            )
            .await?;
        Ok(reply(
            pb::ListEnvironmentsResponse {
                environments: items
                    .iter()
                    .map(|(i, _)| environment_pb(&path.portfolio, &path.id, i))
                    .collect(),
                next_page_token: next,
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
        let Some(x) = req.environment else {
            return Err(ApiError::invalid("environment", "is required").into());
        };
        let (item, path, _, rev) = self
            .update(
                &ctx,
                p,
                Kind::Environment,
                &x.name,
                (x.display_name, x.description, x.production, x.etag),
                req.update_mask.as_ref(),
            )
            .await?;
        let app = path.application.unwrap_or_default();
        Ok(reply(
            pb::UpdateEnvironmentResponse {
                environment: Some(environment_pb(&path.portfolio, &app, &item)),
            },
            &ctx,
            rev,
        ))
    }

    async fn delete_environment(
        &self,
        request: Request<pb::DeleteEnvironmentRequest>,
    ) -> Result<Response<pb::DeleteEnvironmentResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let rev = self
            .delete(&ctx, p, Kind::Environment, &req.name, req.etag, req.force)
            .await?;
        Ok(reply(pb::DeleteEnvironmentResponse {}, &ctx, rev))
    }
}
