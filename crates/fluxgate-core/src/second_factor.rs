//! The second factor of password accounts: TOTP (RFC 6238: SHA-1, 6 digits, 30-second steps,
//! one step of clock drift either way) and single-use recovery codes.
//!
//! Enrolment is two steps: [`BeginTotp`] stores a pending secret and answers it (and its
//! `otpauth://` URI for a QR code); [`ConfirmTotp`] takes a first code, switches the factor on and
//! answers ten recovery codes, shown once and stored as SHA-256 digests. From then on a sign-in
//! needs a code ([`verify`], called by [`crate::sessions::CompleteLogin`] under the write lock): a
//! TOTP code is accepted once (the step it matched is recorded, so it cannot be replayed within its
//! window), a recovery code once. A wrong code is a failed sign-in, with the same answer as a wrong
//! password. [`RemoveSecondFactor`] takes it off: the user themselves, or a Team Admin for anyone.

use fluxgate_authz::{Action, Target};
use fluxgate_domain::{Refusal, UserId};
use fluxgate_store::changes::EntityKind;
use fluxgate_store::{DbConnection, Tx, audit, second_factors, settings, sign_in, users};
use rand::{Rng as _, RngExt as _};
use subtle::ConstantTimeEq as _;
use totp_rs::{Algorithm, TOTP};

use crate::audit::AuditAction;
use crate::context::{Command, Ctx};
use crate::error::{Error, Result};
use crate::names::UserRef;
use crate::secrets::token_hash;
use crate::sessions::own_session;

/// The time step in seconds.
const STEP_SECS: u64 = 30;
/// Recovery codes issued at enrolment.
pub const RECOVERY_CODES: usize = 10;
/// The issuer an authenticator app shows beside the account.
const ISSUER: &str = "FluxGate";

fn totp(secret: &str) -> Result<TOTP> {
    let bytes = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, secret)
        .ok_or_else(|| Error::Broken("a stored TOTP secret is not base32".into()))?;
    Ok(TOTP::new_unchecked(Algorithm::SHA1, 6, 1, STEP_SECS, bytes))
}

/// The step of `now` (microseconds) that `code` matches, allowing one step of drift either way.
pub fn matching_step(secret: &str, code: &str, now_micros: i64) -> Result<Option<i64>> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let t = totp(secret)?;
    let step = (now_micros.max(0) as u64 / 1_000_000) / STEP_SECS;
    let mut found = None;
    for s in [step.saturating_sub(1), step, step + 1] {
        // Compared in constant time; every candidate is computed whatever matched.
        let candidate = t.generate(s * STEP_SECS);
        if bool::from(candidate.as_bytes().ct_eq(code.as_bytes())) && found.is_none() {
            found = Some(s as i64);
        }
    }
    Ok(found)
}

/// Recovery codes look like `abcd-efgh-jkmn`: 60 bits from an alphabet without look-alikes.
fn recovery_code() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut rng = rand::rng();
    let chars: Vec<char> = (0..12)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// How a recovery code is stored and looked up: normalised (case, dashes, spaces), then hashed.
fn recovery_digest(code: &str) -> String {
    let norm: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    token_hash(&format!("recovery:{norm}"))
}

/// A user's second factor, as they may see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub totp_enabled: bool,
    pub enrolment_pending: bool,
    pub recovery_codes_left: i64,
    pub requirement: Requirement,
}

/// The signed-in user's own second factor.
pub fn own_status(cx: &Ctx<'_>, conn: &mut DbConnection) -> Result<Status> {
    let (uid, _) = own_session(cx)?;
    let t = second_factors::find_totp(conn, uid)?;
    Ok(Status {
        totp_enabled: t.as_ref().is_some_and(|t| t.confirmed_at.is_some()),
        enrolment_pending: t.as_ref().is_some_and(|t| t.confirmed_at.is_none()),
        recovery_codes_left: second_factors::recovery_codes_left(conn, uid)?,
        requirement: {
            let s = sign_in::get(conn, uid)?;
            Requirement {
                due_at: s.second_factor_due_at,
                overdue: s.second_factor_overdue,
            }
        },
    })
}

/// Whether a sign-in of `user` may go on with `code`: yes without a confirmed factor; with one,
/// only when `code` is a current TOTP code not used before, or an unused recovery code (used up
/// by this call). Runs in the sign-in's own transaction.
pub fn verify(tx: &mut Tx<'_>, user: UserId, code: Option<&str>) -> Result<Verified> {
    let Some(t) = second_factors::find_totp(tx.conn, user)? else {
        return Ok(Verified::NotNeeded);
    };
    if t.confirmed_at.is_none() {
        return Ok(Verified::NotNeeded);
    }
    let Some(code) = code.map(str::trim).filter(|c| !c.is_empty()) else {
        return Err(Refusal::SecondFactorRequired.into());
    };
    if let Some(step) = matching_step(&t.secret, code, tx.now)? {
        if second_factors::use_step(tx.conn, user, step)? {
            return Ok(Verified::Totp);
        }
        return Err(Refusal::BadCredentials.into());
    }
    if second_factors::use_recovery_code(tx.conn, user, &recovery_digest(code), tx.now)? {
        return Ok(Verified::RecoveryCode);
    }
    Err(Refusal::BadCredentials.into())
}

/// Whether `user` has a confirmed second factor.
pub fn enrolled(conn: &mut DbConnection, user: UserId) -> Result<bool> {
    Ok(second_factors::find_totp(conn, user)?.is_some_and(|t| t.confirmed_at.is_some()))
}

/// What the organisation asks of a user's second factor, as of their last sign-in or refresh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requirement {
    /// When they must have enrolled by (set while their role requires one and they have none).
    pub due_at: Option<i64>,
    /// The deadline passed: until they enrol, they may only manage their own session.
    pub overdue: bool,
}

/// Brings the second factor the sign-in policy asks of `user` up to date, at a sign-in or a
/// refresh: the grace period starts the first time the rule applies to them; once it has passed
/// the account is held to enrolment; both are lifted when the rule no longer applies (a factor
/// enrolled, another role, another policy, an account without a password). Each change is
/// audited, and the directory told (the engine's gate reads `overdue`).
pub fn enforce(cx: &Ctx<'_>, tx: &mut Tx<'_>, user: &users::User) -> Result<Requirement> {
    let policy = settings::load(tx.conn)?
        .map(|s| s.settings.sign_in_policy)
        .unwrap_or_default();
    let mut st = sign_in::get(tx.conn, user.id)?;
    let before = st.clone();
    let applies =
        !st.sso_only && policy.requires_second_factor(user.role) && !enrolled(tx.conn, user.id)?;
    if applies {
        let grace = (policy.second_factor_grace_secs as i64).saturating_mul(1_000_000);
        let due = *st
            .second_factor_due_at
            .get_or_insert(tx.now.saturating_add(grace));
        st.second_factor_overdue = due <= tx.now;
    } else {
        st.second_factor_due_at = None;
        st.second_factor_overdue = false;
    }
    if st != before {
        sign_in::put(tx.conn, &st)?;
        tx.changed(EntityKind::User, user.id.to_string());
        let mut e = cx.event(
            AuditAction::SecondFactorDeadline,
            "user",
            Some(format!("users/{}", user.id)),
        );
        e.detail = Some(match (st.second_factor_due_at, st.second_factor_overdue) {
            (None, _) => "no second factor required any more".into(),
            (Some(_), true) => "second factor overdue: enrolment only until there is one".into(),
            (Some(d), false) => format!(
                "the {} role requires a second factor: enrol by {d} µs",
                user.role.as_str()
            ),
        });
        audit::append(tx.conn, e, tx.now)?;
    }
    Ok(Requirement {
        due_at: st.second_factor_due_at,
        overdue: st.second_factor_overdue,
    })
}

/// How a sign-in's second factor was satisfied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    NotNeeded,
    Totp,
    RecoveryCode,
}

/// What an authenticator app needs: the secret, and the `otpauth://` URI a QR code carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolment {
    pub secret: String,
    pub otpauth_uri: String,
}

/// Starts (or restarts) the signed-in user's TOTP enrolment.
#[derive(Debug, Clone, Default)]
pub struct BeginTotp;

impl Command for BeginTotp {
    type Output = Enrolment;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        own_session(cx).map(drop)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<Enrolment> {
        let (uid, _) = own_session(cx)?;
        if second_factors::find_totp(tx.conn, uid)?.is_some_and(|t| t.confirmed_at.is_some()) {
            return Err(Refusal::SecondFactorEnrolled.into());
        }
        let user = users::find(tx.conn, uid)?.ok_or_else(Error::unauthenticated)?;
        let mut raw = [0u8; 20];
        rand::rng().fill_bytes(&mut raw);
        let secret = base32::encode(base32::Alphabet::Rfc4648 { padding: false }, &raw);
        second_factors::begin_totp(tx.conn, uid, &secret, tx.now)?;
        let e = cx.event(
            AuditAction::SecondFactorEnrolmentStarted,
            "user",
            Some(format!("users/{uid}")),
        );
        audit::append(tx.conn, e, tx.now)?;
        let otpauth_uri = format!(
            "otpauth://totp/{ISSUER}:{}?secret={secret}&issuer={ISSUER}&algorithm=SHA1&digits=6&period={STEP_SECS}",
            // Usernames are a-z, 0-9, '.', '_' and '-': nothing in them needs escaping.
            user.username
        );
        Ok(Enrolment {
            secret,
            otpauth_uri,
        })
    }
}

/// Confirms the pending enrolment with a first code; answers the recovery codes (shown once).
#[derive(Debug, Clone)]
pub struct ConfirmTotp {
    pub code: String,
}

impl Command for ConfirmTotp {
    type Output = Vec<String>;

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        own_session(cx).map(drop)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<Vec<String>> {
        let (uid, _) = own_session(cx)?;
        let t = match second_factors::find_totp(tx.conn, uid)? {
            None => return Err(Refusal::NoPendingEnrolment.into()),
            Some(t) if t.confirmed_at.is_some() => return Err(Refusal::SecondFactorEnrolled.into()),
            Some(t) => t,
        };
        let Some(step) = matching_step(&t.secret, &self.code, tx.now)? else {
            return Err(Refusal::WrongEnrolmentCode.into());
        };
        second_factors::confirm_totp(tx.conn, uid, step, tx.now)?;
        let user = users::find(tx.conn, uid)?.ok_or_else(Error::unauthenticated)?;
        enforce(cx, tx, &user)?;
        let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| recovery_code()).collect();
        let digests: Vec<String> = codes.iter().map(|c| recovery_digest(c)).collect();
        second_factors::set_recovery_codes(tx.conn, uid, &digests, tx.now)?;
        let mut e = cx.event(
            AuditAction::SecondFactorEnabled,
            "user",
            Some(format!("users/{uid}")),
        );
        e.detail = Some(format!("totp, {RECOVERY_CODES} recovery codes"));
        audit::append(tx.conn, e, tx.now)?;
        Ok(codes)
    }
}

/// Takes a user's second factor off: their own (`user: None`), or anyone's for a Team Admin.
#[derive(Debug, Clone)]
pub struct RemoveSecondFactor {
    pub user: Option<UserRef>,
}

impl RemoveSecondFactor {
    /// Whether it is the actor's own; another user's needs a Team Admin (checked here, before
    /// anything is looked up).
    fn own(&self, cx: &Ctx<'_>) -> Result<bool> {
        match &self.user {
            Some(r) if !crate::users::is_self(cx, r)? => {
                cx.authorize(Action::ResetUserPassword, Target::Org)?;
                Ok(false)
            }
            _ => own_session(cx).map(|_| true),
        }
    }
}

impl Command for RemoveSecondFactor {
    type Output = ();

    fn check(&self, cx: &Ctx<'_>) -> Result<()> {
        self.own(cx).map(drop)
    }

    fn apply(self, cx: &Ctx<'_>, tx: &mut Tx<'_>) -> Result<()> {
        let own = self.own(cx)?;
        let uid = match (&self.user, own) {
            (Some(r), false) => crate::users::find(tx.conn, r)?.id,
            _ => own_session(cx)?.0,
        };
        if !second_factors::remove_totp(tx.conn, uid)? {
            return Err(Refusal::NoSecondFactor.into());
        }
        let mut e = cx.event(
            AuditAction::SecondFactorRemoved,
            "user",
            Some(format!("users/{uid}")),
        );
        e.detail = Some(
            if own {
                "removed by the user"
            } else {
                "removed by a Team Admin"
            }
            .into(),
        );
        audit::append(tx.conn, e, tx.now)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6238, appendix B: the SHA-1 secret "12345678901234567890", 8 digits there; the last
    // six digits are the 6-digit codes.
    const RFC_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    #[test]
    fn codes_follow_rfc_6238() {
        for (secs, eight) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (2_000_000_000, "69279037"),
        ] {
            let code = &eight[2..];
            let step = matching_step(RFC_SECRET, code, secs * 1_000_000).unwrap();
            assert_eq!(step, Some(secs / 30), "{secs}");
        }
    }

    #[test]
    fn one_step_of_drift_either_way_and_no_more() {
        let code = &"94287082"[2..]; // step 1 (t = 59)
        assert_eq!(
            matching_step(RFC_SECRET, code, 31 * 1_000_000).unwrap(),
            Some(1)
        );
        assert_eq!(
            matching_step(RFC_SECRET, code, 89 * 1_000_000).unwrap(),
            Some(1)
        );
        assert_eq!(
            matching_step(RFC_SECRET, code, 91 * 1_000_000).unwrap(),
            None
        );
        for junk in ["", "12345", "1234567", "abcdef", " 28708 "] {
            assert_eq!(
                matching_step(RFC_SECRET, junk, 59 * 1_000_000).unwrap(),
                None,
                "{junk:?}"
            );
        }
    }

    #[test]
    fn recovery_codes_are_random_and_typed_loosely() {
        let a = recovery_code();
        assert_eq!(a.len(), 14);
        assert_ne!(a, recovery_code());
        assert_eq!(
            recovery_digest(&a),
            recovery_digest(&a.to_uppercase().replace('-', " "))
        );
    }
}
