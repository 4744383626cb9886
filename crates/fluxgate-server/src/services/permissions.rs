//! PermissionService: checks, batch checks, explanations and look-ups, answered from the
//! in-memory snapshot without touching the database.

use std::sync::Arc;

use fluxgate_authz::{Action, Decision, Reason, ResourceRef, Snapshot, Target};
use fluxgate_domain::{ApplicationId, EnvironmentId, Permission, PortfolioId, PrincipalId, Role};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::permission_service_server::PermissionService;
use tonic::{Request, Response, Status};

use super::reply;
use crate::auth::RequestCtx;
use crate::convert::{
    PrincipalRef, UserRef, application_name, environment_name, group_name_of, id_pairs, parse_ids,
    parse_principal, role_from_proto, role_to_proto,
};
use crate::directory::Principal;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Most checks one batch may carry.
pub const MAX_BATCH: usize = 1000;

#[derive(Debug, Clone)]
pub struct PermissionSvc {
    pub state: Arc<AppState>,
}

fn permission(field: &str, v: i32) -> ApiResult<Permission> {
    Ok(match pb::Permission::try_from(v) {
        Ok(pb::Permission::Read) => Permission::Read,
        Ok(pb::Permission::Lock) => Permission::Lock,
        Ok(pb::Permission::Unlock) => Permission::Unlock,
        Ok(pb::Permission::ChangeValue) => Permission::ChangeValue,
        Ok(pb::Permission::CreateFeature) => Permission::CreateFeature,
        Ok(pb::Permission::EditFeature) => Permission::EditFeature,
        Ok(pb::Permission::DeleteFeature) => Permission::DeleteFeature,
        _ => {
            return Err(ApiError::invalid(
                field,
                "is required: one of READ, LOCK, UNLOCK, CHANGE_VALUE, CREATE_FEATURE, EDIT_FEATURE, DELETE_FEATURE",
            ));
        }
    })
}

/// Parses an application or environment name and checks it exists where its name says.
fn resource(
    snap: &Snapshot,
    field: &str,
    name: &str,
    perm: Permission,
) -> ApiResult<(ResourceRef, PortfolioId)> {
    const SHAPE: [&str; 3] = ["portfolios", "applications", "environments"];
    let (r, p_id, a_id) = match id_pairs(name, &SHAPE).as_deref() {
        Some(&[p, a, e]) => (ResourceRef::Environment(EnvironmentId(e)), p, a),
        Some(&[p, a]) => {
            if perm.value().is_some() {
                return Err(ApiError::invalid(
                    field,
                    format!("{perm} is checked on an environment, not an application"),
                ));
            }
            (ResourceRef::Application(ApplicationId(a)), p, a)
        }
        // Shaped like an environment's name: say what an environment's name is.
        _ if name.bytes().filter(|&b| b == b'/').count() == 5 => {
            return Err(parse_ids(field, name, &SHAPE)
                .err()
                .unwrap_or_else(|| ApiError::invalid(field, "must be an environment name")));
        }
        _ => {
            return Err(ApiError::invalid(
                field,
                "must be an environment or application name",
            ));
        }
    };
    match snap.parents(r) {
        Some((p, a)) if p.0 == p_id && a.0 == a_id => Ok((r, p)),
        _ => Err(ApiError::NotFound(format!("no such resource {name}"))),
    }
}

fn resource_name(snap: &Snapshot, r: ResourceRef) -> String {
    match (r, snap.parents(r)) {
        (ResourceRef::Environment(e), Some((p, a))) => {
            environment_name(&p.to_string(), &a.to_string(), &e.to_string())
        }
        (ResourceRef::Application(a), Some((p, _))) => {
            application_name(&p.to_string(), &a.to_string())
        }
        _ => String::new(),
    }
}

/// `a` then `b`, in one allocation (the hot path's answers; `format!` costs more).
fn concat(a: &str, b: &str) -> String {
    let mut s = String::with_capacity(a.len() + b.len());
    s.push_str(a);
    s.push_str(b);
    s
}

fn decision_pb(snap: &Snapshot, d: Decision) -> pb::PermissionDecision {
    let group = |g| {
        snap.group_portfolio(g)
            .map(|p| group_name_of(p, g))
            .unwrap_or_default()
    };
    let (reason, granted_by) = match d.reason {
        Reason::TeamAdmin => (d.reason.to_string(), "role/team_admin".to_owned()),
        Reason::PortfolioAdmin { group: g } => {
            let n = group(g);
            (
                concat("member of the portfolio's Administrators group ", &n),
                n,
            )
        }
        Reason::GroupGrant { group: g } => {
            let n = group(g);
            (concat("granted by group ", &n), n)
        }
        other => (other.to_string(), String::new()),
    };
    pb::PermissionDecision {
        allowed: d.allowed,
        reason,
        granted_by,
    }
}

impl PermissionSvc {
    /// LookupResources on an application: the environments where the subject holds a value
    /// permission.
    fn environments_allowed(
        &self,
        snap: &Snapshot,
        caller: &Principal,
        req: &pb::LookupResourcesRequest,
        perm: Permission,
    ) -> ApiResult<Vec<String>> {
        let ids = parse_ids("parent", &req.parent, &["portfolios", "applications"])?;
        let app = ApplicationId(ids[1]);
        // The application must exist where its name says.
        let (_, portfolio) = resource(snap, "parent", &req.parent, Permission::CreateFeature)?;
        if perm.value().is_none() {
            return Err(ApiError::invalid(
                "permission",
                "feature permissions are looked up on a portfolio's applications",
            ));
        }
        let who = self.subject(snap, caller, "principal", &req.principal, Some(portfolio))?;
        Ok(snap
            .environments_allowed(&who, perm, app)
            .into_iter()
            .map(|e| resource_name(snap, ResourceRef::Environment(e)))
            .collect())
    }

    /// LookupResources on a portfolio: the applications where the subject holds a feature
    /// permission.
    fn applications_allowed(
        &self,
        snap: &Snapshot,
        caller: &Principal,
        req: &pb::LookupResourcesRequest,
        perm: Permission,
    ) -> ApiResult<Vec<String>> {
        let ids = parse_ids("parent", &req.parent, &["portfolios"])
            .map_err(|_| ApiError::invalid("parent", "must be an application or portfolio name"))?;
        if perm.value().is_some() {
            return Err(ApiError::invalid(
                "parent",
                "value permissions are looked up on an application's environments",
            ));
        }
        let portfolio = PortfolioId(ids[0]);
        let who = self.subject(snap, caller, "principal", &req.principal, Some(portfolio))?;
        Ok(snap
            .applications_allowed(&who, perm, portfolio)
            .into_iter()
            .map(|a| resource_name(snap, ResourceRef::Application(a)))
            .collect())
    }
    /// The principal a check is about, after checking the caller may ask about it.
    fn subject(
        &self,
        snap: &Snapshot,
        caller: &Principal,
        field: &str,
        name: &str,
        portfolio: Option<PortfolioId>,
    ) -> ApiResult<PrincipalId> {
        // Resolve, but answer nothing about others until the caller may ask about them: an
        // unknown name and a known one look the same to a caller who may not ask.
        let id = if name.is_empty() {
            Some(caller.id)
        } else {
            match parse_principal(field, name)? {
                PrincipalRef::User(UserRef::Id(u)) => Some(PrincipalId::User(u)),
                PrincipalRef::User(UserRef::Username(n)) => {
                    self.state.directory.user_by_name(&n).map(PrincipalId::User)
                }
                PrincipalRef::ServiceAccount(s) => Some(PrincipalId::ServiceAccount(s)),
            }
        };
        if id != Some(caller.id) {
            let target = portfolio.map_or(Target::Org, Target::Portfolio);
            self.state
                .authorize_in(snap, caller, Action::CheckOthers, target)?;
        }
        let id = id
            .filter(|id| snap.has_principal(id))
            .ok_or_else(|| ApiError::NotFound(format!("no such principal {name}")))?;
        Ok(id)
    }

    async fn begin<T>(
        &self,
        request: &Request<T>,
        min_revision: i64,
    ) -> ApiResult<(RequestCtx, Principal, Arc<Snapshot>, i64)> {
        let ctx = RequestCtx::of(request)?;
        if min_revision < 0 {
            return Err(ApiError::invalid("min_revision", "must not be negative"));
        }
        let wanted = ctx.min_revision.unwrap_or(0).max(min_revision);
        let p = self
            .state
            .authenticate_at(request, (wanted > 0).then_some(wanted))
            .await?;
        let (snap, revision) = self.state.directory.snapshot_at();
        self.state
            .authorize_in(&snap, &p, Action::ReadCatalog, Target::Org)?;
        Ok((ctx, p, snap, revision))
    }

    /// One check's subject, permission and resource; `at` is its place in a batch (its fields
    /// are `checks[i].…`), else `None` (`check.…`).
    fn one(
        &self,
        snap: &Snapshot,
        caller: &Principal,
        c: &pb::PermissionCheck,
        at: Option<usize>,
    ) -> ApiResult<(PrincipalId, Permission, ResourceRef)> {
        let named = |e| under(e, at);
        let perm = permission("permission", c.permission).map_err(named)?;
        let (r, portfolio) = resource(snap, "resource", &c.resource, perm).map_err(named)?;
        let who = self
            .subject(snap, caller, "principal", &c.principal, Some(portfolio))
            .map_err(named)?;
        Ok((who, perm, r))
    }
}

/// `e` with the fields it names put under a check's: `check.` or, in a batch, `checks[i].`
/// (built only on this error path: the answers of the hot path allocate no field names).
fn under(e: ApiError, at: Option<usize>) -> ApiError {
    match e {
        ApiError::Invalid(mut v) => {
            let prefix = at.map_or_else(|| "check.".to_owned(), |i| format!("checks[{i}]."));
            for f in &mut v.violations {
                f.field.insert_str(0, &prefix);
            }
            ApiError::Invalid(v)
        }
        other => other,
    }
}

#[tonic::async_trait]
impl PermissionService for PermissionSvc {
    async fn check_permission(
        &self,
        request: Request<pb::CheckPermissionRequest>,
    ) -> Result<Response<pb::CheckPermissionResponse>, Status> {
        let (ctx, caller, snap, revision) =
            self.begin(&request, request.get_ref().min_revision).await?;
        let c = request
            .get_ref()
            .check
            .clone()
            .ok_or_else(|| ApiError::invalid("check", "is required"))?;
        let (who, perm, r) = self.one(&snap, &caller, &c, None)?;
        let d = snap.check(&who, perm, r);
        Ok(reply(
            pb::CheckPermissionResponse {
                decision: Some(decision_pb(&snap, d)),
                revision,
            },
            &ctx,
            None,
        ))
    }

    async fn batch_check_permissions(
        &self,
        request: Request<pb::BatchCheckPermissionsRequest>,
    ) -> Result<Response<pb::BatchCheckPermissionsResponse>, Status> {
        let (ctx, caller, snap, revision) =
            self.begin(&request, request.get_ref().min_revision).await?;
        let checks = &request.get_ref().checks;
        if checks.is_empty() || checks.len() > MAX_BATCH {
            return Err(
                ApiError::invalid("checks", format!("must hold 1 to {MAX_BATCH} checks")).into(),
            );
        }
        let mut decisions = Vec::with_capacity(checks.len());
        for (i, c) in checks.iter().enumerate() {
            let (who, perm, r) = self.one(&snap, &caller, c, Some(i))?;
            decisions.push(decision_pb(&snap, snap.check(&who, perm, r)));
        }
        Ok(reply(
            pb::BatchCheckPermissionsResponse {
                decisions,
                revision,
            },
            &ctx,
            None,
        ))
    }

    async fn explain_permission(
        &self,
        request: Request<pb::ExplainPermissionRequest>,
    ) -> Result<Response<pb::ExplainPermissionResponse>, Status> {
        let (ctx, caller, snap, revision) =
            self.begin(&request, request.get_ref().min_revision).await?;
        let c = request
            .get_ref()
            .check
            .clone()
            .ok_or_else(|| ApiError::invalid("check", "is required"))?;
        let (who, perm, r) = self.one(&snap, &caller, &c, None)?;
        let e = snap.explain(&who, perm, r);
        let groups = e
            .groups
            .iter()
            .map(|g| pb::GroupContribution {
                group: snap
                    .group_portfolio(g.group)
                    .map(|p| group_name_of(p, g.group))
                    .unwrap_or_default(),
                administrators: g.administrators,
                grants: g.grants.clone(),
            })
            .collect();
        Ok(reply(
            pb::ExplainPermissionResponse {
                decision: Some(decision_pb(&snap, e.decision)),
                role: e.role.map_or(0, |r| role_to_proto(r) as i32),
                active: e.active,
                groups,
                revision,
            },
            &ctx,
            None,
        ))
    }

    async fn lookup_resources(
        &self,
        request: Request<pb::LookupResourcesRequest>,
    ) -> Result<Response<pb::LookupResourcesResponse>, Status> {
        let (ctx, caller, snap, revision) =
            self.begin(&request, request.get_ref().min_revision).await?;
        let req = request.get_ref();
        let perm = permission("permission", req.permission)?;
        let resources = if req.parent.split('/').count() == 4 {
            self.environments_allowed(&snap, &caller, req, perm)?
        } else {
            self.applications_allowed(&snap, &caller, req, perm)?
        };
        Ok(reply(
            pb::LookupResourcesResponse {
                resources,
                revision,
            },
            &ctx,
            None,
        ))
    }

    async fn lookup_principals(
        &self,
        request: Request<pb::LookupPrincipalsRequest>,
    ) -> Result<Response<pb::LookupPrincipalsResponse>, Status> {
        let (ctx, caller, snap, revision) =
            self.begin(&request, request.get_ref().min_revision).await?;
        let req = request.get_ref();
        let perm = permission("permission", req.permission)?;
        let min_role = role_from_proto(req.min_role)
            .map_err(|e| ApiError::invalid("min_role", e.violations[0].description.clone()))?
            .unwrap_or(Role::Requester);
        let (r, portfolio) = resource(&snap, "resource", &req.resource, perm)?;
        self.state
            .authorize(&caller, Action::CheckOthers, Target::Portfolio(portfolio))?;
        let principals = snap
            .principals_allowed(perm, r, min_role)
            .into_iter()
            .map(|p| p.to_string())
            .collect();
        Ok(reply(
            pb::LookupPrincipalsResponse {
                principals,
                revision,
            },
            &ctx,
            None,
        ))
    }
}
