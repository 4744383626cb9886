//! UserService: the user lifecycle of SPEC section 4.

use std::sync::Arc;

use fluxgate_authz::{Action, Target};
use fluxgate_domain::{DisplayName, Email, PrincipalId, Role, UserId, Username, Violations};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::user_service_server::UserService;
use fluxgate_store::changes::EntityKind;
use fluxgate_store::{DbConnection, audit, sessions, users};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use super::reply;
use crate::auth::RequestCtx;
use crate::convert::{
    PageToken, UserRef, check_etag, find_user, mask_paths, page_size, parse_user_name,
    role_from_proto, user_to_proto,
};
use crate::directory::Principal;
use crate::error::{ApiError, ApiResult};
use crate::mail::Template;
use crate::mail::issue_registration;
use crate::runner::cancel_for_departed_submitter;
use crate::state::AppState;

#[derive(Debug, Clone)]
pub struct UserSvc {
    pub state: Arc<AppState>,
}

/// The audit snapshot of a user: what an event's before/after shows (never the hash).
fn snapshot(u: &users::User) -> Option<String> {
    serde_json::to_string(&serde_json::json!({
        "username": u.username,
        "email": u.email,
        "display_name": u.display_name,
        "role": u.role.as_str(),
        "active": u.active,
        "must_change_password": u.must_change_password,
    }))
    .ok()
}

fn ensure_email_free(
    conn: &mut DbConnection,
    email: &str,
    except: Option<UserId>,
) -> ApiResult<()> {
    if let Some(other) = users::find_by_email(conn, email)?
        && Some(other.id) != except
    {
        return Err(ApiError::AlreadyExists(format!(
            "email {email:?} is already in use"
        )));
    }
    Ok(())
}

/// Refuses to leave the organisation without an active Team Admin.
fn ensure_other_admin(conn: &mut DbConnection, u: &users::User, what: &str) -> ApiResult<()> {
    if u.role == Role::TeamAdmin && u.active && users::count_active_admins(conn, Some(u.id))? == 0 {
        return Err(ApiError::FailedPrecondition(format!(
            "cannot {what} the last active Team Admin: promote another user first"
        )));
    }
    Ok(())
}

/// The filters a ListUsers page token is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ListFilter {
    role: Option<Role>,
    active: Option<bool>,
    query: Option<String>,
    signed_in_before: Option<i64>,
    never_signed_in: Option<bool>,
    by_last_sign_in: bool,
}

impl UserSvc {
    /// Resolves the target of a call by name; callers without the right to manage users learn
    /// nothing about other users' existence.
    async fn target(
        &self,
        p: &Principal,
        field: &str,
        name: &str,
        action: Action,
    ) -> ApiResult<users::User> {
        let r = parse_user_name(field, name)?;
        let is_self = match &r {
            UserRef::Id(id) => p.user_id() == Some(*id),
            UserRef::Username(n) => p.user_id().is_some() && *n == p.name,
        };
        if !is_self {
            // Function-level check first, so a Requester cannot probe for usernames.
            self.state.authorize(p, action, Target::Org)?;
        }
        let user = self.state.db.read(move |conn| find_user(conn, &r)).await?;
        self.state.authorize(p, action, Target::User(user.id))?;
        Ok(user)
    }

    async fn create(
        &self,
        ctx: RequestCtx,
        p: Principal,
        req: pb::CreateUserRequest,
    ) -> ApiResult<Response<pb::CreateUserResponse>> {
        let st = &self.state;
        st.authorize(&p, Action::CreateUser, Target::Org)?;
        let mut v = Violations::new();
        let Some(u) = req.user else {
            return Err(ApiError::invalid("user", "is required"));
        };
        let username = v.check("user.username", Username::parse(&u.username));
        let email = v.check("user.email", Email::parse(&u.email));
        let display_name = v.check("user.display_name", DisplayName::parse(&u.display_name));
        let role = match v.check("user.role", role_from_proto(u.role)) {
            Some(None) => {
                v.add("user.role", "is required");
                None
            }
            Some(Some(r)) => Some(r),
            None => None,
        };
        let policy = st.directory.settings().settings.password_policy.clone();
        // Without a password the user chooses one through a registration link.
        let with_password = !req.initial_password.is_empty();
        if with_password {
            v.check(
                "initial_password",
                policy.check(&req.initial_password, &[&u.username, &u.email]),
            );
        } else if req.require_password_change {
            v.add(
                "require_password_change",
                "needs an initial_password (a user without one chooses their own)",
            );
        }
        v.finish()?;
        let (Some(username), Some(email), Some(display_name), Some(role)) =
            (username, email, display_name, role)
        else {
            return Err(ApiError::Internal(
                "validation passed without values".into(),
            ));
        };
        let hash = if with_password {
            Some(st.hasher.hash(req.initial_password).await?)
        } else {
            None
        };
        let must_change = req.require_password_change;
        let (ctx2, state) = (ctx.clone(), st.clone());
        let committed = st
            .db
            .write(move |tx| {
                if users::find_by_username(tx.conn, username.as_str())?.is_some() {
                    return Err(ApiError::AlreadyExists(format!(
                        "username {:?} is already taken",
                        username.as_str()
                    )));
                }
                ensure_email_free(tx.conn, email.as_str(), None)?;
                let id = UserId::generate();
                users::insert(
                    tx.conn,
                    &users::NewUser {
                        id,
                        username: username.as_str(),
                        email: email.as_str(),
                        display_name: display_name.as_str(),
                        role,
                        must_change_password: must_change,
                        password_hash: hash.as_deref(),
                    },
                    tx.now,
                )?;
                tx.changed(EntityKind::User, id.to_string());
                let user = users::find(tx.conn, id)?
                    .ok_or_else(|| ApiError::Internal("user vanished".into()))?;
                let mut e = ctx2.event(
                    Some(&p),
                    "user.created",
                    "user",
                    Some(format!("users/{}", id)),
                );
                e.after_json = snapshot(&user);
                let link = if user.password_hash.is_none() {
                    e.detail = Some("registration link issued".into());
                    Some(issue_registration(
                        &state.mailer,
                        state.config.password_reset.registration_token_ttl_secs,
                        tx,
                        &user,
                    )?)
                } else {
                    if state.config.email.welcome_email {
                        state
                            .mailer
                            .queue(tx.conn, Template::Welcome, &user, &[], tx.now)?;
                    }
                    None
                };
                audit::append(tx.conn, e, tx.now)?;
                Ok((user, link))
            })
            .await?;
        st.mailer.wake();
        st.directory.settle().await;
        let (user, link) = &committed.value;
        Ok(reply(
            pb::CreateUserResponse {
                user: Some(user_to_proto(user)),
                registration_link: link.as_ref().map(crate::convert::registration_link),
            },
            &ctx,
            committed.revision,
        ))
    }

    async fn list(
        &self,
        ctx: RequestCtx,
        p: Principal,
        req: pb::ListUsersRequest,
    ) -> ApiResult<Response<pb::ListUsersResponse>> {
        let st = &self.state;
        st.authorize(&p, Action::ListUsers, Target::Org)?;
        let mut v = Violations::new();
        let role = v.check("role", role_from_proto(req.role)).flatten();
        if req.query.chars().count() > 200 || req.query.chars().any(char::is_control) {
            v.add(
                "query",
                "must be at most 200 characters, without control characters",
            );
        }
        let signed_in_before =
            crate::convert::micros(&mut v, "signed_in_before", &req.signed_in_before);
        let by_last_sign_in = match req.order_by.as_str() {
            "" | "username" => false,
            "last_login_time" => true,
            _ => {
                v.add("order_by", "must be username or last_login_time");
                false
            }
        };
        v.finish()?;
        let limit = page_size(req.page_size)?;
        let filter = ListFilter {
            role,
            active: req.active,
            query: (!req.query.is_empty()).then(|| req.query.to_lowercase()),
            signed_in_before,
            never_signed_in: req.never_signed_in,
            by_last_sign_in,
        };
        let after = match PageToken::decode(&req.page_token, &filter)? {
            None => None,
            Some(a) if !by_last_sign_in => Some(users::After::Username(a)),
            Some(a) => Some(
                a.split_once(':')
                    .and_then(|(t, u)| Some(users::After::SignIn(t.parse().ok()?, u.to_owned())))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "page_token",
                            "is not a page token issued by this service",
                        )
                    })?,
            ),
        };
        let f = filter.clone();
        let mut page = st
            .db
            .read(move |conn| {
                let sf = users::Filter {
                    role: f.role,
                    active: f.active,
                    query: f.query,
                    signed_in_before: f.signed_in_before,
                    never_signed_in: f.never_signed_in,
                    by_last_sign_in: f.by_last_sign_in,
                };
                Ok(users::list(conn, &sf, after.as_ref(), limit + 1)?)
            })
            .await?;
        let more = page.len() as i64 > limit;
        page.truncate(limit as usize);
        let next_page_token = match (more, page.last()) {
            (true, Some(last)) => PageToken {
                after: if by_last_sign_in {
                    format!("{}:{}", last.last_login_at.unwrap_or(-1), last.username)
                } else {
                    last.username.clone()
                },
                filter,
            }
            .encode(),
            _ => String::new(),
        };
        Ok(reply(
            pb::ListUsersResponse {
                users: page.iter().map(user_to_proto).collect(),
                next_page_token,
            },
            &ctx,
            None,
        ))
    }

    async fn update(
        &self,
        ctx: RequestCtx,
        p: Principal,
        req: pb::UpdateUserRequest,
    ) -> ApiResult<Response<pb::UpdateUserResponse>> {
        let st = &self.state;
        let Some(u) = req.user else {
            return Err(ApiError::invalid("user", "is required"));
        };
        let paths = mask_paths(req.update_mask.as_ref(), &["email", "display_name", "role"])?;
        let mut v = Violations::new();
        let reason = v
            .check("", crate::convert::description("reason", &req.reason))
            .map(|r| r.as_str().to_owned())
            .unwrap_or_default();
        let email = if paths.iter().any(|p| p == "email") {
            v.check("user.email", Email::parse(&u.email))
        } else {
            None
        };
        let display_name = if paths.iter().any(|p| p == "display_name") {
            v.check("user.display_name", DisplayName::parse(&u.display_name))
        } else {
            None
        };
        let role = if paths.iter().any(|p| p == "role") {
            match v.check("user.role", role_from_proto(u.role)) {
                Some(None) => {
                    v.add("user.role", "is required when the mask names it");
                    None
                }
                other => other.flatten(),
            }
        } else {
            None
        };
        if u.name.is_empty() {
            v.add("user.name", "is required");
        }
        v.finish()?;
        let target = self
            .target(&p, "user.name", &u.name, Action::UpdateUser)
            .await?;
        if let Some(r) = role
            && r != target.role
        {
            st.authorize(&p, Action::ChangeUserRole, Target::User(target.id))?;
        }
        let etag = u.etag;
        let ctx2 = ctx.clone();
        let id = target.id;
        let committed = st
            .db
            .write(move |tx| {
                let before = users::find(tx.conn, id)?
                    .ok_or_else(|| ApiError::NotFound("no such user".into()))?;
                check_etag(&etag, before.id, before.version)?;
                let mut after = before.clone();
                if let Some(e) = &email {
                    if e.as_str() != before.email {
                        ensure_email_free(tx.conn, e.as_str(), Some(id))?;
                    }
                    after.email = e.as_str().to_owned();
                }
                if let Some(d) = &display_name {
                    after.display_name = d.as_str().to_owned();
                }
                if let Some(r) = role {
                    // The role may have changed since the request was authorised: nobody
                    // changes their own role, whatever it was when they asked.
                    if r != before.role && p.user_id() == Some(before.id) {
                        return Err(ApiError::PermissionDenied(
                            "change_user_role denied: a Team Admin may not change their own role"
                                .into(),
                        ));
                    }
                    if r != Role::TeamAdmin {
                        ensure_other_admin(tx.conn, &before, "demote")?;
                    }
                    after.role = r;
                }
                if after == before {
                    return Ok((before, false));
                }
                users::update(tx.conn, &after, tx.now)?;
                tx.changed(EntityKind::User, id.to_string());
                let mut e = ctx2.event(
                    Some(&p),
                    "user.updated",
                    "user",
                    Some(format!("users/{}", id)),
                );
                e.before_json = snapshot(&before);
                e.after_json = snapshot(&after);
                if before.role != after.role {
                    e.detail = Some(format!("role {} -> {}", before.role, after.role));
                }
                if !reason.is_empty() {
                    e.detail = Some(super::with_reason(
                        e.detail.take().unwrap_or_else(|| "updated".into()),
                        &reason,
                    ));
                }
                audit::append(tx.conn, e, tx.now)?;
                let fresh = users::find(tx.conn, id)?
                    .ok_or_else(|| ApiError::Internal("user vanished".into()))?;
                Ok((fresh, true))
            })
            .await?;
        st.directory.settle().await;
        let (user, _changed) = committed.value;
        Ok(reply(
            pb::UpdateUserResponse {
                user: Some(user_to_proto(&user)),
            },
            &ctx,
            committed.revision,
        ))
    }

    /// Deactivate, reactivate or delete: one shape, three rules.
    async fn lifecycle(
        &self,
        ctx: &RequestCtx,
        p: Principal,
        name: &str,
        etag: String,
        action: Action,
    ) -> ApiResult<(Option<users::User>, Option<i64>)> {
        let st = &self.state;
        if name.is_empty() {
            return Err(ApiError::invalid("name", "is required"));
        }
        let target = self.target(&p, "name", name, action).await?;
        let id = target.id;
        let ctx2 = ctx.clone();
        let snap = st.directory.snapshot();
        let committed = st
            .db
            .write(move |tx| {
                let before = users::find(tx.conn, id)?
                    .ok_or_else(|| ApiError::NotFound("no such user".into()))?;
                check_etag(&etag, before.id, before.version)?;
                let mut after = before.clone();
                let (verb, detail) = match action {
                    Action::DeactivateUser => {
                        if !before.active {
                            return Err(ApiError::FailedPrecondition(
                                "the user is already deactivated".into(),
                            ));
                        }
                        ensure_other_admin(tx.conn, &before, "deactivate")?;
                        after.active = false;
                        users::update(tx.conn, &after, tx.now)?;
                        let n = sessions::revoke_all(tx.conn, id, "deactivated", tx.now)?;
                        let c = cancel_for_departed_submitter(
                            tx,
                            &ctx2,
                            &p,
                            &snap,
                            PrincipalId::User(id),
                            "its submitter was deactivated",
                        )?;
                        (
                            "user.deactivated",
                            Some(format!(
                                "{n} session(s) revoked, {c} open change request(s) cancelled"
                            )),
                        )
                    }
                    Action::ReactivateUser => {
                        if before.active {
                            return Err(ApiError::FailedPrecondition(
                                "the user is already active".into(),
                            ));
                        }
                        after.active = true;
                        users::update(tx.conn, &after, tx.now)?;
                        ("user.reactivated", None)
                    }
                    Action::DeleteUser => {
                        if before.active {
                            return Err(ApiError::FailedPrecondition(
                                "only a deactivated user can be deleted: deactivate first".into(),
                            ));
                        }
                        // Requests left open (deactivated before their cancellation was the rule).
                        cancel_for_departed_submitter(
                            tx,
                            &ctx2,
                            &p,
                            &snap,
                            PrincipalId::User(id),
                            "its submitter was deleted",
                        )?;
                        // Memberships go with the user (they hold no foreign key).
                        for g in fluxgate_store::groups::remove_principal(
                            tx.conn,
                            "user",
                            &id.to_string(),
                        )? {
                            fluxgate_store::groups::touch(tx.conn, &g, tx.now)?;
                            tx.changed(EntityKind::Group, g);
                        }
                        users::delete(tx.conn, id)?;
                        ("user.deleted", None)
                    }
                    other => {
                        return Err(ApiError::Internal(format!(
                            "{other:?} is not a lifecycle action"
                        )));
                    }
                };
                tx.changed(EntityKind::User, id.to_string());
                let mut e = ctx2.event(Some(&p), verb, "user", Some(format!("users/{}", id)));
                e.before_json = snapshot(&before);
                e.after_json = (action != Action::DeleteUser)
                    .then(|| snapshot(&after))
                    .flatten();
                e.detail = detail;
                audit::append(tx.conn, e, tx.now)?;
                Ok(users::find(tx.conn, id)?)
            })
            .await?;
        st.directory.settle().await;
        Ok((committed.value, committed.revision))
    }
}

fn user_or_internal(u: Option<users::User>) -> ApiResult<pb::User> {
    u.map(|u| user_to_proto(&u))
        .ok_or_else(|| ApiError::Internal("user vanished".into()))
}

#[tonic::async_trait]
impl UserService for UserSvc {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        let p = self.state.authenticate(&request, &ctx).await?;
        Ok(self.create(ctx, p, request.into_inner()).await?)
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        let p = self.state.authenticate(&request, &ctx).await?;
        let req = request.into_inner();
        if req.name.is_empty() {
            return Err(ApiError::invalid("name", "is required").into());
        }
        let user = self.target(&p, "name", &req.name, Action::ViewUser).await?;
        Ok(reply(
            pb::GetUserResponse {
                user: Some(user_to_proto(&user)),
            },
            &ctx,
            None,
        ))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        let p = self.state.authenticate(&request, &ctx).await?;
        Ok(self.list(ctx, p, request.into_inner()).await?)
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        let p = self.state.authenticate(&request, &ctx).await?;
        Ok(self.update(ctx, p, request.into_inner()).await?)
    }

    async fn deactivate_user(
        &self,
        request: Request<pb::DeactivateUserRequest>,
    ) -> Result<Response<pb::DeactivateUserResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        let p = self.state.authenticate(&request, &ctx).await?;
        let req = request.into_inner();
        let (u, rev) = self
            .lifecycle(&ctx, p, &req.name, req.etag, Action::DeactivateUser)
            .await?;
        Ok(reply(
            pb::DeactivateUserResponse {
                user: Some(user_or_internal(u)?),
            },
            &ctx,
            rev,
        ))
    }

    async fn reactivate_user(
        &self,
        request: Request<pb::ReactivateUserRequest>,
    ) -> Result<Response<pb::ReactivateUserResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        let p = self.state.authenticate(&request, &ctx).await?;
        let req = request.into_inner();
        let (u, rev) = self
            .lifecycle(&ctx, p, &req.name, req.etag, Action::ReactivateUser)
            .await?;
        Ok(reply(
            pb::ReactivateUserResponse {
                user: Some(user_or_internal(u)?),
            },
            &ctx,
            rev,
        ))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        let p = self.state.authenticate(&request, &ctx).await?;
        let req = request.into_inner();
        let (_, rev) = self
            .lifecycle(&ctx, p, &req.name, req.etag, Action::DeleteUser)
            .await?;
        Ok(reply(pb::DeleteUserResponse {}, &ctx, rev))
    }
}
