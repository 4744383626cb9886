//! ServiceAccountService: admin and portfolio service accounts and their API keys.

use std::sync::Arc;

use fluxgate_authz::{Action, Target};
use fluxgate_domain::{KeyId, PortfolioId, Role, ServiceAccountId, Violations};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::service_account_service_server::ServiceAccountService;
use fluxgate_store::catalog::{self, Kind};
use fluxgate_store::changes::EntityKind;
use fluxgate_store::{DbConnection, audit, groups, service_accounts as store};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use super::reply;
use crate::auth::{RequestCtx, format_api_key};
use crate::convert::{
    PageToken, check_etag, description, duration_secs, etag, field, mask_paths, page_size,
    parse_ids, role_from_proto, role_to_proto, timestamp, title,
};
use crate::directory::Principal;
use crate::error::{ApiError, ApiResult};
use crate::runner::cancel_for_departed_submitter;
use crate::state::AppState;
use crate::tokens::{random_token, token_hash};

/// Longest grace a rotated key may keep.
const MAX_GRACE_SECS: u64 = 7 * 86_400;

#[derive(Debug, Clone)]
pub struct ServiceAccountSvc {
    pub state: Arc<AppState>,
}

fn sa_name(id: &str) -> String {
    format!("serviceAccounts/{id}")
}

fn key_name(sa: &str, key: &str) -> String {
    format!("serviceAccounts/{sa}/keys/{key}")
}

fn sa_pb(sa: &store::ServiceAccount) -> pb::ServiceAccount {
    pb::ServiceAccount {
        name: sa_name(&sa.id),
        display_name: sa.display_name.clone(),
        description: sa.description.clone(),
        portfolio: sa
            .portfolio_id
            .as_deref()
            .map(|p| format!("portfolios/{p}"))
            .unwrap_or_default(),
        role: sa
            .role
            .parse::<Role>()
            .map_or(0, |r| role_to_proto(r) as i32),
        active: sa.active,
        create_time: Some(timestamp(sa.created_at)),
        update_time: Some(timestamp(sa.updated_at)),
        etag: etag(&sa.id, sa.version),
        audit_writer: sa.audit_writer,
    }
}

fn key_pb(k: &store::Key) -> pb::ServiceAccountKey {
    pb::ServiceAccountKey {
        name: key_name(&k.service_account_id, &k.id),
        display_name: k.display_name.clone(),
        create_time: Some(timestamp(k.created_at)),
        expire_time: k.expires_at.map(timestamp),
        revoke_time: k.revoked_at.map(timestamp),
    }
}

fn snapshot(sa: &store::ServiceAccount) -> Option<String> {
    serde_json::to_string(&serde_json::json!({
        "display_name": sa.display_name,
        "description": sa.description,
        "portfolio_id": sa.portfolio_id,
        "role": sa.role,
        "active": sa.active,
        "audit_writer": sa.audit_writer,
    }))
    .ok()
}

fn scope_target(portfolio: Option<&str>) -> ApiResult<Target> {
    match portfolio {
        None => Ok(Target::Org),
        Some(p) => Ok(Target::Portfolio(
            p.parse::<PortfolioId>()
                .map_err(|_| ApiError::Internal(format!("bad portfolio id {p}")))?,
        )),
    }
}

fn load(conn: &mut DbConnection, id: &str) -> ApiResult<store::ServiceAccount> {
    store::find(conn, id)?.ok_or_else(|| ApiError::NotFound("no such service account".into()))
}

/// A new key for account `sa`, created by `creator` (the account then acts for it too).
fn new_key(
    tx_now: i64,
    sa: &str,
    creator: &Principal,
    display_name: String,
    expires_at: Option<i64>,
) -> (store::Key, String) {
    let id = KeyId::generate();
    let secret = random_token(32);
    let key = store::Key {
        id: id.to_string(),
        service_account_id: sa.to_owned(),
        display_name,
        secret_hash: token_hash(&secret),
        created_at: tx_now,
        expires_at,
        revoked_at: None,
        created_by: Some(creator.id.to_string()),
    };
    (key, format_api_key(id, &secret))
}

/// The account's principal id.
fn principal_of(id: &str) -> ApiResult<fluxgate_domain::PrincipalId> {
    id.parse::<ServiceAccountId>()
        .map(fluxgate_domain::PrincipalId::ServiceAccount)
        .map_err(|_| ApiError::Internal(format!("bad service account id {id}")))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ListFilter {
    portfolio: String,
}

impl ServiceAccountSvc {
    /// Loads an account and checks the caller may manage it.
    async fn managed(
        &self,
        p: &Principal,
        field: &str,
        name: &str,
    ) -> ApiResult<store::ServiceAccount> {
        let id = parse_ids(field, name, &["serviceAccounts"])?[0].to_string();
        let sa = self.state.db.read(move |conn| load(conn, &id)).await?;
        self.state.authorize(
            p,
            Action::ManageServiceAccounts,
            scope_target(sa.portfolio_id.as_deref())?,
        )?;
        Ok(sa)
    }

    async fn create(
        &self,
        ctx: RequestCtx,
        p: Principal,
        req: pb::CreateServiceAccountRequest,
    ) -> ApiResult<Response<pb::CreateServiceAccountResponse>> {
        let st = &self.state;
        let Some(x) = req.service_account else {
            return Err(ApiError::invalid("service_account", "is required"));
        };
        let mut v = Violations::new();
        let name = v.check("", title("service_account.display_name", &x.display_name));
        let desc = v.check(
            "",
            description("service_account.description", &x.description),
        );
        let role = v
            .check("service_account.role", role_from_proto(x.role))
            .flatten()
            .unwrap_or(Role::Requester);
        let portfolio = if x.portfolio.is_empty() {
            None
        } else {
            field(
                &mut v,
                parse_ids("service_account.portfolio", &x.portfolio, &["portfolios"]),
            )
            .map(|ids| ids[0].to_string())
        };
        if portfolio.is_some() && role != Role::Requester {
            v.add(
                "service_account.role",
                "portfolio service accounts are Requesters",
            );
        }
        v.finish()?;
        let (Some(name), Some(desc)) = (name, desc) else {
            return Err(ApiError::Internal(
                "validation passed without values".into(),
            ));
        };
        st.authorize(
            &p,
            Action::ManageServiceAccounts,
            scope_target(portfolio.as_deref())?,
        )?;
        if role != Role::Requester || x.audit_writer {
            st.authorize(&p, Action::ChangeServiceAccountRole, Target::Org)?;
        }
        if portfolio.is_some() && x.audit_writer {
            return Err(ApiError::invalid(
                "service_account.audit_writer",
                "only admin service accounts may write audit events",
            ));
        }
        let audit_writer = x.audit_writer;
        let ctx2 = ctx.clone();
        let committed = st
            .db
            .write(move |tx| {
                if let Some(po) = &portfolio {
                    catalog::find(tx.conn, Kind::Portfolio, po)?
                        .ok_or_else(|| ApiError::NotFound("no such portfolio".into()))?;
                }
                let sa = store::ServiceAccount {
                    id: ServiceAccountId::generate().to_string(),
                    display_name: name.as_str().to_owned(),
                    description: desc.as_str().to_owned(),
                    portfolio_id: portfolio.clone(),
                    role: role.as_str().to_owned(),
                    active: true,
                    created_at: tx.now,
                    updated_at: tx.now,
                    version: 1,
                    audit_writer,
                    created_by: Some(p.id.to_string()),
                };
                store::insert(tx.conn, &sa)?;
                tx.changed(EntityKind::ServiceAccount, sa.id.clone());
                let mut e = ctx2.event(
                    Some(&p),
                    "service_account.created",
                    "service_account",
                    Some(sa_name(&sa.id)),
                );
                e.after_json = snapshot(&sa);
                audit::append(tx.conn, e, tx.now)?;
                Ok(sa)
            })
            .await?;
        st.directory.settle().await;
        Ok(reply(
            pb::CreateServiceAccountResponse {
                service_account: Some(sa_pb(&committed.value)),
            },
            &ctx,
            committed.revision,
        ))
    }

    async fn list(
        &self,
        ctx: RequestCtx,
        p: Principal,
        req: pb::ListServiceAccountsRequest,
    ) -> ApiResult<Response<pb::ListServiceAccountsResponse>> {
        let portfolio = if req.portfolio.is_empty() {
            None
        } else {
            Some(parse_ids("portfolio", &req.portfolio, &["portfolios"])?[0].to_string())
        };
        let limit = page_size(req.page_size)?;
        let filter = ListFilter {
            portfolio: req.portfolio.clone(),
        };
        let after = PageToken::decode(&req.page_token, &filter)?;
        self.state.authorize(
            &p,
            Action::ManageServiceAccounts,
            scope_target(portfolio.as_deref())?,
        )?;
        let (page, next) = self
            .state
            .db
            .read(move |conn| {
                let mut page =
                    store::list(conn, portfolio.as_deref(), after.as_deref(), limit + 1)?;
                let more = page.len() as i64 > limit;
                page.truncate(limit as usize);
                let next = match (more, page.last()) {
                    (true, Some(last)) => PageToken {
                        after: last.id.clone(),
                        filter,
                    }
                    .encode(),
                    _ => String::new(),
                };
                Ok((page, next))
            })
            .await?;
        Ok(reply(
            pb::ListServiceAccountsResponse {
                service_accounts: page.iter().map(sa_pb).collect(),
                next_page_token: next,
            },
            &ctx,
            None,
        ))
    }

    async fn update(
        &self,
        ctx: RequestCtx,
        p: Principal,
        req: pb::UpdateServiceAccountRequest,
    ) -> ApiResult<Response<pb::UpdateServiceAccountResponse>> {
        let st = &self.state;
        let Some(x) = req.service_account else {
            return Err(ApiError::invalid("service_account", "is required"));
        };
        let paths = mask_paths(
            req.update_mask.as_ref(),
            &[
                "display_name",
                "description",
                "role",
                "active",
                "audit_writer",
            ],
        )?;
        let has = |f: &str| paths.iter().any(|p| p == f);
        let mut v = Violations::new();
        let name = if has("display_name") {
            v.check("", title("service_account.display_name", &x.display_name))
        } else {
            None
        };
        let desc = if has("description") {
            v.check(
                "",
                description("service_account.description", &x.description),
            )
        } else {
            None
        };
        let role = if has("role") {
            match v.check("service_account.role", role_from_proto(x.role)) {
                Some(None) => {
                    v.add("service_account.role", "is required when the mask names it");
                    None
                }
                other => other.flatten(),
            }
        } else {
            None
        };
        if x.name.is_empty() {
            v.add("service_account.name", "is required");
        }
        v.finish()?;
        let before = self.managed(&p, "service_account.name", &x.name).await?;
        if let Some(r) = role
            && r.as_str() != before.role
        {
            if before.portfolio_id.is_some() {
                return Err(ApiError::FailedPrecondition(
                    "portfolio service accounts are Requesters".into(),
                ));
            }
            st.authorize(&p, Action::ChangeServiceAccountRole, Target::Org)?;
        }
        let active = has("active").then_some(x.active);
        let audit_writer = has("audit_writer").then_some(x.audit_writer);
        if let Some(w) = audit_writer
            && w != before.audit_writer
        {
            if before.portfolio_id.is_some() {
                return Err(ApiError::FailedPrecondition(
                    "only admin service accounts may write audit events".into(),
                ));
            }
            st.authorize(&p, Action::ChangeServiceAccountRole, Target::Org)?;
        }
        let ctx2 = ctx.clone();
        let snap = st.directory.snapshot();
        let committed = st
            .db
            .write(move |tx| {
                let before = load(tx.conn, &before.id)?;
                check_etag(&x.etag, &before.id, before.version)?;
                let mut after = before.clone();
                if let Some(n) = &name {
                    after.display_name = n.as_str().to_owned();
                }
                if let Some(d) = &desc {
                    after.description = d.as_str().to_owned();
                }
                if let Some(r) = role {
                    after.role = r.as_str().to_owned();
                }
                if let Some(a) = active {
                    after.active = a;
                }
                if let Some(w) = audit_writer {
                    after.audit_writer = w;
                }
                if after == before {
                    return Ok(before);
                }
                store::update(tx.conn, &after, tx.now)?;
                tx.changed(EntityKind::ServiceAccount, before.id.clone());
                if before.active && !after.active {
                    cancel_for_departed_submitter(
                        tx,
                        &ctx2,
                        &p,
                        &snap,
                        principal_of(&before.id)?,
                        "its submitter was deactivated",
                    )?;
                }
                let mut e = ctx2.event(
                    Some(&p),
                    "service_account.updated",
                    "service_account",
                    Some(sa_name(&before.id)),
                );
                e.before_json = snapshot(&before);
                e.after_json = snapshot(&after);
                audit::append(tx.conn, e, tx.now)?;
                load(tx.conn, &before.id)
            })
            .await?;
        st.directory.settle().await;
        Ok(reply(
            pb::UpdateServiceAccountResponse {
                service_account: Some(sa_pb(&committed.value)),
            },
            &ctx,
            committed.revision,
        ))
    }

    async fn delete(
        &self,
        ctx: RequestCtx,
        p: Principal,
        req: pb::DeleteServiceAccountRequest,
    ) -> ApiResult<Response<pb::DeleteServiceAccountResponse>> {
        let st = &self.state;
        let sa = self.managed(&p, "name", &req.name).await?;
        let ctx2 = ctx.clone();
        let snap = st.directory.snapshot();
        let committed = st
            .db
            .write(move |tx| {
                let before = load(tx.conn, &sa.id)?;
                check_etag(&req.etag, &before.id, before.version)?;
                cancel_for_departed_submitter(
                    tx,
                    &ctx2,
                    &p,
                    &snap,
                    principal_of(&before.id)?,
                    "its submitter was deleted",
                )?;
                for g in groups::remove_principal(tx.conn, "service_account", &before.id)? {
                    groups::touch(tx.conn, &g, tx.now)?;
                    tx.changed(EntityKind::Group, g);
                }
                store::delete(tx.conn, &before.id)?;
                tx.changed(EntityKind::ServiceAccount, before.id.clone());
                let mut e = ctx2.event(
                    Some(&p),
                    "service_account.deleted",
                    "service_account",
                    Some(sa_name(&before.id)),
                );
                e.before_json = snapshot(&before);
                audit::append(tx.conn, e, tx.now)?;
                Ok(())
            })
            .await?;
        st.directory.settle().await;
        Ok(reply(
            pb::DeleteServiceAccountResponse {},
            &ctx,
            committed.revision,
        ))
    }

    async fn create_key(
        &self,
        ctx: RequestCtx,
        p: Principal,
        req: pb::CreateServiceAccountKeyRequest,
    ) -> ApiResult<Response<pb::CreateServiceAccountKeyResponse>> {
        let st = &self.state;
        let k = req.key.unwrap_or_default();
        let mut v = Violations::new();
        let display = if k.display_name.is_empty() {
            Some("API key".to_owned())
        } else {
            v.check("", title("key.display_name", &k.display_name))
                .map(|t| t.as_str().to_owned())
        };
        let now = fluxgate_store::now_micros();
        let expires_at = crate::convert::micros(&mut v, "key.expire_time", &k.expire_time);
        if expires_at.is_some_and(|t| t <= now) {
            v.add("key.expire_time", "must be in the future");
        }
        if req.parent.is_empty() {
            v.add("parent", "is required");
        }
        v.finish()?;
        let sa = self.managed(&p, "parent", &req.parent).await?;
        let ctx2 = ctx.clone();
        let committed = st
            .db
            .write(move |tx| {
                load(tx.conn, &sa.id)?;
                let (key, secret) =
                    new_key(tx.now, &sa.id, &p, display.unwrap_or_default(), expires_at);
                store::insert_key(tx.conn, &key)?;
                tx.changed(EntityKind::ServiceAccount, sa.id.clone());
                let mut e = ctx2.event(
                    Some(&p),
                    "service_account.key_created",
                    "service_account_key",
                    Some(key_name(&sa.id, &key.id)),
                );
                e.detail = key.expires_at.map(|x| format!("expires at {x} µs"));
                audit::append(tx.conn, e, tx.now)?;
                Ok((key, secret))
            })
            .await?;
        st.directory.settle().await;
        let (key, secret) = committed.value;
        Ok(reply(
            pb::CreateServiceAccountKeyResponse {
                key: Some(key_pb(&key)),
                secret,
            },
            &ctx,
            committed.revision,
        ))
    }

    /// Rotate (with `Some(grace)`) or revoke (with `None`) a key.
    async fn retire_key(
        &self,
        ctx: &RequestCtx,
        p: Principal,
        name: &str,
        grace: Option<u64>,
    ) -> ApiResult<(store::Key, Option<(store::Key, String)>, Option<i64>)> {
        let st = &self.state;
        let ids = parse_ids("name", name, &["serviceAccounts", "keys"])?;
        let (sa_id, key_id) = (ids[0].to_string(), ids[1].to_string());
        self.managed(&p, "name", &sa_name(&sa_id)).await?;
        let ctx2 = ctx.clone();
        let committed = st
            .db
            .write(move |tx| {
                let mut old = store::find_key(tx.conn, &key_id)?
                    .filter(|k| k.service_account_id == sa_id)
                    .ok_or_else(|| ApiError::NotFound("no such key".into()))?;
                let live = old.revoked_at.is_none() && old.expires_at.is_none_or(|e| e > tx.now);
                if !live {
                    return Err(ApiError::FailedPrecondition(
                        "the key is already revoked or expired".into(),
                    ));
                }
                let (action, fresh) = match grace {
                    Some(g) => {
                        let until = tx.now + (g as i64) * 1_000_000;
                        old.expires_at = Some(old.expires_at.map_or(until, |e| e.min(until)));
                        let (k, secret) =
                            new_key(tx.now, &sa_id, &p, old.display_name.clone(), None);
                        store::insert_key(tx.conn, &k)?;
                        ("service_account.key_rotated", Some((k, secret)))
                    }
                    None => {
                        old.revoked_at = Some(tx.now);
                        ("service_account.key_revoked", None)
                    }
                };
                store::update_key(tx.conn, &old)?;
                tx.changed(EntityKind::ServiceAccount, sa_id.clone());
                let mut e = ctx2.event(
                    Some(&p),
                    action,
                    "service_account_key",
                    Some(key_name(&sa_id, &old.id)),
                );
                if let Some((k, _)) = &fresh {
                    e.detail = Some(format!(
                        "replaced by {}; grace {} s",
                        key_name(&sa_id, &k.id),
                        grace.unwrap_or(0)
                    ));
                }
                audit::append(tx.conn, e, tx.now)?;
                Ok((old, fresh))
            })
            .await?;
        st.directory.settle().await;
        let (old, fresh) = committed.value;
        Ok((old, fresh, committed.revision))
    }
}

#[tonic::async_trait]
impl ServiceAccountService for ServiceAccountSvc {
    async fn create_service_account(
        &self,
        request: Request<pb::CreateServiceAccountRequest>,
    ) -> Result<Response<pb::CreateServiceAccountResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        Ok(self.create(ctx, p, req).await?)
    }

    async fn get_service_account(
        &self,
        request: Request<pb::GetServiceAccountRequest>,
    ) -> Result<Response<pb::GetServiceAccountResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let sa = self.managed(&p, "name", &req.name).await?;
        Ok(reply(
            pb::GetServiceAccountResponse {
                service_account: Some(sa_pb(&sa)),
            },
            &ctx,
            None,
        ))
    }

    async fn list_service_accounts(
        &self,
        request: Request<pb::ListServiceAccountsRequest>,
    ) -> Result<Response<pb::ListServiceAccountsResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        Ok(self.list(ctx, p, req).await?)
    }

    async fn update_service_account(
        &self,
        request: Request<pb::UpdateServiceAccountRequest>,
    ) -> Result<Response<pb::UpdateServiceAccountResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        Ok(self.update(ctx, p, req).await?)
    }

    async fn delete_service_account(
        &self,
        request: Request<pb::DeleteServiceAccountRequest>,
    ) -> Result<Response<pb::DeleteServiceAccountResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        Ok(self.delete(ctx, p, req).await?)
    }

    async fn create_service_account_key(
        &self,
        request: Request<pb::CreateServiceAccountKeyRequest>,
    ) -> Result<Response<pb::CreateServiceAccountKeyResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        Ok(self.create_key(ctx, p, req).await?)
    }

    async fn list_service_account_keys(
        &self,
        request: Request<pb::ListServiceAccountKeysRequest>,
    ) -> Result<Response<pb::ListServiceAccountKeysResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let sa = self.managed(&p, "parent", &req.parent).await?;
        let keys = self
            .state
            .db
            .read(move |conn| Ok(store::keys(conn, &sa.id)?))
            .await?;
        Ok(reply(
            pb::ListServiceAccountKeysResponse {
                keys: keys.iter().map(key_pb).collect(),
            },
            &ctx,
            None,
        ))
    }

    async fn rotate_service_account_key(
        &self,
        request: Request<pb::RotateServiceAccountKeyRequest>,
    ) -> Result<Response<pb::RotateServiceAccountKeyResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let grace = match &req.grace_period {
            None => 0,
            Some(d) => {
                let s = duration_secs(d).map_err(|mut e| {
                    e.violations[0].field = "grace_period".into();
                    ApiError::Invalid(e)
                })?;
                if s > MAX_GRACE_SECS {
                    return Err(ApiError::invalid("grace_period", "must be at most 7 days").into());
                }
                s
            }
        };
        let (old, fresh, rev) = self.retire_key(&ctx, p, &req.name, Some(grace)).await?;
        let (key, secret) =
            fresh.ok_or_else(|| ApiError::Internal("rotation made no key".into()))?;
        Ok(reply(
            pb::RotateServiceAccountKeyResponse {
                key: Some(key_pb(&key)),
                secret,
                previous_key: Some(key_pb(&old)),
            },
            &ctx,
            rev,
        ))
    }

    async fn revoke_service_account_key(
        &self,
        request: Request<pb::RevokeServiceAccountKeyRequest>,
    ) -> Result<Response<pb::RevokeServiceAccountKeyResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let (old, _, rev) = self.retire_key(&ctx, p, &req.name, None).await?;
        Ok(reply(
            pb::RevokeServiceAccountKeyResponse {
                key: Some(key_pb(&old)),
            },
            &ctx,
            rev,
        ))
    }
}
