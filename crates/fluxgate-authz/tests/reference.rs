//! The engine agrees with the naive reference evaluator on random worlds and requests.
#![allow(clippy::unwrap_used)]

mod naive;

use std::collections::{BTreeMap, BTreeSet};

use fluxgate_authz::{
    ApplicationFacts, EnvironmentFacts, Facts, GroupFacts, PrincipalFacts, ResourceRef, Snapshot,
};
use fluxgate_domain::{
    ApplicationId, EnvironmentId, FeaturePermission, GroupId, Permission, PortfolioId, PrincipalId,
    Role, ServiceAccountId, UserId, ValuePermissions,
};
use proptest::prelude::*;
use uuid::Uuid;

fn id(n: u8) -> Uuid {
    Uuid::from_u128(u128::from(n) + 1)
}

/// A random world from small integers: indices pick among a few portfolios, applications,
/// environments, groups and principals, so that references collide often.
/// portfolio, administrators, app grants, env grants, members
type GroupSpec = (u8, bool, Vec<(u8, u8)>, Vec<(u8, u8)>, Vec<u8>);

#[derive(Debug, Clone)]
struct Spec {
    principals: Vec<(u8, bool, bool, u8)>, // role, active, must_change, kind
    apps: Vec<u8>,                         // portfolio of each app
    envs: Vec<u8>,                         // app of each env
    groups: Vec<GroupSpec>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::collection::vec(
            (0u8..3, any::<bool>(), prop::bool::weighted(0.1), 0u8..2),
            1..8,
        ),
        prop::collection::vec(0u8..3, 1..5),
        prop::collection::vec(0u8..6, 1..10),
        prop::collection::vec(
            (
                0u8..4,
                prop::bool::weighted(0.2),
                prop::collection::vec((0u8..6, 0u8..3), 0..4),
                prop::collection::vec((0u8..12, 0u8..16), 0..6),
                prop::collection::vec(0u8..9, 0..5),
            ),
            0..6,
        ),
    )
        .prop_map(|(principals, apps, envs, groups)| Spec {
            principals,
            apps,
            envs,
            groups,
        })
}

fn principal(i: u8, kind: u8) -> PrincipalId {
    if kind == 0 {
        PrincipalId::User(UserId(id(i)))
    } else {
        PrincipalId::ServiceAccount(ServiceAccountId(id(i)))
    }
}

fn build(s: &Spec) -> (Facts, Vec<PrincipalId>) {
    let mut f = Facts::default();
    // Portfolio 3 never exists: references to it dangle.
    f.portfolios.extend((0..3).map(|i| PortfolioId(id(i))));
    let mut ps = Vec::new();
    for (i, &(role, active, must_change, kind)) in s.principals.iter().enumerate() {
        let p = principal(i as u8, kind);
        ps.push(p);
        f.principals.insert(
            p,
            PrincipalFacts {
                role: Role::ALL[role as usize],
                active,
                must_change_password: must_change,
                second_factor_overdue: false,
                portfolio: None,
                audit_writer: false,
                provisioner: false,
                acts_for: Default::default(),
            },
        );
    }
    ps.push(principal(99, 0)); // unknown principal
    for (i, &po) in s.apps.iter().enumerate() {
        f.applications.insert(
            ApplicationId(id(i as u8)),
            ApplicationFacts {
                portfolio: PortfolioId(id(po)),
            },
        );
    }
    for (i, &a) in s.envs.iter().enumerate() {
        f.environments.insert(
            EnvironmentId(id(i as u8)),
            EnvironmentFacts {
                application: ApplicationId(id(a)),
            },
        );
    }
    for (i, (po, admin, ag, eg, members)) in s.groups.iter().enumerate() {
        f.groups.insert(
            GroupId(id(i as u8)),
            GroupFacts {
                portfolio: PortfolioId(id(*po)),
                administrators: *admin,
                application_grants: ag
                    .iter()
                    .filter(|(_, p)| *p > 0)
                    .map(|&(a, p)| {
                        let fp = if p == 1 {
                            FeaturePermission::Create
                        } else {
                            FeaturePermission::CreateEditDelete
                        };
                        (ApplicationId(id(a)), fp)
                    })
                    .collect::<BTreeMap<_, _>>(),
                environment_grants: eg
                    .iter()
                    .map(|&(e, bits)| (EnvironmentId(id(e)), ValuePermissions::from_bits(bits)))
                    .collect(),
                members: members
                    .iter()
                    .filter_map(|&m| ps.get(m as usize).copied())
                    .collect::<BTreeSet<_>>(),
            },
        );
    }
    (f, ps)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn engine_agrees_with_the_reference(s in spec()) {
        let (facts, principals) = build(&s);
        let snap = Snapshot::compile(&facts, 1);
        let mut resources: Vec<ResourceRef> = (0..12u8).map(|e| ResourceRef::Environment(EnvironmentId(id(e)))).collect();
        resources.extend((0..6u8).map(|a| ResourceRef::Application(ApplicationId(id(a)))));
        for p in &principals {
            for perm in Permission::ALL {
                for r in &resources {
                    let expected = naive::allowed(&facts, p, perm, *r);
                    let got = snap.check(p, perm, *r);
                    prop_assert_eq!(got.allowed, expected, "{:?} {:?} {:?}: {:?}", p, perm, r, got.reason);
                }
                // Look-ups agree with checks.
                for a in 0..6u8 {
                    let app = ApplicationId(id(a));
                    let envs = snap.environments_allowed(p, perm, app);
                    for e in envs {
                        prop_assert!(naive::allowed(&facts, p, perm, ResourceRef::Environment(e)));
                    }
                }
            }
        }
    }
}
