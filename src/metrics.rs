//! Every metric the daemon exports, named here and nowhere else. Other modules call domain
//! methods ([`Metrics::record`], [`Metrics::set_cell_states`], [`Metrics::set_verdict`]).
//!
//! Cell series carry the matrix's dimensions as labels and are all created at start-up, so a
//! cell that never failed shows zeros, not absence. Latency histograms use buckets derived from
//! the longest probe timeout; exact windowed quantiles come from an HDR histogram per cell,
//! refreshed at each scrape. Error kinds are a bounded enum, created on first use. A daemon
//! with a vantage labels every series with it ([`registry`]).

use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use crossprobe_probes::outcome::OUTCOME_NAMES;
use crossprobe_probes::tracker::Event;
use hdrhistogram::Histogram as Hdr;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::matrix::Matrix;
use series::{CellSeries, Families};

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

/// The registry and every metric in it.
pub struct Metrics {
    registry: Registry,
    dimensions: Vec<String>,
    /// In matrix order; replaced as a whole by [`Metrics::reconfigure`].
    cells: RwLock<Vec<CellSeries>>,
    families: Families,
    windows: Mutex<Vec<Window>>,
    verdict: IntGauge,
    outage: IntGauge,
    scope_down: IntGaugeVec,
    scopes_shown: Mutex<Vec<Vec<String>>>,
    pub reload_success: IntGauge,
    pub reload_success_time: Gauge,
    pub reloads: IntCounterVec,
    pub in_flight: IntGauge,
    pub scheduler_lag: Histogram,
    pub reconnects: IntCounterVec,
}

/// The registry every metric of one daemon goes on. With a vantage (`[daemon] vantage`), every
/// series it renders carries the constant label `vantage="<value>"`: daemons probing from
/// several zones then export distinguishable series, and Prometheus compares them.
pub fn registry(vantage: Option<&str>) -> prometheus::Result<Registry> {
    let labels = vantage.map(|v| std::collections::HashMap::from([("vantage".to_owned(), v.to_owned())]));
    Registry::new_custom(None, labels)
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
    /// Registers every metric on `registry` and creates the series of every cell.
    pub fn new(registry: Registry, matrix: &Matrix, longest_timeout: Duration) -> prometheus::Result<Self> {
        let dims: Vec<&str> = matrix.dimensions().iter().map(String::as_str).collect();
        let with = |extra: &[&'static str]| -> Vec<&str> {
            dims.iter().copied().chain(extra.iter().copied()).collect()
        };
        let counter = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let buckets = latency_buckets(longest_timeout);
        let histogram = |name: &str, help: &str| -> prometheus::Result<HistogramVec> {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.clone()), &dims)?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        let probes = counter("crossprobe_probes_total", "Probes ended, by outcome.", &with(&["outcome"]))?;
        let errors = counter(
            "crossprobe_probe_errors_total",
            "Failed publishes and connections, by stage and bounded error kind.",
            &with(&["stage", "kind"]),
        )?;
        let roundtrip = histogram("crossprobe_roundtrip_seconds", "Publish start to consume, of ok probes.")?;
        let publish = histogram("crossprobe_publish_seconds", "Publish start to broker acknowledgement.")?;
        let duplicates =
            counter("crossprobe_duplicates_total", "Probe messages received more than once.", &dims)?;
        let reorders =
            counter("crossprobe_reorders_total", "Probe messages received after a later one.", &dims)?;
        let foreign = counter(
            "crossprobe_foreign_messages_total",
            "Valid probe messages of other daemon instances or earlier runs, dropped.",
            &dims,
        )?;
        let late = counter(
            "crossprobe_late_messages_total",
            "Probe messages back after their probe was counted lost.",
            &dims,
        )?;
        let corrupt = counter(
            "crossprobe_corrupt_messages_total",
            "Messages in probe topics or queues that are not valid probes.",
            &dims,
        )?;
        let quantiles = GaugeVec::new(
            Opts::new(
                "crossprobe_roundtrip_window_seconds",
                "Exact round-trip quantiles of ok probes over the last 1 to 2 minutes.",
            ),
            &with(&["quantile"]),
        )?;
        registry.register(Box::new(quantiles.clone()))?;
        let state = IntGaugeVec::new(
            Opts::new(
                "crossprobe_cell_state",
                "Debounced cell health: 0 healthy, 1 failing, 2 recovering, -1 unknown.",
            ),
            &dims,
        )?;
        registry.register(Box::new(state.clone()))?;
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
            &dims,
        )?;
        registry.register(Box::new(scope_down.clone()))?;
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

        let families = Families {
            probes,
            errors,
            roundtrip,
            publish,
            duplicates,
            reorders,
            foreign,
            late,
            corrupt,
            quantiles,
            state,
        };
        let cells = matrix.cells().iter().map(|c| families.create(&c.labels)).collect();
        let windows = matrix.cells().iter().map(|_| Window::new()).collect();
        Ok(Metrics {
            registry,
            dimensions: matrix.dimensions().to_vec(),
            cells: RwLock::new(cells),
            families,
            windows: Mutex::new(windows),
            verdict,
            outage,
            scope_down,
            scopes_shown: Mutex::new(Vec::new()),
            reload_success,
            reload_success_time,
            reloads,
            in_flight,
            scheduler_lag,
            reconnects,
        })
    }

    /// Follows a reloaded matrix with the same dimensions: `previous[i]` is the index in the old
    /// matrix of new cell `i`. Kept cells keep their series (counters, histograms, latency
    /// windows); new cells get fresh series; the series of cells no longer in the matrix are
    /// removed, so they vanish from `/metrics` instead of freezing.
    pub fn reconfigure(&self, matrix: &Matrix, previous: &[Option<usize>]) {
        let mut cells = self.cells.write().expect("cells lock");
        let mut windows = self.windows.lock().expect("windows lock");
        let mut old: Vec<Option<(CellSeries, Window)>> =
            std::mem::take(&mut *cells).into_iter().zip(windows.drain(..)).map(Some).collect();
        for (cell, p) in matrix.cells().iter().zip(previous) {
            let (series, window) = match p.and_then(|p| old.get_mut(p)).and_then(Option::take) {
                Some(kept) => kept,
                None => (self.families.create(&cell.labels), Window::new()),
            };
            cells.push(series);
            windows.push(window);
        }
        for (series, _) in old.into_iter().flatten() {
            self.families.remove(&series.labels);
        }
    }

    /// Counts a configuration load asked for at run time, and its result.
    pub fn reloaded(&self, ok: bool) {
        self.reloads.with_label_values(&[if ok { "success" } else { "failure" }]).inc();
        self.reload_success.set(i64::from(ok));
        if ok {
            self.reload_success_time.set(unix_now());
        }
    }

    /// Observes how late a probe started after its scheduled time.
    pub fn started(&self, lag: Duration) {
        self.scheduler_lag.observe(lag.as_secs_f64());
    }

    /// Counts one probe outcome or stray message of cell `cell`.
    pub fn record(&self, cell: usize, event: &Event) {
        let cells = self.cells.read().expect("cells lock");
        let s = &cells[cell];
        match event {
            Event::Done(r) => {
                let i = OUTCOME_NAMES
                    .iter()
                    .position(|n| *n == r.outcome.name())
                    .expect("outcome names are complete");
                s.outcomes[i].inc();
                if let Some(p) = r.publish {
                    s.publish.observe(p.as_secs_f64());
                }
                if let (false, Some(rt)) = (r.outcome.is_failure(), r.roundtrip) {
                    s.roundtrip.observe(rt.as_secs_f64());
                    let mut windows = self.windows.lock().expect("windows lock");
                    let _ = windows[cell].current.record(rt.as_micros().max(1) as u64);
                }
                if let (Some(kind), stage) = (r.outcome.kind(), r.outcome.name()) {
                    let stage = if stage == "connect_failed" { "connect" } else { "publish" };
                    let mut labels: Vec<&str> = s.labels.iter().map(String::as_str).collect();
                    labels.extend([stage, kind.as_str()]);
                    self.families.errors.with_label_values(&labels).inc();
                }
            }
            Event::Late { .. } => s.late.inc(),
            Event::Duplicate { .. } => s.duplicates.inc(),
            Event::Reorder { .. } => s.reorders.inc(),
            Event::Foreign => s.foreign.inc(),
            Event::Corrupt => s.corrupt.inc(),
            Event::OtherCell => {}
        }
    }

    /// Cell states in matrix order: 0 healthy, 1 failing, -1 unknown.
    pub fn set_cell_states(&self, states: impl IntoIterator<Item = i64>) {
        for (s, v) in self.cells.read().expect("cells lock").iter().zip(states) {
            s.state.set(v);
        }
    }

    /// The verdict level (0 ok .. 3 outage) and the explaining scopes, each as one value per
    /// dimension with `*` where the scope does not fix it. Scopes no longer shown are removed.
    pub fn set_verdict(&self, level: i64, outage: bool, scopes: Vec<Vec<String>>) {
        self.verdict.set(level);
        self.outage.set(i64::from(outage));
        let mut shown = self.scopes_shown.lock().expect("scopes lock");
        for old in shown.iter().filter(|s| !scopes.contains(s)) {
            let _ = self.scope_down.remove_label_values(&old.iter().map(String::as_str).collect::<Vec<_>>());
        }
        for s in &scopes {
            self.scope_down.with_label_values(&s.iter().map(String::as_str).collect::<Vec<_>>()).set(1);
        }
        *shown = scopes;
    }

    /// The dimensions, in label order.
    pub fn dimensions(&self) -> &[String] {
        &self.dimensions
    }

    /// The Prometheus text format of every metric, with the HDR quantiles refreshed.
    pub fn render(&self) -> String {
        self.refresh_quantiles();
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Round-trip quantiles of ok probes over the same window as
    /// `crossprobe_roundtrip_window_seconds`, per distinct combination of the values of `dims`
    /// (dimension names; those the matrix lacks are ignored), in order of those values.
    pub fn roundtrip_window_by(&self, dims: &[&str], quantiles: &[f64]) -> Vec<GroupWindow> {
        let picked: Vec<(usize, &String)> =
            self.dimensions.iter().enumerate().filter(|(_, d)| dims.contains(&d.as_str())).collect();
        let mut groups: std::collections::BTreeMap<Vec<&str>, Hdr<u32>> = Default::default();
        let cells = self.cells.read().expect("cells lock");
        let mut windows = self.windows.lock().expect("windows lock");
        let now = Instant::now();
        for (w, s) in windows.iter_mut().zip(cells.iter()) {
            w.rotate(now);
            let key: Vec<&str> = picked.iter().map(|&(i, _)| s.labels[i].as_str()).collect();
            let merged = groups.entry(key).or_insert_with(hdr);
            let _ = merged.add(&w.previous);
            let _ = merged.add(&w.current);
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

    fn refresh_quantiles(&self) {
        // Cells before windows, as in `record` and `reconfigure`: the other order can deadlock
        // a scrape against a reload.
        let cells = self.cells.read().expect("cells lock");
        let mut windows = self.windows.lock().expect("windows lock");
        let now = Instant::now();
        for (w, s) in windows.iter_mut().zip(cells.iter()) {
            w.rotate(now);
            let mut merged = w.previous.clone();
            let _ = merged.add(&w.current);
            for q in QUANTILES {
                let mut labels: Vec<&str> = s.labels.iter().map(String::as_str).collect();
                let q_label = q.to_string();
                labels.push(&q_label);
                let v = if merged.is_empty() { f64::NAN } else { merged.value_at_quantile(q) as f64 / 1e6 };
                self.families.quantiles.with_label_values(&labels).set(v);
            }
        }
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
