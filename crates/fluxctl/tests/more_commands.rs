//! The commands that cover the rest of the API, against the real server: settings, the
//! outbox, lookups, editing a request, metrics and the activity report, ingesting events,
//! registration and reset links, the user's own second factor and notifications, providers.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::*;

fn totp(secret: &str) -> String {
    let bytes = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, secret).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes).generate(now)
}

fn every_other_rpc_from_the_command_line(b: Backend) {
    let server = TestServer::start(b);
    let dir = tempfile::tempdir().unwrap();
    let admin = Operator::new(&server.url, dir.path(), "admin");
    admin.login(ADMIN, ADMIN_PASSWORD).ok();

    // Settings: read, change by path, the password policy in force.
    let s = admin.run(&["-o", "json", "settings", "get"]).json();
    assert!(s["settings"]["passwordPolicy"]["minLength"].is_number());
    let changed = admin
        .run(&[
            "-o",
            "json",
            "settings",
            "update",
            "--set",
            "password_policy.min_length=14",
            "--set",
            "lockout_policy.lockout_duration=600s",
        ])
        .json();
    assert_eq!(changed["settings"]["passwordPolicy"]["minLength"], 14);
    assert_eq!(
        changed["settings"]["lockoutPolicy"]["lockoutDuration"],
        "600s"
    );
    let bad = admin.run(&[
        "settings",
        "update",
        "--set",
        "password_policy.min_length=3",
    ]);
    bad.code(5);
    assert!(bad.stderr.contains("min_length"), "{bad:?}");
    let policy = admin.run(&["settings", "password-policy"]).ok().to_owned();
    assert!(
        policy.contains("minLength") && policy.contains("14"),
        "{policy}"
    );

    // A user without a password: a registration link, completed from the command line.
    admin
        .run(&[
            "users",
            "create",
            "nora",
            "--email",
            "nora@example.com",
            "--display-name",
            "Nora",
        ])
        .ok();
    let link = admin
        .run(&["-o", "json", "users", "registration-link", "nora"])
        .json();
    let url = text(&link, &["registrationLink", "url"]);
    let token = url.rsplit("token=").next().unwrap().to_owned();
    let anon = Operator::new(&server.url, dir.path(), "anon");
    anon.run_with_stdin(
        &[
            "passwords",
            "complete-registration",
            "--token",
            &token,
            "--password-stdin",
        ],
        "Nora-first-pass-1\n",
    )
    .ok();
    let nora = Operator::new(&server.url, dir.path(), "nora");
    nora.login("nora", "Nora-first-pass-1").ok();

    // A reset link, read from the outbox (no SMTP here), confirmed from the command line.
    anon.run(&["passwords", "request-reset", "nora@example.com"])
        .ok();
    let held = eventually(std::time::Duration::from_secs(10), || {
        let l = admin
            .run(&[
                "-o",
                "json",
                "emails",
                "list",
                "--recipient",
                "nora@example.com",
                "--state",
                "held",
            ])
            .json();
        l["emails"].as_array().and_then(|a| {
            a.iter()
                .find(|e| e["template"] == "password_reset")
                .cloned()
        })
    });
    let email = admin
        .run(&[
            "-o",
            "json",
            "emails",
            "get",
            held["name"].as_str().unwrap(),
        ])
        .json();
    let body = text(&email, &["email", "body"]);
    let i = body.find("?token=").unwrap() + 7;
    let reset = &body[i..i + 43];
    anon.with_env("FLUXGATE_NEW_PASSWORD", "Nora-second-pass-2")
        .run(&["passwords", "confirm-reset", "--token", reset])
        .ok();
    nora.login("nora", "Nora-second-pass-2").ok();
    // Without SMTP a retry is refused: a conflict (exit 6).
    admin
        .run(&["emails", "retry", held["name"].as_str().unwrap()])
        .code(6);

    // Lookups, an edit, metrics and the activity report.
    let cat = catalog(&admin, "Lookups");
    let (sa, secret) = pipeline_account(&admin, &cat);
    let resources = admin
        .run(&[
            "-o",
            "json",
            "permissions",
            "lookup-resources",
            "change-value",
            &cat.application,
            "--principal",
            &sa,
        ])
        .json();
    assert_eq!(resources["resources"][0], cat.environment.as_str());
    let principals = admin
        .run(&[
            "permissions",
            "lookup-principals",
            "change-value",
            &cat.environment,
        ])
        .ok()
        .to_owned();
    assert!(principals.contains(&sa), "{principals}");
    let pipeline =
        Operator::new(&server.url, dir.path(), "pipeline").with_env("FLUXGATE_TOKEN", &secret);
    let cr = pipeline
        .run(&[
            "-o",
            "name",
            "change-requests",
            "submit",
            "--environment",
            &cat.environment,
            "--feature",
            "edited",
            "--kind",
            "change-value",
            "--payload",
            r#"{"value": true}"#,
            "--title",
            "Lock it",
        ])
        .ok()
        .trim()
        .to_owned();
    let edited = pipeline
        .run(&[
            "-o",
            "json",
            "change-requests",
            "edit",
            &cr,
            "--title",
            "Lock it now",
        ])
        .json();
    assert_eq!(edited["changeRequest"]["title"], "Lock it now");
    assert_eq!(edited["changeRequest"]["revision"], "2");
    pipeline.run(&["change-requests", "edit", &cr]).code(2);
    let metrics = admin
        .run(&["-o", "json", "change-requests", "metrics"])
        .json();
    assert!(metrics["overall"].is_object(), "{metrics:#}");
    admin.run(&["audit", "activity", "--top", "3"]).ok();

    // Ingesting events: an audit-writer account, JSON lines from standard input.
    let writer = admin
        .run(&[
            "-o",
            "json",
            "service-accounts",
            "create",
            "--display-name",
            "evaluator",
            "--role",
            "team-admin",
            "--audit-writer",
        ])
        .json();
    let writer = text(&writer, &["serviceAccount", "name"]);
    let key = admin
        .run(&["-o", "json", "service-accounts", "keys", "create", &writer])
        .json();
    let as_writer = Operator::new(&server.url, dir.path(), "writer")
        .with_env("FLUXGATE_TOKEN", &text(&key, &["secret"]));
    let ingested = as_writer
        .run_with_stdin(
            &["-o", "json", "audit", "ingest", "-"],
            "{\"action\":\"feature.evaluated\",\"targetType\":\"feature\",\"target\":\"F1\"}\n\
             {\"action\":\"feature.evaluated\",\"targetType\":\"feature\",\"target\":\"F2\"}\n",
        )
        .json();
    assert_eq!(ingested["sequences"].as_array().map(Vec::len), Some(2));
    as_writer
        .run_with_stdin(&["audit", "ingest", "-"], "{\"action\": 5}\n")
        .code(2);

    // The user's own second factor and notifications; the providers.
    let enrol = nora.run(&["-o", "json", "account", "enroll-totp"]).json();
    let secret = text(&enrol, &["secret"]);
    let codes = nora
        .run(&[
            "-o",
            "json",
            "account",
            "confirm-totp",
            "--code",
            &totp(&secret),
        ])
        .json();
    assert_eq!(codes["recoveryCodes"].as_array().map(Vec::len), Some(10));
    let sf = nora.run(&["-o", "json", "account", "second-factor"]).json();
    assert_eq!(sf["totpEnabled"], true);
    admin
        .run(&["account", "remove-second-factor", "--user", "nora"])
        .ok();
    let prefs = nora
        .run(&[
            "-o",
            "json",
            "account",
            "set-notifications",
            "--review-digest",
            "true",
        ])
        .json();
    assert_eq!(prefs["preferences"]["reviewDigest"], true);
    let shown = nora.run(&["account", "notifications"]).ok().to_owned();
    assert!(shown.contains("daily digest:"), "{shown}");
    nora.run(&["account", "set-notifications"]).code(2);
    anon.run(&["account", "sso-providers"]).ok();

    // Secrets: never a prompt without a terminal; --password-stdin instead.
    let create = [
        "users",
        "create",
        "pat",
        "--email",
        "pat@example.com",
        "--display-name",
        "Pat",
        "--with-password",
    ];
    let refused = admin.run(&create);
    refused.code(2);
    assert!(refused.stderr.contains("not a terminal"), "{refused:?}");
    let mut with_stdin = create.to_vec();
    with_stdin.push("--password-stdin");
    admin.run_with_stdin(&with_stdin, "Pat-first-pass-1\n").ok();
    Operator::new(&server.url, dir.path(), "pat")
        .login("pat", "Pat-first-pass-1")
        .ok();
    // A denial is not a sign-in problem: exit 8, not 4.
    nora.run(&["users", "list"]).code(8);

    // -o json prints every field: an empty list as [], a false flag as false.
    let none = admin
        .run(&[
            "-o",
            "json",
            "emails",
            "list",
            "--recipient",
            "nobody@example.com",
        ])
        .json();
    assert_eq!(none["emails"], serde_json::json!([]), "{none:#}");
    assert_eq!(none["nextPageToken"], "", "{none:#}");
    let sf = nora.run(&["-o", "json", "account", "second-factor"]).json();
    assert_eq!(sf["totpEnabled"], false, "{sf:#}");

    // -o name lists every name of a list; a request's table shows its payload.
    let names = admin
        .run(&["-o", "name", "portfolios", "list"])
        .ok()
        .to_owned();
    assert_eq!(names.lines().count(), 1, "{names}");
    assert!(names.starts_with("portfolios/"), "{names}");
    let shown = admin.run(&["change-requests", "get", &cr]).ok().to_owned();
    assert!(shown.contains(r#"{"value":true}"#), "{shown}");

    // Completions and the manual page, from the command definitions.
    let bash = anon.run(&["completions", "bash"]).ok().to_owned();
    assert!(
        bash.contains("fluxctl") && bash.contains("webhooks"),
        "{bash}"
    );
    let man = anon.run(&["man"]).ok().to_owned();
    assert!(
        man.contains(".TH fluxctl") || man.contains(".TH FLUXCTL"),
        "{man}"
    );
}

/// `users import`: JSON Lines from standard input or a file, in batches; a bad line is a usage
/// error naming it, and a refused batch writes nothing.
fn users_are_imported_from_json_lines(b: Backend) {
    let server = TestServer::start(b);
    let dir = tempfile::tempdir().unwrap();
    let admin = Operator::new(&server.url, dir.path(), "admin");
    admin.login(ADMIN, ADMIN_PASSWORD).ok();
    let lines: String = (0..5)
        .map(|i| {
            format!(
                "{{\"username\": \"imp{i}\", \"email\": \"imp{i}@example.com\", \"display_name\": \"Imp {i}\", \"role\": \"{}\"}}\n",
                if i == 0 { "team_admin" } else { "requester" }
            )
        })
        .collect();
    let out = admin
        .run_with_stdin(
            &["-o", "json", "users", "import", "-", "--batch", "2"],
            &lines,
        )
        .json();
    let results = out["results"].as_array().unwrap();
    assert_eq!(results.len(), 5, "{out}");
    assert_eq!(results[0]["user"]["role"], "ROLE_TEAM_ADMIN");
    assert!(
        results[4]["registrationLink"]["url"]
            .as_str()
            .unwrap()
            .contains("register"),
        "{out}"
    );
    let file = dir.path().join("more.jsonl");
    std::fs::write(
        &file,
        "{\"username\": \"imp9\", \"email\": \"imp9@example.com\", \"display_name\": \"Imp 9\"}\n",
    )
    .unwrap();
    let table = admin
        .run(&["users", "import", file.to_str().unwrap()])
        .ok()
        .to_owned();
    assert!(
        table.contains("imp9") && table.contains("1 users created"),
        "{table}"
    );

    let bad = admin.run_with_stdin(&["users", "import", "-"], "{\"username\": \"x\"}\n");
    bad.code(2);
    assert!(bad.stderr.contains("line 1"), "{bad:?}");
    let clash = admin.run_with_stdin(
        &["users", "import", "-"],
        "{\"username\": \"fresh\", \"email\": \"fresh@example.com\", \"display_name\": \"F\"}\n{\"username\": \"imp1\", \"email\": \"other@example.com\", \"display_name\": \"I\"}\n",
    );
    clash.code(6);
    assert!(clash.stderr.contains("ALREADY_EXISTS"), "{clash:?}");
    admin.run(&["users", "get", "fresh"]).code(3);
}

crate::both_backends!(
    every_other_rpc_from_the_command_line,
    users_are_imported_from_json_lines
);
