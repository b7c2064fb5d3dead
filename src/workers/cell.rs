//! One cell's worker: a task that publishes on a fixed cadence, tracks its probes to their end,
//! and sends everything it observes (each probe's start, every outcome and stray message) on
//! the pool's channel.
//!
//! Cadence: a random initial phase (cells do not probe in lock-step), then one probe per
//! interval; ticks missed while the task was busy are skipped, never bursted. Each probe ends
//! by its timeout at the latest. On stop, a worker starts no new probe and waits for those in
//! flight to end (at most one timeout).

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::time::{Duration, Instant};

use crossprobe_probes::backend::{CellBackend, Deliveries, ProbeError};
use crossprobe_probes::tracker::{Event, Tracker};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::config::ProbeSettings;

/// Which worker sent an observation: numbered by the pool at spawn, never reused, so the
/// observations of a worker that a reload retired are told apart from its successor's.
pub type WorkerId = u64;

/// What a worker saw.
#[derive(Debug, Clone, Copy)]
pub enum Seen {
    /// A probe was published, `lag` after its scheduled time.
    Started { lag: Duration },
    /// A probe ended, or a stray message arrived.
    Probe(Event),
}

/// Something a worker observed, as it sends it.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub worker: WorkerId,
    pub at: Instant,
    pub seen: Seen,
}

/// A random number per process start: the instance id in payloads (so messages of earlier runs
/// and other replicas are recognised as foreign) and the seed of the cells' phases.
pub fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
    );
    h.finish()
}

/// What a worker needs besides its backend.
pub struct WorkerSpec {
    pub worker: WorkerId,
    pub settings: ProbeSettings,
    pub tracker: Tracker,
    /// Delay before the first probe.
    pub phase: Duration,
    /// Stop after this many probes have ended (`once`); run until cancelled when `None`.
    pub max_probes: Option<u64>,
}

/// The phase of a cell: spread over one interval, stable for a given seed and cell.
pub fn phase(seed: u64, cell_key: u64, interval: Duration) -> Duration {
    let mixed = (seed ^ cell_key).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    Duration::from_nanos(mixed % interval.as_nanos().max(1) as u64)
}

type Publish<'a> = Pin<Box<dyn Future<Output = (u64, Instant, Result<(), ProbeError>)> + Send + 'a>>;

/// Runs one cell until `cancel` (then drains its probes in flight) or `max_probes`. Returns the
/// tracker, so a worker restarted by a reload continues its sequence.
pub async fn probe(
    backend: &dyn CellBackend,
    mut deliveries: Deliveries,
    mut spec: WorkerSpec,
    out: mpsc::Sender<Sent>,
    cancel: CancellationToken,
) -> Tracker {
    let interval = spec.settings.interval;
    let timeout = spec.settings.timeout;
    let start = tokio::time::Instant::now() + spec.phase;
    let mut ticker = tokio::time::interval_at(start, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut publishes: FuturesUnordered<Publish<'_>> = FuturesUnordered::new();
    let mut started = 0u64;
    let mut ended = 0u64;
    let mut stopping = false;
    let send = |seen: Seen| {
        let out = out.clone();
        let worker = spec.worker;
        let at = now();
        async move {
            let _ = out.send(Sent { worker, at, seen }).await;
        }
    };
    let report = |event: Event| send(Seen::Probe(event));
    loop {
        if stopping && spec.tracker.in_flight() == 0 {
            break;
        }
        let deadline = spec.tracker.next_deadline();
        let may_start = !stopping && spec.max_probes.is_none_or(|max| started < max);
        tokio::select! {
            biased;
            _ = cancel.cancelled(), if !stopping => stopping = true,
            Some((seq, at, result)) = publishes.next() => {
                let done = match result {
                    Ok(()) => spec.tracker.acked(seq, at),
                    Err(e) => spec.tracker.failed(seq, e.outcome()),
                };
                if let Some(r) = done {
                    ended += 1;
                    report(Event::Done(r)).await;
                }
            }
            Some(d) = deliveries.recv() => {
                for event in spec.tracker.received(&d.bytes, d.at) {
                    ended += u64::from(matches!(event, Event::Done(_)));
                    report(event).await;
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                for r in spec.tracker.expire(now()) {
                    ended += 1;
                    report(Event::Done(r)).await;
                }
            }
            scheduled = ticker.tick(), if may_start => {
                send(Seen::Started { lag: tokio::time::Instant::now().saturating_duration_since(scheduled) }).await;
                let header = spec.tracker.start(now());
                started += 1;
                let payload = header.encode(spec.settings.message_size);
                publishes.push(Box::pin(async move {
                    // Bounded so a hung client never keeps the future (or shutdown) waiting.
                    let result = tokio::time::timeout(timeout, backend.publish(payload)).await;
                    let result =
                        result.unwrap_or(Err(ProbeError::Publish(crossprobe_probes::ErrorKind::Timeout)));
                    (header.seq, now(), result)
                }));
            }
        }
        if spec.max_probes.is_some_and(|max| ended >= max) {
            break;
        }
    }
    drop(publishes);
    spec.tracker
}

/// The runtime's clock as a std instant, so tests with a paused clock see consistent times.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d.into()).await;
    }
}

#[cfg(test)]
mod tests;
