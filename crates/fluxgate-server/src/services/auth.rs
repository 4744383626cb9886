//! AuthService: the adapter over [`fluxgate_core::sessions`] (sign-in, refresh, logout,
//! changing one's password, who am I). Passwords are checked and hashed here, on the server's
//! hashing pool, between the use case's read and its write; the metrics of sign-ins are counted
//! here too.

use std::sync::Arc;

use fluxgate_core::names::UserRef;
use fluxgate_core::second_factor as factor;
use fluxgate_core::sessions::{
    self as uc, ChangeOwnPassword, CompleteLogin, Logout, RecordFailure, Refresh, Throttle,
};
use fluxgate_core::users::User;
use fluxgate_domain::Violations;
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::auth_service_server::AuthService;
use tonic::{Request, Response, Status};

use super::reply;
use crate::auth::RequestCtx;
use crate::convert::user_to_proto;
use crate::directory::Principal;
use crate::error::{ApiError, ApiResult};
use crate::metrics::LoginOutcome;
use crate::state::AppState;
use crate::tokens::token_hash;
use crate::web_session;
use fluxgate_core::logins::failed_login_subject;
use fluxgate_domain::Refusal;

#[derive(Debug, Clone)]
pub struct AuthSvc {
    pub state: Arc<AppState>,
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

/// What the organisation asks of a user's second factor, for a reply (none: nothing asked).
fn requirement(r: &factor::Requirement) -> Option<pb::SecondFactorRequirement> {
    r.due_at.map(|d| pb::SecondFactorRequirement {
        due_time: Some(crate::convert::timestamp(d)),
        overdue: r.overdue,
    })
}

fn login_input(username: &str, password: &str, code: &str) -> ApiResult<()> {
    let mut v = Violations::new();
    if code.len() > 64 || code.chars().any(char::is_control) {
        v.add("second_factor_code", "is not a code");
    }
    if username.is_empty() {
        v.add("username", "is required");
    } else if username.len() > 254 || username.chars().any(char::is_control) {
        v.add("username", "is not a username or email address");
    }
    if password.is_empty() {
        v.add("password", "is required");
    } else if password.len() > fluxgate_domain::PASSWORD_HARD_MAX as usize {
        v.add("password", "is too long");
    }
    Ok(v.finish()?)
}

/// What a sign-in's first read found.
struct Attempt {
    user: Option<User>,
    subject: String,
    locked: bool,
    /// An attempt on the subject was recorded within the last second.
    recorded_recently: bool,
}

impl Attempt {
    /// A user whose password checked out, and whose sign-in failed after all.
    fn checked(user: User, subject: String) -> Attempt {
        Attempt {
            user: Some(user),
            subject,
            locked: false,
            recorded_recently: false,
        }
    }
}

impl AuthSvc {
    /// Whether the browser's cookie is marked Secure: the console is served over TLS.
    fn secure_cookie(&self) -> bool {
        let c = &self.state.config;
        c.tls.cert_path.is_some() || c.public_url.starts_with("https://")
    }

    /// Moves the reply's refresh token into the browser's cookie, when it asked for one.
    fn cookie<T>(
        &self,
        browser: bool,
        r: &mut Response<T>,
        tokens: impl Fn(&mut T) -> &mut Option<pb::SessionTokens>,
    ) {
        let mut t = tokens(r.get_mut()).take();
        web_session::hand_over(browser, self.secure_cookie(), &mut t, r.metadata_mut());
        *tokens(r.get_mut()) = t;
    }

    fn refresh_ttl(&self) -> u64 {
        self.state
            .directory
            .settings()
            .settings
            .token_policy
            .refresh_token_ttl_secs
    }

    async fn attempt(&self, ctx: &RequestCtx, login: String) -> ApiResult<Attempt> {
        let probe = login.clone();
        let (user, t): (Option<User>, Option<Throttle>) = self
            .state
            .query_as(ctx, None, move |_, conn| uc::lookup(conn, &probe))
            .await?;
        let now = fluxgate_core::time::now_micros();
        Ok(Attempt {
            subject: uc::throttle_subject(user.as_ref(), &login),
            locked: t
                .as_ref()
                .and_then(|t| t.locked_until)
                .is_some_and(|u| u > now),
            // Attempts on a locked account cost no hashing; recording each one would let a
            // flood turn into one write per request. One audit event per second is kept.
            recorded_recently: t.as_ref().is_some_and(|t| now - t.updated_at < 1_000_000),
            user,
        })
    }

    /// Records a failed attempt (coalesced while locked) and answers the refusal.
    async fn refuse(&self, ctx: &RequestCtx, a: Attempt, login: &str) -> ApiResult<ApiError> {
        let st = &self.state;
        st.metrics.login(if a.locked {
            LoginOutcome::Locked
        } else {
            LoginOutcome::Failure
        });
        let user = a.user.as_ref().map(|u| (u.id, u.username.clone()));
        if a.locked && a.recorded_recently {
            let named = user.as_ref().map(|(id, n)| (*id, n.as_str()));
            let (target, shown) = failed_login_subject(named, login);
            let peer = ctx.peer_ip().map(|a| a.to_string());
            let now = fluxgate_core::time::now_micros();
            st.refused_logins.add(a.subject, target, shown, now, peer);
        } else {
            self.record_failure(ctx, user, login, a.subject, a.locked)
                .await?;
        }
        let r = if a.locked {
            Refusal::LockedOut
        } else {
            Refusal::BadCredentials
        };
        Ok(ApiError::from(fluxgate_core::Error::from(r)))
    }

    async fn record_failure(
        &self,
        ctx: &RequestCtx,
        user: Option<(fluxgate_domain::UserId, String)>,
        login: &str,
        subject: String,
        locked: bool,
    ) -> ApiResult<()> {
        let st = &self.state;
        let lockout = st.directory.settings().settings.lockout_policy.clone();
        let earlier = st.refused_logins.take(&subject);
        let login = login.to_owned();
        let cmd = RecordFailure {
            user,
            login,
            subject,
            locked,
            earlier,
            lockout,
        };
        if st.execute(ctx, None, cmd).await?.value {
            st.metrics.lockout();
        }
        Ok(())
    }

    /// The user whose password checked out, with a new hash when the parameters changed; or
    /// the refusal, recorded.
    async fn check_password(
        &self,
        ctx: &RequestCtx,
        a: Attempt,
        (login, password): (&str, String),
    ) -> ApiResult<Result<(User, String, Option<String>), ApiError>> {
        let st = &self.state;
        let verified = match a.locked {
            true => None,
            false => {
                let phc = a.user.as_ref().and_then(|u| u.password_hash.clone());
                Some(st.hasher.verify(password.clone(), phc).await?)
            }
        };
        let Some((u, v)) = a
            .user
            .clone()
            .zip(verified)
            .filter(|(u, v)| v.ok && u.active)
        else {
            return Ok(Err(self.refuse(ctx, a, login).await?));
        };
        let new_hash = match v.needs_rehash {
            true => Some(st.hasher.hash(password).await?),
            false => None,
        };
        Ok(Ok((u, a.subject, new_hash)))
    }

    /// Opens the session; a wrong second-factor code (or a password changed meanwhile) is a
    /// failed sign-in, recorded like a wrong password.
    async fn complete(
        &self,
        ctx: &RequestCtx,
        cmd: CompleteLogin,
        a: Attempt,
        login: &str,
    ) -> ApiResult<crate::runner::Done<uc::SignedIn>> {
        match self.state.execute(ctx, None, cmd).await {
            Err(ApiError::Unauthenticated(_)) => Err(self.refuse(ctx, a, login).await?),
            r => r,
        }
    }

    async fn login(
        &self,
        ctx: &RequestCtx,
        req: pb::LoginRequest,
    ) -> ApiResult<Response<pb::LoginResponse>> {
        let pb::LoginRequest {
            username,
            password,
            second_factor_code,
        } = req;
        login_input(&username, &password, &second_factor_code)?;
        let st = &self.state;
        let a = self
            .attempt(ctx, fluxgate_domain::normalize_login(&username))
            .await?;
        let (u, subject, new_hash) = self.check_password(ctx, a, (&username, password)).await??;
        let cmd = CompleteLogin {
            user: u.id,
            subject: subject.clone(),
            verified_hash: u.password_hash.clone(),
            new_hash,
            refresh_ttl_secs: self.refresh_ttl(),
            second_factor: Some(second_factor_code).filter(|c| !c.is_empty()),
        };
        let done = self
            .complete(ctx, cmd, Attempt::checked(u, subject), &username)
            .await?;
        let (issued, user, required) = &done.value;
        st.metrics.login(LoginOutcome::Success);
        tracing::info!(user = %user.username, session = %issued.session_id, "login");
        let msg = pb::LoginResponse {
            tokens: Some(st.session_tokens(user.id, issued)?),
            user: Some(user_to_proto(user)),
            second_factor_requirement: requirement(required),
        };
        Ok(reply(msg, ctx, done.revision))
    }

    async fn refresh(
        &self,
        ctx: &RequestCtx,
        req: pb::RefreshSessionRequest,
    ) -> ApiResult<Response<pb::RefreshSessionResponse>> {
        let pb::RefreshSessionRequest { refresh_token } = req;
        if refresh_token.is_empty() {
            return Err(ApiError::invalid("refresh_token", "is required"));
        }
        if refresh_token.len() > 256 || !refresh_token.is_ascii() {
            return Err(ApiError::invalid("refresh_token", "is not a refresh token"));
        }
        let cmd = Refresh {
            token_hash: token_hash(&refresh_token),
            refresh_ttl_secs: self.refresh_ttl(),
        };
        let done = self.state.execute(ctx, None, cmd).await?;
        let Some((issued, uid)) = &done.value else {
            return Err(ApiError::Unauthenticated(
                "refresh token is invalid, expired, already used or its session has ended".into(),
            ));
        };
        let tokens = Some(self.state.session_tokens(*uid, issued)?);
        Ok(reply(
            pb::RefreshSessionResponse { tokens },
            ctx,
            done.revision,
        ))
    }

    async fn change_password(
        &self,
        ctx: &RequestCtx,
        p: &Principal,
        req: pb::ChangePasswordRequest,
    ) -> ApiResult<Response<pb::ChangePasswordResponse>> {
        let st = &self.state;
        st.judge(ctx, p, |cx| uc::own_session(cx).map(drop))?;
        let pb::ChangePasswordRequest {
            current_password,
            new_password,
        } = req;
        current_input(&current_password, &new_password)?;
        let user = st.query(ctx, p, uc::own_user).await?;
        self.check_new_password(&user, &current_password, &new_password)?;
        self.verify_current(ctx, &user, current_password).await?;
        let cmd = ChangeOwnPassword {
            verified_hash: user.password_hash.clone(),
            new_hash: st.hasher.hash(new_password).await?,
            refresh_ttl_secs: self.refresh_ttl(),
        };
        let done = st.execute(ctx, Some(p), cmd).await?;
        let (issued, user) = &done.value;
        let tokens = Some(st.session_tokens(user.id, issued)?);
        let user = Some(user_to_proto(user));
        Ok(reply(
            pb::ChangePasswordResponse { tokens, user },
            ctx,
            done.revision,
        ))
    }

    /// The new password against the policy in force.
    fn check_new_password(&self, user: &User, current: &str, new: &str) -> ApiResult<()> {
        let policy = self.state.password_policy();
        let mut v = Violations::new();
        v.check(
            "new_password",
            policy.check(new, &[&user.username, &user.email]),
        );
        if new == current {
            v.add("new_password", "must differ from the current password");
        }
        Ok(v.finish()?)
    }

    /// The current password is a credential: guessing it is bounded by the same lockout.
    /// Taking one's own second factor off asks for the password again. Another user's is the
    /// use case's to judge (a Team Admin's).
    async fn reauthenticate_own(
        &self,
        ctx: &RequestCtx,
        p: &Principal,
        user: Option<&UserRef>,
        current: String,
    ) -> ApiResult<()> {
        // Not a user's session: the use case refuses it.
        let Ok(me) = self.state.query(ctx, p, uc::own_user).await else {
            return Ok(());
        };
        let own = match user {
            None => true,
            Some(UserRef::Id(id)) => *id == me.id,
            Some(UserRef::Username(n)) => *n == me.username,
        };
        if !own {
            return Ok(());
        }
        if current.is_empty() || current.len() > fluxgate_domain::PASSWORD_HARD_MAX as usize {
            return Err(ApiError::invalid(
                "current_password",
                "is required, and must be your password, to remove your own second factor",
            ));
        }
        self.verify_current(ctx, &me, current).await
    }

    async fn verify_current(
        &self,
        ctx: &RequestCtx,
        user: &User,
        current: String,
    ) -> ApiResult<()> {
        let st = &self.state;
        let subject = uc::throttle_subject(Some(user), &user.username);
        let (probe, now) = (subject.clone(), fluxgate_core::time::now_micros());
        let locked = st
            .query_as(ctx, None, move |_, conn| uc::is_locked(conn, &probe, now))
            .await?;
        if locked {
            return Err(fluxgate_core::Error::from(Refusal::LockedOut).into());
        }
        let verified = st
            .hasher
            .verify(current, user.password_hash.clone())
            .await?;
        if !verified.ok {
            let who = Some((user.id, user.username.clone()));
            self.record_failure(ctx, who, &user.username, subject, false)
                .await?;
            return Err(ApiError::invalid(
                "current_password",
                "is not the current password",
            ));
        }
        Ok(())
    }
}

fn current_input(current: &str, new: &str) -> ApiResult<()> {
    let mut v = Violations::new();
    if current.is_empty() {
        v.add("current_password", "is required");
    } else if current.len() > fluxgate_domain::PASSWORD_HARD_MAX as usize {
        v.add("current_password", "is too long");
    }
    if new.is_empty() {
        v.add("new_password", "is required");
    }
    Ok(v.finish()?)
}

#[tonic::async_trait]
impl AuthService for AuthSvc {
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        let browser = web_session::wanted(request.metadata());
        let mut r = AuthSvc::login(self, &ctx, request.into_inner()).await?;
        self.cookie(browser, &mut r, |m| &mut m.tokens);
        Ok(r)
    }

    async fn refresh_session(
        &self,
        request: Request<pb::RefreshSessionRequest>,
    ) -> Result<Response<pb::RefreshSessionResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        let browser = web_session::wanted(request.metadata());
        let cookie = web_session::refresh_token(request.metadata());
        let mut req = request.into_inner();
        if req.refresh_token.is_empty() {
            req.refresh_token = cookie.unwrap_or_default();
        }
        let mut r = self.refresh(&ctx, req).await?;
        self.cookie(browser, &mut r, |m| &mut m.tokens);
        Ok(r)
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let browser = web_session::wanted(request.metadata());
        let (ctx, p, req) = authed!(self, request);
        let pb::LogoutRequest {} = req;
        let done = self.state.execute(&ctx, Some(&p), Logout).await?;
        let mut r = done.reply(&ctx, |()| pb::LogoutResponse {});
        web_session::clear(browser, self.secure_cookie(), r.metadata_mut());
        Ok(r)
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let browser = web_session::wanted(request.metadata());
        let (ctx, p, req) = authed!(self, request);
        let mut r = AuthSvc::change_password(self, &ctx, &p, req).await?;
        self.cookie(browser, &mut r, |m| &mut m.tokens);
        Ok(r)
    }

    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::WhoAmIRequest {} = req;
        let user = self.state.query(&ctx, &p, uc::who_am_i).await?;
        let msg = pb::WhoAmIResponse {
            principal: p.id.to_string(),
            role: crate::convert::role_to_proto(p.role) as i32,
            session_id: p.session_id.map(|s| s.to_string()).unwrap_or_default(),
            user: user.as_ref().map(user_to_proto),
        };
        Ok(reply(msg, &ctx, None))
    }

    async fn get_second_factor(
        &self,
        request: Request<pb::GetSecondFactorRequest>,
    ) -> Result<Response<pb::GetSecondFactorResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::GetSecondFactorRequest {} = req;
        let s = self.state.query(&ctx, &p, factor::own_status).await?;
        let msg = pb::GetSecondFactorResponse {
            totp_enabled: s.totp_enabled,
            enrollment_pending: s.enrolment_pending,
            recovery_codes_left: s.recovery_codes_left as i32,
            requirement: requirement(&s.requirement),
        };
        Ok(reply(msg, &ctx, None))
    }

    async fn begin_totp_enrollment(
        &self,
        request: Request<pb::BeginTotpEnrollmentRequest>,
    ) -> Result<Response<pb::BeginTotpEnrollmentResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::BeginTotpEnrollmentRequest {} = req;
        let done = self
            .state
            .execute(&ctx, Some(&p), factor::BeginTotp)
            .await?;
        Ok(done.reply(&ctx, |e| pb::BeginTotpEnrollmentResponse {
            secret: e.secret,
            otpauth_uri: e.otpauth_uri,
        }))
    }

    async fn confirm_totp_enrollment(
        &self,
        request: Request<pb::ConfirmTotpEnrollmentRequest>,
    ) -> Result<Response<pb::ConfirmTotpEnrollmentResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::ConfirmTotpEnrollmentRequest { code } = req;
        let code = code.trim();
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(
                ApiError::invalid("code", "must be the 6 digits of the authenticator app").into(),
            );
        }
        let cmd = factor::ConfirmTotp { code: code.into() };
        let done = self.state.execute(&ctx, Some(&p), cmd).await?;
        Ok(
            done.reply(&ctx, |recovery_codes| pb::ConfirmTotpEnrollmentResponse {
                recovery_codes,
            }),
        )
    }

    async fn remove_second_factor(
        &self,
        request: Request<pb::RemoveSecondFactorRequest>,
    ) -> Result<Response<pb::RemoveSecondFactorResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::RemoveSecondFactorRequest {
            user,
            current_password,
        } = req;
        let user = match user.as_str() {
            "" => None,
            name => Some(crate::convert::parse_user_name("user", name)?),
        };
        self.reauthenticate_own(&ctx, &p, user.as_ref(), current_password)
            .await?;
        let cmd = factor::RemoveSecondFactor { user };
        let done = self.state.execute(&ctx, Some(&p), cmd).await?;
        Ok(done.reply(&ctx, |()| pb::RemoveSecondFactorResponse {}))
    }

    async fn list_sso_providers(
        &self,
        request: Request<pb::ListSsoProvidersRequest>,
    ) -> Result<Response<pb::ListSsoProvidersResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        let pb::ListSsoProvidersRequest {} = request.into_inner();
        let providers = self
            .state
            .sso
            .list()
            .iter()
            .map(|p| pb::SsoProvider {
                id: p.cfg.id.clone(),
                display_name: p.cfg.display_name.clone(),
                start_path: format!("/sso/{}/start", p.cfg.id),
                issuer: p.issuer().to_owned(),
            })
            .collect();
        let policy = &self.state.directory.settings().settings.sign_in_policy;
        let msg = pb::ListSsoProvidersResponse {
            providers,
            password_sign_in_disabled: policy.password_sign_in_disabled,
        };
        Ok(reply(msg, &ctx, None))
    }

    async fn get_notification_preferences(
        &self,
        request: Request<pb::GetNotificationPreferencesRequest>,
    ) -> Result<Response<pb::GetNotificationPreferencesResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        let pb::GetNotificationPreferencesRequest {} = req;
        let prefs = self
            .state
            .query(&ctx, &p, fluxgate_core::preferences::own)
            .await?;
        let msg = pb::GetNotificationPreferencesResponse {
            preferences: Some(preferences_pb(&prefs)),
        };
        Ok(reply(msg, &ctx, None))
    }

    async fn update_notification_preferences(
        &self,
        request: Request<pb::UpdateNotificationPreferencesRequest>,
    ) -> Result<Response<pb::UpdateNotificationPreferencesResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        self.state
            .judge(&ctx, &p, |cx| uc::own_session(cx).map(drop))?;
        let cmd = preferences_cmd(req)?;
        let done = self.state.execute(&ctx, Some(&p), cmd).await?;
        Ok(
            done.reply(&ctx, |x| pb::UpdateNotificationPreferencesResponse {
                preferences: Some(preferences_pb(&x)),
            }),
        )
    }

    async fn complete_sso_sign_in(
        &self,
        request: Request<pb::CompleteSsoSignInRequest>,
    ) -> Result<Response<pb::CompleteSsoSignInResponse>, Status> {
        let ctx = RequestCtx::of(&request)?;
        let browser = web_session::wanted(request.metadata());
        let mut r = self.collect_sso(&ctx, request.into_inner()).await?;
        self.cookie(browser, &mut r, |m| &mut m.tokens);
        Ok(r)
    }
}

impl AuthSvc {
    async fn collect_sso(
        &self,
        ctx: &RequestCtx,
        req: pb::CompleteSsoSignInRequest,
    ) -> ApiResult<Response<pb::CompleteSsoSignInResponse>> {
        let pb::CompleteSsoSignInRequest {
            code,
            code_verifier,
        } = req;
        sso_input(&code, &code_verifier)?;
        let cmd = fluxgate_core::sso::Collect {
            code,
            code_verifier,
            refresh_ttl_secs: self.refresh_ttl(),
        };
        let done = self.state.execute(ctx, None, cmd).await?;
        let Some((issued, user)) = &done.value else {
            self.state.metrics.login(LoginOutcome::Failure);
            return Err(ApiError::Unauthenticated(
                "the sign-in code is unknown, used, expired or not yours: sign in again".into(),
            ));
        };
        self.state.metrics.login(LoginOutcome::Success);
        tracing::info!(user = %user.username, session = %issued.session_id, "sso login");
        let tokens = Some(self.state.session_tokens(user.id, issued)?);
        let user = Some(user_to_proto(user));
        Ok(reply(
            pb::CompleteSsoSignInResponse { tokens, user },
            ctx,
            done.revision,
        ))
    }
}

fn preferences_pb(p: &fluxgate_core::preferences::Preferences) -> pb::NotificationPreferences {
    pb::NotificationPreferences {
        review_requests: p.review_emails,
        decisions: p.decision_emails,
        review_digest: p.review_digest,
    }
}

/// The preferences an update's mask names.
fn preferences_cmd(
    req: pb::UpdateNotificationPreferencesRequest,
) -> ApiResult<fluxgate_core::preferences::UpdateOwn> {
    let pb::UpdateNotificationPreferencesRequest {
        preferences,
        update_mask,
    } = req;
    let new = preferences.ok_or_else(|| ApiError::invalid("preferences", "is required"))?;
    const ALL: [&str; 3] = ["review_requests", "decisions", "review_digest"];
    let paths = crate::convert::mask_paths(update_mask.as_ref(), &ALL)?;
    let has = |p: &str| paths.iter().any(|x| x == p);
    Ok(fluxgate_core::preferences::UpdateOwn {
        review_emails: has("review_requests").then_some(new.review_requests),
        decision_emails: has("decisions").then_some(new.decisions),
        review_digest: has("review_digest").then_some(new.review_digest),
    })
}

/// A one-time code and a PKCE verifier (RFC 7636: 43 to 128 unreserved characters).
fn sso_input(code: &str, verifier: &str) -> ApiResult<()> {
    let mut v = Violations::new();
    if code.is_empty() {
        v.add("code", "is required");
    } else if code.len() > 128 || !code.bytes().all(|b| b.is_ascii_graphic()) {
        v.add("code", "is not a sign-in code");
    }
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    if verifier.is_empty() {
        v.add("code_verifier", "is required");
    } else if !(43..=128).contains(&verifier.len()) || !verifier.bytes().all(unreserved) {
        v.add(
            "code_verifier",
            "must be 43 to 128 characters of A-Z, a-z, 0-9, '-', '.', '_' and '~'",
        );
    }
    Ok(v.finish()?)
}
