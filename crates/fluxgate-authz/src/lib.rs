//! The permission engine.
//!
//! A pure function of (subject facts, action, resource) returning a [`Decision`] that says why:
//! denial is data, never an `Err`. The server loads the facts into memory and asks the engine;
//! nothing here performs I/O.
//!
//! Architecture invariant: this crate depends on `fluxgate-domain` only; it knows nothing of
//! diesel, tokio, tonic or protobuf (`cargo tree -p fluxgate-authz` shows it).

use std::fmt;

use fluxgate_domain::{Role, UserId};

/// What the engine knows about the caller, read from the directory at request time (never from
/// a token's claims).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub user_id: UserId,
    pub role: Role,
    pub active: bool,
    pub must_change_password: bool,
}

/// Something a caller asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read one user.
    ViewUser,
    /// List or search users.
    ListUsers,
    CreateUser,
    /// Change a user's email or display name.
    UpdateUser,
    /// Change a user's role.
    ChangeUserRole,
    DeactivateUser,
    ReactivateUser,
    DeleteUser,
    /// Read every run-time setting.
    ReadSettings,
    UpdateSettings,
    /// Change one's own password, read oneself, log out: all a temporary-password user may do.
    ManageOwnSession,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ViewUser => "view_user",
            Action::ListUsers => "list_users",
            Action::CreateUser => "create_user",
            Action::UpdateUser => "update_user",
            Action::ChangeUserRole => "change_user_role",
            Action::DeactivateUser => "deactivate_user",
            Action::ReactivateUser => "reactivate_user",
            Action::DeleteUser => "delete_user",
            Action::ReadSettings => "read_settings",
            Action::UpdateSettings => "update_settings",
            Action::ManageOwnSession => "manage_own_session",
        }
    }
}

/// What an action applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// The organisation as a whole (creating and listing users, settings).
    Org,
    /// One user.
    User(UserId),
}

/// Why a decision came out as it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Allowed: the subject's role includes the role the action needs.
    RoleGrants { role: Role, required: Role },
    /// Allowed: a principal may do this to itself.
    OwnAccount,
    /// Denied: the subject is deactivated and holds no rights.
    Inactive,
    /// Denied: the subject holds a temporary password and may only change it.
    PasswordChangeRequired,
    /// Denied: the action needs a role the subject lacks.
    RoleRequired { required: Role, held: Role },
    /// Denied: a Team Admin may not do this to their own account.
    SelfProtected { action: Action },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::RoleGrants { role, required } => {
                write!(f, "role {role} includes the required role {required}")
            }
            Reason::OwnAccount => f.write_str("a principal may do this to its own account"),
            Reason::Inactive => f.write_str("the account is deactivated"),
            Reason::PasswordChangeRequired => f.write_str(
                "the password is temporary: change it first (AuthService.ChangePassword)",
            ),
            Reason::RoleRequired { required, held } => {
                write!(f, "requires role {required}; the caller has role {held}")
            }
            Reason::SelfProtected { action } => {
                write!(
                    f,
                    "{} may not be applied to one's own account",
                    action.as_str()
                )
            }
        }
    }
}

/// The engine's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
}

impl Decision {
    fn allow(reason: Reason) -> Self {
        Self {
            allowed: true,
            reason,
        }
    }
    fn deny(reason: Reason) -> Self {
        Self {
            allowed: false,
            reason,
        }
    }
}

/// The role an organisation-level action needs.
fn required_role(action: Action) -> Role {
    match action {
        Action::ManageOwnSession => Role::Requester,
        Action::ViewUser
        | Action::ListUsers
        | Action::CreateUser
        | Action::UpdateUser
        | Action::ChangeUserRole
        | Action::DeactivateUser
        | Action::ReactivateUser
        | Action::DeleteUser
        | Action::ReadSettings
        | Action::UpdateSettings => Role::TeamAdmin,
    }
}

/// May `subject` do `action` to `resource`, and why.
pub fn decide(subject: &Subject, action: Action, resource: Resource) -> Decision {
    if !subject.active {
        return Decision::deny(Reason::Inactive);
    }
    if subject.must_change_password && action != Action::ManageOwnSession {
        return Decision::deny(Reason::PasswordChangeRequired);
    }
    let own = matches!(resource, Resource::User(id) if id == subject.user_id);
    if own {
        match action {
            Action::ViewUser | Action::ManageOwnSession => {
                return Decision::allow(Reason::OwnAccount);
            }
            Action::DeactivateUser | Action::DeleteUser | Action::ChangeUserRole => {
                return Decision::deny(Reason::SelfProtected { action });
            }
            _ => {}
        }
    }
    let required = required_role(action);
    if subject.role.includes(required) {
        Decision::allow(Reason::RoleGrants {
            role: subject.role,
            required,
        })
    } else {
        Decision::deny(Reason::RoleRequired {
            required,
            held: subject.role,
        })
    }
}

#[cfg(test)]
mod tests;
