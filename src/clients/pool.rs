//! The clients in use, keyed by everything they are built from (passwords included, as a
//! hash), so a configuration reload reuses every client whose settings did not change, creates
//! the missing ones and retires those no cell uses any more.
//!
//! Client tasks (Kafka consumers, AMQP supervisors) run on the daemon's task tracker, each
//! until its own token, a child of the clients' token in the stop tree, is cancelled.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crossprobe_probes::amqp::AmqpNode;
use crossprobe_probes::backend::{CellBackend, Deliveries};
use crossprobe_probes::kafka::KafkaCluster;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{CellSpec, ClientError, ClientSpec};

/// A registered client and the token that stops its task.
struct Client<T> {
    client: Arc<T>,
    stop: CancellationToken,
}

/// A cell's backend on its shared client, the messages that come back for it, and the key of
/// its client.
pub struct CellClient {
    pub backend: Arc<dyn CellBackend>,
    pub deliveries: Deliveries,
    pub key: u64,
}

/// The clients in use, by key.
#[derive(Default)]
pub struct ClientPool {
    kafka: HashMap<u64, Client<KafkaCluster>>,
    amqp: HashMap<u64, Client<AmqpNode>>,
    /// Reconnections counted by clients since retired, so totals never go down.
    retired: (u64, u64),
}

impl ClientPool {
    /// The backend of a cell, on its client; the client is created (its task started on `tasks`
    /// until a child of `cancel`) when no cell uses it yet.
    pub fn cell(
        &mut self,
        spec: &CellSpec,
        instance: &str,
        cell_key: u64,
        tasks: &TaskTracker,
        cancel: &CancellationToken,
    ) -> Result<CellClient, ClientError> {
        let key = spec.client_key();
        let (backend, deliveries): (Arc<dyn CellBackend>, _) = match &spec.client {
            ClientSpec::Kafka { config, topic, broker_id, group, .. } => {
                let cluster = match self.kafka.get(&key) {
                    Some(c) => c.client.clone(),
                    None => {
                        let cluster = KafkaCluster::new(config.clone(), instance)
                            .map_err(|source| ClientError::Kafka { target: spec.target.clone(), source })?;
                        let stop = cancel.child_token();
                        tasks.spawn(cluster.clone().consume(stop.clone()));
                        self.kafka.insert(key, Client { client: cluster.clone(), stop });
                        cluster
                    }
                };
                let (backend, rx) = cluster.cell(topic, *broker_id, *group, cell_key);
                (Arc::new(backend), rx)
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
                (Arc::new(backend), rx)
            }
        };
        Ok(CellClient { backend, deliveries, key })
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
