//! From the validated configuration to broker clients: one Kafka cluster client per (addresses,
//! security, user), one AMQP connection per (node, vhost, user), and a backend per cell on
//! them. Client tasks (Kafka consumers, AMQP supervisors) are started here on the caller's
//! tracker and stop with its token.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crossprobe_probes::amqp::{AmqpCell, AmqpClientConfig, AmqpNode, QueueSpec};
use crossprobe_probes::backend::Deliveries;
use crossprobe_probes::kafka::{KafkaCell, KafkaClientConfig, KafkaCluster};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Endpoint, KafkaSecurity, SaslMechanism, ValidatedConfig};
use crate::matrix::Cell;

/// A cell's publisher, of whichever protocol its target speaks.
pub enum CellBackend {
    Kafka(KafkaCell),
    Amqp(AmqpCell),
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

/// The clients, their background tasks, and one backend per cell (in matrix order).
pub struct Backends {
    pub cells: Vec<(CellBackend, Deliveries)>,
    kafka_clusters: Vec<Arc<KafkaCluster>>,
    amqp_nodes: Vec<Arc<AmqpNode>>,
}

impl Backends {
    /// Builds every client and cell backend, starting client tasks on `tasks` until `cancel`.
    pub fn build(
        config: &ValidatedConfig,
        tasks: &TaskTracker,
        cancel: &CancellationToken,
    ) -> Result<Backends, BackendError> {
        let mut kafka: BTreeMap<String, Arc<KafkaCluster>> = BTreeMap::new();
        let mut amqp: BTreeMap<String, Arc<AmqpNode>> = BTreeMap::new();
        let mut cells = Vec::with_capacity(config.matrix.len());
        for cell in config.matrix.cells() {
            let target = &config.targets[cell.target];
            let tenant = &config.tenants[cell.tenant];
            let secret = |s: &crate::config::Secret| {
                s.resolve().map_err(|reason| BackendError::Secret { tenant: tenant.name.clone(), reason })
            };
            match &target.endpoint {
                Endpoint::Kafka(k) => {
                    let t = tenant.kafka.as_ref().expect("the matrix pairs kafka targets with kafka tenants");
                    let mut addresses = target.addresses.clone();
                    addresses.sort();
                    let user = t.credentials.as_ref().map(|c| c.user.as_str()).unwrap_or("");
                    // Everything that shapes the connection: targets on the same brokers with
                    // another mechanism or CA need clients of their own.
                    let key = format!(
                        "{}|{:?}|{:?}|{:?}|{user}",
                        addresses.join(","),
                        k.security_protocol,
                        k.sasl_mechanism,
                        k.ca_file
                    );
                    let cluster = match kafka.get(&key) {
                        Some(c) => c.clone(),
                        None => {
                            let mut properties =
                                vec![("security.protocol".into(), security(k.security_protocol).into())];
                            if let Some(m) = k.sasl_mechanism {
                                properties.push(("sasl.mechanism".into(), mechanism(m).into()));
                            }
                            if let Some(c) = &t.credentials {
                                properties.push(("sasl.username".into(), c.user.clone()));
                                properties.push(("sasl.password".into(), secret(&c.password)?));
                            }
                            if let Some(ca) = &k.ca_file {
                                read_ca(&target.name, ca)?;
                                properties.push(("ssl.ca.location".into(), ca.display().to_string()));
                            }
                            let client = KafkaClientConfig {
                                bootstrap: target.addresses.join(","),
                                properties,
                                fetch_wait: k.fetch_wait,
                                timeout: target.probe.timeout,
                                topic_retention: k.topic_retention,
                            };
                            let cluster =
                                KafkaCluster::new(client, &config.daemon.instance).map_err(|source| {
                                    BackendError::Kafka { target: target.name.clone(), source }
                                })?;
                            tasks.spawn(cluster.clone().consume(cancel.clone()));
                            kafka.insert(key, cluster.clone());
                            cluster
                        }
                    };
                    let (backend, rx) = cluster.cell(&t.topic, k.broker_id, cell.key);
                    cells.push((CellBackend::Kafka(backend), rx));
                }
                Endpoint::Amqp(a) => {
                    let t = tenant.amqp.as_ref().expect("the matrix pairs amqp targets with amqp tenants");
                    let key = format!("{}|{}|{}", target.addresses[0], t.vhost, t.credentials.user);
                    let node = match amqp.get(&key) {
                        Some(n) => n.clone(),
                        None => {
                            let ca_pem = match &a.ca_file {
                                Some(path) => Some(read_ca(&target.name, path)?),
                                None => None,
                            };
                            let node = AmqpNode::new(AmqpClientConfig {
                                address: target.addresses[0].clone(),
                                vhost: t.vhost.clone(),
                                user: t.credentials.user.clone(),
                                password: secret(&t.credentials.password)?,
                                tls: a.tls,
                                ca_pem,
                                heartbeat: a.heartbeat,
                                timeout: target.probe.timeout,
                            });
                            tasks.spawn(node.clone().supervise(cancel.clone()));
                            amqp.insert(key, node.clone());
                            node
                        }
                    };
                    let queue = QueueSpec {
                        name: queue_name(&config.daemon.instance, cell),
                        ttl: a.queue_ttl,
                        max_length: a.queue_max_length,
                        expires: (target.probe.interval * 10).max(Duration::from_secs(600)),
                    };
                    let (backend, rx) = node.cell(queue);
                    cells.push((CellBackend::Amqp(backend), rx));
                }
            }
        }
        Ok(Backends {
            cells,
            kafka_clusters: kafka.into_values().collect(),
            amqp_nodes: amqp.into_values().collect(),
        })
    }

    /// Connects every client and prepares every cell (topics, partitions, channels, queues),
    /// concurrently and each bounded by its probe timeout. Failures are left for the probes to
    /// report; this only keeps set-up out of the first measurements.
    pub async fn prepare(&self, config: &ValidatedConfig) {
        let preparing = self.cells.iter().zip(config.matrix.cells()).map(|((backend, _), cell)| {
            let timeout = config.targets[cell.target].probe.timeout.max(Duration::from_secs(2));
            async move {
                let _ = match backend {
                    CellBackend::Kafka(b) => tokio::time::timeout(timeout, b.prepare()).await,
                    CellBackend::Amqp(b) => tokio::time::timeout(timeout, b.prepare()).await,
                };
            }
        });
        futures_util::future::join_all(preparing).await;
    }

    /// Clients re-established after a loss so far: (Kafka rebuilds, AMQP reconnections).
    pub fn reconnects(&self) -> (u64, u64) {
        (
            self.kafka_clusters.iter().map(|c| c.rebuilds()).sum(),
            self.amqp_nodes.iter().map(|n| n.reconnects()).sum(),
        )
    }

    /// Waits for the AMQP consumer loops, which end once their connections are closed.
    pub async fn closed(&self) {
        for node in &self.amqp_nodes {
            node.consumers_done().await;
        }
    }
}

/// The PEM certificates of a target's `ca_file`, read once at start: a missing file, or one
/// without a certificate, is a set-up error naming the file, not a stream of TLS failures.
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
