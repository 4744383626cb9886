//! `permissions`: check, explain and batch-check.

use clap::{Args, Subcommand};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::permission_service_client::PermissionServiceClient;

use crate::args::{Permission, any_spelling, principal};
use crate::client::{Call, Ctx};
use crate::error::{CliError, Result};
use crate::names::{self, EnvironmentScope};
use crate::output::{self, Fields, Table, emit};

/// `fluxctl permissions …`
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// May a principal do something to an application or environment?
    Check(CheckArgs),
    /// A check with the role, groups and grants that went into it
    Explain(CheckArgs),
    /// Several checks at once: PERMISSION:RESOURCE[:PRINCIPAL] each
    Batch {
        #[arg(required = true, value_name = "PERMISSION:RESOURCE[:PRINCIPAL]")]
        checks: Vec<String>,
        #[arg(long, default_value_t = 0)]
        min_revision: i64,
    },
    /// The resources under a parent on which a principal holds a permission
    LookupResources {
        #[arg(value_parser = crate::args::AnySpelling::<Permission>::new())]
        permission: Permission,
        /// A portfolio, or an application with `--portfolio` (names or ids)
        parent: String,
        /// Take PARENT as an application in this portfolio
        #[arg(long, value_name = "PORTFOLIO")]
        portfolio: Option<String>,
        /// `users/…`, a username or `serviceAccounts/…` [default: the caller]
        #[arg(long)]
        principal: Option<String>,
        #[arg(long, default_value_t = 0)]
        min_revision: i64,
    },
    /// The principals who hold a permission on a resource
    LookupPrincipals {
        #[arg(value_parser = crate::args::AnySpelling::<Permission>::new())]
        permission: Permission,
        /// An environment, or an application for feature permissions (name, id or full name)
        resource: String,
        #[command(flatten)]
        scope: EnvironmentScope,
        /// Only principals with at least this role
        #[arg(long, value_parser = crate::args::AnySpelling::<crate::args::Role>::new())]
        min_role: Option<crate::args::Role>,
        #[arg(long, default_value_t = 0)]
        min_revision: i64,
    },
}

/// One permission question.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[arg(value_parser = crate::args::AnySpelling::<Permission>::new())]
    pub permission: Permission,
    /// An environment, or an application for feature permissions (name, id or full name)
    pub resource: String,
    #[command(flatten)]
    pub scope: EnvironmentScope,
    /// `users/…`, a username or `serviceAccounts/…` [default: the caller]
    #[arg(long)]
    pub principal: Option<String>,
    /// Answer from a snapshot at least this new (a revision a write returned)
    #[arg(long, default_value_t = 0)]
    pub min_revision: i64,
    /// Exit 8 when the answer is "denied"
    #[arg(long)]
    pub exit_code: bool,
}

impl CheckArgs {
    /// The question, its resource resolved from names.
    async fn check(&self, ctx: &mut Ctx) -> Result<pb::PermissionCheck> {
        let on_environment = self.permission.on_environment();
        Ok(pb::PermissionCheck {
            principal: self.principal.as_deref().map(principal).unwrap_or_default(),
            permission: pb::Permission::from(self.permission) as i32,
            resource: names::resource(ctx, &self.resource, on_environment, &self.scope).await?,
        })
    }
}

/// Runs a `permissions` command.
pub async fn run(ctx: &mut Ctx, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Check(a) => check(ctx, a).await,
        Cmd::Explain(a) => explain(ctx, a).await,
        Cmd::Batch {
            checks,
            min_revision,
        } => batch(ctx, &checks, min_revision).await,
        Cmd::LookupResources {
            permission,
            parent,
            portfolio,
            principal: who,
            min_revision,
        } => {
            let parent = match portfolio {
                Some(p) => names::application(ctx, &parent, Some(&p)).await?,
                None => names::portfolio(ctx, &parent).await?,
            };
            let req = pb::LookupResourcesRequest {
                principal: who.as_deref().map(principal).unwrap_or_default(),
                permission: pb::Permission::from(permission) as i32,
                parent,
                min_revision,
            };
            let r = rpc!(
                ctx,
                Call::Read,
                PermissionServiceClient::lookup_resources,
                req
            )?;
            emit(ctx.format(), &r, |r| {
                for x in &r.resources {
                    println!("{x}");
                }
            })
        }
        Cmd::LookupPrincipals {
            permission,
            resource,
            scope,
            min_role,
            min_revision,
        } => {
            let resource =
                names::resource(ctx, &resource, permission.on_environment(), &scope).await?;
            let req = pb::LookupPrincipalsRequest {
                permission: pb::Permission::from(permission) as i32,
                resource,
                min_role: min_role.map_or(0, |r| pb::Role::from(r) as i32),
                min_revision,
            };
            let r = rpc!(
                ctx,
                Call::Read,
                PermissionServiceClient::lookup_principals,
                req
            )?;
            emit(ctx.format(), &r, |r| {
                for x in &r.principals {
                    println!("{x}");
                }
            })
        }
    }
}

async fn check(ctx: &mut Ctx, a: CheckArgs) -> Result<()> {
    let req = pb::CheckPermissionRequest {
        check: Some(a.check(ctx).await?),
        min_revision: a.min_revision,
    };
    let r = rpc!(
        ctx,
        Call::Read,
        PermissionServiceClient::check_permission,
        req
    )?;
    let decision = r.decision.clone().unwrap_or_default();
    emit(ctx.format(), &r, |r| {
        show_decision(&decision)
            .add("revision", r.revision.to_string())
            .print();
    })?;
    denied_exit(a.exit_code, &decision)
}

async fn explain(ctx: &mut Ctx, a: CheckArgs) -> Result<()> {
    let req = pb::ExplainPermissionRequest {
        check: Some(a.check(ctx).await?),
        min_revision: a.min_revision,
    };
    let r = rpc!(
        ctx,
        Call::Read,
        PermissionServiceClient::explain_permission,
        req
    )?;
    let decision = r.decision.clone().unwrap_or_default();
    emit(ctx.format(), &r, |r| {
        show_decision(&decision)
            .add("role", output::role(r.role))
            .add("active", output::yes_no(r.active))
            .add("revision", r.revision.to_string())
            .print();
        if !r.groups.is_empty() {
            println!();
            let mut t = Table::new(&["group", "administrators", "grants"]);
            for g in &r.groups {
                t.row(vec![
                    g.group.clone(),
                    output::yes_no(g.administrators),
                    g.grants.clone(),
                ]);
            }
            t.print();
        }
    })?;
    denied_exit(a.exit_code, &decision)
}

async fn batch(ctx: &mut Ctx, checks: &[String], min_revision: i64) -> Result<()> {
    let mut parsed = Vec::with_capacity(checks.len());
    for c in checks {
        let mut check = parse_batch_item(c)?;
        let on_environment = any_spelling::<Permission>(c.split(':').next().unwrap_or_default())
            .is_some_and(Permission::on_environment);
        check.resource = names::resource(
            ctx,
            &check.resource,
            on_environment,
            &EnvironmentScope::default(),
        )
        .await?;
        parsed.push(check);
    }
    let req = pb::BatchCheckPermissionsRequest {
        checks: parsed.clone(),
        min_revision,
    };
    let r = rpc!(
        ctx,
        Call::Read,
        PermissionServiceClient::batch_check_permissions,
        req
    )?;
    emit(ctx.format(), &r, |r| {
        let mut t = Table::new(&["permission", "resource", "principal", "allowed", "reason"]);
        for (c, d) in parsed.iter().zip(&r.decisions) {
            let p = pb::Permission::try_from(c.permission)
                .ok()
                .map(|p| p.as_str_name());
            t.row(vec![
                output::enum_name(p, "PERMISSION_"),
                c.resource.clone(),
                if c.principal.is_empty() {
                    "(caller)".into()
                } else {
                    c.principal.clone()
                },
                output::yes_no(d.allowed),
                d.reason.clone(),
            ]);
        }
        t.print();
    })
}

/// `change-value:portfolios/p/applications/a/environments/e[:users/rita]`.
fn parse_batch_item(s: &str) -> Result<pb::PermissionCheck> {
    let mut parts = s.splitn(3, ':');
    let (Some(perm), Some(resource)) = (parts.next(), parts.next()) else {
        return Err(CliError::usage(format!(
            "{s:?}: expected PERMISSION:RESOURCE[:PRINCIPAL]"
        )));
    };
    let perm = any_spelling::<Permission>(perm).ok_or_else(|| {
        CliError::usage(format!(
            "{s:?}: unknown permission {perm:?} (read, lock, unlock, change-value, \
             create-feature, edit-feature or delete-feature)"
        ))
    })?;
    Ok(pb::PermissionCheck {
        principal: parts.next().map(principal).unwrap_or_default(),
        permission: pb::Permission::from(perm) as i32,
        resource: resource.to_owned(),
    })
}

fn show_decision(d: &pb::PermissionDecision) -> Fields {
    Fields::new()
        .add("allowed", output::yes_no(d.allowed))
        .add("reason", d.reason.clone())
        .add("granted by", d.granted_by.clone())
}

fn denied_exit(wanted: bool, d: &pb::PermissionDecision) -> Result<()> {
    if wanted && !d.allowed {
        return Err(CliError::denied(format!("denied: {}", d.reason)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_items() {
        let c = parse_batch_item("change-value:portfolios/p/applications/a:users/rita").unwrap();
        assert_eq!(c.permission, pb::Permission::ChangeValue as i32);
        assert_eq!(c.resource, "portfolios/p/applications/a");
        assert_eq!(c.principal, "users/rita");
        assert!(parse_batch_item("read").is_err());
    }
}
