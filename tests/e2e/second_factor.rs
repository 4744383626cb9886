//! The TOTP second factor over the API: enrolment, sign-in with a code, replay refused, recovery
//! codes used once, the wrong password's answer for a wrong code, lockout, removal by the user
//! and by a Team Admin, and the audit events.

use fluxgate_proto::v1 as pb;
use tonic::Code;
use totp_rs::{Algorithm, TOTP};

use crate::harness::{Backend, TestServer, authed};

const PW: &str = "Second-Factor-Pass-1";

/// The code of `secret` at `now + offset_steps` steps.
fn code(secret: &str, offset_steps: i64) -> String {
    let bytes = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, secret).unwrap();
    let t = TOTP::new_unchecked(Algorithm::SHA1, 6, 1, 30, bytes);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    t.generate((now + offset_steps * 30) as u64)
}

/// Another 6-digit code than `c`.
fn wrong(c: &str) -> String {
    format!("{:06}", (c.parse::<u32>().unwrap() + 1) % 1_000_000)
}

async fn login(s: &TestServer, user: &str, pw: &str, code: &str) -> Result<String, tonic::Status> {
    s.auth()
        .login(pb::LoginRequest {
            username: user.into(),
            password: pw.into(),
            second_factor_code: code.into(),
        })
        .await
        .map(|r| r.into_inner().tokens.unwrap().access_token)
}

async fn status(s: &TestServer, token: &str) -> pb::GetSecondFactorResponse {
    s.auth()
        .get_second_factor(authed(pb::GetSecondFactorRequest {}, token))
        .await
        .unwrap()
        .into_inner()
}

async fn confirm(s: &TestServer, token: &str, code: &str) -> Result<Vec<String>, tonic::Status> {
    s.auth()
        .confirm_totp_enrollment(authed(
            pb::ConfirmTotpEnrollmentRequest { code: code.into() },
            token,
        ))
        .await
        .map(|r| r.into_inner().recovery_codes)
}

async fn remove(s: &TestServer, user: &str, token: String) -> Result<(), tonic::Status> {
    remove_with(s, user, token, "").await
}

async fn remove_with(
    s: &TestServer,
    user: &str,
    token: String,
    current_password: &str,
) -> Result<(), tonic::Status> {
    s.auth()
        .remove_second_factor(authed(
            pb::RemoveSecondFactorRequest {
                user: user.into(),
                current_password: current_password.into(),
            },
            &token,
        ))
        .await
        .map(drop)
}

/// Enrols `user` (signed in with `token`); answers the secret and the recovery codes.
async fn enrol(s: &TestServer, token: &str) -> (String, Vec<String>) {
    let e = s
        .auth()
        .begin_totp_enrollment(authed(pb::BeginTotpEnrollmentRequest {}, token))
        .await
        .unwrap()
        .into_inner();
    let codes = s
        .auth()
        .confirm_totp_enrollment(authed(
            pb::ConfirmTotpEnrollmentRequest {
                code: code(&e.secret, 0),
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .recovery_codes;
    (e.secret, codes)
}

async fn enrolment_sign_in_replay_and_recovery(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    s.create_user(&admin, "tina", pb::Role::Requester, PW).await;
    let token = login(&s, "tina", PW, "").await.unwrap();
    assert!(!status(&s, &token).await.totp_enabled);

    let e = s
        .auth()
        .begin_totp_enrollment(authed(pb::BeginTotpEnrollmentRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    assert!(
        e.otpauth_uri.starts_with(&format!(
            "otpauth://totp/FluxGate:tina?secret={}&",
            e.secret
        )),
        "{}",
        e.otpauth_uri
    );
    assert!(status(&s, &token).await.enrollment_pending);
    // Until confirmed, the pending secret does not guard sign-in.
    login(&s, "tina", PW, "").await.unwrap();

    let bad = confirm(&s, &token, "12ab56").await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    let miss = confirm(&s, &token, &wrong(&code(&e.secret, 0)))
        .await
        .unwrap_err();
    assert_eq!(miss.code(), Code::FailedPrecondition, "{miss:?}");
    let codes = confirm(&s, &token, &code(&e.secret, 0)).await.unwrap();
    assert_eq!(codes.len(), 10);
    let st = status(&s, &token).await;
    assert!(st.totp_enabled && !st.enrollment_pending && st.recovery_codes_left == 10);
    // Enrolling again needs the factor removed first.
    let again = s
        .auth()
        .begin_totp_enrollment(authed(pb::BeginTotpEnrollmentRequest {}, &token))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);

    // Without a code: asked for one. Wrong code or wrong password: the same one answer.
    let ask = login(&s, "tina", PW, "").await.unwrap_err();
    assert_eq!(ask.code(), Code::FailedPrecondition);
    assert!(
        ask.message().contains("second-factor code is required"),
        "{ask:?}"
    );
    let next = code(&e.secret, 1);
    let wrong_pw = login(&s, "tina", "Not-the-pass-9", &next)
        .await
        .unwrap_err();
    let wrong_code = login(&s, "tina", PW, &wrong(&next)).await.unwrap_err();
    assert_eq!(wrong_pw.code(), Code::Unauthenticated);
    assert_eq!(
        (wrong_code.code(), wrong_code.message()),
        (wrong_pw.code(), wrong_pw.message())
    );

    // The confirming code's step is used: the next step's code signs in, once.
    login(&s, "tina", PW, &next).await.unwrap();
    let replay = login(&s, "tina", PW, &next).await.unwrap_err();
    assert_eq!(replay.code(), Code::Unauthenticated, "{replay:?}");

    // A recovery code works once, typed loosely.
    let loose = codes[0].to_uppercase().replace('-', " ");
    let t2 = login(&s, "tina", PW, &loose).await.unwrap();
    assert_eq!(
        login(&s, "tina", PW, &codes[0]).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(status(&s, &t2).await.recovery_codes_left, 9);

    // The audit trail: started, enabled, and the sign-ins say how they were made.
    let events = s.audit_actions(&admin).await;
    for action in [
        "user.second_factor_enrolment_started",
        "user.second_factor_enabled",
    ] {
        assert!(
            events.iter().any(|(a, _)| a == action),
            "{action}: {events:?}"
        );
    }
    assert!(
        events
            .iter()
            .any(|(a, d)| a == "auth.login" && d.contains("with a TOTP code"))
    );
    assert!(
        events
            .iter()
            .any(|(a, d)| a == "auth.login" && d.contains("with a recovery code"))
    );
    s.stop().await;
}

async fn wrong_codes_lock_the_account(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    s.create_user(&admin, "lena", pb::Role::Requester, PW).await;
    let token = login(&s, "lena", PW, "").await.unwrap();
    let (secret, _) = enrol(&s, &token).await;
    let right = code(&secret, 1);
    let mut last = None;
    for _ in 0..10 {
        let e = login(&s, "lena", PW, &wrong(&right)).await.unwrap_err();
        if e.code() == Code::ResourceExhausted {
            last = Some(e);
            break;
        }
        assert_eq!(e.code(), Code::Unauthenticated);
    }
    assert!(last.is_some(), "wrong codes never locked the account");
    // Locked: even the right code is refused now.
    let e = login(&s, "lena", PW, &right).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    s.stop().await;
}

async fn removal_by_the_user_and_by_a_team_admin(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    s.create_user(&admin, "rosa", pb::Role::Requester, PW).await;
    s.create_user(&admin, "otto", pb::Role::Requester, PW).await;
    let token = login(&s, "rosa", PW, "").await.unwrap();
    let (secret, _) = enrol(&s, &token).await;

    // Another user may not take it off; the Team Admin may.
    let otto = login(&s, "otto", PW, "").await.unwrap();
    let remove = |user: &'static str, t: String| remove(&s, user, t);
    let denied = remove("users/rosa", otto).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let bad = remove("not a name", admin.clone()).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    remove("users/rosa", admin.clone()).await.unwrap();
    assert_eq!(
        remove("users/rosa", admin.clone())
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    let token = login(&s, "rosa", PW, "").await.unwrap();
    assert!(!status(&s, &token).await.totp_enabled);

    // The user removes their own, with their password: a session alone does not.
    let _ = secret;
    enrol(&s, &token).await;
    for (who, pw) in [("", ""), ("users/rosa", ""), ("", "Not-the-pass-9")] {
        let e = remove_with(&s, who, token.clone(), pw).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{who:?} {pw:?}: {e:?}");
        assert!(e.message().contains("current_password"), "{e:?}");
    }
    remove_with(&s, "users/rosa", token.clone(), PW)
        .await
        .unwrap();
    login(&s, "rosa", PW, "").await.unwrap();
    let events = s.audit_actions(&admin).await;
    let removed: Vec<_> = events
        .iter()
        .filter(|(a, _)| a == "user.second_factor_removed")
        .map(|(_, d)| d.as_str())
        .collect();
    assert_eq!(removed.len(), 2, "{events:?}");
    assert!(
        removed.contains(&"removed by a Team Admin") && removed.contains(&"removed by the user")
    );
    s.stop().await;
}

crate::both_backends!(
    enrolment_sign_in_replay_and_recovery,
    wrong_codes_lock_the_account,
    removal_by_the_user_and_by_a_team_admin
);
