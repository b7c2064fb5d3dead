//! The status page at `/` and the document it polls, `/api/status`.
//!
//! The page is one self-contained HTML file (inline CSS and script, no external assets, so it
//! works offline and behind any proxy) that fetches `/api/status` every two seconds and rebuilds
//! itself from it: the matrix can change between two polls. The document is the `/verdict`
//! document plus what only the page needs, computed on request: round-trip quantiles per zone
//! and protocol from the metrics' HDR windows, and the last verdict changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::metrics::Metrics;
use crate::published::{Change, Published, VerdictDocument};

/// The page, served as is.
pub const PAGE: &str = include_str!("page.html");

/// Dimensions the page's latency table groups by.
pub const LATENCY_BY: [&str; 2] = ["az", "protocol"];
/// Quantiles of the latency table.
const LATENCY_QUANTILES: [f64; 2] = [0.5, 0.99];

/// The `/api/status` document: the `/verdict` document with `latency`, `changes` (newest first)
/// and `now` added.
#[derive(Debug, Serialize)]
pub struct StatusDocument {
    #[serde(flatten)]
    pub verdict: Option<Arc<VerdictDocument>>,
    pub latency: Vec<LatencyRow>,
    pub changes: Vec<Change>,
    /// RFC 3339, UTC, seconds.
    pub now: String,
}

/// Round-trip quantiles of one group of cells over the metrics' HDR windows.
#[derive(Debug, Serialize)]
pub struct LatencyRow {
    pub labels: BTreeMap<String, String>,
    pub ok_probes: u64,
    /// `null` without probes.
    pub p50_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
}

/// Builds the document from what is published and the metrics' latency windows.
pub fn document(published: &Published, metrics: &Metrics) -> StatusDocument {
    let latency = metrics
        .roundtrip_window_by(&LATENCY_BY, &LATENCY_QUANTILES)
        .into_iter()
        .map(|g| LatencyRow {
            labels: g.labels.into_iter().collect(),
            ok_probes: g.samples,
            p50_seconds: g.seconds.first().copied(),
            p99_seconds: g.seconds.get(1).copied(),
        })
        .collect();
    StatusDocument {
        verdict: published.verdict(),
        latency,
        changes: published.changes(),
        now: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    }
}
