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
//! With TLS configured, the handshake is made here too, within the same timeout, and offers
//! both `h2` and `http/1.1` by ALPN: gRPC needs HTTP/2, while browsers, SCIM clients and
//! sign-in redirects may speak HTTP/1.1 (tonic's own TLS offers `h2` alone, and a client that
//! asks for `http/1.1` only would be refused in the handshake).
//!
//! Established connections are watched by HTTP/2 keep-alive pings (configured on the server).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Largest request message accepted.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// The peer's address of the connection a plain HTTP request (SCIM, sign-in) came on: what
/// `tonic::Request::remote_addr` gives a gRPC call. With or without TLS, a connection tells
/// its peer as [`TcpConnectInfo`].
pub fn remote_addr(extensions: &http::Extensions) -> Option<std::net::SocketAddr> {
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
}

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
}

/// Expected bursts of writes: a change about to be sent to many watch streams at once.
///
/// h2 writes a connection's queued frames at each turn of the connection's task, and a message
/// queued by one stream wakes that task straight away (tokio runs it next, on the same worker).
/// So when a change went to 1,500 streams over a few connections, each message went out as its
/// own system call, the connection's task running once per message. While a burst is expected,
/// a connection's write first waits one turn of the worker ([`tokio::task::yield_now`]): the
/// other streams' messages join h2's write buffer meanwhile and go out together. Outside a burst
/// (a lone call's reply, say), writes go out at once.
#[derive(Debug)]
pub struct Bursts {
    epoch: Instant,
    /// Microseconds after `epoch` until which a burst is expected.
    until_us: AtomicU64,
}

impl Default for Bursts {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            until_us: AtomicU64::new(0),
        }
    }
}

impl Bursts {
    /// A burst of writes is coming, within `window` from now.
    pub fn expect(&self, window: Duration) {
        let until = (self.epoch.elapsed() + window).as_micros();
        self.until_us
            .fetch_max(u64::try_from(until).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn expected(&self) -> bool {
        let until = self.until_us.load(Ordering::Relaxed);
        until != 0 && self.epoch.elapsed().as_micros() < u128::from(until)
    }
}

/// An accepted connection that has sent its first bytes; it frees its slot when dropped.
///
/// Its writes are gathered during expected [`Bursts`]. They are reported as not vectored so
/// that h2 copies frames of up to 1 KiB into its 16 KiB write buffer, where many can go out in
/// one `write` (with vectored writes it chains every frame of 256 bytes or more and sends each
/// on its own; larger frames now cost a second `write`, the frame's head then its body).
pub struct Conn {
    stream: Stream,
    _slot: OwnedSemaphorePermit,
    bursts: Arc<Bursts>,
    /// The turn a write waits for, during a burst.
    turn: Option<Pin<Box<dyn Future<Output = ()> + Send + Sync>>>,
}

/// A connection's bytes: as they come (`Left`), or through TLS (`Right`).
type Stream = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// The TCP connection under a stream.
fn tcp(stream: &Stream) -> &TcpStream {
    match stream {
        Either::Left(s) => s,
        Either::Right(s) => s.get_ref().0,
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("stream", tcp(&self.stream))
            .field("tls", &matches!(self.stream, Either::Right(_)))
            .finish()
    }
}

impl Conn {
    fn new(stream: Stream, slot: OwnedSemaphorePermit, bursts: Arc<Bursts>) -> Self {
        Self {
            stream,
            _slot: slot,
            bursts,
            turn: None,
        }
    }

    /// Ready when a write may go out: at once, or during a burst after one turn.
    fn poll_turn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.turn.is_none() && self.bursts.expected() {
            self.turn = Some(Box::pin(tokio::task::yield_now()));
        }
        if let Some(turn) = &mut self.turn {
            std::task::ready!(turn.as_mut().poll(cx));
            self.turn = None;
        }
        Poll::Ready(())
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        tcp(&self.stream).connect_info()
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
        let this = &mut *self;
        std::task::ready!(this.poll_turn(cx));
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
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
/// come out of the returned stream, for the gRPC server (through `tls`'s handshake first, when
/// given); their writes are gathered during `bursts`.
pub fn incoming(
    listener: TcpListener,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    bursts: Arc<Bursts>,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, limits, tls, bursts, tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    bursts: Arc<Bursts>,
    out: mpsc::Sender<io::Result<Conn>>,
) {
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
        let (out, pending, bursts, tls) =
            (out.clone(), pending.clone(), bursts.clone(), tls.clone());
        let started = tokio::time::Instant::now();
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
            if !ready {
                return;
            }
            let stream = match tls {
                None => Either::Left(stream),
                // The handshake, too, must end within the handshake timeout.
                Some(tls) => {
                    let deadline = started + limits.handshake_timeout;
                    match tokio::time::timeout_at(deadline, tls.accept(stream)).await {
                        Ok(Ok(s)) => Either::Right(Box::new(s)),
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "closing a connection whose TLS handshake did not end in time");
                            return;
                        }
                    }
                }
            };
            let _ = out.send(Ok(Conn::new(stream, slot, bursts))).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    async fn connected(bursts: Arc<Bursts>) -> (Conn, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let slot = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        (Conn::new(Either::Left(stream), slot, bursts), peer)
    }

    /// Writes `bytes`; whether the first poll of the write was pending.
    async fn write(conn: &mut Conn, bytes: &[u8]) -> bool {
        let mut first = None;
        let n = std::future::poll_fn(|cx| {
            let polled = Pin::new(&mut *conn).poll_write(cx, bytes);
            first.get_or_insert(polled.is_pending());
            polled
        })
        .await
        .unwrap();
        assert_eq!(n, bytes.len());
        first.unwrap()
    }

    #[tokio::test]
    async fn writes_wait_one_turn_during_a_burst_and_none_outside() {
        let bursts = Arc::new(Bursts::default());
        let (mut conn, mut peer) = connected(bursts.clone()).await;
        assert!(!conn.is_write_vectored());
        assert!(!bursts.expected());
        assert!(
            !write(&mut conn, b"alone").await,
            "no burst: written at once"
        );

        bursts.expect(Duration::from_secs(60));
        assert!(bursts.expected());
        assert!(write(&mut conn, b"burst").await, "a burst: one turn first");
        assert!(write(&mut conn, b"again").await);

        let mut got = [0u8; 15];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"aloneburstagain");
    }

    #[tokio::test]
    async fn a_burst_ends_with_its_window() {
        let bursts = Bursts::default();
        bursts.expect(Duration::from_millis(5));
        assert!(bursts.expected());
        // A shorter announcement does not cut a longer one short.
        bursts.expect(Duration::ZERO);
        assert!(bursts.expected());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!bursts.expected());
    }
}
