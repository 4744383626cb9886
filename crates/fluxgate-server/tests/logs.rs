//! Logs as an operator reads them: JSON lines on request (`FLUXGATE_LOG_FORMAT=json`), and every
//! line written while serving a call carries the call's request id.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::auth_service_client::AuthServiceClient;
use serde_json::Value;

/// Logs in with `request_id`; returns the reply's request id and whether it succeeded.
fn login(addr: &str, password: &str, request_id: Option<&str>) -> (String, bool) {
    let addr = format!("http://{addr}");
    let (password, request_id) = (password.to_owned(), request_id.map(str::to_owned));
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            let mut c = AuthServiceClient::connect(addr).await.unwrap();
            let mut req = tonic::Request::new(pb::LoginRequest {
                username: "admin".into(),
                password,
                ..Default::default()
            });
            if let Some(id) = request_id {
                req.metadata_mut()
                    .insert("x-request-id", id.parse().unwrap());
            }
            match c.login(req).await {
                Ok(r) => (
                    r.metadata()
                        .get("x-request-id")
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .to_owned(),
                    true,
                ),
                Err(s) => (
                    s.metadata()
                        .get("x-request-id")
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .to_owned(),
                    false,
                ),
            }
        })
}

#[test]
fn every_line_of_a_call_carries_its_request_id_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("fluxgate.db").display());
    every_line_of_a_call_carries_its_request_id(&db, dir.path());
}

#[test]
fn every_line_of_a_call_carries_its_request_id_on_postgres() {
    if let Some(schema) = fluxgate_store::testing::fresh_postgres() {
        let dir = tempfile::tempdir().unwrap();
        every_line_of_a_call_carries_its_request_id(&schema.url, dir.path());
    }
}

fn every_line_of_a_call_carries_its_request_id(db: &str, dir: &std::path::Path) {
    let log_path = dir.join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let server = common::serve_logging(
        db,
        &[
            ("FLUXGATE_LOG_FORMAT", "json"),
            ("FLUXGATE_LOG", "info,fluxgate_server=debug"),
            ("FLUXGATE_BOOTSTRAP_PASSWORD", "Bootstrap-pass-123"),
        ],
        log,
    );
    let (ok_id, ok) = login(&server.addr, "Bootstrap-pass-123", Some("login-ok-1"));
    assert!(ok);
    assert_eq!(ok_id, "login-ok-1");
    let (bad_id, ok) = login(&server.addr, "Wrong-pass-123", Some("login-bad-2"));
    assert!(!ok);
    assert_eq!(bad_id, "login-bad-2");
    let (made_id, _) = login(&server.addr, "Wrong-pass-123", None);
    server.terminate();

    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    // Every line written inside a call names the call's request id.
    let mut in_calls = 0;
    for l in &lines {
        let in_rpc = l["span"]["name"] == "rpc"
            || l["spans"]
                .as_array()
                .is_some_and(|spans| spans.iter().any(|s| s["name"] == "rpc"));
        if in_rpc {
            in_calls += 1;
            assert!(
                l["span"]["request_id"].is_string(),
                "a call's line without its request id: {l}"
            );
        }
    }
    let of = |id: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["span"]["request_id"] == id)
            .collect()
    };
    let ok_lines = of("login-ok-1");
    assert!(
        ok_lines
            .iter()
            .any(|l| l["fields"]["message"] == "login" && l["fields"]["user"] == "admin"),
        "{ok_lines:?}"
    );
    assert!(
        ok_lines
            .iter()
            .any(|l| l["fields"]["message"] == "call finished" && l["fields"]["code"] == "OK")
    );
    assert!(of("login-bad-2").iter().any(|l| {
        l["fields"]["message"] == "call finished" && l["fields"]["code"] == "UNAUTHENTICATED"
    }));
    assert!(
        !of(&made_id).is_empty(),
        "the generated id {made_id} is logged"
    );
    assert!(in_calls >= 4, "{in_calls} lines inside calls:\n{text}");
}
