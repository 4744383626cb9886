//! Refusals: the request was well formed and the caller allowed, but a rule of the domain says
//! no, given how things stand. Each variant's text is the message a client reads; which status
//! code carries it is decided in one place, by the server, from [`Refusal::kind`].

use crate::RequestState;

/// How a client should take a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The state of things does not allow it; retrying will not help until it changes.
    Precondition,
    /// The caller acted on a stale view (an etag, a revision): read again and retry.
    Stale,
    /// Something with that identity exists already.
    Exists,
    /// A limit on how often is reached: try again later.
    Exhausted,
    /// The credentials do not hold (the one answer to every failed sign-in).
    Unauthenticated,
    /// A position past the range that exists now (a sequence number beyond the trail's ends).
    OutOfRange,
}

/// Why a rule said no.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the change request is {state}; only pending requests are {doing}")]
    NotPending {
        state: RequestState,
        doing: &'static str,
    },
    #[error("the change request has expired")]
    Expired,
    /// The sweeper's own refusal: the request is not (yet) due to expire.
    #[error("the change request is not due to expire")]
    NotDue,
    #[error("the change request is {state}; only pending or approved requests are cancelled")]
    NotCancellable { state: RequestState },
    #[error("the change request was already applied by {}", by.as_deref().unwrap_or("an earlier call"))]
    AlreadyApplied { by: Option<String> },
    #[error("the change request is {state}; only approved requests are applied")]
    NotApproved { state: RequestState },
    #[error(
        "the request was edited: you reviewed revision {reviewed}, it is now at revision \
         {current}; read it again"
    )]
    StaleRevision { reviewed: i64, current: i64 },
    #[error("you have already reviewed revision {round} of this change request")]
    AlreadyReviewed { round: i64 },
    #[error(
        "etag {given:?} is stale or belongs to another resource (current {current}): read again \
         and retry"
    )]
    StaleEtag { given: String, current: String },
    /// Something still refers to what is to be deleted: `refs` counts each kind of referrer.
    #[error(
        "{what} is still in use ({}): remove them first, or pass force",
        in_use(refs)
    )]
    StillReferenced {
        what: String,
        refs: Vec<(usize, &'static str)>,
    },
    #[error("a {noun} named {name:?} already exists here")]
    NameTaken { noun: &'static str, name: String },
    #[error("a group named {name:?} already exists in the portfolio")]
    GroupNameTaken { name: String },
    #[error(
        "the Administrators group keeps its name and holds every permission: only its \
         description can change"
    )]
    AdministratorsFixed,
    #[error("the Administrators group cannot be deleted")]
    AdministratorsUndeletable,
    #[error("the group has {members} member(s): remove them first, or pass force")]
    GroupHasMembers { members: i64 },
    #[error("a portfolio service account may only join groups of its own portfolio")]
    ForeignServiceAccount,
    #[error("already a member of the group")]
    AlreadyMember,
    #[error("username {name:?} is already taken")]
    UsernameTaken { name: String },
    #[error("email {email:?} is already in use")]
    EmailTaken { email: String },
    #[error("cannot {what} the last active Team Admin: promote another user first")]
    LastTeamAdmin { what: &'static str },
    #[error("the user is already deactivated")]
    AlreadyDeactivated,
    #[error("the user is already active")]
    AlreadyActive,
    #[error("only a deactivated user can be deleted: deactivate first")]
    NotDeactivated,
    #[error("portfolio service accounts are Requesters")]
    PortfolioAccountRole,
    #[error("only admin service accounts may write audit events")]
    PortfolioAccountAuditWriter,
    #[error("the key is already revoked or expired")]
    KeyNotLive,
    #[error("no SMTP server is configured (email.smtp_url): messages can only be held")]
    NoSmtp,
    #[error("only failed or held messages can be retried; this one is {state}")]
    NotRetryable { state: &'static str },
    #[error(
        "{}",
        if *registration {
            "this is a registration link: use CompleteRegistration"
        } else {
            "this is a password-reset link: use ConfirmPasswordReset"
        }
    )]
    WrongLink { registration: bool },
    #[error("the link has already been used: ask for a new one")]
    LinkUsed,
    #[error("a newer link has been issued since this one: use the newest link")]
    LinkSuperseded,
    #[error("the link expired at {at}: ask for a new one")]
    LinkExpired { at: String },
    #[error("the account is deactivated: ask a Team Admin")]
    LinkAccountDeactivated,
    #[error("the account already has a password: log in, or ask for a password reset")]
    AlreadyHasPassword,
    #[error("the user is deactivated: reactivate them first")]
    UserDeactivated,
    #[error("the user changed meanwhile: read it again and retry")]
    UserChanged,
    #[error("too many password-reset requests from this address: try again later")]
    TooManyResetRequests,
    #[error("the user has already set a password: use ResetUserPassword")]
    PasswordAlreadySet,
    #[error("too many failed login attempts: try again later")]
    LockedOut,
    #[error("too many sign-ins started from this address: try again later")]
    TooManySignIns,
    #[error("invalid username or password")]
    BadCredentials,
    #[error("only users logged in with a session can do this; service accounts use API keys")]
    NotASession,
    #[error(
        "a second-factor code is required: send the code of your authenticator app or a recovery code"
    )]
    SecondFactorRequired,
    #[error("a second factor is already set up: remove it before enrolling again")]
    SecondFactorEnrolled,
    #[error("no second-factor enrolment is pending: begin one first")]
    NoPendingEnrolment,
    #[error("the code does not match: enter the current code of your authenticator app")]
    WrongEnrolmentCode,
    #[error("the user has no second factor")]
    NoSecondFactor,
    #[error("the password changed meanwhile: log in again")]
    PasswordChangedMeanwhile,
    #[error(
        "password sign-in is disabled for this organisation: sign in through your identity \
         provider"
    )]
    PasswordSignInDisabled,
    #[error(
        "this account signs in through an identity provider and has no password: sign in there"
    )]
    SsoOnly,
    /// A sign-in through an identity provider that did not hold; `why` says what did not.
    #[error("single sign-on failed: {why}")]
    SsoFailed { why: String },
    #[error(
        "the identity provider vouched for an account that is deactivated here: ask a Team Admin"
    )]
    SsoAccountDeactivated,
    #[error(
        "no account here matches this identity, and this provider may not create one: ask a \
         Team Admin"
    )]
    SsoNoAccount,
    #[error(
        "the audit trail holds sequence numbers {floor} to {head} now (pruned up to {floor}): \
         start within them"
    )]
    SequenceOutOfRange { floor: i64, head: i64 },
    #[error("at most {max} {what}: delete one first")]
    TooMany { what: &'static str, max: u64 },
}

fn in_use(refs: &[(usize, &'static str)]) -> String {
    refs.iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, w)| format!("{n} {w}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Refusal {
    pub fn kind(&self) -> RefusalKind {
        match self {
            Refusal::StaleRevision { .. } | Refusal::StaleEtag { .. } | Refusal::UserChanged => {
                RefusalKind::Stale
            }
            Refusal::TooManyResetRequests
            | Refusal::LockedOut
            | Refusal::TooManySignIns
            | Refusal::TooMany { .. } => RefusalKind::Exhausted,
            Refusal::BadCredentials | Refusal::SsoFailed { .. } => RefusalKind::Unauthenticated,
            Refusal::PasswordChangedMeanwhile => RefusalKind::Stale,
            Refusal::SequenceOutOfRange { .. } => RefusalKind::OutOfRange,
            Refusal::NotPending { .. }
            | Refusal::Expired
            | Refusal::NotDue
            | Refusal::NotCancellable { .. }
            | Refusal::AlreadyApplied { .. }
            | Refusal::NotApproved { .. }
            | Refusal::AlreadyReviewed { .. }
            | Refusal::StillReferenced { .. }
            | Refusal::AdministratorsFixed
            | Refusal::AdministratorsUndeletable
            | Refusal::GroupHasMembers { .. }
            | Refusal::ForeignServiceAccount
            | Refusal::LastTeamAdmin { .. }
            | Refusal::AlreadyDeactivated
            | Refusal::AlreadyActive
            | Refusal::NotDeactivated
            | Refusal::PortfolioAccountRole
            | Refusal::PortfolioAccountAuditWriter
            | Refusal::KeyNotLive
            | Refusal::NoSmtp
            | Refusal::NotRetryable { .. }
            | Refusal::WrongLink { .. }
            | Refusal::LinkUsed
            | Refusal::LinkSuperseded
            | Refusal::LinkExpired { .. }
            | Refusal::LinkAccountDeactivated
            | Refusal::AlreadyHasPassword
            | Refusal::UserDeactivated
            | Refusal::PasswordAlreadySet
            | Refusal::NotASession
            | Refusal::SecondFactorRequired
            | Refusal::SecondFactorEnrolled
            | Refusal::NoPendingEnrolment
            | Refusal::NoSecondFactor
            | Refusal::PasswordSignInDisabled
            | Refusal::SsoOnly
            | Refusal::SsoAccountDeactivated
            | Refusal::SsoNoAccount
            | Refusal::WrongEnrolmentCode => RefusalKind::Precondition,
            Refusal::NameTaken { .. }
            | Refusal::GroupNameTaken { .. }
            | Refusal::AlreadyMember
            | Refusal::UsernameTaken { .. }
            | Refusal::EmailTaken { .. } => RefusalKind::Exists,
        }
    }
}
