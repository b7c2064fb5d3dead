//! The per-cell series: their families, and the handles of one cell's series, created at
//! start-up (or when a reload adds the cell) and removed with the cell.

use crossprobe_probes::outcome::{ErrorKind, OUTCOME_NAMES};
use prometheus::{GaugeVec, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use super::QUANTILES;

/// Handles of one cell's series, resolved once so recording is a few atomic adds.
pub(super) struct CellSeries {
    pub labels: Vec<String>,
    pub outcomes: Vec<IntCounter>,
    pub roundtrip: Histogram,
    pub publish: Histogram,
    pub duplicates: IntCounter,
    pub reorders: IntCounter,
    pub foreign: IntCounter,
    pub late: IntCounter,
    pub corrupt: IntCounter,
    pub state: IntGauge,
}

/// The per-cell metric families, kept to create and remove cells' series on reloads.
pub(super) struct Families {
    pub probes: IntCounterVec,
    pub errors: IntCounterVec,
    pub roundtrip: HistogramVec,
    pub publish: HistogramVec,
    pub duplicates: IntCounterVec,
    pub reorders: IntCounterVec,
    pub foreign: IntCounterVec,
    pub late: IntCounterVec,
    pub corrupt: IntCounterVec,
    pub quantiles: GaugeVec,
    pub state: IntGaugeVec,
}

impl Families {
    /// Creates (or finds) the series of one cell, with its state unknown.
    pub fn create(&self, labels: &[String]) -> CellSeries {
        let l: Vec<&str> = labels.iter().map(String::as_str).collect();
        for q in QUANTILES {
            self.quantiles.with_label_values(&plus(&l, &q.to_string())).set(f64::NAN);
        }
        let s = CellSeries {
            labels: labels.to_vec(),
            outcomes: OUTCOME_NAMES.iter().map(|o| self.probes.with_label_values(&plus(&l, o))).collect(),
            roundtrip: self.roundtrip.with_label_values(&l),
            publish: self.publish.with_label_values(&l),
            duplicates: self.duplicates.with_label_values(&l),
            reorders: self.reorders.with_label_values(&l),
            foreign: self.foreign.with_label_values(&l),
            late: self.late.with_label_values(&l),
            corrupt: self.corrupt.with_label_values(&l),
            state: self.state.with_label_values(&l),
        };
        s.state.set(-1);
        s
    }

    /// Removes every series of one cell, the error series it may have created included.
    pub fn remove(&self, labels: &[String]) {
        let l: Vec<&str> = labels.iter().map(String::as_str).collect();
        for q in QUANTILES {
            let _ = self.quantiles.remove_label_values(&plus(&l, &q.to_string()));
        }
        for o in OUTCOME_NAMES {
            let _ = self.probes.remove_label_values(&plus(&l, o));
        }
        for stage in ["connect", "publish"] {
            for kind in ErrorKind::ALL {
                let _ = self.errors.remove_label_values(&plus(&plus(&l, stage), kind.as_str()));
            }
        }
        let _ = self.roundtrip.remove_label_values(&l);
        let _ = self.publish.remove_label_values(&l);
        for c in [&self.duplicates, &self.reorders, &self.foreign, &self.late, &self.corrupt] {
            let _ = c.remove_label_values(&l);
        }
        let _ = self.state.remove_label_values(&l);
    }
}

pub(super) fn plus<'a>(l: &[&'a str], v: &'a str) -> Vec<&'a str> {
    l.iter().copied().chain([v]).collect()
}
