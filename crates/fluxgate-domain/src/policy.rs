//! The run-time settings: password policy, lockout and token lifetimes.

use std::collections::HashSet;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::{ValidationError, Violations};

/// The rules a new password must pass (SPEC section 3). The default is the FluxGate document's:
/// at least 8 characters with an upper-case letter, a lower-case letter and a digit; plus a
/// maximum length and the common-password list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordPolicy {
    pub min_length: u32,
    pub max_length: u32,
    pub require_uppercase: bool,
    pub require_lowercase: bool,
    pub require_digit: bool,
    pub require_symbol: bool,
    pub reject_common: bool,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_length: 8,
            max_length: 128,
            require_uppercase: true,
            require_lowercase: true,
            require_digit: true,
            require_symbol: false,
            reject_common: true,
        }
    }
}

/// Longest password accepted by any policy: bounds the work an Argon2 call can be asked to do.
pub const PASSWORD_HARD_MAX: u32 = 1024;

fn common_passwords() -> &'static HashSet<&'static str> {
    static LIST: OnceLock<HashSet<&'static str>> = OnceLock::new();
    LIST.get_or_init(|| {
        include_str!("common_passwords.txt")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect()
    })
}

impl PasswordPolicy {
    /// Checks the policy itself (as set by an administrator).
    pub fn validate(&self, v: &mut Violations, prefix: &str) {
        if !(8..=128).contains(&self.min_length) {
            v.add(format!("{prefix}min_length"), "must be between 8 and 128");
        }
        if self.max_length < self.min_length || self.max_length > PASSWORD_HARD_MAX {
            v.add(
                format!("{prefix}max_length"),
                "must be at least min_length and at most 1024",
            );
        }
    }

    /// Checks a candidate password. `personal` holds values the password must not equal
    /// (username, email). The error names every rule the password breaks.
    pub fn check(&self, password: &str, personal: &[&str]) -> Result<(), ValidationError> {
        let mut problems: Vec<String> = Vec::new();
        let len = password.chars().count();
        if len < self.min_length as usize {
            problems.push(format!("be at least {} characters long", self.min_length));
        }
        if len > self.max_length as usize {
            problems.push(format!("be at most {} characters long", self.max_length));
        }
        if self.require_uppercase && !password.chars().any(char::is_uppercase) {
            problems.push("contain an upper-case letter".into());
        }
        if self.require_lowercase && !password.chars().any(char::is_lowercase) {
            problems.push("contain a lower-case letter".into());
        }
        if self.require_digit && !password.chars().any(|c| c.is_ascii_digit()) {
            problems.push("contain a digit".into());
        }
        if self.require_symbol && !password.chars().any(|c| !c.is_alphanumeric()) {
            problems.push("contain a symbol".into());
        }
        if password.chars().any(char::is_control) {
            problems.push("not contain control characters".into());
        }
        let lower = password.to_lowercase();
        if self.reject_common && common_passwords().contains(lower.as_str()) {
            problems.push("not be a commonly used password".into());
        }
        if personal
            .iter()
            .any(|p| !p.is_empty() && p.to_lowercase() == lower)
        {
            problems.push("not be the username or email".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ValidationError::field(
                "",
                format!("must {}", problems.join(", ")),
            ))
        }
    }
}

/// Per-account lockout after consecutive login failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LockoutPolicy {
    pub max_failed_attempts: u32,
    pub lockout_duration_secs: u64,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            max_failed_attempts: 5,
            lockout_duration_secs: 15 * 60,
        }
    }
}

impl LockoutPolicy {
    pub fn validate(&self, v: &mut Violations, prefix: &str) {
        if !(1..=100).contains(&self.max_failed_attempts) {
            v.add(
                format!("{prefix}max_failed_attempts"),
                "must be between 1 and 100",
            );
        }
        if !(1..=86_400).contains(&self.lockout_duration_secs) {
            v.add(
                format!("{prefix}lockout_duration"),
                "must be between 1 second and 24 hours",
            );
        }
    }
}

/// Session token lifetimes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenPolicy {
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        Self {
            access_token_ttl_secs: 24 * 3600,
            refresh_token_ttl_secs: 30 * 24 * 3600,
        }
    }
}

impl TokenPolicy {
    pub fn validate(&self, v: &mut Violations, prefix: &str) {
        if !(60..=30 * 86_400).contains(&self.access_token_ttl_secs) {
            v.add(
                format!("{prefix}access_token_ttl"),
                "must be between 1 minute and 30 days",
            );
        }
        if !(60..=365 * 86_400).contains(&self.refresh_token_ttl_secs) {
            v.add(
                format!("{prefix}refresh_token_ttl"),
                "must be between 1 minute and 365 days",
            );
        }
    }
}

/// How people sign in: the roles that must have a second factor (and how long a user of such a
/// role has to enrol one), and whether passwords are accepted at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignInPolicy {
    /// Password users of these roles must enrol a second factor.
    pub second_factor_roles: Vec<crate::Role>,
    /// How long after their first sign-in under the rule they have to do it; after that they
    /// may only enrol (and manage their own session) until they have.
    pub second_factor_grace_secs: u64,
    /// Only identity providers sign people in, but for the break-glass users.
    pub password_sign_in_disabled: bool,
    /// Team Admins (user ids) who may sign in with a password while it is disabled for others.
    pub break_glass_users: Vec<crate::UserId>,
}

impl Default for SignInPolicy {
    fn default() -> Self {
        Self {
            second_factor_roles: Vec::new(),
            second_factor_grace_secs: 7 * 86_400,
            password_sign_in_disabled: false,
            break_glass_users: Vec::new(),
        }
    }
}

/// At most this many break-glass users.
pub const MAX_BREAK_GLASS_USERS: usize = 10;

impl SignInPolicy {
    /// Whether a password user of `role` must have a second factor.
    pub fn requires_second_factor(&self, role: crate::Role) -> bool {
        self.second_factor_roles.contains(&role)
    }

    pub fn validate(&self, v: &mut Violations, prefix: &str) {
        if self.second_factor_grace_secs > 90 * 86_400 {
            v.add(
                format!("{prefix}second_factor_grace_period"),
                "must be between 0 and 90 days",
            );
        }
        let mut roles = self.second_factor_roles.clone();
        roles.sort_unstable();
        roles.dedup();
        if roles.len() != self.second_factor_roles.len() {
            v.add(
                format!("{prefix}second_factor_required_roles"),
                "must not repeat a role",
            );
        }
        let mut users = self.break_glass_users.clone();
        users.sort_unstable();
        users.dedup();
        if users.len() != self.break_glass_users.len() {
            v.add(
                format!("{prefix}break_glass_users"),
                "must not repeat a user",
            );
        }
        if self.break_glass_users.len() > MAX_BREAK_GLASS_USERS {
            v.add(
                format!("{prefix}break_glass_users"),
                format!("must name at most {MAX_BREAK_GLASS_USERS} users"),
            );
        }
        if self.password_sign_in_disabled && self.break_glass_users.is_empty() {
            v.add(
                format!("{prefix}break_glass_users"),
                "must name at least one Team Admin while password sign-in is disabled (the way \
                 in when the identity provider is down)",
            );
        }
    }
}

/// Every run-time setting. The configuration file gives the values of a new database; from
/// then on Team Admins change them through the settings service.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub password_policy: PasswordPolicy,
    pub lockout_policy: LockoutPolicy,
    pub token_policy: TokenPolicy,
    pub sign_in_policy: SignInPolicy,
}

impl Settings {
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut v = Violations::new();
        self.password_policy.validate(&mut v, "password_policy.");
        self.lockout_policy.validate(&mut v, "lockout_policy.");
        self.token_policy.validate(&mut v, "token_policy.");
        self.sign_in_policy.validate(&mut v, "sign_in_policy.");
        v.finish()
    }
}
