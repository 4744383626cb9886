//! PasswordResetService: admin resets, self-service reset links and registration links
//! (SPEC section 5).
//!
//! Link tokens are 256 random bits, stored only as SHA-256, single-use, and superseded by the
//! next token of the same purpose. Every change, its audit event and the email it causes commit
//! in one transaction; the email is delivered afterwards by the mail worker.

use std::sync::Arc;

use fluxgate_authz::{Action, Target};
use fluxgate_domain::{Email, UserId, Violations};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::password_reset_service_server::PasswordResetService;
use fluxgate_store::changes::EntityKind;
use fluxgate_store::user_tokens::{self, Purpose, UserToken};
use fluxgate_store::{DbConnection, Tx, audit, rate_limits, sessions, throttle, users};
use tonic::{Request, Response, Status};

use super::reply;
use crate::auth::RequestCtx;
use crate::bootstrap::temporary_password;
use crate::convert::{check_etag, field, find_user, parse_user_name, user_to_proto};
use crate::directory::Principal;
use crate::error::{ApiError, ApiResult};
use crate::mail::Template;
use crate::state::AppState;
use crate::tokens::{random_token, token_hash};
use fluxgate_core::time::rfc3339;

#[derive(Debug, Clone)]
pub struct PasswordResetSvc {
    pub state: Arc<AppState>,
}

/// Random bytes in a link token (256 bits).
use crate::mail::{TOKEN_BYTES, issue_registration};
/// Characters of a token: base64url of [`TOKEN_BYTES`], unpadded.
const TOKEN_CHARS: usize = 43;
const HOUR_MICROS: i64 = 3_600_000_000;

/// Checks a token's shape and returns its hash. The shape says nothing about whether it exists.
fn parse_token(field: &str, token: &str) -> ApiResult<String> {
    if token.is_empty() {
        return Err(ApiError::invalid(field, "is required"));
    }
    if token.len() != TOKEN_CHARS
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::invalid(
            field,
            "is malformed: copy the whole token from the link",
        ));
    }
    Ok(token_hash(token))
}

/// A token that may be used now for `purpose`, or the precise reason it may not.
fn usable(t: Option<UserToken>, purpose: Purpose, now: i64) -> ApiResult<UserToken> {
    let Some(t) = t else {
        return Err(ApiError::NotFound(
            "the link is not valid (mistyped, or too old to be known): ask for a new one".into(),
        ));
    };
    if t.purpose != purpose {
        return Err(ApiError::FailedPrecondition(match t.purpose {
            Purpose::Registration => "this is a registration link: use CompleteRegistration".into(),
            Purpose::PasswordReset => {
                "this is a password-reset link: use ConfirmPasswordReset".into()
            }
        }));
    }
    if t.used_at.is_some() {
        return Err(ApiError::FailedPrecondition(
            "the link has already been used: ask for a new one".into(),
        ));
    }
    if t.superseded_at.is_some() {
        return Err(ApiError::FailedPrecondition(
            "a newer link has been issued since this one: use the newest link".into(),
        ));
    }
    if t.expires_at <= now {
        return Err(ApiError::FailedPrecondition(format!(
            "the link expired at {}: ask for a new one",
            rfc3339(t.expires_at)
        )));
    }
    Ok(t)
}

/// An audit event whose actor is the user holding the link (who has no session).
fn event_by_user(ctx: &RequestCtx, u: &users::User, action: &str) -> audit::NewEvent {
    let mut e = ctx.event(None, action, "user", Some(format!("users/{}", u.id)));
    e.actor_id = Some(format!("users/{}", u.id));
    e.actor_name = Some(u.username.clone());
    e.actor_role = Some(u.role.as_str().to_owned());
    e
}

/// Sets a password from a link: marks the token used, retires the user's other links of the
/// purpose, revokes every session and lifts any lockout.
fn set_password_from_link(
    tx: &mut Tx<'_>,
    t: &UserToken,
    hash: String,
    reason: &str,
) -> ApiResult<(users::User, usize)> {
    if !user_tokens::mark_used(tx.conn, &t.token_hash, tx.now)? {
        return Err(ApiError::FailedPrecondition(
            "the link has already been used: ask for a new one".into(),
        ));
    }
    user_tokens::supersede(tx.conn, t.user_id, t.purpose, tx.now)?;
    let mut u = active_user(tx.conn, t.user_id)?;
    u.password_hash = Some(hash);
    u.must_change_password = false;
    users::update(tx.conn, &u, tx.now)?;
    let revoked = sessions::revoke_all(tx.conn, u.id, reason, tx.now)?;
    throttle::clear(tx.conn, &format!("user:{}", u.id))?;
    tx.changed(EntityKind::User, u.id.to_string());
    let u =
        users::find(tx.conn, u.id)?.ok_or_else(|| ApiError::Internal("user vanished".into()))?;
    Ok((u, revoked))
}

fn active_user(conn: &mut DbConnection, id: UserId) -> ApiResult<users::User> {
    let u = users::find(conn, id)?
        .ok_or_else(|| ApiError::NotFound("the link's account no longer exists".into()))?;
    if !u.active {
        return Err(ApiError::FailedPrecondition(
            "the account is deactivated: ask a Team Admin".into(),
        ));
    }
    Ok(u)
}

impl PasswordResetSvc {
    async fn reset_user_password(
        &self,
        ctx: RequestCtx,
        p: Principal,
        req: pb::ResetUserPasswordRequest,
    ) -> ApiResult<Response<pb::ResetUserPasswordResponse>> {
        let st = &self.state;
        // The function-level check first, so that nobody else can probe for usernames.
        st.authorize(&p, Action::ResetUserPassword, Target::Org)?;
        let r = parse_user_name("name", &req.name)?;
        let user = st.db.read(move |conn| find_user(conn, &r)).await?;
        st.authorize(&p, Action::ResetUserPassword, Target::User(user.id))?;
        check_etag(&req.etag, user.id, user.version)?;
        if !user.active {
            return Err(ApiError::FailedPrecondition(
                "the user is deactivated: reactivate them first".into(),
            ));
        }
        let policy = st.directory.settings().settings.password_policy.clone();
        let mut password = temporary_password(policy.min_length);
        for _ in 0..8 {
            if policy
                .check(&password, &[&user.username, &user.email])
                .is_ok()
            {
                break;
            }
            password = temporary_password(policy.min_length);
        }
        let hash = st.hasher.hash(password.clone()).await?;
        let (state, ctx2, version) = (st.clone(), ctx.clone(), user.version);
        let committed = st
            .db
            .write(move |tx| {
                let mut u = users::find(tx.conn, user.id)?
                    .ok_or_else(|| ApiError::NotFound("not found".into()))?;
                if u.version != version {
                    return Err(ApiError::Aborted(
                        "the user changed meanwhile: read it again and retry".into(),
                    ));
                }
                u.password_hash = Some(hash);
                u.must_change_password = true;
                users::update(tx.conn, &u, tx.now)?;
                let revoked =
                    sessions::revoke_all(tx.conn, u.id, "password_reset_by_admin", tx.now)?;
                // An outstanding self-service link must not undo the reset.
                user_tokens::supersede(tx.conn, u.id, Purpose::PasswordReset, tx.now)?;
                throttle::clear(tx.conn, &format!("user:{}", u.id))?;
                tx.changed(EntityKind::User, u.id.to_string());
                let mut e = ctx2.event(
                    Some(&p),
                    "user.password_reset_by_admin",
                    "user",
                    Some(format!("users/{}", u.id)),
                );
                e.detail = Some(format!(
                    "temporary password set; {revoked} session(s) revoked"
                ));
                audit::append(tx.conn, e, tx.now)?;
                state.mailer.queue(
                    tx.conn,
                    Template::PasswordResetByAdmin,
                    &u,
                    &[("admin", &p.name)],
                    tx.now,
                )?;
                users::find(tx.conn, u.id)?
                    .ok_or_else(|| ApiError::Internal("user vanished".into()))
            })
            .await?;
        st.mailer.wake();
        st.directory.settle().await;
        Ok(reply(
            pb::ResetUserPasswordResponse {
                user: Some(user_to_proto(&committed.value)),
                temporary_password: password,
            },
            &ctx,
            committed.revision,
        ))
    }

    async fn request_reset(
        &self,
        ctx: RequestCtx,
        req: pb::RequestPasswordResetRequest,
    ) -> ApiResult<Response<pb::RequestPasswordResetResponse>> {
        let st = &self.state;
        let email =
            Email::parse(&req.email).map_err(|e| ApiError::invalid("email", e.to_string()))?;
        let limits = st.config.password_reset.clone();
        let client = ctx
            .peer_ip()
            .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        // Answered after one write that every request makes alike (the per-client limit); the
        // rest (looking the address up, issuing a link, queuing the email) runs after the answer,
        // so an address with an account costs the caller no more time than one without.
        let committed = st
            .db
            .write(move |tx| {
                let by_client = rate_limits::hit(
                    tx.conn,
                    &format!("password_reset:client:{client}"),
                    HOUR_MICROS,
                    tx.now,
                )?;
                if by_client > limits.requests_per_client_per_hour as i32 {
                    return Err(ApiError::ResourceExhausted(
                        "too many password-reset requests from this address: try again later"
                            .into(),
                    ));
                }
                Ok(())
            })
            .await?;
        let (state, ctx2) = (st.clone(), ctx.clone());
        tokio::spawn(async move {
            // Start once the answer is on its way: run at once, the extra work for an address
            // with an account would compete with sending that very answer (measurably, on a
            // small machine).
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            if let Err(e) = issue_reset(&state, &ctx2, email).await {
                tracing::warn!(error = %e, "handling a password-reset request failed");
            }
        });
        Ok(reply(
            pb::RequestPasswordResetResponse {},
            &ctx,
            committed.revision,
        ))
    }

    /// Reads a token's row, hashes the new password against the policy, and hands both to
    /// `finish`, which runs in one transaction after re-checking the token.
    async fn redeem(
        &self,
        ctx: &RequestCtx,
        token: &str,
        password_field: &str,
        password: String,
        purpose: Purpose,
    ) -> ApiResult<(users::User, usize)> {
        let st = &self.state;
        let mut v = Violations::new();
        let hash = field(&mut v, parse_token("token", token));
        if password.is_empty() {
            v.add(password_field, "is required");
        }
        v.finish()?;
        let Some(hash) = hash else {
            return Err(ApiError::Internal(
                "validation passed without a token".into(),
            ));
        };
        let probe = hash.clone();
        let (t, user) = st
            .db
            .read(move |conn| {
                let t = usable(
                    user_tokens::find(conn, &probe)?,
                    purpose,
                    fluxgate_store::now_micros(),
                )?;
                let u = active_user(conn, t.user_id)?;
                Ok((t, u))
            })
            .await?;
        if purpose == Purpose::Registration && user.password_hash.is_some() {
            return Err(ApiError::FailedPrecondition(
                "the account already has a password: log in, or ask for a password reset".into(),
            ));
        }
        let policy = st.directory.settings().settings.password_policy.clone();
        policy
            .check(&password, &[&user.username, &user.email])
            .map_err(|e| ApiError::invalid(password_field, e.to_string()))?;
        let new_hash = st.hasher.hash(password).await?;
        let ctx2 = ctx.clone();
        let committed = st
            .db
            .write(move |tx| {
                // Checked again under the write lock: the token may have been used meanwhile.
                let t = usable(user_tokens::find(tx.conn, &t.token_hash)?, purpose, tx.now)?;
                let (reason, action) = match purpose {
                    Purpose::PasswordReset => ("password_reset", "user.password_reset"),
                    Purpose::Registration => ("registration_completed", "user.registered"),
                };
                if purpose == Purpose::Registration
                    && users::find(tx.conn, t.user_id)?.is_some_and(|u| u.password_hash.is_some())
                {
                    return Err(ApiError::FailedPrecondition(
                        "the account already has a password: log in, or ask for a password reset"
                            .into(),
                    ));
                }
                let (u, revoked) = set_password_from_link(tx, &t, new_hash, reason)?;
                let mut e = event_by_user(&ctx2, &u, action);
                e.detail = Some(format!("{revoked} session(s) revoked"));
                audit::append(tx.conn, e, tx.now)?;
                Ok((u, revoked))
            })
            .await?;
        st.directory.settle().await;
        Ok(committed.value)
    }

    async fn issue_registration_link(
        &self,
        ctx: RequestCtx,
        p: Principal,
        req: pb::IssueRegistrationLinkRequest,
    ) -> ApiResult<Response<pb::IssueRegistrationLinkResponse>> {
        let st = &self.state;
        st.authorize(&p, Action::IssueRegistrationLink, Target::Org)?;
        let r = parse_user_name("name", &req.name)?;
        let user = st.db.read(move |conn| find_user(conn, &r)).await?;
        st.authorize(&p, Action::IssueRegistrationLink, Target::User(user.id))?;
        let (state, ctx2) = (st.clone(), ctx.clone());
        let committed = st
            .db
            .write(move |tx| {
                let u = users::find(tx.conn, user.id)?
                    .ok_or_else(|| ApiError::NotFound("not found".into()))?;
                if !u.active {
                    return Err(ApiError::FailedPrecondition(
                        "the user is deactivated: reactivate them first".into(),
                    ));
                }
                if u.password_hash.is_some() {
                    return Err(ApiError::FailedPrecondition(
                        "the user has already set a password: use ResetUserPassword".into(),
                    ));
                }
                let link = issue_registration(
                    &state.mailer,
                    state.config.password_reset.registration_token_ttl_secs,
                    tx,
                    &u,
                )?;
                let mut e = ctx2.event(
                    Some(&p),
                    "user.registration_link_issued",
                    "user",
                    Some(format!("users/{}", u.id)),
                );
                e.detail = Some("earlier registration links no longer work".into());
                audit::append(tx.conn, e, tx.now)?;
                Ok(link)
            })
            .await?;
        st.mailer.wake();
        Ok(reply(
            pb::IssueRegistrationLinkResponse {
                registration_link: Some(crate::convert::registration_link(&committed.value)),
            },
            &ctx,
            committed.revision,
        ))
    }
}

/// The part of a reset request that depends on the address: the per-account limit, and for an
/// active account a link, emailed. Runs after the caller has its answer.
async fn issue_reset(state: &Arc<AppState>, ctx: &RequestCtx, email: Email) -> ApiResult<()> {
    let limits = state.config.password_reset.clone();
    let (st, ctx2) = (state.clone(), ctx.clone());
    state
        .db
        .write(move |tx| {
            let by_account = rate_limits::hit(
                tx.conn,
                &format!("password_reset:email:{}", email.as_str()),
                HOUR_MICROS,
                tx.now,
            )?;
            let user = users::find_by_email(tx.conn, email.as_str())?;
            let mut e = ctx2.event(None, "password_reset.requested", "user", None);
            match user {
                Some(u) if u.active => {
                    e.target_id = Some(format!("users/{}", u.id));
                    if by_account > limits.requests_per_account_per_hour as i32 {
                        e.outcome = "denied".into();
                        e.detail = Some("rate limit for this account reached; no link sent".into());
                    } else {
                        let token = random_token(TOKEN_BYTES);
                        let expires_at = tx.now + limits.reset_token_ttl_secs as i64 * 1_000_000;
                        let superseded = user_tokens::issue(
                            tx.conn,
                            &token_hash(&token),
                            u.id,
                            Purpose::PasswordReset,
                            tx.now,
                            expires_at,
                        )?;
                        let url = st.mailer.link("reset-password", &token);
                        st.mailer.queue(
                            tx.conn,
                            Template::PasswordReset,
                            &u,
                            &[("link", &url), ("expire_time", &rfc3339(expires_at))],
                            tx.now,
                        )?;
                        e.detail = Some(format!(
                            "reset link emailed; {superseded} earlier link(s) superseded"
                        ));
                    }
                }
                Some(u) => {
                    e.target_id = Some(format!("users/{}", u.id));
                    e.outcome = "denied".into();
                    e.detail = Some("account deactivated; no link sent".into());
                }
                None => {
                    e.outcome = "denied".into();
                    e.detail = Some(format!(
                        "no account has the address {}; no link sent",
                        email.as_str()
                    ));
                }
            }
            audit::append(tx.conn, e, tx.now)?;
            Ok(())
        })
        .await?;
    state.mailer.wake();
    Ok(())
}

#[tonic::async_trait]
impl PasswordResetService for PasswordResetSvc {
    async fn reset_user_password(
        &self,
        request: Request<pb::ResetUserPasswordRequest>,
    ) -> Result<Response<pb::ResetUserPasswordResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        Ok(self.reset_user_password(ctx, p, req).await?)
    }

    async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<Response<pb::RequestPasswordResetResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        Ok(self.request_reset(ctx, request.into_inner()).await?)
    }

    async fn confirm_password_reset(
        &self,
        request: Request<pb::ConfirmPasswordResetRequest>,
    ) -> Result<Response<pb::ConfirmPasswordResetResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        let req = request.into_inner();
        let (u, _) = self
            .redeem(
                &ctx,
                &req.token,
                "new_password",
                req.new_password,
                Purpose::PasswordReset,
            )
            .await?;
        Ok(reply(
            pb::ConfirmPasswordResetResponse {
                username: u.username,
            },
            &ctx,
            None,
        ))
    }

    async fn issue_registration_link(
        &self,
        request: Request<pb::IssueRegistrationLinkRequest>,
    ) -> Result<Response<pb::IssueRegistrationLinkResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        Ok(self.issue_registration_link(ctx, p, req).await?)
    }

    async fn complete_registration(
        &self,
        request: Request<pb::CompleteRegistrationRequest>,
    ) -> Result<Response<pb::CompleteRegistrationResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        let req = request.into_inner();
        let (u, _) = self
            .redeem(
                &ctx,
                &req.token,
                "password",
                req.password,
                Purpose::Registration,
            )
            .await?;
        Ok(reply(
            pb::CompleteRegistrationResponse {
                username: u.username,
            },
            &ctx,
            None,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape_is_checked() {
        let t = random_token(TOKEN_BYTES);
        assert_eq!(t.len(), TOKEN_CHARS);
        assert_eq!(parse_token("token", &t).unwrap(), token_hash(&t));
        for bad in ["", "short", &format!("{t}x"), &t.replace(&t[..1], "+")] {
            assert!(parse_token("token", bad).is_err(), "{bad:?}");
        }
    }

    fn token(purpose: Purpose) -> UserToken {
        UserToken {
            token_hash: "h".into(),
            user_id: UserId::generate(),
            purpose,
            created_at: 0,
            expires_at: 100,
            used_at: None,
            superseded_at: None,
        }
    }

    #[test]
    fn each_unusable_token_says_why() {
        let msg = |r: ApiResult<UserToken>| r.unwrap_err().to_string();
        assert!(
            usable(
                Some(token(Purpose::PasswordReset)),
                Purpose::PasswordReset,
                50
            )
            .is_ok()
        );
        assert!(msg(usable(None, Purpose::PasswordReset, 50)).contains("not valid"));
        assert!(
            msg(usable(
                Some(token(Purpose::Registration)),
                Purpose::PasswordReset,
                50
            ))
            .contains("registration link")
        );
        let mut used = token(Purpose::PasswordReset);
        used.used_at = Some(10);
        assert!(msg(usable(Some(used), Purpose::PasswordReset, 50)).contains("already been used"));
        let mut old = token(Purpose::PasswordReset);
        old.superseded_at = Some(10);
        assert!(msg(usable(Some(old), Purpose::PasswordReset, 50)).contains("newer link"));
        assert!(
            msg(usable(
                Some(token(Purpose::PasswordReset)),
                Purpose::PasswordReset,
                100
            ))
            .contains("expired")
        );
    }
}
