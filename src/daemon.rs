//! The daemon: start-up wiring from a validated configuration (the HTTP address bound before
//! any probe starts), the run loop, and the ordered stop on SIGINT or SIGTERM; also `once`.
//!
//! The run loop takes every observation of the workers to the evaluator, ticks it, and applies
//! reloads: a [`ReloadPlan`] is made once, the evaluator builds its correlator for it, the worker
//! pool applies it, and the evaluator switches to it.
//!
//! Discovered targets ([`crate::clients::discovery`]): their brokers are read before the
//! workers start and again every target's `every`; a changed broker set becomes a
//! [`ReloadPlan`] of the file's configuration expanded with the brokers known, applied like a
//! reload (kept cells keep their workers, series and windows).
//!
//! Stop order ([`crate::shutdown`]): workers stop scheduling and finish their probes in flight
//! (at most one timeout), then the broker clients close, then the evaluator takes the last
//! observations and evaluates once more, and the HTTP server stops last, so the final scrape
//! sees final counts. The whole stop takes at most the longest probe timeout plus
//! [`STOP_MARGIN`]; past that, what still runs is left behind and the stop is an error. A second
//! SIGINT or SIGTERM during the stop ends `run` at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crossprobe_probes::tracker::{Event, ProbeResult};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::clients::discovery::{self, Answer, Known};
use crate::clients::ClientError;
use crate::config::{ConfigSource, ValidatedConfig};
use crate::correlator::Correlator;
use crate::evaluator::Evaluator;
use crate::metrics::Metrics;
use crate::offline::recording::{Recorder, Retention};
use crate::published::Published;
use crate::reload::{Applied, ConfigWatch, ReloadError, ReloadHandle, ReloadPlan, ReloadRequest};
use crate::server::{self, Shared};
use crate::shutdown::{Shutdown, StopSignals};
use crate::workers::{Seen, Stuck, WorkerPool, GRACE};

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen for signals")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Clients(#[from] ClientError),
    #[error(transparent)]
    Stuck(#[from] Stuck),
    #[error("cannot listen on {0}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("cannot open the record file {}", .0.display())]
    Record(PathBuf, #[source] std::io::Error),
    #[error("HTTP server failed")]
    Serve(#[source] std::io::Error),
    #[error("cannot register metrics")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Correlator(#[from] crate::correlator::CorrelatorError),
    #[error(transparent)]
    Web(#[from] crate::web::WebError),
    #[error("a second {0} ended the stop before it finished")]
    Interrupted(&'static str),
}

/// A stop takes at most the longest probe timeout plus this: the probes in flight end within
/// their timeout, and closing the clients (AMQP queues deleted) and the HTTP server (requests in
/// progress finish, within [`crate::web::DRAIN`]) take well under it.
pub const STOP_MARGIN: Duration = Duration::from_secs(10);

/// How the run loop ended, and by when every task must have ended too.
struct Ended {
    result: Result<(), DaemonError>,
    deadline: Instant,
}

/// How `run` was asked to behave beyond the config.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// Append every probe outcome as a JSON line here (the `replay` format).
    pub record: Option<PathBuf>,
    /// When the record file rotates and how long rotated files stay.
    pub retention: Retention,
    /// Where the configuration came from, to read it again on reload; without it, reloads are
    /// refused.
    pub source: Option<ConfigSource>,
    /// Read the source file this often and reload when its content changed (`--watch-config`).
    pub watch: Option<Duration>,
    /// Reload on SIGHUP (`run`; the tests run several daemons in one process and leave it off).
    pub sighup: bool,
    /// The exporter-toolkit web configuration file (`--web.config.file`): TLS, basic auth and
    /// response headers, re-read when it changes. Without it: plain HTTP, no authentication.
    pub web_config_file: Option<PathBuf>,
}

/// A running daemon: HTTP server, probe workers, and the run loop that owns the evaluator.
pub struct Daemon {
    addr: SocketAddr,
    shutdown: Shutdown,
    reload: ReloadHandle,
    task: tokio::task::JoinHandle<Ended>,
}

impl Daemon {
    /// Binds the HTTP address, reads the discovered targets' brokers, then starts probing.
    /// Returns once everything runs.
    pub async fn start(source: ValidatedConfig, options: RunOptions) -> Result<Daemon, DaemonError> {
        let mut known = Known::default();
        discovery::read_all(&source, &mut known).await;
        let config = source.discovered(known.sets());
        let web = crate::web::Web::load(&config.daemon.web, options.web_config_file.as_deref())?;
        let listener = server::bind(config.daemon.listen)
            .await
            .map_err(|e| DaemonError::Bind(config.daemon.listen, e))?;
        let addr = listener.local_addr().map_err(|e| DaemonError::Bind(config.daemon.listen, e))?;
        let record = match &options.record {
            Some(path) => Some(
                Recorder::open(path, options.retention).map_err(|e| DaemonError::Record(path.clone(), e))?,
            ),
            None => None,
        };
        let hangups = if options.sighup {
            Some(signal(SignalKind::hangup()).map_err(DaemonError::Signals)?)
        } else {
            None
        };
        let shutdown = Shutdown::new();
        let pool = match WorkerPool::start(&config, false, &shutdown) {
            Ok(pool) => pool,
            Err(e) => {
                // Clients created before the failure stop with the tree.
                shutdown.server().cancel();
                shutdown.drain(GRACE).await;
                return Err(e.into());
            }
        };
        let metrics = Arc::new(Metrics::new(
            config.daemon.vantage.as_deref(),
            &config.daemon.latency_by,
            &config.matrix,
            pool.longest_timeout(),
        )?);
        let correlator = Correlator::new(&config.matrix, &config.correlator)?;
        let (reload, reload_requests) = ReloadHandle::channel();
        let published = Arc::new(Published::default());
        let shared = Arc::new(Shared {
            metrics: metrics.clone(),
            published: published.clone(),
            reload: reload.clone(),
            lifecycle: config.daemon.web.enable_lifecycle,
        });
        let reloaded = metrics.clone();
        web.on_reload(move |ok| reloaded.web_config_reloaded(ok));
        let scheme = web.scheme();
        let server = shutdown.spawn(server::serve(listener, shared, web, shutdown.server().clone()));
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
        let evaluator = Evaluator::new(config, correlator, metrics, published, record);
        let (found, answers) = mpsc::channel(16);
        let run = RunLoop {
            pool,
            evaluator,
            // Every discovered target was just read; one added by a reload is read at once.
            due: source
                .targets
                .iter()
                .filter_map(|t| Some((t.name.clone(), Instant::now() + t.discovery.as_ref()?.every)))
                .collect(),
            source,
            known,
            found,
            answers,
            watch: ConfigWatch::new(options.source, options.watch),
            reload_requests,
            hangups,
            shutdown: shutdown.clone(),
        };
        let task = shutdown.spawn(run.run(server));
        Ok(Daemon { addr, shutdown, reload, task })
    }

    /// The address the HTTP server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Reads the configuration again and applies it (see [`WorkerPool::apply`]); on any error
    /// the daemon keeps running the configuration it had.
    pub async fn reload(&self) -> Result<Applied, ReloadError> {
        self.reload.reload().await
    }

    /// Asks the daemon to stop; [`Daemon::wait`] returns when it has.
    pub fn stop(&self) {
        self.shutdown.request().cancel();
    }

    /// Waits for the daemon to end, after [`Daemon::stop`] or a failure: at most the longest
    /// probe timeout plus [`STOP_MARGIN`] after the stop began.
    pub async fn wait(self) -> Result<(), DaemonError> {
        let Ended { result, deadline } = self.task.await.unwrap_or_else(|_| Ended {
            result: Err(DaemonError::Stuck(Stuck("run loop"))),
            deadline: Instant::now() + GRACE,
        });
        let drained = self.shutdown.drain(deadline.saturating_duration_since(Instant::now())).await;
        result?;
        if !drained {
            return Err(DaemonError::Stuck(Stuck("daemon tasks")));
        }
        Ok(())
    }
}

/// What the run loop owns.
struct RunLoop {
    pool: WorkerPool,
    evaluator: Evaluator,
    /// The configuration as the file has it: discovered targets not expanded.
    source: ValidatedConfig,
    /// The brokers of the discovered targets.
    known: Known,
    /// When each discovered target is read next (far ahead while a read is under way, so reads
    /// never overlap).
    due: BTreeMap<String, Instant>,
    /// Where discovery reads send their answers, and where the run loop takes them.
    found: mpsc::Sender<Answer>,
    answers: mpsc::Receiver<Answer>,
    watch: ConfigWatch,
    reload_requests: mpsc::Receiver<ReloadRequest>,
    /// SIGHUP, when the daemon reloads on it.
    hangups: Option<Signal>,
    shutdown: Shutdown,
}

/// The next SIGHUP; never, without a handler.
async fn hangup(hangups: &mut Option<Signal>) -> Option<()> {
    match hangups {
        Some(h) => h.recv().await,
        None => std::future::pending().await,
    }
}

impl RunLoop {
    /// Loads the configuration again and applies what changed. The new configuration is
    /// entirely validated, its passwords read and its clients created before anything running
    /// changes.
    fn reload(&mut self) -> Result<Applied, ReloadError> {
        let next = self.watch.load()?;
        for w in &next.warnings {
            warn!(warning = %w, "the reloaded configuration is valid, but probably not what was meant");
        }
        let plan = ReloadPlan::new(self.evaluator.config(), next.discovered(self.known.sets()))?;
        let applied = self.evaluator.reload(plan, &mut self.pool)?;
        self.source = next;
        self.known.retain(&self.source);
        self.due.retain(|name, _| self.source.targets.iter().any(|t| &t.name == name));
        Ok(applied)
    }

    /// Starts a read of every discovered target that is due (and not being read), each on its
    /// own tracked task that sends the answer back to the run loop.
    fn discover_due(&mut self) {
        let now = Instant::now();
        for (i, t) in self.source.targets.iter().enumerate() {
            if t.discovery.is_none() {
                continue;
            }
            let due = *self.due.entry(t.name.clone()).or_insert(now);
            if due > now {
                continue;
            }
            // Set again when the answer arrives; a read never overlaps the previous one.
            self.due.insert(t.name.clone(), now + Duration::from_secs(365 * 86_400));
            let (config, found, name) = (self.source.clone(), self.found.clone(), t.name.clone());
            let stop = self.shutdown.request().clone();
            self.shutdown.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    answer = discovery::read(&config, i) => {
                        let _ = found.send((name, answer)).await;
                    }
                }
            });
        }
    }

    /// Takes one discovery answer; applies a changed broker set like a reload.
    fn discovered(&mut self, (name, answer): Answer) {
        if let Some(d) =
            self.source.targets.iter().find(|t| t.name == name).and_then(|t| t.discovery.as_ref())
        {
            self.due.insert(name.clone(), Instant::now() + d.every);
        }
        if !self.known.update(&name, answer) {
            return;
        }
        let next = self.source.discovered(self.known.sets());
        let result = ReloadPlan::new(self.evaluator.config(), next)
            .and_then(|plan| self.evaluator.reload(plan, &mut self.pool));
        match result {
            Ok(applied) => info!(target = %name, %applied, "discovery: brokers changed; cells applied"),
            Err(e) => error!(target = %name, error = %e, "discovery: cannot apply the brokers found"),
        }
    }

    /// Feeds observations to the evaluator, ticks it, applies reloads; on a stop request, stops
    /// in order within the longest probe timeout plus [`STOP_MARGIN`].
    async fn run(mut self, server: tokio::task::JoinHandle<std::io::Result<()>>) -> Ended {
        self.until_stop().await;
        let bound = self.pool.longest_timeout() + STOP_MARGIN;
        let deadline = Instant::now() + bound;
        let result = match tokio::time::timeout_at(deadline, self.stop(server)).await {
            Ok(result) => result,
            Err(_) => {
                error!(within = ?bound, "the stop did not finish in time; leaving what still runs");
                self.shutdown.server().cancel();
                Err(Stuck("the ordered stop").into())
            }
        };
        Ended { result, deadline }
    }

    /// Feeds observations to the evaluator, ticks it, applies reloads, until a stop request.
    async fn until_stop(&mut self) {
        let new_ticker = |tick: Duration| {
            let mut ticker = tokio::time::interval(tick);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            ticker
        };
        let mut tick = self.evaluator.config().correlator.tick;
        let mut ticker = new_ticker(tick);
        let mut watch = new_ticker(self.watch.every().unwrap_or(Duration::from_secs(3600)));
        let mut discover = new_ticker(Duration::from_secs(1));
        let stop = self.shutdown.request().clone();
        loop {
            let reply = tokio::select! {
                _ = stop.cancelled() => break,
                Some(()) = hangup(&mut self.hangups) => {
                    info!("SIGHUP: reloading the configuration");
                    None
                }
                Some(o) = self.pool.next() => {
                    self.evaluator.handle(&o);
                    continue;
                }
                Some(reply) = self.reload_requests.recv() => Some(reply),
                _ = watch.tick(), if self.watch.every().is_some() => {
                    if !self.watch.changed() {
                        continue;
                    }
                    info!("the configuration file changed: reloading");
                    None
                }
                _ = ticker.tick() => {
                    self.evaluator.set_pool(self.pool.in_flight(), self.pool.reconnects());
                    self.evaluator.set_partitions(&self.pool.partitions());
                    self.evaluator.tick();
                    continue;
                }
                _ = discover.tick(), if self.source.discovers() => {
                    self.discover_due();
                    continue;
                }
                Some(answer) = self.answers.recv() => {
                    self.discovered(answer);
                    continue;
                }
            };
            let result = self.reload();
            self.evaluator.reloaded(&result);
            if self.evaluator.config().correlator.tick != tick {
                tick = self.evaluator.config().correlator.tick;
                ticker = new_ticker(tick);
            }
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        }
    }

    /// Stops the workers and clients, takes their last observations, evaluates once more, then
    /// stops the server.
    async fn stop(
        &mut self,
        server: tokio::task::JoinHandle<std::io::Result<()>>,
    ) -> Result<(), DaemonError> {
        self.reload_requests.close();
        while let Ok(reply) = self.reload_requests.try_recv() {
            let _ = reply.send(Err(ReloadError::Stopping));
        }
        let stopped = self.pool.stop().await;
        while let Some(o) = self.pool.try_next() {
            self.evaluator.handle(&o);
        }
        self.evaluator.set_pool(self.pool.in_flight(), self.pool.reconnects());
        self.evaluator.finish();
        self.shutdown.server().cancel();
        let served = server.await.map_err(|_| Stuck("HTTP server"))?;
        stopped?;
        served.map_err(DaemonError::Serve)
    }
}

/// Runs until SIGINT or SIGTERM, then stops in order; a second SIGINT or SIGTERM returns at once
/// with [`DaemonError::Interrupted`]; SIGHUP reloads the configuration.
pub async fn run(config: ValidatedConfig, options: RunOptions) -> Result<(), DaemonError> {
    let mut signals = StopSignals::install().map_err(DaemonError::Signals)?;
    let daemon = Daemon::start(config, RunOptions { sighup: true, ..options }).await?;
    let name = signals.recv().await;
    info!(signal = name, "stopping");
    daemon.stop();
    tokio::select! {
        result = daemon.wait() => result?,
        again = signals.recv() => {
            warn!(signal = again, "second stop signal: exiting now, without finishing the stop");
            return Err(DaemonError::Interrupted(again));
        }
    }
    info!("stopped");
    Ok(())
}

/// Reads the discovered targets' brokers, runs one probe per cell of the configuration they
/// make, and returns that configuration with each cell's result, in matrix order.
pub async fn once_discovered(
    source: &ValidatedConfig,
) -> Result<(ValidatedConfig, Vec<Option<ProbeResult>>), DaemonError> {
    let mut known = Known::default();
    discovery::read_all(source, &mut known).await;
    let config = source.discovered(known.sets());
    let results = once(&config).await?;
    Ok((config, results))
}

/// Runs one probe per cell and returns each cell's result, in matrix order.
pub async fn once(config: &ValidatedConfig) -> Result<Vec<Option<ProbeResult>>, DaemonError> {
    let shutdown = Shutdown::new();
    let mut pool = WorkerPool::start(config, true, &shutdown)?;
    let mut results = vec![None; config.matrix.len()];
    let bound = pool.longest_timeout() + GRACE;
    let all_done = async {
        while let Some(o) = pool.next().await {
            if let Seen::Probe(Event::Done(r)) = o.seen {
                results[o.cell].get_or_insert(r);
                if results.iter().all(Option::is_some) {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(bound, all_done).await;
    pool.stop().await?;
    shutdown.server().cancel();
    if !shutdown.drain(GRACE).await {
        return Err(Stuck("client tasks").into());
    }
    Ok(results)
}
