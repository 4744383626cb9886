//! `account`: the signed-in user's own second factor and email notifications, and the
//! identity providers one may sign in with.

use clap::Subcommand;
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::auth_service_client::AuthServiceClient;

use super::{read_stdin_line, secret_from_env_or_prompt};
use crate::client::{Call, Ctx};
use crate::error::Result;
use crate::output::{Fields, Table, emit, yes_no};

/// `fluxctl account …`
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Whether two-step sign-in is on, and the recovery codes left
    SecondFactor,
    /// Start setting up an authenticator app: prints the secret and its otpauth:// URI
    EnrollTotp,
    /// Finish the set-up with a current code; prints the recovery codes once
    ConfirmTotp {
        /// The authenticator app's current 6-digit code
        #[arg(long)]
        code: String,
    },
    /// Turn two-step sign-in off: your own (asks for your password), or a user's (Team Admins)
    RemoveSecondFactor {
        /// `users/…` or a username [default: yourself]
        #[arg(long)]
        user: Option<String>,
        /// Read your current password from standard input [default: FLUXGATE_PASSWORD, else a
        /// prompt]
        #[arg(long)]
        password_stdin: bool,
    },
    /// Which emails you get
    Notifications,
    /// Change which emails you get (only the given flags change)
    SetNotifications {
        /// Change requests you may review
        #[arg(long)]
        review_requests: Option<bool>,
        /// As one daily digest instead of one email each
        #[arg(long)]
        review_digest: Option<bool>,
        /// Decisions on your own change requests
        #[arg(long)]
        decisions: Option<bool>,
    },
    /// The identity providers one may sign in with (needs no login)
    SsoProviders,
}

fn show_prefs(p: Option<&pb::NotificationPreferences>) {
    let p = p.cloned().unwrap_or_default();
    Fields::new()
        .add("review requests", yes_no(p.review_requests))
        .add("daily digest", yes_no(p.review_digest))
        .add("decisions", yes_no(p.decisions))
        .print();
}

/// Runs an `account` command.
pub async fn run(ctx: &mut Ctx, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::SecondFactor => {
            let req = pb::GetSecondFactorRequest {};
            let r = rpc!(ctx, Call::Read, AuthServiceClient::get_second_factor, req)?;
            emit(ctx.format(), &r, |r| {
                Fields::new()
                    .add("totp", yes_no(r.totp_enabled))
                    .add("enrolment pending", yes_no(r.enrollment_pending))
                    .add("recovery codes left", r.recovery_codes_left.to_string())
                    .print();
            })
        }
        Cmd::EnrollTotp => {
            let req = pb::BeginTotpEnrollmentRequest {};
            let r = rpc!(
                ctx,
                Call::Write,
                AuthServiceClient::begin_totp_enrollment,
                req
            )?;
            emit(ctx.format(), &r, |r| {
                Fields::new()
                    .add("secret", r.secret.clone())
                    .add("uri", r.otpauth_uri.clone())
                    .print();
                eprintln!(
                    "Add it to your authenticator app, then: fluxctl account confirm-totp --code …"
                );
            })
        }
        Cmd::ConfirmTotp { code } => {
            let req = pb::ConfirmTotpEnrollmentRequest { code };
            let r = rpc!(
                ctx,
                Call::Write,
                AuthServiceClient::confirm_totp_enrollment,
                req
            )?;
            emit(ctx.format(), &r, |r| {
                for c in &r.recovery_codes {
                    println!("{c}");
                }
                eprintln!("Two-step sign-in is on. Keep these recovery codes: each works once.");
            })
        }
        Cmd::RemoveSecondFactor {
            user,
            password_stdin,
        } => {
            let current_password = match (&user, password_stdin) {
                (Some(_), _) => String::new(),
                (None, true) => read_stdin_line()?,
                (None, false) => {
                    secret_from_env_or_prompt("FLUXGATE_PASSWORD", "Current password: ")?
                }
            };
            let req = pb::RemoveSecondFactorRequest {
                user: user
                    .map(|u| crate::args::qualify("users", &u))
                    .unwrap_or_default(),
                current_password,
            };
            let r = rpc!(
                ctx,
                Call::Write,
                AuthServiceClient::remove_second_factor,
                req
            )?;
            emit(ctx.format(), &r, |_| println!("Two-step sign-in is off."))
        }
        Cmd::Notifications => {
            let req = pb::GetNotificationPreferencesRequest {};
            let r = rpc!(
                ctx,
                Call::Read,
                AuthServiceClient::get_notification_preferences,
                req
            )?;
            emit(ctx.format(), &r, |r| show_prefs(r.preferences.as_ref()))
        }
        Cmd::SetNotifications {
            review_requests,
            review_digest,
            decisions,
        } => {
            let update_mask = super::mask(&[
                ("review_requests", review_requests.is_some()),
                ("review_digest", review_digest.is_some()),
                ("decisions", decisions.is_some()),
            ])?;
            let req = pb::UpdateNotificationPreferencesRequest {
                preferences: Some(pb::NotificationPreferences {
                    review_requests: review_requests.unwrap_or_default(),
                    review_digest: review_digest.unwrap_or_default(),
                    decisions: decisions.unwrap_or_default(),
                }),
                update_mask: Some(update_mask),
            };
            let r = rpc!(
                ctx,
                Call::Write,
                AuthServiceClient::update_notification_preferences,
                req
            )?;
            emit(ctx.format(), &r, |r| show_prefs(r.preferences.as_ref()))
        }
        Cmd::SsoProviders => {
            let req = pb::ListSsoProvidersRequest {};
            let r = ctx
                .call_anonymous(Call::Read, req, |ch, r| async move {
                    AuthServiceClient::new(ch).list_sso_providers(r).await
                })
                .await?;
            emit(ctx.format(), &r, |r| {
                let mut t = Table::new(&["ID", "NAME", "ISSUER"]);
                for p in &r.providers {
                    t.row(vec![p.id.clone(), p.display_name.clone(), p.issuer.clone()]);
                }
                t.print();
                if r.password_sign_in_disabled {
                    eprintln!("Password sign-in is disabled (break-glass accounts excepted).");
                }
            })
        }
    }
}
