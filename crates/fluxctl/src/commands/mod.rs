//! One module per command group.

pub mod account;
pub mod approvals;
pub mod audit;
pub mod auth;
pub mod catalog;
pub mod emails;
pub mod groups;
pub mod passwords;
pub mod permissions;
pub mod policy;
pub mod service_accounts;
pub mod settings;
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

/// A secret from an environment variable, else an interactive prompt without echo; never a
/// prompt when standard input is not a terminal (a script gets a usage error instead).
pub fn secret_from_env_or_prompt(var: &str, prompt: &str) -> Result<String> {
    use std::io::IsTerminal as _;
    if let Ok(v) = std::env::var(var)
        && !v.is_empty()
    {
        return Ok(v);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage(format!(
            "{var} is not set and standard input is not a terminal: set {var}, or pass the \
             secret on standard input with --password-stdin where the command has it"
        )));
    }
    rpassword::prompt_password(prompt).map_err(|e| {
        CliError::usage(format!(
            "cannot prompt for a password ({e}): set {var} or pass it on standard input"
        ))
    })
}

#[cfg(test)]
mod tests {
    /// Every command's source, where each RPC it calls is named.
    const SOURCES: &[&str] = &[
        include_str!("account.rs"),
        include_str!("approvals.rs"),
        include_str!("audit.rs"),
        include_str!("auth.rs"),
        include_str!("catalog.rs"),
        include_str!("emails.rs"),
        include_str!("groups.rs"),
        include_str!("passwords.rs"),
        include_str!("permissions.rs"),
        include_str!("policy.rs"),
        include_str!("service_accounts.rs"),
        include_str!("settings.rs"),
        include_str!("users.rs"),
        include_str!("webhooks.rs"),
        include_str!("../client.rs"),
    ];

    fn snake(s: &str) -> String {
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if c.is_ascii_uppercase() {
                if i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Walks the server's descriptor set: an RPC without a fluxctl command fails here.
    #[test]
    fn every_rpc_has_a_command() {
        let pool = prost_reflect::DescriptorPool::decode(fluxgate_proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_else(|e| panic!("descriptor set: {e}"));
        let mut missing = Vec::new();
        let mut count = 0;
        for service in pool.services() {
            if !service.full_name().starts_with("fluxgate.v1.") {
                continue;
            }
            for method in service.methods() {
                count += 1;
                let call = format!("::{}", snake(method.name()));
                let direct = format!(".{}(", snake(method.name()));
                if !SOURCES
                    .iter()
                    .any(|s| s.contains(&call) || s.contains(&direct))
                {
                    missing.push(format!("{}.{}", service.name(), method.name()));
                }
            }
        }
        assert!(count > 90, "the descriptor set lists {count} RPCs");
        assert!(
            missing.is_empty(),
            "RPCs without a fluxctl command: {missing:?}"
        );
    }
}
