//! The access model end to end: catalog, groups and grants, the permission service, portfolio
//! administrators, service accounts and their keys.

use fluxgate_proto::v1 as pb;
use prost_types::FieldMask;
use tonic::Code;

use crate::harness::*;

const PW: &str = "Someone-pw-123";

fn env_grant(env: &str, perms: &[pb::ValuePermission]) -> pb::EnvironmentGrant {
    pb::EnvironmentGrant {
        environment: env.into(),
        permissions: perms.iter().map(|p| *p as i32).collect(),
    }
}

fn app_grant(app: &str, p: pb::FeaturePermission) -> pb::ApplicationGrant {
    pb::ApplicationGrant {
        application: app.into(),
        feature_permission: p as i32,
    }
}

async fn catalog_lifecycle_and_delete_rules(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let shop = s.portfolio(&admin, "Shop").await;
    assert!(
        shop.administrators_group
            .starts_with(&format!("{}/groups/", shop.name))
    );
    let mut cat = s.catalog();
    // Names are unique case-insensitively.
    let dup = cat
        .create_portfolio(authed(
            pb::CreatePortfolioRequest {
                portfolio: Some(pb::Portfolio {
                    display_name: "SHOP".into(),
                    ..Default::default()
                }),
            },
            &admin,
        ))
        .await;
    expect_code(dup, Code::AlreadyExists);
    let web = s.application(&admin, &shop.name, "web").await;
    let dev = s.environment(&admin, &web.name, "dev").await;
    s.environment(&admin, &web.name, "prod").await;
    let envs = cat
        .list_environments(authed(
            pb::ListEnvironmentsRequest {
                parent: web.name.clone(),
                page_size: 1,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(envs.environments.len(), 1);
    let rest = cat
        .list_environments(authed(
            pb::ListEnvironmentsRequest {
                parent: web.name.clone(),
                page_size: 1,
                page_token: envs.next_page_token,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.environments[0].display_name, "prod");

    // Update with etag; a stale etag is ABORTED.
    let renamed = cat
        .update_environment(authed(
            pb::UpdateEnvironmentRequest {
                environment: Some(pb::Environment {
                    name: dev.name.clone(),
                    display_name: "development".into(),
                    production: false,
                    etag: dev.etag.clone(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["display_name".into()],
                }),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .environment
        .unwrap();
    assert_eq!(renamed.display_name, "development");
    let stale = cat
        .update_environment(authed(
            pb::UpdateEnvironmentRequest {
                environment: Some(pb::Environment {
                    name: dev.name.clone(),
                    display_name: "x".into(),
                    etag: dev.etag.clone(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["display_name".into()],
                }),
            },
            &admin,
        ))
        .await;
    expect_code(stale, Code::Aborted);

    // A group grant refers to the environment: delete is refused without force.
    let devs = s
        .group(
            &admin,
            &shop.name,
            "Developers",
            vec![],
            vec![env_grant(&dev.name, &[pb::ValuePermission::ChangeValue])],
        )
        .await;
    let r = cat
        .delete_environment(authed(
            pb::DeleteEnvironmentRequest {
                name: dev.name.clone(),
                ..Default::default()
            },
            &admin,
        ))
        .await;
    let st = expect_code(r, Code::FailedPrecondition);
    assert!(st.message().contains("group"), "{st:?}");
    cat.delete_environment(authed(
        pb::DeleteEnvironmentRequest {
            name: dev.name.clone(),
            force: true,
            ..Default::default()
        },
        &admin,
    ))
    .await
    .unwrap();
    let g = s
        .groups()
        .get_group(authed(
            pb::GetGroupRequest {
                name: devs.name.clone(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .group
        .unwrap();
    assert!(
        g.environment_grants.is_empty(),
        "the grant went with the environment"
    );

    // An application with environments, a portfolio with children: refused, then forced.
    let r = cat
        .delete_application(authed(
            pb::DeleteApplicationRequest {
                name: web.name.clone(),
                ..Default::default()
            },
            &admin,
        ))
        .await;
    expect_code(r, Code::FailedPrecondition);
    let r = cat
        .delete_portfolio(authed(
            pb::DeletePortfolioRequest {
                name: shop.name.clone(),
                ..Default::default()
            },
            &admin,
        ))
        .await;
    expect_code(r, Code::FailedPrecondition);
    let r = s
        .groups()
        .delete_group(authed(
            pb::DeleteGroupRequest {
                name: shop.administrators_group.clone(),
                ..Default::default()
            },
            &admin,
        ))
        .await;
    expect_code(r, Code::FailedPrecondition);
    cat.delete_portfolio(authed(
        pb::DeletePortfolioRequest {
            name: shop.name.clone(),
            force: true,
            ..Default::default()
        },
        &admin,
    ))
    .await
    .unwrap();
    expect_code(
        cat.get_application(authed(
            pb::GetApplicationRequest {
                name: web.name.clone(),
            },
            &admin,
        ))
        .await,
        Code::NotFound,
    );
    expect_code(
        s.groups()
            .get_group(authed(
                pb::GetGroupRequest {
                    name: devs.name.clone(),
                },
                &admin,
            ))
            .await,
        Code::NotFound,
    );
    assert_eq!(s.store().read(fluxgate_store::audit::verify).unwrap(), None);
}

async fn grants_combine_and_checks_explain_themselves(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let shop = s.portfolio(&admin, "Shop").await;
    let web = s.application(&admin, &shop.name, "web").await;
    let dev = s.environment(&admin, &web.name, "dev").await;
    let prod = s.environment(&admin, &web.name, "prod").await;
    let devs = s
        .group(
            &admin,
            &shop.name,
            "Developers",
            vec![app_grant(&web.name, pb::FeaturePermission::Create)],
            vec![env_grant(&dev.name, &[pb::ValuePermission::ChangeValue])],
        )
        .await;
    let ops = s
        .group(
            &admin,
            &shop.name,
            "Operations",
            vec![],
            vec![env_grant(&prod.name, &[pb::ValuePermission::ChangeValue])],
        )
        .await;
    let dana = s.create_user(&admin, "dana", pb::Role::Requester, PW).await;
    let t = s.login("dana", PW).await.tokens.unwrap().access_token;
    let me = "";

    let d = s
        .check(&t, me, pb::Permission::ChangeValue, &dev.name)
        .await;
    assert!(!d.allowed, "not a member yet");
    s.add_member(&admin, &devs.name, &dana.name).await;
    let d = s
        .check(&t, me, pb::Permission::ChangeValue, &dev.name)
        .await;
    assert!(d.allowed && d.granted_by == devs.name, "{d:?}");
    assert!(
        !s.check(&t, me, pb::Permission::ChangeValue, &prod.name)
            .await
            .allowed
    );
    // Groups combine.
    s.add_member(&admin, &ops.name, "users/dana").await;
    let d = s
        .check(&t, me, pb::Permission::ChangeValue, &prod.name)
        .await;
    assert!(d.allowed && d.granted_by == ops.name, "{d:?}");
    assert!(
        s.check(&t, me, pb::Permission::CreateFeature, &web.name)
            .await
            .allowed
    );
    assert!(
        !s.check(&t, me, pb::Permission::DeleteFeature, &web.name)
            .await
            .allowed
    );

    let mut perms = s.permissions();
    let e = perms
        .explain_permission(authed(
            pb::ExplainPermissionRequest {
                check: Some(pb::PermissionCheck {
                    principal: String::new(),
                    permission: pb::Permission::Lock as i32,
                    resource: dev.name.clone(),
                }),
                min_revision: 0,
            },
            &t,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!e.decision.as_ref().unwrap().allowed);
    assert!(e.decision.unwrap().reason.contains("LOCK"));
    assert_eq!(e.groups.len(), 2);

    let found = perms
        .lookup_resources(authed(
            pb::LookupResourcesRequest {
                principal: String::new(),
                permission: pb::Permission::ChangeValue as i32,
                parent: web.name.clone(),
                min_revision: 0,
            },
            &t,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.resources.len(), 2);
    let who = perms
        .lookup_principals(authed(
            pb::LookupPrincipalsRequest {
                permission: pb::Permission::ChangeValue as i32,
                resource: prod.name.clone(),
                min_role: 0,
                min_revision: 0,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(who.principals.contains(&dana.name), "{who:?}");
    let approvers = perms
        .lookup_principals(authed(
            pb::LookupPrincipalsRequest {
                permission: pb::Permission::ChangeValue as i32,
                resource: prod.name.clone(),
                min_role: pb::Role::Approver as i32,
                min_revision: 0,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!approvers.principals.contains(&dana.name));

    // A batch answers from one snapshot, in order.
    let batch = perms
        .batch_check_permissions(authed(
            pb::BatchCheckPermissionsRequest {
                checks: vec![
                    pb::PermissionCheck {
                        principal: String::new(),
                        permission: pb::Permission::Read as i32,
                        resource: dev.name.clone(),
                    },
                    pb::PermissionCheck {
                        principal: String::new(),
                        permission: pb::Permission::Unlock as i32,
                        resource: prod.name.clone(),
                    },
                ],
                min_revision: 0,
            },
            &t,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        batch
            .decisions
            .iter()
            .map(|d| d.allowed)
            .collect::<Vec<_>>(),
        [true, false]
    );

    // Users may not ask about others; Team Admins may.
    let r = perms
        .check_permission(authed(
            pb::CheckPermissionRequest {
                check: Some(pb::PermissionCheck {
                    principal: "users/admin".into(),
                    permission: pb::Permission::Read as i32,
                    resource: dev.name.clone(),
                }),
                min_revision: 0,
            },
            &t,
        ))
        .await;
    expect_code(r, Code::PermissionDenied);
    let d = s
        .check(&admin, "users/dana", pb::Permission::ChangeValue, &dev.name)
        .await;
    assert!(d.allowed);

    // Removing the membership, then deactivating: rights go at once; reactivation restores the
    // remaining memberships as they were.
    s.groups()
        .remove_group_member(authed(
            pb::RemoveGroupMemberRequest {
                reason: String::new(),
                group: ops.name.clone(),
                member: dana.name.clone(),
            },
            &admin,
        ))
        .await
        .unwrap();
    assert!(
        !s.check(&admin, &dana.name, pb::Permission::ChangeValue, &prod.name)
            .await
            .allowed
    );
    s.users()
        .deactivate_user(authed(
            pb::DeactivateUserRequest {
                name: dana.name.clone(),
                etag: String::new(),
            },
            &admin,
        ))
        .await
        .unwrap();
    let d = s
        .check(&admin, &dana.name, pb::Permission::ChangeValue, &dev.name)
        .await;
    assert!(!d.allowed && d.reason.contains("deactivated"), "{d:?}");
    s.users()
        .reactivate_user(authed(
            pb::ReactivateUserRequest {
                name: dana.name.clone(),
                etag: String::new(),
            },
            &admin,
        ))
        .await
        .unwrap();
    assert!(
        s.check(&admin, &dana.name, pb::Permission::ChangeValue, &dev.name)
            .await
            .allowed
    );
}

async fn portfolio_admins_manage_their_portfolio_only(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let a = s.portfolio(&admin, "A").await;
    let bp = s.portfolio(&admin, "B").await;
    let pat = s.create_user(&admin, "pat", pb::Role::Requester, PW).await;
    s.add_member(&admin, &a.administrators_group, &pat.name)
        .await;
    let t = s.login("pat", PW).await.tokens.unwrap().access_token;

    let app = s.application(&t, &a.name, "web").await;
    let env = s.environment(&t, &app.name, "dev").await;
    let g = s
        .group(
            &t,
            &a.name,
            "Devs",
            vec![],
            vec![env_grant(&env.name, &[pb::ValuePermission::Read])],
        )
        .await;
    s.create_user(&admin, "rex", pb::Role::Requester, PW).await;
    s.add_member(&t, &g.name, "users/rex").await;
    assert!(
        s.check(&t, "users/rex", pb::Permission::Read, &env.name)
            .await
            .allowed,
        "portfolio admins check within their portfolio"
    );
    assert!(
        s.check(&t, "", pb::Permission::DeleteFeature, &app.name)
            .await
            .allowed,
        "portfolio admins hold everything in it"
    );

    // Nothing outside it.
    let r = s
        .catalog()
        .create_application(authed(
            pb::CreateApplicationRequest {
                parent: bp.name.clone(),
                application: Some(pb::Application {
                    display_name: "x".into(),
                    ..Default::default()
                }),
            },
            &t,
        ))
        .await;
    let st = expect_code(r, Code::PermissionDenied);
    assert!(st.message().contains("Administrators"), "{st:?}");
    let r = s
        .groups()
        .create_group(authed(
            pb::CreateGroupRequest {
                parent: bp.name.clone(),
                group: Some(pb::Group {
                    display_name: "x".into(),
                    ..Default::default()
                }),
            },
            &t,
        ))
        .await;
    expect_code(r, Code::PermissionDenied);
    let r = s
        .catalog()
        .create_portfolio(authed(
            pb::CreatePortfolioRequest {
                portfolio: Some(pb::Portfolio {
                    display_name: "C".into(),
                    ..Default::default()
                }),
            },
            &t,
        ))
        .await;
    expect_code(r, Code::PermissionDenied);
    expect_code(
        s.users()
            .list_users(authed(pb::ListUsersRequest::default(), &t))
            .await,
        Code::PermissionDenied,
    );
    // A portfolio admin may force-delete within the portfolio, but not delete the portfolio.
    s.catalog()
        .delete_application(authed(
            pb::DeleteApplicationRequest {
                name: app.name.clone(),
                force: true,
                ..Default::default()
            },
            &t,
        ))
        .await
        .unwrap();
    expect_code(
        s.catalog()
            .delete_portfolio(authed(
                pb::DeletePortfolioRequest {
                    name: a.name.clone(),
                    force: true,
                    ..Default::default()
                },
                &t,
            ))
            .await,
        Code::PermissionDenied,
    );
}

async fn service_accounts_authenticate_with_keys(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let shop = s.portfolio(&admin, "Shop").await;
    let web = s.application(&admin, &shop.name, "web").await;
    let prod = s.environment(&admin, &web.name, "prod").await;
    let mut sas = s.service_accounts();
    let flagstore = sas
        .create_service_account(authed(
            pb::CreateServiceAccountRequest {
                service_account: Some(pb::ServiceAccount {
                    display_name: "flag store".into(),
                    ..Default::default()
                }),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .service_account
        .unwrap();
    assert_eq!(flagstore.role, pb::Role::Requester as i32);
    let k1 = sas
        .create_service_account_key(authed(
            pb::CreateServiceAccountKeyRequest {
                parent: flagstore.name.clone(),
                key: None,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(k1.secret.starts_with("fgk_"));
    let me = s
        .auth()
        .who_am_i(authed(pb::WhoAmIRequest {}, &k1.secret))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.principal, flagstore.name);

    // An internal service checks any principal's rights with its key.
    let ops = s
        .group(
            &admin,
            &shop.name,
            "Ops",
            vec![],
            vec![env_grant(&prod.name, &[pb::ValuePermission::ChangeValue])],
        )
        .await;
    let olga = s.create_user(&admin, "olga", pb::Role::Approver, PW).await;
    s.add_member(&admin, &ops.name, &olga.name).await;
    let d = s
        .check(
            &k1.secret,
            &olga.name,
            pb::Permission::ChangeValue,
            &prod.name,
        )
        .await;
    assert!(d.allowed);
    // …and may itself be a group member.
    s.add_member(&admin, &ops.name, &flagstore.name).await;
    assert!(
        s.check(&k1.secret, "", pb::Permission::ChangeValue, &prod.name)
            .await
            .allowed
    );
    // Service accounts cannot manage users.
    expect_code(
        s.users()
            .list_users(authed(pb::ListUsersRequest::default(), &k1.secret))
            .await,
        Code::PermissionDenied,
    );

    // Rotation with a grace: both keys work; revocation ends the old one at once.
    let rotated = sas
        .rotate_service_account_key(authed(
            pb::RotateServiceAccountKeyRequest {
                name: k1.key.as_ref().unwrap().name.clone(),
                grace_period: Some(prost_types::Duration {
                    seconds: 3600,
                    nanos: 0,
                }),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    for secret in [&k1.secret, &rotated.secret] {
        s.auth()
            .who_am_i(authed(pb::WhoAmIRequest {}, secret))
            .await
            .unwrap();
    }
    sas.revoke_service_account_key(authed(
        pb::RevokeServiceAccountKeyRequest {
            name: k1.key.as_ref().unwrap().name.clone(),
        },
        &admin,
    ))
    .await
    .unwrap();
    expect_code(
        s.auth()
            .who_am_i(authed(pb::WhoAmIRequest {}, &k1.secret))
            .await,
        Code::Unauthenticated,
    );
    s.auth()
        .who_am_i(authed(pb::WhoAmIRequest {}, &rotated.secret))
        .await
        .unwrap();
    // A tampered secret fails.
    let mut bad = rotated.secret.clone();
    bad.pop();
    bad.push('x');
    expect_code(
        s.auth().who_am_i(authed(pb::WhoAmIRequest {}, &bad)).await,
        Code::Unauthenticated,
    );
    let keys = sas
        .list_service_account_keys(authed(
            pb::ListServiceAccountKeysRequest {
                parent: flagstore.name.clone(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys.keys.len(), 2);

    // Deactivation stops its keys; deletion removes it and its memberships.
    sas.update_service_account(authed(
        pb::UpdateServiceAccountRequest {
            service_account: Some(pb::ServiceAccount {
                name: flagstore.name.clone(),
                active: false,
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["active".into()],
            }),
        },
        &admin,
    ))
    .await
    .unwrap();
    expect_code(
        s.auth()
            .who_am_i(authed(pb::WhoAmIRequest {}, &rotated.secret))
            .await,
        Code::Unauthenticated,
    );
    sas.delete_service_account(authed(
        pb::DeleteServiceAccountRequest {
            name: flagstore.name.clone(),
            etag: String::new(),
        },
        &admin,
    ))
    .await
    .unwrap();
    let g = s
        .groups()
        .get_group(authed(
            pb::GetGroupRequest {
                name: ops.name.clone(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .group
        .unwrap();
    assert_eq!(g.member_count, 1);
}

async fn portfolio_service_accounts_stay_in_their_portfolio(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let a = s.portfolio(&admin, "A").await;
    let other = s.portfolio(&admin, "B").await;
    let pat = s.create_user(&admin, "pat", pb::Role::Requester, PW).await;
    s.add_member(&admin, &a.administrators_group, &pat.name)
        .await;
    let t = s.login("pat", PW).await.tokens.unwrap().access_token;
    let mut sas = s.service_accounts();
    let mk = |portfolio: &str, role: pb::Role| pb::CreateServiceAccountRequest {
        service_account: Some(pb::ServiceAccount {
            display_name: "ci".into(),
            portfolio: portfolio.into(),
            role: role as i32,
            ..Default::default()
        }),
    };
    let ci = sas
        .create_service_account(authed(mk(&a.name, pb::Role::Unspecified), &t))
        .await
        .unwrap()
        .into_inner()
        .service_account
        .unwrap();
    assert_eq!(ci.portfolio, a.name);
    expect_invalid(
        sas.create_service_account(authed(mk(&a.name, pb::Role::TeamAdmin), &t))
            .await,
        "service_account.role",
    );
    expect_code(
        sas.create_service_account(authed(mk(&other.name, pb::Role::Unspecified), &t))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        sas.create_service_account(authed(mk("", pb::Role::Unspecified), &t))
            .await,
        Code::PermissionDenied,
    );
    let g = s
        .group(&admin, &other.name, "Elsewhere", vec![], vec![])
        .await;
    let r = s
        .groups()
        .add_group_member(authed(
            pb::AddGroupMemberRequest {
                reason: String::new(),
                group: g.name.clone(),
                member: ci.name.clone(),
            },
            &admin,
        ))
        .await;
    expect_code(r, Code::FailedPrecondition);
}

async fn writes_return_revisions_that_checks_honour(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let shop = s.portfolio(&admin, "Shop").await;
    let web = s.application(&admin, &shop.name, "web").await;
    let prod = s.environment(&admin, &web.name, "prod").await;
    let group = s
        .group(
            &admin,
            &shop.name,
            "Ops",
            vec![],
            vec![env_grant(&prod.name, &[pb::ValuePermission::Read])],
        )
        .await;
    let user = s.create_user(&admin, "ron", pb::Role::Requester, PW).await;
    let added = s
        .groups()
        .add_group_member(authed(
            pb::AddGroupMemberRequest {
                reason: String::new(),
                group: group.name.clone(),
                member: user.name.clone(),
            },
            &admin,
        ))
        .await
        .unwrap();
    let revision: i64 = added
        .metadata()
        .get("x-fluxgate-revision")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        added.metadata().get("x-request-id").is_some(),
        "writes name their request"
    );
    let r = s
        .permissions()
        .check_permission(authed(
            pb::CheckPermissionRequest {
                check: Some(pb::PermissionCheck {
                    principal: user.name.clone(),
                    permission: pb::Permission::Read as i32,
                    resource: prod.name.clone(),
                }),
                min_revision: revision,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(r.decision.unwrap().allowed);
    assert!(r.revision >= revision);
    // A revision from the future is refused, not waited for.
    let r = s
        .permissions()
        .check_permission(authed(
            pb::CheckPermissionRequest {
                check: Some(pb::PermissionCheck {
                    principal: user.name.clone(),
                    permission: pb::Permission::Read as i32,
                    resource: prod.name.clone(),
                }),
                min_revision: revision + 1000,
            },
            &admin,
        ))
        .await;
    expect_invalid(r, "min_revision");
}

crate::both_backends!(
    writes_return_revisions_that_checks_honour,
    catalog_lifecycle_and_delete_rules,
    grants_combine_and_checks_explain_themselves,
    portfolio_admins_manage_their_portfolio_only,
    service_accounts_authenticate_with_keys,
    portfolio_service_accounts_stay_in_their_portfolio,
    names_are_no_oracle,
    bad_grants_never_wait_for_the_write_lock,
);

/// The review's finding: any signed-in user learned whether a username exists (NOT_FOUND for an
/// unknown name, PERMISSION_DENIED or OK for a real one). Callers who may not ask about others get
/// the same refusal either way; those who may get NOT_FOUND, or for a group filter, no groups.
async fn names_are_no_oracle(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let shop = s.portfolio(&admin, "Shop").await;
    let app = s.application(&admin, &shop.name, "web").await;
    let env = s.environment(&admin, &app.name, "dev").await;
    let g = s.group(&admin, &shop.name, "Devs", vec![], vec![]).await;
    s.create_user(&admin, "rita", pb::Role::Requester, PW).await;
    s.add_member(&admin, &g.name, "users/rita").await;
    s.create_user(&admin, "sam", pb::Role::Requester, PW).await;
    let sam = s.login("sam", PW).await.tokens.unwrap().access_token;

    let check = |token: String, who: &str| {
        let mut client = s.permissions();
        let req = pb::CheckPermissionRequest {
            check: Some(pb::PermissionCheck {
                principal: who.into(),
                permission: pb::Permission::Read as i32,
                resource: env.name.clone(),
            }),
            min_revision: 0,
        };
        async move { client.check_permission(authed(req, &token)).await }
    };
    let groups_of = |token: String, who: &str| {
        let mut client = s.groups();
        let req = pb::ListGroupsRequest {
            parent: "portfolios/-".into(),
            member: who.into(),
            ..Default::default()
        };
        async move { client.list_groups(authed(req, &token)).await }
    };
    let mut seen = Vec::new();
    for who in ["users/rita", "users/nobody-here"] {
        let a = expect_code(check(sam.clone(), who).await, Code::PermissionDenied);
        let b = expect_code(groups_of(sam.clone(), who).await, Code::PermissionDenied);
        seen.push((a.message().to_owned(), b.message().to_owned()));
    }
    assert_eq!(
        seen[0], seen[1],
        "the same refusal for a real and an unknown name"
    );
    // One's own groups, by username, are one's own business.
    let mine = groups_of(sam.clone(), "users/sam")
        .await
        .unwrap()
        .into_inner();
    assert!(mine.groups.is_empty());
    // Those who may ask: the truth.
    expect_code(
        check(admin.clone(), "users/nobody-here").await,
        Code::NotFound,
    );
    let none = groups_of(admin.clone(), "users/nobody-here").await.unwrap();
    assert!(none.into_inner().groups.is_empty());
    let rita = groups_of(admin.clone(), "users/rita").await.unwrap();
    assert_eq!(rita.into_inner().groups.len(), 1);
}

/// The review's finding: an UpdateGroup with 6,000 grants naming unknown environments held the
/// store-wide write lock for seconds before answering INVALID_ARGUMENT. The grants are bounded,
/// and checked before the write: with the write lock held elsewhere, bad grants are still
/// refused at once.
async fn bad_grants_never_wait_for_the_write_lock(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;
    let shop = s.portfolio(&admin, "Shop").await;
    let app = s.application(&admin, &shop.name, "web").await;
    let g = s.group(&admin, &shop.name, "Devs", vec![], vec![]).await;
    let update = |n: usize| pb::UpdateGroupRequest {
        group: Some(pb::Group {
            name: g.name.clone(),
            environment_grants: (0..n)
                .map(|_| {
                    env_grant(
                        &format!("{}/environments/{}", app.name, uuid::Uuid::now_v7()),
                        &[pb::ValuePermission::Read],
                    )
                })
                .collect(),
            ..Default::default()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["environment_grants".into()],
        }),
    };
    expect_invalid(
        s.groups().update_group(authed(update(6_000), &admin)).await,
        "group.environment_grants",
    );

    // Another writer holds the write lock until told to let go.
    let store = s.store();
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = tokio::task::spawn_blocking(move || {
        store
            .write(|_tx| {
                held_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                Ok::<_, fluxgate_store::StoreError>(())
            })
            .unwrap();
    });
    held_rx.recv().unwrap();
    let refused = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        s.groups().update_group(authed(update(2_000), &admin)),
    )
    .await
    .expect("bad grants are refused without waiting for the write lock");
    expect_invalid(refused, "group.environment_grants[0].environment");
    release_tx.send(()).unwrap();
    holder.await.unwrap();
    let after = s
        .groups()
        .get_group(authed(
            pb::GetGroupRequest {
                name: g.name.clone(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .group
        .unwrap();
    assert_eq!(after.etag, g.etag, "nothing was written");
}
