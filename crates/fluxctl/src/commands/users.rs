//! `users`: create, import, get, list, update, deactivate, reactivate, delete.

use clap::{Args, Subcommand};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::user_service_client::UserServiceClient;

use super::{mask, secret_from_env_or_prompt};
use crate::args::{Role, qualify};
use crate::client::{Call, Ctx};
use crate::error::Result;
use crate::output::{self, Fields, Table, emit, next_page_hint};

/// `fluxctl users …`
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create a user, with an initial password or a registration link
    Create(CreateArgs),
    /// Create many users from JSON Lines (`{"username", "email", "display_name", "role"}` a
    /// line), 1,000 to a transaction; each gets a registration link
    Import(ImportArgs),
    /// Show a user (`users/{id}`, `users/{username}` or a bare username)
    Get { name: String },
    /// List users
    List(ListArgs),
    /// Change email, display name or role
    Update(UpdateArgs),
    /// Deactivate a user: no more logins, every session ends
    Deactivate(EtagArgs),
    /// Reactivate a deactivated user
    Reactivate(EtagArgs),
    /// Delete a deactivated user
    Delete(EtagArgs),
    /// Issue a new registration link for a user without a password (the old one stops working)
    RegistrationLink {
        /// `users/{id}`, `users/{username}` or a bare username
        user: String,
    },
}

/// Arguments of `users create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Login name
    pub username: String,
    #[arg(long)]
    pub email: String,
    #[arg(long)]
    pub display_name: String,
    #[arg(long, value_parser = crate::args::AnySpelling::<Role>::new(), default_value = "requester")]
    pub role: Role,
    /// Set an initial password (from FLUXGATE_NEW_PASSWORD, else prompted); without it the
    /// user gets a registration link
    #[arg(long)]
    pub with_password: bool,
    /// With --with-password: read the initial password from the first line of standard input
    #[arg(long, requires = "with_password")]
    pub password_stdin: bool,
    /// The user must change the initial password at first login
    #[arg(long, requires = "with_password")]
    pub require_password_change: bool,
}

/// Arguments of `users import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The file to read, or `-` for standard input
    pub file: String,
    /// Users per BatchCreateUsers call (1 to 1,000); each call is all or nothing
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
}

/// One line of `users import`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportLine {
    username: String,
    email: String,
    display_name: String,
    #[serde(default)]
    role: Option<String>,
}

/// Arguments of `users list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long, value_parser = crate::args::AnySpelling::<Role>::new())]
    pub role: Option<Role>,
    /// Only active (true) or only deactivated (false) users
    #[arg(long)]
    pub active: Option<bool>,
    /// Substring of username, email or display name
    #[arg(long)]
    pub query: Option<String>,
    /// Only users not signed in for this many days (or never)
    #[arg(long)]
    pub not_seen_for_days: Option<u32>,
    /// Only users who never (true) or who at some time (false) signed in
    #[arg(long)]
    pub never_signed_in: Option<bool>,
    /// Least recent sign-in first, instead of by username
    #[arg(long)]
    pub by_last_sign_in: bool,
    #[arg(long, default_value_t = 0)]
    pub page_size: i32,
    #[arg(long)]
    pub page_token: Option<String>,
}

/// Arguments of `users update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    pub name: String,
    #[arg(long)]
    pub email: Option<String>,
    #[arg(long)]
    pub display_name: Option<String>,
    #[arg(long, value_parser = crate::args::AnySpelling::<Role>::new())]
    pub role: Option<Role>,
    /// Refuse the change if the user changed since this etag was read
    #[arg(long)]
    pub etag: Option<String>,
    /// Why (a role change's rationale, say), kept in the audit trail
    #[arg(long)]
    pub reason: Option<String>,
}

/// A user name and an optional etag.
#[derive(Debug, Args)]
pub struct EtagArgs {
    pub name: String,
    /// Refuse the change if the user changed since this etag was read
    #[arg(long)]
    pub etag: Option<String>,
}

/// Runs a `users` command.
pub async fn run(ctx: &mut Ctx, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Create(a) => create(ctx, a).await,
        Cmd::Import(a) => import(ctx, a).await,
        Cmd::Get { name } => get(ctx, &name).await,
        Cmd::List(a) => list(ctx, a).await,
        Cmd::Update(a) => update(ctx, a).await,
        Cmd::Deactivate(a) => deactivate(ctx, a).await,
        Cmd::Reactivate(a) => reactivate(ctx, a).await,
        Cmd::Delete(a) => delete(ctx, a).await,
        Cmd::RegistrationLink { user } => registration_link(ctx, &user).await,
    }
}

async fn registration_link(ctx: &mut Ctx, user: &str) -> Result<()> {
    use fluxgate_proto::v1::password_reset_service_client::PasswordResetServiceClient;
    let req = pb::IssueRegistrationLinkRequest {
        name: crate::args::qualify("users", user),
    };
    let r = rpc!(
        ctx,
        Call::Write,
        PasswordResetServiceClient::issue_registration_link,
        req
    )?;
    emit(ctx.format(), &r, |r| {
        let l = r.registration_link.clone().unwrap_or_default();
        crate::output::Fields::new()
            .add("link", l.url)
            .add("expires", crate::output::time(&l.expire_time))
            .print();
    })
}

async fn create(ctx: &mut Ctx, a: CreateArgs) -> Result<()> {
    let initial_password = if a.password_stdin {
        super::read_stdin_line()?
    } else if a.with_password {
        secret_from_env_or_prompt("FLUXGATE_NEW_PASSWORD", "Initial password: ")?
    } else {
        String::new()
    };
    let req = pb::CreateUserRequest {
        user: Some(pb::User {
            username: a.username,
            email: a.email,
            display_name: a.display_name,
            role: pb::Role::from(a.role) as i32,
            ..Default::default()
        }),
        initial_password,
        require_password_change: a.require_password_change,
    };
    let resp = rpc!(ctx, Call::Write, UserServiceClient::create_user, req)?;
    emit(ctx.format(), &resp, |r| {
        show(r.user.as_ref());
        if let Some(link) = &r.registration_link {
            Fields::new()
                .add("registration link", link.url.clone())
                .add("link expires", output::time(&link.expire_time))
                .print();
        }
    })
}

/// The requests of an import file: a usage error names the line that is not a user.
fn import_requests(text: &str) -> Result<Vec<pb::CreateUserRequest>> {
    use clap::ValueEnum as _;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |why: String| crate::error::CliError::usage(format!("line {}: {why}", i + 1));
        let u: ImportLine = serde_json::from_str(line).map_err(|e| at(e.to_string()))?;
        let role = match u.role.as_deref() {
            None => Role::Requester,
            Some(r) => Role::from_str(&r.replace('_', "-"), true).map_err(at)?,
        };
        out.push(pb::CreateUserRequest {
            user: Some(pb::User {
                username: u.username,
                email: u.email,
                display_name: u.display_name,
                role: pb::Role::from(role) as i32,
                ..Default::default()
            }),
            initial_password: String::new(),
            require_password_change: false,
        });
    }
    Ok(out)
}

async fn import(ctx: &mut Ctx, a: ImportArgs) -> Result<()> {
    if !(1..=1000).contains(&a.batch) {
        return Err(crate::error::CliError::usage("--batch takes 1 to 1000"));
    }
    let text = if a.file == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(&a.file)?
    };
    let requests = import_requests(&text)?;
    let mut all = pb::BatchCreateUsersResponse::default();
    let key = ctx.idempotency_key().to_owned();
    for (i, chunk) in requests.chunks(a.batch).enumerate() {
        // Each batch its own key (the invocation's, numbered), so that a rerun with
        // --idempotency-key repeats no batch that went through.
        ctx.set_idempotency_key(format!("{key}.{i}"));
        let req = pb::BatchCreateUsersRequest {
            requests: chunk.to_vec(),
        };
        let resp = rpc!(ctx, Call::Write, UserServiceClient::batch_create_users, req)?;
        all.results.extend(resp.results);
    }
    emit(ctx.format(), &all, |r| {
        let mut t = Table::new(&["USERNAME", "NAME", "REGISTRATION LINK"]);
        for c in &r.results {
            let u = c.user.clone().unwrap_or_default();
            let link = c.registration_link.as_ref().map(|l| l.url.clone());
            t.row(vec![u.username, u.name, link.unwrap_or_default()]);
        }
        print!("{}", t.render());
        println!("{} users created", r.results.len());
    })
}

async fn get(ctx: &mut Ctx, name: &str) -> Result<()> {
    let req = pb::GetUserRequest {
        name: qualify("users", name),
    };
    let resp = rpc!(ctx, Call::Read, UserServiceClient::get_user, req)?;
    emit(ctx.format(), &resp, |r| show(r.user.as_ref()))
}

async fn list(ctx: &mut Ctx, a: ListArgs) -> Result<()> {
    let req = pb::ListUsersRequest {
        page_size: a.page_size,
        page_token: a.page_token.unwrap_or_default(),
        role: a.role.map_or(0, |r| pb::Role::from(r) as i32),
        active: a.active,
        query: a.query.unwrap_or_default(),
        signed_in_before: a.not_seen_for_days.map(|d| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |t| t.as_secs() as i64);
            prost_types::Timestamp {
                seconds: now - i64::from(d) * 86_400,
                nanos: 0,
            }
        }),
        never_signed_in: a.never_signed_in,
        order_by: if a.by_last_sign_in {
            "last_login_time".into()
        } else {
            String::new()
        },
    };
    let resp = rpc!(ctx, Call::Read, UserServiceClient::list_users, req)?;
    emit(ctx.format(), &resp, |r| {
        let mut t = Table::new(&["name", "username", "email", "role", "active"]);
        for u in &r.users {
            t.row(vec![
                u.name.clone(),
                u.username.clone(),
                u.email.clone(),
                output::role(u.role),
                output::yes_no(u.active),
            ]);
        }
        t.print();
        next_page_hint(&r.next_page_token);
    })
}

async fn update(ctx: &mut Ctx, a: UpdateArgs) -> Result<()> {
    let update_mask = mask(&[
        ("email", a.email.is_some()),
        ("display_name", a.display_name.is_some()),
        ("role", a.role.is_some()),
    ])?;
    let req = pb::UpdateUserRequest {
        user: Some(pb::User {
            name: qualify("users", &a.name),
            email: a.email.unwrap_or_default(),
            display_name: a.display_name.unwrap_or_default(),
            role: a.role.map_or(0, |r| pb::Role::from(r) as i32),
            etag: a.etag.unwrap_or_default(),
            ..Default::default()
        }),
        update_mask: Some(update_mask),
        reason: a.reason.unwrap_or_default(),
    };
    let resp = rpc!(ctx, Call::Write, UserServiceClient::update_user, req)?;
    emit(ctx.format(), &resp, |r| show(r.user.as_ref()))
}

async fn deactivate(ctx: &mut Ctx, a: EtagArgs) -> Result<()> {
    let req = pb::DeactivateUserRequest {
        name: qualify("users", &a.name),
        etag: a.etag.unwrap_or_default(),
    };
    let resp = rpc!(ctx, Call::Write, UserServiceClient::deactivate_user, req)?;
    emit(ctx.format(), &resp, |r| show(r.user.as_ref()))
}

async fn reactivate(ctx: &mut Ctx, a: EtagArgs) -> Result<()> {
    let req = pb::ReactivateUserRequest {
        name: qualify("users", &a.name),
        etag: a.etag.unwrap_or_default(),
    };
    let resp = rpc!(ctx, Call::Write, UserServiceClient::reactivate_user, req)?;
    emit(ctx.format(), &resp, |r| show(r.user.as_ref()))
}

async fn delete(ctx: &mut Ctx, a: EtagArgs) -> Result<()> {
    let name = qualify("users", &a.name);
    let req = pb::DeleteUserRequest {
        name: name.clone(),
        etag: a.etag.unwrap_or_default(),
    };
    let resp = rpc!(ctx, Call::Write, UserServiceClient::delete_user, req)?;
    emit(ctx.format(), &resp, |_| println!("Deleted {name}."))
}

/// Prints one user as key/value lines.
pub fn show(user: Option<&pb::User>) {
    let Some(u) = user else { return };
    Fields::new()
        .add("name", u.name.clone())
        .add("username", u.username.clone())
        .add("email", u.email.clone())
        .add("display name", u.display_name.clone())
        .add("role", output::role(u.role))
        .add("active", output::yes_no(u.active))
        .add(
            "must change password",
            if u.must_change_password { "yes" } else { "" },
        )
        .add("created", output::time(&u.create_time))
        .add("last login", output::time(&u.last_login_time))
        .add("etag", u.etag.clone())
        .print();
}
