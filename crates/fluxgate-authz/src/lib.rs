//! The permission engine.
//!
//! [`Facts`] (principals, catalog, groups, grants, memberships) compile into an immutable
//! [`Snapshot`] with interned indices and bit sets; the snapshot answers checks, batch checks,
//! explanations, look-ups and management questions as pure functions returning a [`Decision`]
//! that says why. Denial is data, never an `Err`. Nothing here performs I/O.
//!
//! Architecture invariant: this crate depends on `fluxgate-domain` (and a hasher) only; it knows
//! nothing of diesel, tokio, tonic or protobuf (`cargo tree -p fluxgate-authz` shows it).

mod approvals;
mod cow;
mod decision;
mod facts;
mod snapshot;

pub use approvals::{RequestAction, RequestFacts};
pub use decision::{Action, Decision, Reason, ResourceRef, Target};
pub use facts::{ApplicationFacts, EnvironmentFacts, Facts, GroupFacts, PrincipalFacts};
pub use snapshot::{Contribution, Explanation, Snapshot};

#[cfg(test)]
mod tests;
