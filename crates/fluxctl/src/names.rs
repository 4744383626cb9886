//! Names instead of ids. Wherever a command takes a portfolio, application, environment or
//! group, it accepts the full resource name (`portfolios/{id}/applications/{id}`), the bare id,
//! or the display name in any case (`Shop`, `web`, `prod`). A bare name is looked for under the
//! parents given by `--portfolio` and `--application` (themselves names or ids), and under every
//! parent the caller may see when they are not given. Each reference is resolved once per
//! invocation (the lists it reads are kept); one that matches nothing is NOT_FOUND (exit 3) and
//! one that matches several is refused (exit 2) with each candidate's full name.

use std::collections::HashMap;

use clap::Args;
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::catalog_service_client::CatalogServiceClient;
use fluxgate_proto::v1::group_service_client::GroupServiceClient;

use crate::client::{Call, Ctx};
use crate::error::{CliError, Result, exit};

/// The portfolio a bare application or group name is looked for in.
#[derive(Debug, Clone, Default, Args)]
pub struct PortfolioScope {
    /// The portfolio (name or id) the application or group is in [default: search them all]
    #[arg(long, value_name = "PORTFOLIO")]
    pub portfolio: Option<String>,
}

/// The portfolio and application a bare environment name is looked for in.
#[derive(Debug, Clone, Default, Args)]
pub struct EnvironmentScope {
    /// The portfolio (name or id) the environment is in [default: search them all]
    #[arg(long, value_name = "PORTFOLIO")]
    pub portfolio: Option<String>,
    /// The application (name or id) the environment is in [default: search them all]
    #[arg(long, value_name = "APPLICATION")]
    pub application: Option<String>,
}

/// A resource found by name: its full name and its display path (`Shop / web / prod`).
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    display: String,
    path: String,
}

/// The lists read so far, by parent; kept for the invocation so each is read once.
#[derive(Debug, Default)]
pub struct Cache {
    lists: HashMap<String, Vec<Entry>>,
}

/// What a reference names, for messages and for the list command to suggest.
#[derive(Clone, Copy)]
enum Kind {
    Portfolio,
    Application,
    Environment,
    Group,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Portfolio => "portfolio",
            Kind::Application => "application",
            Kind::Environment => "environment",
            Kind::Group => "group",
        }
    }

    fn list_command(self) -> &'static str {
        match self {
            Kind::Portfolio => "fluxctl portfolios list",
            Kind::Application => "fluxctl applications list --portfolio …",
            Kind::Environment => "fluxctl environments list --application …",
            Kind::Group => "fluxctl groups list",
        }
    }
}

/// Whether a reference is already a full resource name.
fn is_full(reference: &str) -> bool {
    reference.starts_with("portfolios/")
}

/// Whether an entry is the one a reference means: its id, or its display name in any case.
fn matches(entry: &Entry, reference: &str) -> bool {
    let id = entry.name.rsplit('/').next().unwrap_or_default();
    id == reference || entry.display.to_lowercase() == reference.to_lowercase()
}

/// The one entry among the candidates, or the error a person can act on.
fn one(kind: Kind, reference: &str, within: &str, found: Vec<Entry>) -> Result<String> {
    let mut found = found;
    found.dedup_by(|a, b| a.name == b.name);
    match found.len() {
        1 => Ok(found.remove(0).name),
        0 => Err(CliError::new(
            exit::NOT_FOUND,
            format!(
                "no {} named {reference:?}{within} (`{}` lists them)",
                kind.noun(),
                kind.list_command()
            ),
        )),
        n => {
            let mut e = CliError::usage(format!(
                "{reference:?} is ambiguous: it names {n} {}s{within}; narrow it with \
                 --portfolio or --application, or give the full name",
                kind.noun()
            ));
            e.details = found
                .iter()
                .map(|c| format!("{}  ({})", c.path, c.name))
                .collect();
            Err(e)
        }
    }
}

/// `in portfolio "Shop"` for messages, empty when no scope was given.
fn within(parents: &[Option<&str>]) -> String {
    let given: Vec<String> = parents.iter().flatten().map(|p| format!("{p:?}")).collect();
    if given.is_empty() {
        String::new()
    } else {
        format!(" in {}", given.join(" / "))
    }
}

/// A portfolio: full name, id or display name.
pub async fn portfolio(ctx: &mut Ctx, reference: &str) -> Result<String> {
    if is_full(reference) {
        return Ok(reference.to_owned());
    }
    let all = portfolios(ctx).await?;
    let found = all.into_iter().filter(|e| matches(e, reference)).collect();
    one(Kind::Portfolio, reference, "", found)
}

/// An application: full name, id or display name, in `portfolio` when given.
pub async fn application(
    ctx: &mut Ctx,
    reference: &str,
    portfolio_ref: Option<&str>,
) -> Result<String> {
    if is_full(reference) {
        return Ok(reference.to_owned());
    }
    let mut found = Vec::new();
    for parent in portfolio_parents(ctx, portfolio_ref).await? {
        let apps = applications(ctx, &parent).await?;
        found.extend(apps.into_iter().filter(|e| matches(e, reference)));
    }
    one(
        Kind::Application,
        reference,
        &within(&[portfolio_ref]),
        found,
    )
}

/// An environment: full name, id or display name, within the scope's application and
/// portfolio when given. Without `--application`, `APPLICATION/ENVIRONMENT` (by names or ids)
/// is understood too; a name that itself holds a `/` still matches as a whole.
pub async fn environment(
    ctx: &mut Ctx,
    reference: &str,
    scope: &EnvironmentScope,
) -> Result<String> {
    if is_full(reference) {
        return Ok(reference.to_owned());
    }
    let portfolio_ref = scope.portfolio.as_deref();
    let mut found = match &scope.application {
        Some(a) => {
            let app = application(ctx, a, portfolio_ref).await?;
            environments_matching(ctx, &[app], reference).await?
        }
        None => {
            let mut apps = Vec::new();
            for parent in portfolio_parents(ctx, portfolio_ref).await? {
                apps.extend(applications(ctx, &parent).await?);
            }
            let all: Vec<String> = apps.iter().map(|e| e.name.clone()).collect();
            let mut found = environments_matching(ctx, &all, reference).await?;
            for (i, _) in reference.match_indices('/') {
                let (app_ref, env_ref) = (&reference[..i], &reference[i + 1..]);
                let named: Vec<String> = apps
                    .iter()
                    .filter(|e| matches(e, app_ref))
                    .map(|e| e.name.clone())
                    .collect();
                found.extend(environments_matching(ctx, &named, env_ref).await?);
            }
            found
        }
    };
    found.sort_by(|a, b| a.name.cmp(&b.name));
    let scope_names = [portfolio_ref, scope.application.as_deref()];
    one(Kind::Environment, reference, &within(&scope_names), found)
}

/// The environments of these applications that a reference matches.
async fn environments_matching(
    ctx: &mut Ctx,
    apps: &[String],
    reference: &str,
) -> Result<Vec<Entry>> {
    let mut found = Vec::new();
    for app in apps {
        let envs = environments(ctx, app).await?;
        found.extend(envs.into_iter().filter(|e| matches(e, reference)));
    }
    Ok(found)
}

/// An environment or an application, whichever `environment` says the resource is: the
/// resource of a permission check.
pub async fn resource(
    ctx: &mut Ctx,
    reference: &str,
    is_environment: bool,
    scope: &EnvironmentScope,
) -> Result<String> {
    if is_environment {
        environment(ctx, reference, scope).await
    } else {
        application(ctx, reference, scope.portfolio.as_deref()).await
    }
}

/// A group: full name, id or display name, in `portfolio` when given.
pub async fn group(ctx: &mut Ctx, reference: &str, portfolio_ref: Option<&str>) -> Result<String> {
    if is_full(reference) {
        return Ok(reference.to_owned());
    }
    let parent = match portfolio_ref {
        Some(p) => portfolio(ctx, p).await?,
        None => "portfolios/-".to_owned(),
    };
    let all = groups(ctx, &parent).await?;
    let found = all.into_iter().filter(|e| matches(e, reference)).collect();
    one(Kind::Group, reference, &within(&[portfolio_ref]), found)
}

/// The portfolio given, or every portfolio.
async fn portfolio_parents(ctx: &mut Ctx, portfolio_ref: Option<&str>) -> Result<Vec<String>> {
    Ok(match portfolio_ref {
        Some(p) => vec![portfolio(ctx, p).await?],
        None => portfolios(ctx).await?.into_iter().map(|e| e.name).collect(),
    })
}

async fn portfolios(ctx: &mut Ctx) -> Result<Vec<Entry>> {
    children(ctx, Kind::Portfolio, "").await
}

async fn applications(ctx: &mut Ctx, parent: &str) -> Result<Vec<Entry>> {
    children(ctx, Kind::Application, parent).await
}

async fn environments(ctx: &mut Ctx, parent: &str) -> Result<Vec<Entry>> {
    children(ctx, Kind::Environment, parent).await
}

async fn groups(ctx: &mut Ctx, parent: &str) -> Result<Vec<Entry>> {
    // Group paths name their portfolio, so the portfolios are listed first.
    portfolios(ctx).await?;
    children(ctx, Kind::Group, parent).await
}

/// The display path of a resource already listed (`Shop`, `Shop / web`), else its name.
fn path_of(ctx: &Ctx, name: &str) -> String {
    ctx.names
        .lists
        .values()
        .flatten()
        .find(|e| e.name == name)
        .map_or_else(|| name.to_owned(), |e| e.path.clone())
}

/// Every child of a kind under `parent` (`portfolios/-` for all groups), read once per
/// invocation, all pages.
async fn children(ctx: &mut Ctx, kind: Kind, parent: &str) -> Result<Vec<Entry>> {
    let key = format!("{parent}/{}", kind.noun());
    if let Some(l) = ctx.names.lists.get(&key) {
        return Ok(l.clone());
    }
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let (page, next) = page_of(ctx, kind, parent, page_token).await?;
        for (name, display) in page {
            let owner = match kind {
                Kind::Portfolio => None,
                Kind::Group => name.split("/groups/").next().map(str::to_owned),
                Kind::Application | Kind::Environment => Some(parent.to_owned()),
            };
            let path = match owner {
                Some(o) => format!("{} / {display}", path_of(ctx, &o)),
                None => display.clone(),
            };
            out.push(Entry {
                name,
                display,
                path,
            });
        }
        if next.is_empty() {
            break;
        }
        page_token = next;
    }
    ctx.names.lists.insert(key, out.clone());
    Ok(out)
}

/// One page of children: (name, display name) pairs and the next page token.
async fn page_of(
    ctx: &mut Ctx,
    kind: Kind,
    parent: &str,
    page_token: String,
) -> Result<(Vec<(String, String)>, String)> {
    let parent = parent.to_owned();
    let page_size = 1000;
    Ok(match kind {
        Kind::Portfolio => {
            let req = pb::ListPortfoliosRequest {
                page_size,
                page_token,
            };
            let r = rpc!(ctx, Call::Read, CatalogServiceClient::list_portfolios, req)?;
            let page = r.portfolios.into_iter();
            (
                page.map(|x| (x.name, x.display_name)).collect(),
                r.next_page_token,
            )
        }
        Kind::Application => {
            let req = pb::ListApplicationsRequest {
                parent,
                page_size,
                page_token,
            };
            let r = rpc!(
                ctx,
                Call::Read,
                CatalogServiceClient::list_applications,
                req
            )?;
            let page = r.applications.into_iter();
            (
                page.map(|x| (x.name, x.display_name)).collect(),
                r.next_page_token,
            )
        }
        Kind::Environment => {
            let req = pb::ListEnvironmentsRequest {
                parent,
                page_size,
                page_token,
            };
            let r = rpc!(
                ctx,
                Call::Read,
                CatalogServiceClient::list_environments,
                req
            )?;
            let page = r.environments.into_iter();
            (
                page.map(|x| (x.name, x.display_name)).collect(),
                r.next_page_token,
            )
        }
        Kind::Group => {
            let req = pb::ListGroupsRequest {
                parent,
                page_size,
                page_token,
                member: String::new(),
            };
            let r = rpc!(ctx, Call::Read, GroupServiceClient::list_groups, req)?;
            let page = r.groups.into_iter();
            (
                page.map(|x| (x.name, x.display_name)).collect(),
                r.next_page_token,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, path: &str) -> Entry {
        Entry {
            name: name.to_owned(),
            display: path.rsplit(" / ").next().unwrap_or_default().to_owned(),
            path: path.to_owned(),
        }
    }

    #[test]
    fn a_reference_matches_by_id_or_display_name_in_any_case() {
        let e = entry("portfolios/p1/applications/a1", "Shop / Web Store");
        assert!(matches(&e, "a1"));
        assert!(matches(&e, "web store"));
        assert!(matches(&e, "WEB STORE"));
        assert!(!matches(&e, "Shop"));
        assert!(!matches(&e, "p1"));
    }

    #[test]
    fn none_is_not_found_and_several_are_ambiguous() {
        let e = one(Kind::Application, "web", "", vec![]).unwrap_err();
        assert_eq!(e.code, exit::NOT_FOUND);
        let e = one(
            Kind::Application,
            "web",
            "",
            vec![
                entry("portfolios/a/applications/1", "Shop / web"),
                entry("portfolios/b/applications/2", "Books / web"),
            ],
        )
        .unwrap_err();
        assert_eq!(e.code, exit::USAGE);
        assert!(e.message.contains("ambiguous"), "{}", e.message);
        assert_eq!(e.details.len(), 2);
        assert!(e.details[1].contains("portfolios/b/applications/2"));
    }
}
