//! The catalog: portfolios, applications and environments. A new portfolio comes with its
//! fixed Administrators group; a delete is refused while anything refers to the item, unless
//! forced, when it cascades (applications, environments, groups, service accounts, grants) and
//! cancels the open change requests of the environments it removes.

use fluxgate_authz::{Action, Target};
use fluxgate_domain::{Description, PortfolioId, Refusal, Title};
use fluxgate_store::catalog::{self as store};
use fluxgate_store::changes::EntityKind;
use fluxgate_store::{DbConnection, Tx, approvals, audit, groups, service_accounts};

pub use fluxgate_store::catalog::{Item, Kind};
pub use fluxgate_store::groups::Group;

use crate::audit::{AuditAction, CatalogVerb};
use crate::context::{Command, Ctx};
use crate::error::{Error, Result};
use crate::{etag, names};

/// Where an item sits: (portfolio id, application id, item id) as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Path {
    pub portfolio: String,
    /// An environment's application.
    pub application: Option<String>,
    pub id: String,
}

impl Path {
    /// The item's resource name.
    pub fn name(&self, kind: Kind) -> String {
        match kind {
            Kind::Portfolio => format!("portfolios/{}", self.portfolio),
            Kind::Application => names::application(&self.portfolio, &self.id),
            Kind::Environment => names::environment(
                &self.portfolio,
                self.application.as_deref().unwrap_or(""),
                &self.id,
            ),
        }
    }
}

/// An item with where it sits and, for a portfolio, its Administrators group.
#[derive(Debug, Clone)]
pub struct Placed {
    pub item: Item,
    pub path: Path,
    pub administrators: Option<Group>,
}

pub fn noun(kind: Kind) -> &'static str {
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

fn action(kind: Kind, verb: CatalogVerb) -> Result<AuditAction> {
    AuditAction::catalog(noun(kind), verb)
        .ok_or_else(|| Error::Broken(format!("no audit action for {}", noun(kind))))
}

fn snapshot(i: &Item) -> Option<String> {
    serde_json::to_string(&serde_json::json!({
        "display_name": i.display_name,
        "description": i.description,
        "production": i.production,
    }))
    .ok()
}

/// Loads an item and checks that it sits where its path says.
fn load(conn: &mut DbConnection, kind: Kind, path: &Path) -> Result<Item> {
    let not_found = || Error::not_found(noun(kind));
    let item = store::find(conn, kind, &path.id)?.ok_or_else(not_found)?;
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
            let app = Path {
                portfolio: path.portfolio.clone(),
                application: None,
                id: path.application.clone().unwrap_or_default(),
            };
            load(conn, Kind::Application, &app).map_err(|_| not_found())?;
        }
    }
    Ok(item)
}

fn administrators(conn: &mut DbConnection, kind: Kind, item: &Item) -> Result<Option<Group>> {
    Ok(if kind == Kind::Portfolio {
        groups::administrators_of(conn, &item.id)?
    } else {
        None
    })
}

/// Asks the engine about `action` on the portfolio the path sits in.
fn authorize_in(cx: &Ctx<'_>, action: Action, portfolio: &str) -> Result<()> {
    let id: PortfolioId = portfolio
        .parse()
        .map_err(|_| Error::Broken(format!("bad portfolio id {portfolio}")))?;
    cx.authorize(action, Target::Portfolio(id))
}

/// What managing an item of `kind` needs.
fn manage(cx: &Ctx<'_>, kind: Kind, portfolio: &str, portfolio_action: Action) -> Result<()> {
    match kind {
        Kind::Portfolio => authorize_in(cx, portfolio_action, portfolio),
        _ => authorize_in(cx, Action::ManageApplications, portfolio),
    }
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
) -> Result<()> {
    match store::find_by_name(conn, kind, parent, name)? {
        Some(other) if Some(other.id.as_str()) != except => Err(Refusal::NameTaken {
            noun: noun(kind),
            name: name.to_owned(),
        }
        .into()),
        _ => Ok(()),
    }
}

/// A new item. `parent` is the portfolio of an application, the application of an environment.
#[derive(Debug, Clone)]
pub struct Create {
    pub kind: Kind,
    pub parent: Option<Path>,
    pub display_name: Title,
    pub description: Description,
    pub production: bool,
}

impl Create {
    /// Where the new item `id` sits, once its parent is found.
    fn place(&self, conn: &mut DbConnection, id: &str) -> Result<Path> {
        let Some(pp) = &self.parent else {
            return Ok(Path {
                portfolio: id.to_owned(),
                application: None,
                id: id.to_owned(),
            });
        };
        let parent_kind = if self.kind == Kind::Application {
            Kind::Portfolio
        } else {
            Kind::Application
        };
        load(conn, parent_kind, pp)?;
        Ok(Path {
            portfolio: pp.portfolio.clone(),
            application: (self.kind == Kind::Environment).then(|| pp.id.clone()),
            id: id.to_owned(),
        })
    }
}

/// The fixed Administrators group every portfolio has.
fn administrators_group(tx: &mut Tx<'_>, portfolio: &str) -> Result<Group> {
    let g = Group {
        id: uuid::Uuid::now_v7().to_string(),
        portfolio_id: portfolio.to_owned(),
        display_name: groups::ADMINISTRATORS.into(),
        description: "Members administer this portfolio and hold every permission in it.".into(),
        administrators: true,
        created_at: tx.now,
        updated_at: tx.now,
        version: 1,
    };
    groups::insert(tx.conn, &g)?;
    tx.changed(EntityKind::Group, g.id.clone());
    Ok(g)
}

impl Command for Create {
    type Output = Placed;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        match &self.parent {
            None => cx.authorize(Action::CreatePortfolio, Target::Org),
            Some(pp) => authorize_in(cx, Action::ManageApplications, &pp.portfolio),
        }
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<Placed> {
        let kind = self.kind;
        let id = uuid::Uuid::now_v7().to_string();
        let path = self.place(tx.conn, &id)?;
        ensure_name_free(
            tx.conn,
            kind,
            &scope(kind, &path),
            self.display_name.as_str(),
            None,
        )?;
        let item = Item {
            id: id.clone(),
            parent_id: match kind {
                Kind::Portfolio => None,
                Kind::Application => Some(path.portfolio.clone()),
                Kind::Environment => path.application.clone(),
            },
            display_name: self.display_name.as_str().to_owned(),
            description: self.description.as_str().to_owned(),
            production: self.production,
            created_at: tx.now,
            updated_at: tx.now,
            version: 1,
        };
        store::insert(tx.conn, kind, &item)?;
        tx.changed(entity(kind), id.clone());
        let administrators = match kind {
            Kind::Portfolio => Some(administrators_group(tx, &id)?),
            _ => None,
        };
        let mut e = cx.event(
            action(kind, CatalogVerb::Created)?,
            noun(kind),
            Some(path.name(kind)),
        );
        e.after_json = snapshot(&item);
        audit::append(tx.conn, e, tx.now)?;
        Ok(Placed {
            item,
            path,
            administrators,
        })
    }
}

/// One item, for a caller who may read the catalog.
pub fn get(cx: &Ctx<'_>, conn: &mut DbConnection, kind: Kind, path: Path) -> Result<Placed> {
    cx.authorize(Action::ReadCatalog, Target::Org)?;
    let item = load(conn, kind, &path)?;
    let administrators = administrators(conn, kind, &item)?;
    Ok(Placed {
        item,
        path,
        administrators,
    })
}

/// A page of the children of `parent` (every portfolio for [`Kind::Portfolio`]), by name,
/// after the (lower-cased) name `after`; the next page's `after`, if there is more.
pub fn list(
    cx: &Ctx<'_>,
    conn: &mut DbConnection,
    kind: Kind,
    parent: &Path,
    after: Option<&str>,
    limit: i64,
) -> Result<(Vec<Placed>, Option<String>)> {
    cx.authorize(Action::ReadCatalog, Target::Org)?;
    match kind {
        Kind::Portfolio => {}
        Kind::Application => drop(load(conn, Kind::Portfolio, parent)?),
        Kind::Environment => drop(load(conn, Kind::Application, parent)?),
    }
    let mut items = store::list(conn, kind, &parent.id, after, limit + 1)?;
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next = items
        .last()
        .filter(|_| more)
        .map(|l| l.display_name.to_lowercase());
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let administrators = administrators(conn, kind, &item)?;
        let path = parent.clone();
        out.push(Placed {
            item,
            path,
            administrators,
        });
    }
    Ok((out, next))
}

/// Changes an item; `None` fields stay.
#[derive(Debug, Clone)]
pub struct Update {
    pub kind: Kind,
    pub path: Path,
    pub etag: String,
    pub display_name: Option<Title>,
    pub description: Option<Description>,
    pub production: Option<bool>,
}

impl Command for Update {
    type Output = Placed;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        manage(cx, self.kind, &self.path.portfolio, Action::UpdatePortfolio)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<Placed> {
        let (kind, path) = (self.kind, self.path);
        let before = load(tx.conn, kind, &path)?;
        etag::check(&self.etag, &before.id, before.version)?;
        let mut after = before.clone();
        if let Some(n) = &self.display_name {
            if n.key() != before.display_name.to_lowercase() {
                let scope = scope(kind, &path);
                ensure_name_free(tx.conn, kind, &scope, n.as_str(), Some(&before.id))?;
            }
            after.display_name = n.as_str().to_owned();
        }
        if let Some(d) = &self.description {
            after.description = d.as_str().to_owned();
        }
        if let Some(p) = self.production {
            after.production = p;
        }
        let administrators = administrators(tx.conn, kind, &before)?;
        if after != before {
            store::update(tx.conn, kind, &after, tx.now)?;
            let mut e = cx.event(
                action(kind, CatalogVerb::Updated)?,
                noun(kind),
                Some(path.name(kind)),
            );
            e.before_json = snapshot(&before);
            e.after_json = snapshot(&after);
            audit::append(tx.conn, e, tx.now)?;
            tx.changed(entity(kind), before.id.clone());
        }
        let item = load(tx.conn, kind, &path)?;
        Ok(Placed {
            item,
            path,
            administrators,
        })
    }
}

/// Deletes an item: refused while anything refers to it, unless `force`.
#[derive(Debug, Clone)]
pub struct Delete {
    pub kind: Kind,
    pub path: Path,
    pub etag: String,
    pub force: bool,
}

/// What a delete takes with it, for the change log and the audit trail.
#[derive(Debug, Default)]
struct Cascade {
    applications: Vec<String>,
    environments: Vec<String>,
    groups: Vec<String>,
    service_accounts: Vec<String>,
    /// Groups that lose grants (they stay).
    touched_groups: Vec<String>,
}

impl Cascade {
    fn record(&self, tx: &mut Tx<'_>) -> Result<()> {
        let kinds = [
            (EntityKind::Application, &self.applications),
            (EntityKind::Environment, &self.environments),
            (EntityKind::Group, &self.groups),
            (EntityKind::ServiceAccount, &self.service_accounts),
        ];
        for (k, ids) in kinds {
            for id in ids {
                tx.changed(k, id.clone());
            }
        }
        for g in &self.touched_groups {
            groups::touch(tx.conn, g, tx.now)?;
            tx.changed(EntityKind::Group, g.clone());
        }
        Ok(())
    }

    fn detail(&self) -> String {
        format!(
            "forced: {} application(s), {} environment(s), {} group(s), {} service account(s) \
             removed, {} group(s) lost grants",
            self.applications.len(),
            self.environments.len(),
            self.groups.len(),
            self.service_accounts.len(),
            self.touched_groups.len()
        )
    }
}

fn open_requests(conn: &mut DbConnection, environments: &[String]) -> Result<usize> {
    Ok(approvals::open_in(conn, environments)?.len())
}

fn refuse(what: &str, refs: Vec<(usize, &'static str)>) -> Error {
    Refusal::StillReferenced {
        what: what.to_owned(),
        refs,
    }
    .into()
}

/// A portfolio's dependents; refused (unless forced) while it has any.
fn portfolio_cascade(conn: &mut DbConnection, id: &str, force: bool) -> Result<Cascade> {
    let mut c = Cascade {
        applications: store::application_parents(conn, Some(id))?
            .into_iter()
            .map(|(a, _)| a)
            .collect(),
        ..Cascade::default()
    };
    for a in &c.applications {
        let envs = store::environment_parents(conn, Some(a))?;
        c.environments.extend(envs.into_iter().map(|(e, _)| e));
    }
    let gs = groups::in_portfolio(conn, id)?;
    let admin_members = match gs.iter().find(|g| g.administrators) {
        Some(g) => groups::member_count(conn, &g.id)? as usize,
        None => 0,
    };
    c.groups = gs.iter().map(|g| g.id.clone()).collect();
    c.service_accounts = service_accounts::ids_in_portfolio(conn, id)?;
    let others = gs.iter().filter(|g| !g.administrators).count();
    if !force && (c.applications.len() + others + c.service_accounts.len() + admin_members) > 0 {
        let open = open_requests(conn, &c.environments)?;
        return Err(refuse(
            "the portfolio",
            vec![
                (c.applications.len(), "application(s)"),
                (others, "group(s) besides Administrators"),
                (admin_members, "Administrators member(s)"),
                (c.service_accounts.len(), "service account(s)"),
                (open, "open change request(s)"),
            ],
        ));
    }
    for sa in &c.service_accounts {
        groups::remove_principal(conn, "service_account", sa)?;
    }
    Ok(c)
}

/// An application's dependents; refused (unless forced) while it has any.
fn application_cascade(conn: &mut DbConnection, id: &str, force: bool) -> Result<Cascade> {
    let mut c = Cascade {
        environments: store::environment_parents(conn, Some(id))?
            .into_iter()
            .map(|(e, _)| e)
            .collect(),
        ..Cascade::default()
    };
    c.touched_groups = groups::granting_application(conn, id)?;
    c.touched_groups
        .extend(groups::granting_environments(conn, &c.environments)?);
    c.touched_groups.sort();
    c.touched_groups.dedup();
    if !force && c.environments.len() + c.touched_groups.len() > 0 {
        let open = open_requests(conn, &c.environments)?;
        return Err(refuse(
            "the application",
            vec![
                (c.environments.len(), "environment(s)"),
                (c.touched_groups.len(), "group(s) with grants on it"),
                (open, "open change request(s)"),
            ],
        ));
    }
    Ok(c)
}

/// An environment's dependents; refused (unless forced) while it has any.
fn environment_cascade(conn: &mut DbConnection, id: &str, force: bool) -> Result<Cascade> {
    let c = Cascade {
        touched_groups: groups::granting_environments(conn, &[id.to_owned()])?,
        ..Cascade::default()
    };
    let open = open_requests(conn, &[id.to_owned()])?;
    if !force && c.touched_groups.len() + open > 0 {
        return Err(refuse(
            "the environment",
            vec![
                (c.touched_groups.len(), "group(s) with grants on it"),
                (open, "open change request(s)"),
            ],
        ));
    }
    Ok(c)
}

impl Command for Delete {
    type Output = ();

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        manage(cx, self.kind, &self.path.portfolio, Action::DeletePortfolio)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<()> {
        let kind = self.kind;
        let before = load(tx.conn, kind, &self.path)?;
        etag::check(&self.etag, &before.id, before.version)?;
        let cascade = match kind {
            Kind::Portfolio => portfolio_cascade(tx.conn, &before.id, self.force)?,
            Kind::Application => application_cascade(tx.conn, &before.id, self.force)?,
            Kind::Environment => environment_cascade(tx.conn, &before.id, self.force)?,
        };
        let mut doomed = cascade.environments.clone();
        if kind == Kind::Environment {
            doomed.push(before.id.clone());
        }
        // Every branch above refused open requests unless forced; these are cancelled.
        crate::change_requests::cancel_in_environments(cx, tx, &doomed)?;
        store::delete(tx.conn, kind, &before.id)?;
        tx.changed(entity(kind), before.id.clone());
        cascade.record(tx)?;
        let name = self.path.name(kind);
        let mut e = cx.event(action(kind, CatalogVerb::Deleted)?, noun(kind), Some(name));
        e.before_json = snapshot(&before);
        e.detail = self.force.then(|| cascade.detail());
        audit::append(tx.conn, e, tx.now)?;
        Ok(())
    }
}
