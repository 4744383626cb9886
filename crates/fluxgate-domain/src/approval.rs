//! Change requests and per-environment approval policies (four-eyes review).

use std::fmt;
use std::str::FromStr;

use crate::{Permission, Refusal, ValidationError};

/// What a change request asks the flag store to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    CreateFeature,
    EditFeature,
    DeleteFeature,
    ChangeValue,
    Lock,
    Unlock,
    Retire,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 7] = [
        ChangeKind::CreateFeature,
        ChangeKind::EditFeature,
        ChangeKind::DeleteFeature,
        ChangeKind::ChangeValue,
        ChangeKind::Lock,
        ChangeKind::Unlock,
        ChangeKind::Retire,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::CreateFeature => "create_feature",
            ChangeKind::EditFeature => "edit_feature",
            ChangeKind::DeleteFeature => "delete_feature",
            ChangeKind::ChangeValue => "change_value",
            ChangeKind::Lock => "lock",
            ChangeKind::Unlock => "unlock",
            ChangeKind::Retire => "retire",
        }
    }

    /// The permission the submitter, every reviewer and the applier must hold. Feature
    /// permissions are held on the application, value permissions on the environment.
    /// Retiring a feature in an environment is a value change (FeatureHub's `CHANGE_VALUE`).
    pub fn permission(self) -> Permission {
        match self {
            ChangeKind::CreateFeature => Permission::CreateFeature,
            ChangeKind::EditFeature => Permission::EditFeature,
            ChangeKind::DeleteFeature => Permission::DeleteFeature,
            ChangeKind::ChangeValue | ChangeKind::Retire => Permission::ChangeValue,
            ChangeKind::Lock => Permission::Lock,
            ChangeKind::Unlock => Permission::Unlock,
        }
    }

    /// Whether the change is meaningless without a payload (the new value).
    pub fn needs_payload(self) -> bool {
        matches!(self, ChangeKind::ChangeValue)
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChangeKind {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChangeKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ValidationError::field("", format!("unknown change kind {s:?}")))
    }
}

/// Where a change request is in its life.
///
/// `pending → approved → applied`, or `pending → rejected | cancelled | expired`. A request with
/// no approvals required is approved on submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestState {
    Pending,
    Approved,
    Rejected,
    Cancelled,
    Expired,
    Applied,
}

impl RequestState {
    pub const ALL: [RequestState; 6] = [
        RequestState::Pending,
        RequestState::Approved,
        RequestState::Rejected,
        RequestState::Cancelled,
        RequestState::Expired,
        RequestState::Applied,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Rejected => "rejected",
            RequestState::Cancelled => "cancelled",
            RequestState::Expired => "expired",
            RequestState::Applied => "applied",
        }
    }

    /// No transition leaves a final state.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RequestState::Rejected
                | RequestState::Cancelled
                | RequestState::Expired
                | RequestState::Applied
        )
    }

    /// Whether a decision (approval, rejection, cancellation or expiry) has been reached.
    pub fn is_decided(self) -> bool {
        self != RequestState::Pending
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RequestState {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RequestState::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ValidationError::field("", format!("unknown request state {s:?}")))
    }
}

/// A reviewer's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Approve,
    Reject,
    /// A Team Admin's approval past the policy.
    Override,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Reject => "reject",
            Verdict::Override => "override",
        }
    }
}

impl FromStr for Verdict {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Verdict::Approve, Verdict::Reject, Verdict::Override]
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ValidationError::field("", format!("unknown verdict {s:?}")))
    }
}

/// The state a pending request reaches after a verdict, given how many distinct approvals
/// of the current revision it then holds. Any rejection rejects; an override approves.
pub fn state_after(verdict: Verdict, approvals: u32, required: u32) -> RequestState {
    match verdict {
        Verdict::Reject => RequestState::Rejected,
        Verdict::Override => RequestState::Approved,
        Verdict::Approve if approvals >= required => RequestState::Approved,
        Verdict::Approve => RequestState::Pending,
    }
}

/// A step in a change request's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Its content changed: reviews start over, and the policy read again needs `required`
    /// approvals.
    Edit {
        required: u32,
    },
    /// A verdict, with the approvals of the current revision that count once it is in.
    Review {
        verdict: Verdict,
        approvals: u32,
        required: u32,
    },
    Cancel,
    /// The flag store reports the change done.
    Apply,
    /// The sweeper closes a request left pending past its time to live.
    Expire,
}

/// What a request's life cycle depends on: its state, when it expires (while pending), and who
/// applied it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Life<'a> {
    pub state: RequestState,
    pub expires_at: i64,
    pub applied_by: Option<&'a str>,
}

impl Life<'_> {
    /// Whether a pending request is past its time at `now` (the sweeper closes it within a poll
    /// interval; until then it is refused as if closed).
    pub fn is_past_due(&self, now: i64) -> bool {
        self.expires_at <= now
    }

    /// Refuses unless the request is pending and not past its time: what an edit or a review
    /// (`doing`) needs.
    pub fn ensure_open(&self, now: i64, doing: &'static str) -> Result<(), Refusal> {
        if self.state != RequestState::Pending {
            Err(Refusal::NotPending {
                state: self.state,
                doing,
            })
        } else if self.is_past_due(now) {
            Err(Refusal::Expired)
        } else {
            Ok(())
        }
    }

    /// The state after `step` at `now`, or the rule that refuses it. The whole life cycle:
    ///
    /// * edits and reviews need a pending request not past its time;
    /// * an edit re-opens it (approved at once when its policy needs no approval);
    /// * a verdict decides it by [`state_after`];
    /// * pending (not past its time) and approved requests can be cancelled;
    /// * only approved requests are applied, once;
    /// * only pending requests past their time expire.
    pub fn step(&self, now: i64, step: Step) -> Result<RequestState, Refusal> {
        match step {
            Step::Edit { required } => {
                self.ensure_open(now, "edited")?;
                Ok(opening_state(required))
            }
            Step::Review {
                verdict,
                approvals,
                required,
            } => {
                self.ensure_open(now, "reviewed")?;
                Ok(state_after(verdict, approvals, required))
            }
            Step::Cancel => match self.state {
                RequestState::Pending if self.is_past_due(now) => Err(Refusal::Expired),
                RequestState::Pending | RequestState::Approved => Ok(RequestState::Cancelled),
                state => Err(Refusal::NotCancellable { state }),
            },
            Step::Apply => match self.state {
                RequestState::Approved => Ok(RequestState::Applied),
                RequestState::Applied => Err(Refusal::AlreadyApplied {
                    by: self.applied_by.map(str::to_owned),
                }),
                state => Err(Refusal::NotApproved { state }),
            },
            Step::Expire => match self.state {
                RequestState::Pending if self.is_past_due(now) => Ok(RequestState::Expired),
                RequestState::Pending => Err(Refusal::NotDue),
                state => Err(Refusal::NotPending {
                    state,
                    doing: "expired",
                }),
            },
        }
    }
}

/// The state of a request submitted (or re-opened by an edit) under a policy that needs
/// `required` approvals: pending, or approved at once when it needs none.
pub fn opening_state(required: u32) -> RequestState {
    if required == 0 {
        RequestState::Approved
    } else {
        RequestState::Pending
    }
}

/// An environment's approval policy, set by Team Admins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApprovalPolicy {
    /// Distinct approvals a change needs; 0 approves it on submission.
    pub required_approvals: u32,
    /// Whether Requester-role principals may review (peer review); otherwise reviewers need
    /// the Approver role.
    pub peer_review: bool,
    /// Whether a Team Admin may approve past the policy, with a reason.
    pub admin_override: bool,
    /// How long a pending request lives before it expires.
    pub ttl_secs: u64,
    /// Whether a request must name reviewers on submission, and one of them must be among its
    /// approvers.
    pub require_requested_reviewer: bool,
}

impl ApprovalPolicy {
    pub const MAX_REQUIRED: u32 = 10;
    pub const MIN_TTL_SECS: u64 = 60;
    pub const MAX_TTL_SECS: u64 = 90 * 86_400;

    /// Rejects out-of-range values, naming the fields.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut v = crate::Violations::new();
        if self.required_approvals > Self::MAX_REQUIRED {
            v.add(
                "required_approvals",
                format!("must be at most {}", Self::MAX_REQUIRED),
            );
        }
        if self.require_requested_reviewer && self.required_approvals == 0 {
            v.add(
                "require_requested_reviewer",
                "needs at least one required approval (one of them from a requested reviewer)",
            );
        }
        if !(Self::MIN_TTL_SECS..=Self::MAX_TTL_SECS).contains(&self.ttl_secs) {
            v.add(
                "pending_ttl",
                "must be between one minute and 90 days, in whole seconds",
            );
        }
        v.finish()
    }
}

impl ApprovalPolicy {
    /// The policy that satisfies all of `policies`: the most approvals, peer review and
    /// override only where every one allows them, the shortest time to live. The default
    /// policy when `policies` is empty.
    pub fn strictest(policies: &[ApprovalPolicy]) -> ApprovalPolicy {
        let Some(first) = policies.first() else {
            return ApprovalPolicy::default();
        };
        policies.iter().fold(*first, |a, b| ApprovalPolicy {
            required_approvals: a.required_approvals.max(b.required_approvals),
            peer_review: a.peer_review && b.peer_review,
            admin_override: a.admin_override && b.admin_override,
            ttl_secs: a.ttl_secs.min(b.ttl_secs),
            require_requested_reviewer: a.require_requested_reviewer
                || b.require_requested_reviewer,
        })
    }
}

impl Default for ApprovalPolicy {
    /// Four eyes: one approval from an Approver, no override, a week to decide.
    fn default() -> Self {
        Self {
            required_approvals: 1,
            peer_review: false,
            admin_override: false,
            ttl_secs: 7 * 86_400,
            require_requested_reviewer: false,
        }
    }
}

/// A feature's key as the flag store knows it: 1 to 100 characters, a letter first, then
/// letters, digits, `_`, `-` or `.`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureKey(String);

impl FeatureKey {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        if input.is_empty() {
            return Err(ValidationError::field("", "is required"));
        }
        if input.len() > Self::MAX_CHARS {
            return Err(ValidationError::field(
                "",
                "must be at most 100 characters long",
            ));
        }
        let mut chars = input.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
        if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
            return Err(ValidationError::field(
                "",
                "must start with a letter and hold only letters, digits, '_', '-' and '.'",
            ));
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_states_round_trip() {
        for k in ChangeKind::ALL {
            assert_eq!(k.as_str().parse::<ChangeKind>().unwrap(), k);
        }
        for s in RequestState::ALL {
            assert_eq!(s.as_str().parse::<RequestState>().unwrap(), s);
        }
        assert!("approve".parse::<Verdict>().is_ok());
        assert!("maybe".parse::<Verdict>().is_err());
    }

    #[test]
    fn retire_is_a_value_change() {
        assert_eq!(ChangeKind::Retire.permission(), Permission::ChangeValue);
        assert_eq!(ChangeKind::Lock.permission(), Permission::Lock);
        assert_eq!(
            ChangeKind::DeleteFeature.permission(),
            Permission::DeleteFeature
        );
    }

    #[test]
    fn tally() {
        assert_eq!(state_after(Verdict::Approve, 1, 2), RequestState::Pending);
        assert_eq!(state_after(Verdict::Approve, 2, 2), RequestState::Approved);
        assert_eq!(state_after(Verdict::Reject, 5, 2), RequestState::Rejected);
        assert_eq!(state_after(Verdict::Override, 0, 3), RequestState::Approved);
        assert!(RequestState::Applied.is_final());
        assert!(!RequestState::Approved.is_final());
    }

    #[test]
    fn policy_bounds() {
        assert!(ApprovalPolicy::default().validate().is_ok());
        let bad = ApprovalPolicy {
            required_approvals: 11,
            ttl_secs: 1,
            ..Default::default()
        };
        let e = bad.validate().unwrap_err();
        assert_eq!(e.violations.len(), 2);
    }

    #[test]
    fn strictest_of_several_policies() {
        let lax = ApprovalPolicy {
            required_approvals: 0,
            peer_review: true,
            admin_override: true,
            ttl_secs: 86_400,
            require_requested_reviewer: false,
        };
        let strict = ApprovalPolicy {
            required_approvals: 2,
            peer_review: false,
            admin_override: true,
            ttl_secs: 3_600 * 48,
            require_requested_reviewer: true,
        };
        assert_eq!(
            ApprovalPolicy::strictest(&[lax, strict]),
            ApprovalPolicy {
                required_approvals: 2,
                peer_review: false,
                admin_override: true,
                ttl_secs: 86_400,
                require_requested_reviewer: true,
            }
        );
        assert_eq!(ApprovalPolicy::strictest(&[]), ApprovalPolicy::default());
    }

    #[test]
    fn feature_keys() {
        assert!(FeatureKey::parse("FEATURE_TITLE_TO_UPPERCASE").is_ok());
        assert!(FeatureKey::parse("checkout.v2-beta").is_ok());
        assert!(FeatureKey::parse("").is_err());
        assert!(FeatureKey::parse("9lives").is_err());
        assert!(FeatureKey::parse("has space").is_err());
        assert!(FeatureKey::parse(&"a".repeat(101)).is_err());
    }
}
