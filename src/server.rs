//! The HTTP surface: `/metrics` (Prometheus text format), `/verdict` (the correlator's answer
//! with its evidence and every cell's state, as JSON), `/healthz` (the process answers),
//! `/readyz` (every cell has reported and every client has connected at least once),
//! `POST /-/reload` (read the configuration file again, like SIGHUP), and the status page `/`
//! with the document it polls, `/api/status` (see [`crate::status`]).
//!
//! Handlers only read what the daemon's report task published; they never touch the
//! correlator's tables. The server is stopped last, so the final scrape sees final counts.
//! `[daemon.web]` (TLS, basic auth) wraps the routes and the listener in `crate::web`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::daemon::{request_reload, ReloadRequest};
use crate::metrics::Metrics;
use crate::status::{self, VerdictHistory};
use crate::web::Web;

/// What the handlers serve, published by the daemon's report task.
pub struct Shared {
    pub metrics: Metrics,
    /// The current verdict document, already serialized.
    pub verdict: RwLock<String>,
    /// `None` when ready, otherwise why not.
    pub not_ready: RwLock<Option<String>>,
    /// Where `POST /-/reload` asks the report task for a reload.
    pub reload: mpsc::Sender<ReloadRequest>,
    /// The last verdict changes, for the status page.
    pub history: Mutex<VerdictHistory>,
}

/// The routes over `shared`.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/status", get(status_document))
        .route("/metrics", get(metrics))
        .route("/verdict", get(verdict))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/-/reload", post(reload))
        .with_state(shared)
}

/// Binds the listen address; done before any probe starts, so a taken port fails fast.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `stop` is cancelled, then finishes the requests in progress; over HTTPS and
/// behind basic auth when `web` says so.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    web: Web,
    stop: CancellationToken,
) -> std::io::Result<()> {
    web.serve(listener, router(shared), stop).await
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let body = s.metrics.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn verdict(State(s): State<Arc<Shared>>) -> Response {
    let body = s.verdict.read().expect("verdict lock").clone();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], status::PAGE)
        .into_response()
}

async fn status_document(State(s): State<Arc<Shared>>) -> Response {
    let body = status::document(&s).to_string();
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body).into_response()
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    match s.not_ready.read().expect("readiness lock").clone() {
        None => (StatusCode::OK, "ready\n".to_owned()).into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response(),
    }
}

/// Reloads the configuration like SIGHUP: 200 with what changed, or 500 with why the running
/// configuration stays (every problem of an invalid file, one per line), like Prometheus.
async fn reload(State(s): State<Arc<Shared>>) -> Response {
    match request_reload(&s.reload).await {
        Ok(applied) => (StatusCode::OK, format!("reloaded: {applied}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("reload failed: {e}\n")).into_response(),
    }
}
