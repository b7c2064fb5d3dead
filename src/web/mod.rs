//! `[daemon.web]` applied to the HTTP server: HTTPS (with optional client certificates) and
//! basic authentication, for every endpoint, in the manner of Prometheus's exporter-toolkit.
//!
//! - [`tls`]: PEM files, the rustls configuration and its reload when the files change.

pub mod tls;
