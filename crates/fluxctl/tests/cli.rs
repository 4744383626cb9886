//! fluxctl against the real server: sessions, administration, permission checks, change
//! requests, audit export and exit codes.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{
    ADMIN, ADMIN_PASSWORD, Backend, Operator, TestServer, catalog, pipeline_account, reviewer, text,
};

fn read_session(op: &Operator) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(&op.session).unwrap()).unwrap()
}

fn write_session(op: &Operator, v: &serde_json::Value) {
    std::fs::write(&op.session, serde_json::to_vec(v).unwrap()).unwrap();
}

#[cfg(unix)]
fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn session_lifecycle_and_refresh(b: Backend) {
    let server = TestServer::start(b);
    let dir = tempfile::tempdir().unwrap();
    let admin = Operator::new(&server.url, dir.path(), "admin");

    let out = admin.login(ADMIN, ADMIN_PASSWORD);
    assert!(out.ok().contains("Logged in"), "{out:?}");
    #[cfg(unix)]
    {
        assert_eq!(mode(&admin.session), 0o600);
        assert_eq!(mode(admin.session.parent().unwrap()), 0o700);
    }
    let who = admin.run(&["whoami"]);
    assert!(who.ok().contains("team_admin"), "{who:?}");
    let who = admin.run(&["-o", "json", "whoami"]).json();
    assert_eq!(who["role"], "ROLE_TEAM_ADMIN");
    assert_eq!(who["user"]["username"], ADMIN);

    // An access token past its expiry is refreshed before the call.
    let mut s = read_session(&admin);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    s["access_token_expire_time"] = (now - 10).into();
    write_session(&admin, &s);
    admin.run(&["whoami"]).ok();
    let refreshed = read_session(&admin);
    assert_ne!(refreshed["refresh_token"], s["refresh_token"]);
    assert!(refreshed["access_token_expire_time"].as_i64().unwrap() > now);

    // An access token the server refuses is refreshed and the call retried once.
    let mut s = refreshed;
    s["access_token"] = "not-a-token".into();
    write_session(&admin, &s);
    admin.run(&["whoami"]).ok();
    let retried = read_session(&admin);
    assert_ne!(retried["access_token"], "not-a-token");
    assert_ne!(retried["refresh_token"], s["refresh_token"]);

    let out = admin.run(&["logout"]);
    out.ok();
    assert!(!admin.session.exists());
    let out = admin.run(&["whoami"]);
    out.code(4);
    assert!(out.stderr.contains("not logged in"), "{out:?}");
}

fn administration_and_exit_codes(b: Backend) {
    let server = TestServer::start(b);
    let dir = tempfile::tempdir().unwrap();
    let admin = Operator::new(&server.url, dir.path(), "admin");
    admin.login(ADMIN, ADMIN_PASSWORD).ok();
    let cat = catalog(&admin, "Shop");
    assert!(cat.environment.contains("/environments/"));
    let envs = admin.run(&["environments", "list", "--application", &cat.application]);
    assert!(envs.ok().contains("prod"), "{envs:?}");

    let rita = admin
        .with_env("FLUXGATE_NEW_PASSWORD", "Requester-pass-1")
        .run(&[
            "users",
            "create",
            "rita",
            "--email",
            "rita@example.com",
            "--display-name",
            "Rita",
            "--with-password",
        ]);
    assert!(rita.ok().contains("users/"), "{rita:?}");
    let table = admin.run(&["users", "list"]);
    let table = table.ok();
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("rita") && l.contains("requester"))
    );
    let list = admin.run(&["-o", "json", "users", "list"]).json();
    let users = list["users"].as_array().unwrap();
    assert!(users.iter().any(|u| u["username"] == "rita"), "{list:#}");
    assert_eq!(users.len(), 2);
    let got = admin.run(&["-o", "json", "users", "get", "rita"]).json();
    assert_eq!(got["user"]["email"], "rita@example.com");

    // A group granting CHANGE_VALUE, with Rita in it.
    let grant = format!("{}=read,change-value", cat.environment);
    let g = admin
        .run(&[
            "-o",
            "json",
            "groups",
            "create",
            "--portfolio",
            &cat.portfolio,
            "Operations",
            "--env-grant",
            &grant,
        ])
        .json();
    let group = text(&g, &["group", "name"]);
    assert_eq!(
        g["group"]["environmentGrants"][0]["permissions"],
        serde_json::json!(["VALUE_PERMISSION_READ", "VALUE_PERMISSION_CHANGE_VALUE"])
    );
    admin
        .run(&["groups", "members", "add", &group, "rita"])
        .ok();
    let members = admin.run(&["groups", "members", "list", &group]);
    assert!(members.ok().contains("users/"), "{members:?}");

    let check = admin
        .run(&[
            "-o",
            "json",
            "permissions",
            "check",
            "change-value",
            &cat.environment,
            "--principal",
            "rita",
        ])
        .json();
    assert_eq!(check["decision"]["allowed"], true, "{check:#}");
    assert_eq!(check["decision"]["grantedBy"], group.as_str());
    let denied = admin.run(&[
        "permissions",
        "check",
        "lock",
        &cat.environment,
        "--principal",
        "rita",
        "--exit-code",
    ]);
    denied.code(8);
    assert!(denied.stdout.contains("allowed"), "{denied:?}");
    let explain = admin.run(&[
        "permissions",
        "explain",
        "change-value",
        &cat.environment,
        "--principal",
        "rita",
    ]);
    assert!(explain.ok().contains(&group), "{explain:?}");
    let batch = admin
        .run(&[
            "-o",
            "json",
            "permissions",
            "batch",
            &format!("change-value:{}:users/rita", cat.environment),
            &format!("lock:{}:users/rita", cat.environment),
        ])
        .json();
    assert_eq!(batch["decisions"][0]["allowed"], true);
    assert_eq!(batch["decisions"][1]["allowed"], false, "{batch:#}");

    // Exit codes.
    let missing = admin.run(&["users", "get", "nobody"]);
    missing.code(3);
    assert!(
        missing.stderr.starts_with("error: NOT_FOUND"),
        "{missing:?}"
    );
    assert!(missing.stderr.contains("request id: "), "{missing:?}");
    let invalid = admin.run(&[
        "users",
        "create",
        "not valid!",
        "--email",
        "x@example.com",
        "--display-name",
        "X",
    ]);
    invalid.code(5);
    assert!(
        invalid.stderr.starts_with("error: INVALID_ARGUMENT"),
        "{invalid:?}"
    );
    assert!(
        invalid.stderr.contains("\n  user.username: "),
        "{invalid:?}"
    );
    admin.run(&["users", "frobnicate"]).code(2);
    admin.run(&["users", "update", "rita"]).code(2);
    let dup = admin.run(&["portfolios", "create", "Shop"]);
    dup.code(6);

    let rita = Operator::new(&server.url, dir.path(), "rita");
    rita.login("rita", "Requester-pass-1").ok();
    let refused = rita.run(&["users", "list"]);
    refused.code(8);
    assert!(
        refused.stderr.starts_with("error: PERMISSION_DENIED"),
        "{refused:?}"
    );

    let unreachable =
        Operator::new("http://127.0.0.1:1", dir.path(), "nobody").with_env("FLUXGATE_TOKEN", "x");
    unreachable.run(&["whoami"]).code(7);
    unreachable
        .run(&["--server", "not a url", "whoami"])
        .code(2);
}

fn who_is(op: &Operator) -> serde_json::Value {
    op.run(&["-o", "json", "whoami"]).json()
}

fn change_request_through_approval_and_audit_export(b: Backend) {
    let server = TestServer::start(b);
    let dir = tempfile::tempdir().unwrap();
    let admin = Operator::new(&server.url, dir.path(), "admin");
    admin.login(ADMIN, ADMIN_PASSWORD).ok();
    let cat = catalog(&admin, "Payments");
    let (sa, secret) = pipeline_account(&admin, &cat);
    let keys = admin.run(&["service-accounts", "keys", "list", &sa]);
    assert!(keys.ok().contains("/keys/"), "{keys:?}");

    let pipeline =
        Operator::new(&server.url, dir.path(), "pipeline").with_env("FLUXGATE_TOKEN", &secret);
    let who = pipeline.run(&["-o", "json", "whoami"]).json();
    assert_eq!(who["principal"], sa.as_str());
    assert!(!pipeline.session.exists());

    let name = pipeline.run(&[
        "-o",
        "name",
        "change-requests",
        "submit",
        "--environment",
        &cat.environment,
        "--feature",
        "new-checkout",
        "--kind",
        "change-value",
        "--payload",
        r#"{"value": true}"#,
        "--title",
        "Enable the new checkout",
    ]);
    let name = name.ok().trim().to_owned();
    assert!(name.starts_with("changeRequests/"), "{name}");

    // The same invocation retried with its idempotency key gets the same request.
    let submit = |key: &str| {
        pipeline
            .run(&[
                "-o",
                "name",
                "--idempotency-key",
                key,
                "change-requests",
                "submit",
                "--environment",
                &cat.environment,
                "--feature",
                "retried",
                "--kind",
                "retire",
                "--title",
                "Retire it",
            ])
            .ok()
            .trim()
            .to_owned()
    };
    let first = submit("build-42-lock");
    assert_eq!(submit("build-42-lock"), first);
    assert_ne!(submit("build-43-lock"), first);

    let waited = pipeline.run(&["--timeout", "2s", "change-requests", "wait", &name]);
    waited.code(12);
    assert!(waited.stderr.contains("timed out"), "{waited:?}");

    // Service accounts never review, nor does the admin who set the pipeline up.
    pipeline.run(&["change-requests", "approve", &name]).code(8);
    admin
        .run(&["change-requests", "approve", &name, "--comment", "mine"])
        .code(8);
    let rita = reviewer(&admin, &server.url, dir.path(), "rita");
    let approved = rita
        .run(&[
            "-o",
            "json",
            "change-requests",
            "approve",
            &name,
            "--comment",
            "ok",
        ])
        .json();
    assert_eq!(
        approved["changeRequest"]["state"],
        "CHANGE_REQUEST_STATE_APPROVED"
    );
    let waited = pipeline.run(&["--timeout", "30s", "change-requests", "wait", &name]);
    assert!(waited.ok().contains("approved"), "{waited:?}");

    let applied = pipeline
        .run(&["-o", "json", "change-requests", "mark-applied", &name])
        .json();
    assert_eq!(
        applied["changeRequest"]["state"],
        "CHANGE_REQUEST_STATE_APPLIED"
    );
    assert_eq!(applied["changeRequest"]["appliedBy"], sa.as_str());
    let listed = admin.run(&["change-requests", "list", "--state", "applied"]);
    assert!(listed.ok().contains(&name), "{listed:?}");

    // A policy that requires a named reviewer: the pipeline names Rita.
    let policy = admin
        .run(&[
            "-o",
            "json",
            "policy",
            "update",
            &cat.environment,
            "--require-requested-reviewer",
            "true",
        ])
        .json();
    assert_eq!(policy["policy"]["requireRequestedReviewer"], true);
    let submit_naming = |reviewers: &[&str]| {
        let mut args = vec![
            "-o",
            "json",
            "change-requests",
            "submit",
            "--environment",
            &cat.environment,
            "--feature",
            "named",
            "--kind",
            "retire",
            "--title",
            "Retire, asking Rita",
        ];
        for r in reviewers {
            args.extend(["--reviewer", r]);
        }
        pipeline.run(&args)
    };
    submit_naming(&[]).code(5);
    let named = submit_naming(&["rita"]).json();
    assert_eq!(named["changeRequest"]["requireRequestedReviewer"], true);
    assert_eq!(
        named["changeRequest"]["requestedReviewers"][0],
        text(&who_is(&rita), &["principal"]).as_str()
    );

    // The export holds one line per event, as many as the chain has.
    let file = dir.path().join("audit.jsonl");
    let export = admin.run(&[
        "audit",
        "export",
        "--file",
        file.to_str().unwrap(),
        "--progress",
    ]);
    export.ok();
    let verify = admin.run(&["-o", "json", "audit", "verify"]).json();
    let checked: usize = verify["eventsChecked"].as_str().unwrap().parse().unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), checked, "{export:?}");
    // One JSON form: an exported line is the event exactly as `audit list -o json` shows it.
    let listed = admin
        .run(&["-o", "json", "audit", "list", "--page-size", "1000"])
        .json();
    let listed = listed["events"].as_array().unwrap();
    assert_eq!(listed.len(), lines.len());
    for (a, b) in listed.iter().zip(&lines) {
        assert_eq!(a, b);
    }
    assert!(
        export
            .stderr
            .contains(&format!("exported {checked} events")),
        "{export:?}"
    );
    let events = admin
        .run(&[
            "-o",
            "json",
            "audit",
            "list",
            "--action",
            "change_request.applied",
        ])
        .json();
    assert_eq!(
        events["events"].as_array().map(Vec::len),
        Some(1),
        "{events:#}"
    );
}

fn passwords_keys_and_policy(b: Backend) {
    let server = TestServer::start(b);
    let dir = tempfile::tempdir().unwrap();
    let admin = Operator::new(&server.url, dir.path(), "admin");
    // A corrupt session file does not stand in the way of logging in again.
    std::fs::create_dir_all(admin.session.parent().unwrap()).unwrap();
    std::fs::write(&admin.session, "{not json").unwrap();
    admin.run(&["whoami"]).code(4);
    admin.login(ADMIN, ADMIN_PASSWORD).ok();
    admin
        .with_env("FLUXGATE_NEW_PASSWORD", "Approver-pass-1")
        .run(&[
            "users",
            "create",
            "alice",
            "--email",
            "alice@example.com",
            "--display-name",
            "Alice",
            "--role",
            "approver",
            "--with-password",
        ])
        .ok();

    // An admin reset gives a temporary password; Alice must change it before anything else.
    let reset = admin
        .run(&["-o", "json", "passwords", "reset", "alice"])
        .json();
    let temporary = text(&reset, &["temporaryPassword"]);
    let alice = Operator::new(&server.url, dir.path(), "alice");
    let login = alice.login("alice", &temporary);
    login.ok();
    assert!(login.stderr.contains("passwords change"), "{login:?}");
    alice
        .run_with_stdin(
            &["passwords", "change", "--stdin"],
            &format!("{temporary}\nAlice-new-pass-2\n"),
        )
        .ok();
    let who = alice.run(&["-o", "json", "whoami"]).json();
    assert_eq!(who["role"], "ROLE_APPROVER");
    assert_eq!(who["user"]["mustChangePassword"], false, "{who:#}");
    alice
        .run(&["passwords", "request-reset", "alice@example.com"])
        .ok();

    // Keys: rotate (the old one stops at once), revoke.
    let sa = admin
        .run(&[
            "-o",
            "name",
            "service-accounts",
            "create",
            "--display-name",
            "flag store",
        ])
        .ok()
        .trim()
        .to_owned();
    let key = admin
        .run(&["-o", "json", "service-accounts", "keys", "create", &sa])
        .json();
    let (key_name, old_secret) = (text(&key, &["key", "name"]), text(&key, &["secret"]));
    let as_key = |secret: &str| {
        Operator::new(&server.url, dir.path(), "sa").with_env("FLUXGATE_TOKEN", secret)
    };
    as_key(&old_secret).run(&["whoami"]).ok();
    let rotated = admin
        .run(&[
            "-o",
            "json",
            "service-accounts",
            "keys",
            "rotate",
            &key_name,
        ])
        .json();
    let new_secret = text(&rotated, &["secret"]);
    as_key(&old_secret).run(&["whoami"]).code(4);
    as_key(&new_secret).run(&["whoami"]).ok();
    let new_key = text(&rotated, &["key", "name"]);
    admin
        .run(&["service-accounts", "keys", "revoke", &new_key])
        .ok();
    as_key(&new_secret).run(&["whoami"]).code(4);

    // A provisioning account: its key is good for SCIM alone (denied here).
    let scim = admin
        .run(&[
            "-o",
            "json",
            "service-accounts",
            "create",
            "--display-name",
            "okta",
            "--provisioner",
        ])
        .json();
    assert_eq!(scim["serviceAccount"]["provisioner"], true, "{scim:#}");
    let scim_name = text(&scim, &["serviceAccount", "name"]);
    let scim_key = admin
        .run(&[
            "-o",
            "json",
            "service-accounts",
            "keys",
            "create",
            &scim_name,
        ])
        .json();
    as_key(&text(&scim_key, &["secret"]))
        .run(&["users", "list"])
        .code(8);

    // The approval policy of an environment.
    let cat = catalog(&admin, "Policies");
    let policy = admin
        .run(&[
            "-o",
            "json",
            "policy",
            "update",
            &cat.environment,
            "--required-approvals",
            "2",
            "--pending-ttl",
            "1d",
        ])
        .json();
    assert_eq!(policy["policy"]["requiredApprovals"], 2);
    assert_eq!(policy["policy"]["pendingTtl"], "86400s");
    let shown = admin.run(&["policy", "get", &cat.environment]);
    assert!(shown.ok().contains("required approvals:  2"), "{shown:?}");
}

/// A Team Admin with two-step sign-in: `fluxctl login` needs `--code` (or
/// FLUXGATE_SECOND_FACTOR_CODE), and says so when it is missing.
fn login_with_a_second_factor(b: Backend) {
    use fluxgate_proto::v1 as pb;
    use fluxgate_proto::v1::auth_service_client::AuthServiceClient;
    let server = TestServer::start(b);
    let url = server.url.clone();
    // Enrol over gRPC: fluxctl has no enrolment command (the console and the API do).
    let secret = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            let mut auth = AuthServiceClient::connect(url).await.unwrap();
            let login = pb::LoginRequest {
                username: ADMIN.into(),
                password: ADMIN_PASSWORD.into(),
                ..Default::default()
            };
            let token = auth
                .login(login)
                .await
                .unwrap()
                .into_inner()
                .tokens
                .unwrap()
                .access_token;
            let with = |msg| {
                let mut r = tonic::Request::new(msg);
                let v = format!("Bearer {token}").parse().unwrap();
                r.metadata_mut().insert("authorization", v);
                r
            };
            let e = auth
                .begin_totp_enrollment(with(pb::BeginTotpEnrollmentRequest {}))
                .await
                .unwrap()
                .into_inner();
            let confirm = pb::ConfirmTotpEnrollmentRequest {
                code: totp(&e.secret, 0),
            };
            let mut r = tonic::Request::new(confirm);
            let v = format!("Bearer {token}").parse().unwrap();
            r.metadata_mut().insert("authorization", v);
            auth.confirm_totp_enrollment(r).await.unwrap();
            e.secret
        });
    let dir = tempfile::tempdir().unwrap();
    let admin = Operator::new(&server.url, dir.path(), "admin");
    let out = admin.login(ADMIN, ADMIN_PASSWORD);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("second-factor code is required"),
        "{out:?}"
    );
    let code = totp(&secret, 1);
    let out = admin.run_with_stdin(
        &["login", ADMIN, "--password-stdin", "--code", &code],
        &format!("{ADMIN_PASSWORD}\n"),
    );
    assert!(out.ok().contains("Logged in"), "{out:?}");
    admin.run(&["whoami"]).ok();
    // The same code again is refused, like a wrong password.
    let again = admin.run_with_stdin(
        &["login", ADMIN, "--password-stdin", "--code", &code],
        &format!("{ADMIN_PASSWORD}\n"),
    );
    assert_ne!(again.code, 0, "{again:?}");
    assert!(
        again.stderr.contains("invalid username or password"),
        "{again:?}"
    );
}

/// The TOTP code of a base32 secret, `steps` from now.
fn totp(secret: &str, steps: u64) -> String {
    let bytes = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, secret).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes)
        .generate(now + steps * 30)
}

crate::both_backends!(
    login_with_a_second_factor,
    session_lifecycle_and_refresh,
    administration_and_exit_codes,
    change_request_through_approval_and_audit_export,
    passwords_keys_and_policy
);
