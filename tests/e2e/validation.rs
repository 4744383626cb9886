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
            ..Default::default()
        })
        .await,
        "username",
    );
    expect_invalid(
        auth.login(pb::LoginRequest {
            username: "vic".into(),
            password: String::new(),
            ..Default::default()
        })
        .await,
        "password",
    );
    expect_invalid(
        auth.login(pb::LoginRequest {
            username: long.clone(),
            password: ok_pw.clone(),
            ..Default::default()
        })
        .await,
        "username",
    );
    expect_invalid(
        auth.login(pb::LoginRequest {
            username: "vic".into(),
            password: long.clone(),
            ..Default::default()
        })
        .await,
        "password",
    );
    expect_invalid(
        auth.login(pb::LoginRequest {
            username: "a\u{0}b".into(),
            password: ok_pw.clone(),
            ..Default::default()
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
    let r = users
        .create_user(create(user("", "", "", 0), "short"))
        .await;
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
                reason: String::new(),
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

async fn access_model_rpcs_validate_their_input(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let shop = s.portfolio(&admin, "Shop").await;
    let other = s.portfolio(&admin, "Other").await;
    let web = s.application(&admin, &shop.name, "web").await;
    let dev = s.environment(&admin, &web.name, "dev").await;
    let foreign_app = s.application(&admin, &other.name, "api").await;
    let foreign_env = s.environment(&admin, &foreign_app.name, "prod").await;
    let group = s.group(&admin, &shop.name, "Devs", vec![], vec![]).await;
    let before = fingerprint(&s);
    let (mut cat, mut groups, mut sas, mut perms) = (
        s.catalog(),
        s.groups(),
        s.service_accounts(),
        s.permissions(),
    );
    macro_rules! a {
        ($m:expr) => {
            authed($m, &admin)
        };
    }

    // Catalog
    expect_invalid(
        cat.create_portfolio(a!(pb::CreatePortfolioRequest { portfolio: None }))
            .await,
        "portfolio",
    );
    for bad in ["", "   ", "x\u{1}y", &"p".repeat(101)] {
        let r = cat
            .create_portfolio(a!(pb::CreatePortfolioRequest {
                portfolio: Some(pb::Portfolio {
                    display_name: bad.into(),
                    ..Default::default()
                })
            }))
            .await;
        expect_invalid(r, "portfolio.display_name");
    }
    let r = cat
        .create_portfolio(a!(pb::CreatePortfolioRequest {
            portfolio: Some(pb::Portfolio {
                display_name: "ok".into(),
                description: "d".repeat(1001),
                ..Default::default()
            })
        }))
        .await;
    expect_invalid(r, "portfolio.description");
    for bad in [
        "",
        "portfolios",
        "portfolios/x",
        "apps/1",
        "portfolios/0190a5b2-7c1d-7e3f-8a9b-123456789abc/extra",
    ] {
        expect_invalid(
            cat.get_portfolio(a!(pb::GetPortfolioRequest { name: bad.into() }))
                .await,
            "name",
        );
        expect_invalid(
            cat.delete_portfolio(a!(pb::DeletePortfolioRequest {
                name: bad.into(),
                ..Default::default()
            }))
            .await,
            "name",
        );
        let r = cat
            .create_application(a!(pb::CreateApplicationRequest {
                parent: bad.into(),
                application: Some(pb::Application {
                    display_name: "x".into(),
                    ..Default::default()
                })
            }))
            .await;
        expect_invalid(r, "parent");
        expect_invalid(
            cat.list_applications(a!(pb::ListApplicationsRequest {
                parent: bad.into(),
                ..Default::default()
            }))
            .await,
            "parent",
        );
        expect_invalid(
            cat.get_environment(a!(pb::GetEnvironmentRequest { name: bad.into() }))
                .await,
            "name",
        );
    }
    expect_invalid(
        cat.list_portfolios(a!(pb::ListPortfoliosRequest {
            page_size: -5,
            ..Default::default()
        }))
        .await,
        "page_size",
    );
    expect_invalid(
        cat.list_portfolios(a!(pb::ListPortfoliosRequest {
            page_token: "%%%".into(),
            ..Default::default()
        }))
        .await,
        "page_token",
    );
    let r = cat
        .update_application(a!(pb::UpdateApplicationRequest {
            application: Some(pb::Application {
                name: web.name.clone(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["name".into()]
            })
        }))
        .await;
    expect_invalid(r, "update_mask");
    let r = cat
        .update_environment(a!(pb::UpdateEnvironmentRequest {
            environment: Some(pb::Environment {
                name: dev.name.clone(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["display_name".into()]
            })
        }))
        .await;
    expect_invalid(r, "environment.display_name");

    // Groups
    let g = |name: &str, apps: Vec<pb::ApplicationGrant>, envs: Vec<pb::EnvironmentGrant>| {
        a!(pb::CreateGroupRequest {
            parent: shop.name.clone(),
            group: Some(pb::Group {
                display_name: name.into(),
                application_grants: apps,
                environment_grants: envs,
                ..Default::default()
            })
        })
    };
    let eg = |e: &str, p: Vec<i32>| pb::EnvironmentGrant {
        environment: e.into(),
        permissions: p,
    };
    let ag = |app: &str, p: i32| pb::ApplicationGrant {
        application: app.into(),
        feature_permission: p,
    };
    expect_invalid(
        groups.create_group(g("", vec![], vec![])).await,
        "group.display_name",
    );
    expect_invalid(
        groups
            .create_group(g("x", vec![ag(&web.name, 0)], vec![]))
            .await,
        "group.application_grants[0].feature_permission",
    );
    expect_invalid(
        groups
            .create_group(g("x", vec![ag(&web.name, 9)], vec![]))
            .await,
        "group.application_grants[0].feature_permission",
    );
    expect_invalid(
        groups
            .create_group(g("x", vec![ag("nope", 1)], vec![]))
            .await,
        "group.application_grants[0].application",
    );
    expect_invalid(
        groups
            .create_group(g("x", vec![ag(&web.name, 1), ag(&web.name, 2)], vec![]))
            .await,
        "group.application_grants[1].application",
    );
    expect_invalid(
        groups
            .create_group(g("x", vec![ag(&foreign_app.name, 1)], vec![]))
            .await,
        "group.application_grants[0].application",
    );
    expect_invalid(
        groups
            .create_group(g("x", vec![], vec![eg(&dev.name, vec![])]))
            .await,
        "group.environment_grants[0].permissions",
    );
    expect_invalid(
        groups
            .create_group(g("x", vec![], vec![eg(&dev.name, vec![0])]))
            .await,
        "group.environment_grants[0].permissions",
    );
    expect_invalid(
        groups
            .create_group(g("x", vec![], vec![eg(&dev.name, vec![77])]))
            .await,
        "group.environment_grants[0].permissions",
    );
    expect_invalid(
        groups
            .create_group(g("x", vec![], vec![eg(&web.name, vec![1])]))
            .await,
        "group.environment_grants[0].environment",
    );
    expect_invalid(
        groups
            .create_group(g("x", vec![], vec![eg(&foreign_env.name, vec![1])]))
            .await,
        "group.environment_grants[0].environment",
    );
    for bad in [
        "",
        "bob",
        "users/",
        "users/a b",
        "serviceAccounts/x",
        "groups/1",
    ] {
        let r = groups
            .add_group_member(a!(pb::AddGroupMemberRequest {
                reason: String::new(),
                group: group.name.clone(),
                member: bad.into()
            }))
            .await;
        expect_invalid(r, "member");
    }
    expect_invalid(
        groups
            .add_group_member(a!(pb::AddGroupMemberRequest {
                reason: String::new(),
                group: "x".into(),
                member: "users/admin".into()
            }))
            .await,
        "group",
    );
    expect_invalid(
        groups
            .list_groups(a!(pb::ListGroupsRequest {
                parent: "portfolios".into(),
                ..Default::default()
            }))
            .await,
        "parent",
    );
    expect_invalid(
        groups
            .list_groups(a!(pb::ListGroupsRequest {
                parent: "portfolios/-".into(),
                member: "nobody".into(),
                ..Default::default()
            }))
            .await,
        "member",
    );
    let r = groups
        .update_group(a!(pb::UpdateGroupRequest {
            group: Some(pb::Group {
                name: group.name.clone(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["administrators".into()]
            })
        }))
        .await;
    expect_invalid(r, "update_mask");

    // Service accounts
    let sa = |name: &str, portfolio: &str, role: i32| {
        a!(pb::CreateServiceAccountRequest {
            service_account: Some(pb::ServiceAccount {
                display_name: name.into(),
                portfolio: portfolio.into(),
                role,
                ..Default::default()
            })
        })
    };
    expect_invalid(
        sas.create_service_account(a!(pb::CreateServiceAccountRequest {
            service_account: None
        }))
        .await,
        "service_account",
    );
    expect_invalid(
        sas.create_service_account(sa("", "", 0)).await,
        "service_account.display_name",
    );
    expect_invalid(
        sas.create_service_account(sa("ci", "", 42)).await,
        "service_account.role",
    );
    expect_invalid(
        sas.create_service_account(sa("ci", "shop", 0)).await,
        "service_account.portfolio",
    );
    expect_invalid(
        sas.create_service_account(sa("ci", &shop.name, pb::Role::Approver as i32))
            .await,
        "service_account.role",
    );
    expect_invalid(
        sas.get_service_account(a!(pb::GetServiceAccountRequest {
            name: "serviceAccounts/nope".into()
        }))
        .await,
        "name",
    );
    expect_invalid(
        sas.create_service_account_key(a!(pb::CreateServiceAccountKeyRequest {
            parent: String::new(),
            key: None
        }))
        .await,
        "parent",
    );
    let past = Some(prost_types::Timestamp {
        seconds: 1,
        nanos: 0,
    });
    let r = sas
        .create_service_account_key(a!(pb::CreateServiceAccountKeyRequest {
            parent: "serviceAccounts/0190a5b2-7c1d-7e3f-8a9b-123456789abc".into(),
            key: Some(pb::ServiceAccountKey {
                expire_time: past,
                ..Default::default()
            }),
        }))
        .await;
    expect_invalid(r, "key.expire_time");
    let r = sas
        .rotate_service_account_key(a!(pb::RotateServiceAccountKeyRequest {
            name: "serviceAccounts/0190a5b2-7c1d-7e3f-8a9b-123456789abc/keys/0190a5b2-7c1d-7e3f-8a9b-123456789abd".into(),
            grace_period: Some(prost_types::Duration { seconds: 8 * 86_400, nanos: 0 }),
        }))
        .await;
    expect_invalid(r, "grace_period");
    expect_invalid(
        sas.revoke_service_account_key(a!(pb::RevokeServiceAccountKeyRequest {
            name: "keys/1".into()
        }))
        .await,
        "name",
    );

    // Permissions
    let chk = |perm: i32, res: &str, who: &str| pb::PermissionCheck {
        principal: who.into(),
        permission: perm,
        resource: res.into(),
    };
    expect_invalid(
        perms
            .check_permission(a!(pb::CheckPermissionRequest {
                check: None,
                min_revision: 0
            }))
            .await,
        "check",
    );
    expect_invalid(
        perms
            .check_permission(a!(pb::CheckPermissionRequest {
                check: Some(chk(0, &dev.name, "")),
                min_revision: 0
            }))
            .await,
        "check.permission",
    );
    expect_invalid(
        perms
            .check_permission(a!(pb::CheckPermissionRequest {
                check: Some(chk(99, &dev.name, "")),
                min_revision: 0
            }))
            .await,
        "check.permission",
    );
    expect_invalid(
        perms
            .check_permission(a!(pb::CheckPermissionRequest {
                check: Some(chk(1, &web.name, "")),
                min_revision: 0
            }))
            .await,
        "check.resource",
    );
    expect_invalid(
        perms
            .check_permission(a!(pb::CheckPermissionRequest {
                check: Some(chk(1, "envs/x", "")),
                min_revision: 0
            }))
            .await,
        "check.resource",
    );
    // Names one pass of the parser must refuse whole: empty, a trailing slash, an
    // environment's shape with a bad id, a pair too many, an empty segment.
    let bad_env = dev.name.rsplit_once('/').unwrap().0.to_owned() + "/not-a-uuid";
    for name in [
        String::new(),
        format!("{}/", dev.name),
        format!("{}/", web.name),
        bad_env,
        format!("{}/flags/x", dev.name),
        web.name.replacen("/applications", "//applications", 1),
    ] {
        expect_invalid(
            perms
                .check_permission(a!(pb::CheckPermissionRequest {
                    check: Some(chk(1, &name, "")),
                    min_revision: 0
                }))
                .await,
            "check.resource",
        );
    }
    expect_invalid(
        perms
            .check_permission(a!(pb::CheckPermissionRequest {
                check: Some(chk(1, &dev.name, "robert')--")),
                min_revision: 0
            }))
            .await,
        "check.principal",
    );
    expect_invalid(
        perms
            .check_permission(a!(pb::CheckPermissionRequest {
                check: Some(chk(1, &dev.name, "")),
                min_revision: -1
            }))
            .await,
        "min_revision",
    );
    expect_invalid(
        perms
            .check_permission(a!(pb::CheckPermissionRequest {
                check: Some(chk(1, &dev.name, "")),
                min_revision: i64::MAX
            }))
            .await,
        "min_revision",
    );
    expect_invalid(
        perms
            .batch_check_permissions(a!(pb::BatchCheckPermissionsRequest {
                checks: vec![],
                min_revision: 0
            }))
            .await,
        "checks",
    );
    let many = vec![chk(1, &dev.name, ""); 1001];
    expect_invalid(
        perms
            .batch_check_permissions(a!(pb::BatchCheckPermissionsRequest {
                checks: many,
                min_revision: 0
            }))
            .await,
        "checks",
    );
    let mixed = vec![chk(1, &dev.name, ""), chk(0, &dev.name, "")];
    expect_invalid(
        perms
            .batch_check_permissions(a!(pb::BatchCheckPermissionsRequest {
                checks: mixed,
                min_revision: 0
            }))
            .await,
        "checks[1].permission",
    );
    let r = perms
        .lookup_resources(a!(pb::LookupResourcesRequest {
            principal: String::new(),
            permission: 1,
            parent: shop.name.clone(),
            min_revision: 0
        }))
        .await;
    expect_invalid(r, "parent");
    let r = perms
        .lookup_principals(a!(pb::LookupPrincipalsRequest {
            permission: 1,
            resource: dev.name.clone(),
            min_role: 17,
            min_revision: 0
        }))
        .await;
    expect_invalid(r, "min_role");

    assert_eq!(fingerprint(&s), before, "refused calls changed nothing");
}

/// The review's finding: a 1 MB etag came back inside an ~875 KB ABORTED message, which clients
/// refuse (they saw RESOURCE_EXHAUSTED). Every message is clipped, in one place.
async fn echoed_input_is_clipped(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let u = s
        .create_user(&admin, "rita", pb::Role::Requester, "Someone-pw-123")
        .await;
    let huge = format!("W/\"{}\"", "9".repeat(900_000));
    let st = s
        .users()
        .update_user(authed(
            pb::UpdateUserRequest {
                reason: String::new(),
                user: Some(pb::User {
                    name: u.name.clone(),
                    display_name: "Rita R".into(),
                    etag: huge.clone(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["display_name".into()],
                }),
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(
            st.code(),
            tonic::Code::Aborted | tonic::Code::InvalidArgument
        ),
        "{:?}",
        st.code()
    );
    assert!(st.message().len() < 2048, "{} bytes", st.message().len());
    let name = format!("users/{}", "x".repeat(900_000));
    let st = s
        .users()
        .get_user(authed(pb::GetUserRequest { name }, &admin))
        .await
        .unwrap_err();
    assert_ne!(st.code(), tonic::Code::ResourceExhausted);
    assert!(st.message().len() < 2048, "{} bytes", st.message().len());
}

/// The review's finding: a ~16 KB header got HTTP 431 (clients saw UNKNOWN), a 64 KiB one a
/// GOAWAY that ended the connection's other calls. Oversized metadata is refused for that call
/// alone with a gRPC status; the connection goes on.
async fn oversized_metadata_is_refused_per_call(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    // One connection for everything below.
    let mut users = s.users();
    let call = |extra: usize| {
        let mut r = authed(pb::ListUsersRequest::default(), &admin);
        if extra > 0 {
            r.metadata_mut()
                .insert("x-padding", "p".repeat(extra).parse().unwrap());
        }
        r
    };
    let before = users.list_users(call(0)).await.unwrap();
    assert!(!before.into_inner().users.is_empty());
    for size in [20 * 1024, 64 * 1024, 200 * 1024] {
        let st = users.list_users(call(size)).await.unwrap_err();
        assert_eq!(st.code(), tonic::Code::ResourceExhausted, "{size}: {st:?}");
        assert!(st.message().contains("the limit is 16384"), "{st:?}");
        // The same connection still serves the next call.
        users.list_users(call(0)).await.unwrap();
    }
    // Metadata under the limit is fine.
    users.list_users(call(8 * 1024)).await.unwrap();
}

crate::both_backends!(
    oversized_metadata_is_refused_per_call,
    echoed_input_is_clipped,
    every_rpc_validates_its_input,
    access_model_rpcs_validate_their_input
);
