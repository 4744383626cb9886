//! The server's error type and the one place where errors become gRPC statuses.

use fluxgate_domain::ValidationError;
use fluxgate_store::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// Every way an RPC can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// An etag mismatch or a lost race: read again and retry.
    #[error("{0}")]
    Aborted(String),
    /// A concurrent call with the same idempotency key committed first (the idempotency layer
    /// answers with that call's reply instead).
    #[error("a call with this idempotency key has already been applied")]
    IdempotencyKeyTaken,
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unavailable(String),
    /// A bug or a broken invariant. The detail is logged, never sent.
    #[error("{0}")]
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        ApiError::Invalid(ValidationError::field(field, description))
    }

    pub fn unauthenticated() -> Self {
        ApiError::Unauthenticated("missing, invalid or expired access token".into())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound("not found".into()),
            StoreError::Conflict(_) => {
                ApiError::Aborted("the write conflicted with another; read again and retry".into())
            }
            StoreError::IdempotencyKeyTaken => ApiError::IdempotencyKeyTaken,
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "database unavailable");
                ApiError::Unavailable("the database is unavailable; retry later".into())
            }
            e @ (StoreError::Corrupt(_)
            | StoreError::Migration(_)
            | StoreError::BadUrl(_)
            | StoreError::Database(_)) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::Internal(format!("blocking task failed: {e}"))
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        match e {
            ApiError::Invalid(v) => {
                let message = v.to_string();
                let violations: Vec<FieldViolation> = v
                    .violations
                    .into_iter()
                    .map(|f| FieldViolation::new(f.field, f.description))
                    .collect();
                Status::with_error_details(
                    Code::InvalidArgument,
                    message,
                    ErrorDetails::with_bad_request(violations),
                )
            }
            ApiError::Unauthenticated(m) => Status::unauthenticated(m),
            ApiError::PermissionDenied(m) => Status::permission_denied(m),
            ApiError::NotFound(m) => Status::not_found(m),
            ApiError::AlreadyExists(m) => Status::already_exists(m),
            ApiError::FailedPrecondition(m) => Status::failed_precondition(m),
            ApiError::Aborted(m) => Status::aborted(m),
            e @ ApiError::IdempotencyKeyTaken => Status::aborted(e.to_string()),
            ApiError::ResourceExhausted(m) => Status::resource_exhausted(m),
            ApiError::Unavailable(m) => Status::unavailable(m),
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
