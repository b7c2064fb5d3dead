//! Kafka backend (rdkafka): one producer and one consumer per cluster and credentials, shared by
//! all cells of that cluster.
//!
//! Each cell is pinned to one partition of its tenant's probe topic, led by the cell's target
//! broker when a broker id is configured. The consumer has no group: it `assign()`s every
//! pinned partition at its end offset and routes messages back by (topic, partition). Broker
//! liveness comes from librdkafka's statistics, so a cell whose broker is down reports
//! `connect_failed` at once instead of waiting out a produce timeout.
//!
//! The optional group stage: before each publish, a cell commits its partition's consumed
//! position through the consumer group, so a coordinator that does not take commits fails the
//! probe as `connect_failed{kind=coordinator}` (produce failures stay `publish_failed`).
//!
//! When a broker the clients had reached goes down, the clients are rebuilt (with backoff): no
//! cached state (topic ids, assignments) survives a broker restart, and cells re-pin on the new
//! generation. Reconnecting never backs off beyond the probe interval (librdkafka's reconnect
//! backoff, a cell's retry of its set-up), so a returned broker is seen by the next probe round. Blocking librdkafka calls run on the blocking pool; context callbacks only store
//! state.

mod cell;
mod clients;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

pub use cell::KafkaCell;
use clients::Clients;
pub use clients::PartitionInfo;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::backend::{forward, Deliveries, Delivery, DELIVERY_BUFFER};

/// How to reach one cluster with one set of credentials.
#[derive(Clone)]
pub struct KafkaClientConfig {
    /// Comma-separated `host:port` list.
    pub bootstrap: String,
    /// Extra librdkafka properties passed through (security.protocol, sasl.*, ssl.*). They may
    /// hold secrets: never logged.
    pub properties: Vec<(String, String)>,
    /// `fetch.wait.max.ms` of the consumer.
    pub fetch_wait: Duration,
    /// Produce timeout (`message.timeout.ms`) and metadata timeout: the probe timeout.
    pub timeout: Duration,
    /// `retention.ms` of topics the backend creates.
    pub topic_retention: Duration,
    /// The shortest probe interval of the cells on these clients: a lost broker is tried again
    /// at least this often (librdkafka's `reconnect.backoff.max.ms`, and a cell's retry of its
    /// topic and partition set-up).
    pub interval: Duration,
}

impl std::fmt::Debug for KafkaClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.properties.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("KafkaClientConfig")
            .field("bootstrap", &self.bootstrap)
            .field("properties", &keys)
            .finish_non_exhaustive()
    }
}

/// One broker of a cluster, as its metadata names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Broker {
    pub id: i32,
    /// Its advertised `host:port`.
    pub address: String,
}

/// The brokers of the cluster `config` bootstraps from, read from the metadata of `topic` by a short-lived
/// client (created, asked once within the timeout, destroyed, all on the blocking pool).
///
/// librdkafka's metadata has no rack (its public broker record is id, host and port), so the
/// zone of a broker comes from the configuration.
pub async fn discover(
    config: &KafkaClientConfig,
    topic: &str,
) -> Result<Vec<Broker>, crate::backend::ProbeError> {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::BaseConsumer;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.bootstrap)
        .set("socket.connection.setup.timeout.ms", clients::ms(config.timeout.max(Duration::from_secs(1))));
    for (k, v) in &config.properties {
        c.set(k, v);
    }
    let timeout = config.timeout;
    let topic = topic.to_owned();
    let fail = |e: &KafkaError| crate::backend::ProbeError::Connect(clients::kind(e));
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = c.create().map_err(|e| fail(&e))?;
        // Only the brokers are wanted: the metadata of one topic (the probe topic, which the cells
        // create) carries them all, at a fraction of the cost of every topic's.
        let metadata = consumer.fetch_metadata(Some(&topic), timeout).map_err(|e| fail(&e))?;
        let mut brokers: Vec<Broker> = metadata
            .brokers()
            .iter()
            .map(|b| Broker { id: b.id(), address: format!("{}:{}", b.host(), b.port()) })
            .collect();
        brokers.sort();
        Ok(brokers)
    })
    .await
    .map_err(|_| crate::backend::ProbeError::Connect(crate::outcome::ErrorKind::Client))?
}

/// The cells pinned to each partition, by cell key.
type Routes = HashMap<(String, i32), Vec<(u64, mpsc::Sender<Delivery>)>>;

/// Shortest time between two rebuilds of a cluster's clients.
const REBUILD_BACKOFF: Duration = Duration::from_secs(5);

/// The shared clients of one cluster, replaced as a whole when a broker is lost.
pub struct KafkaCluster {
    config: KafkaClientConfig,
    instance: String,
    clients: RwLock<Arc<Clients>>,
    routes: Mutex<Routes>,
    rebuilt: Notify,
    rebuilds: AtomicU64,
}

impl KafkaCluster {
    /// Creates the first generation of clients; fails only on bad settings.
    pub fn new(config: KafkaClientConfig, instance: &str) -> Result<Arc<Self>, KafkaError> {
        let clients = Clients::create(&config, instance, 0)?;
        Ok(Arc::new(KafkaCluster {
            config,
            instance: instance.to_owned(),
            clients: RwLock::new(Arc::new(clients)),
            routes: Mutex::new(HashMap::new()),
            rebuilt: Notify::new(),
            rebuilds: AtomicU64::new(0),
        }))
    }

    /// A cell publishing to `topic`, on a partition led by `broker_id` when given; with `group`,
    /// each probe first commits the partition's consumed position through the consumer group.
    /// The topic and partition are resolved on the first publish and again after the topic or
    /// the clients changed.
    pub fn cell(
        self: &Arc<Self>,
        topic: &str,
        broker_id: Option<i32>,
        group: bool,
        cell_key: u64,
    ) -> (KafkaCell, Deliveries) {
        let (tx, rx) = mpsc::channel(DELIVERY_BUFFER);
        (KafkaCell::new(self.clone(), topic, broker_id, group, cell_key, tx), rx)
    }

    /// How many times the clients were rebuilt after losing a broker.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds.load(Ordering::Relaxed)
    }

    fn clients(&self) -> Arc<Clients> {
        self.clients.read().expect("clients lock").clone()
    }

    /// Receives messages for every pinned partition until cancelled, routing each to the cells
    /// pinned there; rebuilds the clients when a broker they had reached is lost.
    pub async fn consume(self: Arc<Self>, cancel: CancellationToken) {
        let mut check = tokio::time::interval(Duration::from_secs(1));
        // The first rebuild may come at once: a zone killed right after start is common in tests.
        let mut last_rebuild: Option<Instant> = None;
        loop {
            let clients = self.clients();
            let message = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.rebuilt.notified() => continue,
                _ = check.tick() => {
                    if clients.lost_a_broker() && last_rebuild.is_none_or(|t| t.elapsed() >= REBUILD_BACKOFF) {
                        last_rebuild = Some(Instant::now());
                        self.rebuild(&clients).await;
                    }
                    continue;
                }
                m = clients.consumer.recv() => m,
            };
            match message {
                Ok(m) => {
                    if let Some(offset) = Some(m.offset()).filter(|o| *o >= 0) {
                        clients.consumed(m.topic(), m.partition(), offset);
                    }
                    let routes = self.routes.lock().expect("routes lock");
                    if let Some(cells) = routes.get(&(m.topic().to_owned(), m.partition())) {
                        // To the cell the message names; what names none of ours (garbage,
                        // other instances' shards) to the partition's first cell, so it is
                        // counted once.
                        let payload = m.payload().unwrap_or_default();
                        let key = crate::payload::peek_cell(payload);
                        // Senders of cells that stopped (a reload removed or restarted them)
                        // are skipped, so their successors on the same key receive.
                        let mut open = cells.iter().filter(|(_, tx)| !tx.is_closed());
                        let first = open.clone().next();
                        let target = open.find(|(k, _)| Some(*k) == key).or(first);
                        if let Some((_, tx)) = target {
                            forward(tx, payload);
                        }
                    }
                }
                Err(e) => {
                    debug!(error = %e, "kafka consumer error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Replaces `old` by a new generation; cells re-pin on their next publish.
    async fn rebuild(&self, old: &Arc<Clients>) {
        let generation = old.generation + 1;
        let fresh = match Clients::create(&self.config, &self.instance, generation) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                warn!(error = %e, "cannot rebuild Kafka clients; keeping the old ones");
                return;
            }
        };
        warn!(bootstrap = %self.config.bootstrap, generation, "a Kafka broker was lost; clients rebuilt");
        let previous = std::mem::replace(&mut *self.clients.write().expect("clients lock"), fresh);
        self.rebuilds.fetch_add(1, Ordering::Relaxed);
        self.rebuilt.notify_waiters();
        // Destroying librdkafka clients blocks until their threads end.
        let _ = tokio::task::spawn_blocking(move || {
            let _ = previous.consumer.unassign();
            drop(previous);
        })
        .await;
    }

    /// Routes `(topic, partition)` to `tx` and assigns it on `clients`' consumer at its end.
    async fn route(
        &self,
        clients: &Clients,
        topic: &str,
        partition: i32,
        cell_key: u64,
        tx: &mpsc::Sender<Delivery>,
    ) -> Result<(), crate::backend::ProbeError> {
        clients.assign_at_end(topic, partition).await?;
        let mut routes = self.routes.lock().expect("routes lock");
        let cells = routes.entry((topic.to_owned(), partition)).or_default();
        cells.retain(|(_, s)| !s.is_closed() && !s.same_channel(tx));
        cells.push((cell_key, tx.clone()));
        Ok(())
    }
}
