//! The status page at `/` and the document it polls, `/api/status`.
//!
//! The page is one self-contained HTML file (inline CSS and script, no external assets, so it
//! works offline and behind any proxy) that fetches `/api/status` every two seconds and rebuilds
//! itself from it: the matrix can change between two polls. The document is the `/verdict`
//! document plus what only the page needs, computed on request: round-trip quantiles per zone
//! and protocol from the metrics' HDR windows, and the last verdict changes.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::correlator::{CellState, Labels, LatencyState, Level, Verdict};
use crate::metrics::Metrics;
use crate::published::{CellView, Change, Published};

/// The page, served as is.
pub const PAGE: &str = include_str!("page.html");

/// Dimensions the page's latency table groups by.
pub const LATENCY_BY: [&str; 2] = ["az", "protocol"];
/// Quantiles of the latency table.
const LATENCY_QUANTILES: [f64; 2] = [0.5, 0.99];

/// Up to this many cells, the document lists every cell and the page draws one tile each;
/// beyond, tiles cannot be read, and the document summarises instead ([`MatrixSummary`]).
pub const TILES_MAX: usize = 400;
/// Cells listed beyond [`TILES_MAX`]: the worst first (failing, recovering, unknown).
const CELLS_LISTED_MAX: usize = 200;
/// Groups of the summary listed: those with a cell not healthy first.
const GROUPS_LISTED_MAX: usize = 500;

/// The `/api/status` document: the `/verdict` document (with every cell up to [`TILES_MAX`]
/// cells, only the worst ones beyond, and then `summary`), `latency`, `changes` (newest first)
/// and `now`. Bounded: at 10,000 cells it stays under 200 KB.
#[derive(Debug, Serialize)]
pub struct StatusDocument {
    #[serde(flatten)]
    pub verdict: Option<VerdictHead>,
    /// Every cell, or beyond [`TILES_MAX`] the worst ones (failing, recovering, unknown).
    pub cells: Vec<CellView>,
    /// How many cells the matrix has; more than `cells` when it is summarised.
    pub cells_total: usize,
    /// Beyond [`TILES_MAX`] cells: counts by state per group of the two largest dimensions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<MatrixSummary>,
    pub latency: Vec<LatencyRow>,
    pub changes: Vec<Change>,
    /// RFC 3339, UTC, seconds.
    pub now: String,
}

/// The verdict document without its cells.
#[derive(Debug, Serialize)]
pub struct VerdictHead {
    pub verdict: Level,
    pub explanation: String,
    pub scopes: Vec<Labels>,
    pub evidence: Verdict,
}

/// Counts of cells by state per value pair of two dimensions (`az` and `tenant` when the
/// matrix has them, else its two with the most values), groups with a cell not healthy first.
#[derive(Debug, Serialize)]
pub struct MatrixSummary {
    pub dimensions: Vec<String>,
    /// Per state over the whole matrix.
    pub states: BTreeMap<CellState, usize>,
    pub groups: Vec<GroupCount>,
    /// Groups left out (all healthy ones past [`GROUPS_LISTED_MAX`]).
    pub groups_omitted: usize,
}

/// One group of the summary.
#[derive(Debug, Serialize)]
pub struct GroupCount {
    pub labels: BTreeMap<String, String>,
    pub states: BTreeMap<CellState, usize>,
}

/// Round-trip quantiles of one group of cells over the metrics' HDR windows.
#[derive(Debug, Serialize)]
pub struct LatencyRow {
    pub labels: BTreeMap<String, String>,
    pub ok_probes: u64,
    /// `null` without probes.
    pub p50_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
    /// Median of the group's cells' learned baseline p50 (cells still learning left out);
    /// `null` while every cell is learning.
    pub baseline_p50_seconds: Option<f64>,
}

/// The median baseline p50 of the judged cells carrying every label of `group`, in seconds.
fn baseline_p50(cells: &[CellView], group: &[(String, String)]) -> Option<f64> {
    let mut p50s: Vec<f64> = cells
        .iter()
        .filter(|c| group.iter().all(|(d, v)| c.labels.get(d) == Some(v)))
        .filter_map(|c| c.latency.filter(|l| l.latency != LatencyState::Learning)?.baseline_p50_ms)
        .collect();
    p50s.sort_by(f64::total_cmp);
    p50s.get(p50s.len().saturating_sub(1) / 2).map(|ms| ms / 1000.0)
}

/// Builds the document from what is published and the metrics' latency windows.
pub fn document(published: &Published, metrics: &Metrics) -> StatusDocument {
    let verdict = published.verdict();
    let all: &[CellView] = verdict.as_ref().map_or(&[], |v| &v.cells);
    let latency = metrics
        .roundtrip_window_by(&LATENCY_BY, &LATENCY_QUANTILES)
        .into_iter()
        .map(|g| LatencyRow {
            baseline_p50_seconds: baseline_p50(all, &g.labels),
            labels: g.labels.into_iter().collect(),
            ok_probes: g.samples,
            p50_seconds: g.seconds.first().copied(),
            p99_seconds: g.seconds.get(1).copied(),
        })
        .collect();
    let (cells, summary) =
        if all.len() <= TILES_MAX { (all.to_vec(), None) } else { (worst(all), Some(summarise(all))) };
    StatusDocument {
        verdict: verdict.as_ref().map(|v| VerdictHead {
            verdict: v.verdict,
            explanation: v.explanation.clone(),
            scopes: v.scopes.clone(),
            evidence: v.evidence.clone(),
        }),
        cells,
        cells_total: all.len(),
        summary,
        latency,
        changes: published.changes(),
        now: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    }
}

/// How bad a state is, for listing the worst first.
fn rank(s: CellState) -> u8 {
    match s {
        CellState::Failing => 0,
        CellState::Recovering => 1,
        CellState::Unknown => 2,
        CellState::Healthy => 3,
    }
}

/// The cells not healthy, worst first, at most [`CELLS_LISTED_MAX`].
fn worst(cells: &[CellView]) -> Vec<CellView> {
    let mut bad: Vec<&CellView> = cells.iter().filter(|c| c.state != CellState::Healthy).collect();
    bad.sort_by_key(|c| rank(c.state));
    bad.into_iter().take(CELLS_LISTED_MAX).cloned().collect()
}

fn summarise(cells: &[CellView]) -> MatrixSummary {
    let mut values: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for c in cells {
        for (d, v) in &c.labels {
            values.entry(d).or_default().insert(v);
        }
    }
    let dimensions: Vec<String> = if values.contains_key("az") && values.contains_key("tenant") {
        vec!["az".into(), "tenant".into()]
    } else {
        let mut by_size: Vec<(&str, usize)> = values.iter().map(|(d, v)| (*d, v.len())).collect();
        by_size.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        by_size.into_iter().take(2).map(|(d, _)| d.to_owned()).collect()
    };
    let mut states: BTreeMap<CellState, usize> = BTreeMap::new();
    let mut groups: BTreeMap<Vec<&str>, BTreeMap<CellState, usize>> = BTreeMap::new();
    for c in cells {
        *states.entry(c.state).or_default() += 1;
        let key = dimensions.iter().map(|d| c.labels.get(d).map_or("", String::as_str)).collect();
        *groups.entry(key).or_default().entry(c.state).or_default() += 1;
    }
    let mut groups: Vec<GroupCount> = groups
        .into_iter()
        .map(|(key, states)| GroupCount {
            labels: dimensions.iter().cloned().zip(key.into_iter().map(str::to_owned)).collect(),
            states,
        })
        .collect();
    // Worst first: most failing, then most recovering, then most unknown; stable otherwise.
    groups.sort_by_key(|g| {
        let n = |s| std::cmp::Reverse(g.states.get(&s).copied().unwrap_or(0));
        (n(CellState::Failing), n(CellState::Recovering), n(CellState::Unknown))
    });
    let omitted = groups.len().saturating_sub(GROUPS_LISTED_MAX);
    groups.truncate(GROUPS_LISTED_MAX);
    MatrixSummary { dimensions, states, groups, groups_omitted: omitted }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(i: usize, zones: usize, state: CellState) -> CellView {
        let labels = [
            ("az", format!("z{}", i % zones)),
            ("tenant", format!("t{}", i / zones % 200)),
            ("protocol", "amqp".to_owned()),
            ("broker", format!("r{}", i % 50)),
        ];
        CellView {
            id: format!("r{}/t{}", i % 50, i / zones % 200),
            labels: labels.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            state,
            latency: None,
        }
    }

    #[test]
    fn a_small_matrix_lists_every_cell_and_no_summary() {
        let cells: Vec<CellView> = (0..TILES_MAX).map(|i| cell(i, 5, CellState::Healthy)).collect();
        assert_eq!(worst(&cells).len(), 0);
        let s = summarise(&cells);
        assert_eq!(s.dimensions, ["az", "tenant"]);
        assert_eq!(s.states.get(&CellState::Healthy), Some(&TILES_MAX));
    }

    #[test]
    fn a_large_matrix_lists_the_worst_cells_first_and_the_worst_groups_first() {
        // 10,000 cells: zone z3 failing for every tenant, 7 cells recovering, the rest healthy.
        let cells: Vec<CellView> = (0..10_000)
            .map(|i| {
                let state = match i {
                    _ if i % 5 == 3 => CellState::Failing,
                    0..=6 => CellState::Recovering,
                    _ => CellState::Healthy,
                };
                cell(i, 5, state)
            })
            .collect();
        let listed = worst(&cells);
        assert_eq!(listed.len(), CELLS_LISTED_MAX);
        assert!(listed.iter().all(|c| c.state == CellState::Failing), "failing cells come first");
        let s = summarise(&cells);
        assert_eq!(s.states.get(&CellState::Failing), Some(&2_000));
        assert_eq!(s.states.get(&CellState::Recovering), Some(&6));
        assert_eq!(s.groups.len() + s.groups_omitted, 1_000, "5 zones x 200 tenants");
        assert_eq!(s.groups.len(), GROUPS_LISTED_MAX);
        assert!(
            s.groups[..200].iter().all(|g| g.labels["az"] == "z3"),
            "z3's groups first: {:?}",
            &s.groups[..3]
        );
        assert!(
            s.groups[200].states.contains_key(&CellState::Recovering),
            "then recovering: {:?}",
            s.groups[200]
        );
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.len() < 100_000, "the summary must stay small: {} bytes", json.len());
        assert!(json.contains("\"failing\":"), "states by name: {}", &json[..300]);
    }
}
