//! EmailService: the outbox, for Team Admins.

use std::sync::Arc;

use fluxgate_authz::{Action, Target};
use fluxgate_domain::{EmailId, Violations};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::email_service_server::EmailService;
use fluxgate_store::outbox::{self, EmailState};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use super::reply;
use crate::auth::RequestCtx;
use crate::convert::{PageToken, field, page_size, parse_ids, timestamp, user_name};
use crate::directory::Principal;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Debug, Clone)]
pub struct EmailSvc {
    pub state: Arc<AppState>,
}

fn state_to_proto(s: EmailState) -> pb::EmailState {
    match s {
        EmailState::Pending => pb::EmailState::Pending,
        EmailState::Sent => pb::EmailState::Sent,
        EmailState::Failed => pb::EmailState::Failed,
        EmailState::Held => pb::EmailState::Held,
    }
}

fn state_from_proto(v: i32) -> Result<EmailState, &'static str> {
    match pb::EmailState::try_from(v) {
        Ok(pb::EmailState::Pending) => Ok(EmailState::Pending),
        Ok(pb::EmailState::Sent) => Ok(EmailState::Sent),
        Ok(pb::EmailState::Failed) => Ok(EmailState::Failed),
        Ok(pb::EmailState::Held) => Ok(EmailState::Held),
        Ok(pb::EmailState::Unspecified) => Err("must not be EMAIL_STATE_UNSPECIFIED"),
        Err(_) => Err("is not a known email state"),
    }
}

fn email_to_proto(e: &outbox::Email) -> pb::Email {
    pb::Email {
        name: format!("emails/{}", e.id),
        template: e.template.clone(),
        recipient: e.recipient.clone(),
        user: e.user_id.map(user_name).unwrap_or_default(),
        subject: e.subject.clone(),
        body: e.body.clone(),
        state: state_to_proto(e.state) as i32,
        attempts: e.attempts,
        last_error: e.last_error.clone().unwrap_or_default(),
        create_time: Some(timestamp(e.created_at)),
        send_time: e.sent_at.map(timestamp),
        next_attempt_time: e
            .next_attempt_at
            .filter(|_| e.state == EmailState::Pending)
            .map(timestamp),
    }
}

fn parse_email_name(field: &str, name: &str) -> ApiResult<EmailId> {
    let ids = parse_ids(field, name, &["emails"])?;
    Ok(EmailId(ids[0]))
}

/// The filters a ListEmails page token is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ListFilter {
    states: Vec<String>,
    recipient: Option<String>,
}

impl EmailSvc {
    async fn list(
        &self,
        ctx: RequestCtx,
        p: Principal,
        req: pb::ListEmailsRequest,
    ) -> ApiResult<Response<pb::ListEmailsResponse>> {
        let st = &self.state;
        st.authorize(&p, Action::ManageEmail, Target::Org)?;
        let mut v = Violations::new();
        let mut states = Vec::new();
        for (i, s) in req.states.iter().enumerate() {
            match state_from_proto(*s) {
                Ok(s) if !states.contains(&s) => states.push(s),
                Ok(_) => {}
                Err(e) => v.add(format!("states[{i}]"), e),
            }
        }
        let recipient = req.recipient.trim().to_lowercase();
        if recipient.len() > 254 || recipient.chars().any(char::is_control) {
            v.add(
                "recipient",
                "must be an email address of at most 254 characters",
            );
        }
        let limit = field(&mut v, page_size(req.page_size));
        v.finish()?;
        let limit = limit.unwrap_or(0);
        let filter = ListFilter {
            states: states.iter().map(|s| s.as_str().to_owned()).collect(),
            recipient: (!recipient.is_empty()).then_some(recipient),
        };
        let before = match PageToken::decode(&req.page_token, &filter)? {
            Some(id) => Some(
                id.parse::<EmailId>()
                    .map_err(|_| ApiError::invalid("page_token", "is not a valid page token"))?,
            ),
            None => None,
        };
        let sf = outbox::Filter {
            states,
            recipient: filter.recipient.clone(),
        };
        let mut page = st
            .db
            .read(move |conn| Ok(outbox::list(conn, &sf, before, limit + 1)?))
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
        Ok(reply(
            pb::ListEmailsResponse {
                emails: page.iter().map(email_to_proto).collect(),
                next_page_token,
            },
            &ctx,
            None,
        ))
    }

    async fn get(
        &self,
        ctx: RequestCtx,
        p: Principal,
        req: pb::GetEmailRequest,
    ) -> ApiResult<Response<pb::GetEmailResponse>> {
        let st = &self.state;
        st.authorize(&p, Action::ManageEmail, Target::Org)?;
        let id = parse_email_name("name", &req.name)?;
        let e = st
            .db
            .read(move |conn| Ok(outbox::find(conn, id)?))
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("emails/{id} not found")))?;
        Ok(reply(
            pb::GetEmailResponse {
                email: Some(email_to_proto(&e)),
            },
            &ctx,
            None,
        ))
    }

    async fn retry(
        &self,
        ctx: RequestCtx,
        p: Principal,
        req: pb::RetryEmailRequest,
    ) -> ApiResult<Response<pb::RetryEmailResponse>> {
        let st = &self.state;
        st.authorize(&p, Action::ManageEmail, Target::Org)?;
        let id = parse_email_name("name", &req.name)?;
        if !st.mailer.delivers() {
            return Err(ApiError::FailedPrecondition(
                "no SMTP server is configured (email.smtp_url): messages can only be held".into(),
            ));
        }
        let ctx2 = ctx.clone();
        let committed = st
            .db
            .write(move |tx| {
                let e = outbox::find(tx.conn, id)?
                    .ok_or_else(|| ApiError::NotFound(format!("emails/{id} not found")))?;
                if !matches!(e.state, EmailState::Failed | EmailState::Held) {
                    return Err(ApiError::FailedPrecondition(format!(
                        "only failed or held messages can be retried; this one is {}",
                        e.state.as_str()
                    )));
                }
                outbox::requeue(tx.conn, id, tx.now)?;
                let mut ev = ctx2.event(
                    Some(&p),
                    "email.requeued",
                    "email",
                    Some(format!("emails/{id}")),
                );
                ev.detail = Some(format!("was {}", e.state.as_str()));
                fluxgate_store::audit::append(tx.conn, ev, tx.now)?;
                outbox::find(tx.conn, id)?
                    .ok_or_else(|| ApiError::Internal("email vanished".into()))
            })
            .await?;
        st.mailer.wake();
        Ok(reply(
            pb::RetryEmailResponse {
                email: Some(email_to_proto(&committed.value)),
            },
            &ctx,
            committed.revision,
        ))
    }
}

#[tonic::async_trait]
impl EmailService for EmailSvc {
    async fn list_emails(
        &self,
        request: Request<pb::ListEmailsRequest>,
    ) -> Result<Response<pb::ListEmailsResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        Ok(self.list(ctx, p, req).await?)
    }

    async fn get_email(
        &self,
        request: Request<pb::GetEmailRequest>,
    ) -> Result<Response<pb::GetEmailResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        Ok(self.get(ctx, p, req).await?)
    }

    async fn retry_email(
        &self,
        request: Request<pb::RetryEmailRequest>,
    ) -> Result<Response<pb::RetryEmailResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        Ok(self.retry(ctx, p, req).await?)
    }
}
