//! `fluxctl`, the FluxGate admin command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Makes a call through [`client::Ctx::call`]: `rpc!(ctx, Call::Read, Client::method, request)`.
macro_rules! rpc {
    ($ctx:expr, $kind:expr, $client:ident :: $method:ident, $req:expr) => {
        $ctx.call($kind, $req, |ch, r| async move {
            $client::new(ch).$method(r).await
        })
        .await
    };
}

mod args;
mod client;
mod commands;
mod error;
mod names;
mod output;
#[cfg(test)]
mod reference;
mod session;

use commands::{
    account, approvals, audit, auth, catalog, emails, groups, passwords, permissions, policy,
    service_accounts, settings, users, webhooks,
};
use error::{AFTER_HELP, CliError};

/// Administer a FluxGate server: sessions, users, service accounts, the catalog, groups,
/// permission checks, change requests and the audit trail.
#[derive(Debug, Parser)]
#[command(name = "fluxctl", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(flatten)]
    global: client::GlobalOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Log in and keep the session in the session file
    Login(auth::LoginArgs),
    /// End the session and delete the session file
    Logout,
    /// Show who the credentials belong to
    Whoami,
    /// Human users
    #[command(subcommand)]
    Users(users::Cmd),
    /// Service accounts and their API keys
    #[command(subcommand)]
    ServiceAccounts(service_accounts::Cmd),
    /// Portfolios
    #[command(subcommand)]
    Portfolios(catalog::PortfolioCmd),
    /// Applications of a portfolio
    #[command(subcommand)]
    Applications(catalog::ApplicationCmd),
    /// Environments of an application
    #[command(subcommand)]
    Environments(catalog::EnvironmentCmd),
    /// Portfolio groups, their members and grants
    #[command(subcommand)]
    Groups(groups::Cmd),
    /// Permission checks
    #[command(subcommand)]
    Permissions(permissions::Cmd),
    /// Four-eyes change requests
    #[command(subcommand)]
    ChangeRequests(approvals::Cmd),
    /// Password changes and resets
    #[command(subcommand)]
    Passwords(passwords::Cmd),
    /// The audit trail
    #[command(subcommand)]
    Audit(audit::Cmd),
    /// Approval policies of environments
    #[command(subcommand)]
    Policy(policy::Cmd),
    /// Webhook subscriptions and audit streams, their deliveries
    #[command(subcommand)]
    Webhooks(webhooks::Cmd),
    /// Your second factor and email notifications; the identity providers
    #[command(subcommand)]
    Account(account::Cmd),
    /// The run-time settings and the password policy
    #[command(subcommand)]
    Settings(settings::Cmd),
    /// The email outbox (Team Admins)
    #[command(subcommand)]
    Emails(emails::Cmd),
    /// Print a shell completion script (e.g. `fluxctl completions bash > /etc/bash_completion.d/fluxctl`)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `fluxctl man | man -l -`
    Man,
}

async fn run(cli: Cli) -> error::Result<()> {
    match cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "fluxctl", &mut std::io::stdout());
            return Ok(());
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
            return Ok(());
        }
        _ => {}
    }
    let mut ctx = client::Ctx::new(cli.global)?;
    let ctx = &mut ctx;
    match cli.command {
        Command::Login(a) => auth::login(ctx, a).await,
        Command::Logout => auth::logout(ctx).await,
        Command::Whoami => auth::whoami(ctx).await,
        Command::Users(c) => users::run(ctx, c).await,
        Command::ServiceAccounts(c) => service_accounts::run(ctx, c).await,
        Command::Portfolios(c) => catalog::run_portfolios(ctx, c).await,
        Command::Applications(c) => catalog::run_applications(ctx, c).await,
        Command::Environments(c) => catalog::run_environments(ctx, c).await,
        Command::Groups(c) => groups::run(ctx, c).await,
        Command::Permissions(c) => permissions::run(ctx, c).await,
        Command::ChangeRequests(c) => approvals::run(ctx, c).await,
        Command::Passwords(c) => passwords::run(ctx, c).await,
        Command::Audit(c) => audit::run(ctx, c).await,
        Command::Policy(c) => policy::run(ctx, c).await,
        Command::Webhooks(c) => webhooks::run(ctx, c).await,
        Command::Account(c) => account::run(ctx, c).await,
        Command::Settings(c) => settings::run(ctx, c).await,
        Command::Emails(c) => emails::run(ctx, c).await,
        Command::Completions { .. } | Command::Man => Ok(()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&CliError::other(format!("cannot start the runtime: {e}"))),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &CliError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(u8::try_from(e.code).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    /// The README's command reference is the one the definitions render;
    /// `FLUXCTL_UPDATE_README=1` (`make cli-reference`) rewrites it.
    #[test]
    fn readme_cli_reference_matches_the_definitions() {
        use crate::reference::{END, START, markdown};
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
        let readme = std::fs::read_to_string(&path).expect("README.md");
        let (Some(a), Some(b)) = (readme.find(START), readme.find(END)) else {
            panic!("README.md lacks the {START} … {END} markers");
        };
        let current = &readme[a + START.len()..b];
        let wanted = format!("\n{}", markdown(&super::Cli::command()));
        if current == wanted {
            return;
        }
        if std::env::var_os("FLUXCTL_UPDATE_README").is_some() {
            let updated = format!("{}{START}{wanted}{}", &readme[..a], &readme[b..]);
            std::fs::write(&path, updated).expect("write README.md");
            return;
        }
        panic!("README.md's fluxctl reference is stale: run `make cli-reference`");
    }

    /// Each command the RPC table names exists.
    #[test]
    fn every_mapped_command_exists() {
        let root = super::Cli::command();
        for (rpc, path) in crate::commands::COMMAND_OF_RPC {
            let mut cmd = &root;
            for word in path.split(' ').filter(|w| !w.starts_with("--")) {
                cmd = cmd
                    .find_subcommand(word)
                    .unwrap_or_else(|| panic!("{rpc}: no command `fluxctl {path}`"));
            }
            for flag in path.split(' ').filter_map(|w| w.strip_prefix("--")) {
                assert!(
                    cmd.get_arguments().any(|a| a.get_long() == Some(flag)),
                    "{rpc}: `fluxctl {path}` has no --{flag}"
                );
            }
        }
    }

    /// Link tokens are base64url: one may begin with `-`.
    #[test]
    fn a_token_may_begin_with_a_hyphen() {
        use clap::Parser as _;
        let parsed = super::Cli::try_parse_from([
            "fluxctl",
            "passwords",
            "confirm-reset",
            "--token",
            "-iAbc_def",
        ]);
        assert!(parsed.is_ok(), "{parsed:?}");
    }
}
