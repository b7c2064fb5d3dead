//! Configuration: the TOML file SREs edit, and the validated form the daemon runs on.
//!
//! Loading is two steps. `raw` parses the file strictly (unknown keys are errors); `validate`
//! checks every value, collecting all problems with their key paths, resolves per-target
//! overrides and expands the probe matrix. Only a [`ValidatedConfig`] can start the daemon.

mod discovered;
mod error;
mod expand;
mod parse;
mod raw;
mod targets;
mod validate;
mod values;
mod web;
mod web_file;
mod yaml;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crossprobe_probes::amqp::QueueKind;
pub use crossprobe_probes::Protocol;
pub use discovered::Found;
pub use error::{escaped, quoted, ConfigError, Problem, MAX_ECHO_CHARS, MAX_LISTED_PROBLEMS};
pub use web::{migrate_web, WebSettings};
pub use web_file::{CipherSuite, ClientAuth, Curve, PasswordHash, TlsSettings, TlsVersion, WebConfig};

use crate::files;
use crate::matrix::Matrix;
use crate::shard::{Shard, ShardError};

/// A configuration that passed every check, with its matrix expanded.
#[derive(Debug, Clone)]
pub struct ValidatedConfig {
    pub daemon: Daemon,
    pub targets: Vec<Target>,
    pub tenants: Vec<Tenant>,
    pub correlator: CorrelatorSettings,
    pub matrix: Matrix,
    /// What is valid but likely not meant (a default quorum the matrix can never meet): `check`
    /// prints them, `run` logs them.
    pub warnings: Vec<Problem>,
}

/// Whether validation reads the passwords the matrix uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// Read every password source a cell uses and report each that cannot be read (`check`,
    /// `once`, `run`, reloads).
    Read,
    /// Leave them: the file alone (tests, `replay --config`, `check --skip-secrets`).
    Skip,
}

impl ValidatedConfig {
    /// Reads and validates a configuration file (a regular file of at most
    /// [`files::MAX_CONFIG_BYTES`]).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&read(path)?, path)
    }

    /// Validates configuration text without reading passwords; `path` only names the file in
    /// messages.
    pub fn parse(source: &str, path: &Path) -> Result<Self, ConfigError> {
        Self::parse_with(source, path, Secrets::Skip)
    }

    /// Validates configuration text, reading the passwords its cells use when asked to.
    pub fn parse_with(source: &str, path: &Path, secrets: Secrets) -> Result<Self, ConfigError> {
        validate::validate(source, secrets)
            .map_err(|problems| ConfigError::Invalid { file: path.to_owned(), problems })
    }

    /// Keeps only the cells of `shard` (`--shard I/N [--shard-by DIM]`), after validation, so
    /// every replica validates the whole file the same way ([`Shard::part`]).
    pub fn shard(mut self, shard: &Shard) -> Result<Self, ShardError> {
        self.matrix = shard.part(&self.matrix)?;
        Ok(self)
    }
}

/// Where a daemon's configuration comes from: read at start and again on every reload.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    /// `--shard I/N`: keep only this shard's cells.
    pub shard: Option<Shard>,
}

/// Why a configuration source gave no configuration.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{}: {source}", path.display())]
    Shard { path: PathBuf, source: ShardError },
}

impl ConfigSource {
    /// Reads, validates (passwords included) and shards the file.
    pub fn load(&self) -> Result<ValidatedConfig, LoadError> {
        self.parse(&self.read()?)
    }

    /// [`ConfigSource::load`], reading passwords or not.
    pub fn load_with(&self, secrets: Secrets) -> Result<ValidatedConfig, LoadError> {
        self.parse_with(&self.read()?, secrets)
    }

    /// The file's text, as [`ConfigSource::parse`] takes it.
    pub fn read(&self) -> Result<String, LoadError> {
        Ok(read(&self.path)?)
    }

    /// Validates (passwords included) and shards `text`, the file's content.
    pub fn parse(&self, text: &str) -> Result<ValidatedConfig, LoadError> {
        self.parse_with(text, Secrets::Read)
    }

    fn parse_with(&self, text: &str, secrets: Secrets) -> Result<ValidatedConfig, LoadError> {
        let config = ValidatedConfig::parse_with(text, &self.path, secrets)?;
        match &self.shard {
            None => Ok(config),
            Some(shard) => {
                config.shard(shard).map_err(|source| LoadError::Shard { path: self.path.clone(), source })
            }
        }
    }
}

/// The text of the configuration file at `path`, read the bounded way.
fn read(path: &Path) -> Result<String, ConfigError> {
    files::read_text(path, files::MAX_CONFIG_BYTES)
        .map_err(|source| ConfigError::Read { path: path.to_owned(), source })
}

/// `[daemon]`: settings of the process itself.
#[derive(Debug, Clone)]
pub struct Daemon {
    /// Address of the HTTP server (`/metrics`, `/verdict`).
    pub listen: SocketAddr,
    /// Names this daemon in logs and payloads; distinct per replica.
    pub instance: String,
    pub log_format: LogFormat,
    /// Where this daemon probes from (usually its own zone). When set, every exported series
    /// carries `vantage="<value>"`, so Prometheus can compare what daemons in different zones
    /// see (`deploy/prometheus/crossprobe-vantage-rules.yml`).
    pub vantage: Option<String>,
    /// Dimensions the latency series are kept by (`crossprobe_roundtrip_seconds` and the other
    /// latency families): one group per distinct combination of their values. Every dimension
    /// listed makes one group per cell.
    pub latency_by: Vec<String>,
    /// `[daemon.web]`: the HTTP server's limits and `POST /-/reload`.
    pub web: WebSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// How often and how hard one cell probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSettings {
    pub interval: Duration,
    /// A probe not back within this is `lost`; always below `interval`.
    pub timeout: Duration,
    /// Payload bytes per probe message, header included.
    pub message_size: usize,
}

/// One broker endpoint.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub az: String,
    /// Value of the `broker` dimension: the target's name unless set.
    pub broker: String,
    /// `host:port` strings, checked to parse.
    pub addresses: Vec<String>,
    /// Extra dimensions (`network = "public"`), the same keys on every target.
    pub labels: BTreeMap<String, String>,
    pub probe: ProbeSettings,
    pub endpoint: Endpoint,
    /// `[targets.discovery]`: the addresses bootstrap a cluster whose brokers become targets.
    pub discovery: Option<Discovery>,
    /// For a target made by discovery, the broker's advertised address (the cells reach it
    /// through the cluster's bootstrap clients).
    pub discovered_at: Option<String>,
}

/// How a target's brokers are discovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// How often the cluster's metadata is read again.
    pub every: Duration,
    /// Zone of each broker (Kafka broker id, RabbitMQ node name); those not listed are in the
    /// target's `az`.
    pub zones: BTreeMap<String, String>,
    /// AMQP: the RabbitMQ management API that lists the cluster's running nodes.
    pub management: Option<Management>,
}

/// A RabbitMQ management API endpoint and its credentials (a user tagged `monitoring`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Management {
    /// `host:port` of the API (plain HTTP).
    pub address: String,
    pub credentials: Credentials,
}

impl Target {
    pub fn protocol(&self) -> Protocol {
        match self.endpoint {
            Endpoint::Kafka(_) => Protocol::Kafka,
            Endpoint::Amqp(_) => Protocol::Amqp,
        }
    }
}

/// Protocol-specific settings of a target: the closed set of backends.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Kafka(KafkaTarget),
    Amqp(AmqpTarget),
}

#[derive(Debug, Clone)]
pub struct KafkaTarget {
    /// Broker whose partitions this target's cells must hit; any leader when unset.
    pub broker_id: Option<i32>,
    /// `fetch.wait.max.ms`: kept short so the round trip measures the broker, not the poll.
    pub fetch_wait: Duration,
    /// `retention.ms` of probe topics the daemon creates.
    pub topic_retention: Duration,
    pub security_protocol: KafkaSecurity,
    pub sasl_mechanism: Option<SaslMechanism>,
    pub ca_file: Option<PathBuf>,
    /// The group stage: each probe commits its partition's position through the consumer
    /// group first, so a coordinator failure is seen (`connect_failed{kind=coordinator}`).
    pub group_commit: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaSecurity {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

#[derive(Debug, Clone)]
pub struct AmqpTarget {
    pub tls: bool,
    pub ca_file: Option<PathBuf>,
    pub heartbeat: Duration,
    /// `x-message-ttl` of probe queues: an unconsumed probe never outlives this.
    pub queue_ttl: Duration,
    /// `x-max-length` of probe queues: probes can never fill a broker.
    pub queue_max_length: u32,
    /// The probe queues' type, with a stream's size bound.
    pub queue: QueueKind,
}

/// One customer namespace, with its settings per protocol.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub name: String,
    pub kafka: Option<KafkaTenant>,
    pub amqp: Option<AmqpTenant>,
}

impl Tenant {
    pub fn supports(&self, protocol: Protocol) -> bool {
        match protocol {
            Protocol::Kafka => self.kafka.is_some(),
            Protocol::Amqp => self.amqp.is_some(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct KafkaTenant {
    /// Probe topic, created when missing.
    pub topic: String,
    /// SASL credentials, when the cluster needs them.
    pub credentials: Option<Credentials>,
}

#[derive(Debug, Clone)]
pub struct AmqpTenant {
    pub vhost: String,
    pub credentials: Credentials,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: Secret,
}

/// Where a password is read from. The config never holds the password itself, so this type
/// can be logged and printed freely.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Secret {
    Env(String),
    File(PathBuf),
}

impl Secret {
    /// Reads the password; the error names the source, never the value.
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            Secret::Env(var) => std::env::var(var)
                .map_err(|_| format!("environment variable {var} is not set or not unicode")),
            Secret::File(path) => files::read_text(path, files::MAX_SECRET_BYTES)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|e| {
                    format!("cannot read password file {}: {e}", quoted(&path.display().to_string()))
                }),
        }
    }
}

/// `[correlator]`: how cell states and verdicts are decided.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelatorSettings {
    /// Evaluation period.
    pub tick: Duration,
    /// A cell is failing when `failures_to_fail` of its last `window` probes failed...
    pub window: u32,
    pub failures_to_fail: u32,
    /// ...and healthy again after this many clean probes in a row.
    pub successes_to_recover: u32,
    /// A scope explains a failure only with at least this many failing cells.
    pub min_failing_cells: u32,
    /// Share of a scope's cells that must fail for it to become active...
    pub enter_ratio: f64,
    /// ...and below which an active scope counts as clean (looser than `enter_ratio`).
    pub exit_ratio: f64,
    /// Ticks a condition must hold before a scope or verdict is entered.
    pub enter_ticks: u32,
    /// Clean ticks before an active scope resolves (longer than `enter_ticks`).
    pub exit_ticks: u32,
    /// A scope that changed state `flap_changes` times within `flap_window_ticks` is flapping.
    pub flap_window_ticks: u32,
    pub flap_changes: u32,
    /// Cells whose failures began within this many probe rounds of each other corroborate each
    /// other; a cell that began failing earlier is set aside (see `correlator::coherence`).
    pub onset_rounds: u32,
    /// A failure of at most this many probe rounds is a blip: it never confirms a scope on
    /// strong evidence and never pages.
    pub blip_rounds: u32,
    /// Chance per tick, over the whole matrix, of blaming a scope for a coincidence of
    /// independent failures (Bonferroni-split over the matrix's scopes).
    pub significance: f64,
    /// Lowest background failure ratio a scope is tested against, whatever the matrix shows.
    pub background_floor: f64,
    /// `outage` needs explained failing cells in at least this many values of each dimension,
    /// each value failing across the quorum of the other dimensions (see `correlator::quorum`).
    pub quorum: BTreeMap<String, Quorum>,
    /// `[correlator.brownout]`: latency baselines, slow probes and degraded cells.
    pub brownout: BrownoutSettings,
}

/// `[correlator.brownout]`: how a cell's latency baseline is learned and when its `ok` probes
/// make it degraded (see `correlator::brownout`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BrownoutSettings {
    /// Half-life of the baseline's memory (how fast a drift is followed); a cell degraded for
    /// that long without a break starts learning afresh.
    pub baseline_half_life: Duration,
    /// `ok` probes a cell needs before it is judged; until then it is learning.
    pub learning_probes: u32,
    /// A probe is slow above `max(slow_factor x baseline p50, baseline p50 + slow_margin)`.
    pub slow_factor: f64,
    pub slow_margin: Duration,
    /// Probes a cell's slow count is taken over.
    pub window: u32,
    /// A cell is degraded when its slow probes in `window` have at most this chance under its
    /// own learned slow ratio (one-sided binomial tail).
    pub significance: f64,
    /// Lowest slow ratio a cell is assumed to have, whatever it learned.
    pub slow_floor: f64,
    /// Probes in a row that are not slow before a degraded cell is healthy again.
    pub successes_to_recover: u32,
}

impl Default for BrownoutSettings {
    fn default() -> Self {
        BrownoutSettings {
            baseline_half_life: Duration::from_secs(4 * 3600),
            learning_probes: 300,
            slow_factor: 3.0,
            slow_margin: Duration::from_millis(10),
            window: 20,
            significance: 1e-12,
            slow_floor: 0.01,
            successes_to_recover: 10,
        }
    }
}

/// Minimum number of distinct values of one dimension, absolute or relative to the matrix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Quorum {
    Count(u32),
    /// Fraction of the dimension's values in the matrix, in (0, 1].
    Fraction(f64),
}

impl Quorum {
    /// The count this quorum demands of a dimension that has `values` values.
    pub fn required(&self, values: usize) -> usize {
        match *self {
            Quorum::Count(n) => n as usize,
            Quorum::Fraction(f) => ((f * values as f64).ceil() as usize).max(1),
        }
    }
}

impl Default for CorrelatorSettings {
    fn default() -> Self {
        CorrelatorSettings {
            tick: Duration::from_secs(1),
            window: 5,
            failures_to_fail: 3,
            successes_to_recover: 5,
            min_failing_cells: 2,
            enter_ratio: 0.5,
            exit_ratio: 0.25,
            enter_ticks: 3,
            exit_ticks: 10,
            flap_window_ticks: 300,
            flap_changes: 4,
            onset_rounds: 3,
            blip_rounds: 2,
            significance: 1e-8,
            background_floor: 0.01,
            quorum: BTreeMap::from([
                ("az".to_owned(), Quorum::Count(2)),
                ("tenant".to_owned(), Quorum::Count(2)),
            ]),
            brownout: BrownoutSettings::default(),
        }
    }
}
