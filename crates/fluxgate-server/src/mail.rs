//! Outgoing email: templates, the outbox and its delivery worker.
//!
//! A message is rendered and written to the outbox inside the transaction of the change that
//! causes it, so it is never lost and never sent for a change that rolled back. A background
//! worker on every replica claims due messages (under the store's write lock, so no two replicas
//! send the same one), hands them to the SMTP server, and records the outcome: sent (the body is
//! then discarded, since it may hold a single-use link), due again after a back-off, or failed.
//! A failure never reaches the RPC that queued the message. Without SMTP, messages are `held`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fluxgate_store::outbox::{self, EmailState, NewEmail};
use fluxgate_store::users;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::Notify;

use crate::config::Config;
use crate::db::Db;
use crate::error::ApiResult;

pub use fluxgate_core::mail::Template;

/// A template split into its subject and body.
#[derive(Debug, Clone)]
struct Text {
    subject: String,
    body: String,
}

fn parse_template(t: Template, text: &str) -> anyhow::Result<Text> {
    let text = text.replace("\r\n", "\n");
    let (first, body) = text
        .split_once("\n\n")
        .with_context(|| format!("{}: a Subject: line, a blank line, the body", t.name()))?;
    let subject = first
        .strip_prefix("Subject:")
        .with_context(|| format!("{}: the first line must start with Subject:", t.name()))?
        .trim()
        .to_owned();
    if subject.is_empty() || subject.contains('\n') {
        anyhow::bail!("{}: the subject must be one non-empty line", t.name());
    }
    let allowed: Vec<&str> = ["display_name", "username", "public_url"]
        .into_iter()
        .chain(t.extra_vars().iter().copied())
        .collect();
    for part in [subject.as_str(), body] {
        let mut rest = part;
        while let Some(i) = rest.find("{{") {
            let after = &rest[i + 2..];
            let end = after
                .find("}}")
                .with_context(|| format!("{}: an unclosed {{{{", t.name()))?;
            let var = after[..end].trim();
            if !allowed.contains(&var) {
                anyhow::bail!(
                    "{}: unknown variable {{{{{var}}}}}; it may use {}",
                    t.name(),
                    allowed.join(", ")
                );
            }
            rest = &after[end + 2..];
        }
    }
    Ok(Text {
        subject,
        body: body.to_owned(),
    })
}

fn render(text: &str, vars: &[(&str, &str)]) -> String {
    let mut out = text.to_owned();
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
        out = out.replace(&format!("{{{{ {k} }}}}"), v);
    }
    out
}

/// The built-in templates with the operator's overrides laid over them.
#[derive(Debug, Clone)]
struct Templates(HashMap<Template, Text>);

impl Templates {
    fn load(dir: Option<&Path>) -> anyhow::Result<Templates> {
        let mut map = HashMap::new();
        for t in Template::ALL {
            let custom = match dir {
                Some(d) => {
                    let path = d.join(format!("{}.txt", t.name()));
                    match std::fs::read_to_string(&path) {
                        Ok(s) => Some(s),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                        Err(e) => {
                            return Err(e).with_context(|| format!("reading {}", path.display()));
                        }
                    }
                }
                None => None,
            };
            let text = parse_template(t, custom.as_deref().unwrap_or(t.default_text()))
                .context("email template")?;
            map.insert(t, text);
        }
        Ok(Templates(map))
    }
}

/// Renders, queues and delivers email.
pub struct Mailer {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
    templates: Templates,
    public_url: String,
    max_attempts: u32,
    retry_initial: Duration,
    timeout: Duration,
    wake: Notify,
    /// Messages were queued since the worker was last woken.
    queued: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("smtp", &self.transport.is_some())
            .field("from", &self.from.to_string())
            .finish()
    }
}

impl Mailer {
    pub fn new(config: &Config) -> anyhow::Result<Mailer> {
        let e = &config.email;
        let from: Mailbox = e
            .from
            .parse()
            .with_context(|| format!("email.from {:?} is not an address", e.from))?;
        let timeout = Duration::from_secs(e.timeout_secs);
        let transport = match &e.smtp_url {
            Some(url) => Some(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .context("email.smtp_url is not a valid SMTP URL")?
                    .timeout(Some(timeout))
                    .build(),
            ),
            None => None,
        };
        Ok(Mailer {
            transport,
            from,
            templates: Templates::load(e.templates_dir.as_deref())?,
            public_url: config.public_url.trim_end_matches('/').to_owned(),
            max_attempts: e.max_attempts,
            retry_initial: Duration::from_millis(e.retry_initial_ms.max(10)),
            timeout,
            wake: Notify::new(),
            queued: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether messages are delivered (an SMTP server is configured) or held.
    pub fn delivers(&self) -> bool {
        self.transport.is_some()
    }

    /// The link a user opens to use `token` on the page at `path` (`register`, `reset-password`).
    pub fn link(&self, path: &str, token: &str) -> String {
        format!("{}/{path}?token={token}", self.public_url)
    }

    /// The message `template` makes for `user`; `vars` are the template's own variables.
    pub fn render(
        &self,
        template: Template,
        user: &users::User,
        vars: &[(&str, &str)],
    ) -> NewEmail {
        let mut all: Vec<(&str, &str)> = vec![
            ("display_name", &user.display_name),
            ("username", &user.username),
            ("public_url", &self.public_url),
        ];
        all.extend_from_slice(vars);
        let text = &self.templates.0[&template];
        NewEmail {
            template: template.name().to_owned(),
            recipient: user.email.clone(),
            user_id: Some(user.id),
            subject: render(&text.subject, &all),
            body: render(&text.body, &all),
            state: if self.delivers() {
                EmailState::Pending
            } else {
                EmailState::Held
            },
        }
    }

    /// Tells the worker that messages were queued (call after the transaction commits).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Wakes the worker if messages were queued since it was last woken (after a commit).
    pub fn wake_if_queued(&self) {
        if self.queued.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.wake();
        }
    }

    /// The wait before attempt `attempts + 1`: the initial delay, doubled per failure, at most
    /// an hour.
    fn backoff(&self, attempts: i32) -> Duration {
        let factor = 1u32 << attempts.clamp(1, 20).saturating_sub(1);
        self.retry_initial
            .saturating_mul(factor)
            .min(Duration::from_secs(3600))
    }

    /// Delivers the messages that are due. Returns how many were sent.
    pub async fn deliver_due(&self, db: &Db) -> ApiResult<usize> {
        let Some(transport) = &self.transport else {
            return Ok(0);
        };
        // A replica that dies mid-send leaves its claims due again after this lease.
        let lease = (self.timeout * 2).as_micros() as i64;
        let claimed = db
            .write(move |tx| Ok(outbox::claim_due(tx.conn, tx.now, lease, 20)?))
            .await?
            .value;
        let mut sent = 0;
        for m in claimed {
            let outcome = match self.message(&m) {
                Ok(msg) => transport.send(msg).await.map(|_| ()).map_err(|e| {
                    let permanent = e.is_permanent();
                    (e.to_string(), permanent)
                }),
                Err(e) => Err((e, true)),
            };
            let id = m.id;
            match outcome {
                Ok(()) => {
                    sent += 1;
                    tracing::info!(email = %id, template = %m.template, "email sent");
                    db.write(move |tx| Ok(outbox::mark_sent(tx.conn, id, tx.now)?))
                        .await?;
                }
                Err((error, permanent)) => {
                    let give_up = permanent || m.attempts as u32 >= self.max_attempts;
                    let wait = self.backoff(m.attempts);
                    tracing::warn!(
                        email = %id, attempts = m.attempts, give_up, %error,
                        "email delivery failed"
                    );
                    db.write(move |tx| {
                        let retry_at = (!give_up).then(|| tx.now + wait.as_micros() as i64);
                        Ok(outbox::mark_attempt_failed(tx.conn, id, &error, retry_at)?)
                    })
                    .await?;
                }
            }
        }
        Ok(sent)
    }

    fn message(&self, m: &outbox::Email) -> Result<Message, String> {
        let to: Mailbox = m
            .recipient
            .parse()
            .map_err(|e| format!("recipient {:?}: {e}", m.recipient))?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(m.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(m.body.clone())
            .map_err(|e| format!("building the message: {e}"))
    }

    /// Delivers due messages until `stopping` turns true: at once when woken, else every
    /// `every` (to pick up retries and other replicas' messages).
    pub async fn run(
        self: Arc<Self>,
        db: Db,
        every: Duration,
        mut stopping: tokio::sync::watch::Receiver<bool>,
    ) {
        if !self.delivers() {
            return;
        }
        loop {
            if let Err(e) = self.deliver_due(&db).await {
                tracing::warn!(error = %e, "email delivery pass failed");
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(every) => {}
                _ = stopping.changed() => return,
            }
            if *stopping.borrow() {
                return;
            }
        }
    }
}

impl fluxgate_core::mail::Outbox for Mailer {
    fn link(&self, page: &str, token: &str) -> String {
        Mailer::link(self, page, token)
    }

    fn page(&self, path: &str) -> String {
        format!("{}/{path}", self.public_url)
    }

    fn delivers(&self) -> bool {
        Mailer::delivers(self)
    }

    fn queued(&self) {
        self.queued.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn render(&self, template: Template, user: &users::User, vars: &[(&str, &str)]) -> NewEmail {
        Mailer::render(self, template, user, vars)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_templates_parse_and_render() {
        let t = Templates::load(None).unwrap();
        let text = &t.0[&Template::PasswordReset];
        assert_eq!(text.subject, "Reset your FluxGate password");
        let body = render(
            &text.body,
            &[
                ("display_name", "Ada"),
                ("username", "ada"),
                ("link", "http://x/reset-password?token=abc"),
                ("expire_time", "2026-01-01T00:00:00Z"),
            ],
        );
        assert!(body.contains("Hello Ada,"), "{body}");
        assert!(body.contains("http://x/reset-password?token=abc"), "{body}");
        assert!(!body.contains("{{"), "{body}");
    }

    #[test]
    fn overrides_are_checked() {
        assert!(parse_template(Template::Welcome, "Subject: Hi {{username}}\n\nBody").is_ok());
        let e = parse_template(Template::Welcome, "Subject: Hi\n\n{{link}}").unwrap_err();
        assert!(e.to_string().contains("unknown variable"), "{e}");
        assert!(parse_template(Template::Welcome, "Hi\n\nBody").is_err());
        assert!(parse_template(Template::Welcome, "Subject: Hi\nBody").is_err());
        assert!(parse_template(Template::Welcome, "Subject: \n\nBody").is_err());

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("welcome.txt"),
            "Subject: Welcome aboard, {{ display_name }}\n\nSee {{public_url}}\n",
        )
        .unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        let w = &t.0[&Template::Welcome];
        assert_eq!(
            render(&w.subject, &[("display_name", "Ada")]),
            "Welcome aboard, Ada"
        );
        std::fs::write(
            dir.path().join("registration.txt"),
            "Subject: x\n\n{{oops}}",
        )
        .unwrap();
        assert!(Templates::load(Some(dir.path())).is_err());
    }
}
