//! ServiceAccountService: the adapter over [`fluxgate_core::service_accounts`] (admin and
//! portfolio service accounts and their API keys).

use std::sync::Arc;

use fluxgate_core::service_accounts::{
    self as uc, Create, CreateKey, Delete, Key, MAX_GRACE_SECS, RetireKey, ServiceAccount, Update,
    key_name,
};
use fluxgate_domain::{Role, Violations};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::service_account_service_server::ServiceAccountService;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use super::reply;
use crate::auth::RequestCtx;
use crate::convert::{
    PageToken, checked, description, duration_secs, etag, field, mask_paths, page_size, parse_ids,
    role_from_proto, role_to_proto, timestamp, title, when,
};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Debug, Clone)]
pub struct ServiceAccountSvc {
    pub state: Arc<AppState>,
}

fn sa_pb(sa: &ServiceAccount) -> pb::ServiceAccount {
    pb::ServiceAccount {
        name: uc::name(&sa.id),
        display_name: sa.display_name.clone(),
        description: sa.description.clone(),
        portfolio: sa
            .portfolio_id
            .as_deref()
            .map(|p| format!("portfolios/{p}"))
            .unwrap_or_default(),
        role: role_to_proto(sa.role) as i32,
        active: sa.active,
        create_time: Some(timestamp(sa.created_at)),
        update_time: Some(timestamp(sa.updated_at)),
        etag: etag(&sa.id, sa.version),
        audit_writer: sa.audit_writer,
        provisioner: sa.provisioner,
    }
}

fn key_pb(k: &Key) -> pb::ServiceAccountKey {
    pb::ServiceAccountKey {
        name: key_name(&k.service_account_id, &k.id),
        display_name: k.display_name.clone(),
        create_time: Some(timestamp(k.created_at)),
        expire_time: k.expires_at.map(timestamp),
        revoke_time: k.revoked_at.map(timestamp),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ListFilter {
    portfolio: String,
}

/// A role the mask names, which must be given.
fn required_role(v: &mut Violations, role: i32) -> Option<Role> {
    match v.check("service_account.role", role_from_proto(role)) {
        Some(None) => {
            v.add("service_account.role", "is required when the mask names it");
            None
        }
        other => other.flatten(),
    }
}

fn account_id(field: &str, name: &str) -> ApiResult<String> {
    Ok(parse_ids(field, name, &["serviceAccounts"])?[0].to_string())
}

fn create_cmd(req: pb::CreateServiceAccountRequest) -> ApiResult<Create> {
    let pb::CreateServiceAccountRequest { service_account } = req;
    let x = service_account.ok_or_else(|| ApiError::invalid("service_account", "is required"))?;
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
    let portfolio = when(!x.portfolio.is_empty(), || {
        let ids = parse_ids("service_account.portfolio", &x.portfolio, &["portfolios"]);
        field(&mut v, ids).map(|ids| ids[0].to_string())
    });
    if portfolio.is_some() && role != Role::Requester {
        v.add(
            "service_account.role",
            "portfolio service accounts are Requesters",
        );
    }
    v.finish()?;
    Ok(Create {
        display_name: checked(name)?,
        description: checked(desc)?,
        role,
        portfolio,
        audit_writer: x.audit_writer,
        provisioner: x.provisioner,
    })
}

const UPDATABLE: [&str; 5] = [
    "display_name",
    "description",
    "role",
    "active",
    "audit_writer",
];

fn update_cmd(req: pb::UpdateServiceAccountRequest) -> ApiResult<Update> {
    let pb::UpdateServiceAccountRequest {
        service_account,
        update_mask,
    } = req;
    let x = service_account.ok_or_else(|| ApiError::invalid("service_account", "is required"))?;
    let paths = mask_paths(update_mask.as_ref(), &UPDATABLE)?;
    let has = |f: &str| paths.iter().any(|p| p == f);
    let mut v = Violations::new();
    let name = when(has("display_name"), || {
        v.check("", title("service_account.display_name", &x.display_name))
    });
    let desc = when(has("description"), || {
        v.check(
            "",
            description("service_account.description", &x.description),
        )
    });
    let role = when(has("role"), || required_role(&mut v, x.role));

    if x.name.is_empty() {
        v.add("service_account.name", "is required");
    }
    v.finish()?;
    Ok(Update {
        id: account_id("service_account.name", &x.name)?,
        etag: x.etag,
        display_name: name,
        description: desc,
        role,
        active: has("active").then_some(x.active),
        audit_writer: has("audit_writer").then_some(x.audit_writer),
    })
}

fn create_key_cmd(req: pb::CreateServiceAccountKeyRequest) -> ApiResult<CreateKey> {
    let pb::CreateServiceAccountKeyRequest { parent, key } = req;
    let k = key.unwrap_or_default();
    let mut v = Violations::new();
    let display = if k.display_name.is_empty() {
        Some("API key".to_owned())
    } else {
        v.check("", title("key.display_name", &k.display_name))
            .map(|t| t.as_str().to_owned())
    };
    let now = fluxgate_core::time::now_micros();
    let expires_at = crate::convert::micros(&mut v, "key.expire_time", &k.expire_time);
    if expires_at.is_some_and(|t| t <= now) {
        v.add("key.expire_time", "must be in the future");
    }
    if parent.is_empty() {
        v.add("parent", "is required");
    }
    v.finish()?;
    Ok(CreateKey {
        account: account_id("parent", &parent)?,
        display_name: checked(display)?,
        expires_at,
    })
}

fn grace(d: Option<&prost_types::Duration>) -> ApiResult<u64> {
    let Some(d) = d else { return Ok(0) };
    let s = duration_secs(d).map_err(|mut e| {
        e.violations[0].field = "grace_period".into();
        ApiError::Invalid(e)
    })?;
    if s > MAX_GRACE_SECS {
        return Err(ApiError::invalid("grace_period", "must be at most 7 days"));
    }
    Ok(s)
}

fn retire_cmd(name: &str, grace_secs: Option<u64>) -> ApiResult<RetireKey> {
    let ids = parse_ids("name", name, &["serviceAccounts", "keys"])?;
    Ok(RetireKey {
        account: ids[0].to_string(),
        key: ids[1].to_string(),
        grace_secs,
    })
}

/// A listing's portfolio, if it names one.
fn portfolio_filter(portfolio: &str) -> ApiResult<Option<String>> {
    if portfolio.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        parse_ids("portfolio", portfolio, &["portfolios"])?[0].to_string(),
    ))
}

impl ServiceAccountSvc {
    async fn list(
        &self,
        ctx: &RequestCtx,
        p: &crate::directory::Principal,
        req: pb::ListServiceAccountsRequest,
    ) -> ApiResult<pb::ListServiceAccountsResponse> {
        let pb::ListServiceAccountsRequest {
            portfolio,
            page_size: size,
            page_token,
        } = req;
        let po = portfolio_filter(&portfolio)?;
        let limit = page_size(size)?;
        let filter = ListFilter { portfolio };
        let after = PageToken::decode(&page_token, &filter)?;
        let mut page = self
            .state
            .query(ctx, p, move |cx, conn| {
                uc::list(cx, conn, po.as_deref(), after.as_deref(), limit + 1)
            })
            .await?;
        let more = page.len() as i64 > limit;
        page.truncate(limit as usize);
        let next_page_token = match (more, page.last()) {
            (true, Some(last)) => PageToken {
                after: last.id.clone(),
                filter,
            }
            .encode(),
            _ => String::new(),
        };
        let service_accounts = page.iter().map(sa_pb).collect();
        Ok(pb::ListServiceAccountsResponse {
            service_accounts,
            next_page_token,
        })
    }
}

#[tonic::async_trait]
impl ServiceAccountService for ServiceAccountSvc {
    async fn create_service_account(
        &self,
        request: Request<pb::CreateServiceAccountRequest>,
    ) -> Result<Response<pb::CreateServiceAccountResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let done = self.state.execute(&ctx, Some(&p), create_cmd(req)?).await?;
        Ok(done.reply(&ctx, |sa| pb::CreateServiceAccountResponse {
            service_account: Some(sa_pb(&sa)),
        }))
    }

    async fn get_service_account(
        &self,
        request: Request<pb::GetServiceAccountRequest>,
    ) -> Result<Response<pb::GetServiceAccountResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::GetServiceAccountRequest { name } = req;
        let id = account_id("name", &name)?;
        let sa = self
            .state
            .query(&ctx, &p, move |cx, conn| uc::managed(cx, conn, &id))
            .await?;
        let msg = pb::GetServiceAccountResponse {
            service_account: Some(sa_pb(&sa)),
        };
        Ok(reply(msg, &ctx, None))
    }

    async fn list_service_accounts(
        &self,
        request: Request<pb::ListServiceAccountsRequest>,
    ) -> Result<Response<pb::ListServiceAccountsResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let msg = self.list(&ctx, &p, req).await?;
        Ok(reply(msg, &ctx, None))
    }

    async fn update_service_account(
        &self,
        request: Request<pb::UpdateServiceAccountRequest>,
    ) -> Result<Response<pb::UpdateServiceAccountResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let done = self.state.execute(&ctx, Some(&p), update_cmd(req)?).await?;
        Ok(done.reply(&ctx, |sa| pb::UpdateServiceAccountResponse {
            service_account: Some(sa_pb(&sa)),
        }))
    }

    async fn delete_service_account(
        &self,
        request: Request<pb::DeleteServiceAccountRequest>,
    ) -> Result<Response<pb::DeleteServiceAccountResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::DeleteServiceAccountRequest { name, etag } = req;
        let cmd = Delete {
            id: account_id("name", &name)?,
            etag,
        };
        let done = self.state.execute(&ctx, Some(&p), cmd).await?;
        Ok(done.reply(&ctx, |()| pb::DeleteServiceAccountResponse {}))
    }

    async fn create_service_account_key(
        &self,
        request: Request<pb::CreateServiceAccountKeyRequest>,
    ) -> Result<Response<pb::CreateServiceAccountKeyResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let done = self
            .state
            .execute(&ctx, Some(&p), create_key_cmd(req)?)
            .await?;
        Ok(
            done.reply(&ctx, |(key, secret)| pb::CreateServiceAccountKeyResponse {
                key: Some(key_pb(&key)),
                secret,
            }),
        )
    }

    async fn list_service_account_keys(
        &self,
        request: Request<pb::ListServiceAccountKeysRequest>,
    ) -> Result<Response<pb::ListServiceAccountKeysResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::ListServiceAccountKeysRequest { parent } = req;
        let id = account_id("parent", &parent)?;
        let keys = self
            .state
            .query(&ctx, &p, move |cx, conn| uc::keys(cx, conn, &id))
            .await?;
        let keys = keys.iter().map(key_pb).collect();
        Ok(reply(
            pb::ListServiceAccountKeysResponse { keys },
            &ctx,
            None,
        ))
    }

    async fn rotate_service_account_key(
        &self,
        request: Request<pb::RotateServiceAccountKeyRequest>,
    ) -> Result<Response<pb::RotateServiceAccountKeyResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::RotateServiceAccountKeyRequest { name, grace_period } = req;
        let cmd = retire_cmd(&name, Some(grace(grace_period.as_ref())?))?;
        let done = self.state.execute(&ctx, Some(&p), cmd).await?;
        let (old, fresh) = done.value;
        let (key, secret) =
            fresh.ok_or_else(|| ApiError::Internal("rotation made no key".into()))?;
        let msg = pb::RotateServiceAccountKeyResponse {
            key: Some(key_pb(&key)),
            secret,
            previous_key: Some(key_pb(&old)),
        };
        Ok(reply(msg, &ctx, done.revision))
    }

    async fn revoke_service_account_key(
        &self,
        request: Request<pb::RevokeServiceAccountKeyRequest>,
    ) -> Result<Response<pb::RevokeServiceAccountKeyResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::RevokeServiceAccountKeyRequest { name } = req;
        let done = self
            .state
            .execute(&ctx, Some(&p), retire_cmd(&name, None)?)
            .await?;
        Ok(
            done.reply(&ctx, |(old, _)| pb::RevokeServiceAccountKeyResponse {
                key: Some(key_pb(&old)),
            }),
        )
    }
}
