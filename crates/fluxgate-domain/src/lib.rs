//! FluxGate's domain: identifiers, roles, validated values, policies and the validation error
//! that carries field violations.
//!
//! Architecture invariant: this crate does no I/O and knows nothing of diesel, tokio, tonic or
//! protobuf. Every other crate depends on it; it depends on none of them.

mod approval;
mod error;
mod ids;
mod permission;
mod policy;
mod refusal;
mod role;
mod values;

pub use approval::{
    ApprovalPolicy, ChangeKind, FeatureKey, Life, RequestState, Step, Verdict, opening_state,
    state_after,
};
pub use error::{FieldViolation, ValidationError, Violations};
pub use ids::{
    ApplicationId, ChangeRequestId, DeliveryId, EmailId, EnvironmentId, GroupId, KeyId,
    PortfolioId, PrincipalId, ServiceAccountId, SessionId, UserId, WebhookId,
};
pub use permission::{FeaturePermission, Permission, ValuePermission, ValuePermissions};
pub use policy::{
    LockoutPolicy, MAX_BREAK_GLASS_USERS, PASSWORD_HARD_MAX, PasswordPolicy, Settings,
    SignInPolicy, TokenPolicy,
};
pub use refusal::{Refusal, RefusalKind};
pub use role::Role;
pub use values::{
    Description, DisplayName, Email, Title, Username, confusable, is_invisible, normalize_login,
};

#[cfg(test)]
mod tests;
