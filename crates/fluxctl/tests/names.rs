//! Names instead of ids, against the real server: portfolios, applications, environments and
//! groups by display name in any case (scoped by --portfolio and --application), users by
//! username, in the catalog, group, permission, policy, change-request and audit commands;
//! not-found and ambiguous names refused clearly; every printed enum spelling accepted; server
//! messages naming the fluxctl command rather than the RPC.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

fn name_of(run: &Run, path: &[&str]) -> String {
    text(&run.json(), path)
}

fn names_instead_of_ids(b: Backend) {
    let server = TestServer::start(b);
    let dir = tempfile::tempdir().unwrap();
    let admin = Operator::new(&server.url, dir.path(), "admin");
    admin.login(ADMIN, ADMIN_PASSWORD).ok();
    let json = |args: &[&str]| {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        admin.run(&all)
    };

    // Two portfolios with an application called "web" each; "prod" in three applications.
    let shop = name_of(
        &json(&["portfolios", "create", "Shop"]),
        &["portfolio", "name"],
    );
    let books = name_of(
        &json(&["portfolios", "create", "Books"]),
        &["portfolio", "name"],
    );
    let shop_web = name_of(
        &json(&["applications", "create", "--portfolio", "shop", "web"]),
        &["application", "name"],
    );
    assert!(shop_web.starts_with(&format!("{shop}/applications/")));
    let books_web = name_of(
        &json(&["applications", "create", "--portfolio", "BOOKS", "web"]),
        &["application", "name"],
    );
    assert!(books_web.starts_with(&format!("{books}/")));
    let shop_api = name_of(
        &json(&["applications", "create", "--portfolio", &shop, "api"]),
        &["application", "name"],
    );
    let shop_prod = name_of(
        &json(&[
            "environments",
            "create",
            "--portfolio",
            "Shop",
            "--application",
            "web",
            "prod",
            "--production",
        ]),
        &["environment", "name"],
    );
    assert!(shop_prod.starts_with(&format!("{shop_web}/environments/")));
    json(&["environments", "create", "--application", &shop_api, "prod"]).ok();
    json(&[
        "environments",
        "create",
        "--application",
        "web",
        "--portfolio",
        "Books",
        "prod",
    ])
    .ok();
    let staging = name_of(
        &json(&[
            "environments",
            "create",
            "--portfolio",
            "Shop",
            "--application",
            "web",
            "staging",
        ]),
        &["environment", "name"],
    );

    // Ambiguous: refused with exit 2, naming each candidate; narrowed by --portfolio.
    let amb = admin.run(&["applications", "get", "web"]);
    amb.code(2);
    assert!(amb.stderr.contains("ambiguous"), "{amb:?}");
    assert!(
        amb.stderr.contains(&shop_web) && amb.stderr.contains(&books_web),
        "{amb:?}"
    );
    assert!(amb.stderr.contains("Shop / web"), "{amb:?}");
    let got = json(&["applications", "get", "web", "--portfolio", "Books"]);
    assert_eq!(name_of(&got, &["application", "name"]), books_web);
    // By its id alone, too.
    let books_web_id = books_web.rsplit('/').next().unwrap();
    let got = json(&["applications", "get", books_web_id]);
    assert_eq!(name_of(&got, &["application", "name"]), books_web);
    // Unknown: exit 3, with the command that lists them.
    let none = admin.run(&["applications", "get", "nope", "--portfolio", "Shop"]);
    none.code(3);
    assert!(
        none.stderr
            .contains("no application named \"nope\" in \"Shop\""),
        "{none:?}"
    );
    assert!(
        none.stderr.contains("fluxctl applications list"),
        "{none:?}"
    );
    admin.run(&["portfolios", "get", "Nowhere"]).code(3);

    // Environments: unique anywhere, or with the scope that makes them so.
    let got = json(&["environments", "get", "staging"]);
    assert_eq!(name_of(&got, &["environment", "name"]), staging);
    admin.run(&["environments", "get", "prod"]).code(2);
    admin
        .run(&["environments", "get", "prod", "--portfolio", "Shop"])
        .code(2);
    let got = json(&[
        "environments",
        "get",
        "PROD",
        "--portfolio",
        "Shop",
        "--application",
        "Web",
    ]);
    assert_eq!(name_of(&got, &["environment", "name"]), shop_prod);
    let list = json(&[
        "environments",
        "list",
        "--application",
        "web",
        "--portfolio",
        "Shop",
    ]);
    assert_eq!(list.json()["environments"].as_array().unwrap().len(), 2);

    // Users in any spelling of their role; a group with grants by names.
    for (user, role) in [("rita", "ROLE_REQUESTER"), ("avery", "approver")] {
        admin
            .with_env("FLUXGATE_NEW_PASSWORD", "Long-enough-pass-1")
            .run(&[
                "users",
                "create",
                user,
                "--email",
                &format!("{user}@example.com"),
                "--display-name",
                user,
                "--role",
                role,
                "--with-password",
            ])
            .ok();
    }
    let avery = json(&["users", "get", "avery"]);
    assert_eq!(text(&avery.json(), &["user", "role"]), "ROLE_APPROVER");
    json(&["users", "update", "avery", "--role", "TEAM_ADMIN"]).ok();
    let listed = json(&["users", "list", "--role", "role_team_admin"]);
    assert!(
        listed.json()["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["username"] == "avery"),
        "{listed:?}"
    );
    admin
        .run(&["users", "update", "avery", "--role", "ROLE_ADMIN"])
        .code(2);
    // "prod" alone is in two of Shop's applications: refused; `web/prod` is one.
    let amb = admin.run(&[
        "groups",
        "create",
        "--portfolio",
        "Shop",
        "Operators",
        "--env-grant",
        "prod=read",
    ]);
    amb.code(2);
    assert!(amb.stderr.contains("Shop / api / prod"), "{amb:?}");
    let ops = json(&[
        "groups",
        "create",
        "--portfolio",
        "Shop",
        "Operators",
        "--env-grant",
        "web/prod=read,CHANGE_VALUE",
        "--app-grant",
        "api=FEATURE_PERMISSION_CREATE",
    ]);
    let ops_json = ops.json();
    assert_eq!(
        ops_json["group"]["environmentGrants"][0]["environment"],
        shop_prod.as_str()
    );
    assert_eq!(
        ops_json["group"]["applicationGrants"][0]["application"],
        shop_api.as_str()
    );
    let ops_name = text(&ops_json, &["group", "name"]);
    json(&["groups", "create", "--portfolio", "Books", "operators"]).ok();
    admin
        .run(&["groups", "members", "add", "Operators", "rita"])
        .code(2);
    admin
        .run(&[
            "groups",
            "members",
            "add",
            "operators",
            "rita",
            "--portfolio",
            "Shop",
        ])
        .ok();
    let members = json(&[
        "groups",
        "members",
        "list",
        "Operators",
        "--portfolio",
        "shop",
    ]);
    assert_eq!(members.json()["members"].as_array().unwrap().len(), 1);

    // Permission checks and lookups by names and any spelling of the permission.
    let check = |perm: &str, portfolio: &str| {
        admin.run(&[
            "permissions",
            "check",
            perm,
            "prod",
            "--portfolio",
            portfolio,
            "--application",
            "web",
            "--principal",
            "rita",
            "--exit-code",
        ])
    };
    check("change-value", "Shop").ok();
    check("PERMISSION_CHANGE_VALUE", "Shop").ok();
    check("change_value", "Books").code(8);
    admin
        .run(&[
            "permissions",
            "check",
            "create-feature",
            "api",
            "--portfolio",
            "Shop",
            "--principal",
            "rita",
            "--exit-code",
        ])
        .ok();
    let batch = json(&[
        "permissions",
        "batch",
        &format!("CHANGE_VALUE:{shop_prod}:rita"),
        "read:staging:rita",
    ]);
    let decisions = batch.json()["decisions"].as_array().unwrap().clone();
    assert_eq!(decisions[0]["allowed"], true);
    assert_eq!(decisions[1]["allowed"], false);
    let principals = admin.run(&[
        "permissions",
        "lookup-principals",
        "change-value",
        "prod",
        "--portfolio",
        "Shop",
        "--application",
        "web",
    ]);
    assert!(principals.ok().contains("users/"), "{principals:?}");
    let resources = admin.run(&[
        "permissions",
        "lookup-resources",
        "read",
        "web",
        "--portfolio",
        "Shop",
        "--principal",
        "rita",
    ]);
    assert_eq!(resources.ok().trim(), shop_prod);

    // The approval policy and a change request, by names.
    let policy = json(&[
        "policy",
        "update",
        "prod",
        "--portfolio",
        "Shop",
        "--application",
        "web",
        "--required-approvals",
        "1",
    ]);
    assert_eq!(
        name_of(&policy, &["policy", "name"]),
        format!("{shop_prod}/approvalPolicy")
    );
    let rita = Operator::new(&server.url, dir.path(), "rita");
    rita.login("rita", "Long-enough-pass-1").ok();
    let submitted = rita
        .run(&[
            "-o",
            "json",
            "change-requests",
            "submit",
            "--portfolio",
            "Shop",
            "--application",
            "web",
            "--environment",
            "prod",
            "--feature",
            "dark-mode",
            "--kind",
            "CHANGE_KIND_CHANGE_VALUE",
            "--payload",
            "{\"value\": true}",
            "--title",
            "Dark mode on",
        ])
        .json();
    assert_eq!(
        text(&submitted, &["changeRequest", "environment"]),
        shop_prod
    );
    let pending = json(&[
        "change-requests",
        "list",
        "--environment",
        "prod",
        "--portfolio",
        "Shop",
        "--application",
        "web",
        "--state",
        "CHANGE_REQUEST_STATE_PENDING",
    ]);
    assert_eq!(
        pending.json()["changeRequests"].as_array().unwrap().len(),
        1
    );

    // Audit filters take the same names: the group's events, the portfolio's, an actor's.
    let events = json(&[
        "audit",
        "list",
        "--group",
        "Operators",
        "--portfolio",
        "Shop",
    ]);
    let events = events.json()["events"].as_array().unwrap().clone();
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| e["target"] == ops_name.as_str()));
    let events = json(&[
        "audit",
        "list",
        "--portfolio",
        "books",
        "--action",
        "portfolio.created",
    ]);
    let events = events.json()["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["target"], books.as_str());
    let by_rita = json(&[
        "audit",
        "list",
        "--actor",
        "rita",
        "--action",
        "change_request.submitted",
    ]);
    assert_eq!(by_rita.json()["events"].as_array().unwrap().len(), 1);
    admin
        .run(&["audit", "list", "--group", "Operators"])
        .code(2);
}

/// A server message that names an RPC shows the fluxctl command instead.
fn errors_name_the_command_not_the_rpc(b: Backend) {
    let server = TestServer::start(b);
    let dir = tempfile::tempdir().unwrap();
    let admin = Operator::new(&server.url, dir.path(), "admin");
    admin.login(ADMIN, ADMIN_PASSWORD).ok();
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
    let wrong = anon
        .with_env("FLUXGATE_NEW_PASSWORD", "Nora-first-pass-1")
        .run(&["passwords", "confirm-reset", "--token", &token]);
    assert_ne!(wrong.code, 0, "{wrong:?}");
    assert!(
        wrong
            .stderr
            .contains("`fluxctl passwords complete-registration`"),
        "{wrong:?}"
    );
    assert!(!wrong.stderr.contains("CompleteRegistration"), "{wrong:?}");
}

crate::both_backends!(names_instead_of_ids, errors_name_the_command_not_the_rpc);
