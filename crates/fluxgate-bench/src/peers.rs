//! The same model encoded for cedar-policy and casbin, each in its fastest natural form.
//!
//! * **cedar-policy**: a constant set of nine policies; the grants live in entity data. Users'
//!   parents are their groups (and `Role::"TeamAdmin"` / `Role::"Inactive"` markers); each
//!   environment carries, per permission, the set of groups granting it. Cedar evaluates every
//!   policy on every request, so a small fixed policy set with data in attributes beats one
//!   policy per grant by orders of magnitude.
//! * **casbin**: one policy row per grant at its natural level (portfolio-wide rows for
//!   Administrators, one row per application feature grant, one per environment value grant),
//!   users linked to groups with `g`, and the environment's application and portfolio passed in
//!   the request so that the matcher compares strings instead of walking a resource hierarchy.
//!   `enforce` scans the rows in order, so its cost grows with the number of grants.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use casbin::prelude::*;
use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicySet, Request,
    RestrictedExpression,
};
use fluxgate_domain::{FeaturePermission, Permission, PrincipalId, Role, ValuePermission};

use crate::model::{Model, Req};

const CEDAR_POLICIES: &str = r#"
permit(principal in Role::"TeamAdmin", action, resource);
permit(principal, action, resource is Environment) when { principal in resource.admins };
permit(principal, action == Action::"READ", resource is Environment) when { principal in resource.read };
permit(principal, action == Action::"LOCK", resource is Environment) when { principal in resource.lock };
permit(principal, action == Action::"UNLOCK", resource is Environment) when { principal in resource.unlock };
permit(principal, action == Action::"CHANGE_VALUE", resource is Environment) when { principal in resource.change_value };
permit(principal, action == Action::"CREATE_FEATURE", resource is Environment) when { principal in resource.feature_create };
permit(principal, action in [Action::"EDIT_FEATURE", Action::"DELETE_FEATURE"], resource is Environment) when { principal in resource.feature_ced };
forbid(principal in Role::"Inactive", action, resource);
"#;

fn tn(s: &str) -> EntityTypeName {
    #[allow(clippy::expect_used)]
    EntityTypeName::from_str(s).expect("entity type name")
}

fn uid(ty: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
}

/// cedar-policy with the model loaded.
pub struct Cedar {
    policies: PolicySet,
    entities: Entities,
    authorizer: Authorizer,
    users: HashMap<PrincipalId, EntityUid>,
    envs: HashMap<uuid::Uuid, EntityUid>,
    actions: HashMap<Permission, EntityUid>,
}

impl Cedar {
    pub fn new(m: &Model) -> std::result::Result<Cedar, Box<dyn std::error::Error>> {
        let (t_user, t_group, t_role, t_env, t_action) = (
            tn("User"),
            tn("Group"),
            tn("Role"),
            tn("Environment"),
            tn("Action"),
        );
        let policies = PolicySet::from_str(CEDAR_POLICIES)?;
        let mut ents = Vec::new();
        let mut users = HashMap::new();
        let mut parents_of: HashMap<PrincipalId, HashSet<EntityUid>> = HashMap::new();
        for (gid, g) in &m.facts.groups {
            for p in &g.members {
                parents_of
                    .entry(*p)
                    .or_default()
                    .insert(uid(&t_group, &gid.to_string()));
            }
        }
        for (p, f) in &m.facts.principals {
            let mut parents = parents_of.remove(p).unwrap_or_default();
            if f.role == Role::TeamAdmin {
                parents.insert(uid(&t_role, "TeamAdmin"));
            }
            if !f.active {
                parents.insert(uid(&t_role, "Inactive"));
            }
            let u = uid(&t_user, &p.uuid().to_string());
            users.insert(*p, u.clone());
            ents.push(Entity::new_no_attrs(u, parents));
        }
        let set = |gs: &[String]| {
            RestrictedExpression::new_set(
                gs.iter()
                    .map(|g| RestrictedExpression::new_entity_uid(uid(&t_group, g))),
            )
        };
        let mut envs = HashMap::new();
        for e in &m.envs {
            let (mut read, mut lock, mut unlock, mut change, mut create, mut ced) =
                (vec![], vec![], vec![], vec![], vec![], vec![]);
            for (gid, g) in &m.facts.groups {
                if g.portfolio != e.portfolio || g.administrators {
                    continue;
                }
                if let Some(bits) = g.environment_grants.get(&e.id) {
                    let name = gid.to_string();
                    if bits.allows(ValuePermission::Read) {
                        read.push(name.clone());
                    }
                    if bits.contains(ValuePermission::Lock) {
                        lock.push(name.clone());
                    }
                    if bits.contains(ValuePermission::Unlock) {
                        unlock.push(name.clone());
                    }
                    if bits.contains(ValuePermission::ChangeValue) {
                        change.push(name);
                    }
                }
                if let Some(fp) = g.application_grants.get(&e.app) {
                    create.push(gid.to_string());
                    if *fp == FeaturePermission::CreateEditDelete {
                        ced.push(gid.to_string());
                    }
                }
            }
            let admins = vec![m.admin_group[&e.portfolio].to_string()];
            let attrs = HashMap::from([
                ("read".to_owned(), set(&read)),
                ("lock".to_owned(), set(&lock)),
                ("unlock".to_owned(), set(&unlock)),
                ("change_value".to_owned(), set(&change)),
                ("feature_create".to_owned(), set(&create)),
                ("feature_ced".to_owned(), set(&ced)),
                ("admins".to_owned(), set(&admins)),
            ]);
            let u = uid(&t_env, &e.id.to_string());
            envs.insert(e.id.0, u.clone());
            ents.push(Entity::new(u, attrs, HashSet::new())?);
        }
        let entities = Entities::from_entities(ents, None)?;
        let actions = Permission::ALL
            .into_iter()
            .map(|p| (p, uid(&t_action, p.as_str())))
            .collect();
        Ok(Cedar {
            policies,
            entities,
            authorizer: Authorizer::new(),
            users,
            envs,
            actions,
        })
    }

    pub fn check(&self, r: &Req) -> bool {
        let (Some(u), Some(e), Some(a)) = (
            self.users.get(&r.user),
            self.envs.get(&r.env.id.0),
            self.actions.get(&r.permission),
        ) else {
            return false;
        };
        let Ok(req) = Request::new(u.clone(), a.clone(), e.clone(), Context::empty(), None) else {
            return false;
        };
        self.authorizer
            .is_authorized(&req, &self.policies, &self.entities)
            .decision()
            == cedar_policy::Decision::Allow
    }
}

const CASBIN_MODEL: &str = r#"
[request_definition]
r = sub, env, app, pf, act

[policy_definition]
p = sub, obj, act

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = (p.act == r.act || p.act == "*") && (p.obj == r.env || p.obj == r.app || p.obj == r.pf || p.obj == "*") && g(r.sub, p.sub)
"#;

/// casbin with the model loaded.
pub struct Casbin {
    enforcer: Enforcer,
    users: HashMap<PrincipalId, String>,
}

impl Casbin {
    pub fn new(m: &Model) -> std::result::Result<Casbin, Box<dyn std::error::Error>> {
        let rt = tokio::runtime::Builder::new_current_thread().build()?;
        let (enforcer, users) = rt.block_on(async {
            let model = DefaultModel::from_str(CASBIN_MODEL).await?;
            let mut e = Enforcer::new(model, ()).await?;
            e.enable_auto_build_role_links(false);
            let mut p: Vec<Vec<String>> =
                vec![vec!["role:TeamAdmin".into(), "*".into(), "*".into()]];
            for (pf, g) in &m.admin_group {
                p.push(vec![format!("grp:{g}"), format!("pf:{pf}"), "*".into()]);
            }
            for (gid, g) in &m.facts.groups {
                if g.administrators {
                    continue;
                }
                for (a, fp) in &g.application_grants {
                    p.push(vec![
                        format!("grp:{gid}"),
                        format!("app:{a}"),
                        "CREATE_FEATURE".into(),
                    ]);
                    if *fp == FeaturePermission::CreateEditDelete {
                        p.push(vec![
                            format!("grp:{gid}"),
                            format!("app:{a}"),
                            "EDIT_FEATURE".into(),
                        ]);
                        p.push(vec![
                            format!("grp:{gid}"),
                            format!("app:{a}"),
                            "DELETE_FEATURE".into(),
                        ]);
                    }
                }
                for (env, bits) in &g.environment_grants {
                    for v in ValuePermission::ALL {
                        if (v == ValuePermission::Read && bits.allows(v)) || bits.contains(v) {
                            p.push(vec![
                                format!("grp:{gid}"),
                                format!("env:{env}"),
                                v.as_str().into(),
                            ]);
                        }
                    }
                }
            }
            p.sort();
            p.dedup();
            e.add_policies(p).await?;
            let mut links = Vec::new();
            let mut users = HashMap::new();
            for (pid, f) in &m.facts.principals {
                let name = format!("u:{}", pid.uuid());
                users.insert(*pid, name.clone());
                if !f.active {
                    // Keep the node known (an unknown subject makes casbin scan every node).
                    links.push(vec![name, "status:inactive".into()]);
                    continue;
                }
                if f.role == Role::TeamAdmin {
                    links.push(vec![name.clone(), "role:TeamAdmin".into()]);
                }
                for (gid, g) in &m.facts.groups {
                    if g.members.contains(pid) {
                        links.push(vec![name.clone(), format!("grp:{gid}")]);
                    }
                }
            }
            e.add_grouping_policies(links).await?;
            e.build_role_links()?;
            Ok::<_, casbin::Error>((e, users))
        })?;
        Ok(Casbin { enforcer, users })
    }

    pub fn check(&self, r: &Req) -> bool {
        let Some(u) = self.users.get(&r.user) else {
            return false;
        };
        let env = format!("env:{}", r.env.id);
        let app = format!("app:{}", r.env.app);
        let pf = format!("pf:{}", r.env.portfolio);
        self.enforcer
            .enforce((
                u.as_str(),
                env.as_str(),
                app.as_str(),
                pf.as_str(),
                r.permission.as_str(),
            ))
            .unwrap_or(false)
    }

    /// Requests prepared as casbin strings, so that formatting stays out of the measurement.
    pub fn prepare(&self, r: &Req) -> Option<[String; 5]> {
        Some([
            self.users.get(&r.user)?.clone(),
            format!("env:{}", r.env.id),
            format!("app:{}", r.env.app),
            format!("pf:{}", r.env.portfolio),
            r.permission.as_str().to_owned(),
        ])
    }

    pub fn check_prepared(&self, q: &[String; 5]) -> bool {
        self.enforcer
            .enforce((
                q[0].as_str(),
                q[1].as_str(),
                q[2].as_str(),
                q[3].as_str(),
                q[4].as_str(),
            ))
            .unwrap_or(false)
    }
}
