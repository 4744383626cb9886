//! A corpus of malformed requests on every RPC (`tests/support/malformed.py`, a Python grpcio
//! client whose stubs and mutations come from the method descriptors of `proto/`): never
//! INTERNAL, UNKNOWN or UNAVAILABLE, INVALID_ARGUMENT naming the field for bad input, the
//! server up throughout, and the database unchanged by the refused calls.
//!
//! Python comes from `make test`'s virtualenv (`FLUXGATE_TEST_PYTHON`). Without it this test is
//! skipped loudly, unless `FLUXGATE_TEST_REQUIRE_PYTHON=1`, when it fails.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::{ADMIN_PASSWORD, Backend, TestServer};

fn python() -> String {
    std::env::var("FLUXGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// `None` (after saying why) when Python with grpcio is missing and not required.
fn tools() -> Option<String> {
    let python = python();
    let ok = Command::new(&python)
        .args(["-c", "import grpc, grpc_tools"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    let why = format!(
        "{python} with grpcio and grpcio-tools is needed \
         (tests/support/requirements.txt; `make test` installs them)"
    );
    if std::env::var("FLUXGATE_TEST_REQUIRE_PYTHON").is_ok_and(|v| v == "1" || v == "true") {
        panic!("malformed-input tests required (FLUXGATE_TEST_REQUIRE_PYTHON=1): {why}");
    }
    eprintln!("\n*** SKIPPING malformed-input test: {why}.\n");
    None
}

/// The database as the script opens it: a SQLite file path, or the PostgreSQL URL.
fn database(s: &TestServer) -> String {
    match s.database_url.strip_prefix("sqlite://") {
        Some(path) => path.to_owned(),
        None => s.database_url.clone(),
    }
}

async fn malformed_requests_are_refused_cleanly(b: Backend) {
    let Some(python) = tools() else { return };
    // The corpus's webhook points at a closed loopback port: its first attempt fails at once and
    // the next is an hour away, so the worker stays quiet while the database is compared.
    let s = TestServer::start_configured(b, |c| {
        c.webhooks.allowed_private_networks = vec!["127.0.0.1/32".into()];
        c.webhooks.retry_initial_ms = 3_600_000;
    })
    .await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("support/malformed.py");
    let (addr, db) = (s.channel_addr(), database(&s));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(addr)
            .arg(ADMIN_PASSWORD)
            .arg(db)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("malformed: ok"),
        "malformed-input corpus failed:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");
}

crate::both_backends!(malformed_requests_are_refused_cleanly);
