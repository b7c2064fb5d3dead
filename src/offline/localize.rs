//! Localize: the scopes that explain one snapshot of cells (CSV).
//!
//! The CSV header names the label columns, then `attempts`, `failures` and optionally
//! `expected_failure_ratio` (the leaf's baseline). Fields are separated by commas and trimmed;
//! quoting is not supported. Blank lines and lines starting with `#` are skipped. Without the
//! baseline column every leaf's baseline is the snapshot's background: the failure ratio of the
//! leaf in the middle of all probes ([`background_ratio`]), which a fault on fewer than half of
//! the probes does not move.
//!
//! Scopes are tested on their summed attempts and failures, not leaf by leaf: a fault that adds
//! 1 to 5% of failures to every leaf under one dimension value is lost in each leaf's noise and
//! overwhelming in the sum. [`search`] documents the statistic (a one-sided binomial
//! log-likelihood ratio of a scope's failures against its leaves' baselines), the coarse-to-fine
//! search, how a chosen scope's failures are accounted for so its parents and children are not
//! named again, and when to stop: a scope is named only while it adds a gain above
//! `ln(scopes searched / 1%)` to the scopes named before it, and is kept only if it still does
//! with all the others fitted. The scopes print strongest first. Unlike the live correlator,
//! this is not a set cover of failing cells: the live verdict judges debounced cell states,
//! `localize` judges probe counts.
//!
//! A leaf is *failing* on its own counts when its failure ratio is well above its baseline, by a
//! one-sided binomial test: with `p0 = max(baseline, 0.001)`, `z = (failures - attempts * p0) /
//! sqrt(attempts * p0 * (1 - p0))`; failing when `attempts >= 1`, `z >= 3` and `failures /
//! attempts >= baseline + 0.05`. Failing leaves are figures of the evidence (`failing_cells`,
//! `spans`, `unexplained_failing_leaves`); they do not choose the scopes.

use serde::Serialize;

pub mod search;

use search::{LeafCounts, Search};

use crate::config::{escaped, quoted, CorrelatorSettings};
use crate::correlator::evidence::{evidence_of, ScopeEvidence};
use crate::correlator::{CorrelatorError, ScopeId, ScopeIndex};
use crate::matrix::Matrix;

/// `z` a leaf's failures must reach over its baseline.
pub const Z_THRESHOLD: f64 = 3.0;
/// Margin a leaf's failure ratio must clear over its baseline.
pub const RATIO_MARGIN: f64 = 0.05;
/// Floor of the baseline in the z test, so a zero baseline still has a variance.
pub const MIN_BASELINE: f64 = 0.001;

/// Why a snapshot could not be read or scored.
#[derive(Debug, thiserror::Error)]
pub enum LocalizeError {
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: std::path::PathBuf, source: crate::files::FileError },
    #[error("the snapshot has no header")]
    NoHeader,
    #[error("the snapshot has no rows")]
    NoRows,
    #[error(transparent)]
    Correlator(#[from] CorrelatorError),
}

/// An error of one snapshot line; what it echoes of the line is escaped and bounded.
fn line_error(line: usize, message: impl Into<String>) -> LocalizeError {
    LocalizeError::Line { line, message: escaped(&message.into()) }
}

/// Probe counts of one leaf.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Leaf {
    pub attempts: u64,
    pub failures: u64,
    pub baseline: f64,
}

impl Leaf {
    /// Whether the leaf fails well above its baseline (see the module documentation).
    pub fn is_failing(&self) -> bool {
        if self.attempts == 0 {
            return false;
        }
        let (n, f) = (self.attempts as f64, self.failures as f64);
        // "At least the margin", with room for rounding: 150 / 1000 against 0.1 + 0.05.
        if f / n < self.baseline + RATIO_MARGIN - 1e-9 {
            return false;
        }
        let p0 = self.baseline.max(MIN_BASELINE);
        let z = (f - n * p0) / (n * p0 * (1.0 - p0)).sqrt();
        z >= Z_THRESHOLD
    }
}

/// A parsed snapshot: the leaves as a matrix, and their counts.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub matrix: Matrix,
    pub leaves: Vec<Leaf>,
}

/// Parses the CSV text of a snapshot; label columns become the dimensions, in header order.
pub fn parse_csv(text: &str) -> Result<Snapshot, LocalizeError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let (header_line, header) = lines.next().ok_or(LocalizeError::NoHeader)?;
    let columns = fields(header_line, header)?;
    let attempts_col = columns
        .iter()
        .position(|c| c == "attempts")
        .ok_or_else(|| line_error(header_line, "the header needs an `attempts` column"))?;
    let with_baseline = columns.last().is_some_and(|c| c == "expected_failure_ratio");
    let expected_len = attempts_col + if with_baseline { 3 } else { 2 };
    if attempts_col == 0
        || columns.get(attempts_col + 1).map(String::as_str) != Some("failures")
        || columns.len() != expected_len
    {
        return Err(line_error(
            header_line,
            "the header must be: label columns, attempts, failures[, expected_failure_ratio]",
        ));
    }
    let dims: Vec<String> = columns[..attempts_col].to_vec();
    for (i, d) in dims.iter().enumerate() {
        if d.is_empty()
            || dims[..i].contains(d)
            || ["failures", "expected_failure_ratio"].contains(&d.as_str())
        {
            return Err(line_error(
                header_line,
                format!("label column {} is empty, repeated or reserved", quoted(d)),
            ));
        }
    }

    let mut labels: Vec<Vec<String>> = Vec::new();
    let mut leaves = Vec::new();
    let mut seen: std::collections::HashMap<Vec<String>, usize> = Default::default();
    for (line, row) in lines {
        let f = fields(line, row)?;
        if f.len() != columns.len() {
            return Err(line_error(line, format!("{} fields, the header has {}", f.len(), columns.len())));
        }
        let count = |i: usize| {
            f[i].parse::<u64>()
                .map_err(|_| line_error(line, format!("{} {} is not a count", columns[i], quoted(&f[i]))))
        };
        let (attempts, failures) = (count(attempts_col)?, count(attempts_col + 1)?);
        if failures > attempts {
            return Err(line_error(line, format!("failures ({failures}) exceed attempts ({attempts})")));
        }
        let baseline = match with_baseline {
            false => 0.0,
            true => match f[attempts_col + 2].parse::<f64>() {
                Ok(b) if (0.0..=1.0).contains(&b) => b,
                _ => {
                    return Err(line_error(
                        line,
                        format!(
                            "expected_failure_ratio {} is not a ratio in [0, 1]",
                            quoted(&f[attempts_col + 2])
                        ),
                    ))
                }
            },
        };
        let leaf_labels: Vec<String> = f[..attempts_col].to_vec();
        if let Some(i) = leaf_labels.iter().position(String::is_empty) {
            return Err(line_error(line, format!("label {} is empty", dims[i])));
        }
        if let Some(first) = seen.insert(leaf_labels.clone(), line) {
            return Err(line_error(line, format!("the same leaf as line {first}")));
        }
        labels.push(leaf_labels);
        leaves.push(Leaf { attempts, failures, baseline });
    }
    if leaves.is_empty() {
        return Err(LocalizeError::NoRows);
    }
    if !with_baseline {
        let background = background_ratio(&leaves);
        leaves.iter_mut().for_each(|l| l.baseline = background);
    }
    Ok(Snapshot { matrix: Matrix::from_labels(dims, labels), leaves })
}

/// The failure ratio of the leaf in the middle of the snapshot's probes: leaves sorted by
/// ratio, the one where half the attempts are reached. A fault on fewer than half of the probes
/// does not move it.
pub fn background_ratio(leaves: &[Leaf]) -> f64 {
    let mut ratios: Vec<(f64, u64)> = leaves
        .iter()
        .filter(|l| l.attempts > 0)
        .map(|l| (l.failures as f64 / l.attempts as f64, l.attempts))
        .collect();
    ratios.sort_by(|a, b| a.0.total_cmp(&b.0));
    let half = ratios.iter().map(|r| r.1).sum::<u64>().div_ceil(2);
    let mut seen = 0;
    for (ratio, attempts) in ratios {
        seen += attempts;
        if seen >= half {
            return ratio;
        }
    }
    0.0
}

fn fields(line: usize, row: &str) -> Result<Vec<String>, LocalizeError> {
    if row.contains('"') {
        return Err(line_error(line, "quoted fields are not supported"));
    }
    Ok(row.split(',').map(|f| f.trim().to_owned()).collect())
}

/// One named scope: the evidence the live verdict shows, and the figures of the search.
#[derive(Debug, Clone, Serialize)]
pub struct LocalizedScope {
    #[serde(flatten)]
    pub evidence: ScopeEvidence,
    /// Failed probes its leaves were expected to have, with the other named scopes fitted.
    pub expected_failures: f64,
    /// Failed probes above that expectation.
    pub excess_failures: f64,
    /// Fitted extra failure ratio: each probe in the scope failed with this added probability.
    pub extra_failure_ratio: f64,
    /// How much the scope adds to the others' explanation: the log-likelihood gain (see
    /// [`search`]).
    pub gain: f64,
}

/// The explanation of one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Localization {
    pub leaves: usize,
    /// Leaves failing on their own counts (see the module documentation).
    pub failing_leaves: usize,
    /// Failing leaves no reported scope covers.
    pub unexplained_failing_leaves: usize,
    /// The gain a scope needed to be named: `ln(scopes searched / 0.01)`.
    pub gain_threshold: f64,
    /// Strongest first: the largest gain, then fewer fixed dimensions.
    pub scopes: Vec<LocalizedScope>,
}

impl Localization {
    /// One scope per line, `az=b&tenant=acme`, `*` for the global scope.
    pub fn to_text(&self) -> String {
        self.scopes.iter().map(|s| format!("{}\n", s.evidence.labels.describe())).collect()
    }
}

/// Scores `snapshot`; of `settings` only `min_failing_cells` is used, as the fewest leaves a
/// named scope has (a lone leaf is never a scope, as in the live verdict).
pub fn localize(snapshot: &Snapshot, settings: &CorrelatorSettings) -> Result<Localization, LocalizeError> {
    let index = ScopeIndex::new(&snapshot.matrix)?;
    let counts: Vec<LeafCounts> = snapshot
        .leaves
        .iter()
        .map(|l| LeafCounts {
            attempts: l.attempts,
            failures: l.failures,
            expected: l.baseline.max(MIN_BASELINE),
        })
        .collect();
    let search = Search::new(&index, &counts, settings.min_failing_cells);
    let found = search.run();
    let failing: Vec<bool> = snapshot.leaves.iter().map(Leaf::is_failing).collect();
    let mut covered = vec![false; failing.len()];
    for f in &found {
        for &cell in index.cells(f.scope) {
            covered[cell as usize] = true;
        }
    }
    let failing_leaves = failing.iter().filter(|&&f| f).count();
    let all = snapshot
        .leaves
        .iter()
        .fold((0u64, 0u64), |(a, f), l| (a.saturating_add(l.attempts), f.saturating_add(l.failures)));
    Ok(Localization {
        leaves: snapshot.leaves.len(),
        failing_leaves,
        unexplained_failing_leaves: (0..failing.len()).filter(|&i| failing[i] && !covered[i]).count(),
        gain_threshold: search.threshold(),
        scopes: found
            .iter()
            .map(|f| LocalizedScope {
                evidence: evidence(&index, snapshot, &failing, failing_leaves, f.scope, all),
                expected_failures: f.expected_failures,
                excess_failures: f.failures as f64 - f.expected_failures,
                extra_failure_ratio: f.shift,
                gain: f.gain,
            })
            .collect(),
    })
}

/// The figures of [`ScopeEvidence`], with the same meaning as in the live verdict; a failing
/// cell is a leaf failing on its own counts.
fn evidence(
    index: &ScopeIndex,
    snapshot: &Snapshot,
    failing: &[bool],
    failing_leaves: usize,
    scope: ScopeId,
    all: (u64, u64),
) -> ScopeEvidence {
    let leaf = |cell: usize| (snapshot.leaves[cell].attempts, snapshot.leaves[cell].failures);
    evidence_of(index, scope, |cell| failing[cell], leaf, all, failing_leaves)
}

/// Reads and scores the snapshot file at `path` with the default thresholds.
pub fn localize_file(path: &std::path::Path) -> Result<Localization, LocalizeError> {
    let text = crate::files::read_text(path, crate::files::MAX_SNAPSHOT_BYTES)
        .map_err(|source| LocalizeError::Read { path: path.to_owned(), source })?;
    localize(&parse_csv(&text)?, &CorrelatorSettings::default())
}

#[cfg(test)]
mod tests;
