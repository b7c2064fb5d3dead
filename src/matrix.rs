//! The probe matrix: every cell (one target x one tenant) with its full label set.
//!
//! Dimensions are `az`, `tenant`, `protocol`, `broker`, then the targets' extra labels in name
//! order. Each cell stores its label values in that order, so scopes, metrics and reports all
//! read the same vector.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// The dimensions every matrix has, in order, before any extra labels.
pub const BASE_DIMENSIONS: [&str; 4] = ["az", "tenant", "protocol", "broker"];

/// Most dimensions a matrix may have: the correlator indexes the 2^D scopes of every cell.
/// Configuration validation refuses more, so `check` and `run` agree.
pub const MAX_DIMENSIONS: usize = 10;

/// Stable identity of a cell across restarts and reloads: `target/tenant`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CellId(String);

impl CellId {
    pub fn new(target: &str, tenant: &str) -> Self {
        CellId(format!("{target}/{tenant}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// 64-bit FNV-1a of the id: compact, stable across processes, carried in probe payloads.
    pub fn key(&self) -> u64 {
        fnv1a(&self.0)
    }
}

impl fmt::Display for CellId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// 64-bit FNV-1a: stable across processes and versions, so every replica computes the same.
pub fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// One point of the matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub id: CellId,
    /// `id.key()`, computed once.
    pub key: u64,
    /// Index into the configuration's targets.
    pub target: usize,
    /// Index into the configuration's tenants.
    pub tenant: usize,
    /// Label values, aligned with [`Matrix::dimensions`].
    pub labels: Vec<String>,
}

/// All cells and the dimensions that label them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix {
    dimensions: Vec<String>,
    cells: Vec<Cell>,
}

impl Matrix {
    /// Builds a matrix from label values alone, for cells that come from a file (recorded
    /// outcomes, a snapshot) rather than from a configuration. A cell's id is
    /// `<other labels joined by '.'>/<tenant>`; its target and tenant indices number the
    /// distinct ids' halves in order of appearance.
    pub fn from_labels(dimensions: Vec<String>, labels: Vec<Vec<String>>) -> Self {
        let tenant_dim = dimensions.iter().position(|d| d == "tenant");
        // Numbered in order of appearance; a map, not a scan, since a snapshot may have a
        // hundred thousand distinct rows.
        let mut targets: HashMap<String, usize> = HashMap::new();
        let mut tenants: HashMap<String, usize> = HashMap::new();
        let position = |names: &mut HashMap<String, usize>, name: &str| match names.get(name) {
            Some(&i) => i,
            None => {
                let i = names.len();
                names.insert(name.to_owned(), i);
                i
            }
        };
        let cells = labels
            .into_iter()
            .map(|labels| {
                let others: Vec<&str> = labels
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| Some(*i) != tenant_dim)
                    .map(|(_, v)| v.as_str())
                    .collect();
                let target_name = others.join(".");
                let tenant_name = tenant_dim.map_or("-", |d| labels[d].as_str()).to_owned();
                let id = CellId::new(&target_name, &tenant_name);
                Cell {
                    key: id.key(),
                    id,
                    target: position(&mut targets, &target_name),
                    tenant: position(&mut tenants, &tenant_name),
                    labels,
                }
            })
            .collect();
        Matrix::new(dimensions, cells)
    }

    /// Builds a matrix; every cell must carry one value per dimension.
    pub fn new(dimensions: Vec<String>, cells: Vec<Cell>) -> Self {
        assert!(
            cells.iter().all(|c| c.labels.len() == dimensions.len()),
            "every cell needs one label value per dimension"
        );
        Matrix { dimensions, cells }
    }

    /// The cells `keep` accepts, in the same order, with the same dimensions: how `--shard` and
    /// similar selections narrow a matrix after validation.
    pub fn filtered(&self, keep: impl Fn(&Cell) -> bool) -> Matrix {
        let cells = self.cells.iter().filter(|c| keep(c)).cloned().collect();
        Matrix { dimensions: self.dimensions.clone(), cells }
    }

    pub fn dimensions(&self) -> &[String] {
        &self.dimensions
    }

    pub fn dimension_index(&self, name: &str) -> Option<usize> {
        self.dimensions.iter().position(|d| d == name)
    }

    pub fn cells(&self) -> &[Cell] {
        &self.cells
    }

    pub fn len(&self) -> usize {
        self.cells.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Distinct values of dimension `d`, sorted, with how many cells carry each.
    pub fn values_of(&self, d: usize) -> BTreeMap<&str, usize> {
        let mut out = BTreeMap::new();
        for c in &self.cells {
            *out.entry(c.labels[d].as_str()).or_insert(0) += 1;
        }
        out
    }

    /// `(dimension, value)` pairs of a cell, in dimension order.
    pub fn labels<'a>(&'a self, cell: &'a Cell) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.dimensions.iter().map(String::as_str).zip(cell.labels.iter().map(String::as_str))
    }

    /// `az=a, tenant=acme, ...` for messages.
    pub fn describe(&self, cell: &Cell) -> String {
        self.labels(cell).map(|(d, v)| format!("{d}={v}")).collect::<Vec<_>>().join(", ")
    }
}

/// A set of fixed dimension values, as in `[matrix] exclude = [{ az = "c", tenant = "x" }]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// `(dimension index, value)` pairs; a cell matches when it has all of them.
    fixed: Vec<(usize, String)>,
}

impl Selector {
    pub fn new(fixed: Vec<(usize, String)>) -> Self {
        Selector { fixed }
    }

    pub fn matches(&self, cell: &Cell) -> bool {
        self.fixed.iter().all(|(d, v)| cell.labels[*d] == *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(target: &str, tenant: &str, labels: &[&str]) -> Cell {
        let id = CellId::new(target, tenant);
        Cell {
            key: id.key(),
            id,
            target: 0,
            tenant: 0,
            labels: labels.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn cell_key_is_stable_fnv1a() {
        // Reference values of 64-bit FNV-1a; the key travels in payloads, so it must not change.
        assert_eq!(CellId("".into()).key(), 0xcbf2_9ce4_8422_2325);
        assert_eq!(CellId("a".into()).key(), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(CellId::new("k-a", "acme").key(), CellId::new("k-a", "acmf").key());
    }

    #[test]
    fn values_and_selectors() {
        let dims = BASE_DIMENSIONS.iter().map(|s| s.to_string()).collect();
        let m = Matrix::new(
            dims,
            vec![
                cell("k-a", "acme", &["a", "acme", "kafka", "k-a"]),
                cell("k-b", "acme", &["b", "acme", "kafka", "k-b"]),
                cell("r-b", "acme", &["b", "acme", "amqp", "r-b"]),
            ],
        );
        assert_eq!(m.values_of(0), BTreeMap::from([("a", 1), ("b", 2)]));
        assert_eq!(m.dimension_index("protocol"), Some(2));
        let zone_b_kafka = Selector::new(vec![(0, "b".into()), (2, "kafka".into())]);
        let hits: Vec<_> =
            m.cells().iter().filter(|c| zone_b_kafka.matches(c)).map(|c| c.id.as_str()).collect();
        assert_eq!(hits, ["k-b/acme"]);
        assert_eq!(m.describe(&m.cells()[2]), "az=b, tenant=acme, protocol=amqp, broker=r-b");
    }
}
