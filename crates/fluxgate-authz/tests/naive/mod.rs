//! A deliberately naive reference evaluator: straight loops over the raw facts, no indices.

use fluxgate_authz::{Facts, ResourceRef};
use fluxgate_domain::{Permission, PrincipalId, Role};

pub fn allowed(facts: &Facts, p: &PrincipalId, perm: Permission, r: ResourceRef) -> bool {
    let Some(pf) = facts.principals.get(p) else {
        return false;
    };
    if !pf.active || pf.must_change_password || pf.second_factor_overdue {
        return false;
    }
    if pf.role == Role::TeamAdmin {
        return true;
    }
    let (app, env) = match r {
        ResourceRef::Environment(e) => match facts.environments.get(&e) {
            Some(ef) => (ef.application, Some(e)),
            None => return false,
        },
        ResourceRef::Application(a) => (a, None),
    };
    let Some(af) = facts.applications.get(&app) else {
        return false;
    };
    if !facts.portfolios.contains(&af.portfolio) {
        return false;
    }
    for g in facts.groups.values() {
        if g.portfolio != af.portfolio
            || !g.members.contains(p)
            || !facts.portfolios.contains(&g.portfolio)
        {
            continue;
        }
        if g.administrators {
            return true;
        }
        match perm.value() {
            Some(v) => {
                if let Some(e) = env
                    && let Some(bits) = g.environment_grants.get(&e)
                    && (bits.contains(v)
                        || (v == fluxgate_domain::ValuePermission::Read && !bits.is_empty()))
                {
                    return true;
                }
            }
            None => {
                if let Some(fp) = g.application_grants.get(&app) {
                    let ok = match perm {
                        Permission::CreateFeature => true,
                        _ => *fp == fluxgate_domain::FeaturePermission::CreateEditDelete,
                    };
                    if ok {
                        return true;
                    }
                }
            }
        }
    }
    false
}
