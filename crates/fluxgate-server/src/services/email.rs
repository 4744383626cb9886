//! EmailService: the outbox, for Team Admins.

use std::sync::Arc;

use fluxgate_core::emails::{self, Email, EmailState, Filter, Retry};
use fluxgate_domain::{EmailId, Violations};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::email_service_server::EmailService;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use super::reply;
use crate::auth::RequestCtx;
use crate::convert::{PageToken, field, page_size, parse_ids, timestamp, user_name};
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

fn email_to_proto(e: &Email) -> pb::Email {
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

/// A listing's filters (bound into its page tokens) and page size.
fn list_filter(states: &[i32], recipient: &str, size: i32) -> ApiResult<(ListFilter, Filter, i64)> {
    let mut v = Violations::new();
    let mut typed = Vec::new();
    for (i, s) in states.iter().enumerate() {
        match state_from_proto(*s) {
            Ok(s) if !typed.contains(&s) => typed.push(s),
            Ok(_) => {}
            Err(e) => v.add(format!("states[{i}]"), e),
        }
    }
    let recipient = recipient.trim().to_lowercase();
    if recipient.len() > 254 || recipient.chars().any(char::is_control) {
        v.add(
            "recipient",
            "must be an email address of at most 254 characters",
        );
    }
    let limit = field(&mut v, page_size(size));
    v.finish()?;
    let filter = ListFilter {
        states: typed.iter().map(|s| s.as_str().to_owned()).collect(),
        recipient: (!recipient.is_empty()).then_some(recipient),
    };
    let sf = Filter {
        states: typed,
        recipient: filter.recipient.clone(),
    };
    Ok((filter, sf, limit.unwrap_or(0)))
}

fn before(token: &str, filter: &ListFilter) -> ApiResult<Option<EmailId>> {
    PageToken::decode(token, filter)?
        .map(|id| id.parse::<EmailId>())
        .transpose()
        .map_err(|_| ApiError::invalid("page_token", "is not a valid page token"))
}

/// Cuts a page read with one extra row to `limit`, and the token of the next page.
fn next_token(page: &mut Vec<Email>, limit: i64, filter: ListFilter) -> String {
    let more = page.len() as i64 > limit;
    page.truncate(limit as usize);
    match (more, page.last()) {
        (true, Some(last)) => PageToken {
            after: last.id.to_string(),
            filter,
        }
        .encode(),
        _ => String::new(),
    }
}

#[tonic::async_trait]
impl EmailService for EmailSvc {
    async fn list_emails(
        &self,
        request: Request<pb::ListEmailsRequest>,
    ) -> Result<Response<pb::ListEmailsResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        self.state.judge(&ctx, &p, emails::may_manage)?;
        let pb::ListEmailsRequest {
            states,
            recipient,
            page_size,
            page_token,
        } = req;
        let (filter, sf, limit) = list_filter(&states, &recipient, page_size)?;
        let before = before(&page_token, &filter)?;
        let mut page = self
            .state
            .query(&ctx, &p, move |cx, conn| {
                emails::list(cx, conn, &sf, before, limit + 1)
            })
            .await?;
        let next_page_token = next_token(&mut page, limit, filter);
        let emails = page.iter().map(email_to_proto).collect();
        Ok(reply(
            pb::ListEmailsResponse {
                emails,
                next_page_token,
            },
            &ctx,
            None,
        ))
    }

    async fn get_email(
        &self,
        request: Request<pb::GetEmailRequest>,
    ) -> Result<Response<pb::GetEmailResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        self.state.judge(&ctx, &p, emails::may_manage)?;
        let pb::GetEmailRequest { name } = req;
        let id = parse_email_name("name", &name)?;
        let e = self
            .state
            .query(&ctx, &p, move |cx, conn| emails::get(cx, conn, id))
            .await?;
        Ok(reply(
            pb::GetEmailResponse {
                email: Some(email_to_proto(&e)),
            },
            &ctx,
            None,
        ))
    }

    async fn retry_email(
        &self,
        request: Request<pb::RetryEmailRequest>,
    ) -> Result<Response<pb::RetryEmailResponse>, Status> {
        let (ctx, p, req) = authed!(self, request);
        self.state.judge(&ctx, &p, emails::may_manage)?;
        let pb::RetryEmailRequest { name } = req;
        let cmd = Retry {
            id: parse_email_name("name", &name)?,
        };
        let done = self.state.execute(&ctx, Some(&p), cmd).await?;
        Ok(done.reply(&ctx, |e| pb::RetryEmailResponse {
            email: Some(email_to_proto(&e)),
        }))
    }
}
