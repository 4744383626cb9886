//! FluxGate end to end: the real server on an ephemeral port, the generated clients, every test
//! on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;
mod smtp;
mod tls;

mod access;
mod approvals;
mod audit;
mod auth;
mod authz_matrix;
mod commits;
mod console;
mod db_outage;
mod failover;
mod hostile_tokens;
mod idempotency;
mod interop;
mod malformed;
mod observability;
mod password_reset;
mod replicas;
mod scim;
mod second_factor;
mod settings;
mod sign_in_policy;
mod sso;
mod users;
mod validation;
mod webhooks;
