//! crossprobe: a synthetic round-trip prober for Kafka and RabbitMQ that reads the pattern of
//! failures across zones, tenants, protocols and brokers, and pages only on confirmed outages.
//!
//! - [`backends`]: broker clients shared per cluster or connection, one backend per cell.
//! - [`config`]: the TOML file, strict parsing, validation that reports every mistake.
//! - [`metrics`]: every exported metric, created at start-up, rendered for `/metrics`.
//! - [`matrix`]: cells (one target x one tenant) and the dimensions that label them.
//! - [`correlator`]: cell states, the scopes that explain failing cells, and the verdict with its
//!   evidence; also `replay` and `localize`, the same scoring run offline.
//! - [`tables`]: the tables the CLI prints.
//! - [`reports`]: the task that owns the correlator: metrics, verdicts, readiness, records.
//! - [`shard`]: `--shard I/N`, one replica's deterministic part of a large matrix.
//! - [`scheduler`]: one probe worker per cell: cadence, timeouts, reports.
//! - [`daemon`]: the long-running process and `once`: workers, report handling, orderly stop.
//! - [`server`]: HTTP: `/metrics`, `/verdict`, `/healthz`, `/readyz`, the status page.
//! - [`status`]: the status page at `/`, its document, verdicts in plain words, verdict history.
//! - [`web`]: `[daemon.web]`: HTTPS and basic auth for those endpoints, as Prometheus exporters.
//! - [`shutdown`]: the cancellation tree and task tracker every task hangs off.

#![forbid(unsafe_code)]

pub mod backends;
pub mod config;
pub mod correlator;
pub mod daemon;
pub mod matrix;
pub mod metrics;
pub mod tables;
pub mod reports;
pub mod scheduler;
pub mod server;
pub mod shard;
pub mod shutdown;
pub mod status;
pub mod web;
