//! The configuration file exactly as written: serde structs that mirror the TOML.
//!
//! Values that need checking (durations, addresses, protocols, sizes) stay strings or wide
//! integers here, wrapped in [`Spanned`] so validation can name their line and column. Parsing
//! therefore fails only on TOML syntax, wrong types and unknown keys; every other mistake is
//! collected by `validate`, all of them at once.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// A string with the byte range it came from.
pub type Str = Spanned<String>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub daemon: RawDaemon,
    #[serde(default)]
    pub probe: RawProbe,
    #[serde(default)]
    pub targets: Vec<RawTarget>,
    #[serde(default)]
    pub tenants: Vec<RawTenant>,
    #[serde(default)]
    pub matrix: RawMatrix,
    #[serde(default)]
    pub correlator: RawCorrelator,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    pub listen: Option<Str>,
    pub instance: Option<Str>,
    pub log_format: Option<Str>,
    pub vantage: Option<Str>,
    pub latency_by: Option<Spanned<Vec<Str>>>,
    pub web: Option<RawWeb>,
}

/// `[daemon.web]`: the server's own limits and switches. The TLS and basic-auth keys are retired
/// (they moved to `--web.config.file`); they are still read, whatever their shape, only to say
/// how to migrate.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeb {
    pub tls_cert_file: Option<Spanned<toml::Value>>,
    pub tls_key_file: Option<Spanned<toml::Value>>,
    pub tls_client_ca_file: Option<Spanned<toml::Value>>,
    pub basic_auth_users: Option<Spanned<toml::Value>>,
    pub max_connections: Option<Spanned<i64>>,
    pub header_read_timeout: Option<Str>,
    pub idle_timeout: Option<Str>,
    pub enable_lifecycle: Option<bool>,
}

/// Probe settings: the defaults under `[probe]`, and the per-target overrides.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    pub interval: Option<Str>,
    pub timeout: Option<Str>,
    pub message_size: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub name: Str,
    pub protocol: Str,
    pub az: Str,
    pub addresses: Option<Spanned<Vec<Str>>>,
    pub broker: Option<Str>,
    pub broker_id: Option<Spanned<i64>>,
    #[serde(default)]
    pub labels: BTreeMap<String, Str>,
    pub tenants: Option<Vec<Str>>,
    pub interval: Option<Str>,
    pub timeout: Option<Str>,
    pub message_size: Option<Spanned<i64>>,
    pub kafka: Option<Spanned<RawKafkaTarget>>,
    pub amqp: Option<Spanned<RawAmqpTarget>>,
    pub discovery: Option<Spanned<RawDiscovery>>,
}

/// `[targets.discovery]`: the target names a cluster; its brokers are read from it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    pub every: Option<Str>,
    #[serde(default)]
    pub zones: BTreeMap<String, Str>,
    pub management_url: Option<Str>,
    pub user: Option<Str>,
    pub password: Option<Str>,
    pub password_env: Option<Str>,
    pub password_file: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafkaTarget {
    pub fetch_wait: Option<Str>,
    pub topic_retention: Option<Str>,
    pub security_protocol: Option<Str>,
    pub sasl_mechanism: Option<Str>,
    pub ca_file: Option<Str>,
    pub group_commit: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAmqpTarget {
    pub tls: Option<bool>,
    pub ca_file: Option<Str>,
    pub heartbeat: Option<Str>,
    pub queue_ttl: Option<Str>,
    pub queue_max_length: Option<Spanned<i64>>,
    pub queue_type: Option<Str>,
    pub stream_max_bytes: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    pub name: Str,
    pub kafka: Option<RawKafkaTenant>,
    pub amqp: Option<RawAmqpTenant>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafkaTenant {
    pub topic: Str,
    pub user: Option<Str>,
    pub password: Option<Str>,
    pub password_env: Option<Str>,
    pub password_file: Option<Str>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAmqpTenant {
    pub vhost: Str,
    pub user: Str,
    pub password: Option<Str>,
    pub password_env: Option<Str>,
    pub password_file: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatrix {
    #[serde(default)]
    pub exclude: Vec<Spanned<BTreeMap<String, Str>>>,
    pub max_cells: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCorrelator {
    pub tick: Option<Str>,
    pub window: Option<Spanned<i64>>,
    pub failures_to_fail: Option<Spanned<i64>>,
    pub successes_to_recover: Option<Spanned<i64>>,
    pub min_failing_cells: Option<Spanned<i64>>,
    pub enter_ratio: Option<Spanned<f64>>,
    pub exit_ratio: Option<Spanned<f64>>,
    pub enter_ticks: Option<Spanned<i64>>,
    pub exit_ticks: Option<Spanned<i64>>,
    pub flap_window_ticks: Option<Spanned<i64>>,
    pub flap_changes: Option<Spanned<i64>>,
    pub onset_rounds: Option<Spanned<i64>>,
    pub blip_rounds: Option<Spanned<i64>>,
    pub significance: Option<Spanned<f64>>,
    pub background_floor: Option<Spanned<f64>>,
    #[serde(default)]
    pub quorum: Option<BTreeMap<String, Spanned<toml::Value>>>,
    #[serde(default)]
    pub brownout: RawBrownout,
}

/// `[correlator.brownout]`: latency baselines and degraded cells.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBrownout {
    pub baseline_half_life: Option<Str>,
    pub learning_probes: Option<Spanned<i64>>,
    pub slow_factor: Option<Spanned<f64>>,
    pub slow_margin: Option<Str>,
    pub window: Option<Spanned<i64>>,
    pub significance: Option<Spanned<f64>>,
    pub slow_floor: Option<Spanned<f64>>,
    pub successes_to_recover: Option<Spanned<i64>>,
}
