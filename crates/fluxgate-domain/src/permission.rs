//! FeatureHub's permissions: per application a feature permission, per environment a set of
//! value permissions; and the permissions a check asks about.

use std::fmt;
use std::str::FromStr;

use crate::ValidationError;

/// What a group may do with an application's features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FeaturePermission {
    /// Create features only.
    Create,
    /// Create, edit and delete features.
    CreateEditDelete,
}

impl FeaturePermission {
    pub fn as_str(self) -> &'static str {
        match self {
            FeaturePermission::Create => "CREATE",
            FeaturePermission::CreateEditDelete => "CREATE_EDIT_DELETE",
        }
    }

    /// Does this grant cover `p`?
    pub fn allows(self, p: Permission) -> bool {
        matches!(
            (self, p),
            (_, Permission::CreateFeature)
                | (
                    FeaturePermission::CreateEditDelete,
                    Permission::EditFeature | Permission::DeleteFeature
                )
        )
    }
}

impl FromStr for FeaturePermission {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "CREATE" => Ok(FeaturePermission::Create),
            "CREATE_EDIT_DELETE" => Ok(FeaturePermission::CreateEditDelete),
            other => Err(ValidationError::field(
                "",
                format!("unknown feature permission {other:?}"),
            )),
        }
    }
}

/// One value permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ValuePermission {
    Read,
    Lock,
    Unlock,
    ChangeValue,
}

impl ValuePermission {
    pub const ALL: [ValuePermission; 4] = [
        ValuePermission::Read,
        ValuePermission::Lock,
        ValuePermission::Unlock,
        ValuePermission::ChangeValue,
    ];

    fn bit(self) -> u8 {
        match self {
            ValuePermission::Read => 1,
            ValuePermission::Lock => 2,
            ValuePermission::Unlock => 4,
            ValuePermission::ChangeValue => 8,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ValuePermission::Read => "READ",
            ValuePermission::Lock => "LOCK",
            ValuePermission::Unlock => "UNLOCK",
            ValuePermission::ChangeValue => "CHANGE_VALUE",
        }
    }
}

/// A set of value permissions, as a bit set.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ValuePermissions(u8);

impl ValuePermissions {
    pub const EMPTY: ValuePermissions = ValuePermissions(0);
    pub const ALL: ValuePermissions = ValuePermissions(15);

    pub fn from_bits(bits: u8) -> Self {
        Self(bits & 15)
    }

    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn with(self, p: ValuePermission) -> Self {
        Self(self.0 | p.bit())
    }

    pub fn contains(self, p: ValuePermission) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Does this set allow `p`? Any value permission implies READ: one cannot change what one
    /// cannot see.
    pub fn allows(self, p: ValuePermission) -> bool {
        self.contains(p) || (p == ValuePermission::Read && !self.is_empty())
    }

    pub fn iter(self) -> impl Iterator<Item = ValuePermission> {
        ValuePermission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }
}

impl FromIterator<ValuePermission> for ValuePermissions {
    fn from_iter<I: IntoIterator<Item = ValuePermission>>(iter: I) -> Self {
        iter.into_iter()
            .fold(ValuePermissions::EMPTY, ValuePermissions::with)
    }
}

impl fmt::Debug for ValuePermissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(ValuePermission::as_str))
            .finish()
    }
}

impl fmt::Display for ValuePermissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("nothing");
        }
        let names: Vec<&str> = self.iter().map(ValuePermission::as_str).collect();
        f.write_str(&names.join(", "))
    }
}

/// A permission a check asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    Read,
    Lock,
    Unlock,
    ChangeValue,
    CreateFeature,
    EditFeature,
    DeleteFeature,
}

impl Permission {
    pub const ALL: [Permission; 7] = [
        Permission::Read,
        Permission::Lock,
        Permission::Unlock,
        Permission::ChangeValue,
        Permission::CreateFeature,
        Permission::EditFeature,
        Permission::DeleteFeature,
    ];

    /// The value permission this is, if it is one (checked on an environment).
    pub fn value(self) -> Option<ValuePermission> {
        match self {
            Permission::Read => Some(ValuePermission::Read),
            Permission::Lock => Some(ValuePermission::Lock),
            Permission::Unlock => Some(ValuePermission::Unlock),
            Permission::ChangeValue => Some(ValuePermission::ChangeValue),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "READ",
            Permission::Lock => "LOCK",
            Permission::Unlock => "UNLOCK",
            Permission::ChangeValue => "CHANGE_VALUE",
            Permission::CreateFeature => "CREATE_FEATURE",
            Permission::EditFeature => "EDIT_FEATURE",
            Permission::DeleteFeature => "DELETE_FEATURE",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
