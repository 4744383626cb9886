//! WebhookService: the adapter over [`fluxgate_core::webhooks`] (subscriptions, their
//! deliveries, redelivery and rewinding), for Team Admins.

use std::sync::Arc;

use fluxgate_core::webhooks::{
    self, Create, Delete, Delivery, DeliveryState, Format, Redeliver, Rewind, RotateSecret, Update,
    Webhook,
};
use fluxgate_domain::{DeliveryId, Violations, WebhookId};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::webhook_service_server::WebhookService;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use super::reply;
use crate::auth::RequestCtx;
use crate::convert::{
    PageToken, duration_secs, etag, field, mask_paths, page_size, parse_ids, timestamp,
};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Debug, Clone)]
pub struct WebhookSvc {
    pub state: Arc<AppState>,
}

/// The overlap of a rotation when none is given.
const DEFAULT_OVERLAP_SECS: u64 = 86_400;

fn format_pb(f: Format) -> pb::WebhookFormat {
    match f {
        Format::Events => pb::WebhookFormat::Events,
        Format::AuditStream => pb::WebhookFormat::AuditStream,
    }
}

fn webhook_pb(w: &Webhook, (pending, failed): (i64, i64)) -> pb::Webhook {
    pb::Webhook {
        name: webhooks::name(w.id),
        display_name: w.display_name.clone(),
        url: w.url.clone(),
        format: format_pb(w.format) as i32,
        event_types: if w.format == Format::AuditStream {
            Vec::new()
        } else {
            w.event_types.clone()
        },
        enabled: w.enabled,
        cursor_sequence: w.cursor_seq,
        pending_deliveries: pending,
        failed_deliveries: failed,
        previous_secret_expire_time: w.previous_secret.as_ref().map(|p| timestamp(p.1)),
        create_time: Some(timestamp(w.created_at)),
        update_time: Some(timestamp(w.updated_at)),
        etag: etag(w.id, w.version),
    }
}

fn state_pb(s: DeliveryState) -> pb::WebhookDeliveryState {
    match s {
        DeliveryState::Pending => pb::WebhookDeliveryState::Pending,
        DeliveryState::Delivered => pb::WebhookDeliveryState::Delivered,
        DeliveryState::Failed => pb::WebhookDeliveryState::Failed,
    }
}

fn delivery_pb(d: &Delivery, with_payload: bool) -> pb::WebhookDelivery {
    pb::WebhookDelivery {
        name: webhooks::delivery_name(d.webhook_id, d.id),
        event_type: d.event_type.clone(),
        first_sequence: d.first_seq,
        last_sequence: d.last_seq,
        state: state_pb(d.state) as i32,
        attempts: d.attempts,
        last_status_code: d.last_status.unwrap_or(0),
        last_error: d.last_error.clone().unwrap_or_default(),
        create_time: Some(timestamp(d.created_at)),
        last_attempt_time: d.last_attempt_at.map(timestamp),
        next_attempt_time: d
            .next_attempt_at
            .filter(|_| d.state == DeliveryState::Pending)
            .map(timestamp),
        deliver_time: d.delivered_at.map(timestamp),
        payload: if with_payload {
            d.payload.clone()
        } else {
            String::new()
        },
    }
}

fn webhook_id(field: &str, name: &str) -> ApiResult<WebhookId> {
    Ok(WebhookId(parse_ids(field, name, &["webhooks"])?[0]))
}

fn delivery_id(field: &str, name: &str) -> ApiResult<(WebhookId, DeliveryId)> {
    let ids = parse_ids(field, name, &["webhooks", "deliveries"])?;
    Ok((WebhookId(ids[0]), DeliveryId(ids[1])))
}

fn create_cmd(req: pb::CreateWebhookRequest) -> ApiResult<Create> {
    let pb::CreateWebhookRequest {
        webhook,
        start_after_sequence,
    } = req;
    let w = webhook.ok_or_else(|| ApiError::invalid("webhook", "is required"))?;
    let format = match pb::WebhookFormat::try_from(w.format) {
        Ok(pb::WebhookFormat::Unspecified | pb::WebhookFormat::Events) => Format::Events,
        Ok(pb::WebhookFormat::AuditStream) => Format::AuditStream,
        Err(_) => return Err(ApiError::invalid("webhook.format", "is not a known format")),
    };
    Ok(Create {
        display_name: w.display_name,
        url: w.url,
        format,
        event_types: w.event_types,
        enabled: w.enabled,
        start_after: start_after_sequence,
    })
}

const UPDATABLE: [&str; 4] = ["display_name", "url", "event_types", "enabled"];

fn update_cmd(req: pb::UpdateWebhookRequest) -> ApiResult<Update> {
    let pb::UpdateWebhookRequest {
        webhook,
        update_mask,
    } = req;
    let w = webhook.ok_or_else(|| ApiError::invalid("webhook", "is required"))?;
    let paths = mask_paths(update_mask.as_ref(), &UPDATABLE)?;
    let has = |f: &str| paths.iter().any(|p| p == f);
    Ok(Update {
        id: Some(webhook_id("webhook.name", &w.name)?),
        etag: w.etag,
        display_name: has("display_name").then_some(w.display_name),
        url: has("url").then_some(w.url),
        event_types: has("event_types").then_some(w.event_types),
        enabled: has("enabled").then_some(w.enabled),
    })
}

fn rotate_cmd(req: pb::RotateWebhookSecretRequest) -> ApiResult<RotateSecret> {
    let pb::RotateWebhookSecretRequest { name, overlap } = req;
    let mut v = Violations::new();
    let id = field(&mut v, webhook_id("name", &name));
    let overlap_secs = match &overlap {
        Some(d) => v.check("overlap", duration_secs(d)),
        None => Some(DEFAULT_OVERLAP_SECS),
    };
    v.finish()?;
    match (id, overlap_secs) {
        (Some(id), Some(overlap_secs)) => Ok(RotateSecret { id, overlap_secs }),
        _ => Err(ApiError::invalid("name", "is required")),
    }
}

/// The filters a ListWebhookDeliveries page token is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ListFilter {
    webhook: String,
    states: Vec<String>,
}

fn list_filter(
    req: &pb::ListWebhookDeliveriesRequest,
) -> ApiResult<(WebhookId, Vec<DeliveryState>, i64, Option<DeliveryId>)> {
    let mut v = Violations::new();
    let id = field(&mut v, webhook_id("parent", &req.parent));
    let mut states = Vec::new();
    for (i, s) in req.states.iter().enumerate() {
        match pb::WebhookDeliveryState::try_from(*s) {
            Ok(pb::WebhookDeliveryState::Pending) => states.push(DeliveryState::Pending),
            Ok(pb::WebhookDeliveryState::Delivered) => states.push(DeliveryState::Delivered),
            Ok(pb::WebhookDeliveryState::Failed) => states.push(DeliveryState::Failed),
            Ok(pb::WebhookDeliveryState::Unspecified) => v.add(
                format!("states[{i}]"),
                "must not be WEBHOOK_DELIVERY_STATE_UNSPECIFIED",
            ),
            Err(_) => v.add(format!("states[{i}]"), "is not a known delivery state"),
        }
    }
    states.dedup();
    let limit = field(&mut v, page_size(req.page_size));
    v.finish()?;
    let (Some(id), Some(limit)) = (id, limit) else {
        return Err(ApiError::invalid("parent", "is required"));
    };
    let filter = ListFilter {
        webhook: id.to_string(),
        states: states.iter().map(|s| s.as_str().to_owned()).collect(),
    };
    let before = PageToken::decode(&req.page_token, &filter)?
        .map(|s| s.parse::<DeliveryId>())
        .transpose()
        .map_err(|_| ApiError::invalid("page_token", "is not a valid page token"))?;
    Ok((id, states, limit, before))
}

impl WebhookSvc {
    /// A subscription with its backlog, read for `p`.
    async fn view(
        &self,
        ctx: &RequestCtx,
        p: &crate::directory::Principal,
        w: Webhook,
    ) -> ApiResult<pb::Webhook> {
        let id = w.id;
        let backlog = self
            .state
            .query(ctx, p, move |cx, c| webhooks::backlog(cx, c, id))
            .await?;
        Ok(webhook_pb(&w, backlog))
    }
}

#[tonic::async_trait]
impl WebhookService for WebhookSvc {
    async fn create_webhook(
        &self,
        request: Request<pb::CreateWebhookRequest>,
    ) -> Result<Response<pb::CreateWebhookResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        self.state.judge(&ctx, &p, webhooks::may_manage)?;
        let done = self.state.execute(&ctx, Some(&p), create_cmd(req)?).await?;
        let secret = done.value.secret.clone();
        let revision = done.revision;
        let webhook = Some(webhook_pb(&done.value, (0, 0)));
        Ok(reply(
            pb::CreateWebhookResponse { webhook, secret },
            &ctx,
            revision,
        ))
    }

    async fn get_webhook(
        &self,
        request: Request<pb::GetWebhookRequest>,
    ) -> Result<Response<pb::GetWebhookResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        self.state.judge(&ctx, &p, webhooks::may_manage)?;
        let id = webhook_id("name", &req.name)?;
        let w = self
            .state
            .query(&ctx, &p, move |cx, c| webhooks::get(cx, c, id))
            .await?;
        let webhook = Some(self.view(&ctx, &p, w).await?);
        Ok(reply(pb::GetWebhookResponse { webhook }, &ctx, None))
    }

    async fn list_webhooks(
        &self,
        request: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::ListWebhooksResponse>, Status> {
        let (ctx, p, pb::ListWebhooksRequest {}) = authed!(self, request);
        self.state.judge(&ctx, &p, webhooks::may_manage)?;
        let all = self
            .state
            .query(&ctx, &p, |cx, c| {
                let all = webhooks::list(cx, c)?;
                all.into_iter()
                    .map(|w| Ok((webhooks::backlog(cx, c, w.id)?, w)))
                    .collect::<fluxgate_core::Result<Vec<_>>>()
            })
            .await?;
        let webhooks = all.iter().map(|(b, w)| webhook_pb(w, *b)).collect();
        Ok(reply(pb::ListWebhooksResponse { webhooks }, &ctx, None))
    }

    async fn update_webhook(
        &self,
        request: Request<pb::UpdateWebhookRequest>,
    ) -> Result<Response<pb::UpdateWebhookResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        self.state.judge(&ctx, &p, webhooks::may_manage)?;
        let done = self.state.execute(&ctx, Some(&p), update_cmd(req)?).await?;
        let revision = done.revision;
        let webhook = Some(self.view(&ctx, &p, done.value).await?);
        Ok(reply(pb::UpdateWebhookResponse { webhook }, &ctx, revision))
    }

    async fn delete_webhook(
        &self,
        request: Request<pb::DeleteWebhookRequest>,
    ) -> Result<Response<pb::DeleteWebhookResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        self.state.judge(&ctx, &p, webhooks::may_manage)?;
        let cmd = Delete {
            id: webhook_id("name", &req.name)?,
            etag: req.etag,
        };
        let done = self.state.execute(&ctx, Some(&p), cmd).await?;
        Ok(done.reply(&ctx, |()| pb::DeleteWebhookResponse {}))
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<pb::RotateWebhookSecretRequest>,
    ) -> Result<Response<pb::RotateWebhookSecretResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        self.state.judge(&ctx, &p, webhooks::may_manage)?;
        let done = self.state.execute(&ctx, Some(&p), rotate_cmd(req)?).await?;
        let secret = done.value.secret.clone();
        let revision = done.revision;
        let webhook = Some(self.view(&ctx, &p, done.value).await?);
        Ok(reply(
            pb::RotateWebhookSecretResponse { webhook, secret },
            &ctx,
            revision,
        ))
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        self.state.judge(&ctx, &p, webhooks::may_manage)?;
        let (id, states, limit, before) = list_filter(&req)?;
        let filter = ListFilter {
            webhook: id.to_string(),
            states: states.iter().map(|s| s.as_str().to_owned()).collect(),
        };
        let mut page = self
            .state
            .query(&ctx, &p, move |cx, c| {
                webhooks::deliveries(cx, c, id, &states, before, limit + 1)
            })
            .await?;
        let more = page.len() as i64 > limit;
        page.truncate(limit as usize);
        let next_page_token = match (more, page.last()) {
            (true, Some(last)) => PageToken {
                after: last.id.to_string(),
                filter,
            }
            .encode(),
            _ => String::new(),
        };
        let deliveries = page.iter().map(|d| delivery_pb(d, false)).collect();
        let msg = pb::ListWebhookDeliveriesResponse {
            deliveries,
            next_page_token,
        };
        Ok(reply(msg, &ctx, None))
    }

    async fn get_webhook_delivery(
        &self,
        request: Request<pb::GetWebhookDeliveryRequest>,
    ) -> Result<Response<pb::GetWebhookDeliveryResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        self.state.judge(&ctx, &p, webhooks::may_manage)?;
        let (w, d) = delivery_id("name", &req.name)?;
        let d = self
            .state
            .query(&ctx, &p, move |cx, c| webhooks::delivery(cx, c, w, d))
            .await?;
        let delivery = Some(delivery_pb(&d, true));
        Ok(reply(
            pb::GetWebhookDeliveryResponse { delivery },
            &ctx,
            None,
        ))
    }

    async fn redeliver_webhook_delivery(
        &self,
        request: Request<pb::RedeliverWebhookDeliveryRequest>,
    ) -> Result<Response<pb::RedeliverWebhookDeliveryResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        self.state.judge(&ctx, &p, webhooks::may_manage)?;
        let (webhook, delivery) = delivery_id("name", &req.name)?;
        let cmd = Redeliver { webhook, delivery };
        let done = self.state.execute(&ctx, Some(&p), cmd).await?;
        Ok(done.reply(&ctx, |d| pb::RedeliverWebhookDeliveryResponse {
            delivery: Some(delivery_pb(&d, false)),
        }))
    }

    async fn rewind_webhook(
        &self,
        request: Request<pb::RewindWebhookRequest>,
    ) -> Result<Response<pb::RewindWebhookResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        self.state.judge(&ctx, &p, webhooks::may_manage)?;
        let cmd = Rewind {
            id: webhook_id("name", &req.name)?,
            after_seq: req.after_sequence,
        };
        let done = self.state.execute(&ctx, Some(&p), cmd).await?;
        let revision = done.revision;
        let webhook = Some(self.view(&ctx, &p, done.value).await?);
        Ok(reply(pb::RewindWebhookResponse { webhook }, &ctx, revision))
    }

    async fn list_webhook_event_types(
        &self,
        request: Request<pb::ListWebhookEventTypesRequest>,
    ) -> Result<Response<pb::ListWebhookEventTypesResponse>, Status> {
        let (ctx, p, pb::ListWebhookEventTypesRequest {}) = authed!(self, request);
        self.state.judge(&ctx, &p, webhooks::may_manage)?;
        let event_types = webhooks::event_types()
            .into_iter()
            .map(String::from)
            .collect();
        Ok(reply(
            pb::ListWebhookEventTypesResponse { event_types },
            &ctx,
            None,
        ))
    }
}
