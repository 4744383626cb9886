//! `passwords`: change your own, reset a user's (Team Admins), ask for a reset link.

use clap::Subcommand;
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::auth_service_client::AuthServiceClient;
use fluxgate_proto::v1::password_reset_service_client::PasswordResetServiceClient;

use super::{read_stdin_line, secret_from_env_or_prompt};
use crate::args::qualify;
use crate::client::{Call, Ctx};
use crate::error::{CliError, Result};
use crate::output::{Fields, emit};
use crate::session::Session;

/// `fluxctl passwords …`
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Change your own password; the session file gets the fresh session
    Change {
        /// Read the current and the new password from the first two lines of standard input
        /// [default: FLUXGATE_PASSWORD and FLUXGATE_NEW_PASSWORD, else prompts]
        #[arg(long = "password-stdin", alias = "stdin")]
        stdin: bool,
    },
    /// Reset a user's password to a temporary one, printed once (Team Admins)
    Reset {
        /// `users/{id}`, `users/{username}` or a bare username
        user: String,
        #[arg(long)]
        etag: Option<String>,
    },
    /// Ask for a reset link by email (needs no login)
    RequestReset { email: String },
    /// Set a new password with the token of a reset link (needs no login)
    ConfirmReset(TokenArgs),
    /// Choose the first password with the token of a registration link (needs no login)
    CompleteRegistration(TokenArgs),
}

/// A link's token and the password to set.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The `token` of the link (it may begin with `-`)
    #[arg(long, allow_hyphen_values = true)]
    pub token: String,
    /// Read the new password from the first line of standard input
    /// [default: FLUXGATE_NEW_PASSWORD, else a prompt]
    #[arg(long)]
    pub password_stdin: bool,
}

impl TokenArgs {
    fn password(&self) -> Result<String> {
        if self.password_stdin {
            read_stdin_line()
        } else {
            secret_from_env_or_prompt("FLUXGATE_NEW_PASSWORD", "New password: ")
        }
    }
}

/// Runs a `passwords` command.
pub async fn run(ctx: &mut Ctx, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Change { stdin } => change(ctx, stdin).await,
        Cmd::Reset { user, etag } => {
            let req = pb::ResetUserPasswordRequest {
                name: qualify("users", &user),
                etag: etag.unwrap_or_default(),
            };
            let r = rpc!(
                ctx,
                Call::Write,
                PasswordResetServiceClient::reset_user_password,
                req
            )?;
            emit(ctx.format(), &r, |r| {
                let user = r.user.clone().unwrap_or_default();
                Fields::new()
                    .add("user", user.name)
                    .add("temporary password", r.temporary_password.clone())
                    .print();
                eprintln!(
                    "The temporary password is shown only once; the user must change it at next login."
                );
            })
        }
        Cmd::RequestReset { email } => {
            let req = pb::RequestPasswordResetRequest { email };
            let r = ctx
                .call_anonymous(Call::Write, req, |ch, r| async move {
                    PasswordResetServiceClient::new(ch)
                        .request_password_reset(r)
                        .await
                })
                .await?;
            emit(ctx.format(), &r, |_| {
                println!("If an active account has this address, a reset link is on its way.");
            })
        }
        Cmd::ConfirmReset(a) => {
            let req = pb::ConfirmPasswordResetRequest {
                new_password: a.password()?,
                token: a.token,
            };
            let r = ctx
                .call_anonymous(Call::Write, req, |ch, r| async move {
                    PasswordResetServiceClient::new(ch)
                        .confirm_password_reset(r)
                        .await
                })
                .await?;
            emit(ctx.format(), &r, |r| {
                println!("Password set for {}; log in with it.", r.username);
            })
        }
        Cmd::CompleteRegistration(a) => {
            let req = pb::CompleteRegistrationRequest {
                password: a.password()?,
                token: a.token,
            };
            let r = ctx
                .call_anonymous(Call::Write, req, |ch, r| async move {
                    PasswordResetServiceClient::new(ch)
                        .complete_registration(r)
                        .await
                })
                .await?;
            emit(ctx.format(), &r, |r| {
                println!("Registered {}; log in with the new password.", r.username);
            })
        }
    }
}

async fn change(ctx: &mut Ctx, stdin: bool) -> Result<()> {
    let (current_password, new_password) = if stdin {
        (read_stdin_line()?, read_stdin_line()?)
    } else {
        (
            secret_from_env_or_prompt("FLUXGATE_PASSWORD", "Current password: ")?,
            secret_from_env_or_prompt("FLUXGATE_NEW_PASSWORD", "New password: ")?,
        )
    };
    let req = pb::ChangePasswordRequest {
        current_password,
        new_password,
    };
    let r = rpc!(ctx, Call::Write, AuthServiceClient::change_password, req)?;
    // Every earlier session was revoked: keep the new one when this one came from the file.
    if ctx.opts.token.is_none() && ctx.session().is_some() {
        let tokens = r
            .tokens
            .as_ref()
            .ok_or_else(|| CliError::other("ChangePassword returned no tokens"))?;
        let username = r
            .user
            .as_ref()
            .map(|u| u.username.clone())
            .unwrap_or_default();
        let server = ctx.server().to_owned();
        ctx.store_session(Session::from_tokens(&server, &username, tokens))?;
    }
    let shown = pb::ChangePasswordResponse {
        tokens: None,
        user: r.user,
    };
    emit(ctx.format(), &shown, |_| {
        println!("Password changed; every other session has ended.");
    })
}
