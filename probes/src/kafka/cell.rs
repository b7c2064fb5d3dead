//! One cell's publisher on a shared cluster: its pinned partition, resolved lazily (topic
//! creation, metadata, consumer assignment) and again after the topic disappeared or the
//! clients were rebuilt. Leadership is re-read periodically: a move is counted and logged, and a
//! cell that names a broker follows that broker to another partition it leads (or reports
//! `connect_failed{kind=not_found}` while it leads none): it never probes another broker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::clients::{kind, Clients, PartitionInfo};
use super::KafkaCluster;
use crate::backend::{BoxFuture, CellBackend, Delivery, PartitionHealth, ProbeError};
use crate::outcome::ErrorKind;

/// How often a pinned cell re-reads its partition's leader (to follow leadership moves) and
/// replicas.
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
    /// The group stage: commit the partition's position before each publish.
    group: bool,
    cell_key: u64,
    tx: mpsc::Sender<Delivery>,
    pin: Mutex<Pin>,
    leader_changes: AtomicU64,
    /// (replicas, in sync) of the pinned partition at the last metadata read.
    replicas: Mutex<Option<(usize, usize)>>,
}

/// What one metadata read found for a cell.
struct Looked {
    /// The pinned partition's leader changed.
    moved: Option<Move>,
    /// The partition to probe; `None` when the cell's broker leads none.
    chosen: Option<PartitionInfo>,
}

/// A leadership move of a partition.
struct Move {
    partition: i32,
    from: i32,
    to: i32,
}

/// The partition a cell probes: with a broker named, a partition that broker leads (the pinned
/// one while it still does, so a cell moves only when leadership moved); without, the pinned one
/// or one picked by the cell's key. `None` when the named broker leads no partition.
pub(super) fn choose(
    partitions: &[PartitionInfo],
    pinned: Option<i32>,
    broker: Option<i32>,
    cell_key: u64,
) -> Option<PartitionInfo> {
    let current = pinned.and_then(|p| partitions.iter().find(|x| x.id == p)).copied();
    match broker {
        Some(b) => current.filter(|x| x.leader == b).or_else(|| {
            let led: Vec<&PartitionInfo> = partitions.iter().filter(|x| x.leader == b).collect();
            (!led.is_empty()).then(|| *led[(cell_key % led.len() as u64) as usize])
        }),
        None => current.or_else(|| {
            (!partitions.is_empty()).then(|| partitions[(cell_key % partitions.len() as u64) as usize])
        }),
    }
}

impl KafkaCell {
    pub(super) fn new(
        cluster: Arc<KafkaCluster>,
        topic: &str,
        broker_id: Option<i32>,
        group: bool,
        cell_key: u64,
        tx: mpsc::Sender<Delivery>,
    ) -> Self {
        KafkaCell {
            cluster,
            topic: topic.to_owned(),
            broker_id,
            group,
            cell_key,
            tx,
            pin: Mutex::new(Pin::default()),
            leader_changes: AtomicU64::new(0),
            replicas: Mutex::new(None),
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
            pin.partition.zip(pin.leader)
        };
        let found = self.lookup(clients, pinned).await;
        let mut pin = self.pin.lock().expect("pin lock");
        match found {
            Ok(Looked { moved, chosen }) => {
                if let Some(Move { partition, from, to }) = moved {
                    self.leader_changes.fetch_add(1, Ordering::Relaxed);
                    let follows = match (self.broker_id, chosen) {
                        (None, _) => "the cell keeps its partition",
                        (Some(_), Some(_)) => "the cell follows its broker to a partition it leads",
                        (Some(_), None) => {
                            "its broker leads no partition now: the cell reports connect_failed"
                        }
                    };
                    warn!(topic = %self.topic, partition, from, to, broker = ?self.broker_id, "partition leadership moved; {follows}");
                }
                let Some(chosen) = chosen else {
                    // Not a vanished topic: the clients stay, the cell looks again later.
                    *pin = Pin { generation: clients.generation, ..Pin::default() };
                    pin.backoff = setup_backoff(Duration::ZERO, self.cluster.config.interval);
                    pin.retry_at = Some(now + pin.backoff);
                    return Err(ProbeError::Connect(ErrorKind::NotFound));
                };
                *self.replicas.lock().expect("replicas lock") = Some((chosen.replicas, chosen.in_sync));
                *pin = Pin {
                    partition: Some(chosen.id),
                    leader: Some(chosen.leader),
                    generation: clients.generation,
                    checked: Some(now),
                    ..Pin::default()
                };
                Ok((chosen.id, chosen.leader))
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

    /// Reads the topic's partitions (creating the topic first when nothing is pinned) and picks
    /// the cell's ([`choose`]); assigns a newly chosen partition. Also tells a leadership move of
    /// the pinned partition.
    async fn lookup(&self, clients: &Clients, pinned: Option<(i32, i32)>) -> Result<Looked, ProbeError> {
        if pinned.is_none() {
            clients.ensure_topic(&self.topic).await?;
        }
        let metadata = clients.metadata(Some(&self.topic)).await?;
        let partitions = (metadata.0.iter())
            .find(|(t, _)| *t == self.topic)
            .map(|(_, p)| p)
            .filter(|p| !p.is_empty())
            .ok_or(ProbeError::Connect(ErrorKind::NotFound))?;
        let moved = pinned.and_then(|(p, from)| {
            partitions.iter().find(|x| x.id == p && x.leader != from).map(|x| Move {
                partition: p,
                from,
                to: x.leader,
            })
        });
        let chosen = choose(partitions, pinned.map(|(p, _)| p), self.broker_id, self.cell_key);
        if let Some(c) = chosen.filter(|c| pinned.map(|(p, _)| p) != Some(c.id)) {
            self.cluster.route(clients, &self.topic, c.id, self.cell_key, &self.tx).await?;
            info!(topic = %self.topic, partition = c.id, leader = c.leader, "cell pinned to partition");
        }
        Ok(Looked { moved, chosen })
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

    fn partition(&self) -> Option<PartitionHealth> {
        let (replicas, in_sync) = (*self.replicas.lock().expect("replicas lock"))?;
        Some(PartitionHealth {
            leader_changes: self.leader_changes.load(Ordering::Relaxed),
            replicas,
            in_sync,
        })
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
        if self.group {
            clients
                .commit(&self.topic, partition)
                .await
                .map_err(|e| ProbeError::Connect(clients.explain(e.kind())))?;
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

    use super::{choose, setup_backoff, PartitionInfo};

    fn part(id: i32, leader: i32) -> PartitionInfo {
        PartitionInfo { id, leader, replicas: 3, in_sync: 3 }
    }

    /// A scripted sequence of metadata answers, as a rolling restart gives them: the cell of
    /// broker 2 follows broker 2, never stays on a partition another broker took over.
    #[test]
    fn a_cell_follows_its_broker_through_leadership_moves() {
        let before = [part(0, 1), part(1, 2), part(2, 3)];
        let p = choose(&before, None, Some(2), 7).unwrap();
        assert_eq!((p.id, p.leader), (1, 2));
        // Broker 2 restarts: broker 3 takes partition 1, broker 2 leads nothing.
        let during = [part(0, 1), part(1, 3), part(2, 3)];
        assert_eq!(choose(&during, Some(1), Some(2), 7), None, "never probes broker 3 for broker 2");
        // Broker 2 is back and takes partition 2.
        let after = [part(0, 1), part(1, 3), part(2, 2)];
        assert_eq!(choose(&after, None, Some(2), 7).map(|p| p.id), Some(2));
        // Stable leadership keeps the pinned partition even if the broker leads several.
        let two = [part(0, 2), part(1, 2)];
        assert_eq!(choose(&two, Some(1), Some(2), 0).map(|p| p.id), Some(1));
        assert_eq!(choose(&two, Some(1), Some(2), 1).map(|p| p.id), Some(1));
    }

    #[test]
    fn a_cell_without_a_broker_keeps_its_partition() {
        let ps = [part(0, 1), part(1, 2)];
        assert_eq!(choose(&ps, Some(1), None, 0).map(|p| p.id), Some(1));
        let moved = [part(0, 1), part(1, 1)];
        assert_eq!(choose(&moved, Some(1), None, 0).map(|p| p.id), Some(1));
        assert_eq!(choose(&ps, None, None, 3).map(|p| p.id), Some(1), "key 3 of 2 partitions");
        assert_eq!(choose(&[], None, None, 3), None);
    }

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
