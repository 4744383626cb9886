//! Unit tests of the validated values.

use super::*;

#[test]
fn usernames_are_normalised_and_checked() {
    assert_eq!(Username::parse("Alice.B").unwrap().as_str(), "alice.b");
    for bad in ["", "a", "-abc", "has space", "ünï", "x".repeat(65).as_str()] {
        assert!(Username::parse(bad).is_err(), "{bad:?} accepted");
    }
    assert!(Username::parse("0190a5b2-7c1d-7e3f-8a9b-123456789abc").is_err());
}

#[test]
fn emails_are_normalised_and_checked() {
    assert_eq!(
        Email::parse("Bob@Example.COM").unwrap().as_str(),
        "bob@example.com"
    );
    for bad in [
        "",
        "bob",
        "bob@",
        "@example.com",
        "bob@localhost",
        "b ob@x.io",
        "a@b@c.io",
    ] {
        assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn display_names_are_trimmed() {
    assert_eq!(DisplayName::parse("  Ada  ").unwrap().as_str(), "Ada");
    assert!(DisplayName::parse("   ").is_err());
    assert!(DisplayName::parse("a\u{0}b").is_err());
}

#[test]
fn default_password_policy_is_the_fluxgate_one() {
    let p = PasswordPolicy::default();
    assert!(p.check("Tr1cky-horse", &[]).is_ok());
    let err = p.check("short", &[]).unwrap_err();
    let d = &err.violations[0].description;
    assert!(d.contains("at least 8"), "{d}");
    assert!(d.contains("upper-case"), "{d}");
    assert!(d.contains("digit"), "{d}");
    assert!(p.check("alllowercase1", &[]).is_err());
    assert!(p.check("ALLUPPERCASE1", &[]).is_err());
    assert!(p.check("NoDigitsHere", &[]).is_err());
    // Common passwords fail even when they pass the composition rules.
    assert!(p.check("Password1", &[]).is_err());
    assert!(p.check("Alice2026x", &["alice2026x"]).is_err());
    assert!(p.check(&"Aa1".repeat(50), &[]).is_err());
}

#[test]
fn policies_validate_their_bounds() {
    let mut s = Settings::default();
    assert!(s.validate().is_ok());
    s.password_policy.min_length = 4;
    s.lockout_policy.max_failed_attempts = 0;
    s.token_policy.access_token_ttl_secs = 1;
    let err = s.validate().unwrap_err();
    let fields: Vec<_> = err.violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "password_policy.min_length",
            "lockout_policy.max_failed_attempts",
            "token_policy.access_token_ttl"
        ]
    );
}

#[test]
fn roles_are_ordered() {
    assert!(Role::TeamAdmin.includes(Role::Approver));
    assert!(Role::Approver.includes(Role::Requester));
    assert!(!Role::Requester.includes(Role::Approver));
    assert_eq!("team_admin".parse::<Role>().unwrap(), Role::TeamAdmin);
    assert!("root".parse::<Role>().is_err());
}

#[test]
fn one_spelling_and_no_invisible_characters() {
    let nfc = Email::parse("Jos\u{e9}@Example.com").unwrap();
    let nfd = Email::parse("jose\u{301}@example.com").unwrap();
    assert_eq!(nfc, nfd);
    for bad in [
        "a\u{200b}b@example.com",
        "a\u{202e}b@example.com",
        "\u{feff}a@example.com",
    ] {
        assert!(Email::parse(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        DisplayName::parse("Jose\u{301}").unwrap().as_str(),
        "Jos\u{e9}"
    );
    assert!(DisplayName::parse("Mallory\u{202e}nimdA").is_err());
    assert!(Title::parse("Ad\u{2066}mins").is_err());
    assert!(confusable("\u{410}dministrators", "Administrators"));
    assert!(confusable("ADMINISTRATORS", "Administrators"));
    assert!(!confusable("Admins", "Administrators"));
    assert_eq!(
        normalize_login("  Jose\u{301}@EXAMPLE.com "),
        "jos\u{e9}@example.com"
    );
}
