//! Service accounts and their API keys.

use diesel::prelude::*;

use fluxgate_domain::Role;

use crate::schema::{service_account_keys, service_accounts};
use crate::{DbConnection, StoreError, StoreResult};

/// A service account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub id: String,
    pub display_name: String,
    pub description: String,
    pub portfolio_id: Option<String>,
    pub role: Role,
    pub active: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
    /// May append audit events (AuditService.IngestAuditEvents).
    pub audit_writer: bool,
    /// The principal (resource name) that created the account: the account acts for it.
    pub created_by: Option<String>,
    /// A provisioning account (SCIM): its keys provision users and groups, and do nothing else.
    pub provisioner: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = service_accounts)]
struct Row {
    id: String,
    display_name: String,
    description: String,
    portfolio_id: Option<String>,
    role: String,
    active: bool,
    created_at: i64,
    updated_at: i64,
    version: i64,
    audit_writer: bool,
    created_by: Option<String>,
    provisioner: bool,
}

impl Row {
    fn of(sa: &ServiceAccount) -> Row {
        Row {
            id: sa.id.clone(),
            display_name: sa.display_name.clone(),
            description: sa.description.clone(),
            portfolio_id: sa.portfolio_id.clone(),
            role: sa.role.as_str().to_owned(),
            active: sa.active,
            created_at: sa.created_at,
            updated_at: sa.updated_at,
            version: sa.version,
            audit_writer: sa.audit_writer,
            created_by: sa.created_by.clone(),
            provisioner: sa.provisioner,
        }
    }

    fn typed(self) -> StoreResult<ServiceAccount> {
        let role = self
            .role
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("service_accounts.role {:?}", self.role)))?;
        Ok(ServiceAccount {
            id: self.id,
            display_name: self.display_name,
            description: self.description,
            portfolio_id: self.portfolio_id,
            role,
            active: self.active,
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version,
            audit_writer: self.audit_writer,
            created_by: self.created_by,
            provisioner: self.provisioner,
        })
    }
}

fn typed(rows: Vec<Row>) -> StoreResult<Vec<ServiceAccount>> {
    rows.into_iter().map(Row::typed).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = service_account_keys)]
pub struct Key {
    pub id: String,
    pub service_account_id: String,
    pub display_name: String,
    pub secret_hash: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// The principal (resource name) that created the key, by creation or rotation: while the key
    /// is live, the account acts for it too.
    pub created_by: Option<String>,
}

pub fn insert(conn: &mut DbConnection, sa: &ServiceAccount) -> StoreResult<()> {
    diesel::insert_into(service_accounts::table)
        .values(Row::of(sa))
        .execute(conn)?;
    Ok(())
}

pub fn find(conn: &mut DbConnection, id: &str) -> StoreResult<Option<ServiceAccount>> {
    service_accounts::table
        .filter(service_accounts::id.eq(id))
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .map(Row::typed)
        .transpose()
}

/// A page of one scope's accounts (`None`: admin accounts), ordered by id, after `after`.
pub fn list(
    conn: &mut DbConnection,
    portfolio: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<ServiceAccount>> {
    let mut q = service_accounts::table.into_boxed();
    q = match portfolio {
        Some(p) => q.filter(service_accounts::portfolio_id.eq(p.to_owned())),
        None => q.filter(service_accounts::portfolio_id.is_null()),
    };
    if let Some(a) = after {
        q = q.filter(service_accounts::id.gt(a.to_owned()));
    }
    typed(
        q.order(service_accounts::id.asc())
            .limit(limit)
            .select(Row::as_select())
            .load(conn)?,
    )
}

pub fn all(conn: &mut DbConnection) -> StoreResult<Vec<ServiceAccount>> {
    typed(
        service_accounts::table
            .select(Row::as_select())
            .load(conn)?,
    )
}

/// Ids of a portfolio's accounts.
pub fn ids_in_portfolio(conn: &mut DbConnection, portfolio: &str) -> StoreResult<Vec<String>> {
    Ok(service_accounts::table
        .filter(service_accounts::portfolio_id.eq(portfolio))
        .select(service_accounts::id)
        .load(conn)?)
}

pub fn update(conn: &mut DbConnection, sa: &ServiceAccount, now: i64) -> StoreResult<()> {
    diesel::update(service_accounts::table.filter(service_accounts::id.eq(&sa.id)))
        .set((
            service_accounts::display_name.eq(&sa.display_name),
            service_accounts::description.eq(&sa.description),
            service_accounts::role.eq(sa.role.as_str()),
            service_accounts::active.eq(sa.active),
            service_accounts::audit_writer.eq(sa.audit_writer),
            service_accounts::updated_at.eq(now),
            service_accounts::version.eq(sa.version + 1),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn delete(conn: &mut DbConnection, id: &str) -> StoreResult<()> {
    diesel::delete(service_accounts::table.filter(service_accounts::id.eq(id))).execute(conn)?;
    Ok(())
}

pub fn insert_key(conn: &mut DbConnection, k: &Key) -> StoreResult<()> {
    diesel::insert_into(service_account_keys::table)
        .values(k.clone())
        .execute(conn)?;
    Ok(())
}

pub fn find_key(conn: &mut DbConnection, id: &str) -> StoreResult<Option<Key>> {
    Ok(service_account_keys::table
        .filter(service_account_keys::id.eq(id))
        .select(Key::as_select())
        .first(conn)
        .optional()?)
}

/// A service account's keys, newest first.
pub fn keys(conn: &mut DbConnection, sa: &str) -> StoreResult<Vec<Key>> {
    Ok(service_account_keys::table
        .filter(service_account_keys::service_account_id.eq(sa))
        .order((
            service_account_keys::created_at.desc(),
            service_account_keys::id.desc(),
        ))
        .select(Key::as_select())
        .load(conn)?)
}

pub fn all_keys(conn: &mut DbConnection) -> StoreResult<Vec<Key>> {
    Ok(service_account_keys::table
        .select(Key::as_select())
        .load(conn)?)
}

pub fn update_key(conn: &mut DbConnection, k: &Key) -> StoreResult<()> {
    diesel::update(service_account_keys::table.filter(service_account_keys::id.eq(&k.id)))
        .set((
            service_account_keys::expires_at.eq(k.expires_at),
            service_account_keys::revoked_at.eq(k.revoked_at),
        ))
        .execute(conn)?;
    Ok(())
}
