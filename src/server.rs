//! The HTTP surface: `/metrics` (Prometheus text format), `/verdict` (the correlator's answer
//! with its evidence and every cell's state, as JSON), `/healthz` (the process answers),
//! `/readyz` (every cell has reported and every client has connected at least once),
//! `POST /-/reload` (read the configuration file again, like SIGHUP; only with `[daemon.web]
//! enable_lifecycle`, and never for another web site's page), and the status page `/` with the
//! document it polls, `/api/status` (see [`crate::status`]).
//!
//! Handlers only read what the evaluator published ([`crate::published`]) and the metrics; they
//! never touch the correlator's tables. The server is stopped last, so the final scrape sees final counts.
//! `[daemon.web]` (TLS, basic auth) wraps the routes and the listener in `crate::web`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::published::Published;
use crate::reload::ReloadHandle;
use crate::status;
use crate::web::Web;

/// What the handlers read.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub published: Arc<Published>,
    /// Where `POST /-/reload` asks for a reload.
    pub reload: ReloadHandle,
    /// Whether `POST /-/reload` answers (`[daemon.web] enable_lifecycle`).
    pub lifecycle: bool,
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

async fn metrics(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let body = s.metrics.render();
    let content_type = (header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    if accepts_gzip(&headers) {
        let gzipped = gzip(body.as_bytes());
        ([content_type, (header::CONTENT_ENCODING, "gzip"), (header::VARY, "Accept-Encoding")], gzipped)
            .into_response()
    } else {
        ([content_type, (header::VARY, "Accept-Encoding")], body).into_response()
    }
}

/// Whether `Accept-Encoding` lists gzip (or `*`) without `q=0`.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused =
                parts.any(|p| p.strip_prefix("q=").and_then(|q| q.trim().parse::<f64>().ok()) == Some(0.0));
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// `bytes` gzipped at the fastest level: a scrape is on the clock, and level 1 already shrinks
/// the repetitive text format about tenfold.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder =
        flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 8), flate2::Compression::fast());
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

async fn verdict(State(s): State<Arc<Shared>>) -> Response {
    match s.published.verdict() {
        Some(document) => json(&*document, &[]),
        None => (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response(),
    }
}

fn json(value: &impl serde::Serialize, headers: &[(header::HeaderName, &'static str)]) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => {
            let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
            for (name, value) in headers {
                response.headers_mut().insert(name, header::HeaderValue::from_static(value));
            }
            response
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], status::PAGE)
        .into_response()
}

async fn status_document(State(s): State<Arc<Shared>>) -> Response {
    json(&status::document(&s.published, &s.metrics), &[(header::CACHE_CONTROL, "no-store")])
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    match s.published.not_ready() {
        None => (StatusCode::OK, "ready\n".to_owned()).into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response(),
    }
}

/// What `POST /-/reload` answers while it is off.
const RELOAD_DISABLED: &str = "POST /-/reload is disabled: set enable_lifecycle = true in [daemon.web] to \
     enable it, or reload with SIGHUP or run --watch-config\n";

/// Reloads the configuration like SIGHUP: 200 with what changed, or 500 with why the running
/// configuration stays (every problem of an invalid file, one per line), like Prometheus. 403
/// while the endpoint is off, and for a request from another site's page.
async fn reload(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !s.lifecycle {
        return (StatusCode::FORBIDDEN, RELOAD_DISABLED).into_response();
    }
    if let Err(why) = crate::web::origin::check(&headers) {
        return (StatusCode::FORBIDDEN, format!("POST /-/reload refused: {why}\n")).into_response();
    }
    match s.reload.reload().await {
        Ok(applied) => (StatusCode::OK, format!("reloaded: {applied}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("reload failed: {e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT_ENCODING, header::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn gzip_is_used_when_asked_for_and_not_refused() {
        for (values, expected) in [
            (&[][..], false),
            (&["gzip"][..], true),
            (&["deflate, GZIP;q=0.5"][..], true),
            (&["identity", "gzip"][..], true),
            (&["*"][..], true),
            (&["gzip;q=0"][..], false),
            (&["gzip; q=0.0"][..], false),
            (&["br, deflate"][..], false),
            (&["gzipped"][..], false),
        ] {
            assert_eq!(accepts_gzip(&headers(values)), expected, "Accept-Encoding: {values:?}");
        }
    }

    #[test]
    fn gzip_decodes_to_the_same_text() {
        use std::io::Read;
        let text = "crossprobe_probes_total{az=\"a\",outcome=\"ok\"} 1\n".repeat(1000);
        let packed = gzip(text.as_bytes());
        assert!(packed.len() * 10 < text.len(), "{} bytes from {}", packed.len(), text.len());
        let mut back = String::new();
        flate2::read::GzDecoder::new(&packed[..]).read_to_string(&mut back).unwrap();
        assert_eq!(back, text);
    }
}
