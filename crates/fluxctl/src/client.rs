//! The connection to the server and the call path every command goes through: credentials
//! (API key, access token or the session file, refreshed when due), `x-request-id`,
//! `idempotency-key` on mutating calls, deadlines, and one retry after a refresh when the server
//! answers UNAUTHENTICATED.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::auth_service_client::AuthServiceClient;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Response, Status};

use crate::args::parse_duration;
use crate::error::{CliError, Result};
use crate::output::Format;
use crate::session::{self, Session};

/// The server used when neither `--server`, `FLUXGATE_SERVER` nor the session names one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// Deadline of one call when `--timeout` is not given.
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of every command.
#[derive(Debug, Clone, Args)]
pub struct GlobalOpts {
    /// Server URL; `https://` means TLS [default: the session's server, else http://127.0.0.1:50051]
    #[arg(long, env = "FLUXGATE_SERVER", global = true)]
    pub server: Option<String>,
    /// PEM file of the CA that signed the server's certificate (TLS)
    #[arg(long, env = "FLUXGATE_CA_CERT", global = true, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for servers that require mutual TLS
    #[arg(
        long,
        env = "FLUXGATE_CLIENT_CERT",
        global = true,
        value_name = "PEM",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate
    #[arg(
        long,
        env = "FLUXGATE_CLIENT_KEY",
        global = true,
        value_name = "PEM",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
    /// API key (fgk_…) or access token; used instead of the session file
    #[arg(long, env = "FLUXGATE_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Output format
    #[arg(
        short,
        long,
        value_enum,
        env = "FLUXCTL_OUTPUT",
        default_value = "table",
        global = true
    )]
    pub output: Format,
    /// Session file [default: $XDG_CONFIG_HOME/fluxctl/session.json or ~/.config/fluxctl/session.json]
    #[arg(long, env = "FLUXCTL_SESSION_FILE", global = true, value_name = "PATH")]
    pub session_file: Option<PathBuf>,
    /// Deadline of each call (e.g. 30s, 2m); for `change-requests wait`, of the whole wait
    #[arg(long, env = "FLUXCTL_TIMEOUT", global = true, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Idempotency key sent with mutating calls [default: a fresh UUID per invocation]
    #[arg(long, env = "FLUXCTL_IDEMPOTENCY_KEY", global = true)]
    pub idempotency_key: Option<String>,
}

/// Whether a call is the command's write, and so carries the idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Reads, and the session calls (login, refresh) made along the way.
    Read,
    /// The change the command makes.
    Write,
}

/// Everything a command needs to talk to the server and print its answer.
pub struct Ctx {
    /// The global options.
    pub opts: GlobalOpts,
    server: String,
    session_path: Option<PathBuf>,
    session: Option<Session>,
    session_error: Option<String>,
    channel: Option<Channel>,
    idempotency_key: String,
    /// The catalog and group lists read to resolve names, kept for the invocation.
    pub names: crate::names::Cache,
}

impl Ctx {
    /// Resolves the server and loads the session file (unless a token was given).
    pub fn new(opts: GlobalOpts) -> Result<Self> {
        let session_path = opts.session_file.clone().or_else(session::default_path);
        // An unreadable session file matters only to commands that need it (not to `login`).
        let (session, session_error) = match (&opts.token, &session_path) {
            (None, Some(p)) => match session::load(p) {
                Ok(s) => (s, None),
                Err(e) => (None, Some(e.message)),
            },
            _ => (None, None),
        };
        let server = opts
            .server
            .clone()
            .or_else(|| session.as_ref().map(|s| s.server.clone()))
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
        let idempotency_key = opts
            .idempotency_key
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        Ok(Self {
            opts,
            server,
            session_path,
            session,
            session_error,
            channel: None,
            idempotency_key,
            names: crate::names::Cache::default(),
        })
    }

    /// The server URL in use.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The output format.
    pub fn format(&self) -> Format {
        self.opts.output
    }

    /// The idempotency key of this invocation.
    pub fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }

    /// Writes from now on carry `key`: a command that makes several writes gives each its own,
    /// derived from the invocation's, so that running it again with the same key repeats none.
    pub fn set_idempotency_key(&mut self, key: String) {
        self.idempotency_key = key;
    }

    /// The session file path, or an error when none can be determined.
    pub fn session_path(&self) -> Result<PathBuf> {
        self.session_path.clone().ok_or_else(|| {
            CliError::other("no session file: set --session-file, FLUXCTL_SESSION_FILE or HOME")
        })
    }

    /// The loaded session, if any.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// Stores a new session in memory and in the session file.
    pub fn store_session(&mut self, session: Session) -> Result<()> {
        session::save(&self.session_path()?, &session)?;
        self.session = Some(session);
        self.session_error = None;
        Ok(())
    }

    /// Forgets the session and deletes its file.
    pub fn drop_session(&mut self) -> Result<()> {
        self.session = None;
        self.session_error = None;
        match &self.session_path {
            Some(p) => session::delete(p),
            None => Ok(()),
        }
    }

    /// The channel to the server (connected lazily on first use).
    pub fn channel(&mut self) -> Result<Channel> {
        if let Some(ch) = &self.channel {
            return Ok(ch.clone());
        }
        let ch = self.endpoint()?.connect_lazy();
        self.channel = Some(ch.clone());
        Ok(ch)
    }

    fn endpoint(&self) -> Result<Endpoint> {
        let mut ep = Endpoint::from_shared(self.server.clone())
            .map_err(|e| CliError::usage(format!("bad server URL {:?}: {e}", self.server)))?
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true);
        if self.server.starts_with("https://") {
            ep = ep
                .tls_config(self.tls_config()?)
                .map_err(|e| CliError::other(format!("TLS: {e}")))?;
        }
        Ok(ep)
    }

    fn tls_config(&self) -> Result<ClientTlsConfig> {
        let mut tls = ClientTlsConfig::new();
        match &self.opts.ca_cert {
            Some(path) => tls = tls.ca_certificate(Certificate::from_pem(read_pem(path)?)),
            None => tls = tls.with_native_roots(),
        }
        if let (Some(cert), Some(key)) = (&self.opts.client_cert, &self.opts.client_key) {
            tls = tls.identity(Identity::from_pem(read_pem(cert)?, read_pem(key)?));
        }
        Ok(tls)
    }

    /// An authenticated unary call: `f` makes it on a fresh client. Its deadline is
    /// `--timeout`, else 30 seconds.
    pub async fn call<M, R, F, Fut>(&mut self, kind: Call, message: M, f: F) -> Result<R>
    where
        M: Clone,
        F: Fn(Channel, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let deadline = Some(self.opts.timeout.unwrap_or(DEFAULT_CALL_TIMEOUT));
        self.call_with_deadline(kind, deadline, message, f).await
    }

    /// An authenticated call with the given deadline (none: as long as it takes), for
    /// server streams.
    pub async fn call_with_deadline<M, R, F, Fut>(
        &mut self,
        kind: Call,
        deadline: Option<Duration>,
        message: M,
        f: F,
    ) -> Result<R>
    where
        M: Clone,
        F: Fn(Channel, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let channel = self.channel()?;
        self.refresh_if_due().await?;
        let bearer = self.bearer()?;
        let first = self
            .attempt(
                channel.clone(),
                kind,
                deadline,
                Some(&bearer),
                message.clone(),
                &f,
            )
            .await;
        match first {
            Err((status, _)) if status.code() == Code::Unauthenticated && self.can_refresh() => {
                self.refresh().await?;
                let bearer = self.bearer()?;
                self.attempt(channel, kind, deadline, Some(&bearer), message, &f)
                    .await
                    .map_err(|(s, id)| self.status_error(&s, &id))
            }
            other => other.map_err(|(s, id)| self.status_error(&s, &id)),
        }
    }

    /// A call without credentials (login, refresh, password-reset requests).
    pub async fn call_anonymous<M, R, F, Fut>(&mut self, kind: Call, message: M, f: F) -> Result<R>
    where
        F: Fn(Channel, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let channel = self.channel()?;
        let deadline = Some(self.opts.timeout.unwrap_or(DEFAULT_CALL_TIMEOUT));
        self.attempt(channel, kind, deadline, None, message, &f)
            .await
            .map_err(|(s, id)| self.status_error(&s, &id))
    }

    async fn attempt<M, R, F, Fut>(
        &self,
        channel: Channel,
        kind: Call,
        deadline: Option<Duration>,
        bearer: Option<&str>,
        message: M,
        f: &F,
    ) -> Result<R, (Status, String)>
    where
        F: Fn(Channel, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut req = Request::new(message);
        if let Some(d) = deadline {
            req.set_timeout(d);
        }
        let md = req.metadata_mut();
        insert(md, "x-request-id", &request_id);
        if kind == Call::Write {
            insert(md, "idempotency-key", &self.idempotency_key);
        }
        if let Some(b) = bearer {
            insert(md, "authorization", &format!("Bearer {b}"));
        }
        f(channel, req)
            .await
            .map(Response::into_inner)
            .map_err(|s| (s, request_id))
    }

    /// A failed call as an error; an unreachable server is named.
    fn status_error(&self, status: &Status, request_id: &str) -> CliError {
        let mut e = CliError::from_status(status, request_id);
        if status.code() == Code::Unavailable {
            e.details.insert(0, format!("server: {}", self.server));
        }
        e
    }

    /// The bearer credential: `--token`, else the session's access token.
    fn bearer(&self) -> Result<String> {
        if let Some(t) = &self.opts.token {
            return Ok(t.clone());
        }
        if let Some(e) = &self.session_error {
            return Err(CliError::auth(e.clone()));
        }
        let s = self.session.as_ref().ok_or_else(|| {
            CliError::auth("not logged in: run `fluxctl login` or set FLUXGATE_TOKEN")
        })?;
        if s.server != self.server {
            return Err(CliError::auth(format!(
                "the session is for {}, not {}: run `fluxctl login` for this server",
                s.server, self.server
            )));
        }
        Ok(s.access_token.clone())
    }

    fn can_refresh(&self) -> bool {
        self.opts.token.is_none()
            && self
                .session
                .as_ref()
                .is_some_and(|s| s.server == self.server && !s.refresh_token_expired())
    }

    async fn refresh_if_due(&mut self) -> Result<()> {
        let due = self.session.as_ref().is_some_and(Session::access_token_due);
        if due && self.can_refresh() {
            self.refresh().await?;
        }
        Ok(())
    }

    /// Exchanges the refresh token for new tokens and saves them.
    pub async fn refresh(&mut self) -> Result<()> {
        let Some(current) = self.session.clone() else {
            return Err(CliError::auth("not logged in: run `fluxctl login`"));
        };
        let req = pb::RefreshSessionRequest {
            refresh_token: current.refresh_token.clone(),
        };
        // Not a write of the command: it must not use up the invocation's idempotency key.
        let resp = self
            .call_anonymous(Call::Read, req, |ch, r| async move {
                AuthServiceClient::new(ch).refresh_session(r).await
            })
            .await
            .map_err(|e| {
                CliError::auth(format!(
                    "the session has ended ({}): run `fluxctl login` again",
                    e.message
                ))
            })?;
        let tokens = resp.tokens.ok_or_else(|| {
            CliError::other(
                "the server refreshed the session without tokens: run `fluxctl login` again",
            )
        })?;
        self.store_session(Session::from_tokens(
            &current.server,
            &current.username,
            &tokens,
        ))
    }
}

fn insert(md: &mut tonic::metadata::MetadataMap, key: &'static str, value: &str) {
    if let Ok(v) = MetadataValue::try_from(value) {
        md.insert(key, v);
    }
}

fn read_pem(path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| CliError::other(format!("cannot read {}: {e}", path.display())))
}
