//! `emails`: the outbox (Team Admins): what was sent, what failed or is held, and retrying.

use clap::{Subcommand, ValueEnum};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::email_service_client::EmailServiceClient;

use crate::client::{Call, Ctx};
use crate::error::Result;
use crate::output::{self, Fields, Table, emit};

/// `fluxctl emails …`
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// List messages, newest first
    List {
        /// Only messages in this state (repeatable)
        #[arg(long = "state", value_parser = crate::args::AnySpelling::<EmailState>::new())]
        states: Vec<EmailState>,
        /// Only messages to this address
        #[arg(long)]
        recipient: Option<String>,
        #[arg(long, default_value_t = 0)]
        page_size: i32,
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Show one message, with its body while it is kept
    Get {
        /// `emails/{id}`
        name: String,
    },
    /// Queue a failed or held message again
    Retry {
        /// `emails/{id}`
        name: String,
    },
}

/// Where a message is.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EmailState {
    Pending,
    Sent,
    Failed,
    Held,
}

impl crate::args::ProtoEnum for EmailState {
    const PREFIX: &'static str = "EMAIL_STATE_";
}

impl From<EmailState> for pb::EmailState {
    fn from(s: EmailState) -> Self {
        match s {
            EmailState::Pending => pb::EmailState::Pending,
            EmailState::Sent => pb::EmailState::Sent,
            EmailState::Failed => pb::EmailState::Failed,
            EmailState::Held => pb::EmailState::Held,
        }
    }
}

fn state_name(v: i32) -> String {
    output::enum_name(
        pb::EmailState::try_from(v).ok().map(|s| s.as_str_name()),
        "EMAIL_STATE_",
    )
}

fn show(e: &pb::Email) {
    Fields::new()
        .add("name", e.name.clone())
        .add("template", e.template.clone())
        .add("to", e.recipient.clone())
        .add("subject", e.subject.clone())
        .add("state", state_name(e.state))
        .add("attempts", e.attempts.to_string())
        .add("error", e.last_error.clone())
        .add("queued", output::time(&e.create_time))
        .add("sent", output::time(&e.send_time))
        .print();
    if !e.body.is_empty() {
        println!("\n{}", e.body);
    }
}

/// Runs an `emails` command.
pub async fn run(ctx: &mut Ctx, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::List {
            states,
            recipient,
            page_size,
            page_token,
        } => {
            let req = pb::ListEmailsRequest {
                page_size,
                page_token: page_token.unwrap_or_default(),
                states: states
                    .into_iter()
                    .map(|s| pb::EmailState::from(s) as i32)
                    .collect(),
                recipient: recipient.unwrap_or_default(),
            };
            let r = rpc!(ctx, Call::Read, EmailServiceClient::list_emails, req)?;
            emit(ctx.format(), &r, |r| {
                let mut t = Table::new(&["NAME", "TO", "SUBJECT", "STATE", "ATTEMPTS"]);
                for e in &r.emails {
                    t.row(vec![
                        e.name.clone(),
                        e.recipient.clone(),
                        e.subject.clone(),
                        state_name(e.state),
                        e.attempts.to_string(),
                    ]);
                }
                t.print();
                output::next_page_hint(&r.next_page_token);
            })
        }
        Cmd::Get { name } => {
            let req = pb::GetEmailRequest { name };
            let r = rpc!(ctx, Call::Read, EmailServiceClient::get_email, req)?;
            emit(ctx.format(), &r, |r| {
                if let Some(e) = &r.email {
                    show(e);
                }
            })
        }
        Cmd::Retry { name } => {
            let req = pb::RetryEmailRequest { name };
            let r = rpc!(ctx, Call::Write, EmailServiceClient::retry_email, req)?;
            emit(ctx.format(), &r, |r| {
                if let Some(e) = &r.email {
                    show(e);
                }
            })
        }
    }
}
