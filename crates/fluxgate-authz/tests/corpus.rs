//! A data-driven corpus of cases taken from the two source documents (`corpus.json`): each names
//! a principal, a permission and a resource in one small world, and the expected decision and
//! reason. The naive reference evaluator must agree too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod naive;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use fluxgate_authz::{
    ApplicationFacts, EnvironmentFacts, Facts, GroupFacts, PrincipalFacts, Reason, ResourceRef,
    Snapshot,
};
use fluxgate_domain::{
    ApplicationId, EnvironmentId, FeaturePermission, GroupId, Permission, PortfolioId, PrincipalId,
    Role, ServiceAccountId, UserId, ValuePermission, ValuePermissions,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Corpus {
    world: World,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct World {
    portfolios: Vec<String>,
    applications: BTreeMap<String, String>,
    environments: BTreeMap<String, String>,
    principals: BTreeMap<String, P>,
    groups: BTreeMap<String, G>,
}

#[derive(Deserialize)]
struct P {
    role: String,
    #[serde(default = "yes")]
    active: bool,
    #[serde(default)]
    must_change_password: bool,
    #[serde(default)]
    service_account: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct G {
    portfolio: String,
    #[serde(default)]
    administrators: bool,
    #[serde(default)]
    applications: BTreeMap<String, String>,
    #[serde(default)]
    environments: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    members: Vec<String>,
}

#[derive(Deserialize)]
struct Case {
    #[serde(default)]
    source: Option<String>,
    principal: String,
    permission: String,
    resource: String,
    allowed: bool,
    reason: String,
}

fn permission(s: &str) -> Permission {
    Permission::ALL
        .into_iter()
        .find(|p| p.as_str() == s)
        .unwrap_or_else(|| panic!("permission {s}"))
}

fn value(s: &str) -> ValuePermission {
    ValuePermission::ALL
        .into_iter()
        .find(|p| p.as_str() == s)
        .unwrap_or_else(|| panic!("value {s}"))
}

#[test]
fn corpus_from_the_source_documents() {
    let corpus: Corpus = serde_json::from_str(include_str!("corpus.json")).unwrap();
    let w = corpus.world;
    let portfolios: HashMap<&str, PortfolioId> = w
        .portfolios
        .iter()
        .map(|n| (n.as_str(), PortfolioId::generate()))
        .collect();
    let apps: HashMap<&str, ApplicationId> = w
        .applications
        .keys()
        .map(|n| (n.as_str(), ApplicationId::generate()))
        .collect();
    let envs: HashMap<&str, EnvironmentId> = w
        .environments
        .keys()
        .map(|n| (n.as_str(), EnvironmentId::generate()))
        .collect();
    let groups: HashMap<&str, GroupId> = w
        .groups
        .keys()
        .map(|n| (n.as_str(), GroupId::generate()))
        .collect();
    let principals: HashMap<&str, PrincipalId> = w
        .principals
        .iter()
        .map(|(n, p)| {
            let id = if p.service_account {
                PrincipalId::ServiceAccount(ServiceAccountId::generate())
            } else {
                PrincipalId::User(UserId::generate())
            };
            (n.as_str(), id)
        })
        .collect();

    let mut facts = Facts::default();
    facts.portfolios.extend(portfolios.values().copied());
    for (n, po) in &w.applications {
        facts.applications.insert(
            apps[n.as_str()],
            ApplicationFacts {
                portfolio: portfolios[po.as_str()],
            },
        );
    }
    for (n, a) in &w.environments {
        facts.environments.insert(
            envs[n.as_str()],
            EnvironmentFacts {
                application: apps[a.as_str()],
            },
        );
    }
    for (n, p) in &w.principals {
        facts.principals.insert(
            principals[n.as_str()],
            PrincipalFacts {
                role: p.role.parse::<Role>().unwrap(),
                active: p.active,
                must_change_password: p.must_change_password,
                second_factor_overdue: false,
                portfolio: None,
                audit_writer: false,
                provisioner: false,
                acts_for: Default::default(),
            },
        );
    }
    for (n, g) in &w.groups {
        facts.groups.insert(
            groups[n.as_str()],
            GroupFacts {
                portfolio: portfolios[g.portfolio.as_str()],
                administrators: g.administrators,
                application_grants: g
                    .applications
                    .iter()
                    .map(|(a, fp)| (apps[a.as_str()], fp.parse::<FeaturePermission>().unwrap()))
                    .collect(),
                environment_grants: g
                    .environments
                    .iter()
                    .map(|(e, ps)| {
                        (
                            envs[e.as_str()],
                            ps.iter().map(|p| value(p)).collect::<ValuePermissions>(),
                        )
                    })
                    .collect(),
                members: g
                    .members
                    .iter()
                    .map(|m| principals[m.as_str()])
                    .collect::<BTreeSet<_>>(),
            },
        );
    }
    let snap = Snapshot::compile(&facts, 1);
    let group_name: HashMap<GroupId, &str> = groups.iter().map(|(n, id)| (*id, *n)).collect();

    assert!(corpus.cases.len() >= 30);
    for c in &corpus.cases {
        let p = principals
            .get(c.principal.as_str())
            .copied()
            .unwrap_or(PrincipalId::User(UserId::generate()));
        let r = match c.resource.split_once(':') {
            Some(("env", n)) => ResourceRef::Environment(
                envs.get(n).copied().unwrap_or_else(EnvironmentId::generate),
            ),
            Some(("app", n)) => ResourceRef::Application(
                apps.get(n).copied().unwrap_or_else(ApplicationId::generate),
            ),
            _ => panic!("resource {}", c.resource),
        };
        let perm = permission(&c.permission);
        let d = snap.check(&p, perm, r);
        let reason = match d.reason {
            Reason::TeamAdmin => "team_admin".to_owned(),
            Reason::PortfolioAdmin { group } => format!("portfolio_admin:{}", group_name[&group]),
            Reason::GroupGrant { group } => format!("group:{}", group_name[&group]),
            Reason::NoGrant { .. } => "no_grant".into(),
            Reason::Inactive => "inactive".into(),
            Reason::PasswordChangeRequired => "password_change_required".into(),
            Reason::UnknownResource => "unknown_resource".into(),
            Reason::UnknownPrincipal => "unknown_principal".into(),
            Reason::WrongResource { .. } => "wrong_resource".into(),
            other => format!("{other:?}"),
        };
        let what = format!(
            "{} {} {} ({})",
            c.principal,
            c.permission,
            c.resource,
            c.source.as_deref().unwrap_or("")
        );
        assert_eq!(d.allowed, c.allowed, "{what}: {}", d.reason);
        assert_eq!(reason, c.reason, "{what}");
        assert_eq!(
            naive::allowed(&facts, &p, perm, r),
            c.allowed,
            "reference disagrees: {what}"
        );
    }
}
