//! What SCIM provisioning knows of a user beside FluxGate's own columns: the `userName` as the
//! provider sent it (with a lower-cased key for uniqueness and filters), its `externalId`, the
//! attributes FluxGate does not model (JSON, as sent), a version for the ETag, and whether the
//! provider deleted it (the user stays, deactivated).

use diesel::prelude::*;
use fluxgate_domain::UserId;

use crate::schema::scim_users;
use crate::{CHUNK, DbConnection, StoreResult};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = scim_users)]
pub struct ScimUser {
    pub user_id: String,
    pub user_name: String,
    pub user_name_key: String,
    pub external_id: Option<String>,
    pub extra: String,
    pub version: i64,
    pub deleted: bool,
}

pub fn find(conn: &mut DbConnection, user: UserId) -> StoreResult<Option<ScimUser>> {
    Ok(scim_users::table
        .find(user.to_string())
        .select(ScimUser::as_select())
        .first(conn)
        .optional()?)
}

/// The row whose `userName` is `key` (lower-cased), deleted or not.
pub fn find_by_key(conn: &mut DbConnection, key: &str) -> StoreResult<Option<ScimUser>> {
    Ok(scim_users::table
        .filter(scim_users::user_name_key.eq(key))
        .select(ScimUser::as_select())
        .first(conn)
        .optional()?)
}

/// Of `keys` (lower-cased `userName`s), the rows that hold one, deleted or not.
pub fn find_by_keys(conn: &mut DbConnection, keys: &[&str]) -> StoreResult<Vec<ScimUser>> {
    let mut out = Vec::new();
    for chunk in keys.chunks(CHUNK) {
        out.extend(
            scim_users::table
                .filter(scim_users::user_name_key.eq_any(chunk))
                .select(ScimUser::as_select())
                .load(conn)?,
        );
    }
    Ok(out)
}

/// Inserts new rows with multi-row statements (none of them may exist yet).
pub fn insert_many(conn: &mut DbConnection, rows: &[ScimUser]) -> StoreResult<()> {
    for chunk in rows.chunks(CHUNK) {
        insert_rows!(conn, scim_users::table, chunk);
    }
    Ok(())
}

pub fn all(conn: &mut DbConnection) -> StoreResult<Vec<ScimUser>> {
    Ok(scim_users::table.select(ScimUser::as_select()).load(conn)?)
}

/// Stores the row (a new one, or a new version of one).
pub fn put(conn: &mut DbConnection, row: &ScimUser) -> StoreResult<()> {
    let n = diesel::update(scim_users::table.find(&row.user_id))
        .set((
            scim_users::user_name.eq(&row.user_name),
            scim_users::user_name_key.eq(&row.user_name_key),
            scim_users::external_id.eq(&row.external_id),
            scim_users::extra.eq(&row.extra),
            scim_users::version.eq(row.version),
            scim_users::deleted.eq(row.deleted),
        ))
        .execute(conn)?;
    if n == 0 {
        diesel::insert_into(scim_users::table)
            .values(row)
            .execute(conn)?;
    }
    Ok(())
}

/// What SCIM knows of a portfolio group beside FluxGate's own columns.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = crate::schema::scim_groups)]
pub struct ScimGroup {
    pub group_id: String,
    pub external_id: Option<String>,
    pub version: i64,
}

pub fn find_group(conn: &mut DbConnection, group: &str) -> StoreResult<Option<ScimGroup>> {
    use crate::schema::scim_groups;
    Ok(scim_groups::table
        .find(group)
        .select(ScimGroup::as_select())
        .first(conn)
        .optional()?)
}

pub fn all_groups(conn: &mut DbConnection) -> StoreResult<Vec<ScimGroup>> {
    use crate::schema::scim_groups;
    Ok(scim_groups::table
        .select(ScimGroup::as_select())
        .load(conn)?)
}

pub fn put_group(conn: &mut DbConnection, row: &ScimGroup) -> StoreResult<()> {
    use crate::schema::scim_groups;
    let n = diesel::update(scim_groups::table.find(&row.group_id))
        .set((
            scim_groups::external_id.eq(&row.external_id),
            scim_groups::version.eq(row.version),
        ))
        .execute(conn)?;
    if n == 0 {
        diesel::insert_into(scim_groups::table)
            .values(row)
            .execute(conn)?;
    }
    Ok(())
}
