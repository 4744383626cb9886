//! The reference model of the access-model benchmark: 20 portfolios × 10 applications × 5
//! environments, 100 groups (5 per portfolio) plus each portfolio's Administrators, and 10,000
//! users each in 1 to 4 groups. Generated from a fixed seed.

use std::collections::{BTreeMap, BTreeSet};

use fluxgate_authz::{
    ApplicationFacts, EnvironmentFacts, Facts, GroupFacts, PrincipalFacts, ResourceRef,
};
use fluxgate_domain::{
    ApplicationId, EnvironmentId, FeaturePermission, GroupId, Permission, PortfolioId, PrincipalId,
    Role, UserId, ValuePermissions,
};
use uuid::Uuid;

/// Sizes of a model.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub portfolios: usize,
    pub apps_per_portfolio: usize,
    pub envs_per_app: usize,
    pub groups_per_portfolio: usize,
    pub users: usize,
}

impl Sizes {
    /// The reference model.
    pub const REFERENCE: Sizes = Sizes {
        portfolios: 20,
        apps_per_portfolio: 10,
        envs_per_app: 5,
        groups_per_portfolio: 5,
        users: 10_000,
    };
}

/// A small, fast pseudo-random generator (SplitMix64): the same model on every run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

fn id(kind: u8, n: usize) -> Uuid {
    Uuid::from_u128((u128::from(kind) << 64) | n as u128)
}

/// One environment with its parents.
#[derive(Debug, Clone, Copy)]
pub struct Env {
    pub id: EnvironmentId,
    pub app: ApplicationId,
    pub portfolio: PortfolioId,
}

/// A check to make.
#[derive(Debug, Clone, Copy)]
pub struct Req {
    pub user: PrincipalId,
    pub permission: Permission,
    pub env: Env,
}

/// The model: facts plus the lists the peers' encodings need.
#[derive(Debug, Clone)]
pub struct Model {
    pub facts: Facts,
    pub envs: Vec<Env>,
    pub admin_group: BTreeMap<PortfolioId, GroupId>,
}

impl Model {
    pub fn generate(s: Sizes, seed: u64) -> Model {
        let mut rng = Rng::new(seed);
        let mut facts = Facts::default();
        let mut envs = Vec::new();
        let mut apps_of: Vec<Vec<ApplicationId>> = Vec::new();
        let mut envs_of: Vec<Vec<EnvironmentId>> = Vec::new();
        let mut admin_group = BTreeMap::new();
        for p in 0..s.portfolios {
            let pid = PortfolioId(id(1, p));
            facts.portfolios.insert(pid);
            let (mut apps, mut penvs) = (Vec::new(), Vec::new());
            for a in 0..s.apps_per_portfolio {
                let aid = ApplicationId(id(2, p * 1000 + a));
                facts
                    .applications
                    .insert(aid, ApplicationFacts { portfolio: pid });
                apps.push(aid);
                for e in 0..s.envs_per_app {
                    let eid = EnvironmentId(id(3, (p * 1000 + a) * 100 + e));
                    facts
                        .environments
                        .insert(eid, EnvironmentFacts { application: aid });
                    envs.push(Env {
                        id: eid,
                        app: aid,
                        portfolio: pid,
                    });
                    penvs.push(eid);
                }
            }
            apps_of.push(apps);
            envs_of.push(penvs);
            let gid = GroupId(id(4, p * 100));
            admin_group.insert(pid, gid);
            facts.groups.insert(
                gid,
                GroupFacts {
                    portfolio: pid,
                    administrators: true,
                    application_grants: BTreeMap::new(),
                    environment_grants: BTreeMap::new(),
                    members: BTreeSet::new(),
                },
            );
        }
        let mut plain_groups = Vec::new();
        for p in 0..s.portfolios {
            for g in 0..s.groups_per_portfolio {
                let gid = GroupId(id(4, p * 100 + g + 1));
                let mut application_grants = BTreeMap::new();
                for _ in 0..3 {
                    let a = apps_of[p][rng.below(apps_of[p].len())];
                    let fp = if rng.below(2) == 0 {
                        FeaturePermission::Create
                    } else {
                        FeaturePermission::CreateEditDelete
                    };
                    application_grants.insert(a, fp);
                }
                let mut environment_grants = BTreeMap::new();
                for _ in 0..10 {
                    let e = envs_of[p][rng.below(envs_of[p].len())];
                    let bits = ValuePermissions::from_bits(1 + rng.below(15) as u8);
                    environment_grants.insert(e, bits);
                }
                facts.groups.insert(
                    gid,
                    GroupFacts {
                        portfolio: PortfolioId(id(1, p)),
                        administrators: false,
                        application_grants,
                        environment_grants,
                        members: BTreeSet::new(),
                    },
                );
                plain_groups.push(gid);
            }
        }
        for u in 0..s.users {
            let pid = PrincipalId::User(UserId(id(5, u)));
            let roll = rng.below(100);
            let role = match roll {
                0 => Role::TeamAdmin,
                1..=20 => Role::Approver,
                _ => Role::Requester,
            };
            facts.principals.insert(
                pid,
                PrincipalFacts {
                    role,
                    active: rng.below(50) != 0,
                    must_change_password: false,
                    second_factor_overdue: false,
                    portfolio: None,
                    audit_writer: false,
                    provisioner: false,
                    acts_for: Default::default(),
                },
            );
            for _ in 0..1 + rng.below(4) {
                let g = plain_groups[rng.below(plain_groups.len())];
                if let Some(gf) = facts.groups.get_mut(&g) {
                    gf.members.insert(pid);
                }
            }
            if rng.below(250) == 0 {
                let p = PortfolioId(id(1, rng.below(s.portfolios)));
                if let Some(gf) = facts.groups.get_mut(&admin_group[&p]) {
                    gf.members.insert(pid);
                }
            }
        }
        Model {
            facts,
            envs,
            admin_group,
        }
    }

    /// `n` checks drawn from the model. Each user is drawn mostly from the members of a group
    /// of the environment's portfolio, so that about half of the answers are "allow".
    pub fn requests(&self, n: usize, seed: u64) -> Vec<Req> {
        let mut rng = Rng::new(seed);
        let users: Vec<PrincipalId> = self.facts.principals.keys().copied().collect();
        let groups: Vec<&GroupFacts> = self
            .facts
            .groups
            .values()
            .filter(|g| !g.administrators)
            .collect();
        (0..n)
            .map(|_| {
                let permission = Permission::ALL[rng.below(Permission::ALL.len())];
                let g = groups[rng.below(groups.len())];
                let candidates: Vec<&EnvironmentId> = g.environment_grants.keys().collect();
                let env = if rng.below(4) == 0 || candidates.is_empty() {
                    self.envs[rng.below(self.envs.len())]
                } else {
                    let e = *candidates[rng.below(candidates.len())];
                    *self
                        .envs
                        .iter()
                        .find(|x| x.id == e)
                        .unwrap_or(&self.envs[0])
                };
                let members: Vec<&PrincipalId> = g.members.iter().collect();
                let user = if rng.below(3) == 0 || members.is_empty() {
                    users[rng.below(users.len())]
                } else {
                    *members[rng.below(members.len())]
                };
                Req {
                    user,
                    permission,
                    env,
                }
            })
            .collect()
    }

    /// The resource a FluxGate check names.
    pub fn resource(r: &Req) -> ResourceRef {
        ResourceRef::Environment(r.env.id)
    }
}
