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

/// The fluxctl command that makes each RPC: error messages from the server name RPCs, and
/// fluxctl shows the command to run instead. A test checks that every RPC is here and that each
/// command exists.
pub const COMMAND_OF_RPC: &[(&str, &str)] = &[
    ("GetApprovalPolicy", "policy get"),
    ("UpdateApprovalPolicy", "policy update"),
    ("SubmitChangeRequest", "change-requests submit"),
    ("GetChangeRequest", "change-requests get"),
    ("ListChangeRequests", "change-requests list"),
    ("UpdateChangeRequest", "change-requests edit"),
    ("CancelChangeRequest", "change-requests cancel"),
    ("ApproveChangeRequest", "change-requests approve"),
    ("RejectChangeRequest", "change-requests reject"),
    ("OverrideChangeRequest", "change-requests override"),
    ("MarkChangeRequestApplied", "change-requests mark-applied"),
    ("WatchChangeRequest", "change-requests wait"),
    ("GetApprovalMetrics", "change-requests metrics"),
    ("ListAuditEvents", "audit list"),
    ("VerifyAuditChain", "audit verify"),
    ("ExportAuditEvents", "audit export"),
    ("IngestAuditEvents", "audit ingest"),
    ("GetActivityReport", "audit activity"),
    ("Login", "login"),
    ("RefreshSession", "login"),
    ("Logout", "logout"),
    ("ChangePassword", "passwords change"),
    ("WhoAmI", "whoami"),
    ("GetSecondFactor", "account second-factor"),
    ("BeginTotpEnrollment", "account enroll-totp"),
    ("ConfirmTotpEnrollment", "account confirm-totp"),
    ("RemoveSecondFactor", "account remove-second-factor"),
    ("ListSsoProviders", "account sso-providers"),
    ("CompleteSsoSignIn", "login --sso"),
    ("GetNotificationPreferences", "account notifications"),
    ("UpdateNotificationPreferences", "account set-notifications"),
    ("CreatePortfolio", "portfolios create"),
    ("GetPortfolio", "portfolios get"),
    ("ListPortfolios", "portfolios list"),
    ("UpdatePortfolio", "portfolios update"),
    ("DeletePortfolio", "portfolios delete"),
    ("CreateApplication", "applications create"),
    ("GetApplication", "applications get"),
    ("ListApplications", "applications list"),
    ("UpdateApplication", "applications update"),
    ("DeleteApplication", "applications delete"),
    ("CreateEnvironment", "environments create"),
    ("GetEnvironment", "environments get"),
    ("ListEnvironments", "environments list"),
    ("UpdateEnvironment", "environments update"),
    ("DeleteEnvironment", "environments delete"),
    ("ListEmails", "emails list"),
    ("GetEmail", "emails get"),
    ("RetryEmail", "emails retry"),
    ("CreateGroup", "groups create"),
    ("GetGroup", "groups get"),
    ("ListGroups", "groups list"),
    ("UpdateGroup", "groups update"),
    ("DeleteGroup", "groups delete"),
    ("AddGroupMember", "groups members add"),
    ("RemoveGroupMember", "groups members remove"),
    ("ListGroupMembers", "groups members list"),
    ("ResetUserPassword", "passwords reset"),
    ("RequestPasswordReset", "passwords request-reset"),
    ("ConfirmPasswordReset", "passwords confirm-reset"),
    ("IssueRegistrationLink", "users registration-link"),
    ("CompleteRegistration", "passwords complete-registration"),
    ("CheckPermission", "permissions check"),
    ("BatchCheckPermissions", "permissions batch"),
    ("ExplainPermission", "permissions explain"),
    ("LookupResources", "permissions lookup-resources"),
    ("LookupPrincipals", "permissions lookup-principals"),
    ("CreateServiceAccount", "service-accounts create"),
    ("GetServiceAccount", "service-accounts get"),
    ("ListServiceAccounts", "service-accounts list"),
    ("UpdateServiceAccount", "service-accounts update"),
    ("DeleteServiceAccount", "service-accounts delete"),
    ("CreateServiceAccountKey", "service-accounts keys create"),
    ("ListServiceAccountKeys", "service-accounts keys list"),
    ("RotateServiceAccountKey", "service-accounts keys rotate"),
    ("RevokeServiceAccountKey", "service-accounts keys revoke"),
    ("GetSettings", "settings get"),
    ("UpdateSettings", "settings update"),
    ("GetPasswordPolicy", "settings password-policy"),
    ("CreateUser", "users create"),
    ("BatchCreateUsers", "users import"),
    ("GetUser", "users get"),
    ("ListUsers", "users list"),
    ("UpdateUser", "users update"),
    ("DeactivateUser", "users deactivate"),
    ("ReactivateUser", "users reactivate"),
    ("DeleteUser", "users delete"),
    ("CreateWebhook", "webhooks create"),
    ("GetWebhook", "webhooks get"),
    ("ListWebhooks", "webhooks list"),
    ("UpdateWebhook", "webhooks update"),
    ("DeleteWebhook", "webhooks delete"),
    ("RotateWebhookSecret", "webhooks rotate-secret"),
    ("ListWebhookDeliveries", "webhooks deliveries"),
    ("GetWebhookDelivery", "webhooks delivery"),
    ("RedeliverWebhookDelivery", "webhooks redeliver"),
    ("RewindWebhook", "webhooks rewind"),
    ("ListWebhookEventTypes", "webhooks event-types"),
];

/// A server message with each RPC it names replaced by the fluxctl command that makes it:
/// "use CompleteRegistration" becomes "use `fluxctl passwords complete-registration`".
pub fn name_commands(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        // Only CamelCase words: "Login" at the start of a sentence is English.
        let camel = word.chars().filter(char::is_ascii_uppercase).count() > 1;
        match COMMAND_OF_RPC
            .iter()
            .find(|(rpc, _)| camel && *rpc == word.as_str())
        {
            Some((_, cmd)) => {
                out.push_str("`fluxctl ");
                out.push_str(cmd);
                out.push('`');
            }
            None => out.push_str(word),
        }
        word.clear();
    };
    for c in message.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

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

    #[test]
    fn server_messages_name_commands_not_rpcs() {
        assert_eq!(
            super::name_commands("this is a registration link: use CompleteRegistration"),
            "this is a registration link: use `fluxctl passwords complete-registration`"
        );
        assert_eq!(
            super::name_commands("Login failed; CompleteRegistrations stays; WhoAmI."),
            "Login failed; CompleteRegistrations stays; `fluxctl whoami`."
        );
    }

    /// Every RPC of the descriptor set is in the table of commands, once.
    #[test]
    fn every_rpc_is_mapped_to_its_command() {
        let pool = prost_reflect::DescriptorPool::decode(fluxgate_proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_else(|e| panic!("descriptor set: {e}"));
        let rpcs: Vec<String> = pool
            .services()
            .filter(|s| s.full_name().starts_with("fluxgate.v1."))
            .flat_map(|s| s.methods().map(|m| m.name().to_owned()).collect::<Vec<_>>())
            .collect();
        for rpc in &rpcs {
            let n = super::COMMAND_OF_RPC
                .iter()
                .filter(|(r, _)| r == rpc)
                .count();
            assert_eq!(n, 1, "{rpc} is mapped {n} times in COMMAND_OF_RPC");
        }
        assert_eq!(rpcs.len(), super::COMMAND_OF_RPC.len(), "stale entries");
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
