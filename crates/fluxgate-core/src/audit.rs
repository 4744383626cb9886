//! What the audit trail records: the actions FluxGate itself takes, as an enum (events that
//! clients ingest carry their own action names), and the event a use case appends.

use fluxgate_store::audit::NewEvent;

/// An action FluxGate records. [`AuditAction::as_str`] is the stored (and exported) name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    ApprovalPolicyUpdated,
    AuthLogin,
    AuthLogout,
    AuthRefresh,
    AuthRefreshTokenReuse,
    ChangeRequestSubmitted,
    ChangeRequestUpdated,
    ChangeRequestApproved,
    ChangeRequestRejected,
    ChangeRequestOverridden,
    ChangeRequestCancelled,
    ChangeRequestApplied,
    ChangeRequestExpired,
    EmailRequeued,
    GroupCreated,
    GroupUpdated,
    GroupDeleted,
    GroupMemberAdded,
    GroupMemberRemoved,
    PasswordResetRequested,
    PortfolioCreated,
    PortfolioUpdated,
    PortfolioDeleted,
    ApplicationCreated,
    ApplicationUpdated,
    ApplicationDeleted,
    EnvironmentCreated,
    EnvironmentUpdated,
    EnvironmentDeleted,
    ServiceAccountCreated,
    ServiceAccountUpdated,
    ServiceAccountDeleted,
    ServiceAccountKeyCreated,
    ServiceAccountKeyRotated,
    ServiceAccountKeyRevoked,
    SecondFactorEnrolmentStarted,
    SecondFactorEnabled,
    SecondFactorRemoved,
    SecondFactorDeadline,
    AuthSsoLogin,
    AuthSsoFailed,
    UserIdentityLinked,
    UserPreferencesUpdated,
    WebhookCreated,
    WebhookUpdated,
    WebhookDeleted,
    WebhookSecretRotated,
    WebhookRedelivered,
    WebhookRewound,
    AuditPruned,
    SettingsUpdated,
    UserCreated,
    UserUpdated,
    UserDeactivated,
    UserReactivated,
    UserDeleted,
    UserPasswordChanged,
    UserPasswordReset,
    UserPasswordResetByAdmin,
    UserRegistrationLinkIssued,
    UserRegistered,
}

impl AuditAction {
    pub const ALL: [AuditAction; 61] = [
        AuditAction::ApprovalPolicyUpdated,
        AuditAction::AuthLogin,
        AuditAction::AuthLogout,
        AuditAction::AuthRefresh,
        AuditAction::AuthRefreshTokenReuse,
        AuditAction::ChangeRequestSubmitted,
        AuditAction::ChangeRequestUpdated,
        AuditAction::ChangeRequestApproved,
        AuditAction::ChangeRequestRejected,
        AuditAction::ChangeRequestOverridden,
        AuditAction::ChangeRequestCancelled,
        AuditAction::ChangeRequestApplied,
        AuditAction::ChangeRequestExpired,
        AuditAction::EmailRequeued,
        AuditAction::GroupCreated,
        AuditAction::GroupUpdated,
        AuditAction::GroupDeleted,
        AuditAction::GroupMemberAdded,
        AuditAction::GroupMemberRemoved,
        AuditAction::PasswordResetRequested,
        AuditAction::PortfolioCreated,
        AuditAction::PortfolioUpdated,
        AuditAction::PortfolioDeleted,
        AuditAction::ApplicationCreated,
        AuditAction::ApplicationUpdated,
        AuditAction::ApplicationDeleted,
        AuditAction::EnvironmentCreated,
        AuditAction::EnvironmentUpdated,
        AuditAction::EnvironmentDeleted,
        AuditAction::ServiceAccountCreated,
        AuditAction::ServiceAccountUpdated,
        AuditAction::ServiceAccountDeleted,
        AuditAction::ServiceAccountKeyCreated,
        AuditAction::ServiceAccountKeyRotated,
        AuditAction::ServiceAccountKeyRevoked,
        AuditAction::SettingsUpdated,
        AuditAction::UserCreated,
        AuditAction::UserUpdated,
        AuditAction::UserDeactivated,
        AuditAction::UserReactivated,
        AuditAction::UserDeleted,
        AuditAction::UserPasswordChanged,
        AuditAction::UserPasswordReset,
        AuditAction::UserPasswordResetByAdmin,
        AuditAction::UserRegistrationLinkIssued,
        AuditAction::UserRegistered,
        AuditAction::SecondFactorEnrolmentStarted,
        AuditAction::SecondFactorEnabled,
        AuditAction::SecondFactorRemoved,
        AuditAction::SecondFactorDeadline,
        AuditAction::AuthSsoLogin,
        AuditAction::AuthSsoFailed,
        AuditAction::UserIdentityLinked,
        AuditAction::UserPreferencesUpdated,
        AuditAction::WebhookCreated,
        AuditAction::WebhookUpdated,
        AuditAction::WebhookDeleted,
        AuditAction::WebhookSecretRotated,
        AuditAction::WebhookRedelivered,
        AuditAction::WebhookRewound,
        AuditAction::AuditPruned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::ApprovalPolicyUpdated => "approval_policy.updated",
            AuditAction::AuthLogin => "auth.login",
            AuditAction::AuthLogout => "auth.logout",
            AuditAction::AuthRefresh => "auth.refresh",
            AuditAction::AuthRefreshTokenReuse => "auth.refresh_token_reuse",
            AuditAction::ChangeRequestSubmitted => "change_request.submitted",
            AuditAction::ChangeRequestUpdated => "change_request.updated",
            AuditAction::ChangeRequestApproved => "change_request.approved",
            AuditAction::ChangeRequestRejected => "change_request.rejected",
            AuditAction::ChangeRequestOverridden => "change_request.overridden",
            AuditAction::ChangeRequestCancelled => "change_request.cancelled",
            AuditAction::ChangeRequestApplied => "change_request.applied",
            AuditAction::ChangeRequestExpired => "change_request.expired",
            AuditAction::EmailRequeued => "email.requeued",
            AuditAction::GroupCreated => "group.created",
            AuditAction::GroupUpdated => "group.updated",
            AuditAction::GroupDeleted => "group.deleted",
            AuditAction::GroupMemberAdded => "group.member_added",
            AuditAction::GroupMemberRemoved => "group.member_removed",
            AuditAction::PasswordResetRequested => "password_reset.requested",
            AuditAction::PortfolioCreated => "portfolio.created",
            AuditAction::PortfolioUpdated => "portfolio.updated",
            AuditAction::PortfolioDeleted => "portfolio.deleted",
            AuditAction::ApplicationCreated => "application.created",
            AuditAction::ApplicationUpdated => "application.updated",
            AuditAction::ApplicationDeleted => "application.deleted",
            AuditAction::EnvironmentCreated => "environment.created",
            AuditAction::EnvironmentUpdated => "environment.updated",
            AuditAction::EnvironmentDeleted => "environment.deleted",
            AuditAction::ServiceAccountCreated => "service_account.created",
            AuditAction::ServiceAccountUpdated => "service_account.updated",
            AuditAction::ServiceAccountDeleted => "service_account.deleted",
            AuditAction::ServiceAccountKeyCreated => "service_account.key_created",
            AuditAction::ServiceAccountKeyRotated => "service_account.key_rotated",
            AuditAction::ServiceAccountKeyRevoked => "service_account.key_revoked",
            AuditAction::SettingsUpdated => "settings.updated",
            AuditAction::UserCreated => "user.created",
            AuditAction::UserUpdated => "user.updated",
            AuditAction::UserDeactivated => "user.deactivated",
            AuditAction::UserReactivated => "user.reactivated",
            AuditAction::UserDeleted => "user.deleted",
            AuditAction::UserPasswordChanged => "user.password_changed",
            AuditAction::UserPasswordReset => "user.password_reset",
            AuditAction::UserPasswordResetByAdmin => "user.password_reset_by_admin",
            AuditAction::UserRegistrationLinkIssued => "user.registration_link_issued",
            AuditAction::UserRegistered => "user.registered",
            AuditAction::SecondFactorEnrolmentStarted => "user.second_factor_enrolment_started",
            AuditAction::SecondFactorEnabled => "user.second_factor_enabled",
            AuditAction::SecondFactorRemoved => "user.second_factor_removed",
            AuditAction::SecondFactorDeadline => "user.second_factor_deadline",
            AuditAction::AuthSsoLogin => "auth.sso_login",
            AuditAction::AuthSsoFailed => "auth.sso_failed",
            AuditAction::UserIdentityLinked => "user.identity_linked",
            AuditAction::UserPreferencesUpdated => "user.preferences_updated",
            AuditAction::WebhookCreated => "webhook.created",
            AuditAction::WebhookUpdated => "webhook.updated",
            AuditAction::WebhookDeleted => "webhook.deleted",
            AuditAction::WebhookSecretRotated => "webhook.secret_rotated",
            AuditAction::WebhookRedelivered => "webhook.redelivered",
            AuditAction::WebhookRewound => "webhook.rewound",
            AuditAction::AuditPruned => "audit.pruned",
        }
    }

    /// The action on one kind of catalog entry (`portfolio`, `application`, `environment`).
    pub fn catalog(noun: &str, verb: CatalogVerb) -> Option<AuditAction> {
        use AuditAction as A;
        use CatalogVerb as V;
        Some(match (noun, verb) {
            ("portfolio", V::Created) => A::PortfolioCreated,
            ("portfolio", V::Updated) => A::PortfolioUpdated,
            ("portfolio", V::Deleted) => A::PortfolioDeleted,
            ("application", V::Created) => A::ApplicationCreated,
            ("application", V::Updated) => A::ApplicationUpdated,
            ("application", V::Deleted) => A::ApplicationDeleted,
            ("environment", V::Created) => A::EnvironmentCreated,
            ("environment", V::Updated) => A::EnvironmentUpdated,
            ("environment", V::Deleted) => A::EnvironmentDeleted,
            _ => return None,
        })
    }
}

/// What happened to a catalog entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogVerb {
    Created,
    Updated,
    Deleted,
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds the event of `action` on a target of `target_type` (`"user"`, `"change_request"`…)
/// named `target`; the caller fills in who and from where (see [`crate::Ctx::event`]).
pub fn event(action: AuditAction, target_type: &str, target: Option<String>) -> NewEvent {
    NewEvent {
        action: action.as_str().to_owned(),
        target_type: target_type.to_owned(),
        target_id: target,
        outcome: "success".into(),
        ..Default::default()
    }
}

/// An audit detail with the caller's reason (a role change's rationale, say), when one was given.
pub fn with_reason(detail: String, reason: &str) -> String {
    if reason.is_empty() {
        detail
    } else {
        format!("{detail}; reason: {reason}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_dotted() {
        let mut seen = std::collections::HashSet::new();
        for a in AuditAction::ALL {
            assert!(seen.insert(a.as_str()), "{a} twice");
            assert_eq!(a.as_str().matches('.').count(), 1, "{a}");
        }
    }
}
