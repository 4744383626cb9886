//! One module per command group.

pub mod approvals;
pub mod audit;
pub mod auth;
pub mod catalog;
pub mod groups;
pub mod passwords;
pub mod permissions;
pub mod policy;
pub mod service_accounts;
pub mod users;
pub mod webhooks;

use crate::error::{CliError, Result};

/// A field mask from the fields whose flags were given; a usage error when none was.
pub fn mask(paths: &[(&str, bool)]) -> Result<prost_types::FieldMask> {
    let paths: Vec<String> = paths
        .iter()
        .filter(|(_, given)| *given)
        .map(|(p, _)| (*p).to_owned())
        .collect();
    if paths.is_empty() {
        return Err(CliError::usage(
            "nothing to update: give at least one field flag",
        ));
    }
    Ok(prost_types::FieldMask { paths })
}

/// Reads one line from standard input, without its line ending.
pub fn read_stdin_line() -> Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// A secret from an environment variable, else an interactive prompt without echo.
pub fn secret_from_env_or_prompt(var: &str, prompt: &str) -> Result<String> {
    if let Ok(v) = std::env::var(var)
        && !v.is_empty()
    {
        return Ok(v);
    }
    rpassword::prompt_password(prompt).map_err(|e| {
        CliError::usage(format!(
            "cannot prompt for a password ({e}): set {var} or pass it on standard input"
        ))
    })
}
