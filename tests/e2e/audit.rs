//! The audit trail: query, verification against tampering, export, ingestion, analytics.

use fluxgate_proto::v1 as pb;
use prost_types::{FieldMask, Timestamp};
use tonic::Code;

use crate::harness::*;

const PW: &str = "Audited-pass-123";

fn ts(secs: i64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: secs,
        nanos: 0,
    })
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn queries_filter_and_page(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let me = s
        .auth()
        .who_am_i(authed(pb::WhoAmIRequest {}, &admin))
        .await
        .unwrap()
        .into_inner()
        .principal;
    let u1 = s.create_user(&admin, "ann", pb::Role::Requester, PW).await;
    s.create_user(&admin, "bob", pb::Role::Requester, PW).await;
    s.create_user(&admin, "cid", pb::Role::Requester, PW).await;
    let mut audit = s.audit();
    let list = |r: pb::ListAuditEventsRequest| authed(r, &admin);
    let created = audit
        .list_audit_events(list(pb::ListAuditEventsRequest {
            action: "user.created".into(),
            actor: me.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.events.len(), 3);
    assert!(
        created
            .events
            .windows(2)
            .all(|w| w[0].sequence < w[1].sequence),
        "oldest first"
    );
    let e = &created.events[0];
    assert_eq!(
        (
            e.actor_display_name.as_str(),
            e.actor_role.as_str(),
            e.outcome.as_str()
        ),
        ("admin", "team_admin", "success")
    );
    assert!(e.after_json.contains("\"ann\""));
    assert!(!e.request_id.is_empty() && !e.peer.is_empty() && e.hash.len() == 64);

    let on_ann = audit
        .list_audit_events(list(pb::ListAuditEventsRequest {
            target: u1.name.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(on_ann.events.len(), 1);

    // Pages of two, bound to their filters.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = audit
            .list_audit_events(list(pb::ListAuditEventsRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.events.iter().map(|e| e.sequence));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, (1..=seen.len() as i64).collect::<Vec<_>>());
    let first = audit
        .list_audit_events(list(pb::ListAuditEventsRequest {
            page_size: 1,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let r = audit
        .list_audit_events(list(pb::ListAuditEventsRequest {
            page_size: 1,
            page_token: first.next_page_token,
            action: "x.y".into(),
            ..Default::default()
        }))
        .await;
    expect_invalid(r, "page_token");

    // Time ranges.
    let future = audit
        .list_audit_events(list(pb::ListAuditEventsRequest {
            start_time: ts(now_secs() + 3600),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(future.events.is_empty());
    let r = audit
        .list_audit_events(list(pb::ListAuditEventsRequest {
            start_time: ts(10),
            end_time: ts(5),
            ..Default::default()
        }))
        .await;
    expect_invalid(r, "end_time");

    // Only Team Admins read the trail.
    let t = s.login("ann", PW).await.tokens.unwrap().access_token;
    expect_code(
        audit
            .list_audit_events(authed(pb::ListAuditEventsRequest::default(), &t))
            .await,
        Code::PermissionDenied,
    );
}

async fn verification_finds_the_first_edited_event(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    for n in ["ann", "bob", "cid"] {
        s.create_user(&admin, n, pb::Role::Requester, PW).await;
    }
    let mut audit = s.audit();
    let v = audit
        .verify_audit_chain(authed(pb::VerifyAuditChainRequest {}, &admin))
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid);
    assert!(v.events_checked >= 5, "{v:?}");
    // Someone with database access rewrites history.
    s.store()
        .read(|c| {
            use diesel::prelude::*;
            use fluxgate_store::schema::audit_events::dsl::*;
            diesel::update(audit_events.filter(seq.eq(3)))
                .set(detail.eq("nothing to see"))
                .execute(c)
                .map_err(fluxgate_store::StoreError::from)
        })
        .unwrap();
    let v = audit
        .verify_audit_chain(authed(pb::VerifyAuditChainRequest {}, &admin))
        .await
        .unwrap()
        .into_inner();
    assert!(!v.valid);
    assert_eq!(v.first_broken_sequence, 3);
}

async fn ingestion_export_and_analytics(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let ann = s.create_user(&admin, "ann", pb::Role::Requester, PW).await;
    s.login("ann", PW).await;
    let mut sas = s.service_accounts();
    let flagstore = sas
        .create_service_account(authed(
            pb::CreateServiceAccountRequest {
                service_account: Some(pb::ServiceAccount {
                    display_name: "flag store".into(),
                    ..Default::default()
                }),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .service_account
        .unwrap();
    let key = sas
        .create_service_account_key(authed(
            pb::CreateServiceAccountKeyRequest {
                parent: flagstore.name.clone(),
                key: None,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    let eval = |i: usize| pb::IngestedEvent {
        actor: ann.name.clone(),
        action: "feature.evaluated".into(),
        target_type: "feature".into(),
        target: format!("checkout-{}", i % 3),
        detail: String::new(),
        time: None,
    };
    let mut audit = s.audit();
    // Not an audit writer yet.
    let r = audit
        .ingest_audit_events(authed(
            pb::IngestAuditEventsRequest {
                events: vec![eval(0)],
            },
            &key,
        ))
        .await;
    expect_code(r, Code::PermissionDenied);
    sas.update_service_account(authed(
        pb::UpdateServiceAccountRequest {
            service_account: Some(pb::ServiceAccount {
                name: flagstore.name.clone(),
                audit_writer: true,
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["audit_writer".into()],
            }),
        },
        &admin,
    ))
    .await
    .unwrap();
    for _ in 0..3 {
        let r = audit
            .ingest_audit_events(authed(
                pb::IngestAuditEventsRequest {
                    events: (0..500).map(eval).collect(),
                },
                &key,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.sequences.len(), 500);
    }
    let mut forged = eval(0);
    forged.action = "user.deleted".into();
    expect_invalid(
        audit
            .ingest_audit_events(authed(
                pb::IngestAuditEventsRequest {
                    events: vec![forged],
                },
                &key,
            ))
            .await,
        "events[0].action",
    );
    let too_many: Vec<_> = (0..501).map(eval).collect();
    expect_invalid(
        audit
            .ingest_audit_events(authed(
                pb::IngestAuditEventsRequest { events: too_many },
                &key,
            ))
            .await,
        "events",
    );

    // Export streams every event as JSON lines, in chunks, oldest first.
    let total = s.audit_count();
    let mut stream = audit
        .export_audit_events(authed(pb::ExportAuditEventsRequest::default(), &admin))
        .await
        .unwrap()
        .into_inner();
    let (mut lines, mut chunks) = (Vec::new(), 0);
    while let Some(chunk) = stream.message().await.unwrap() {
        chunks += 1;
        let text = String::from_utf8(chunk.json_lines).unwrap();
        assert_eq!(text.lines().count(), chunk.event_count as usize);
        lines.extend(
            text.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()),
        );
    }
    assert_eq!(lines.len(), total);
    assert!(chunks >= 2, "{chunks} chunks");
    // The canonical protobuf JSON mapping of AuditEvent, as ListAuditEvents shows it through
    // grpcurl or `fluxctl -o json`: camelCase names, 64-bit numbers as strings.
    let seq = |l: &serde_json::Value| l["sequence"].as_str().unwrap().parse::<i64>().unwrap();
    assert!(lines.windows(2).all(|w| seq(&w[0]) < seq(&w[1])));
    assert!(
        lines
            .iter()
            .all(|l| l.get("actorDisplayName").is_some() || l.get("actor").is_none())
    );
    assert!(
        lines
            .iter()
            .all(|l| l.get("previousHash").is_some() && l.get("previous_hash").is_none())
    );
    let reported = lines.iter().filter(|l| l["outcome"] == "reported").count();
    assert_eq!(reported, 1500);
    assert!(lines.iter().any(|l| {
        l["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with(&format!("reported by {}", flagstore.name)))
    }));

    // The report: Ann and the admin logged in today; Ann evaluated 1500 times; the admin made
    // the most changes.
    let t = s.login("ann", PW).await.tokens.unwrap().access_token;
    let report = audit
        .get_activity_report(authed(
            pb::GetActivityReportRequest {
                start_time: ts(now_secs() - 86_400),
                end_time: ts(now_secs() + 86_400),
                top: 5,
            },
            &t,
        ))
        .await
        .unwrap()
        .into_inner();
    let today: i64 = report
        .active_users_per_day
        .iter()
        .map(|p| p.count)
        .max()
        .unwrap();
    assert_eq!(today, 2, "{report:?}");
    assert!(!report.active_users_per_week.is_empty());
    assert_eq!(report.feature_evaluations_by_user[0].principal, ann.name);
    assert_eq!(report.feature_evaluations_by_user[0].count, 1500);
    assert_eq!(report.feature_evaluations_by_user[0].display_name, "ann");
    assert_eq!(report.most_active_contributors[0].display_name, "admin");
    assert!(
        report.approval_response_times.is_none(),
        "approval metrics are for Approvers and Team Admins"
    );
    let r = audit
        .get_activity_report(authed(
            pb::GetActivityReportRequest {
                start_time: None,
                end_time: ts(1),
                top: 0,
            },
            &t,
        ))
        .await;
    expect_invalid(r, "start_time");

    assert!(
        audit
            .verify_audit_chain(authed(pb::VerifyAuditChainRequest {}, &admin))
            .await
            .unwrap()
            .into_inner()
            .valid
    );
}

async fn concurrent_writers_keep_one_valid_chain(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let before = s.audit_count();
    // Forty writes and forty failed logins at once, on several connections.
    let writes = (0..40).map(|i| {
        let mut users = s.users();
        let req = authed(
            pb::CreateUserRequest {
                user: Some(pb::User {
                    username: format!("w{i}"),
                    email: format!("w{i}@example.com"),
                    display_name: "w".into(),
                    role: pb::Role::Requester as i32,
                    ..Default::default()
                }),
                initial_password: PW.into(),
                require_password_change: false,
            },
            &admin,
        );
        async move { users.create_user(req).await.map(|_| ()) }
    });
    let failures = (0..40).map(|i| {
        let mut auth = s.auth();
        async move {
            let r = auth
                .login(pb::LoginRequest {
                    username: format!("ghost{i}"),
                    password: "Nope-nope-1".into(),
                    ..Default::default()
                })
                .await;
            assert_eq!(r.unwrap_err().code(), Code::Unauthenticated);
            Ok::<(), tonic::Status>(())
        }
    });
    let (w, f) = tokio::join!(
        futures::future::join_all(writes),
        futures::future::join_all(failures)
    );
    assert!(w.iter().chain(f.iter()).all(|r| r.is_ok()));
    let events = s.audit_events();
    assert_eq!(events.len(), before + 80);
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.seq == i as i64 + 1),
        "gap-free sequence"
    );
    let v = s
        .audit()
        .verify_audit_chain(authed(pb::VerifyAuditChainRequest {}, &admin))
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid, "{v:?}");
    assert_eq!(v.events_checked, events.len() as i64);
}

/// The review's finding: `users/{username}` was silently ignored by the actor and target
/// filters (an empty answer). It is resolved; a name nobody has is refused.
async fn usernames_filter_like_ids(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let rita = s.create_user(&admin, "rita", pb::Role::Approver, PW).await;
    let t = s.login("rita", PW).await.tokens.unwrap().access_token;
    s.auth()
        .change_password(authed(
            pb::ChangePasswordRequest {
                current_password: PW.into(),
                new_password: "Another-pass-456".into(),
            },
            &t,
        ))
        .await
        .unwrap();
    let mut audit = s.audit();
    let list = |actor: &str, target: &str| pb::ListAuditEventsRequest {
        actor: actor.into(),
        target: target.into(),
        page_size: 100,
        ..Default::default()
    };
    for (by_name, by_id) in [
        (list("users/rita", ""), list(&rita.name, "")),
        (list("", "users/rita"), list("", &rita.name)),
        (list("users/RITA", ""), list(&rita.name, "")),
    ] {
        let a = audit
            .list_audit_events(authed(by_name, &admin))
            .await
            .unwrap()
            .into_inner();
        let b = audit
            .list_audit_events(authed(by_id, &admin))
            .await
            .unwrap()
            .into_inner();
        assert!(!a.events.is_empty());
        assert_eq!(a.events, b.events);
    }
    for (actor, target, field) in [
        ("users/nobody", "", "actor"),
        ("", "users/nobody", "target"),
    ] {
        expect_invalid(
            audit
                .list_audit_events(authed(list(actor, target), &admin))
                .await,
            field,
        );
    }
}

crate::both_backends!(
    usernames_filter_like_ids,
    concurrent_writers_keep_one_valid_chain,
    queries_filter_and_page,
    verification_finds_the_first_edited_event,
    ingestion_export_and_analytics,
);
