//! Kafka backend (rdkafka): one producer and one consumer per cluster and credentials, shared by
//! all cells of that cluster.
//!
//! Each cell is pinned to one partition of its tenant's probe topic, led by the cell's target
//! broker when a broker id is configured. The consumer has no group: it `assign()`s every
//! pinned partition at its end offset and routes messages back by (topic, partition). Broker
//! liveness comes from librdkafka's statistics, so a cell whose broker is down reports
//! `connect_failed` at once instead of waiting out a produce timeout. Blocking librdkafka
//! calls (metadata) run on the blocking pool; context callbacks only store state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backend::{forward, CellBackend, Deliveries, Delivery, ProbeError, DELIVERY_BUFFER};
use crate::outcome::ErrorKind;

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

/// Client callbacks: record broker states from statistics, turn librdkafka's logs and errors
/// into quiet tracing events (broker failures are data, already in the probe outcomes).
#[derive(Default, Clone)]
pub struct Context {
    /// Node id -> whether librdkafka's connection to it is up (from the producer's view).
    brokers: Arc<Mutex<HashMap<i32, bool>>>,
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        let states =
            statistics.brokers.values().filter(|b| b.nodeid >= 0).map(|b| (b.nodeid, b.state == "UP"));
        *self.brokers.lock().expect("broker state lock") = states.collect();
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        debug!(?level, facility = fac, message = log_message, "librdkafka");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        debug!(error = %error, reason, "librdkafka error");
    }
}

impl ConsumerContext for Context {}

type Routes = HashMap<(String, i32), Vec<mpsc::Sender<Delivery>>>;

/// The shared clients of one cluster.
pub struct KafkaCluster {
    config: KafkaClientConfig,
    producer: FutureProducer<Context>,
    consumer: Arc<StreamConsumer<Context>>,
    admin: AdminClient<Context>,
    routes: Mutex<Routes>,
    /// Partitions in the consumer's assignment.
    assigned: Mutex<std::collections::HashSet<(String, i32)>>,
    brokers: Context,
}

impl KafkaCluster {
    /// Creates the clients. librdkafka connects lazily, so this fails only on bad settings.
    pub fn new(config: KafkaClientConfig, instance: &str) -> Result<Arc<Self>, KafkaError> {
        let base = |c: &mut ClientConfig| {
            c.set("bootstrap.servers", &config.bootstrap)
                .set("client.id", format!("crossprobe-{instance}"))
                .set("statistics.interval.ms", "1000")
                .set("socket.connection.setup.timeout.ms", ms(config.timeout.max(Duration::from_secs(1))))
                .set("reconnect.backoff.ms", "100")
                .set("reconnect.backoff.max.ms", "2000")
                .set("topic.metadata.refresh.interval.ms", "30000");
            for (k, v) in &config.properties {
                c.set(k, v);
            }
        };
        let mut producer = ClientConfig::new();
        base(&mut producer);
        producer
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("enable.idempotence", "false")
            .set("message.timeout.ms", ms(config.timeout))
            .set("request.timeout.ms", ms(config.timeout));
        let mut consumer = ClientConfig::new();
        base(&mut consumer);
        consumer
            .set("group.id", format!("crossprobe-{instance}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "latest")
            .set("fetch.wait.max.ms", ms(config.fetch_wait))
            .set("fetch.min.bytes", "1")
            .set("fetch.error.backoff.ms", "100");
        let mut admin = ClientConfig::new();
        base(&mut admin);
        let brokers = Context::default();
        Ok(Arc::new(KafkaCluster {
            producer: producer.create_with_context(brokers.clone())?,
            consumer: Arc::new(consumer.create_with_context(Context::default())?),
            admin: admin.create_with_context(Context::default())?,
            routes: Mutex::new(HashMap::new()),
            assigned: Mutex::new(Default::default()),
            brokers,
            config,
        }))
    }

    /// A cell publishing to `topic`, on a partition led by `broker_id` when given. The topic and
    /// partition are resolved on the first publish and again after the topic disappears.
    pub fn cell(
        self: &Arc<Self>,
        topic: &str,
        broker_id: Option<i32>,
        cell_key: u64,
    ) -> (KafkaCell, Deliveries) {
        let (tx, rx) = mpsc::channel(DELIVERY_BUFFER);
        let cell = KafkaCell {
            cluster: self.clone(),
            topic: topic.to_owned(),
            broker_id,
            cell_key,
            tx,
            pin: Mutex::new(Pin::default()),
        };
        (cell, rx)
    }

    /// Receives messages for every pinned partition until cancelled, routing each to the cells
    /// pinned there.
    pub async fn consume(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let message = tokio::select! {
                _ = cancel.cancelled() => return,
                m = self.consumer.recv() => m,
            };
            match message {
                Ok(m) => {
                    let routes = self.routes.lock().expect("routes lock");
                    if let Some(senders) = routes.get(&(m.topic().to_owned(), m.partition())) {
                        for tx in senders {
                            forward(tx, m.payload().unwrap_or_default());
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

    fn broker_up(&self, node: i32) -> Option<bool> {
        self.brokers.brokers.lock().expect("broker state lock").get(&node).copied()
    }

    /// Creates `topic` if missing, with one partition per broker and the configured retention.
    async fn ensure_topic(&self, topic: &str) -> Result<(), ProbeError> {
        let metadata = self.metadata(None).await?;
        if metadata.iter().any(|(t, _)| t == topic) {
            return Ok(());
        }
        let brokers = self.metadata_brokers().await?.max(1);
        let retention = ms(self.config.topic_retention);
        let new = NewTopic::new(topic, brokers as i32, TopicReplication::Fixed(brokers.min(3) as i32))
            .set("retention.ms", &retention);
        let options = AdminOptions::new().operation_timeout(Some(self.config.timeout));
        let results =
            self.admin.create_topics([&new], &options).await.map_err(|e| ProbeError::Connect(kind(&e)))?;
        for r in results {
            match r {
                Ok(_) => info!(topic, partitions = brokers, retention_ms = %retention, "created probe topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(ProbeError::Connect(code_kind(code))),
            }
        }
        Ok(())
    }

    async fn metadata_brokers(&self) -> Result<usize, ProbeError> {
        let consumer = self.consumer.clone();
        let timeout = self.config.timeout;
        tokio::task::spawn_blocking(move || consumer.fetch_metadata(None, timeout).map(|m| m.brokers().len()))
            .await
            .map_err(|_| ProbeError::Connect(ErrorKind::Client))?
            .map_err(|e| ProbeError::Connect(kind(&e)))
    }

    /// Topics with their partitions' leaders, from a blocking metadata request.
    async fn metadata(&self, topic: Option<&str>) -> Result<Vec<(String, Vec<(i32, i32)>)>, ProbeError> {
        let consumer = self.consumer.clone();
        let timeout = self.config.timeout;
        let topic = topic.map(str::to_owned);
        let metadata =
            tokio::task::spawn_blocking(move || consumer.fetch_metadata(topic.as_deref(), timeout))
                .await
                .map_err(|_| ProbeError::Connect(ErrorKind::Client))?
                .map_err(|e| ProbeError::Connect(kind(&e)))?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| (t.name().to_owned(), t.partitions().iter().map(|p| (p.id(), p.leader())).collect()))
            .collect())
    }

    /// Routes the partition's messages to `tx`, consuming it from its current end. The end is
    /// read first and assigned as a concrete offset, so a probe published right after is never
    /// skipped. A partition seen again (its topic was recreated) is moved to its new end.
    async fn route(
        &self,
        topic: &str,
        partition: i32,
        tx: &mpsc::Sender<Delivery>,
    ) -> Result<(), ProbeError> {
        let consumer = self.consumer.clone();
        let timeout = self.config.timeout;
        let t = topic.to_owned();
        let high = tokio::task::spawn_blocking(move || consumer.fetch_watermarks(&t, partition, timeout))
            .await
            .map_err(|_| ProbeError::Connect(ErrorKind::Client))?
            .map_err(|e| ProbeError::Connect(kind(&e)))?
            .1;
        let key = (topic.to_owned(), partition);
        let reassign = !self.assigned.lock().expect("assigned lock").insert(key.clone());
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(high))
            .map_err(|e| ProbeError::Connect(kind(&e)))?;
        if reassign {
            self.consumer.incremental_unassign(&tpl).map_err(|e| ProbeError::Connect(kind(&e)))?;
        }
        self.consumer.incremental_assign(&tpl).map_err(|e| ProbeError::Connect(kind(&e)))?;
        let mut routes = self.routes.lock().expect("routes lock");
        let senders = routes.entry(key).or_default();
        senders.retain(|s| !s.is_closed() && !s.same_channel(tx));
        senders.push(tx.clone());
        Ok(())
    }
}

/// Where a cell publishes, once resolved.
#[derive(Debug, Default)]
struct Pin {
    partition: Option<i32>,
    leader: Option<i32>,
    /// No new resolution attempt before this (backoff after a failure).
    retry_at: Option<Instant>,
    backoff: Duration,
    checked: Option<Instant>,
}

/// One cell's publisher on a shared cluster.
pub struct KafkaCell {
    cluster: Arc<KafkaCluster>,
    topic: String,
    broker_id: Option<i32>,
    cell_key: u64,
    tx: mpsc::Sender<Delivery>,
    pin: Mutex<Pin>,
}

/// How often a pinned cell re-reads its partition's leader to report leadership moves.
const LEADER_CHECK: Duration = Duration::from_secs(30);

impl KafkaCell {
    /// The pinned partition and its leader, resolving (topic creation, metadata) when needed.
    async fn resolve(&self) -> Result<(i32, i32), ProbeError> {
        let now = Instant::now();
        let stale = {
            let pin = self.pin.lock().expect("pin lock");
            if let (Some(p), Some(l)) = (pin.partition, pin.leader) {
                if pin.checked.is_some_and(|c| now < c + LEADER_CHECK) {
                    return Ok((p, l));
                }
            } else if pin.retry_at.is_some_and(|r| now < r) {
                return Err(ProbeError::Connect(ErrorKind::Client));
            }
            pin.partition
        };
        match self.lookup(stale).await {
            Ok((partition, leader)) => {
                let mut pin = self.pin.lock().expect("pin lock");
                if pin.leader.is_some_and(|l| l != leader) {
                    warn!(topic = %self.topic, partition, from = ?pin.leader, to = leader, "partition leadership moved; the cell keeps its partition");
                }
                *pin = Pin {
                    partition: Some(partition),
                    leader: Some(leader),
                    checked: Some(now),
                    ..Pin::default()
                };
                Ok((partition, leader))
            }
            Err(e) => {
                let mut pin = self.pin.lock().expect("pin lock");
                pin.backoff = (pin.backoff * 2).clamp(Duration::from_millis(500), Duration::from_secs(10));
                pin.retry_at = Some(now + pin.backoff);
                if pin.partition.is_some() && matches!(e, ProbeError::Connect(ErrorKind::NotFound)) {
                    pin.partition = None;
                }
                Err(e)
            }
        }
    }

    async fn lookup(&self, pinned: Option<i32>) -> Result<(i32, i32), ProbeError> {
        if pinned.is_none() {
            self.cluster.ensure_topic(&self.topic).await?;
        }
        let topics = self.cluster.metadata(Some(&self.topic)).await?;
        let partitions = topics
            .into_iter()
            .find(|(t, _)| *t == self.topic)
            .map(|(_, p)| p)
            .filter(|p| !p.is_empty())
            .ok_or(ProbeError::Connect(ErrorKind::NotFound))?;
        let chosen = match (pinned, self.broker_id) {
            (Some(p), _) => partitions.iter().find(|(id, _)| *id == p).copied(),
            (None, Some(broker)) => partitions.iter().find(|(_, leader)| *leader == broker).copied(),
            (None, None) => Some(partitions[(self.cell_key % partitions.len() as u64) as usize]),
        };
        let (partition, leader) = chosen.ok_or(ProbeError::Connect(ErrorKind::NotFound))?;
        if pinned.is_none() {
            self.cluster.route(&self.topic, partition, &self.tx).await?;
            info!(topic = %self.topic, partition, leader, "cell pinned to partition");
        }
        Ok((partition, leader))
    }
}

impl KafkaCell {
    /// Creates the topic if needed and pins the partition, so the first probe measures the
    /// broker rather than the set-up.
    pub async fn prepare(&self) -> Result<(), ProbeError> {
        self.resolve().await.map(|_| ())
    }
}

impl CellBackend for KafkaCell {
    async fn publish(&self, payload: Vec<u8>) -> Result<(), ProbeError> {
        let (partition, leader) = self.resolve().await?;
        if self.cluster.broker_up(leader) == Some(false) {
            return Err(ProbeError::Connect(ErrorKind::Refused));
        }
        let record = FutureRecord::<(), _>::to(&self.topic).partition(partition).payload(&payload);
        match self.cluster.producer.send(record, Timeout::After(Duration::ZERO)).await {
            Ok(_) => Ok(()),
            Err((e, _)) => {
                let k = kind(&e);
                if k == ErrorKind::NotFound {
                    self.pin.lock().expect("pin lock").partition = None;
                }
                Err(ProbeError::Publish(k))
            }
        }
    }
}

fn ms(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

fn kind(e: &KafkaError) -> ErrorKind {
    match e.rdkafka_error_code() {
        Some(code) => code_kind(code),
        None => ErrorKind::Client,
    }
}

fn code_kind(code: RDKafkaErrorCode) -> ErrorKind {
    use RDKafkaErrorCode as C;
    match code {
        C::MessageTimedOut | C::RequestTimedOut | C::OperationTimedOut => ErrorKind::Timeout,
        C::BrokerTransportFailure | C::AllBrokersDown | C::BrokerNotAvailable => ErrorKind::Refused,
        C::SaslAuthenticationFailed
        | C::Authentication
        | C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::GroupAuthorizationFailed => ErrorKind::Auth,
        C::SSL => ErrorKind::Tls,
        C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition => ErrorKind::NotFound,
        C::QueueFull => ErrorKind::Client,
        _ => ErrorKind::Broker,
    }
}
