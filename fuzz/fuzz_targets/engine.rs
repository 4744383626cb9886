//! The engine against the naive reference evaluator (the one its property tests use) on worlds
//! built from arbitrary bytes: every check agrees, and look-ups agree with checks.
#![no_main]

#[path = "../../crates/fluxgate-authz/tests/naive/mod.rs"]
mod naive;

use std::collections::{BTreeMap, BTreeSet};

use fluxgate_authz::{
    ApplicationFacts, EnvironmentFacts, Facts, GroupFacts, PrincipalFacts, ResourceRef, Snapshot,
};
use fluxgate_domain::{
    ApplicationId, EnvironmentId, FeaturePermission, GroupId, Permission, PortfolioId, PrincipalId,
    Role, ServiceAccountId, UserId, ValuePermissions,
};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;

fn id(n: u8) -> Uuid {
    Uuid::from_u128(u128::from(n) + 1)
}

fn principal(i: u8, service_account: bool) -> PrincipalId {
    if service_account {
        PrincipalId::ServiceAccount(ServiceAccountId(id(i)))
    } else {
        PrincipalId::User(UserId(id(i)))
    }
}

/// A small world whose references collide often (a few ids of each kind; portfolio 3 never
/// exists, so references to it dangle).
fn world(u: &mut Unstructured<'_>) -> Result<(Facts, Vec<PrincipalId>)> {
    let mut f = Facts::default();
    f.portfolios.extend((0..3).map(|i| PortfolioId(id(i))));
    let mut ps = Vec::new();
    for i in 0..u.int_in_range(1..=7u8)? {
        let p = principal(i, u.arbitrary()?);
        ps.push(p);
        f.principals.insert(
            p,
            PrincipalFacts {
                role: Role::ALL[usize::from(u.int_in_range(0..=2u8)?)],
                active: u.ratio(9, 10)?,
                must_change_password: u.ratio(1, 10)?,
                second_factor_overdue: false,
                portfolio: None,
                audit_writer: false,
                provisioner: false,
                acts_for: Default::default(),
            },
        );
    }
    ps.push(principal(99, false));
    for i in 0..u.int_in_range(1..=5u8)? {
        f.applications.insert(
            ApplicationId(id(i)),
            ApplicationFacts {
                portfolio: PortfolioId(id(u.int_in_range(0..=3)?)),
            },
        );
    }
    for i in 0..u.int_in_range(1..=10u8)? {
        f.environments.insert(
            EnvironmentId(id(i)),
            EnvironmentFacts {
                application: ApplicationId(id(u.int_in_range(0..=5)?)),
            },
        );
    }
    for g in 0..u.int_in_range(0..=5u8)? {
        let mut application_grants = BTreeMap::new();
        for _ in 0..u.int_in_range(0..=3u8)? {
            let fp = if u.arbitrary()? {
                FeaturePermission::Create
            } else {
                FeaturePermission::CreateEditDelete
            };
            application_grants.insert(ApplicationId(id(u.int_in_range(0..=5)?)), fp);
        }
        let mut environment_grants = BTreeMap::new();
        for _ in 0..u.int_in_range(0..=5u8)? {
            environment_grants.insert(
                EnvironmentId(id(u.int_in_range(0..=11)?)),
                ValuePermissions::from_bits(u.int_in_range(0..=15)?),
            );
        }
        let mut members = BTreeSet::new();
        for _ in 0..u.int_in_range(0..=4u8)? {
            if let Some(p) = ps.get(usize::from(u.int_in_range(0..=8u8)?)) {
                members.insert(*p);
            }
        }
        f.groups.insert(
            GroupId(id(g)),
            GroupFacts {
                portfolio: PortfolioId(id(u.int_in_range(0..=3)?)),
                administrators: u.ratio(1, 5)?,
                application_grants,
                environment_grants: environment_grants.into_iter().collect(),
                members,
            },
        );
    }
    Ok((f, ps))
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok((facts, principals)) = world(&mut u) else {
        return;
    };
    let snap = Snapshot::compile(&facts, 1);
    let mut resources: Vec<ResourceRef> = (0..12u8)
        .map(|e| ResourceRef::Environment(EnvironmentId(id(e))))
        .collect();
    resources.extend((0..6u8).map(|a| ResourceRef::Application(ApplicationId(id(a)))));
    for p in &principals {
        for perm in Permission::ALL {
            for r in &resources {
                let got = snap.check(p, perm, *r);
                assert_eq!(
                    got.allowed,
                    naive::allowed(&facts, p, perm, *r),
                    "{p:?} {perm:?} {r:?}: {:?}",
                    got.reason
                );
            }
            for a in 0..6u8 {
                for e in snap.environments_allowed(p, perm, ApplicationId(id(a))) {
                    assert!(naive::allowed(&facts, p, perm, ResourceRef::Environment(e)));
                }
            }
        }
    }
});
