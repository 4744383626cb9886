//! The FluxGate server: tonic services over the store, the engine and the in-memory directory.
//!
//! Architecture invariant: this is the only crate that knows both protobuf/tonic and the
//! domain; conversions live in [`convert`], and [`error`] is the one place where errors become
//! gRPC statuses.

pub mod audit_json;
pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod console;
pub mod convert;
pub mod db;
pub mod directory;
pub mod error;
pub mod idempotency;
pub mod incoming;
pub mod lockdown;
pub mod mail;
pub mod metrics;
pub mod oidc;
pub mod passwords;
pub mod retention;
pub mod runner;
pub mod scim_http;
pub mod scim_patch;
pub mod server;
pub mod services;
pub mod sso_http;
pub mod state;
pub mod telemetry;
pub mod tokens;
pub mod watch;
pub mod web_session;
pub mod webhooks;

pub use config::Config;
pub use server::Server;
