//! FluxGate's use cases: one home for the rules.
//!
//! Every front door (the gRPC services today; a console, an OIDC callback, SCIM) turns its
//! request into a typed command and hands it here. A use case checks what it can on the
//! engine's snapshot ([`Command::check`], before any lock), then makes its change in the
//! caller's write transaction ([`Command::apply`]): the change, its audit event, its change-log
//! entry and its outbox rows commit together or not at all. It answers with a typed result or a
//! typed [`Error`]: bad input, the engine's denial, a rule's [`fluxgate_domain::Refusal`].
//!
//! * [`context`] — who acts ([`Actor`]), from where ([`Origin`]), against which [`Snapshot`].
//! * [`audit`] — the actions the trail records, as an enum.
//! * [`change_requests`] — approval policies and the change-request life cycle.
//! * [`approval_metrics`] — response times and pending work.
//!
//! Architecture invariant: this crate knows nothing of tokio, tonic, prost or http (a test
//! walks its dependency tree). It blocks: callers run it off their async workers.
//!
//! [`Snapshot`]: fluxgate_authz::Snapshot

pub mod approval_metrics;
pub mod audit;
pub mod catalog;
pub mod change_requests;
pub mod context;
pub mod destinations;
pub mod emails;
pub mod error;
pub mod etag;
pub mod groups;
pub mod logins;
pub mod mail;
pub mod names;
pub mod password_reset;
pub mod preferences;
pub mod provisioning;
pub mod second_factor;
pub mod secrets;
pub mod service_accounts;
pub mod sessions;
pub mod settings;
pub mod sso;
pub mod time;
pub mod trail;
pub mod users;
pub mod webhooks;

pub use audit::AuditAction;
pub use context::{Actor, Command, Ctx, Limits, Origin};
pub use error::{Error, Result};
