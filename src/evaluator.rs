//! The evaluator: the single owner of the correlator. It takes every observation of the
//! workers, counts it in the metrics, feeds outcomes to the correlator, evaluates once per tick,
//! and publishes the verdict, cell states and readiness ([`crate::published`]). It also writes
//! `--record` files and logs outcomes without flooding.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossprobe_probes::tracker::Event;
use tracing::{debug, error, info, warn};

use crate::config::{ConfigError, LoadError, ProbeSettings, ValidatedConfig, MAX_LISTED_PROBLEMS};
use crate::correlator::{CellLatency, CellState, Correlator, Labels, LatencyState};
use crate::metrics::Metrics;
use crate::offline::recording::Recorder;
use crate::offline::OutcomeRecord;
use crate::published::{CellView, Published, VerdictDocument};
use crate::reload::{Applied, ReloadError, ReloadPlan};
use crate::workers::{Observation, Seen, WorkerPool, SETUP_BOUND};

/// Everything the evaluator owns.
pub struct Evaluator {
    config: ValidatedConfig,
    correlator: Correlator,
    metrics: Arc<Metrics>,
    published: Arc<Published>,
    record: Option<Recorder>,
    started: Instant,
    /// The wall clock at `started`: records carry it plus their monotonic offset.
    started_wall: SystemTime,
    reported: Vec<bool>,
    /// When each cell's last outcome was observed; `None` before its first, and once it went
    /// stale.
    last_outcome: Vec<Option<Instant>>,
    connected: Vec<bool>,
    log: OutcomeLog,
    last_level: Option<&'static str>,
    reconnects: (u64, u64),
}

impl Evaluator {
    /// Takes over the metrics and the published state, and publishes a first verdict.
    pub fn new(
        config: ValidatedConfig,
        correlator: Correlator,
        metrics: Arc<Metrics>,
        published: Arc<Published>,
        record: Option<Recorder>,
    ) -> Self {
        let cells = config.matrix.len();
        let mut evaluator = Evaluator {
            config,
            correlator,
            metrics,
            published,
            record,
            started: Instant::now(),
            started_wall: SystemTime::now(),
            reported: vec![false; cells],
            last_outcome: vec![None; cells],
            connected: vec![false; cells],
            log: OutcomeLog::new(cells),
            last_level: None,
            reconnects: (0, 0),
        };
        evaluator.publish();
        evaluator
    }

    /// The configuration in use.
    pub fn config(&self) -> &ValidatedConfig {
        &self.config
    }

    /// Switches to `plan`'s configuration: builds its correlator with the running one's state
    /// carried over, has the worker pool apply the plan, then takes the new configuration, its
    /// correlator and its series. Nothing changes unless every step can be done: on error the
    /// running configuration stays.
    pub fn reload(&mut self, plan: ReloadPlan, pool: &mut WorkerPool) -> Result<Applied, ReloadError> {
        let correlator =
            self.correlator.reconfigured(&plan.config.matrix, &plan.config.correlator, &plan.carried)?;
        let applied = pool.apply(&plan)?;
        let ReloadPlan { config, carried, .. } = plan;
        let previous = &carried;
        self.metrics.reconfigure(&config.matrix, previous);
        let carry =
            |old: &[bool]| -> Vec<bool> { previous.iter().map(|p| p.is_some_and(|p| old[p])).collect() };
        self.reported = carry(&self.reported);
        self.connected = carry(&self.connected);
        self.log.last = previous.iter().map(|p| p.and_then(|p| self.log.last[p])).collect();
        self.last_outcome = previous.iter().map(|p| p.and_then(|p| self.last_outcome[p])).collect();
        self.config = config;
        self.correlator = correlator;
        self.publish();
        Ok(applied)
    }

    /// Counts and logs the result of a reload: every problem of a refused configuration is
    /// logged on its own line (the first [`MAX_LISTED_PROBLEMS`], as `check` prints them).
    pub fn reloaded(&mut self, result: &Result<Applied, ReloadError>) {
        self.metrics.reloaded(result.is_ok());
        match result {
            Ok(applied) => info!(
                cells = self.config.matrix.len(),
                added = applied.added,
                removed = applied.removed,
                restarted = applied.restarted,
                unchanged = applied.unchanged,
                "configuration reloaded"
            ),
            Err(ReloadError::Invalid(LoadError::Config(ConfigError::Invalid { file, problems }))) => {
                for p in problems.iter().take(MAX_LISTED_PROBLEMS) {
                    error!(problem = %p.render(file), "configuration reload refused");
                }
                error!(
                    problems = problems.len(),
                    "configuration reload refused; the running configuration stays"
                );
            }
            Err(e) => error!(error = %e, "configuration reload refused; the running configuration stays"),
        }
    }

    /// Takes one observation of a worker.
    pub fn handle(&mut self, o: &Observation) {
        let event = match o.seen {
            Seen::Started { lag } => return self.metrics.started(lag),
            Seen::Probe(event) => event,
        };
        self.metrics.record(o.cell, &event);
        self.log.record(&self.config, o.cell, &event);
        let Event::Done(result) = event else { return };
        if let Err(e) = self.correlator.record_rtt(o.cell, &result.outcome, result.roundtrip) {
            warn!(error = %e, "correlator rejected an outcome");
        }
        self.reported[o.cell] = true;
        self.last_outcome[o.cell] = Some(o.at);
        if !matches!(result.outcome, crossprobe_probes::Outcome::ConnectFailed(_)) {
            self.connected[o.cell] = true;
        }
        if let Some(w) = &mut self.record {
            let offset = o.at.saturating_duration_since(self.started);
            let cell = &self.config.matrix.cells()[o.cell];
            let rtt_ms = result.roundtrip.map(|d| d.as_secs_f64() * 1000.0);
            let line = OutcomeRecord::new(
                offset.as_millis() as u64,
                &self.config.matrix,
                cell,
                &result.outcome,
                rtt_ms,
            )
            .at_time(self.started_wall + offset);
            if let Err(e) = w.write(&line) {
                warn!(error = %e, "cannot write the record file; recording stops");
                self.record = None;
            }
        }
    }

    /// Brings the worker pool's self-metrics up to date: probes in flight, and the reconnect
    /// counters up to the clients' totals (Kafka, AMQP).
    pub fn set_pool(&mut self, in_flight: i64, (kafka, amqp): (u64, u64)) {
        self.metrics.in_flight.set(in_flight);
        let counter = &self.metrics.reconnects;
        counter.with_label_values(&["kafka"]).inc_by(kafka.saturating_sub(self.reconnects.0));
        counter.with_label_values(&["amqp"]).inc_by(amqp.saturating_sub(self.reconnects.1));
        self.reconnects = (kafka, amqp);
    }

    /// The Kafka cells' partition views (leadership moves, replicas), in matrix order.
    pub fn set_partitions(&self, partitions: &[Option<crossprobe_probes::backend::PartitionHealth>]) {
        self.metrics.set_partitions(partitions);
    }

    /// One evaluation tick: stale cells forgotten, then verdict, cell states and readiness
    /// published.
    pub fn tick(&mut self) {
        self.tick_at(Instant::now());
    }

    fn tick_at(&mut self, now: Instant) {
        self.forget_stale(now);
        self.correlator.tick();
        self.publish();
        if let Some(w) = &mut self.record {
            if let Err(e) = w.flush() {
                warn!(error = %e, "cannot write the record file; recording stops");
                self.record = None;
            }
        }
    }

    /// A cell without an outcome for [`stale_after`] is unknown again, and says so once in the
    /// log: its worker or client is stuck, and its last state must not stand for the present.
    fn forget_stale(&mut self, now: Instant) {
        for (i, last) in self.last_outcome.iter_mut().enumerate() {
            let Some(at) = *last else { continue };
            let cell = &self.config.matrix.cells()[i];
            let silent = now.saturating_duration_since(at);
            if silent > stale_after(self.config.targets[cell.target].probe) {
                self.correlator.forget(i);
                *last = None;
                warn!(cell = %cell.id, silent = ?silent, "no probe outcome for too long: the cell's state is unknown until it reports again");
            }
        }
    }

    /// Flushes the record file; called once the workers stopped and their reports are in.
    pub fn finish(&mut self) {
        self.tick();
        if let Some(w) = &mut self.record {
            if let Err(e) = w.finish() {
                warn!(error = %e, "cannot flush the record file");
            }
        }
        self.log.summary();
    }

    fn publish(&mut self) {
        let m = &self.config.matrix;
        let verdict = self.correlator.verdict();
        let states: Vec<CellState> = self.correlator.cell_states().collect();
        self.metrics.set_cell_states(states.iter().map(|s| s.gauge()));
        let scopes: Vec<Vec<String>> =
            verdict.scope_labels().iter().map(|fixed| scope_values(m.dimensions(), fixed)).collect();
        let level = verdict.level;
        self.metrics.set_verdict(level.gauge(), level == crate::correlator::Level::Outage, scopes);
        let degraded: Vec<Vec<String>> =
            verdict.degraded.scopes.iter().map(|s| scope_values(m.dimensions(), &s.labels)).collect();
        self.metrics.set_degraded(verdict.degraded.widespread, degraded);
        let latency: Vec<Option<CellLatency>> = match self.correlator.brownouts() {
            Some(b) => b.cells().map(Some).collect(),
            None => vec![None; m.len()],
        };
        self.metrics.set_baselines(latency.iter().map(|l| {
            l.filter(|l| l.latency != LatencyState::Learning)
                .and_then(|l| l.baseline_p50_ms.zip(l.baseline_p99_ms))
        }));
        if self.last_level != Some(level.as_str()) {
            let scopes: Vec<String> = verdict.scope_labels().iter().map(|l| l.describe()).collect();
            info!(verdict = level.as_str(), rule = %verdict.rule, scopes = %scopes.join(" "), "verdict changed");
            self.last_level = Some(level.as_str());
        }
        let unknown = states.iter().filter(|s| **s == CellState::Unknown).count();
        let explanation = crate::published::words::explain(verdict, unknown);
        self.published.observe(SystemTime::now(), verdict, &explanation);
        let cells = m
            .cells()
            .iter()
            .zip(&states)
            .zip(latency)
            .map(|((c, &state), latency)| CellView {
                id: c.id.as_str().to_owned(),
                labels: m.labels(c).map(|(d, v)| (d.to_owned(), v.to_owned())).collect(),
                state,
                latency,
            })
            .collect();
        self.published.set_verdict(VerdictDocument {
            verdict: level,
            explanation,
            scopes: verdict.scope_labels().into_iter().cloned().collect(),
            evidence: verdict.clone(),
            cells,
        });
        // Readiness is about start-up: once every cell has reported, cells a reload adds later
        // do not take the daemon out of its Service (they show as unknown meanwhile).
        if self.published.is_ready() {
            return;
        }
        let silent = self.reported.iter().filter(|r| !**r).count();
        let unconnected = self.connected.iter().filter(|c| !**c).count();
        let not_ready = match (silent, unconnected) {
            (0, 0) => None,
            (0, n) => Some(format!("{n} cells have not connected yet")),
            (n, _) => Some(format!("{n} cells have no outcome yet")),
        };
        self.published.set_not_ready(not_ready);
    }
}

/// A scope's labels as one value per dimension, `*` where it does not fix it: the label values
/// of `crossprobe_scope_down` and `crossprobe_scope_degraded`.
fn scope_values(dimensions: &[String], fixed: &Labels) -> Vec<String> {
    dimensions
        .iter()
        .map(|d| fixed.0.iter().find(|(k, _)| k == d).map_or("*".to_owned(), |(_, v)| v.clone()))
        .collect()
}

/// How long a cell may go without an outcome before it counts as unknown: three intervals, a
/// timeout, and the bound of a cell's set-up (a worker restarted by a reload prepares its cell
/// before its first probe). Every probe ends by its timeout, so only a stuck worker or client
/// stays silent that long.
pub fn stale_after(probe: ProbeSettings) -> Duration {
    probe.interval * 3 + probe.timeout + SETUP_BOUND.max(probe.timeout)
}

/// Logs outcomes without flooding: a failure when a cell's outcome changes, recovery, and a
/// summary of counts every minute. Metrics carry the full detail.
struct OutcomeLog {
    last: Vec<Option<&'static str>>,
    counts: BTreeMap<&'static str, u64>,
    since: Instant,
}

impl OutcomeLog {
    fn new(cells: usize) -> Self {
        OutcomeLog { last: vec![None; cells], counts: BTreeMap::new(), since: Instant::now() }
    }

    fn record(&mut self, config: &ValidatedConfig, index: usize, event: &Event) {
        let cell = &config.matrix.cells()[index];
        let name = match *event {
            Event::Done(r) => {
                let name = r.outcome.name();
                let previous = self.last[index].replace(name);
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
        if self.counts.is_empty() {
            return;
        }
        let counts: Vec<String> = self.counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        info!(counts = %counts.join(" "), "probe outcomes in the last period");
        self.counts.clear();
        self.since = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crossprobe_probes::tracker::ProbeResult;
    use crossprobe_probes::Outcome;

    use super::*;
    use crate::metrics::Metrics;

    fn evaluator() -> Evaluator {
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/local.toml"))
                .unwrap();
        let config = ValidatedConfig::parse(&text, Path::new("local.toml")).unwrap();
        let metrics =
            Metrics::new(None, &config.daemon.latency_by, &config.matrix, Duration::from_millis(500))
                .unwrap();
        let correlator = Correlator::new(&config.matrix, &config.correlator).unwrap();
        Evaluator::new(config, correlator, Arc::new(metrics), Arc::default(), None)
    }

    fn ok(cell: usize, at: Instant) -> Observation {
        let r = ProbeResult { seq: 1, outcome: Outcome::Ok, publish: None, roundtrip: None };
        Observation { cell, at, seen: Seen::Probe(Event::Done(r)) }
    }

    #[test]
    fn a_cell_that_stops_reporting_becomes_unknown_and_recovers_with_its_next_outcome() {
        let mut r = evaluator();
        let t0 = Instant::now();
        let cells = r.config().matrix.len();
        for cell in 0..cells {
            r.handle(&ok(cell, t0));
        }
        r.tick_at(t0 + Duration::from_secs(1));
        assert!(r.correlator.cell_states().all(|s| s == CellState::Healthy));

        // local.toml probes every 1 s with a 500 ms timeout: stale after 5.5 s of silence.
        // Cell 0 goes on reporting; the others fall silent.
        let limit = stale_after(r.config().targets[0].probe);
        assert_eq!(limit, Duration::from_millis(5500));
        r.handle(&ok(0, t0 + Duration::from_secs(5)));
        r.tick_at(t0 + limit);
        assert!(r.correlator.cell_states().all(|s| s == CellState::Healthy), "not stale at the limit");
        r.tick_at(t0 + limit + Duration::from_millis(1));
        let states: Vec<CellState> = r.correlator.cell_states().collect();
        assert_eq!(states[0], CellState::Healthy);
        assert!(states[1..].iter().all(|s| *s == CellState::Unknown), "{states:?}");
        let text = r.metrics.render();
        assert_eq!(
            text.lines().filter(|l| l.starts_with("crossprobe_cell_state{") && l.ends_with(" -1")).count(),
            cells - 1
        );

        r.handle(&ok(1, t0 + Duration::from_secs(7)));
        r.tick_at(t0 + Duration::from_secs(7));
        assert_eq!(r.correlator.cell_states().nth(1), Some(CellState::Healthy), "back with its next outcome");
    }
}
