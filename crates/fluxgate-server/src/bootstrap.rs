//! First start: migrations, initial settings, the token signing key and the bootstrap Team
//! Admin. Also the host-side password reset. All of it blocking; callers run it off the async
//! workers.

use fluxgate_domain::{Email, Role, UserId, Username};
use fluxgate_store::changes::EntityKind;
use fluxgate_store::{Store, StoreError, audit, sessions, settings, state, throttle, users};

use crate::config::Config;
use crate::passwords::Hasher;
use crate::tokens::random_token;

const BOOTSTRAPPED: &str = "bootstrapped_at";
const JWT_SECRET: &str = "jwt_secret";

/// What the first start did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bootstrap {
    /// Set when this start created the bootstrap admin.
    pub admin: Option<BootstrapAdmin>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapAdmin {
    pub username: String,
    /// The generated password, when none was configured. It must be changed at first login.
    pub generated_password: Option<String>,
}

/// A random temporary password that passes any valid password policy.
pub fn temporary_password(min_length: u32) -> String {
    let mut p = format!("{}-Aa1", random_token(18));
    while p.chars().count() < min_length as usize {
        p.push_str(&random_token(6));
    }
    p
}

/// Migrates, then (once per database, ever) stores the initial settings and signing key and
/// creates the bootstrap admin. Returns the signing secret in force and what was created.
pub fn prepare(
    store: &Store,
    config: &Config,
    hasher: &Hasher,
) -> anyhow::Result<(Vec<u8>, Bootstrap)> {
    let applied = store.migrate()?;
    for m in &applied {
        tracing::info!(migration = %m, "applied migration");
    }
    let done = store.read(|c| state::get(c, BOOTSTRAPPED))?.is_some();
    let mut outcome = Bootstrap::default();
    if !done {
        let b = &config.bootstrap;
        let username =
            Username::parse(&b.username).map_err(|e| anyhow::anyhow!("bootstrap.username: {e}"))?;
        let email = Email::parse(&b.email).map_err(|e| anyhow::anyhow!("bootstrap.email: {e}"))?;
        let (password, generated) = match &b.password {
            Some(p) => {
                config
                    .settings
                    .password_policy
                    .check(p, &[])
                    .map_err(|e| anyhow::anyhow!("bootstrap password: {e}"))?;
                (p.clone(), false)
            }
            None => (
                temporary_password(config.settings.password_policy.min_length),
                true,
            ),
        };
        let hash = hasher.hash_now(&password)?;
        let initial = config.settings.clone();
        let created = store.write(|tx| {
            if state::get(tx.conn, BOOTSTRAPPED)?.is_some() {
                return Ok::<_, StoreError>(None); // another replica got here first
            }
            if settings::load(tx.conn)?.is_none() {
                settings::save(tx.conn, &initial, tx.now)?;
                tx.changed(EntityKind::Settings, "settings");
            }
            state::put(tx.conn, JWT_SECRET, &random_token(48), false)?;
            let mut created = None;
            if users::count(tx.conn)? == 0 {
                let id = UserId::generate();
                users::insert(
                    tx.conn,
                    &users::NewUser {
                        id,
                        username: username.as_str(),
                        email: email.as_str(),
                        display_name: "Bootstrap administrator",
                        role: Role::TeamAdmin,
                        must_change_password: generated,
                        password_hash: Some(&hash),
                    },
                    tx.now,
                )?;
                tx.changed(EntityKind::User, id.to_string());
                audit::append(
                    tx.conn,
                    audit::NewEvent {
                        actor_name: Some("fluxgate (bootstrap)".into()),
                        action: fluxgate_core::AuditAction::UserCreated.as_str().into(),
                        target_type: "user".into(),
                        target_id: Some(format!("users/{id}")),
                        outcome: "success".into(),
                        detail: Some(format!("bootstrap Team Admin {:?}", username.as_str())),
                        ..Default::default()
                    },
                    tx.now,
                )?;
                created = Some(BootstrapAdmin {
                    username: username.as_str().to_owned(),
                    generated_password: generated.then(|| password.clone()),
                });
            }
            state::put(tx.conn, BOOTSTRAPPED, &tx.now.to_string(), false)?;
            Ok(created)
        })?;
        outcome.admin = created.value;
    }
    let secret = match &config.auth.jwt_secret {
        Some(s) => s.as_bytes().to_vec(),
        None => store
            .read(|c| state::get(c, JWT_SECRET))?
            .ok_or_else(|| anyhow::anyhow!("no signing key in the database"))?
            .into_bytes(),
    };
    if let Some(stored) = store.read(settings::load)?
        && stored.settings != config.settings
    {
        tracing::info!(
            "run-time settings in the database differ from the configuration's initial values; \
             the database's are in force (change them with SettingsService.UpdateSettings)"
        );
    }
    Ok((secret, outcome))
}

/// Host-side recovery: sets a new temporary password for `username`, clears its lockout and
/// revokes its sessions. Returns the password, to be shown once.
pub fn reset_password(
    store: &Store,
    hasher: &Hasher,
    username: &str,
    password: Option<String>,
) -> anyhow::Result<String> {
    store.migrate()?;
    let policy = store
        .read(settings::load)?
        .map(|s| s.settings.password_policy)
        .unwrap_or_default();
    let (password, temporary) = match password {
        Some(p) => {
            policy
                .check(&p, &[username])
                .map_err(|e| anyhow::anyhow!("password: {e}"))?;
            (p, false)
        }
        None => (temporary_password(policy.min_length), true),
    };
    let hash = hasher.hash_now(&password)?;
    let name = username.to_lowercase();
    let done = store.write(|tx| {
        let Some(mut u) = users::find_by_username(tx.conn, &name)? else {
            return Ok::<_, StoreError>(false);
        };
        u.password_hash = Some(hash);
        u.must_change_password = temporary;
        users::update(tx.conn, &u, tx.now)?;
        let revoked = sessions::revoke_all(tx.conn, u.id, "host_password_reset", tx.now)?;
        throttle::clear(tx.conn, &format!("user:{}", u.id))?;
        tx.changed(EntityKind::User, u.id.to_string());
        audit::append(
            tx.conn,
            audit::NewEvent {
                actor_name: Some("fluxgate admin reset-password (host)".into()),
                action: fluxgate_core::AuditAction::UserPasswordReset
                    .as_str()
                    .into(),
                target_type: "user".into(),
                target_id: Some(format!("users/{}", u.id)),
                outcome: "success".into(),
                detail: Some(format!("host-side reset; {revoked} session(s) revoked")),
                ..Default::default()
            },
            tx.now,
        )?;
        Ok(true)
    })?;
    if !done.value {
        anyhow::bail!("no user named {name:?}");
    }
    Ok(password)
}
