//! A committed write is answered as a success, whatever happens after it: when the directory's
//! sync after the commit fails (the database went away a moment later, say), the client must
//! not be told to retry a write that happened. The poll loop catches up.

use fluxgate_proto::v1 as pb;

use crate::harness::*;

async fn a_failed_sync_after_commit_still_answers_success(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.admin_token().await;

    s.directory.fail_next_syncs(1);
    let p = s.portfolio(&admin, "Shop").await;
    s.directory.fail_next_syncs(1);
    let u = s
        .create_user(&admin, "rita", pb::Role::Requester, "Someone-pw-123")
        .await;
    s.directory.fail_next_syncs(1);
    let g = s.group(&admin, &p.name, "Devs", vec![], vec![]).await;
    s.directory.fail_next_syncs(1);
    s.add_member(&admin, &g.name, &u.name).await;
    s.directory.fail_next_syncs(1);
    let sa = s.service_account(&admin, "deployer").await;
    s.directory.fail_next_syncs(1);
    s.service_accounts()
        .create_service_account_key(authed(
            pb::CreateServiceAccountKeyRequest {
                parent: sa.name.clone(),
                key: None,
            },
            &admin,
        ))
        .await
        .expect("a committed key is answered");
    s.directory.fail_next_syncs(1);
    s.users()
        .deactivate_user(authed(
            pb::DeactivateUserRequest {
                name: u.name.clone(),
                etag: String::new(),
            },
            &admin,
        ))
        .await
        .expect("a committed deactivation is answered");

    // Each write happened once, and the directory catches up by itself.
    let groups = s
        .groups()
        .list_groups(authed(
            pb::ListGroupsRequest {
                parent: p.name.clone(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .groups;
    assert_eq!(
        groups.iter().filter(|x| x.display_name == "Devs").count(),
        1
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let l = s
            .auth()
            .login(pb::LoginRequest {
                username: "rita".into(),
                password: "Someone-pw-123".into(),
                ..Default::default()
            })
            .await;
        if l.is_err() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the deactivation took effect"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

crate::both_backends!(a_failed_sync_after_commit_still_answers_success);
