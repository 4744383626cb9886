//! gRPC load benchmark: CheckPermission on a real FluxGate server against a bare tonic echo
//! service, with the same load client, in the same run, at 1, 16 and 64 requests in flight.
//! Each server is its own process, as deployed: FluxGate is the `fluxgate` binary (logging at
//! its default level, `info`, unless `--log` says otherwise), and the echo is this benchmark
//! started again with `--serve-echo`. The client shares the cores with the servers, so the
//! ratios are the figures that mean something.
//!
//! `load [--seconds 2] [--rounds 5] [--levels 1,16,64] [--log info] [--bin PATH] [--call check]
//! [--echo-wrap PROGRAM]`:
//! each level alternates `rounds` rounds of `seconds` on each side, after a one-second warm-up.
//! `--call health` puts FluxGate's health check (no token, a few bytes each way, no handler
//! work) in CheckPermission's place: what the server's stack costs on its own.
//!
//! A third side, the like-for-like echo, is the same echo sent what CheckPermission is sent:
//! the caller's bearer token and a message of the same size. Against it, the ratio is what
//! FluxGate's own work costs; against the bare echo, the token's transport is counted too
//! (a tonic client never lets HPACK index an `authorization` value, so every call encodes
//! and decodes the whole token).

use std::net::SocketAddr;

use fluxgate_bench::support::{
    Pool, Seeded, arg, bearer, channels, check_allowed, login, measure, seed_reader, spawn_server,
};
use tonic::transport::Channel;
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

/// The echo server of `--serve-echo`: prints its address, then serves until killed.
async fn serve_echo() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("echo listening on {}", listener.local_addr()?);
    tonic::transport::Server::builder()
        .add_service(EchoServiceServer::new(Echo))
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        )
        .await?;
    Ok(())
}

/// This benchmark again, as the echo server's process; killed when dropped.
struct EchoProcess(std::process::Child);

impl Drop for EchoProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_echo() -> anyhow::Result<(EchoProcess, SocketAddr)> {
    use anyhow::Context as _;
    use std::io::{BufRead as _, BufReader};
    // `--echo-wrap PROGRAM` starts the echo through PROGRAM (given the echo's command line),
    // e.g. a profiler, as `--bin` does for FluxGate.
    let exe = std::env::current_exe()?;
    let mut cmd = match arg("--echo-wrap") {
        Some(wrap) => {
            let mut c = std::process::Command::new(wrap);
            c.arg(exe);
            c
        }
        None => std::process::Command::new(exe),
    };
    let mut child = cmd
        .arg("--serve-echo")
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("echo stdout")?;
    let process = EchoProcess(child);
    let line = BufReader::new(stdout)
        .lines()
        .next()
        .context("the echo server exited before listening")??;
    let addr = line
        .strip_prefix("echo listening on ")
        .context("the echo server's first line")?
        .parse()?;
    Ok((process, addr))
}

/// FluxGate's overall health check, answered SERVING.
async fn serving(ch: Channel) -> bool {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
}

const ADMIN_PASSWORD: &str = "Load-admin-pass-1";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--serve-echo") {
        return serve_echo().await;
    }
    let secs: u64 = arg("--seconds").map_or(Ok(2), |s| s.parse())?;
    let rounds: usize = arg("--rounds").map_or(Ok(5), |s| s.parse())?;
    let levels: Vec<usize> = arg("--levels")
        .unwrap_or_else(|| "1,16,64".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let health = match arg("--call").as_deref() {
        None | Some("check") => false,
        Some("health") => true,
        Some(other) => anyhow::bail!("--call is check or health, not {other:?}"),
    };
    let dir = tempfile::tempdir()?;
    let (_echo, echo_addr) = spawn_echo()?;
    // A FluxGate server (SQLite) with one user allowed to READ in one environment.
    let log = arg("--log").unwrap_or_else(|| "info".into());
    let db = format!("sqlite://{}", dir.path().join("load.db").display());
    let server = spawn_server(&db, ADMIN_PASSWORD, &[("FLUXGATE_LOG", log)])?;
    let fg_addr = server.addr;
    let admin = login(
        channels(fg_addr, 1).await?.remove(0),
        "admin",
        ADMIN_PASSWORD,
    )
    .await?;
    let seeded: Seeded = seed_reader(fg_addr, &admin).await?;
    let (token, check) = (seeded.user_token, seeded.check);
    let echo_ch = channels(echo_addr, 4).await?;
    let fg_ch = channels(fg_addr, 4).await?;
    let auth = bearer(&token)?;
    // The like-for-like echo's message: as long as CheckPermission's request (for the health
    // check, whose request is empty, empty).
    let like = if health {
        String::new()
    } else {
        use prost::Message as _;
        let size = fluxgate_proto::v1::CheckPermissionRequest {
            check: Some(check.clone()),
            min_revision: 0,
        }
        .encoded_len();
        "x".repeat(size.saturating_sub(2))
    };

    let name = if health { "Health" } else { "CheckPermission" };
    println!(
        "| in flight | echo req/s | echo p50 µs | echo p99 µs | {name} req/s | p50 µs | p99 µs | throughput ratio | p99 ratio | like-for-like echo req/s | ratio to it |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &n in &levels {
        let echo_call = |ch: Channel| async move {
            EchoServiceClient::new(ch)
                .echo(echo::EchoRequest {
                    message: "ping".into(),
                })
                .await
                .is_ok()
        };
        let like_call = {
            let (auth, like) = (auth.clone(), like.clone());
            move |ch: Channel| {
                let mut r = Request::new(echo::EchoRequest {
                    message: like.clone(),
                });
                if !health {
                    r.metadata_mut().insert("authorization", auth.clone());
                }
                async move { EchoServiceClient::new(ch).echo(r).await.is_ok() }
            }
        };
        let check_call = {
            let (auth, check) = (auth.clone(), check.clone());
            move |ch: Channel| {
                let (auth, check) = (auth.clone(), check.clone());
                async move {
                    if health {
                        serving(ch).await
                    } else {
                        check_allowed(ch, &auth, &check, 0).await
                    }
                }
            }
        };
        // Warm both, then alternate short rounds so that drift in the machine's load hits both
        // sides alike; the figures pool every round.
        measure(&echo_ch, n, 1, echo_call).await;
        measure(&fg_ch, n, 1, check_call.clone()).await;
        measure(&echo_ch, n, 1, like_call.clone()).await;
        let (mut e, mut c, mut l) = (Pool::default(), Pool::default(), Pool::default());
        for _ in 0..rounds {
            e.add(measure(&echo_ch, n, secs, echo_call).await);
            c.add(measure(&fg_ch, n, secs, check_call.clone()).await);
            l.add(measure(&echo_ch, n, secs, like_call.clone()).await);
        }
        let (e, c, l) = (e.figures(), c.figures(), l.figures());
        println!(
            "| {n} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} |",
            e.rps,
            e.p50_us,
            e.p99_us,
            c.rps,
            c.p50_us,
            c.p99_us,
            c.rps / e.rps,
            c.p99_us / e.p99_us,
            l.rps,
            c.rps / l.rps
        );
    }
    Ok(())
}
