//! Email a use case sends: the templates, and the outbox a use case queues them in (written in
//! the transaction of the change that causes it, delivered by the server after commit).

use fluxgate_domain::EmailId;
use fluxgate_store::outbox::{self, NewEmail};
use fluxgate_store::users::User;
use fluxgate_store::{DbConnection, StoreResult};

/// The messages FluxGate sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Template {
    /// A self-service reset link.
    PasswordReset,
    /// A registration link for a user created without a password.
    Registration,
    /// A welcome for a user created with a password.
    Welcome,
    /// A notice that a Team Admin reset the password (no secret in it).
    PasswordResetByAdmin,
    /// A change request that the recipient may review was submitted (or edited).
    ReviewRequested,
    /// The recipient's change request was approved or rejected.
    RequestDecided,
    /// Once a day: the change requests the recipient may review (for those who chose a digest).
    ReviewDigest,
}

impl Template {
    pub const ALL: [Template; 7] = [
        Template::PasswordReset,
        Template::Registration,
        Template::Welcome,
        Template::PasswordResetByAdmin,
        Template::ReviewRequested,
        Template::RequestDecided,
        Template::ReviewDigest,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Template::PasswordReset => "password_reset",
            Template::Registration => "registration",
            Template::Welcome => "welcome",
            Template::PasswordResetByAdmin => "password_reset_by_admin",
            Template::ReviewRequested => "review_requested",
            Template::RequestDecided => "request_decided",
            Template::ReviewDigest => "review_digest",
        }
    }

    /// The variables the template may use, beyond `display_name`, `username` and `public_url`.
    pub fn extra_vars(self) -> &'static [&'static str] {
        match self {
            Template::PasswordReset | Template::Registration => &["link", "expire_time"],
            Template::Welcome => &[],
            Template::PasswordResetByAdmin => &["admin"],
            Template::ReviewRequested => &[
                "submitter",
                "title",
                "feature",
                "environment",
                "revision",
                "link",
            ],
            Template::RequestDecided => {
                &["verdict", "reviewer", "title", "feature", "comment", "link"]
            }
            Template::ReviewDigest => &["count", "requests", "link"],
        }
    }

    pub fn default_text(self) -> &'static str {
        match self {
            Template::PasswordReset => {
                "Subject: Reset your FluxGate password\n\
                 \n\
                 Hello {{display_name}},\n\
                 \n\
                 Someone asked to reset the password of the FluxGate account {{username}}.\n\
                 To choose a new password, open this link before {{expire_time}}:\n\
                 \n\
                 {{link}}\n\
                 \n\
                 The link works once. If you did not ask for it, ignore this message: your\n\
                 password stays as it is.\n"
            }
            Template::Registration => {
                "Subject: Your FluxGate account\n\
                 \n\
                 Hello {{display_name}},\n\
                 \n\
                 An account named {{username}} has been created for you. To choose your\n\
                 password, open this link before {{expire_time}}:\n\
                 \n\
                 {{link}}\n\
                 \n\
                 The link works once.\n"
            }
            Template::Welcome => {
                "Subject: Welcome to FluxGate\n\
                 \n\
                 Hello {{display_name}},\n\
                 \n\
                 An account named {{username}} has been created for you at {{public_url}}.\n\
                 Your administrator will tell you how to log in for the first time.\n"
            }
            Template::PasswordResetByAdmin => {
                "Subject: Your FluxGate password was reset\n\
                 \n\
                 Hello {{display_name}},\n\
                 \n\
                 {{admin}} has reset the password of your FluxGate account {{username}}, and\n\
                 every session of yours has been logged out. Your administrator will give you a\n\
                 temporary password, which you must change when you next log in.\n\
                 \n\
                 If you did not expect this, tell your administrator.\n"
            }
            Template::ReviewRequested => {
                "Subject: Review requested: {{title}}\n\
                 \n\
                 Hello {{display_name}},\n\
                 \n\
                 {{submitter}} asks for a review of a change to {{feature}} in {{environment}}\n\
                 (revision {{revision}}):\n\
                 \n\
                 {{title}}\n\
                 \n\
                 Review it here:\n\
                 \n\
                 {{link}}\n\
                 \n\
                 You get this because you may approve it.\n"
            }
            Template::RequestDecided => {
                "Subject: Your change request was {{verdict}}: {{title}}\n\
                 \n\
                 Hello {{display_name}},\n\
                 \n\
                 {{reviewer}} {{verdict}} your change to {{feature}}:\n\
                 \n\
                 {{title}}\n\
                 \n\
                 {{comment}}\n\
                 \n\
                 {{link}}\n"
            }
            Template::ReviewDigest => {
                "Subject: {{count}} change request(s) await your review\n\
                 \n\
                 Hello {{display_name}},\n\
                 \n\
                 These FluxGate change requests are waiting for a review you may give:\n\
                 \n\
                 {{requests}}\n\
                 \n\
                 All of them: {{link}}\n\
                 \n\
                 This digest comes once a day; change that under My account.\n"
            }
        }
    }
}

/// Where a use case queues email. The server's mailer renders the template (built in or
/// overridden) and writes the message to the outbox in the caller's transaction.
pub trait Outbox: Send + Sync + std::fmt::Debug {
    /// The link a user opens to use `token` on the console page `page` (`register`,
    /// `reset-password`).
    fn link(&self, page: &str, token: &str) -> String;

    /// The console's address of `path` (`changeRequests/{id}`).
    fn page(&self, path: &str) -> String;

    /// Whether messages are delivered (an SMTP server is configured) or held.
    fn delivers(&self) -> bool;

    /// Tells the outbox that messages became due (a requeue), so delivery starts after commit.
    fn queued(&self);

    /// The message `template` makes for `user` with its own `vars`, ready to queue.
    fn render(&self, template: Template, user: &User, vars: &[(&str, &str)]) -> NewEmail;

    /// Renders `template` for `user` with its own `vars` and queues it.
    fn queue(
        &self,
        conn: &mut DbConnection,
        template: Template,
        user: &User,
        vars: &[(&str, &str)],
        now: i64,
    ) -> StoreResult<EmailId> {
        let message = self.render(template, user, vars);
        self.queued();
        outbox::enqueue(conn, message, now)
    }

    /// Queues rendered messages (a batch's) with a statement per few hundred.
    fn queue_many(
        &self,
        conn: &mut DbConnection,
        messages: Vec<NewEmail>,
        now: i64,
    ) -> StoreResult<()> {
        if !messages.is_empty() {
            self.queued();
        }
        outbox::enqueue_many(conn, messages, now)
    }
}
