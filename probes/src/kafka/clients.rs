//! One generation of rdkafka clients for a cluster (producer, consumer; an admin client while
//! creating a topic), the context
//! that records broker states from librdkafka's statistics, and the blocking calls (metadata,
//! watermarks) run on the blocking pool.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info};

use super::KafkaClientConfig;
use crate::backend::ProbeError;
use crate::outcome::ErrorKind;

/// What the statistics say of one broker.
#[derive(Debug, Clone, Default)]
struct BrokerState {
    state: String,
    down: bool,
}

/// Client callbacks: record broker states from statistics, turn librdkafka's logs and errors
/// into quiet tracing events (broker failures are data, already in the probe outcomes). They
/// run on librdkafka's threads and only store state.
#[derive(Clone)]
pub struct Context {
    brokers: Arc<Mutex<HashMap<i32, BrokerState>>>,
    /// The last TLS or SASL failure librdkafka reported, until a broker is reached; shared by
    /// one generation's clients. It explains why the brokers cannot be reached, which a
    /// timed-out request or a down broker alone does not say.
    refusal: Arc<Mutex<Option<ErrorKind>>>,
    /// librdkafka said every broker connection was down; shared by one generation's clients.
    /// The statistics can miss a broker that was killed and restarted within a second or two,
    /// and this error cannot.
    all_down: Arc<AtomicBool>,
    /// When the client was created: a first connection gets `CONNECT_GRACE` to succeed.
    created: Instant,
}

impl Default for Context {
    fn default() -> Self {
        Context {
            brokers: Arc::default(),
            refusal: Arc::default(),
            all_down: Arc::default(),
            created: Instant::now(),
        }
    }
}

impl Context {
    /// A context with its own broker states that records refusals and lost brokers into
    /// `other`'s.
    fn sharing_alarms(other: &Context) -> Self {
        Context { refusal: other.refusal.clone(), all_down: other.all_down.clone(), ..Context::default() }
    }
}

/// How long a new client may take to reach a broker before the broker counts as down.
const CONNECT_GRACE: Duration = Duration::from_secs(2);

/// A metadata answer this recent serves every cell of the cluster that asks (see
/// [`Clients::metadata`]).
const METADATA_FRESH: Duration = Duration::from_secs(1);

/// A partition assigned this recently is not unassigned and assigned again (see
/// [`Clients::assign_at_end`]).
const REASSIGN_AFTER: Duration = Duration::from_secs(10);

/// Whether a broker counts as down, from its librdkafka state, its previous state and whether
/// it was down. A broker not in an established state is down, unless it is still making its
/// first connection within the grace period. (librdkafka cycles INIT, TRY_CONNECT, CONNECT,
/// DOWN while a broker refuses.)
pub(super) fn broker_down(state: &str, previous: Option<&str>, was_down: bool, past_grace: bool) -> bool {
    let established = |s: &str| matches!(s, "UP" | "UPDATE" | "APIVERSION_QUERY") || s.starts_with("AUTH");
    if established(state) {
        return false;
    }
    state == "DOWN" || was_down || past_grace || previous.is_some_and(established)
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        let mut brokers = self.brokers.lock().expect("broker state lock");
        for b in statistics.brokers.values().filter(|b| b.nodeid >= 0) {
            let old = brokers.get(&b.nodeid).cloned().unwrap_or_default();
            let previous = (!old.state.is_empty()).then_some(old.state.as_str());
            let down = broker_down(&b.state, previous, old.down, self.created.elapsed() > CONNECT_GRACE);
            if old.state != b.state {
                debug!(node = b.nodeid, state = %b.state, down, "kafka broker state");
            }
            brokers.insert(b.nodeid, BrokerState { state: b.state.clone(), down });
        }
        if brokers.values().any(|b| b.state == "UP") {
            *self.refusal.lock().expect("refusal lock") = None;
        }
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        debug!(?level, facility = fac, message = log_message, "librdkafka");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        debug!(error = %error, reason, "librdkafka error");
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.all_down.store(true, Ordering::Relaxed);
        }
        let k = kind(&error);
        if matches!(k, ErrorKind::Tls | ErrorKind::Auth) {
            *self.refusal.lock().expect("refusal lock") = Some(k);
        }
    }
}

impl ConsumerContext for Context {}

/// One generation of clients.
pub(super) struct Clients {
    pub generation: u64,
    pub producer: FutureProducer<Context>,
    pub consumer: Arc<StreamConsumer<Context>>,
    /// Settings of the short-lived admin client that creates topics. An admin client's main
    /// queue (statistics, errors) is never served by rdkafka, so one kept alive grows.
    admin: ClientConfig,
    /// The producer's view of the brokers.
    brokers: Context,
    /// Partitions assigned, and when.
    assigned: Mutex<HashMap<(String, i32), Instant>>,
    /// The next offset of each assigned partition: where it was assigned, then past the last
    /// message consumed. The group stage commits it.
    positions: Mutex<HashMap<(String, i32), i64>>,
    /// A partition was assigned: these clients hold state (topic ids, offsets) of the brokers.
    reached: AtomicBool,
    /// A topic these clients had reached was gone: the broker lost its state (tansu forgets
    /// its topics on restart), so the clients' cached topic ids and leader epochs are stale.
    stale: AtomicBool,
    timeout: Duration,
    retention: Duration,
    /// The last metadata read per topic (`None`: all topics), one read at a time per topic.
    metadata: Mutex<HashMap<Option<String>, MetadataSlot>>,
}

/// The last read of one topic's metadata; locked across a read, so one is made at a time.
type MetadataSlot = Arc<tokio::sync::Mutex<Option<MetadataRead>>>;

/// Topics with their partitions, and the number of brokers.
pub(super) type Metadata = Arc<(Vec<Partitions>, usize)>;

/// One metadata read and when it ended.
struct MetadataRead {
    at: Instant,
    result: Result<Metadata, ProbeError>,
}

impl Clients {
    /// Creates the clients. librdkafka connects lazily, so this fails only on bad settings.
    pub fn create(
        config: &KafkaClientConfig,
        instance: &str,
        generation: u64,
    ) -> Result<Clients, KafkaError> {
        let base = |c: &mut ClientConfig| {
            c.set("bootstrap.servers", &config.bootstrap)
                .set("client.id", format!("crossprobe-{instance}"))
                .set("socket.connection.setup.timeout.ms", ms(config.timeout.max(Duration::from_secs(1))))
                // librdkafka doubles the backoff from the first value and jitters it by -25% to
                // +50%, then caps it at the max (default 10 s): the probe interval.
                .set("reconnect.backoff.ms", ms(crate::retry::FIRST.min(config.interval)))
                .set("reconnect.backoff.max.ms", ms(config.interval))
                .set("topic.metadata.refresh.interval.ms", "30000");
            for (k, v) in &config.properties {
                c.set(k, v);
            }
        };
        let mut producer = ClientConfig::new();
        base(&mut producer);
        producer
            // Broker states for liveness; only the producer reports them (its queue is served).
            // 1 s is librdkafka's granularity: a returned broker may be seen up to 1 s late.
            .set("statistics.interval.ms", "1000")
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
        Ok(Clients {
            generation,
            producer: producer.create_with_context(brokers.clone())?,
            consumer: Arc::new(consumer.create_with_context(Context::sharing_alarms(&brokers))?),
            admin,
            brokers,
            assigned: Mutex::new(HashMap::new()),
            positions: Mutex::new(HashMap::new()),
            reached: AtomicBool::new(false),
            stale: AtomicBool::new(false),
            timeout: config.timeout,
            retention: config.topic_retention,
            metadata: Mutex::default(),
        })
    }

    /// `Some(false)` when the statistics say the broker's connection is down.
    pub fn broker_up(&self, node: i32) -> Option<bool> {
        self.brokers.brokers.lock().expect("broker state lock").get(&node).map(|b| !b.down)
    }

    /// `k`, or what explains it: a connection failure (a timeout, a refusal) while librdkafka
    /// reports a TLS or SASL failure is that failure.
    pub fn explain(&self, k: ErrorKind) -> ErrorKind {
        match k {
            ErrorKind::Timeout | ErrorKind::Refused | ErrorKind::Client => {
                self.brokers.refusal.lock().expect("refusal lock").unwrap_or(k)
            }
            other => other,
        }
    }

    /// These clients hold broker state and a broker was lost (down in the statistics, every
    /// connection reported down, or a topic they had reached gone): they should be replaced, so
    /// no state (cached topic ids, leader epochs, offsets, assignments) outlives a broker
    /// restart. Kept, a restarted tansu's re-created topic is refused for about 10 s (its leader
    /// epoch is older than the cached one); real Kafka keeps its topics, but a rebuild is cheap
    /// either way.
    pub fn lost_a_broker(&self) -> bool {
        self.reached.load(Ordering::Relaxed)
            && (self.stale.load(Ordering::Relaxed)
                || self.brokers.all_down.load(Ordering::Relaxed)
                || self.brokers.brokers.lock().expect("broker state lock").values().any(|b| b.down))
    }

    /// A topic pinned on these clients is gone; see [`Clients::lost_a_broker`].
    pub fn topic_vanished(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    /// Creates `topic` if missing, with one partition per broker and the configured retention.
    pub async fn ensure_topic(&self, topic: &str) -> Result<(), ProbeError> {
        let metadata = self.metadata(None).await?;
        let (topics, brokers) = &*metadata;
        if topics.iter().any(|(t, _)| t == topic) {
            return Ok(());
        }
        let brokers = (*brokers).max(1);
        let retention = ms(self.retention);
        let new = NewTopic::new(topic, brokers as i32, TopicReplication::Fixed(brokers.min(3) as i32))
            .set("retention.ms", &retention);
        let options = AdminOptions::new().operation_timeout(Some(self.timeout));
        let admin: AdminClient<Context> = self
            .admin
            .create_with_context(Context::sharing_alarms(&self.brokers))
            .map_err(|e| ProbeError::Connect(kind(&e)))?;
        let results = admin.create_topics([&new], &options).await;
        // Dropping an admin client joins its threads: off the async runtime.
        tokio::task::spawn_blocking(move || drop(admin));
        let results = results.map_err(|e| ProbeError::Connect(kind(&e)))?;
        for r in results {
            match r {
                Ok(_) => info!(topic, partitions = brokers, retention_ms = %retention, "created probe topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(ProbeError::Connect(code_kind(code))),
            }
        }
        Ok(())
    }

    /// Topics (all, or one) with their partitions' leaders and replicas, and the number of
    /// brokers.
    ///
    /// Every cell of a cluster re-reads its partition's leader periodically. An answer less
    /// than [`METADATA_FRESH`] old (an error included) serves them all, and one read at a time
    /// is made per topic: at 10,000 cells, a read of its own per cell was 167 broker requests a
    /// second. An answer that lacks the topic asked for is not reused, so a topic just created
    /// is seen at once.
    pub async fn metadata(&self, topic: Option<&str>) -> Result<Metadata, ProbeError> {
        let key = topic.map(str::to_owned);
        let slot = self.metadata.lock().expect("metadata lock").entry(key.clone()).or_default().clone();
        let mut last = slot.lock().await;
        let lacks = |m: &Metadata| key.as_ref().is_some_and(|t| !m.0.iter().any(|(name, _)| name == t));
        if let Some(read) = last.as_ref().filter(|r| r.at.elapsed() < METADATA_FRESH) {
            if !read.result.as_ref().is_ok_and(lacks) {
                return read.result.clone();
            }
        }
        let result = self.read_metadata(key).await;
        *last = Some(MetadataRead { at: Instant::now(), result: result.clone() });
        result
    }

    async fn read_metadata(&self, topic: Option<String>) -> Result<Metadata, ProbeError> {
        let consumer = self.consumer.clone();
        let timeout = self.timeout;
        let metadata = blocking(move || consumer.fetch_metadata(topic.as_deref(), timeout)).await?;
        let topics = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| {
                let partitions = t
                    .partitions()
                    .iter()
                    .map(|p| PartitionInfo {
                        id: p.id(),
                        leader: p.leader(),
                        replicas: p.replicas().len(),
                        in_sync: p.isr().len(),
                    })
                    .collect();
                (t.name().to_owned(), partitions)
            })
            .collect();
        Ok(Arc::new((topics, metadata.brokers().len())))
    }

    /// Consumes `partition` from its current end. The end is read first and assigned as a
    /// concrete offset, so a probe published right after is never skipped; a partition assigned
    /// before (its topic was recreated) moves to its new end.
    ///
    /// A partition assigned less than [`REASSIGN_AFTER`] ago is left as it is: cells sharing a
    /// partition pin it at the same moment, and librdkafka aborts the process (an assertion in
    /// `rd_kafka_assignment_partition_stopped`) when a partition is unassigned before its
    /// assignment started. Their probes are published after the end that was read, so they are
    /// consumed either way.
    pub async fn assign_at_end(&self, topic: &str, partition: i32) -> Result<(), ProbeError> {
        let consumer = self.consumer.clone();
        let timeout = self.timeout;
        let t = topic.to_owned();
        let (_, high) = blocking(move || consumer.fetch_watermarks(&t, partition, timeout)).await?;
        let key = (topic.to_owned(), partition);
        self.positions.lock().expect("positions lock").entry(key.clone()).or_insert(high);
        let reassign = {
            let mut assigned = self.assigned.lock().expect("assigned lock");
            match assigned.insert(key.clone(), Instant::now()) {
                Some(at) if at.elapsed() < REASSIGN_AFTER => {
                    assigned.insert(key, at);
                    return Ok(());
                }
                previous => previous.is_some(),
            }
        };
        let assign = || {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition, Offset::Offset(high))?;
            if reassign {
                self.consumer.incremental_unassign(&tpl)?;
            }
            self.consumer.incremental_assign(&tpl)
        };
        if let Err(e) = assign() {
            self.assigned.lock().expect("assigned lock").remove(&key);
            return Err(ProbeError::Connect(kind(&e)));
        }
        self.reached.store(true, Ordering::Relaxed);
        Ok(())
    }
}

impl Clients {
    /// A message at `offset` of `(topic, partition)` was consumed.
    pub fn consumed(&self, topic: &str, partition: i32, offset: i64) {
        if let Some(p) =
            self.positions.lock().expect("positions lock").get_mut(&(topic.to_owned(), partition))
        {
            *p = (*p).max(offset + 1);
        }
    }

    /// The group stage: commits the partition's position through the consumer group
    /// (`group.id` `crossprobe-<instance>`), which needs the group's coordinator. A failure the
    /// coordinator explains is [`ErrorKind::Coordinator`].
    pub async fn commit(&self, topic: &str, partition: i32) -> Result<(), ProbeError> {
        let position =
            self.positions.lock().expect("positions lock").get(&(topic.to_owned(), partition)).copied();
        let Some(offset) = position else { return Err(ProbeError::Connect(ErrorKind::NotFound)) };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
            .map_err(|e| ProbeError::Connect(kind(&e)))?;
        let consumer = self.consumer.clone();
        blocking(move || consumer.commit(&tpl, CommitMode::Sync)).await
    }
}

/// One partition as the cluster metadata describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionInfo {
    pub id: i32,
    pub leader: i32,
    /// The replication factor of the partition.
    pub replicas: usize,
    /// Replicas in sync with the leader.
    pub in_sync: usize,
}

/// A topic's name and its partitions.
pub(super) type Partitions = (String, Vec<PartitionInfo>);

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, ProbeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ProbeError::Connect(ErrorKind::Client))?
        .map_err(|e| ProbeError::Connect(kind(&e)))
}

pub(super) fn ms(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

pub(super) fn kind(e: &KafkaError) -> ErrorKind {
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
        C::CoordinatorNotAvailable
        | C::NotCoordinator
        | C::CoordinatorLoadInProgress
        | C::WaitingForCoordinator => ErrorKind::Coordinator,
        _ => ErrorKind::Broker,
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::error::RDKafkaErrorCode as C;

    use super::{broker_down, code_kind};
    use crate::outcome::ErrorKind;

    /// A commit the group coordinator did not take is its own kind, apart from broker, timeout
    /// and refusal failures (which the broker-down check reports before a commit is tried).
    #[test]
    fn coordinator_errors_are_their_own_kind() {
        for code in [
            C::CoordinatorNotAvailable,
            C::NotCoordinator,
            C::CoordinatorLoadInProgress,
            C::WaitingForCoordinator,
        ] {
            assert_eq!(code_kind(code), ErrorKind::Coordinator, "{code:?}");
        }
        assert_eq!(code_kind(C::RequestTimedOut), ErrorKind::Timeout);
        assert_eq!(code_kind(C::GroupAuthorizationFailed), ErrorKind::Auth);
        assert_eq!(code_kind(C::UnknownTopicOrPartition), ErrorKind::NotFound);
    }

    #[test]
    fn a_first_connection_is_not_down_a_lost_one_is() {
        assert!(!broker_down("CONNECT", None, false, false));
        assert!(!broker_down("CONNECT", Some("INIT"), false, false));
        assert!(broker_down("TRY_CONNECT", Some("INIT"), false, true), "never reached after the grace");
        assert!(!broker_down("UP", Some("CONNECT"), false, true));
        assert!(broker_down("DOWN", Some("UP"), false, false));
        assert!(broker_down("TRY_CONNECT", Some("UP"), false, false));
        assert!(broker_down("CONNECT", Some("TRY_CONNECT"), true, false), "stays down while retrying");
        assert!(!broker_down("UP", Some("CONNECT"), true, true), "up again");
        assert!(broker_down("INIT", Some("TRY_CONNECT"), true, false), "between attempts");
    }
}
