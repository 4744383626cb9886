//! Every RPC against every kind of caller: unauthenticated, Requester, Approver, Team Admin,
//! portfolio admin (own and other portfolio), service account, deactivated user and
//! temporary-password user. Allowed calls must not be refused for authentication or
//! permission; refused calls must be refused with the right code.

use std::sync::Arc;

use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::approval_service_client::ApprovalServiceClient;
use fluxgate_proto::v1::audit_service_client::AuditServiceClient;
use fluxgate_proto::v1::auth_service_client::AuthServiceClient;
use fluxgate_proto::v1::catalog_service_client::CatalogServiceClient;
use fluxgate_proto::v1::email_service_client::EmailServiceClient;
use fluxgate_proto::v1::group_service_client::GroupServiceClient;
use fluxgate_proto::v1::password_reset_service_client::PasswordResetServiceClient;
use fluxgate_proto::v1::permission_service_client::PermissionServiceClient;
use fluxgate_proto::v1::service_account_service_client::ServiceAccountServiceClient;
use fluxgate_proto::v1::settings_service_client::SettingsServiceClient;
use fluxgate_proto::v1::user_service_client::UserServiceClient;
use fluxgate_proto::v1::webhook_service_client::WebhookServiceClient;
use futures::future::BoxFuture;
use prost_types::FieldMask;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::harness::*;

const PW: &str = "Matrix-pass-123";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Anonymous,
    Requester,
    Approver,
    TeamAdmin,
    AdminOwn,
    AdminOther,
    ServiceAccount,
    Deactivated,
    TempPassword,
}

const CALLERS: [Caller; 9] = [
    Caller::Anonymous,
    Caller::Requester,
    Caller::Approver,
    Caller::TeamAdmin,
    Caller::AdminOwn,
    Caller::AdminOther,
    Caller::ServiceAccount,
    Caller::Deactivated,
    Caller::TempPassword,
];

/// Who an RPC is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// No authentication needed.
    Public,
    /// Any authenticated caller, including one holding a temporary password.
    Session,
    /// Any active, authenticated caller.
    Reader,
    /// Team Admins, internal service accounts and the resource portfolio's Administrators.
    Inspect,
    /// Team Admins and the resource portfolio's Administrators.
    PortfolioAdmin,
    /// Team Admins only.
    TeamAdmin,
    /// Service accounts marked as audit writers only (none of the callers here).
    AuditWriter,
    /// Approvers and Team Admins.
    Approver,
    /// The flag store: a service account holding the change's permission.
    FlagStore,
}

/// The expected refusal, or `None` when the call must get through.
fn expected(access: Access, caller: Caller) -> Option<Code> {
    use Caller::*;
    if access == Access::Public {
        return None;
    }
    match caller {
        Anonymous | Deactivated => return Some(Code::Unauthenticated),
        TempPassword => return (access != Access::Session).then_some(Code::PermissionDenied),
        _ => {}
    }
    let allowed = match access {
        Access::Public | Access::Session | Access::Reader => true,
        Access::Inspect => matches!(caller, TeamAdmin | AdminOwn | ServiceAccount),
        Access::PortfolioAdmin => matches!(caller, TeamAdmin | AdminOwn),
        Access::TeamAdmin => caller == TeamAdmin,
        Access::AuditWriter => false,
        Access::Approver => matches!(caller, Approver | TeamAdmin),
        Access::FlagStore => caller == ServiceAccount,
    };
    (!allowed).then_some(Code::PermissionDenied)
}

/// Shared objects, created once by the Team Admin.
struct Fix {
    channel: Channel,
    admin: String,
    portfolio: String,
    app: String,
    env: String,
    group: String,
    other_user: String,
    sa_token: String,
    deactivated_token: String,
    /// The portfolio admin's token: submits the requests the Team Admin reviews.
    own_token: String,
}

/// The caller's credential and the request id the call under test is sent with.
struct Auth {
    token: Option<String>,
    request_id: String,
}

fn req<T>(msg: T, a: &Auth) -> Request<T> {
    let mut r = match &a.token {
        Some(t) => authed(msg, t),
        None => Request::new(msg),
    };
    r.metadata_mut()
        .insert("x-request-id", a.request_id.parse().unwrap());
    r
}

/// The RPCs that change state: each must write exactly one audit event when it succeeds.
const WRITES: &[&str] = &[
    "Login",
    "BeginTotpEnrollment",
    "ConfirmTotpEnrollment",
    "RemoveSecondFactor",
    "RemoveOthersSecondFactor",
    "UpdateNotificationPreferences",
    "RefreshSession",
    "Logout",
    "ChangePassword",
    "CreateUser",
    "BatchCreateUsers",
    "UpdateUser",
    "DeactivateUser",
    "ReactivateUser",
    "DeleteUser",
    "UpdateSettings",
    "CreatePortfolio",
    "UpdatePortfolio",
    "DeletePortfolio",
    "CreateApplication",
    "UpdateApplication",
    "DeleteApplication",
    "CreateEnvironment",
    "UpdateEnvironment",
    "DeleteEnvironment",
    "CreateGroup",
    "UpdateGroup",
    "DeleteGroup",
    "AddGroupMember",
    "RemoveGroupMember",
    "CreateServiceAccount",
    "UpdateServiceAccount",
    "DeleteServiceAccount",
    "CreateServiceAccountKey",
    "RotateServiceAccountKey",
    "RevokeServiceAccountKey",
    "IngestAuditEvents",
    "UpdateApprovalPolicy",
    "SubmitChangeRequest",
    "UpdateChangeRequest",
    "CancelChangeRequest",
    "ApproveChangeRequest",
    "RejectChangeRequest",
    "OverrideChangeRequest",
    "MarkChangeRequestApplied",
    "ResetUserPassword",
    "RequestPasswordReset",
    "ConfirmPasswordReset",
    "IssueRegistrationLink",
    "CompleteRegistration",
    "RetryEmail",
    "CreateWebhook",
    "UpdateWebhook",
    "DeleteWebhook",
    "RotateWebhookSecret",
    "RedeliverWebhookDelivery",
    "RewindWebhook",
];

impl Fix {
    fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel.clone())
    }
    fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel.clone())
    }
    fn settings(&self) -> SettingsServiceClient<Channel> {
        SettingsServiceClient::new(self.channel.clone())
    }
    fn catalog(&self) -> CatalogServiceClient<Channel> {
        CatalogServiceClient::new(self.channel.clone())
    }
    fn groups(&self) -> GroupServiceClient<Channel> {
        GroupServiceClient::new(self.channel.clone())
    }
    fn sas(&self) -> ServiceAccountServiceClient<Channel> {
        ServiceAccountServiceClient::new(self.channel.clone())
    }
    fn audit(&self) -> AuditServiceClient<Channel> {
        AuditServiceClient::new(self.channel.clone())
    }
    fn perms(&self) -> PermissionServiceClient<Channel> {
        PermissionServiceClient::new(self.channel.clone())
    }
    fn approvals(&self) -> ApprovalServiceClient<Channel> {
        ApprovalServiceClient::new(self.channel.clone())
    }
    fn resets(&self) -> PasswordResetServiceClient<Channel> {
        PasswordResetServiceClient::new(self.channel.clone())
    }
    fn emails(&self) -> EmailServiceClient<Channel> {
        EmailServiceClient::new(self.channel.clone())
    }
    fn hooks(&self) -> WebhookServiceClient<Channel> {
        WebhookServiceClient::new(self.channel.clone())
    }

    fn hook(display_name: &str) -> pb::Webhook {
        pb::Webhook {
            display_name: display_name.into(),
            url: "https://hooks.invalid/in".into(),
            event_types: vec!["*".into()],
            enabled: false,
            ..Default::default()
        }
    }

    /// A new (disabled) webhook subscription, made by the Team Admin.
    async fn fresh_webhook(&self) -> pb::Webhook {
        self.hooks()
            .create_webhook(authed(
                pb::CreateWebhookRequest {
                    webhook: Some(Self::hook("matrix")),
                    start_after_sequence: None,
                },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .webhook
            .unwrap()
    }

    /// A new user without a password, and the token of their registration link.
    async fn fresh_unregistered(&self) -> (pb::User, String) {
        let name = format!("r{}", uuid::Uuid::new_v4().simple());
        let r = self
            .users()
            .create_user(authed(
                pb::CreateUserRequest {
                    user: Some(pb::User {
                        username: name[..20].into(),
                        email: format!("{}@example.com", &name[..20]),
                        display_name: "r".into(),
                        role: pb::Role::Requester as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner();
        (r.user.unwrap(), r.registration_link.unwrap().token)
    }

    /// The name of a held email (a new user's registration link).
    async fn held_email(&self) -> String {
        let (u, _) = self.fresh_unregistered().await;
        self.emails()
            .list_emails(authed(
                pb::ListEmailsRequest {
                    recipient: u.email,
                    ..Default::default()
                },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .emails[0]
            .name
            .clone()
    }

    /// The token of a reset link for a new user, read from the outbox (no SMTP here).
    async fn fresh_reset_token(&self) -> String {
        let u = self.fresh_user().await;
        self.resets()
            .request_password_reset(pb::RequestPasswordResetRequest {
                email: u.email.clone(),
            })
            .await
            .unwrap();
        // The link is issued just after the answer.
        let mut held = Vec::new();
        for _ in 0..500 {
            held = self
                .emails()
                .list_emails(authed(
                    pb::ListEmailsRequest {
                        recipient: u.email.clone(),
                        ..Default::default()
                    },
                    &self.admin,
                ))
                .await
                .unwrap()
                .into_inner()
                .emails;
            if !held.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let body = &held[0].body;
        let i = body.find("?token=").unwrap() + 7;
        body[i..i + 43].to_owned()
    }

    fn change(&self) -> pb::ChangeRequest {
        pb::ChangeRequest {
            environment: self.env.clone(),
            feature_key: "FLAG".into(),
            kind: pb::ChangeKind::Lock as i32,
            title: "lock it".into(),
            ..Default::default()
        }
    }

    /// A pending change request on the fixture environment, submitted as `token`.
    async fn fresh_request(&self, token: &str) -> pb::ChangeRequest {
        self.approvals()
            .submit_change_request(authed(
                pb::SubmitChangeRequestRequest {
                    request_id: String::new(),
                    change_request: Some(self.change()),
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner()
            .change_request
            .unwrap()
    }

    async fn fresh_user(&self) -> pb::User {
        let name = format!("u{}", uuid::Uuid::new_v4().simple());
        self.users()
            .create_user(authed(
                pb::CreateUserRequest {
                    user: Some(pb::User {
                        username: name[..20].into(),
                        email: format!("{}@example.com", &name[..20]),
                        display_name: "x".into(),
                        role: pb::Role::Requester as i32,
                        ..Default::default()
                    }),
                    initial_password: PW.into(),
                    require_password_change: false,
                },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap()
    }

    async fn fresh_portfolio(&self) -> pb::Portfolio {
        self.catalog()
            .create_portfolio(authed(
                pb::CreatePortfolioRequest {
                    portfolio: Some(pb::Portfolio {
                        display_name: uuid::Uuid::new_v4().to_string(),
                        ..Default::default()
                    }),
                },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .portfolio
            .unwrap()
    }

    async fn fresh_app(&self) -> pb::Application {
        self.catalog()
            .create_application(authed(
                pb::CreateApplicationRequest {
                    parent: self.portfolio.clone(),
                    application: Some(pb::Application {
                        display_name: uuid::Uuid::new_v4().to_string(),
                        ..Default::default()
                    }),
                },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .application
            .unwrap()
    }

    async fn fresh_env(&self) -> pb::Environment {
        self.catalog()
            .create_environment(authed(
                pb::CreateEnvironmentRequest {
                    parent: self.app.clone(),
                    environment: Some(pb::Environment {
                        display_name: uuid::Uuid::new_v4().to_string(),
                        ..Default::default()
                    }),
                },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .environment
            .unwrap()
    }

    async fn fresh_group(&self) -> pb::Group {
        self.groups()
            .create_group(authed(
                pb::CreateGroupRequest {
                    parent: self.portfolio.clone(),
                    group: Some(pb::Group {
                        display_name: uuid::Uuid::new_v4().to_string(),
                        ..Default::default()
                    }),
                },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .group
            .unwrap()
    }

    async fn fresh_sa(&self) -> pb::ServiceAccount {
        self.sas()
            .create_service_account(authed(
                pb::CreateServiceAccountRequest {
                    service_account: Some(pb::ServiceAccount {
                        display_name: "sa".into(),
                        portfolio: self.portfolio.clone(),
                        ..Default::default()
                    }),
                },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .service_account
            .unwrap()
    }

    async fn fresh_key(&self, sa: &str) -> String {
        self.sas()
            .create_service_account_key(authed(
                pb::CreateServiceAccountKeyRequest {
                    parent: sa.into(),
                    key: None,
                },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .key
            .unwrap()
            .name
    }

    fn check(&self) -> pb::PermissionCheck {
        pb::PermissionCheck {
            principal: String::new(),
            permission: pb::Permission::Read as i32,
            resource: self.env.clone(),
        }
    }
}

type Call = Box<dyn Fn(Arc<Fix>, Auth) -> BoxFuture<'static, Result<(), Status>> + Send + Sync>;

macro_rules! call {
    (|$f:ident, $t:ident| $body:expr) => {
        Box::new(
            move |$f: Arc<Fix>, $t: Auth| -> BoxFuture<'static, Result<(), Status>> {
                Box::pin(async move { $body.map(|_| ()) })
            },
        ) as Call
    };
}

fn mask(p: &str) -> Option<FieldMask> {
    Some(FieldMask {
        paths: vec![p.into()],
    })
}

fn table() -> Vec<(&'static str, Access, Call)> {
    vec![
        (
            "Login",
            Access::Public,
            call!(|f, t| f
                .auth()
                .login(req(
                    pb::LoginRequest {
                        username: ADMIN.into(),
                        password: ADMIN_PASSWORD.into(),
                        ..Default::default()
                    },
                    &Auth { token: None, ..t }
                ))
                .await),
        ),
        (
            "RefreshSession",
            Access::Public,
            call!(|f, t| {
                let r = f
                    .auth()
                    .login(pb::LoginRequest {
                        username: ADMIN.into(),
                        password: ADMIN_PASSWORD.into(),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                f.auth()
                    .refresh_session(req(
                        pb::RefreshSessionRequest {
                            refresh_token: r.tokens.unwrap().refresh_token,
                        },
                        &Auth { token: None, ..t },
                    ))
                    .await
            }),
        ),
        (
            "GetNotificationPreferences",
            Access::Session,
            call!(|f, t| f
                .auth()
                .get_notification_preferences(req(pb::GetNotificationPreferencesRequest {}, &t))
                .await),
        ),
        (
            "UpdateNotificationPreferences",
            Access::Session,
            call!(|f, t| {
                // Flips a preference, so that every successful call changes something.
                let cur = f
                    .auth()
                    .get_notification_preferences(req(pb::GetNotificationPreferencesRequest {}, &t))
                    .await?
                    .into_inner()
                    .preferences
                    .unwrap_or_default();
                f.auth()
                    .update_notification_preferences(req(
                        pb::UpdateNotificationPreferencesRequest {
                            preferences: Some(pb::NotificationPreferences {
                                review_requests: !cur.review_requests,
                                decisions: cur.decisions,
                                review_digest: cur.review_digest,
                            }),
                            update_mask: Some(prost_types::FieldMask {
                                paths: vec!["review_requests".into()],
                            }),
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "ListSsoProviders",
            Access::Public,
            call!(|f, t| f
                .auth()
                .list_sso_providers(req(pb::ListSsoProvidersRequest {}, &t))
                .await),
        ),
        (
            "GetPasswordPolicy",
            Access::Public,
            call!(|f, t| f
                .settings()
                .get_password_policy(req(pb::GetPasswordPolicyRequest {}, &t))
                .await),
        ),
        (
            "WhoAmI",
            Access::Session,
            call!(|f, t| f.auth().who_am_i(req(pb::WhoAmIRequest {}, &t)).await),
        ),
        (
            "GetSecondFactor",
            Access::Session,
            call!(|f, t| f
                .auth()
                .get_second_factor(req(pb::GetSecondFactorRequest {}, &t))
                .await),
        ),
        (
            "BeginTotpEnrollment",
            Access::Session,
            call!(|f, t| f
                .auth()
                .begin_totp_enrollment(req(pb::BeginTotpEnrollmentRequest {}, &t))
                .await),
        ),
        (
            "ConfirmTotpEnrollment",
            Access::Session,
            call!(|f, t| f
                .auth()
                .confirm_totp_enrollment(req(
                    pb::ConfirmTotpEnrollmentRequest {
                        code: "000000".into()
                    },
                    &t
                ))
                .await),
        ),
        (
            "RemoveSecondFactor",
            Access::Session,
            call!(|f, t| f
                .auth()
                .remove_second_factor(req(pb::RemoveSecondFactorRequest::default(), &t))
                .await),
        ),
        (
            "RemoveOthersSecondFactor",
            Access::TeamAdmin,
            call!(|f, t| f
                .auth()
                .remove_second_factor(req(
                    pb::RemoveSecondFactorRequest {
                        user: f.other_user.clone(),
                        ..Default::default()
                    },
                    &t
                ))
                .await),
        ),
        (
            "Logout",
            Access::Session,
            call!(|f, t| f.auth().logout(req(pb::LogoutRequest {}, &t)).await),
        ),
        (
            "ChangePassword",
            Access::Session,
            call!(|f, t| f
                .auth()
                .change_password(req(
                    pb::ChangePasswordRequest {
                        current_password: "Not-the-pass-1".into(),
                        new_password: "Brand-new-pass-2".into()
                    },
                    &t
                ))
                .await),
        ),
        (
            "CreateUser",
            Access::TeamAdmin,
            call!(|f, t| f
                .users()
                .create_user(req(
                    pb::CreateUserRequest {
                        user: Some(pb::User {
                            username: format!(
                                "n{}",
                                &uuid::Uuid::new_v4().simple().to_string()[..12]
                            ),
                            email: format!("{}@example.com", uuid::Uuid::new_v4().simple()),
                            display_name: "n".into(),
                            role: pb::Role::Requester as i32,
                            ..Default::default()
                        }),
                        initial_password: PW.into(),
                        require_password_change: false
                    },
                    &t
                ))
                .await),
        ),
        (
            "BatchCreateUsers",
            Access::TeamAdmin,
            call!(|f, t| f
                .users()
                .batch_create_users(req(
                    pb::BatchCreateUsersRequest {
                        requests: vec![pb::CreateUserRequest {
                            user: Some(pb::User {
                                username: format!(
                                    "b{}",
                                    &uuid::Uuid::new_v4().simple().to_string()[..12]
                                ),
                                email: format!("{}@example.com", uuid::Uuid::new_v4().simple()),
                                display_name: "b".into(),
                                role: pb::Role::Requester as i32,
                                ..Default::default()
                            }),
                            initial_password: String::new(),
                            require_password_change: false
                        }]
                    },
                    &t
                ))
                .await),
        ),
        (
            "GetUser",
            Access::TeamAdmin,
            call!(|f, t| f
                .users()
                .get_user(req(
                    pb::GetUserRequest {
                        name: f.other_user.clone()
                    },
                    &t
                ))
                .await),
        ),
        (
            "ListUsers",
            Access::TeamAdmin,
            call!(|f, t| f
                .users()
                .list_users(req(pb::ListUsersRequest::default(), &t))
                .await),
        ),
        (
            "UpdateUser",
            Access::TeamAdmin,
            call!(|f, t| {
                let u = f.fresh_user().await;
                f.users()
                    .update_user(req(
                        pb::UpdateUserRequest {
                            reason: String::new(),
                            user: Some(pb::User {
                                name: u.name,
                                display_name: "renamed".into(),
                                ..Default::default()
                            }),
                            update_mask: mask("display_name"),
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "DeactivateUser",
            Access::TeamAdmin,
            call!(|f, t| {
                let u = f.fresh_user().await;
                f.users()
                    .deactivate_user(req(
                        pb::DeactivateUserRequest {
                            name: u.name,
                            etag: String::new(),
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "ReactivateUser",
            Access::TeamAdmin,
            call!(|f, t| {
                let u = f.fresh_user().await;
                f.users()
                    .deactivate_user(authed(
                        pb::DeactivateUserRequest {
                            name: u.name.clone(),
                            etag: String::new(),
                        },
                        &f.admin,
                    ))
                    .await?;
                f.users()
                    .reactivate_user(req(
                        pb::ReactivateUserRequest {
                            name: u.name,
                            etag: String::new(),
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "DeleteUser",
            Access::TeamAdmin,
            call!(|f, t| {
                let u = f.fresh_user().await;
                f.users()
                    .deactivate_user(authed(
                        pb::DeactivateUserRequest {
                            name: u.name.clone(),
                            etag: String::new(),
                        },
                        &f.admin,
                    ))
                    .await?;
                f.users()
                    .delete_user(req(
                        pb::DeleteUserRequest {
                            name: u.name,
                            etag: String::new(),
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "GetSettings",
            Access::TeamAdmin,
            call!(|f, t| f
                .settings()
                .get_settings(req(pb::GetSettingsRequest::default(), &t))
                .await),
        ),
        (
            "UpdateSettings",
            Access::TeamAdmin,
            call!(|f, t| {
                // A real change, so that success writes an event.
                let cur = f
                    .settings()
                    .get_settings(authed(pb::GetSettingsRequest::default(), &f.admin))
                    .await?
                    .into_inner()
                    .settings
                    .unwrap_or_default();
                let n = cur.lockout_policy.map_or(5, |l| l.max_failed_attempts);
                f.settings()
                    .update_settings(req(
                        pb::UpdateSettingsRequest {
                            settings: Some(pb::Settings {
                                lockout_policy: Some(pb::LockoutPolicy {
                                    max_failed_attempts: n % 99 + 1,
                                    lockout_duration: None,
                                }),
                                ..Default::default()
                            }),
                            update_mask: mask("lockout_policy.max_failed_attempts"),
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "CreatePortfolio",
            Access::TeamAdmin,
            call!(|f, t| f
                .catalog()
                .create_portfolio(req(
                    pb::CreatePortfolioRequest {
                        portfolio: Some(pb::Portfolio {
                            display_name: uuid::Uuid::new_v4().to_string(),
                            ..Default::default()
                        })
                    },
                    &t
                ))
                .await),
        ),
        (
            "GetPortfolio",
            Access::Reader,
            call!(|f, t| f
                .catalog()
                .get_portfolio(req(
                    pb::GetPortfolioRequest {
                        name: f.portfolio.clone()
                    },
                    &t
                ))
                .await),
        ),
        (
            "ListPortfolios",
            Access::Reader,
            call!(|f, t| f
                .catalog()
                .list_portfolios(req(pb::ListPortfoliosRequest::default(), &t))
                .await),
        ),
        (
            "UpdatePortfolio",
            Access::TeamAdmin,
            call!(|f, t| {
                let p = f.fresh_portfolio().await;
                f.catalog()
                    .update_portfolio(req(
                        pb::UpdatePortfolioRequest {
                            portfolio: Some(pb::Portfolio {
                                name: p.name,
                                description: "d".into(),
                                ..Default::default()
                            }),
                            update_mask: mask("description"),
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "DeletePortfolio",
            Access::TeamAdmin,
            call!(|f, t| {
                let p = f.fresh_portfolio().await;
                f.catalog()
                    .delete_portfolio(req(
                        pb::DeletePortfolioRequest {
                            name: p.name,
                            ..Default::default()
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "CreateApplication",
            Access::PortfolioAdmin,
            call!(|f, t| f
                .catalog()
                .create_application(req(
                    pb::CreateApplicationRequest {
                        parent: f.portfolio.clone(),
                        application: Some(pb::Application {
                            display_name: uuid::Uuid::new_v4().to_string(),
                            ..Default::default()
                        })
                    },
                    &t
                ))
                .await),
        ),
        (
            "GetApplication",
            Access::Reader,
            call!(|f, t| f
                .catalog()
                .get_application(req(
                    pb::GetApplicationRequest {
                        name: f.app.clone()
                    },
                    &t
                ))
                .await),
        ),
        (
            "ListApplications",
            Access::Reader,
            call!(|f, t| f
                .catalog()
                .list_applications(req(
                    pb::ListApplicationsRequest {
                        parent: f.portfolio.clone(),
                        ..Default::default()
                    },
                    &t
                ))
                .await),
        ),
        (
            "UpdateApplication",
            Access::PortfolioAdmin,
            call!(|f, t| {
                let a = f.fresh_app().await;
                f.catalog()
                    .update_application(req(
                        pb::UpdateApplicationRequest {
                            application: Some(pb::Application {
                                name: a.name,
                                description: "d".into(),
                                ..Default::default()
                            }),
                            update_mask: mask("description"),
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "DeleteApplication",
            Access::PortfolioAdmin,
            call!(|f, t| {
                let a = f.fresh_app().await;
                f.catalog()
                    .delete_application(req(
                        pb::DeleteApplicationRequest {
                            name: a.name,
                            ..Default::default()
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "CreateEnvironment",
            Access::PortfolioAdmin,
            call!(|f, t| f
                .catalog()
                .create_environment(req(
                    pb::CreateEnvironmentRequest {
                        parent: f.app.clone(),
                        environment: Some(pb::Environment {
                            display_name: uuid::Uuid::new_v4().to_string(),
                            ..Default::default()
                        })
                    },
                    &t
                ))
                .await),
        ),
        (
            "GetEnvironment",
            Access::Reader,
            call!(|f, t| f
                .catalog()
                .get_environment(req(
                    pb::GetEnvironmentRequest {
                        name: f.env.clone()
                    },
                    &t
                ))
                .await),
        ),
        (
            "ListEnvironments",
            Access::Reader,
            call!(|f, t| f
                .catalog()
                .list_environments(req(
                    pb::ListEnvironmentsRequest {
                        parent: f.app.clone(),
                        ..Default::default()
                    },
                    &t
                ))
                .await),
        ),
        (
            "UpdateEnvironment",
            Access::PortfolioAdmin,
            call!(|f, t| {
                let e = f.fresh_env().await;
                f.catalog()
                    .update_environment(req(
                        pb::UpdateEnvironmentRequest {
                            environment: Some(pb::Environment {
                                name: e.name,
                                production: true,
                                ..Default::default()
                            }),
                            update_mask: mask("production"),
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "DeleteEnvironment",
            Access::PortfolioAdmin,
            call!(|f, t| {
                let e = f.fresh_env().await;
                f.catalog()
                    .delete_environment(req(
                        pb::DeleteEnvironmentRequest {
                            name: e.name,
                            ..Default::default()
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "CreateGroup",
            Access::PortfolioAdmin,
            call!(|f, t| f
                .groups()
                .create_group(req(
                    pb::CreateGroupRequest {
                        parent: f.portfolio.clone(),
                        group: Some(pb::Group {
                            display_name: uuid::Uuid::new_v4().to_string(),
                            ..Default::default()
                        })
                    },
                    &t
                ))
                .await),
        ),
        (
            "GetGroup",
            Access::Reader,
            call!(|f, t| f
                .groups()
                .get_group(req(
                    pb::GetGroupRequest {
                        name: f.group.clone()
                    },
                    &t
                ))
                .await),
        ),
        (
            "ListGroups",
            Access::Reader,
            call!(|f, t| f
                .groups()
                .list_groups(req(
                    pb::ListGroupsRequest {
                        parent: f.portfolio.clone(),
                        ..Default::default()
                    },
                    &t
                ))
                .await),
        ),
        (
            "UpdateGroup",
            Access::PortfolioAdmin,
            call!(|f, t| {
                let g = f.fresh_group().await;
                f.groups()
                    .update_group(req(
                        pb::UpdateGroupRequest {
                            group: Some(pb::Group {
                                name: g.name,
                                environment_grants: vec![pb::EnvironmentGrant {
                                    environment: f.env.clone(),
                                    permissions: vec![pb::ValuePermission::Read as i32],
                                }],
                                ..Default::default()
                            }),
                            update_mask: mask("environment_grants"),
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "DeleteGroup",
            Access::PortfolioAdmin,
            call!(|f, t| {
                let g = f.fresh_group().await;
                f.groups()
                    .delete_group(req(
                        pb::DeleteGroupRequest {
                            name: g.name,
                            ..Default::default()
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "AddGroupMember",
            Access::PortfolioAdmin,
            call!(|f, t| {
                let g = f.fresh_group().await;
                f.groups()
                    .add_group_member(req(
                        pb::AddGroupMemberRequest {
                            reason: String::new(),
                            group: g.name,
                            member: f.other_user.clone(),
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "RemoveGroupMember",
            Access::PortfolioAdmin,
            call!(|f, t| {
                let g = f.fresh_group().await;
                f.groups()
                    .add_group_member(authed(
                        pb::AddGroupMemberRequest {
                            reason: String::new(),
                            group: g.name.clone(),
                            member: f.other_user.clone(),
                        },
                        &f.admin,
                    ))
                    .await?;
                f.groups()
                    .remove_group_member(req(
                        pb::RemoveGroupMemberRequest {
                            reason: String::new(),
                            group: g.name,
                            member: f.other_user.clone(),
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "ListGroupMembers",
            Access::Reader,
            call!(|f, t| f
                .groups()
                .list_group_members(req(
                    pb::ListGroupMembersRequest {
                        group: f.group.clone(),
                        ..Default::default()
                    },
                    &t
                ))
                .await),
        ),
        (
            "CreateServiceAccount",
            Access::PortfolioAdmin,
            call!(|f, t| f
                .sas()
                .create_service_account(req(
                    pb::CreateServiceAccountRequest {
                        service_account: Some(pb::ServiceAccount {
                            display_name: "x".into(),
                            portfolio: f.portfolio.clone(),
                            ..Default::default()
                        })
                    },
                    &t
                ))
                .await),
        ),
        (
            "GetServiceAccount",
            Access::PortfolioAdmin,
            call!(|f, t| {
                let sa = f.fresh_sa().await;
                f.sas()
                    .get_service_account(req(pb::GetServiceAccountRequest { name: sa.name }, &t))
                    .await
            }),
        ),
        (
            "ListServiceAccounts",
            Access::PortfolioAdmin,
            call!(|f, t| f
                .sas()
                .list_service_accounts(req(
                    pb::ListServiceAccountsRequest {
                        portfolio: f.portfolio.clone(),
                        ..Default::default()
                    },
                    &t
                ))
                .await),
        ),
        (
            "UpdateServiceAccount",
            Access::PortfolioAdmin,
            call!(|f, t| {
                let sa = f.fresh_sa().await;
                f.sas()
                    .update_service_account(req(
                        pb::UpdateServiceAccountRequest {
                            service_account: Some(pb::ServiceAccount {
                                name: sa.name,
                                description: "d".into(),
                                ..Default::default()
                            }),
                            update_mask: mask("description"),
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "DeleteServiceAccount",
            Access::PortfolioAdmin,
            call!(|f, t| {
                let sa = f.fresh_sa().await;
                f.sas()
                    .delete_service_account(req(
                        pb::DeleteServiceAccountRequest {
                            name: sa.name,
                            etag: String::new(),
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "CreateServiceAccountKey",
            Access::PortfolioAdmin,
            call!(|f, t| {
                let sa = f.fresh_sa().await;
                f.sas()
                    .create_service_account_key(req(
                        pb::CreateServiceAccountKeyRequest {
                            parent: sa.name,
                            key: None,
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "ListServiceAccountKeys",
            Access::PortfolioAdmin,
            call!(|f, t| {
                let sa = f.fresh_sa().await;
                f.sas()
                    .list_service_account_keys(req(
                        pb::ListServiceAccountKeysRequest { parent: sa.name },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "RotateServiceAccountKey",
            Access::PortfolioAdmin,
            call!(|f, t| {
                let sa = f.fresh_sa().await;
                let k = f.fresh_key(&sa.name).await;
                f.sas()
                    .rotate_service_account_key(req(
                        pb::RotateServiceAccountKeyRequest {
                            name: k,
                            grace_period: None,
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "RevokeServiceAccountKey",
            Access::PortfolioAdmin,
            call!(|f, t| {
                let sa = f.fresh_sa().await;
                let k = f.fresh_key(&sa.name).await;
                f.sas()
                    .revoke_service_account_key(req(
                        pb::RevokeServiceAccountKeyRequest { name: k },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "CheckPermission",
            Access::Reader,
            call!(|f, t| f
                .perms()
                .check_permission(req(
                    pb::CheckPermissionRequest {
                        check: Some(f.check()),
                        min_revision: 0
                    },
                    &t
                ))
                .await),
        ),
        (
            "BatchCheckPermissions",
            Access::Reader,
            call!(|f, t| f
                .perms()
                .batch_check_permissions(req(
                    pb::BatchCheckPermissionsRequest {
                        checks: vec![f.check()],
                        min_revision: 0
                    },
                    &t
                ))
                .await),
        ),
        (
            "ExplainPermission",
            Access::Reader,
            call!(|f, t| f
                .perms()
                .explain_permission(req(
                    pb::ExplainPermissionRequest {
                        check: Some(f.check()),
                        min_revision: 0
                    },
                    &t
                ))
                .await),
        ),
        (
            "LookupResources",
            Access::Reader,
            call!(|f, t| f
                .perms()
                .lookup_resources(req(
                    pb::LookupResourcesRequest {
                        principal: String::new(),
                        permission: pb::Permission::Read as i32,
                        parent: f.app.clone(),
                        min_revision: 0
                    },
                    &t
                ))
                .await),
        ),
        (
            "LookupPrincipals",
            Access::Inspect,
            call!(|f, t| f
                .perms()
                .lookup_principals(req(
                    pb::LookupPrincipalsRequest {
                        permission: pb::Permission::Read as i32,
                        resource: f.env.clone(),
                        min_role: 0,
                        min_revision: 0
                    },
                    &t
                ))
                .await),
        ),
        (
            "ListAuditEvents",
            Access::TeamAdmin,
            call!(|f, t| f
                .audit()
                .list_audit_events(req(pb::ListAuditEventsRequest::default(), &t))
                .await),
        ),
        (
            "VerifyAuditChain",
            Access::TeamAdmin,
            call!(|f, t| f
                .audit()
                .verify_audit_chain(req(pb::VerifyAuditChainRequest {}, &t))
                .await),
        ),
        (
            "ExportAuditEvents",
            Access::TeamAdmin,
            call!(|f, t| {
                let mut stream = f
                    .audit()
                    .export_audit_events(req(pb::ExportAuditEventsRequest::default(), &t))
                    .await?
                    .into_inner();
                stream.message().await
            }),
        ),
        (
            "IngestAuditEvents",
            Access::AuditWriter,
            call!(|f, t| f
                .audit()
                .ingest_audit_events(req(
                    pb::IngestAuditEventsRequest {
                        events: vec![pb::IngestedEvent {
                            action: "feature.evaluated".into(),
                            target_type: "feature".into(),
                            target: "x".into(),
                            ..Default::default()
                        }]
                    },
                    &t
                ))
                .await),
        ),
        (
            "GetActivityReport",
            Access::Reader,
            call!(|f, t| f
                .audit()
                .get_activity_report(req(
                    pb::GetActivityReportRequest {
                        start_time: Some(prost_types::Timestamp {
                            seconds: 0,
                            nanos: 0
                        }),
                        end_time: Some(prost_types::Timestamp {
                            seconds: 86_400 * 300,
                            nanos: 0
                        }),
                        top: 0
                    },
                    &t
                ))
                .await),
        ),
        (
            "CheckPermission(other principal)",
            Access::Inspect,
            call!(|f, t| f
                .perms()
                .check_permission(req(
                    pb::CheckPermissionRequest {
                        check: Some(pb::PermissionCheck {
                            principal: f.other_user.clone(),
                            ..f.check()
                        }),
                        min_revision: 0
                    },
                    &t
                ))
                .await),
        ),
        (
            "GetApprovalPolicy",
            Access::Reader,
            call!(|f, t| f
                .approvals()
                .get_approval_policy(req(
                    pb::GetApprovalPolicyRequest {
                        name: format!("{}/approvalPolicy", f.env)
                    },
                    &t
                ))
                .await),
        ),
        (
            "UpdateApprovalPolicy",
            Access::TeamAdmin,
            call!(|f, t| f
                .approvals()
                .update_approval_policy(req(
                    pb::UpdateApprovalPolicyRequest {
                        policy: Some(pb::ApprovalPolicy {
                            name: format!("{}/approvalPolicy", f.env),
                            admin_override: true,
                            ..Default::default()
                        }),
                        update_mask: mask("admin_override"),
                    },
                    &t
                ))
                .await),
        ),
        (
            "SubmitChangeRequest",
            Access::Inspect,
            call!(|f, t| f
                .approvals()
                .submit_change_request(req(
                    pb::SubmitChangeRequestRequest {
                        request_id: String::new(),
                        change_request: Some(f.change())
                    },
                    &t
                ))
                .await),
        ),
        (
            "GetChangeRequest",
            Access::Inspect,
            call!(|f, t| {
                let cr = f.fresh_request(&f.admin).await;
                f.approvals()
                    .get_change_request(req(pb::GetChangeRequestRequest { name: cr.name }, &t))
                    .await
            }),
        ),
        (
            "ListChangeRequests",
            Access::Reader,
            call!(|f, t| f
                .approvals()
                .list_change_requests(req(pb::ListChangeRequestsRequest::default(), &t))
                .await),
        ),
        (
            "UpdateChangeRequest",
            Access::TeamAdmin,
            call!(|f, t| {
                let cr = f.fresh_request(&f.admin).await;
                f.approvals()
                    .update_change_request(req(
                        pb::UpdateChangeRequestRequest {
                            change_request: Some(pb::ChangeRequest {
                                name: cr.name,
                                title: "lock it now".into(),
                                ..Default::default()
                            }),
                            update_mask: mask("title"),
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "CancelChangeRequest",
            Access::PortfolioAdmin,
            call!(|f, t| {
                let cr = f.fresh_request(&f.admin).await;
                f.approvals()
                    .cancel_change_request(req(
                        pb::CancelChangeRequestRequest {
                            name: cr.name,
                            ..Default::default()
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "ApproveChangeRequest",
            Access::TeamAdmin,
            call!(|f, t| {
                let cr = f.fresh_request(&f.own_token).await;
                f.approvals()
                    .approve_change_request(req(
                        pb::ApproveChangeRequestRequest {
                            name: cr.name,
                            revision: 1,
                            ..Default::default()
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "RejectChangeRequest",
            Access::TeamAdmin,
            call!(|f, t| {
                let cr = f.fresh_request(&f.own_token).await;
                f.approvals()
                    .reject_change_request(req(
                        pb::RejectChangeRequestRequest {
                            name: cr.name,
                            comment: "no".into(),
                            ..Default::default()
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "OverrideChangeRequest",
            Access::TeamAdmin,
            call!(|f, t| {
                let cr = f.fresh_request(&f.own_token).await;
                f.approvals()
                    .override_change_request(req(
                        pb::OverrideChangeRequestRequest {
                            name: cr.name,
                            revision: 1,
                            reason: "incident".into(),
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "MarkChangeRequestApplied",
            Access::FlagStore,
            call!(|f, t| {
                let cr = f.fresh_request(&f.own_token).await;
                f.approvals()
                    .approve_change_request(authed(
                        pb::ApproveChangeRequestRequest {
                            name: cr.name.clone(),
                            revision: 1,
                            ..Default::default()
                        },
                        &f.admin,
                    ))
                    .await?;
                f.approvals()
                    .mark_change_request_applied(req(
                        pb::MarkChangeRequestAppliedRequest { name: cr.name },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "WatchChangeRequest",
            Access::Inspect,
            call!(|f, t| {
                let cr = f.fresh_request(&f.admin).await;
                f.approvals()
                    .watch_change_request(req(pb::WatchChangeRequestRequest { name: cr.name }, &t))
                    .await
            }),
        ),
        (
            "GetApprovalMetrics",
            Access::Approver,
            call!(|f, t| f
                .approvals()
                .get_approval_metrics(req(pb::GetApprovalMetricsRequest::default(), &t))
                .await),
        ),
        (
            "ResetUserPassword",
            Access::TeamAdmin,
            call!(|f, t| {
                let u = f.fresh_user().await;
                f.resets()
                    .reset_user_password(req(
                        pb::ResetUserPasswordRequest {
                            name: u.name,
                            etag: String::new(),
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "RequestPasswordReset",
            Access::Public,
            call!(|f, t| {
                let u = f.fresh_user().await;
                f.resets()
                    .request_password_reset(req(
                        pb::RequestPasswordResetRequest { email: u.email },
                        &Auth { token: None, ..t },
                    ))
                    .await
            }),
        ),
        (
            "ConfirmPasswordReset",
            Access::Public,
            call!(|f, t| {
                let token = f.fresh_reset_token().await;
                f.resets()
                    .confirm_password_reset(req(
                        pb::ConfirmPasswordResetRequest {
                            token,
                            new_password: "Reset-by-link-7".into(),
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "IssueRegistrationLink",
            Access::TeamAdmin,
            call!(|f, t| {
                let (u, _) = f.fresh_unregistered().await;
                f.resets()
                    .issue_registration_link(req(
                        pb::IssueRegistrationLinkRequest { name: u.name },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "CompleteRegistration",
            Access::Public,
            call!(|f, t| {
                let (_, token) = f.fresh_unregistered().await;
                f.resets()
                    .complete_registration(req(
                        pb::CompleteRegistrationRequest {
                            token,
                            password: "Registered-pass-8".into(),
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "ListEmails",
            Access::TeamAdmin,
            call!(|f, t| f
                .emails()
                .list_emails(req(pb::ListEmailsRequest::default(), &t))
                .await),
        ),
        (
            "GetEmail",
            Access::TeamAdmin,
            call!(|f, t| {
                let name = f.held_email().await;
                f.emails()
                    .get_email(req(pb::GetEmailRequest { name: name.clone() }, &t))
                    .await
            }),
        ),
        (
            "CreateWebhook",
            Access::TeamAdmin,
            call!(|f, t| f
                .hooks()
                .create_webhook(req(
                    pb::CreateWebhookRequest {
                        webhook: Some(Fix::hook("created")),
                        start_after_sequence: None,
                    },
                    &t
                ))
                .await),
        ),
        (
            "GetWebhook",
            Access::TeamAdmin,
            call!(|f, t| {
                let w = f.fresh_webhook().await;
                f.hooks()
                    .get_webhook(req(pb::GetWebhookRequest { name: w.name }, &t))
                    .await
            }),
        ),
        (
            "ListWebhooks",
            Access::TeamAdmin,
            call!(|f, t| f
                .hooks()
                .list_webhooks(req(pb::ListWebhooksRequest {}, &t))
                .await),
        ),
        (
            "ListWebhookEventTypes",
            Access::TeamAdmin,
            call!(|f, t| f
                .hooks()
                .list_webhook_event_types(req(pb::ListWebhookEventTypesRequest {}, &t))
                .await),
        ),
        (
            "UpdateWebhook",
            Access::TeamAdmin,
            call!(|f, t| {
                let mut w = f.fresh_webhook().await;
                w.display_name = "renamed".into();
                f.hooks()
                    .update_webhook(req(
                        pb::UpdateWebhookRequest {
                            webhook: Some(w),
                            update_mask: mask("display_name"),
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "DeleteWebhook",
            Access::TeamAdmin,
            call!(|f, t| {
                let w = f.fresh_webhook().await;
                f.hooks()
                    .delete_webhook(req(
                        pb::DeleteWebhookRequest {
                            name: w.name,
                            etag: String::new(),
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "RotateWebhookSecret",
            Access::TeamAdmin,
            call!(|f, t| {
                let w = f.fresh_webhook().await;
                f.hooks()
                    .rotate_webhook_secret(req(
                        pb::RotateWebhookSecretRequest {
                            name: w.name,
                            overlap: None,
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "ListWebhookDeliveries",
            Access::TeamAdmin,
            call!(|f, t| {
                let w = f.fresh_webhook().await;
                f.hooks()
                    .list_webhook_deliveries(req(
                        pb::ListWebhookDeliveriesRequest {
                            parent: w.name,
                            ..Default::default()
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "GetWebhookDelivery",
            Access::TeamAdmin,
            call!(|f, t| {
                // A well-formed name of nothing: NOT_FOUND after the rights check.
                let w = f.fresh_webhook().await;
                let name = format!("{}/deliveries/{}", w.name, uuid::Uuid::new_v4());
                f.hooks()
                    .get_webhook_delivery(req(pb::GetWebhookDeliveryRequest { name }, &t))
                    .await
            }),
        ),
        (
            "RedeliverWebhookDelivery",
            Access::TeamAdmin,
            call!(|f, t| {
                let w = f.fresh_webhook().await;
                let name = format!("{}/deliveries/{}", w.name, uuid::Uuid::new_v4());
                f.hooks()
                    .redeliver_webhook_delivery(req(
                        pb::RedeliverWebhookDeliveryRequest { name },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "RewindWebhook",
            Access::TeamAdmin,
            call!(|f, t| {
                let w = f.fresh_webhook().await;
                f.hooks()
                    .rewind_webhook(req(
                        pb::RewindWebhookRequest {
                            name: w.name,
                            after_sequence: 0,
                        },
                        &t,
                    ))
                    .await
            }),
        ),
        (
            "RetryEmail",
            Access::TeamAdmin,
            call!(|f, t| {
                let name = f.held_email().await;
                // Without SMTP a retry is refused (FAILED_PRECONDITION) after the rights check.
                f.emails()
                    .retry_email(req(pb::RetryEmailRequest { name: name.clone() }, &t))
                    .await
            }),
        ),
    ]
}

async fn every_rpc_against_every_caller(b: Backend) {
    // Every reset request here comes from one address: lift that limit out of the way.
    let s = TestServer::start_configured(b, |c| {
        c.password_reset.requests_per_client_per_hour = 10_000;
    })
    .await;
    let admin = s.admin_token().await;
    let a = s.portfolio(&admin, "A").await;
    let other = s.portfolio(&admin, "B").await;
    let app = s.application(&admin, &a.name, "web").await;
    let env = s.environment(&admin, &app.name, "dev").await;
    let group = s.group(&admin, &a.name, "Devs", vec![], vec![]).await;
    let other_user = s
        .create_user(&admin, "target", pb::Role::Requester, PW)
        .await;
    for (name, role) in [
        ("req", pb::Role::Requester),
        ("appr", pb::Role::Approver),
        ("own", pb::Role::Requester),
        ("oth", pb::Role::Requester),
        ("gone", pb::Role::Requester),
    ] {
        s.create_user(&admin, name, role, PW).await;
    }
    s.add_member(&admin, &a.administrators_group, "users/own")
        .await;
    s.add_member(&admin, &other.administrators_group, "users/oth")
        .await;
    s.users()
        .create_user(authed(
            pb::CreateUserRequest {
                user: Some(pb::User {
                    username: "temp".into(),
                    email: "temp@example.com".into(),
                    display_name: "t".into(),
                    role: pb::Role::TeamAdmin as i32,
                    ..Default::default()
                }),
                initial_password: PW.into(),
                require_password_change: true,
            },
            &admin,
        ))
        .await
        .unwrap();
    let deactivated_token = s.login("gone", PW).await.tokens.unwrap().access_token;
    s.users()
        .deactivate_user(authed(
            pb::DeactivateUserRequest {
                name: "users/gone".into(),
                etag: String::new(),
            },
            &admin,
        ))
        .await
        .unwrap();
    let sa = s
        .service_accounts()
        .create_service_account(authed(
            pb::CreateServiceAccountRequest {
                service_account: Some(pb::ServiceAccount {
                    display_name: "svc".into(),
                    ..Default::default()
                }),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .service_account
        .unwrap();
    let sa_token = s
        .service_accounts()
        .create_service_account_key(authed(
            pb::CreateServiceAccountKeyRequest {
                parent: sa.name.clone(),
                key: None,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    // The flag store holds what the fixture's change requests need; Team Admins may override.
    let flagstore = s
        .group(
            &admin,
            &a.name,
            "Flag store",
            vec![],
            vec![pb::EnvironmentGrant {
                environment: env.name.clone(),
                permissions: vec![pb::ValuePermission::Lock as i32],
            }],
        )
        .await;
    s.add_member(&admin, &flagstore.name, &sa.name).await;
    s.approvals()
        .update_approval_policy(authed(
            pb::UpdateApprovalPolicyRequest {
                policy: Some(pb::ApprovalPolicy {
                    name: format!("{}/approvalPolicy", env.name),
                    admin_override: true,
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["admin_override".into()],
                }),
            },
            &admin,
        ))
        .await
        .unwrap();
    let own_token = s.login("own", PW).await.tokens.unwrap().access_token;
    let fix = Arc::new(Fix {
        own_token,
        channel: s.channel.clone(),
        admin: admin.clone(),
        portfolio: a.name.clone(),
        app: app.name.clone(),
        env: env.name.clone(),
        group: group.name.clone(),
        other_user: other_user.name.clone(),
        sa_token,
        deactivated_token,
    });

    let mut failures = Vec::new();
    let mut ok = 0;
    let table = table();
    assert!(table.len() >= 84, "every RPC is in the table");
    for (name, access, call) in &table {
        for caller in CALLERS {
            // A fresh session per call, since some calls (Logout) end it.
            let token = match caller {
                Caller::Anonymous => None,
                Caller::Requester => Some(s.login("req", PW).await.tokens.unwrap().access_token),
                Caller::Approver => Some(s.login("appr", PW).await.tokens.unwrap().access_token),
                Caller::TeamAdmin => Some(s.admin_token().await),
                Caller::AdminOwn => Some(s.login("own", PW).await.tokens.unwrap().access_token),
                Caller::AdminOther => Some(s.login("oth", PW).await.tokens.unwrap().access_token),
                Caller::ServiceAccount => Some(fix.sa_token.clone()),
                Caller::Deactivated => Some(fix.deactivated_token.clone()),
                Caller::TempPassword => {
                    Some(s.login("temp", PW).await.tokens.unwrap().access_token)
                }
            };
            let request_id = uuid::Uuid::new_v4().to_string();
            let result = call(
                fix.clone(),
                Auth {
                    token,
                    request_id: request_id.clone(),
                },
            )
            .await;
            let count = || {
                s.store()
                    .read(|c| {
                        use diesel::prelude::*;
                        use fluxgate_store::schema::audit_events::dsl as a;
                        a::audit_events
                            .filter(a::request_id.eq(&request_id))
                            .count()
                            .get_result::<i64>(c)
                            .map_err(fluxgate_store::StoreError::from)
                    })
                    .unwrap()
            };
            let want_events = match &result {
                Ok(()) if WRITES.contains(name) => 1,
                // A wrong current password is a failed credential check: a security event.
                Err(st) if *name == "ChangePassword" && st.code() == Code::InvalidArgument => 1,
                _ => 0,
            };
            let mut events = count();
            // A reset request is handled just after its answer (so that it costs the same
            // whether or not the address has an account).
            if *name == "RequestPasswordReset" {
                for _ in 0..250 {
                    if events >= want_events {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    events = count();
                }
            }
            if events != want_events {
                failures.push(format!("{name} as {caller:?}: {events} audit event(s), expected {want_events} ({result:?})"));
            }
            let want = expected(*access, caller);
            let fine = match (&result, want) {
                (Ok(()), None) => {
                    ok += 1;
                    true
                }
                (Err(st), None) => !matches!(
                    st.code(),
                    Code::Unauthenticated | Code::PermissionDenied | Code::Internal
                ),
                (Err(st), Some(code)) => st.code() == code,
                (Ok(()), Some(_)) => false,
            };
            if !fine {
                failures.push(format!(
                    "{name} as {caller:?}: expected {want:?}, got {:?}",
                    result.map_err(|s| (s.code(), s.message().to_owned()))
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        ok > table.len() * 2,
        "most allowed calls succeed outright ({ok})"
    );
}

crate::both_backends!(every_rpc_against_every_caller);
