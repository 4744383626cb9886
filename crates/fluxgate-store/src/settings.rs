//! The run-time settings, one JSON document with a version.

use diesel::prelude::*;
use fluxgate_domain::Settings;

use crate::schema::settings;
use crate::{DbConnection, StoreError, StoreResult};

const NAME: &str = "settings";

/// The stored settings with their version and last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub settings: Settings,
    pub version: i64,
    pub updated_at: i64,
}

pub fn load(conn: &mut DbConnection) -> StoreResult<Option<Stored>> {
    let row: Option<(String, i64, i64)> = settings::table
        .filter(settings::name.eq(NAME))
        .select((settings::value, settings::version, settings::updated_at))
        .first(conn)
        .optional()?;
    row.map(|(value, version, updated_at)| {
        let settings = serde_json::from_str(&value)
            .map_err(|e| StoreError::Corrupt(format!("settings: {e}")))?;
        Ok(Stored {
            settings,
            version,
            updated_at,
        })
    })
    .transpose()
}

/// Writes the settings; creates the row when there is none. Returns the new version.
pub fn save(conn: &mut DbConnection, s: &Settings, now: i64) -> StoreResult<i64> {
    let value =
        serde_json::to_string(s).map_err(|e| StoreError::Corrupt(format!("settings: {e}")))?;
    match load(conn)? {
        Some(old) => {
            let version = old.version + 1;
            diesel::update(settings::table.filter(settings::name.eq(NAME)))
                .set((
                    settings::value.eq(value),
                    settings::version.eq(version),
                    settings::updated_at.eq(now),
                ))
                .execute(conn)?;
            Ok(version)
        }
        None => {
            diesel::insert_into(settings::table)
                .values((
                    settings::name.eq(NAME),
                    settings::value.eq(value),
                    settings::version.eq(1),
                    settings::updated_at.eq(now),
                ))
                .execute(conn)?;
            Ok(1)
        }
    }
}
