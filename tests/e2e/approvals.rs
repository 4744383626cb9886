//! Four-eyes approvals end to end: policies, submission, review rules, override, edits and
//! etags, cancellation, expiry, applying once, the wait stream, concurrency and metrics.

use std::time::Duration;

use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::approval_service_client::ApprovalServiceClient;
use prost_types::FieldMask;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::harness::*;

const PW: &str = "Reviewer-pw-123";

/// A portfolio with two environments, a group holding every value permission and
/// CREATE_EDIT_DELETE, and the people and flag store of the tests.
struct World {
    s: TestServer,
    admin: String,
    dev: String,
    prod: String,
    /// Requester in the group: submits.
    alice: String,
    alice_name: String,
    /// Approvers in the group.
    bob: String,
    bob_name: String,
    carol: String,
    /// Requester in the group (a peer).
    dave: String,
    /// Approver outside the group (lacks the permission).
    erin: String,
    /// The flag store's API key (admin service account, in the group).
    flagstore: String,
    flagstore_name: String,
    /// The portfolio's Administrators group, and the group with every permission.
    shop_admins: String,
    devs: String,
}

async fn token(s: &TestServer, user: &str) -> String {
    s.login(user, PW).await.tokens.unwrap().access_token
}

async fn world(b: Backend) -> World {
    world_with(b, |_| {}).await
}

async fn world_with(b: Backend, f: impl FnOnce(&mut fluxgate_server::Config)) -> World {
    let s = TestServer::start_configured(b, f).await;
    let admin = s.admin_token().await;
    let shop = s.portfolio(&admin, "Shop").await;
    let web = s.application(&admin, &shop.name, "web").await;
    let dev = s.environment(&admin, &web.name, "dev").await.name;
    let prod = s.environment(&admin, &web.name, "prod").await.name;
    let all = [
        pb::ValuePermission::Read,
        pb::ValuePermission::Lock,
        pb::ValuePermission::Unlock,
        pb::ValuePermission::ChangeValue,
    ];
    let grant = |env: &str| pb::EnvironmentGrant {
        environment: env.into(),
        permissions: all.iter().map(|p| *p as i32).collect(),
    };
    let devs = s
        .group(
            &admin,
            &shop.name,
            "devs",
            vec![pb::ApplicationGrant {
                application: web.name.clone(),
                feature_permission: pb::FeaturePermission::CreateEditDelete as i32,
            }],
            vec![grant(&dev), grant(&prod)],
        )
        .await;
    let mut names = Vec::new();
    for (u, role, member) in [
        ("alice", pb::Role::Requester, true),
        ("bob", pb::Role::Approver, true),
        ("carol", pb::Role::Approver, true),
        ("dave", pb::Role::Requester, true),
        ("erin", pb::Role::Approver, false),
    ] {
        let user = s.create_user(&admin, u, role, PW).await;
        if member {
            s.add_member(&admin, &devs.name, &user.name).await;
        }
        names.push(user.name);
    }
    let mut sas = s.service_accounts();
    let sa = sas
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
    s.add_member(&admin, &devs.name, &sa.name).await;
    let key = sas
        .create_service_account_key(authed(
            pb::CreateServiceAccountKeyRequest {
                parent: sa.name.clone(),
                key: None,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    World {
        alice: token(&s, "alice").await,
        bob: token(&s, "bob").await,
        carol: token(&s, "carol").await,
        dave: token(&s, "dave").await,
        erin: token(&s, "erin").await,
        alice_name: names[0].clone(),
        bob_name: names[1].clone(),
        flagstore: key,
        flagstore_name: sa.name,
        shop_admins: shop.administrators_group.clone(),
        devs: devs.name.clone(),
        s,
        admin,
        dev,
        prod,
    }
}

impl World {
    fn api(&self) -> ApprovalServiceClient<Channel> {
        self.s.approvals()
    }

    async fn set_policy(
        &self,
        env: &str,
        required: i32,
        peer_review: bool,
        admin_override: bool,
    ) -> pb::ApprovalPolicy {
        self.api()
            .update_approval_policy(authed(
                pb::UpdateApprovalPolicyRequest {
                    policy: Some(pb::ApprovalPolicy {
                        name: format!("{env}/approvalPolicy"),
                        required_approvals: required,
                        peer_review,
                        admin_override,
                        pending_ttl: Some(prost_types::Duration {
                            seconds: 3600,
                            nanos: 0,
                        }),
                        ..Default::default()
                    }),
                    update_mask: None,
                },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .policy
            .unwrap()
    }

    async fn try_submit(
        &self,
        token: &str,
        env: &str,
        kind: pb::ChangeKind,
        value: &str,
    ) -> Result<pb::ChangeRequest, Status> {
        self.api()
            .submit_change_request(authed(
                pb::SubmitChangeRequestRequest {
                    request_id: String::new(),
                    change_request: Some(pb::ChangeRequest {
                        environment: env.into(),
                        feature_key: "CHECKOUT_V2".into(),
                        kind: kind as i32,
                        payload: Some(payload(value)),
                        title: format!("Set checkout to {value}"),
                        ..Default::default()
                    }),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().change_request.unwrap())
    }

    async fn submit(&self, token: &str, env: &str) -> pb::ChangeRequest {
        self.try_submit(token, env, pb::ChangeKind::ChangeValue, "on")
            .await
            .unwrap()
    }

    async fn approve(
        &self,
        token: &str,
        name: &str,
        revision: i64,
    ) -> Result<pb::ChangeRequest, Status> {
        self.api()
            .approve_change_request(authed(
                pb::ApproveChangeRequestRequest {
                    name: name.into(),
                    revision,
                    comment: "looks good".into(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().change_request.unwrap())
    }

    async fn reject(
        &self,
        token: &str,
        name: &str,
        comment: &str,
    ) -> Result<pb::ChangeRequest, Status> {
        self.api()
            .reject_change_request(authed(
                pb::RejectChangeRequestRequest {
                    name: name.into(),
                    revision: 0,
                    comment: comment.into(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().change_request.unwrap())
    }

    async fn override_(
        &self,
        token: &str,
        name: &str,
        reason: &str,
    ) -> Result<pb::ChangeRequest, Status> {
        self.api()
            .override_change_request(authed(
                pb::OverrideChangeRequestRequest {
                    name: name.into(),
                    revision: 1,
                    reason: reason.into(),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().change_request.unwrap())
    }

    async fn apply(&self, token: &str, name: &str) -> Result<pb::ChangeRequest, Status> {
        self.api()
            .mark_change_request_applied(authed(
                pb::MarkChangeRequestAppliedRequest { name: name.into() },
                token,
            ))
            .await
            .map(|r| r.into_inner().change_request.unwrap())
    }

    async fn get(&self, token: &str, name: &str) -> Result<pb::ChangeRequest, Status> {
        self.api()
            .get_change_request(authed(
                pb::GetChangeRequestRequest { name: name.into() },
                token,
            ))
            .await
            .map(|r| r.into_inner().change_request.unwrap())
    }

    async fn edit(
        &self,
        token: &str,
        cr: &pb::ChangeRequest,
        value: &str,
        etag: &str,
    ) -> Result<pb::ChangeRequest, Status> {
        self.api()
            .update_change_request(authed(
                pb::UpdateChangeRequestRequest {
                    change_request: Some(pb::ChangeRequest {
                        name: cr.name.clone(),
                        payload: Some(payload(value)),
                        etag: etag.into(),
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask {
                        paths: vec!["payload".into()],
                    }),
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().change_request.unwrap())
    }

    async fn list(
        &self,
        token: &str,
        req: pb::ListChangeRequestsRequest,
    ) -> pb::ListChangeRequestsResponse {
        self.api()
            .list_change_requests(authed(req, token))
            .await
            .unwrap()
            .into_inner()
    }

    fn actions(&self, target: &str) -> Vec<String> {
        self.s
            .audit_events()
            .into_iter()
            .filter(|e| e.target_id.as_deref() == Some(target))
            .map(|e| e.action)
            .collect()
    }
}

fn payload(value: &str) -> prost_types::Struct {
    prost_types::Struct {
        fields: [(
            "value".to_string(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue(value.into())),
            },
        )]
        .into(),
    }
}

fn state(cr: &pb::ChangeRequest) -> pb::ChangeRequestState {
    pb::ChangeRequestState::try_from(cr.state).unwrap()
}

async fn two_approvals_then_applied_once(b: Backend) {
    let w = world(b).await;
    let pol = w.set_policy(&w.prod, 2, false, false).await;
    assert_eq!(pol.required_approvals, 2);
    assert_eq!(w.s.metric("fluxgate_pending_approvals").await, Some(0.0));
    let cr = w.submit(&w.alice, &w.prod).await;
    assert_eq!(state(&cr), pb::ChangeRequestState::Pending);
    assert_eq!((cr.required_approvals, cr.approvals), (2, 0));
    assert_eq!(w.s.metric("fluxgate_pending_approvals").await, Some(1.0));
    assert_eq!(cr.submitter, w.alice_name);
    assert_eq!(cr.environment, w.prod);
    assert!(
        cr.application
            .ends_with(w.prod.split("/environments/").next().unwrap())
    );
    assert_eq!(cr.payload, Some(payload("on")));

    // The flag store cannot apply what is not approved.
    expect_code(
        w.apply(&w.flagstore, &cr.name).await,
        Code::FailedPrecondition,
    );

    let one = w.approve(&w.bob, &cr.name, cr.revision).await.unwrap();
    assert_eq!(state(&one), pb::ChangeRequestState::Pending);
    assert_eq!(one.approvals, 1);
    // Approvals come from distinct principals.
    expect_code(
        w.approve(&w.bob, &cr.name, 1).await,
        Code::FailedPrecondition,
    );
    let two = w.approve(&w.carol, &cr.name, 1).await.unwrap();
    assert_eq!(state(&two), pb::ChangeRequestState::Approved);
    assert_eq!(w.s.metric("fluxgate_pending_approvals").await, Some(0.0));
    assert_eq!(two.approvals, 2);
    assert!(two.decide_time.is_some());
    assert_eq!(two.reviews.len(), 2);
    // No more reviews once decided.
    expect_code(
        w.approve(&w.admin, &cr.name, 1).await,
        Code::FailedPrecondition,
    );

    // Only a service account applies, once.
    expect_code(w.apply(&w.admin, &cr.name).await, Code::PermissionDenied);
    let applied = w.apply(&w.flagstore, &cr.name).await.unwrap();
    assert_eq!(state(&applied), pb::ChangeRequestState::Applied);
    assert_eq!(applied.applied_by, w.flagstore_name);
    assert!(applied.apply_time.is_some());
    let again = expect_code(
        w.apply(&w.flagstore, &cr.name).await,
        Code::FailedPrecondition,
    );
    assert!(again.message().contains("already applied"), "{again:?}");
    expect_code(
        w.api()
            .cancel_change_request(authed(
                pb::CancelChangeRequestRequest {
                    name: cr.name.clone(),
                    ..Default::default()
                },
                &w.alice,
            ))
            .await,
        Code::FailedPrecondition,
    );

    assert_eq!(
        w.actions(&cr.name),
        [
            "change_request.submitted",
            "change_request.approved",
            "change_request.approved",
            "change_request.applied"
        ]
    );
}

async fn review_rules(b: Backend) {
    let w = world(b).await;
    let cr = w.submit(&w.alice, &w.prod).await;
    assert_eq!(
        cr.required_approvals, 1,
        "the default policy wants one approval"
    );
    // Nobody approves their own request.
    let own = expect_code(
        w.approve(&w.alice, &cr.name, 1).await,
        Code::PermissionDenied,
    );
    assert!(own.message().contains("own"), "{own:?}");
    // Requesters need the policy's peer review.
    let peer = expect_code(
        w.approve(&w.dave, &cr.name, 1).await,
        Code::PermissionDenied,
    );
    assert!(peer.message().contains("approver"), "{peer:?}");
    expect_code(
        w.reject(&w.dave, &cr.name, "no").await,
        Code::PermissionDenied,
    );
    // A reviewer must hold the permission the change needs.
    let outsider = expect_code(
        w.approve(&w.erin, &cr.name, 1).await,
        Code::PermissionDenied,
    );
    assert!(outsider.message().contains("CHANGE_VALUE"), "{outsider:?}");
    // Nor can they submit.
    expect_code(
        w.try_submit(&w.erin, &w.prod, pb::ChangeKind::ChangeValue, "x")
            .await,
        Code::PermissionDenied,
    );
    // None of the refusals changed the request.
    let same = w.get(&w.alice, &cr.name).await.unwrap();
    assert_eq!(same.etag, cr.etag);
    assert!(same.reviews.is_empty());

    // Peer review on: a Requester's approval counts (policies apply to new requests).
    w.set_policy(&w.prod, 1, true, false).await;
    let cr2 = w.submit(&w.alice, &w.prod).await;
    assert!(cr2.peer_review);
    let by_peer = w.approve(&w.dave, &cr2.name, 1).await.unwrap();
    assert_eq!(state(&by_peer), pb::ChangeRequestState::Approved);
    assert_eq!(by_peer.reviews[0].reviewer_display_name, "dave");
    // The first request keeps the policy it was submitted under.
    expect_code(
        w.approve(&w.dave, &cr.name, 1).await,
        Code::PermissionDenied,
    );

    // A rejection needs a comment, and any rejection rejects.
    w.set_policy(&w.prod, 2, false, false).await;
    let cr3 = w.submit(&w.alice, &w.prod).await;
    w.approve(&w.bob, &cr3.name, 1).await.unwrap();
    expect_invalid(w.reject(&w.carol, &cr3.name, "").await, "comment");
    let rejected = w
        .reject(&w.carol, &cr3.name, "not on a Friday")
        .await
        .unwrap();
    assert_eq!(state(&rejected), pb::ChangeRequestState::Rejected);
    let verdicts: Vec<i32> = rejected.reviews.iter().map(|r| r.verdict).collect();
    assert_eq!(
        verdicts,
        [pb::Verdict::Approve as i32, pb::Verdict::Reject as i32]
    );
    expect_code(
        w.approve(&w.admin, &cr3.name, 1).await,
        Code::FailedPrecondition,
    );
    expect_code(
        w.apply(&w.flagstore, &cr3.name).await,
        Code::FailedPrecondition,
    );

    // Feature changes need the application's feature permission; lock needs LOCK.
    for kind in [
        pb::ChangeKind::CreateFeature,
        pb::ChangeKind::EditFeature,
        pb::ChangeKind::DeleteFeature,
        pb::ChangeKind::Lock,
        pb::ChangeKind::Unlock,
        pb::ChangeKind::Retire,
    ] {
        let cr = w.try_submit(&w.alice, &w.dev, kind, "x").await.unwrap();
        assert_eq!(cr.kind, kind as i32);
    }
}

impl World {
    /// A portfolio service account created by `token`, in the group with every permission.
    async fn bot(&self, token: &str, name: &str) -> String {
        let portfolio = self
            .shop_admins
            .split("/groups/")
            .next()
            .unwrap()
            .to_owned();
        let sa = self
            .s
            .portfolio_service_account(token, name, &portfolio)
            .await;
        self.s.add_member(token, &self.devs, &sa.name).await;
        sa.name
    }

    async fn key(&self, token: &str, account: &str) -> (String, String) {
        let k = self
            .s
            .service_accounts()
            .create_service_account_key(authed(
                pb::CreateServiceAccountKeyRequest {
                    parent: account.into(),
                    key: None,
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner();
        (k.key.unwrap().name, k.secret)
    }
}

fn same_party(st: &Status) {
    assert!(
        st.message()
            .contains("one party may not both author and approve"),
        "{st:?}"
    );
}

/// The review's finding: a portfolio Administrator creates an account, gives it a key, submits
/// as the account and approves as themselves. One party never both authors and approves.
async fn one_party_never_authors_and_approves(b: Backend) {
    let w = world(b).await;
    // Bob (Approver) and Dave (Requester) administer the portfolio.
    s_add(&w, &w.bob_name).await;
    let dave_name = user_name(&w, "dave").await;
    s_add(&w, &dave_name).await;
    w.set_policy(&w.prod, 1, false, false).await;

    let bot = w.bot(&w.bob, "bob's pipeline").await;
    let (_, key) = w.key(&w.bob, &bot).await;
    let cr = w.submit(&key, &w.prod).await;
    let st = expect_code(w.approve(&w.bob, &cr.name, 1).await, Code::PermissionDenied);
    same_party(&st);
    // Nor does the list of requests awaiting Bob's review offer it.
    let mine = w
        .list(
            &w.bob,
            pb::ListChangeRequestsRequest {
                awaiting_my_review: true,
                ..Default::default()
            },
        )
        .await;
    assert!(mine.change_requests.iter().all(|c| c.name != cr.name));
    // Somebody else may approve it, and the account applies it.
    w.approve(&w.carol, &cr.name, 1).await.unwrap();
    assert_eq!(
        state(&w.apply(&key, &cr.name).await.unwrap()),
        pb::ChangeRequestState::Applied
    );

    // The Requester-role variant, under peer review: Dave created the key of an account Bob made.
    w.set_policy(&w.prod, 1, true, false).await;
    let (key_id, dave_key) = w.key(&w.dave, &bot).await;
    let cr = w.submit(&dave_key, &w.prod).await;
    for t in [&w.dave, &w.bob] {
        same_party(&expect_code(
            w.approve(t, &cr.name, 1).await,
            Code::PermissionDenied,
        ));
        same_party(&expect_code(
            w.reject(t, &cr.name, "no").await,
            Code::PermissionDenied,
        ));
    }
    // Revoking Dave's key releases him: he is no longer behind the account.
    w.s.service_accounts()
        .revoke_service_account_key(authed(
            pb::RevokeServiceAccountKeyRequest { name: key_id },
            &w.bob,
        ))
        .await
        .unwrap();
    w.approve(&w.dave, &cr.name, 1).await.unwrap();

    // Team Admins too: the admin made the flag store's account, so may not override its request.
    w.set_policy(&w.prod, 2, false, true).await;
    let cr = w.submit(&w.flagstore, &w.prod).await;
    same_party(&expect_code(
        w.override_(&w.admin, &cr.name, "hotfix").await,
        Code::PermissionDenied,
    ));
    same_party(&expect_code(
        w.approve(&w.admin, &cr.name, 1).await,
        Code::PermissionDenied,
    ));
    // Except where the policy needs no approval: nobody approves, so nobody is held.
    w.set_policy(&w.prod, 0, false, true).await;
    let cr = w.submit(&w.flagstore, &w.prod).await;
    assert_eq!(state(&cr), pb::ChangeRequestState::Approved);
    w.apply(&w.flagstore, &cr.name).await.unwrap();
}

/// A key rotated after the approval makes the approver the submitter's party: the request is not
/// applied, and approvals that stopped counting do not carry a pending request.
async fn a_key_rotated_after_approval_stops_the_apply(b: Backend) {
    let w = world(b).await;
    s_add(&w, &w.bob_name).await;
    w.set_policy(&w.prod, 1, false, false).await;
    // The account is the admin's; Bob approves its request, then rotates its key.
    let bot = w.bot(&w.admin, "release bot").await;
    let (key_id, key) = w.key(&w.admin, &bot).await;
    let cr = w.submit(&key, &w.prod).await;
    w.approve(&w.bob, &cr.name, 1).await.unwrap();
    let rotated =
        w.s.service_accounts()
            .rotate_service_account_key(authed(
                pb::RotateServiceAccountKeyRequest {
                    name: key_id,
                    grace_period: None,
                },
                &w.bob,
            ))
            .await
            .unwrap()
            .into_inner();
    let st = expect_code(
        w.apply(&rotated.secret, &cr.name).await,
        Code::PermissionDenied,
    );
    same_party(&st);
    assert!(st.message().contains(&w.bob_name), "{st:?}");
    let got = w.get(&w.admin, &cr.name).await.unwrap();
    assert_eq!(state(&got), pb::ChangeRequestState::Approved);

    // Two approvals needed: Carol approves, then rotates a key; her approval no longer counts.
    w.set_policy(&w.prod, 2, false, false).await;
    let carol_name = user_name(&w, "carol").await;
    s_add(&w, &carol_name).await;
    let cr = w.submit(&rotated.secret, &w.prod).await;
    w.approve(&w.carol, &cr.name, 1).await.unwrap();
    w.key(&w.carol, &bot).await;
    // Erin joins the group and approves: one approval counts, not two.
    let erin_name = user_name(&w, "erin").await;
    w.s.add_member(&w.admin, &w.devs, &erin_name).await;
    let got = w.approve(&w.erin, &cr.name, 1).await.unwrap();
    assert_eq!(state(&got), pb::ChangeRequestState::Pending);
    assert_eq!(got.approvals, 1, "{got:?}");
}

impl World {
    async fn deactivate(&self, user: &str) {
        self.s
            .users()
            .deactivate_user(authed(
                pb::DeactivateUserRequest {
                    name: format!("users/{user}"),
                    etag: String::new(),
                },
                &self.admin,
            ))
            .await
            .unwrap();
    }

    async fn delete_user(&self, user: &str) {
        self.s
            .users()
            .delete_user(authed(
                pb::DeleteUserRequest {
                    name: format!("users/{user}"),
                    etag: String::new(),
                },
                &self.admin,
            ))
            .await
            .unwrap();
    }
}

/// The review's findings: a deactivated user's requests stayed approvable and appliable, a
/// deleted user's pending request stayed open, and a deleted approver's approval kept counting.
/// Someone who leaves takes their open requests with them (cancelled, audited), and only
/// approvals of principals still active count.
async fn leaving_cancels_open_requests_and_approvals_stop_counting(b: Backend) {
    let w = world(b).await;
    w.set_policy(&w.prod, 1, true, false).await;
    // Pending, and approved-not-applied: both cancelled when the submitter is deactivated.
    let pending = w.submit(&w.alice, &w.prod).await;
    let approved = w.submit(&w.dave, &w.prod).await;
    w.approve(&w.bob, &approved.name, 1).await.unwrap();
    w.deactivate("alice").await;
    w.deactivate("dave").await;
    for cr in [&pending, &approved] {
        let got = w.get(&w.admin, &cr.name).await.unwrap();
        assert_eq!(state(&got), pb::ChangeRequestState::Cancelled, "{got:?}");
        let ev =
            w.s.audit_events()
                .into_iter()
                .find(|e| {
                    e.action == "change_request.cancelled"
                        && e.target_id.as_deref() == Some(cr.name.as_str())
                })
                .expect("the cancellation is audited");
        assert_eq!(ev.detail.as_deref(), Some("its submitter was deactivated"));
    }
    expect_code(
        w.approve(&w.carol, &pending.name, 1).await,
        Code::FailedPrecondition,
    );
    expect_code(
        w.apply(&w.flagstore, &approved.name).await,
        Code::FailedPrecondition,
    );
    let deactivated = w.s.audit_events().into_iter().find(|e| {
        e.action == "user.deactivated"
            && e.detail
                .as_deref()
                .is_some_and(|d| d.contains("1 open change request(s) cancelled"))
    });
    assert!(
        deactivated.is_some(),
        "the deactivation says what it cancelled"
    );
    // Deleting is then allowed, and leaves nothing open behind.
    w.delete_user("alice").await;

    // Two approvals needed: Bob approves, then leaves; his approval stops counting.
    w.set_policy(&w.prod, 2, false, false).await;
    let cr = w.submit(&w.flagstore, &w.prod).await;
    w.approve(&w.bob, &cr.name, 1).await.unwrap();
    w.deactivate("bob").await;
    w.delete_user("bob").await;
    let got = w.approve(&w.carol, &cr.name, 1).await.unwrap();
    assert_eq!(state(&got), pb::ChangeRequestState::Pending);
    assert_eq!(got.approvals, 1);

    // A service account deactivated: its open requests go too.
    w.s.service_accounts()
        .update_service_account(authed(
            pb::UpdateServiceAccountRequest {
                service_account: Some(pb::ServiceAccount {
                    name: w.flagstore_name.clone(),
                    active: false,
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["active".into()],
                }),
            },
            &w.admin,
        ))
        .await
        .unwrap();
    let got = w.get(&w.admin, &cr.name).await.unwrap();
    assert_eq!(state(&got), pb::ChangeRequestState::Cancelled);
}

async fn s_add(w: &World, member: &str) {
    w.s.add_member(&w.admin, &w.shop_admins, member).await;
}

async fn user_name(w: &World, username: &str) -> String {
    w.s.users()
        .get_user(authed(
            pb::GetUserRequest {
                name: format!("users/{username}"),
            },
            &w.admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
        .name
}

async fn override_rules(b: Backend) {
    let w = world(b).await;
    w.set_policy(&w.prod, 2, false, false).await;
    let cr = w.submit(&w.alice, &w.prod).await;
    let off = expect_code(
        w.override_(&w.admin, &cr.name, "hotfix").await,
        Code::PermissionDenied,
    );
    assert!(off.message().contains("override"), "{off:?}");

    w.set_policy(&w.prod, 2, false, true).await;
    let cr = w.submit(&w.alice, &w.prod).await;
    expect_code(
        w.override_(&w.bob, &cr.name, "I said so").await,
        Code::PermissionDenied,
    );
    expect_invalid(w.override_(&w.admin, &cr.name, "").await, "reason");
    w.approve(&w.bob, &cr.name, 1).await.unwrap();
    let done = w
        .override_(&w.admin, &cr.name, "incident 4711: checkout down")
        .await
        .unwrap();
    assert_eq!(state(&done), pb::ChangeRequestState::Approved);
    assert!(done.overridden);
    assert_eq!(done.override_reason, "incident 4711: checkout down");
    assert_eq!(done.approvals, 1);
    let ev =
        w.s.audit_events()
            .into_iter()
            .find(|e| e.action == "change_request.overridden")
            .expect("override audited");
    assert_eq!(ev.detail.as_deref(), Some("incident 4711: checkout down"));
    assert!(ev.after_json.unwrap().contains("\"overridden\":true"));

    // A Team Admin does not override their own request.
    let mine = w.submit(&w.admin, &w.prod).await;
    let own = w.override_(&w.admin, &mine.name, "mine").await;
    expect_code(own, Code::PermissionDenied);
}

async fn edits_discard_approvals_and_etags_guard_reviews(b: Backend) {
    let w = world(b).await;
    w.set_policy(&w.prod, 2, false, false).await;
    let cr = w.submit(&w.alice, &w.prod).await;
    let approved_once = w.approve(&w.bob, &cr.name, cr.revision).await.unwrap();
    assert_eq!(approved_once.approvals, 1);

    // Only the submitter edits, and a stale etag is refused.
    expect_code(w.edit(&w.bob, &cr, "off", "").await, Code::PermissionDenied);
    expect_code(w.edit(&w.alice, &cr, "off", &cr.etag).await, Code::Aborted);
    // An edit that changes nothing keeps the approvals.
    let same = w
        .edit(&w.alice, &cr, "on", &approved_once.etag)
        .await
        .unwrap();
    assert_eq!((same.approvals, same.revision), (1, 1));
    let edited = w
        .edit(&w.alice, &cr, "off", &approved_once.etag)
        .await
        .unwrap();
    assert_eq!(edited.revision, 2);
    assert_eq!(edited.approvals, 0, "editing discards approvals");
    assert_eq!(edited.payload, Some(payload("off")));
    assert_eq!(edited.reviews.len(), 1);
    assert!(!edited.reviews[0].current);

    // A review given on what the reviewer saw before the edit is refused.
    expect_code(
        w.approve(&w.carol, &cr.name, approved_once.revision).await,
        Code::Aborted,
    );
    // Bob may review the new revision.
    let again = w.approve(&w.bob, &cr.name, edited.revision).await.unwrap();
    assert_eq!(again.approvals, 1);
    let done = w.approve(&w.carol, &cr.name, again.revision).await.unwrap();
    assert_eq!(state(&done), pb::ChangeRequestState::Approved);
    // Decided requests are not edited.
    expect_code(
        w.edit(&w.alice, &cr, "maybe", "").await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        w.actions(&cr.name),
        [
            "change_request.submitted",
            "change_request.approved",
            "change_request.updated",
            "change_request.approved",
            "change_request.approved"
        ]
    );
}

async fn retried_submissions_are_idempotent(b: Backend) {
    let w = world(b).await;
    let submit = |key: &str, value: &str| {
        let mut api = w.api();
        let r = authed(
            pb::SubmitChangeRequestRequest {
                request_id: key.into(),
                change_request: Some(pb::ChangeRequest {
                    environment: w.prod.clone(),
                    feature_key: "CHECKOUT_V2".into(),
                    kind: pb::ChangeKind::ChangeValue as i32,
                    payload: Some(payload(value)),
                    title: "retry me".into(),
                    ..Default::default()
                }),
            },
            &w.alice,
        );
        async move { api.submit_change_request(r).await }
    };
    let first = submit("ci-run-42", "on").await.unwrap().into_inner();
    let before = w.s.audit_count();
    let again = submit("ci-run-42", "off").await.unwrap().into_inner();
    assert_eq!(again, first, "a retry returns the first request");
    assert_eq!(w.s.audit_count(), before, "and writes nothing");
    let other = submit("ci-run-43", "on").await.unwrap().into_inner();
    assert_ne!(
        other.change_request.unwrap().name,
        first.change_request.unwrap().name
    );
    expect_invalid(submit("not ok!", "on").await, "request_id");
}

async fn service_accounts_do_not_review(b: Backend) {
    let w = world(b).await;
    // Even where peers may review, the flag store's key (a Requester in the group, holding
    // the permission) is no second pair of eyes.
    w.set_policy(&w.prod, 1, true, true).await;
    let cr = w.submit(&w.alice, &w.prod).await;
    let st = expect_code(
        w.approve(&w.flagstore, &cr.name, 1).await,
        Code::PermissionDenied,
    );
    assert!(st.message().contains("service accounts"), "{st:?}");
    expect_code(
        w.reject(&w.flagstore, &cr.name, "no").await,
        Code::PermissionDenied,
    );
    // A service account may still submit, and people review it.
    let by_ci = w.submit(&w.flagstore, &w.prod).await;
    assert_eq!(by_ci.submitter, w.flagstore_name);
    let ok = w.approve(&w.dave, &by_ci.name, 1).await.unwrap();
    assert_eq!(state(&ok), pb::ChangeRequestState::Approved);
}

async fn feature_changes_take_the_strictest_policy(b: Backend) {
    let w = world(b).await;
    w.set_policy(&w.dev, 0, true, true).await;
    w.set_policy(&w.prod, 2, false, true).await;
    // Deleting a feature reaches prod too: naming dev does not make it free.
    let del = w
        .try_submit(&w.alice, &w.dev, pb::ChangeKind::DeleteFeature, "x")
        .await
        .unwrap();
    assert_eq!(state(&del), pb::ChangeRequestState::Pending);
    assert_eq!(del.required_approvals, 2);
    assert!(!del.peer_review);
    assert!(del.admin_override);
    // A value change in dev is dev's business.
    let val = w.submit(&w.alice, &w.dev).await;
    assert_eq!(state(&val), pb::ChangeRequestState::Approved);
}

async fn shutdown_ends_open_watches(b: Backend) {
    let w = world(b).await;
    let cr = w.submit(&w.alice, &w.prod).await;
    let mut stream = w
        .api()
        .watch_change_request(authed(
            pb::WatchChangeRequestRequest {
                name: cr.name.clone(),
            },
            &w.alice,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(next(&mut stream).await.is_some());
    let World { s, .. } = w;
    tokio::time::timeout(Duration::from_secs(10), s.stop())
        .await
        .expect("a pending watch does not hold the shutdown open");
    let end = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the stream ends");
    match end {
        Err(st) => assert_eq!(st.code(), Code::Unavailable, "{st:?}"),
        Ok(None) => {}
        Ok(Some(m)) => panic!("unexpected message {m:?}"),
    }
}

async fn cancel_rules(b: Backend) {
    let w = world(b).await;
    let cr = w.submit(&w.alice, &w.prod).await;
    let cancel = |token: String, name: String, etag: String| {
        let mut api = w.api();
        async move {
            api.cancel_change_request(authed(
                pb::CancelChangeRequestRequest {
                    name,
                    etag,
                    reason: "not needed".into(),
                },
                &token,
            ))
            .await
            .map(|r| r.into_inner().change_request.unwrap())
        }
    };
    expect_code(
        cancel(w.bob.clone(), cr.name.clone(), String::new()).await,
        Code::PermissionDenied,
    );
    expect_code(
        cancel(w.alice.clone(), cr.name.clone(), "W/\"9\"".into()).await,
        Code::Aborted,
    );
    let c = cancel(w.alice.clone(), cr.name.clone(), cr.etag.clone())
        .await
        .unwrap();
    assert_eq!(state(&c), pb::ChangeRequestState::Cancelled);
    expect_code(
        cancel(w.alice.clone(), cr.name.clone(), String::new()).await,
        Code::FailedPrecondition,
    );
    expect_code(
        w.approve(&w.bob, &cr.name, 1).await,
        Code::FailedPrecondition,
    );
    // A Team Admin cancels anyone's request, approved ones included.
    let cr2 = w.submit(&w.alice, &w.prod).await;
    w.approve(&w.bob, &cr2.name, 1).await.unwrap();
    let c2 = cancel(w.admin.clone(), cr2.name.clone(), String::new())
        .await
        .unwrap();
    assert_eq!(state(&c2), pb::ChangeRequestState::Cancelled);
    expect_code(
        w.apply(&w.flagstore, &cr2.name).await,
        Code::FailedPrecondition,
    );
    let ev =
        w.s.audit_events()
            .into_iter()
            .rfind(|e| e.action == "change_request.cancelled")
            .unwrap();
    assert_eq!(ev.detail.as_deref(), Some("not needed"));
}

async fn no_approvals_needed_and_expiry(b: Backend) {
    let w = world(b).await;
    w.set_policy(&w.dev, 0, false, false).await;
    let cr = w.submit(&w.alice, &w.dev).await;
    assert_eq!(state(&cr), pb::ChangeRequestState::Approved);
    assert!(cr.decide_time.is_some());
    w.apply(&w.flagstore, &cr.name).await.unwrap();

    // A pending request past its time to live expires (the clock is moved by editing the row).
    let cr = w.submit(&w.alice, &w.prod).await;
    let id = cr.name.trim_start_matches("changeRequests/").to_owned();
    w.s.store()
        .read(|c| {
            use diesel::prelude::*;
            diesel::sql_query(format!(
                "UPDATE change_requests SET expires_at = 1 WHERE id = '{id}'"
            ))
            .execute(c)
            .map_err(fluxgate_store::StoreError::from)
        })
        .unwrap();
    expect_code(
        w.approve(&w.bob, &cr.name, 1).await,
        Code::FailedPrecondition,
    );
    let mut expired = None;
    for _ in 0..50 {
        let now = w.get(&w.alice, &cr.name).await.unwrap();
        if state(&now) == pb::ChangeRequestState::Expired {
            expired = Some(now);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(expired.is_some(), "the sweeper expires it");
    assert_eq!(
        w.actions(&cr.name),
        ["change_request.submitted", "change_request.expired"]
    );
}

/// The stream's next message, waiting at most 10 s; `None` when it ended.
async fn next(
    s: &mut tonic::Streaming<pb::WatchChangeRequestResponse>,
) -> Option<pb::WatchChangeRequestResponse> {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("a message within 10 s")
        .unwrap()
}

async fn watch_streams_until_final(b: Backend) {
    let w = world(b).await;
    let cr = w.submit(&w.alice, &w.prod).await;
    let mut stream = w
        .api()
        .watch_change_request(authed(
            pb::WatchChangeRequestRequest {
                name: cr.name.clone(),
            },
            &w.flagstore,
        ))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream).await.unwrap();
    assert_eq!(
        state(first.change_request.as_ref().unwrap()),
        pb::ChangeRequestState::Pending
    );
    w.approve(&w.bob, &cr.name, 1).await.unwrap();
    let second = next(&mut stream).await.unwrap();
    assert_eq!(
        state(second.change_request.as_ref().unwrap()),
        pb::ChangeRequestState::Approved
    );
    w.apply(&w.flagstore, &cr.name).await.unwrap();
    let third = next(&mut stream).await.unwrap();
    assert_eq!(
        state(third.change_request.as_ref().unwrap()),
        pb::ChangeRequestState::Applied
    );
    assert!(
        next(&mut stream).await.is_none(),
        "the stream ends at a final state"
    );

    // Watching a finished request sends it once and ends.
    let mut done = w
        .api()
        .watch_change_request(authed(
            pb::WatchChangeRequestRequest {
                name: cr.name.clone(),
            },
            &w.alice,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(next(&mut done).await.is_some());
    assert!(next(&mut done).await.is_none());

    // Outsiders cannot watch; unknown requests are NOT_FOUND.
    expect_code(
        w.api()
            .watch_change_request(authed(
                pb::WatchChangeRequestRequest {
                    name: cr.name.clone(),
                },
                &w.erin,
            ))
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        w.api()
            .watch_change_request(authed(
                pb::WatchChangeRequestRequest {
                    name: format!("changeRequests/{}", uuid::Uuid::now_v7()),
                },
                &w.alice,
            ))
            .await,
        Code::NotFound,
    );
}

/// Many watchers of one request share its feed: each change is read from the database once,
/// whoever watches, and each watcher is still held to its own rights.
async fn watchers_share_one_read_per_change(b: Backend) {
    let w = world(b).await;
    let cr = w.submit(&w.alice, &w.prod).await;
    let watchers = [&w.alice, &w.bob, &w.carol, &w.dave, &w.flagstore, &w.admin];
    let mut streams = Vec::new();
    for i in 0..36 {
        let who = watchers[i % watchers.len()];
        let mut stream = w
            .api()
            .watch_change_request(authed(
                pb::WatchChangeRequestRequest {
                    name: cr.name.clone(),
                },
                who,
            ))
            .await
            .unwrap()
            .into_inner();
        let first = next(&mut stream).await.unwrap();
        assert_eq!(
            state(first.change_request.as_ref().unwrap()),
            pb::ChangeRequestState::Pending
        );
        streams.push((i % watchers.len(), stream));
    }
    let metric = |k: &'static str| {
        let s = &w.s;
        async move { s.metric(k).await.unwrap_or(0.0) }
    };
    assert_eq!(metric("fluxgate_watch_streams").await, 36.0);
    assert_eq!(metric("fluxgate_watch_feeds").await, 1.0);
    let reads_before = metric("fluxgate_watch_reads_total").await;

    // Dave (a watcher six times over) is deactivated: the request does not change, so nothing
    // is read, and his streams end at the next change.
    let dave = user_name(&w, "dave").await;
    w.s.users()
        .deactivate_user(authed(
            pb::DeactivateUserRequest {
                name: dave,
                etag: String::new(),
            },
            &w.admin,
        ))
        .await
        .unwrap();
    w.approve(&w.bob, &cr.name, 1).await.unwrap();
    for (who, stream) in &mut streams {
        if *who == 3 {
            let status = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("an answer within 10 s")
                .unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        } else {
            let m = next(stream).await.unwrap();
            assert_eq!(
                state(m.change_request.as_ref().unwrap()),
                pb::ChangeRequestState::Approved
            );
        }
    }
    w.apply(&w.flagstore, &cr.name).await.unwrap();
    for (who, stream) in &mut streams {
        if *who == 3 {
            continue;
        }
        let m = next(stream).await.unwrap();
        assert_eq!(
            state(m.change_request.as_ref().unwrap()),
            pb::ChangeRequestState::Applied
        );
        assert!(
            next(stream).await.is_none(),
            "the stream ends at a final state"
        );
    }
    // Two changes, thirty watchers still listening: a read or two per change (the write's own
    // announcement and the directory's catch-up may both name it), not one per watcher.
    let reads = metric("fluxgate_watch_reads_total").await - reads_before;
    assert!(
        (2.0..=4.0).contains(&reads),
        "{reads} reads for two changes"
    );
    // The feed ends with the request, and the streams are counted out.
    let mut gone = false;
    for _ in 0..100 {
        if metric("fluxgate_watch_feeds").await == 0.0
            && metric("fluxgate_watch_streams").await == 0.0
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        gone,
        "feeds and streams are counted out once the request is final: {} feeds, {} streams",
        metric("fluxgate_watch_feeds").await,
        metric("fluxgate_watch_streams").await
    );
}

async fn concurrent_reviews_never_exceed_the_rules(b: Backend) {
    let w = world(b).await;
    w.set_policy(&w.prod, 2, false, false).await;
    for _ in 0..3 {
        // Three approvers at once on a request that needs two.
        let cr = w.submit(&w.alice, &w.prod).await;
        let calls = [w.bob.clone(), w.carol.clone(), w.admin.clone()].map(|t| {
            let mut api = w.api();
            let name = cr.name.clone();
            tokio::spawn(async move {
                api.approve_change_request(authed(
                    pb::ApproveChangeRequestRequest {
                        name,
                        revision: 1,
                        comment: String::new(),
                    },
                    &t,
                ))
                .await
            })
        });
        let mut ok = 0;
        for c in calls {
            match c.await.unwrap() {
                Ok(_) => ok += 1,
                Err(s) => assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}"),
            }
        }
        assert_eq!(ok, 2, "exactly the two approvals needed land");
        let now = w.get(&w.alice, &cr.name).await.unwrap();
        assert_eq!(state(&now), pb::ChangeRequestState::Approved);
        assert_eq!((now.approvals, now.reviews.len()), (2, 2));

        // An approval racing a rejection: exactly one decision stands.
        let w2 = w.submit(&w.alice, &w.dev).await;
        let mut a = w.api();
        let mut r = w.api();
        let (n1, n2) = (w2.name.clone(), w2.name.clone());
        let (bob, carol) = (w.bob.clone(), w.carol.clone());
        let (ra, rr) = tokio::join!(
            async move {
                a.approve_change_request(authed(
                    pb::ApproveChangeRequestRequest {
                        name: n1,
                        revision: 1,
                        ..Default::default()
                    },
                    &bob,
                ))
                .await
            },
            async move {
                r.reject_change_request(authed(
                    pb::RejectChangeRequestRequest {
                        name: n2,
                        comment: "no".into(),
                        ..Default::default()
                    },
                    &carol,
                ))
                .await
            }
        );
        let final_state = state(&w.get(&w.alice, &w2.name).await.unwrap());
        match (ra.is_ok(), rr.is_ok()) {
            (true, false) => assert_eq!(final_state, pb::ChangeRequestState::Approved),
            (false, true) => assert_eq!(final_state, pb::ChangeRequestState::Rejected),
            other => panic!("both or neither decision landed: {other:?}"),
        }

        // A review racing an edit: the approval never survives onto content it did not see.
        let w3 = w.submit(&w.alice, &w.prod).await;
        let mut a = w.api();
        let (n, revision, bob) = (w3.name.clone(), w3.revision, w.bob.clone());
        let (ra, re) = tokio::join!(
            async move {
                a.approve_change_request(authed(
                    pb::ApproveChangeRequestRequest {
                        name: n,
                        revision,
                        comment: String::new(),
                    },
                    &bob,
                ))
                .await
            },
            w.edit(&w.alice, &w3, "edited", "")
        );
        re.unwrap();
        if let Err(s) = &ra {
            assert_eq!(s.code(), Code::Aborted, "{s:?}");
        }
        let now = w.get(&w.alice, &w3.name).await.unwrap();
        assert_eq!(now.revision, 2);
        assert_eq!(now.approvals, 0);
        assert_eq!(now.reviews.len(), usize::from(ra.is_ok()));
    }
}

async fn listing_and_visibility(b: Backend) {
    let w = world(b).await;
    w.set_policy(&w.prod, 2, false, false).await;
    let a = w.submit(&w.alice, &w.prod).await;
    let b2 = w.submit(&w.alice, &w.dev).await;
    let c = w.submit(&w.bob, &w.prod).await;
    w.approve(&w.bob, &a.name, 1).await.unwrap();
    w.reject(&w.carol, &b2.name, "no").await.unwrap();

    let names = |r: &pb::ListChangeRequestsResponse| -> Vec<String> {
        r.change_requests.iter().map(|c| c.name.clone()).collect()
    };
    let all = w
        .list(&w.alice, pb::ListChangeRequestsRequest::default())
        .await;
    assert_eq!(
        names(&all),
        [c.name.clone(), b2.name.clone(), a.name.clone()],
        "newest first"
    );
    let pending = w
        .list(
            &w.alice,
            pb::ListChangeRequestsRequest {
                states: vec![pb::ChangeRequestState::Pending as i32],
                ..Default::default()
            },
        )
        .await;
    assert_eq!(names(&pending), [c.name.clone(), a.name.clone()]);
    let in_dev = w
        .list(
            &w.alice,
            pb::ListChangeRequestsRequest {
                environment: w.dev.clone(),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(names(&in_dev), std::slice::from_ref(&b2.name));
    let by_bob = w
        .list(
            &w.alice,
            pb::ListChangeRequestsRequest {
                submitter: "users/bob".into(),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(names(&by_bob), std::slice::from_ref(&c.name));
    let awaiting = |token: String| {
        let w = &w;
        async move {
            names(
                &w.list(
                    &token,
                    pb::ListChangeRequestsRequest {
                        awaiting_my_review: true,
                        ..Default::default()
                    },
                )
                .await,
            )
        }
    };
    // Bob reviewed `a` and submitted `c`; Carol may review both; Alice only `c`? No: she is a
    // Requester without peer review. Erin lacks the permission.
    assert!(awaiting(w.bob.clone()).await.is_empty());
    assert_eq!(
        awaiting(w.carol.clone()).await,
        [c.name.clone(), a.name.clone()]
    );
    assert!(awaiting(w.alice.clone()).await.is_empty());
    assert!(awaiting(w.erin.clone()).await.is_empty());
    // Erin sees nothing of an environment she has no rights in.
    assert!(
        w.list(&w.erin, pb::ListChangeRequestsRequest::default())
            .await
            .change_requests
            .is_empty()
    );
    expect_code(w.get(&w.erin, &a.name).await, Code::PermissionDenied);

    // Pages.
    let p1 = w
        .list(
            &w.alice,
            pb::ListChangeRequestsRequest {
                page_size: 2,
                ..Default::default()
            },
        )
        .await;
    assert_eq!(p1.change_requests.len(), 2);
    let p2 = w
        .list(
            &w.alice,
            pb::ListChangeRequestsRequest {
                page_size: 2,
                page_token: p1.next_page_token.clone(),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(names(&p2), std::slice::from_ref(&a.name));
    assert!(p2.next_page_token.is_empty());
    expect_invalid(
        w.api()
            .list_change_requests(authed(
                pb::ListChangeRequestsRequest {
                    page_size: 2,
                    page_token: p1.next_page_token,
                    awaiting_my_review: true,
                    ..Default::default()
                },
                &w.alice,
            ))
            .await,
        "page_token",
    );
    expect_invalid(
        w.api()
            .list_change_requests(authed(
                pb::ListChangeRequestsRequest {
                    states: vec![99],
                    environment: "environments/x".into(),
                    ..Default::default()
                },
                &w.alice,
            ))
            .await,
        "states[0]",
    );
}

async fn metrics_per_environment_and_reviewer(b: Backend) {
    let w = world(b).await;
    let a = w.submit(&w.alice, &w.prod).await;
    w.approve(&w.bob, &a.name, 1).await.unwrap();
    let b2 = w.submit(&w.alice, &w.prod).await;
    w.reject(&w.bob, &b2.name, "no").await.unwrap();
    let c = w.submit(&w.alice, &w.dev).await;
    w.approve(&w.carol, &c.name, 1).await.unwrap();
    w.submit(&w.alice, &w.dev).await; // stays pending

    let get = |token: String, env: String| {
        let mut api = w.api();
        async move {
            api.get_approval_metrics(authed(
                pb::GetApprovalMetricsRequest {
                    environment: env,
                    ..Default::default()
                },
                &token,
            ))
            .await
            .map(|r| r.into_inner())
        }
    };
    // Approval metrics are for Approvers and Team Admins.
    expect_code(
        get(w.alice.clone(), String::new()).await,
        Code::PermissionDenied,
    );
    let m = get(w.bob.clone(), String::new()).await.unwrap();
    let overall = m.overall.unwrap();
    assert_eq!(
        (
            overall.submitted,
            overall.approved,
            overall.rejected,
            overall.pending
        ),
        (4, 2, 1, 1)
    );
    assert_eq!(overall.time_to_first_review.unwrap().count, 3);
    assert_eq!(overall.time_to_decision.as_ref().unwrap().count, 3);
    assert!(overall.oldest_pending_age.is_some());
    let envs: Vec<(String, i64, i64)> = m
        .environments
        .iter()
        .map(|e| (e.environment.clone(), e.submitted, e.pending))
        .collect();
    let mut want = vec![(w.dev.clone(), 2, 1), (w.prod.clone(), 2, 0)];
    want.sort();
    assert_eq!(envs, want);
    assert_eq!(m.reviewers[0].reviewer, w.bob_name);
    assert_eq!(
        (m.reviewers[0].approvals, m.reviewers[0].rejections),
        (1, 1)
    );
    assert_eq!(m.reviewers[0].response_time.as_ref().unwrap().count, 2);
    assert_eq!(m.reviewers.len(), 2);

    // The activity report carries the same response times for Approvers.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let report =
        w.s.audit()
            .get_activity_report(authed(
                pb::GetActivityReportRequest {
                    start_time: Some(prost_types::Timestamp {
                        seconds: now - 3600,
                        nanos: 0,
                    }),
                    end_time: Some(prost_types::Timestamp {
                        seconds: now + 3600,
                        nanos: 0,
                    }),
                    top: 0,
                },
                &w.carol,
            ))
            .await
            .unwrap()
            .into_inner();
    let times = report.approval_response_times.unwrap();
    assert_eq!(times.overall.unwrap().submitted, 4);
    assert_eq!(times.reviewers.len(), 2);

    let prod_only = get(w.admin.clone(), w.prod.clone()).await.unwrap();
    assert_eq!(prod_only.overall.unwrap().submitted, 2);
    assert_eq!(prod_only.reviewers.len(), 1);
    expect_invalid(get(w.admin.clone(), "prod".into()).await, "environment");
}

async fn bad_input_is_refused_and_writes_nothing(b: Backend) {
    let w = world(b).await;
    let before = w.s.audit_count();
    let r = w
        .api()
        .submit_change_request(authed(
            pb::SubmitChangeRequestRequest {
                request_id: String::new(),
                change_request: Some(pb::ChangeRequest {
                    environment: "portfolios/x".into(),
                    feature_key: "9 lives".into(),
                    kind: pb::ChangeKind::ChangeValue as i32,
                    payload: None,
                    title: String::new(),
                    ..Default::default()
                }),
            },
            &w.alice,
        ))
        .await;
    let st = expect_code(r, Code::InvalidArgument);
    for f in [
        "change_request.environment",
        "change_request.feature_key",
        "change_request.payload",
        "change_request.title",
    ] {
        assert!(st.message().contains(f), "{f} in {st:?}");
    }
    expect_invalid(
        w.try_submit(&w.alice, &w.prod, pb::ChangeKind::Unspecified, "x")
            .await,
        "change_request.kind",
    );
    let big = "x".repeat(70 * 1024);
    expect_invalid(
        w.try_submit(&w.alice, &w.prod, pb::ChangeKind::ChangeValue, &big)
            .await,
        "change_request.payload",
    );
    expect_code(
        w.try_submit(
            &w.alice,
            &format!(
                "{}/environments/{}",
                w.prod.rsplit_once("/environments/").unwrap().0,
                uuid::Uuid::now_v7()
            ),
            pb::ChangeKind::ChangeValue,
            "x",
        )
        .await,
        Code::NotFound,
    );
    let bad_policy = w
        .api()
        .update_approval_policy(authed(
            pb::UpdateApprovalPolicyRequest {
                policy: Some(pb::ApprovalPolicy {
                    name: format!("{}/approvalPolicy", w.prod),
                    required_approvals: 11,
                    pending_ttl: Some(prost_types::Duration {
                        seconds: 5,
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
                update_mask: None,
            },
            &w.admin,
        ))
        .await;
    let st = expect_code(bad_policy, Code::InvalidArgument);
    assert!(st.message().contains("policy.required_approvals"), "{st:?}");
    assert!(st.message().contains("policy.pending_ttl"), "{st:?}");
    for name in ["", "changeRequests/x", "users/alice"] {
        expect_code(w.get(&w.alice, name).await, Code::InvalidArgument);
        expect_code(w.approve(&w.bob, name, 1).await, Code::InvalidArgument);
    }
    assert_eq!(w.s.audit_count(), before, "refused calls write nothing");
    let cr = w.submit(&w.alice, &w.prod).await;
    let before = w.s.audit_count();
    // An approval names the revision it approves.
    expect_invalid(w.approve(&w.bob, &cr.name, 0).await, "revision");
    expect_invalid(w.approve(&w.bob, &cr.name, -1).await, "revision");
    assert_eq!(w.s.audit_count(), before, "refused calls write nothing");

    // Policies: Team Admins only; the default until set; etags.
    let get = w
        .api()
        .get_approval_policy(authed(
            pb::GetApprovalPolicyRequest {
                name: format!("{}/approvalPolicy", w.dev),
            },
            &w.alice,
        ))
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    assert_eq!(
        (get.required_approvals, get.peer_review, get.admin_override),
        (1, false, false)
    );
    assert_eq!(get.pending_ttl.unwrap().seconds, 7 * 86_400);
    assert!(get.update_time.is_none());
    let upd = |token: &str, etag: &str| {
        let mut api = w.api();
        let req = authed(
            pb::UpdateApprovalPolicyRequest {
                policy: Some(pb::ApprovalPolicy {
                    name: format!("{}/approvalPolicy", w.dev),
                    required_approvals: 3,
                    etag: etag.into(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["required_approvals".into()],
                }),
            },
            token,
        );
        async move { api.update_approval_policy(req).await }
    };
    expect_code(upd(&w.bob, "").await, Code::PermissionDenied);
    expect_code(upd(&w.admin, "W/\"5\"").await, Code::Aborted);
    let set = upd(&w.admin, &get.etag)
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    assert_eq!(set.required_approvals, 3);
    assert_eq!(
        set.pending_ttl.unwrap().seconds,
        7 * 86_400,
        "unmasked fields keep their value"
    );
    assert_eq!(
        w.actions(&format!("{}/approvalPolicy", w.dev)),
        ["approval_policy.updated"]
    );
}

async fn deleting_an_environment_closes_its_requests(b: Backend) {
    let w = world(b).await;
    let cr = w.submit(&w.alice, &w.dev).await;
    let del = |force: bool| {
        let mut cat = w.s.catalog();
        let req = authed(
            pb::DeleteEnvironmentRequest {
                name: w.dev.clone(),
                force,
                ..Default::default()
            },
            &w.admin,
        );
        async move { cat.delete_environment(req).await }
    };
    let refused = expect_code(del(false).await, Code::FailedPrecondition);
    assert!(
        refused.message().contains("open change request"),
        "{refused:?}"
    );
    del(true).await.unwrap();
    let now = w.get(&w.alice, &cr.name).await;
    // The environment is gone, so nobody below Team Admin holds READ there; the submitter
    // still sees their own request.
    let now = now.unwrap();
    assert_eq!(state(&now), pb::ChangeRequestState::Cancelled);
    assert!(
        w.actions(&cr.name)
            .contains(&"change_request.cancelled".to_string())
    );
}

async fn a_watch_on_another_replica_sees_decisions(b: Backend) {
    let w = world(b.clone()).await;
    // A second server on the same database, as a replica.
    let (mut config, dir) = test_config(&b);
    config.database_url = w.s.database_url.clone();
    let replica = TestServer::start_with(config, dir).await;
    let cr = w.submit(&w.alice, &w.prod).await;
    let mut stream = replica
        .approvals()
        .watch_change_request(authed(
            pb::WatchChangeRequestRequest {
                name: cr.name.clone(),
            },
            &w.alice,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        state(
            next(&mut stream)
                .await
                .unwrap()
                .change_request
                .as_ref()
                .unwrap()
        ),
        pb::ChangeRequestState::Pending
    );
    // Decided through the first server; the replica hears of it through the change log.
    w.approve(&w.bob, &cr.name, 1).await.unwrap();
    assert_eq!(
        state(
            next(&mut stream)
                .await
                .unwrap()
                .change_request
                .as_ref()
                .unwrap()
        ),
        pb::ChangeRequestState::Approved
    );
    // Applied through the replica; the first server's view follows.
    let mut api = replica.approvals();
    api.mark_change_request_applied(authed(
        pb::MarkChangeRequestAppliedRequest {
            name: cr.name.clone(),
        },
        &w.flagstore,
    ))
    .await
    .unwrap();
    assert_eq!(
        state(
            next(&mut stream)
                .await
                .unwrap()
                .change_request
                .as_ref()
                .unwrap()
        ),
        pb::ChangeRequestState::Applied
    );
    assert!(next(&mut stream).await.is_none());
    expect_code(
        w.apply(&w.flagstore, &cr.name).await,
        Code::FailedPrecondition,
    );
    replica.stop().await;
}

/// The subjects of the messages queued for `recipient`.
async fn subjects(w: &World, recipient: &str) -> Vec<String> {
    w.s.email()
        .list_emails(authed(
            pb::ListEmailsRequest {
                recipient: recipient.into(),
                page_size: 50,
                ..Default::default()
            },
            &w.admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .emails
        .into_iter()
        .map(|e| e.subject)
        .collect()
}

/// Whoever may approve a request hears of it (the engine decides who): not its submitter,
/// not a Requester where peers do not review, not someone without the permission, not a key;
/// an edit asks again; the decision reaches the submitter.
async fn reviewers_are_told_and_the_submitter_hears_back(b: Backend) {
    let w = world(b).await;
    // Carol would rather not be asked.
    let off = pb::NotificationPreferences {
        review_requests: false,
        decisions: true,
        review_digest: false,
    };
    let prefs = set_preferences(&w, &w.carol, off, &["review_requests"]).await;
    assert!(!prefs.review_requests && prefs.decisions);
    let cr = w.submit(&w.alice, &w.dev).await;
    let asked = |v: &[String]| {
        v.iter()
            .filter(|s| s.starts_with("Review requested: "))
            .count()
    };
    for (who, n) in [
        ("bob@example.com", 1),
        ("carol@example.com", 0),
        ("admin@fluxgate.local", 1),
        ("alice@example.com", 0),
        ("dave@example.com", 0),
        ("erin@example.com", 0),
    ] {
        assert_eq!(asked(&subjects(&w, who).await), n, "{who}");
    }
    let events = w.s.audit_events();
    let submitted = events
        .iter()
        .find(|e| e.action == "change_request.submitted")
        .unwrap();
    assert_eq!(submitted.detail.as_deref(), Some("2 reviewer(s) notified"));
    assert!(events.iter().any(|e| e.action == "user.preferences_updated"
        && e.detail.as_deref() == Some("review emails off, decision emails on")));
    // Peers review where the policy says so: dave, a Requester in the group, is asked too.
    w.set_policy(&w.prod, 1, true, false).await;
    w.submit(&w.alice, &w.prod).await;
    assert_eq!(asked(&subjects(&w, "dave@example.com").await), 1);

    let done = w.approve(&w.bob, &cr.name, cr.revision).await.unwrap();
    assert_eq!(done.state, pb::ChangeRequestState::Approved as i32);
    let alice = subjects(&w, "alice@example.com").await;
    assert!(
        alice
            .iter()
            .any(|s| s.starts_with("Your change request was approved: ")),
        "{alice:?}"
    );
    let bob = w.submit(&w.bob, &w.dev).await;
    w.reject(&w.carol, &bob.name, "not now").await.unwrap();
    let told = subjects(&w, "bob@example.com").await;
    assert!(
        told.iter()
            .any(|s| s.starts_with("Your change request was rejected: ")),
        "{told:?}"
    );
    w.s.stop().await;
}

/// A submission naming reviewers, as `token`.
async fn submit_naming(
    w: &World,
    token: &str,
    env: &str,
    reviewers: &[&str],
) -> Result<pb::ChangeRequest, Status> {
    w.api()
        .submit_change_request(authed(
            pb::SubmitChangeRequestRequest {
                request_id: String::new(),
                change_request: Some(pb::ChangeRequest {
                    environment: env.into(),
                    feature_key: "CHECKOUT_V2".into(),
                    kind: pb::ChangeKind::ChangeValue as i32,
                    payload: Some(payload("on")),
                    title: "Named reviewers".into(),
                    requested_reviewers: reviewers.iter().map(|r| r.to_string()).collect(),
                    ..Default::default()
                }),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().change_request.unwrap())
}

async fn set_named_policy(
    w: &World,
    env: &str,
    required: i32,
) -> Result<pb::UpdateApprovalPolicyResponse, Status> {
    w.api()
        .update_approval_policy(authed(
            pb::UpdateApprovalPolicyRequest {
                policy: Some(pb::ApprovalPolicy {
                    name: format!("{env}/approvalPolicy"),
                    required_approvals: required,
                    require_requested_reviewer: true,
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec![
                        "required_approvals".into(),
                        "require_requested_reviewer".into(),
                    ],
                }),
            },
            &w.admin,
        ))
        .await
        .map(|r| r.into_inner())
}

/// Reviewers named on submission are the ones asked; each must be one who may review; a policy
/// can require one of them among the approvers.
async fn named_reviewers_are_asked_and_can_be_required(b: Backend) {
    let w = world(b).await;
    let carol = w.s.login("carol", PW).await.user.unwrap().name;
    let cr = submit_naming(&w, &w.alice, &w.dev, &["users/carol"])
        .await
        .unwrap();
    assert_eq!(cr.requested_reviewers, [carol]);
    assert!(!cr.require_requested_reviewer);
    let asked = |v: Vec<String>| {
        v.iter()
            .filter(|s| s.starts_with("Review requested: "))
            .count()
    };
    assert_eq!(asked(subjects(&w, "carol@example.com").await), 1);
    assert_eq!(
        asked(subjects(&w, "bob@example.com").await),
        0,
        "only the named are asked"
    );

    // Only someone who may review this request can be named.
    for (who, why) in [
        ("users/dave", "cannot review"), // a Requester, and peers do not review here
        ("users/erin", "cannot review"), // no permission in this environment
        ("users/alice", "cannot review"), // the submitter
        ("users/nobody", "no such user"),
    ] {
        let st = submit_naming(&w, &w.alice, &w.dev, &[who])
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument, "{who}: {st:?}");
        assert!(st.message().contains(why), "{who}: {}", st.message());
        expect_invalid::<()>(Err(st), "change_request.requested_reviewers[0]");
    }
    let eleven: Vec<&str> = std::iter::repeat_n("users/carol", 11).collect();
    expect_invalid(
        submit_naming(&w, &w.alice, &w.dev, &eleven).await,
        "change_request.requested_reviewers",
    );

    // The policy requires a named reviewer: none named is refused; another's approval is not
    // enough; the named one's is.
    expect_invalid(
        set_named_policy(&w, &w.prod, 0).await,
        "policy.require_requested_reviewer",
    );
    let policy = set_named_policy(&w, &w.prod, 1)
        .await
        .unwrap()
        .policy
        .unwrap();
    assert!(policy.require_requested_reviewer);
    expect_invalid(
        submit_naming(&w, &w.alice, &w.prod, &[]).await,
        "change_request.requested_reviewers",
    );
    let cr = submit_naming(&w, &w.alice, &w.prod, &["users/carol"])
        .await
        .unwrap();
    assert!(cr.require_requested_reviewer);
    let by_bob = w.approve(&w.bob, &cr.name, cr.revision).await.unwrap();
    assert_eq!(
        by_bob.state,
        pb::ChangeRequestState::Pending as i32,
        "bob was not asked"
    );
    assert_eq!(by_bob.approvals, 1);
    let by_carol = w.approve(&w.carol, &cr.name, cr.revision).await.unwrap();
    assert_eq!(by_carol.state, pb::ChangeRequestState::Approved as i32);

    // An edit may name others; it is a new round, asked anew.
    let cr = submit_naming(&w, &w.alice, &w.prod, &["users/carol"])
        .await
        .unwrap();
    let edited = w
        .api()
        .update_change_request(authed(
            pb::UpdateChangeRequestRequest {
                change_request: Some(pb::ChangeRequest {
                    name: cr.name.clone(),
                    requested_reviewers: vec!["users/bob".into()],
                    etag: cr.etag.clone(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["requested_reviewers".into()],
                }),
            },
            &w.alice,
        ))
        .await
        .unwrap()
        .into_inner()
        .change_request
        .unwrap();
    assert_eq!(edited.revision, cr.revision + 1);
    assert_eq!(
        edited.requested_reviewers,
        std::slice::from_ref(&w.bob_name)
    );
    let done = w
        .approve(&w.bob, &edited.name, edited.revision)
        .await
        .unwrap();
    assert_eq!(done.state, pb::ChangeRequestState::Approved as i32);
    w.s.stop().await;
}

async fn set_preferences(
    w: &World,
    token: &str,
    p: pb::NotificationPreferences,
    paths: &[&str],
) -> pb::NotificationPreferences {
    w.s.auth()
        .update_notification_preferences(authed(
            pb::UpdateNotificationPreferencesRequest {
                preferences: Some(p),
                update_mask: Some(FieldMask {
                    paths: paths.iter().map(|p| p.to_string()).collect(),
                }),
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .preferences
        .unwrap()
}

/// A reviewer who chose the daily digest gets one email a day listing what they may review,
/// and no email per request.
async fn a_daily_digest_instead_of_each_request(b: Backend) {
    let w = world_with(b, |c| {
        c.email.digest_hour_utc = 0;
        c.email.digest_poll_ms = 50;
    })
    .await;
    // Carol hears nothing while two requests come in, then asks for a digest.
    let off = pb::NotificationPreferences {
        review_requests: false,
        decisions: true,
        review_digest: false,
    };
    set_preferences(&w, &w.carol, off, &["review_requests"]).await;
    let one = w.submit(&w.alice, &w.dev).await;
    let two = w.submit(&w.alice, &w.prod).await;
    let digest = pb::NotificationPreferences {
        review_requests: true,
        decisions: true,
        review_digest: true,
    };
    set_preferences(&w, &w.carol, digest, &["review_requests", "review_digest"]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let email = loop {
        let all =
            w.s.email()
                .list_emails(authed(
                    pb::ListEmailsRequest {
                        recipient: "carol@example.com".into(),
                        page_size: 50,
                        ..Default::default()
                    },
                    &w.admin,
                ))
                .await
                .unwrap()
                .into_inner()
                .emails;
        if let Some(e) = all.into_iter().find(|e| e.template == "review_digest") {
            break e;
        }
        assert!(std::time::Instant::now() < deadline, "no digest came");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(email.subject, "2 change request(s) await your review");
    for cr in [&one, &two] {
        assert!(email.body.contains(&cr.name), "{}", email.body);
    }
    // No email per request now, and one digest a day.
    w.submit(&w.alice, &w.dev).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let carol = subjects(&w, "carol@example.com").await;
    assert!(
        !carol.iter().any(|s| s.starts_with("Review requested: ")),
        "{carol:?}"
    );
    assert_eq!(
        carol
            .iter()
            .filter(|s| s.contains("await your review"))
            .count(),
        1
    );
    let bob = subjects(&w, "bob@example.com").await;
    assert_eq!(
        bob.iter()
            .filter(|s| s.starts_with("Review requested: "))
            .count(),
        3
    );
    w.s.stop().await;
}

/// Through a real SMTP server: everyone who may review hears of a request; where it names
/// reviewers, only they do; the submitter hears of the decision.
async fn reviewers_hear_through_smtp(b: Backend) {
    let Some(sink) = crate::smtp::SmtpSink::start(0) else {
        return;
    };
    let url = sink.url();
    let w = world_with(b, |c| {
        c.email.smtp_url = Some(url);
        c.email.retry_initial_ms = 100;
    })
    .await;
    let recipients = |got: &[crate::smtp::Received], subject: &str| {
        let mut to: Vec<String> = got
            .iter()
            .filter(|m| m.subject.starts_with(subject))
            .flat_map(|m| m.to.clone())
            .collect();
        to.sort();
        to
    };
    let open = w.submit(&w.alice, &w.dev).await;
    let got = sink.wait_for(3).await;
    assert_eq!(
        recipients(&got, "Review requested: "),
        [
            "admin@fluxgate.local",
            "bob@example.com",
            "carol@example.com"
        ],
        "the eligible reviewers, not the submitter, a peer or an outsider"
    );
    assert!(got[0].body.contains(&open.name), "{}", got[0].body);
    let named = submit_naming(&w, &w.alice, &w.dev, &["users/carol"])
        .await
        .unwrap();
    let got = sink.wait_for(4).await;
    assert_eq!(got[3].to, ["carol@example.com"], "only the named reviewer");
    assert!(got[3].body.contains(&named.name));
    w.approve(&w.bob, &open.name, open.revision).await.unwrap();
    let got = sink.wait_for(5).await;
    assert_eq!(got[4].to, ["alice@example.com"]);
    assert!(
        got[4]
            .subject
            .starts_with("Your change request was approved: ")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.messages().len(), 5, "nobody else");
    w.s.stop().await;
}

crate::both_backends!(
    reviewers_hear_through_smtp,
    named_reviewers_are_asked_and_can_be_required,
    a_daily_digest_instead_of_each_request,
    reviewers_are_told_and_the_submitter_hears_back,
    leaving_cancels_open_requests_and_approvals_stop_counting,
    one_party_never_authors_and_approves,
    a_key_rotated_after_approval_stops_the_apply,
    a_watch_on_another_replica_sees_decisions,
    two_approvals_then_applied_once,
    review_rules,
    override_rules,
    edits_discard_approvals_and_etags_guard_reviews,
    cancel_rules,
    service_accounts_do_not_review,
    feature_changes_take_the_strictest_policy,
    shutdown_ends_open_watches,
    retried_submissions_are_idempotent,
    no_approvals_needed_and_expiry,
    watch_streams_until_final,
    watchers_share_one_read_per_change,
    concurrent_reviews_never_exceed_the_rules,
    listing_and_visibility,
    metrics_per_environment_and_reviewer,
    bad_input_is_refused_and_writes_nothing,
    deleting_an_environment_closes_its_requests,
);
