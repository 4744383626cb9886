//! The user lifecycle and its role rules.

use fluxgate_proto::v1 as pb;
use prost_types::FieldMask;
use tonic::Code;

use crate::harness::*;

const PW: &str = "Someone-pw-123";

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

async fn lifecycle_create_get_update_deactivate_reactivate_delete(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let mut users = s.users();
    let u = s.create_user(&admin, "dora", pb::Role::Requester, PW).await;
    assert!(u.name.starts_with("users/"));
    assert!(u.active && !u.must_change_password);
    assert_eq!(u.email, "dora@example.com");

    // Get by id and by username.
    let by_id = users
        .get_user(authed(
            pb::GetUserRequest {
                name: u.name.clone(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let by_name = users
        .get_user(authed(
            pb::GetUserRequest {
                name: "users/dora".into(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_id.user, by_name.user);

    // Update with the etag; a stale etag is refused with ABORTED.
    let updated = users
        .update_user(authed(
            pb::UpdateUserRequest {
                reason: String::new(),
                user: Some(pb::User {
                    name: u.name.clone(),
                    email: "Dora.New@Example.com".into(),
                    display_name: "Dora Explorer".into(),
                    role: pb::Role::Approver as i32,
                    etag: u.etag.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&["email", "display_name", "role"]),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(updated.email, "dora.new@example.com");
    assert_eq!(updated.display_name, "Dora Explorer");
    assert_eq!(updated.role, pb::Role::Approver as i32);
    assert_ne!(updated.etag, u.etag);
    let r = users
        .update_user(authed(
            pb::UpdateUserRequest {
                reason: String::new(),
                user: Some(pb::User {
                    name: u.name.clone(),
                    display_name: "Lost".into(),
                    etag: u.etag.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&["display_name"]),
            },
            &admin,
        ))
        .await;
    expect_code(r, Code::Aborted);
    // Only masked fields change.
    let only_name = users
        .update_user(authed(
            pb::UpdateUserRequest {
                reason: String::new(),
                user: Some(pb::User {
                    name: u.name.clone(),
                    display_name: "Dora E.".into(),
                    email: "ignored@example.com".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["display_name"]),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(only_name.email, "dora.new@example.com");

    // Delete only after deactivation.
    let del = |etag: String| {
        let mut c = s.users();
        let r = authed(
            pb::DeleteUserRequest {
                name: u.name.clone(),
                etag,
            },
            &admin,
        );
        async move { c.delete_user(r).await }
    };
    expect_code(del(String::new()).await, Code::FailedPrecondition);
    let d = users
        .deactivate_user(authed(
            pb::DeactivateUserRequest {
                name: u.name.clone(),
                etag: String::new(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert!(!d.active);
    expect_code(
        users
            .deactivate_user(authed(
                pb::DeactivateUserRequest {
                    name: u.name.clone(),
                    etag: String::new(),
                },
                &admin,
            ))
            .await,
        Code::FailedPrecondition,
    );
    expect_code(
        s.auth()
            .login(pb::LoginRequest {
                username: "dora".into(),
                password: PW.into(),
                ..Default::default()
            })
            .await,
        Code::Unauthenticated,
    );
    let r = users
        .reactivate_user(authed(
            pb::ReactivateUserRequest {
                name: u.name.clone(),
                etag: d.etag.clone(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert!(r.active);
    s.login("dora", PW).await; // previous credentials work again
    users
        .deactivate_user(authed(
            pb::DeactivateUserRequest {
                name: u.name.clone(),
                etag: r.etag.clone(),
            },
            &admin,
        ))
        .await
        .unwrap();
    del(String::new()).await.unwrap();
    expect_code(
        users
            .get_user(authed(
                pb::GetUserRequest {
                    name: u.name.clone(),
                },
                &admin,
            ))
            .await,
        Code::NotFound,
    );

    // Every change was audited once, and the history survives the deletion.
    let actions: Vec<String> = s
        .audit_events()
        .into_iter()
        .filter(|e| {
            e.target_id.as_deref() == Some(u.name.as_str())
                && e.actor_name.as_deref() == Some("admin")
        })
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions,
        [
            "user.created",
            "user.updated",
            "user.updated",
            "user.deactivated",
            "user.reactivated",
            "user.deactivated",
            "user.deleted"
        ]
    );
    let chain = s.store().read(fluxgate_store::audit::verify).unwrap();
    assert_eq!(chain, None, "audit chain verifies");
}

async fn duplicates_are_refused(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    s.create_user(&admin, "eve", pb::Role::Requester, PW).await;
    let mut users = s.users();
    let mk = |username: &str, email: &str| {
        authed(
            pb::CreateUserRequest {
                user: Some(pb::User {
                    username: username.into(),
                    email: email.into(),
                    display_name: "X".into(),
                    role: pb::Role::Requester as i32,
                    ..Default::default()
                }),
                initial_password: PW.into(),
                require_password_change: false,
            },
            &admin,
        )
    };
    let st = expect_code(
        users.create_user(mk("EVE", "other@example.com")).await,
        Code::AlreadyExists,
    );
    assert!(st.message().contains("username"), "{st:?}");
    let st = expect_code(
        users.create_user(mk("eve2", "Eve@Example.com")).await,
        Code::AlreadyExists,
    );
    assert!(st.message().contains("email"), "{st:?}");
}

async fn listing_filters_searches_and_pages(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    for i in 0..7 {
        let role = if i % 2 == 0 {
            pb::Role::Requester
        } else {
            pb::Role::Approver
        };
        s.create_user(&admin, &format!("user{i}"), role, PW).await;
    }
    let mut users = s.users();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = users
            .list_users(authed(
                pb::ListUsersRequest {
                    page_size: 3,
                    page_token: token.clone(),
                    ..Default::default()
                },
                &admin,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.users.len() <= 3);
        seen.extend(page.users.into_iter().map(|u| u.username));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut expected: Vec<String> = (0..7).map(|i| format!("user{i}")).collect();
    expected.insert(0, "admin".into());
    assert_eq!(seen, expected);

    let approvers = users
        .list_users(authed(
            pb::ListUsersRequest {
                role: pb::Role::Approver as i32,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(approvers.users.len(), 3);
    let search = users
        .list_users(authed(
            pb::ListUsersRequest {
                query: "USER3@EXAMPLE".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        search
            .users
            .iter()
            .map(|u| u.username.as_str())
            .collect::<Vec<_>>(),
        ["user3"]
    );

    users
        .deactivate_user(authed(
            pb::DeactivateUserRequest {
                name: "users/user1".into(),
                etag: String::new(),
            },
            &admin,
        ))
        .await
        .unwrap();
    let inactive = users
        .list_users(authed(
            pb::ListUsersRequest {
                active: Some(false),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        inactive
            .users
            .iter()
            .map(|u| u.username.as_str())
            .collect::<Vec<_>>(),
        ["user1"]
    );

    // A page token is bound to the filters it was issued with.
    let first = users
        .list_users(authed(
            pb::ListUsersRequest {
                page_size: 1,
                role: pb::Role::Requester as i32,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let r = users
        .list_users(authed(
            pb::ListUsersRequest {
                page_size: 1,
                page_token: first.next_page_token,
                ..Default::default()
            },
            &admin,
        ))
        .await;
    expect_invalid(r, "page_token");
}

async fn team_admin_rules_protect_the_org(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let me = s
        .auth()
        .who_am_i(authed(pb::WhoAmIRequest {}, &admin))
        .await
        .unwrap()
        .into_inner()
        .principal;
    let mut users = s.users();
    // No self-deactivation, self-deletion or self-demotion.
    let st = expect_code(
        users
            .deactivate_user(authed(
                pb::DeactivateUserRequest {
                    name: me.clone(),
                    etag: String::new(),
                },
                &admin,
            ))
            .await,
        Code::PermissionDenied,
    );
    assert!(st.message().contains("own account"), "{st:?}");
    expect_code(
        users
            .delete_user(authed(
                pb::DeleteUserRequest {
                    name: me.clone(),
                    etag: String::new(),
                },
                &admin,
            ))
            .await,
        Code::PermissionDenied,
    );
    let set_role = |name: String, role: pb::Role, token: String| {
        let mut u = s.users();
        async move {
            u.update_user(authed(
                pb::UpdateUserRequest {
                    reason: String::new(),
                    user: Some(pb::User {
                        name,
                        role: role as i32,
                        ..Default::default()
                    }),
                    update_mask: mask(&["role"]),
                },
                &token,
            ))
            .await
        }
    };
    expect_code(
        set_role(me.clone(), pb::Role::Approver, admin.clone()).await,
        Code::PermissionDenied,
    );

    // A second Team Admin may demote and deactivate the first; the first loses its rights on
    // its very next request.
    s.create_user(&admin, "ada", pb::Role::TeamAdmin, PW).await;
    let ada = s.login("ada", PW).await.tokens.unwrap().access_token;
    set_role(me.clone(), pb::Role::Approver, ada.clone())
        .await
        .unwrap();
    expect_code(
        users
            .list_users(authed(pb::ListUsersRequest::default(), &admin))
            .await,
        Code::PermissionDenied,
    );
    set_role(me.clone(), pb::Role::TeamAdmin, ada.clone())
        .await
        .unwrap();
    users
        .list_users(authed(pb::ListUsersRequest::default(), &admin))
        .await
        .unwrap();
    users
        .deactivate_user(authed(
            pb::DeactivateUserRequest {
                name: me.clone(),
                etag: String::new(),
            },
            &ada,
        ))
        .await
        .unwrap();
    expect_code(
        s.auth()
            .who_am_i(authed(pb::WhoAmIRequest {}, &admin))
            .await,
        Code::Unauthenticated,
    );
    // ada is now the only active Team Admin and cannot leave the org without one.
    let st = expect_code(
        users
            .deactivate_user(authed(
                pb::DeactivateUserRequest {
                    name: "users/ada".into(),
                    etag: String::new(),
                },
                &ada,
            ))
            .await,
        Code::PermissionDenied,
    );
    assert!(st.message().contains("own account"), "{st:?}");
    let count = s
        .store()
        .read(|c| fluxgate_store::users::count_active_admins(c, None))
        .unwrap();
    assert_eq!(count, 1);
}

async fn non_admins_are_refused_user_management(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let target = s.create_user(&admin, "tara", pb::Role::Requester, PW).await;
    for (name, role) in [("req", pb::Role::Requester), ("appr", pb::Role::Approver)] {
        s.create_user(&admin, name, role, PW).await;
        let t = s.login(name, PW).await.tokens.unwrap().access_token;
        let mut u = s.users();
        let before = s.audit_count();
        expect_code(
            u.list_users(authed(pb::ListUsersRequest::default(), &t))
                .await,
            Code::PermissionDenied,
        );
        expect_code(
            u.get_user(authed(
                pb::GetUserRequest {
                    name: target.name.clone(),
                },
                &t,
            ))
            .await,
            Code::PermissionDenied,
        );
        // Probing for a username that does not exist says the same.
        expect_code(
            u.get_user(authed(
                pb::GetUserRequest {
                    name: "users/nobody".into(),
                },
                &t,
            ))
            .await,
            Code::PermissionDenied,
        );
        expect_code(
            u.update_user(authed(
                pb::UpdateUserRequest {
                    reason: String::new(),
                    user: Some(pb::User {
                        name: target.name.clone(),
                        display_name: "x".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["display_name"]),
                },
                &t,
            ))
            .await,
            Code::PermissionDenied,
        );
        expect_code(
            u.deactivate_user(authed(
                pb::DeactivateUserRequest {
                    name: target.name.clone(),
                    etag: String::new(),
                },
                &t,
            ))
            .await,
            Code::PermissionDenied,
        );
        expect_code(
            u.reactivate_user(authed(
                pb::ReactivateUserRequest {
                    name: target.name.clone(),
                    etag: String::new(),
                },
                &t,
            ))
            .await,
            Code::PermissionDenied,
        );
        expect_code(
            u.delete_user(authed(
                pb::DeleteUserRequest {
                    name: target.name.clone(),
                    etag: String::new(),
                },
                &t,
            ))
            .await,
            Code::PermissionDenied,
        );
        // But everyone may read themselves.
        let me = s
            .auth()
            .who_am_i(authed(pb::WhoAmIRequest {}, &t))
            .await
            .unwrap()
            .into_inner();
        u.get_user(authed(pb::GetUserRequest { name: me.principal }, &t))
            .await
            .unwrap();
        assert_eq!(s.audit_count(), before, "refused calls write nothing");
    }
    // Unauthenticated callers get UNAUTHENTICATED.
    expect_code(
        s.users().list_users(pb::ListUsersRequest::default()).await,
        Code::Unauthenticated,
    );
}

async fn concurrent_last_admin_demotions_leave_one_admin(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let me = s
        .auth()
        .who_am_i(authed(pb::WhoAmIRequest {}, &admin))
        .await
        .unwrap()
        .into_inner()
        .principal;
    let other = s.create_user(&admin, "zed", pb::Role::TeamAdmin, PW).await;
    let zed = s.login("zed", PW).await.tokens.unwrap().access_token;
    // Each demotes the other at the same moment: at most one may succeed.
    let call = |name: String, token: String| {
        let mut u = s.users();
        async move {
            u.update_user(authed(
                pb::UpdateUserRequest {
                    reason: String::new(),
                    user: Some(pb::User {
                        name,
                        role: pb::Role::Requester as i32,
                        ..Default::default()
                    }),
                    update_mask: mask(&["role"]),
                },
                &token,
            ))
            .await
        }
    };
    let (a, b2) = tokio::join!(
        call(other.name.clone(), admin.clone()),
        call(me.clone(), zed.clone())
    );
    assert!(a.is_ok() || b2.is_ok());
    let count = s
        .store()
        .read(|c| fluxgate_store::users::count_active_admins(c, None))
        .unwrap();
    assert_eq!(count, 1, "exactly one Team Admin remains: {a:?} {b2:?}");
}

fn new_user(email: &str, name: &str) -> pb::CreateUserRequest {
    pb::CreateUserRequest {
        user: Some(pb::User {
            username: String::new(),
            email: email.into(),
            display_name: name.into(),
            role: pb::Role::Requester as i32,
            ..Default::default()
        }),
        initial_password: PW.into(),
        require_password_change: false,
    }
}

/// The review's findings: `josé` in NFC and in NFD were two accounts (and racing the two
/// spellings made two); zero-width and bidi characters were accepted in emails and names; a
/// group could be named like the Administrators group. One spelling is stored (NFC, lower case),
/// invisible and text-direction characters are refused, and look-alikes of Administrators too.
async fn one_spelling_per_identity(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let (nfc, nfd) = ("jos\u{e9}@example.com", "jose\u{301}@example.com");
    let create = |username: &str, email: &str| {
        let mut r = new_user(email, "José");
        r.user.as_mut().unwrap().username = username.into();
        let mut users = s.users();
        let admin = admin.clone();
        async move { users.create_user(authed(r, &admin)).await }
    };
    let first = create("jose1", nfc)
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(first.email, nfc);
    let st = expect_code(create("jose2", nfd).await, Code::AlreadyExists);
    assert!(st.message().contains("email"), "{st:?}");
    // The NFD spelling signs in to the NFC account.
    let l = s
        .auth()
        .login(pb::LoginRequest {
            username: nfd.into(),
            password: PW.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.user.unwrap().name, first.name);
    // Racing the two spellings of a new address: one account.
    for round in 0..5 {
        let a = format!("ren{round}\u{e9}@example.com");
        let b = format!("ren{round}e\u{301}@example.com");
        let (x, y) = tokio::join!(
            create(&format!("racer{round}a"), &a),
            create(&format!("racer{round}b"), &b)
        );
        assert_eq!(
            [x.is_ok(), y.is_ok()].iter().filter(|ok| **ok).count(),
            1,
            "round {round}: {x:?} {y:?}"
        );
    }

    // Invisible and text-direction characters.
    for (email, name) in [
        ("zero\u{200b}width@example.com", "Ok Name"),
        ("rlo\u{202e}moc.evil@example.com", "Ok Name"),
        ("fine@example.com", "Mallory\u{202e}nimdA"),
        ("fine2@example.com", "Ad\u{200d}min"),
    ] {
        let r = create(&format!("u{}", email.len()), email).await;
        let r = if name == "Ok Name" {
            r
        } else {
            let mut req = new_user(email, name);
            req.user.as_mut().unwrap().username = "fine".into();
            s.users().create_user(authed(req, &admin)).await
        };
        let field = if name == "Ok Name" {
            "user.email"
        } else {
            "user.display_name"
        };
        expect_invalid(r, field);
    }

    // Look-alikes of the Administrators group.
    let p = s.portfolio(&admin, "Shop").await;
    let group = |name: &str| {
        let mut groups = s.groups();
        let req = pb::CreateGroupRequest {
            parent: p.name.clone(),
            group: Some(pb::Group {
                display_name: name.into(),
                ..Default::default()
            }),
        };
        let admin = admin.clone();
        async move { groups.create_group(authed(req, &admin)).await }
    };
    for fake in [
        "Administrators\u{200b}",
        "\u{410}dministrators",
        "Adm\u{456}nistrators",
        "AdministratorS\u{feff}",
    ] {
        expect_invalid(group(fake).await, "group.display_name");
    }
    expect_code(group("administrators").await, Code::AlreadyExists);
    group("Admins of checkout").await.unwrap();
}

/// The review's finding: etags were bare version counters, so another resource's etag (at the
/// same version) passed for this one's.
async fn an_etag_belongs_to_one_resource(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let a = s.create_user(&admin, "ann", pb::Role::Requester, PW).await;
    let b = s.create_user(&admin, "ben", pb::Role::Requester, PW).await;
    assert_ne!(a.etag, b.etag);
    let update = |etag: &str| pb::UpdateUserRequest {
        reason: String::new(),
        user: Some(pb::User {
            name: b.name.clone(),
            display_name: "Ben B".into(),
            etag: etag.into(),
            ..Default::default()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["display_name".into()],
        }),
    };
    expect_code(
        s.users().update_user(authed(update(&a.etag), &admin)).await,
        Code::Aborted,
    );
    s.users()
        .update_user(authed(update(&b.etag), &admin))
        .await
        .unwrap();
}

/// "Document role assignments and rationale": a role change and a membership change take a
/// reason, which their audit events keep and the audit queries show.
async fn role_and_membership_changes_keep_their_reason(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let u = s.create_user(&admin, "rita", pb::Role::Requester, PW).await;
    s.users()
        .update_user(authed(
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    name: u.name.clone(),
                    role: pb::Role::Approver as i32,
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["role".into()],
                }),
                reason: "covers approvals while Sam is away (TICKET-12)".into(),
            },
            &admin,
        ))
        .await
        .unwrap();
    let p = s.portfolio(&admin, "Shop").await;
    let g = s.group(&admin, &p.name, "Devs", vec![], vec![]).await;
    s.groups()
        .add_group_member(authed(
            pb::AddGroupMemberRequest {
                group: g.name.clone(),
                member: u.name.clone(),
                reason: "joins the checkout team".into(),
            },
            &admin,
        ))
        .await
        .unwrap();
    let events = s.list_audit(&admin, Default::default()).await;
    let detail = |action: &str| {
        events
            .iter()
            .find(|e| e.action == action)
            .map(|e| e.detail.clone())
            .unwrap()
    };
    assert_eq!(
        detail("user.updated"),
        "role requester -> approver; reason: covers approvals while Sam is away (TICKET-12)"
    );
    assert!(detail("group.member_added").ends_with("; reason: joins the checkout team"));
    // A reason is free text, bounded like any description.
    let long = s
        .groups()
        .remove_group_member(authed(
            pb::RemoveGroupMemberRequest {
                group: g.name.clone(),
                member: u.name.clone(),
                reason: "x".repeat(1001),
            },
            &admin,
        ))
        .await;
    expect_invalid(long, "reason");
}

/// "Regular audits: review user list and roles periodically": stale accounts are found by last
/// sign-in ("never", "not seen for N days"), and the list sorts by it.
async fn stale_accounts_are_found_by_last_sign_in(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    for u in ["ann", "bob", "cat", "dan"] {
        s.create_user(&admin, u, pb::Role::Requester, PW).await;
    }
    s.login("dan", PW).await;
    s.login("ann", PW).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let list = |req: pb::ListUsersRequest| {
        let mut users = s.users();
        let admin = admin.clone();
        async move { users.list_users(authed(req, &admin)).await }
    };
    let names =
        |r: pb::ListUsersResponse| r.users.into_iter().map(|u| u.username).collect::<Vec<_>>();
    let never = list(pb::ListUsersRequest {
        never_signed_in: Some(true),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    assert_eq!(names(never), ["bob", "cat"]);
    let stale = list(pb::ListUsersRequest {
        signed_in_before: Some(prost_types::Timestamp {
            seconds: now - 30 * 86_400,
            nanos: 0,
        }),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    assert_eq!(names(stale), ["bob", "cat"], "not seen for 30 days");
    // Least recent sign-in first, never before all, page by page.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let r = list(pb::ListUsersRequest {
            order_by: "last_login_time".into(),
            page_size: 1,
            page_token: token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
        token = r.next_page_token.clone();
        seen.extend(names(r));
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, ["bob", "cat", "admin", "dan", "ann"]);
    expect_invalid(
        list(pb::ListUsersRequest {
            order_by: "email".into(),
            ..Default::default()
        })
        .await,
        "order_by",
    );
}

fn batch_entry(username: &str, email: &str) -> pb::CreateUserRequest {
    pb::CreateUserRequest {
        user: Some(pb::User {
            username: username.into(),
            email: email.into(),
            display_name: format!("Batch {username}"),
            role: pb::Role::Requester as i32,
            ..Default::default()
        }),
        initial_password: String::new(),
        require_password_change: false,
    }
}

/// BatchCreateUsers: every user or none, each as CreateUser would make it.
async fn users_are_created_in_batches(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let mut users = s.users();
    let batch = |requests: Vec<pb::CreateUserRequest>| {
        authed(pb::BatchCreateUsersRequest { requests }, &admin)
    };
    let audit_before = s.audit_count();
    let created = users
        .batch_create_users(batch(
            (0..300)
                .map(|i| batch_entry(&format!("bulk{i:03}"), &format!("bulk{i}@example.com")))
                .collect(),
        ))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(created.len(), 300);
    for (i, c) in created.iter().enumerate() {
        let u = c.user.as_ref().unwrap();
        assert_eq!(
            u.username,
            format!("bulk{i:03}"),
            "in the order of the requests"
        );
        assert!(u.active && u.name.starts_with("users/"));
        let link = c
            .registration_link
            .as_ref()
            .expect("a registration link each");
        assert!(link.url.contains(&link.token));
    }
    assert_eq!(s.audit_count(), audit_before + 300, "an event per user");
    let chain = s
        .audit()
        .verify_audit_chain(authed(pb::VerifyAuditChainRequest {}, &admin))
        .await
        .unwrap()
        .into_inner();
    assert!(chain.valid, "the batch's events chain: {chain:?}");
    // The new users are searchable, and can finish registering and sign in.
    let found = users
        .list_users(authed(
            pb::ListUsersRequest {
                query: "bulk123@".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(found.len(), 1);
    let token = created[7].registration_link.as_ref().unwrap().token.clone();
    s.password_reset()
        .complete_registration(pb::CompleteRegistrationRequest {
            token,
            password: PW.into(),
        })
        .await
        .unwrap();
    s.login("bulk007", PW).await;

    // A username or email twice in one batch is invalid input, named.
    let twice = vec![
        batch_entry("twice", "twice1@example.com"),
        batch_entry("other", "other@example.com"),
        batch_entry("twice", "twice2@example.com"),
    ];
    expect_invalid(
        users.batch_create_users(batch(twice)).await,
        "requests[2].user.username",
    );
    let bad = vec![
        batch_entry("fine", "fine@example.com"),
        batch_entry("x", "not-an-email"),
    ];
    expect_invalid(
        users.batch_create_users(batch(bad)).await,
        "requests[1].user.email",
    );
    expect_invalid(users.batch_create_users(batch(vec![])).await, "requests");
    let too_many = (0..1_001)
        .map(|i| batch_entry(&format!("many{i}"), &format!("many{i}@example.com")))
        .collect();
    expect_invalid(users.batch_create_users(batch(too_many)).await, "requests");

    // One user that exists already: none of the batch is created.
    let audit_before = s.audit_count();
    let clash = vec![
        batch_entry("fresh1", "fresh1@example.com"),
        batch_entry("bulk042", "someone-else@example.com"),
    ];
    expect_code(
        users.batch_create_users(batch(clash)).await,
        Code::AlreadyExists,
    );
    expect_code(
        users
            .get_user(authed(
                pb::GetUserRequest {
                    name: "users/fresh1".into(),
                },
                &admin,
            ))
            .await,
        Code::NotFound,
    );
    assert_eq!(s.audit_count(), audit_before, "nothing written");

    // Only Team Admins create users.
    let requester = s.create_user(&admin, "req", pb::Role::Requester, PW).await;
    let req_token = s
        .login(&requester.username, PW)
        .await
        .tokens
        .unwrap()
        .access_token;
    expect_code(
        users
            .batch_create_users(authed(
                pb::BatchCreateUsersRequest {
                    requests: vec![batch_entry("sneaky", "sneaky@example.com")],
                },
                &req_token,
            ))
            .await,
        Code::PermissionDenied,
    );
}

crate::both_backends!(
    users_are_created_in_batches,
    stale_accounts_are_found_by_last_sign_in,
    role_and_membership_changes_keep_their_reason,
    an_etag_belongs_to_one_resource,
    one_spelling_per_identity,
    lifecycle_create_get_update_deactivate_reactivate_delete,
    duplicates_are_refused,
    listing_filters_searches_and_pages,
    team_admin_rules_protect_the_org,
    non_admins_are_refused_user_management,
    concurrent_last_admin_demotions_leave_one_admin,
);
