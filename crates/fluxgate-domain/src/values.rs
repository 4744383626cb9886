//! Validated values. Each `parse` normalises its input and names every problem it finds.

use std::fmt;

use crate::ValidationError;

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// A login name: 2 to 64 characters of `a-z 0-9 . _ -`, starting with a letter or digit, stored
/// in lower case. A username never has the shape of a UUID, so `users/{username}` can never be
/// mistaken for `users/{user_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

impl Username {
    pub const MAX_LEN: usize = 64;

    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        let s = input.to_lowercase();
        let err = |d: &str| Err(ValidationError::field("", d));
        if s.is_empty() {
            return err("is required");
        }
        if s.chars().count() < 2 || s.len() > Self::MAX_LEN {
            return err("must be 2 to 64 characters long");
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        {
            return err("may contain only letters a-z, digits and . _ -");
        }
        if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return err("must start with a letter or digit");
        }
        if uuid::Uuid::try_parse(&s).is_ok() {
            return err("must not have the shape of a UUID");
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An email address, stored in lower case. Checked for shape, not deliverability.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        let s = input.to_lowercase();
        let err = |d: &str| Err(ValidationError::field("", d));
        if s.is_empty() {
            return err("is required");
        }
        if s.len() > Self::MAX_LEN {
            return err("must be at most 254 characters long");
        }
        if has_control(&s) || s.chars().any(char::is_whitespace) {
            return err("must not contain spaces or control characters");
        }
        let Some((local, domain)) = s.split_once('@') else {
            return err("must look like name@example.com");
        };
        let domain_ok = domain.contains('.')
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if local.is_empty() || local.len() > 64 || local.contains('@') || !domain_ok {
            return err("must look like name@example.com");
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A person's full name: 1 to 200 characters, no control characters, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(ValidationError::field("", "is required"));
        }
        if s.chars().count() > Self::MAX_CHARS {
            return Err(ValidationError::field(
                "",
                "must be at most 200 characters long",
            ));
        }
        if has_control(s) {
            return Err(ValidationError::field(
                "",
                "must not contain control characters",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A catalog object's display name (portfolio, application, environment, group, service
/// account): 1 to 100 characters, no control characters, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title(String);

impl Title {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(ValidationError::field("", "is required"));
        }
        if s.chars().count() > Self::MAX_CHARS {
            return Err(ValidationError::field(
                "",
                "must be at most 100 characters long",
            ));
        }
        if has_control(s) {
            return Err(ValidationError::field(
                "",
                "must not contain control characters",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key that makes names unique case-insensitively.
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }
}

/// Free text: up to 1000 characters; newlines and tabs allowed, other control characters not.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Description(String);

impl Description {
    pub const MAX_CHARS: usize = 1000;

    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        if input.chars().count() > Self::MAX_CHARS {
            return Err(ValidationError::field(
                "",
                "must be at most 1000 characters long",
            ));
        }
        if input
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(ValidationError::field(
                "",
                "must not contain control characters",
            ));
        }
        Ok(Self(input.trim().to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
