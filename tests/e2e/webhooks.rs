//! Events out: webhook subscriptions against real HTTP receivers on loopback (signatures checked
//! here, independently of the server's code), retries, time-outs, the audit stream and its
//! rewinding, the request-forgery guard, replicas sharing one database, and audit retention.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::webhook_service_client::WebhookServiceClient;
use fluxgate_server::Config;
use fluxgate_store::audit::{self, NewEvent};
use fluxgate_store::{PoolOptions, Store, StoreError};
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::*;

crate::both_backends!(
    events_are_signed_selected_and_in_commit_order,
    a_failing_endpoint_is_retried_and_order_kept,
    a_silent_endpoint_times_out_without_holding_up_others,
    an_audit_stream_carries_the_chain_and_resumes,
    destinations_are_guarded,
    pruning_archives_and_the_chain_still_verifies,
);

/// What a receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub(crate) id: String,
    timestamp: String,
    signatures: String,
    content_type: String,
    first: String,
    last: String,
    pub(crate) body: String,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Behaviour {
    Accept,
    /// Answers 503 to the first `n` requests.
    FailFirst(usize),
    /// Never answers.
    Hang,
}

#[derive(Clone)]
pub(crate) struct Receiver {
    pub(crate) url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    requests: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct Shared {
    behaviour: Behaviour,
    hits: Arc<Mutex<Vec<Hit>>>,
    requests: Arc<AtomicUsize>,
}

async fn handle(State(s): State<Shared>, headers: HeaderMap, body: String) -> StatusCode {
    let n = s.requests.fetch_add(1, Ordering::SeqCst);
    match s.behaviour {
        Behaviour::Hang => std::future::pending::<StatusCode>().await,
        Behaviour::FailFirst(k) if n < k => StatusCode::SERVICE_UNAVAILABLE,
        _ => {
            let h = |k: &str| {
                headers
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            s.hits.lock().unwrap().push(Hit {
                id: h("webhook-id"),
                timestamp: h("webhook-timestamp"),
                signatures: h("webhook-signature"),
                content_type: h("content-type"),
                first: h("fluxgate-first-sequence"),
                last: h("fluxgate-last-sequence"),
                body,
            });
            StatusCode::NO_CONTENT
        }
    }
}

/// An HTTP receiver on 127.0.0.1.
pub(crate) async fn receiver(behaviour: Behaviour) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = Shared {
        behaviour,
        hits: Arc::default(),
        requests: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(handle))
        .with_state(shared.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url: format!("http://127.0.0.1:{}/hook", addr.port()),
        hits: shared.hits,
        requests: shared.requests,
    }
}

impl Receiver {
    pub(crate) fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits until at least `n` messages arrived (10 s at most).
    async fn wait_for(&self, n: usize) -> Vec<Hit> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let hits = self.hits();
            if hits.len() >= n {
                return hits;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} messages arrived: {hits:#?}",
                hits.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Checks a message's signatures the Standard Webhooks way: HMAC-SHA256 keyed with the
/// base64-decoded secret over `{id}.{timestamp}.{body}`; true when one of them matches.
fn signed_by(secret: &str, hit: &Hit) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
        .unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let content = format!("{}.{}.{}", hit.id, hit.timestamp, hit.body);
    hit.signatures.split(' ').any(|s| {
        let Some(sig) = s.strip_prefix("v1,") else {
            return false;
        };
        let Ok(sig) = STANDARD.decode(sig) else {
            return false;
        };
        ring::hmac::verify(&key, content.as_bytes(), &sig).is_ok()
    })
}

fn json(hit: &Hit) -> serde_json::Value {
    serde_json::from_str(&hit.body).unwrap_or_else(|e| panic!("{e}: {}", hit.body))
}

/// An int64 of the canonical protobuf JSON (a string).
fn int(v: &serde_json::Value) -> i64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_i64())
        .unwrap_or_else(|| panic!("not an int64: {v}"))
}

/// Loopback receivers allowed, quick retries and time-outs.
pub(crate) fn configure(c: &mut Config) {
    c.webhooks.allowed_private_networks = vec!["127.0.0.0/8".into()];
    c.webhooks.retry_initial_ms = 50;
    c.webhooks.timeout_ms = 400;
    c.webhooks.poll_ms = 50;
}

fn hooks(s: &TestServer) -> WebhookServiceClient<Channel> {
    WebhookServiceClient::new(s.channel.clone())
}

pub(crate) async fn subscribe(
    s: &TestServer,
    admin: &str,
    url: &str,
    types: &[&str],
) -> pb::CreateWebhookResponse {
    hooks(s)
        .create_webhook(authed(
            pb::CreateWebhookRequest {
                webhook: Some(pb::Webhook {
                    display_name: "flag store".into(),
                    url: url.into(),
                    event_types: types.iter().map(|t| t.to_string()).collect(),
                    enabled: true,
                    ..Default::default()
                }),
                start_after_sequence: None,
            },
            admin,
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn get(s: &TestServer, admin: &str, name: &str) -> pb::Webhook {
    hooks(s)
        .get_webhook(authed(pb::GetWebhookRequest { name: name.into() }, admin))
        .await
        .unwrap()
        .into_inner()
        .webhook
        .unwrap()
}

async fn rotate(
    s: &TestServer,
    admin: &str,
    name: &str,
    overlap_secs: i64,
) -> pb::RotateWebhookSecretResponse {
    hooks(s)
        .rotate_webhook_secret(authed(
            pb::RotateWebhookSecretRequest {
                name: name.into(),
                overlap: Some(prost_types::Duration {
                    seconds: overlap_secs,
                    nanos: 0,
                }),
            },
            admin,
        ))
        .await
        .unwrap()
        .into_inner()
}

pub(crate) async fn deliveries(
    s: &TestServer,
    admin: &str,
    hook: &str,
) -> Vec<pb::WebhookDelivery> {
    hooks(s)
        .list_webhook_deliveries(authed(
            pb::ListWebhookDeliveriesRequest {
                parent: hook.into(),
                page_size: 1000,
                ..Default::default()
            },
            admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .deliveries
}

async fn events_are_signed_selected_and_in_commit_order(b: Backend) {
    let s = TestServer::start_configured(b, configure).await;
    let admin = s.admin_token().await;
    let r = receiver(Behaviour::Accept).await;
    let created = subscribe(
        &s,
        &admin,
        &r.url,
        &[
            "change_request.*",
            "user.created",
            "user.deactivated",
            "user.role_changed",
        ],
    )
    .await;
    let hook = created.webhook.unwrap();
    let secret = created.secret;
    assert!(secret.starts_with("whsec_"), "{secret}");

    let ann = s
        .create_user(&admin, "ann", pb::Role::Requester, "Webhook-pass-1")
        .await;
    let bob = s
        .create_user(&admin, "bob", pb::Role::Requester, "Webhook-pass-1")
        .await;
    s.login("ann", "Webhook-pass-1").await; // auth.login: not selected
    let mut promoted = ann.clone();
    promoted.role = pb::Role::Approver as i32;
    s.users()
        .update_user(authed(
            pb::UpdateUserRequest {
                user: Some(promoted),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["role".into()],
                }),
                reason: String::new(),
            },
            &admin,
        ))
        .await
        .unwrap();
    s.users()
        .deactivate_user(authed(
            pb::DeactivateUserRequest {
                name: bob.name.clone(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap();
    // A refused change writes nothing, so sends nothing.
    let dup = s
        .users()
        .create_user(authed(
            pb::CreateUserRequest {
                user: Some(pb::User {
                    username: "ann".into(),
                    email: "ann2@example.com".into(),
                    display_name: "Ann again".into(),
                    role: pb::Role::Requester as i32,
                    ..Default::default()
                }),
                initial_password: "Webhook-pass-1".into(),
                require_password_change: false,
            },
            &admin,
        ))
        .await;
    expect_code(dup, Code::AlreadyExists);
    // A transaction that appended its event and then rolled back leaves nothing to send.
    let rolled_back = s.store().write(|tx| -> Result<(), StoreError> {
        let e = NewEvent {
            action: "user.created".into(),
            target_type: "user".into(),
            outcome: "success".into(),
            detail: Some("rolled back".into()),
            ..Default::default()
        };
        audit::append(tx.conn, e, tx.now)?;
        Err(StoreError::Corrupt("rolled back on purpose".into()))
    });
    assert!(rolled_back.is_err());

    let hits = r.wait_for(4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hits_after = r.hits();
    assert_eq!(
        hits_after.len(),
        4,
        "only the selected events: {hits_after:#?}"
    );
    let types: Vec<String> = hits
        .iter()
        .map(|h| json(h)["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "user.created",
            "user.created",
            "user.role_changed",
            "user.deactivated"
        ]
    );
    let mut last_seq = 0;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut ids = std::collections::HashSet::new();
    for h in &hits {
        assert!(signed_by(&secret, h), "signature of {h:#?}");
        assert!(!signed_by("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", h));
        assert_eq!(h.content_type, "application/json");
        let ts: i64 = h.timestamp.parse().unwrap();
        assert!((now - ts).abs() < 60, "timestamp {ts} vs {now}");
        assert!(ids.insert(h.id.clone()), "webhook-id {} twice", h.id);
        let v = json(h);
        let seq = int(&v["data"]["sequence"]);
        assert!(seq > last_seq, "commit order: {seq} after {last_seq}");
        last_seq = seq;
        assert_eq!(h.first, seq.to_string());
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_ne!(v["data"]["detail"], "rolled back");
    }
    assert_eq!(json(&hits[0])["data"]["target"], ann.name);
    assert_eq!(json(&hits[3])["data"]["target"], bob.name);
    // The envelope is canonical: keys sorted, no spaces.
    assert!(hits[0].body.starts_with("{\"data\":{"), "{}", hits[0].body);

    // The log: every delivery delivered, with the endpoint's status.
    let log = deliveries(&s, &admin, &hook.name).await;
    assert_eq!(log.len(), 4);
    for d in &log {
        assert_eq!(d.state, pb::WebhookDeliveryState::Delivered as i32, "{d:?}");
        assert_eq!(d.last_status_code, 204);
        assert_eq!(d.attempts, 1);
        assert!(d.name.ends_with(&format!(
            "/deliveries/{}",
            d.name.rsplit('/').next().unwrap()
        )));
    }
    let one = hooks(&s)
        .get_webhook_delivery(authed(
            pb::GetWebhookDeliveryRequest {
                name: log[0].name.clone(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .delivery
        .unwrap();
    assert_eq!(
        one.payload, hits[3].body,
        "newest first; the payload as signed"
    );

    // Redelivery on demand: the same message (same webhook-id) again.
    let again = hooks(&s)
        .redeliver_webhook_delivery(authed(
            pb::RedeliverWebhookDeliveryRequest {
                name: log[3].name.clone(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .delivery
        .unwrap();
    assert_eq!(again.state, pb::WebhookDeliveryState::Pending as i32);
    let hits = r.wait_for(5).await;
    assert_eq!(hits[4].id, hits[0].id);
    assert_eq!(hits[4].body, hits[0].body);
    let pending_again = hooks(&s)
        .redeliver_webhook_delivery(authed(
            pb::RedeliverWebhookDeliveryRequest {
                name: format!("{}/deliveries/{}", hook.name, uuid::Uuid::new_v4()),
            },
            &admin,
        ))
        .await;
    expect_code(pending_again, Code::NotFound);

    // Rotation with an overlap: both secrets sign until it ends.
    let rotated = rotate(&s, &admin, &hook.name, 3600).await;
    assert_ne!(rotated.secret, secret);
    assert!(
        rotated
            .webhook
            .unwrap()
            .previous_secret_expire_time
            .is_some()
    );
    s.create_user(&admin, "cat", pb::Role::Requester, "Webhook-pass-1")
        .await;
    let hits = r.wait_for(6).await;
    let h = &hits[5];
    assert_eq!(h.signatures.split(' ').count(), 2, "{}", h.signatures);
    assert!(signed_by(&rotated.secret, h) && signed_by(&secret, h));
    // Without an overlap, the old secret stops signing at once.
    let rotated2 = rotate(&s, &admin, &hook.name, 0).await;
    s.create_user(&admin, "dan", pb::Role::Requester, "Webhook-pass-1")
        .await;
    let hits = r.wait_for(7).await;
    assert!(signed_by(&rotated2.secret, &hits[6]));
    assert!(!signed_by(&rotated.secret, &hits[6]));

    let actions = s.audit_actions(&admin).await;
    for a in [
        "webhook.created",
        "webhook.redelivered",
        "webhook.secret_rotated",
    ] {
        assert!(actions.iter().any(|(x, _)| x == a), "{a} in {actions:?}");
    }
}

async fn a_failing_endpoint_is_retried_and_order_kept(b: Backend) {
    let s = TestServer::start_configured(b, configure).await;
    let admin = s.admin_token().await;
    let r = receiver(Behaviour::FailFirst(3)).await;
    let hook = subscribe(&s, &admin, &r.url, &["user.created"])
        .await
        .webhook
        .unwrap();
    let mut made = Vec::new();
    for n in ["eve", "fay", "gus"] {
        made.push(
            s.create_user(&admin, n, pb::Role::Requester, "Webhook-pass-1")
                .await
                .name,
        );
    }
    let hits = r.wait_for(3).await;
    let names: Vec<String> = hits
        .iter()
        .map(|h| json(h)["data"]["target"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, made, "the later ones waited");
    assert_eq!(
        r.requests.load(Ordering::SeqCst),
        6,
        "3 refused, then 3 accepted"
    );
    let log = deliveries(&s, &admin, &hook.name).await;
    let first = log.last().unwrap();
    assert_eq!(first.attempts, 4, "{first:?}");
    assert_eq!(first.state, pb::WebhookDeliveryState::Delivered as i32);
    assert_eq!(first.last_status_code, 204);
    assert!(log[..2].iter().all(|d| d.attempts == 1), "{log:?}");
    let seen = get(&s, &admin, &hook.name).await;
    assert_eq!((seen.pending_deliveries, seen.failed_deliveries), (0, 0));
}

async fn a_silent_endpoint_times_out_without_holding_up_others(b: Backend) {
    let s = TestServer::start_configured(b, |c| {
        configure(c);
        c.webhooks.max_attempts = 2;
    })
    .await;
    let admin = s.admin_token().await;
    let silent = receiver(Behaviour::Hang).await;
    let good = receiver(Behaviour::Accept).await;
    let stuck = subscribe(&s, &admin, &silent.url, &["user.*"])
        .await
        .webhook
        .unwrap();
    subscribe(&s, &admin, &good.url, &["user.*"]).await;
    let started = Instant::now();
    for n in ["hal", "ivy", "jon"] {
        s.create_user(&admin, n, pb::Role::Requester, "Webhook-pass-1")
            .await;
    }
    good.wait_for(3).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the silent endpoint held up the others"
    );
    // Two attempts of 400 ms each, then given up; the next message gets its turn.
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = deliveries(&s, &admin, &stuck.name).await;
        if log
            .iter()
            .filter(|d| d.state == pb::WebhookDeliveryState::Failed as i32)
            .count()
            >= 2
        {
            break log;
        }
        assert!(Instant::now() < deadline, "{log:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let oldest = log.last().unwrap();
    assert_eq!(oldest.state, pb::WebhookDeliveryState::Failed as i32);
    assert_eq!(oldest.attempts, 2);
    assert_eq!(oldest.last_status_code, 0);
    assert!(
        oldest.last_error.contains("no answer within 400 ms"),
        "{}",
        oldest.last_error
    );
    assert!(silent.hits().is_empty());
    let seen = get(&s, &admin, &stuck.name).await;
    assert!(seen.failed_deliveries >= 2, "{seen:?}");
}

async fn an_audit_stream_carries_the_chain_and_resumes(b: Backend) {
    let s = TestServer::start_configured(b, configure).await;
    let admin = s.admin_token().await;
    let r = receiver(Behaviour::Accept).await;
    let created = hooks(&s)
        .create_webhook(authed(
            pb::CreateWebhookRequest {
                webhook: Some(pb::Webhook {
                    display_name: "SIEM".into(),
                    url: r.url.clone(),
                    format: pb::WebhookFormat::AuditStream as i32,
                    enabled: true,
                    ..Default::default()
                }),
                start_after_sequence: Some(0),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let hook = created.webhook.unwrap();
    for i in 0..120 {
        s.create_user(
            &admin,
            &format!("siem{i}"),
            pb::Role::Requester,
            "Webhook-pass-1",
        )
        .await;
    }
    let head = s.audit_events().last().unwrap().seq;
    let lines = |hits: &[Hit]| -> Vec<serde_json::Value> {
        hits.iter()
            .flat_map(|h| h.body.lines().map(|l| serde_json::from_str(l).unwrap()))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        let got = lines(&r.hits());
        if got.last().is_some_and(|l| int(&l["sequence"]) >= head) {
            break got;
        }
        assert!(Instant::now() < deadline, "{} lines of {head}", got.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Every event, in chain order, each linked to the one before.
    let events = s.audit_events();
    for (i, l) in got.iter().enumerate() {
        assert_eq!(int(&l["sequence"]), i as i64 + 1);
        assert_eq!(l["hash"], events[i].hash);
        if i > 0 {
            assert_eq!(l["previousHash"], got[i - 1]["hash"]);
        }
    }
    for h in r.hits() {
        assert_eq!(h.content_type, "application/x-ndjson");
        assert!(signed_by(&created.secret, &h));
        let n = h.body.lines().count() as i64;
        assert!(n <= 100);
        assert_eq!(
            h.last.parse::<i64>().unwrap() - h.first.parse::<i64>().unwrap() + 1,
            n
        );
    }
    // A SIEM that lost data asks again from the last sequence it holds.
    let before = r.hits().len();
    let rewound = hooks(&s)
        .rewind_webhook(authed(
            pb::RewindWebhookRequest {
                name: hook.name.clone(),
                after_sequence: head - 3,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .webhook
        .unwrap();
    assert_eq!(rewound.cursor_sequence, head - 3);
    let hits = r.wait_for(before + 1).await;
    let again = lines(&hits[before..]);
    assert_eq!(int(&again[0]["sequence"]), head - 2);
    assert!(again.len() >= 3);
    let beyond = hooks(&s)
        .rewind_webhook(authed(
            pb::RewindWebhookRequest {
                name: hook.name.clone(),
                after_sequence: head + 1_000_000,
            },
            &admin,
        ))
        .await;
    expect_code(beyond, Code::OutOfRange);
}

async fn destinations_are_guarded(b: Backend) {
    // No private network allowed (the default), plain HTTP allowed so that a name reaches the
    // resolver.
    let s = TestServer::start_configured(b, |c| {
        c.webhooks.allow_http = true;
        c.webhooks.poll_ms = 50;
        c.webhooks.retry_initial_ms = 60_000;
    })
    .await;
    let admin = s.admin_token().await;
    let create = |url: &str, types: &[&str]| {
        let mut client = hooks(&s);
        let req = authed(
            pb::CreateWebhookRequest {
                webhook: Some(pb::Webhook {
                    display_name: "x".into(),
                    url: url.into(),
                    event_types: types.iter().map(|t| t.to_string()).collect(),
                    enabled: true,
                    ..Default::default()
                }),
                start_after_sequence: None,
            },
            &admin,
        );
        async move { client.create_webhook(req).await }
    };
    for bad in [
        "http://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "http://127.0.0.1:9/hook",
        "http://[::1]:9/hook",
        "http://[::ffff:192.168.0.1]/hook",
        "https://user:secret@hooks.example.com/",
        "ftp://hooks.example.com/",
        "not a url",
    ] {
        expect_invalid(create(bad, &["*"]).await, "webhook.url");
    }
    expect_invalid(
        create("https://hooks.example.com/", &["user.nope"]).await,
        "webhook.event_types[0]",
    );
    expect_invalid(
        create("https://hooks.example.com/", &[]).await,
        "webhook.event_types",
    );
    // A name is judged at every connection by what it resolves to.
    let r = receiver(Behaviour::Accept).await;
    let url = r.url.replace("127.0.0.1", "localhost");
    let hook = create(&url, &["user.*"])
        .await
        .unwrap()
        .into_inner()
        .webhook
        .unwrap();
    s.create_user(&admin, "kim", pb::Role::Requester, "Webhook-pass-1")
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let d = loop {
        let log = deliveries(&s, &admin, &hook.name).await;
        if let Some(d) = log.into_iter().find(|d| !d.last_error.is_empty()) {
            break d;
        }
        assert!(Instant::now() < deadline, "no attempt was made");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        d.last_error.contains("loopback") && d.last_error.contains("allowed_private_networks"),
        "{}",
        d.last_error
    );
    assert_eq!(r.requests.load(Ordering::SeqCst), 0, "nothing reached it");
    // Only Team Admins manage subscriptions.
    s.create_user(&admin, "lea", pb::Role::Approver, "Webhook-pass-1")
        .await;
    let lea = s
        .login("lea", "Webhook-pass-1")
        .await
        .tokens
        .unwrap()
        .access_token;
    let denied = hooks(&s)
        .list_webhooks(authed(pb::ListWebhooksRequest {}, &lea))
        .await;
    expect_code(denied, Code::PermissionDenied);
}

/// Events dated `days` ago, appended to a fresh database before the server first starts.
fn seed_old_events(url: &str, n: usize, days: i64) {
    let store = Store::open(url, &PoolOptions::default()).unwrap();
    store.migrate().unwrap();
    let then = fluxgate_store::now_micros() - days * 86_400_000_000;
    for i in 0..n {
        store
            .write(|tx| -> Result<(), StoreError> {
                let e = NewEvent {
                    action: "feature.evaluated".into(),
                    target_type: "feature".into(),
                    target_id: Some(format!("OLD_{i}")),
                    outcome: "reported".into(),
                    ..Default::default()
                };
                audit::append(tx.conn, e, then + i as i64)?;
                Ok(())
            })
            .unwrap();
    }
}

async fn pruning_archives_and_the_chain_still_verifies(b: Backend) {
    let archive = tempfile::tempdir().unwrap();
    let (mut config, dir) = test_config(&b);
    config.audit.retention_days = 30;
    config.audit.archive_dir = Some(archive.path().to_owned());
    seed_old_events(&config.database_url, 5, 40);
    let s = TestServer::start_with(config, dir).await;
    let _keep = b;
    let admin = s.admin_token().await;
    let verify = || {
        let mut c = s.audit();
        let req = authed(pb::VerifyAuditChainRequest {}, &admin);
        async move { c.verify_audit_chain(req).await.unwrap().into_inner() }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let v = verify().await;
        if v.checkpoint_sequence > 0 {
            break v;
        }
        assert!(Instant::now() < deadline, "never pruned: {v:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(v.valid, "{v:?}");
    assert_eq!(v.checkpoint_sequence, 5);
    let events = s.audit_events();
    assert_eq!(events[0].seq, 6, "the old events are gone");
    assert_eq!(events[0].prev_hash, v.checkpoint_hash);
    assert_eq!(v.events_checked, events.len() as i64);
    let pruned = events
        .iter()
        .find(|e| e.action == "audit.pruned")
        .expect("the pruning is in the trail");
    assert!(pruned.detail.as_deref().unwrap().contains("events 1..5"));

    // The archive holds the pruned events, and its digest is the checkpoint's.
    let path = archive.path().join(&v.checkpoint_archive);
    let bytes = std::fs::read(&path).unwrap();
    use sha2::Digest as _;
    let digest: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(digest, v.checkpoint_archive_sha256);
    let lines: Vec<serde_json::Value> = String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[4]["hash"], v.checkpoint_hash);
    assert_eq!(lines[0]["target"], "OLD_0");

    // New events chain on; the chain still verifies.
    s.create_user(&admin, "max", pb::Role::Requester, "Webhook-pass-1")
        .await;
    assert!(verify().await.valid);
    // Tampering shows. An event deleted with the checkpoint moved over it, so that the walk
    // itself checks out, is caught by the pruning's own event, which names the real checkpoint.
    let sixth = events[0].clone();
    s.store()
        .write(|tx| -> Result<(), StoreError> {
            use diesel::prelude::*;
            use fluxgate_store::schema::{audit_checkpoints as cp, audit_events as ev};
            diesel::delete(ev::table.filter(ev::seq.eq(6))).execute(tx.conn)?;
            diesel::update(cp::table)
                .set((cp::seq.eq(6), cp::hash.eq(&sixth.hash)))
                .execute(tx.conn)?;
            Ok(())
        })
        .unwrap();
    let broken = verify().await;
    assert!(!broken.valid);
    assert_eq!(broken.first_broken_sequence, 7);
}

/// Two replicas on one PostgreSQL database: every event reaches the subscription once, in
/// commit order, whichever replica committed it and whichever delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_deliver_each_event_exactly_once() {
    let Some(b) = Backend::postgres() else {
        return;
    };
    let (mut config, dir) = test_config(&b);
    configure(&mut config);
    let one = TestServer::start_with(config, dir).await;
    let (mut config, dir) = test_config(&b);
    configure(&mut config);
    config.database_url = one.database_url.clone();
    let two = TestServer::start_with(config, dir).await;
    let admin = one.admin_token().await;
    let r = receiver(Behaviour::Accept).await;
    subscribe(&one, &admin, &r.url, &["user.created"]).await;
    let n = 60;
    let mut tasks = Vec::new();
    for i in 0..n {
        let (server, admin) = (if i % 2 == 0 { &one } else { &two }, admin.clone());
        let mut users = server.users();
        tasks.push(tokio::spawn(async move {
            users
                .create_user(authed(
                    pb::CreateUserRequest {
                        user: Some(pb::User {
                            username: format!("rep{i}"),
                            email: format!("rep{i}@example.com"),
                            display_name: format!("Replica {i}"),
                            role: pb::Role::Requester as i32,
                            ..Default::default()
                        }),
                        initial_password: "Webhook-pass-1".into(),
                        require_password_change: false,
                    },
                    &admin,
                ))
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let hits = r.wait_for(n).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let hits_after = r.hits();
    assert_eq!(hits_after.len(), n, "each event once");
    let ids: std::collections::HashSet<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids.len(), n);
    let seqs: Vec<i64> = hits
        .iter()
        .map(|h| int(&json(h)["data"]["sequence"]))
        .collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(seqs, sorted, "commit order across replicas");
    let _keep = b;
}
