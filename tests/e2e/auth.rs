//! Sessions: login, refresh rotation and reuse detection, logout, change password, lockout,
//! temporary passwords, and tokens that follow role changes and deactivation.

use fluxgate_proto::v1 as pb;
use tonic::Code;

use crate::harness::*;

const PW: &str = "Requester-pw-1";

async fn login_by_username_or_email(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    s.create_user(&admin, "rita", pb::Role::Requester, PW).await;
    let by_name = s.login("Rita", PW).await;
    let by_email = s.login("RITA@example.com", PW).await;
    assert_eq!(by_name.user.as_ref().unwrap().username, "rita");
    assert_eq!(by_email.user.unwrap().name, by_name.user.unwrap().name);

    let me = s
        .auth()
        .who_am_i(authed(
            pb::WhoAmIRequest {},
            &by_name.tokens.as_ref().unwrap().access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.role, pb::Role::Requester as i32);
    assert_eq!(me.session_id, by_name.tokens.unwrap().session_id);
    // The login wrote an audit event naming the user.
    assert!(s.audit_events().iter().any(|e| e.action == "auth.login"
        && e.outcome == "success"
        && e.actor_name.as_deref() == Some("rita")));
}

async fn unknown_user_and_wrong_password_look_the_same(b: Backend) {
    let s = TestServer::start(b).await;
    let mut auth = s.auth();
    let wrong = auth
        .login(pb::LoginRequest {
            username: ADMIN.into(),
            password: "Wrong-pass-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let unknown = auth
        .login(pb::LoginRequest {
            username: "nobody".into(),
            password: "Wrong-pass-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(
        (wrong.code(), wrong.message()),
        (unknown.code(), unknown.message())
    );
    let failures: Vec<_> = s
        .audit_events()
        .into_iter()
        .filter(|e| e.outcome == "failure")
        .collect();
    assert_eq!(failures.len(), 2, "each failed login is audited");
}

async fn lockout_after_repeated_failures(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    s.create_user(&admin, "lou", pb::Role::Requester, PW).await;
    s.settings()
        .update_settings(authed(
            pb::UpdateSettingsRequest {
                settings: Some(pb::Settings {
                    lockout_policy: Some(pb::LockoutPolicy {
                        max_failed_attempts: 3,
                        lockout_duration: Some(prost_types::Duration {
                            seconds: 600,
                            nanos: 0,
                        }),
                    }),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["lockout_policy".into()],
                }),
            },
            &admin,
        ))
        .await
        .unwrap();
    let mut auth = s.auth();
    for name in ["lou", "ghost"] {
        for _ in 0..3 {
            let r = auth
                .login(pb::LoginRequest {
                    username: name.into(),
                    password: "Nope-nope-1".into(),
                    ..Default::default()
                })
                .await;
            expect_code(r, Code::Unauthenticated);
        }
        // Locked now: even the right password is refused, and unknown names behave the same.
        let r = auth
            .login(pb::LoginRequest {
                username: name.into(),
                password: PW.into(),
                ..Default::default()
            })
            .await;
        let st = expect_code(r, Code::ResourceExhausted);
        assert!(st.message().contains("too many"), "{st:?}");
    }
    // Another account is unaffected.
    s.login(ADMIN, ADMIN_PASSWORD).await;

    // Every refusal during the lockout is in the audit trail: a flood is coalesced into events
    // that count the attempts (the poll loop records them within a poll or two).
    for _ in 0..5 {
        let r = auth
            .login(pb::LoginRequest {
                username: "lou".into(),
                password: PW.into(),
                ..Default::default()
            })
            .await;
        expect_code(r, Code::ResourceExhausted);
    }
    let lou = s
        .users()
        .get_user(authed(
            pb::GetUserRequest {
                name: "users/lou".into(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let refusals = |events: &[fluxgate_store::audit::Event]| -> u64 {
        events
            .iter()
            .filter(|e| {
                e.action == "auth.login"
                    && e.outcome == "failure"
                    && e.target_id.as_deref() == Some(lou.name.as_str())
                    && e.detail
                        .as_deref()
                        .is_some_and(|d| d.starts_with("locked out"))
            })
            .map(|e| {
                // "locked out: …" is one attempt; "…; N earlier attempt(s) refused" adds N; a
                // coalesced "…; N attempt(s) refused" is N.
                let d = e.detail.as_deref().unwrap();
                let n = d
                    .split("; ")
                    .nth(1)
                    .and_then(|x| x.split(' ').next())
                    .and_then(|n| n.parse::<u64>().ok());
                match n {
                    Some(n) if d.contains("earlier") => 1 + n,
                    Some(n) => n,
                    None => 1,
                }
            })
            .sum()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while refusals(&s.audit_events()) < 6 {
        assert!(std::time::Instant::now() < deadline, "six refusals audited");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(refusals(&s.audit_events()), 6);
    // Failed logins name their subject, so a query finds them; a name that matches no account
    // is never stored as typed (it may be a password typed into the wrong box).
    let by_target = s
        .list_audit(
            &admin,
            pb::ListAuditEventsRequest {
                target: "users/lou".into(),
                action: "auth.login".into(),
                ..Default::default()
            },
        )
        .await;
    assert!(by_target.iter().filter(|e| e.outcome == "failure").count() >= 4);
    let ghost: Vec<_> = s
        .audit_events()
        .into_iter()
        .filter(|e| e.action == "auth.login" && e.outcome == "failure")
        .filter(|e| {
            e.target_id
                .as_deref()
                .is_some_and(|t| t.starts_with("logins/"))
        })
        .collect();
    assert!(ghost.len() >= 3, "{ghost:?}");
    for e in s.audit_events() {
        let text = format!("{:?} {:?}", e.detail, e.target_id);
        assert!(!text.contains("ghost"), "{text}");
        assert!(!text.contains("Nope-nope-1"), "{text}");
    }

    // "Monitor activity": failures can be listed as such, and the activity report counts
    // failed sign-ins (3 + 1 for each name, then 5 more for lou) and lockouts (one each) per day.
    let failures = s
        .list_audit(
            &admin,
            pb::ListAuditEventsRequest {
                outcome: "failure".into(),
                ..Default::default()
            },
        )
        .await;
    assert!(failures.len() >= 8, "{failures:?}");
    assert!(failures.iter().all(|e| e.outcome == "failure"));
    expect_invalid(
        s.audit()
            .list_audit_events(authed(
                pb::ListAuditEventsRequest {
                    outcome: "bad".into(),
                    ..Default::default()
                },
                &admin,
            ))
            .await,
        "outcome",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let report = s
        .audit()
        .get_activity_report(authed(
            pb::GetActivityReportRequest {
                start_time: Some(prost_types::Timestamp {
                    seconds: now - 86_400,
                    nanos: 0,
                }),
                end_time: Some(prost_types::Timestamp {
                    seconds: now + 60,
                    nanos: 0,
                }),
                top: 5,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let total = |v: &[pb::PeriodCount]| v.iter().map(|p| p.count).sum::<i64>();
    assert_eq!(total(&report.failed_sign_ins_per_day), 13, "{report:?}");
    assert_eq!(total(&report.lockouts_per_day), 2, "{report:?}");
}

async fn refresh_rotates_and_reuse_revokes_the_session(b: Backend) {
    // A short grace, waited out below: past it, presenting a rotated token is reuse.
    let s = TestServer::start_configured(b, |c| c.auth.refresh_reuse_grace_ms = 200).await;
    let first = s.login(ADMIN, ADMIN_PASSWORD).await.tokens.unwrap();
    let mut auth = s.auth();
    let second = auth
        .refresh_session(pb::RefreshSessionRequest {
            refresh_token: first.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(second.session_id, first.session_id);
    auth.who_am_i(authed(pb::WhoAmIRequest {}, &second.access_token))
        .await
        .unwrap();

    // Presenting the rotated token again is reuse: refused, and the whole session ends.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = auth
        .refresh_session(pb::RefreshSessionRequest {
            refresh_token: first.refresh_token,
        })
        .await;
    expect_code(r, Code::Unauthenticated);
    let r = auth
        .refresh_session(pb::RefreshSessionRequest {
            refresh_token: second.refresh_token,
        })
        .await;
    expect_code(r, Code::Unauthenticated);
    let r = auth
        .who_am_i(authed(pb::WhoAmIRequest {}, &second.access_token))
        .await;
    expect_code(r, Code::Unauthenticated);
    assert!(
        s.audit_events()
            .iter()
            .any(|e| e.action == "auth.refresh_token_reuse")
    );
}

/// The review's finding: a client that sent one refresh twice at once got tokens that were
/// already dead (the loser counted as reuse and ended the session). Within the grace every
/// concurrent call gets working tokens of the same session; past it, reuse still ends it.
async fn concurrent_refreshes_keep_the_session(b: Backend) {
    let s = TestServer::start(b).await;
    let t = s.login(ADMIN, ADMIN_PASSWORD).await.tokens.unwrap();
    let calls = (0..4).map(|_| {
        let mut auth = s.auth();
        let rt = t.refresh_token.clone();
        async move {
            auth.refresh_session(pb::RefreshSessionRequest { refresh_token: rt })
                .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let mut auth = s.auth();
    for r in &results {
        let tokens = r
            .as_ref()
            .expect("every concurrent refresh answers")
            .get_ref();
        let tokens = tokens.tokens.as_ref().unwrap();
        assert_eq!(tokens.session_id, t.session_id);
        auth.who_am_i(authed(pb::WhoAmIRequest {}, &tokens.access_token))
            .await
            .expect("the tokens work");
        auth.refresh_session(pb::RefreshSessionRequest {
            refresh_token: tokens.refresh_token.clone(),
        })
        .await
        .expect("and so does each refresh token, once");
    }
    let reuses = s
        .audit_events()
        .iter()
        .filter(|e| e.action == "auth.refresh_token_reuse")
        .count();
    assert_eq!(reuses, 0);
}

/// With no grace, concurrent refreshes let exactly one through.
async fn without_grace_one_concurrent_refresh_wins(b: Backend) {
    let s = TestServer::start_configured(b, |c| c.auth.refresh_reuse_grace_ms = 0).await;
    let t = s.login(ADMIN, ADMIN_PASSWORD).await.tokens.unwrap();
    let calls = (0..4).map(|_| {
        let mut auth = s.auth();
        let rt = t.refresh_token.clone();
        async move {
            auth.refresh_session(pb::RefreshSessionRequest { refresh_token: rt })
                .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        ok, 1,
        "exactly one concurrent refresh succeeds: {results:?}"
    );
}

async fn logout_ends_the_session_at_once(b: Backend) {
    let s = TestServer::start(b).await;
    let t = s.login(ADMIN, ADMIN_PASSWORD).await.tokens.unwrap();
    let other = s.login(ADMIN, ADMIN_PASSWORD).await.tokens.unwrap();
    let mut auth = s.auth();
    auth.logout(authed(pb::LogoutRequest {}, &t.access_token))
        .await
        .unwrap();
    expect_code(
        auth.who_am_i(authed(pb::WhoAmIRequest {}, &t.access_token))
            .await,
        Code::Unauthenticated,
    );
    expect_code(
        auth.refresh_session(pb::RefreshSessionRequest {
            refresh_token: t.refresh_token,
        })
        .await,
        Code::Unauthenticated,
    );
    // Only that session ended.
    auth.who_am_i(authed(pb::WhoAmIRequest {}, &other.access_token))
        .await
        .unwrap();
}

async fn change_password_revokes_every_session(b: Backend) {
    let s = TestServer::start(b).await;
    let a = s.login(ADMIN, ADMIN_PASSWORD).await.tokens.unwrap();
    let b2 = s.login(ADMIN, ADMIN_PASSWORD).await.tokens.unwrap();
    let mut auth = s.auth();
    // Wrong current password, a password that breaks the policy, and the same password again.
    let r = auth
        .change_password(authed(
            pb::ChangePasswordRequest {
                current_password: "Wrong-pass-1".into(),
                new_password: "Another-pass-2".into(),
            },
            &a.access_token,
        ))
        .await;
    expect_invalid(r, "current_password");
    let r = auth
        .change_password(authed(
            pb::ChangePasswordRequest {
                current_password: ADMIN_PASSWORD.into(),
                new_password: "short".into(),
            },
            &a.access_token,
        ))
        .await;
    expect_invalid(r, "new_password");
    let r = auth
        .change_password(authed(
            pb::ChangePasswordRequest {
                current_password: ADMIN_PASSWORD.into(),
                new_password: ADMIN_PASSWORD.into(),
            },
            &a.access_token,
        ))
        .await;
    expect_invalid(r, "new_password");

    let fresh = auth
        .change_password(authed(
            pb::ChangePasswordRequest {
                current_password: ADMIN_PASSWORD.into(),
                new_password: "Another-pass-2".into(),
            },
            &a.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    for old in [&a, &b2] {
        expect_code(
            auth.who_am_i(authed(pb::WhoAmIRequest {}, &old.access_token))
                .await,
            Code::Unauthenticated,
        );
    }
    auth.who_am_i(authed(
        pb::WhoAmIRequest {},
        &fresh.tokens.unwrap().access_token,
    ))
    .await
    .unwrap();
    expect_code(
        auth.login(pb::LoginRequest {
            username: ADMIN.into(),
            password: ADMIN_PASSWORD.into(),
            ..Default::default()
        })
        .await,
        Code::Unauthenticated,
    );
    s.login(ADMIN, "Another-pass-2").await;
}

async fn temporary_password_allows_only_changing_it(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    s.users()
        .create_user(authed(
            pb::CreateUserRequest {
                user: Some(pb::User {
                    username: "tina".into(),
                    email: "tina@example.com".into(),
                    display_name: "Tina".into(),
                    role: pb::Role::TeamAdmin as i32,
                    ..Default::default()
                }),
                initial_password: "Temporary-pw-1".into(),
                require_password_change: true,
            },
            &admin,
        ))
        .await
        .unwrap();
    let l = s.login("tina", "Temporary-pw-1").await;
    assert!(l.user.as_ref().unwrap().must_change_password);
    let token = l.tokens.unwrap().access_token;
    let st = expect_code(
        s.users()
            .list_users(authed(pb::ListUsersRequest::default(), &token))
            .await,
        Code::PermissionDenied,
    );
    assert!(st.message().contains("ChangePassword"), "{st:?}");
    let me = s
        .auth()
        .who_am_i(authed(pb::WhoAmIRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    expect_code(
        s.users()
            .get_user(authed(
                pb::GetUserRequest {
                    name: me.principal.clone(),
                },
                &token,
            ))
            .await,
        Code::PermissionDenied,
    );
    let changed = s
        .auth()
        .change_password(authed(
            pb::ChangePasswordRequest {
                current_password: "Temporary-pw-1".into(),
                new_password: "Permanent-pw-2".into(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!changed.user.unwrap().must_change_password);
    let token = changed.tokens.unwrap().access_token;
    s.users()
        .list_users(authed(pb::ListUsersRequest::default(), &token))
        .await
        .unwrap();
}

async fn role_changes_and_deactivation_apply_to_issued_tokens(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let user = s.create_user(&admin, "bea", pb::Role::Approver, PW).await;
    let token = s.login("bea", PW).await.tokens.unwrap().access_token;
    let list = || {
        let mut u = s.users();
        let r = authed(pb::ListUsersRequest::default(), &token);
        async move { u.list_users(r).await }
    };
    expect_code(list().await, Code::PermissionDenied);

    let set_role = |role: pb::Role| {
        let mut u = s.users();
        let r = authed(
            pb::UpdateUserRequest {
                reason: String::new(),
                user: Some(pb::User {
                    name: user.name.clone(),
                    role: role as i32,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["role".into()],
                }),
            },
            &admin,
        );
        async move { u.update_user(r).await }
    };
    set_role(pb::Role::TeamAdmin).await.unwrap();
    list().await.unwrap(); // the same token, now with the new role
    set_role(pb::Role::Requester).await.unwrap();
    expect_code(list().await, Code::PermissionDenied);

    s.users()
        .deactivate_user(authed(
            pb::DeactivateUserRequest {
                name: user.name.clone(),
                etag: String::new(),
            },
            &admin,
        ))
        .await
        .unwrap();
    expect_code(
        s.auth()
            .who_am_i(authed(pb::WhoAmIRequest {}, &token))
            .await,
        Code::Unauthenticated,
    );
    expect_code(
        s.auth()
            .login(pb::LoginRequest {
                username: "bea".into(),
                password: PW.into(),
                ..Default::default()
            })
            .await,
        Code::Unauthenticated,
    );
}

async fn malformed_tokens_are_refused(b: Backend) {
    let s = TestServer::start(b).await;
    let mut auth = s.auth();
    expect_code(
        auth.who_am_i(pb::WhoAmIRequest {}).await,
        Code::Unauthenticated,
    );
    for bad in ["garbage", "eyJhbGciOiJub25lIn0.e30.", "a.b.c"] {
        expect_code(
            auth.who_am_i(authed(pb::WhoAmIRequest {}, bad)).await,
            Code::Unauthenticated,
        );
    }
    let mut r = tonic::Request::new(pb::WhoAmIRequest {});
    let t = s.admin_token().await;
    r.metadata_mut()
        .insert("authorization", format!("Basic {t}").parse().unwrap());
    expect_code(auth.who_am_i(r).await, Code::Unauthenticated);
}

/// The README's walk-through: a generated bootstrap password, changed at first login; the admin
/// creates a Requester, who is refused user management.
async fn newcomer_walkthrough(b: Backend) {
    let (mut config, dir) = test_config(&b);
    config.bootstrap.password = None;
    let server = fluxgate_server::Server::bind(config.clone()).await.unwrap();
    let generated = server
        .bootstrap
        .admin
        .clone()
        .and_then(|a| a.generated_password)
        .expect("a generated password");
    drop(server);
    // A second start never recreates the admin.
    let again = fluxgate_server::Server::bind(config.clone()).await.unwrap();
    assert_eq!(again.bootstrap.admin, None);
    drop(again);
    let s = TestServer::start_with(config, dir).await;

    let l = s.login(ADMIN, &generated).await;
    assert!(l.user.unwrap().must_change_password);
    let admin = s
        .auth()
        .change_password(authed(
            pb::ChangePasswordRequest {
                current_password: generated,
                new_password: "My-own-secret-9".into(),
            },
            &l.tokens.unwrap().access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;
    s.create_user(&admin, "rex", pb::Role::Requester, PW).await;
    let rex = s.login("rex", PW).await.tokens.unwrap().access_token;
    expect_code(
        s.users()
            .list_users(authed(pb::ListUsersRequest::default(), &rex))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        s.users()
            .create_user(authed(
                pb::CreateUserRequest {
                    user: Some(pb::User {
                        username: "sneaky".into(),
                        email: "sneaky@example.com".into(),
                        display_name: "S".into(),
                        role: pb::Role::TeamAdmin as i32,
                        ..Default::default()
                    }),
                    initial_password: PW.into(),
                    require_password_change: false,
                },
                &rex,
            ))
            .await,
        Code::PermissionDenied,
    );
    s.stop().await;
}

crate::both_backends!(
    login_by_username_or_email,
    unknown_user_and_wrong_password_look_the_same,
    lockout_after_repeated_failures,
    refresh_rotates_and_reuse_revokes_the_session,
    concurrent_refreshes_keep_the_session,
    without_grace_one_concurrent_refresh_wins,
    logout_ends_the_session_at_once,
    change_password_revokes_every_session,
    temporary_password_allows_only_changing_it,
    role_changes_and_deactivation_apply_to_issued_tokens,
    malformed_tokens_are_refused,
    newcomer_walkthrough,
);
