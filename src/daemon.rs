//! The daemon: logging set-up, start-up from a validated config (HTTP address bound before any
//! probe starts), the probe workers, and the orderly stop on SIGINT or SIGTERM.
//!
//! Stop order: workers stop scheduling and finish their probes in flight (at most one
//! timeout), then the broker clients close, then the report task takes the last reports and
//! evaluates once more, and the HTTP server stops last, so the final scrape sees final counts.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crossprobe_probes::tracker::{Event, ProbeResult, Tracker};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::backends::{BackendError, Backends, CellBackend};
use crate::config::{LogFormat, ValidatedConfig};
use crate::correlator::Correlator;
use crate::metrics::Metrics;
use crate::reports::Reports;
use crate::scheduler::{self, Report, WorkerGauges, WorkerSpec};
use crate::server::{self, Shared};
use crate::shutdown::StopSignals;

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
    pub async fn start(
        config: &ValidatedConfig,
        once: bool,
        gauges: Option<WorkerGauges>,
    ) -> Result<Probing, BackendError> {
        start(config, once, gauges).await
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

async fn start(
    config: &ValidatedConfig,
    once: bool,
    gauges: Option<WorkerGauges>,
) -> Result<Probing, BackendError> {
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
            gauges: gauges.clone(),
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

/// How `run` was asked to behave beyond the config.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// Write every probe outcome as a JSON line here (the `replay` format).
    pub record: Option<PathBuf>,
}

/// A running daemon: HTTP server, probe workers, and the report task that owns the correlator.
pub struct Daemon {
    addr: SocketAddr,
    stop: CancellationToken,
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
        let shared = Arc::new(Shared {
            metrics,
            verdict: RwLock::new(String::new()),
            not_ready: RwLock::new(Some("starting".into())),
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
        let tick = config.correlator.tick;
        let reports = Reports::new(config, correlator, shared, record);
        let stop = CancellationToken::new();
        let task = tokio::spawn(report_loop(probing, reports, tick, stop.clone(), server_stop, server));
        Ok(Daemon { addr, stop, task })
    }

    /// The address the HTTP server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
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

/// Feeds reports to the correlator and metrics, evaluates every tick; on stop, stops the
/// workers and clients, takes their last reports, evaluates once more, then stops the server.
async fn report_loop(
    mut probing: Probing,
    mut reports: Reports,
    tick: Duration,
    stop: CancellationToken,
    server_stop: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
) -> Result<(), DaemonError> {
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(report) = probing.next() => reports.handle(&report),
            _ = ticker.tick() => {
                reports.set_reconnects(probing.backends.reconnects());
                reports.tick();
            }
        }
    }
    let stopped = probing.stop().await;
    while let Ok(report) = probing.reports.try_recv() {
        reports.handle(&report);
    }
    reports.finish();
    server_stop.cancel();
    let served = server.await.map_err(|_| DaemonError::Stuck("HTTP server"))?;
    stopped?;
    served.map_err(DaemonError::Serve)
}

/// Runs until SIGINT or SIGTERM, then stops in order.
pub async fn run(config: ValidatedConfig, options: RunOptions) -> Result<(), DaemonError> {
    let mut signals = StopSignals::install().map_err(DaemonError::Signals)?;
    let daemon = Daemon::start(config, options).await?;
    let name = signals.recv().await;
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
