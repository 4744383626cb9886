//! gRPC load benchmark: CheckPermission on a real FluxGate server against a bare tonic echo
//! service, with the same load client, in the same run, at 1, 16 and 64 requests in flight.
//! Everything runs on loopback in this process; the client shares the cores with the servers,
//! so the ratios are the figures that mean something.
//!
//! `load [--seconds 2] [--rounds 5] [--levels 1,16,64]`: each level alternates `rounds` rounds
//! of `seconds` on each side, after a one-second warm-up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fluxgate_bench::support::{arg, start_server};
use fluxgate_proto::v1 as pb;
use fluxgate_proto::v1::permission_service_client::PermissionServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

pub mod echo {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("bench.echo.v1");
}

use echo::echo_service_client::EchoServiceClient;
use echo::echo_service_server::{EchoService, EchoServiceServer};

#[derive(Debug, Default)]
struct Echo;

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(
        &self,
        request: Request<echo::EchoRequest>,
    ) -> Result<Response<echo::EchoResponse>, Status> {
        Ok(Response::new(echo::EchoResponse {
            message: request.into_inner().message,
        }))
    }
}

async fn serve_echo() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EchoServiceServer::new(Echo))
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            ),
    );
    Ok(addr)
}

/// A FluxGate server with one user allowed to READ in one environment; returns the address,
/// the user's access token and the check to make.
async fn serve_fluxgate(
    dir: &std::path::Path,
) -> anyhow::Result<(SocketAddr, String, pb::PermissionCheck)> {
    let (addr, token) = start_server(format!("sqlite://{}", dir.join("load.db").display())).await?;
    let ch = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut auth = pb::auth_service_client::AuthServiceClient::new(ch.clone());
    fn with<T>(token: &str, m: T) -> Request<T> {
        let mut r = Request::new(m);
        if let Ok(v) = format!("Bearer {token}").parse() {
            r.metadata_mut().insert("authorization", v);
        }
        r
    }
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
                group: g.name,
                member: u.name,
            },
        ))
        .await?;
    let user_token = auth
        .login(pb::LoginRequest {
            username: "loader".into(),
            password: "Loader-pass-12".into(),
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
    Ok((addr, user_token, check))
}

#[derive(Debug, Clone, Copy)]
struct Figures {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
}

/// Latencies and counts pooled over rounds.
#[derive(Debug, Default)]
struct Pool {
    lat: Vec<Duration>,
    secs: f64,
}

impl Pool {
    fn add(&mut self, (lat, secs): (Vec<Duration>, f64)) {
        self.lat.extend(lat);
        self.secs += secs;
    }

    fn figures(&mut self) -> Figures {
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
async fn measure<F, Fut>(
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

async fn channels(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<Channel>> {
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs: u64 = arg("--seconds").map_or(Ok(2), |s| s.parse())?;
    let rounds: usize = arg("--rounds").map_or(Ok(5), |s| s.parse())?;
    let levels: Vec<usize> = arg("--levels")
        .unwrap_or_else(|| "1,16,64".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let dir = tempfile::tempdir()?;
    let echo_addr = serve_echo().await?;
    let (fg_addr, token, check) = serve_fluxgate(dir.path()).await?;
    let echo_ch = channels(echo_addr, 4).await?;
    let fg_ch = channels(fg_addr, 4).await?;
    let auth: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;

    println!(
        "| in flight | echo req/s | echo p50 µs | echo p99 µs | CheckPermission req/s | p50 µs | p99 µs | throughput ratio | p99 ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in &levels {
        let echo_call = |ch: Channel| async move {
            EchoServiceClient::new(ch)
                .echo(echo::EchoRequest {
                    message: "ping".into(),
                })
                .await
                .is_ok()
        };
        let check_call = {
            let (auth, check) = (auth.clone(), check.clone());
            move |ch: Channel| {
                let (auth, check) = (auth.clone(), check.clone());
                async move {
                    let mut r = Request::new(pb::CheckPermissionRequest {
                        check: Some(check),
                        min_revision: 0,
                    });
                    r.metadata_mut().insert("authorization", auth);
                    PermissionServiceClient::new(ch)
                        .check_permission(r)
                        .await
                        .is_ok_and(|r| r.into_inner().decision.is_some_and(|d| d.allowed))
                }
            }
        };
        // Warm both, then alternate short rounds so that drift in the machine's load hits both
        // sides alike; the figures pool every round.
        measure(&echo_ch, n, 1, echo_call).await;
        measure(&fg_ch, n, 1, check_call.clone()).await;
        let (mut e, mut c) = (Pool::default(), Pool::default());
        for _ in 0..rounds {
            e.add(measure(&echo_ch, n, secs, echo_call).await);
            c.add(measure(&fg_ch, n, secs, check_call.clone()).await);
        }
        let (e, c) = (e.figures(), c.figures());
        println!(
            "| {n} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |",
            e.rps,
            e.p50_us,
            e.p99_us,
            c.rps,
            c.p50_us,
            c.p99_us,
            c.rps / e.rps,
            c.p99_us / e.p99_us
        );
    }
    Ok(())
}
