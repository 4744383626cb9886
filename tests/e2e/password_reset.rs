//! Password resets, registration links and email (SPEC section 5), against a real SMTP server.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use fluxgate_proto::v1 as pb;
use fluxgate_store::schema::user_tokens;
use tonic::{Code, Request};

use crate::harness::{ADMIN, Backend, TestServer, authed, expect_code, expect_invalid};
use crate::smtp::SmtpSink;

const PW: &str = "Original-pass-1";
const NEW_PW: &str = "Brand-new-pass-2";

/// A server delivering to `sink`, retrying quickly.
async fn with_smtp(b: Backend, sink: &SmtpSink) -> TestServer {
    let url = sink.url();
    TestServer::start_configured(b, |c| {
        c.email.smtp_url = Some(url);
        c.email.retry_initial_ms = 100;
        c.email.max_attempts = 4;
        c.public_url = "https://flags.example.com/".into();
    })
    .await
}

async fn request_reset(
    s: &TestServer,
    email: &str,
) -> tonic::Response<pb::RequestPasswordResetResponse> {
    s.request_reset_settled(email)
        .await
        .unwrap_or_else(|st| panic!("request reset {email}: {st:?}"))
}

async fn confirm(s: &TestServer, token: &str, pw: &str) -> Result<String, tonic::Status> {
    s.password_reset()
        .confirm_password_reset(pb::ConfirmPasswordResetRequest {
            token: token.into(),
            new_password: pw.into(),
        })
        .await
        .map(|r| r.into_inner().username)
}

async fn complete(s: &TestServer, token: &str, pw: &str) -> Result<String, tonic::Status> {
    s.password_reset()
        .complete_registration(pb::CompleteRegistrationRequest {
            token: token.into(),
            password: pw.into(),
        })
        .await
        .map(|r| r.into_inner().username)
}

async fn who_am_i(s: &TestServer, token: &str) -> Result<pb::WhoAmIResponse, tonic::Status> {
    s.auth()
        .who_am_i(authed(pb::WhoAmIRequest {}, token))
        .await
        .map(|r| r.into_inner())
}

async fn emails(s: &TestServer, admin: &str, recipient: &str) -> Vec<pb::Email> {
    s.email()
        .list_emails(authed(
            pb::ListEmailsRequest {
                recipient: recipient.into(),
                ..Default::default()
            },
            admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .emails
}

/// Waits until the outbox message satisfies `done`.
async fn wait_email(
    s: &TestServer,
    admin: &str,
    name: &str,
    done: impl Fn(&pb::Email) -> bool,
) -> pb::Email {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let e = s
            .email()
            .get_email(authed(pb::GetEmailRequest { name: name.into() }, admin))
            .await
            .unwrap()
            .into_inner()
            .email
            .unwrap();
        if done(&e) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "email never reached the state: {e:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn message_text(st: &tonic::Status) -> String {
    st.message().to_owned()
}

/// The whole self-service flow through a real SMTP server: the link in the received message
/// sets the password, every session ends, and the link works once.
async fn self_service_reset_over_smtp(b: Backend) {
    let Some(sink) = SmtpSink::start(0) else {
        return;
    };
    let s = with_smtp(b, &sink).await;
    let admin = s.admin_token().await;
    s.create_user(&admin, "ada", pb::Role::Requester, PW).await;
    let session = s.login("ada", PW).await.tokens.unwrap().access_token;

    request_reset(&s, "Ada@Example.com").await;
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].to, ["ada@example.com"]);
    assert_eq!(got[0].subject, "Reset your FluxGate password");
    assert!(
        got[0]
            .body
            .contains("https://flags.example.com/reset-password?token="),
        "{}",
        got[0].body
    );
    let token = got[0].token();
    assert_eq!(token.len(), 43, "256 bits, base64url");

    // The new password must pass the policy; a refusal does not use up the link.
    expect_invalid(confirm(&s, &token, "weak").await, "new_password");
    assert_eq!(confirm(&s, &token, NEW_PW).await.unwrap(), "ada");

    expect_code(who_am_i(&s, &session).await, Code::Unauthenticated);
    expect_code(
        s.auth()
            .login(pb::LoginRequest {
                username: "ada".into(),
                password: PW.into(),
                ..Default::default()
            })
            .await,
        Code::Unauthenticated,
    );
    let l = s.login("ada", NEW_PW).await;
    assert!(!l.user.unwrap().must_change_password);

    let reused = expect_code(
        confirm(&s, &token, "Another-pass-3").await,
        Code::FailedPrecondition,
    );
    assert!(
        message_text(&reused).contains("already been used"),
        "{reused:?}"
    );

    // The outbox shows the message sent, without its body (the link was a secret).
    let sent = emails(&s, &admin, "ada@example.com").await;
    assert_eq!(sent.len(), 1);
    let e = wait_email(&s, &admin, &sent[0].name, |e| {
        e.state == pb::EmailState::Sent as i32
    })
    .await;
    assert_eq!(e.template, "password_reset");
    assert!(e.body.is_empty(), "{e:?}");
    assert!(e.send_time.is_some());

    // Only a hash of the token is stored.
    let stored: Vec<String> = s
        .store()
        .read(|c| {
            user_tokens::table
                .select(user_tokens::token_hash)
                .load::<String>(c)
                .map_err(fluxgate_store::StoreError::from)
        })
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], token);
    assert_eq!(stored[0].len(), 64);

    let actions: Vec<String> = s.audit_events().into_iter().map(|e| e.action).collect();
    assert!(actions.contains(&"password_reset.requested".to_owned()));
    assert!(actions.contains(&"user.password_reset".to_owned()));
}

/// Known, unknown and deactivated addresses get the very same answer; only an active account
/// gets a message.
async fn same_answer_whether_or_not_the_account_exists(b: Backend) {
    let Some(sink) = SmtpSink::start(0) else {
        return;
    };
    let s = with_smtp(b, &sink).await;
    let admin = s.admin_token().await;
    s.create_user(&admin, "bea", pb::Role::Requester, PW).await;
    let gone = s.create_user(&admin, "cyd", pb::Role::Requester, PW).await;
    s.users()
        .deactivate_user(authed(
            pb::DeactivateUserRequest {
                name: gone.name.clone(),
                etag: String::new(),
            },
            &admin,
        ))
        .await
        .unwrap();

    let shape = |r: tonic::Response<pb::RequestPasswordResetResponse>| {
        let mut keys: Vec<String> = r
            .metadata()
            .keys()
            .map(|k| format!("{k:?}"))
            .filter(|k| !k.contains("date"))
            .collect();
        keys.sort();
        (keys, r.into_inner())
    };
    let known = shape(request_reset(&s, "bea@example.com").await);
    let unknown = shape(request_reset(&s, "nobody@example.com").await);
    let deactivated = shape(request_reset(&s, "cyd@example.com").await);
    assert_eq!(known, unknown);
    assert_eq!(known, deactivated);

    let got = sink.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.messages().len(), 1, "{got:?}");
    assert_eq!(got[0].to, ["bea@example.com"]);
    assert!(emails(&s, &admin, "nobody@example.com").await.is_empty());
    assert!(emails(&s, &admin, "cyd@example.com").await.is_empty());

    // A malformed address is refused as such: that reveals nothing about accounts.
    expect_invalid(
        s.password_reset()
            .request_password_reset(pb::RequestPasswordResetRequest {
                email: "not an address".into(),
            })
            .await,
        "email",
    );
}

/// Superseded, expired, malformed, unknown and wrong-purpose tokens are each refused, clearly.
async fn unusable_tokens_are_refused_each_with_its_reason(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    s.create_user(&admin, "dee", pb::Role::Requester, PW).await;

    // No SMTP here: the links are read from the outbox, as an admin would.
    request_reset(&s, "dee@example.com").await;
    request_reset(&s, "dee@example.com").await;
    let held = emails(&s, &admin, "dee@example.com").await;
    assert_eq!(held.len(), 2);
    assert!(held.iter().all(|e| e.state == pb::EmailState::Held as i32));
    let token_of = |e: &pb::Email| {
        crate::smtp::Received {
            to: vec![],
            subject: e.subject.clone(),
            body: e.body.clone(),
        }
        .token()
    };
    // Newest first.
    let (newer, older) = (token_of(&held[0]), token_of(&held[1]));

    let st = expect_code(confirm(&s, &older, NEW_PW).await, Code::FailedPrecondition);
    assert!(message_text(&st).contains("newer link"), "{st:?}");

    let st = expect_code(confirm(&s, "abc", NEW_PW).await, Code::InvalidArgument);
    assert!(message_text(&st).contains("malformed"), "{st:?}");
    expect_invalid(confirm(&s, &format!("{newer}!"), NEW_PW).await, "token");
    expect_invalid(confirm(&s, "", NEW_PW).await, "token");
    expect_invalid(confirm(&s, &newer, "").await, "new_password");

    let unknown = "A".repeat(43);
    let st = expect_code(confirm(&s, &unknown, NEW_PW).await, Code::NotFound);
    assert!(message_text(&st).contains("not valid"), "{st:?}");

    // A registration token is not a reset token, nor the other way round.
    let created = s
        .users()
        .create_user(authed(
            pb::CreateUserRequest {
                user: Some(pb::User {
                    username: "eve".into(),
                    email: "eve@example.com".into(),
                    display_name: "Eve".into(),
                    role: pb::Role::Requester as i32,
                    ..Default::default()
                }),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let reg = created.registration_link.unwrap().token;
    let st = expect_code(confirm(&s, &reg, NEW_PW).await, Code::FailedPrecondition);
    assert!(message_text(&st).contains("registration link"), "{st:?}");
    let st = expect_code(complete(&s, &newer, NEW_PW).await, Code::FailedPrecondition);
    assert!(message_text(&st).contains("password-reset link"), "{st:?}");

    // Expired: move the newest token's expiry into the past.
    s.store()
        .write(|tx| {
            diesel::update(user_tokens::table.filter(user_tokens::purpose.eq("password_reset")))
                .set(user_tokens::expires_at.eq(tx.now - 1))
                .execute(tx.conn)
                .map_err(fluxgate_store::StoreError::from)
        })
        .unwrap();
    let st = expect_code(confirm(&s, &newer, NEW_PW).await, Code::FailedPrecondition);
    assert!(message_text(&st).contains("expired at"), "{st:?}");

    // None of these refusals changed the password.
    s.login("dee", PW).await;
}

/// A user created without a password gets a registration link, in the response and by email;
/// a re-issued link replaces the old one; completing it sets the password, once.
async fn registration_links(b: Backend) {
    let Some(sink) = SmtpSink::start(0) else {
        return;
    };
    let s = with_smtp(b, &sink).await;
    let admin = s.admin_token().await;
    let create = |username: &str, require_change: bool| pb::CreateUserRequest {
        user: Some(pb::User {
            username: username.into(),
            email: format!("{username}@example.com"),
            display_name: format!("{username} newcomer"),
            role: pb::Role::Approver as i32,
            ..Default::default()
        }),
        initial_password: String::new(),
        require_password_change: require_change,
    };
    expect_invalid(
        s.users()
            .create_user(authed(create("fay", true), &admin))
            .await,
        "require_password_change",
    );
    let created = s
        .users()
        .create_user(authed(create("fay", false), &admin))
        .await
        .unwrap()
        .into_inner();
    let user = created.user.unwrap();
    let first = created.registration_link.unwrap();
    assert!(
        first
            .url
            .starts_with("https://flags.example.com/register?token="),
        "{first:?}"
    );
    assert!(first.url.ends_with(&first.token));
    let expires = first.expire_time.unwrap().seconds;
    let week = 7 * 86_400;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((expires - now - week).abs() < 60, "{expires} vs {now}");

    let got = sink.wait_for(1).await;
    assert_eq!(got[0].to, ["fay@example.com"]);
    assert_eq!(got[0].token(), first.token);

    // No password yet: no way in.
    expect_code(
        s.auth()
            .login(pb::LoginRequest {
                username: "fay".into(),
                password: "anything-1A".into(),
                ..Default::default()
            })
            .await,
        Code::Unauthenticated,
    );

    let reissued = s
        .password_reset()
        .issue_registration_link(authed(
            pb::IssueRegistrationLinkRequest {
                name: user.name.clone(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .registration_link
        .unwrap();
    assert_ne!(reissued.token, first.token);
    assert_eq!(sink.wait_for(2).await[1].token(), reissued.token);

    let st = expect_code(
        complete(&s, &first.token, NEW_PW).await,
        Code::FailedPrecondition,
    );
    assert!(message_text(&st).contains("newer link"), "{st:?}");
    expect_invalid(complete(&s, &reissued.token, "fay").await, "password");
    assert_eq!(complete(&s, &reissued.token, NEW_PW).await.unwrap(), "fay");
    let l = s.login("fay", NEW_PW).await;
    assert!(!l.user.unwrap().must_change_password);
    let st = expect_code(
        complete(&s, &reissued.token, "Other-pass-9").await,
        Code::FailedPrecondition,
    );
    assert!(message_text(&st).contains("already been used"), "{st:?}");

    // Once the password is set, a registration link makes no sense.
    expect_code(
        s.password_reset()
            .issue_registration_link(authed(
                pb::IssueRegistrationLinkRequest { name: user.name },
                &admin,
            ))
            .await,
        Code::FailedPrecondition,
    );
    let actions: Vec<String> = s.audit_events().into_iter().map(|e| e.action).collect();
    assert!(actions.contains(&"user.registration_link_issued".to_owned()));
    assert!(actions.contains(&"user.registered".to_owned()));
}

/// A Team Admin resets a password to a temporary one: shown once, must be changed, every
/// session revoked, a pending reset link voided, a notice (without the password) queued.
async fn admin_reset(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let gus = s.create_user(&admin, "gus", pb::Role::Approver, PW).await;
    s.create_user(&admin, "hal", pb::Role::Approver, PW).await;
    let gus_session = s.login("gus", PW).await.tokens.unwrap().access_token;
    let hal = s.login("hal", PW).await.tokens.unwrap().access_token;
    request_reset(&s, "gus@example.com").await;
    let pending_link = emails(&s, &admin, "gus@example.com").await[0].body.clone();

    let reset = |name: &str, etag: &str, token: &str| {
        let mut r = Request::new(pb::ResetUserPasswordRequest {
            name: name.into(),
            etag: etag.into(),
        });
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    };
    // Only Team Admins, never on themselves, and the etag is honoured.
    expect_code(
        s.password_reset()
            .reset_user_password(reset(&gus.name, "", &hal))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        s.password_reset()
            .reset_user_password(reset(&format!("users/{ADMIN}"), "", &admin))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        s.password_reset()
            .reset_user_password(reset(&gus.name, "\"999\"", &admin))
            .await,
        Code::Aborted,
    );
    expect_code(
        s.password_reset()
            .reset_user_password(reset("users/nobody", "", &admin))
            .await,
        Code::NotFound,
    );
    expect_invalid(
        s.password_reset()
            .reset_user_password(reset("", "", &admin))
            .await,
        "name",
    );

    let r = s
        .password_reset()
        .reset_user_password(reset(&gus.name, &gus.etag, &admin))
        .await
        .unwrap()
        .into_inner();
    assert!(r.user.unwrap().must_change_password);
    let temp = r.temporary_password;
    assert!(temp.len() >= 20, "{temp}");

    expect_code(who_am_i(&s, &gus_session).await, Code::Unauthenticated);
    let l = s.login("gus", &temp).await;
    assert!(l.user.unwrap().must_change_password);
    // A temporary password allows nothing but changing it.
    expect_code(
        s.users()
            .list_users(authed(
                pb::ListUsersRequest::default(),
                &l.tokens.unwrap().access_token,
            ))
            .await,
        Code::PermissionDenied,
    );

    // The self-service link requested before the reset no longer works.
    let old = crate::smtp::Received {
        to: vec![],
        subject: String::new(),
        body: pending_link,
    }
    .token();
    let st = expect_code(confirm(&s, &old, NEW_PW).await, Code::FailedPrecondition);
    assert!(message_text(&st).contains("newer link"), "{st:?}");

    // The user is told, without the password.
    let notice = emails(&s, &admin, "gus@example.com").await;
    let notice = notice
        .iter()
        .find(|e| e.template == "password_reset_by_admin")
        .expect("a notice");
    assert!(notice.body.contains(ADMIN), "{notice:?}");
    assert!(!notice.body.contains(&temp));
    let events = s.audit_events();
    let ev = events
        .iter()
        .find(|e| e.action == "user.password_reset_by_admin")
        .unwrap();
    assert!(
        ev.detail
            .as_deref()
            .unwrap()
            .contains("1 session(s) revoked"),
        "{ev:?}"
    );
}

/// Without SMTP nothing is lost: messages are held for Team Admins, who alone may read them.
async fn outbox_without_smtp(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    s.create_user(&admin, "ivy", pb::Role::Approver, PW).await;
    let ivy = s.login("ivy", PW).await.tokens.unwrap().access_token;
    request_reset(&s, "ivy@example.com").await;

    expect_code(
        s.email()
            .list_emails(authed(pb::ListEmailsRequest::default(), &ivy))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        s.email()
            .list_emails(pb::ListEmailsRequest::default())
            .await,
        Code::Unauthenticated,
    );
    let held = s
        .email()
        .list_emails(authed(
            pb::ListEmailsRequest {
                states: vec![pb::EmailState::Held as i32],
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .emails;
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].recipient, "ivy@example.com");
    assert_eq!(held[0].attempts, 0);
    let st = expect_code(
        s.email()
            .retry_email(authed(
                pb::RetryEmailRequest {
                    name: held[0].name.clone(),
                },
                &admin,
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert!(message_text(&st).contains("SMTP"), "{st:?}");

    // The held link works.
    let token = crate::smtp::Received {
        to: vec![],
        subject: String::new(),
        body: held[0].body.clone(),
    }
    .token();
    confirm(&s, &token, NEW_PW).await.unwrap();
    s.login("ivy", NEW_PW).await;

    // Filters and paging.
    for i in 0..3 {
        request_reset(&s, &format!("nobody{i}@example.com")).await;
        s.create_user(&admin, &format!("jo{i}"), pb::Role::Requester, "")
            .await;
    }
    let mut names = Vec::new();
    let mut page_token = String::new();
    loop {
        let r = s
            .email()
            .list_emails(authed(
                pb::ListEmailsRequest {
                    page_size: 2,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
                &admin,
            ))
            .await
            .unwrap()
            .into_inner();
        names.extend(r.emails.into_iter().map(|e| e.name));
        if r.next_page_token.is_empty() {
            break;
        }
        page_token = r.next_page_token;
    }
    assert_eq!(names.len(), 4, "{names:?}");
    let mut sorted = names.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(names, sorted, "newest first");

    expect_invalid(
        s.email()
            .list_emails(authed(
                pb::ListEmailsRequest {
                    states: vec![99],
                    ..Default::default()
                },
                &admin,
            ))
            .await,
        "states[0]",
    );
    expect_invalid(
        s.email()
            .list_emails(authed(
                pb::ListEmailsRequest {
                    page_token: "garbage".into(),
                    ..Default::default()
                },
                &admin,
            ))
            .await,
        "page_token",
    );
    expect_invalid(
        s.email()
            .get_email(authed(
                pb::GetEmailRequest {
                    name: "emails/x".into(),
                },
                &admin,
            ))
            .await,
        "name",
    );
}

/// Delivery failures never fail the RPC: temporary ones are retried until the message goes
/// through, permanent ones mark it failed for an admin to retry.
async fn delivery_failures_are_retried(b: Backend) {
    let Some(sink) = SmtpSink::start(2) else {
        return;
    };
    let s = with_smtp(b, &sink).await;
    let admin = s.admin_token().await;
    s.create_user(&admin, "kim", pb::Role::Requester, PW).await;
    s.create_user(&admin, "bounce.lee", pb::Role::Requester, PW)
        .await;

    request_reset(&s, "kim@example.com").await;
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].to, ["kim@example.com"]);
    let name = emails(&s, &admin, "kim@example.com").await[0].name.clone();
    let e = wait_email(&s, &admin, &name, |e| {
        e.state == pb::EmailState::Sent as i32
    })
    .await;
    assert_eq!(
        e.attempts, 3,
        "two temporary failures, then delivered: {e:?}"
    );

    request_reset(&s, "bounce.lee@example.com").await;
    let name = emails(&s, &admin, "bounce.lee@example.com").await[0]
        .name
        .clone();
    let e = wait_email(&s, &admin, &name, |e| {
        e.state == pb::EmailState::Failed as i32
    })
    .await;
    assert_eq!(e.attempts, 1, "a permanent failure is not retried: {e:?}");
    assert!(e.last_error.contains("550"), "{e:?}");
    assert!(!e.body.is_empty(), "an undelivered body is kept");

    let r = s
        .email()
        .retry_email(authed(pb::RetryEmailRequest { name: name.clone() }, &admin))
        .await
        .unwrap()
        .into_inner()
        .email
        .unwrap();
    assert_eq!(r.attempts, 0);
    let e = wait_email(&s, &admin, &name, |e| {
        e.state == pb::EmailState::Failed as i32 && e.attempts == 1
    })
    .await;
    assert!(e.last_error.contains("550"));
    expect_code(
        s.email()
            .retry_email(authed(
                pb::RetryEmailRequest {
                    name: emails(&s, &admin, "kim@example.com").await[0].name.clone(),
                },
                &admin,
            ))
            .await,
        Code::FailedPrecondition,
    );
}

/// With the SMTP server down the RPC still succeeds; the message waits and is retried.
async fn smtp_down_never_fails_the_rpc(b: Backend) {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = TestServer::start_configured(b, |c| {
        c.email.smtp_url = Some(format!("smtp://127.0.0.1:{port}"));
        c.email.retry_initial_ms = 100;
        c.email.max_attempts = 3;
        c.email.timeout_secs = 2;
    })
    .await;
    let admin = s.admin_token().await;
    s.create_user(&admin, "max", pb::Role::Requester, PW).await;
    request_reset(&s, "max@example.com").await;
    let name = emails(&s, &admin, "max@example.com").await[0].name.clone();
    let e = wait_email(&s, &admin, &name, |e| {
        e.attempts >= 1 && !e.last_error.is_empty()
    })
    .await;
    assert_ne!(e.state, pb::EmailState::Sent as i32);
    let e = wait_email(&s, &admin, &name, |e| {
        e.state == pb::EmailState::Failed as i32
    })
    .await;
    assert_eq!(e.attempts, 3, "{e:?}");
}

/// Reset requests are limited per account (silently) and per client address (loudly).
async fn reset_requests_are_rate_limited(b: Backend) {
    let s = TestServer::start_configured(b, |c| {
        c.password_reset.requests_per_account_per_hour = 2;
        c.password_reset.requests_per_client_per_hour = 6;
    })
    .await;
    let admin = s.admin_token().await;
    s.create_user(&admin, "ned", pb::Role::Requester, PW).await;
    for _ in 0..4 {
        request_reset(&s, "ned@example.com").await;
    }
    assert_eq!(emails(&s, &admin, "ned@example.com").await.len(), 2);
    let denied = s
        .audit_events()
        .into_iter()
        .filter(|e| e.action == "password_reset.requested" && e.outcome == "denied")
        .count();
    assert_eq!(denied, 2);
    request_reset(&s, "x@example.com").await;
    request_reset(&s, "y@example.com").await;
    let st = expect_code(
        s.password_reset()
            .request_password_reset(pb::RequestPasswordResetRequest {
                email: "z@example.com".into(),
            })
            .await,
        Code::ResourceExhausted,
    );
    assert!(message_text(&st).contains("this address"), "{st:?}");
}

/// A welcome email goes to users created with a password when configured.
async fn welcome_email(b: Backend) {
    let Some(sink) = SmtpSink::start(0) else {
        return;
    };
    let url = sink.url();
    let s = TestServer::start_configured(b, |c| {
        c.email.smtp_url = Some(url);
        c.email.welcome_email = true;
    })
    .await;
    let admin = s.admin_token().await;
    s.create_user(&admin, "ola", pb::Role::Requester, PW).await;
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].subject, "Welcome to FluxGate");
    assert!(got[0].body.contains("ola"));
    assert!(!got[0].body.contains(PW));
}

crate::both_backends!(
    self_service_reset_over_smtp,
    same_answer_whether_or_not_the_account_exists,
    unusable_tokens_are_refused_each_with_its_reason,
    registration_links,
    admin_reset,
    outbox_without_smtp,
    delivery_failures_are_retried,
    smtp_down_never_fails_the_rpc,
    reset_requests_are_rate_limited,
    welcome_email,
);
