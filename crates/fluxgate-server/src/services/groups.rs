//! GroupService: portfolio groups, their grants and their members.

use std::sync::Arc;

use fluxgate_core::groups::{
    self, AppGrant, Create, Delete, EnvGrant, GroupView, ListQuery, Membership, Update, member_name,
};
use fluxgate_domain::{FeaturePermission, ValuePermission, ValuePermissions, Violations};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::group_service_server::GroupService;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use super::reply;
use crate::auth::RequestCtx;
use crate::convert::{
    PageToken, application_name, checked, description, environment_name, etag, field, group_name,
    mask_paths, page_size, parse_ids, parse_principal, timestamp, title, when,
};
use crate::directory::Principal;
use crate::error::{ApiError, ApiResult};
use crate::runner::Done;
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

/// A group as the API shows it.
fn group_pb(v: &GroupView) -> pb::Group {
    let g = &v.group;
    pb::Group {
        name: group_name(&g.portfolio_id, &g.id),
        display_name: g.display_name.clone(),
        description: g.description.clone(),
        administrators: g.administrators,
        application_grants: v
            .grants
            .applications
            .iter()
            .map(|(a, p)| pb::ApplicationGrant {
                application: application_name(&g.portfolio_id, a),
                feature_permission: feature_pb(p),
            })
            .collect(),
        environment_grants: v
            .grants
            .environments
            .iter()
            .map(|(e, bits)| pb::EnvironmentGrant {
                environment: environment_name(
                    &g.portfolio_id,
                    v.environment_applications.get(e).map_or("", String::as_str),
                    e,
                ),
                permissions: ValuePermissions::from_bits(*bits as u8)
                    .iter()
                    .map(value_pb)
                    .collect(),
            })
            .collect(),
        member_count: v.member_count as i32,
        create_time: Some(timestamp(g.created_at)),
        update_time: Some(timestamp(g.updated_at)),
        etag: etag(&g.id, g.version),
    }
}

/// Grants as given by a client, checked for shape.
type AppGrants = Vec<AppGrant>;
type EnvGrants = Vec<EnvGrant>;

/// Most grants one request may set: more than a portfolio has applications or environments,
/// few enough that a request is validated in milliseconds.
const MAX_APPLICATION_GRANTS: usize = 1_000;
const MAX_ENVIRONMENT_GRANTS: usize = 5_000;

fn parse_grants(
    v: &mut Violations,
    app_grants: &[pb::ApplicationGrant],
    env_grants: &[pb::EnvironmentGrant],
) -> (AppGrants, EnvGrants) {
    if app_grants.len() > MAX_APPLICATION_GRANTS {
        let most = format!("at most {MAX_APPLICATION_GRANTS} grants");
        v.add("group.application_grants", most);
        return (Vec::new(), Vec::new());
    }
    if env_grants.len() > MAX_ENVIRONMENT_GRANTS {
        let most = format!("at most {MAX_ENVIRONMENT_GRANTS} grants");
        v.add("group.environment_grants", most);
        return (Vec::new(), Vec::new());
    }
    let mut seen = std::collections::HashSet::new();
    let apps = app_grants
        .iter()
        .enumerate()
        .filter_map(|(i, g)| app_grant(v, &mut seen, i, g))
        .collect();
    let envs = env_grants
        .iter()
        .enumerate()
        .filter_map(|(i, g)| env_grant(v, &mut seen, i, g))
        .collect();
    (apps, envs)
}

/// One application grant, checked; `seen` holds the ids granted so far.
fn app_grant(
    v: &mut Violations,
    seen: &mut std::collections::HashSet<uuid::Uuid>,
    i: usize,
    g: &pb::ApplicationGrant,
) -> Option<AppGrant> {
    let at = format!("group.application_grants[{i}]");
    let names = ["portfolios", "applications"];
    let ids = field(
        v,
        parse_ids(&format!("{at}.application"), &g.application, &names),
    )?;
    let perm = match pb::FeaturePermission::try_from(g.feature_permission) {
        Ok(pb::FeaturePermission::Create) => FeaturePermission::Create,
        Ok(pb::FeaturePermission::CreateEditDelete) => FeaturePermission::CreateEditDelete,
        _ => {
            let must = "must be CREATE or CREATE_EDIT_DELETE";
            v.add(format!("{at}.feature_permission"), must);
            return None;
        }
    };
    if !seen.insert(ids[1]) {
        v.add(format!("{at}.application"), "appears twice");
        return None;
    }
    Some((ids[0].to_string(), ids[1].to_string(), perm))
}

/// The permissions of an environment grant, or `None` when empty or unknown.
fn value_permissions(given: &[i32]) -> Option<ValuePermissions> {
    let mut bits = ValuePermissions::EMPTY;
    for p in given {
        bits = bits.with(match pb::ValuePermission::try_from(*p) {
            Ok(pb::ValuePermission::Read) => ValuePermission::Read,
            Ok(pb::ValuePermission::Lock) => ValuePermission::Lock,
            Ok(pb::ValuePermission::Unlock) => ValuePermission::Unlock,
            Ok(pb::ValuePermission::ChangeValue) => ValuePermission::ChangeValue,
            _ => return None,
        });
    }
    (!given.is_empty()).then_some(bits)
}

/// One environment grant, checked; `seen` holds the ids granted so far.
fn env_grant(
    v: &mut Violations,
    seen: &mut std::collections::HashSet<uuid::Uuid>,
    i: usize,
    g: &pb::EnvironmentGrant,
) -> Option<EnvGrant> {
    let at = format!("group.environment_grants[{i}]");
    let names = ["portfolios", "applications", "environments"];
    let ids = field(
        v,
        parse_ids(&format!("{at}.environment"), &g.environment, &names),
    )?;
    let Some(bits) = value_permissions(&g.permissions) else {
        let must = "must list one or more of READ, LOCK, UNLOCK, CHANGE_VALUE";
        v.add(format!("{at}.permissions"), must);
        return None;
    };
    if !seen.insert(ids[2]) {
        v.add(format!("{at}.environment"), "appears twice");
        return None;
    }
    Some((
        ids[0].to_string(),
        ids[1].to_string(),
        ids[2].to_string(),
        bits,
    ))
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

fn parse_group(field: &str, name: &str) -> ApiResult<(String, String)> {
    let ids = parse_ids(field, name, &["portfolios", "groups"])?;
    Ok((ids[0].to_string(), ids[1].to_string()))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ListFilter {
    parent: String,
    member: String,
}

fn create_cmd(req: pb::CreateGroupRequest) -> ApiResult<Create> {
    let pb::CreateGroupRequest { parent, group } = req;
    let mut v = Violations::new();
    let portfolio =
        field(&mut v, parse_ids("parent", &parent, &["portfolios"])).map(|ids| ids[0].to_string());
    let Some(g) = group else {
        v.add("group", "is required");
        return Err(v
            .finish()
            .err()
            .map_or_else(|| ApiError::invalid("group", "is required"), ApiError::from));
    };
    let name = v.check("", title("group.display_name", &g.display_name));
    not_confusable(&mut v, name.as_ref());
    let desc = v.check("", description("group.description", &g.description));
    let (applications, environments) =
        parse_grants(&mut v, &g.application_grants, &g.environment_grants);
    v.finish()?;
    Ok(Create {
        portfolio: checked(portfolio)?,
        display_name: checked(name)?,
        description: checked(desc)?,
        applications,
        environments,
    })
}

const UPDATABLE: [&str; 4] = [
    "display_name",
    "description",
    "application_grants",
    "environment_grants",
];

fn update_cmd(req: pb::UpdateGroupRequest) -> ApiResult<Update> {
    let pb::UpdateGroupRequest { group, update_mask } = req;
    let g = group.ok_or_else(|| ApiError::invalid("group", "is required"))?;
    let (portfolio, id) = parse_group("group.name", &g.name)?;
    let paths = mask_paths(update_mask.as_ref(), &UPDATABLE)?;
    let has = |x: &str| paths.iter().any(|p| p == x);
    let mut v = Violations::new();
    let name = when(has("display_name"), || {
        v.check("", title("group.display_name", &g.display_name))
    });
    not_confusable(&mut v, name.as_ref());
    let desc = when(has("description"), || {
        v.check("", description("group.description", &g.description))
    });
    let (apps, envs) = parse_grants(&mut v, &g.application_grants, &g.environment_grants);
    v.finish()?;
    Ok(Update {
        portfolio,
        id,
        etag: g.etag,
        display_name: name,
        description: desc,
        applications: has("application_grants").then_some(apps),
        environments: has("environment_grants").then_some(envs),
    })
}

fn membership_cmd(group: &str, member: &str, reason: &str, add: bool) -> ApiResult<Membership> {
    let mut v = Violations::new();
    let group = field(&mut v, parse_group("group", group));
    let member = field(&mut v, parse_principal("member", member));
    let reason = v.check("", description("reason", reason));
    v.finish()?;
    let (portfolio, id) = checked(group)?;
    Ok(Membership {
        portfolio,
        id,
        member: checked(member)?,
        reason: reason.map(|r| r.as_str().to_owned()).unwrap_or_default(),
        add,
    })
}

/// Where the previous page ended, as a (name, id) or (kind, id) pair, from a token issued for
/// `filter`.
fn pair_after<F>(token: &str, filter: &F) -> ApiResult<Option<(String, String)>>
where
    F: Serialize + for<'de> Deserialize<'de> + PartialEq,
{
    let after = PageToken::decode(token, filter)?;
    Ok(after
        .as_deref()
        .and_then(|a| a.split_once('\n'))
        .map(|(a, b)| (a.to_owned(), b.to_owned())))
}

/// The token of a page that ends at `pair`.
fn pair_token<F: Serialize + for<'de> Deserialize<'de> + PartialEq>(
    pair: Option<(String, String)>,
    filter: F,
) -> String {
    pair.map(|(a, b)| {
        PageToken {
            after: format!("{a}\n{b}"),
            filter,
        }
        .encode()
    })
    .unwrap_or_default()
}

fn list_query(req: pb::ListGroupsRequest) -> ApiResult<(ListQuery, ListFilter, String)> {
    let pb::ListGroupsRequest {
        parent,
        member,
        page_size: size,
        page_token,
    } = req;
    let portfolio = if parent == "portfolios/-" {
        None
    } else {
        Some(parse_ids("parent", &parent, &["portfolios"])?[0].to_string())
    };
    let who = when(!member.is_empty(), || {
        Some(parse_principal("member", &member))
    })
    .transpose()?;
    let limit = page_size(size)?;
    let filter = ListFilter { parent, member };
    let after = pair_after(&page_token, &filter)?;
    let q = ListQuery {
        portfolio,
        member: who,
        after,
        limit,
    };
    Ok((q, filter, page_token))
}

impl GroupSvc {
    /// Runs a command whose grants are first checked on a read connection, so that bad input
    /// never waits for (or holds) the write lock.
    async fn checked_write<C: fluxgate_core::Command<Output = GroupView>>(
        &self,
        ctx: &RequestCtx,
        p: &Principal,
        cmd: C,
        pre: (String, Option<String>, AppGrants, EnvGrants),
    ) -> ApiResult<Done<pb::Group>> {
        self.state.judge(ctx, p, |cx| cmd.check(cx))?;
        let (portfolio, group, apps, envs) = pre;
        self.state
            .query(ctx, p, move |_, conn| {
                groups::precheck(conn, &portfolio, group.as_deref(), &apps, &envs)
            })
            .await?;
        let done = self.state.execute(ctx, Some(p), cmd).await?;
        Ok(Done {
            value: group_pb(&done.value),
            revision: done.revision,
        })
    }
}

#[tonic::async_trait]
impl GroupService for GroupSvc {
    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::CreateGroupResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let cmd = create_cmd(req)?;
        let pre = (
            cmd.portfolio.clone(),
            None,
            cmd.applications.clone(),
            cmd.environments.clone(),
        );
        let done = self.checked_write(&ctx, &p, cmd, pre).await?;
        Ok(done.reply(&ctx, |g| pb::CreateGroupResponse { group: Some(g) }))
    }

    async fn get_group(
        &self,
        request: Request<pb::GetGroupRequest>,
    ) -> Result<Response<pb::GetGroupResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::GetGroupRequest { name } = req;
        let (portfolio, id) = parse_group("name", &name)?;
        let v = self
            .state
            .query(&ctx, &p, move |cx, conn| {
                groups::get(cx, conn, &portfolio, &id)
            })
            .await?;
        Ok(reply(
            pb::GetGroupResponse {
                group: Some(group_pb(&v)),
            },
            &ctx,
            None,
        ))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let (q, filter, _) = list_query(req)?;
        let (page, next) = self
            .state
            .query(&ctx, &p, move |cx, conn| groups::list(cx, conn, q))
            .await?;
        let next_page_token = pair_token(next, filter);
        let groups = page.iter().map(group_pb).collect();
        Ok(reply(
            pb::ListGroupsResponse {
                groups,
                next_page_token,
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
        let cmd = update_cmd(req)?;
        let pre = (
            cmd.portfolio.clone(),
            Some(cmd.id.clone()),
            cmd.applications.clone().unwrap_or_default(),
            cmd.environments.clone().unwrap_or_default(),
        );
        let done = self.checked_write(&ctx, &p, cmd, pre).await?;
        Ok(done.reply(&ctx, |g| pb::UpdateGroupResponse { group: Some(g) }))
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::DeleteGroupRequest { name, etag, force } = req;
        let (portfolio, id) = parse_group("name", &name)?;
        let cmd = Delete {
            portfolio,
            id,
            etag,
            force,
        };
        let done = self.state.execute(&ctx, Some(&p), cmd).await?;
        Ok(done.reply(&ctx, |()| pb::DeleteGroupResponse {}))
    }

    async fn add_group_member(
        &self,
        request: Request<pb::AddGroupMemberRequest>,
    ) -> Result<Response<pb::AddGroupMemberResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::AddGroupMemberRequest {
            group,
            member,
            reason,
        } = req;
        let cmd = membership_cmd(&group, &member, &reason, true)?;
        let done = self.state.execute(&ctx, Some(&p), cmd).await?;
        Ok(done.reply(&ctx, |v| pb::AddGroupMemberResponse {
            group: Some(group_pb(&v)),
        }))
    }

    async fn remove_group_member(
        &self,
        request: Request<pb::RemoveGroupMemberRequest>,
    ) -> Result<Response<pb::RemoveGroupMemberResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::RemoveGroupMemberRequest {
            group,
            member,
            reason,
        } = req;
        let cmd = membership_cmd(&group, &member, &reason, false)?;
        let done = self.state.execute(&ctx, Some(&p), cmd).await?;
        Ok(done.reply(&ctx, |v| pb::RemoveGroupMemberResponse {
            group: Some(group_pb(&v)),
        }))
    }

    async fn list_group_members(
        &self,
        request: Request<pb::ListGroupMembersRequest>,
    ) -> Result<Response<pb::ListGroupMembersResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::ListGroupMembersRequest {
            group,
            page_size: size,
            page_token,
        } = req;
        let (portfolio, id) = parse_group("group", &group)?;
        let limit = page_size(size)?;
        let after = pair_after(&page_token, &group)?;
        let (page, next) = self
            .state
            .query(&ctx, &p, move |cx, conn| {
                groups::members(cx, conn, (&portfolio, &id), after, limit)
            })
            .await?;
        let next_page_token = pair_token(next, group);
        let members = page.iter().map(|(k, m)| member_name(k, m)).collect();
        Ok(reply(
            pb::ListGroupMembersResponse {
                members,
                next_page_token,
            },
            &ctx,
            None,
        ))
    }
}
