//! The use cases' one error type. The server maps it to statuses in one place.

use fluxgate_domain::{Refusal, ValidationError};
use fluxgate_store::StoreError;

/// Why a use case did not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command's input is bad, field by field.
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    /// The caller's credentials no longer hold (their account is gone, say).
    #[error("{0}")]
    Unauthenticated(String),
    /// The engine said no; the text carries its reason.
    #[error("{0}")]
    Denied(String),
    /// What the command names does not exist (or is not visible to the caller).
    #[error("{0}")]
    NotFound(String),
    /// A rule of the domain said no.
    #[error("{0}")]
    Refused(#[from] Refusal),
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A bug or a broken invariant. The detail is logged, never shown.
    #[error("{0}")]
    Broken(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn not_found(what: &str) -> Self {
        Error::NotFound(format!("no such {what}"))
    }

    /// The engine's denial of `action` (`"manage approval policies"`, say).
    pub fn denied(action: &str, reason: impl std::fmt::Display) -> Self {
        Error::Denied(format!("{action} denied: {reason}"))
    }

    pub fn unauthenticated() -> Self {
        Error::Unauthenticated("missing, invalid or expired access token".into())
    }

    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        Error::Invalid(ValidationError::field(field, description))
    }
}
