//! What an operator watches: the Prometheus endpoint (calls by method and code, latencies,
//! logins, lockouts, pool, outbox) and request ids on every reply and audit event.

use fluxgate_proto::v1 as pb;
use tonic::{Code, Request};

use crate::harness::{Backend, TestServer, authed, expect_code};

const REQUEST_ID: &str = "x-request-id";

async fn metrics_count_calls_logins_and_lockouts(b: Backend) {
    let s = TestServer::start_configured(b, |c| {
        c.settings.lockout_policy.max_failed_attempts = 2;
    })
    .await;
    let admin = s.admin_token().await;
    s.create_user(&admin, "lou", pb::Role::Requester, "Lou-pass-1234")
        .await;
    let mut auth = s.auth();
    for expected in [
        Code::Unauthenticated,
        Code::Unauthenticated,
        Code::ResourceExhausted,
    ] {
        expect_code(
            auth.login(pb::LoginRequest {
                username: "lou".into(),
                password: "Wrong-pass-1".into(),
                ..Default::default()
            })
            .await,
            expected,
        );
    }
    expect_code(
        auth.login(pb::LoginRequest {
            username: String::new(),
            password: "x".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );

    let login = "/fluxgate.v1.AuthService/Login";
    let sample = |name: &str, labels: &str| format!("fluxgate_{name}{{{labels}}}");
    let m = |k: String| {
        let s = &s;
        async move { s.metric(&k).await.unwrap_or(0.0) }
    };
    // The admin's login and the two failures before the lock, then one refused as locked.
    assert_eq!(
        m(sample(
            "rpc_requests_total",
            &format!("method=\"{login}\",code=\"OK\"")
        ))
        .await,
        1.0
    );
    assert_eq!(
        m(sample(
            "rpc_requests_total",
            &format!("method=\"{login}\",code=\"UNAUTHENTICATED\"")
        ))
        .await,
        2.0
    );
    assert_eq!(
        m(sample(
            "rpc_requests_total",
            &format!("method=\"{login}\",code=\"RESOURCE_EXHAUSTED\"")
        ))
        .await,
        1.0
    );
    assert_eq!(
        m(sample(
            "rpc_requests_total",
            &format!("method=\"{login}\",code=\"INVALID_ARGUMENT\"")
        ))
        .await,
        1.0
    );
    assert_eq!(m(sample("logins_total", "outcome=\"Success\"")).await, 1.0);
    assert_eq!(m(sample("logins_total", "outcome=\"Failure\"")).await, 2.0);
    assert_eq!(m(sample("logins_total", "outcome=\"Locked\"")).await, 1.0);
    assert_eq!(s.metric("fluxgate_lockouts_total").await, Some(1.0));
    // Five calls of Login in all went into its latency histogram.
    assert_eq!(
        m(sample(
            "rpc_duration_seconds_count",
            &format!("method=\"{login}\"")
        ))
        .await,
        5.0
    );

    // Made-up methods share one label instead of growing the label set.
    let mut raw = tonic::client::Grpc::new(s.channel.clone());
    raw.ready().await.unwrap();
    let r: Result<tonic::Response<()>, _> = raw
        .unary(
            Request::new(()),
            "/fluxgate.v1.Nothing/Here".parse().unwrap(),
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await;
    expect_code(r, Code::Unimplemented);
    let text = s.metrics().await;
    assert!(
        text.contains("fluxgate_rpc_requests_total{method=\"other\",code=\"UNIMPLEMENTED\"} 1"),
        "{text}"
    );
    assert!(!text.contains("Nothing/Here"));

    for gauge in [
        "fluxgate_db_pool_connections{state=\"idle\"}",
        "fluxgate_db_pool_max_connections",
        "fluxgate_directory_revision",
        "fluxgate_pending_approvals",
        "fluxgate_outbox_messages{state=\"pending\"}",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{gauge} "))),
            "{gauge} missing:\n{text}"
        );
    }
    assert!(s.metric("fluxgate_directory_revision").await.unwrap() > 0.0);
}

async fn every_reply_and_audit_event_carries_the_request_id(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;

    // The client's id comes back, on success and on error.
    let mut req = authed(pb::WhoAmIRequest::default(), &admin);
    req.metadata_mut()
        .insert(REQUEST_ID, "client-chosen-1".parse().unwrap());
    let r = s.auth().who_am_i(req).await.unwrap();
    assert_eq!(r.metadata().get(REQUEST_ID).unwrap(), "client-chosen-1");
    let mut req = authed(pb::GetUserRequest::default(), &admin);
    req.metadata_mut()
        .insert(REQUEST_ID, "client-chosen-2".parse().unwrap());
    let e = expect_code(s.users().get_user(req).await, Code::InvalidArgument);
    assert_eq!(e.metadata().get(REQUEST_ID).unwrap(), "client-chosen-2");

    // Without one (or with an unusable one), the server makes one, and a write's audit event
    // carries the same.
    let mut req = authed(
        pb::CreatePortfolioRequest {
            portfolio: Some(pb::Portfolio {
                display_name: "Traced".into(),
                ..Default::default()
            }),
        },
        &admin,
    );
    req.metadata_mut()
        .insert(REQUEST_ID, "not ok: spaces".parse().unwrap());
    let r = s.catalog().create_portfolio(req).await.unwrap();
    let id = r.metadata().get(REQUEST_ID).unwrap().to_str().unwrap();
    assert_ne!(id, "not ok: spaces");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let created = s
        .audit_events()
        .into_iter()
        .find(|e| e.action == "portfolio.created")
        .unwrap();
    assert_eq!(created.request_id.as_deref(), Some(id));
}

crate::both_backends!(
    metrics_count_calls_logins_and_lockouts,
    every_reply_and_audit_event_carries_the_request_id,
);
