//! Resource names, as the API and the audit trail spell them.

use fluxgate_domain::{
    ApplicationId, ChangeRequestId, EnvironmentId, PortfolioId, ServiceAccountId, UserId,
};

pub fn change_request(id: ChangeRequestId) -> String {
    format!("changeRequests/{id}")
}

pub fn application(p: impl std::fmt::Display, a: impl std::fmt::Display) -> String {
    format!("portfolios/{p}/applications/{a}")
}

pub fn environment(
    p: impl std::fmt::Display,
    a: impl std::fmt::Display,
    e: impl std::fmt::Display,
) -> String {
    format!("portfolios/{p}/applications/{a}/environments/{e}")
}

/// An environment's place in the catalog, as ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvPath {
    pub portfolio: PortfolioId,
    pub application: ApplicationId,
    pub environment: EnvironmentId,
}

impl EnvPath {
    pub fn name(&self) -> String {
        environment(self.portfolio, self.application, self.environment)
    }

    /// The name of the environment's approval policy.
    pub fn policy_name(&self) -> String {
        format!("{}/approvalPolicy", self.name())
    }
}

/// What a user resource name refers to: `users/{id}` or `users/{username}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    Id(UserId),
    Username(String),
}

/// A principal reference: `users/{id}`, `users/{username}` or `serviceAccounts/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalRef {
    User(UserRef),
    ServiceAccount(ServiceAccountId),
}

pub fn group(portfolio: impl std::fmt::Display, group: impl std::fmt::Display) -> String {
    format!("portfolios/{portfolio}/groups/{group}")
}
