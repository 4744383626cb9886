//! The state every service shares.

use std::sync::Arc;

use crate::config::Config;
use crate::db::Db;
use crate::directory::Directory;
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::passwords::Hasher;
use crate::tokens::TokenKeys;

#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    pub db: Db,
    pub directory: Arc<Directory>,
    pub hasher: Hasher,
    pub keys: TokenKeys,
    /// Renders, queues and delivers email.
    pub mailer: Arc<Mailer>,
    pub metrics: Arc<Metrics>,
    /// Turns true when the server starts shutting down, so that long-lived streams end
    /// instead of holding the graceful shutdown open.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// What the configuration sets for the use cases.
    pub limits: fluxgate_core::Limits,
    /// Logins refused during a lockout, counted until the poll loop records them.
    pub refused_logins: fluxgate_core::logins::RefusedLogins,
    /// The identity providers people sign in with.
    pub sso: crate::oidc::Providers,
    /// Delivers webhooks and audit streams.
    pub webhooks: Arc<crate::webhooks::Dispatcher>,
    /// The change-request feeds `WatchChangeRequest` streams share.
    pub watch_feeds: crate::watch::RequestFeeds,
}

impl AppState {
    /// The password policy in force.
    pub fn password_policy(&self) -> fluxgate_domain::PasswordPolicy {
        self.directory.settings().settings.password_policy.clone()
    }
}
