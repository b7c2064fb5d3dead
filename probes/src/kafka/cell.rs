//! One cell's publisher on a shared cluster: its pinned partition, resolved lazily (topic
//! creation, metadata, consumer assignment) and again after the topic disappeared or the
//! clients were rebuilt; leadership is re-read periodically and moves are reported, never
//! followed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::clients::{kind, Clients};
use super::KafkaCluster;
use crate::backend::{BoxFuture, CellBackend, Delivery, ProbeError};
use crate::outcome::ErrorKind;

/// How often a pinned cell re-reads its partition's leader to report leadership moves.
const LEADER_CHECK: Duration = Duration::from_secs(30);

/// Where a cell publishes, once resolved.
#[derive(Debug, Default)]
struct Pin {
    partition: Option<i32>,
    leader: Option<i32>,
    /// The client generation the partition is assigned on.
    generation: u64,
    /// No new resolution attempt before this (backoff after a failure).
    retry_at: Option<Instant>,
    backoff: Duration,
    checked: Option<Instant>,
}

impl Pin {
    /// The topic is gone: resolve again, and have `clients` replaced if it was pinned on them.
    fn unpin(&mut self, clients: &Clients) {
        if self.partition.take().is_some() {
            clients.topic_vanished();
        }
        self.leader = None;
    }
}

/// The next wait before a failed set-up (topic, metadata, assignment) is tried again: doubling
/// from 500 ms, but never beyond half the probe interval. The cell's own probes pace it (one
/// publish per interval), so after half an interval the next probe tries again: a returned
/// broker is found by the next probe round.
fn setup_backoff(previous: Duration, interval: Duration) -> Duration {
    (previous * 2).clamp(Duration::from_millis(500), Duration::from_secs(10)).min(interval / 2)
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

impl KafkaCell {
    pub(super) fn new(
        cluster: Arc<KafkaCluster>,
        topic: &str,
        broker_id: Option<i32>,
        cell_key: u64,
        tx: mpsc::Sender<Delivery>,
    ) -> Self {
        KafkaCell {
            cluster,
            topic: topic.to_owned(),
            broker_id,
            cell_key,
            tx,
            pin: Mutex::new(Pin::default()),
        }
    }

    /// Creates the topic if needed and pins the partition, so the first probe measures the
    /// broker rather than the set-up.
    async fn set_up(&self) -> Result<(), ProbeError> {
        let clients = self.cluster.clients();
        self.resolve(&clients).await.map(|_| ())
    }

    /// The pinned partition and its leader, resolving when needed.
    async fn resolve(&self, clients: &Clients) -> Result<(i32, i32), ProbeError> {
        let now = Instant::now();
        let pinned = {
            let mut pin = self.pin.lock().expect("pin lock");
            if pin.generation != clients.generation {
                *pin = Pin { generation: clients.generation, ..Pin::default() };
            }
            if let (Some(p), Some(l)) = (pin.partition, pin.leader) {
                if pin.checked.is_some_and(|c| now < c + LEADER_CHECK) {
                    return Ok((p, l));
                }
            } else if pin.retry_at.is_some_and(|r| now < r) {
                return Err(ProbeError::Connect(ErrorKind::Client));
            }
            pin.partition
        };
        let found = self.lookup(clients, pinned).await;
        let mut pin = self.pin.lock().expect("pin lock");
        match found {
            Ok((partition, leader)) => {
                if pin.leader.is_some_and(|l| l != leader) {
                    warn!(topic = %self.topic, partition, from = ?pin.leader, to = leader, "partition leadership moved; the cell keeps its partition");
                }
                *pin = Pin {
                    partition: Some(partition),
                    leader: Some(leader),
                    generation: clients.generation,
                    checked: Some(now),
                    ..Pin::default()
                };
                Ok((partition, leader))
            }
            Err(e) => {
                pin.backoff = setup_backoff(pin.backoff, self.cluster.config.interval);
                pin.retry_at = Some(now + pin.backoff);
                if matches!(e, ProbeError::Connect(ErrorKind::NotFound)) {
                    pin.unpin(clients);
                }
                Err(e)
            }
        }
    }

    async fn lookup(&self, clients: &Clients, pinned: Option<i32>) -> Result<(i32, i32), ProbeError> {
        if pinned.is_none() {
            clients.ensure_topic(&self.topic).await?;
        }
        let (topics, _) = clients.metadata(Some(&self.topic)).await?;
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
            self.cluster.route(clients, &self.topic, partition, self.cell_key, &self.tx).await?;
            info!(topic = %self.topic, partition, leader, "cell pinned to partition");
        }
        Ok((partition, leader))
    }
}

/// A Kafka cell holds nothing of its own on the broker: once its worker is gone, its partition's
/// messages are routed past it, so `retire` is the default no-op.
impl CellBackend for KafkaCell {
    fn publish(&self, payload: Vec<u8>) -> BoxFuture<'_, Result<(), ProbeError>> {
        Box::pin(self.send(payload))
    }

    fn prepare(&self) -> BoxFuture<'_, Result<(), ProbeError>> {
        Box::pin(self.set_up())
    }
}

impl KafkaCell {
    async fn send(&self, payload: Vec<u8>) -> Result<(), ProbeError> {
        let clients = self.cluster.clients();
        // Set-up (topic, metadata) gets half the probe timeout, so a broker that does not answer
        // it is reported as a connection failure, not as a publish timeout.
        let setup = self.cluster.config.timeout / 2;
        let (partition, leader) = tokio::time::timeout(setup, self.resolve(&clients))
            .await
            .unwrap_or(Err(ProbeError::Connect(ErrorKind::Timeout)))
            .map_err(|e| match e {
                ProbeError::Connect(k) => ProbeError::Connect(clients.explain(k)),
                other => other,
            })?;
        if clients.broker_up(leader) == Some(false) {
            return Err(ProbeError::Connect(clients.explain(ErrorKind::Refused)));
        }
        let record = FutureRecord::<(), _>::to(&self.topic).partition(partition).payload(&payload);
        match clients.producer.send(record, Timeout::After(Duration::ZERO)).await {
            Ok(_) => Ok(()),
            Err((e, _)) => {
                let k = kind(&e);
                if k == ErrorKind::NotFound {
                    self.pin.lock().expect("pin lock").unpin(&clients);
                }
                Err(ProbeError::Publish(k))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::setup_backoff;

    #[test]
    fn a_failed_set_up_is_tried_again_by_the_next_probe() {
        for interval_ms in [100, 500, 1000, 5000, 60_000] {
            let interval = Duration::from_millis(interval_ms);
            let mut b = Duration::ZERO;
            for _ in 0..20 {
                b = setup_backoff(b, interval);
                assert!(b <= interval / 2, "interval {interval:?}: backoff {b:?} skips a probe");
            }
        }
        let long = Duration::from_secs(60);
        let steps: Vec<u64> = (0..6)
            .scan(Duration::ZERO, |b, _| {
                *b = setup_backoff(*b, long);
                Some(b.as_millis() as u64)
            })
            .collect();
        assert_eq!(steps, [500, 1000, 2000, 4000, 8000, 10_000], "long intervals keep the old climb");
    }
}
