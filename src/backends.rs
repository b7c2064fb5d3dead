//! From the validated configuration to broker clients: one Kafka cluster client per cluster,
//! security and credentials, one AMQP connection per (node, vhost, user), and a backend per
//! cell on them.
//!
//! The clients are a registry keyed by everything they are built from (passwords included, as
//! a hash), so a configuration reload reuses every client whose settings did not change,
//! creates the missing ones and retires those no cell uses any more. Client tasks (Kafka
//! consumers, AMQP supervisors) run on the caller's tracker, each until its own token, a child
//! of the caller's, is cancelled.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crossprobe_probes::amqp::{AmqpCell, AmqpClientConfig, AmqpNode, QueueSpec};
use crossprobe_probes::backend::Deliveries;
use crossprobe_probes::kafka::{KafkaCell, KafkaClientConfig, KafkaCluster};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Endpoint, KafkaSecurity, SaslMechanism, Secret, ValidatedConfig};
use crate::matrix::Cell;

/// A cell's publisher, of whichever protocol its target speaks.
pub enum CellBackend {
    Kafka(KafkaCell),
    Amqp(AmqpCell),
}

impl CellBackend {
    /// Connects and prepares the cell (topic, partition, channel, queue), bounded by `timeout`.
    /// Failures are left for the probes to report; this only keeps set-up out of the first
    /// measurements.
    pub async fn prepare(&self, timeout: Duration) {
        let _ = match self {
            CellBackend::Kafka(b) => tokio::time::timeout(timeout, b.prepare()).await,
            CellBackend::Amqp(b) => tokio::time::timeout(timeout, b.prepare()).await,
        };
    }

    /// Releases what the cell holds on the broker once a reload removed it: AMQP deletes the
    /// cell's queue and closes its channel; a Kafka cell holds nothing of its own (its
    /// partition's messages are routed past it once its worker is gone).
    pub async fn retire(&self) {
        if let CellBackend::Amqp(b) = self {
            b.retire().await;
        }
    }
}

/// Why clients could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
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

enum ClientSpec {
    Kafka { key: u64, config: KafkaClientConfig, topic: String, broker_id: Option<i32> },
    Amqp { key: u64, config: AmqpClientConfig, queue: QueueSpec },
}

/// Passwords and CA files of one configuration, each read once however many cells use it.
#[derive(Default)]
pub struct Reads<'a> {
    secrets: HashMap<&'a Secret, String>,
    cas: HashMap<&'a Path, String>,
}

impl<'a> Reads<'a> {
    fn secret(&mut self, tenant: &str, s: &'a Secret) -> Result<String, BackendError> {
        if let Some(v) = self.secrets.get(s) {
            return Ok(v.clone());
        }
        let v = s.resolve().map_err(|reason| BackendError::Secret { tenant: tenant.to_owned(), reason })?;
        self.secrets.insert(s, v.clone());
        Ok(v)
    }

    fn ca(&mut self, target: &str, path: &'a Path) -> Result<String, BackendError> {
        if let Some(v) = self.cas.get(path) {
            return Ok(v.clone());
        }
        let v = read_ca(target, path)?;
        self.cas.insert(path, v.clone());
        Ok(v)
    }
}

impl CellSpec {
    /// Resolves `cell` of `config`; fails only when a password or CA file cannot be read.
    pub fn resolve<'a>(
        config: &'a ValidatedConfig,
        cell: &Cell,
        reads: &mut Reads<'a>,
    ) -> Result<CellSpec, BackendError> {
        let target = &config.targets[cell.target];
        let tenant = &config.tenants[cell.tenant];
        let client = match &target.endpoint {
            Endpoint::Kafka(k) => {
                let t = tenant.kafka.as_ref().expect("the matrix pairs kafka targets with kafka tenants");
                let mut properties = vec![("security.protocol".into(), security(k.security_protocol).into())];
                if let Some(m) = k.sasl_mechanism {
                    properties.push(("sasl.mechanism".into(), mechanism(m).into()));
                }
                if let Some(c) = &t.credentials {
                    properties.push(("sasl.username".into(), c.user.clone()));
                    properties.push(("sasl.password".into(), reads.secret(&tenant.name, &c.password)?));
                }
                // librdkafka reads the file itself; its content is part of the key, so a reload
                // after the CA was rotated builds new clients.
                let ca = match &k.ca_file {
                    Some(path) => {
                        properties.push(("ssl.ca.location".into(), path.display().to_string()));
                        Some(reads.ca(&target.name, path)?)
                    }
                    None => None,
                };
                let mut addresses = target.addresses.clone();
                addresses.sort();
                let key = hash(&(
                    &addresses,
                    &properties,
                    &ca,
                    k.fetch_wait,
                    target.probe.timeout,
                    k.topic_retention,
                ));
                let config = KafkaClientConfig {
                    bootstrap: target.addresses.join(","),
                    properties,
                    fetch_wait: k.fetch_wait,
                    timeout: target.probe.timeout,
                    topic_retention: k.topic_retention,
                };
                ClientSpec::Kafka { key, config, topic: t.topic.clone(), broker_id: k.broker_id }
            }
            Endpoint::Amqp(a) => {
                let t = tenant.amqp.as_ref().expect("the matrix pairs amqp targets with amqp tenants");
                let client = AmqpClientConfig {
                    address: target.addresses[0].clone(),
                    vhost: t.vhost.clone(),
                    user: t.credentials.user.clone(),
                    password: reads.secret(&tenant.name, &t.credentials.password)?,
                    tls: a.tls,
                    ca_pem: a.ca_file.as_ref().map(|path| reads.ca(&target.name, path)).transpose()?,
                    heartbeat: a.heartbeat,
                    timeout: target.probe.timeout,
                    interval: target.probe.interval,
                };
                // The target's whole section, so settings added later count without a change here.
                let key = hash(&(
                    &client.address,
                    &client.vhost,
                    &client.user,
                    &client.password,
                    &client.ca_pem,
                    format!("{a:?}"),
                    client.timeout,
                    client.interval,
                ));
                let queue = QueueSpec {
                    name: queue_name(&config.daemon.instance, cell),
                    ttl: a.queue_ttl,
                    max_length: a.queue_max_length,
                    expires: (target.probe.interval * 10).max(Duration::from_secs(600)),
                };
                ClientSpec::Amqp { key, config: client, queue }
            }
        };
        let cell_part = match &client {
            ClientSpec::Kafka { key, topic, broker_id, .. } => hash(&(key, topic, broker_id)),
            ClientSpec::Amqp { key, queue, .. } => {
                hash(&(key, &queue.name, queue.ttl, queue.max_length, queue.expires))
            }
        };
        let fingerprint = hash(&(cell_part, format!("{:?}", target.probe)));
        Ok(CellSpec { client, fingerprint, target: target.name.clone() })
    }

    fn client_key(&self) -> u64 {
        match &self.client {
            ClientSpec::Kafka { key, .. } | ClientSpec::Amqp { key, .. } => *key,
        }
    }
}

/// A registered client and the token that stops its task.
struct Client<T> {
    client: Arc<T>,
    stop: CancellationToken,
}

/// The clients in use, by key.
#[derive(Default)]
pub struct Backends {
    kafka: HashMap<u64, Client<KafkaCluster>>,
    amqp: HashMap<u64, Client<AmqpNode>>,
    /// Reconnections counted by clients since retired, so totals never go down.
    retired: (u64, u64),
}

impl Backends {
    /// The backend of a cell, on its client; the client is created (its task started on `tasks`
    /// until a child of `cancel`) when no cell uses it yet. Returns the client's key.
    pub fn cell(
        &mut self,
        spec: &CellSpec,
        instance: &str,
        cell_key: u64,
        tasks: &TaskTracker,
        cancel: &CancellationToken,
    ) -> Result<(CellBackend, Deliveries, u64), BackendError> {
        let key = spec.client_key();
        match &spec.client {
            ClientSpec::Kafka { config, topic, broker_id, .. } => {
                let cluster = match self.kafka.get(&key) {
                    Some(c) => c.client.clone(),
                    None => {
                        let cluster = KafkaCluster::new(config.clone(), instance)
                            .map_err(|source| BackendError::Kafka { target: spec.target.clone(), source })?;
                        let stop = cancel.child_token();
                        tasks.spawn(cluster.clone().consume(stop.clone()));
                        self.kafka.insert(key, Client { client: cluster.clone(), stop });
                        cluster
                    }
                };
                let (backend, rx) = cluster.cell(topic, *broker_id, cell_key);
                Ok((CellBackend::Kafka(backend), rx, key))
            }
            ClientSpec::Amqp { config, queue, .. } => {
                let node = match self.amqp.get(&key) {
                    Some(n) => n.client.clone(),
                    None => {
                        let node = AmqpNode::new(config.clone());
                        let stop = cancel.child_token();
                        tasks.spawn(node.clone().supervise(stop.clone()));
                        self.amqp.insert(key, Client { client: node.clone(), stop });
                        node
                    }
                };
                let (backend, rx) = node.cell(queue.clone());
                Ok((CellBackend::Amqp(backend), rx, key))
            }
        }
    }

    /// Unregisters the clients whose key is not in `keep` and returns a future that stops them
    /// and waits for their AMQP consumer loops; run it once the workers of their cells ended.
    pub fn retire_unused(
        &mut self,
        keep: &HashSet<u64>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut kafka = Vec::new();
        let mut amqp = Vec::new();
        self.kafka.retain(|k, c| {
            keep.contains(k) || {
                kafka.push((c.stop.clone(), c.client.clone()));
                false
            }
        });
        self.amqp.retain(|k, c| {
            keep.contains(k) || {
                amqp.push((c.stop.clone(), c.client.clone()));
                false
            }
        });
        self.retired.0 += kafka.iter().map(|(_, c)| c.rebuilds()).sum::<u64>();
        self.retired.1 += amqp.iter().map(|(_, n)| n.reconnects()).sum::<u64>();
        async move {
            for (stop, _) in &kafka {
                stop.cancel();
            }
            for (stop, node) in &amqp {
                stop.cancel();
                node.consumers_done().await;
            }
            // Destroying librdkafka clients blocks until their threads end: not on the runtime.
            // Wait (bounded) for the cancelled consumer tasks to let go, so the last drop is here.
            let _ = tokio::task::spawn_blocking(move || {
                for (_, cluster) in kafka {
                    let deadline = std::time::Instant::now() + Duration::from_secs(10);
                    while Arc::strong_count(&cluster) > 1 && std::time::Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    drop(cluster);
                }
            })
            .await;
        }
    }

    /// How many clients of each protocol are registered: (Kafka, AMQP).
    pub fn clients(&self) -> (usize, usize) {
        (self.kafka.len(), self.amqp.len())
    }

    /// Clients re-established after a loss so far: (Kafka rebuilds, AMQP reconnections).
    pub fn reconnects(&self) -> (u64, u64) {
        (
            self.retired.0 + self.kafka.values().map(|c| c.client.rebuilds()).sum::<u64>(),
            self.retired.1 + self.amqp.values().map(|n| n.client.reconnects()).sum::<u64>(),
        )
    }

    /// Waits for the AMQP consumer loops, which end once their connections are closed.
    pub async fn closed(&self) {
        for node in self.amqp.values() {
            node.client.consumers_done().await;
        }
    }
}

/// The PEM certificates of a target's `ca_file`, read at start and on every reload: a missing
/// file, or one without a certificate, is a set-up error naming the file, not a stream of TLS
/// failures.
fn read_ca(target: &str, path: &std::path::Path) -> Result<String, BackendError> {
    let error = |reason: String| BackendError::CaFile {
        target: target.to_owned(),
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
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

/// The probe queue of a cell: per daemon instance, so replicas never read each other's probes.
pub fn queue_name(instance: &str, cell: &Cell) -> String {
    format!("crossprobe.{instance}.{}", cell.id.as_str().replace('/', "."))
}

fn security(s: KafkaSecurity) -> &'static str {
    match s {
        KafkaSecurity::Plaintext => "plaintext",
        KafkaSecurity::Ssl => "ssl",
        KafkaSecurity::SaslPlaintext => "sasl_plaintext",
        KafkaSecurity::SaslSsl => "sasl_ssl",
    }
}

fn mechanism(m: SaslMechanism) -> &'static str {
    match m {
        SaslMechanism::Plain => "PLAIN",
        SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
        SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
    }
}
