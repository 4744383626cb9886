//! Bad input on every RPC: INVALID_ARGUMENT with field violations, never INTERNAL, and nothing
//! written.

use fluxgate_proto::v1 as pb;
use prost_types::FieldMask;

use crate::harness::*;

/// Everything the server persists, to compare before and after refused calls.
fn fingerprint(s: &TestServer) -> (i64, usize, Vec<String>, i64) {
    let store = s.store();
    store
        .read(|c| {
            let users = fluxgate_store::users::all(c)?;
            Ok::<_, fluxgate_store::StoreError>((
                fluxgate_store::users::count(c)?,
                fluxgate_store::audit::list(c, 0, i64::MAX)?.len(),
                users.iter().map(|u| format!("{u:?}")).collect(),
                fluxgate_store::changes::current(c)?,
            ))
        })
        .unwrap()
}

fn user(username: &str, email: &str, name: &str, role: i32) -> Option<pb::User> {
    Some(pb::User {
        username: username.into(),
        email: email.into(),
        display_name: name.into(),
        role,
        ..Default::default()
    })
}

async fn every_rpc_validates_its_input(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let target = s
        .create_user(&admin, "vic", pb::Role::Requester, "Valid-pass-12")
        .await;
    let before = fingerprint(&s);
    let (mut auth, mut users) = (s.auth(), s.users());
    let ok_pw = "Valid-pass-12".to_string();
    let long = "x".repeat(5000);

    // AuthService
    expect_invalid(
        auth.login(pb::LoginRequest {
            username: String::new(),
            password: ok_pw.clone(),
        })
        .await,
        "username",
    );
    expect_invalid(
        auth.login(pb::LoginRequest {
            username: "vic".into(),
            password: String::new(),
        })
        .await,
        "password",
    );
    expect_invalid(
        auth.login(pb::LoginRequest {
            username: long.clone(),
            password: ok_pw.clone(),
        })
        .await,
        "username",
    );
    expect_invalid(
        auth.login(pb::LoginRequest {
            username: "vic".into(),
            password: long.clone(),
        })
        .await,
        "password",
    );
    expect_invalid(
        auth.login(pb::LoginRequest {
            username: "a\u{0}b".into(),
            password: ok_pw.clone(),
        })
        .await,
        "username",
    );
    expect_invalid(
        auth.refresh_session(pb::RefreshSessionRequest {
            refresh_token: String::new(),
        })
        .await,
        "refresh_token",
    );
    expect_invalid(
        auth.refresh_session(pb::RefreshSessionRequest {
            refresh_token: long.clone(),
        })
        .await,
        "refresh_token",
    );
    expect_invalid(
        auth.change_password(authed(
            pb::ChangePasswordRequest {
                current_password: String::new(),
                new_password: String::new(),
            },
            &admin,
        ))
        .await,
        "current_password",
    );
    expect_invalid(
        auth.change_password(authed(
            pb::ChangePasswordRequest {
                current_password: ok_pw.clone(),
                new_password: String::new(),
            },
            &admin,
        ))
        .await,
        "new_password",
    );

    // UserService.CreateUser
    let create = |u: Option<pb::User>, pw: &str| {
        authed(
            pb::CreateUserRequest {
                user: u,
                initial_password: pw.into(),
                require_password_change: false,
            },
            &admin,
        )
    };
    let r3 = pb::Role::Requester as i32;
    expect_invalid(users.create_user(create(None, &ok_pw)).await, "user");
    for (u, field) in [
        (user("", "a@example.com", "A", r3), "user.username"),
        (user("a b", "a@example.com", "A", r3), "user.username"),
        (user("x", "a@example.com", "A", r3), "user.username"),
        (
            user(&"a".repeat(65), "a@example.com", "A", r3),
            "user.username",
        ),
        (
            user("robert'); DROP TABLE users;--", "a@example.com", "A", r3),
            "user.username",
        ),
        (user("ok1", "", "A", r3), "user.email"),
        (user("ok1", "not-an-email", "A", r3), "user.email"),
        (
            user("ok1", "a@example.com\r\nBcc: x@y.z", "A", r3),
            "user.email",
        ),
        (user("ok1", "a@example.com", "", r3), "user.display_name"),
        (
            user("ok1", "a@example.com", "bad\u{7}name", r3),
            "user.display_name",
        ),
        (
            user("ok1", "a@example.com", &"n".repeat(201), r3),
            "user.display_name",
        ),
        (user("ok1", "a@example.com", "A", 0), "user.role"),
        (user("ok1", "a@example.com", "A", 99), "user.role"),
    ] {
        expect_invalid(users.create_user(create(u, &ok_pw)).await, field);
    }
    let good = || user("ok1", "a@example.com", "A", r3);
    for pw in [
        "",
        "short",
        "alllowercase1",
        "NoDigitsHere",
        "Password1",
        "Valid-pass\u{1}12",
    ] {
        expect_invalid(
            users.create_user(create(good(), pw)).await,
            "initial_password",
        );
    }
    // Several problems at once are all named.
    let r = users.create_user(create(user("", "", "", 0), "")).await;
    let st = r.unwrap_err();
    let details = tonic_types::StatusExt::get_error_details(&st);
    let fields: Vec<_> = details
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(
        fields,
        [
            "user.username",
            "user.email",
            "user.display_name",
            "user.role",
            "initial_password"
        ]
    );

    // Names
    for bad in [
        "",
        "vic",
        "users/",
        "users/a b",
        "groups/1",
        "users/../../etc",
    ] {
        let r = users
            .get_user(authed(pb::GetUserRequest { name: bad.into() }, &admin))
            .await;
        expect_invalid(r, "name");
        let r = users
            .deactivate_user(authed(
                pb::DeactivateUserRequest {
                    name: bad.into(),
                    etag: String::new(),
                },
                &admin,
            ))
            .await;
        expect_invalid(r, "name");
        let r = users
            .reactivate_user(authed(
                pb::ReactivateUserRequest {
                    name: bad.into(),
                    etag: String::new(),
                },
                &admin,
            ))
            .await;
        expect_invalid(r, "name");
        let r = users
            .delete_user(authed(
                pb::DeleteUserRequest {
                    name: bad.into(),
                    etag: String::new(),
                },
                &admin,
            ))
            .await;
        expect_invalid(r, "name");
    }

    // ListUsers
    let list = |r: pb::ListUsersRequest| authed(r, &admin);
    expect_invalid(
        users
            .list_users(list(pb::ListUsersRequest {
                page_size: -1,
                ..Default::default()
            }))
            .await,
        "page_size",
    );
    expect_invalid(
        users
            .list_users(list(pb::ListUsersRequest {
                page_token: "garbage!".into(),
                ..Default::default()
            }))
            .await,
        "page_token",
    );
    expect_invalid(
        users
            .list_users(list(pb::ListUsersRequest {
                page_token: "e30".into(),
                ..Default::default()
            }))
            .await,
        "page_token",
    );
    expect_invalid(
        users
            .list_users(list(pb::ListUsersRequest {
                role: 42,
                ..Default::default()
            }))
            .await,
        "role",
    );
    expect_invalid(
        users
            .list_users(list(pb::ListUsersRequest {
                query: "q".repeat(201),
                ..Default::default()
            }))
            .await,
        "query",
    );
    // A huge page size is clamped, not refused.
    users
        .list_users(list(pb::ListUsersRequest {
            page_size: i32::MAX,
            ..Default::default()
        }))
        .await
        .unwrap();

    // UpdateUser
    let upd = |u: Option<pb::User>, paths: &[&str]| {
        authed(
            pb::UpdateUserRequest {
                user: u,
                update_mask: Some(FieldMask {
                    paths: paths.iter().map(|p| p.to_string()).collect(),
                }),
            },
            &admin,
        )
    };
    let with = |f: fn(&mut pb::User)| {
        let mut u = pb::User {
            name: target.name.clone(),
            ..Default::default()
        };
        f(&mut u);
        Some(u)
    };
    expect_invalid(users.update_user(upd(None, &["email"])).await, "user");
    expect_invalid(
        users.update_user(upd(with(|_| {}), &[])).await,
        "update_mask",
    );
    expect_invalid(
        users.update_user(upd(with(|_| {}), &["username"])).await,
        "update_mask",
    );
    expect_invalid(
        users.update_user(upd(with(|_| {}), &["active"])).await,
        "update_mask",
    );
    expect_invalid(
        users
            .update_user(upd(with(|u| u.email = "bad".into()), &["email"]))
            .await,
        "user.email",
    );
    expect_invalid(
        users.update_user(upd(with(|_| {}), &["role"])).await,
        "user.role",
    );
    expect_invalid(
        users
            .update_user(upd(with(|u| u.role = 7), &["role"]))
            .await,
        "user.role",
    );
    expect_invalid(
        users
            .update_user(upd(with(|_| {}), &["display_name"]))
            .await,
        "user.display_name",
    );
    expect_invalid(
        users
            .update_user(upd(Some(pb::User::default()), &["display_name"]))
            .await,
        "user.display_name",
    );

    // Metadata
    let mut r = authed(pb::WhoAmIRequest {}, &admin);
    r.metadata_mut()
        .insert("x-fluxgate-min-revision", "soon".parse().unwrap());
    expect_invalid(auth.who_am_i(r).await, "x-fluxgate-min-revision");

    assert_eq!(fingerprint(&s), before, "refused calls changed nothing");
}

crate::both_backends!(every_rpc_validates_its_input);
