//! PasswordResetService: the adapter over [`fluxgate_core::password_reset`] (admin resets,
//! self-service reset links and registration links, SPEC section 5).

use std::sync::Arc;

use fluxgate_core::password_reset::{
    self as uc, AdminReset, CountRequest, IssueRegistration, IssueReset, LinkPurpose, Redeem,
};
use fluxgate_core::users::User;
use fluxgate_domain::{Email, Violations};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::password_reset_service_server::PasswordResetService;
use tonic::{Request, Response, Status};

use super::reply;
use crate::auth::RequestCtx;
use crate::bootstrap::temporary_password;
use crate::convert::{field, parse_user_name, user_to_proto};
use crate::directory::Principal;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::tokens::token_hash;

#[derive(Debug, Clone)]
pub struct PasswordResetSvc {
    pub state: Arc<AppState>,
}

/// Characters of a token: base64url of 32 bytes, unpadded.
const TOKEN_CHARS: usize = 43;

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

impl PasswordResetSvc {
    /// A temporary password that meets the policy in force for `user`.
    fn temporary_password(&self, user: &User) -> String {
        let policy = self.state.password_policy();
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
        password
    }

    async fn reset_user_password(
        &self,
        ctx: &RequestCtx,
        p: &Principal,
        req: pb::ResetUserPasswordRequest,
    ) -> ApiResult<Response<pb::ResetUserPasswordResponse>> {
        let st = &self.state;
        // The function-level check first, so that nobody else can probe for usernames.
        st.judge(ctx, p, uc::may_reset)?;
        let pb::ResetUserPasswordRequest { name, etag } = req;
        let r = parse_user_name("name", &name)?;
        let user = st
            .query(ctx, p, move |cx, conn| {
                uc::reset_target(cx, conn, &r, &etag)
            })
            .await?;
        let password = self.temporary_password(&user);
        let hash = st.hasher.hash(password.clone()).await?;
        let cmd = AdminReset {
            user: user.id,
            version: user.version,
            hash,
        };
        let done = st.execute(ctx, Some(p), cmd).await?;
        Ok(done.reply(ctx, |u| pb::ResetUserPasswordResponse {
            user: Some(user_to_proto(&u)),
            temporary_password: password,
        }))
    }

    /// Answered after one write that every request makes alike (the per-client limit); the rest
    /// (looking the address up, issuing a link, queuing the email) runs after the answer, so an
    /// address with an account costs the caller no more time than one without.
    async fn request_reset(
        &self,
        ctx: &RequestCtx,
        req: pb::RequestPasswordResetRequest,
    ) -> ApiResult<Response<pb::RequestPasswordResetResponse>> {
        let pb::RequestPasswordResetRequest { email } = req;
        let email = Email::parse(&email).map_err(|e| ApiError::invalid("email", e.to_string()))?;
        let client = ctx
            .peer_ip()
            .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        let done = self
            .state
            .execute(ctx, None, CountRequest { client })
            .await?;
        let (state, ctx2) = (self.state.clone(), ctx.clone());
        tokio::spawn(async move {
            // Start once the answer is on its way: run at once, the extra work for an address
            // with an account would compete with sending that very answer (measurably, on a
            // small machine).
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            if let Err(e) = state.execute(&ctx2, None, IssueReset { email }).await {
                tracing::warn!(error = %e, "handling a password-reset request failed");
            }
        });
        Ok(done.reply(ctx, |()| pb::RequestPasswordResetResponse {}))
    }

    /// Checks a link and the new password against the policy, hashes it, and redeems the link
    /// (checked again in the write).
    async fn redeem(
        &self,
        ctx: &RequestCtx,
        (token, password_field, password): (&str, &str, String),
        purpose: LinkPurpose,
    ) -> ApiResult<User> {
        let st = &self.state;
        let mut v = Violations::new();
        let hash = field(&mut v, parse_token("token", token));
        if password.is_empty() {
            v.add(password_field, "is required");
        }
        v.finish()?;
        let token_hash =
            hash.ok_or_else(|| ApiError::Internal("validation passed without a token".into()))?;
        let probe = token_hash.clone();
        let now = fluxgate_core::time::now_micros();
        let (_, user) = st
            .query_as(ctx, None, move |_, conn| {
                uc::redeemable(conn, &probe, purpose, now)
            })
            .await?;
        let policy = st.password_policy();
        policy
            .check(&password, &[&user.username, &user.email])
            .map_err(|e| ApiError::invalid(password_field, e.to_string()))?;
        let hash = st.hasher.hash(password).await?;
        let cmd = Redeem {
            token_hash,
            purpose,
            hash,
        };
        Ok(st.execute(ctx, None, cmd).await?.value)
    }
}

#[tonic::async_trait]
impl PasswordResetService for PasswordResetSvc {
    async fn reset_user_password(
        &self,
        request: Request<pb::ResetUserPasswordRequest>,
    ) -> Result<Response<pb::ResetUserPasswordResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        Ok(self.reset_user_password(&ctx, &p, req).await?)
    }

    async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<Response<pb::RequestPasswordResetResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        Ok(self.request_reset(&ctx, request.into_inner()).await?)
    }

    async fn confirm_password_reset(
        &self,
        request: Request<pb::ConfirmPasswordResetRequest>,
    ) -> Result<Response<pb::ConfirmPasswordResetResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        let pb::ConfirmPasswordResetRequest {
            token,
            new_password,
        } = request.into_inner();
        let given = (token.as_str(), "new_password", new_password);
        let u = self.redeem(&ctx, given, LinkPurpose::PasswordReset).await?;
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
        self.state.judge(&ctx, &p, uc::may_issue_registration)?;
        let pb::IssueRegistrationLinkRequest { name } = req;
        let cmd = IssueRegistration {
            user: parse_user_name("name", &name)?,
        };
        let done = self.state.execute(&ctx, Some(&p), cmd).await?;
        Ok(done.reply(&ctx, |link| pb::IssueRegistrationLinkResponse {
            registration_link: Some(crate::convert::registration_link(&link)),
        }))
    }

    async fn complete_registration(
        &self,
        request: Request<pb::CompleteRegistrationRequest>,
    ) -> Result<Response<pb::CompleteRegistrationResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        let pb::CompleteRegistrationRequest { token, password } = request.into_inner();
        let given = (token.as_str(), "password", password);
        let u = self.redeem(&ctx, given, LinkPurpose::Registration).await?;
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
    use fluxgate_core::users::TOKEN_BYTES;

    #[test]
    fn token_shape_is_checked() {
        let t = fluxgate_core::secrets::random_token(TOKEN_BYTES);
        assert_eq!(t.len(), TOKEN_CHARS);
        assert_eq!(parse_token("token", &t).unwrap(), token_hash(&t));
        for bad in ["", "short", &format!("{t}x"), &t.replace(&t[..1], "+")] {
            assert!(parse_token("token", bad).is_err(), "{bad:?}");
        }
    }
}
