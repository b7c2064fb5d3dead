//! The daemon: logging set-up, start-up from a validated config, the probe workers and the task
//! that consumes their reports, and the orderly stop on SIGINT or SIGTERM.
//!
//! Stop order: workers stop scheduling and finish their probes in flight (at most one
//! timeout), then the broker clients close, then the report consumer drains what is left.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use crossprobe_probes::tracker::{Event, ProbeResult, Tracker};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::backends::{BackendError, Backends, CellBackend};
use crate::config::{LogFormat, ValidatedConfig};
use crate::scheduler::{self, Report, WorkerSpec};
use crate::shutdown::StopSignals;

/// Time allowed, beyond the longest probe timeout, for workers and clients to stop.
pub const GRACE: Duration = Duration::from_secs(5);

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen for signals: {0}")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("{0} still running after the stop grace period")]
    Stuck(&'static str),
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

/// Workers and clients of a running matrix, stoppable in order. The daemon, `once`, the tests
/// and the benchmarks all drive probes through this.
pub struct Probing {
    reports: mpsc::Receiver<Report>,
    workers: TaskTracker,
    stop_workers: CancellationToken,
    clients: TaskTracker,
    stop_clients: CancellationToken,
    backends: Backends,
    longest_timeout: Duration,
    instance: u64,
}

impl Probing {
    /// Starts one worker per cell. `once` runs a single probe per cell with no phase.
    pub async fn start(config: &ValidatedConfig, once: bool) -> Result<Probing, BackendError> {
        start(config, once).await
    }

    /// The next report of any worker; `None` once all workers stopped and reports are drained.
    pub async fn next(&mut self) -> Option<Report> {
        self.reports.recv().await
    }

    /// The random id this run stamps on its probe payloads.
    pub fn instance_id(&self) -> u64 {
        self.instance
    }
}

async fn start(config: &ValidatedConfig, once: bool) -> Result<Probing, BackendError> {
    let clients = TaskTracker::new();
    let stop_clients = CancellationToken::new();
    let mut backends = Backends::build(config, &clients, &stop_clients)?;
    backends.prepare(config).await;
    let workers = TaskTracker::new();
    let stop_workers = CancellationToken::new();
    let (out, reports) = mpsc::channel(4096);
    let epoch = Instant::now();
    let instance = scheduler::random_u64();
    for (i, (backend, deliveries)) in std::mem::take(&mut backends.cells).into_iter().enumerate() {
        let cell = &config.matrix.cells()[i];
        let settings = config.targets[cell.target].probe;
        let spec = WorkerSpec {
            cell: i,
            settings,
            tracker: Tracker::new(instance, cell.key, settings.timeout, epoch),
            phase: if once {
                Duration::ZERO
            } else {
                scheduler::phase(instance, cell.key, settings.interval)
            },
            max_probes: once.then_some(1),
        };
        let (out, cancel) = (out.clone(), stop_workers.clone());
        workers.spawn(async move {
            match backend {
                CellBackend::Kafka(b) => scheduler::worker(&b, deliveries, spec, out, cancel).await,
                CellBackend::Amqp(b) => scheduler::worker(&b, deliveries, spec, out, cancel).await,
            }
        });
    }
    workers.close();
    let longest_timeout = config.targets.iter().map(|t| t.probe.timeout).max().unwrap_or_default();
    Ok(Probing { reports, workers, stop_workers, clients, stop_clients, backends, longest_timeout, instance })
}

impl Probing {
    /// Stops workers (letting probes in flight end), then clients.
    pub async fn stop(&self) -> Result<(), DaemonError> {
        let grace = self.longest_timeout + GRACE;
        self.stop_workers.cancel();
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

/// Runs until SIGINT or SIGTERM, then stops in order.
pub async fn run(config: ValidatedConfig) -> Result<(), DaemonError> {
    let mut signals = StopSignals::install().map_err(DaemonError::Signals)?;
    let m = &config.matrix;
    let mut probing = Probing::start(&config, false).await?;
    info!(
        instance = %config.daemon.instance,
        cells = m.len(),
        targets = config.targets.len(),
        tenants = config.tenants.len(),
        dimensions = %m.dimensions().join(","),
        "crossprobe started"
    );
    for cell in m.cells() {
        debug!(cell = %cell.id, labels = %m.describe(cell), "cell");
    }
    let mut log = OutcomeLog::new(m.len());
    let name = loop {
        tokio::select! {
            name = signals.recv() => break name,
            Some(report) = probing.reports.recv() => log.record(&config, &report),
        }
    };
    info!(signal = name, "stopping");
    let stopped = probing.stop().await;
    while let Ok(report) = probing.reports.try_recv() {
        log.record(&config, &report);
    }
    log.summary();
    stopped?;
    info!("stopped");
    Ok(())
}

/// Runs one probe per cell and returns each cell's result, in matrix order.
pub async fn once(config: &ValidatedConfig) -> Result<Vec<Option<ProbeResult>>, DaemonError> {
    let mut probing = Probing::start(config, true).await?;
    let mut results = vec![None; config.matrix.len()];
    let all_done = async {
        while let Some(report) = probing.reports.recv().await {
            if let Event::Done(r) = report.event {
                results[report.cell].get_or_insert(r);
                if results.iter().all(Option::is_some) {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(probing.longest_timeout + GRACE, all_done).await;
    probing.stop().await?;
    Ok(results)
}

/// Logs outcomes without flooding: a failure when a cell's outcome changes, recovery, and a
/// summary of counts every minute. Metrics carry the full detail.
struct OutcomeLog {
    last: Vec<Option<&'static str>>,
    counts: std::collections::BTreeMap<&'static str, u64>,
    since: Instant,
}

impl OutcomeLog {
    fn new(cells: usize) -> Self {
        OutcomeLog { last: vec![None; cells], counts: Default::default(), since: Instant::now() }
    }

    fn record(&mut self, config: &ValidatedConfig, report: &Report) {
        let cell = &config.matrix.cells()[report.cell];
        let name = match report.event {
            Event::Done(r) => {
                let name = r.outcome.name();
                let previous = self.last[report.cell].replace(name);
                if previous != Some(name) {
                    if r.outcome.is_failure() {
                        warn!(cell = %cell.id, outcome = %r.outcome, "probe failed");
                    } else if previous.is_some() {
                        info!(cell = %cell.id, "probe ok again");
                    }
                }
                debug!(cell = %cell.id, outcome = %r.outcome, publish = ?r.publish, roundtrip = ?r.roundtrip, "probe");
                name
            }
            Event::Late { .. } => "late",
            Event::Duplicate { .. } => "duplicate",
            Event::Reorder { .. } => "reorder",
            Event::Foreign => "foreign",
            Event::Corrupt => "corrupt_message",
            Event::OtherCell => return,
        };
        *self.counts.entry(name).or_default() += 1;
        if self.since.elapsed() >= Duration::from_secs(60) {
            self.summary();
        }
    }

    fn summary(&mut self) {
        let counts: Vec<String> = self.counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        info!(counts = %counts.join(" "), "probe outcomes in the last period");
        self.counts.clear();
        self.since = Instant::now();
    }
}
