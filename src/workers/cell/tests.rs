//! Timing and bookkeeping of the worker against a scripted backend, on a paused clock.

use std::sync::{Arc, Mutex};

use crossprobe_probes::backend::{Delivery, ProbeError, DELIVERY_BUFFER};
use crossprobe_probes::outcome::{ErrorKind, Outcome};
use crossprobe_probes::tracker::ProbeResult;

use super::*;

/// What the fake broker does with each publish.
#[derive(Clone, Copy)]
enum Script {
    /// Acknowledge after `ack`, deliver back after `back` (both from the publish).
    Echo { ack: Duration, back: Duration },
    /// Acknowledge, never deliver.
    Swallow,
    /// Fail at once.
    Fail(ProbeError),
    /// Never answer.
    Hang,
}

struct Fake {
    script: Mutex<Script>,
    tx: mpsc::Sender<Delivery>,
    published: Mutex<Vec<tokio::time::Instant>>,
}

impl CellBackend for Fake {
    fn publish(&self, payload: Vec<u8>) -> crossprobe_probes::backend::BoxFuture<'_, Result<(), ProbeError>> {
        Box::pin(self.send(payload))
    }

    fn prepare(&self) -> crossprobe_probes::backend::BoxFuture<'_, Result<(), ProbeError>> {
        Box::pin(async { Ok(()) })
    }
}

impl Fake {
    async fn send(&self, payload: Vec<u8>) -> Result<(), ProbeError> {
        self.published.lock().unwrap().push(tokio::time::Instant::now());
        let script = *self.script.lock().unwrap();
        match script {
            Script::Echo { ack, back } => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(back).await;
                    let _ = tx.send(Delivery { bytes: payload, at: now() }).await;
                });
                tokio::time::sleep(ack).await;
                Ok(())
            }
            Script::Swallow => Ok(()),
            Script::Fail(e) => Err(e),
            Script::Hang => std::future::pending().await,
        }
    }
}

const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_millis(500);

struct Run {
    fake: Arc<Fake>,
    reports: mpsc::Receiver<Sent>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start(script: Script, phase: Duration, max_probes: Option<u64>) -> Run {
    let (tx, rx) = mpsc::channel(DELIVERY_BUFFER);
    let fake = Arc::new(Fake { script: Mutex::new(script), tx, published: Mutex::new(Vec::new()) });
    let (out, reports) = mpsc::channel(1024);
    let cancel = CancellationToken::new();
    let spec = WorkerSpec {
        worker: 3,
        settings: ProbeSettings { interval: INTERVAL, timeout: TIMEOUT, message_size: 64 },
        tracker: Tracker::new(1, 2, TIMEOUT, now()),
        phase,
        max_probes,
    };
    let task = {
        let (fake, cancel) = (fake.clone(), cancel.clone());
        tokio::spawn(async move {
            probe(&*fake, rx, spec, out, cancel).await;
        })
    };
    Run { fake, reports, cancel, task }
}

fn done(reports: &mut mpsc::Receiver<Sent>) -> Vec<ProbeResult> {
    let mut out = Vec::new();
    while let Ok(r) = reports.try_recv() {
        assert_eq!(r.worker, 3, "observations carry the worker's id");
        if let Seen::Probe(Event::Done(p)) = r.seen {
            out.push(p);
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn an_echoing_broker_gives_ok_with_exact_latencies() {
    let mut run = start(Script::Echo { ack: ms(2), back: ms(7) }, Duration::ZERO, None);
    tokio::time::sleep(ms(3_100)).await;
    let results = done(&mut run.reports);
    assert_eq!(results.len(), 4, "probes at 0, 1, 2, 3 s: {results:?}");
    for r in results {
        assert_eq!((r.outcome, r.publish, r.roundtrip), (Outcome::Ok, Some(ms(2)), Some(ms(7))));
    }
}

#[tokio::test(start_paused = true)]
async fn silence_is_lost_at_the_timeout_and_failures_are_reported_each_tick() {
    let mut run = start(Script::Swallow, Duration::ZERO, None);
    tokio::time::sleep(ms(499)).await;
    assert!(done(&mut run.reports).is_empty(), "nothing ends before the timeout");
    tokio::time::sleep(ms(2)).await;
    assert_eq!(done(&mut run.reports).iter().map(|r| r.outcome).collect::<Vec<_>>(), [Outcome::Lost]);

    *run.fake.script.lock().unwrap() = Script::Fail(ProbeError::Connect(ErrorKind::Refused));
    tokio::time::sleep(ms(2_000)).await;
    let outcomes: Vec<_> = done(&mut run.reports).iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, [Outcome::ConnectFailed(ErrorKind::Refused); 2]);
}

#[tokio::test(start_paused = true)]
async fn a_hung_client_ends_as_a_publish_timeout() {
    let mut run = start(Script::Hang, Duration::ZERO, None);
    tokio::time::sleep(ms(600)).await;
    let outcomes: Vec<_> = done(&mut run.reports).iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, [Outcome::PublishFailed(ErrorKind::Timeout)]);
}

#[tokio::test(start_paused = true)]
async fn the_first_probe_waits_for_the_phase() {
    let run = start(Script::Swallow, ms(730), None);
    tokio::time::sleep(ms(729)).await;
    assert!(run.fake.published.lock().unwrap().is_empty());
    tokio::time::sleep(ms(2)).await;
    assert_eq!(run.fake.published.lock().unwrap().len(), 1);
}

#[test]
fn phases_spread_over_one_interval() {
    let phases: Vec<Duration> = (0..1000).map(|k| phase(42, k, INTERVAL)).collect();
    assert!(phases.iter().all(|p| *p < INTERVAL));
    let early = phases.iter().filter(|p| **p < ms(500)).count();
    assert!((400..600).contains(&early), "phases should spread evenly, {early} of 1000 in the first half");
}

#[tokio::test(start_paused = true)]
async fn missed_ticks_are_skipped_not_bursted() {
    let run = start(Script::Echo { ack: ms(1), back: ms(1) }, Duration::ZERO, None);
    tokio::time::sleep(ms(10)).await;
    // Starve the worker: block the (single-threaded, paused) runtime while the clock jumps.
    std::thread::sleep(Duration::from_millis(5));
    tokio::time::advance(ms(5_500)).await;
    tokio::time::sleep(ms(10)).await;
    let published = run.fake.published.lock().unwrap().clone();
    assert_eq!(published.len(), 2, "one probe at start, one for the whole missed stretch: {published:?}");
}

#[tokio::test(start_paused = true)]
async fn stopping_waits_for_probes_in_flight_and_starts_no_new_one() {
    let mut run = start(Script::Echo { ack: ms(1), back: ms(300) }, Duration::ZERO, None);
    tokio::time::sleep(ms(100)).await;
    run.cancel.cancel();
    tokio::time::sleep(ms(150)).await;
    assert!(!run.task.is_finished(), "the probe in flight is still awaited");
    tokio::time::sleep(ms(2_000)).await;
    assert!(run.task.is_finished());
    let results = done(&mut run.reports);
    assert_eq!(results.iter().map(|r| r.outcome).collect::<Vec<_>>(), [Outcome::Ok]);
    assert_eq!(run.fake.published.lock().unwrap().len(), 1, "no probe after the stop");
}

#[tokio::test(start_paused = true)]
async fn max_probes_ends_the_worker() {
    let mut run = start(Script::Echo { ack: ms(1), back: ms(3) }, Duration::ZERO, Some(1));
    tokio::time::sleep(ms(50)).await;
    assert!(run.task.is_finished(), "once mode stops after its probe");
    assert_eq!(done(&mut run.reports).len(), 1);
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
