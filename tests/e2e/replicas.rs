//! Replicas on one PostgreSQL hear of each other's writes through change notifications, not by
//! polling: a replica whose poll interval is a minute still honours a permission granted
//! through another within moments, and again after its listening connection is cut.

use std::time::{Duration, Instant};

use fluxgate_proto::v1 as pb;

use crate::harness::{Backend, TestServer, test_config};

/// Waits (10 s at most) until `s` allows `user` to change values in `env`; how long it took.
/// Until `s` has heard of the write, the user (made on the other replica) may be unknown to it:
/// NOT_FOUND is "not yet", as a denial is.
async fn until_allowed(s: &TestServer, admin: &str, user: &str, env: &str) -> Duration {
    let started = Instant::now();
    loop {
        let answer = s
            .try_check(admin, user, pb::Permission::ChangeValue, env)
            .await;
        let allowed = match answer {
            Ok(d) => d.allowed,
            Err(s) if s.code() == tonic::Code::NotFound => false,
            Err(s) => panic!("check on the replica: {s:?}"),
        };
        if allowed {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{user} not allowed on the replica after 10 s (its poll is a minute away)"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_hear_of_writes_without_polling() {
    let Some(b) = Backend::postgres() else {
        return;
    };
    let one = TestServer::start(b.clone()).await;
    let (mut config, dir) = test_config(&b);
    config.database_url = one.database_url.clone();
    config.directory_poll_ms = 60_000;
    let two = TestServer::start_with(config, dir).await;
    let admin = one.admin_token().await;
    let p = one.portfolio(&admin, "Payments").await;
    let app = one.application(&admin, &p.name, "Checkout").await;
    let env = one.environment(&admin, &app.name, "production").await;
    let grant = pb::EnvironmentGrant {
        environment: env.name.clone(),
        permissions: vec![pb::ValuePermission::ChangeValue as i32],
    };
    let ops = one
        .group(&admin, &p.name, "Operators", vec![], vec![grant])
        .await;
    let mut took = Vec::new();
    for round in 0..6 {
        if round == 3 {
            // Cut the replicas' listening connections: they reconnect by themselves.
            let store = one.store();
            let cut: i64 = tokio::task::spawn_blocking(move || {
                store.read(|c| {
                    use diesel::RunQueryDsl;
                    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                        "count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE application_name = 'fluxgate-listener' \
                         AND datname = current_database()",
                    ))
                    .get_result(c)
                    .map_err(fluxgate_store::StoreError::from)
                })
            })
            .await
            .unwrap()
            .unwrap();
            assert!(cut >= 1, "no listener to cut");
        }
        let user = format!("op{round}");
        one.create_user(&admin, &user, pb::Role::Requester, "Replica-pass-123")
            .await;
        one.add_member(&admin, &ops.name, &format!("users/{user}"))
            .await;
        took.push(until_allowed(&two, &admin, &format!("users/{user}"), &env.name).await);
    }
    eprintln!("a grant seen by the other replica after {took:?}");
    two.stop().await;
    one.stop().await;
}
