//! Every metric the daemon exports, named here and nowhere else. Other modules call domain
//! methods ([`Metrics::record`], [`Metrics::set_cell_states`], [`Metrics::set_verdict`]).
//!
//! The series budget: a cell costs 14 series (6 outcome counters, 5 message counters, its
//! state, its round-trip baseline's p50 and p99), plus an error counter per stage and kind it has met. Latency (two histograms and
//! the HDR window quantiles) is kept per latency group, by default one per zone, protocol and
//! broker (`[daemon] latency_by`); listing every dimension there makes the groups the cells,
//! for a small matrix. The matrix's series are plain atomics written straight into the text
//! exposition ([`series`]); the daemon's own metrics are on a `prometheus::Registry`, encoded
//! after them, so every collector registered there appears too. A daemon with a vantage labels
//! every series with it.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use crossprobe_probes::outcome::OUTCOME_NAMES;
use crossprobe_probes::tracker::Event;
use hdrhistogram::Histogram as Hdr;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::matrix::Matrix;
use series::{Layout, Table};

mod series;

/// Window of the HDR quantiles: they describe the last one to two minutes.
const QUANTILE_WINDOW: Duration = Duration::from_secs(60);
/// Quantiles exported from the HDR window.
pub const QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];

/// `crossprobe_build_info`'s labels: version, git commit and compiler, set by `build.rs`.
pub const BUILD: [&str; 3] =
    [env!("CARGO_PKG_VERSION"), env!("CROSSPROBE_REVISION"), env!("CROSSPROBE_RUSTC")];

/// Latencies in microseconds over the current and the previous window.
struct Window {
    current: Hdr<u32>,
    previous: Hdr<u32>,
    since: Instant,
}

/// The registry, the matrix's series and every other metric.
pub struct Metrics {
    registry: Registry,
    layout: Layout,
    /// Replaced as a whole by [`Metrics::reconfigure`].
    table: RwLock<Table>,
    verdict: IntGauge,
    outage: IntGauge,
    scope_down: IntGaugeVec,
    scopes_shown: std::sync::Mutex<Vec<Vec<String>>>,
    scope_degraded: IntGaugeVec,
    degraded_shown: std::sync::Mutex<Vec<Vec<String>>>,
    degraded_widespread: IntGauge,
    pub reload_success: IntGauge,
    pub reload_success_time: Gauge,
    pub reloads: IntCounterVec,
    pub web_config_success: IntGauge,
    pub web_config_reloads: IntCounterVec,
    pub in_flight: IntGauge,
    pub scheduler_lag: Histogram,
    pub reconnects: IntCounterVec,
}

/// Histogram buckets for latencies up to `timeout`: doubling from 0.5 ms, ending at the timeout.
pub fn latency_buckets(timeout: Duration) -> Vec<f64> {
    let top = timeout.as_secs_f64();
    let mut buckets = Vec::new();
    let mut b = 0.0005;
    while b < top {
        buckets.push(b);
        b *= 2.0;
    }
    buckets.push(top);
    buckets
}

impl Metrics {
    /// Registers every metric and creates the series of every cell. With a `vantage`
    /// (`[daemon] vantage`), every series carries the label `vantage="<value>"`: daemons probing
    /// from several zones then export distinguishable series, and Prometheus compares them.
    /// `latency_by` names the dimensions latency groups keep; names the matrix lacks are ignored.
    pub fn new(
        vantage: Option<&str>,
        latency_by: &[String],
        matrix: &Matrix,
        longest_timeout: Duration,
    ) -> prometheus::Result<Self> {
        let constant: Vec<(String, String)> =
            vantage.map(|v| ("vantage".to_owned(), v.to_owned())).into_iter().collect();
        let registry = Registry::new_custom(None, Some(constant.iter().cloned().collect()))?;
        let layout = Layout {
            dimensions: matrix.dimensions().to_vec(),
            constant,
            latency_by: (matrix.dimensions().iter().enumerate())
                .filter(|(_, d)| latency_by.contains(d))
                .map(|(i, _)| i)
                .collect(),
            bounds: latency_buckets(longest_timeout).into_iter().map(|b| (b, b.to_string())).collect(),
        };
        let counter = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let verdict =
            gauge("crossprobe_verdict", "The correlator's verdict: 0 ok, 1 suspect, 2 partial, 3 outage.")?;
        let outage = gauge(
            "crossprobe_outage_confirmed",
            "1 while an outage is confirmed across dimensions: page on this.",
        )?;
        let scope_down = IntGaugeVec::new(
            Opts::new(
                "crossprobe_scope_down",
                "1 for each scope explaining the failures; unfixed dimensions are \"*\".",
            ),
            &matrix.dimensions().iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
        registry.register(Box::new(scope_down.clone()))?;
        let scope_degraded = IntGaugeVec::new(
            Opts::new(
                "crossprobe_scope_degraded",
                "1 for each scope explaining degraded cells (ok round trips far above their baselines); unfixed dimensions are \"*\".",
            ),
            &matrix.dimensions().iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
        registry.register(Box::new(scope_degraded.clone()))?;
        let degraded_widespread = gauge(
            "crossprobe_degraded_widespread",
            "1 while the degraded scopes meet the outage quorum: a brownout across zones and tenants (a flag, not a verdict level).",
        )?;
        let build = IntGaugeVec::new(
            Opts::new(
                "crossprobe_build_info",
                "Always 1; the version, git commit (\"unknown\" outside git) and compiler as labels.",
            ),
            &["version", "revision", "rustc"],
        )?;
        registry.register(Box::new(build.clone()))?;
        build.with_label_values(&BUILD).set(1);
        #[cfg(target_os = "linux")]
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        let reload_success = gauge(
            "crossprobe_config_last_reload_success",
            "1 if the last configuration load (start-up or reload) succeeded, 0 after a refused reload.",
        )?;
        reload_success.set(1);
        let reload_success_time = Gauge::new(
            "crossprobe_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load (start-up or reload).",
        )?;
        registry.register(Box::new(reload_success_time.clone()))?;
        reload_success_time.set(unix_now());
        let reloads = counter(
            "crossprobe_config_reloads_total",
            "Configuration reloads asked for (SIGHUP, POST /-/reload), by result.",
            &["result"],
        )?;
        for r in ["success", "failure"] {
            reloads.with_label_values(&[r]);
        }
        let web_config_success = gauge(
            "crossprobe_web_config_last_reload_success",
            "1 if the web configuration file (--web.config.file) was last read successfully, 0 while a changed file cannot be used and the previous version serves.",
        )?;
        web_config_success.set(1);
        let web_config_reloads = counter(
            "crossprobe_web_config_reloads_total",
            "Reads of a changed web configuration file (--web.config.file), by result.",
            &["result"],
        )?;
        for r in ["success", "failure"] {
            web_config_reloads.with_label_values(&[r]);
        }
        let in_flight = gauge("crossprobe_in_flight_probes", "Probes published and not yet ended.")?;
        let scheduler_lag = Histogram::with_opts(
            HistogramOpts::new(
                "crossprobe_scheduler_lag_seconds",
                "How late probes start against their schedule.",
            )
            .buckets(vec![0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]),
        )?;
        registry.register(Box::new(scheduler_lag.clone()))?;
        let reconnects = counter(
            "crossprobe_client_reconnects_total",
            "Broker client connections re-established.",
            &["protocol"],
        )?;
        for p in ["kafka", "amqp"] {
            reconnects.with_label_values(&[p]);
        }

        let table = RwLock::new(Table::new(&layout, matrix));
        Ok(Metrics {
            registry,
            layout,
            table,
            verdict,
            outage,
            scope_down,
            scopes_shown: Default::default(),
            scope_degraded,
            degraded_shown: Default::default(),
            degraded_widespread,
            reload_success,
            reload_success_time,
            reloads,
            web_config_success,
            web_config_reloads,
            in_flight,
            scheduler_lag,
            reconnects,
        })
    }

    /// The registry the daemon's own metrics are on; a collector registered here is rendered
    /// on `/metrics` after the matrix's series.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Follows a reloaded matrix with the same dimensions: `previous[i]` is the index in the old
    /// matrix of new cell `i`. Kept cells keep their series; new cells get fresh series; the
    /// series of cells (and latency groups) no longer in the matrix are removed, so they vanish
    /// from `/metrics` instead of freezing.
    pub fn reconfigure(&self, matrix: &Matrix, previous: &[Option<usize>]) {
        let mut table = self.table.write().expect("table lock");
        let old = std::mem::replace(&mut *table, Table { cells: Vec::new(), groups: Vec::new() });
        *table = old.reconfigure(&self.layout, matrix, previous);
    }

    /// Counts a configuration load asked for at run time, and its result.
    pub fn reloaded(&self, ok: bool) {
        self.reloads.with_label_values(&[if ok { "success" } else { "failure" }]).inc();
        self.reload_success.set(i64::from(ok));
        if ok {
            self.reload_success_time.set(unix_now());
        }
    }

    /// Counts one read of a changed web configuration file.
    pub fn web_config_reloaded(&self, ok: bool) {
        self.web_config_reloads.with_label_values(&[if ok { "success" } else { "failure" }]).inc();
        self.web_config_success.set(i64::from(ok));
    }

    /// Observes how late a probe started after its scheduled time.
    pub fn started(&self, lag: Duration) {
        self.scheduler_lag.observe(lag.as_secs_f64());
    }

    /// Counts one probe outcome or stray message of cell `cell`.
    pub fn record(&self, cell: usize, event: &Event) {
        use std::sync::atomic::Ordering::Relaxed;
        let table = self.table.read().expect("table lock");
        let s = &table.cells[cell];
        let group = &table.groups[s.group];
        let counter = |i: usize| s.counters[i].fetch_add(1, Relaxed);
        match event {
            Event::Done(r) => {
                let i = OUTCOME_NAMES
                    .iter()
                    .position(|n| *n == r.outcome.name())
                    .expect("outcome names are complete");
                s.outcomes[i].fetch_add(1, Relaxed);
                if let Some(p) = r.publish {
                    group.publish.observe(&self.layout, p);
                }
                if let (false, Some(rt)) = (r.outcome.is_failure(), r.roundtrip) {
                    group.roundtrip.observe(&self.layout, rt);
                    let _ = group
                        .window
                        .lock()
                        .expect("window lock")
                        .current
                        .record(rt.as_micros().max(1) as u64);
                }
                if let Some(kind) = r.outcome.kind() {
                    s.error(usize::from(r.outcome.name() != "connect_failed"), kind);
                }
                0
            }
            Event::Late { .. } => counter(series::LATE),
            Event::Duplicate { .. } => counter(series::DUPLICATES),
            Event::Reorder { .. } => counter(series::REORDERS),
            Event::Foreign => counter(series::FOREIGN),
            Event::Corrupt => counter(series::CORRUPT),
            Event::OtherCell => 0,
        };
    }

    /// The Kafka cells' partition views, in matrix order (`None`: not a Kafka cell, or not
    /// resolved yet).
    pub fn set_partitions(&self, partitions: &[Option<crossprobe_probes::backend::PartitionHealth>]) {
        let table = self.table.read().expect("table lock");
        for (s, h) in table.cells.iter().zip(partitions) {
            if let (Some(p), Some(h)) = (&s.partition, h) {
                p.set(h);
            }
        }
    }

    /// Cell states in matrix order: 0 healthy, 1 failing, -1 unknown.
    pub fn set_cell_states(&self, states: impl IntoIterator<Item = i64>) {
        let table = self.table.read().expect("table lock");
        for (s, v) in table.cells.iter().zip(states) {
            s.state.store(v, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The verdict level (0 ok .. 3 outage) and the explaining scopes, each as one value per
    /// dimension with `*` where the scope does not fix it. Scopes no longer shown are removed.
    pub fn set_verdict(&self, level: i64, outage: bool, scopes: Vec<Vec<String>>) {
        self.verdict.set(level);
        self.outage.set(i64::from(outage));
        show_scopes(&self.scope_down, &self.scopes_shown, scopes);
    }

    /// The degraded scopes, as [`Metrics::set_verdict`]'s scopes, and whether they are
    /// widespread (meet the outage quorum).
    pub fn set_degraded(&self, widespread: bool, scopes: Vec<Vec<String>>) {
        self.degraded_widespread.set(i64::from(widespread));
        show_scopes(&self.scope_degraded, &self.degraded_shown, scopes);
    }

    /// Each cell's round-trip baseline in milliseconds (p50, p99), in matrix order; `None`
    /// while the cell is learning.
    pub fn set_baselines(&self, baselines: impl IntoIterator<Item = Option<(f64, f64)>>) {
        let table = self.table.read().expect("table lock");
        for (s, b) in table.cells.iter().zip(baselines) {
            s.set_baseline(b);
        }
    }

    /// The dimensions, in label order.
    pub fn dimensions(&self) -> &[String] {
        &self.layout.dimensions
    }

    /// The Prometheus text format of every metric: the matrix's series, then the registry's.
    pub fn render(&self) -> String {
        let mut out = String::new();
        {
            let table = self.table.read().expect("table lock");
            // About 130 bytes a sample; one allocation instead of twenty doublings.
            out.reserve(table.cells.len() * 13 * 130 + table.groups.len() * 40 * 100 + 8192);
            table.write(&self.layout, Instant::now(), &mut out);
        }
        let mut own = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut own);
        out.push_str(&String::from_utf8_lossy(&own));
        out
    }

    /// Round-trip quantiles of ok probes over the same window as
    /// `crossprobe_roundtrip_window_seconds`, per distinct combination of the values of `dims`
    /// (dimension names; those the latency groups do not keep are ignored), in order of those
    /// values.
    pub fn roundtrip_window_by(&self, dims: &[&str], quantiles: &[f64]) -> Vec<GroupWindow> {
        let picked: Vec<(usize, &String)> = (self.layout.dimensions.iter().enumerate())
            .filter(|(i, d)| dims.contains(&d.as_str()) && self.layout.latency_by.contains(i))
            .collect();
        let mut groups: std::collections::BTreeMap<Vec<&str>, Hdr<u32>> = Default::default();
        let table = self.table.read().expect("table lock");
        let now = Instant::now();
        // A group's first cell stands for the group's labels; every group has one.
        let mut first = vec![None; table.groups.len()];
        for c in &table.cells {
            first[c.group].get_or_insert(c);
        }
        for (g, c) in table.groups.iter().zip(first) {
            let Some(c) = c else { continue };
            let key: Vec<&str> = picked.iter().map(|&(i, _)| c.labels[i].as_str()).collect();
            let merged = groups.entry(key).or_insert_with(hdr);
            let _ = merged.add(g.window.lock().expect("window lock").merged(now));
        }
        groups
            .into_iter()
            .map(|(key, h)| GroupWindow {
                labels: picked.iter().zip(key).map(|(&(_, d), v)| (d.clone(), v.to_owned())).collect(),
                samples: h.len(),
                seconds: if h.is_empty() {
                    Vec::new()
                } else {
                    quantiles.iter().map(|&q| h.value_at_quantile(q) as f64 / 1e6).collect()
                },
            })
            .collect()
    }
}

impl Window {
    fn new() -> Window {
        Window { current: hdr(), previous: hdr(), since: Instant::now() }
    }

    /// Starts a new window once the current one is [`QUANTILE_WINDOW`] old, keeping the last.
    fn rotate(&mut self, now: Instant) {
        if now.duration_since(self.since) >= QUANTILE_WINDOW {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.reset();
            self.since = now;
        }
    }

    /// The previous and the current window together, rotated first.
    fn merged(&mut self, now: Instant) -> Hdr<u32> {
        self.rotate(now);
        let mut merged = self.previous.clone();
        let _ = merged.add(&self.current);
        merged
    }
}

/// Sets `scopes` to 1 on `gauge` and removes the series of scopes shown before and not now.
fn show_scopes(gauge: &IntGaugeVec, shown: &std::sync::Mutex<Vec<Vec<String>>>, scopes: Vec<Vec<String>>) {
    let mut shown = shown.lock().expect("scopes lock");
    for old in shown.iter().filter(|s| !scopes.contains(s)) {
        let _ = gauge.remove_label_values(&old.iter().map(String::as_str).collect::<Vec<_>>());
    }
    for s in &scopes {
        gauge.with_label_values(&s.iter().map(String::as_str).collect::<Vec<_>>()).set(1);
    }
    *shown = scopes;
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Round trips of one group of cells over the quantile window.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupWindow {
    /// The group's `(dimension, value)` pairs, in dimension order.
    pub labels: Vec<(String, String)>,
    /// Ok probes in the window.
    pub samples: u64,
    /// The requested quantiles in seconds, in request order; empty without samples.
    pub seconds: Vec<f64>,
}

/// 1 µs to 1 s at 2 significant digits, growing on the first longer value (timeouts above 1 s):
/// 1,792 `u32` counts, 7 KiB. Counts of one window (a minute or two of one cell's probes) never
/// come near `u32::MAX`. Bounds of 1 µs to 1 h with `u64` counts took 26 KiB, two per cell.
fn hdr() -> Hdr<u32> {
    let mut h = Hdr::new_with_bounds(1, 1_000_000, 2).expect("static bounds are valid");
    h.auto(true);
    h
}

#[cfg(test)]
mod tests;
