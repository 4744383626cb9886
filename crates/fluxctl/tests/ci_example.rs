//! docs/examples/ci-pipeline.sh end to end: the pipeline's service account submits, waits,
//! applies and marks applied once another person approves; a rejection ends it with exit 10;
//! no decision in time with exit 12 and the request cancelled; a retried job with the same
//! pipeline id neither submits again nor applies again.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{
    ADMIN, ADMIN_PASSWORD, BIN, Backend, Catalog, Operator, TestServer, catalog, eventually,
    pipeline_account, reviewer, text, wait_child,
};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/ci-pipeline.sh")
}

/// Starts the script in the background as the pipeline would.
fn start_pipeline(
    server: &TestServer,
    cat: &Catalog,
    secret: &str,
    feature: &str,
    wait: &str,
    applied: &Path,
) -> Child {
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.env_clear();
    if feature == "risky-flag" {
        // The environment's full name alone works as well.
        cmd.env("FLUXGATE_ENVIRONMENT", &cat.environment);
    } else {
        // By names, as a pipeline's configuration has them.
        cmd.env("FLUXGATE_PORTFOLIO", "checkout")
            .env("FLUXGATE_APPLICATION", "WEB")
            .env("FLUXGATE_ENVIRONMENT", "prod");
    }
    cmd.arg(script())
        .env("PATH", path)
        .env("HOME", applied.parent().unwrap())
        .env("FLUXGATE_SERVER", &server.url)
        .env("FLUXGATE_TOKEN", secret)
        .env("FEATURE_KEY", feature)
        .env("WAIT_TIMEOUT", wait)
        .env("CI_PIPELINE_ID", format!("build-{feature}"))
        .env(
            "APPLY_COMMAND",
            format!("echo \"$CHANGE_REQUEST\" >> '{}'", applied.display()),
        )
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// The pending request for `feature`, once the script has submitted it.
fn pending_request(admin: &Operator, cat: &Catalog, feature: &str) -> String {
    eventually(Duration::from_secs(30), || {
        let list = admin
            .run(&[
                "-o",
                "json",
                "change-requests",
                "list",
                "--state",
                "pending",
                "--environment",
                &cat.environment,
            ])
            .json();
        list["changeRequests"]
            .as_array()?
            .iter()
            .find(|c| c["featureKey"] == feature)
            .map(|c| text(c, &["name"]))
    })
}

fn state(admin: &Operator, name: &str) -> String {
    let got = admin
        .run(&["-o", "json", "change-requests", "get", name])
        .json();
    text(&got, &["changeRequest", "state"])
}

fn ci_pipeline_applies_once_approved_and_stops_on_rejection(b: Backend) {
    let server = TestServer::start(b);
    let dir = tempfile::tempdir().unwrap();
    let admin = Operator::new(&server.url, dir.path(), "admin");
    admin.login(ADMIN, ADMIN_PASSWORD).ok();
    let cat = catalog(&admin, "Checkout");
    let (_sa, secret) = pipeline_account(&admin, &cat);
    let applied = dir.path().join("applied.txt");
    // The admin set the pipeline up, so the pipeline acts for the admin: another person reviews
    // its requests (one party never both authors and approves a change).
    let rita = reviewer(&admin, &server.url, dir.path(), "rita");

    // Approved: applied and marked applied.
    let mut run = start_pipeline(&server, &cat, &secret, "new-checkout", "60s", &applied);
    let name = pending_request(&admin, &cat, "new-checkout");
    let mine = admin.run(&["change-requests", "approve", &name, "--comment", "mine"]);
    mine.code(8);
    assert!(mine.stderr.contains("one party"), "{mine:?}");
    rita.run(&["change-requests", "approve", &name, "--comment", "ship it"])
        .ok();
    let status = wait_child(&mut run, Duration::from_secs(60)).expect("the pipeline ends");
    assert_eq!(status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&applied).unwrap().trim(), name);
    assert_eq!(state(&admin, &name), "CHANGE_REQUEST_STATE_APPLIED");

    // The job retried with the same pipeline id, twice and at once: it finds the request the
    // first run submitted, sees it applied, and applies nothing again.
    let mut again = start_pipeline(&server, &cat, &secret, "new-checkout", "60s", &applied);
    let mut third = start_pipeline(&server, &cat, &secret, "new-checkout", "60s", &applied);
    for run in [&mut again, &mut third] {
        let status = wait_child(run, Duration::from_secs(60)).expect("the rerun ends");
        assert_eq!(status.code(), Some(0));
    }
    assert_eq!(
        std::fs::read_to_string(&applied).unwrap().lines().count(),
        1,
        "applied twice"
    );
    let all = admin.run(&["-o", "json", "change-requests", "list"]).json();
    let submitted = all["changeRequests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["featureKey"] == "new-checkout")
        .count();
    assert_eq!(submitted, 1, "{all:#}");

    // Rejected: exit 10, nothing applied.
    let mut run = start_pipeline(&server, &cat, &secret, "risky-flag", "60s", &applied);
    let name = pending_request(&admin, &cat, "risky-flag");
    rita.run(&[
        "change-requests",
        "reject",
        &name,
        "--comment",
        "not this week",
    ])
    .ok();
    let status = wait_child(&mut run, Duration::from_secs(60)).expect("the pipeline ends");
    assert_eq!(status.code(), Some(10));
    assert!(!std::fs::read_to_string(&applied).unwrap().contains(&name));
    assert_eq!(state(&admin, &name), "CHANGE_REQUEST_STATE_REJECTED");

    // No decision in time: exit 12, and the request is withdrawn.
    let mut run = start_pipeline(&server, &cat, &secret, "slow-review", "2s", &applied);
    let status = wait_child(&mut run, Duration::from_secs(60)).expect("the pipeline ends");
    assert_eq!(status.code(), Some(12));
    let list = admin
        .run(&[
            "-o",
            "json",
            "change-requests",
            "list",
            "--state",
            "cancelled",
        ])
        .json();
    assert!(
        list["changeRequests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["featureKey"] == "slow-review"),
        "{list:#}"
    );
}

crate::both_backends!(ci_pipeline_applies_once_approved_and_stops_on_rejection);
