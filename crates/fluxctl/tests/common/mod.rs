//! The real server on an ephemeral port with a fresh SQLite database or PostgreSQL schema, and
//! the `fluxctl` binary run against it as an operator or a CI job would.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fluxgate_server::Config;
use fluxgate_server::config::HashingConfig;
use tokio::sync::oneshot;

pub const BIN: &str = env!("CARGO_BIN_EXE_fluxctl");
pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "Bootstrap-Pass-1";

/// Variables that must not leak from the environment running the tests.
const SCRUBBED: &[&str] = &[
    "FLUXGATE_SERVER",
    "FLUXGATE_TOKEN",
    "FLUXGATE_CA_CERT",
    "FLUXGATE_CLIENT_CERT",
    "FLUXGATE_CLIENT_KEY",
    "FLUXGATE_PASSWORD",
    "FLUXGATE_NEW_PASSWORD",
    "FLUXCTL_SESSION_FILE",
    "FLUXCTL_IDEMPOTENCY_KEY",
    "FLUXCTL_OUTPUT",
    "FLUXCTL_TIMEOUT",
];

/// The database a test server runs on.
pub enum Backend {
    Sqlite,
    Postgres(fluxgate_store::testing::TestSchema),
}

impl Backend {
    /// A fresh PostgreSQL schema, or `None` (said loudly) when PostgreSQL is unreachable and
    /// not required.
    pub fn postgres() -> Option<Backend> {
        fluxgate_store::testing::fresh_postgres().map(Backend::Postgres)
    }
}

/// Runs each named test fn (taking a [`Backend`]) on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::$name($crate::common::Backend::Sqlite)
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                if let Some(b) = $crate::common::Backend::postgres() {
                    super::$name(b)
                }
            })*
        }
    };
}

/// A server running on its own runtime thread; stopped on drop.
pub struct TestServer {
    /// `http://127.0.0.1:<port>` (or `https://localhost:<port>` with TLS).
    pub url: String,
    pub addr: std::net::SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
    /// Keeps a PostgreSQL schema until the server is gone (dropped after it).
    _backend: Backend,
}

/// Loopback, ephemeral port, cheap Argon2 (tests only), a known bootstrap password.
pub fn test_config(dir: &Path) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: format!("sqlite://{}", dir.join("fluxgate.db").display()),
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
    config
}

impl TestServer {
    pub fn start(backend: Backend) -> TestServer {
        Self::start_with(backend, |_, _| {})
    }

    /// Starts with the test configuration as `f` adjusts it (given the temporary directory).
    pub fn start_with(backend: Backend, f: impl FnOnce(&mut Config, &Path)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        if let Backend::Postgres(schema) = &backend {
            config.database_url = schema.url.clone();
        }
        f(&mut config, dir.path());
        let tls = config.tls.cert_path.is_some();
        let (addr_tx, addr_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let server = fluxgate_server::Server::bind(config).await.unwrap();
                addr_tx.send(server.local_addr().unwrap()).unwrap();
                server
                    .run(async move {
                        let _ = stop_rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr: std::net::SocketAddr = addr_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server starts");
        let url = if tls {
            format!("https://localhost:{}", addr.port())
        } else {
            format!("http://{addr}")
        };
        TestServer {
            url,
            addr,
            shutdown: Some(stop_tx),
            thread: Some(thread),
            _dir: dir,
            _backend: backend,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The outcome of one `fluxctl` run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "fluxctl failed: {self:#?}");
        &self.stdout
    }

    /// Asserts success and parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// Asserts the exit code.
    #[track_caller]
    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code: {self:#?}");
        self
    }
}

/// One operator: a server URL, a session file and extra environment.
#[derive(Clone)]
pub struct Operator {
    pub server: String,
    pub session: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Operator {
    /// An operator whose session file lives in `dir`.
    pub fn new(server: &str, dir: &Path, name: &str) -> Operator {
        Operator {
            server: server.to_owned(),
            session: dir.join(name).join("session.json"),
            env: Vec::new(),
        }
    }

    /// The same operator with one more environment variable.
    pub fn with_env(&self, key: &str, value: &str) -> Operator {
        let mut o = self.clone();
        o.env.push((key.to_owned(), value.to_owned()));
        o
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        for v in SCRUBBED {
            c.env_remove(v);
        }
        let home = self.session.parent().unwrap_or(Path::new("."));
        c.args(args)
            .env("FLUXGATE_SERVER", &self.server)
            .env("FLUXCTL_SESSION_FILE", &self.session)
            .env("XDG_CONFIG_HOME", home)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        c
    }

    /// Runs fluxctl and waits for it.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().unwrap())
    }

    /// Runs fluxctl with `input` on standard input.
    pub fn run_with_stdin(&self, args: &[&str], input: &str) -> Run {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        Run::from(child.wait_with_output().unwrap())
    }

    /// Logs in with the password on standard input.
    pub fn login(&self, username: &str, password: &str) -> Run {
        self.run_with_stdin(
            &["login", username, "--password-stdin"],
            &format!("{password}\n"),
        )
    }
}

/// `json[a][b]…` as a string, panicking with the document when missing.
#[track_caller]
pub fn text(json: &serde_json::Value, path: &[&str]) -> String {
    let mut v = json;
    for p in path {
        v = v
            .get(p)
            .unwrap_or_else(|| panic!("no {path:?} in {json:#}"));
    }
    v.as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string in {json:#}"))
        .to_owned()
}

/// Waits for a child process with a limit; kills it when the limit passes.
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Polls `f` until it returns `Some`, for at most `limit`.
pub fn eventually<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A portfolio, an application and an environment created through fluxctl; their names.
pub struct Catalog {
    pub portfolio: String,
    pub application: String,
    pub environment: String,
}

pub fn catalog(admin: &Operator, portfolio: &str) -> Catalog {
    let p = admin
        .run(&["-o", "json", "portfolios", "create", portfolio])
        .json();
    let portfolio = text(&p, &["portfolio", "name"]);
    let a = admin
        .run(&[
            "-o",
            "json",
            "applications",
            "create",
            "--portfolio",
            &portfolio,
            "web",
        ])
        .json();
    let application = text(&a, &["application", "name"]);
    let e = admin
        .run(&[
            "-o",
            "json",
            "environments",
            "create",
            "--application",
            &application,
            "prod",
            "--production",
        ])
        .json();
    let environment = text(&e, &["environment", "name"]);
    Catalog {
        portfolio,
        application,
        environment,
    }
}

/// A portfolio service account with CHANGE_VALUE on `env` through a group; returns its name
/// and an API key.
/// A second Team Admin, signed in: someone other than the pipeline's creator, to review.
#[allow(dead_code)]
pub fn reviewer(admin: &Operator, server: &str, dir: &Path, username: &str) -> Operator {
    admin
        .with_env("FLUXGATE_NEW_PASSWORD", "Reviewer-pass-1")
        .run(&[
            "users",
            "create",
            username,
            "--email",
            &format!("{username}@example.com"),
            "--display-name",
            username,
            "--role",
            "team-admin",
            "--with-password",
        ])
        .ok();
    let op = Operator::new(server, dir, username);
    op.login(username, "Reviewer-pass-1").ok();
    op
}

pub fn pipeline_account(admin: &Operator, cat: &Catalog) -> (String, String) {
    let sa = admin
        .run(&[
            "-o",
            "json",
            "service-accounts",
            "create",
            "--display-name",
            "deploy pipeline",
            "--portfolio",
            &cat.portfolio,
        ])
        .json();
    let sa = text(&sa, &["serviceAccount", "name"]);
    let key = admin
        .run(&["-o", "json", "service-accounts", "keys", "create", &sa])
        .json();
    let secret = text(&key, &["secret"]);
    let grant = format!("{}=read,change-value", cat.environment);
    let g = admin
        .run(&[
            "-o",
            "json",
            "groups",
            "create",
            "--portfolio",
            &cat.portfolio,
            "Pipelines",
            "--env-grant",
            &grant,
        ])
        .json();
    let group = text(&g, &["group", "name"]);
    admin.run(&["groups", "members", "add", &group, &sa]).ok();
    (sa, secret)
}
