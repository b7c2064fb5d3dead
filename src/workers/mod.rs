//! The worker pool: one probe worker per cell of the running matrix, on shared broker clients,
//! changed in place by a [`ReloadPlan`] and stopped in order.
//!
//! - [`cell`]: one cell's worker loop: cadence, timeouts, what it observed.
//!
//! Workers send what they observe, tagged with their worker id, on one channel; the pool hands
//! it out with the cell's index in the current matrix ([`Observation`]), so a reload that moves
//! cells never mislabels an observation, and a removed cell's last ones are dropped.

pub mod cell;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossprobe_probes::backend::{CellBackend, PartitionHealth};
use crossprobe_probes::tracker::Tracker;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clients::pool::CellClient;
use crate::clients::{CellSpec, ClientError, ClientPool, Reads};
use crate::config::ValidatedConfig;
use crate::matrix::Cell;
use crate::reload::{Applied, ReloadPlan};
use crate::shutdown::Shutdown;
pub use cell::{random_u64, Seen, WorkerId};

/// Least time a cell's set-up (connection, topic, channel, queue) gets before its first probe.
pub const SETUP_BOUND: Duration = Duration::from_secs(2);

/// Returns what retired cells and clients freed to the system. glibc keeps memory freed by
/// librdkafka's and lapin's threads in per-thread arenas, so without this the resident size
/// climbs by megabytes with every reload that replaces clients while the heap stays flat (a
/// heap profile showed it: benches/README.md, Reload).
#[allow(unsafe_code)]
fn release_freed_memory() {
    // SAFETY: malloc_trim only gives free pages back to the system; it has no preconditions
    // and is thread-safe.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Time allowed, beyond the longest probe timeout, for workers and clients to stop.
pub const GRACE: Duration = Duration::from_secs(5);

/// Something a cell's worker observed, with the cell's index in the current matrix.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    pub cell: usize,
    pub at: Instant,
    pub seen: Seen,
}

/// A part of the pool that did not stop within its grace period.
#[derive(Debug, thiserror::Error)]
#[error("{0} still running after the stop grace period")]
pub struct Stuck(pub &'static str);

/// The workers and clients of a running matrix. The daemon, `once`, the tests and the
/// benchmarks all drive probes through this.
pub struct WorkerPool {
    observations: mpsc::Receiver<cell::Sent>,
    out: mpsc::Sender<cell::Sent>,
    shutdown: Shutdown,
    clients: ClientPool,
    /// The worker of every cell, in matrix order.
    running: Vec<Running>,
    /// Worker -> index of its cell in the current matrix; a worker not here (its cell was
    /// removed) has its observations dropped.
    cells: HashMap<WorkerId, usize>,
    next_worker: WorkerId,
    /// Workers a reload retired, cancelled once each has ended.
    ending: Vec<CancellationToken>,
    /// Clients a reload retired, being stopped.
    retiring: Vec<JoinHandle<()>>,
    /// Probes started and not yet ended, over every worker, retired ones included.
    in_flight: i64,
    longest_timeout: Duration,
    instance: u64,
    epoch: Instant,
    once: bool,
}

/// One cell's worker task.
struct Running {
    worker: WorkerId,
    /// What the worker was started from ([`CellSpec::fingerprint`]).
    fingerprint: u64,
    client: u64,
    stop: CancellationToken,
    /// Set before `stop` when a reload removes or restarts the cell: the worker then releases
    /// what the cell holds on the broker.
    retire: Arc<AtomicBool>,
    /// Cancelled when the task has ended (its cell released).
    ended: CancellationToken,
    task: JoinHandle<Tracker>,
    backend: Arc<dyn CellBackend>,
}

impl Running {
    /// Stops the worker for good (removed or replaced by a reload): it finishes its probes in
    /// flight, then releases the cell. Returns the token cancelled once it has ended.
    fn retire(&self) -> CancellationToken {
        self.retire.store(true, Ordering::Relaxed);
        self.stop.cancel();
        self.ended.clone()
    }
}

impl WorkerPool {
    /// Starts one worker per cell, its tasks on `shutdown`'s tracker and tokens. `once` runs a
    /// single probe per cell with no phase.
    pub fn start(
        config: &ValidatedConfig,
        once: bool,
        shutdown: &Shutdown,
    ) -> Result<WorkerPool, ClientError> {
        let (out, observations) = mpsc::channel(4096);
        let mut pool = WorkerPool {
            observations,
            out,
            shutdown: shutdown.clone(),
            clients: ClientPool::default(),
            running: Vec::new(),
            cells: HashMap::new(),
            next_worker: 0,
            ending: Vec::new(),
            retiring: Vec::new(),
            in_flight: 0,
            longest_timeout: Duration::ZERO,
            instance: random_u64(),
            epoch: Instant::now(),
            once,
        };
        pool.apply_to(config, &vec![None; config.matrix.len()])?;
        Ok(pool)
    }

    /// The next observation of any worker; `None` once all workers stopped and their
    /// observations are drained.
    pub async fn next(&mut self) -> Option<Observation> {
        loop {
            let sent = self.observations.recv().await?;
            if let Some(o) = self.translate(sent) {
                return Some(o);
            }
        }
    }

    /// An observation already sent, without waiting; `None` when there is none now.
    pub fn try_next(&mut self) -> Option<Observation> {
        while let Ok(sent) = self.observations.try_recv() {
            if let Some(o) = self.translate(sent) {
                return Some(o);
            }
        }
        None
    }

    fn translate(&mut self, sent: cell::Sent) -> Option<Observation> {
        match sent.seen {
            Seen::Started { .. } => self.in_flight += 1,
            Seen::Probe(crossprobe_probes::tracker::Event::Done(_)) => self.in_flight -= 1,
            Seen::Probe(_) => {}
        }
        let cell = *self.cells.get(&sent.worker)?;
        Some(Observation { cell, at: sent.at, seen: sent.seen })
    }

    /// Probes published and not yet ended, as far as the observations taken so far tell.
    pub fn in_flight(&self) -> i64 {
        self.in_flight
    }

    /// The random id this run stamps on its probe payloads.
    pub fn instance_id(&self) -> u64 {
        self.instance
    }

    /// The longest probe timeout of the running matrix.
    pub fn longest_timeout(&self) -> Duration {
        self.longest_timeout
    }

    /// Brings the workers to the plan's matrix: a new cell gets a worker; a removed cell's
    /// worker stops, finishes its probes in flight and releases what the cell holds on the
    /// broker; a cell whose settings changed gets a new worker once the old one ended (it
    /// continues the old one's sequence); every other worker runs on untouched. Clients no cell
    /// uses any more are closed once their cells' workers ended.
    ///
    /// Every password is read and every new client created before anything changes: on error
    /// the running matrix is left as it was.
    pub fn apply(&mut self, plan: &ReloadPlan) -> Result<Applied, ClientError> {
        self.apply_to(&plan.config, &plan.previous)
    }

    fn apply_to(
        &mut self,
        config: &ValidatedConfig,
        previous: &[Option<usize>],
    ) -> Result<Applied, ClientError> {
        let mut reads = Reads::default();
        let specs: Vec<CellSpec> = config
            .matrix
            .cells()
            .iter()
            .map(|c| CellSpec::resolve(config, self.instance, c, &mut reads))
            .collect::<Result<_, _>>()?;
        let running = |i: usize| previous[i].map(|p| &self.running[p]);
        let mut fresh = HashMap::new();
        for (i, (cell, spec)) in config.matrix.cells().iter().zip(&specs).enumerate() {
            if running(i).is_some_and(|r| r.fingerprint == spec.fingerprint) {
                continue;
            }
            let instance = &config.daemon.instance;
            let tracker = self.shutdown.tracker();
            match self.clients.cell(spec, instance, cell.key, tracker, self.shutdown.clients()) {
                Ok(client) => {
                    fresh.insert(i, client);
                }
                Err(e) => {
                    let keep = self.running.iter().map(|r| r.client).collect();
                    self.retire_clients(&keep);
                    return Err(e);
                }
            }
        }

        let mut old: Vec<Option<Running>> = std::mem::take(&mut self.running).into_iter().map(Some).collect();
        let mut applied = Applied::default();
        self.cells.clear();
        self.ending.retain(|e| !e.is_cancelled());
        for (i, (cell, spec)) in config.matrix.cells().iter().zip(&specs).enumerate() {
            let predecessor = previous[i].and_then(|p| old[p].take());
            let Some(client) = fresh.remove(&i) else {
                let kept = predecessor.expect("a cell without a fresh client is running unchanged");
                self.cells.insert(kept.worker, i);
                self.running.push(kept);
                applied.unchanged += 1;
                continue;
            };
            let predecessor = predecessor.map(|old| {
                // Its last observations still count for the cell.
                self.cells.insert(old.worker, i);
                self.ending.push(old.retire());
                old.task
            });
            if predecessor.is_some() {
                applied.restarted += 1;
            } else {
                applied.added += 1;
            }
            let running = self.spawn(config, cell, spec.fingerprint, client, predecessor);
            self.cells.insert(running.worker, i);
            self.running.push(running);
        }
        for gone in old.into_iter().flatten() {
            self.ending.push(gone.retire());
            applied.removed += 1;
        }
        let keep = self.running.iter().map(|r| r.client).collect();
        self.retire_clients(&keep);
        self.longest_timeout = config.targets.iter().map(|t| t.probe.timeout).max().unwrap_or_default();
        Ok(applied)
    }

    /// Stops the clients not in `keep` once the workers now ending have ended.
    fn retire_clients(&mut self, keep: &HashSet<u64>) {
        let retire = self.clients.retire_unused(keep);
        let ending = self.ending.clone();
        self.retiring.retain(|t| !t.is_finished());
        self.retiring.push(self.shutdown.spawn(async move {
            for ended in ending {
                ended.cancelled().await;
            }
            retire.await;
            // Off the runtime: trimming walks every arena.
            let _ = tokio::task::spawn_blocking(release_freed_memory).await;
        }));
    }

    /// Starts the worker of `cell`: after `predecessor` (the cell's previous worker) ended,
    /// taking over its tracker; then prepares the cell and probes until stopped.
    fn spawn(
        &mut self,
        config: &ValidatedConfig,
        cell: &Cell,
        fingerprint: u64,
        client: CellClient,
        predecessor: Option<JoinHandle<Tracker>>,
    ) -> Running {
        let worker = self.next_worker;
        self.next_worker += 1;
        let settings = config.targets[cell.target].probe;
        let stop = self.shutdown.workers().child_token();
        let retire = Arc::new(AtomicBool::new(false));
        let ended = CancellationToken::new();
        let (instance, key, epoch) = (self.instance, cell.key, self.epoch);
        let phase = if self.once { Duration::ZERO } else { cell::phase(instance, key, settings.interval) };
        let max_probes = self.once.then_some(1);
        let (out, cancel, done) = (self.out.clone(), stop.clone(), ended.clone());
        let retiring = retire.clone();
        let CellClient { backend, deliveries, key: client_key } = client;
        let cell_backend = backend.clone();
        let task = self.shutdown.spawn(async move {
            let _ended = done.drop_guard();
            let previous = match predecessor {
                Some(task) => task.await.ok(),
                None => None,
            };
            let mut tracker =
                previous.unwrap_or_else(|| Tracker::new(instance, key, settings.timeout, epoch));
            tracker.set_timeout(settings.timeout);
            if !cancel.is_cancelled() {
                // Failures are left for the probes to report; this keeps set-up out of the first
                // measurements.
                let _ = tokio::time::timeout(settings.timeout.max(SETUP_BOUND), backend.prepare()).await;
            }
            let spec = cell::WorkerSpec { worker, settings, tracker, phase, max_probes };
            let tracker = cell::probe(&*backend, deliveries, spec, out, cancel).await;
            if retiring.load(Ordering::Relaxed) {
                backend.retire().await;
            }
            tracker
        });
        Running { worker, fingerprint, client: client_key, stop, retire, ended, task, backend: cell_backend }
    }

    /// Each cell's view of its partition (Kafka cells), in matrix order.
    pub fn partitions(&self) -> Vec<Option<PartitionHealth>> {
        self.running.iter().map(|r| r.backend.partition()).collect()
    }

    /// How many broker clients are open: (Kafka, AMQP).
    pub fn clients(&self) -> (usize, usize) {
        self.clients.clients()
    }

    /// Clients re-established after a loss so far: (Kafka rebuilds, AMQP reconnections).
    pub fn reconnects(&self) -> (u64, u64) {
        self.clients.reconnects()
    }

    /// Stops the workers (letting probes in flight end, then releasing what their cells hold on
    /// the brokers: a process's probe queues go with it), then the clients, each within its
    /// grace period.
    pub async fn stop(&mut self) -> Result<(), Stuck> {
        // A probe in flight may take a timeout to end, and the release another.
        let grace = self.longest_timeout * 2 + GRACE;
        for r in &self.running {
            r.retire();
        }
        self.shutdown.workers().cancel();
        let workers = async {
            for r in &mut self.running {
                let _ = (&mut r.task).await;
            }
            for ended in &self.ending {
                ended.cancelled().await;
            }
        };
        tokio::time::timeout(grace, workers).await.map_err(|_| Stuck("probe workers"))?;
        self.shutdown.clients().cancel();
        let clients = async {
            for t in &mut self.retiring {
                let _ = t.await;
            }
            self.clients.closed().await;
        };
        tokio::time::timeout(GRACE, clients).await.map_err(|_| Stuck("broker clients"))
    }
}
