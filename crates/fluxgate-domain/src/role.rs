//! The organisation roles, ordered: Requester < Approver < Team Admin.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// An organisation role (SPEC section 1). Ordered: each role includes the rights of the ones
/// before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Requester,
    Approver,
    TeamAdmin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Requester, Role::Approver, Role::TeamAdmin];

    /// The stable name used in storage and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Requester => "requester",
            Role::Approver => "approver",
            Role::TeamAdmin => "team_admin",
        }
    }

    /// True when this role includes every right of `other`.
    pub fn includes(self, other: Role) -> bool {
        self >= other
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| ValidationError::field("", format!("unknown role {s:?}")))
    }
}
