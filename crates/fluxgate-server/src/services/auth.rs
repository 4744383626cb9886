//! AuthService: login, refresh, logout, change password, who am I.

use std::sync::Arc;

use fluxgate_authz::{Action, Target};
use fluxgate_domain::Violations;
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::auth_service_server::AuthService;
use fluxgate_store::changes::EntityKind;
use fluxgate_store::{audit, sessions, throttle, users};
use tonic::{Request, Response, Status};

use super::{add_refresh, open_session, reply};
use crate::auth::RequestCtx;
use crate::convert::user_to_proto;
use crate::directory::Principal;
use crate::error::{ApiError, ApiResult};
use crate::metrics::LoginOutcome;
use crate::state::AppState;
use crate::tokens::token_hash;
use fluxgate_core::logins::{LOCKED_NOW, failed_login_subject};

/// The one answer to every failed login, whatever the cause.
const BAD_CREDENTIALS: &str = "invalid username or password";
const LOCKED: &str = "too many failed login attempts: try again later";

#[derive(Debug, Clone)]
pub struct AuthSvc {
    pub state: Arc<AppState>,
}

fn throttle_subject(user: Option<&users::User>, login: &str) -> String {
    match user {
        Some(u) => format!("user:{}", u.id),
        None => format!("name:{}", login.to_lowercase()),
    }
}

/// What a failed attempt should record.
enum Failure {
    BadCredentials,
    Locked,
}

/// Records the counted refusals (see [`fluxgate_core::logins::RefusedLogins`]): one audit
/// event per subject.
pub async fn flush_refused_logins(state: &AppState) -> ApiResult<usize> {
    let all = state.refused_logins.take_all();
    if all.0.is_empty() {
        return Ok(0);
    }
    let done = state
        .execute_from(fluxgate_core::Origin::default(), None, all)
        .await?;
    Ok(done.value)
}

impl AuthSvc {
    async fn login(
        &self,
        ctx: RequestCtx,
        req: pb::LoginRequest,
    ) -> ApiResult<Response<pb::LoginResponse>> {
        let mut v = Violations::new();
        if req.username.is_empty() {
            v.add("username", "is required");
        } else if req.username.len() > 254 || req.username.chars().any(char::is_control) {
            v.add("username", "is not a username or email address");
        }
        if req.password.is_empty() {
            v.add("password", "is required");
        } else if req.password.len() > fluxgate_domain::PASSWORD_HARD_MAX as usize {
            v.add("password", "is too long");
        }
        v.finish()?;
        let st = &self.state;
        let normalized = fluxgate_domain::normalize_login(&req.username);
        let login = normalized.clone();
        let (user, throttle_state) = st
            .db
            .read(move |conn| {
                let user = users::find_by_login(conn, &login)?;
                let t = throttle::get(conn, &throttle_subject(user.as_ref(), &login))?;
                Ok((user, t))
            })
            .await?;
        let subject = throttle_subject(user.as_ref(), &normalized);
        let now = fluxgate_store::now_micros();
        let locked = throttle_state
            .as_ref()
            .and_then(|t| t.locked_until)
            .is_some_and(|until| until > now);
        // Attempts on a locked account cost no hashing; recording each one would let a flood
        // turn into one write per request. One audit event per second per account is kept.
        let recorded_recently = throttle_state
            .as_ref()
            .is_some_and(|t| now - t.updated_at < 1_000_000);

        let verified = if locked {
            None
        } else {
            let phc = user.as_ref().and_then(|u| u.password_hash.clone());
            Some(st.hasher.verify(req.password.clone(), phc).await?)
        };
        let ok_user = match (&user, verified) {
            (Some(u), Some(v)) if v.ok && u.active => Some((u.clone(), v.needs_rehash)),
            _ => None,
        };

        let Some((u, needs_rehash)) = ok_user else {
            let failure = if locked {
                Failure::Locked
            } else {
                Failure::BadCredentials
            };
            st.metrics.login(if locked {
                LoginOutcome::Locked
            } else {
                LoginOutcome::Failure
            });
            if locked && recorded_recently {
                let (target, shown) = failed_login_subject(
                    user.as_ref().map(|u| (u.id, u.username.as_str())),
                    &req.username,
                );
                st.refused_logins.add(
                    subject,
                    target,
                    shown,
                    now,
                    ctx.peer_ip().map(|a| a.to_string()),
                );
            } else {
                self.record_failure(&ctx, user.as_ref(), &req.username, subject, failure)
                    .await?;
            }
            return Err(if locked {
                ApiError::ResourceExhausted(LOCKED.into())
            } else {
                ApiError::Unauthenticated(BAD_CREDENTIALS.into())
            });
        };

        let new_hash = if needs_rehash {
            Some(st.hasher.hash(req.password).await?)
        } else {
            None
        };
        let refresh_ttl = st
            .directory
            .settings()
            .settings
            .token_policy
            .refresh_token_ttl_secs;
        let actor = Principal {
            id: fluxgate_domain::PrincipalId::User(u.id),
            session_id: None,
            key_id: None,
            name: u.username.clone(),
            role: u.role,
            active: u.active,
            must_change_password: u.must_change_password,
        };
        let uid = u.id;
        let verified_hash = u.password_hash.clone();
        let ctx2 = ctx.clone();
        let committed = st
            .db
            .write(move |tx| {
                // Re-check under the write lock what the password check saw: a lock set by
                // racing failures, a password changed or an account deactivated meanwhile.
                if throttle::get(tx.conn, &subject)?
                    .and_then(|t| t.locked_until)
                    .is_some_and(|until| until > tx.now)
                {
                    return Err(ApiError::ResourceExhausted(LOCKED.into()));
                }
                let current = users::find(tx.conn, uid)?;
                if !current
                    .as_ref()
                    .is_some_and(|c| c.active && c.password_hash == verified_hash)
                {
                    return Err(ApiError::Unauthenticated(BAD_CREDENTIALS.into()));
                }
                throttle::clear(tx.conn, &subject)?;
                if let Some(h) = new_hash {
                    users::set_password_hash(tx.conn, uid, &h)?;
                }
                users::touch_login(tx.conn, uid, tx.now)?;
                let issued = open_session(tx, uid, refresh_ttl)?;
                let mut e = ctx2.event(
                    Some(&actor),
                    "auth.login",
                    "user",
                    Some(format!("users/{}", uid)),
                );
                e.detail = Some(format!("session {}", issued.session_id));
                audit::append(tx.conn, e, tx.now)?;
                let user = users::find(tx.conn, uid)?
                    .ok_or_else(|| ApiError::Internal("user vanished".into()))?;
                Ok((issued, user))
            })
            .await?;
        st.directory.settle().await;
        let (issued, user) = committed.value;
        st.metrics.login(LoginOutcome::Success);
        tracing::info!(user = %user.username, session = %issued.session_id, "login");
        let tokens = st.session_tokens(uid, &issued)?;
        Ok(reply(
            pb::LoginResponse {
                tokens: Some(tokens),
                user: Some(user_to_proto(&user)),
            },
            &ctx,
            committed.revision,
        ))
    }

    async fn record_failure(
        &self,
        ctx: &RequestCtx,
        user: Option<&users::User>,
        login: &str,
        subject: String,
        failure: Failure,
    ) -> ApiResult<()> {
        let lockout = self
            .state
            .directory
            .settings()
            .settings
            .lockout_policy
            .clone();
        let (target, shown) =
            failed_login_subject(user.map(|u| (u.id, u.username.as_str())), login);
        let mut e = ctx.event(None, "auth.login", "user", Some(target));
        e.outcome = "failure".into();
        let earlier = self
            .state
            .refused_logins
            .take(&subject)
            .map(|r| {
                format!(
                    "; {} earlier attempt(s) refused since {} µs",
                    r.count, r.first_at
                )
            })
            .unwrap_or_default();
        e.detail = Some(match failure {
            Failure::Locked => format!("locked out: {shown}{earlier}"),
            Failure::BadCredentials => format!("bad credentials: {shown}"),
        });
        let locked_now = self
            .state
            .db
            .write(move |tx| {
                let mut locked_now = false;
                if matches!(failure, Failure::Locked) {
                    throttle::touch(tx.conn, &subject, tx.now)?;
                }
                if matches!(failure, Failure::BadCredentials) {
                    let t = throttle::record_failure(
                        tx.conn,
                        &subject,
                        lockout.max_failed_attempts,
                        (lockout.lockout_duration_secs as i64) * 1_000_000,
                        tx.now,
                    )?;
                    if t.locked_until.is_some() {
                        locked_now = true;
                        e.detail = Some(format!("{}{LOCKED_NOW}", e.detail.unwrap_or_default()));
                    }
                }
                audit::append(tx.conn, e, tx.now)?;
                Ok(locked_now)
            })
            .await?
            .value;
        if locked_now {
            self.state.metrics.lockout();
        }
        Ok(())
    }

    async fn refresh(
        &self,
        ctx: RequestCtx,
        req: pb::RefreshSessionRequest,
    ) -> ApiResult<Response<pb::RefreshSessionResponse>> {
        if req.refresh_token.is_empty() {
            return Err(ApiError::invalid("refresh_token", "is required"));
        }
        if req.refresh_token.len() > 256 || !req.refresh_token.is_ascii() {
            return Err(ApiError::invalid("refresh_token", "is not a refresh token"));
        }
        let st = &self.state;
        let hash = token_hash(&req.refresh_token);
        let grace_micros = (st.config.auth.refresh_reuse_grace_ms as i64) * 1_000;
        let refresh_ttl = st
            .directory
            .settings()
            .settings
            .token_policy
            .refresh_token_ttl_secs;
        let ctx2 = ctx.clone();
        let committed = st
            .db
            .write(move |tx| {
                let Some(old) = sessions::find_refresh(tx.conn, &hash)? else {
                    return Ok(None);
                };
                let sid = old
                    .session_id
                    .parse()
                    .map_err(|_| ApiError::Internal("bad session id".into()))?;
                let Some(session) = sessions::find(tx.conn, sid)? else {
                    return Ok(None);
                };
                let user = users::find(tx.conn, session.user_id)?;
                // A token rotated a moment ago, presented again: the same client sent one
                // refresh twice at once (RFC 9700 allows a short grace). The late call gets
                // tokens of its own for the same session, and the winner's keep working.
                let racing = old
                    .used_at
                    .is_some_and(|used| tx.now - used <= grace_micros && grace_micros > 0);
                if old.used_at.is_some() && !racing {
                    // A rotated token presented again: a copy was stolen. End the session.
                    if sessions::revoke(tx.conn, sid, "refresh_token_reuse", tx.now)? {
                        tx.changed(EntityKind::Session, sid.to_string());
                    }
                    let mut e = ctx2.event(
                        None,
                        "auth.refresh_token_reuse",
                        "session",
                        Some(format!("sessions/{sid}")),
                    );
                    e.actor_id = Some(format!("users/{}", session.user_id));
                    e.actor_name = user.as_ref().map(|u| u.username.clone());
                    e.actor_role = user.as_ref().map(|u| u.role.as_str().to_owned());
                    e.outcome = "denied".into();
                    e.detail =
                        Some("a used refresh token was presented again; session revoked".into());
                    audit::append(tx.conn, e, tx.now)?;
                    return Ok(None);
                }
                let Some(user) = user.filter(|u| u.active) else {
                    return Ok(None);
                };
                if !session.is_live(tx.now) || old.expires_at <= tx.now {
                    return Ok(None);
                }
                if !racing {
                    sessions::mark_refresh_used(tx.conn, &hash, tx.now)?;
                }
                let expires_at = tx.now + (refresh_ttl as i64) * 1_000_000;
                sessions::extend(tx.conn, sid, expires_at)?;
                users::touch_seen(tx.conn, user.id, tx.now)?;
                let issued = add_refresh(tx, sid, expires_at)?;
                tx.changed(EntityKind::Session, sid.to_string());
                let mut e = ctx2.event(
                    None,
                    "auth.refresh",
                    "session",
                    Some(format!("sessions/{sid}")),
                );
                if racing {
                    e.detail = Some(
                        "a refresh token rotated moments ago, presented again within the grace"
                            .into(),
                    );
                }
                e.actor_id = Some(format!("users/{}", user.id));
                e.actor_name = Some(user.username.clone());
                e.actor_role = Some(user.role.as_str().to_owned());
                audit::append(tx.conn, e, tx.now)?;
                Ok(Some((issued, user.id)))
            })
            .await?;
        st.directory.settle().await;
        let Some((issued, uid)) = committed.value else {
            return Err(ApiError::Unauthenticated(
                "refresh token is invalid, expired, already used or its session has ended".into(),
            ));
        };
        let tokens = st.session_tokens(uid, &issued)?;
        Ok(reply(
            pb::RefreshSessionResponse {
                tokens: Some(tokens),
            },
            &ctx,
            committed.revision,
        ))
    }

    async fn logout(
        &self,
        ctx: RequestCtx,
        p: Principal,
    ) -> ApiResult<Response<pb::LogoutResponse>> {
        let st = &self.state;
        let (uid, sid) = user_session(&p)?;
        st.authorize(&p, Action::ManageOwnSession, Target::User(uid))?;
        let ctx2 = ctx.clone();
        let committed = st
            .db
            .write(move |tx| {
                sessions::revoke(tx.conn, sid, "logout", tx.now)?;
                tx.changed(EntityKind::Session, sid.to_string());
                let e = ctx2.event(
                    Some(&p),
                    "auth.logout",
                    "session",
                    Some(format!("sessions/{sid}")),
                );
                audit::append(tx.conn, e, tx.now)?;
                Ok(())
            })
            .await?;
        st.directory.settle().await;
        Ok(reply(pb::LogoutResponse {}, &ctx, committed.revision))
    }

    async fn change_password(
        &self,
        ctx: RequestCtx,
        p: Principal,
        req: pb::ChangePasswordRequest,
    ) -> ApiResult<Response<pb::ChangePasswordResponse>> {
        let st = &self.state;
        let (uid, _) = user_session(&p)?;
        st.authorize(&p, Action::ManageOwnSession, Target::User(uid))?;
        let mut v = Violations::new();
        if req.current_password.is_empty() {
            v.add("current_password", "is required");
        } else if req.current_password.len() > fluxgate_domain::PASSWORD_HARD_MAX as usize {
            v.add("current_password", "is too long");
        }
        if req.new_password.is_empty() {
            v.add("new_password", "is required");
        }
        v.finish()?;
        let user = st
            .db
            .read(move |conn| Ok(users::find(conn, uid)?))
            .await?
            .ok_or_else(ApiError::unauthenticated)?;
        let policy = st.directory.settings().settings.password_policy.clone();
        let mut v = Violations::new();
        v.check(
            "new_password",
            policy.check(&req.new_password, &[&user.username, &user.email]),
        );
        if req.new_password == req.current_password {
            v.add("new_password", "must differ from the current password");
        }
        v.finish()?;
        // The current password is a credential: guessing it is bounded by the same lockout.
        let subject = throttle_subject(Some(&user), &user.username);
        let probe = subject.clone();
        let locked = st
            .db
            .read(move |conn| Ok(throttle::get(conn, &probe)?))
            .await?
            .and_then(|t| t.locked_until)
            .is_some_and(|until| until > fluxgate_store::now_micros());
        if locked {
            return Err(ApiError::ResourceExhausted(LOCKED.into()));
        }
        let verified = st
            .hasher
            .verify(req.current_password.clone(), user.password_hash.clone())
            .await?;
        if !verified.ok {
            self.record_failure(
                &ctx,
                Some(&user),
                &user.username,
                subject,
                Failure::BadCredentials,
            )
            .await?;
            return Err(ApiError::invalid(
                "current_password",
                "is not the current password",
            ));
        }
        let new_hash = st.hasher.hash(req.new_password).await?;
        let verified_hash = user.password_hash.clone();
        let refresh_ttl = st
            .directory
            .settings()
            .settings
            .token_policy
            .refresh_token_ttl_secs;
        let ctx2 = ctx.clone();
        let committed = st
            .db
            .write(move |tx| {
                let mut u = users::find(tx.conn, uid)?.ok_or_else(ApiError::unauthenticated)?;
                if u.password_hash != verified_hash {
                    return Err(ApiError::Aborted(
                        "the password changed meanwhile: log in again".into(),
                    ));
                }
                u.password_hash = Some(new_hash);
                u.must_change_password = false;
                users::update(tx.conn, &u, tx.now)?;
                let revoked = sessions::revoke_all(tx.conn, uid, "password_changed", tx.now)?;
                tx.changed(EntityKind::User, uid.to_string());
                let issued = open_session(tx, uid, refresh_ttl)?;
                let mut e = ctx2.event(
                    Some(&p),
                    "user.password_changed",
                    "user",
                    Some(format!("users/{uid}")),
                );
                e.detail = Some(format!("{revoked} session(s) revoked"));
                audit::append(tx.conn, e, tx.now)?;
                let u = users::find(tx.conn, uid)?.ok_or_else(ApiError::unauthenticated)?;
                Ok((issued, u))
            })
            .await?;
        st.directory.settle().await;
        let (issued, user) = committed.value;
        let tokens = st.session_tokens(uid, &issued)?;
        Ok(reply(
            pb::ChangePasswordResponse {
                tokens: Some(tokens),
                user: Some(user_to_proto(&user)),
            },
            &ctx,
            committed.revision,
        ))
    }

    async fn who_am_i(
        &self,
        ctx: RequestCtx,
        p: Principal,
    ) -> ApiResult<Response<pb::WhoAmIResponse>> {
        let st = &self.state;
        let target = p.user_id().map_or(Target::Org, Target::User);
        st.authorize(&p, Action::ManageOwnSession, target)?;
        let user = match p.user_id() {
            Some(uid) => Some(
                st.db
                    .read(move |conn| Ok(users::find(conn, uid)?))
                    .await?
                    .ok_or_else(ApiError::unauthenticated)?,
            ),
            None => None,
        };
        Ok(reply(
            pb::WhoAmIResponse {
                principal: p.id.to_string(),
                role: crate::convert::role_to_proto(p.role) as i32,
                session_id: p.session_id.map(|s| s.to_string()).unwrap_or_default(),
                user: user.as_ref().map(user_to_proto),
            },
            &ctx,
            None,
        ))
    }
}

/// The user and session of a caller that must be a logged-in user.
fn user_session(p: &Principal) -> ApiResult<(fluxgate_domain::UserId, fluxgate_domain::SessionId)> {
    match (p.user_id(), p.session_id) {
        (Some(u), Some(s)) => Ok((u, s)),
        _ => Err(ApiError::FailedPrecondition(
            "only users logged in with a session can do this; service accounts use API keys".into(),
        )),
    }
}

#[tonic::async_trait]
impl AuthService for AuthSvc {
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        Ok(AuthSvc::login(self, ctx, request.into_inner()).await?)
    }

    async fn refresh_session(
        &self,
        request: Request<pb::RefreshSessionRequest>,
    ) -> Result<Response<pb::RefreshSessionResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        Ok(self.refresh(ctx, request.into_inner()).await?)
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        let p = self.state.authenticate(&request, &ctx).await?;
        Ok(AuthSvc::logout(self, ctx, p).await?)
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        let p = self.state.authenticate(&request, &ctx).await?;
        Ok(AuthSvc::change_password(self, ctx, p, request.into_inner()).await?)
    }

    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        let p = self.state.authenticate(&request, &ctx).await?;
        Ok(AuthSvc::who_am_i(self, ctx, p).await?)
    }
}
