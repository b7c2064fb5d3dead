//! One HTTP connection from accept to close: its TLS handshake, its timeouts, and how it ends
//! when the server stops.
//!
//! hyper knows when a request head is complete but not how long a client may take to send one,
//! nor how long a kept-alive connection may sit unused. So every connection carries an
//! [`Activity`]: the socket counts the bytes it moves, the service counts the requests being
//! handled, and a watchdog closes the connection when its deadline passes:
//!
//! - from accept, the TLS handshake and the first request head must be done within
//!   `header_read_timeout`; so must any later head, counted from its first byte;
//! - between requests, and while a response is written to a client that does not read it, a
//!   connection may go `idle_timeout` without moving a byte;
//! - while a request is being handled, there is no deadline: handlers are the daemon's own and
//!   bounded.
//!
//! When the server stops, a connection that is reading a request head closes at once (a
//! half-sent request is never waited for); an idle one closes too; one that is handling a
//! request or writing its response finishes it and closes, or is cut when the server's drain
//! period runs out (`force`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// The timeouts of one connection (`[daemon.web]`).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

/// The address of the client a request came from, put in each request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Serves one accepted connection until it ends, times out, or the server stops.
pub async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    app: Router,
    timeouts: Timeouts,
    stop: CancellationToken,
    force: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    let activity = Arc::new(Activity::new(timeouts));
    let io = Counted { inner: tcp, activity: activity.clone() };
    match tls {
        None => http(io, peer, app, activity, stop, force).await,
        Some(acceptor) => {
            let handshake = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(timeouts.header_read) => {
                    return debug!(peer = %peer, "TLS handshake timed out");
                }
                handshake = acceptor.accept(io) => handshake,
            };
            match handshake {
                Ok(stream) => http(stream, peer, app, activity, stop, force).await,
                Err(e) => debug!(peer = %peer, error = %e, "TLS handshake failed"),
            }
        }
    }
}

/// HTTP/1.1 over `io`, watched by `activity`'s deadlines.
async fn http<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    activity: Arc<Activity>,
    stop: CancellationToken,
    force: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = Handled { inner: TowerToHyperService::new(app), activity: activity.clone(), peer };
    let mut connection = pin!(http1::Builder::new().serve_connection(TokioIo::new(io), service));
    let mut stopping = false;
    loop {
        let now = Instant::now();
        let wake = match activity.deadline() {
            Some(deadline) if deadline <= now => {
                return debug!(peer = %peer, "closing an HTTP connection that timed out");
            }
            Some(deadline) => deadline,
            // A request is being handled: look again when it may have ended.
            None => now + activity.timeouts.header_read.min(activity.timeouts.idle),
        };
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    debug!(peer = %peer, error = %e, "HTTP connection failed");
                }
                return;
            }
            _ = tokio::time::sleep_until(wake) => {}
            _ = activity.changed.notified() => {}
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                if activity.reading_head() && !activity.handling() {
                    return;
                }
                // Closes an idle connection; otherwise finishes the response, then closes.
                connection.as_mut().graceful_shutdown();
            }
            _ = force.cancelled() => return,
        }
        if stopping && !activity.handling() && activity.reading_head() {
            // The response went out and another request began: it is not waited for.
            return;
        }
    }
}

/// What a connection is doing, as far as its deadline goes.
struct Activity {
    timeouts: Timeouts,
    state: Mutex<State>,
    /// Told when a head begins, so the watchdog moves to the head's (earlier) deadline.
    changed: Notify,
}

struct State {
    /// Requests being handled (HTTP/1.1: at most one).
    handling: usize,
    /// When the request head now being read began: its first byte, or the accept for the first.
    head_since: Option<Instant>,
    /// The last byte read or written, or the end of the last handler.
    last_progress: Instant,
}

impl Activity {
    fn new(timeouts: Timeouts) -> Activity {
        let now = Instant::now();
        let state = State { handling: 0, head_since: Some(now), last_progress: now };
        Activity { timeouts, state: Mutex::new(state), changed: Notify::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("connection activity lock")
    }

    /// When the connection must be closed; `None` while a request is handled.
    fn deadline(&self) -> Option<Instant> {
        let state = self.lock();
        match (state.handling, state.head_since) {
            (0, Some(since)) => Some(since + self.timeouts.header_read),
            (0, None) => Some(state.last_progress + self.timeouts.idle),
            _ => None,
        }
    }

    fn handling(&self) -> bool {
        self.lock().handling > 0
    }

    fn reading_head(&self) -> bool {
        self.lock().head_since.is_some()
    }

    fn read(&self) {
        let now = Instant::now();
        let mut state = self.lock();
        state.last_progress = now;
        if state.handling == 0 && state.head_since.is_none() {
            state.head_since = Some(now);
            drop(state);
            self.changed.notify_one();
        }
    }

    fn wrote(&self) {
        self.lock().last_progress = Instant::now();
    }

    /// A request head is complete and its handler starts; the guard marks its end.
    fn begin(self: &Arc<Self>) -> Handling {
        let mut state = self.lock();
        state.handling += 1;
        state.head_since = None;
        Handling(self.clone())
    }
}

/// A request being handled; dropped when its handler returned (or was dropped).
struct Handling(Arc<Activity>);

impl Drop for Handling {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.handling -= 1;
        state.last_progress = Instant::now();
        drop(state);
        self.0.changed.notify_one();
    }
}

/// The socket, counting the bytes that move through it.
struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The router as a hyper service that marks each request as handled while it runs and tells
/// it the client's address.
struct Handled {
    inner: TowerToHyperService<Router>,
    activity: Arc<Activity>,
    peer: SocketAddr,
}

impl Service<hyper::Request<Incoming>> for Handled {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        let handling = self.activity.begin();
        request.extensions_mut().insert(Peer(self.peer));
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(handling);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts =
        Timeouts { header_read: Duration::from_secs(10), idle: Duration::from_secs(60) };

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_the_head_the_handler_and_idle_time() {
        let start = Instant::now();
        let a = Arc::new(Activity::new(TIMEOUTS));
        assert_eq!(a.deadline(), Some(start + TIMEOUTS.header_read), "a new connection must send its head");
        tokio::time::advance(Duration::from_secs(3)).await;
        a.read();
        assert_eq!(a.deadline(), Some(start + TIMEOUTS.header_read), "bytes of the first head move nothing");
        let handling = a.begin();
        assert_eq!(a.deadline(), None, "no deadline while a handler runs");
        a.read();
        assert!(!a.reading_head(), "a request body read by the handler is not a new head");
        tokio::time::advance(Duration::from_secs(100)).await;
        drop(handling);
        let ended = Instant::now();
        assert_eq!(a.deadline(), Some(ended + TIMEOUTS.idle), "idle after the response");
        tokio::time::advance(Duration::from_secs(5)).await;
        a.wrote();
        assert_eq!(a.deadline(), Some(ended + Duration::from_secs(5) + TIMEOUTS.idle), "writing is progress");
        tokio::time::advance(Duration::from_secs(20)).await;
        a.read();
        let head = Instant::now();
        assert_eq!(a.deadline(), Some(head + TIMEOUTS.header_read), "a new head has header_read_timeout");
        a.wrote();
        assert_eq!(a.deadline(), Some(head + TIMEOUTS.header_read), "writes do not extend a head");
    }
}
