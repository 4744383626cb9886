//! Access tokens (HS256 JWTs that name a user and a session, never a role) and opaque refresh
//! tokens (random, stored only as SHA-256).

use fluxgate_domain::{SessionId, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub const ISSUER: &str = "fluxgate";
pub const AUDIENCE: &str = "fluxgate";
const ACCESS_TYPE: &str = "access";

pub use fluxgate_core::secrets::{random_token, token_hash};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    /// The session id.
    pub sid: String,
    pub typ: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

/// The verified content of an access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessToken {
    pub user_id: UserId,
    pub session_id: SessionId,
    /// Expiry, seconds since the epoch.
    pub expires_at: u64,
}

/// Tokens already verified, so that a client sending the same token again (every request of a
/// session) skips the signature check. Bounded; emptied when full. Keyed with FxHash, which is
/// not keyed against flooding: only tokens this server signed get in, and a lookup of anything
/// else costs one hash.
const VERIFIED_CACHE_MAX: usize = 16_384;

/// Signs and checks access tokens.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    verified: std::sync::Arc<std::sync::RwLock<rustc_hash::FxHashMap<String, AccessToken>>>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

impl TokenKeys {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "aud", "iss", "sub"]);
        validation.validate_nbf = true;
        // A token from a replica whose clock runs a little ahead is not refused as "not yet
        // valid"; expiry is checked strictly, below, at `access_token_expire_time`.
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            verified: Default::default(),
        }
    }

    /// Issues an access token valid for `ttl_secs` from `now_secs`.
    pub fn issue(
        &self,
        user: UserId,
        session: SessionId,
        now_secs: u64,
        ttl_secs: u64,
    ) -> anyhow::Result<String> {
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: user.to_string(),
            sid: session.to_string(),
            typ: ACCESS_TYPE.into(),
            iat: now_secs,
            nbf: now_secs,
            exp: now_secs + ttl_secs,
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// Checks signature, algorithm, issuer, audience, times and type. `None` for any failure:
    /// callers answer every bad token alike.
    pub fn verify(&self, token: &str) -> Option<AccessToken> {
        if token.len() > 4096 {
            return None;
        }
        let now = jsonwebtoken::get_current_timestamp();
        let cached = self
            .verified
            .read()
            .ok()
            .and_then(|c| c.get(token).copied());
        if let Some(t) = cached {
            return (now < t.expires_at).then_some(t);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        let c = data.claims;
        if c.typ != ACCESS_TYPE || now >= c.exp {
            return None;
        }
        let t = AccessToken {
            user_id: c.sub.parse().ok()?,
            session_id: c.sid.parse().ok()?,
            expires_at: c.exp,
        };
        if let Ok(mut cache) = self.verified.write() {
            if cache.len() >= VERIFIED_CACHE_MAX {
                cache.clear();
            }
            cache.insert(token.to_owned(), t);
        }
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn tokens_round_trip() {
        let keys = TokenKeys::new(&[7; 32]);
        let (u, s) = (UserId::generate(), SessionId::generate());
        let t = keys.issue(u, s, now(), 60).unwrap();
        let v = keys.verify(&t).unwrap();
        assert_eq!((v.user_id, v.session_id), (u, s));
        // A second look is answered from the cache, identically.
        assert_eq!(keys.verify(&t), Some(v));
    }

    #[test]
    fn bad_tokens_are_refused() {
        let keys = TokenKeys::new(&[7; 32]);
        let (u, s) = (UserId::generate(), SessionId::generate());
        // expired
        let t = keys.issue(u, s, now() - 3600, 60).unwrap();
        assert_eq!(keys.verify(&t), None);
        // not yet valid
        let t = keys.issue(u, s, now() + 3600, 60).unwrap();
        assert_eq!(keys.verify(&t), None);
        // wrong key
        let t = TokenKeys::new(&[8; 32]).issue(u, s, now(), 60).unwrap();
        assert_eq!(keys.verify(&t), None);
        // alg none
        let t = keys.issue(u, s, now(), 60).unwrap();
        let parts: Vec<_> = t.split('.').collect();
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(keys.verify(&format!("{none_header}.{}.", parts[1])), None);
        // tampered payload
        let mut claims: Claims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims.sub = UserId::generate().to_string();
        let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        assert_eq!(
            keys.verify(&format!("{}.{forged}.{}", parts[0], parts[2])),
            None
        );
        assert_eq!(keys.verify("not a token"), None);
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let a = random_token(32);
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token(32));
        assert_eq!(token_hash(&a).len(), 64);
    }
}
