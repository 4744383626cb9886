//! Errors and the exit codes scripts branch on.

use std::fmt;

use tonic::Code;
use tonic_types::StatusExt;

/// Exit codes of `fluxctl`. Stable: scripts depend on them.
pub mod exit {
    /// Success (for `change-requests wait`: approved or applied).
    pub const OK: i32 = 0;
    /// Any other error.
    pub const OTHER: i32 = 1;
    /// Bad usage: unknown command or flag, malformed value.
    pub const USAGE: i32 = 2;
    /// The resource does not exist.
    pub const NOT_FOUND: i32 = 3;
    /// Not logged in, session expired, or bad credentials: sign in again.
    pub const AUTH: i32 = 4;
    /// The server refused an argument (field violations are printed).
    pub const INVALID_ARGUMENT: i32 = 5;
    /// Already exists, failed precondition, or aborted (stale etag or revision).
    pub const CONFLICT: i32 = 6;
    /// Server unavailable, deadline exceeded, or rate-limited: retrying later may work.
    pub const UNAVAILABLE: i32 = 7;
    /// Signed in, but not allowed (PERMISSION_DENIED; `permissions check --exit-code`: denied).
    pub const DENIED: i32 = 8;
    /// `change-requests wait`: the request was rejected.
    pub const REJECTED: i32 = 10;
    /// `change-requests wait`: cancelled, expired, or another final state without approval.
    pub const NOT_APPROVED: i32 = 11;
    /// `change-requests wait`: still undecided when `--timeout` ran out.
    pub const WAIT_TIMEOUT: i32 = 12;
}

/// Printed at the end of `fluxctl --help`: output, credentials and the exit-code table.
pub const AFTER_HELP: &str = "\
Output: tables by default; -o json prints the response message in the protobuf JSON mapping,
one document per command (`change-requests wait`: the last state seen; `audit export` always
writes JSON lines, one event per line); -o name prints only the resource name.

Credentials: --token / FLUXGATE_TOKEN (an API key or access token), else the session file that
`fluxctl login` wrote (mode 0600), refreshed when its access token is due. Mutating calls send
an idempotency-key (fresh per invocation unless --idempotency-key) and every call an
x-request-id, printed with errors.

Exit codes:
  0   success (change-requests wait: approved)
  1   other error
  2   usage error
  3   not found
  4   unauthenticated: not logged in, session ended, bad credentials (log in again)
  5   invalid argument (the server's field violations are printed)
  6   conflict: already exists, failed precondition, aborted (stale etag/revision)
  7   unavailable, deadline exceeded or rate-limited (retry later)
  8   permission denied: signed in but not allowed (ask for access)
  10  change-requests wait: rejected
  11  change-requests wait: cancelled, expired or otherwise closed without approval
  12  change-requests wait: timed out waiting for a decision";

/// An error that ends the command, with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    /// Process exit code.
    pub code: i32,
    /// The first line after `error: `.
    pub message: String,
    /// Further lines, printed indented (field violations, hints).
    pub details: Vec<String>,
}

impl CliError {
    /// An error with an exit code and a message.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// A local failure that is neither usage nor server-side (exit 1).
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(exit::OTHER, message)
    }

    /// A malformed value given on the command line (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(exit::USAGE, message)
    }

    /// Authentication is missing or no longer valid (exit 4).
    pub fn auth(message: impl Into<String>) -> Self {
        Self::new(exit::AUTH, message)
    }

    /// Signed in but not allowed (exit 8).
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(exit::DENIED, message)
    }

    /// Maps a gRPC status, with the request id the call carried.
    pub fn from_status(status: &tonic::Status, request_id: &str) -> Self {
        let mut details = field_violations(status);
        if !request_id.is_empty() {
            details.push(format!("(request id: {request_id})"));
        }
        let message = if status.message().is_empty() {
            code_name(status.code()).to_owned()
        } else {
            let text = crate::commands::name_commands(status.message());
            format!("{}: {text}", code_name(status.code()))
        };
        Self {
            code: exit_code(status.code()),
            message,
            details,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        for d in &self.details {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CliError {}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        Self::other(e.to_string())
    }
}

impl From<serde_json::Error> for CliError {
    fn from(e: serde_json::Error) -> Self {
        Self::other(format!("JSON: {e}"))
    }
}

/// `field: description` for each BadRequest field violation of the status.
fn field_violations(status: &tonic::Status) -> Vec<String> {
    let details = status.get_error_details();
    details
        .bad_request()
        .map(|b| {
            b.field_violations
                .iter()
                .map(|v| format!("{}: {}", v.field, v.description))
                .collect()
        })
        .unwrap_or_default()
}

/// The exit code for a gRPC status code.
pub fn exit_code(code: Code) -> i32 {
    match code {
        Code::Ok => exit::OK,
        Code::NotFound => exit::NOT_FOUND,
        Code::Unauthenticated => exit::AUTH,
        Code::PermissionDenied => exit::DENIED,
        Code::InvalidArgument | Code::OutOfRange => exit::INVALID_ARGUMENT,
        Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => exit::CONFLICT,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => exit::UNAVAILABLE,
        _ => exit::OTHER,
    }
}

/// The canonical name of a gRPC status code, as in the gRPC documentation.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The result type of commands.
pub type Result<T, E = CliError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_documented_exits() {
        assert_eq!(exit_code(Code::NotFound), 3);
        assert_eq!(exit_code(Code::PermissionDenied), 8);
        assert_eq!(exit_code(Code::Unauthenticated), 4);
        assert_eq!(exit_code(Code::InvalidArgument), 5);
        assert_eq!(exit_code(Code::Aborted), 6);
        assert_eq!(exit_code(Code::Unavailable), 7);
        assert_eq!(exit_code(Code::Internal), 1);
    }

    #[test]
    fn display_puts_details_on_their_own_lines() {
        let mut e = CliError::new(5, "INVALID_ARGUMENT: bad");
        e.details.push("user.email: required".into());
        assert_eq!(
            e.to_string(),
            "error: INVALID_ARGUMENT: bad\n  user.email: required"
        );
    }
}
