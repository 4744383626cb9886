//! Test support: a fresh, empty PostgreSQL schema per test.
//!
//! `FLUXGATE_TEST_POSTGRES_URL` names the server (default
//! `postgres://postgres@127.0.0.1:5432/test`). When it cannot be reached the PostgreSQL tests
//! are skipped with a loud message, unless `FLUXGATE_TEST_REQUIRE_POSTGRES=1`, when they fail.

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn base_url() -> String {
    std::env::var("FLUXGATE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into())
}

/// Whether `FLUXGATE_TEST_REQUIRE_POSTGRES=1`: PostgreSQL tests must run, not skip.
pub fn postgres_required() -> bool {
    required()
}

fn required() -> bool {
    std::env::var("FLUXGATE_TEST_REQUIRE_POSTGRES").is_ok_and(|v| v == "1" || v == "true")
}

/// A schema of its own for one test, dropped with everything in it when this value drops.
#[derive(Debug)]
pub struct TestSchema {
    /// A URL whose connections use the schema.
    pub url: String,
    name: String,
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        if let Ok(mut conn) = PgConnection::establish(&base_url()) {
            let _ = conn.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        }
    }
}

/// Creates a new schema, or returns `None` (after saying so on stderr) when PostgreSQL is
/// unreachable and not required.
///
/// # Panics
/// When PostgreSQL is unreachable and `FLUXGATE_TEST_REQUIRE_POSTGRES=1`.
pub fn fresh_postgres() -> Option<TestSchema> {
    let base = base_url();
    let mut conn = match PgConnection::establish(&base) {
        Ok(c) => c,
        Err(e) if required() => {
            panic!(
                "PostgreSQL required (FLUXGATE_TEST_REQUIRE_POSTGRES=1) but {base} is unreachable: {e}"
            )
        }
        Err(e) => {
            eprintln!(
                "\n*** SKIPPING PostgreSQL test: {base} is unreachable ({e}).\n\
                 *** Set FLUXGATE_TEST_POSTGRES_URL, or FLUXGATE_TEST_REQUIRE_POSTGRES=1 to fail instead.\n"
            );
            return None;
        }
    };
    let schema = format!("fg_{}", uuid::Uuid::new_v4().simple());
    #[allow(clippy::expect_used)]
    conn.batch_execute(&format!("CREATE SCHEMA {schema}"))
        .expect("create test schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(TestSchema {
        url: format!("{base}{sep}options=-csearch_path%3D{schema}"),
        name: schema,
    })
}
