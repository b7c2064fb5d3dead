//! The HTTP server's connections and what guards them: HTTPS (with optional client
//! certificates), basic authentication and response headers for every endpoint, from an
//! exporter-toolkit web configuration file (`--web.config.file`) as Prometheus's exporters
//! read it; the connection cap and timeouts of `[daemon.web]`; and the check that keeps other
//! web sites' pages away from `POST /-/reload`.
//!
//! - [`file`]: the web configuration file, re-read when it or a PEM file it names changes.
//! - [`tls`]: the rustls configuration of `tls_server_config`.
//! - [`auth`]: the basic-auth and headers middleware, and its memory of successful checks.
//! - [`attempts`]: the queue of password checks, taken in turn by client address.
//! - [`connection`]: one connection's handshake, timeouts and end.
//! - [`origin`]: whether a request comes from another web site's page.
//!
//! One accept loop serves HTTP and HTTPS (`axum::serve` takes neither TLS nor timeouts). Each
//! connection runs in its own task, its TLS handshake included, so a slow client never holds up
//! the others. At most `max_connections` are open: one more is closed as soon as it is
//! accepted, and a warning says so at most once a minute. The stop: stop accepting, close
//! connections that are idle or still sending a request head, let requests in progress finish
//! for up to [`DRAIN`], then close what is left.

pub mod attempts;
pub mod auth;
pub mod connection;
pub mod file;
pub mod origin;
pub mod tls;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::config::WebSettings;
use connection::Timeouts;
pub use file::WebError;

/// Once the server stops, requests in progress get this long to finish.
pub const DRAIN: Duration = Duration::from_secs(5);

/// The connection-cap warning is logged at most this often.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(60);

/// What `[daemon.web]` and the web configuration file ask of the server, loaded before any
/// port is bound.
pub struct Web {
    file: Option<Arc<file::WebFile>>,
    max_connections: usize,
    timeouts: Timeouts,
}

impl Web {
    /// Reads the web configuration file, if one is given (again: it may have changed since
    /// `main` checked it).
    pub fn load(settings: &WebSettings, web_config_file: Option<&Path>) -> Result<Web, WebError> {
        let file = web_config_file.map(file::WebFile::load).transpose()?.map(Arc::new);
        let timeouts = Timeouts { header_read: settings.header_read_timeout, idle: settings.idle_timeout };
        Ok(Web { file, max_connections: settings.max_connections, timeouts })
    }

    /// Calls `f` with the result of each reload of the web configuration file.
    pub fn on_reload(&self, f: impl Fn(bool) + Send + Sync + 'static) {
        if let Some(file) = &self.file {
            file.on_reload(f);
        }
    }

    /// `https` or `http`, for logs.
    pub fn scheme(&self) -> &'static str {
        if self.file.as_ref().is_some_and(|f| f.is_https()) {
            "https"
        } else {
            "http"
        }
    }

    /// Serves `app` until `stop` is cancelled, then finishes the requests in progress, for up
    /// to [`DRAIN`].
    pub async fn serve(
        self,
        listener: TcpListener,
        app: Router,
        stop: CancellationToken,
    ) -> std::io::Result<()> {
        let app = match &self.file {
            Some(file) => {
                let guard = Arc::new(auth::Guard { file: file.clone(), auth: auth::BasicAuth::default() });
                app.layer(axum::middleware::from_fn_with_state(guard, auth::require))
            }
            None => app,
        };
        let connections = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let force = CancellationToken::new();
        let mut cap = CapWarning::default();
        loop {
            let (tcp, peer) = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        accept_failed(e, &stop).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                drop(tcp);
                cap.refused(self.max_connections);
                continue;
            };
            let tls = self.file.as_ref().and_then(|f| f.current().tls.clone()).map(TlsAcceptor::from);
            let task =
                connection::serve(tcp, peer, tls, app.clone(), self.timeouts, stop.clone(), force.clone());
            connections.spawn(async move {
                task.await;
                drop(slot);
            });
        }
        drop(listener);
        connections.close();
        if tokio::time::timeout(DRAIN, connections.wait()).await.is_err() {
            let open = self.max_connections - slots.available_permits();
            warn!(open, drain = ?DRAIN, "closing HTTP connections whose requests did not finish in time");
            force.cancel();
            connections.wait().await;
        }
        Ok(())
    }
}

/// Counts the connections refused at the cap, and says so at most once a minute.
#[derive(Default)]
struct CapWarning {
    last: Option<Instant>,
    refused: u64,
}

impl CapWarning {
    fn refused(&mut self, max_connections: usize) {
        self.refused += 1;
        let now = Instant::now();
        if self.last.is_none_or(|last| now.duration_since(last) >= CAP_WARNING_EVERY) {
            warn!(
                max_connections,
                refused = self.refused,
                "HTTP connection limit reached: closing new connections until open ones end ([daemon.web] max_connections)"
            );
            self.last = Some(now);
            self.refused = 0;
        }
    }
}

/// A failed accept: a client that gave up is nothing; running out of file descriptors is
/// waited out, as `axum::serve` does.
async fn accept_failed(e: std::io::Error, stop: &CancellationToken) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    warn!(error = %e, "cannot accept HTTP connections; retrying in 1s");
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
}
