//! Page tokens from clients: decoding arbitrary text never panics and never yields a position
//! for other filters; every token the server issues decodes back to its position.
#![no_main]

use fluxgate_server::convert::PageToken;
use libfuzzer_sys::fuzz_target;

type Filter = (String, Option<i32>);

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let filter: Filter = ("role=1".into(), Some(3));
    if let Ok(Some(after)) = PageToken::decode(&text, &filter) {
        // Only a token issued for these filters gets through.
        let reissued = PageToken {
            after: after.clone(),
            filter: filter.clone(),
        }
        .encode();
        assert_eq!(
            PageToken::decode(&reissued, &filter).ok(),
            Some(Some(after))
        );
    }
    let issued = PageToken {
        after: text.to_string(),
        filter: filter.clone(),
    }
    .encode();
    let other: Filter = ("role=2".into(), None);
    assert!(PageToken::decode(&issued, &other).is_err());
    // Positions are usernames, ids and times: short. Tokens are refused past 2 KiB, which an
    // escaped position of a few hundred control characters can reach.
    if text.len() <= 128 {
        assert_eq!(
            PageToken::decode(&issued, &filter).ok(),
            Some(Some(text.to_string()))
        );
    }
});
