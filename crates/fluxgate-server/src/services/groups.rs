//! GroupService: portfolio groups, their grants and their members.

use std::sync::Arc;

use fluxgate_authz::{Action, Target};
use fluxgate_domain::{
    FeaturePermission, PortfolioId, PrincipalId, ValuePermission, ValuePermissions, Violations,
};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::group_service_server::GroupService;
use fluxgate_store::catalog::{self, Kind};
use fluxgate_store::changes::EntityKind;
use fluxgate_store::{DbConnection, audit, groups, service_accounts, users};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use super::reply;
use crate::auth::RequestCtx;
use crate::convert::{
    PageToken, PrincipalRef, UserRef, application_name, check_etag, description, environment_name,
    etag, field, group_name, mask_paths, page_size, parse_ids, parse_principal, timestamp, title,
};
use crate::directory::Principal;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Debug, Clone)]
pub struct GroupSvc {
    pub state: Arc<AppState>,
}

fn feature_pb(p: &str) -> i32 {
    match p {
        "CREATE" => pb::FeaturePermission::Create as i32,
        "CREATE_EDIT_DELETE" => pb::FeaturePermission::CreateEditDelete as i32,
        _ => pb::FeaturePermission::Unspecified as i32,
    }
}

fn value_pb(v: ValuePermission) -> i32 {
    (match v {
        ValuePermission::Read => pb::ValuePermission::Read,
        ValuePermission::Lock => pb::ValuePermission::Lock,
        ValuePermission::Unlock => pb::ValuePermission::Unlock,
        ValuePermission::ChangeValue => pb::ValuePermission::ChangeValue,
    }) as i32
}

/// Reads a group with its grants and member count as the protobuf message.
fn group_pb(conn: &mut DbConnection, g: &groups::Group) -> ApiResult<pb::Group> {
    group_pbs(conn, std::slice::from_ref(g))?
        .pop()
        .ok_or_else(|| ApiError::Internal("a group went missing".into()))
}

/// Several groups with their grants and member counts, in a fixed number of queries (a page of
/// groups once cost six queries per group).
fn group_pbs(conn: &mut DbConnection, gs: &[groups::Group]) -> ApiResult<Vec<pb::Group>> {
    let ids: Vec<String> = gs.iter().map(|g| g.id.clone()).collect();
    let mut grants = groups::grants_of(conn, &ids)?;
    let counts = groups::member_counts(conn, &ids)?;
    let mut env_ids: Vec<String> = grants
        .values()
        .flat_map(|g| g.environments.iter().map(|(e, _)| e.clone()))
        .collect();
    env_ids.sort();
    env_ids.dedup();
    let env_app: std::collections::HashMap<String, String> =
        catalog::environment_applications(conn, &env_ids)?
            .into_iter()
            .collect();
    Ok(gs
        .iter()
        .map(|g| {
            let gr = grants.remove(&g.id).unwrap_or_default();
            pb::Group {
                name: group_name(&g.portfolio_id, &g.id),
                display_name: g.display_name.clone(),
                description: g.description.clone(),
                administrators: g.administrators,
                application_grants: gr
                    .applications
                    .iter()
                    .map(|(a, p)| pb::ApplicationGrant {
                        application: application_name(&g.portfolio_id, a),
                        feature_permission: feature_pb(p),
                    })
                    .collect(),
                environment_grants: gr
                    .environments
                    .iter()
                    .map(|(e, bits)| pb::EnvironmentGrant {
                        environment: environment_name(
                            &g.portfolio_id,
                            env_app.get(e).map_or("", String::as_str),
                            e,
                        ),
                        permissions: ValuePermissions::from_bits(*bits as u8)
                            .iter()
                            .map(value_pb)
                            .collect(),
                    })
                    .collect(),
                member_count: counts.get(&g.id).copied().unwrap_or(0) as i32,
                create_time: Some(timestamp(g.created_at)),
                update_time: Some(timestamp(g.updated_at)),
                etag: etag(&g.id, g.version),
            }
        })
        .collect())
}

/// Grants as given by a client, checked for shape.
type AppGrants = Vec<(String, String, String)>; // (portfolio, app, permission)
type EnvGrants = Vec<(String, String, String, i32)>; // (portfolio, app, env, bits)

/// Most grants one request may set: more than a portfolio has applications or environments,
/// few enough that a request is validated in milliseconds.
const MAX_APPLICATION_GRANTS: usize = 1_000;
const MAX_ENVIRONMENT_GRANTS: usize = 5_000;

fn parse_grants(
    v: &mut Violations,
    app_grants: &[pb::ApplicationGrant],
    env_grants: &[pb::EnvironmentGrant],
) -> (AppGrants, EnvGrants) {
    let mut apps: AppGrants = Vec::new();
    if app_grants.len() > MAX_APPLICATION_GRANTS {
        v.add(
            "group.application_grants",
            format!("at most {MAX_APPLICATION_GRANTS} grants"),
        );
        return (Vec::new(), Vec::new());
    }
    if env_grants.len() > MAX_ENVIRONMENT_GRANTS {
        v.add(
            "group.environment_grants",
            format!("at most {MAX_ENVIRONMENT_GRANTS} grants"),
        );
        return (Vec::new(), Vec::new());
    }
    let mut seen = std::collections::HashSet::new();
    for (i, g) in app_grants.iter().enumerate() {
        let at = format!("group.application_grants[{i}]");
        let ids = match field(
            v,
            parse_ids(
                &format!("{at}.application"),
                &g.application,
                &["portfolios", "applications"],
            ),
        ) {
            Some(ids) => ids,
            None => continue,
        };
        let perm = match pb::FeaturePermission::try_from(g.feature_permission) {
            Ok(pb::FeaturePermission::Create) => FeaturePermission::Create,
            Ok(pb::FeaturePermission::CreateEditDelete) => FeaturePermission::CreateEditDelete,
            _ => {
                v.add(
                    format!("{at}.feature_permission"),
                    "must be CREATE or CREATE_EDIT_DELETE",
                );
                continue;
            }
        };
        if !seen.insert(ids[1]) {
            v.add(format!("{at}.application"), "appears twice");
            continue;
        }
        apps.push((
            ids[0].to_string(),
            ids[1].to_string(),
            perm.as_str().to_owned(),
        ));
    }
    let mut envs: EnvGrants = Vec::new();
    for (i, g) in env_grants.iter().enumerate() {
        let at = format!("group.environment_grants[{i}]");
        let ids = match field(
            v,
            parse_ids(
                &format!("{at}.environment"),
                &g.environment,
                &["portfolios", "applications", "environments"],
            ),
        ) {
            Some(ids) => ids,
            None => continue,
        };
        let mut bits = ValuePermissions::EMPTY;
        let mut ok = !g.permissions.is_empty();
        for p in &g.permissions {
            match pb::ValuePermission::try_from(*p) {
                Ok(pb::ValuePermission::Read) => bits = bits.with(ValuePermission::Read),
                Ok(pb::ValuePermission::Lock) => bits = bits.with(ValuePermission::Lock),
                Ok(pb::ValuePermission::Unlock) => bits = bits.with(ValuePermission::Unlock),
                Ok(pb::ValuePermission::ChangeValue) => {
                    bits = bits.with(ValuePermission::ChangeValue)
                }
                _ => ok = false,
            }
        }
        if !ok {
            v.add(
                format!("{at}.permissions"),
                "must list one or more of READ, LOCK, UNLOCK, CHANGE_VALUE",
            );
            continue;
        }
        if !seen.insert(ids[2]) {
            v.add(format!("{at}.environment"), "appears twice");
            continue;
        }
        envs.push((
            ids[0].to_string(),
            ids[1].to_string(),
            ids[2].to_string(),
            i32::from(bits.bits()),
        ));
    }
    (apps, envs)
}

/// A group name that looks like `Administrators` without being it (`Administrators\u{200b}` is
/// refused as invisible already; a Cyrillic `Аdministrators` here) would pass for the group that
/// holds every permission. The name itself is left to the uniqueness check.
fn not_confusable(v: &mut Violations, name: Option<&fluxgate_domain::Title>) {
    if let Some(n) = name
        && n.key() != ADMINISTRATORS.to_lowercase()
        && fluxgate_domain::confusable(n.as_str(), ADMINISTRATORS)
    {
        v.add(
            "group.display_name",
            "looks like the portfolio's Administrators group: choose a name that cannot be taken for it",
        );
    }
}

const ADMINISTRATORS: &str = "Administrators";

/// Checks that every granted application and environment exists in the group's portfolio, in
/// two queries whatever the number of grants. Run once before the write (so that bad input
/// never waits for, or holds, the write lock) and again inside it (the catalog may have changed
/// in between).
fn check_grant_targets(
    conn: &mut DbConnection,
    portfolio: &str,
    apps: &AppGrants,
    envs: &EnvGrants,
) -> ApiResult<()> {
    let mut v = Violations::new();
    if apps.is_empty() && envs.is_empty() {
        return Ok(());
    }
    let apps_here: std::collections::HashSet<String> =
        catalog::application_parents(conn, Some(portfolio))?
            .into_iter()
            .map(|(a, _)| a)
            .collect();
    for (i, (p, a, _)) in apps.iter().enumerate() {
        if p != portfolio || !apps_here.contains(a) {
            v.add(
                format!("group.application_grants[{i}].application"),
                "is not an application of the group's portfolio",
            );
        }
    }
    let env_ids: Vec<String> = envs.iter().map(|(_, _, e, _)| e.clone()).collect();
    let env_app: std::collections::HashMap<String, String> = if env_ids.is_empty() {
        Default::default()
    } else {
        catalog::environment_applications(conn, &env_ids)?
            .into_iter()
            .collect()
    };
    for (i, (p, a, e, _)) in envs.iter().enumerate() {
        let ok = p == portfolio
            && env_app.get(e).map(String::as_str) == Some(a.as_str())
            && apps_here.contains(a);
        if !ok {
            v.add(
                format!("group.environment_grants[{i}].environment"),
                "is not an environment of the group's portfolio",
            );
        }
    }
    Ok(v.finish()?)
}

/// [`check_grant_targets`] on a read connection, before any write: the portfolio (and the
/// group, when given) must exist first, as the write would find.
async fn precheck_grant_targets(
    st: &AppState,
    portfolio: &str,
    group: Option<&str>,
    apps: &AppGrants,
    envs: &EnvGrants,
) -> ApiResult<()> {
    let (portfolio, group) = (portfolio.to_owned(), group.map(str::to_owned));
    let (apps, envs) = (apps.clone(), envs.clone());
    st.db
        .read(move |conn| {
            catalog::find(conn, Kind::Portfolio, &portfolio)?
                .ok_or_else(|| ApiError::NotFound("no such portfolio".into()))?;
            if let Some(g) = &group {
                load(conn, &portfolio, g)?;
            }
            check_grant_targets(conn, &portfolio, &apps, &envs)
        })
        .await
}

fn stored_grants(conn: &mut DbConnection, g: &str) -> ApiResult<serde_json::Value> {
    let gr = groups::grants(conn, g)?;
    Ok(serde_json::json!({
        "application_grants": gr.applications.iter().map(|(a, p)| serde_json::json!({"application": a, "feature_permission": p})).collect::<Vec<_>>(),
        "environment_grants": gr.environments.iter().map(|(e, b)| serde_json::json!({"environment": e, "permissions": ValuePermissions::from_bits(*b as u8).to_string()})).collect::<Vec<_>>(),
    }))
}

fn group_snapshot(conn: &mut DbConnection, g: &groups::Group) -> ApiResult<Option<String>> {
    let mut v = stored_grants(conn, &g.id)?;
    v["display_name"] = serde_json::json!(g.display_name);
    v["description"] = serde_json::json!(g.description);
    Ok(serde_json::to_string(&v).ok())
}

/// Loads a group, checking that it sits in the portfolio its name says.
fn load(conn: &mut DbConnection, portfolio: &str, id: &str) -> ApiResult<groups::Group> {
    groups::find(conn, id)?
        .filter(|g| g.portfolio_id == portfolio)
        .ok_or_else(|| ApiError::NotFound("no such group".into()))
}

fn parse_group(field: &str, name: &str) -> ApiResult<(String, String)> {
    let ids = parse_ids(field, name, &["portfolios", "groups"])?;
    Ok((ids[0].to_string(), ids[1].to_string()))
}

/// Resolves a member reference to (kind, id), checking that it exists and may join.
fn resolve_member(
    conn: &mut DbConnection,
    r: &PrincipalRef,
    portfolio: &str,
) -> ApiResult<(&'static str, String)> {
    match r {
        PrincipalRef::User(u) => {
            let found = match u {
                UserRef::Id(id) => users::find(conn, *id)?,
                UserRef::Username(n) => users::find_by_username(conn, n)?,
            };
            let u = found.ok_or_else(|| ApiError::NotFound("no such user".into()))?;
            Ok(("user", u.id.to_string()))
        }
        PrincipalRef::ServiceAccount(id) => {
            let sa = service_accounts::find(conn, &id.to_string())?
                .ok_or_else(|| ApiError::NotFound("no such service account".into()))?;
            if let Some(p) = &sa.portfolio_id
                && p != portfolio
            {
                return Err(ApiError::FailedPrecondition(
                    "a portfolio service account may only join groups of its own portfolio".into(),
                ));
            }
            Ok(("service_account", sa.id))
        }
    }
}

fn member_name(kind: &str, id: &str) -> String {
    match kind {
        "user" => format!("users/{id}"),
        _ => format!("serviceAccounts/{id}"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ListFilter {
    parent: String,
    member: String,
}

impl GroupSvc {
    fn target(&self, p: &Principal, action: Action, portfolio: &str) -> ApiResult<()> {
        let id: PortfolioId = portfolio
            .parse()
            .map_err(|_| ApiError::Internal(format!("bad portfolio id {portfolio}")))?;
        self.state.authorize(p, action, Target::Portfolio(id))
    }

    async fn create(
        &self,
        ctx: RequestCtx,
        p: Principal,
        req: pb::CreateGroupRequest,
    ) -> ApiResult<Response<pb::CreateGroupResponse>> {
        let st = &self.state;
        let mut v = Violations::new();
        let portfolio = field(&mut v, parse_ids("parent", &req.parent, &["portfolios"]))
            .map(|ids| ids[0].to_string());
        let Some(g) = req.group else {
            v.add("group", "is required");
            return Err(v
                .finish()
                .err()
                .map(ApiError::from)
                .unwrap_or_else(|| ApiError::invalid("group", "is required")));
        };
        let name = v.check("", title("group.display_name", &g.display_name));
        not_confusable(&mut v, name.as_ref());
        let desc = v.check("", description("group.description", &g.description));
        let (apps, envs) = parse_grants(&mut v, &g.application_grants, &g.environment_grants);
        v.finish()?;
        let (Some(portfolio), Some(name), Some(desc)) = (portfolio, name, desc) else {
            return Err(ApiError::Internal(
                "validation passed without values".into(),
            ));
        };
        self.target(&p, Action::ManageGroups, &portfolio)?;
        precheck_grant_targets(st, &portfolio, None, &apps, &envs).await?;
        let ctx2 = ctx.clone();
        let committed = st
            .db
            .write(move |tx| {
                catalog::find(tx.conn, Kind::Portfolio, &portfolio)?
                    .ok_or_else(|| ApiError::NotFound("no such portfolio".into()))?;
                if groups::find_by_name(tx.conn, &portfolio, name.as_str())?.is_some() {
                    return Err(ApiError::AlreadyExists(format!(
                        "a group named {:?} already exists in the portfolio",
                        name.as_str()
                    )));
                }
                check_grant_targets(tx.conn, &portfolio, &apps, &envs)?;
                let g = groups::Group {
                    id: uuid::Uuid::now_v7().to_string(),
                    portfolio_id: portfolio.clone(),
                    display_name: name.as_str().to_owned(),
                    description: desc.as_str().to_owned(),
                    administrators: false,
                    created_at: tx.now,
                    updated_at: tx.now,
                    version: 1,
                };
                groups::insert(tx.conn, &g)?;
                groups::set_application_grants(
                    tx.conn,
                    &g.id,
                    &apps
                        .iter()
                        .map(|(_, a, p)| (a.clone(), p.clone()))
                        .collect::<Vec<_>>(),
                )?;
                groups::set_environment_grants(
                    tx.conn,
                    &g.id,
                    &envs
                        .iter()
                        .map(|(_, _, e, b)| (e.clone(), *b))
                        .collect::<Vec<_>>(),
                )?;
                tx.changed(EntityKind::Group, g.id.clone());
                let mut e = ctx2.event(
                    Some(&p),
                    "group.created",
                    "group",
                    Some(group_name(&portfolio, &g.id)),
                );
                e.after_json = group_snapshot(tx.conn, &g)?;
                audit::append(tx.conn, e, tx.now)?;
                group_pb(tx.conn, &g)
            })
            .await?;
        st.directory.settle().await;
        Ok(reply(
            pb::CreateGroupResponse {
                group: Some(committed.value),
            },
            &ctx,
            committed.revision,
        ))
    }

    async fn update(
        &self,
        ctx: RequestCtx,
        p: Principal,
        req: pb::UpdateGroupRequest,
    ) -> ApiResult<Response<pb::UpdateGroupResponse>> {
        let st = &self.state;
        let Some(g) = req.group else {
            return Err(ApiError::invalid("group", "is required"));
        };
        let (portfolio, id) = parse_group("group.name", &g.name)?;
        let paths = mask_paths(
            req.update_mask.as_ref(),
            &[
                "display_name",
                "description",
                "application_grants",
                "environment_grants",
            ],
        )?;
        let has = |x: &str| paths.iter().any(|p| p == x);
        let mut v = Violations::new();
        let name = if has("display_name") {
            v.check("", title("group.display_name", &g.display_name))
        } else {
            None
        };
        not_confusable(&mut v, name.as_ref());
        let desc = if has("description") {
            v.check("", description("group.description", &g.description))
        } else {
            None
        };
        let (apps, envs) = parse_grants(&mut v, &g.application_grants, &g.environment_grants);
        v.finish()?;
        let (set_apps, set_envs) = (has("application_grants"), has("environment_grants"));
        self.target(&p, Action::ManageGroups, &portfolio)?;
        let (none_a, none_e): (AppGrants, EnvGrants) = (Vec::new(), Vec::new());
        precheck_grant_targets(
            st,
            &portfolio,
            Some(&id),
            if set_apps { &apps } else { &none_a },
            if set_envs { &envs } else { &none_e },
        )
        .await?;
        let etag_given = g.etag;
        let ctx2 = ctx.clone();
        let committed = st
            .db
            .write(move |tx| {
                let before = load(tx.conn, &portfolio, &id)?;
                check_etag(&etag_given, &before.id, before.version)?;
                if before.administrators && (name.is_some() || set_apps || set_envs) {
                    return Err(ApiError::FailedPrecondition(
                        "the Administrators group keeps its name and holds every permission: only its description can change".into(),
                    ));
                }
                let before_json = group_snapshot(tx.conn, &before)?;
                let mut after = before.clone();
                if let Some(n) = &name {
                    if n.key() != before.display_name.to_lowercase() && groups::find_by_name(tx.conn, &portfolio, n.as_str())?.is_some() {
                        return Err(ApiError::AlreadyExists(format!("a group named {:?} already exists in the portfolio", n.as_str())));
                    }
                    after.display_name = n.as_str().to_owned();
                }
                if let Some(d) = &desc {
                    after.description = d.as_str().to_owned();
                }
                let (no_apps, no_envs): (AppGrants, EnvGrants) = (Vec::new(), Vec::new());
                check_grant_targets(
                    tx.conn,
                    &portfolio,
                    if set_apps { &apps } else { &no_apps },
                    if set_envs { &envs } else { &no_envs },
                )?;
                let stored = groups::grants(tx.conn, &id)?;
                let mut new_apps: Vec<(String, String)> = apps.iter().map(|(_, a, p)| (a.clone(), p.clone())).collect();
                let mut new_envs: Vec<(String, i32)> = envs.iter().map(|(_, _, e, b)| (e.clone(), *b)).collect();
                new_apps.sort();
                new_envs.sort();
                let apps_change = set_apps && new_apps != stored.applications;
                let envs_change = set_envs && new_envs != stored.environments;
                if after == before && !apps_change && !envs_change {
                    // Nothing changes: answer with the group as it is, write nothing.
                    return Ok((group_pb(tx.conn, &before)?, false));
                }
                if apps_change {
                    groups::set_application_grants(tx.conn, &id, &new_apps)?;
                }
                if envs_change {
                    groups::set_environment_grants(tx.conn, &id, &new_envs)?;
                }
                groups::update(tx.conn, &after, tx.now)?;
                let fresh = load(tx.conn, &portfolio, &id)?;
                let after_json = group_snapshot(tx.conn, &fresh)?;
                tx.changed(EntityKind::Group, id.clone());
                let mut e = ctx2.event(Some(&p), "group.updated", "group", Some(group_name(&portfolio, &id)));
                e.before_json = before_json;
                e.after_json = after_json;
                audit::append(tx.conn, e, tx.now)?;
                Ok((group_pb(tx.conn, &fresh)?, true))
            })
            .await?;
        let (group, changed) = committed.value;
        if changed {
            st.directory.settle().await;
        }
        Ok(reply(
            pb::UpdateGroupResponse { group: Some(group) },
            &ctx,
            committed.revision,
        ))
    }

    async fn delete(
        &self,
        ctx: RequestCtx,
        p: Principal,
        req: pb::DeleteGroupRequest,
    ) -> ApiResult<Response<pb::DeleteGroupResponse>> {
        let st = &self.state;
        let (portfolio, id) = parse_group("name", &req.name)?;
        self.target(&p, Action::ManageGroups, &portfolio)?;
        let ctx2 = ctx.clone();
        let committed = st
            .db
            .write(move |tx| {
                let before = load(tx.conn, &portfolio, &id)?;
                check_etag(&req.etag, &before.id, before.version)?;
                if before.administrators {
                    return Err(ApiError::FailedPrecondition(
                        "the Administrators group cannot be deleted".into(),
                    ));
                }
                let members = groups::member_count(tx.conn, &id)?;
                if members > 0 && !req.force {
                    return Err(ApiError::FailedPrecondition(format!(
                        "the group has {members} member(s): remove them first, or pass force"
                    )));
                }
                let mut e = ctx2.event(
                    Some(&p),
                    "group.deleted",
                    "group",
                    Some(group_name(&portfolio, &id)),
                );
                e.before_json = group_snapshot(tx.conn, &before)?;
                if req.force && members > 0 {
                    e.detail = Some(format!("forced: {members} membership(s) removed"));
                }
                groups::delete(tx.conn, &id)?;
                tx.changed(EntityKind::Group, id.clone());
                audit::append(tx.conn, e, tx.now)?;
                Ok(())
            })
            .await?;
        st.directory.settle().await;
        Ok(reply(pb::DeleteGroupResponse {}, &ctx, committed.revision))
    }

    async fn membership(
        &self,
        ctx: RequestCtx,
        p: Principal,
        group: &str,
        member: &str,
        reason: &str,
        add: bool,
    ) -> ApiResult<(pb::Group, Option<i64>)> {
        let st = &self.state;
        let mut v = Violations::new();
        let parsed_group = field(&mut v, parse_group("group", group));
        let parsed_member = field(&mut v, parse_principal("member", member));
        let reason = v.check("", description("reason", reason));
        v.finish()?;
        let reason = reason.map(|r| r.as_str().to_owned()).unwrap_or_default();
        let (Some((portfolio, id)), Some(member)) = (parsed_group, parsed_member) else {
            return Err(ApiError::Internal(
                "validation passed without values".into(),
            ));
        };
        self.target(&p, Action::ManageMembers, &portfolio)?;
        let ctx2 = ctx.clone();
        let committed = st
            .db
            .write(move |tx| {
                let g = load(tx.conn, &portfolio, &id)?;
                let (kind, mid) = resolve_member(tx.conn, &member, &portfolio)?;
                let is = groups::is_member(tx.conn, &id, kind, &mid)?;
                if add && is {
                    return Err(ApiError::AlreadyExists(
                        "already a member of the group".into(),
                    ));
                }
                if !add && !is {
                    return Err(ApiError::NotFound("not a member of the group".into()));
                }
                if add {
                    groups::add_member(tx.conn, &id, kind, &mid, tx.now)?;
                } else {
                    groups::remove_member(tx.conn, &id, kind, &mid)?;
                }
                groups::touch(tx.conn, &id, tx.now)?;
                tx.changed(EntityKind::Group, id.clone());
                let action = if add {
                    "group.member_added"
                } else {
                    "group.member_removed"
                };
                let mut e =
                    ctx2.event(Some(&p), action, "group", Some(group_name(&portfolio, &id)));
                e.detail = Some(super::with_reason(member_name(kind, &mid), &reason));
                audit::append(tx.conn, e, tx.now)?;
                let fresh = load(tx.conn, &portfolio, &g.id)?;
                group_pb(tx.conn, &fresh)
            })
            .await?;
        st.directory.settle().await;
        Ok((committed.value, committed.revision))
    }
}

#[tonic::async_trait]
impl GroupService for GroupSvc {
    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::CreateGroupResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        Ok(self.create(ctx, p, req).await?)
    }

    async fn get_group(
        &self,
        request: Request<pb::GetGroupRequest>,
    ) -> Result<Response<pb::GetGroupResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let (portfolio, id) = parse_group("name", &req.name)?;
        self.state.authorize(&p, Action::ReadCatalog, Target::Org)?;
        let group = self
            .state
            .db
            .read(move |conn| {
                let g = load(conn, &portfolio, &id)?;
                group_pb(conn, &g)
            })
            .await?;
        Ok(reply(
            pb::GetGroupResponse { group: Some(group) },
            &ctx,
            None,
        ))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let portfolio = if req.parent == "portfolios/-" {
            None
        } else {
            Some(parse_ids("parent", &req.parent, &["portfolios"])?[0].to_string())
        };
        let member = if req.member.is_empty() {
            None
        } else {
            Some(parse_principal("member", &req.member)?)
        };
        let limit = page_size(req.page_size)?;
        let filter = ListFilter {
            parent: req.parent.clone(),
            member: req.member.clone(),
        };
        let after = PageToken::decode(&req.page_token, &filter)?;
        self.state.authorize(&p, Action::ReadCatalog, Target::Org)?;
        // Whose groups: one's own, or (for those who may ask about others) anyone's. Asked
        // before the name is resolved, so the answer says nothing about whether it exists.
        let own = match &member {
            None => true,
            Some(PrincipalRef::User(UserRef::Id(id))) => p.id == PrincipalId::User(*id),
            Some(PrincipalRef::User(UserRef::Username(n))) => {
                matches!(p.id, PrincipalId::User(_))
                    && self
                        .state
                        .directory
                        .user_by_name(n)
                        .is_some_and(|u| p.id == PrincipalId::User(u))
            }
            Some(PrincipalRef::ServiceAccount(id)) => p.id == PrincipalId::ServiceAccount(*id),
        };
        if !own {
            let target = match &portfolio {
                Some(po) => Target::Portfolio(po.parse().map_err(|_| {
                    ApiError::invalid("parent", "must be portfolios/{id} or portfolios/-")
                })?),
                None => Target::Org,
            };
            self.state.authorize(&p, Action::CheckOthers, target)?;
        }
        let (groups_out, next) = self
            .state
            .db
            .read(move |conn| {
                let member = match &member {
                    None => None,
                    Some(PrincipalRef::User(UserRef::Id(id))) => {
                        Some(("user".to_owned(), id.to_string()))
                    }
                    // An unknown name has no groups: the same answer as a person in none.
                    Some(PrincipalRef::User(UserRef::Username(n))) => Some((
                        "user".to_owned(),
                        users::find_by_username(conn, n)?
                            .map_or_else(String::new, |u| u.id.to_string()),
                    )),
                    Some(PrincipalRef::ServiceAccount(id)) => {
                        Some(("service_account".to_owned(), id.to_string()))
                    }
                };
                let f = groups::Filter {
                    portfolio,
                    portfolios_in: None,
                    member,
                };
                let after_pair = after.as_deref().and_then(|a| a.split_once('\n'));
                let mut page = groups::list(conn, &f, after_pair, limit + 1)?;
                let more = page.len() as i64 > limit;
                page.truncate(limit as usize);
                let next = match (more, page.last()) {
                    (true, Some(last)) => PageToken {
                        after: format!("{}\n{}", last.display_name.to_lowercase(), last.id),
                        filter,
                    }
                    .encode(),
                    _ => String::new(),
                };
                let out = group_pbs(conn, &page)?;
                Ok((out, next))
            })
            .await?;
        Ok(reply(
            pb::ListGroupsResponse {
                groups: groups_out,
                next_page_token: next,
            },
            &ctx,
            None,
        ))
    }

    async fn update_group(
        &self,
        request: Request<pb::UpdateGroupRequest>,
    ) -> Result<Response<pb::UpdateGroupResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        Ok(self.update(ctx, p, req).await?)
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        Ok(self.delete(ctx, p, req).await?)
    }

    async fn add_group_member(
        &self,
        request: Request<pb::AddGroupMemberRequest>,
    ) -> Result<Response<pb::AddGroupMemberResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let (g, rev) = self
            .membership(ctx.clone(), p, &req.group, &req.member, &req.reason, true)
            .await?;
        Ok(reply(
            pb::AddGroupMemberResponse { group: Some(g) },
            &ctx,
            rev,
        ))
    }

    async fn remove_group_member(
        &self,
        request: Request<pb::RemoveGroupMemberRequest>,
    ) -> Result<Response<pb::RemoveGroupMemberResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let (g, rev) = self
            .membership(ctx.clone(), p, &req.group, &req.member, &req.reason, false)
            .await?;
        Ok(reply(
            pb::RemoveGroupMemberResponse { group: Some(g) },
            &ctx,
            rev,
        ))
    }

    async fn list_group_members(
        &self,
        request: Request<pb::ListGroupMembersRequest>,
    ) -> Result<Response<pb::ListGroupMembersResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let (portfolio, id) = parse_group("group", &req.group)?;
        let limit = page_size(req.page_size)?;
        let after = PageToken::decode(&req.page_token, &req.group)?;
        self.state.authorize(&p, Action::ReadCatalog, Target::Org)?;
        let group = req.group.clone();
        let (members, next) = self
            .state
            .db
            .read(move |conn| {
                load(conn, &portfolio, &id)?;
                let after_pair = after.as_deref().and_then(|a| a.split_once('\n'));
                let mut page = groups::members(conn, &id, after_pair, limit + 1)?;
                let more = page.len() as i64 > limit;
                page.truncate(limit as usize);
                let next = match (more, page.last()) {
                    (true, Some((k, m))) => PageToken {
                        after: format!("{k}\n{m}"),
                        filter: group,
                    }
                    .encode(),
                    _ => String::new(),
                };
                Ok((page.iter().map(|(k, m)| member_name(k, m)).collect(), next))
            })
            .await?;
        Ok(reply(
            pb::ListGroupMembersResponse {
                members,
                next_page_token: next,
            },
            &ctx,
            None,
        ))
    }
}
