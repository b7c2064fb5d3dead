//! crossprobe: a synthetic round-trip prober for Kafka and RabbitMQ that reads the pattern of
//! failures across zones, tenants, protocols and brokers, and pages only on confirmed outages.
//!
//! - [`config`]: the TOML file, strict parsing, validation that reports every mistake.
//! - [`matrix`]: cells (one target x one tenant) and the dimensions that label them.
//! - [`correlator`]: cell states, the scopes that explain failing cells, and the verdict with its
//!   evidence; also `replay` and `localize`, the same scoring run offline.
//! - [`report`]: the tables the CLI prints.
//! - [`daemon`]: the long-running process: logging, start-up, and orderly stop.
//! - [`shutdown`]: the cancellation tree and task tracker every task hangs off.

#![forbid(unsafe_code)]

pub mod config;
pub mod correlator;
pub mod daemon;
pub mod matrix;
pub mod report;
pub mod shutdown;
