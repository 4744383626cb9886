//! UserService: the adapter over [`fluxgate_core::users`] (the user life cycle of SPEC
//! section 4).

use std::sync::Arc;

use fluxgate_core::users::{self, After, Create, Filter, Lifecycle, Step, Update, User};
use fluxgate_domain::{DisplayName, Email, Role, Username, Violations};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::user_service_server::UserService;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use super::reply;
use crate::auth::RequestCtx;
use crate::convert::{
    PageToken, checked, mask_paths, page_size, parse_user_name, role_from_proto, user_to_proto,
    when,
};
use crate::directory::Principal;
use crate::error::{ApiError, ApiResult};
use crate::runner::Done;
use crate::state::AppState;

#[derive(Debug, Clone)]
pub struct UserSvc {
    pub state: Arc<AppState>,
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

/// A role field that must name a role (`what` says when).
fn required_role(v: &mut Violations, field: &str, role: i32, what: &str) -> Option<Role> {
    match v.check(field, role_from_proto(role)) {
        Some(None) => {
            v.add(field, what);
            None
        }
        other => other.flatten(),
    }
}

/// Names the username or email of request `i` that an earlier request of the batch has.
fn repeats(
    v: &mut Violations,
    seen: &mut std::collections::HashMap<(&'static str, String), usize>,
    i: usize,
    c: &Checked,
) {
    let keys = [
        (
            "username",
            c.username.as_ref().map(|u| u.as_str().to_owned()),
        ),
        ("email", c.email.as_ref().map(|e| e.as_str().to_owned())),
    ];
    for (field, key) in keys {
        let Some(key) = key else { continue };
        if let Some(first) = seen.insert((field, key), i) {
            v.add(
                format!("requests[{i}].user.{field}"),
                format!("repeats requests[{first}]"),
            );
        }
    }
}

/// A CreateUser request that passed validation, its password not hashed yet.
struct Checked {
    username: Option<Username>,
    email: Option<Email>,
    display_name: Option<DisplayName>,
    role: Option<Role>,
    must_change_password: bool,
    initial_password: String,
}

impl UserSvc {
    /// A new user's password against the policy in force; without one the user chooses a
    /// password through a registration link, so it cannot be required to change.
    fn check_initial_password(
        &self,
        v: &mut Violations,
        at: &str,
        u: &pb::User,
        (pw, change): (&str, bool),
    ) {
        if !pw.is_empty() {
            let policy = self.state.password_policy();
            v.check(
                &format!("{at}initial_password"),
                policy.check(pw, &[&u.username, &u.email]),
            );
        } else if change {
            let why = "needs an initial_password (a user without one chooses their own)";
            v.add(format!("{at}require_password_change"), why);
        }
    }

    /// Validates one CreateUser request, its fields named under `at` (`requests[3].`, say).
    fn check_create(&self, v: &mut Violations, at: &str, req: pb::CreateUserRequest) -> Checked {
        let pb::CreateUserRequest {
            user,
            initial_password,
            require_password_change,
        } = req;
        let Some(u) = user else {
            v.add(format!("{at}user"), "is required");
            return Checked {
                username: None,
                email: None,
                display_name: None,
                role: None,
                must_change_password: false,
                initial_password: String::new(),
            };
        };
        let f = |name: &str| format!("{at}user.{name}");
        let username = v.check(&f("username"), Username::parse(&u.username));
        let email = v.check(&f("email"), Email::parse(&u.email));
        let display_name = v.check(&f("display_name"), DisplayName::parse(&u.display_name));
        let role = required_role(v, &f("role"), u.role, "is required");
        let password = (initial_password.as_str(), require_password_change);
        self.check_initial_password(v, at, &u, password);
        Checked {
            username,
            email,
            display_name,
            role,
            must_change_password: require_password_change,
            initial_password,
        }
    }

    /// The command for a checked request: its password, if any, hashed.
    async fn command(&self, c: Checked) -> ApiResult<Create> {
        let password_hash = match c.initial_password.is_empty() {
            false => Some(self.state.hasher.hash(c.initial_password).await?),
            true => None,
        };
        Ok(Create {
            username: checked(c.username)?,
            email: checked(c.email)?,
            display_name: checked(c.display_name)?,
            role: checked(c.role)?,
            must_change_password: c.must_change_password,
            password_hash,
        })
    }

    async fn create(
        &self,
        ctx: &RequestCtx,
        p: &Principal,
        req: pb::CreateUserRequest,
    ) -> ApiResult<Done<(User, Option<users::IssuedLink>)>> {
        self.state.judge(ctx, p, users::may_create)?;
        let mut v = Violations::new();
        let c = self.check_create(&mut v, "", req);
        v.finish()?;
        let cmd = self.command(c).await?;
        self.state.execute(ctx, Some(p), cmd).await
    }

    /// Validates a batch whole (each request, and no username or email twice), hashes the
    /// passwords it carries, and creates every user in one transaction.
    async fn create_many(
        &self,
        ctx: &RequestCtx,
        p: &Principal,
        requests: Vec<pb::CreateUserRequest>,
    ) -> ApiResult<Done<Vec<(User, Option<users::IssuedLink>)>>> {
        self.state.judge(ctx, p, users::may_create)?;
        if requests.is_empty() || requests.len() > users::MAX_BATCH {
            let max = users::MAX_BATCH;
            return Err(ApiError::invalid(
                "requests",
                format!("1 to {max} users a batch"),
            ));
        }
        let mut v = Violations::new();
        let mut seen = std::collections::HashMap::new();
        let mut batch = Vec::with_capacity(requests.len());
        for (i, req) in requests.into_iter().enumerate() {
            let c = self.check_create(&mut v, &format!("requests[{i}]."), req);
            repeats(&mut v, &mut seen, i, &c);
            batch.push(c);
        }
        v.finish()?;
        let mut cmds = Vec::with_capacity(batch.len());
        for c in batch {
            cmds.push(self.command(c).await?);
        }
        let cmd = users::CreateMany(cmds);
        self.state.execute(ctx, Some(p), cmd).await
    }

    async fn list(
        &self,
        ctx: &RequestCtx,
        p: &Principal,
        req: pb::ListUsersRequest,
    ) -> ApiResult<pb::ListUsersResponse> {
        self.state.judge(ctx, p, users::may_list)?;
        let (filter, size, token) = list_filter(req)?;
        let limit = page_size(size)?;
        let after = list_after(&token, &filter)?;
        let f = store_filter(&filter);
        let mut page = self
            .state
            .query(ctx, p, move |cx, conn| {
                users::list(cx, conn, &f, after.as_ref(), limit + 1)
            })
            .await?;
        let more = page.len() as i64 > limit;
        page.truncate(limit as usize);
        let next_page_token = match (more, page.last()) {
            (true, Some(last)) => {
                let after = match filter.by_last_sign_in {
                    true => format!("{}:{}", last.last_login_at.unwrap_or(-1), last.username),
                    false => last.username.clone(),
                };
                PageToken { after, filter }.encode()
            }
            _ => String::new(),
        };
        let users = page.iter().map(user_to_proto).collect();
        Ok(pb::ListUsersResponse {
            users,
            next_page_token,
        })
    }
}

/// A listing's filters (bound into its page tokens), page size and token.
fn list_filter(req: pb::ListUsersRequest) -> ApiResult<(ListFilter, i32, String)> {
    let pb::ListUsersRequest {
        page_size,
        page_token,
        role,
        active,
        query,
        signed_in_before,
        never_signed_in,
        order_by,
    } = req;
    let mut v = Violations::new();
    let role = v.check("role", role_from_proto(role)).flatten();
    if query.chars().count() > 200 || query.chars().any(char::is_control) {
        v.add(
            "query",
            "must be at most 200 characters, without control characters",
        );
    }
    let signed_in_before = crate::convert::micros(&mut v, "signed_in_before", &signed_in_before);
    let by_last_sign_in = match order_by.as_str() {
        "" | "username" => false,
        "last_login_time" => true,
        _ => {
            v.add("order_by", "must be username or last_login_time");
            false
        }
    };
    v.finish()?;
    let filter = ListFilter {
        role,
        active,
        query: (!query.is_empty()).then(|| query.to_lowercase()),
        signed_in_before,
        never_signed_in,
        by_last_sign_in,
    };
    Ok((filter, page_size, page_token))
}

fn list_after(token: &str, filter: &ListFilter) -> ApiResult<Option<After>> {
    let bad = || ApiError::invalid("page_token", "is not a page token issued by this service");
    Ok(match PageToken::decode(token, filter)? {
        None => None,
        Some(a) if !filter.by_last_sign_in => Some(After::Username(a)),
        Some(a) => Some(
            a.split_once(':')
                .and_then(|(t, u)| Some(After::SignIn(t.parse().ok()?, u.to_owned())))
                .ok_or_else(bad)?,
        ),
    })
}

fn store_filter(f: &ListFilter) -> Filter {
    Filter {
        role: f.role,
        active: f.active,
        query: f.query.clone(),
        signed_in_before: f.signed_in_before,
        never_signed_in: f.never_signed_in,
        by_last_sign_in: f.by_last_sign_in,
    }
}

fn update_cmd(req: pb::UpdateUserRequest) -> ApiResult<Update> {
    let pb::UpdateUserRequest {
        user,
        update_mask,
        reason,
    } = req;
    let u = user.ok_or_else(|| ApiError::invalid("user", "is required"))?;
    let paths = mask_paths(update_mask.as_ref(), &["email", "display_name", "role"])?;
    let has = |f: &str| paths.iter().any(|p| p == f);
    let mut v = Violations::new();
    let reason = v.check("", crate::convert::description("reason", &reason));
    let email = when(has("email"), || {
        v.check("user.email", Email::parse(&u.email))
    });
    let display_name = when(has("display_name"), || {
        v.check("user.display_name", DisplayName::parse(&u.display_name))
    });
    let role = when(has("role"), || {
        required_role(
            &mut v,
            "user.role",
            u.role,
            "is required when the mask names it",
        )
    });
    if u.name.is_empty() {
        v.add("user.name", "is required");
    }
    v.finish()?;
    Ok(Update {
        user: parse_user_name("user.name", &u.name)?,
        etag: u.etag,
        email,
        display_name,
        role,
        reason: reason.map(|r| r.as_str().to_owned()).unwrap_or_default(),
    })
}

fn lifecycle_cmd(name: &str, etag: String, step: Step) -> ApiResult<Lifecycle> {
    if name.is_empty() {
        return Err(ApiError::invalid("name", "is required"));
    }
    let user = parse_user_name("name", name)?;
    Ok(Lifecycle { user, etag, step })
}

fn user_or_internal(u: Option<User>) -> ApiResult<pb::User> {
    u.map(|u| user_to_proto(&u))
        .ok_or_else(|| ApiError::Internal("user vanished".into()))
}

#[tonic::async_trait]
impl UserService for UserSvc {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let done = self.create(&ctx, &p, req).await?;
        Ok(done.reply(&ctx, |(user, link)| pb::CreateUserResponse {
            user: Some(user_to_proto(&user)),
            registration_link: link.as_ref().map(crate::convert::registration_link),
        }))
    }

    async fn batch_create_users(
        &self,
        request: Request<pb::BatchCreateUsersRequest>,
    ) -> Result<Response<pb::BatchCreateUsersResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::BatchCreateUsersRequest { requests } = req;
        let done = self.create_many(&ctx, &p, requests).await?;
        Ok(done.reply(&ctx, |created| pb::BatchCreateUsersResponse {
            results: created
                .iter()
                .map(|(user, link)| pb::CreateUserResponse {
                    user: Some(user_to_proto(user)),
                    registration_link: link.as_ref().map(crate::convert::registration_link),
                })
                .collect(),
        }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::GetUserRequest { name } = req;
        if name.is_empty() {
            return Err(ApiError::invalid("name", "is required").into());
        }
        let r = parse_user_name("name", &name)?;
        let user = self
            .state
            .query(&ctx, &p, move |cx, conn| users::get(cx, conn, &r))
            .await?;
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
        let (ctx, p, req) = authed!(self, request);
        let msg = self.list(&ctx, &p, req).await?;
        Ok(reply(msg, &ctx, None))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let done = self.state.execute(&ctx, Some(&p), update_cmd(req)?).await?;
        Ok(done.reply(&ctx, |u| pb::UpdateUserResponse {
            user: Some(user_to_proto(&u)),
        }))
    }

    async fn deactivate_user(
        &self,
        request: Request<pb::DeactivateUserRequest>,
    ) -> Result<Response<pb::DeactivateUserResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::DeactivateUserRequest { name, etag } = req;
        let cmd = lifecycle_cmd(&name, etag, Step::Deactivate)?;
        let done = self.state.execute(&ctx, Some(&p), cmd).await?;
        let user = Some(user_or_internal(done.value)?);
        Ok(reply(
            pb::DeactivateUserResponse { user },
            &ctx,
            done.revision,
        ))
    }

    async fn reactivate_user(
        &self,
        request: Request<pb::ReactivateUserRequest>,
    ) -> Result<Response<pb::ReactivateUserResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::ReactivateUserRequest { name, etag } = req;
        let cmd = lifecycle_cmd(&name, etag, Step::Reactivate)?;
        let done = self.state.execute(&ctx, Some(&p), cmd).await?;
        let user = Some(user_or_internal(done.value)?);
        Ok(reply(
            pb::ReactivateUserResponse { user },
            &ctx,
            done.revision,
        ))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::DeleteUserRequest { name, etag } = req;
        let cmd = lifecycle_cmd(&name, etag, Step::Delete)?;
        let done = self.state.execute(&ctx, Some(&p), cmd).await?;
        Ok(done.reply(&ctx, |_| pb::DeleteUserResponse {}))
    }
}
