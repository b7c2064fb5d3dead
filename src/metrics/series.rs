//! The series of the matrix: per cell, outcome counters and state; per latency group, the
//! latency histograms and window quantiles. They are plain atomics, written straight into the
//! text exposition at each scrape: no copy through the `prometheus` crate's `gather`, which
//! turns every series into a protobuf message first (0.8 to 1 s at 10,000 cells).
//!
//! Label sets are rendered once, when a cell or group is created: a scrape only appends them.
//! Labels come in name order (constant labels included), then the family's own (`outcome`,
//! `stage`, `kind`, `le`, `quantile`); the text format does not ask for any order.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossprobe_probes::outcome::{ErrorKind, OUTCOME_NAMES};

use super::{Window, QUANTILES};
use crate::matrix::Matrix;

/// Per-cell counters besides the outcomes, in this order in [`CellSeries::counters`].
const COUNTERS: [(&str, &str); 5] = [
    ("crossprobe_duplicates_total", "Probe messages received more than once."),
    ("crossprobe_reorders_total", "Probe messages received after a later one."),
    (
        "crossprobe_foreign_messages_total",
        "Valid probe messages of other daemon instances or earlier runs, dropped.",
    ),
    ("crossprobe_late_messages_total", "Probe messages back after their probe was counted lost."),
    ("crossprobe_corrupt_messages_total", "Messages in probe topics or queues that are not valid probes."),
];
pub(super) const DUPLICATES: usize = 0;
pub(super) const REORDERS: usize = 1;
pub(super) const FOREIGN: usize = 2;
pub(super) const LATE: usize = 3;
pub(super) const CORRUPT: usize = 4;

/// Quantiles of `crossprobe_roundtrip_baseline_seconds`, in [`CellSeries::set_baseline`] order.
const BASELINE_QUANTILES: [&str; 2] = ["0.5", "0.99"];

/// Error stages; with [`ErrorKind::ALL`] they index [`CellSeries::errors`].
pub(super) const STAGES: [&str; 2] = ["connect", "publish"];

/// How the series are labelled: the matrix's dimensions, the constant labels (the vantage),
/// and which dimensions a latency group keeps.
pub(super) struct Layout {
    pub dimensions: Vec<String>,
    pub constant: Vec<(String, String)>,
    /// Indices into `dimensions`, in dimension order.
    pub latency_by: Vec<usize>,
    /// Upper bounds of the latency buckets, in seconds, and their `le` text.
    pub bounds: Vec<(f64, String)>,
}

impl Layout {
    /// `name="value",...` in name order, values escaped; empty without labels.
    fn render(&self, pairs: impl IntoIterator<Item = (String, String)>) -> Box<str> {
        let mut all: Vec<(String, String)> = pairs.into_iter().chain(self.constant.iter().cloned()).collect();
        all.sort();
        let mut out = String::new();
        for (i, (k, v)) in all.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(out, "{sep}{k}=\"{}\"", escape(v));
        }
        out.into()
    }

    fn group_key(&self, labels: &[String]) -> Vec<String> {
        self.latency_by.iter().map(|&i| labels[i].clone()).collect()
    }
}

/// One cell's series. About 300 bytes plus its labels.
pub(super) struct CellSeries {
    pub labels: Vec<String>,
    rendered: Box<str>,
    /// Index of the cell's latency group in [`Table::groups`].
    pub group: usize,
    pub outcomes: [AtomicU64; OUTCOME_NAMES.len()],
    pub counters: [AtomicU64; COUNTERS.len()],
    /// Indexed by stage, then [`ErrorKind::ALL`]; a zero is not exported (created on first use).
    errors: [AtomicU64; STAGES.len() * ErrorKind::ALL.len()],
    pub state: AtomicI64,
    /// Round-trip baseline p50 and p99 in seconds, as `f64` bits; NaN while learning.
    baseline: [AtomicU64; 2],
    /// Kafka cells only: their partition's series.
    pub partition: Option<PartitionSeries>,
}

/// A Kafka cell's partition: leadership moves counted (across worker restarts: the worker's own
/// count is followed by its increases) and the replicas at the last metadata read (-1 unknown).
#[derive(Default)]
pub(super) struct PartitionSeries {
    pub leader_changes: AtomicU64,
    /// The running worker's count when last read.
    pub seen: AtomicU64,
    pub replicas: AtomicI64,
    pub in_sync: AtomicI64,
}

impl PartitionSeries {
    /// Takes the running worker's view: its count of moves (restarting at zero with a new
    /// worker) and the replicas.
    pub fn set(&self, h: &crossprobe_probes::backend::PartitionHealth) {
        let seen = self.seen.swap(h.leader_changes, Relaxed);
        let new = if h.leader_changes >= seen { h.leader_changes - seen } else { h.leader_changes };
        self.leader_changes.fetch_add(new, Relaxed);
        self.replicas.store(h.replicas as i64, Relaxed);
        self.in_sync.store(h.in_sync as i64, Relaxed);
    }
}

impl CellSeries {
    fn new(layout: &Layout, labels: &[String]) -> CellSeries {
        let kafka =
            layout.dimensions.iter().position(|d| d == "protocol").is_some_and(|i| labels[i] == "kafka");
        CellSeries {
            partition: kafka.then(|| PartitionSeries {
                replicas: AtomicI64::new(-1),
                in_sync: AtomicI64::new(-1),
                ..PartitionSeries::default()
            }),
            labels: labels.to_vec(),
            rendered: layout.render(layout.dimensions.iter().cloned().zip(labels.iter().cloned())),
            group: 0,
            outcomes: Default::default(),
            counters: Default::default(),
            errors: Default::default(),
            state: AtomicI64::new(-1),
            baseline: [AtomicU64::new(f64::NAN.to_bits()), AtomicU64::new(f64::NAN.to_bits())],
        }
    }

    /// The baseline's p50 and p99 in milliseconds; `None` while learning.
    pub fn set_baseline(&self, ms: Option<(f64, f64)>) {
        let (p50, p99) = ms.map_or((f64::NAN, f64::NAN), |(a, b)| (a / 1000.0, b / 1000.0));
        self.baseline[0].store(p50.to_bits(), Relaxed);
        self.baseline[1].store(p99.to_bits(), Relaxed);
    }

    pub fn error(&self, stage: usize, kind: ErrorKind) {
        let k = ErrorKind::ALL.iter().position(|&k| k == kind).expect("ErrorKind::ALL is complete");
        self.errors[stage * ErrorKind::ALL.len() + k].fetch_add(1, Relaxed);
    }
}

/// A latency histogram of atomics: per-bucket counts (the last one is `+Inf`) and the sum in
/// nanoseconds, so observing is two atomic adds and no float compare-and-swap.
pub(super) struct Latency {
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Latency {
    fn new(bounds: usize) -> Latency {
        Latency { buckets: (0..=bounds).map(|_| AtomicU64::new(0)).collect(), sum_nanos: AtomicU64::new(0) }
    }

    pub fn observe(&self, layout: &Layout, d: Duration) {
        let s = d.as_secs_f64();
        let i = layout.bounds.iter().position(|(b, _)| s <= *b).unwrap_or(layout.bounds.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(d.as_nanos().min(u128::from(u64::MAX)) as u64, Relaxed);
    }
}

/// The latency series of one group of cells (by default one zone, protocol and broker).
pub(super) struct GroupSeries {
    key: Vec<String>,
    rendered: Box<str>,
    pub roundtrip: Latency,
    pub publish: Latency,
    pub window: Mutex<Window>,
}

/// Every cell's and group's series, in matrix order; replaced as a whole on a reload.
pub(super) struct Table {
    pub cells: Vec<CellSeries>,
    pub groups: Vec<GroupSeries>,
}

impl Table {
    pub fn new(layout: &Layout, matrix: &Matrix) -> Table {
        let cells = matrix.cells().iter().map(|c| CellSeries::new(layout, &c.labels)).collect();
        Table::grouped(layout, cells, Vec::new())
    }

    /// The table of a reloaded matrix: `previous[i]` is the index in this table of new cell `i`.
    /// Kept cells and groups keep their counts; the others start at zero; the rest vanish.
    pub fn reconfigure(self, layout: &Layout, matrix: &Matrix, previous: &[Option<usize>]) -> Table {
        let mut old: Vec<Option<CellSeries>> = self.cells.into_iter().map(Some).collect();
        let cells = matrix
            .cells()
            .iter()
            .zip(previous)
            .map(|(c, p)| {
                p.and_then(|p| old.get_mut(p))
                    .and_then(Option::take)
                    .unwrap_or_else(|| CellSeries::new(layout, &c.labels))
            })
            .collect();
        Table::grouped(layout, cells, self.groups)
    }

    /// Assigns each cell its group, reusing `old` groups of the same key.
    fn grouped(layout: &Layout, mut cells: Vec<CellSeries>, old: Vec<GroupSeries>) -> Table {
        let mut old: HashMap<Vec<String>, GroupSeries> =
            old.into_iter().map(|g| (g.key.clone(), g)).collect();
        let mut index: HashMap<Vec<String>, usize> = HashMap::new();
        let mut groups = Vec::new();
        for cell in &mut cells {
            let key = layout.group_key(&cell.labels);
            cell.group = *index.entry(key.clone()).or_insert_with(|| {
                groups.push(old.remove(&key).unwrap_or_else(|| GroupSeries {
                    rendered: layout.render(
                        layout.latency_by.iter().map(|&i| layout.dimensions[i].clone()).zip(key.clone()),
                    ),
                    key,
                    roundtrip: Latency::new(layout.bounds.len()),
                    publish: Latency::new(layout.bounds.len()),
                    window: Mutex::new(Window::new()),
                }));
                groups.len() - 1
            });
        }
        Table { cells, groups }
    }

    /// Appends the text exposition of every series of the table.
    pub fn write(&self, layout: &Layout, now: Instant, out: &mut String) {
        family(out, "crossprobe_probes_total", "Probes ended, by outcome.", "counter");
        for c in &self.cells {
            for (name, n) in OUTCOME_NAMES.iter().zip(&c.outcomes) {
                sample(out, "crossprobe_probes_total", &c.rendered, &[("outcome", name)], n.load(Relaxed));
            }
        }
        family(
            out,
            "crossprobe_probe_errors_total",
            "Failed publishes and connections, by stage and bounded error kind.",
            "counter",
        );
        for c in &self.cells {
            for (i, n) in c.errors.iter().enumerate() {
                let n = n.load(Relaxed);
                if n > 0 {
                    let stage = STAGES[i / ErrorKind::ALL.len()];
                    let kind = ErrorKind::ALL[i % ErrorKind::ALL.len()].as_str();
                    sample(
                        out,
                        "crossprobe_probe_errors_total",
                        &c.rendered,
                        &[("stage", stage), ("kind", kind)],
                        n,
                    );
                }
            }
        }
        for (i, (name, help)) in COUNTERS.iter().enumerate() {
            family(out, name, help, "counter");
            for c in &self.cells {
                sample(out, name, &c.rendered, &[], c.counters[i].load(Relaxed));
            }
        }
        family(
            out,
            "crossprobe_cell_state",
            "Debounced cell health: 0 healthy, 1 failing, 2 recovering, -1 unknown.",
            "gauge",
        );
        for c in &self.cells {
            sample(out, "crossprobe_cell_state", &c.rendered, &[], c.state.load(Relaxed));
        }
        self.write_partitions(out);
        family(
            out,
            "crossprobe_roundtrip_baseline_seconds",
            "Learned round-trip baseline of each cell's ok probes (decaying quantiles of log-latency); NaN while learning.",
            "gauge",
        );
        for c in &self.cells {
            for (q, v) in BASELINE_QUANTILES.iter().zip(&c.baseline) {
                let v = f64::from_bits(v.load(Relaxed));
                sample(out, "crossprobe_roundtrip_baseline_seconds", &c.rendered, &[("quantile", q)], v);
            }
        }
        self.write_groups(layout, now, out);
    }

    /// The Kafka cells' partition series: leadership moves from the start, replicas once the
    /// metadata was read.
    fn write_partitions(&self, out: &mut String) {
        let parts = || self.cells.iter().filter_map(|c| c.partition.as_ref().map(|p| (c, p)));
        family(
            out,
            "crossprobe_partition_leader_changes_total",
            "Leadership moves of the partition a Kafka cell probes; a cell follows the broker it names.",
            "counter",
        );
        for (c, p) in parts() {
            sample(
                out,
                "crossprobe_partition_leader_changes_total",
                &c.rendered,
                &[],
                p.leader_changes.load(Relaxed),
            );
        }
        for (name, help, pick) in [
            (
                "crossprobe_partition_replicas",
                "Replication factor of the partition a Kafka cell probes.",
                (|p| &p.replicas) as fn(&PartitionSeries) -> &AtomicI64,
            ),
            (
                "crossprobe_partition_in_sync_replicas",
                "In-sync replicas of the partition a Kafka cell probes; below the replication factor is an early sign of a broker in trouble.",
                |p| &p.in_sync,
            ),
        ] {
            family(out, name, help, "gauge");
            for (c, p) in parts() {
                let v = pick(p).load(Relaxed);
                if v >= 0 {
                    sample(out, name, &c.rendered, &[], v);
                }
            }
        }
    }

    fn write_groups(&self, layout: &Layout, now: Instant, out: &mut String) {
        for (name, help, pick) in [
            (
                "crossprobe_roundtrip_seconds",
                "Publish start to consume, of ok probes, per latency group.",
                (|g| &g.roundtrip) as fn(&GroupSeries) -> &Latency,
            ),
            (
                "crossprobe_publish_seconds",
                "Publish start to broker acknowledgement, per latency group.",
                |g| &g.publish,
            ),
        ] {
            family(out, name, help, "histogram");
            let bucket = format!("{name}_bucket");
            for g in &self.groups {
                let h = pick(g);
                let mut total = 0;
                for (n, le) in
                    h.buckets.iter().zip(layout.bounds.iter().map(|(_, t)| t.as_str()).chain(["+Inf"]))
                {
                    total += n.load(Relaxed);
                    sample(out, &bucket, &g.rendered, &[("le", le)], total);
                }
                sample(out, &format!("{name}_sum"), &g.rendered, &[], h.sum_nanos.load(Relaxed) as f64 / 1e9);
                sample(out, &format!("{name}_count"), &g.rendered, &[], total);
            }
        }
        family(
            out,
            "crossprobe_roundtrip_window_seconds",
            "Exact round-trip quantiles of ok probes over the last 1 to 2 minutes, per latency group.",
            "gauge",
        );
        for g in &self.groups {
            let merged = g.window.lock().expect("window lock").merged(now);
            for q in QUANTILES {
                let v = if merged.is_empty() { f64::NAN } else { merged.value_at_quantile(q) as f64 / 1e6 };
                sample(
                    out,
                    "crossprobe_roundtrip_window_seconds",
                    &g.rendered,
                    &[("quantile", &q.to_string())],
                    v,
                );
            }
        }
    }
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
}

fn sample(out: &mut String, name: &str, labels: &str, extra: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() || !extra.is_empty() {
        out.push('{');
        out.push_str(labels);
        for (i, (k, v)) in extra.iter().enumerate() {
            if i > 0 || !labels.is_empty() {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{v}\"");
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A label value in the text format: backslash, double quote and line feed escaped.
fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n").into()
    } else {
        v.into()
    }
}
