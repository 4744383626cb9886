//! Requests and decisions.

use std::fmt;

use fluxgate_domain::{
    ApplicationId, EnvironmentId, GroupId, Permission, PortfolioId, PrincipalId, Role, UserId,
};

/// What a permission check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceRef {
    Application(ApplicationId),
    Environment(EnvironmentId),
}

/// An administrative action (as opposed to a feature permission).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read one user.
    ViewUser,
    ListUsers,
    CreateUser,
    /// Change a user's email or display name.
    UpdateUser,
    ChangeUserRole,
    DeactivateUser,
    ReactivateUser,
    DeleteUser,
    ReadSettings,
    UpdateSettings,
    /// Change one's own password, read oneself, log out: all a temporary-password user may do.
    ManageOwnSession,
    /// Read portfolios, applications, environments, groups and memberships.
    ReadCatalog,
    CreatePortfolio,
    UpdatePortfolio,
    DeletePortfolio,
    /// Create, update and delete applications and environments of a portfolio.
    ManageApplications,
    /// Create, update and delete a portfolio's groups and their grants.
    ManageGroups,
    /// Add and remove members of a portfolio's groups.
    ManageMembers,
    /// Read and manage a portfolio's service accounts (or, on the org, admin service accounts).
    ManageServiceAccounts,
    /// Give a service account an organisation role above Requester.
    ChangeServiceAccountRole,
    /// Ask the permission service about another principal.
    CheckOthers,
    /// Query, export and verify the audit trail.
    ReadAudit,
    /// Append events reported by an internal service.
    IngestAudit,
    /// Read the activity report.
    ViewAnalytics,
    /// Read and change environments' approval policies.
    ManageApprovalPolicies,
    /// Read approval response times and pending counts.
    ViewApprovalMetrics,
    /// Reset another user's password to a temporary one.
    ResetUserPassword,
    /// Issue a registration link for a user without a password.
    IssueRegistrationLink,
    /// Read the email outbox and requeue messages.
    ManageEmail,
    /// Provision users and groups from an identity provider (SCIM): provisioning service
    /// accounts only, which may do nothing else.
    /// Subscribe endpoints to events and read their deliveries (Team Admins).
    ManageWebhooks,
    Provision,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ViewUser => "view_user",
            Action::ListUsers => "list_users",
            Action::CreateUser => "create_user",
            Action::UpdateUser => "update_user",
            Action::ChangeUserRole => "change_user_role",
            Action::DeactivateUser => "deactivate_user",
            Action::ReactivateUser => "reactivate_user",
            Action::DeleteUser => "delete_user",
            Action::ReadSettings => "read_settings",
            Action::UpdateSettings => "update_settings",
            Action::ManageOwnSession => "manage_own_session",
            Action::ReadCatalog => "read_catalog",
            Action::CreatePortfolio => "create_portfolio",
            Action::UpdatePortfolio => "update_portfolio",
            Action::DeletePortfolio => "delete_portfolio",
            Action::ManageApplications => "manage_applications",
            Action::ManageGroups => "manage_groups",
            Action::ManageMembers => "manage_members",
            Action::ManageServiceAccounts => "manage_service_accounts",
            Action::ChangeServiceAccountRole => "change_service_account_role",
            Action::CheckOthers => "check_others",
            Action::ReadAudit => "read_audit",
            Action::IngestAudit => "ingest_audit",
            Action::ViewAnalytics => "view_analytics",
            Action::ManageApprovalPolicies => "manage_approval_policies",
            Action::ViewApprovalMetrics => "view_approval_metrics",
            Action::ResetUserPassword => "reset_user_password",
            Action::IssueRegistrationLink => "issue_registration_link",
            Action::ManageEmail => "manage_email",
            Action::ManageWebhooks => "manage_webhooks",
            Action::Provision => "provision",
        }
    }
}

/// What an administrative action applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The organisation as a whole.
    Org,
    /// One user.
    User(UserId),
    /// Something inside one portfolio (the portfolio, or its applications, environments,
    /// groups, memberships, service accounts).
    Portfolio(PortfolioId),
}

/// Why a decision came out as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Allowed: Team Admins hold every permission.
    TeamAdmin,
    /// Allowed: the role includes the role the action needs.
    RoleGrants { role: Role, required: Role },
    /// Allowed: a principal may do this to its own account.
    OwnAccount,
    /// Allowed: the principal is in the portfolio's Administrators group.
    PortfolioAdmin { group: GroupId },
    /// Allowed: a group of the principal grants it.
    GroupGrant { group: GroupId },
    /// Allowed: any active principal may read the catalog.
    Reader,
    /// Allowed: a service account (an internal service) may ask about other principals.
    InternalService,
    /// Allowed: a service account marked as an audit writer.
    AuditWriter,
    /// Denied: only service accounts marked as audit writers may append audit events.
    NotAuditWriter,
    /// Allowed: a provisioning service account provisions.
    Provisioner,
    /// Denied: only provisioning service accounts provision.
    NotProvisioner,
    /// Denied: a provisioning service account may do nothing but provision.
    ProvisioningOnly,
    /// Allowed: the principal submitted the change request.
    Submitter,
    /// Denied: only the change request's submitter may do this.
    NotSubmitter,
    /// Denied: nobody reviews or overrides their own change request.
    OwnRequest,
    /// Denied: the reviewer and the submitter are one party (`party` stands behind both: a
    /// service account acts for its creator and for whoever created or rotated its live keys).
    SameParty { party: PrincipalId },
    /// Denied: an approval that carried the request came from the submitter's party.
    ApprovedBySameParty {
        approver: PrincipalId,
        party: PrincipalId,
    },
    /// Denied: the environment's approval policy does not allow Team Admin override.
    OverrideNotAllowed,
    /// Denied: change requests are applied by the flag store's service account.
    NotServiceAccount,
    /// Denied: reviews come from people; a service account's key is no second pair of eyes.
    ServiceAccountReviewer,
    /// Denied: no such principal.
    UnknownPrincipal,
    /// Denied: no such application or environment.
    UnknownResource,
    /// Denied: the principal is deactivated and holds no rights.
    Inactive,
    /// Denied: the principal holds a temporary password and may only change it.
    PasswordChangeRequired,
    /// Denied: the role requires a second factor, and the time to enrol one has passed.
    SecondFactorEnrolmentOverdue,
    /// Denied: the action needs a role the principal lacks.
    RoleRequired { required: Role, held: Role },
    /// Denied: a Team Admin may not do this to their own account.
    SelfProtected { action: Action },
    /// Denied: the action needs a Team Admin or an Administrator of the portfolio.
    NotPortfolioAdmin { portfolio: PortfolioId },
    /// Denied: none of the principal's groups grants the permission on the resource.
    NoGrant { permission: Permission },
    /// Denied: a value permission is checked on environments, not applications.
    WrongResource { permission: Permission },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::TeamAdmin => f.write_str("Team Admins hold every permission"),
            Reason::RoleGrants { role, required } => {
                write!(f, "role {role} includes the required role {required}")
            }
            Reason::OwnAccount => f.write_str("a principal may do this to its own account"),
            Reason::PortfolioAdmin { group } => {
                write!(f, "member of the portfolio's Administrators group {group}")
            }
            Reason::GroupGrant { group } => write!(f, "granted by group {group}"),
            Reason::Reader => f.write_str("any active principal may read the catalog"),
            Reason::AuditWriter => f.write_str("the service account is an audit writer"),
            Reason::NotAuditWriter => {
                f.write_str("only service accounts marked as audit writers may append audit events")
            }
            Reason::Provisioner => f.write_str("the service account provisions (SCIM)"),
            Reason::NotProvisioner => {
                f.write_str("only provisioning service accounts may provision (SCIM)")
            }
            Reason::ProvisioningOnly => f.write_str(
                "a provisioning service account may only provision users and groups (SCIM)",
            ),
            Reason::Submitter => f.write_str("the principal submitted the change request"),
            Reason::NotSubmitter => f.write_str(
                "only the change request's submitter (or, to cancel, an admin) may do this",
            ),
            Reason::OwnRequest => {
                f.write_str("nobody reviews or overrides their own change request")
            }
            Reason::SameParty { party } => write!(
                f,
                "one party may not both author and approve a change: {party} stands behind the \
                 submitter and the reviewer (a service account acts for its creator and for \
                 whoever created or rotated its live keys)"
            ),
            Reason::ApprovedBySameParty { approver, party } => write!(
                f,
                "one party may not both author and approve a change: the approval of {approver} \
                 comes from the submitter's party ({party} stands behind both; a service \
                 account acts for its creator and for whoever created or rotated its live keys)"
            ),
            Reason::OverrideNotAllowed => {
                f.write_str("the environment's approval policy does not allow Team Admin override")
            }
            Reason::NotServiceAccount => f.write_str(
                "change requests are marked applied by the flag store's service account",
            ),
            Reason::ServiceAccountReviewer => {
                f.write_str("service accounts do not review or override change requests")
            }
            Reason::InternalService => f.write_str(
                "service accounts of internal services may ask about others in their scope",
            ),
            Reason::UnknownPrincipal => f.write_str("no such principal"),
            Reason::UnknownResource => f.write_str("no such application or environment"),
            Reason::Inactive => f.write_str("the account is deactivated"),
            Reason::PasswordChangeRequired => f.write_str(
                "the password is temporary: change it first (AuthService.ChangePassword)",
            ),
            Reason::SecondFactorEnrolmentOverdue => f.write_str(
                "your role requires a second factor and the time to set one up has passed: \
                 enrol one first (AuthService.BeginTotpEnrollment)",
            ),
            Reason::RoleRequired { required, held } => {
                write!(f, "requires role {required}; the caller has role {held}")
            }
            Reason::SelfProtected { action } => {
                write!(
                    f,
                    "{} may not be applied to one's own account",
                    action.as_str()
                )
            }
            Reason::NotPortfolioAdmin { portfolio } => write!(
                f,
                "requires a Team Admin or a member of the Administrators group of portfolio {portfolio}"
            ),
            Reason::NoGrant { permission } => {
                write!(
                    f,
                    "no group of the principal grants {permission} on the resource"
                )
            }
            Reason::WrongResource { permission } => {
                write!(
                    f,
                    "{permission} is checked on an environment, not an application"
                )
            }
        }
    }
}

/// The engine's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
}

impl Decision {
    pub(crate) fn allow(reason: Reason) -> Self {
        Self {
            allowed: true,
            reason,
        }
    }

    pub(crate) fn deny(reason: Reason) -> Self {
        Self {
            allowed: false,
            reason,
        }
    }
}
