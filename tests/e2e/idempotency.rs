//! Idempotent retries: a mutating call named with an `idempotency-key` header, sent again, gets
//! the first call's reply and writes nothing twice; even when the first call's client gave up
//! before the write committed.

use std::time::Duration;

use fluxgate_proto::v1 as pb;
use fluxgate_store::StoreError;
use tonic::{Code, Request, Response};

use crate::harness::{Backend, TestServer, authed, expect_code, expect_invalid};

const REPLAYED: &str = "x-fluxgate-idempotent-replay";

/// `authed`, plus an idempotency key.
fn keyed<T>(msg: T, token: &str, key: &str) -> Request<T> {
    let mut r = authed(msg, token);
    r.metadata_mut()
        .insert("idempotency-key", key.parse().unwrap());
    r
}

fn portfolio(name: &str) -> pb::CreatePortfolioRequest {
    pb::CreatePortfolioRequest {
        portfolio: Some(pb::Portfolio {
            display_name: name.into(),
            ..Default::default()
        }),
    }
}

fn replayed<T>(r: &Response<T>) -> bool {
    r.metadata().get(REPLAYED).is_some()
}

async fn portfolios_named(s: &TestServer, token: &str, name: &str) -> usize {
    s.catalog()
        .list_portfolios(authed(
            pb::ListPortfoliosRequest {
                page_size: 1000,
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .portfolios
        .iter()
        .filter(|p| p.display_name == name)
        .count()
}

async fn a_retry_gets_the_first_reply(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let audit_before = s.audit_count();

    let first = s
        .catalog()
        .create_portfolio(keyed(portfolio("Payments"), &admin, "create-payments-1"))
        .await
        .unwrap();
    assert!(!replayed(&first));
    let revision = first.metadata().get("x-fluxgate-revision").cloned();
    assert!(revision.is_some());
    let again = s
        .catalog()
        .create_portfolio(keyed(portfolio("Payments"), &admin, "create-payments-1"))
        .await
        .unwrap();
    assert!(replayed(&again), "the retry is answered from the record");
    assert_eq!(
        again.metadata().get("x-fluxgate-revision").cloned(),
        revision
    );
    assert_eq!(first.into_inner(), again.into_inner());
    assert_eq!(portfolios_named(&s, &admin, "Payments").await, 1);
    assert_eq!(s.audit_count(), audit_before + 1, "one write, one event");

    // The key names one request: another body, or another method, is refused.
    expect_invalid(
        s.catalog()
            .create_portfolio(keyed(portfolio("Billing"), &admin, "create-payments-1"))
            .await,
        "idempotency-key",
    );
    expect_invalid(
        s.service_accounts()
            .create_service_account(keyed(
                pb::CreateServiceAccountRequest {
                    service_account: Some(pb::ServiceAccount {
                        display_name: "Payments".into(),
                        ..Default::default()
                    }),
                },
                &admin,
                "create-payments-1",
            ))
            .await,
        "idempotency-key",
    );
    // Keys are checked.
    expect_invalid(
        s.catalog()
            .create_portfolio(keyed(portfolio("Billing"), &admin, "no spaces"))
            .await,
        "idempotency-key",
    );
    assert_eq!(portfolios_named(&s, &admin, "Billing").await, 0);

    // Reads ignore the header.
    let listed = s
        .catalog()
        .list_portfolios(keyed(
            pb::ListPortfoliosRequest::default(),
            &admin,
            "create-payments-1",
        ))
        .await
        .unwrap();
    assert!(!replayed(&listed));
}

async fn keys_belong_to_their_caller(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    s.create_user(&admin, "ada", pb::Role::TeamAdmin, "Ada-pass-1234")
        .await;
    let ada = s.login("ada", "Ada-pass-1234").await;
    let ada = ada.tokens.unwrap().access_token;

    let mine = s
        .catalog()
        .create_portfolio(keyed(portfolio("Mine"), &admin, "same-key"))
        .await
        .unwrap()
        .into_inner();
    let hers = s
        .catalog()
        .create_portfolio(keyed(portfolio("Hers"), &ada, "same-key"))
        .await
        .unwrap();
    assert!(!replayed(&hers), "another caller's key is another key");
    assert_ne!(mine, hers.into_inner());
}

async fn a_refused_call_leaves_the_key_free(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    expect_invalid(
        s.catalog()
            .create_portfolio(keyed(portfolio(""), &admin, "k1"))
            .await,
        "portfolio.display_name",
    );
    // Nothing was written under the key, so the corrected request goes through.
    let ok = s
        .catalog()
        .create_portfolio(keyed(portfolio("Fixed"), &admin, "k1"))
        .await
        .unwrap();
    assert!(!replayed(&ok));
    // A conflict writes nothing either: the key stays free for the next attempt.
    expect_code(
        s.catalog()
            .create_portfolio(keyed(portfolio("Fixed"), &admin, "k2"))
            .await,
        Code::AlreadyExists,
    );
    s.catalog()
        .create_portfolio(keyed(portfolio("Fixed 2"), &admin, "k2"))
        .await
        .unwrap();
}

async fn concurrent_twins_write_once(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let calls = (0..8).map(|_| {
        let mut c = s.catalog();
        let req = keyed(portfolio("Twins"), &admin, "twins");
        async move { c.create_portfolio(req).await }
    });
    let replies = futures::future::join_all(calls).await;
    let replies: Vec<_> = replies
        .into_iter()
        .map(|r| r.unwrap().into_inner())
        .collect();
    assert!(replies.windows(2).all(|w| w[0] == w[1]), "{replies:?}");
    assert_eq!(portfolios_named(&s, &admin, "Twins").await, 1);
}

/// The first call's client gives up while the call waits for the database; the call still
/// commits, and the retry gets its reply.
async fn a_retry_after_a_deadline_gets_the_first_outcome(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let store = s.store();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let holder = tokio::task::spawn_blocking(move || {
        store.write::<(), StoreError>(|_| {
            held_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(1500));
            Ok(())
        })
    });
    held_rx.recv().unwrap();

    let mut req = keyed(portfolio("Slow"), &admin, "slow-1");
    req.set_timeout(Duration::from_millis(300));
    // The client gives up (tonic reports its own deadline as CANCELLED, a server's as
    // DEADLINE_EXCEEDED).
    let gave_up = s.catalog().create_portfolio(req).await.unwrap_err();
    assert!(
        matches!(gave_up.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{gave_up:?}"
    );
    holder.await.unwrap().unwrap();
    // The abandoned call goes on and commits.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while portfolios_named(&s, &admin, "Slow").await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first call never committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let retry = s
        .catalog()
        .create_portfolio(keyed(portfolio("Slow"), &admin, "slow-1"))
        .await
        .unwrap();
    assert!(
        replayed(&retry),
        "the first call committed; its reply is replayed"
    );
    assert_eq!(retry.into_inner().portfolio.unwrap().display_name, "Slow");
    assert_eq!(portfolios_named(&s, &admin, "Slow").await, 1);
}

/// A reply with a secret in it (a new API key) is replayed as is: the retry gets the key the
/// first call created, not a second one.
async fn a_new_key_is_created_once(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let sa = s.service_account(&admin, "deployer").await;
    let create = || {
        keyed(
            pb::CreateServiceAccountKeyRequest {
                parent: sa.name.clone(),
                key: Some(pb::ServiceAccountKey {
                    display_name: "ci".into(),
                    ..Default::default()
                }),
            },
            &admin,
            "ci-key",
        )
    };
    let first = s
        .service_accounts()
        .create_service_account_key(create())
        .await
        .unwrap()
        .into_inner();
    let again = s
        .service_accounts()
        .create_service_account_key(create())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.secret, again.secret);
    let keys = s
        .service_accounts()
        .list_service_account_keys(authed(
            pb::ListServiceAccountKeysRequest {
                parent: sa.name.clone(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys.keys.len(), 1);
}

/// Every recorded reply and key, as bytes, straight from the table.
fn recorded(s: &TestServer) -> Vec<u8> {
    use diesel::prelude::*;
    use fluxgate_store::schema::idempotency_keys as ik;
    type Row = (String, Option<Vec<u8>>, Option<String>);
    let rows: Vec<Row> = s
        .store()
        .read(|c| {
            ik::table
                .select((ik::idempotency_key, ik::response_body, ik::response_meta))
                .load(c)
                .map_err(StoreError::from)
        })
        .unwrap();
    assert!(!rows.is_empty());
    let mut all = Vec::new();
    for (key, body, meta) in rows {
        all.extend(key.into_bytes());
        all.extend(body.unwrap_or_default());
        all.extend(meta.unwrap_or_default().into_bytes());
    }
    all
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The review's finding: recorded replies held API-key secrets, temporary passwords,
/// registration tokens and session tokens in the clear, and replayed them to a caller since
/// demoted, or after the key was revoked. Now nothing readable is kept, and replays are
/// re-authorized.
async fn replies_are_sealed_and_replays_reauthorized(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    s.create_user(&admin, "tess", pb::Role::TeamAdmin, "Second-admin-1")
        .await;
    s.create_user(&admin, "uma", pb::Role::Requester, "Requester-pw-1")
        .await;
    let tess = s
        .login("tess", "Second-admin-1")
        .await
        .tokens
        .unwrap()
        .access_token;

    // A key, a temporary password, a registration link and a session, each with a key.
    let sa = s.service_account(&admin, "deployer").await;
    let new_key = || {
        keyed(
            pb::CreateServiceAccountKeyRequest {
                parent: sa.name.clone(),
                key: None,
            },
            &admin,
            "key-1",
        )
    };
    let key = s
        .service_accounts()
        .create_service_account_key(new_key())
        .await
        .unwrap()
        .into_inner();
    let reset = || {
        keyed(
            pb::ResetUserPasswordRequest {
                name: "users/uma".into(),
                etag: String::new(),
            },
            &tess,
            "reset-1",
        )
    };
    let temporary = s
        .password_reset()
        .reset_user_password(reset())
        .await
        .unwrap()
        .into_inner()
        .temporary_password;
    let link = s
        .users()
        .create_user(keyed(
            pb::CreateUserRequest {
                user: Some(pb::User {
                    username: "vic".into(),
                    email: "vic@example.com".into(),
                    display_name: "Vic".into(),
                    role: pb::Role::Requester as i32,
                    ..Default::default()
                }),
                initial_password: String::new(),
                require_password_change: false,
            },
            &admin,
            "user-1",
        ))
        .await
        .unwrap()
        .into_inner()
        .registration_link
        .unwrap();
    let mut keyed_login = Request::new(pb::LoginRequest {
        username: "tess".into(),
        password: "Second-admin-1".into(),
        ..Default::default()
    });
    keyed_login
        .metadata_mut()
        .insert("idempotency-key", "login-1".parse().unwrap());
    // Login has no caller to scope a key to: it is answered as a plain call.
    let session = s.auth().login(keyed_login).await.unwrap().into_inner();

    let table = recorded(&s);
    // `fgk_{key id}_{secret}`; the secret itself may contain '_'.
    let secret_part = key.secret.splitn(3, '_').nth(2).unwrap();
    assert!(secret_part.len() >= 40, "{secret_part}");
    for secret in [
        secret_part,
        temporary.as_str(),
        link.token.as_str(),
        session.tokens.as_ref().unwrap().refresh_token.as_str(),
        "key-1",
        "reset-1",
    ] {
        assert!(
            !holds(&table, secret),
            "{secret:?} is readable in idempotency_keys"
        );
    }

    // A plain retry still gets its reply, the same secret.
    let again = s
        .service_accounts()
        .create_service_account_key(new_key())
        .await
        .unwrap();
    assert!(replayed(&again));
    assert_eq!(again.into_inner().secret, key.secret);

    // Revoked since: not replayed.
    s.service_accounts()
        .revoke_service_account_key(authed(
            pb::RevokeServiceAccountKeyRequest {
                name: key.key.unwrap().name,
            },
            &admin,
        ))
        .await
        .unwrap();
    let st = expect_code(
        s.service_accounts()
            .create_service_account_key(new_key())
            .await,
        Code::FailedPrecondition,
    );
    assert!(st.message().contains("revoked"), "{st:?}");
    assert!(!holds(st.message().as_bytes(), secret_part));

    // The temporary password is replayed to Tess while she is a Team Admin...
    let again = s
        .password_reset()
        .reset_user_password(reset())
        .await
        .unwrap();
    assert!(replayed(&again));
    assert_eq!(again.into_inner().temporary_password, temporary);
    // ...and not once she has been demoted.
    let tess_user = s
        .users()
        .get_user(authed(
            pb::GetUserRequest {
                name: "users/tess".into(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    s.users()
        .update_user(authed(
            pb::UpdateUserRequest {
                reason: String::new(),
                user: Some(pb::User {
                    name: tess_user.name.clone(),
                    role: pb::Role::Approver as i32,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["role".into()],
                }),
            },
            &admin,
        ))
        .await
        .unwrap();
    let st = expect_code(
        s.password_reset().reset_user_password(reset()).await,
        Code::PermissionDenied,
    );
    assert!(!holds(st.message().as_bytes(), &temporary));
}

/// A refusal that still writes (a wrong current password is recorded towards the lockout)
/// keeps its status under a key: the first answer and the retry's are the same refusal.
async fn a_recorded_refusal_keeps_its_status(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let wrong = || pb::ChangePasswordRequest {
        current_password: "Not-the-pass-1".into(),
        new_password: "Brand-new-pass-2".into(),
    };
    for attempt in 0..2 {
        let e = s
            .auth()
            .change_password(keyed(wrong(), &admin, "cp-1"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "attempt {attempt}: {e:?}");
        assert!(e.message().contains("current_password"), "{e:?}");
    }
}

crate::both_backends!(
    a_recorded_refusal_keeps_its_status,
    replies_are_sealed_and_replays_reauthorized,
    a_retry_gets_the_first_reply,
    keys_belong_to_their_caller,
    a_refused_call_leaves_the_key_free,
    concurrent_twins_write_once,
    a_retry_after_a_deadline_gets_the_first_outcome,
    a_new_key_is_created_once,
);
