//! Input validation on arbitrary strings: the value types and the name parsers never panic, and
//! whatever they accept is within their documented bounds.
#![no_main]

use fluxgate_domain::{Description, DisplayName, Email, PasswordPolicy, Title, Username};
use fluxgate_server::convert;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(u) = Username::parse(s) {
        let u = u.as_str();
        assert!((2..=Username::MAX_LEN).contains(&u.len()));
        assert!(
            u.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c))
        );
    }
    if let Ok(e) = Email::parse(s) {
        assert!(e.as_str().contains('@') && e.as_str().len() <= Email::MAX_LEN);
    }
    if let Ok(d) = DisplayName::parse(s) {
        assert!(!d.as_str().chars().any(char::is_control));
    }
    let _ = Title::parse(s);
    let _ = Description::parse(s);
    let _ = PasswordPolicy::default().check(s, &["admin", s]);
    let _ = convert::parse_user_name("name", s);
    let _ = convert::parse_principal("principal", s);
    for collections in [
        &["portfolios"][..],
        &["portfolios", "applications"],
        &["portfolios", "applications", "environments"],
    ] {
        if let Ok(ids) = convert::parse_ids("name", s, collections) {
            assert_eq!(ids.len(), collections.len());
        }
    }
    let _ = convert::mask_paths(
        Some(&prost_types::FieldMask {
            paths: s.split(',').map(str::to_owned).collect(),
        }),
        &["display_name", "description"],
    );
});
