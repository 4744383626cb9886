//! The compiled, immutable snapshot the engine evaluates against.

use fluxgate_domain::{
    ApplicationId, EnvironmentId, FeaturePermission, GroupId, Permission, PortfolioId, PrincipalId,
    Role, ValuePermissions,
};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::cow::{ChunkVec, ShardedMap};
use crate::{Action, Decision, Facts, Reason, ResourceRef, Target};

#[derive(Debug, Clone)]
struct PrincipalEntry {
    role: Role,
    active: bool,
    must_change_password: bool,
    second_factor_overdue: bool,
    /// Indices of the principal's ordinary groups, in the order of their ids.
    groups: Box<[u32]>,
    /// (portfolio index, Administrators group index) for each portfolio it administers, in the
    /// order of the groups' ids.
    admin_of: Box<[(u32, u32)]>,
    /// For service accounts: `Some(None)` at organisation scope, `Some(Some(p))` for a
    /// portfolio's; `None` for users.
    account_scope: Option<Option<u32>>,
    audit_writer: bool,
    provisioner: bool,
    /// For service accounts: the principals it acts for (its creator, the creators of its live
    /// keys); those that are not principals (any more) are passed over when asked.
    acts_for: Box<[PrincipalId]>,
}

#[derive(Debug, Clone)]
struct GroupEntry {
    id: GroupId,
    portfolio: u32,
    administrators: bool,
    app_grants: FxHashMap<u32, FeaturePermission>,
    env_grants: FxHashMap<u32, ValuePermissions>,
    /// The members that are principals, in id order.
    members: Box<[PrincipalId]>,
    /// Members that are not principals (yet): they hold the group once they are.
    unresolved: Box<[PrincipalId]>,
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

/// The catalog: portfolios, applications and environments with their parents. Changes to it
/// are rare, so it is shared whole between snapshots and rebuilt by [`Snapshot::compile`].
#[derive(Debug, Default)]
struct Catalog {
    portfolio_ix: FxHashMap<PortfolioId, u32>,
    portfolios: Vec<PortfolioEntry>,
    app_ix: FxHashMap<ApplicationId, u32>,
    apps: Vec<AppEntry>,
    env_ix: FxHashMap<EnvironmentId, u32>,
    envs: Vec<EnvEntry>,
}

/// Facts compiled for fast evaluation: interned indices, hash maps keyed by small integers,
/// value permissions as bit sets. Immutable: [`Snapshot::compile`] builds one from facts, and
/// [`Snapshot::update`] derives the next from this one and what changed, sharing everything
/// the change did not touch.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    revision: i64,
    catalog: Arc<Catalog>,
    /// Each principal's entry, right in its shard's table: a look-up is one probe.
    principals: ShardedMap<PrincipalId, PrincipalEntry>,
    group_ix: ShardedMap<GroupId, u32>,
    groups: ChunkVec<GroupEntry>,
    /// Principals named as members that are not principals (yet), with the groups naming them.
    dangling: Arc<FxHashMap<PrincipalId, Vec<GroupId>>>,
    /// Groups removed since the last compilation, still taking their slots in `groups`.
    removed: usize,
    /// The Team Admins, in id order: with the members of a portfolio's groups, everyone who
    /// can hold a permission there.
    team_admins: Arc<Vec<PrincipalId>>,
}

fn ix<K: std::hash::Hash + Eq + Copy>(keys: impl Iterator<Item = K>) -> FxHashMap<K, u32> {
    keys.enumerate().map(|(i, k)| (k, i as u32)).collect()
}

impl Catalog {
    fn compile(facts: &Facts) -> Catalog {
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

        let envs: Vec<EnvEntry> = facts
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
        let env_ix = ix(envs.iter().map(|e| e.id));
        for (i, e) in envs.iter().enumerate() {
            apps[e.app as usize].envs.push(i as u32);
        }
        Catalog {
            portfolio_ix,
            portfolios,
            app_ix,
            apps,
            env_ix,
            envs,
        }
    }

    /// A group's entry without its members; `None` when its portfolio does not exist. Grants
    /// on resources that do not exist or lie outside the portfolio grant nothing.
    fn group(&self, id: GroupId, g: &crate::GroupFacts) -> Option<GroupEntry> {
        let portfolio = *self.portfolio_ix.get(&g.portfolio)?;
        Some(GroupEntry {
            id,
            portfolio,
            administrators: g.administrators,
            app_grants: g
                .application_grants
                .iter()
                .filter_map(|(a, p)| {
                    self.app_ix
                        .get(a)
                        .filter(|&&ai| self.apps[ai as usize].portfolio == portfolio)
                        .map(|&ai| (ai, *p))
                })
                .collect(),
            env_grants: g
                .environment_grants
                .iter()
                .filter_map(|(e, p)| {
                    self.env_ix
                        .get(e)
                        .filter(|&&ei| {
                            self.envs[ei as usize].portfolio == portfolio && !p.is_empty()
                        })
                        .map(|&ei| (ei, *p))
                })
                .collect(),
            members: Box::default(),
            unresolved: Box::default(),
        })
    }

    /// A principal's entry without its groups.
    fn principal(&self, id: PrincipalId, p: &crate::PrincipalFacts) -> PrincipalEntry {
        let account = matches!(id, PrincipalId::ServiceAccount(_));
        PrincipalEntry {
            role: p.role,
            active: p.active,
            must_change_password: p.must_change_password,
            second_factor_overdue: p.second_factor_overdue,
            groups: Box::default(),
            admin_of: Box::default(),
            audit_writer: p.audit_writer && account,
            provisioner: p.provisioner && account,
            acts_for: p.acts_for.iter().copied().collect(),
            account_scope: match (account, p.portfolio) {
                (false, _) => None,
                (true, None) => Some(None),
                // A portfolio account whose portfolio is gone keeps no scope at all (an index
                // no portfolio has), never the organisation's.
                (true, Some(po)) => Some(Some(
                    self.portfolio_ix.get(&po).copied().unwrap_or(u32::MAX),
                )),
            },
        }
    }
}

/// Inserts `item` into a list kept in the order `key` gives, unless it is there.
fn insert_sorted<T: Copy + PartialEq, K: Ord>(list: &mut Box<[T]>, item: T, key: impl Fn(&T) -> K) {
    let k = key(&item);
    if let Err(at) = list.binary_search_by(|x| key(x).cmp(&k)) {
        let mut v = std::mem::take(list).into_vec();
        v.insert(at, item);
        *list = v.into_boxed_slice();
    }
}

fn remove_item<T: PartialEq>(list: &mut Box<[T]>, item: &T) {
    if list.contains(item) {
        let mut v = std::mem::take(list).into_vec();
        v.retain(|x| x != item);
        *list = v.into_boxed_slice();
    }
}

impl Snapshot {
    /// Compiles facts. Dangling references (a grant on an unknown environment, a member that is
    /// not a principal) are ignored: they grant nothing.
    pub fn compile(facts: &Facts, revision: i64) -> Snapshot {
        let catalog = Catalog::compile(facts);
        let mut groups: Vec<GroupEntry> = Vec::with_capacity(facts.groups.len());
        let mut group_facts = Vec::with_capacity(facts.groups.len());
        for (id, g) in &facts.groups {
            if let Some(entry) = catalog.group(*id, g) {
                groups.push(entry);
                group_facts.push(g);
            }
        }
        let position: FxHashMap<PrincipalId, usize> = facts
            .principals
            .keys()
            .enumerate()
            .map(|(i, p)| (*p, i))
            .collect();
        let mut member_of: Vec<Vec<u32>> = vec![Vec::new(); facts.principals.len()];
        let mut dangling: FxHashMap<PrincipalId, Vec<GroupId>> = FxHashMap::default();
        for (gi, (ge, g)) in groups.iter_mut().zip(group_facts).enumerate() {
            let mut members = Vec::with_capacity(g.members.len());
            let mut unresolved = Vec::new();
            for m in &g.members {
                match position.get(m) {
                    Some(&pi) => {
                        member_of[pi].push(gi as u32);
                        members.push(*m);
                    }
                    None => {
                        unresolved.push(*m);
                        dangling.entry(*m).or_default().push(ge.id);
                    }
                }
            }
            ge.members = members.into_boxed_slice();
            ge.unresolved = unresolved.into_boxed_slice();
        }
        let principals = facts.principals.iter().zip(member_of).map(|((id, p), gs)| {
            let mut pe = catalog.principal(*id, p);
            // Most principals administer nothing: their list is kept as it is, not split.
            if gs.iter().any(|&g| groups[g as usize].administrators) {
                let (admin, plain): (Vec<u32>, Vec<u32>) = gs
                    .into_iter()
                    .partition(|&g| groups[g as usize].administrators);
                pe.groups = plain.into_boxed_slice();
                pe.admin_of = admin
                    .into_iter()
                    .map(|g| (groups[g as usize].portfolio, g))
                    .collect();
            } else {
                pe.groups = gs.into_boxed_slice();
            }
            (*id, pe)
        });
        let principals = ShardedMap::new(principals);
        let team_admins = facts
            .principals
            .iter()
            .filter(|(_, p)| p.role == Role::TeamAdmin)
            .map(|(id, _)| *id)
            .collect();
        Snapshot {
            team_admins: Arc::new(team_admins),
            revision,
            catalog: Arc::new(catalog),
            principals,
            group_ix: ShardedMap::new(groups.iter().enumerate().map(|(i, g)| (g.id, i as u32))),
            groups: ChunkVec::from_vec(groups),
            dangling: Arc::new(dangling),
            removed: 0,
        }
    }

    /// The snapshot of `facts` at `revision`, derived from this one when only the listed
    /// principals and groups changed since it was made (added, changed or removed, a group
    /// listed whenever its grants or members changed; the catalog unchanged). Its answers are those of [`Snapshot::compile`] on the same facts; its cost
    /// follows the change (the principals' and groups' entries and the memberships that
    /// changed), not the size of the directory. Compiles afresh once removed entries take as
    /// much room as live ones.
    pub fn update(
        &self,
        facts: &Facts,
        principals: &[PrincipalId],
        groups: &[GroupId],
        revision: i64,
    ) -> Snapshot {
        let mut next = self.clone();
        next.revision = revision;
        for p in principals {
            next.upsert_principal(facts, *p);
        }
        for g in groups {
            next.upsert_group(facts, *g);
        }
        if next.removed > 1024 && next.removed * 2 > next.groups.len() {
            return Snapshot::compile(facts, revision);
        }
        next
    }

    /// Makes `p` a member of the group at `gi`, on the principal's side.
    fn join(&mut self, p: &PrincipalId, gi: u32) {
        let (id, portfolio, administrators) = {
            let g = self.groups.get(gi);
            (g.id, g.portfolio, g.administrators)
        };
        let groups = &self.groups;
        let Some(pe) = self.principals.get_mut(p) else {
            return;
        };
        let id_of = |g: u32| if g == gi { id } else { groups.get(g).id };
        if administrators {
            insert_sorted(&mut pe.admin_of, (portfolio, gi), |&(_, g)| id_of(g));
        } else {
            insert_sorted(&mut pe.groups, gi, |&g| id_of(g));
        }
    }

    /// Ends the membership of `p` in the group at `gi`, on the principal's side.
    fn leave(&mut self, p: &PrincipalId, gi: u32) {
        let portfolio = self.groups.get(gi).portfolio;
        if let Some(pe) = self.principals.get_mut(p) {
            remove_item(&mut pe.groups, &gi);
            remove_item(&mut pe.admin_of, &(portfolio, gi));
        }
    }

    fn add_dangling(&mut self, p: PrincipalId, g: GroupId) {
        Arc::make_mut(&mut self.dangling)
            .entry(p)
            .or_default()
            .push(g);
    }

    fn drop_dangling(&mut self, p: &PrincipalId, g: GroupId) {
        if !self.dangling.contains_key(p) {
            return;
        }
        let dangling = Arc::make_mut(&mut self.dangling);
        if let Some(gs) = dangling.get_mut(p) {
            gs.retain(|x| *x != g);
            if gs.is_empty() {
                dangling.remove(p);
            }
        }
    }

    fn upsert_principal(&mut self, facts: &Facts, p: PrincipalId) {
        let admin = facts
            .principals
            .get(&p)
            .is_some_and(|f| f.role == Role::TeamAdmin);
        if admin != self.team_admins.binary_search(&p).is_ok() {
            let admins = Arc::make_mut(&mut self.team_admins);
            match admins.binary_search(&p) {
                Ok(at) => {
                    admins.remove(at);
                }
                Err(at) => admins.insert(at, p),
            }
        }
        let known = self.principals.contains(&p);
        match (known, facts.principals.get(&p)) {
            (true, Some(f)) => {
                let mut entry = self.catalog.principal(p, f);
                if let Some(pe) = self.principals.get_mut(&p) {
                    entry.groups = std::mem::take(&mut pe.groups);
                    entry.admin_of = std::mem::take(&mut pe.admin_of);
                    *pe = entry;
                }
            }
            (false, Some(f)) => {
                self.principals.insert(p, self.catalog.principal(p, f));
                // Groups that named it before it existed.
                let Some(named) = self.dangling.get(&p).cloned() else {
                    return;
                };
                Arc::make_mut(&mut self.dangling).remove(&p);
                for g in named {
                    let Some(&gi) = self.group_ix.get(&g) else {
                        continue;
                    };
                    let ge = self.groups.get_mut(gi);
                    remove_item(&mut ge.unresolved, &p);
                    // Facts are the truth: the group may have let it go meanwhile.
                    if !facts.groups.get(&g).is_some_and(|f| f.members.contains(&p)) {
                        continue;
                    }
                    insert_sorted(&mut ge.members, p, |m| *m);
                    self.join(&p, gi);
                }
            }
            (true, None) => {
                let Some(pe) = self.principals.remove(&p) else {
                    return;
                };
                let groups = pe
                    .groups
                    .iter()
                    .copied()
                    .chain(pe.admin_of.iter().map(|&(_, g)| g));
                for gi in groups {
                    let ge = self.groups.get_mut(gi);
                    remove_item(&mut ge.members, &p);
                    let gid = ge.id;
                    // A group that still names it holds it again should it come back.
                    if facts
                        .groups
                        .get(&gid)
                        .is_some_and(|g| g.members.contains(&p))
                    {
                        let mut unresolved = std::mem::take(&mut ge.unresolved).into_vec();
                        unresolved.push(p);
                        ge.unresolved = unresolved.into_boxed_slice();
                        self.add_dangling(p, gid);
                    }
                }
            }
            (false, None) => {}
        }
    }

    /// Removes the group at `gi` and every membership in it.
    fn remove_group(&mut self, gi: u32) {
        let ge = self.groups.get_mut(gi);
        let (id, members, unresolved) = (
            ge.id,
            std::mem::take(&mut ge.members),
            std::mem::take(&mut ge.unresolved),
        );
        for p in members.iter() {
            self.leave(p, gi);
        }
        for p in unresolved.iter() {
            self.drop_dangling(p, id);
        }
        self.group_ix.remove(&id);
        self.removed += 1;
    }

    fn upsert_group(&mut self, facts: &Facts, g: GroupId) {
        let entry = facts
            .groups
            .get(&g)
            .and_then(|f| self.catalog.group(g, f).map(|e| (e, &f.members)));
        if let Some(&gi) = self.group_ix.get(&g) {
            let same_kind = entry.as_ref().is_some_and(|(e, _)| {
                let o = self.groups.get(gi);
                o.portfolio == e.portfolio && o.administrators == e.administrators
            });
            if !same_kind {
                self.remove_group(gi);
            }
        }
        let Some((mut entry, wanted)) = entry else {
            return;
        };
        // In id order, as the facts keep them.
        let (members, unresolved): (Vec<PrincipalId>, Vec<PrincipalId>) =
            wanted.iter().partition(|m| self.principals.contains(m));
        entry.members = members.into_boxed_slice();
        entry.unresolved = unresolved.into_boxed_slice();
        match self.group_ix.get(&g).copied() {
            Some(gi) => {
                // The same kind of group in the same portfolio: apply the difference.
                let ge = self.groups.get_mut(gi);
                let before = std::mem::replace(ge, entry);
                let (after, after_unresolved) = {
                    let ge = self.groups.get(gi);
                    (ge.members.clone(), ge.unresolved.clone())
                };
                for p in before.members.iter() {
                    if after.binary_search(p).is_err() {
                        self.leave(p, gi);
                    }
                }
                for p in after.iter() {
                    if before.members.binary_search(p).is_err() {
                        self.join(p, gi);
                    }
                }
                for p in before.unresolved.iter() {
                    if !after_unresolved.contains(p) {
                        self.drop_dangling(p, g);
                    }
                }
                for p in after_unresolved.iter() {
                    if !before.unresolved.contains(p) {
                        self.add_dangling(*p, g);
                    }
                }
            }
            None => {
                let (members, unresolved) = (entry.members.clone(), entry.unresolved.clone());
                let gi = self.groups.push(entry);
                self.group_ix.insert(g, gi);
                for p in members.iter() {
                    self.join(p, gi);
                }
                for p in unresolved.iter() {
                    self.add_dangling(*p, g);
                }
            }
        }
    }

    /// The change-log revision the facts reflected.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    fn principal(&self, p: &PrincipalId) -> Option<&PrincipalEntry> {
        self.principals.get(p)
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
                let ei = *self.catalog.env_ix.get(&e)?;
                let env = &self.catalog.envs[ei as usize];
                Some((env.portfolio, env.app, Some(ei)))
            }
            ResourceRef::Application(a) => {
                let ai = *self.catalog.app_ix.get(&a)?;
                Some((self.catalog.apps[ai as usize].portfolio, ai, None))
            }
        }
    }

    fn check_entry(&self, pe: &PrincipalEntry, permission: Permission, r: ResourceRef) -> Decision {
        self.check_at(pe, permission, || self.locate(r))
    }

    /// A check on a resource located by `locate` (called only when the principal's role and
    /// state leave the answer open).
    #[inline]
    fn check_at(
        &self,
        pe: &PrincipalEntry,
        permission: Permission,
        locate: impl FnOnce() -> Option<(u32, u32, Option<u32>)>,
    ) -> Decision {
        if let Some(d) = Self::gate(pe, None) {
            return d;
        }
        if pe.role == Role::TeamAdmin {
            return Decision::allow(Reason::TeamAdmin);
        }
        let Some((portfolio, app, env)) = locate() else {
            return Decision::deny(Reason::UnknownResource);
        };
        for &(po, g) in pe.admin_of.iter() {
            if po == portfolio {
                return Decision::allow(Reason::PortfolioAdmin {
                    group: self.groups.get(g).id,
                });
            }
        }
        match permission.value() {
            Some(v) => {
                let Some(ei) = env else {
                    return Decision::deny(Reason::WrongResource { permission });
                };
                for &g in pe.groups.iter() {
                    let ge = &self.groups.get(g);
                    if let Some(bits) = ge.env_grants.get(&ei)
                        && bits.allows(v)
                    {
                        return Decision::allow(Reason::GroupGrant { group: ge.id });
                    }
                }
            }
            None => {
                for &g in pe.groups.iter() {
                    let ge = &self.groups.get(g);
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
                        group: self.groups.get(g).id,
                        administrators: true,
                        grants: "every permission in the portfolio".into(),
                    });
                }
            }
            for &g in pe.groups.iter() {
                let ge = &self.groups.get(g);
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
        let (Some(pe), Some(&ai)) = (
            self.principal(principal),
            self.catalog.app_ix.get(&application),
        ) else {
            return Vec::new();
        };
        let app = &self.catalog.apps[ai as usize];
        let mut out: Vec<EnvironmentId> = app
            .envs
            .iter()
            .filter(|&&e| {
                self.check_at(pe, permission, || Some((app.portfolio, ai, Some(e))))
                    .allowed
            })
            .map(|&e| self.catalog.envs[e as usize].id)
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
        let (Some(pe), Some(&pi)) = (
            self.principal(principal),
            self.catalog.portfolio_ix.get(&portfolio),
        ) else {
            return Vec::new();
        };
        let mut out: Vec<ApplicationId> = self.catalog.portfolios[pi as usize]
            .apps
            .iter()
            .map(|&a| self.catalog.apps[a as usize].id)
            .filter(|&a| {
                self.check_entry(pe, permission, ResourceRef::Application(a))
                    .allowed
            })
            .collect();
        out.sort();
        out
    }

    /// Those of everyone who can hold a permission on `resource` (the Team Admins and the
    /// members of the groups of its portfolio: nobody else has a way in) that `keep` keeps, in
    /// id order.
    fn among_candidates(
        &self,
        resource: ResourceRef,
        keep: impl Fn(&PrincipalId, &PrincipalEntry) -> bool,
    ) -> Vec<PrincipalId> {
        let mut out = Vec::new();
        let mut consider = |p: &PrincipalId| {
            if let Some(pe) = self.principal(p)
                && keep(p, pe)
            {
                out.push(*p);
            }
        };
        self.team_admins.iter().for_each(&mut consider);
        if let Some((portfolio, _, _)) = self.locate(resource) {
            for ge in self.groups.iter() {
                if ge.portfolio == portfolio {
                    ge.members.iter().for_each(&mut consider);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The principals holding `permission` on `resource` with at least `min_role`.
    pub fn principals_allowed(
        &self,
        permission: Permission,
        resource: ResourceRef,
        min_role: Role,
    ) -> Vec<PrincipalId> {
        self.among_candidates(resource, |_, pe| {
            pe.role.includes(min_role) && self.check_entry(pe, permission, resource).allowed
        })
    }

    /// The users who may review a change request now: active, not of the submitter's party,
    /// holding what its kind needs, with the role its policy asks. Whom to tell about it.
    pub fn reviewers(&self, req: &crate::RequestFacts<'_>) -> Vec<PrincipalId> {
        self.among_candidates(ResourceRef::Environment(req.environment), |p, pe| {
            pe.active
                && matches!(p, PrincipalId::User(_))
                && self
                    .change_request(p, crate::RequestAction::Review, req)
                    .allowed
        })
    }

    /// The portfolio an application or environment belongs to.
    pub fn portfolio_of(&self, r: ResourceRef) -> Option<PortfolioId> {
        self.locate(r)
            .map(|(p, _, _)| self.catalog.portfolios[p as usize].id)
    }

    /// The portfolio and application of a resource, if it exists.
    pub fn parents(&self, r: ResourceRef) -> Option<(PortfolioId, ApplicationId)> {
        self.locate(r).map(|(p, a, _)| {
            (
                self.catalog.portfolios[p as usize].id,
                self.catalog.apps[a as usize].id,
            )
        })
    }

    /// The portfolio of a group, if it exists.
    pub fn group_portfolio(&self, g: GroupId) -> Option<PortfolioId> {
        self.group_ix
            .get(&g)
            .map(|&i| self.catalog.portfolios[self.groups.get(i).portfolio as usize].id)
    }

    /// Does the principal exist?
    pub fn has_principal(&self, p: &PrincipalId) -> bool {
        self.principals.contains(p)
    }

    /// Is the principal an active member of the portfolio's Administrators group?
    pub fn is_portfolio_admin(&self, principal: &PrincipalId, portfolio: PortfolioId) -> bool {
        let (Some(pe), Some(&pi)) = (
            self.principal(principal),
            self.catalog.portfolio_ix.get(&portfolio),
        ) else {
            return false;
        };
        pe.active && pe.admin_of.iter().any(|&(po, _)| po == pi)
    }

    /// The *party* behind `principal`: the principal itself and, for a service account, every
    /// principal it acts for (its creator and the creators of its live keys), transitively (an
    /// account created by an account acts for the latter's party too). Unknown principals (a
    /// deleted user, say) are a party of one.
    pub fn party(&self, principal: &PrincipalId) -> Vec<PrincipalId> {
        if !self.principals.contains(principal) {
            return vec![*principal];
        }
        let mut seen = vec![*principal];
        let mut next = 0;
        while let Some(p) = seen.get(next).copied() {
            next += 1;
            let Some(pe) = self.principals.get(&p) else {
                continue;
            };
            for a in pe.acts_for.iter() {
                if self.principals.contains(a) && !seen.contains(a) {
                    seen.push(*a);
                }
            }
        }
        seen
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
            .map(|&g| self.groups.get(g).id.to_string())
            .collect();
        groups.sort();
        let scope = match pe.account_scope {
            None => String::new(),
            Some(None) => "org".to_owned(),
            Some(Some(p)) => self
                .catalog
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
                    if self.catalog.portfolio_ix.get(&p) == Some(&po) =>
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
            if let Some(&pi) = self.catalog.portfolio_ix.get(&p)
                && let Some(&(_, g)) = pe.admin_of.iter().find(|&&(po, _)| po == pi)
            {
                return Decision::allow(Reason::PortfolioAdmin {
                    group: self.groups.get(g).id,
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
