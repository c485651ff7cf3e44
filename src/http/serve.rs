//! Serving the router: the accept loop and one hyper HTTP/1 connection per socket, with the
//! limits `axum::serve` does not set (it runs hyper without a timer, so a half-written request
//! held its socket forever and a few hundred of them used up the file descriptors).
//!
//! - request headers over [`MAX_HEADER_BYTES`] are answered 431 and the connection closed
//!   (hyper's `max_header_size`);
//! - the headers of the first request must arrive within `HTTP_HEADER_TIMEOUT` of the accept;
//! - a keep-alive connection waiting for its next request is closed after `HTTP_IDLE_TIMEOUT`;
//!   once a byte of that request arrives, the rest of its headers must follow within
//!   `HTTP_HEADER_TIMEOUT`.
//!
//! hyper has one setting for both waits (`header_read_timeout`, which in the hyper of our
//! Cargo.lock also runs while a keep-alive connection is idle, hyper#3828) and no idle timeout of
//! its own (hyper#1628).
//! [`HeadTimer`] gives hyper that one deadline per connection and tells the two waits apart by
//! whether a byte has arrived since hyper began waiting. A request whose headers have arrived is
//! bounded by the router's timeout layer instead, and an upgraded WebSocket leaves hyper (and
//! these timers) altogether, so a quiet socket is never closed by them.
//!
//! HTTP/1 only, as `axum::serve` was with our features: hyper-util's `auto` builder has no
//! timeout while it sniffs the protocol version (hyper#3962), which is the hole this closes.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{body::Body, extract::Request, Router};
use hyper::{body::Incoming, rt::Sleep, rt::Timer, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

/// Largest request head (request line and headers) accepted, the SPEC's limit: far above what a
/// browser or nginx sends, small enough that a connection's read buffer stays small.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// How long the accept loop pauses after an accept error other than a refused or aborted
/// connection: that is usually EMFILE, which only closing connections cures, and retrying at
/// once would spin a core (what `axum::serve` and hyper 0.14 did too).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// The two plain-HTTP waits, from `HTTP_HEADER_TIMEOUT` and `HTTP_IDLE_TIMEOUT`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Accepts connections until `stop` is cancelled, then asks every open HTTP connection to
/// finish its request in flight and close (idle ones close at once), and returns when they
/// have. Upgraded WebSockets are not waited for: they are the drain's business.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, stop: CancellationToken) {
    // Holds one task per HTTP connection; `wait` below resolves when the last one ends.
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                connections.spawn(serve_connection(
                    stream,
                    router.clone(),
                    limits,
                    stop.clone(),
                ));
            }
            Err(error) if is_connection_error(&error) => {}
            Err(error) => {
                tracing::error!(%error, "accept failed; pausing the accept loop");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                }
            }
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: Limits,
    stop: CancellationToken,
) {
    let reads = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(CountingStream {
        inner: stream,
        reads: reads.clone(),
    });
    let service = TowerToHyperService::new(
        router.map_request(|request: Request<Incoming>| request.map(Body::new)),
    );
    let mut builder = http1::Builder::new();
    builder
        .timer(HeadTimer::new(limits, reads))
        .header_read_timeout(limits.header_timeout)
        .max_header_size(MAX_HEADER_BYTES);
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        // Header timeouts, oversized heads (already answered 431), peers gone mid-request.
        tracing::debug!(%error, "HTTP connection ended with an error");
    }
}

/// A socket that counts the reads that brought bytes, so [`HeadTimer`] can tell whether a
/// request has begun to arrive. Shared with the timer of the same connection only.
struct CountingStream {
    inner: TcpStream,
    reads: Arc<AtomicU64>,
}

impl AsyncRead for CountingStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.reads.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}

impl AsyncWrite for CountingStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The timer of one connection. hyper's HTTP/1 server asks a timer for exactly one thing: a
/// deadline each time it starts waiting for a request head (after the accept, and again after
/// every response on a kept-alive connection), dropped once the head is parsed; when it fires,
/// hyper closes the connection.
///
/// The first head gets hyper's deadline unchanged (accept + header timeout). A later head gets
/// [`NextHead`]: idle timeout from the end of the previous response, or header timeout from the
/// first byte of the next request, whichever comes first to apply.
struct HeadTimer {
    tokio: TokioTimer,
    limits: Limits,
    /// Reads that brought bytes on this connection (from its [`CountingStream`]).
    reads: Arc<AtomicU64>,
    /// Set once the first head's deadline has been handed out.
    first_head_started: AtomicBool,
}

impl HeadTimer {
    fn new(limits: Limits, reads: Arc<AtomicU64>) -> HeadTimer {
        HeadTimer {
            tokio: TokioTimer::new(),
            limits,
            reads,
            first_head_started: AtomicBool::new(false),
        }
    }
}

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.tokio.sleep(duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        if !self.first_head_started.swap(true, Ordering::Relaxed) {
            return self.tokio.sleep_until(deadline);
        }
        let now = tokio::time::Instant::now();
        Box::pin(NextHead {
            reads: self.reads.clone(),
            reads_when_idle: self.reads.load(Ordering::Relaxed),
            idle: true,
            header_timeout: self.limits.header_timeout,
            sleep: Box::pin(tokio::time::sleep_until(now + self.limits.idle_timeout)),
        })
    }
}

/// The deadline for a kept-alive connection's next request head. hyper polls it each time a
/// read leaves the head incomplete, so the first byte is noticed as soon as it is read. Bytes
/// of the next request already read with the previous one (pipelining) are not noticed: such a
/// head gets the idle timeout.
struct NextHead {
    reads: Arc<AtomicU64>,
    reads_when_idle: u64,
    /// No byte of the next request yet: the idle timeout runs.
    idle: bool,
    header_timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Future for NextHead {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.idle && self.reads.load(Ordering::Relaxed) != self.reads_when_idle {
            self.idle = false;
            let deadline = tokio::time::Instant::now() + self.header_timeout;
            self.sleep.as_mut().reset(deadline);
        }
        self.sleep.as_mut().poll(cx)
    }
}

impl Sleep for NextHead {}
