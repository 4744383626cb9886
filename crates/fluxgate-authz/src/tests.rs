//! The engine's unit tests.

use std::collections::{BTreeMap, BTreeSet};

use fluxgate_domain::{
    ApplicationId, EnvironmentId, FeaturePermission, GroupId, Permission, PortfolioId, PrincipalId,
    Role, UserId, ValuePermission, ValuePermissions,
};

use super::*;

struct World {
    facts: Facts,
    portfolio: PortfolioId,
    other_portfolio: PortfolioId,
    app: ApplicationId,
    dev: EnvironmentId,
    prod: EnvironmentId,
    admins: GroupId,
    devs: GroupId,
}

fn user(facts: &mut Facts, role: Role) -> PrincipalId {
    let p = PrincipalId::User(UserId::generate());
    facts.principals.insert(
        p,
        PrincipalFacts {
            role,
            active: true,
            must_change_password: false,
            second_factor_overdue: false,
            portfolio: None,
            audit_writer: false,
            provisioner: false,
            acts_for: Default::default(),
        },
    );
    p
}

fn world() -> World {
    let mut facts = Facts::default();
    let (portfolio, other_portfolio) = (PortfolioId::generate(), PortfolioId::generate());
    facts.portfolios.extend([portfolio, other_portfolio]);
    let app = ApplicationId::generate();
    facts
        .applications
        .insert(app, ApplicationFacts { portfolio });
    let (dev, prod) = (EnvironmentId::generate(), EnvironmentId::generate());
    facts
        .environments
        .insert(dev, EnvironmentFacts { application: app });
    facts
        .environments
        .insert(prod, EnvironmentFacts { application: app });
    let (admins, devs) = (GroupId::generate(), GroupId::generate());
    facts.groups.insert(
        admins,
        GroupFacts {
            portfolio,
            administrators: true,
            application_grants: BTreeMap::new(),
            environment_grants: BTreeMap::new(),
            members: BTreeSet::new(),
        },
    );
    facts.groups.insert(
        devs,
        GroupFacts {
            portfolio,
            administrators: false,
            application_grants: [(app, FeaturePermission::Create)].into(),
            environment_grants: [(
                dev,
                ValuePermissions::EMPTY.with(ValuePermission::ChangeValue),
            )]
            .into(),
            members: BTreeSet::new(),
        },
    );
    World {
        facts,
        portfolio,
        other_portfolio,
        app,
        dev,
        prod,
        admins,
        devs,
    }
}

#[test]
fn groups_grant_per_environment_and_application() {
    let mut w = world();
    let p = user(&mut w.facts, Role::Requester);
    w.facts.groups.get_mut(&w.devs).unwrap().members.insert(p);
    let s = Snapshot::compile(&w.facts, 1);
    let dev = ResourceRef::Environment(w.dev);
    let prod = ResourceRef::Environment(w.prod);
    assert_eq!(
        s.check(&p, Permission::ChangeValue, dev),
        Decision::allow(Reason::GroupGrant { group: w.devs })
    );
    assert!(
        s.check(&p, Permission::Read, dev).allowed,
        "any value permission implies READ"
    );
    assert!(!s.check(&p, Permission::Lock, dev).allowed);
    assert_eq!(
        s.check(&p, Permission::ChangeValue, prod),
        Decision::deny(Reason::NoGrant {
            permission: Permission::ChangeValue
        })
    );
    assert!(
        s.check(
            &p,
            Permission::CreateFeature,
            ResourceRef::Application(w.app)
        )
        .allowed
    );
    assert!(
        s.check(&p, Permission::CreateFeature, dev).allowed,
        "feature checks accept an environment"
    );
    assert!(
        !s.check(&p, Permission::EditFeature, ResourceRef::Application(w.app))
            .allowed
    );
    assert_eq!(
        s.check(&p, Permission::Read, ResourceRef::Application(w.app)),
        Decision::deny(Reason::WrongResource {
            permission: Permission::Read
        })
    );
    assert_eq!(
        s.environments_allowed(&p, Permission::ChangeValue, w.app),
        vec![w.dev]
    );
    assert_eq!(
        s.applications_allowed(&p, Permission::CreateFeature, w.portfolio),
        vec![w.app]
    );
    assert_eq!(
        s.principals_allowed(Permission::ChangeValue, dev, Role::Requester),
        vec![p]
    );
    assert!(
        s.principals_allowed(Permission::ChangeValue, dev, Role::Approver)
            .is_empty()
    );
}

#[test]
fn portfolio_admins_hold_everything_in_their_portfolio_only() {
    let mut w = world();
    let p = user(&mut w.facts, Role::Requester);
    w.facts.groups.get_mut(&w.admins).unwrap().members.insert(p);
    let s = Snapshot::compile(&w.facts, 1);
    for perm in Permission::ALL {
        let d = s.check(&p, perm, ResourceRef::Environment(w.prod));
        assert_eq!(
            d,
            Decision::allow(Reason::PortfolioAdmin { group: w.admins }),
            "{perm}"
        );
    }
    assert!(
        s.authorize(&p, Action::ManageGroups, Target::Portfolio(w.portfolio))
            .allowed
    );
    assert_eq!(
        s.authorize(
            &p,
            Action::ManageGroups,
            Target::Portfolio(w.other_portfolio)
        ),
        Decision::deny(Reason::NotPortfolioAdmin {
            portfolio: w.other_portfolio
        })
    );
    assert!(
        !s.authorize(&p, Action::CreatePortfolio, Target::Org)
            .allowed
    );
    assert!(!s.authorize(&p, Action::ListUsers, Target::Org).allowed);
    assert!(s.is_portfolio_admin(&p, w.portfolio));
}

#[test]
fn team_admins_hold_everything_and_inactive_principals_nothing() {
    let mut w = world();
    let admin = user(&mut w.facts, Role::TeamAdmin);
    let s = Snapshot::compile(&w.facts, 1);
    assert_eq!(
        s.check(
            &admin,
            Permission::DeleteFeature,
            ResourceRef::Application(w.app)
        ),
        Decision::allow(Reason::TeamAdmin)
    );
    assert!(
        s.authorize(&admin, Action::DeletePortfolio, Target::Org)
            .allowed
    );
    w.facts.principals.get_mut(&admin).unwrap().active = false;
    let s = Snapshot::compile(&w.facts, 2);
    assert_eq!(
        s.check(&admin, Permission::Read, ResourceRef::Environment(w.dev)),
        Decision::deny(Reason::Inactive)
    );
    assert_eq!(
        s.authorize(&admin, Action::ManageOwnSession, Target::Org),
        Decision::deny(Reason::Inactive)
    );
    assert_eq!(s.revision(), 2);
    let ghost = PrincipalId::User(UserId::generate());
    assert_eq!(
        s.check(&ghost, Permission::Read, ResourceRef::Environment(w.dev)),
        Decision::deny(Reason::UnknownPrincipal)
    );
}

#[test]
fn user_management_rules() {
    let mut w = world();
    let admin = user(&mut w.facts, Role::TeamAdmin);
    let approver = user(&mut w.facts, Role::Approver);
    let s = Snapshot::compile(&w.facts, 1);
    let PrincipalId::User(admin_id) = admin else {
        unreachable!()
    };
    let PrincipalId::User(approver_id) = approver else {
        unreachable!()
    };
    for action in [
        Action::DeactivateUser,
        Action::DeleteUser,
        Action::ChangeUserRole,
        Action::ResetUserPassword,
    ] {
        assert_eq!(
            s.authorize(&admin, action, Target::User(admin_id)),
            Decision::deny(Reason::SelfProtected { action })
        );
        assert!(
            s.authorize(&admin, action, Target::User(approver_id))
                .allowed
        );
        assert!(
            !s.authorize(&approver, action, Target::User(admin_id))
                .allowed
        );
    }
    assert_eq!(
        s.authorize(&approver, Action::ViewUser, Target::User(approver_id)),
        Decision::allow(Reason::OwnAccount)
    );
    assert_eq!(
        s.authorize(&approver, Action::ListUsers, Target::Org),
        Decision::deny(Reason::RoleRequired {
            required: Role::TeamAdmin,
            held: Role::Approver
        })
    );
    assert!(
        s.authorize(&approver, Action::ReadCatalog, Target::Org)
            .allowed
    );
}

#[test]
fn temporary_password_allows_only_own_session() {
    let mut w = world();
    let p = user(&mut w.facts, Role::TeamAdmin);
    w.facts.principals.get_mut(&p).unwrap().must_change_password = true;
    let s = Snapshot::compile(&w.facts, 1);
    assert!(
        s.authorize(&p, Action::ManageOwnSession, Target::Org)
            .allowed
    );
    assert_eq!(
        s.authorize(&p, Action::ListUsers, Target::Org),
        Decision::deny(Reason::PasswordChangeRequired)
    );
    assert_eq!(
        s.check(&p, Permission::Read, ResourceRef::Environment(w.dev)),
        Decision::deny(Reason::PasswordChangeRequired)
    );
}

#[test]
fn an_overdue_second_factor_allows_only_own_session() {
    let mut w = world();
    let p = user(&mut w.facts, Role::TeamAdmin);
    w.facts
        .principals
        .get_mut(&p)
        .unwrap()
        .second_factor_overdue = true;
    let s = Snapshot::compile(&w.facts, 1);
    assert!(
        s.authorize(&p, Action::ManageOwnSession, Target::Org)
            .allowed
    );
    assert_eq!(
        s.authorize(&p, Action::UpdateSettings, Target::Org),
        Decision::deny(Reason::SecondFactorEnrolmentOverdue)
    );
    assert_eq!(
        s.check(&p, Permission::Read, ResourceRef::Environment(w.dev)),
        Decision::deny(Reason::SecondFactorEnrolmentOverdue)
    );
}

#[test]
fn explanations_list_the_groups_in_the_portfolio() {
    let mut w = world();
    let p = user(&mut w.facts, Role::Requester);
    w.facts.groups.get_mut(&w.devs).unwrap().members.insert(p);
    let s = Snapshot::compile(&w.facts, 1);
    let e = s.explain(&p, Permission::Lock, ResourceRef::Environment(w.dev));
    assert!(!e.decision.allowed);
    assert_eq!(e.role, Some(Role::Requester));
    assert_eq!(e.groups.len(), 1);
    assert_eq!(e.groups[0].grants, "features: CREATE; values: CHANGE_VALUE");
}

#[test]
fn dangling_references_grant_nothing() {
    let mut w = world();
    let p = user(&mut w.facts, Role::Requester);
    let stray_env = EnvironmentId::generate();
    let g = w.facts.groups.get_mut(&w.devs).unwrap();
    g.members.insert(p);
    g.members.insert(PrincipalId::User(UserId::generate()));
    g.environment_grants
        .insert(stray_env, ValuePermissions::ALL);
    let s = Snapshot::compile(&w.facts, 1);
    assert_eq!(
        s.check(&p, Permission::Read, ResourceRef::Environment(stray_env)),
        Decision::deny(Reason::UnknownResource)
    );
}

mod approvals {
    use super::*;
    use fluxgate_domain::{ChangeKind, ServiceAccountId};

    #[test]
    fn reviewers_are_those_who_may_review() {
        let mut w = world();
        let submitter = user(&mut w.facts, Role::Requester);
        let approver = user(&mut w.facts, Role::Approver);
        let peer = user(&mut w.facts, Role::Requester);
        let outsider = user(&mut w.facts, Role::Approver);
        let admin = user(&mut w.facts, Role::TeamAdmin);
        let gone = user(&mut w.facts, Role::Approver);
        w.facts.principals.get_mut(&gone).unwrap().active = false;
        for p in [submitter, approver, peer, gone] {
            w.facts.groups.get_mut(&w.devs).unwrap().members.insert(p);
        }
        let s = Snapshot::compile(&w.facts, 1);
        let mut want = vec![approver, admin];
        want.sort();
        assert_eq!(s.reviewers(&facts(&submitter, w.dev)), want);
        let peers = RequestFacts {
            peer_review: true,
            ..facts(&submitter, w.dev)
        };
        let mut want = vec![approver, peer, admin];
        want.sort();
        assert_eq!(s.reviewers(&peers), want);
        assert!(
            !s.reviewers(&peers).contains(&outsider),
            "without the permission"
        );
    }

    fn facts<'a>(submitter: &'a PrincipalId, env: EnvironmentId) -> RequestFacts<'a> {
        RequestFacts {
            submitter,
            kind: ChangeKind::ChangeValue,
            environment: env,
            peer_review: false,
            admin_override: false,
            approvers: &[],
        }
    }

    fn account(facts: &mut Facts, acts_for: &[PrincipalId]) -> PrincipalId {
        let sa = PrincipalId::ServiceAccount(ServiceAccountId::generate());
        facts.principals.insert(
            sa,
            PrincipalFacts {
                role: Role::Requester,
                active: true,
                must_change_password: false,
                second_factor_overdue: false,
                portfolio: None,
                audit_writer: false,
                provisioner: false,
                acts_for: acts_for.iter().copied().collect(),
            },
        );
        sa
    }

    #[test]
    fn one_party_never_authors_and_approves() {
        let mut w = world();
        let owner = user(&mut w.facts, Role::Approver);
        let peer = user(&mut w.facts, Role::Requester);
        let admin = user(&mut w.facts, Role::TeamAdmin);
        let other = user(&mut w.facts, Role::Approver);
        // The owner's account, and an account created by that account (acts for the owner too).
        let bot = account(&mut w.facts, &[owner]);
        let bot2 = account(&mut w.facts, &[bot]);
        // Created by the admin, with a key the peer created.
        let shared = account(&mut w.facts, &[admin, peer]);
        // Two accounts that name each other: the walk ends.
        let ca = account(&mut w.facts, &[]);
        let cb = account(&mut w.facts, &[ca]);
        w.facts.principals.get_mut(&ca).unwrap().acts_for.insert(cb);
        for p in [owner, peer, other, bot, bot2, shared, ca, cb] {
            w.facts.groups.get_mut(&w.devs).unwrap().members.insert(p);
        }
        let s = Snapshot::compile(&w.facts, 1);
        assert_eq!(s.party(&bot2), vec![bot2, bot, owner]);
        assert_eq!(s.party(&ca).len(), 2);

        let by_bot = RequestFacts {
            peer_review: true,
            admin_override: true,
            ..facts(&bot, w.dev)
        };
        assert!(
            s.change_request(&bot, RequestAction::Submit, &by_bot)
                .allowed
        );
        for a in [RequestAction::Review, RequestAction::Override] {
            let who = if a == RequestAction::Override {
                admin
            } else {
                owner
            };
            let req = if who == admin {
                facts(&shared, w.dev)
            } else {
                by_bot
            };
            let req = RequestFacts {
                admin_override: true,
                peer_review: true,
                ..req
            };
            let d = s.change_request(&who, a, &req);
            assert_eq!(d, Decision::deny(Reason::SameParty { party: who }));
            assert!(d.reason.to_string().contains("one party"), "{}", d.reason);
        }
        // The key's creator (a Requester under peer review) is the same party too.
        assert_eq!(
            s.change_request(
                &peer,
                RequestAction::Review,
                &RequestFacts {
                    peer_review: true,
                    ..facts(&shared, w.dev)
                }
            ),
            Decision::deny(Reason::SameParty { party: peer })
        );
        // Transitively: the owner stands behind the account its account made.
        assert_eq!(
            s.change_request(&owner, RequestAction::Review, &facts(&bot2, w.dev)),
            Decision::deny(Reason::SameParty { party: owner })
        );
        // Someone else reviews; the owner reviews other people's requests.
        assert!(
            s.change_request(&other, RequestAction::Review, &by_bot)
                .allowed
        );
        assert!(
            s.change_request(&owner, RequestAction::Review, &facts(&peer, w.dev))
                .allowed
        );

        // Applying re-checks the approvals that carried the request.
        let approved_by_owner = [owner];
        let tainted = RequestFacts {
            approvers: &approved_by_owner,
            ..by_bot
        };
        assert_eq!(
            s.change_request(&bot, RequestAction::Apply, &tainted),
            Decision::deny(Reason::ApprovedBySameParty {
                approver: owner,
                party: owner
            })
        );
        let approved_by_other = [other];
        let clean = RequestFacts {
            approvers: &approved_by_other,
            ..by_bot
        };
        assert!(s.change_request(&bot, RequestAction::Apply, &clean).allowed);
    }

    #[test]
    fn four_eyes_rules() {
        let mut w = world();
        let submitter = user(&mut w.facts, Role::Requester);
        let peer = user(&mut w.facts, Role::Requester);
        let approver = user(&mut w.facts, Role::Approver);
        let outsider = user(&mut w.facts, Role::Approver);
        let admin = user(&mut w.facts, Role::TeamAdmin);
        let sa = account(&mut w.facts, &[]);
        for p in [submitter, peer, approver, sa] {
            w.facts.groups.get_mut(&w.devs).unwrap().members.insert(p);
        }
        let s = Snapshot::compile(&w.facts, 1);
        let req = facts(&submitter, w.dev);
        let act =
            |p: &PrincipalId, a: RequestAction, r: &RequestFacts<'_>| s.change_request(p, a, r);

        assert!(act(&submitter, RequestAction::Submit, &req).allowed);
        assert!(!act(&outsider, RequestAction::Submit, &req).allowed);
        let prod = facts(&submitter, w.prod);
        assert!(
            !act(&submitter, RequestAction::Submit, &prod).allowed,
            "the submitter needs the permission where the change lands"
        );

        assert_eq!(
            act(&submitter, RequestAction::Review, &req),
            Decision::deny(Reason::OwnRequest)
        );
        assert_eq!(
            act(&peer, RequestAction::Review, &req),
            Decision::deny(Reason::RoleRequired {
                required: Role::Approver,
                held: Role::Requester
            })
        );
        let peers = RequestFacts {
            peer_review: true,
            ..req
        };
        assert!(act(&peer, RequestAction::Review, &peers).allowed);
        assert!(act(&approver, RequestAction::Review, &req).allowed);
        assert_eq!(
            act(&outsider, RequestAction::Review, &req),
            Decision::deny(Reason::NoGrant {
                permission: Permission::ChangeValue
            }),
            "a reviewer must hold the permission the change needs"
        );
        assert!(act(&admin, RequestAction::Review, &req).allowed);

        assert_eq!(
            act(&admin, RequestAction::Override, &req),
            Decision::deny(Reason::OverrideNotAllowed)
        );
        let overridable = RequestFacts {
            admin_override: true,
            ..req
        };
        assert!(act(&admin, RequestAction::Override, &overridable).allowed);
        assert!(!act(&approver, RequestAction::Override, &overridable).allowed);
        let admins_own = facts(&admin, w.dev);
        assert_eq!(
            act(
                &admin,
                RequestAction::Override,
                &RequestFacts {
                    admin_override: true,
                    ..admins_own
                }
            ),
            Decision::deny(Reason::OwnRequest)
        );

        assert!(act(&submitter, RequestAction::Edit, &req).allowed);
        assert_eq!(
            act(&approver, RequestAction::Edit, &req),
            Decision::deny(Reason::NotSubmitter)
        );
        assert!(act(&submitter, RequestAction::Cancel, &req).allowed);
        assert!(act(&admin, RequestAction::Cancel, &req).allowed);
        assert_eq!(
            act(&approver, RequestAction::Cancel, &req),
            Decision::deny(Reason::NotSubmitter)
        );

        assert!(act(&sa, RequestAction::Apply, &req).allowed);
        for a in [RequestAction::Review, RequestAction::Override] {
            assert_eq!(
                act(&sa, a, &overridable),
                Decision::deny(Reason::ServiceAccountReviewer),
                "a service account holding the permission still does not review"
            );
        }
        assert_eq!(
            act(&admin, RequestAction::Apply, &req),
            Decision::deny(Reason::NotServiceAccount)
        );

        assert!(act(&approver, RequestAction::View, &req).allowed);
        assert!(!act(&outsider, RequestAction::View, &req).allowed);
        assert_eq!(
            act(&submitter, RequestAction::View, &prod),
            Decision::allow(Reason::Submitter)
        );
    }

    #[test]
    fn feature_changes_need_the_application_permission() {
        let mut w = world();
        let p = user(&mut w.facts, Role::Requester);
        w.facts.groups.get_mut(&w.devs).unwrap().members.insert(p);
        let s = Snapshot::compile(&w.facts, 1);
        assert!(s.may_change(&p, ChangeKind::CreateFeature, w.prod).allowed);
        assert!(!s.may_change(&p, ChangeKind::DeleteFeature, w.prod).allowed);
        assert!(s.may_change(&p, ChangeKind::Retire, w.dev).allowed);
        assert!(!s.may_change(&p, ChangeKind::Lock, w.dev).allowed);
    }

    #[test]
    fn deactivated_principals_do_nothing_with_requests() {
        let mut w = world();
        let p = user(&mut w.facts, Role::Approver);
        w.facts.principals.get_mut(&p).unwrap().active = false;
        let other = user(&mut w.facts, Role::Requester);
        let s = Snapshot::compile(&w.facts, 1);
        let own = facts(&p, w.dev);
        for a in [
            RequestAction::View,
            RequestAction::Cancel,
            RequestAction::Edit,
            RequestAction::Submit,
        ] {
            assert_eq!(
                s.change_request(&p, a, &own),
                Decision::deny(Reason::Inactive)
            );
        }
        assert!(
            !s.change_request(&p, RequestAction::Review, &facts(&other, w.dev))
                .allowed
        );
        assert!(
            s.authorize(&p, Action::ViewApprovalMetrics, Target::Org)
                .reason
                == Reason::Inactive
        );
        assert!(
            !s.authorize(&other, Action::ViewApprovalMetrics, Target::Org)
                .allowed
        );
    }
}
