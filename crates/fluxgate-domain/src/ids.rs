//! Identifiers: UUID newtypes, and `PrincipalId` (a user or a service account) with its
//! resource-name form.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::ValidationError;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new random (time-ordered) identifier.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse()
                    .map_err(|_| serde::de::Error::custom("not a valid identifier"))
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::try_parse(s)
                    .map(Self)
                    .map_err(|_| ValidationError::field("", "is not a valid identifier"))
            }
        }
    };
}

id_type!(
    /// Identifies a user; the `{user_id}` of `users/{user_id}`.
    UserId
);
id_type!(
    /// Identifies a login session.
    SessionId
);
id_type!(
    /// Identifies a service account; the `{service_account_id}` of `serviceAccounts/{…}`.
    ServiceAccountId
);
id_type!(
    /// Identifies an API key of a service account.
    KeyId
);
id_type!(
    /// Identifies a portfolio.
    PortfolioId
);
id_type!(
    /// Identifies an application.
    ApplicationId
);
id_type!(
    /// Identifies an environment.
    EnvironmentId
);
id_type!(
    /// Identifies a group.
    GroupId
);
id_type!(
    /// Identifies a change request; the `{id}` of `changeRequests/{id}`.
    ChangeRequestId
);
id_type!(
    /// Identifies an outgoing email; the `{id}` of `emails/{id}`.
    EmailId
);
id_type!(
    /// Identifies a webhook subscription; the `{id}` of `webhooks/{id}`.
    WebhookId
);
id_type!(
    /// Identifies one webhook message (its `webhook-id` header); the `{delivery}` of
    /// `webhooks/{id}/deliveries/{delivery}`.
    DeliveryId
);

/// Anyone who can hold rights: a user or a service account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PrincipalId {
    User(UserId),
    ServiceAccount(ServiceAccountId),
}

impl PrincipalId {
    /// The stored kind: `user` or `service_account`.
    pub fn kind(self) -> &'static str {
        match self {
            PrincipalId::User(_) => "user",
            PrincipalId::ServiceAccount(_) => "service_account",
        }
    }

    pub fn uuid(self) -> Uuid {
        match self {
            PrincipalId::User(u) => u.0,
            PrincipalId::ServiceAccount(s) => s.0,
        }
    }

    /// Rebuilds an id from its stored kind and uuid text.
    pub fn from_parts(kind: &str, id: &str) -> Result<Self, ValidationError> {
        match kind {
            "user" => Ok(PrincipalId::User(id.parse()?)),
            "service_account" => Ok(PrincipalId::ServiceAccount(id.parse()?)),
            other => Err(ValidationError::field(
                "",
                format!("unknown principal kind {other:?}"),
            )),
        }
    }
}

impl std::str::FromStr for PrincipalId {
    type Err = ValidationError;

    /// Parses the resource name: `users/{id}` or `serviceAccounts/{id}`.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.split_once('/') {
            Some(("users", id)) => Ok(PrincipalId::User(id.parse()?)),
            Some(("serviceAccounts", id)) => Ok(PrincipalId::ServiceAccount(id.parse()?)),
            _ => Err(ValidationError::field(
                "",
                "must be users/{id} or serviceAccounts/{id}",
            )),
        }
    }
}

impl fmt::Display for PrincipalId {
    /// The resource name: `users/{id}` or `serviceAccounts/{id}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrincipalId::User(u) => write!(f, "users/{u}"),
            PrincipalId::ServiceAccount(s) => write!(f, "serviceAccounts/{s}"),
        }
    }
}
