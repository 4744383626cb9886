//! gRPC load benchmark: CheckPermission on a real FluxGate server against a bare tonic echo
//! service, with the same load client, in the same run, at 1, 16 and 64 requests in flight.
//! Everything runs on loopback in this process; the client shares the cores with the servers,
//! so the ratios are the figures that mean something.
//!
//! `load [--seconds 2] [--rounds 5] [--levels 1,16,64]`: each level alternates `rounds` rounds
//! of `seconds` on each side, after a one-second warm-up.

use std::net::SocketAddr;

use fluxgate_bench::support::{
    Pool, Seeded, arg, bearer, channels, check_allowed, measure, seed_reader, start_server,
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

/// A FluxGate server (SQLite) with one user allowed to READ in one environment.
async fn serve_fluxgate(dir: &std::path::Path) -> anyhow::Result<(SocketAddr, Seeded)> {
    let (addr, token) = start_server(format!("sqlite://{}", dir.join("load.db").display())).await?;
    Ok((addr, seed_reader(addr, &token).await?))
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
    let (fg_addr, seeded) = serve_fluxgate(dir.path()).await?;
    let (token, check) = (seeded.user_token, seeded.check);
    let echo_ch = channels(echo_addr, 4).await?;
    let fg_ch = channels(fg_addr, 4).await?;
    let auth = bearer(&token)?;

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
                async move { check_allowed(ch, &auth, &check, 0).await }
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
