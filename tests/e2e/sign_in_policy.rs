//! The organisation's sign-in policy over the API: a second factor required by role, with its
//! grace period (the account held to enrolment once it has passed, and let go by enrolling or
//! by a policy that no longer asks), and password sign-in disabled but for break-glass Team
//! Admins.

use fluxgate_proto::v1 as pb;
use prost_types::{Duration, FieldMask};
use tonic::Code;
use totp_rs::{Algorithm, TOTP};

use crate::harness::{ADMIN, Backend, TestServer, authed, expect_code, expect_invalid};

const PW: &str = "Sign-In-Policy-Pass-1";

/// Sets the sign-in policy fields named by `paths` to those of `p`.
async fn set_policy(
    s: &TestServer,
    admin: &str,
    p: pb::SignInPolicy,
    paths: &[&str],
) -> Result<pb::Settings, tonic::Status> {
    let cur = s
        .settings()
        .get_settings(authed(pb::GetSettingsRequest::default(), admin))
        .await?
        .into_inner()
        .settings
        .unwrap();
    s.settings()
        .update_settings(authed(
            pb::UpdateSettingsRequest {
                settings: Some(pb::Settings {
                    sign_in_policy: Some(p),
                    etag: cur.etag,
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: paths
                        .iter()
                        .map(|x| format!("sign_in_policy.{x}"))
                        .collect(),
                }),
            },
            admin,
        ))
        .await
        .map(|r| r.into_inner().settings.unwrap())
}

fn secs(n: i64) -> Option<Duration> {
    Some(Duration {
        seconds: n,
        nanos: 0,
    })
}

async fn login(s: &TestServer, user: &str, code: &str) -> Result<pb::LoginResponse, tonic::Status> {
    s.auth()
        .login(pb::LoginRequest {
            username: user.into(),
            password: PW.into(),
            second_factor_code: code.into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn list_users(s: &TestServer, token: &str) -> Result<(), tonic::Status> {
    s.users()
        .list_users(authed(pb::ListUsersRequest::default(), token))
        .await
        .map(drop)
}

fn totp_now(secret: &str) -> String {
    let bytes = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, secret).unwrap();
    TOTP::new_unchecked(Algorithm::SHA1, 6, 1, 30, bytes)
        .generate_current()
        .unwrap()
}

async fn a_role_requires_a_second_factor_after_its_grace(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let admins = vec![pb::Role::TeamAdmin as i32];
    let roles = "second_factor_required_roles";
    let grace = "second_factor_grace_period";
    let p = pb::SignInPolicy {
        second_factor_required_roles: admins.clone(),
        second_factor_grace_period: secs(3600),
        ..Default::default()
    };
    let st = set_policy(&s, &admin, p, &[roles, grace]).await.unwrap();
    let sp = st.sign_in_policy.unwrap();
    assert_eq!(sp.second_factor_required_roles, admins);
    assert_eq!(sp.second_factor_grace_period, secs(3600));

    // Within the grace: told the deadline, everything allowed.
    s.create_user(&admin, "tessa", pb::Role::TeamAdmin, PW)
        .await;
    let r = login(&s, "tessa", "").await.unwrap();
    let req = r.second_factor_requirement.expect("a deadline");
    assert!(!req.overdue);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let due = req.due_time.unwrap().seconds;
    assert!((now + 3500..=now + 3700).contains(&due), "{due} vs {now}");
    let tessa = r.tokens.unwrap().access_token;
    list_users(&s, &tessa).await.unwrap();
    // A requester is asked nothing.
    s.create_user(&admin, "rick", pb::Role::Requester, PW).await;
    assert!(
        login(&s, "rick", "")
            .await
            .unwrap()
            .second_factor_requirement
            .is_none()
    );

    // No grace: held to enrolment at once.
    let p = pb::SignInPolicy {
        second_factor_required_roles: admins.clone(),
        second_factor_grace_period: secs(0),
        ..Default::default()
    };
    set_policy(&s, &admin, p, &[roles, grace]).await.unwrap();
    s.create_user(&admin, "tom", pb::Role::TeamAdmin, PW).await;
    let r = login(&s, "tom", "").await.unwrap();
    assert!(r.second_factor_requirement.unwrap().overdue);
    let tom = r.tokens.unwrap().access_token;
    let e = expect_code(list_users(&s, &tom).await, Code::PermissionDenied);
    assert!(e.message().contains("second factor"), "{}", e.message());
    // Their own session is theirs: who am I, the factor's state, enrolment.
    s.auth()
        .who_am_i(authed(pb::WhoAmIRequest {}, &tom))
        .await
        .unwrap();
    let st = s
        .auth()
        .get_second_factor(authed(pb::GetSecondFactorRequest {}, &tom))
        .await
        .unwrap()
        .into_inner();
    assert!(st.requirement.unwrap().overdue);
    let secret = s
        .auth()
        .begin_totp_enrollment(authed(pb::BeginTotpEnrollmentRequest {}, &tom))
        .await
        .unwrap()
        .into_inner()
        .secret;
    s.auth()
        .confirm_totp_enrollment(authed(
            pb::ConfirmTotpEnrollmentRequest {
                code: totp_now(&secret),
            },
            &tom,
        ))
        .await
        .unwrap();
    // Enrolled: let go at once, on the same session.
    list_users(&s, &tom).await.unwrap();
    let st = s
        .auth()
        .get_second_factor(authed(pb::GetSecondFactorRequest {}, &tom))
        .await
        .unwrap()
        .into_inner();
    assert!(st.requirement.is_none() && st.totp_enabled);

    // A policy that no longer asks lets the held go at once.
    s.create_user(&admin, "tara", pb::Role::TeamAdmin, PW).await;
    let tara = login(&s, "tara", "")
        .await
        .unwrap()
        .tokens
        .unwrap()
        .access_token;
    expect_code(list_users(&s, &tara).await, Code::PermissionDenied);
    set_policy(&s, &admin, pb::SignInPolicy::default(), &[roles])
        .await
        .unwrap();
    list_users(&s, &tara).await.unwrap();

    // Bad input: an unspecified role, a repeat, a grace beyond 90 days.
    let bad = pb::SignInPolicy {
        second_factor_required_roles: vec![0],
        ..Default::default()
    };
    expect_invalid(
        set_policy(&s, &admin, bad, &[roles]).await,
        "settings.sign_in_policy.second_factor_required_roles[0]",
    );
    let bad = pb::SignInPolicy {
        second_factor_required_roles: vec![3, 3],
        ..Default::default()
    };
    expect_invalid(
        set_policy(&s, &admin, bad, &[roles]).await,
        "settings.sign_in_policy.second_factor_required_roles",
    );
    let bad = pb::SignInPolicy {
        second_factor_grace_period: secs(91 * 86_400),
        ..Default::default()
    };
    expect_invalid(
        set_policy(&s, &admin, bad, &[grace]).await,
        "settings.sign_in_policy.second_factor_grace_period",
    );

    let actions = s.audit_actions(&admin).await;
    let deadlines: Vec<_> = actions
        .iter()
        .filter(|(a, _)| a == "user.second_factor_deadline")
        .collect();
    assert!(deadlines.len() >= 4, "{deadlines:?}");
    assert!(deadlines.iter().any(|(_, d)| d.contains("overdue")));
    assert!(
        deadlines
            .iter()
            .any(|(_, d)| d.contains("no second factor required"))
    );
    s.stop().await;
}

async fn password_sign_in_disabled_but_for_break_glass_admins(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let rick = s.create_user(&admin, "rick", pb::Role::Requester, PW).await;
    s.create_user(&admin, "tess", pb::Role::TeamAdmin, PW).await;
    let off = "password_sign_in_disabled";
    let glass = "break_glass_users";
    // Disabled needs someone to get in when the provider is down.
    let p = pb::SignInPolicy {
        password_sign_in_disabled: true,
        ..Default::default()
    };
    expect_invalid(
        set_policy(&s, &admin, p, &[off]).await,
        "settings.sign_in_policy.break_glass_users",
    );
    // Only active Team Admins, by id or username, known ones.
    let p = pb::SignInPolicy {
        password_sign_in_disabled: true,
        break_glass_users: vec![rick.name.clone()],
        ..Default::default()
    };
    expect_invalid(
        set_policy(&s, &admin, p, &[off, glass]).await,
        "settings.sign_in_policy.break_glass_users",
    );
    let p = pb::SignInPolicy {
        password_sign_in_disabled: true,
        break_glass_users: vec!["users/nobody-here".into()],
        ..Default::default()
    };
    expect_invalid(
        set_policy(&s, &admin, p, &[off, glass]).await,
        "settings.sign_in_policy.break_glass_users[0]",
    );
    let p = pb::SignInPolicy {
        password_sign_in_disabled: true,
        break_glass_users: vec![format!("users/{ADMIN}")],
        ..Default::default()
    };
    let st = set_policy(&s, &admin, p, &[off, glass]).await.unwrap();
    let sp = st.sign_in_policy.unwrap();
    assert!(sp.password_sign_in_disabled);
    assert_eq!(sp.break_glass_users.len(), 1);
    assert!(sp.break_glass_users[0].starts_with("users/"));

    // Everyone else is refused before the password is looked at; unknown names alike.
    for who in ["rick", "tess", "nobody"] {
        let e = expect_code(login(&s, who, "").await, Code::FailedPrecondition);
        assert!(
            e.message().contains("password sign-in is disabled"),
            "{}",
            e.message()
        );
    }
    s.login(ADMIN, crate::harness::ADMIN_PASSWORD).await;
    let providers = s
        .auth()
        .list_sso_providers(pb::ListSsoProvidersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(providers.password_sign_in_disabled);
    // Switched back on, passwords work again.
    let p = pb::SignInPolicy::default();
    set_policy(&s, &admin, p, &[off, glass]).await.unwrap();
    login(&s, "rick", "").await.unwrap();
    s.stop().await;
}

crate::both_backends!(
    a_role_requires_a_second_factor_after_its_grace,
    password_sign_in_disabled_but_for_break_glass_admins
);
