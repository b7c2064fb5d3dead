//! From the validated configuration to broker clients: what each cell's probing depends on
//! ([`CellSpec`], secrets and CA files read once per load), and the [`ClientPool`] that shares
//! clients between cells.
//!
//! - [`kafka`]: a Kafka cell's client settings (security, SASL, CA, fetch wait).
//! - [`amqp`]: an AMQP cell's connection settings and its probe queue.
//! - [`discovery`]: reading a discovered target's brokers, and the last known set of each.
//! - [`management`]: the RabbitMQ management API's running nodes and their AMQP listeners.
//! - [`pool`]: the clients in use, keyed by everything they are built from, created, shared and
//!   retired as the matrix changes.

pub mod amqp;
pub mod discovery;
pub mod kafka;
pub mod management;
pub mod pool;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;

use crossprobe_probes::amqp::{AmqpClientConfig, QueueSpec};
use crossprobe_probes::kafka::KafkaClientConfig;

use crate::config::{Endpoint, Secret, ValidatedConfig};
use crate::files;
use crate::matrix::Cell;

pub use amqp::queue_name;
pub use pool::ClientPool;

/// Why clients could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("tenant \"{tenant}\": {reason}")]
    Secret { tenant: String, reason: String },
    #[error("target \"{target}\": ca_file {path}: {reason}")]
    CaFile { target: String, path: String, reason: String },
    #[error("target \"{target}\": cannot create Kafka clients: {source}")]
    Kafka {
        target: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
}

/// Everything one cell's probing depends on, resolved from a configuration (secrets read).
pub struct CellSpec {
    client: ClientSpec,
    /// Changes whenever anything the cell's worker or client depends on changes.
    pub fingerprint: u64,
    /// The target's name, for errors.
    target: String,
}

/// A cell's client settings, by protocol; `key` identifies the shared client.
enum ClientSpec {
    Kafka { key: u64, config: KafkaClientConfig, topic: String, broker_id: Option<i32>, group: bool },
    Amqp { key: u64, config: AmqpClientConfig, queue: QueueSpec },
}

/// Passwords and CA files of one configuration, each read once however many cells use it.
#[derive(Default)]
pub struct Reads<'a> {
    secrets: HashMap<&'a Secret, String>,
    cas: HashMap<&'a Path, String>,
}

impl<'a> Reads<'a> {
    fn secret(&mut self, tenant: &str, s: &'a Secret) -> Result<String, ClientError> {
        if let Some(v) = self.secrets.get(s) {
            return Ok(v.clone());
        }
        let v = s.resolve().map_err(|reason| ClientError::Secret { tenant: tenant.to_owned(), reason })?;
        self.secrets.insert(s, v.clone());
        Ok(v)
    }

    fn ca(&mut self, target: &str, path: &'a Path) -> Result<String, ClientError> {
        if let Some(v) = self.cas.get(path) {
            return Ok(v.clone());
        }
        let v = read_ca(target, path)?;
        self.cas.insert(path, v.clone());
        Ok(v)
    }
}

impl CellSpec {
    /// Resolves `cell` of `config` for the process whose random id is `run`; fails only when a
    /// password or CA file cannot be read.
    pub fn resolve<'a>(
        config: &'a ValidatedConfig,
        run: u64,
        cell: &Cell,
        reads: &mut Reads<'a>,
    ) -> Result<CellSpec, ClientError> {
        let target = &config.targets[cell.target];
        let tenant = &config.tenants[cell.tenant];
        let client = match &target.endpoint {
            Endpoint::Kafka(k) => kafka::spec(target, k, tenant, reads)?,
            Endpoint::Amqp(a) => amqp::spec(&config.daemon.instance, run, cell, target, a, tenant, reads)?,
        };
        let cell_part = match &client {
            ClientSpec::Kafka { key, topic, broker_id, group, .. } => hash(&(key, topic, broker_id, group)),
            ClientSpec::Amqp { key, queue, .. } => {
                hash(&(key, &queue.name, queue.ttl, queue.max_length, queue.expires))
            }
        };
        let fingerprint = hash(&(cell_part, format!("{:?}", target.probe)));
        Ok(CellSpec { client, fingerprint, target: target.name.clone() })
    }

    /// The key of the client the cell runs on.
    pub fn client_key(&self) -> u64 {
        match &self.client {
            ClientSpec::Kafka { key, .. } | ClientSpec::Amqp { key, .. } => *key,
        }
    }
}

/// The PEM certificates of a target's `ca_file`, read at start and on every reload: a missing
/// file, or one without a certificate, is a set-up error naming the file, not a stream of TLS
/// failures.
fn read_ca(target: &str, path: &Path) -> Result<String, ClientError> {
    let error = |reason: String| ClientError::CaFile {
        target: target.to_owned(),
        path: path.display().to_string(),
        reason,
    };
    let pem = files::read_text(path, files::MAX_PEM_BYTES).map_err(|e| error(e.to_string()))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(error("holds no PEM certificate".into()));
    }
    Ok(pem)
}

/// A stable 64-bit hash of settings, to tell whether they changed. Never shown: it may cover
/// passwords.
fn hash(value: &impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}
