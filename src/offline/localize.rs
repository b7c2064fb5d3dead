//! Localize: one snapshot of cells (CSV) through the same explanation as the live correlator.
//!
//! The CSV header names the label columns, then `attempts`, `failures` and optionally
//! `expected_failure_ratio` (the leaf's baseline, 0 when absent). Fields are separated by commas
//! and trimmed; quoting is not supported. Blank lines and lines starting with `#` are skipped.
//!
//! A leaf is failing when its failure ratio is well above its baseline, by a one-sided binomial
//! test: with `p0 = max(baseline, 0.001)`, `z = (failures - attempts * p0) / sqrt(attempts * p0 *
//! (1 - p0))`; failing when `attempts >= 1`, `z >= 3` and `failures / attempts >= baseline +
//! 0.05`. The z test keeps a handful of failures in few attempts from counting; the margin keeps a
//! statistically clear but tiny excess (0.2% against 0.1% over a million probes) from counting.

use serde::Serialize;

use crate::config::CorrelatorSettings;
use crate::correlator::evidence::{scope_evidence, ScopeEvidence};
use crate::correlator::explain::{explain, Thresholds, Workspace};
use crate::correlator::{CorrelatorError, ScopeIndex};
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
    Read { path: std::path::PathBuf, source: std::io::Error },
    #[error("the snapshot has no header")]
    NoHeader,
    #[error("the snapshot has no rows")]
    NoRows,
    #[error(transparent)]
    Correlator(#[from] CorrelatorError),
}

fn line_error(line: usize, message: impl Into<String>) -> LocalizeError {
    LocalizeError::Line { line, message: message.into() }
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
                format!("label column \"{d}\" is empty, repeated or reserved"),
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
                .map_err(|_| line_error(line, format!("{} \"{}\" is not a count", columns[i], f[i])))
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
                            "expected_failure_ratio \"{}\" is not a ratio in [0, 1]",
                            f[attempts_col + 2]
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
    Ok(Snapshot { matrix: Matrix::from_labels(dims, labels), leaves })
}

fn fields(line: usize, row: &str) -> Result<Vec<String>, LocalizeError> {
    if row.contains('"') {
        return Err(line_error(line, "quoted fields are not supported"));
    }
    Ok(row.split(',').map(|f| f.trim().to_owned()).collect())
}

/// The explanation of one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Localization {
    pub leaves: usize,
    pub failing_leaves: usize,
    /// Failing leaves no reported scope covers.
    pub unexplained_failing_leaves: usize,
    /// Strongest first: most failing leaves, then fewer fixed dimensions.
    pub scopes: Vec<ScopeEvidence>,
}

impl Localization {
    /// One scope per line, `az=b&tenant=acme`, `*` for the global scope.
    pub fn to_text(&self) -> String {
        self.scopes.iter().map(|s| format!("{}\n", s.labels.describe())).collect()
    }
}

/// Scores `snapshot` with the thresholds of `settings` (no hysteresis: one snapshot).
pub fn localize(snapshot: &Snapshot, settings: &CorrelatorSettings) -> Result<Localization, LocalizeError> {
    let index = ScopeIndex::new(&snapshot.matrix)?;
    let failing: Vec<usize> =
        (0..snapshot.leaves.len()).filter(|&i| snapshot.leaves[i].is_failing()).collect();
    let mut ws = Workspace::new(&index);
    let mut chosen = explain(&index, &failing, &[], &Thresholds::from(settings), &mut ws);
    chosen.sort_by(|a, b| {
        ws.failing(b.scope)
            .cmp(&ws.failing(a.scope))
            .then(index.fixed_count(a.scope).cmp(&index.fixed_count(b.scope)))
            .then(a.scope.cmp(&b.scope))
    });
    let counts = |i: usize| (snapshot.leaves[i].attempts, snapshot.leaves[i].failures);
    let all = snapshot
        .leaves
        .iter()
        .fold((0u64, 0u64), |(a, f), l| (a.saturating_add(l.attempts), f.saturating_add(l.failures)));
    let explained: u32 = chosen.iter().map(|c| c.explained).sum();
    Ok(Localization {
        leaves: snapshot.leaves.len(),
        failing_leaves: failing.len(),
        unexplained_failing_leaves: failing.len() - explained as usize,
        scopes: chosen.iter().map(|c| scope_evidence(&index, &ws, c.scope, counts, all)).collect(),
    })
}

/// Reads and scores the snapshot file at `path` with the default thresholds.
pub fn localize_file(path: &std::path::Path) -> Result<Localization, LocalizeError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| LocalizeError::Read { path: path.to_owned(), source })?;
    localize(&parse_csv(&text)?, &CorrelatorSettings::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_leaves() {
        let cases = [
            ("no attempts", 0, 0, 0.0, false),
            ("clean", 100, 0, 0.0, false),
            ("10% without a baseline", 100, 10, 0.0, true),
            ("one failure in ten", 10, 1, 0.0, true),
            ("one failure in twenty", 20, 1, 0.0, true),
            ("4% is under the margin", 100, 4, 0.0, false),
            ("15% on a 10% baseline: not significant", 100, 15, 0.1, false),
            ("15% on a 10% baseline over 1000", 1000, 150, 0.1, true),
            ("12% on a 10% baseline over 100000: under the margin", 100_000, 12_000, 0.1, false),
            ("all failing with a baseline of 1", 100, 100, 1.0, false),
        ];
        for (name, attempts, failures, baseline, want) in cases {
            assert_eq!(Leaf { attempts, failures, baseline }.is_failing(), want, "{name}");
        }
    }

    #[test]
    fn malformed_snapshots_name_the_line() {
        let cases = [
            ("", "the snapshot has no header"),
            ("az,tenant,failures,attempts\n", "line 1: the header must be"),
            ("az,attempts\n", "line 1: the header must be"),
            ("attempts,failures\n", "line 1: the header must be"),
            ("az,az,attempts,failures\n", "line 1: label column \"az\" is empty, repeated or reserved"),
            ("az,attempts,failures\n", "the snapshot has no rows"),
            ("# comment\naz,attempts,failures\n\na,10\n", "line 4: 2 fields, the header has 3"),
            ("az,attempts,failures\na,ten,1\n", "line 2: attempts \"ten\" is not a count"),
            ("az,attempts,failures\na,1,2\n", "line 2: failures (2) exceed attempts (1)"),
            ("az,attempts,failures\na,1,1\na,2,2\n", "line 3: the same leaf as line 2"),
            ("az,attempts,failures\n\"a\",1,1\n", "line 2: quoted fields are not supported"),
            ("az,attempts,failures\n ,1,1\n", "line 2: label az is empty"),
            (
                "az,attempts,failures,expected_failure_ratio\na,1,1,1.5\n",
                "line 2: expected_failure_ratio \"1.5\"",
            ),
        ];
        for (text, want) in cases {
            let err = parse_csv(text).expect_err(want).to_string();
            assert!(err.starts_with(want), "want {want:?}, got {err:?}");
        }
    }

    #[test]
    fn zone_b_is_named_first() {
        let mut csv = String::from("az, tenant, protocol, attempts, failures, expected_failure_ratio\n");
        for az in ["a", "b", "c"] {
            for tenant in ["acme", "globex", "initech", "umbrella"] {
                for protocol in ["kafka", "amqp"] {
                    let failures = match (az, tenant, protocol) {
                        ("b", _, _) => 60,
                        (_, "acme", "kafka") if az != "b" => 45,
                        _ => 1,
                    };
                    csv.push_str(&format!("{az},{tenant},{protocol},300,{failures},0.01\n"));
                }
            }
        }
        let found = localize(&parse_csv(&csv).unwrap(), &CorrelatorSettings::default()).unwrap();
        assert_eq!(found.to_text(), "az=b\ntenant=acme&protocol=kafka\n");
        assert_eq!((found.leaves, found.failing_leaves, found.unexplained_failing_leaves), (24, 10, 0));
        let b = &found.scopes[0];
        assert_eq!((b.failing_cells, b.total_cells), (8, 8));
        assert_eq!(b.failure_ratio_inside, Some(0.2));
        assert_eq!(b.spans.0, [("tenant".to_owned(), 4), ("protocol".to_owned(), 2)]);
    }
}
