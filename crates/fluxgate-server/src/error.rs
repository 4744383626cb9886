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
    OutOfRange(String),
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

impl From<fluxgate_core::Error> for ApiError {
    fn from(e: fluxgate_core::Error) -> Self {
        use fluxgate_core::Error as E;
        use fluxgate_domain::RefusalKind;
        match e {
            E::Invalid(v) => ApiError::Invalid(v),
            E::Denied(m) => ApiError::PermissionDenied(m),
            E::Unauthenticated(m) => ApiError::Unauthenticated(m),
            E::NotFound(m) => ApiError::NotFound(m),
            E::Refused(r) => match r.kind() {
                RefusalKind::Precondition => ApiError::FailedPrecondition(r.to_string()),
                RefusalKind::Stale => ApiError::Aborted(r.to_string()),
                RefusalKind::Exists => ApiError::AlreadyExists(r.to_string()),
                RefusalKind::Exhausted => ApiError::ResourceExhausted(r.to_string()),
                RefusalKind::Unauthenticated => ApiError::Unauthenticated(r.to_string()),
                RefusalKind::OutOfRange => ApiError::OutOfRange(r.to_string()),
            },
            E::Store(e) => e.into(),
            E::Broken(detail) => ApiError::Internal(detail),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::Internal(format!("blocking task failed: {e}"))
    }
}

/// Field violations sent back at most.
const MAX_VIOLATIONS: usize = 10;
/// Longest status message, before the count of violations left out.
const MAX_MESSAGE_CHARS: usize = 1024;
/// Longest field path or description sent back.
const MAX_VIOLATION_CHARS: usize = 120;

fn clip(s: &mut String) {
    clip_to(s, MAX_VIOLATION_CHARS);
}

/// Cuts `s` to at most `max` bytes (on a character boundary), marking the cut with how much
/// was left out. Messages echo input (an etag, a name), and a client's 1 MB value must not come
/// back as a 1 MB status: every message passes through here.
fn clip_to(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let cut = s.len() - end;
        s.truncate(end);
        s.push_str(&format!("… ({cut} more bytes)"));
    }
}

fn clipped(mut s: String) -> String {
    clip_to(&mut s, MAX_MESSAGE_CHARS);
    s
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        match e {
            ApiError::Invalid(mut v) => {
                // Bounded, so that echoing bad input (5,000 unknown mask paths, say) cannot
                // blow the reply's trailers past what clients accept (grpcio: 8 KiB).
                let total = v.violations.len();
                v.violations.truncate(MAX_VIOLATIONS);
                for f in &mut v.violations {
                    clip(&mut f.field);
                    clip(&mut f.description);
                }
                // The message spells out violations while it stays short; all of them (up to
                // the cap) are in the details.
                let mut shown = v.violations.len();
                let mut message = v.to_string();
                while message.len() > MAX_MESSAGE_CHARS && shown > 1 {
                    shown -= 1;
                    message = ValidationError {
                        violations: v.violations[..shown].to_vec(),
                    }
                    .to_string();
                }
                clip_to(&mut message, MAX_MESSAGE_CHARS);
                if total > shown {
                    message.push_str(&format!(
                        " (and {} more; {} in the details)",
                        total - shown,
                        v.violations.len()
                    ));
                }
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
            ApiError::Unauthenticated(m) => Status::unauthenticated(clipped(m)),
            ApiError::PermissionDenied(m) => Status::permission_denied(clipped(m)),
            ApiError::NotFound(m) => Status::not_found(clipped(m)),
            ApiError::AlreadyExists(m) => Status::already_exists(clipped(m)),
            ApiError::FailedPrecondition(m) => Status::failed_precondition(clipped(m)),
            ApiError::Aborted(m) => Status::aborted(clipped(m)),
            e @ ApiError::IdempotencyKeyTaken => Status::aborted(e.to_string()),
            ApiError::ResourceExhausted(m) => Status::resource_exhausted(clipped(m)),
            ApiError::OutOfRange(m) => Status::out_of_range(clipped(m)),
            ApiError::Unavailable(m) => Status::unavailable(clipped(m)),
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
