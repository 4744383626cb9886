//! `webhooks`: subscriptions to events, their deliveries, redelivery, rewinding (Team Admins).

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::webhook_service_client::WebhookServiceClient;

use super::mask;
use crate::args::{parse_duration, proto_duration};
use crate::client::{Call, Ctx};
use crate::error::Result;
use crate::output::{self, Fields, Table, emit};

/// `fluxctl webhooks …`
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Subscribe an endpoint; prints the signing secret once
    Create(CreateArgs),
    /// List subscriptions
    List,
    /// Show one subscription
    Get {
        /// `webhooks/{id}`
        name: String,
    },
    /// Change a subscription
    Update(UpdateArgs),
    /// Delete a subscription and its delivery log
    Delete {
        /// `webhooks/{id}`
        name: String,
        #[arg(long)]
        etag: Option<String>,
    },
    /// Replace the signing secret; prints the new one once
    RotateSecret {
        /// `webhooks/{id}`
        name: String,
        /// How long the previous secret keeps signing too (0 to 7d; default 24h)
        #[arg(long, value_parser = parse_duration)]
        overlap: Option<Duration>,
    },
    /// A subscription's deliveries, newest first
    Deliveries {
        /// `webhooks/{id}`
        name: String,
        /// Only deliveries in this state
        #[arg(long, value_parser = crate::args::AnySpelling::<DeliveryState>::new())]
        state: Vec<DeliveryState>,
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// One delivery, with its payload
    Delivery {
        /// `webhooks/{id}/deliveries/{delivery}`
        name: String,
    },
    /// Send a delivered or failed message again
    Redeliver {
        /// `webhooks/{id}/deliveries/{delivery}`
        name: String,
    },
    /// Deliver again every event after an audit sequence number
    Rewind {
        /// `webhooks/{id}`
        name: String,
        /// The last sequence number the receiver holds
        #[arg(long)]
        after: i64,
    },
    /// The event types a subscription may select
    EventTypes,
}

/// What a subscription is sent.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// One signed JSON message per selected event
    Events,
    /// Every audit event, as JSON lines in chain order
    AuditStream,
}

impl crate::args::ProtoEnum for Format {
    const PREFIX: &'static str = "WEBHOOK_FORMAT_";
}

/// A delivery state.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

impl crate::args::ProtoEnum for DeliveryState {
    const PREFIX: &'static str = "WEBHOOK_DELIVERY_STATE_";
}

/// Arguments of `webhooks create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Where messages are POSTed (https://)
    pub url: String,
    #[arg(long, default_value = "webhook")]
    pub display_name: String,
    #[arg(long, value_parser = crate::args::AnySpelling::<Format>::new(), default_value = "events")]
    pub format: Format,
    /// An event type, `namespace.*` or `*` (repeatable; events format only)
    #[arg(long = "event-type")]
    pub event_types: Vec<String>,
    /// Start the feed after this audit sequence number (0: the whole trail)
    #[arg(long)]
    pub start_after: Option<i64>,
    /// Create it disabled
    #[arg(long)]
    pub disabled: bool,
}

/// Arguments of `webhooks update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// `webhooks/{id}`
    pub name: String,
    #[arg(long)]
    pub display_name: Option<String>,
    #[arg(long)]
    pub url: Option<String>,
    /// The new list of event types (repeatable)
    #[arg(long = "event-type")]
    pub event_types: Option<Vec<String>>,
    #[arg(long)]
    pub enabled: Option<bool>,
    #[arg(long)]
    pub etag: Option<String>,
}

fn state_pb(s: DeliveryState) -> i32 {
    match s {
        DeliveryState::Pending => pb::WebhookDeliveryState::Pending as i32,
        DeliveryState::Delivered => pb::WebhookDeliveryState::Delivered as i32,
        DeliveryState::Failed => pb::WebhookDeliveryState::Failed as i32,
    }
}

/// Runs a `webhooks` command.
pub async fn run(ctx: &mut Ctx, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Create(a) => create(ctx, a).await,
        Cmd::List => {
            let r = rpc!(
                ctx,
                Call::Read,
                WebhookServiceClient::list_webhooks,
                pb::ListWebhooksRequest {}
            )?;
            emit(ctx.format(), &r, |r| table(&r.webhooks))
        }
        Cmd::Get { name } => {
            let req = pb::GetWebhookRequest { name };
            let r = rpc!(ctx, Call::Read, WebhookServiceClient::get_webhook, req)?;
            emit(ctx.format(), &r, |r| show(r.webhook.as_ref()))
        }
        Cmd::Update(a) => update(ctx, a).await,
        Cmd::Delete { name, etag } => {
            let req = pb::DeleteWebhookRequest {
                name: name.clone(),
                etag: etag.unwrap_or_default(),
            };
            let r = rpc!(ctx, Call::Write, WebhookServiceClient::delete_webhook, req)?;
            emit(ctx.format(), &r, |_| println!("deleted {name}"))
        }
        Cmd::RotateSecret { name, overlap } => {
            let req = pb::RotateWebhookSecretRequest {
                name,
                overlap: overlap.map(proto_duration),
            };
            let r = rpc!(
                ctx,
                Call::Write,
                WebhookServiceClient::rotate_webhook_secret,
                req
            )?;
            emit(ctx.format(), &r, |r| {
                show(r.webhook.as_ref());
                println!("\nsecret (shown once): {}", r.secret);
            })
        }
        Cmd::Deliveries {
            name,
            state,
            page_size,
            page_token,
        } => {
            let req = pb::ListWebhookDeliveriesRequest {
                parent: name,
                page_size,
                page_token,
                states: state.into_iter().map(state_pb).collect(),
            };
            let r = rpc!(
                ctx,
                Call::Read,
                WebhookServiceClient::list_webhook_deliveries,
                req
            )?;
            emit(ctx.format(), &r, |r| {
                deliveries(&r.deliveries);
                output::next_page_hint(&r.next_page_token);
            })
        }
        Cmd::Delivery { name } => {
            let req = pb::GetWebhookDeliveryRequest { name };
            let r = rpc!(
                ctx,
                Call::Read,
                WebhookServiceClient::get_webhook_delivery,
                req
            )?;
            emit(ctx.format(), &r, |r| {
                if let Some(d) = &r.delivery {
                    delivery(d);
                    println!("\n{}", d.payload);
                }
            })
        }
        Cmd::Redeliver { name } => {
            let req = pb::RedeliverWebhookDeliveryRequest { name };
            let r = rpc!(
                ctx,
                Call::Write,
                WebhookServiceClient::redeliver_webhook_delivery,
                req
            )?;
            emit(ctx.format(), &r, |r| {
                if let Some(d) = &r.delivery {
                    delivery(d);
                }
            })
        }
        Cmd::Rewind { name, after } => {
            let req = pb::RewindWebhookRequest {
                name,
                after_sequence: after,
            };
            let r = rpc!(ctx, Call::Write, WebhookServiceClient::rewind_webhook, req)?;
            emit(ctx.format(), &r, |r| show(r.webhook.as_ref()))
        }
        Cmd::EventTypes => {
            let r = rpc!(
                ctx,
                Call::Read,
                WebhookServiceClient::list_webhook_event_types,
                pb::ListWebhookEventTypesRequest {}
            )?;
            emit(ctx.format(), &r, |r| {
                for t in &r.event_types {
                    println!("{t}");
                }
            })
        }
    }
}

async fn create(ctx: &mut Ctx, a: CreateArgs) -> Result<()> {
    let format = match a.format {
        Format::Events => pb::WebhookFormat::Events,
        Format::AuditStream => pb::WebhookFormat::AuditStream,
    };
    let req = pb::CreateWebhookRequest {
        webhook: Some(pb::Webhook {
            display_name: a.display_name,
            url: a.url,
            format: format as i32,
            event_types: a.event_types,
            enabled: !a.disabled,
            ..Default::default()
        }),
        start_after_sequence: a.start_after,
    };
    let r = rpc!(ctx, Call::Write, WebhookServiceClient::create_webhook, req)?;
    emit(ctx.format(), &r, |r| {
        show(r.webhook.as_ref());
        println!("\nsecret (shown once): {}", r.secret);
    })
}

async fn update(ctx: &mut Ctx, a: UpdateArgs) -> Result<()> {
    let update_mask = mask(&[
        ("display_name", a.display_name.is_some()),
        ("url", a.url.is_some()),
        ("event_types", a.event_types.is_some()),
        ("enabled", a.enabled.is_some()),
    ])?;
    let req = pb::UpdateWebhookRequest {
        webhook: Some(pb::Webhook {
            name: a.name,
            display_name: a.display_name.unwrap_or_default(),
            url: a.url.unwrap_or_default(),
            event_types: a.event_types.unwrap_or_default(),
            enabled: a.enabled.unwrap_or_default(),
            etag: a.etag.unwrap_or_default(),
            ..Default::default()
        }),
        update_mask: Some(update_mask),
    };
    let r = rpc!(ctx, Call::Write, WebhookServiceClient::update_webhook, req)?;
    emit(ctx.format(), &r, |r| show(r.webhook.as_ref()))
}

fn format_name(v: i32) -> String {
    output::enum_name(
        pb::WebhookFormat::try_from(v).ok().map(|f| f.as_str_name()),
        "WEBHOOK_FORMAT_",
    )
}

fn state_name(v: i32) -> String {
    output::enum_name(
        pb::WebhookDeliveryState::try_from(v)
            .ok()
            .map(|s| s.as_str_name()),
        "WEBHOOK_DELIVERY_STATE_",
    )
}

fn table(hooks: &[pb::Webhook]) {
    let mut t = Table::new(&[
        "NAME",
        "DISPLAY NAME",
        "URL",
        "FORMAT",
        "ENABLED",
        "CURSOR",
        "PENDING",
        "FAILED",
    ]);
    for w in hooks {
        t.row(vec![
            w.name.clone(),
            w.display_name.clone(),
            w.url.clone(),
            format_name(w.format),
            output::yes_no(w.enabled),
            w.cursor_sequence.to_string(),
            w.pending_deliveries.to_string(),
            w.failed_deliveries.to_string(),
        ]);
    }
    t.print();
}

fn show(w: Option<&pb::Webhook>) {
    let Some(w) = w else { return };
    Fields::new()
        .add("name", w.name.clone())
        .add("display name", w.display_name.clone())
        .add("url", w.url.clone())
        .add("format", format_name(w.format))
        .add("event types", w.event_types.join(", "))
        .add("enabled", output::yes_no(w.enabled))
        .add("cursor", w.cursor_sequence.to_string())
        .add("pending", w.pending_deliveries.to_string())
        .add("failed", w.failed_deliveries.to_string())
        .add(
            "previous secret until",
            output::time(&w.previous_secret_expire_time),
        )
        .add("updated", output::time(&w.update_time))
        .add("etag", w.etag.clone())
        .print();
}

fn deliveries(ds: &[pb::WebhookDelivery]) {
    let mut t = Table::new(&[
        "NAME", "TYPE", "EVENTS", "STATE", "ATTEMPTS", "STATUS", "ERROR",
    ]);
    for d in ds {
        t.row(vec![
            d.name.clone(),
            d.event_type.clone(),
            if d.first_sequence == d.last_sequence {
                d.first_sequence.to_string()
            } else {
                format!("{}..{}", d.first_sequence, d.last_sequence)
            },
            state_name(d.state),
            d.attempts.to_string(),
            if d.last_status_code == 0 {
                String::new()
            } else {
                d.last_status_code.to_string()
            },
            d.last_error.clone(),
        ]);
    }
    t.print();
}

fn delivery(d: &pb::WebhookDelivery) {
    Fields::new()
        .add("name", d.name.clone())
        .add("type", d.event_type.clone())
        .add(
            "events",
            format!("{}..{}", d.first_sequence, d.last_sequence),
        )
        .add("state", state_name(d.state))
        .add("attempts", d.attempts.to_string())
        .add("status", d.last_status_code.to_string())
        .add("error", d.last_error.clone())
        .add("created", output::time(&d.create_time))
        .add("last attempt", output::time(&d.last_attempt_time))
        .add("next attempt", output::time(&d.next_attempt_time))
        .add("delivered", output::time(&d.deliver_time))
        .print();
}
