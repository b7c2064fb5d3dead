//! The daemon: logging set-up, start-up from a validated config (HTTP address bound before any
//! probe starts), the probe workers, and the orderly stop on SIGINT or SIGTERM.
//!
//! Stop order: workers stop scheduling and finish their probes in flight (at most one
//! timeout), then the broker clients close, then the report task takes the last reports and
//! evaluates once more, and the HTTP server stops last, so the final scrape sees final counts.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crossprobe_probes::backend::Deliveries;
use crossprobe_probes::tracker::{Event, ProbeResult, Tracker};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::backends::{BackendError, Backends, CellBackend, CellSpec, Reads};
use crate::config::{ConfigSource, LoadError, LogFormat, ValidatedConfig};
use crate::correlator::Correlator;
use crate::matrix::{Cell, CellId};
use crate::metrics::Metrics;
use crate::reports::Reports;
use crate::scheduler::{self, Report, WorkerGauges, WorkerSpec};
use crate::server::{self, Shared};
use crate::shutdown::StopSignals;

/// Least time a cell's set-up (connection, topic, channel, queue) gets before its first probe.
pub const SETUP_BOUND: Duration = Duration::from_secs(2);

/// Time allowed, beyond the longest probe timeout, for workers and clients to stop.
pub const GRACE: Duration = Duration::from_secs(5);

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen for signals")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("{0} still running after the stop grace period")]
    Stuck(&'static str),
    #[error("cannot listen on {0}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("cannot create the record file {}", .0.display())]
    Record(PathBuf, #[source] std::io::Error),
    #[error("HTTP server failed")]
    Serve(#[source] std::io::Error),
    #[error("cannot register metrics")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Correlator(#[from] crate::correlator::CorrelatorError),
    #[error("cannot serve HTTPS")]
    Tls(#[from] crate::web::tls::TlsError),
}

/// Without `RUST_LOG`: INFO, but lapin's own logs off, since it logs every broker disconnect
/// as an error; the backends report connection state themselves, and broker failures are data.
pub const DEFAULT_LOG_FILTER: &str = "info,lapin=off";

/// Installs the global log subscriber: `RUST_LOG` filters (default [`DEFAULT_LOG_FILTER`]),
/// text or JSON.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (tests run several daemons in one process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Workers and clients of a running matrix, stoppable in order, and changeable in place by
/// [`Probing::apply`]. The daemon, `once`, the tests and the benchmarks all drive probes through
/// this.
pub struct Probing {
    reports: mpsc::Receiver<Report>,
    out: mpsc::Sender<Report>,
    workers: TaskTracker,
    stop_workers: CancellationToken,
    clients: TaskTracker,
    stop_clients: CancellationToken,
    backends: Backends,
    /// The worker of every cell of the current matrix.
    running: HashMap<CellId, Running>,
    /// Worker slot -> index of its cell in the current matrix; a slot not here (its cell was
    /// removed) has its reports dropped.
    slots: HashMap<usize, usize>,
    next_slot: usize,
    longest_timeout: Duration,
    instance: u64,
    epoch: Instant,
    once: bool,
    gauges: Option<WorkerGauges>,
}

/// One cell's worker task.
struct Running {
    slot: usize,
    /// What the worker was started from ([`CellSpec::fingerprint`]).
    fingerprint: u64,
    client: u64,
    stop: CancellationToken,
    /// Set before `stop` when a reload removes or restarts the cell: the worker then releases
    /// what the cell holds on the broker.
    retire: Arc<AtomicBool>,
    /// Cancelled when the task has ended (its cell released).
    ended: CancellationToken,
    task: tokio::task::JoinHandle<Tracker>,
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

/// What a reload changed among the cells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    pub added: usize,
    pub removed: usize,
    /// Kept cells whose settings changed: their worker restarted, their series and state kept.
    pub restarted: usize,
    pub unchanged: usize,
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} added, {} removed, {} restarted, {} unchanged",
            self.added, self.removed, self.restarted, self.unchanged
        )
    }
}

impl Probing {
    /// Starts one worker per cell. `once` runs a single probe per cell with no phase.
    pub async fn start(
        config: &ValidatedConfig,
        once: bool,
        gauges: Option<WorkerGauges>,
    ) -> Result<Probing, BackendError> {
        let (out, reports) = mpsc::channel(4096);
        let mut probing = Probing {
            reports,
            out,
            workers: TaskTracker::new(),
            stop_workers: CancellationToken::new(),
            clients: TaskTracker::new(),
            stop_clients: CancellationToken::new(),
            backends: Backends::default(),
            running: HashMap::new(),
            slots: HashMap::new(),
            next_slot: 0,
            longest_timeout: Duration::ZERO,
            instance: scheduler::random_u64(),
            epoch: Instant::now(),
            once,
            gauges,
        };
        probing.apply(config)?;
        Ok(probing)
    }

    /// The next report of any worker, its cell given as an index in the current matrix;
    /// `None` once all workers stopped and reports are drained.
    pub async fn next(&mut self) -> Option<Report> {
        loop {
            let report = self.reports.recv().await?;
            if let Some(r) = self.translate(report) {
                return Some(r);
            }
        }
    }

    fn translate(&self, mut report: Report) -> Option<Report> {
        report.cell = *self.slots.get(&report.cell)?;
        Some(report)
    }

    /// The random id this run stamps on its probe payloads.
    pub fn instance_id(&self) -> u64 {
        self.instance
    }

    /// Brings the workers to `config`'s matrix, by cell id: a new cell gets a worker; a removed
    /// cell's worker stops, finishes its probes in flight and releases what the cell holds on
    /// the broker; a cell whose settings changed gets a new worker once the old one ended (it
    /// continues the old one's sequence); every other worker runs on untouched. Clients no cell
    /// uses any more are closed once their cells' workers ended.
    ///
    /// Every password is read and every new client created before anything changes: on error
    /// the running matrix is left as it was.
    pub fn apply(&mut self, config: &ValidatedConfig) -> Result<Applied, BackendError> {
        let mut reads = Reads::default();
        let specs: Vec<CellSpec> = config
            .matrix
            .cells()
            .iter()
            .map(|c| CellSpec::resolve(config, c, &mut reads))
            .collect::<Result<_, _>>()?;
        let mut applied = Applied::default();
        let mut fresh = Vec::new();
        for (i, (cell, spec)) in config.matrix.cells().iter().zip(&specs).enumerate() {
            if self.running.get(&cell.id).is_some_and(|r| r.fingerprint == spec.fingerprint) {
                continue;
            }
            let instance = &config.daemon.instance;
            match self.backends.cell(spec, instance, cell.key, &self.clients, &self.stop_clients) {
                Ok(backend) => fresh.push((i, backend)),
                Err(e) => {
                    let keep = self.running.values().map(|r| r.client).collect();
                    self.clients.spawn(self.backends.retire_unused(&keep));
                    return Err(e);
                }
            }
        }

        let mut previous = std::mem::take(&mut self.running);
        let mut ending = Vec::new();
        self.slots.clear();
        let mut fresh = fresh.into_iter().peekable();
        for (i, (cell, spec)) in config.matrix.cells().iter().zip(&specs).enumerate() {
            let old = previous.remove(&cell.id);
            if fresh.peek().is_none_or(|(j, _)| *j != i) {
                let kept = old.expect("a cell without a fresh backend is running unchanged");
                self.slots.insert(kept.slot, i);
                self.running.insert(cell.id.clone(), kept);
                applied.unchanged += 1;
                continue;
            }
            let (_, (backend, deliveries, client)) = fresh.next().expect("peeked");
            let predecessor = old.map(|old| {
                // Its last reports still count for the cell.
                self.slots.insert(old.slot, i);
                ending.push(old.retire());
                old.task
            });
            if predecessor.is_some() {
                applied.restarted += 1;
            } else {
                applied.added += 1;
            }
            let running =
                self.spawn(config, cell, spec.fingerprint, client, backend, deliveries, predecessor);
            self.slots.insert(running.slot, i);
            self.running.insert(cell.id.clone(), running);
        }
        for (_, old) in previous {
            ending.push(old.retire());
            applied.removed += 1;
        }
        let keep = self.running.values().map(|r| r.client).collect();
        let retire = self.backends.retire_unused(&keep);
        self.clients.spawn(async move {
            for ended in ending {
                ended.cancelled().await;
            }
            retire.await;
        });
        self.longest_timeout = config.targets.iter().map(|t| t.probe.timeout).max().unwrap_or_default();
        Ok(applied)
    }

    /// Starts the worker of `cell`: after `predecessor` (the cell's previous worker) ended,
    /// taking over its tracker; then prepares the cell and probes until stopped.
    #[allow(clippy::too_many_arguments)]
    fn spawn(
        &mut self,
        config: &ValidatedConfig,
        cell: &Cell,
        fingerprint: u64,
        client: u64,
        backend: CellBackend,
        deliveries: Deliveries,
        predecessor: Option<tokio::task::JoinHandle<Tracker>>,
    ) -> Running {
        let slot = self.next_slot;
        self.next_slot += 1;
        let settings = config.targets[cell.target].probe;
        let stop = self.stop_workers.child_token();
        let retire = Arc::new(AtomicBool::new(false));
        let ended = CancellationToken::new();
        let (instance, key, epoch) = (self.instance, cell.key, self.epoch);
        let phase =
            if self.once { Duration::ZERO } else { scheduler::phase(instance, key, settings.interval) };
        let max_probes = self.once.then_some(1);
        let gauges = self.gauges.clone();
        let (out, cancel, done) = (self.out.clone(), stop.clone(), ended.clone());
        let retiring = retire.clone();
        let task = self.workers.spawn(async move {
            let _ended = done.drop_guard();
            let previous = match predecessor {
                Some(task) => task.await.ok(),
                None => None,
            };
            let mut tracker =
                previous.unwrap_or_else(|| Tracker::new(instance, key, settings.timeout, epoch));
            tracker.set_timeout(settings.timeout);
            if !cancel.is_cancelled() {
                backend.prepare(settings.timeout.max(SETUP_BOUND)).await;
            }
            let spec = WorkerSpec { cell: slot, settings, tracker, phase, max_probes, gauges };
            let tracker = match &backend {
                CellBackend::Kafka(b) => scheduler::worker(b, deliveries, spec, out, cancel).await,
                CellBackend::Amqp(b) => scheduler::worker(b, deliveries, spec, out, cancel).await,
            };
            if retiring.load(Ordering::Relaxed) {
                backend.retire().await;
            }
            tracker
        });
        Running { slot, fingerprint, client, stop, retire, ended, task }
    }

    /// How many broker clients are open: (Kafka, AMQP).
    pub fn clients(&self) -> (usize, usize) {
        self.backends.clients()
    }

    /// Stops workers (letting probes in flight end), then clients.
    pub async fn stop(&self) -> Result<(), DaemonError> {
        let grace = self.longest_timeout + GRACE;
        self.stop_workers.cancel();
        self.workers.close();
        tokio::time::timeout(grace, self.workers.wait())
            .await
            .map_err(|_| DaemonError::Stuck("probe workers"))?;
        self.stop_clients.cancel();
        self.clients.close();
        let clients = async {
            self.clients.wait().await;
            self.backends.closed().await;
        };
        tokio::time::timeout(GRACE, clients).await.map_err(|_| DaemonError::Stuck("broker clients"))
    }
}

/// How `run` was asked to behave beyond the config.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// Write every probe outcome as a JSON line here (the `replay` format).
    pub record: Option<PathBuf>,
    /// Where the configuration came from, to read it again on reload; without it, reloads are
    /// refused.
    pub source: Option<ConfigSource>,
    /// Read the source file this often and reload when its content changed (`--watch-config`).
    pub watch: Option<Duration>,
}

/// Why a reload left the running configuration in place.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the daemon was started without a configuration file to reload")]
    NoSource,
    #[error("{0}")]
    Invalid(#[from] LoadError),
    #[error("{0} cannot change while the daemon runs; restart it to apply")]
    NeedsRestart(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Correlator(#[from] crate::correlator::CorrelatorError),
    #[error("the daemon is stopping")]
    Stopping,
}

/// A reload asked of the report task, and where its result goes.
pub type ReloadRequest = oneshot::Sender<Result<Applied, ReloadError>>;

/// A running daemon: HTTP server, probe workers, and the report task that owns the correlator.
pub struct Daemon {
    addr: SocketAddr,
    stop: CancellationToken,
    reload: mpsc::Sender<ReloadRequest>,
    task: tokio::task::JoinHandle<Result<(), DaemonError>>,
}

impl Daemon {
    /// Binds the HTTP address, then starts probing. Returns once everything runs.
    pub async fn start(config: ValidatedConfig, options: RunOptions) -> Result<Daemon, DaemonError> {
        let web = crate::web::Web::load(&config.daemon.web)?;
        let listener = server::bind(config.daemon.listen)
            .await
            .map_err(|e| DaemonError::Bind(config.daemon.listen, e))?;
        let addr = listener.local_addr().map_err(|e| DaemonError::Bind(config.daemon.listen, e))?;
        let record = match &options.record {
            Some(path) => {
                Some(std::fs::File::create(path).map_err(|e| DaemonError::Record(path.clone(), e))?)
            }
            None => None,
        };
        let longest_timeout = config.targets.iter().map(|t| t.probe.timeout).max().unwrap_or_default();
        let registry = crate::metrics::registry(config.daemon.vantage.as_deref())?;
        let metrics = Metrics::new(registry, &config.matrix, longest_timeout)?;
        let gauges =
            WorkerGauges { lag: metrics.scheduler_lag.clone(), in_flight: metrics.in_flight.clone() };
        let correlator = Correlator::new(&config.matrix, &config.correlator)?;
        let (reload, reload_requests) = mpsc::channel(4);
        let shared = Arc::new(Shared {
            metrics,
            verdict: RwLock::new(String::new()),
            not_ready: RwLock::new(Some("starting".into())),
            reload: reload.clone(),
            history: Default::default(),
        });
        let server_stop = CancellationToken::new();
        let scheme = web.scheme();
        let server = tokio::spawn(server::serve(listener, shared.clone(), web, server_stop.clone()));
        info!(
            listen = %addr,
            scheme = %scheme,
            instance = %config.daemon.instance,
            vantage = %config.daemon.vantage.as_deref().unwrap_or("none"),
            cells = config.matrix.len(),
            targets = config.targets.len(),
            tenants = config.tenants.len(),
            dimensions = %config.matrix.dimensions().join(","),
            "crossprobe started"
        );
        let probing = match Probing::start(&config, false, Some(gauges)).await {
            Ok(p) => p,
            Err(e) => {
                server_stop.cancel();
                let _ = server.await;
                return Err(e.into());
            }
        };
        let reports = Reports::new(config, correlator, shared, record);
        let stop = CancellationToken::new();
        let task = tokio::spawn(report_loop(
            ReportLoop {
                probing,
                reports,
                watched: options.source.as_ref().map(|s| content_hash(&s.path)),
                settling: None,
                source: options.source,
                watch: options.watch,
                reload_requests,
            },
            stop.clone(),
            server_stop,
            server,
        ));
        Ok(Daemon { addr, stop, reload, task })
    }

    /// The address the HTTP server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Reads the configuration again and applies it (see [`Probing::apply`]); on any error the
    /// daemon keeps running the configuration it had.
    pub async fn reload(&self) -> Result<Applied, ReloadError> {
        request_reload(&self.reload).await
    }

    /// Asks the daemon to stop; [`Daemon::wait`] returns when it has.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits for the daemon to end, after [`Daemon::stop`] or a failure.
    pub async fn wait(self) -> Result<(), DaemonError> {
        self.task.await.unwrap_or(Err(DaemonError::Stuck("report task")))
    }
}

/// Asks the report task for a reload and waits for its result.
pub async fn request_reload(reload: &mpsc::Sender<ReloadRequest>) -> Result<Applied, ReloadError> {
    let (tx, rx) = oneshot::channel();
    reload.send(tx).await.map_err(|_| ReloadError::Stopping)?;
    rx.await.unwrap_or(Err(ReloadError::Stopping))
}

/// What the report task owns.
struct ReportLoop {
    probing: Probing,
    reports: Reports,
    source: Option<ConfigSource>,
    watch: Option<Duration>,
    /// Hash of the source file's content when it was last loaded or tried.
    watched: Option<u64>,
    /// A changed content seen at the last look, waiting to be seen again unchanged.
    settling: Option<u64>,
    reload_requests: mpsc::Receiver<ReloadRequest>,
}

impl ReportLoop {
    /// Loads the configuration again and applies what changed. The new configuration is
    /// entirely validated, its passwords read and its clients created before anything running
    /// changes.
    fn reload(&mut self) -> Result<Applied, ReloadError> {
        let source = self.source.as_ref().ok_or(ReloadError::NoSource)?;
        // Read once: what is hashed as seen is exactly what is validated.
        let text = source.read();
        self.watched = Some(text_hash(text.as_deref().unwrap_or_default()));
        self.settling = None;
        let config = source.parse(&text?)?;
        let (correlator, previous) = self.reports.prepare_reload(&config)?;
        let applied = self.probing.apply(&config)?;
        self.reports.reconfigure(config, correlator, &previous);
        Ok(applied)
    }

    /// Whether the watched file's content differs from what was last loaded or tried (so a
    /// broken file is reported once, not at every look) and is the same as at the previous
    /// look (so a file caught half-written by an editor is not loaded).
    fn source_changed(&mut self) -> bool {
        let (Some(source), Some(seen)) = (&self.source, self.watched) else { return false };
        let now = content_hash(&source.path);
        let settled = now != seen && self.settling == Some(now);
        self.settling = (now != seen).then_some(now);
        settled
    }
}

/// A hash of a file's text; that of empty text when it cannot be read (a reload then reports
/// why).
fn content_hash(path: &std::path::Path) -> u64 {
    text_hash(&std::fs::read_to_string(path).unwrap_or_default())
}

fn text_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// Feeds reports to the correlator and metrics, evaluates every tick, applies reloads; on stop,
/// stops the workers and clients, takes their last reports, evaluates once more, then stops
/// the server.
async fn report_loop(
    mut lp: ReportLoop,
    stop: CancellationToken,
    server_stop: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
) -> Result<(), DaemonError> {
    let new_ticker = |tick: Duration| {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        ticker
    };
    let mut tick = lp.reports.config().correlator.tick;
    let mut ticker = new_ticker(tick);
    let mut watch = new_ticker(lp.watch.unwrap_or(Duration::from_secs(3600)));
    loop {
        let reply = tokio::select! {
            _ = stop.cancelled() => break,
            Some(report) = lp.probing.next() => {
                lp.reports.handle(&report);
                continue;
            }
            Some(reply) = lp.reload_requests.recv() => Some(reply),
            _ = watch.tick(), if lp.watch.is_some() => {
                if !lp.source_changed() {
                    continue;
                }
                info!("the configuration file changed: reloading");
                None
            }
            _ = ticker.tick() => {
                lp.reports.set_reconnects(lp.probing.backends.reconnects());
                lp.reports.tick();
                continue;
            }
        };
        let result = lp.reload();
        lp.reports.reloaded(&result);
        if lp.reports.config().correlator.tick != tick {
            tick = lp.reports.config().correlator.tick;
            ticker = new_ticker(tick);
        }
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }
    lp.reload_requests.close();
    while let Ok(reply) = lp.reload_requests.try_recv() {
        let _ = reply.send(Err(ReloadError::Stopping));
    }
    let stopped = lp.probing.stop().await;
    while let Ok(report) = lp.probing.reports.try_recv() {
        if let Some(report) = lp.probing.translate(report) {
            lp.reports.handle(&report);
        }
    }
    lp.reports.finish();
    server_stop.cancel();
    let served = server.await.map_err(|_| DaemonError::Stuck("HTTP server"))?;
    stopped?;
    served.map_err(DaemonError::Serve)
}

/// Runs until SIGINT or SIGTERM, then stops in order; SIGHUP reloads the configuration.
pub async fn run(config: ValidatedConfig, options: RunOptions) -> Result<(), DaemonError> {
    let mut signals = StopSignals::install().map_err(DaemonError::Signals)?;
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(DaemonError::Signals)?;
    let daemon = Daemon::start(config, options).await?;
    let name = loop {
        tokio::select! {
            name = signals.recv() => break name,
            _ = hangups.recv() => {
                info!("SIGHUP: reloading the configuration");
                // The outcome is logged by the report task.
                let _ = daemon.reload().await;
            }
        }
    };
    info!(signal = name, "stopping");
    daemon.stop();
    daemon.wait().await?;
    info!("stopped");
    Ok(())
}

/// Runs one probe per cell and returns each cell's result, in matrix order.
pub async fn once(config: &ValidatedConfig) -> Result<Vec<Option<ProbeResult>>, DaemonError> {
    let mut probing = Probing::start(config, true, None).await?;
    let mut results = vec![None; config.matrix.len()];
    let bound = probing.longest_timeout + GRACE;
    let all_done = async {
        while let Some(report) = probing.next().await {
            if let Event::Done(r) = report.event {
                results[report.cell].get_or_insert(r);
                if results.iter().all(Option::is_some) {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(bound, all_done).await;
    probing.stop().await?;
    Ok(results)
}
