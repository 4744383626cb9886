//! Accepting connections so that idle ones cannot lock clients out.
//!
//! Every accepted connection holds a file descriptor. A client that connects and sends nothing
//! would hold one for ever (HTTP/2 waits for its preface without a limit), so a thousand of them
//! exhaust the common 1024-descriptor limit and every new client is refused. Here:
//!
//! * a connection must send its first bytes (the HTTP/2 preface, or a TLS ClientHello) within
//!   the handshake timeout, or it is closed; until then it is *pending* and never reaches the
//!   HTTP/2 server;
//! * at most `max_connections` are open at once; when a new one arrives at the limit, the oldest
//!   pending connection is closed to make room (a live client is never dropped for a silent
//!   one); with none pending, the new connection is closed at once;
//! * an `accept` failure (out of descriptors) closes the oldest pending connection and backs off
//!   instead of spinning.
//!
//! Established connections are watched by HTTP/2 keep-alive pings (configured on the server).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Largest request message accepted.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
}

/// An accepted connection that has sent its first bytes; it frees its slot when dropped.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Connections that have not sent anything yet, oldest first: each can be told to close.
#[derive(Default)]
struct Pending {
    next_id: u64,
    queue: VecDeque<(u64, oneshot::Sender<()>)>,
}

impl Pending {
    fn add(&mut self) -> (u64, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        self.next_id += 1;
        self.queue.push_back((self.next_id, tx));
        (self.next_id, rx)
    }

    fn remove(&mut self, id: u64) {
        self.queue.retain(|(i, _)| *i != id);
    }

    /// Closes the oldest pending connection; false when there is none.
    fn evict_oldest(&mut self) -> bool {
        while let Some((_, tx)) = self.queue.pop_front() {
            if tx.send(()).is_ok() {
                return true;
            }
        }
        false
    }
}

/// Raises the soft limit on open files to the hard limit, where it is lower; returns the soft
/// limit in force.
pub fn raise_descriptor_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "could not read or raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    }
}

/// The default connection limit: what the descriptor limit allows, less a reserve for the
/// database pool, log files and the metrics endpoint.
pub fn default_max_connections(descriptor_limit: Option<u64>) -> usize {
    const RESERVE: u64 = 128;
    match descriptor_limit {
        Some(n) => n.saturating_sub(RESERVE).clamp(16, 100_000) as usize,
        None => 1_000,
    }
}

/// Accepts connections on `listener` under `limits`; connections that sent their first bytes
/// come out of the returned stream, for the gRPC server.
pub fn incoming(
    listener: TcpListener,
    limits: Limits,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, limits, tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn accept_loop(listener: TcpListener, limits: Limits, out: mpsc::Sender<io::Result<Conn>>) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let pending = Arc::new(Mutex::new(Pending::default()));
    let evict = |pending: &Mutex<Pending>| {
        pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .evict_oldest()
    };
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors, most likely: make room, and do not spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    evict(&pending);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = out.closed() => return,
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(s) => s,
            Err(_) if evict(&pending) => {
                // The evicted connection frees its slot as soon as its task sees the signal.
                match tokio::time::timeout(
                    Duration::from_millis(500),
                    slots.clone().acquire_owned(),
                )
                .await
                {
                    Ok(Ok(s)) => s,
                    _ => continue,
                }
            }
            Err(_) => {
                tracing::warn!(%peer, limit = limits.max_connections, "connection limit reached: refusing a connection");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (id, evicted) = pending.lock().unwrap_or_else(|e| e.into_inner()).add();
        let (out, pending) = (out.clone(), pending.clone());
        tokio::spawn(async move {
            let mut first = [0u8; 1];
            let ready = tokio::select! {
                // `readable` can wake without data; a peek waits for a byte (0: closed).
                r = stream.peek(&mut first) => matches!(r, Ok(n) if n > 0),
                () = tokio::time::sleep(limits.handshake_timeout) => {
                    tracing::debug!(%peer, "closing a connection that sent nothing");
                    false
                }
                _ = evicted => {
                    tracing::debug!(%peer, "closing a silent connection to make room");
                    false
                }
            };
            pending.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
            if ready {
                let _ = out
                    .send(Ok(Conn {
                        stream,
                        _slot: slot,
                    }))
                    .await;
            }
        });
    }
}
