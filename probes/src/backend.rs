//! The broker I/O contract every backend fulfils: publish one message with broker
//! acknowledgement, and deliver the messages that come back for a cell.
//!
//! A backend knows nothing of schedules, timeouts or verdicts; the daemon's workers do. Each
//! cell gets a [`CellBackend`] to publish through and a channel of [`Delivery`] to read from.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::outcome::{ErrorKind, Outcome};

/// A message consumed for a cell, stamped when the client handed it over.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub bytes: Vec<u8>,
    pub at: Instant,
}

/// Messages coming back for one cell.
pub type Deliveries = mpsc::Receiver<Delivery>;

/// Capacity of a cell's delivery channel: probes are one per interval, so a full channel
/// means the worker stopped reading; further messages are dropped, not buffered.
pub const DELIVERY_BUFFER: usize = 256;

/// Why a publish did not get an acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The cell's client is not connected (being rebuilt, refused, unauthorized).
    #[error("not connected: {0}")]
    Connect(ErrorKind),
    /// The broker refused or never acknowledged the message.
    #[error("publish failed: {0}")]
    Publish(ErrorKind),
}

impl ProbeError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ProbeError::Connect(k) | ProbeError::Publish(k) => *k,
        }
    }

    /// The probe outcome this error stands for.
    pub fn outcome(&self) -> Outcome {
        match self {
            ProbeError::Connect(k) => Outcome::ConnectFailed(*k),
            ProbeError::Publish(k) => Outcome::PublishFailed(*k),
        }
    }
}

/// A boxed future, so that [`CellBackend`] can be used as a trait object: the daemon holds the
/// cells of both protocols side by side. One allocation per probe is nothing next to a round trip.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One cell's broker I/O, whatever its protocol. Implementations share clients between cells;
/// no method may block the async runtime, and `publish` must fail fast with
/// [`ProbeError::Connect`] while the client is down rather than wait for it. When to call them,
/// and how long to wait, is the caller's.
pub trait CellBackend: Send + Sync + 'static {
    /// Publishes `payload` and resolves when the broker acknowledged it.
    fn publish(&self, payload: Vec<u8>) -> BoxFuture<'_, Result<(), ProbeError>>;

    /// Connects and sets up what the cell needs on the broker (topic and partition, channel and
    /// queue), so the first probe measures the broker rather than the set-up. A failure is left
    /// for the probes to report.
    fn prepare(&self) -> BoxFuture<'_, Result<(), ProbeError>>;

    /// Releases what the cell holds on the broker once it is removed for good (a reload dropped
    /// it). Best effort and bounded; by default there is nothing to release.
    fn retire(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// What the cell knows of the partition it probes (Kafka): leadership moves seen and the
    /// partition's replicas. `None` for backends without partitions, or before the first
    /// metadata answer.
    fn partition(&self) -> Option<PartitionHealth> {
        None
    }
}

/// A Kafka cell's view of its partition, read by the daemon at each evaluation tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionHealth {
    /// Leadership moves of the cell's partition seen since the cell started.
    pub leader_changes: u64,
    /// The partition's replication factor, at the last metadata read.
    pub replicas: usize,
    /// Its in-sync replicas then.
    pub in_sync: usize,
}

/// Forwards a delivery without blocking the client's receive loop: a cell that does not keep
/// up loses messages (and sees them as lost), it never stalls the other cells.
pub fn forward(tx: &mpsc::Sender<Delivery>, bytes: &[u8]) {
    let _ = tx.try_send(Delivery { bytes: bytes.to_vec(), at: Instant::now() });
}
