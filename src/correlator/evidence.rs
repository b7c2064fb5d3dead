//! Evidence: the figures that justify a scope, shared by the live verdict and `localize`.
//!
//! Ratios are additive: a scope's probe failure ratio is the sum of its cells' failures over the
//! sum of their attempts, never an average of per-cell ratios.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::explain::Workspace;
use super::scopes::{ScopeId, ScopeIndex};

/// Ordered `name -> value` pairs, serialized as a JSON object in this order (dimension order),
/// so a scope prints as `{"az": "b", "tenant": "acme"}` and a cell as its labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(pub Vec<(String, String)>);

impl Labels {
    /// The fixed dimensions of `scope`; empty for the global scope.
    pub fn of_scope(index: &ScopeIndex, scope: ScopeId) -> Self {
        Labels(index.labels(scope).map(|(d, v)| (d.to_owned(), v.to_owned())).collect())
    }

    /// `az=b&tenant=acme`, or `*` when empty.
    pub fn describe(&self) -> String {
        if self.0.is_empty() {
            return "*".to_owned();
        }
        self.0.iter().map(|(d, v)| format!("{d}={v}")).collect::<Vec<_>>().join("&")
    }
}

impl Serialize for Labels {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = Labels;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of label names to string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels, A::Error> {
                let mut out: Vec<(String, String)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    if out.iter().any(|(seen, _)| *seen == k) {
                        return Err(serde::de::Error::custom(format!("label \"{k}\" given twice")));
                    }
                    out.push((k, v));
                }
                Ok(Labels(out))
            }
        }
        d.deserialize_map(Pairs)
    }
}

/// Ordered `dimension -> count` pairs, serialized as a JSON object in dimension order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spans(pub Vec<(String, usize)>);

impl Serialize for Spans {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Ordered `dimension -> values` pairs, serialized as a JSON object of arrays in dimension order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Values(pub Vec<(String, Vec<String>)>);

impl Serialize for Values {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Why one scope is part of an explanation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ScopeEvidence {
    /// Fixed dimensions only; `{}` is the global scope.
    pub labels: Labels,
    pub failing_cells: u32,
    pub total_cells: u32,
    /// Failed probes over probes, summed over the scope's cells; `null` without probes.
    pub failure_ratio_inside: Option<f64>,
    /// The same over every other cell of the matrix.
    pub failure_ratio_outside: Option<f64>,
    /// Failing cells inside the scope over all failing cells (overlapping scopes may sum past 1).
    pub share_of_failing: f64,
    /// Distinct values of each free dimension among the scope's failing cells.
    pub spans: Spans,
    /// Those values by name, sorted: where inside the scope to look.
    pub values: Values,
}

/// Probe counts of one cell: attempts and failures over its window (or snapshot).
pub type Counts = (u64, u64);

/// Computes the evidence of `scope` after an [`explain`](super::explain::explain) call on `ws`.
/// `counts(cell)` gives a cell's attempts and failures; `all` is their sum over every cell.
pub fn scope_evidence(
    index: &ScopeIndex,
    ws: &Workspace,
    scope: ScopeId,
    counts: impl Fn(usize) -> Counts,
    all: Counts,
) -> ScopeEvidence {
    evidence_of(index, scope, |c| ws.is_failing(c), counts, all, ws.failing_cells())
}

/// Computes the evidence of `scope` from which cells are failing (`is_failing`), each cell's
/// attempts and failures (`counts`), their sum over every cell (`all`), and the number of
/// failing cells in the whole matrix (`total_failing`).
pub fn evidence_of(
    index: &ScopeIndex,
    scope: ScopeId,
    is_failing: impl Fn(usize) -> bool,
    counts: impl Fn(usize) -> Counts,
    all: Counts,
    total_failing: usize,
) -> ScopeEvidence {
    let dims = index.dimensions();
    let free: Vec<usize> = (0..dims.len()).filter(|&d| index.fixed_value(scope, d).is_none()).collect();
    let mut seen: Vec<Vec<bool>> = free.iter().map(|&d| vec![false; index.values(d).len()]).collect();
    let (mut attempts, mut failures, mut failing) = (0u64, 0u64, 0u32);
    for &cell in index.cells(scope) {
        let cell = cell as usize;
        let (a, f) = counts(cell);
        attempts += a;
        failures += f;
        if is_failing(cell) {
            failing += 1;
            for (slot, &d) in seen.iter_mut().zip(&free) {
                slot[index.cell_value(cell, d) as usize] = true;
            }
        }
    }
    let ratio = |f: u64, a: u64| (a > 0).then(|| f as f64 / a as f64);
    ScopeEvidence {
        labels: Labels::of_scope(index, scope),
        failing_cells: failing,
        total_cells: index.total(scope),
        failure_ratio_inside: ratio(failures, attempts),
        failure_ratio_outside: ratio(all.1.saturating_sub(failures), all.0.saturating_sub(attempts)),
        share_of_failing: if total_failing == 0 { 0.0 } else { f64::from(failing) / total_failing as f64 },
        spans: Spans(
            free.iter()
                .zip(&seen)
                .map(|(&d, s)| (dims[d].clone(), s.iter().filter(|&&b| b).count()))
                .collect(),
        ),
        values: Values(
            free.iter()
                .zip(&seen)
                .map(|(&d, s)| {
                    let names =
                        s.iter().enumerate().filter(|(_, &b)| b).map(|(v, _)| index.values(d)[v].clone());
                    (dims[d].clone(), names.collect())
                })
                .collect(),
        ),
    }
}
