//! crossprobe: a synthetic round-trip prober for Kafka and RabbitMQ that reads the pattern of
//! failures across zones, tenants, protocols and brokers, and pages only on confirmed outages.
//!
//! Modules by layer, top to bottom. A module imports only modules of lower layers (the binary,
//! `main.rs`, sits above them all); `tests/architecture.rs` reads the imports and keeps it so.
//!
//! 1. [`daemon`]: start-up wiring, the run loop, the ordered stop; and `once`.
//! 2. [`evaluator`]: owns the correlator: observations in, metrics and published state out.
//!    [`server`]: HTTP: `/metrics`, `/verdict`, `/healthz`, `/readyz`, `/-/reload`, the page.
//! 3. [`workers`]: the worker pool, one probe worker per cell; applies a reload plan.
//!    [`status`]: the status page at `/` and the document it polls.
//! 4. [`reload`]: reload requests, why one is refused, the config watch, the reload plan.
//!    [`published`]: the verdict document, readiness and history, as typed values.
//!    [`offline`]: `replay` (the live correlator on recorded outcomes, rotated recordings or
//!    Prometheus counters; summed up as incidents) and `localize`.
//! 5. [`correlator`]: cell states, the scopes that explain failing cells, the verdict.
//!    [`metrics`]: every exported metric, created at start-up, rendered for `/metrics`.
//!    [`clients`]: validated config to broker clients, shared per cluster or connection; the
//!    discovery reads (Kafka metadata, RabbitMQ management API) and their last known answers.
//!    [`tables`]: the tables the CLI prints.
//!    [`web`]: the web configuration file (HTTPS, basic auth, headers), `[daemon.web]` limits.
//! 6. [`config`]: the TOML file, strict parsing, validation that reports every mistake.
//! 7. [`shard`]: `--shard I/N`, one replica's deterministic part of a large matrix.
//!    [`pem`]: PEM certificate and key files, read alike by `check` and the HTTPS server.
//!    [`shutdown`]: the cancellation tree and task tracker every task hangs off.
//! 8. [`matrix`]: cells (one target x one tenant) and the dimensions that label them.
//!    [`files`]: the files an operator names, read only when regular, bounded in size and time.
//!
//! Below them all, the `crossprobe-probes` crate: broker I/O only.

#![deny(unsafe_code)]

pub mod clients;
pub mod config;
pub mod correlator;
pub mod daemon;
pub mod evaluator;
pub mod files;
pub mod matrix;
pub mod metrics;
pub mod offline;
pub mod pem;
pub mod published;
pub mod reload;
pub mod server;
pub mod shard;
pub mod shutdown;
pub mod status;
pub mod tables;
pub mod web;
pub mod workers;
