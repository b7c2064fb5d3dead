//! The outage quorum: do the explained failing cells corroborate each other across dimensions?
//!
//! Only cells failing *now* count: a recovering cell keeps its scope's ticket (see
//! [`window`](super::window)) but corroborates nothing, so a rolling restart (zone a coming back
//! while zone b goes down) is two tickets, never a page.
//!
//! For each quorum dimension `d` (by default `az` needing 2 values and `tenant` needing 2), a
//! value `v` of `d` is *corroborated* when the explained failing cells with `d = v` span at least
//! the required number of values of every other quorum dimension. The quorum is met when every
//! quorum dimension has at least its required number of corroborated values. With the defaults:
//! at least two zones each failing for at least two tenants, and at least two tenants each
//! failing in at least two zones.
//!
//! Why not simply count the distinct values of all explained cells: two unrelated pairs of
//! cells, `{az=a, tenant=t1}` and `{az=b, tenant=t2}`, span two zones and two tenants between
//! them, and independent 5% probe failures on 240 cells produce such coincidences every few
//! hundred thousand ticks. Zone b down for everyone plus tenant acme down everywhere is likewise
//! two localized faults (`partial`, both named), not one outage: only zone b fails for several
//! tenants, only acme fails in several zones. Kafka down in two zones, or two tenants down
//! everywhere, corroborate in both dimensions and are outages.

use serde::Serialize;

use super::scopes::ScopeIndex;
use super::CorrelatorError;
use crate::config::Quorum;

/// One quorum dimension at one tick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuorumCheck {
    pub dimension: String,
    /// Distinct values among the explained failing cells.
    pub spanned: usize,
    /// Those values that the other quorum dimensions corroborate.
    pub corroborated: usize,
    pub required: usize,
    pub met: bool,
}

/// The quorum dimensions of one matrix, with scratch space reused every tick.
#[derive(Debug, Clone)]
pub struct QuorumRule {
    /// `(dimension index, name, required values)`.
    dims: Vec<(usize, String, usize)>,
    /// Per quorum dimension and value: the tick that last saw it, and how many other quorum
    /// dimensions it met.
    seen: Vec<Vec<(u64, u32)>>,
    pairs: Vec<(u32, u32)>,
    /// Calls so far: tells this call's marks in `seen` from older ones.
    calls: u64,
}

impl QuorumRule {
    /// Resolves the configured quorum against the index's dimensions and values.
    pub fn new<'a>(
        index: &ScopeIndex,
        quorum: impl IntoIterator<Item = (&'a String, &'a Quorum)>,
    ) -> Result<Self, CorrelatorError> {
        let mut dims = Vec::new();
        for (name, q) in quorum {
            let d = index
                .dimensions()
                .iter()
                .position(|x| x == name)
                .ok_or_else(|| CorrelatorError::UnknownQuorumDimension(name.clone()))?;
            dims.push((d, name.clone(), q.required(index.values(d).len())));
        }
        let seen = dims.iter().map(|&(d, _, _)| vec![(0, 0); index.values(d).len()]).collect();
        Ok(QuorumRule { dims, seen, pairs: Vec::new(), calls: 0 })
    }

    /// Judges `cells` (the explained cells failing now). An empty quorum is met by any cell.
    pub fn check(&mut self, index: &ScopeIndex, cells: &[usize]) -> Vec<QuorumCheck> {
        self.calls += 1;
        let tick = self.calls;
        let k = self.dims.len();
        for &cell in cells {
            for (q, &(d, _, _)) in self.dims.iter().enumerate() {
                let slot = &mut self.seen[q][index.cell_value(cell, d) as usize];
                if slot.0 != tick {
                    *slot = (tick, 0);
                }
            }
        }
        for (i, &(di, _, _)) in self.dims.iter().enumerate() {
            for &(dj, _, required_j) in self.dims.iter().filter(|&&(dj, _, _)| dj != di) {
                self.pairs.clear();
                self.pairs.extend(cells.iter().map(|&c| (index.cell_value(c, di), index.cell_value(c, dj))));
                self.pairs.sort_unstable();
                self.pairs.dedup();
                // Runs of equal first values: the distinct values of `dj` per value of `di`.
                let mut start = 0;
                while start < self.pairs.len() {
                    let v = self.pairs[start].0;
                    let run = self.pairs[start..].iter().take_while(|p| p.0 == v).count();
                    if run >= required_j {
                        self.seen[i][v as usize].1 += 1;
                    }
                    start += run;
                }
            }
        }
        self.dims
            .iter()
            .zip(&self.seen)
            .map(|(&(_, ref name, required), seen)| {
                let spanned = seen.iter().filter(|s| s.0 == tick).count();
                let corroborated = seen.iter().filter(|s| s.0 == tick && s.1 as usize + 1 >= k).count();
                QuorumCheck {
                    dimension: name.clone(),
                    spanned,
                    corroborated,
                    required,
                    met: corroborated >= required,
                }
            })
            .collect()
    }
}

/// `az 2/2, tenant 3/2`: corroborated over required values per dimension.
pub fn describe(checks: &[QuorumCheck]) -> String {
    checks
        .iter()
        .map(|q| format!("{} {}/{}", q.dimension, q.corroborated, q.required))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CorrelatorSettings;
    use crate::correlator::testkit::{cells_matching, grid, wide};

    type Pairs = Vec<(&'static str, &'static str)>;
    /// Distinct and corroborated values of one dimension.
    type Counts = (usize, usize);

    #[test]
    fn corroboration_across_zones_and_tenants() {
        let quorum = CorrelatorSettings::default().quorum;
        let cases: Vec<(&str, bool, Vec<Pairs>, Counts, Counts)> = vec![
            ("nothing", false, vec![], (0, 0), (0, 0)),
            ("zone b", false, vec![vec![("az", "b")]], (1, 1), (4, 0)),
            ("tenant acme", false, vec![vec![("tenant", "acme")]], (3, 0), (1, 1)),
            (
                "zone b and tenant acme",
                false,
                vec![vec![("az", "b")], vec![("tenant", "acme")]],
                (3, 1),
                (4, 1),
            ),
            (
                "two unrelated pairs",
                false,
                vec![vec![("az", "a"), ("tenant", "acme")], vec![("az", "b"), ("tenant", "globex")]],
                (2, 0),
                (2, 0),
            ),
            ("kafka", true, vec![vec![("protocol", "kafka")]], (3, 3), (4, 4)),
            (
                "zones a and b for two tenants",
                true,
                vec![
                    vec![("az", "a"), ("tenant", "acme")],
                    vec![("az", "b"), ("tenant", "acme")],
                    vec![("az", "a"), ("tenant", "globex")],
                    vec![("az", "b"), ("tenant", "globex")],
                ],
                (2, 2),
                (2, 2),
            ),
        ];
        let m = grid();
        let index = ScopeIndex::new(&m).unwrap();
        let mut rule = QuorumRule::new(&index, &quorum).unwrap();
        for (name, met, faults, az, tenant) in cases {
            let checks = rule.check(&index, &cells_matching(&m, &faults));
            let got: Vec<(usize, usize)> = checks.iter().map(|c| (c.spanned, c.corroborated)).collect();
            assert_eq!(checks.iter().all(|c| c.met), met, "{name}: {checks:?}");
            // The quorum map is ordered: az, then tenant.
            assert_eq!(got, vec![az, tenant], "{name}: (spanned, corroborated) per dimension");
        }
    }

    #[test]
    fn fractions_and_unknown_dimensions() {
        let m = wide(4, 3);
        let index = ScopeIndex::new(&m).unwrap();
        let half: std::collections::BTreeMap<String, Quorum> =
            [("az".to_owned(), Quorum::Fraction(0.5))].into();
        let mut rule = QuorumRule::new(&index, &half).unwrap();
        let two_zones = cells_matching(&m, &[vec![("az", "z0")], vec![("az", "z1")]]);
        let checks = rule.check(&index, &two_zones);
        assert_eq!((checks[0].required, checks[0].met), (2, true), "half of 4 zones is 2");
        let bad: std::collections::BTreeMap<String, Quorum> =
            [("region".to_owned(), Quorum::Count(2))].into();
        assert_eq!(
            QuorumRule::new(&index, &bad).unwrap_err(),
            CorrelatorError::UnknownQuorumDimension("region".into())
        );
    }
}
