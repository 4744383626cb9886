//! Validated values. Each `parse` normalises its input and names every problem it finds.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

use crate::ValidationError;

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Characters that render as nothing or reorder the text around them: zero-width spaces and
/// joiners, the soft hyphen, word joiners, byte-order marks, variation selectors, tag
/// characters, Hangul fillers and the bidirectional controls (LRE, RLO, LRI, …). In a name or an
/// address they only serve to make two different strings look alike.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
}

fn has_invisible(s: &str) -> bool {
    s.chars().any(is_invisible)
}

const INVISIBLE: &str = "must not contain invisible or text-direction characters";

/// Unicode NFC: one spelling for what looks alike (`é` precomposed or `e` + combining accent).
fn nfc(s: &str) -> String {
    s.nfc().collect()
}

/// A login name as typed (a username or an email address) in the form accounts are stored in:
/// NFC, lower case.
pub fn normalize_login(s: &str) -> String {
    nfc(s.trim()).to_lowercase()
}

/// Whether two names look alike (Unicode TR39 confusable skeletons, case-insensitively): a
/// Cyrillic `А` for a Latin `A`, say.
pub fn confusable(a: &str, b: &str) -> bool {
    let fold = |s: &str| nfc(s).to_lowercase();
    unicode_security::skeleton(&fold(a)).eq(unicode_security::skeleton(&fold(b)))
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
        let s = nfc(input).to_lowercase();
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
        if has_invisible(&s) {
            return err(INVISIBLE);
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
        let s = nfc(input.trim());
        if s.is_empty() {
            return Err(ValidationError::field("", "is required"));
        }
        if s.chars().count() > Self::MAX_CHARS {
            return Err(ValidationError::field(
                "",
                "must be at most 200 characters long",
            ));
        }
        if has_control(&s) {
            return Err(ValidationError::field(
                "",
                "must not contain control characters",
            ));
        }
        if has_invisible(&s) {
            return Err(ValidationError::field("", INVISIBLE));
        }
        Ok(Self(s))
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
        let s = nfc(input.trim());
        if s.is_empty() {
            return Err(ValidationError::field("", "is required"));
        }
        if s.chars().count() > Self::MAX_CHARS {
            return Err(ValidationError::field(
                "",
                "must be at most 100 characters long",
            ));
        }
        if has_control(&s) {
            return Err(ValidationError::field(
                "",
                "must not contain control characters",
            ));
        }
        if has_invisible(&s) {
            return Err(ValidationError::field("", INVISIBLE));
        }
        Ok(Self(s))
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
