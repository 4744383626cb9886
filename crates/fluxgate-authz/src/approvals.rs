//! The four-eyes rules: who may submit, see, edit, cancel, review, override and apply a change
//! request. State rules (only pending requests are reviewed, an approved one is applied once)
//! belong to the request's life cycle in `fluxgate-domain`; these are the rights.
//!
//! **One party never both authors and approves a change.** The party behind a principal is the
//! principal itself and, for a service account, whoever it acts for: its creator and whoever
//! created (or rotated in) one of its live keys, transitively ([`Snapshot::party`]). Nobody
//! reviews or overrides a request submitted by their own party, and a request is applied only
//! while none of the approvals that carried it came from the submitter's party (a key rotated
//! after the approval can make it so). Team Admins are held to it like everyone else; a policy
//! that needs no approval has no approver to hold.

use fluxgate_domain::{ChangeKind, EnvironmentId, Permission, PrincipalId, Role};

use crate::decision::{Decision, Reason, ResourceRef};
use crate::snapshot::Snapshot;

/// What the engine needs to know about a change request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestFacts<'a> {
    pub submitter: &'a PrincipalId,
    pub kind: ChangeKind,
    pub environment: EnvironmentId,
    /// The policy the request is held to: whether Requester-role reviews count.
    pub peer_review: bool,
    /// The policy the request is held to: whether a Team Admin may override.
    pub admin_override: bool,
    /// Whose approvals (or override) of the current revision made or make it approved; applying
    /// re-checks that none of them is the submitter's party.
    pub approvers: &'a [PrincipalId],
}

/// Something a principal may want to do with a change request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestAction {
    /// Submit a new request (the facts describe it).
    Submit,
    /// Read the request.
    View,
    /// Change a pending request (only its submitter).
    Edit,
    /// Withdraw a pending or approved request: its submitter, a Team Admin or an
    /// Administrator of the portfolio.
    Cancel,
    /// Approve or reject.
    Review,
    /// Approve past the policy (Team Admins, where the policy allows).
    Override,
    /// Mark an approved request applied (the flag store's service account).
    Apply,
}

impl RequestAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestAction::Submit => "submit",
            RequestAction::View => "view",
            RequestAction::Edit => "edit",
            RequestAction::Cancel => "cancel",
            RequestAction::Review => "review",
            RequestAction::Override => "override",
            RequestAction::Apply => "apply",
        }
    }
}

impl Snapshot {
    /// May `principal` exercise the permission `kind` needs on the request's target (feature
    /// permissions are held on the environment's application, value permissions on the
    /// environment; the engine resolves an environment to its application for the former).
    pub fn may_change(
        &self,
        principal: &PrincipalId,
        kind: ChangeKind,
        env: EnvironmentId,
    ) -> Decision {
        self.check(principal, kind.permission(), ResourceRef::Environment(env))
    }

    /// May `principal` do `action` to the request described by `req`, and why.
    pub fn change_request(
        &self,
        principal: &PrincipalId,
        action: RequestAction,
        req: &RequestFacts<'_>,
    ) -> Decision {
        let Some(role) = self.role(principal) else {
            return Decision::deny(Reason::UnknownPrincipal);
        };
        let own = principal == req.submitter;
        let needed = || self.may_change(principal, req.kind, req.environment);
        match action {
            RequestAction::Submit => needed(),
            RequestAction::View => {
                let d = self.check(
                    principal,
                    Permission::Read,
                    ResourceRef::Environment(req.environment),
                );
                if d.allowed
                    || matches!(
                        d.reason,
                        Reason::Inactive
                            | Reason::PasswordChangeRequired
                            | Reason::SecondFactorEnrolmentOverdue
                    )
                {
                    return d;
                }
                if own {
                    return Decision::allow(Reason::Submitter);
                }
                needed()
            }
            RequestAction::Edit => {
                if !own {
                    return Decision::deny(Reason::NotSubmitter);
                }
                needed()
            }
            RequestAction::Cancel => {
                let d = self.check(
                    principal,
                    Permission::Read,
                    ResourceRef::Environment(req.environment),
                );
                match d.reason {
                    Reason::Inactive
                    | Reason::PasswordChangeRequired
                    | Reason::SecondFactorEnrolmentOverdue => d,
                    Reason::TeamAdmin | Reason::PortfolioAdmin { .. } => d,
                    _ if own => Decision::allow(Reason::Submitter),
                    _ => Decision::deny(Reason::NotSubmitter),
                }
            }
            RequestAction::Review | RequestAction::Override
                if matches!(principal, PrincipalId::ServiceAccount(_)) =>
            {
                // A key is not a second pair of eyes: whoever holds it could approve their own
                // change with it.
                Decision::deny(Reason::ServiceAccountReviewer)
            }
            RequestAction::Review => {
                if own {
                    return Decision::deny(Reason::OwnRequest);
                }
                if let Some(party) = self.shared_party(principal, req.submitter) {
                    return Decision::deny(Reason::SameParty { party });
                }
                if role < Role::Approver && !req.peer_review {
                    return Decision::deny(Reason::RoleRequired {
                        required: Role::Approver,
                        held: role,
                    });
                }
                needed()
            }
            RequestAction::Override => {
                if own {
                    return Decision::deny(Reason::OwnRequest);
                }
                if let Some(party) = self.shared_party(principal, req.submitter) {
                    return Decision::deny(Reason::SameParty { party });
                }
                if role < Role::TeamAdmin {
                    return Decision::deny(Reason::RoleRequired {
                        required: Role::TeamAdmin,
                        held: role,
                    });
                }
                if !req.admin_override {
                    return Decision::deny(Reason::OverrideNotAllowed);
                }
                needed()
            }
            RequestAction::Apply => {
                if !matches!(principal, PrincipalId::ServiceAccount(_)) {
                    return Decision::deny(Reason::NotServiceAccount);
                }
                for approver in req.approvers {
                    if let Some(party) = self.shared_party(approver, req.submitter) {
                        return Decision::deny(Reason::ApprovedBySameParty {
                            approver: *approver,
                            party,
                        });
                    }
                }
                needed()
            }
        }
    }
}
