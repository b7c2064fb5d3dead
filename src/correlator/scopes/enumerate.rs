//! Enumerating the scopes of a matrix: per mask of fixed dimensions, the cells grouped by their
//! values there, each group one scope. Shared by building an index and counting its cell sets.

use std::collections::{BTreeSet, HashMap};

use super::{CorrelatorError, MAX_DIMENSIONS};
use crate::matrix::Matrix;

/// The value ids of a matrix and which masks of fixed dimensions an index of a depth holds.
pub(super) struct Layout {
    pub d: usize,
    pub n: usize,
    pub values: Vec<Vec<String>>,
    pub cell_values: Vec<u32>,
    pub masks: Vec<u16>,
    pub slots: Vec<u16>,
}

impl Layout {
    pub fn new(matrix: &Matrix, depth: usize) -> Result<Layout, CorrelatorError> {
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
        let full = (1usize << d) - 1;
        let masks: Vec<u16> =
            (0..=full).filter(|&m| m.count_ones() as usize <= depth || m == full).map(|m| m as u16).collect();
        let mut slots = vec![u16::MAX; full + 1];
        for (i, &m) in masks.iter().enumerate() {
            slots[m as usize] = i as u16;
        }
        drop(value_ids);
        Ok(Layout { d, n: matrix.len(), values, cell_values, masks, slots })
    }
}

/// The key order of scope ids: coarsest first (the caller compares fixed counts), then
/// dimension and value order, a fixed value before a free dimension (`{az=a}` precedes
/// `{tenant=acme}`).
pub(super) fn order_key(cell_values: &[u32], d: usize, mask: u16, cell: u32, i: usize) -> u32 {
    if mask & (1 << i) != 0 {
        cell_values[cell as usize * d + i]
    } else {
        u32::MAX
    }
}

/// Calls `f` with the cells of each scope that fixes the dimensions of `mask`, each ascending
/// (in no particular order of scopes); `buf` is scratch space.
///
/// Cells are sorted by a 64-bit hash of their values in `mask`, then by index, so each run of
/// equal hashes is a scope's cells in order; a run whose values differ (a hash collision) is
/// sorted again by the values themselves. Sorting plain integers keeps a wide snapshot's
/// thousand masks cheap.
pub(super) fn for_each_group(
    cell_values: &[u32],
    d: usize,
    n: usize,
    mask: u16,
    buf: &mut Vec<(u64, u32)>,
    f: impl FnMut(&[u32]),
) {
    let hash = |cell: u32| values_hash(cell_values, d, usize::from(mask), cell);
    for_each_group_hashed(cell_values, d, n, mask, buf, hash, f);
}

/// A 64-bit hash of `cell`'s values in the dimensions of `mask`.
pub(super) fn values_hash(cell_values: &[u32], d: usize, mask: usize, cell: u32) -> u64 {
    (0..d).filter(|&i| mask & (1 << i) != 0).fold(0xcbf2_9ce4_8422_2325u64, |h, i| {
        (h ^ u64::from(cell_values[cell as usize * d + i])).wrapping_mul(0x0100_0000_01b3).rotate_left(29)
    })
}

/// [`for_each_group`] with the hash given.
pub(super) fn for_each_group_hashed(
    cell_values: &[u32],
    d: usize,
    n: usize,
    mask: u16,
    buf: &mut Vec<(u64, u32)>,
    hash: impl Fn(u32) -> u64,
    mut f: impl FnMut(&[u32]),
) {
    let key = |cell: u32, i: usize| order_key(cell_values, d, mask, cell, i);
    buf.clear();
    buf.extend((0..n as u32).map(|c| (hash(c), c)));
    buf.sort_unstable();
    let same = |a: u32, b: u32| (0..d).all(|i| key(a, i) == key(b, i));
    let mut cells: Vec<u32> = Vec::new();
    let mut start = 0;
    for i in 1..=buf.len() {
        if i < buf.len() && buf[i].0 == buf[start].0 {
            continue;
        }
        if i == start + 1 {
            f(&[buf[start].1]);
            start = i;
            continue;
        }
        cells.clear();
        cells.extend(buf[start..i].iter().map(|&(_, c)| c));
        if cells.iter().all(|&c| same(cells[0], c)) {
            f(&cells);
        } else {
            cells.sort_by(|&a, &b| {
                (0..d).map(|j| key(a, j).cmp(&key(b, j))).find(|o| o.is_ne()).unwrap_or(a.cmp(&b))
            });
            let mut from = 0;
            for j in 1..=cells.len() {
                if j == cells.len() || !same(cells[from], cells[j]) {
                    f(&cells[from..j]);
                    from = j;
                }
            }
        }
        start = i;
    }
}

/// The mask of the dimensions on which all of `cells` agree.
pub(super) fn closure(cell_values: &[u32], d: usize, cells: &[u32]) -> usize {
    let first = cells[0] as usize;
    (0..d)
        .filter(|&i| cells.iter().all(|&c| cell_values[c as usize * d + i] == cell_values[first * d + i]))
        .fold(0usize, |m, i| m | 1 << i)
}
