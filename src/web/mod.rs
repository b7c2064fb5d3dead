//! `[daemon.web]` applied to the HTTP server: HTTPS (with optional client certificates) and
//! basic authentication, for every endpoint, in the manner of Prometheus's exporter-toolkit.
//!
//! - [`tls`]: PEM files, the rustls configuration and its reload when the files change.
//! - [`auth`]: the basic-auth middleware and its memory of successful checks.
//!
//! Plain HTTP keeps `axum::serve`. HTTPS has its own accept loop here, since `axum::serve`
//! takes no TLS: each connection's handshake runs in its own task (a slow client never holds up
//! the others), and the stop has the same meaning as `axum::serve`'s graceful shutdown: stop
//! accepting, let requests in progress finish, close idle connections.

pub mod auth;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::config::WebSettings;

/// A client gets this long to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What `[daemon.web]` asks of the server, loaded before any port is bound.
#[derive(Default)]
pub struct Web {
    tls: Option<Arc<tls::Certificates>>,
    auth: Option<Arc<auth::BasicAuth>>,
}

impl Web {
    /// Reads the TLS files (again: they may have changed since validation).
    pub fn load(settings: &WebSettings) -> Result<Web, crate::pem::TlsError> {
        let tls = settings.tls.as_ref().map(tls::Certificates::load).transpose()?.map(Arc::new);
        let auth = auth::BasicAuth::new(&settings.basic_auth_users).map(Arc::new);
        Ok(Web { tls, auth })
    }

    /// `https` or `http`, for logs.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Serves `app` until `stop` is cancelled, then finishes the requests in progress.
    pub async fn serve(
        self,
        listener: TcpListener,
        app: Router,
        stop: CancellationToken,
    ) -> std::io::Result<()> {
        let app = match self.auth {
            Some(auth) => app.layer(axum::middleware::from_fn_with_state(auth, auth::require)),
            None => app,
        };
        match self.tls {
            Some(certificates) => serve_tls(listener, app, certificates, stop).await,
            None => axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await,
        }
    }
}

async fn serve_tls(
    listener: TcpListener,
    app: Router,
    certificates: Arc<tls::Certificates>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let connections = TaskTracker::new();
    let graceful = GracefulShutdown::new();
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
        let acceptor = TlsAcceptor::from(certificates.current());
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        connections.spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return debug!(peer = %peer, error = %e, "TLS handshake failed"),
                Err(_) => return debug!(peer = %peer, "TLS handshake timed out"),
            };
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection).await {
                debug!(peer = %peer, error = %e, "HTTPS connection failed");
            }
        });
    }
    drop(listener);
    connections.close();
    // Tells every connection to finish its request and close, and waits for them; handshakes in
    // progress end within their timeout.
    graceful.shutdown().await;
    connections.wait().await;
    Ok(())
}

/// A failed accept: a client that gave up is nothing; running out of file descriptors is
/// waited out, as `axum::serve` does.
async fn accept_failed(e: std::io::Error, stop: &CancellationToken) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    warn!(error = %e, "cannot accept HTTPS connections; retrying in 1s");
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
}
