//! The engine's input: plain facts about principals, the catalog and groups. The server keeps
//! them in memory, applies changes to them, and compiles a [`crate::Snapshot`] from them.

use std::collections::{BTreeMap, BTreeSet};

use fluxgate_domain::{
    ApplicationId, EnvironmentId, FeaturePermission, GroupId, PortfolioId, PrincipalId, Role,
    ValuePermissions,
};

/// A user or service account as far as permissions go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalFacts {
    pub role: Role,
    pub active: bool,
    /// A user holding a temporary password: no rights until it is changed.
    pub must_change_password: bool,
    /// A user whose role requires a second factor and whose time to enrol one has passed: no
    /// rights but over their own session (where they enrol) until they have.
    pub second_factor_overdue: bool,
    /// For a portfolio service account, its portfolio.
    pub portfolio: Option<PortfolioId>,
    /// A service account allowed to append audit events.
    pub audit_writer: bool,
    /// A provisioning service account (SCIM): it may provision, and do nothing else.
    pub provisioner: bool,
    /// For a service account, the principals it acts for: its creator and whoever created (or
    /// rotated in) one of its live keys. Whoever stands behind an account is the same *party*
    /// as the account for the four-eyes rules. Empty for users.
    pub acts_for: BTreeSet<PrincipalId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationFacts {
    pub portfolio: PortfolioId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentFacts {
    pub application: ApplicationId,
}

/// A group of a portfolio with its grants and members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupFacts {
    pub portfolio: PortfolioId,
    /// The portfolio's Administrators group: every permission inside the portfolio.
    pub administrators: bool,
    pub application_grants: BTreeMap<ApplicationId, FeaturePermission>,
    pub environment_grants: BTreeMap<EnvironmentId, ValuePermissions>,
    pub members: BTreeSet<PrincipalId>,
}

/// Everything the engine decides from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub principals: BTreeMap<PrincipalId, PrincipalFacts>,
    pub portfolios: BTreeSet<PortfolioId>,
    pub applications: BTreeMap<ApplicationId, ApplicationFacts>,
    pub environments: BTreeMap<EnvironmentId, EnvironmentFacts>,
    pub groups: BTreeMap<GroupId, GroupFacts>,
}
