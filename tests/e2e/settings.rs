//! Run-time settings: Team Admins read and change them; everyone may read the password policy.

use fluxgate_proto::v1 as pb;
use prost_types::{Duration, FieldMask};
use tonic::Code;

use crate::harness::*;

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

async fn admins_change_settings_at_run_time(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let mut settings = s.settings();
    let cur = settings
        .get_settings(authed(
            pb::GetSettingsRequest {
                name: "settings".into(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    let pp = cur.password_policy.unwrap();
    assert_eq!(
        (
            pp.min_length,
            pp.require_uppercase,
            pp.require_lowercase,
            pp.require_digit
        ),
        (8, true, true, true)
    );
    assert_eq!(
        cur.token_policy
            .as_ref()
            .unwrap()
            .access_token_ttl
            .as_ref()
            .unwrap()
            .seconds,
        86_400
    );

    // Raise the minimum length and shorten access tokens.
    let updated = settings
        .update_settings(authed(
            pb::UpdateSettingsRequest {
                settings: Some(pb::Settings {
                    password_policy: Some(pb::PasswordPolicy {
                        min_length: 14,
                        ..Default::default()
                    }),
                    token_policy: Some(pb::TokenPolicy {
                        access_token_ttl: Some(Duration {
                            seconds: 600,
                            nanos: 0,
                        }),
                        refresh_token_ttl: None,
                    }),
                    etag: cur.etag.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&[
                    "password_policy.min_length",
                    "token_policy.access_token_ttl",
                ]),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    assert_eq!(updated.password_policy.as_ref().unwrap().min_length, 14);
    assert!(
        updated.password_policy.as_ref().unwrap().require_digit,
        "unmasked fields are kept"
    );
    assert_ne!(updated.etag, cur.etag);

    // The public policy shows the change; the stale etag is refused.
    let public = settings
        .get_password_policy(pb::GetPasswordPolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(public.password_policy.unwrap().min_length, 14);
    let r = settings
        .update_settings(authed(
            pb::UpdateSettingsRequest {
                settings: Some(pb::Settings {
                    password_policy: Some(pb::PasswordPolicy {
                        min_length: 9,
                        ..Default::default()
                    }),
                    etag: cur.etag.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&["password_policy.min_length"]),
            },
            &admin,
        ))
        .await;
    expect_code(r, Code::Aborted);

    // The new policy applies to new passwords, the new lifetime to new tokens.
    let r = s
        .users()
        .create_user(authed(
            pb::CreateUserRequest {
                user: Some(pb::User {
                    username: "pat".into(),
                    email: "pat@example.com".into(),
                    display_name: "Pat".into(),
                    role: pb::Role::Requester as i32,
                    ..Default::default()
                }),
                initial_password: "Short-pw-12".into(),
                require_password_change: false,
            },
            &admin,
        ))
        .await;
    expect_invalid(r, "initial_password");
    let t = s.login(ADMIN, ADMIN_PASSWORD).await.tokens.unwrap();
    let exp = t.access_token_expire_time.unwrap().seconds;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (exp - now - 600).abs() <= 5,
        "access token lives 600 s: {}",
        exp - now
    );

    let ev: Vec<_> = s
        .audit_events()
        .into_iter()
        .filter(|e| e.action == "settings.updated")
        .collect();
    assert_eq!(ev.len(), 1);
    assert!(
        ev[0]
            .before_json
            .as_deref()
            .unwrap()
            .contains("\"min_length\":8")
    );
    assert!(
        ev[0]
            .after_json
            .as_deref()
            .unwrap()
            .contains("\"min_length\":14")
    );
}

async fn settings_are_for_team_admins(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    s.create_user(&admin, "appr", pb::Role::Approver, "Approver-pw-1")
        .await;
    let t = s
        .login("appr", "Approver-pw-1")
        .await
        .tokens
        .unwrap()
        .access_token;
    let mut settings = s.settings();
    expect_code(
        settings
            .get_settings(authed(pb::GetSettingsRequest::default(), &t))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        settings
            .update_settings(authed(
                pb::UpdateSettingsRequest {
                    settings: Some(pb::Settings {
                        password_policy: Some(pb::PasswordPolicy {
                            min_length: 9,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    update_mask: mask(&["password_policy.min_length"]),
                },
                &t,
            ))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        settings
            .get_settings(pb::GetSettingsRequest::default())
            .await,
        Code::Unauthenticated,
    );
    settings
        .get_password_policy(pb::GetPasswordPolicyRequest {})
        .await
        .unwrap();
}

async fn invalid_settings_are_refused_field_by_field(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let before = s.audit_count();
    let mut settings = s.settings();
    let call = |st: pb::Settings, paths: &[&str]| {
        let mut c = settings.clone();
        let req = authed(
            pb::UpdateSettingsRequest {
                settings: Some(st),
                update_mask: mask(paths),
            },
            &admin,
        );
        async move { c.update_settings(req).await }
    };
    let pp = |min: i32, max: i32| pb::Settings {
        password_policy: Some(pb::PasswordPolicy {
            min_length: min,
            max_length: max,
            ..Default::default()
        }),
        ..Default::default()
    };
    expect_invalid(
        call(pp(4, 0), &["password_policy.min_length"]).await,
        "settings.password_policy.min_length",
    );
    expect_invalid(
        call(pp(-1, 0), &["password_policy.min_length"]).await,
        "settings.password_policy.min_length",
    );
    expect_invalid(
        call(pp(10, 7), &["password_policy.max_length"]).await,
        "settings.password_policy.max_length",
    );
    expect_invalid(
        call(pp(10, 9), &["password_policy.nope"]).await,
        "update_mask",
    );
    expect_invalid(call(pp(10, 9), &[]).await, "update_mask");
    expect_invalid(
        call(pb::Settings::default(), &["lockout_policy"]).await,
        "settings.lockout_policy",
    );
    let lock = pb::Settings {
        lockout_policy: Some(pb::LockoutPolicy {
            max_failed_attempts: 0,
            lockout_duration: Some(Duration {
                seconds: 1,
                nanos: 5,
            }),
        }),
        ..Default::default()
    };
    expect_invalid(
        call(lock.clone(), &["lockout_policy"]).await,
        "settings.lockout_policy.max_failed_attempts",
    );
    expect_invalid(
        call(lock, &["lockout_policy"]).await,
        "settings.lockout_policy.lockout_duration",
    );
    let ttl = pb::Settings {
        token_policy: Some(pb::TokenPolicy {
            access_token_ttl: Some(Duration {
                seconds: 5,
                nanos: 0,
            }),
            refresh_token_ttl: None,
        }),
        ..Default::default()
    };
    expect_invalid(
        call(ttl, &["token_policy.access_token_ttl"]).await,
        "settings.token_policy.access_token_ttl",
    );
    let named = pb::Settings {
        name: "other".into(),
        ..pp(10, 20)
    };
    expect_invalid(call(named, &["password_policy"]).await, "settings.name");
    expect_invalid(
        settings
            .get_settings(authed(
                pb::GetSettingsRequest {
                    name: "nope".into(),
                },
                &admin,
            ))
            .await,
        "name",
    );
    assert_eq!(s.audit_count(), before, "nothing written");
}

crate::both_backends!(
    admins_change_settings_at_run_time,
    settings_are_for_team_admins,
    invalid_settings_are_refused_field_by_field,
);
