//! Starts the real server on 127.0.0.1:0 against a fresh database and hands out generated
//! clients, exactly as an internal service would use them.

use std::sync::Arc;

use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::approval_service_client::ApprovalServiceClient;
use fluxgate_proto::v1::audit_service_client::AuditServiceClient;
use fluxgate_proto::v1::auth_service_client::AuthServiceClient;
use fluxgate_proto::v1::catalog_service_client::CatalogServiceClient;
use fluxgate_proto::v1::email_service_client::EmailServiceClient;
use fluxgate_proto::v1::group_service_client::GroupServiceClient;
use fluxgate_proto::v1::password_reset_service_client::PasswordResetServiceClient;
use fluxgate_proto::v1::permission_service_client::PermissionServiceClient;
use fluxgate_proto::v1::service_account_service_client::ServiceAccountServiceClient;
use fluxgate_proto::v1::settings_service_client::SettingsServiceClient;
use fluxgate_proto::v1::user_service_client::UserServiceClient;
use fluxgate_server::config::HashingConfig;
use fluxgate_server::{Config, Server};
use fluxgate_store::testing::TestSchema;
use fluxgate_store::{PoolOptions, Store};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "Bootstrap-Pass-1";

/// Which database a test runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres(Arc<TestSchema>),
}

impl Backend {
    /// A fresh PostgreSQL schema, or `None` when PostgreSQL is unreachable and not required.
    pub fn postgres() -> Option<Backend> {
        fluxgate_store::testing::fresh_postgres().map(|s| Backend::Postgres(Arc::new(s)))
    }
}

/// A running server and what a test needs to talk to it.
pub struct TestServer {
    pub database_url: String,
    /// `127.0.0.1:<port>` of the server.
    pub addr: std::net::SocketAddr,
    /// The metrics endpoint, when configured (`metrics_listen`).
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub channel: Channel,
    /// The server's directory, for fault injection.
    pub directory: Arc<fluxgate_server::directory::Directory>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
    /// Keeps a PostgreSQL test schema alive until the server is gone.
    _backend: Option<Backend>,
}

/// Configuration of a test server: loopback, ephemeral port, cheap Argon2 (tests only).
pub fn test_config(backend: &Backend) -> (Config, Option<tempfile::TempDir>) {
    let (url, dir) = match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("fluxgate.db").display());
            (url, Some(dir))
        }
        Backend::Postgres(schema) => (schema.url.clone(), None),
    };
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        database_url: url,
        directory_poll_ms: 200,
        password_hashing: HashingConfig {
            memory_kib: 256,
            iterations: 1,
            parallelism: 1,
            max_concurrent: 4,
        },
        ..Config::default()
    };
    config.bootstrap.password = Some(ADMIN_PASSWORD.into());
    (config, dir)
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        let (config, dir) = test_config(&backend);
        let mut s = Self::start_with(config, dir).await;
        s._backend = Some(backend);
        s
    }

    /// Starts on `backend` with the test configuration as `f` adjusts it.
    pub async fn start_configured(backend: Backend, f: impl FnOnce(&mut Config)) -> TestServer {
        let (mut config, dir) = test_config(&backend);
        f(&mut config);
        let mut s = Self::start_with(config, dir).await;
        s._backend = Some(backend);
        s
    }

    pub async fn start_with(config: Config, dir: Option<tempfile::TempDir>) -> TestServer {
        log_to_stderr();
        let database_url = config.database_url.clone();
        let server = Server::bind(config).await.expect("server starts");
        let addr = server.local_addr().unwrap();
        let metrics_addr = server.metrics_addr();
        let directory = server.directory();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .expect("connect");
        TestServer {
            database_url,
            addr,
            metrics_addr,
            directory,
            channel,
            shutdown: Some(tx),
            task: Some(task),
            _dir: dir,
            _backend: None,
        }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }

    /// The server's address, for clients outside this process.
    pub fn channel_addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel.clone())
    }

    pub fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel.clone())
    }

    pub fn settings(&self) -> SettingsServiceClient<Channel> {
        SettingsServiceClient::new(self.channel.clone())
    }

    pub fn catalog(&self) -> CatalogServiceClient<Channel> {
        CatalogServiceClient::new(self.channel.clone())
    }

    pub fn groups(&self) -> GroupServiceClient<Channel> {
        GroupServiceClient::new(self.channel.clone())
    }

    pub fn service_accounts(&self) -> ServiceAccountServiceClient<Channel> {
        ServiceAccountServiceClient::new(self.channel.clone())
    }

    pub fn audit(&self) -> AuditServiceClient<Channel> {
        AuditServiceClient::new(self.channel.clone())
    }

    pub fn approvals(&self) -> ApprovalServiceClient<Channel> {
        ApprovalServiceClient::new(self.channel.clone())
    }

    pub fn password_reset(&self) -> PasswordResetServiceClient<Channel> {
        PasswordResetServiceClient::new(self.channel.clone())
    }

    pub fn email(&self) -> EmailServiceClient<Channel> {
        EmailServiceClient::new(self.channel.clone())
    }

    pub fn permissions(&self) -> PermissionServiceClient<Channel> {
        PermissionServiceClient::new(self.channel.clone())
    }

    /// Creates a portfolio (as `token`).
    pub async fn portfolio(&self, token: &str, name: &str) -> pb::Portfolio {
        self.catalog()
            .create_portfolio(authed(
                pb::CreatePortfolioRequest {
                    portfolio: Some(pb::Portfolio {
                        display_name: name.into(),
                        ..Default::default()
                    }),
                },
                token,
            ))
            .await
            .unwrap_or_else(|s| panic!("create portfolio {name}: {s:?}"))
            .into_inner()
            .portfolio
            .unwrap()
    }

    /// Creates an application in a portfolio.
    pub async fn application(&self, token: &str, portfolio: &str, name: &str) -> pb::Application {
        self.catalog()
            .create_application(authed(
                pb::CreateApplicationRequest {
                    parent: portfolio.into(),
                    application: Some(pb::Application {
                        display_name: name.into(),
                        ..Default::default()
                    }),
                },
                token,
            ))
            .await
            .unwrap_or_else(|s| panic!("create application {name}: {s:?}"))
            .into_inner()
            .application
            .unwrap()
    }

    /// Creates an environment in an application.
    pub async fn environment(&self, token: &str, application: &str, name: &str) -> pb::Environment {
        self.catalog()
            .create_environment(authed(
                pb::CreateEnvironmentRequest {
                    parent: application.into(),
                    environment: Some(pb::Environment {
                        display_name: name.into(),
                        ..Default::default()
                    }),
                },
                token,
            ))
            .await
            .unwrap_or_else(|s| panic!("create environment {name}: {s:?}"))
            .into_inner()
            .environment
            .unwrap()
    }

    /// Creates a group with grants.
    pub async fn group(
        &self,
        token: &str,
        portfolio: &str,
        name: &str,
        apps: Vec<pb::ApplicationGrant>,
        envs: Vec<pb::EnvironmentGrant>,
    ) -> pb::Group {
        self.groups()
            .create_group(authed(
                pb::CreateGroupRequest {
                    parent: portfolio.into(),
                    group: Some(pb::Group {
                        display_name: name.into(),
                        application_grants: apps,
                        environment_grants: envs,
                        ..Default::default()
                    }),
                },
                token,
            ))
            .await
            .unwrap_or_else(|s| panic!("create group {name}: {s:?}"))
            .into_inner()
            .group
            .unwrap()
    }

    /// Adds a member to a group.
    pub async fn add_member(&self, token: &str, group: &str, member: &str) {
        self.groups()
            .add_group_member(authed(
                pb::AddGroupMemberRequest {
                    reason: String::new(),
                    group: group.into(),
                    member: member.into(),
                },
                token,
            ))
            .await
            .unwrap_or_else(|s| panic!("add {member} to {group}: {s:?}"));
    }

    /// Checks one permission as `token`; returns the decision.
    pub async fn check(
        &self,
        token: &str,
        principal: &str,
        permission: pb::Permission,
        resource: &str,
    ) -> pb::PermissionDecision {
        self.try_check(token, principal, permission, resource)
            .await
            .unwrap_or_else(|s| panic!("check {permission:?} on {resource}: {s:?}"))
    }

    /// Checks one permission as `token`; the decision or the call's status.
    pub async fn try_check(
        &self,
        token: &str,
        principal: &str,
        permission: pb::Permission,
        resource: &str,
    ) -> Result<pb::PermissionDecision, tonic::Status> {
        let r = self
            .permissions()
            .check_permission(authed(
                pb::CheckPermissionRequest {
                    check: Some(pb::PermissionCheck {
                        principal: principal.into(),
                        permission: permission as i32,
                        resource: resource.into(),
                    }),
                    min_revision: 0,
                },
                token,
            ))
            .await?;
        r.into_inner()
            .decision
            .ok_or_else(|| tonic::Status::internal("a reply without its decision"))
    }

    /// Direct access to the database, for assertions on what was (not) written.
    pub fn store(&self) -> Store {
        Store::open(&self.database_url, &PoolOptions::default()).unwrap()
    }

    /// Logs in; panics on failure.
    pub async fn login(&self, username: &str, password: &str) -> pb::LoginResponse {
        self.auth()
            .login(pb::LoginRequest {
                username: username.into(),
                password: password.into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("login {username}: {s:?}"))
            .into_inner()
    }

    /// The bootstrap admin's access token.
    pub async fn admin_token(&self) -> String {
        self.login(ADMIN, ADMIN_PASSWORD)
            .await
            .tokens
            .unwrap()
            .access_token
    }

    /// Every audit event's action and detail, oldest first (as a Team Admin's `token`).
    pub async fn audit_actions(&self, token: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let r = self
                .audit()
                .list_audit_events(authed(
                    pb::ListAuditEventsRequest {
                        page_size: 1000,
                        page_token: page_token.clone(),
                        ..Default::default()
                    },
                    token,
                ))
                .await
                .unwrap()
                .into_inner();
            out.extend(r.events.into_iter().map(|e| (e.action, e.detail)));
            if r.next_page_token.is_empty() {
                return out;
            }
            page_token = r.next_page_token;
        }
    }

    /// Creates a user (as `token`) and returns it.
    pub async fn create_user(
        &self,
        token: &str,
        username: &str,
        role: pb::Role,
        password: &str,
    ) -> pb::User {
        self.users()
            .create_user(authed(
                pb::CreateUserRequest {
                    user: Some(pb::User {
                        username: username.into(),
                        email: format!("{username}@example.com"),
                        display_name: format!("{username} tester"),
                        role: role as i32,
                        ..Default::default()
                    }),
                    initial_password: password.into(),
                    require_password_change: false,
                },
                token,
            ))
            .await
            .unwrap_or_else(|s| panic!("create {username}: {s:?}"))
            .into_inner()
            .user
            .unwrap()
    }

    /// An admin service account (organisation scope) named `display_name`.
    pub async fn service_account(&self, token: &str, display_name: &str) -> pb::ServiceAccount {
        self.portfolio_service_account(token, display_name, "")
            .await
    }

    /// A service account of `portfolio` (`""`: an admin service account).
    pub async fn portfolio_service_account(
        &self,
        token: &str,
        display_name: &str,
        portfolio: &str,
    ) -> pb::ServiceAccount {
        self.service_accounts()
            .create_service_account(authed(
                pb::CreateServiceAccountRequest {
                    service_account: Some(pb::ServiceAccount {
                        display_name: display_name.into(),
                        portfolio: portfolio.into(),
                        ..Default::default()
                    }),
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner()
            .service_account
            .unwrap()
    }

    /// Asks for a reset link for `email`, and waits until the server has handled the request
    /// (the lookup, the link and its email happen after the answer, so that the answer costs the
    /// same whether or not the address has an account).
    pub async fn request_reset_settled(
        &self,
        email: &str,
    ) -> Result<tonic::Response<pb::RequestPasswordResetResponse>, Status> {
        let count = || {
            self.audit_events()
                .iter()
                .filter(|e| e.action == "password_reset.requested")
                .count()
        };
        let before = count();
        let r = self
            .password_reset()
            .request_password_reset(pb::RequestPasswordResetRequest {
                email: email.into(),
            })
            .await?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while count() <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "the reset request for {email} was handled"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok(r)
    }

    /// The first page (up to 1000) of ListAuditEvents with `req`'s filters, as `token`.
    pub async fn list_audit(
        &self,
        token: &str,
        req: pb::ListAuditEventsRequest,
    ) -> Vec<pb::AuditEvent> {
        self.audit()
            .list_audit_events(authed(
                pb::ListAuditEventsRequest {
                    page_size: 1000,
                    ..req
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner()
            .events
    }

    /// Number of audit events stored.
    pub fn audit_count(&self) -> usize {
        self.store()
            .read(|c| fluxgate_store::audit::list(c, 0, i64::MAX))
            .unwrap()
            .len()
    }

    /// The metrics endpoint's text (`GET /metrics`, plain HTTP/1.1).
    pub async fn metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.metrics_addr.expect("metrics_listen is set");
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: fluxgate\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        out
    }

    /// The value of one sample of the metrics (`name{labels}` exactly as exposed), if present.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        self.metrics().await.lines().find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok())?
        })
    }

    pub fn audit_events(&self) -> Vec<fluxgate_store::audit::Event> {
        self.store()
            .read(|c| fluxgate_store::audit::list(c, 0, i64::MAX))
            .unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A request carrying `authorization: Bearer <token>`.
/// With `FLUXGATE_TEST_LOG` set (a filter such as `fluxgate=warn`), the servers' logs go to
/// standard error, which the test harness shows for failing tests.
fn log_to_stderr() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if let Ok(filter) = std::env::var("FLUXGATE_TEST_LOG") {
        ONCE.call_once(|| {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        });
    }
}

/// A free port for a program the test starts itself (PostgreSQL, etcd, an OpenID provider),
/// which binds it some time after this returns. Taken below the kernel's ephemeral range: a
/// port from that range (what binding port 0 gives) can be handed meanwhile to any outgoing
/// connection of the tests running alongside, and the program then finds it in use. Ports
/// are handed out in turn from a start that differs between processes, each checked free.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|&l| l > 12_000)
        .unwrap_or(32_768);
    let (base, span) = (10_000, low - 10_000);
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..span {
        let port = base + start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = u16::try_from(port).expect("below the ephemeral range");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {base} and {low}");
}

pub fn authed<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// Asserts the status code, returning the status for more checks.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(r: Result<T, Status>, code: Code) -> Status {
    match r {
        Ok(v) => panic!("expected {code:?}, got OK: {v:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "unexpected status: {s:?}");
            s
        }
    }
}

/// Asserts INVALID_ARGUMENT naming `field` among its field violations.
#[track_caller]
pub fn expect_invalid<T: std::fmt::Debug>(r: Result<T, Status>, field: &str) {
    let s = expect_code(r, Code::InvalidArgument);
    let details = s.get_error_details();
    let bad = details
        .bad_request()
        .unwrap_or_else(|| panic!("no BadRequest details in {s:?}"));
    assert!(
        bad.field_violations.iter().any(|v| v.field == field),
        "no violation for {field:?} in {:?}",
        bad.field_violations
    );
}

/// Runs each named async test fn on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::harness::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(b) = $crate::harness::Backend::postgres() {
                        super::$name(b).await
                    }
                }
            )*
        }
    };
}

/// Runs `tests/support/{script}` with `python` and `args` off the async workers, and fails the
/// test (with both outputs) unless it exits 0 having printed `ok_line`. Answers its stdout.
pub async fn run_support_script(
    python: String,
    script: &str,
    args: Vec<String>,
    ok_line: &str,
) -> String {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("support")
        .join(script);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(path)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains(ok_line),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

/// A new service account's key (a provisioning account's, when `provisioner`), and the
/// account's name.
pub async fn service_account_key(
    channel: Channel,
    admin: &str,
    provisioner: bool,
) -> (String, String) {
    let mut accounts = ServiceAccountServiceClient::new(channel);
    let sa = accounts
        .create_service_account(authed(
            pb::CreateServiceAccountRequest {
                service_account: Some(pb::ServiceAccount {
                    display_name: "Okta provisioning".into(),
                    provisioner,
                    ..Default::default()
                }),
            },
            admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .service_account
        .unwrap();
    let key = accounts
        .create_service_account_key(authed(
            pb::CreateServiceAccountKeyRequest {
                parent: sa.name.clone(),
                key: Some(pb::ServiceAccountKey {
                    display_name: "scim".into(),
                    ..Default::default()
                }),
            },
            admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    (key, sa.name)
}
