//! The scope index: every scope that has cells, built once from the matrix.
//!
//! A scope fixes some dimensions to one value each (`{az=b}`, `{az=b, tenant=acme}`; `{}` is
//! global). The scopes that have cells are exactly the subsets of some cell's (dimension, value)
//! pairs, so the index enumerates the 2^D subsets of every cell (D dimensions) and deduplicates
//! them. Scope ids are sorted coarsest first (fewer fixed dimensions), then in dimension order
//! and value order, so comparing ids is the deterministic tie-break of the explanation.
//!
//! Per scope the index keeps its cells and its *canonical* scope: among scopes with exactly the
//! same cells (a broker nested in one zone and protocol: `{broker=k-b}` and `{az=b,
//! protocol=kafka}`), the one with the fewest fixed dimensions. Two scopes have the same cells
//! exactly when the label pairs shared by all their cells (their closure) agree, which is how the
//! groups are found without comparing cell sets.

use std::collections::{BTreeSet, HashMap};

use super::CorrelatorError;
use crate::matrix::Matrix;

/// Most dimensions the index enumerates: 2^D scopes per cell.
pub use crate::matrix::MAX_DIMENSIONS;

/// Index of a scope in a [`ScopeIndex`]; smaller ids are coarser.
pub type ScopeId = u32;

/// `value id + 1` of a fixed dimension, 0 for a free one.
const FREE: u32 = 0;

/// Every scope of one matrix, with the cells in each.
#[derive(Debug, Clone)]
pub struct ScopeIndex {
    dimensions: Vec<String>,
    cell_count: usize,
    /// Distinct values per dimension, sorted; value ids index these.
    values: Vec<Vec<String>>,
    /// Value id of every cell in every dimension, `cells x D`.
    cell_values: Vec<u32>,
    /// Per scope, `D` entries of `value id + 1` or [`FREE`].
    keys: Vec<u32>,
    fixed: Vec<u8>,
    canonical: Vec<ScopeId>,
    /// The `2^D` scopes of each cell, `cells x 2^D`, indexed by the mask of fixed dimensions.
    cell_scopes: Vec<ScopeId>,
    /// Cells of each scope: `scope_cells[cells_start[s]..cells_start[s + 1]]`.
    cells_start: Vec<u32>,
    scope_cells: Vec<u32>,
}

impl ScopeIndex {
    /// Enumerates the scopes of `matrix`.
    pub fn new(matrix: &Matrix) -> Result<Self, CorrelatorError> {
        let d = matrix.dimensions().len();
        if d > MAX_DIMENSIONS {
            return Err(CorrelatorError::TooManyDimensions { dimensions: d, max: MAX_DIMENSIONS });
        }
        if matrix.cells().len() >= u32::MAX as usize {
            return Err(CorrelatorError::TooManyCells(matrix.cells().len()));
        }
        let values: Vec<Vec<String>> = (0..d)
            .map(|i| {
                let set: BTreeSet<&str> = matrix.cells().iter().map(|c| c.labels[i].as_str()).collect();
                set.into_iter().map(str::to_owned).collect()
            })
            .collect();
        let value_ids: Vec<HashMap<&str, u32>> = values
            .iter()
            .map(|vs| vs.iter().enumerate().map(|(i, v)| (v.as_str(), i as u32)).collect())
            .collect();
        let cell_values: Vec<u32> = matrix
            .cells()
            .iter()
            .flat_map(|c| c.labels.iter().enumerate().map(|(i, v)| value_ids[i][v.as_str()]))
            .collect();

        // Every distinct key, then sorted: coarsest first, then dimension and value order (a
        // fixed value sorts before a free dimension, so `{az=a}` precedes `{tenant=acme}`).
        let subsets = 1usize << d;
        let key_of = |cell: usize, mask: usize| -> Vec<u32> {
            (0..d).map(|i| if mask & (1 << i) != 0 { cell_values[cell * d + i] + 1 } else { FREE }).collect()
        };
        let mut distinct: Vec<Vec<u32>> = {
            let mut seen = std::collections::HashSet::new();
            for cell in 0..matrix.len() {
                for mask in 0..subsets {
                    seen.insert(key_of(cell, mask));
                }
            }
            seen.into_iter().collect()
        };
        let order = |k: &Vec<u32>| -> (usize, Vec<u32>) {
            let fixed = k.iter().filter(|&&v| v != FREE).count();
            (fixed, k.iter().map(|&v| if v == FREE { u32::MAX } else { v }).collect())
        };
        distinct.sort_by_cached_key(order);
        let id_of: HashMap<&[u32], ScopeId> =
            distinct.iter().enumerate().map(|(i, k)| (k.as_slice(), i as ScopeId)).collect();

        let mut cell_scopes = Vec::with_capacity(matrix.len() * subsets);
        for cell in 0..matrix.len() {
            for mask in 0..subsets {
                cell_scopes.push(id_of[key_of(cell, mask).as_slice()]);
            }
        }
        let n_scopes = distinct.len();
        let mut cells_start = vec![0u32; n_scopes + 1];
        for &s in &cell_scopes {
            cells_start[s as usize + 1] += 1;
        }
        for s in 0..n_scopes {
            cells_start[s + 1] += cells_start[s];
        }
        let mut fill = cells_start.clone();
        let mut scope_cells = vec![0u32; cell_scopes.len()];
        for (i, &s) in cell_scopes.iter().enumerate() {
            scope_cells[fill[s as usize] as usize] = (i / subsets) as u32;
            fill[s as usize] += 1;
        }

        // Closure of each scope: the pairs all of its cells share. Same closure, same cells.
        let mut canonical = vec![0 as ScopeId; n_scopes];
        let mut first_with_closure: HashMap<Vec<u32>, ScopeId> = HashMap::new();
        for s in 0..n_scopes {
            let cells = &scope_cells[cells_start[s] as usize..cells_start[s + 1] as usize];
            let first = cells[0] as usize;
            let closure: Vec<u32> = (0..d)
                .map(|i| {
                    let v = cell_values[first * d + i];
                    let shared = cells.iter().all(|&c| cell_values[c as usize * d + i] == v);
                    if shared {
                        v + 1
                    } else {
                        FREE
                    }
                })
                .collect();
            // Ids ascend coarsest first, so the first scope seen with a closure is canonical.
            canonical[s] = *first_with_closure.entry(closure).or_insert(s as ScopeId);
        }

        let fixed = distinct.iter().map(|k| k.iter().filter(|&&v| v != FREE).count() as u8).collect();
        Ok(ScopeIndex {
            dimensions: matrix.dimensions().to_vec(),
            cell_count: matrix.len(),
            values,
            cell_values,
            keys: distinct.into_iter().flatten().collect(),
            fixed,
            canonical,
            cell_scopes,
            cells_start,
            scope_cells,
        })
    }

    pub fn dimensions(&self) -> &[String] {
        &self.dimensions
    }

    /// Distinct values of dimension `d`, sorted.
    pub fn values(&self, d: usize) -> &[String] {
        &self.values[d]
    }

    pub fn cell_count(&self) -> usize {
        self.cell_count
    }

    pub fn scope_count(&self) -> usize {
        self.fixed.len()
    }

    /// The value id of `cell` in dimension `d`.
    pub fn cell_value(&self, cell: usize, d: usize) -> u32 {
        self.cell_values[cell * self.dimensions.len() + d]
    }

    /// Every scope containing `cell`, the global scope first.
    pub fn scopes_of(&self, cell: usize) -> &[ScopeId] {
        let n = 1usize << self.dimensions.len();
        &self.cell_scopes[cell * n..(cell + 1) * n]
    }

    /// Cells of `scope`, ascending.
    pub fn cells(&self, scope: ScopeId) -> &[u32] {
        let s = scope as usize;
        &self.scope_cells[self.cells_start[s] as usize..self.cells_start[s + 1] as usize]
    }

    pub fn total(&self, scope: ScopeId) -> u32 {
        let s = scope as usize;
        self.cells_start[s + 1] - self.cells_start[s]
    }

    /// Number of fixed dimensions.
    pub fn fixed_count(&self, scope: ScopeId) -> u32 {
        u32::from(self.fixed[scope as usize])
    }

    /// Whether `scope` stands for its cell set (no coarser scope has exactly the same cells).
    pub fn is_canonical(&self, scope: ScopeId) -> bool {
        self.canonical[scope as usize] == scope
    }

    /// Bit `d` set for each dimension `scope` fixes: the index of `scope` in
    /// [`ScopeIndex::scopes_of`] of any of its cells.
    pub fn mask(&self, scope: ScopeId) -> usize {
        let d = self.dimensions.len();
        self.keys[scope as usize * d..][..d]
            .iter()
            .enumerate()
            .filter(|(_, &k)| k != FREE)
            .fold(0, |m, (i, _)| m | (1 << i))
    }

    /// Number of canonical scopes: the distinct cell sets a verdict can blame.
    pub fn canonical_count(&self) -> usize {
        (0..self.scope_count()).filter(|&s| self.canonical[s] == s as ScopeId).count()
    }

    /// The value id `scope` fixes dimension `d` to, if it does.
    pub fn fixed_value(&self, scope: ScopeId, d: usize) -> Option<u32> {
        let k = self.keys[scope as usize * self.dimensions.len() + d];
        (k != FREE).then(|| k - 1)
    }

    /// `(dimension, value)` pairs the scope fixes, in dimension order.
    pub fn labels(&self, scope: ScopeId) -> impl Iterator<Item = (&str, &str)> + '_ {
        (0..self.dimensions.len()).filter_map(move |d| {
            self.fixed_value(scope, d)
                .map(|v| (self.dimensions[d].as_str(), self.values[d][v as usize].as_str()))
        })
    }

    /// `az=b&tenant=acme`, or `*` for the global scope.
    pub fn describe(&self, scope: ScopeId) -> String {
        let parts: Vec<String> = self.labels(scope).map(|(d, v)| format!("{d}={v}")).collect();
        if parts.is_empty() {
            "*".to_owned()
        } else {
            parts.join("&")
        }
    }

    /// The scope fixing exactly `pairs` (dimension name, value), if it has cells.
    pub fn find(&self, pairs: &[(&str, &str)]) -> Option<ScopeId> {
        let d = self.dimensions.len();
        let mut key = vec![FREE; d];
        for (dim, value) in pairs {
            let i = self.dimensions.iter().position(|x| x == dim)?;
            let v = self.values[i].iter().position(|x| x == value)?;
            key[i] = v as u32 + 1;
        }
        (0..self.scope_count()).map(|s| s as ScopeId).find(|&s| self.keys[s as usize * d..][..d] == key[..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlator::testkit::{grid, nested};

    #[test]
    fn scopes_of_the_grid() {
        let m = grid();
        let index = ScopeIndex::new(&m).unwrap();
        // Every subset of (az, tenant, protocol, broker) fixed to a cell's values, deduplicated:
        // {} 1, az 3, tenant 4, protocol 2, broker 6, az+tenant 12, az+protocol 6,
        // az+broker 6, tenant+protocol 8, tenant+broker 24, protocol+broker 6, then the
        // triples 24 + 6 + 24 + 24 and the cells 24.
        assert_eq!(index.scope_count(), 1 + 3 + 4 + 2 + 6 + 12 + 6 + 6 + 8 + 24 + 6 + 24 + 6 + 24 + 24 + 24);
        assert_eq!(index.describe(0), "*", "the coarsest scope comes first");
        assert_eq!(index.total(0), 24);
        let zone_b = index.find(&[("az", "b")]).unwrap();
        assert_eq!((index.total(zone_b), index.fixed_count(zone_b)), (8, 1));
        assert!(index.is_canonical(zone_b));
        assert!(index.cells(zone_b).iter().all(|&c| m.cells()[c as usize].labels[0] == "b"));
        // A broker is its zone and protocol: only the broker stands for those cells.
        let broker = index.find(&[("broker", "k-b")]).unwrap();
        let zone_protocol = index.find(&[("az", "b"), ("protocol", "kafka")]).unwrap();
        assert_eq!(index.cells(broker), index.cells(zone_protocol));
        assert!(index.is_canonical(broker) && !index.is_canonical(zone_protocol));
        assert_eq!(index.find(&[("az", "d")]), None);
        assert_eq!(
            index.describe(index.find(&[("tenant", "acme"), ("az", "b")]).unwrap()),
            "az=b&tenant=acme"
        );
        // Each cell lies in 2^4 scopes, the global one first, indexed by the mask of fixed
        // dimensions.
        assert_eq!(index.scopes_of(5).len(), 16);
        assert_eq!(index.scopes_of(5)[0], 0);
        let cell = index.cells(zone_b)[0] as usize;
        assert_eq!(index.mask(zone_b), 1);
        assert_eq!(index.scopes_of(cell)[index.mask(zone_b)], zone_b);
        assert_eq!(index.mask(broker), 8);
        // Of the 16 scopes that hold the same cells in pairs, only one of each pair counts.
        assert!(index.canonical_count() < index.scope_count());
    }

    #[test]
    fn nested_brokers_keep_the_zone_protocol_scope() {
        let index = ScopeIndex::new(&nested()).unwrap();
        // Two Kafka brokers per zone: {az=b, protocol=kafka} holds both and stands for itself.
        let zone_kafka = index.find(&[("az", "b"), ("protocol", "kafka")]).unwrap();
        assert_eq!(index.total(zone_kafka), 8);
        assert!(index.is_canonical(zone_kafka));
        // The RabbitMQ node is alone in its zone: {az=b, protocol=amqp} is {broker=r-b}.
        let zone_amqp = index.find(&[("az", "b"), ("protocol", "amqp")]).unwrap();
        assert!(!index.is_canonical(zone_amqp));
    }
}
