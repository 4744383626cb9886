//! Etags: optimistic concurrency for resources that carry a version.

use fluxgate_domain::Refusal;
use sha2::{Digest, Sha256};

/// A resource's etag: its version, tagged with a digest of its id, so that one resource's etag
/// never matches another's (`W/"3-1a2b3c4d"`).
pub fn etag(id: impl std::fmt::Display, version: i64) -> String {
    let digest = Sha256::digest(id.to_string().as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("W/\"{version}-{hex}\"")
}

/// Checks a client's etag (when given) against the resource's current one.
pub fn check(given: &str, id: impl std::fmt::Display, version: i64) -> Result<(), Refusal> {
    let current = etag(id, version);
    if given.is_empty() || given == current {
        Ok(())
    } else {
        Err(Refusal::StaleEtag {
            given: given.to_owned(),
            current,
        })
    }
}
