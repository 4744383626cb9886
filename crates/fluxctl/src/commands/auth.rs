//! `login`, `logout`, `whoami`.

use clap::Args;
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::auth_service_client::AuthServiceClient;

use super::{read_stdin_line, secret_from_env_or_prompt};
use crate::client::{Call, Ctx};
use crate::error::{CliError, Result};
use crate::output::{self, Fields, emit};
use crate::session::Session;

/// Arguments of `fluxctl login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Username or email address
    pub username: String,
    /// Read the password from the first line of standard input
    #[arg(long)]
    pub password_stdin: bool,
    /// For an account with a second factor: the authenticator app's current code, or a
    /// recovery code
    #[arg(long, env = "FLUXGATE_SECOND_FACTOR_CODE", hide_env_values = true)]
    pub code: Option<String>,
}

/// Logs in and saves the session.
pub async fn login(ctx: &mut Ctx, a: LoginArgs) -> Result<()> {
    let password = if a.password_stdin {
        read_stdin_line()?
    } else {
        secret_from_env_or_prompt("FLUXGATE_PASSWORD", "Password: ")?
    };
    let req = pb::LoginRequest {
        username: a.username.clone(),
        password,
        second_factor_code: a.code.clone().unwrap_or_default(),
    };
    let resp = ctx
        .call_anonymous(Call::Read, req, |ch, r| async move {
            AuthServiceClient::new(ch).login(r).await
        })
        .await?;
    let tokens = resp
        .tokens
        .as_ref()
        .ok_or_else(|| CliError::other("Login returned no tokens"))?;
    let user = resp.user.clone().unwrap_or_default();
    let username = if user.username.is_empty() {
        a.username
    } else {
        user.username.clone()
    };
    let server = ctx.server().to_owned();
    ctx.store_session(Session::from_tokens(&server, &username, tokens))?;
    let shown = pb::LoginResponse {
        tokens: None,
        user: Some(user.clone()),
    };
    emit(ctx.format(), &shown, |_| {
        println!(
            "Logged in to {server} as {username} ({}).",
            output::role(user.role)
        );
    })?;
    if user.must_change_password {
        eprintln!("note: the password is temporary: run `fluxctl passwords change` first");
    }
    Ok(())
}

/// Revokes the session and deletes the session file.
pub async fn logout(ctx: &mut Ctx) -> Result<()> {
    if ctx.session().is_none() {
        // An unreadable session file goes too; with --token there is no file to speak of.
        if ctx.opts.token.is_none() {
            ctx.drop_session()?;
        }
        eprintln!("not logged in");
        return Ok(());
    }
    let result = rpc!(
        ctx,
        Call::Write,
        AuthServiceClient::logout,
        pb::LogoutRequest {}
    );
    ctx.drop_session()?;
    match result {
        Ok(_) => {
            eprintln!("Logged out.");
            Ok(())
        }
        // The session had ended already: nothing left to revoke.
        Err(e) if e.code == crate::error::exit::AUTH => {
            eprintln!("Logged out (the session had already ended).");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Describes the caller.
pub async fn whoami(ctx: &mut Ctx) -> Result<()> {
    let resp = rpc!(
        ctx,
        Call::Read,
        AuthServiceClient::who_am_i,
        pb::WhoAmIRequest {}
    )?;
    emit(ctx.format(), &resp, |r| {
        let user = r.user.clone().unwrap_or_default();
        Fields::new()
            .add("principal", r.principal.clone())
            .add("username", user.username)
            .add("display name", user.display_name)
            .add("role", output::role(r.role))
            .add("session", r.session_id.clone())
            .add("server", ctx.server())
            .print();
    })
}
