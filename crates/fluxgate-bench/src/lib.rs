//! Benchmark support: a deterministic reference model and its encodings for FluxGate's engine,
//! cedar-policy and casbin, so that the three can be measured side by side and checked to agree
//! on every decision.

pub mod model;
pub mod peers;

pub mod support {
    //! What the benchmark binaries share: flags, an in-process server, a seeded world, and the
    //! closed-loop load measurement.

    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use fluxgate_proto::v1 as pb;
    use fluxgate_proto::v1::auth_service_client::AuthServiceClient;
    use fluxgate_server::config::HashingConfig;
    use fluxgate_server::{Config, Server};
    use tonic::Request;
    use tonic::transport::{Channel, Endpoint};

    /// The value after `name` on the command line.
    pub fn arg(name: &str) -> Option<String> {
        let mut it = std::env::args();
        while let Some(a) = it.next() {
            if a == name {
                return it.next();
            }
        }
        None
    }

    /// The bootstrap admin's password on benchmark servers.
    pub const ADMIN_PASSWORD: &str = "Bench-admin-pass-1";

    /// Starts a real FluxGate server on an ephemeral loopback port against `database_url`
    /// (cheap Argon2: logins are not what these benchmarks measure) and returns its address
    /// and an access token of the bootstrap admin.
    pub async fn start_server(database_url: String) -> anyhow::Result<(SocketAddr, String)> {
        start_server_hashing(
            database_url,
            HashingConfig {
                memory_kib: 256,
                iterations: 1,
                parallelism: 1,
                max_concurrent: 2,
            },
        )
        .await
    }

    /// [`start_server`] with the given Argon2id parameters.
    pub async fn start_server_hashing(
        database_url: String,
        password_hashing: HashingConfig,
    ) -> anyhow::Result<(SocketAddr, String)> {
        let mut config = Config {
            listen: "127.0.0.1:0".parse()?,
            database_url,
            password_hashing,
            ..Config::default()
        };
        config.bootstrap.password = Some(ADMIN_PASSWORD.into());
        // One load client asks for many reset links (login_timing): no per-client limit.
        config.password_reset.requests_per_client_per_hour = 1_000_000;
        let server = Server::bind(config).await?;
        let addr = server.local_addr()?;
        tokio::spawn(server.run(std::future::pending()));
        let ch = Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        let token = login(ch, "admin", ADMIN_PASSWORD).await?;
        Ok((addr, token))
    }

    /// Creates `account` as `admin` and a key for it; the key's secret.
    pub async fn service_account_key(
        ch: Channel,
        admin: &str,
        account: pb::ServiceAccount,
    ) -> anyhow::Result<String> {
        use pb::service_account_service_client::ServiceAccountServiceClient;
        let mut sas = ServiceAccountServiceClient::new(ch);
        let sa = sas
            .create_service_account(with(
                admin,
                pb::CreateServiceAccountRequest {
                    service_account: Some(account),
                },
            ))
            .await?
            .into_inner()
            .service_account
            .ok_or_else(|| anyhow::anyhow!("no service account"))?;
        Ok(sas
            .create_service_account_key(with(
                admin,
                pb::CreateServiceAccountKeyRequest {
                    parent: sa.name,
                    key: None,
                },
            ))
            .await?
            .into_inner()
            .secret)
    }

    /// Signs `user` in with `password`; the access token.
    pub async fn login(ch: Channel, user: &str, password: &str) -> anyhow::Result<String> {
        Ok(AuthServiceClient::new(ch)
            .login(pb::LoginRequest {
                username: user.into(),
                password: password.into(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .tokens
            .ok_or_else(|| anyhow::anyhow!("no tokens"))?
            .access_token)
    }

    /// What [`seed_reader`] made.
    #[derive(Debug, Clone)]
    pub struct Seeded {
        /// The reader's access token.
        pub user_token: String,
        /// READ on the environment, for the caller.
        pub check: pb::PermissionCheck,
        /// The group that grants it.
        pub group: String,
        /// The reader, `users/{id}`.
        pub user: String,
        pub admin_token: String,
    }

    /// The `authorization` value for a token, parsed once so that load loops do not pay for it
    /// on every request.
    pub fn bearer(token: &str) -> anyhow::Result<Auth> {
        Ok(format!("Bearer {token}").parse()?)
    }

    /// A parsed `authorization` header value.
    pub type Auth = tonic::metadata::MetadataValue<tonic::metadata::Ascii>;

    /// One CheckPermission with `auth`, at least as of `min_revision`; true when it is answered
    /// and allowed.
    pub async fn check_allowed(
        ch: Channel,
        auth: &Auth,
        check: &pb::PermissionCheck,
        min_revision: i64,
    ) -> bool {
        let mut r = Request::new(pb::CheckPermissionRequest {
            check: Some(check.clone()),
            min_revision,
        });
        r.metadata_mut().insert("authorization", auth.clone());
        pb::permission_service_client::PermissionServiceClient::new(ch)
            .check_permission(r)
            .await
            .is_ok_and(|r| r.into_inner().decision.is_some_and(|d| d.allowed))
    }

    /// A request carrying a bearer token.
    pub fn with<T>(token: &str, m: T) -> Request<T> {
        let mut r = Request::new(m);
        if let Ok(v) = format!("Bearer {token}").parse() {
            r.metadata_mut().insert("authorization", v);
        }
        r
    }

    /// Seeds a portfolio, application and environment, a group granting READ there, and a user in
    /// it (`loader`), through the server at `addr` as the admin holding `token`.
    pub async fn seed_reader(addr: SocketAddr, token: &str) -> anyhow::Result<Seeded> {
        let token = token.to_owned();
        let ch = Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        let mut auth = pb::auth_service_client::AuthServiceClient::new(ch.clone());
        let mut cat = pb::catalog_service_client::CatalogServiceClient::new(ch.clone());
        let p = cat
            .create_portfolio(with(
                &token,
                pb::CreatePortfolioRequest {
                    portfolio: Some(pb::Portfolio {
                        display_name: "load".into(),
                        ..Default::default()
                    }),
                },
            ))
            .await?
            .into_inner()
            .portfolio
            .unwrap_or_default();
        let a = cat
            .create_application(with(
                &token,
                pb::CreateApplicationRequest {
                    parent: p.name.clone(),
                    application: Some(pb::Application {
                        display_name: "web".into(),
                        ..Default::default()
                    }),
                },
            ))
            .await?
            .into_inner()
            .application
            .unwrap_or_default();
        let e = cat
            .create_environment(with(
                &token,
                pb::CreateEnvironmentRequest {
                    parent: a.name.clone(),
                    environment: Some(pb::Environment {
                        display_name: "prod".into(),
                        ..Default::default()
                    }),
                },
            ))
            .await?
            .into_inner()
            .environment
            .unwrap_or_default();
        let mut users = pb::user_service_client::UserServiceClient::new(ch.clone());
        let u = users
            .create_user(with(
                &token,
                pb::CreateUserRequest {
                    user: Some(pb::User {
                        username: "loader".into(),
                        email: "loader@example.com".into(),
                        display_name: "L".into(),
                        role: pb::Role::Requester as i32,
                        ..Default::default()
                    }),
                    initial_password: "Loader-pass-12".into(),
                    require_password_change: false,
                },
            ))
            .await?
            .into_inner()
            .user
            .unwrap_or_default();
        let mut groups = pb::group_service_client::GroupServiceClient::new(ch.clone());
        let g = groups
            .create_group(with(
                &token,
                pb::CreateGroupRequest {
                    parent: p.name.clone(),
                    group: Some(pb::Group {
                        display_name: "readers".into(),
                        environment_grants: vec![pb::EnvironmentGrant {
                            environment: e.name.clone(),
                            permissions: vec![pb::ValuePermission::Read as i32],
                        }],
                        ..Default::default()
                    }),
                },
            ))
            .await?
            .into_inner()
            .group
            .unwrap_or_default();
        groups
            .add_group_member(with(
                &token,
                pb::AddGroupMemberRequest {
                    reason: String::new(),
                    group: g.name.clone(),
                    member: u.name.clone(),
                },
            ))
            .await?;
        let user_token = auth
            .login(pb::LoginRequest {
                username: "loader".into(),
                password: "Loader-pass-12".into(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .tokens
            .ok_or_else(|| anyhow::anyhow!("no tokens"))?
            .access_token;
        let check = pb::PermissionCheck {
            principal: String::new(),
            permission: pb::Permission::Read as i32,
            resource: e.name,
        };
        Ok(Seeded {
            user_token,
            check,
            group: g.name,
            user: u.name,
            admin_token: token,
        })
    }

    #[derive(Debug, Clone, Copy)]
    pub struct Figures {
        pub rps: f64,
        pub p50_us: f64,
        pub p99_us: f64,
    }

    /// Latencies and counts pooled over rounds.
    #[derive(Debug, Default)]
    pub struct Pool {
        lat: Vec<Duration>,
        secs: f64,
    }

    impl Pool {
        pub fn add(&mut self, (lat, secs): (Vec<Duration>, f64)) {
            self.lat.extend(lat);
            self.secs += secs;
        }

        pub fn figures(&mut self) -> Figures {
            self.lat.sort();
            let pct = |p: f64| {
                self.lat
                    .get(((self.lat.len() as f64 - 1.0) * p) as usize)
                    .map_or(0.0, |d| d.as_secs_f64() * 1e6)
            };
            Figures {
                rps: self.lat.len() as f64 / self.secs,
                p50_us: pct(0.5),
                p99_us: pct(0.99),
            }
        }
    }

    /// Runs `in_flight` loops for `secs` seconds, each sending one request at a time; returns the
    /// latencies and the elapsed seconds.
    pub async fn measure<F, Fut>(
        channels: &[Channel],
        in_flight: usize,
        secs: u64,
        make: F,
    ) -> (Vec<Duration>, f64)
    where
        F: Fn(Channel) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = bool> + Send,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        let start = Instant::now();
        for i in 0..in_flight {
            let (ch, stop, make) = (
                channels[i % channels.len()].clone(),
                stop.clone(),
                make.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(100_000);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    assert!(make(ch.clone()).await, "request failed");
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.store(true, Ordering::Relaxed);
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.unwrap_or_default());
        }
        (lat, start.elapsed().as_secs_f64())
    }

    pub async fn channels(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<Channel>> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(
                Endpoint::from_shared(format!("http://{addr}"))?
                    .tcp_nodelay(true)
                    .connect()
                    .await?,
            );
        }
        Ok(out)
    }

    /// The `fluxgate` binary serving as its own process (so that its memory can be read from
    /// `/proc`), on an ephemeral port; killed when dropped.
    pub struct Process {
        child: std::process::Child,
        pub addr: SocketAddr,
    }

    impl Process {
        pub fn pid(&self) -> u32 {
            self.child.id()
        }
    }

    impl Drop for Process {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Starts `--bin PATH` (else the `fluxgate` beside the running benchmark) with `serve` on
    /// `database_url`, the bootstrap admin's password `admin_password`, OWASP's Argon2id
    /// parameters and the extra environment `env`; returns once it listens.
    pub fn spawn_server(
        database_url: &str,
        admin_password: &str,
        env: &[(&str, String)],
    ) -> anyhow::Result<Process> {
        use anyhow::Context as _;
        use std::io::{BufRead as _, BufReader};
        let bin = match arg("--bin") {
            Some(p) => p.into(),
            None => std::env::current_exe()?.with_file_name("fluxgate"),
        };
        let mut cmd = std::process::Command::new(&bin);
        cmd.arg("serve")
            .env("FLUXGATE_DATABASE_URL", database_url)
            .env("FLUXGATE_LISTEN", "127.0.0.1:0")
            .env("FLUXGATE_BOOTSTRAP_PASSWORD", admin_password)
            .env("FLUXGATE_ARGON2_MEMORY_KIB", "19456")
            .env("FLUXGATE_ARGON2_ITERATIONS", "2")
            .env("FLUXGATE_LOG", "warn")
            .env_remove("FLUXGATE_CONFIG")
            .stdout(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut process = Process {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let mut lines = BufReader::new(stdout).lines();
        process.addr = loop {
            let line = lines.next().context("server exited before listening")??;
            if let Some(a) = line.strip_prefix("FluxGate listening on ") {
                break a.trim().parse()?;
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(process)
    }

    /// A line of `/proc/{pid}/status` as a number (`VmRSS` in KiB, `Threads`, …).
    pub fn proc_status(pid: u32, field: &str) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}
