//! Small facts about the installation itself (the token signing key, bootstrap).

use diesel::prelude::*;

use crate::schema::server_state;
use crate::{DbConnection, StoreResult};

pub fn get(conn: &mut DbConnection, key: &str) -> StoreResult<Option<String>> {
    Ok(server_state::table
        .filter(server_state::key.eq(key))
        .select(server_state::value)
        .first(conn)
        .optional()?)
}

/// Sets a key. Returns false (and changes nothing) when it already has a value and
/// `overwrite` is false.
pub fn put(conn: &mut DbConnection, key: &str, value: &str, overwrite: bool) -> StoreResult<bool> {
    if get(conn, key)?.is_some() {
        if !overwrite {
            return Ok(false);
        }
        diesel::update(server_state::table.filter(server_state::key.eq(key)))
            .set(server_state::value.eq(value))
            .execute(conn)?;
    } else {
        diesel::insert_into(server_state::table)
            .values((server_state::key.eq(key), server_state::value.eq(value)))
            .execute(conn)?;
    }
    Ok(true)
}
