//! `fluxgate`: serve, migrate, and host-side administration.

use std::io::Read as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fluxgate_server::config::{LogFormat, ServeArgs};
use fluxgate_server::passwords::Hasher;
use fluxgate_server::{Server, bootstrap};
use fluxgate_store::{PoolOptions, Store};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "fluxgate",
    version,
    about = "FluxGate: identity, access control and approvals for feature flags"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gRPC server (migrates and bootstraps the database first).
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate(ServeArgs),
    /// Host-side administration against the configured database.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Reset a user's password (break-glass recovery when the only admin is locked out).
    /// Prints a temporary password that must be changed at the next login.
    ResetPassword {
        #[arg(long)]
        username: String,
        /// Read the new (permanent) password from standard input instead.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Copy the SQLite database to a new file while servers keep running on it (a consistent
    /// snapshot). For PostgreSQL use pg_dump or a base backup (docs/deployment.md).
    Backup {
        /// The file to write; it must not exist yet.
        #[arg(long)]
        to: std::path::PathBuf,
        #[command(flatten)]
        serve: ServeArgs,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLUXGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a person at a terminal, never into a file or a log collector.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .fmt_fields(fluxgate_server::telemetry::TextFields)
            .init(),
    }
}

fn open(args: &ServeArgs) -> anyhow::Result<(fluxgate_server::Config, Store)> {
    let config = args.load()?;
    config.validate()?;
    init_logging(config.log_format);
    let store = Store::open(&config.database_url, &PoolOptions::default())?;
    Ok((config, store))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    init_logging(config.log_format);
    let server = Server::bind(config).await?;
    let addr = server.local_addr()?;
    if let Some(admin) = &server.bootstrap.admin {
        match &admin.generated_password {
            Some(p) => println!(
                "\nBootstrap Team Admin created.\n  username: {}\n  password: {p}\n\
                 This password is shown once and must be changed at first login.\n",
                admin.username
            ),
            None => println!(
                "\nBootstrap Team Admin {:?} created with the configured password.\n",
                admin.username
            ),
        }
    }
    println!("FluxGate listening on {addr}");
    println!("Web console: {}/", server.console_url());
    server.run(fluxgate_server::server::shutdown_signal()).await
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(serve(args)),
        Command::Migrate(args) => {
            let (_, store) = open(&args)?;
            let applied = store.migrate()?;
            println!("{} migration(s) applied", applied.len());
            for m in applied {
                println!("  {m}");
            }
            Ok(())
        }
        Command::Admin(AdminCommand::ResetPassword {
            username,
            password_stdin,
            serve,
        }) => {
            let (config, store) = open(&serve)?;
            let password = if password_stdin {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                Some(s.trim_end_matches(['\n', '\r']).to_owned())
            } else {
                None
            };
            let given = password.is_some();
            let hasher = Hasher::new(&config.password_hashing)?;
            let p = bootstrap::reset_password(&store, &hasher, &username, password)?;
            if given {
                println!("Password of {username:?} set; every session revoked.");
            } else {
                println!(
                    "Temporary password of {username:?}: {p}\n\
                     Every session was revoked; it must be changed at the next login."
                );
            }
            Ok(())
        }
        Command::Admin(AdminCommand::Backup { to, serve }) => {
            let (_, store) = open(&serve)?;
            store.backup_to(&to)?;
            println!("Backup written to {}", to.display());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fluxgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
