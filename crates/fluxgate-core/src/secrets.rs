//! Secret tokens (refresh tokens, API key secrets, reset and registration links): random, shown
//! once, stored only as a SHA-256 digest.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fluxgate_domain::KeyId;
use rand::Rng as _;
use sha2::{Digest, Sha256};

/// `n` random bytes (from the thread-local CSPRNG), base64url without padding.
pub fn random_token(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Hex SHA-256 of a secret token: how tokens are stored and looked up.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// API keys look like `fgk_<key id, 32 hex digits>_<secret>`.
pub const API_KEY_PREFIX: &str = "fgk_";

/// Splits an API key into its key id and secret.
pub fn parse_api_key(token: &str) -> Option<(KeyId, &str)> {
    let rest = token.strip_prefix(API_KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 32 || secret.is_empty() || secret.len() > 128 {
        return None;
    }
    Some((id.parse().ok()?, secret))
}

/// Formats an API key from its id and secret.
pub fn format_api_key(id: KeyId, secret: &str) -> String {
    format!("{API_KEY_PREFIX}{}_{secret}", id.0.simple())
}
