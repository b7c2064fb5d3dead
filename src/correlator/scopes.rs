//! The scope index: every scope that has cells, built once from the matrix.
//!
//! A scope fixes some dimensions to one value each (`{az=b}`, `{az=b, tenant=acme}`; `{}` is
//! global). The scopes that have cells are exactly the subsets of some cell's (dimension, value)
//! pairs: for each of the 2^D masks of fixed dimensions (D dimensions), the cells grouped by
//! their values there ([`enumerate`]). Scope ids are sorted coarsest first (fewer fixed
//! dimensions), then in dimension order and value order, so comparing ids is the deterministic
//! tie-break of the explanation.
//!
//! The live correlator indexes every scope. `localize` on a wide snapshot indexes fewer: the
//! masks of at most a depth of fixed dimensions (and each cell's own scope), and of those only
//! the scopes its search could ever name ([`ScopeIndex::pruned`]), while still counting every
//! cell set it searched.
//!
//! Per scope the index keeps its cells and its *canonical* scope: among scopes with exactly the
//! same cells (a broker nested in one zone and protocol: `{broker=k-b}` and `{az=b,
//! protocol=kafka}`), the one with the fewest fixed dimensions. Two scopes have the same cells
//! exactly when the label pairs shared by all their cells (their closure) agree, which is how the
//! groups are found without comparing cell sets.

use std::collections::HashMap;

mod enumerate;

use enumerate::{closure, for_each_group, order_key, values_hash, Layout};

use super::CorrelatorError;
use crate::matrix::Matrix;

/// Most dimensions the index enumerates: 2^D scopes per cell.
pub use crate::matrix::MAX_DIMENSIONS;

/// Index of a scope in a [`ScopeIndex`]; smaller ids are coarser.
pub type ScopeId = u32;

/// Every scope of one matrix (or, for a large `localize` snapshot, every scope up to a depth),
/// with the cells in each.
#[derive(Debug, Clone)]
pub struct ScopeIndex {
    dimensions: Vec<String>,
    cell_count: usize,
    /// Distinct values per dimension, sorted; value ids index these.
    values: Vec<Vec<String>>,
    /// Value id of every cell in every dimension, `cells x D`.
    cell_values: Vec<u32>,
    /// The masks of fixed dimensions indexed, ascending; `slots[mask]` is a mask's position
    /// among them, `u16::MAX` when not indexed. Every mask, unless the depth is capped.
    masks: Vec<u16>,
    slots: Vec<u16>,
    /// Per scope: its mask and a cell of it (the first), which together give its values.
    scope_masks: Vec<u16>,
    representative: Vec<u32>,
    canonical: Vec<ScopeId>,
    /// The indexed scopes of each cell, `cells x masks.len()`, in mask order.
    cell_scopes: Vec<ScopeId>,
    /// Cells of each scope: `scope_cells[cells_start[s]..cells_start[s + 1]]`.
    cells_start: Vec<u32>,
    scope_cells: Vec<u32>,
    /// Distinct cell sets among every scope enumerated, kept or not.
    cell_sets: usize,
}

/// A cell's entry in [`ScopeIndex::scopes_of`] for a scope a pruned index left out.
pub const NO_SCOPE: ScopeId = ScopeId::MAX;

impl ScopeIndex {
    /// Enumerates every scope of `matrix`.
    pub fn new(matrix: &Matrix) -> Result<Self, CorrelatorError> {
        Self::with_depth(matrix, matrix.dimensions().len())
    }

    /// Enumerates the scopes of `matrix` that fix at most `depth` dimensions, and each cell's
    /// own scope (every dimension fixed). With `depth` at least the number of dimensions this is
    /// [`ScopeIndex::new`]; a smaller one bounds the index of a wide snapshot to about
    /// `cells x (scopes of at most depth dimensions + 1)` entries.
    pub fn with_depth(matrix: &Matrix, depth: usize) -> Result<Self, CorrelatorError> {
        Self::pruned(matrix, depth, |_| true)
    }

    /// [`ScopeIndex::with_depth`], keeping only the scopes whose cells `keep` accepts (the
    /// global scope and the cells' own scopes are always kept). `keep` must accept a scope
    /// whenever it accepts one of its sub-scopes (fewer cells), so every kept scope's coarser
    /// scopes are kept too. A cell's entry in [`ScopeIndex::scopes_of`] for a scope left out is
    /// [`NO_SCOPE`]. Canonical means first among the kept scopes with the same cells (a cell's
    /// own scope, kept whatever `keep` says, stands for itself when the rest were left out).
    pub fn pruned(
        matrix: &Matrix,
        depth: usize,
        keep: impl Fn(&[u32]) -> bool,
    ) -> Result<Self, CorrelatorError> {
        let layout = Layout::new(matrix, depth)?;
        let Layout { d, n, values, cell_values, masks, slots } = layout;
        let value = |cell: u32, i: usize| cell_values[cell as usize * d + i];
        let order_key = |mask: u16, cell: u32, i: usize| order_key(&cell_values, d, mask, cell, i);

        // Per mask, the cells sorted by their values there: each run of equal values is a scope.
        struct Group {
            mask: u16,
            start: u32,
            len: u32,
        }
        let full = (1u16 << d).wrapping_sub(1);
        let mut kept: Vec<u32> = Vec::new();
        let mut groups: Vec<Group> = Vec::new();
        let mut buf = Vec::with_capacity(n);
        // A scope of one cell has that cell's set, which the cells' own scopes count. Larger sets
        // are told apart by their closure (its mask, and a 64-bit hash of its values).
        let mut sets: std::collections::HashSet<(usize, u64)> = std::collections::HashSet::new();
        for &mask in &masks {
            for_each_group(&cell_values, d, n, mask, &mut buf, |cells| {
                if cells.len() > 1 {
                    let closure = closure(&cell_values, d, cells);
                    sets.insert((closure, values_hash(&cell_values, d, closure, cells[0])));
                }
                if mask == 0 || mask == full || keep(cells) {
                    groups.push(Group { mask, start: kept.len() as u32, len: cells.len() as u32 });
                    kept.extend_from_slice(cells);
                }
            });
        }
        let first = |g: &Group| kept[g.start as usize];
        groups.sort_by(|a, b| {
            a.mask.count_ones().cmp(&b.mask.count_ones()).then_with(|| {
                (0..d)
                    .map(|i| order_key(a.mask, first(a), i).cmp(&order_key(b.mask, first(b), i)))
                    .find(|o| o.is_ne())
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
        });

        let n_scopes = groups.len();
        let mut cells_start = Vec::with_capacity(n_scopes + 1);
        let mut scope_cells = Vec::with_capacity(kept.len());
        let mut cell_scopes = vec![NO_SCOPE; n * masks.len()];
        for (id, g) in groups.iter().enumerate() {
            cells_start.push(scope_cells.len() as u32);
            let slot = slots[g.mask as usize] as usize;
            for &c in &kept[g.start as usize..(g.start + g.len) as usize] {
                scope_cells.push(c);
                cell_scopes[c as usize * masks.len() + slot] = id as ScopeId;
            }
        }
        cells_start.push(scope_cells.len() as u32);
        let scope_masks: Vec<u16> = groups.iter().map(|g| g.mask).collect();
        let representative: Vec<u32> = groups.iter().map(first).collect();
        drop(groups);
        drop(kept);

        // Closure of each scope: the pairs all of its cells share. Same closure, same cells. A
        // closure is named by its own scope when that is indexed, else by its values.
        let mut canonical = vec![0 as ScopeId; n_scopes];
        let mut first_with_closure = vec![NO_SCOPE; n_scopes];
        let mut unindexed: HashMap<Vec<u32>, ScopeId> = HashMap::new();
        for s in 0..n_scopes {
            let cells = &scope_cells[cells_start[s] as usize..cells_start[s + 1] as usize];
            let rep = representative[s];
            let closure = closure(&cell_values, d, cells);
            let named_by = match slots[closure] {
                u16::MAX => NO_SCOPE,
                slot => cell_scopes[rep as usize * masks.len() + slot as usize],
            };
            // Ids ascend coarsest first, so the first scope seen with a closure is canonical.
            canonical[s] = if named_by == NO_SCOPE {
                let key: Vec<u32> =
                    (0..d).map(|i| if closure & (1 << i) != 0 { value(rep, i) + 1 } else { 0 }).collect();
                *unindexed.entry(key).or_insert(s as ScopeId)
            } else {
                let first = &mut first_with_closure[named_by as usize];
                if *first == NO_SCOPE {
                    *first = s as ScopeId;
                }
                *first
            };
        }

        Ok(ScopeIndex {
            dimensions: matrix.dimensions().to_vec(),
            cell_count: n,
            values,
            cell_values,
            masks,
            slots,
            scope_masks,
            representative,
            canonical,
            cell_scopes,
            cells_start,
            scope_cells,
            cell_sets: n + sets.len(),
        })
    }

    /// How many distinct cell sets the scopes enumerated have, those [`ScopeIndex::pruned`] left
    /// out included: what a search over the index tests. Without pruning, the canonical scopes.
    pub fn cell_sets(&self) -> usize {
        self.cell_sets
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
        self.scope_masks.len()
    }

    /// The value id of `cell` in dimension `d`.
    pub fn cell_value(&self, cell: usize, d: usize) -> u32 {
        self.cell_values[cell * self.dimensions.len() + d]
    }

    /// Every indexed scope containing `cell`, the global scope first, in mask order: with every
    /// depth indexed, the scope fixing the dimensions of mask `m` is at position `m`.
    pub fn scopes_of(&self, cell: usize) -> &[ScopeId] {
        let n = self.masks.len();
        &self.cell_scopes[cell * n..(cell + 1) * n]
    }

    /// The scope of `cell` that fixes exactly the dimensions of `mask`, if that depth is indexed
    /// and the scope kept.
    pub fn scope_of(&self, cell: usize, mask: usize) -> Option<ScopeId> {
        let slot = *self.slots.get(mask)?;
        let s = (slot != u16::MAX).then(|| self.cell_scopes[cell * self.masks.len() + slot as usize])?;
        (s != NO_SCOPE).then_some(s)
    }

    /// Whether scopes fixing the dimensions of `mask` are indexed.
    pub fn indexes_mask(&self, mask: usize) -> bool {
        self.slots.get(mask).is_some_and(|&s| s != u16::MAX)
    }

    /// Number of (cell, scope) memberships: the size of the index.
    pub fn memberships(&self) -> usize {
        self.scope_cells.len()
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
        self.scope_masks[scope as usize].count_ones()
    }

    /// Whether `scope` stands for its cell set (no coarser scope has exactly the same cells).
    pub fn is_canonical(&self, scope: ScopeId) -> bool {
        self.canonical[scope as usize] == scope
    }

    /// Bit `d` set for each dimension `scope` fixes: [`ScopeIndex::scope_of`] any of its cells
    /// and this mask is `scope`.
    pub fn mask(&self, scope: ScopeId) -> usize {
        usize::from(self.scope_masks[scope as usize])
    }

    /// Number of canonical scopes: the distinct cell sets a verdict can blame.
    pub fn canonical_count(&self) -> usize {
        (0..self.scope_count()).filter(|&s| self.canonical[s] == s as ScopeId).count()
    }

    /// The value id `scope` fixes dimension `d` to, if it does.
    pub fn fixed_value(&self, scope: ScopeId, d: usize) -> Option<u32> {
        let s = scope as usize;
        (self.scope_masks[s] & (1 << d) != 0).then(|| self.cell_value(self.representative[s] as usize, d))
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

    /// The scope fixing exactly `pairs` (dimension name, value), if it has cells and its depth
    /// is indexed.
    pub fn find(&self, pairs: &[(&str, &str)]) -> Option<ScopeId> {
        let mut fixed: Vec<(usize, u32)> = Vec::with_capacity(pairs.len());
        for (dim, value) in pairs {
            let i = self.dimensions.iter().position(|x| x == dim)?;
            let v = self.values[i].binary_search_by(|x| x.as_str().cmp(value)).ok()? as u32;
            fixed.push((i, v));
        }
        let mask = fixed.iter().fold(0usize, |m, &(i, _)| m | 1 << i);
        let cell = (0..self.cell_count).find(|&c| fixed.iter().all(|&(i, v)| self.cell_value(c, i) == v))?;
        self.scope_of(cell, mask)
    }
}

#[cfg(test)]
mod tests;
