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
    /// Username or email address (not with --sso)
    #[arg(required_unless_present = "sso", conflicts_with = "sso")]
    pub username: Option<String>,
    /// Sign in through this identity provider in a
    /// browser; the browser comes back to a loopback address fluxctl listens on
    #[arg(long, value_name = "PROVIDER")]
    pub sso: Option<String>,
    /// With --sso: print the address to open instead of opening a browser
    #[arg(long, requires = "sso")]
    pub no_browser: bool,
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
    if let Some(provider) = a.sso.clone() {
        return sso_login(ctx, &provider, a.no_browser).await;
    }
    let username = a.username.clone().unwrap_or_default();
    let password = if a.password_stdin {
        read_stdin_line()?
    } else {
        secret_from_env_or_prompt("FLUXGATE_PASSWORD", "Password: ")?
    };
    let req = pb::LoginRequest {
        username: username.clone(),
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
        username
    } else {
        user.username.clone()
    };
    let server = ctx.server().to_owned();
    ctx.store_session(Session::from_tokens(&server, &username, tokens))?;
    let shown = pb::LoginResponse {
        tokens: None,
        user: Some(user.clone()),
        second_factor_requirement: resp.second_factor_requirement,
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
    if let Some(r) = resp.second_factor_requirement {
        let due = output::time(&r.due_time);
        if r.overdue {
            eprintln!(
                "note: your role requires a second factor and the time to enrol one passed ({due}): \
                 enrol in the console (Account) before anything else"
            );
        } else {
            eprintln!(
                "note: your role requires a second factor: enrol one by {due} (console, Account)"
            );
        }
    }
    Ok(())
}

/// A PKCE verifier (RFC 7636) and its S256 challenge.
fn pkce() -> (String, String) {
    use base64::Engine as _;
    use sha2::Digest as _;
    let verifier = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// Where the browser starts: the server's address (http(s)) and the provider's start path.
fn start_url(server: &str, provider: &str, challenge: &str, redirect: &str) -> String {
    let base = server.trim_end_matches('/');
    let enc: String = redirect
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("{base}/sso/{provider}/start?code_challenge={challenge}&redirect_uri={enc}")
}

/// Signs in through an identity provider: the browser goes to the server's start address and
/// comes back to a loopback listener with a one-time code, which, with the PKCE verifier only
/// fluxctl holds, becomes a session.
async fn sso_login(ctx: &mut Ctx, provider: &str, no_browser: bool) -> Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| CliError::other(format!("cannot listen on a loopback port: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| CliError::other(e.to_string()))?
        .port();
    let (verifier, challenge) = pkce();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let url = start_url(ctx.server(), provider, &challenge, &redirect);
    eprintln!("Open this address in a browser to sign in:\n  {url}");
    if !no_browser {
        let _ = std::process::Command::new(if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        })
        .arg(&url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    }
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(300),
        wait_for_code(&listener),
    )
    .await
    .map_err(|_| CliError::other("no answer from the browser within 5 minutes"))??;
    let code = match answer {
        Ok(code) => code,
        Err(why) => return Err(CliError::other(format!("single sign-on failed: {why}"))),
    };
    let req = pb::CompleteSsoSignInRequest {
        code,
        code_verifier: verifier,
    };
    let resp = ctx
        .call_anonymous(Call::Write, req, |ch, r| async move {
            AuthServiceClient::new(ch).complete_sso_sign_in(r).await
        })
        .await?;
    let tokens = resp.tokens.as_ref().ok_or_else(|| {
        CliError::other(
            "the identity provider sign-in ended without tokens: run `fluxctl login --sso` again",
        )
    })?;
    let user = resp.user.clone().unwrap_or_default();
    let server = ctx.server().to_owned();
    ctx.store_session(Session::from_tokens(&server, &user.username, tokens))?;
    let shown = pb::LoginResponse {
        tokens: None,
        user: Some(user.clone()),
        second_factor_requirement: None,
    };
    emit(ctx.format(), &shown, |_| {
        println!(
            "Logged in to {server} as {} ({}) through {provider}.",
            user.username,
            output::role(user.role)
        );
    })
}

/// Answers the browser's one request to the loopback address: the code, or the error.
async fn wait_for_code(
    listener: &tokio::net::TcpListener,
) -> Result<std::result::Result<String, String>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    loop {
        let (mut s, _) = listener
            .accept()
            .await
            .map_err(|e| CliError::other(e.to_string()))?;
        let mut buf = vec![0u8; 8192];
        let n = s.read(&mut buf).await.unwrap_or(0);
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        let target = head
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("GET "))
            .and_then(|l| l.split(' ').next())
            .unwrap_or("");
        let Some(query) = target.strip_prefix("/callback?") else {
            let _ = s
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            continue;
        };
        let param = |k: &str| {
            query
                .split('&')
                .filter_map(|p| p.split_once('='))
                .find(|(n, _)| *n == k)
                .map(|(_, v)| percent_decode(v))
        };
        let answer = match (param("code"), param("error")) {
            (Some(c), _) => Ok(c),
            (None, Some(e)) => Err(e),
            (None, None) => Err("the answer had no code".into()),
        };
        let body = match &answer {
            Ok(_) => "Signed in: you can close this tab and go back to the terminal.\n".to_owned(),
            Err(e) => format!("Sign-in failed: {e}\n"),
        };
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = s.write_all(reply.as_bytes()).await;
        return Ok(answer);
    }
}

/// Decodes `%XX` escapes and `+` (a query string's space).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() && s.is_char_boundary(i + 3) => {
                match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
