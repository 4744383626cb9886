//! Benchmark support: a deterministic reference model and its encodings for FluxGate's engine,
//! cedar-policy and casbin, so that the three can be measured side by side and checked to agree
//! on every decision.

pub mod model;
pub mod peers;

pub mod support {
    //! What the benchmark binaries share: flags and an in-process server.

    use std::net::SocketAddr;

    use fluxgate_proto::v1 as pb;
    use fluxgate_proto::v1::auth_service_client::AuthServiceClient;
    use fluxgate_server::config::HashingConfig;
    use fluxgate_server::{Config, Server};

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
        let mut config = Config {
            listen: "127.0.0.1:0".parse()?,
            database_url,
            password_hashing: HashingConfig {
                memory_kib: 256,
                iterations: 1,
                parallelism: 1,
                max_concurrent: 2,
            },
            ..Config::default()
        };
        config.bootstrap.password = Some(ADMIN_PASSWORD.into());
        let server = Server::bind(config).await?;
        let addr = server.local_addr()?;
        tokio::spawn(server.run(std::future::pending()));
        let token = AuthServiceClient::connect(format!("http://{addr}"))
            .await?
            .login(pb::LoginRequest {
                username: "admin".into(),
                password: ADMIN_PASSWORD.into(),
            })
            .await?
            .into_inner()
            .tokens
            .ok_or_else(|| anyhow::anyhow!("no tokens"))?
            .access_token;
        Ok((addr, token))
    }
}
