//! Typed configuration: a TOML file, then environment variables, then command-line flags, each
//! overriding the one before. Environment and flags are handled by clap (`env = …`), the file
//! by serde; [`ServeArgs::apply`] lays one over the other.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use fluxgate_domain::Settings;
use serde::{Deserialize, Serialize};

/// Everything the server reads at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the gRPC listener.
    pub listen: SocketAddr,
    /// Address of the Prometheus metrics endpoint (`GET /metrics`); none when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// `sqlite://PATH`, a file path, or `postgres://…`.
    pub database_url: String,
    /// Connections in the pool.
    pub database_pool_size: u32,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// How often the in-memory directory polls the change log for other replicas' writes.
    pub directory_poll_ms: u64,
    pub auth: AuthConfig,
    pub password_hashing: HashingConfig,
    /// Initial values of the run-time settings, used when the database has none yet.
    pub settings: Settings,
    pub bootstrap: BootstrapConfig,
    /// Base URL of the web console, where users open reset and registration links: links are
    /// `{public_url}/reset-password?token=…` and `{public_url}/register?token=…`. Empty (the
    /// default): the console's own address, `http(s)://{listen}` (`localhost` for a wildcard).
    pub public_url: String,
    pub email: EmailConfig,
    pub password_reset: PasswordResetConfig,
    pub tls: TlsConfig,
    /// Most client connections open at once; 0: what the open-file limit allows (less 128).
    pub max_connections: usize,
    /// A new connection must send its first bytes within this time, or it is closed.
    pub handshake_timeout_ms: u64,
    /// Sign-in through identity providers (OpenID Connect).
    pub oidc: OidcConfig,
    /// Provisioning (SCIM 2.0).
    pub scim: ScimConfig,
    /// Events out: webhook and audit-stream deliveries.
    pub webhooks: WebhooksConfig,
    /// How long the audit trail keeps events, and where pruned events are archived.
    pub audit: AuditConfig,
}

/// Webhook and audit-stream deliveries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Allow http:// destinations on any host (else http:// only to a loopback address).
    pub allow_http: bool,
    /// Private networks (`10.1.0.0/16`, `127.0.0.1/32`) destinations may be in. Loopback,
    /// private, link-local, shared and other special-purpose addresses are refused otherwise,
    /// whether written in the URL or resolved from its name.
    pub allowed_private_networks: Vec<String>,
    /// Time allowed for one delivery attempt (connect, send, answer).
    pub timeout_ms: u64,
    /// Attempts before a delivery is marked failed.
    pub max_attempts: u32,
    /// Wait before the first retry; it doubles on each further failure, up to an hour.
    pub retry_initial_ms: u64,
    /// How often each replica looks for events committed by the others (its own commits wake
    /// it at once).
    pub poll_ms: u64,
    /// Deliveries one subscription is sent in a row before the others get their turn.
    pub run_length: u32,
    /// Subscriptions delivered to at once, per replica.
    pub concurrency: u32,
    /// Days a successful delivery stays in the log (failures stay until redelivered).
    pub delivered_log_days: u32,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            allow_http: false,
            allowed_private_networks: Vec::new(),
            timeout_ms: 10_000,
            max_attempts: 15,
            retry_initial_ms: 5_000,
            poll_ms: 1_000,
            run_length: 50,
            concurrency: 16,
            delivered_log_days: 30,
        }
    }
}

/// Audit retention.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Days an event is kept; 0 (the default) keeps every event forever. Older events are
    /// written to `archive_dir` and then pruned, leaving a checkpoint the chain verifies from.
    pub retention_days: u32,
    /// Where pruned events are archived (required with `retention_days`): one JSON-lines file
    /// per pruning, named by its sequence range, its SHA-256 kept in the checkpoint.
    pub archive_dir: Option<PathBuf>,
}

/// Provisioning from an identity provider (SCIM 2.0).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScimConfig {
    /// A portfolio (by display name) whose groups SCIM names by their name alone: a group pushed
    /// as `Approvers` is that portfolio's `Approvers`. Without it, every group is named
    /// `{portfolio}/{group}`.
    pub default_portfolio: Option<String>,
}

/// The OpenID providers people sign in with.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    pub providers: Vec<OidcProvider>,
}

/// One OpenID provider. Its redirect URI, to register at the provider, is
/// `{public_url}/sso/{id}/callback`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcProvider {
    /// Identifier in URLs and the audit trail: 1 to 32 of a-z, 0-9 and '-'.
    pub id: String,
    /// What the sign-in button says.
    pub display_name: String,
    /// The issuer URL; discovery reads `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// The client secret; or name an environment variable that holds it.
    pub client_secret: Option<String>,
    pub client_secret_env: Option<String>,
    /// Scopes asked for beside `openid` (default `email`, `profile`).
    pub scopes: Vec<String>,
    /// ID-token signature algorithms accepted (default `RS256`; never `none` or HMAC).
    pub algorithms: Vec<String>,
    /// Link a first sign-in to the account with the same, provider-verified, email.
    pub link_by_email: bool,
    /// Create an account (with `default_role`) for an identity that matches none.
    pub create_users: bool,
    /// `requester`, `approver` or `team_admin`.
    pub default_role: fluxgate_domain::Role,
    /// The claim whose values map to the organisation role, e.g. `roles`.
    pub role_claim: Option<String>,
    /// Claim value → role; the highest present wins, none present gives `default_role`.
    pub role_map: std::collections::BTreeMap<String, fluxgate_domain::Role>,
    /// The claim whose values map to portfolio groups, e.g. `groups`.
    pub groups_claim: Option<String>,
    /// Claim value → group: membership follows the claim at every sign-in.
    pub group_map: Vec<OidcGroupMapping>,
}

impl Default for OidcProvider {
    fn default() -> Self {
        OidcProvider {
            id: String::new(),
            display_name: String::new(),
            issuer: String::new(),
            client_id: String::new(),
            client_secret: None,
            client_secret_env: None,
            scopes: vec!["email".into(), "profile".into()],
            algorithms: vec!["RS256".into()],
            link_by_email: false,
            create_users: false,
            default_role: fluxgate_domain::Role::Requester,
            role_claim: None,
            role_map: Default::default(),
            groups_claim: None,
            group_map: Vec::new(),
        }
    }
}

/// A claim value and the group (by portfolio and group name) it puts its holders in.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcGroupMapping {
    pub claim: String,
    pub portfolio: String,
    pub group: String,
}

/// The signature algorithms an ID token may use.
pub const OIDC_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

impl OidcProvider {
    /// The client secret, from the file or the environment.
    pub fn secret(&self) -> Option<String> {
        self.client_secret.clone().or_else(|| {
            self.client_secret_env
                .as_ref()
                .and_then(|v| std::env::var(v).ok())
        })
    }

    fn validate(&self) -> anyhow::Result<()> {
        let id_ok = (1..=32).contains(&self.id.len())
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !id_ok {
            anyhow::bail!(
                "oidc.providers: id {:?} must be 1 to 32 of a-z, 0-9 and '-'",
                self.id
            );
        }
        let p = format!("oidc.providers[{}]", self.id);
        let issuer_ok = self.issuer.starts_with("https://")
            || self.issuer.starts_with("http://127.0.0.1")
            || self.issuer.starts_with("http://localhost")
            || self.issuer.starts_with("http://[::1]");
        if !issuer_ok {
            anyhow::bail!("{p}.issuer must be an https:// URL (http:// only on loopback)");
        }
        if self.client_id.is_empty() {
            anyhow::bail!("{p}.client_id is required");
        }
        if let Some(a) = self
            .algorithms
            .iter()
            .find(|a| !OIDC_ALGORITHMS.contains(&a.as_str()))
        {
            anyhow::bail!("{p}.algorithms: {a:?} is not one of {OIDC_ALGORITHMS:?}");
        }
        if self.algorithms.is_empty() {
            anyhow::bail!("{p}.algorithms must name at least one algorithm");
        }
        if self.client_secret.is_some() && self.client_secret_env.is_some() {
            anyhow::bail!("{p}: give client_secret or client_secret_env, not both");
        }
        if let Some(v) = &self.client_secret_env
            && std::env::var(v).is_err()
        {
            anyhow::bail!("{p}.client_secret_env: the variable {v} is not set");
        }
        if !self.role_map.is_empty() && self.role_claim.is_none() {
            anyhow::bail!("{p}.role_map needs role_claim");
        }
        if !self.group_map.is_empty() && self.groups_claim.is_none() {
            anyhow::bail!("{p}.group_map needs groups_claim");
        }
        Ok(())
    }
}

/// Serving over TLS. Plaintext when no certificate is given (the local default).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the server.
    pub cert_path: Option<PathBuf>,
    /// PEM private key of the server.
    pub key_path: Option<PathBuf>,
    /// PEM CA certificate(s): when set, clients must present a certificate signed by one.
    pub client_ca_path: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_listen: None,
            database_url: "sqlite://fluxgate.db".into(),
            database_pool_size: 8,
            log_format: LogFormat::Text,
            directory_poll_ms: 500,
            auth: AuthConfig::default(),
            password_hashing: HashingConfig::default(),
            settings: Settings::default(),
            bootstrap: BootstrapConfig::default(),
            public_url: String::new(),
            email: EmailConfig::default(),
            password_reset: PasswordResetConfig::default(),
            tls: TlsConfig::default(),
            max_connections: 0,
            handshake_timeout_ms: 10_000,
            oidc: OidcConfig::default(),
            scim: ScimConfig::default(),
            webhooks: WebhooksConfig::default(),
            audit: AuditConfig::default(),
        }
    }
}

/// Outgoing email.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailConfig {
    /// `smtp://host:port` (plain, or `?tls=required` for STARTTLS), `smtps://host:port`, with
    /// `user:password@` when the server wants a login. Unset: nothing is sent and every message
    /// is held in the outbox (EmailService) for a Team Admin to read.
    pub smtp_url: Option<String>,
    /// The From address, e.g. `FluxGate <fluxgate@example.com>`.
    pub from: String,
    /// Send a welcome email to users created with a password.
    pub welcome_email: bool,
    /// Directory of template overrides (`{template}.txt`: a `Subject:` line, a blank line, the
    /// body), each using only its template's `{{variables}}`.
    pub templates_dir: Option<PathBuf>,
    /// Delivery attempts before a message is marked failed.
    pub max_attempts: u32,
    /// Wait before the first retry; it doubles on each further failure, up to an hour.
    pub retry_initial_ms: u64,
    /// Time allowed for one SMTP conversation.
    pub timeout_secs: u64,
    /// The hour (UTC, 0 to 23) from which each day's review digests go out.
    pub digest_hour_utc: u32,
    /// How often a replica checks whether digests are due.
    pub digest_poll_ms: u64,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            smtp_url: None,
            from: "FluxGate <fluxgate@localhost>".into(),
            welcome_email: false,
            templates_dir: None,
            max_attempts: 8,
            retry_initial_ms: 30_000,
            timeout_secs: 15,
            digest_hour_utc: 8,
            digest_poll_ms: 60_000,
        }
    }
}

/// Reset and registration links.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordResetConfig {
    /// Lifetime of a reset link.
    pub reset_token_ttl_secs: u64,
    /// Lifetime of a registration link.
    pub registration_token_ttl_secs: u64,
    /// Reset requests per email address and hour; more are dropped without a word (the answer
    /// must not reveal whether the account exists).
    pub requests_per_account_per_hour: u32,
    /// Reset requests per client address and hour; more get RESOURCE_EXHAUSTED.
    pub requests_per_client_per_hour: u32,
}

impl Default for PasswordResetConfig {
    fn default() -> Self {
        Self {
            reset_token_ttl_secs: 3600,
            registration_token_ttl_secs: 7 * 86_400,
            requests_per_account_per_hour: 3,
            requests_per_client_per_hour: 20,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Access-token signing and refresh-token rotation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 signing secret (at least 32 bytes). When unset, a random secret is generated on
    /// first start and kept in the database, shared by every replica.
    pub jwt_secret: Option<String>,
    /// How long after a refresh token was rotated it may be presented again without counting
    /// as reuse (a client that sent one refresh twice at once): the late call gets tokens of
    /// its own for the same session. Past it, a reuse ends the session. 0 disables the grace.
    pub refresh_reuse_grace_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: None,
            refresh_reuse_grace_ms: 2_000,
        }
    }
}

/// Argon2id cost. The defaults are the OWASP recommendation (19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HashingConfig {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hashes computed at once; more wait. 0 means one per CPU.
    pub max_concurrent: usize,
}

impl Default for HashingConfig {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
            max_concurrent: 0,
        }
    }
}

impl HashingConfig {
    /// True when weaker than the OWASP minimum (allowed, e.g. for tests, with a warning).
    pub fn below_owasp(&self) -> bool {
        self.memory_kib < 19 * 1024 || self.iterations < 2
    }
}

/// The first Team Admin, created on the first start against an empty database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BootstrapConfig {
    pub username: String,
    pub email: String,
    /// When unset, a password is generated, printed once, and must be changed at first login.
    pub password: Option<String>,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self {
            username: "admin".into(),
            email: "admin@fluxgate.local".into(),
            password: None,
        }
    }
}

/// Parses `90`, `90s`, `15m`, `24h` or `7d` into seconds.
pub fn parse_duration_secs(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 15m, 24h, 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: unit must be s, m, h or d")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// Options of `fluxgate serve` (and of the commands that only need the database).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "FLUXGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "FLUXGATE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Prometheus metrics address, serving GET /metrics [default: none, no metrics endpoint].
    #[arg(long, env = "FLUXGATE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Database URL: sqlite://PATH, a file path, or postgres://… [default: sqlite://fluxgate.db].
    #[arg(long, env = "FLUXGATE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Database connections in the pool [default: 8].
    #[arg(long, env = "FLUXGATE_DATABASE_POOL_SIZE")]
    pub database_pool_size: Option<u32>,
    /// How often the directory polls for other replicas' writes, in ms [default: 500].
    #[arg(long, env = "FLUXGATE_DIRECTORY_POLL_MS")]
    pub directory_poll_ms: Option<u64>,
    /// Log format.
    #[arg(long, env = "FLUXGATE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// HS256 secret for access tokens (at least 32 bytes) [default: generated, kept in the database].
    #[arg(long, env = "FLUXGATE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Most client connections open at once [default: 0, from the open-file limit].
    #[arg(long, env = "FLUXGATE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// A new connection must send its first bytes within this many ms, or it is closed [default: 10000].
    #[arg(long, env = "FLUXGATE_HANDSHAKE_TIMEOUT_MS")]
    pub handshake_timeout_ms: Option<u64>,
    /// How long a just-rotated refresh token may be presented again without counting as reuse, in ms [default: 2000].
    #[arg(long, env = "FLUXGATE_REFRESH_REUSE_GRACE_MS")]
    pub refresh_reuse_grace_ms: Option<u64>,
    /// Initial access-token lifetime, e.g. 24h.
    #[arg(long, env = "FLUXGATE_ACCESS_TOKEN_TTL", value_parser = parse_duration_secs)]
    pub access_token_ttl: Option<u64>,
    /// Initial refresh-token lifetime, e.g. 30d.
    #[arg(long, env = "FLUXGATE_REFRESH_TOKEN_TTL", value_parser = parse_duration_secs)]
    pub refresh_token_ttl: Option<u64>,
    /// Initial minimum password length.
    #[arg(long, env = "FLUXGATE_PASSWORD_MIN_LENGTH")]
    pub password_min_length: Option<u32>,
    /// Initial consecutive login failures before lockout.
    #[arg(long, env = "FLUXGATE_LOCKOUT_MAX_FAILED_ATTEMPTS")]
    pub lockout_max_failed_attempts: Option<u32>,
    /// Initial lockout duration, e.g. 15m.
    #[arg(long, env = "FLUXGATE_LOCKOUT_DURATION", value_parser = parse_duration_secs)]
    pub lockout_duration: Option<u64>,
    /// Argon2id memory cost in KiB [default: 19456].
    #[arg(long, env = "FLUXGATE_ARGON2_MEMORY_KIB")]
    pub argon2_memory_kib: Option<u32>,
    /// Argon2id passes [default: 2].
    #[arg(long, env = "FLUXGATE_ARGON2_ITERATIONS")]
    pub argon2_iterations: Option<u32>,
    /// Username of the bootstrap Team Admin [default: admin].
    #[arg(long, env = "FLUXGATE_BOOTSTRAP_USERNAME")]
    pub bootstrap_username: Option<String>,
    /// Email of the bootstrap Team Admin [default: admin@fluxgate.local].
    #[arg(long, env = "FLUXGATE_BOOTSTRAP_EMAIL")]
    pub bootstrap_email: Option<String>,
    /// Password of the bootstrap Team Admin [default: generated and printed once].
    #[arg(long, env = "FLUXGATE_BOOTSTRAP_PASSWORD", hide_env_values = true)]
    pub bootstrap_password: Option<String>,
    /// Base URL of the console, used in reset and registration links [default: the console's
    /// own address, http://{listen}].
    #[arg(long, env = "FLUXGATE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// SMTP server, e.g. smtp://mail:25 or smtps://user:pass@mail:465 [default: none; messages
    /// are held in the outbox].
    #[arg(long, env = "FLUXGATE_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// PEM certificate chain: serve over TLS [default: plaintext].
    #[arg(long, env = "FLUXGATE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "FLUXGATE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): require client certificates signed by one.
    #[arg(long, env = "FLUXGATE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// The From address of outgoing email [default: FluxGate <fluxgate@localhost>].
    #[arg(long, env = "FLUXGATE_EMAIL_FROM")]
    pub email_from: Option<String>,
}

impl ServeArgs {
    /// Reads the file (if any) and lays the environment and flags over it.
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        self.apply(&mut config);
        Ok(config)
    }

    fn apply(&self, c: &mut Config) {
        fn set<T: Clone>(target: &mut T, v: &Option<T>) {
            if let Some(v) = v {
                *target = v.clone();
            }
        }
        set(&mut c.listen, &self.listen);
        if self.metrics_listen.is_some() {
            c.metrics_listen = self.metrics_listen;
        }
        set(&mut c.database_url, &self.database_url);
        set(&mut c.database_pool_size, &self.database_pool_size);
        set(&mut c.log_format, &self.log_format);
        set(&mut c.directory_poll_ms, &self.directory_poll_ms);
        if self.jwt_secret.is_some() {
            c.auth.jwt_secret = self.jwt_secret.clone();
        }
        set(
            &mut c.auth.refresh_reuse_grace_ms,
            &self.refresh_reuse_grace_ms,
        );
        let s = &mut c.settings;
        set(
            &mut s.token_policy.access_token_ttl_secs,
            &self.access_token_ttl,
        );
        set(
            &mut s.token_policy.refresh_token_ttl_secs,
            &self.refresh_token_ttl,
        );
        set(&mut s.password_policy.min_length, &self.password_min_length);
        set(
            &mut s.lockout_policy.max_failed_attempts,
            &self.lockout_max_failed_attempts,
        );
        set(
            &mut s.lockout_policy.lockout_duration_secs,
            &self.lockout_duration,
        );
        set(&mut c.password_hashing.memory_kib, &self.argon2_memory_kib);
        set(&mut c.password_hashing.iterations, &self.argon2_iterations);
        set(&mut c.bootstrap.username, &self.bootstrap_username);
        set(&mut c.bootstrap.email, &self.bootstrap_email);
        if self.bootstrap_password.is_some() {
            c.bootstrap.password = self.bootstrap_password.clone();
        }
        set(&mut c.public_url, &self.public_url);
        if self.smtp_url.is_some() {
            c.email.smtp_url = self.smtp_url.clone();
        }
        set(&mut c.email.from, &self.email_from);
        if self.tls_cert.is_some() {
            c.tls.cert_path = self.tls_cert.clone();
        }
        if self.tls_key.is_some() {
            c.tls.key_path = self.tls_key.clone();
        }
        if self.tls_client_ca.is_some() {
            c.tls.client_ca_path = self.tls_client_ca.clone();
        }
    }
}

impl Config {
    /// The console's address when `public_url` is not set: the listening address (bound, so
    /// port 0 has become a real port), with `localhost` for a wildcard.
    pub fn console_url(&self, bound: std::net::SocketAddr) -> String {
        if !self.public_url.is_empty() {
            return self.public_url.trim_end_matches('/').to_owned();
        }
        let scheme = if self.tls.cert_path.is_some() {
            "https"
        } else {
            "http"
        };
        let host = match bound.ip() {
            ip if ip.is_unspecified() => "localhost".to_owned(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            std::net::IpAddr::V4(v4) => v4.to_string(),
        };
        format!("{scheme}://{host}:{}", bound.port())
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading configuration {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing configuration {}", path.display()))
    }

    /// Checks what the server cannot start without.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Err(e) = self.settings.validate() {
            anyhow::bail!("configuration [settings]: {e}");
        }
        if !(100..=300_000).contains(&self.handshake_timeout_ms) {
            anyhow::bail!("handshake_timeout_ms must be from 100 to 300000");
        }
        if self.max_connections > 1_000_000 {
            anyhow::bail!("max_connections must be at most 1000000 (0: from the open-file limit)");
        }
        if self.auth.refresh_reuse_grace_ms > 60_000 {
            anyhow::bail!("auth.refresh_reuse_grace_ms must be from 0 to 60000");
        }
        for (i, p) in self.oidc.providers.iter().enumerate() {
            p.validate()?;
            if self.oidc.providers[..i].iter().any(|q| q.id == p.id) {
                anyhow::bail!("oidc.providers: id {:?} is used twice", p.id);
            }
        }
        if let Some(secret) = &self.auth.jwt_secret
            && secret.len() < 32
        {
            anyhow::bail!("auth.jwt_secret must be at least 32 bytes long");
        }
        let h = &self.password_hashing;
        if h.memory_kib < 8 || h.iterations < 1 || h.parallelism < 1 {
            anyhow::bail!("password_hashing: memory_kib >= 8, iterations >= 1, parallelism >= 1");
        }
        let url = &self.public_url;
        if !(url.is_empty() || url.starts_with("https://") || url.starts_with("http://"))
            || self
                .public_url
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            anyhow::bail!("public_url must be an http:// or https:// URL");
        }
        if !(50..=60_000).contains(&self.directory_poll_ms) {
            anyhow::bail!("directory_poll_ms must be from 50 to 60000");
        }
        let t = &self.tls;
        if t.cert_path.is_some() != t.key_path.is_some() {
            anyhow::bail!("tls: cert_path and key_path go together");
        }
        if t.client_ca_path.is_some() && t.cert_path.is_none() {
            anyhow::bail!("tls: client_ca_path needs cert_path and key_path");
        }
        let e = &self.email;
        if e.max_attempts < 1 || e.timeout_secs < 1 {
            anyhow::bail!("email: max_attempts >= 1 and timeout_secs >= 1");
        }
        if e.digest_hour_utc > 23 || !(20..=3_600_000).contains(&e.digest_poll_ms) {
            anyhow::bail!("email: digest_hour_utc 0 to 23, digest_poll_ms 20 to 3600000");
        }
        let r = &self.password_reset;
        if !(60..=7 * 86_400).contains(&r.reset_token_ttl_secs)
            || !(60..=90 * 86_400).contains(&r.registration_token_ttl_secs)
        {
            anyhow::bail!(
                "password_reset: reset_token_ttl_secs from 60 s to 7 days, \
                 registration_token_ttl_secs from 60 s to 90 days"
            );
        }
        if r.requests_per_account_per_hour < 1 || r.requests_per_client_per_hour < 1 {
            anyhow::bail!("password_reset: request limits must be at least 1 per hour");
        }
        self.webhook_networks()?;
        let w = &self.webhooks;
        if !(100..=120_000).contains(&w.timeout_ms)
            || !(1..=50).contains(&w.max_attempts)
            || !(10..=3_600_000).contains(&w.retry_initial_ms)
            || !(20..=60_000).contains(&w.poll_ms)
            || !(1..=1000).contains(&w.run_length)
            || !(1..=256).contains(&w.concurrency)
        {
            anyhow::bail!(
                "webhooks: timeout_ms 100 to 120000, max_attempts 1 to 50, retry_initial_ms 10 \
                 to 3600000, poll_ms 20 to 60000, run_length 1 to 1000, concurrency 1 to 256"
            );
        }
        if self.audit.retention_days > 0 && self.audit.archive_dir.is_none() {
            anyhow::bail!(
                "audit.retention_days needs audit.archive_dir: pruned events are archived first"
            );
        }
        Ok(())
    }

    /// `webhooks.allowed_private_networks`, parsed.
    pub fn webhook_networks(&self) -> anyhow::Result<Vec<fluxgate_core::destinations::Network>> {
        self.webhooks
            .allowed_private_networks
            .iter()
            .map(|n| {
                n.parse()
                    .map_err(|e| anyhow::anyhow!("webhooks.allowed_private_networks: {e}"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_secs("90"), Ok(90));
        assert_eq!(parse_duration_secs("15m"), Ok(900));
        assert_eq!(parse_duration_secs("24h"), Ok(86_400));
        assert_eq!(parse_duration_secs("7d"), Ok(604_800));
        assert!(parse_duration_secs("7w").is_err());
        assert!(parse_duration_secs("h").is_err());
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:6000\"\ndatabase_url = \"a.db\"\n[settings.password_policy]\nmin_length = 10\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            database_url: Some("b.db".into()),
            ..Default::default()
        };
        let c = args.load().unwrap();
        assert_eq!(c.listen.port(), 6000);
        assert_eq!(c.database_url, "b.db");
        assert_eq!(c.settings.password_policy.min_length, 10);
        assert!(c.settings.password_policy.require_digit);
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("lisen = \"x\"").is_err());
    }
}
