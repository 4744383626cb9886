//! The compiled, immutable snapshot the engine evaluates against.

use fluxgate_domain::{
    ApplicationId, EnvironmentId, FeaturePermission, GroupId, Permission, PortfolioId, PrincipalId,
    Role, ValuePermissions,
};
use rustc_hash::FxHashMap;

use crate::{Action, Decision, Facts, Reason, ResourceRef, Target};

#[derive(Debug, Clone)]
struct PrincipalEntry {
    id: PrincipalId,
    role: Role,
    active: bool,
    must_change_password: bool,
    second_factor_overdue: bool,
    /// Indices of the principal's ordinary groups.
    groups: Box<[u32]>,
    /// (portfolio index, Administrators group index) for each portfolio it administers.
    admin_of: Box<[(u32, u32)]>,
    /// For service accounts: `Some(None)` at organisation scope, `Some(Some(p))` for a
    /// portfolio's; `None` for users.
    account_scope: Option<Option<u32>>,
    audit_writer: bool,
    provisioner: bool,
    /// For service accounts: the principals it acts for (its creator, the creators of its live
    /// keys), as indices.
    acts_for: Box<[u32]>,
}

#[derive(Debug, Clone)]
struct GroupEntry {
    id: GroupId,
    portfolio: u32,
    administrators: bool,
    app_grants: FxHashMap<u32, FeaturePermission>,
    env_grants: FxHashMap<u32, ValuePermissions>,
}

#[derive(Debug, Clone)]
struct EnvEntry {
    id: EnvironmentId,
    app: u32,
    portfolio: u32,
}

#[derive(Debug, Clone)]
struct AppEntry {
    id: ApplicationId,
    portfolio: u32,
    envs: Vec<u32>,
}

#[derive(Debug, Clone)]
struct PortfolioEntry {
    id: PortfolioId,
    apps: Vec<u32>,
}

/// One group's part in an explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    pub group: GroupId,
    pub administrators: bool,
    /// The group's grant on the resource, in words.
    pub grants: String,
}

/// A decision with everything that went into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub decision: Decision,
    pub role: Option<Role>,
    pub active: bool,
    /// The principal's groups in the resource's portfolio.
    pub groups: Vec<Contribution>,
}

/// Facts compiled for fast evaluation: interned indices, hash maps keyed by small integers,
/// value permissions as bit sets. Immutable; build a new one when facts change.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    revision: i64,
    principal_ix: FxHashMap<PrincipalId, u32>,
    principals: Vec<PrincipalEntry>,
    portfolio_ix: FxHashMap<PortfolioId, u32>,
    portfolios: Vec<PortfolioEntry>,
    app_ix: FxHashMap<ApplicationId, u32>,
    apps: Vec<AppEntry>,
    env_ix: FxHashMap<EnvironmentId, u32>,
    envs: Vec<EnvEntry>,
    group_ix: FxHashMap<GroupId, u32>,
    groups: Vec<GroupEntry>,
}

fn ix<K: std::hash::Hash + Eq + Copy>(keys: impl Iterator<Item = K>) -> FxHashMap<K, u32> {
    keys.enumerate().map(|(i, k)| (k, i as u32)).collect()
}

impl Snapshot {
    /// Compiles facts. Dangling references (a grant on an unknown environment, a member that is
    /// not a principal) are ignored: they grant nothing.
    pub fn compile(facts: &Facts, revision: i64) -> Snapshot {
        let portfolio_ix = ix(facts.portfolios.iter().copied());
        let mut portfolios: Vec<PortfolioEntry> = facts
            .portfolios
            .iter()
            .map(|&id| PortfolioEntry {
                id,
                apps: Vec::new(),
            })
            .collect();

        let apps_in: Vec<(ApplicationId, u32)> = facts
            .applications
            .iter()
            .filter_map(|(id, a)| portfolio_ix.get(&a.portfolio).map(|&p| (*id, p)))
            .collect();
        let app_ix = ix(apps_in.iter().map(|(id, _)| *id));
        let mut apps: Vec<AppEntry> = apps_in
            .iter()
            .map(|&(id, portfolio)| AppEntry {
                id,
                portfolio,
                envs: Vec::new(),
            })
            .collect();
        for (i, a) in apps.iter().enumerate() {
            portfolios[a.portfolio as usize].apps.push(i as u32);
        }

        let envs_in: Vec<EnvEntry> = facts
            .environments
            .iter()
            .filter_map(|(id, e)| {
                app_ix.get(&e.application).map(|&app| EnvEntry {
                    id: *id,
                    app,
                    portfolio: apps[app as usize].portfolio,
                })
            })
            .collect();
        let env_ix = ix(envs_in.iter().map(|e| e.id));
        for (i, e) in envs_in.iter().enumerate() {
            apps[e.app as usize].envs.push(i as u32);
        }
        let envs = envs_in;

        let groups_in: Vec<(GroupId, &crate::GroupFacts, u32)> = facts
            .groups
            .iter()
            .filter_map(|(id, g)| portfolio_ix.get(&g.portfolio).map(|&p| (*id, g, p)))
            .collect();
        let groups: Vec<GroupEntry> = groups_in
            .iter()
            .map(|&(id, g, portfolio)| GroupEntry {
                id,
                portfolio,
                administrators: g.administrators,
                app_grants: g
                    .application_grants
                    .iter()
                    .filter_map(|(a, p)| {
                        app_ix
                            .get(a)
                            .filter(|&&ai| apps[ai as usize].portfolio == portfolio)
                            .map(|&ai| (ai, *p))
                    })
                    .collect(),
                env_grants: g
                    .environment_grants
                    .iter()
                    .filter_map(|(e, p)| {
                        env_ix
                            .get(e)
                            .filter(|&&ei| {
                                envs[ei as usize].portfolio == portfolio && !p.is_empty()
                            })
                            .map(|&ei| (ei, *p))
                    })
                    .collect(),
            })
            .collect();

        let group_ix = ix(groups.iter().map(|g| g.id));
        let principal_ix = ix(facts.principals.keys().copied());
        let mut member_of: Vec<Vec<u32>> = vec![Vec::new(); facts.principals.len()];
        for (gi, (_, g, _)) in groups_in.iter().enumerate() {
            for m in &g.members {
                if let Some(&pi) = principal_ix.get(m) {
                    member_of[pi as usize].push(gi as u32);
                }
            }
        }
        let principals = facts
            .principals
            .iter()
            .zip(member_of)
            .map(|((id, p), gs)| {
                let (admin, plain): (Vec<u32>, Vec<u32>) = gs
                    .into_iter()
                    .partition(|&g| groups[g as usize].administrators);
                PrincipalEntry {
                    id: *id,
                    role: p.role,
                    active: p.active,
                    must_change_password: p.must_change_password,
                    second_factor_overdue: p.second_factor_overdue,
                    groups: plain.into_boxed_slice(),
                    admin_of: admin
                        .into_iter()
                        .map(|g| (groups[g as usize].portfolio, g))
                        .collect(),
                    audit_writer: p.audit_writer && matches!(id, PrincipalId::ServiceAccount(_)),
                    provisioner: p.provisioner && matches!(id, PrincipalId::ServiceAccount(_)),
                    acts_for: p
                        .acts_for
                        .iter()
                        .filter_map(|a| principal_ix.get(a).copied())
                        .collect(),
                    account_scope: match (id, p.portfolio) {
                        (PrincipalId::User(_), _) => None,
                        (PrincipalId::ServiceAccount(_), None) => Some(None),
                        // A portfolio account whose portfolio is gone keeps no scope at all
                        // (an index no portfolio has), never the organisation's.
                        (PrincipalId::ServiceAccount(_), Some(po)) => {
                            Some(Some(portfolio_ix.get(&po).copied().unwrap_or(u32::MAX)))
                        }
                    },
                }
            })
            .collect();

        Snapshot {
            revision,
            principal_ix,
            principals,
            portfolio_ix,
            portfolios,
            app_ix,
            apps,
            env_ix,
            envs,
            group_ix,
            groups,
        }
    }

    /// The change-log revision the facts reflected.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    fn principal(&self, p: &PrincipalId) -> Option<&PrincipalEntry> {
        self.principal_ix
            .get(p)
            .map(|&i| &self.principals[i as usize])
    }

    /// Inactive and temporary-password principals hold nothing (the latter may still manage
    /// their own session).
    fn gate(pe: &PrincipalEntry, action: Option<Action>) -> Option<Decision> {
        if !pe.active {
            return Some(Decision::deny(Reason::Inactive));
        }
        if pe.must_change_password && action != Some(Action::ManageOwnSession) {
            return Some(Decision::deny(Reason::PasswordChangeRequired));
        }
        if pe.second_factor_overdue && action != Some(Action::ManageOwnSession) {
            return Some(Decision::deny(Reason::SecondFactorEnrolmentOverdue));
        }
        if pe.provisioner && action != Some(Action::Provision) {
            return Some(Decision::deny(Reason::ProvisioningOnly));
        }
        None
    }

    /// Resolves a resource to (portfolio, application, environment) indices.
    fn locate(&self, r: ResourceRef) -> Option<(u32, u32, Option<u32>)> {
        match r {
            ResourceRef::Environment(e) => {
                let ei = *self.env_ix.get(&e)?;
                let env = &self.envs[ei as usize];
                Some((env.portfolio, env.app, Some(ei)))
            }
            ResourceRef::Application(a) => {
                let ai = *self.app_ix.get(&a)?;
                Some((self.apps[ai as usize].portfolio, ai, None))
            }
        }
    }

    fn check_entry(&self, pe: &PrincipalEntry, permission: Permission, r: ResourceRef) -> Decision {
        if let Some(d) = Self::gate(pe, None) {
            return d;
        }
        if pe.role == Role::TeamAdmin {
            return Decision::allow(Reason::TeamAdmin);
        }
        let Some((portfolio, app, env)) = self.locate(r) else {
            return Decision::deny(Reason::UnknownResource);
        };
        for &(po, g) in pe.admin_of.iter() {
            if po == portfolio {
                return Decision::allow(Reason::PortfolioAdmin {
                    group: self.groups[g as usize].id,
                });
            }
        }
        match permission.value() {
            Some(v) => {
                let Some(ei) = env else {
                    return Decision::deny(Reason::WrongResource { permission });
                };
                for &g in pe.groups.iter() {
                    let ge = &self.groups[g as usize];
                    if let Some(bits) = ge.env_grants.get(&ei)
                        && bits.allows(v)
                    {
                        return Decision::allow(Reason::GroupGrant { group: ge.id });
                    }
                }
            }
            None => {
                for &g in pe.groups.iter() {
                    let ge = &self.groups[g as usize];
                    if let Some(fp) = ge.app_grants.get(&app)
                        && fp.allows(permission)
                    {
                        return Decision::allow(Reason::GroupGrant { group: ge.id });
                    }
                }
            }
        }
        Decision::deny(Reason::NoGrant { permission })
    }

    /// May `principal` exercise `permission` on `resource`, and why.
    pub fn check(
        &self,
        principal: &PrincipalId,
        permission: Permission,
        resource: ResourceRef,
    ) -> Decision {
        match self.principal(principal) {
            Some(pe) => self.check_entry(pe, permission, resource),
            None => Decision::deny(Reason::UnknownPrincipal),
        }
    }

    /// Several checks against this one snapshot.
    pub fn check_batch(&self, checks: &[(PrincipalId, Permission, ResourceRef)]) -> Vec<Decision> {
        checks
            .iter()
            .map(|(p, perm, r)| self.check(p, *perm, *r))
            .collect()
    }

    /// A check with the principal's role, state and every group it has in the resource's
    /// portfolio, with what each grants there.
    pub fn explain(
        &self,
        principal: &PrincipalId,
        permission: Permission,
        resource: ResourceRef,
    ) -> Explanation {
        let decision = self.check(principal, permission, resource);
        let Some(pe) = self.principal(principal) else {
            return Explanation {
                decision,
                role: None,
                active: false,
                groups: Vec::new(),
            };
        };
        let mut groups = Vec::new();
        if let Some((portfolio, app, env)) = self.locate(resource) {
            for &(po, g) in pe.admin_of.iter() {
                if po == portfolio {
                    groups.push(Contribution {
                        group: self.groups[g as usize].id,
                        administrators: true,
                        grants: "every permission in the portfolio".into(),
                    });
                }
            }
            for &g in pe.groups.iter() {
                let ge = &self.groups[g as usize];
                if ge.portfolio != portfolio {
                    continue;
                }
                let feature = ge
                    .app_grants
                    .get(&app)
                    .map_or("no feature permission", |p| p.as_str());
                let values = env
                    .and_then(|e| ge.env_grants.get(&e).copied())
                    .unwrap_or(ValuePermissions::EMPTY);
                let grants = match env {
                    Some(_) => format!("features: {feature}; values: {values}"),
                    None => format!("features: {feature}"),
                };
                groups.push(Contribution {
                    group: ge.id,
                    administrators: false,
                    grants,
                });
            }
        }
        Explanation {
            decision,
            role: Some(pe.role),
            active: pe.active,
            groups,
        }
    }

    /// The environments of `application` where `principal` holds `permission`. For feature
    /// permissions, use [`Snapshot::applications_allowed`].
    pub fn environments_allowed(
        &self,
        principal: &PrincipalId,
        permission: Permission,
        application: ApplicationId,
    ) -> Vec<EnvironmentId> {
        let (Some(pe), Some(&ai)) = (self.principal(principal), self.app_ix.get(&application))
        else {
            return Vec::new();
        };
        let mut out: Vec<EnvironmentId> = self.apps[ai as usize]
            .envs
            .iter()
            .map(|&e| self.envs[e as usize].id)
            .filter(|&e| {
                self.check_entry(pe, permission, ResourceRef::Environment(e))
                    .allowed
            })
            .collect();
        out.sort();
        out
    }

    /// The applications of `portfolio` where `principal` holds the feature `permission`.
    pub fn applications_allowed(
        &self,
        principal: &PrincipalId,
        permission: Permission,
        portfolio: PortfolioId,
    ) -> Vec<ApplicationId> {
        let (Some(pe), Some(&pi)) = (self.principal(principal), self.portfolio_ix.get(&portfolio))
        else {
            return Vec::new();
        };
        let mut out: Vec<ApplicationId> = self.portfolios[pi as usize]
            .apps
            .iter()
            .map(|&a| self.apps[a as usize].id)
            .filter(|&a| {
                self.check_entry(pe, permission, ResourceRef::Application(a))
                    .allowed
            })
            .collect();
        out.sort();
        out
    }

    /// The principals holding `permission` on `resource` with at least `min_role`.
    pub fn principals_allowed(
        &self,
        permission: Permission,
        resource: ResourceRef,
        min_role: Role,
    ) -> Vec<PrincipalId> {
        let mut out: Vec<PrincipalId> = self
            .principals
            .iter()
            .filter(|pe| {
                pe.role.includes(min_role) && self.check_entry(pe, permission, resource).allowed
            })
            .map(|pe| pe.id)
            .collect();
        out.sort();
        out
    }

    /// The users who may review a change request now: active, not of the submitter's party,
    /// holding what its kind needs, with the role its policy asks. Whom to tell about it.
    pub fn reviewers(&self, req: &crate::RequestFacts<'_>) -> Vec<PrincipalId> {
        let mut out: Vec<PrincipalId> = self
            .principals
            .iter()
            .filter(|pe| pe.active && matches!(pe.id, PrincipalId::User(_)))
            .filter(|pe| {
                self.change_request(&pe.id, crate::RequestAction::Review, req)
                    .allowed
            })
            .map(|pe| pe.id)
            .collect();
        out.sort();
        out
    }

    /// The portfolio an application or environment belongs to.
    pub fn portfolio_of(&self, r: ResourceRef) -> Option<PortfolioId> {
        self.locate(r)
            .map(|(p, _, _)| self.portfolios[p as usize].id)
    }

    /// The portfolio and application of a resource, if it exists.
    pub fn parents(&self, r: ResourceRef) -> Option<(PortfolioId, ApplicationId)> {
        self.locate(r)
            .map(|(p, a, _)| (self.portfolios[p as usize].id, self.apps[a as usize].id))
    }

    /// The portfolio of a group, if it exists.
    pub fn group_portfolio(&self, g: GroupId) -> Option<PortfolioId> {
        self.group_ix
            .get(&g)
            .map(|&i| self.portfolios[self.groups[i as usize].portfolio as usize].id)
    }

    /// Does the principal exist?
    pub fn has_principal(&self, p: &PrincipalId) -> bool {
        self.principal_ix.contains_key(p)
    }

    /// Is the principal an active member of the portfolio's Administrators group?
    pub fn is_portfolio_admin(&self, principal: &PrincipalId, portfolio: PortfolioId) -> bool {
        let (Some(pe), Some(&pi)) = (self.principal(principal), self.portfolio_ix.get(&portfolio))
        else {
            return false;
        };
        pe.active && pe.admin_of.iter().any(|&(po, _)| po == pi)
    }

    /// The *party* behind `principal`: the principal itself and, for a service account, every
    /// principal it acts for (its creator and the creators of its live keys), transitively (an
    /// account created by an account acts for the latter's party too). Unknown principals (a
    /// deleted user, say) are a party of one.
    pub fn party(&self, principal: &PrincipalId) -> Vec<PrincipalId> {
        let Some(&start) = self.principal_ix.get(principal) else {
            return vec![*principal];
        };
        let mut seen = vec![start];
        let mut next = 0;
        while let Some(&i) = seen.get(next) {
            next += 1;
            for &a in self.principals[i as usize].acts_for.iter() {
                if !seen.contains(&a) {
                    seen.push(a);
                }
            }
        }
        seen.into_iter()
            .map(|i| self.principals[i as usize].id)
            .collect()
    }

    /// A principal both `a` and `b` stand for, if they are the same party (see
    /// [`Snapshot::party`]); a person is preferred to an account in the answer.
    pub fn shared_party(&self, a: &PrincipalId, b: &PrincipalId) -> Option<PrincipalId> {
        let pa = self.party(a);
        let pb = self.party(b);
        let mut common = pa.into_iter().filter(|p| pb.contains(p));
        let first = common.next()?;
        if matches!(first, PrincipalId::User(_)) {
            return Some(first);
        }
        Some(
            common
                .find(|p| matches!(p, PrincipalId::User(_)))
                .unwrap_or(first),
        )
    }

    /// Everything the snapshot holds about the principal's standing, as one canonical string:
    /// role, state, temporary password, groups (ordinary and Administrators) and account scope.
    /// Two snapshots give the same string exactly when they grant the principal the same;
    /// `None` for an unknown principal.
    pub fn standing(&self, principal: &PrincipalId) -> Option<String> {
        let pe = self.principal(principal)?;
        let mut groups: Vec<String> = pe
            .groups
            .iter()
            .chain(pe.admin_of.iter().map(|(_, g)| g))
            .map(|&g| self.groups[g as usize].id.to_string())
            .collect();
        groups.sort();
        let scope = match pe.account_scope {
            None => String::new(),
            Some(None) => "org".to_owned(),
            Some(Some(p)) => self
                .portfolios
                .get(p as usize)
                .map_or_else(|| "gone".to_owned(), |e| e.id.to_string()),
        };
        Some(format!(
            "{}|{}|{}|{}|{}|{}|{}|{}",
            pe.role,
            pe.active,
            pe.must_change_password,
            pe.second_factor_overdue,
            pe.audit_writer,
            pe.provisioner,
            scope,
            groups.join(",")
        ))
    }

    /// Whether the principal exists and is active.
    pub fn is_active(&self, principal: &PrincipalId) -> bool {
        self.principal(principal).is_some_and(|p| p.active)
    }

    /// The principal's role, if it exists.
    pub fn role(&self, principal: &PrincipalId) -> Option<Role> {
        self.principal(principal).map(|p| p.role)
    }

    /// May `principal` perform an administrative `action` on `target`, and why.
    pub fn authorize(&self, principal: &PrincipalId, action: Action, target: Target) -> Decision {
        let Some(pe) = self.principal(principal) else {
            return Decision::deny(Reason::UnknownPrincipal);
        };
        if let Some(d) = Self::gate(pe, Some(action)) {
            return d;
        }
        let own =
            matches!((target, principal), (Target::User(t), PrincipalId::User(me)) if t == *me);
        if own {
            match action {
                Action::ViewUser | Action::ManageOwnSession => {
                    return Decision::allow(Reason::OwnAccount);
                }
                Action::DeactivateUser
                | Action::DeleteUser
                | Action::ChangeUserRole
                | Action::ResetUserPassword => {
                    return Decision::deny(Reason::SelfProtected { action });
                }
                _ => {}
            }
        }
        match action {
            Action::ManageOwnSession | Action::ReadCatalog | Action::ViewAnalytics => {
                return Decision::allow(Reason::Reader);
            }
            Action::IngestAudit => {
                return if pe.audit_writer {
                    Decision::allow(Reason::AuditWriter)
                } else {
                    Decision::deny(Reason::NotAuditWriter)
                };
            }
            Action::Provision => {
                return if pe.provisioner {
                    Decision::allow(Reason::Provisioner)
                } else {
                    Decision::deny(Reason::NotProvisioner)
                };
            }
            _ => {}
        }
        if action == Action::ViewApprovalMetrics {
            return if pe.role >= Role::Approver {
                Decision::allow(Reason::RoleGrants {
                    role: pe.role,
                    required: Role::Approver,
                })
            } else {
                Decision::deny(Reason::RoleRequired {
                    required: Role::Approver,
                    held: pe.role,
                })
            };
        }
        if pe.role == Role::TeamAdmin {
            return Decision::allow(Reason::RoleGrants {
                role: pe.role,
                required: Role::TeamAdmin,
            });
        }
        if action == Action::CheckOthers {
            // Internal services ask about anyone with their admin service account's key; a
            // portfolio's service account about principals within that portfolio.
            match (pe.account_scope, target) {
                (Some(None), _) => return Decision::allow(Reason::InternalService),
                (Some(Some(po)), Target::Portfolio(p))
                    if self.portfolio_ix.get(&p) == Some(&po) =>
                {
                    return Decision::allow(Reason::InternalService);
                }
                _ => {}
            }
        }
        let portfolio_scoped = matches!(
            action,
            Action::ManageApplications
                | Action::ManageGroups
                | Action::ManageMembers
                | Action::ManageServiceAccounts
                | Action::CheckOthers
        );
        if let (true, Target::Portfolio(p)) = (portfolio_scoped, target) {
            if let Some(&pi) = self.portfolio_ix.get(&p)
                && let Some(&(_, g)) = pe.admin_of.iter().find(|&&(po, _)| po == pi)
            {
                return Decision::allow(Reason::PortfolioAdmin {
                    group: self.groups[g as usize].id,
                });
            }
            return Decision::deny(Reason::NotPortfolioAdmin { portfolio: p });
        }
        Decision::deny(Reason::RoleRequired {
            required: Role::TeamAdmin,
            held: pe.role,
        })
    }
}
