//! Assembles the gRPC server: state, services, health, reflection, the directory's background
//! sync, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fluxgate_proto::v1::approval_service_server::ApprovalServiceServer;
use fluxgate_proto::v1::audit_service_server::AuditServiceServer;
use fluxgate_proto::v1::auth_service_server::AuthServiceServer;
use fluxgate_proto::v1::catalog_service_server::CatalogServiceServer;
use fluxgate_proto::v1::email_service_server::EmailServiceServer;
use fluxgate_proto::v1::group_service_server::GroupServiceServer;
use fluxgate_proto::v1::password_reset_service_server::PasswordResetServiceServer;
use fluxgate_proto::v1::permission_service_server::PermissionServiceServer;
use fluxgate_proto::v1::service_account_service_server::ServiceAccountServiceServer;
use fluxgate_proto::v1::settings_service_server::SettingsServiceServer;
use fluxgate_proto::v1::user_service_server::UserServiceServer;
use fluxgate_proto::v1::webhook_service_server::WebhookServiceServer;
use fluxgate_store::{PoolOptions, Store};
use tokio::net::TcpListener;

use crate::bootstrap::{self, Bootstrap};
use crate::config::Config;
use crate::db::Db;
use crate::directory::Directory;
use crate::mail::Mailer;
use crate::passwords::Hasher;
use crate::services::approvals::ApprovalSvc;
use crate::services::audit::AuditSvc;
use crate::services::auth::AuthSvc;
use crate::services::catalog::CatalogSvc;
use crate::services::email::EmailSvc;
use crate::services::groups::GroupSvc;
use crate::services::password_reset::PasswordResetSvc;
use crate::services::permissions::PermissionSvc;
use crate::services::service_accounts::ServiceAccountSvc;
use crate::services::settings::SettingsSvc;
use crate::services::users::UserSvc;
use crate::services::webhooks::WebhookSvc;
use crate::state::AppState;
use crate::tokens::TokenKeys;

pub use crate::incoming::MAX_MESSAGE_BYTES;

/// A server bound to its port, bootstrapped and ready to serve.
pub struct Server {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<AppState>,
    pub bootstrap: Bootstrap,
}

impl Server {
    /// Opens the database, migrates, bootstraps and binds the listener (`listen` may use port 0).
    pub async fn bind(mut config: Config) -> anyhow::Result<Server> {
        config.validate()?;
        if config.password_hashing.below_owasp() {
            tracing::warn!(
                "password_hashing is below the OWASP minimum (19 MiB, t=2): for tests only"
            );
        }
        // Bind first: a busy port must fail before the first start writes the bootstrap admin,
        // whose password is printed once, after binding.
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (metrics): {e}"))?,
            ),
            None => None,
        };
        // Emailed links land on this server's console unless told otherwise.
        config.public_url = config.console_url(listener.local_addr()?);
        let store = Store::open(
            &config.database_url,
            &PoolOptions {
                max_size: config.database_pool_size,
                ..PoolOptions::default()
            },
        )?;
        let hasher = Hasher::new(&config.password_hashing)?;
        let mailer = Arc::new(Mailer::new(&config)?);
        if !mailer.delivers() {
            tracing::info!("no SMTP server configured: email is held in the outbox (EmailService)");
        }
        let (secret, bootstrap) = {
            let (store, config, hasher) = (store.clone(), config.clone(), hasher.clone());
            tokio::task::spawn_blocking(move || bootstrap::prepare(&store, &config, &hasher))
                .await??
        };
        let tls = tls_config(&config.tls)?;
        let db = Db::new(store);
        let directory = Directory::load(db.clone()).await?;
        let limits = fluxgate_core::Limits {
            registration_ttl_secs: config.password_reset.registration_token_ttl_secs,
            reset_ttl_secs: config.password_reset.reset_token_ttl_secs,
            welcome_email: config.email.welcome_email,
            reset_requests_per_account_per_hour: config
                .password_reset
                .requests_per_account_per_hour,
            reset_requests_per_client_per_hour: config.password_reset.requests_per_client_per_hour,
            refresh_reuse_grace_micros: (config.auth.refresh_reuse_grace_ms as i64) * 1_000,
            scim_default_portfolio: config.scim.default_portfolio.clone(),
            webhook_allow_http: config.webhooks.allow_http,
            webhook_private_networks: config.webhook_networks()?,
        };
        let sso = crate::oidc::Providers::new(&config.oidc, &config.public_url)?;
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let webhooks = crate::webhooks::Dispatcher::new(
            &config.webhooks,
            limits.webhook_private_networks.clone(),
            metrics.clone(),
        )?;
        let stopping = tokio::sync::watch::channel(false).0;
        let watch_feeds = crate::watch::RequestFeeds::new(
            db.clone(),
            directory.clone(),
            metrics.clone(),
            stopping.subscribe(),
        );
        let state = Arc::new(AppState {
            config,
            db,
            directory,
            hasher,
            keys: TokenKeys::new(&secret),
            mailer,
            metrics,
            stopping,
            limits,
            refused_logins: Default::default(),
            sso,
            webhooks,
            watch_feeds,
        });
        Ok(Server {
            listener,
            metrics_listener,
            tls,
            state,
            bootstrap,
        })
    }

    /// The server's directory (the tests inject faults through it).
    pub fn directory(&self) -> Arc<crate::directory::Directory> {
        self.state.directory.clone()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The web console's address (the configured `public_url`, or this server's own).
    pub fn console_url(&self) -> &str {
        &self.state.config.public_url
    }

    /// The metrics endpoint's address, when it has one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then finishes in-flight calls and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state;
        let addr = self.listener.local_addr()?;
        let stopping = state.stopping.clone();
        let shutdown = async move {
            shutdown.await;
            // Streams that would otherwise wait for a decision end now.
            let _ = stopping.send(true);
        };

        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<AuthServiceServer<AuthSvc>>()
            .await;
        health_reporter
            .set_serving::<UserServiceServer<UserSvc>>()
            .await;
        health_reporter
            .set_serving::<SettingsServiceServer<SettingsSvc>>()
            .await;
        health_reporter
            .set_serving::<CatalogServiceServer<CatalogSvc>>()
            .await;
        health_reporter
            .set_serving::<GroupServiceServer<GroupSvc>>()
            .await;
        health_reporter
            .set_serving::<ServiceAccountServiceServer<ServiceAccountSvc>>()
            .await;
        health_reporter
            .set_serving::<PermissionServiceServer<PermissionSvc>>()
            .await;
        health_reporter
            .set_serving::<AuditServiceServer<AuditSvc>>()
            .await;
        health_reporter
            .set_serving::<ApprovalServiceServer<ApprovalSvc>>()
            .await;
        health_reporter
            .set_serving::<PasswordResetServiceServer<PasswordResetSvc>>()
            .await;
        health_reporter
            .set_serving::<EmailServiceServer<EmailSvc>>()
            .await;
        health_reporter
            .set_serving::<WebhookServiceServer<WebhookSvc>>()
            .await;

        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(fluxgate_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // The error details (google.rpc.BadRequest …), so grpcurl can show them.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(fluxgate_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // The error details (google.rpc.BadRequest …), so grpcurl can show them.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        let poller = tokio::spawn(poll_directory(
            state.clone(),
            Duration::from_millis(state.config.directory_poll_ms.max(50)),
        ));
        let follower = tokio::spawn(follow_notifications(state.clone()));

        let metrics_endpoint = self.metrics_listener.map(|l| {
            if let Ok(a) = l.local_addr() {
                tracing::info!(addr = %a, "serving metrics on /metrics");
            }
            tokio::spawn(serve_metrics(l, state.clone(), state.stopping.subscribe()))
        });
        let mail_worker = tokio::spawn(state.mailer.clone().run(
            state.db.clone(),
            Duration::from_millis(state.config.directory_poll_ms.clamp(50, 1000)),
            state.stopping.subscribe(),
        ));

        let webhook_worker = tokio::spawn(
            state
                .webhooks
                .clone()
                .run(state.db.clone(), state.stopping.subscribe()),
        );
        let digests = tokio::spawn(send_digests(state.clone(), state.stopping.subscribe()));
        let retention = tokio::spawn(crate::retention::run(
            state.clone(),
            Duration::from_secs(3600),
            state.stopping.subscribe(),
        ));

        let auth = AuthServiceServer::new(AuthSvc {
            state: state.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let users = UserServiceServer::new(UserSvc {
            state: state.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let settings = SettingsServiceServer::new(SettingsSvc {
            state: state.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let catalog = CatalogServiceServer::new(CatalogSvc {
            state: state.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let groups = GroupServiceServer::new(GroupSvc {
            state: state.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let service_accounts = ServiceAccountServiceServer::new(ServiceAccountSvc {
            state: state.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let permissions = PermissionServiceServer::new(PermissionSvc {
            state: state.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let audit = AuditServiceServer::new(AuditSvc {
            state: state.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let approvals = ApprovalServiceServer::new(ApprovalSvc {
            state: state.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES);

        let password_reset = PasswordResetServiceServer::new(PasswordResetSvc {
            state: state.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let email = EmailServiceServer::new(EmailSvc {
            state: state.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let webhook_service = WebhookServiceServer::new(WebhookSvc {
            state: state.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES);

        tracing::info!(%addr, backend = state.db.store().backend().as_str(), "serving");
        let builder = tonic::transport::Server::builder();
        if self.tls.is_some() {
            tracing::info!("serving over TLS");
        }
        let descriptors = crate::incoming::raise_descriptor_limit();
        let limits = crate::incoming::Limits {
            max_connections: match state.config.max_connections {
                0 => crate::incoming::default_max_connections(descriptors),
                n => n,
            },
            handshake_timeout: Duration::from_millis(state.config.handshake_timeout_ms),
        };
        tracing::info!(
            open_file_limit = descriptors,
            max_connections = limits.max_connections,
            "connection limits"
        );
        let result = builder
            .timeout(Duration::from_secs(60))
            // Dead peers: a ping every 30 s, closed when unanswered for 20 s.
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            // Large header lists reach the telemetry layer, which refuses them for that call
            // alone (RESOURCE_EXHAUSTED past 16 KiB) instead of the transport's 431 or GOAWAY.
            .http2_max_header_list_size(crate::telemetry::TRANSPORT_MAX_HEADER_LIST_BYTES)
            // Browsers speak HTTP/1.1: the console's page and its gRPC-Web calls.
            .accept_http1(true)
            // What is not a gRPC or gRPC-Web call is the console's.
            .layer(crate::console::ConsoleLayer::new(state.clone()))
            // gRPC-Web becomes gRPC before the other layers and the services see it.
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(crate::telemetry::TelemetryLayer::new(state.metrics.clone()))
            .layer(crate::idempotency::IdempotencyLayer::new(state.clone()))
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(auth)
            .add_service(users)
            .add_service(settings)
            .add_service(catalog)
            .add_service(groups)
            .add_service(service_accounts)
            .add_service(permissions)
            .add_service(audit)
            .add_service(approvals)
            .add_service(password_reset)
            .add_service(email)
            .add_service(webhook_service)
            .serve_with_incoming_shutdown(
                crate::incoming::incoming(
                    self.listener,
                    limits,
                    self.tls,
                    state.watch_feeds.bursts(),
                ),
                shutdown,
            )
            .await;
        poller.abort();
        follower.abort();
        mail_worker.abort();
        webhook_worker.abort();
        retention.abort();
        digests.abort();
        if let Some(m) = metrics_endpoint {
            m.abort();
        }
        tracing::info!("stopped");
        Ok(result?)
    }
}

/// The TLS settings, with the files read now so that a bad path or file stops the start.
/// ALPN offers `h2` and `http/1.1`: gRPC needs HTTP/2, while browsers, SCIM clients and
/// sign-in redirects may speak HTTP/1.1.
fn tls_config(c: &crate::config::TlsConfig) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    use anyhow::Context as _;
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert_path), Some(key_path)) = (&c.cert_path, &c.key_path) else {
        return Ok(None);
    };
    let read = |p: &std::path::PathBuf| {
        std::fs::read(p).with_context(|| format!("reading {}", p.display()))
    };
    let certs = |p: &std::path::PathBuf| -> anyhow::Result<Vec<CertificateDer<'static>>> {
        let certs = CertificateDer::pem_slice_iter(&read(p)?)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("reading the certificates in {}", p.display()))?;
        anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", p.display());
        Ok(certs)
    };
    let chain = certs(cert_path)?;
    let key = PrivateKeyDer::from_pem_slice(&read(key_path)?)
        .with_context(|| format!("reading the private key in {}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &c.client_ca_path {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs(ca)? {
                roots
                    .add(cert)
                    .with_context(|| format!("a CA certificate in {}", ca.display()))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .context("the TLS certificate and key")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

/// Sends the review digests when they are due (each replica checks; the write lock and the
/// per-user day mark make each go out once).
async fn send_digests(state: Arc<AppState>, mut stopping: tokio::sync::watch::Receiver<bool>) {
    let every = Duration::from_millis(state.config.email.digest_poll_ms);
    let hour_utc = state.config.email.digest_hour_utc;
    loop {
        let now = fluxgate_store::now_micros();
        let due = state
            .db
            .read(move |c| {
                Ok(fluxgate_core::change_requests::digests_due(
                    c, now, hour_utc,
                )?)
            })
            .await;
        if due.unwrap_or(false) {
            let cmd = fluxgate_core::change_requests::SendDigests { hour_utc };
            match state
                .execute_from(fluxgate_core::Origin::default(), None, cmd)
                .await
            {
                Ok(d) if d.value > 0 => tracing::info!(digests = d.value, "review digests queued"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "review digests failed"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stopping.changed() => return,
        }
        if *stopping.borrow() {
            return;
        }
    }
}

/// Keeps the directory current with writes made by other replicas (or the host CLI), closes
/// change requests past their time to live, and evicts expired sessions.
async fn poll_directory(state: Arc<AppState>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        if let Err(e) = state.directory.sync().await {
            tracing::warn!(error = %e, "directory sync failed");
        }
        match expire_due(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                expired = n,
                "closed change requests past their time to live"
            ),
            Err(e) => tracing::warn!(error = %e, "expiring change requests failed"),
        }
        if let Err(e) = crate::services::auth::flush_refused_logins(&state).await {
            tracing::warn!(error = %e, "recording refused logins failed");
        }
        n += 1;
        if n.is_multiple_of(60) {
            state.directory.evict_expired();
            if let Err(e) = prune(&state).await {
                tracing::warn!(error = %e, "pruning old link tokens and rate counters failed");
            }
        }
    }
}

/// On PostgreSQL, brings the directory up to date as soon as another replica's write commits:
/// a thread listens for the change notifications ([`fluxgate_store::notify`]) and wakes this
/// task, which syncs (notifications that come while a sync runs make one more sync). The poll
/// loop stays as the fallback while the listener is disconnected.
async fn follow_notifications(state: Arc<AppState>) {
    let store = state.db.store().clone();
    // SQLite has no notifications (and no other replicas): the poll is all there is.
    if store.backend() != fluxgate_store::Backend::Postgres {
        return;
    }
    let wake = Arc::new(tokio::sync::Notify::new());
    let weak = Arc::downgrade(&wake);
    std::thread::Builder::new()
        .name("fluxgate-listen".into())
        .spawn(move || listen(&store, &weak))
        .map_err(|e| tracing::warn!(error = %e, "no change listener; polling only"))
        .ok();
    loop {
        wake.notified().await;
        if let Err(e) = state.directory.sync().await {
            tracing::warn!(error = %e, "directory sync after a change notification failed");
        }
    }
}

/// The listening thread: runs while `wake` has a task to wake, reconnecting (to whichever
/// server is the primary) after a lost connection.
fn listen(store: &Store, wake: &std::sync::Weak<tokio::sync::Notify>) {
    let mut failing = false;
    while wake.strong_count() > 0 {
        let mut listener = match store.listener() {
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot listen for changes; polling until it can");
                }
                failing = true;
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            None => return,
        };
        if failing {
            tracing::info!("listening for changes again");
        }
        failing = false;
        // Whatever committed while nobody listened.
        let Some(w) = wake.upgrade() else { return };
        w.notify_one();
        drop(w);
        loop {
            match listener.wait(Duration::from_secs(1)) {
                Ok(heard) => {
                    let Some(w) = wake.upgrade() else { return };
                    if heard {
                        w.notify_one();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lost the change listener; reconnecting");
                    break;
                }
            }
        }
    }
}

/// Forgets link tokens a week after they expired, rate counters of past windows and
/// idempotency keys after a day.
async fn prune(state: &AppState) -> crate::error::ApiResult<()> {
    state
        .db
        .write(|tx| {
            let week = 7 * 86_400 * 1_000_000;
            fluxgate_store::user_tokens::prune(tx.conn, tx.now - week)?;
            fluxgate_store::rate_limits::prune(tx.conn, tx.now - 2 * 3_600_000_000)?;
            fluxgate_store::idempotency::prune(
                tx.conn,
                tx.now - crate::idempotency::RETENTION_MICROS,
            )?;
            Ok(())
        })
        .await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}

/// Serves `GET /metrics` on `listener` until `stopping` turns true.
async fn serve_metrics(
    listener: TcpListener,
    state: Arc<AppState>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(
                |axum::extract::State(state): axum::extract::State<Arc<AppState>>| async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        state
                            .metrics
                            .render(
                                &state.db,
                                state.config.database_pool_size,
                                state.directory.revision(),
                            )
                            .await,
                    )
                },
            ),
        )
        .with_state(state);
    let stopped = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stopped)
        .await
    {
        tracing::warn!(error = %e, "the metrics endpoint stopped");
    }
}

/// Closes pending requests whose time is up (called from the directory's poll loop): each
/// becomes expired with an audit event, in one transaction per sweep. Returns how many.
async fn expire_due(state: &AppState) -> crate::error::ApiResult<usize> {
    let now = fluxgate_store::now_micros();
    let due = state
        .db
        .read(move |conn| Ok(fluxgate_core::change_requests::due(conn, now)?))
        .await?;
    if due.ids.is_empty() {
        return Ok(0);
    }
    let done = state
        .execute_from(fluxgate_core::Origin::default(), None, due)
        .await?;
    Ok(done.value)
}
