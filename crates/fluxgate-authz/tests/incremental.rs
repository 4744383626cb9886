//! A snapshot kept up to date with `Snapshot::update` answers exactly as one compiled afresh from
//! the same facts, after any sequence of changes to principals, groups, grants and memberships
//! (with catalog changes, which compile, mixed in).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use fluxgate_authz::{
    Action, ApplicationFacts, EnvironmentFacts, Facts, GroupFacts, PrincipalFacts, ResourceRef,
    Snapshot, Target,
};
use fluxgate_domain::{
    ApplicationId, EnvironmentId, FeaturePermission, GroupId, Permission, PortfolioId, PrincipalId,
    Role, ServiceAccountId, UserId, ValuePermissions,
};
use proptest::prelude::*;
use uuid::Uuid;

/// Ids from small integers; the last byte (which picks a shard) varies with them.
fn id(n: u8) -> Uuid {
    Uuid::from_u128(u128::from(n) * 0x0101 + 1)
}

const PRINCIPALS: u8 = 10;
const GROUPS: u8 = 6;
const PORTFOLIOS: u8 = 3;
const APPS: u8 = 4;
const ENVS: u8 = 6;

fn principal(i: u8) -> PrincipalId {
    // Even indices are users, odd ones service accounts.
    if i.is_multiple_of(2) {
        PrincipalId::User(UserId(id(i)))
    } else {
        PrincipalId::ServiceAccount(ServiceAccountId(id(i)))
    }
}

fn group(i: u8) -> GroupId {
    GroupId(id(100 + i))
}

#[derive(Debug, Clone)]
enum Op {
    /// Adds or replaces a principal: role, active, temporary password, factor overdue,
    /// audit writer, provisioner, portfolio (4: none), acts for.
    Principal(u8, u8, bool, bool, bool, bool, bool, u8, Vec<u8>),
    /// Removes a principal; with `true`, from every group's members too (as the server does).
    RemovePrincipal(u8, bool),
    /// Adds or replaces a group: portfolio (3 never exists), administrators, application
    /// grants, environment grants, members.
    Group(u8, u8, bool, Vec<(u8, u8)>, Vec<(u8, u8)>, Vec<u8>),
    RemoveGroup(u8),
    AddMember(u8, u8),
    RemoveMember(u8, u8),
    /// Grants (or with empty bits, withdraws) value permissions on an environment.
    EnvGrant(u8, u8, u8),
    AppGrant(u8, u8, u8),
    /// Moves an environment to another application: a catalog change, compiled afresh.
    MoveEnvironment(u8, u8),
    /// Ends the batch: the snapshot is brought up to date here.
    Sync,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (
            0..PRINCIPALS,
            0u8..3,
            prop::bool::weighted(0.85),
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.1),
            0u8..5,
            prop::collection::vec(0..PRINCIPALS, 0..3),
        )
            .prop_map(|(i, r, a, m, o, w, p, po, acts)| Op::Principal(i, r, a, m, o, w, p, po, acts)),
        2 => (0..PRINCIPALS, any::<bool>()).prop_map(|(i, s)| Op::RemovePrincipal(i, s)),
        2 => (
            0..GROUPS,
            0..PORTFOLIOS + 1,
            prop::bool::weighted(0.3),
            prop::collection::vec((0..APPS + 1, 0u8..3), 0..3),
            prop::collection::vec((0..ENVS + 1, 0u8..16), 0..4),
            prop::collection::vec(0..PRINCIPALS + 2, 0..5),
        )
            .prop_map(|(g, po, admin, ag, eg, m)| Op::Group(g, po, admin, ag, eg, m)),
        1 => (0..GROUPS).prop_map(Op::RemoveGroup),
        5 => (0..GROUPS, 0..PRINCIPALS + 2).prop_map(|(g, p)| Op::AddMember(g, p)),
        3 => (0..GROUPS, 0..PRINCIPALS + 2).prop_map(|(g, p)| Op::RemoveMember(g, p)),
        3 => (0..GROUPS, 0..ENVS + 1, 0u8..16).prop_map(|(g, e, b)| Op::EnvGrant(g, e, b)),
        2 => (0..GROUPS, 0..APPS + 1, 0u8..3).prop_map(|(g, a, p)| Op::AppGrant(g, a, p)),
        1 => (0..ENVS, 0..APPS).prop_map(|(e, a)| Op::MoveEnvironment(e, a)),
        3 => Just(Op::Sync),
    ]
}

fn feature(p: u8) -> Option<FeaturePermission> {
    match p {
        1 => Some(FeaturePermission::Create),
        2 => Some(FeaturePermission::CreateEditDelete),
        _ => None,
    }
}

fn world() -> Facts {
    let mut f = Facts::default();
    f.portfolios
        .extend((0..PORTFOLIOS).map(|i| PortfolioId(id(200 + i))));
    for a in 0..APPS {
        f.applications.insert(
            ApplicationId(id(150 + a)),
            ApplicationFacts {
                portfolio: PortfolioId(id(200 + a % PORTFOLIOS)),
            },
        );
    }
    for e in 0..ENVS {
        f.environments.insert(
            EnvironmentId(id(170 + e)),
            EnvironmentFacts {
                application: ApplicationId(id(150 + e % APPS)),
            },
        );
    }
    f
}

/// Applies `op` to the facts; the principals and groups it touched.
fn apply(f: &mut Facts, op: &Op, ps: &mut BTreeSet<PrincipalId>, gs: &mut BTreeSet<GroupId>) {
    let app = |a: u8| ApplicationId(id(150 + a));
    let env = |e: u8| EnvironmentId(id(170 + e));
    match op {
        Op::Principal(i, role, active, must, overdue, writer, provisioner, po, acts) => {
            let p = principal(*i);
            f.principals.insert(
                p,
                PrincipalFacts {
                    role: Role::ALL[*role as usize],
                    active: *active,
                    must_change_password: *must,
                    second_factor_overdue: *overdue,
                    portfolio: (*po < 4).then(|| PortfolioId(id(200 + po))),
                    audit_writer: *writer,
                    provisioner: *provisioner,
                    acts_for: acts.iter().map(|&a| principal(a)).collect(),
                },
            );
            ps.insert(p);
        }
        Op::RemovePrincipal(i, scrub) => {
            let p = principal(*i);
            f.principals.remove(&p);
            if *scrub {
                for (id, g) in f.groups.iter_mut() {
                    if g.members.remove(&p) {
                        gs.insert(*id);
                    }
                }
            }
            ps.insert(p);
        }
        Op::Group(g, po, admin, ag, eg, members) => {
            f.groups.insert(
                group(*g),
                GroupFacts {
                    portfolio: PortfolioId(id(200 + po)),
                    administrators: *admin,
                    application_grants: ag
                        .iter()
                        .filter_map(|&(a, p)| feature(p).map(|fp| (app(a), fp)))
                        .collect::<BTreeMap<_, _>>(),
                    environment_grants: eg
                        .iter()
                        .map(|&(e, b)| (env(e), ValuePermissions::from_bits(b)))
                        .collect(),
                    members: members.iter().map(|&m| principal(m)).collect(),
                },
            );
            gs.insert(group(*g));
        }
        Op::RemoveGroup(g) => {
            f.groups.remove(&group(*g));
            gs.insert(group(*g));
        }
        Op::AddMember(g, p) | Op::RemoveMember(g, p) => {
            if let Some(gf) = f.groups.get_mut(&group(*g)) {
                if matches!(op, Op::AddMember(..)) {
                    gf.members.insert(principal(*p));
                } else {
                    gf.members.remove(&principal(*p));
                }
                gs.insert(group(*g));
            }
        }
        Op::EnvGrant(g, e, bits) => {
            if let Some(gf) = f.groups.get_mut(&group(*g)) {
                gf.environment_grants
                    .insert(env(*e), ValuePermissions::from_bits(*bits));
                gs.insert(group(*g));
            }
        }
        Op::AppGrant(g, a, p) => {
            if let Some(gf) = f.groups.get_mut(&group(*g)) {
                match feature(*p) {
                    Some(fp) => gf.application_grants.insert(app(*a), fp),
                    None => gf.application_grants.remove(&app(*a)),
                };
                gs.insert(group(*g));
            }
        }
        Op::MoveEnvironment(..) | Op::Sync => {}
    }
}

/// Every answer the two snapshots give about the world, side by side.
fn assert_same(a: &Snapshot, b: &Snapshot, facts: &Facts) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.revision(), b.revision());
    let mut resources: Vec<ResourceRef> = (0..ENVS + 1)
        .map(|e| ResourceRef::Environment(EnvironmentId(id(170 + e))))
        .collect();
    resources.extend((0..APPS + 1).map(|x| ResourceRef::Application(ApplicationId(id(150 + x)))));
    let portfolios: Vec<PortfolioId> = (0..PORTFOLIOS + 1)
        .map(|i| PortfolioId(id(200 + i)))
        .collect();
    for i in 0..PRINCIPALS + 2 {
        let p = principal(i);
        prop_assert_eq!(a.has_principal(&p), b.has_principal(&p));
        prop_assert_eq!(a.standing(&p), b.standing(&p), "standing of {:?}", p);
        prop_assert_eq!(a.party(&p), b.party(&p), "party of {:?}", p);
        for q in 0..PRINCIPALS + 2 {
            let q = principal(q);
            prop_assert_eq!(a.shared_party(&p, &q), b.shared_party(&p, &q));
        }
        for perm in Permission::ALL {
            for r in &resources {
                prop_assert_eq!(a.check(&p, perm, *r), b.check(&p, perm, *r));
                prop_assert_eq!(a.explain(&p, perm, *r), b.explain(&p, perm, *r));
            }
            for x in 0..APPS + 1 {
                let app = ApplicationId(id(150 + x));
                prop_assert_eq!(
                    a.environments_allowed(&p, perm, app),
                    b.environments_allowed(&p, perm, app)
                );
            }
            for po in &portfolios {
                prop_assert_eq!(
                    a.applications_allowed(&p, perm, *po),
                    b.applications_allowed(&p, perm, *po)
                );
            }
        }
        for po in &portfolios {
            prop_assert_eq!(a.is_portfolio_admin(&p, *po), b.is_portfolio_admin(&p, *po));
            for action in [
                Action::ManageGroups,
                Action::ManageMembers,
                Action::CheckOthers,
                Action::IngestAudit,
                Action::Provision,
                Action::ViewApprovalMetrics,
                Action::CreatePortfolio,
            ] {
                prop_assert_eq!(
                    a.authorize(&p, action, Target::Portfolio(*po)),
                    b.authorize(&p, action, Target::Portfolio(*po))
                );
            }
        }
    }
    for g in 0..GROUPS {
        prop_assert_eq!(a.group_portfolio(group(g)), b.group_portfolio(group(g)));
    }
    for perm in Permission::ALL {
        for r in &resources {
            for role in Role::ALL {
                let allowed = a.principals_allowed(perm, *r, role);
                prop_assert_eq!(&allowed, &b.principals_allowed(perm, *r, role));
                // Against every principal, one check each.
                let every: Vec<PrincipalId> = facts
                    .principals
                    .iter()
                    .filter(|(p, f)| f.role.includes(role) && b.check(p, perm, *r).allowed)
                    .map(|(p, _)| *p)
                    .collect();
                prop_assert_eq!(allowed, every);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn updates_answer_as_a_full_recompile(ops in prop::collection::vec(op(), 1..60)) {
        let mut facts = world();
        let mut snap = Snapshot::compile(&facts, 0);
        let mut revision = 0;
        let (mut ps, mut gs) = (BTreeSet::new(), BTreeSet::new());
        for op in ops.iter().chain([&Op::Sync]) {
            apply(&mut facts, op, &mut ps, &mut gs);
            match op {
                Op::MoveEnvironment(e, a) => {
                    facts.environments.insert(
                        EnvironmentId(id(170 + e)),
                        EnvironmentFacts { application: ApplicationId(id(150 + a)) },
                    );
                    revision += 1;
                    snap = Snapshot::compile(&facts, revision);
                    ps.clear();
                    gs.clear();
                }
                Op::Sync => {
                    revision += 1;
                    let p: Vec<PrincipalId> = std::mem::take(&mut ps).into_iter().collect();
                    let g: Vec<GroupId> = std::mem::take(&mut gs).into_iter().collect();
                    snap = snap.update(&facts, &p, &g, revision);
                    assert_same(&snap, &Snapshot::compile(&facts, revision), &facts)?;
                }
                _ => {}
            }
        }
    }
}

/// Removing and re-adding the same principals many times: removed entries are reclaimed by a
/// fresh compilation, and the answers stay those of one.
#[test]
fn churn_is_reclaimed() {
    let mut facts = world();
    let g = group(0);
    let p = principal(0);
    facts.groups.insert(
        g,
        GroupFacts {
            portfolio: PortfolioId(id(200)),
            administrators: false,
            application_grants: BTreeMap::new(),
            environment_grants: [(EnvironmentId(id(170)), ValuePermissions::ALL)].into(),
            members: [p].into(),
        },
    );
    let mut snap = Snapshot::compile(&facts, 0);
    let user = PrincipalFacts {
        role: Role::Requester,
        active: true,
        must_change_password: false,
        second_factor_overdue: false,
        portfolio: None,
        audit_writer: false,
        provisioner: false,
        acts_for: BTreeSet::new(),
    };
    for round in 1..5000 {
        if round % 2 == 1 {
            facts.principals.insert(p, user.clone());
        } else {
            facts.principals.remove(&p);
        }
        snap = snap.update(&facts, &[p], &[], round);
    }
    let fresh = Snapshot::compile(&facts, 4999);
    let r = ResourceRef::Environment(EnvironmentId(id(170)));
    assert_eq!(
        snap.check(&p, Permission::ChangeValue, r),
        fresh.check(&p, Permission::ChangeValue, r)
    );
    assert!(snap.check(&p, Permission::ChangeValue, r).allowed);
}
