//! The scope search of `localize`: which scopes explain a snapshot's failed probes, tested on
//! their summed counts.
//!
//! Model. Every leaf `i` has `n_i` attempts, `f_i` failures and an expected failure ratio `e_i`
//! (its baseline). A fault in scope `S` makes each probe of every leaf in `S` fail with an extra
//! probability `r_S`: the leaf's ratio becomes `1 - (1 - e_i) (1 - r_S)`. The search chooses the
//! scopes and their `r` one at a time; after each choice the chosen scope's leaves expect the
//! fitted ratio, so what a scope explains is not explained again by its parents or children.
//!
//! Statistic. For a scope with summed attempts `N`, failures `F` and expected failures `E`
//! (the sum of `n_i e_i` under the scopes chosen so far), the fitted extra ratio is `r = (F - E)
//! / (N - E)` and the gain is the log-likelihood ratio of "every leaf of the scope has the extra
//! ratio `r`" against "every leaf has its expected ratio", summed over the scope's leaves:
//! `G = sum_i f_i ln(1 + r (1 - e_i) / e_i) + (N - F) ln(1 - r)` (0 when `F <= E`). When every
//! leaf expects the same ratio this is the binomial
//! `G = F ln(F / E) + (N - F) ln((N - F) / (N - E))` ([`gain`]), the Chernoff exponent of the
//! binomial tail: noise alone reaches `G >= t` in one scope with probability at most `e^-t`,
//! and in any of `M` scopes with probability at most `M e^-t`. With different baselines the
//! bound holds approximately (`benches/localize.rs` measures it: 1 scope named in 1,000
//! snapshots of noise). Summing leaf by leaf rather than pooling matters once a scope overlaps
//! a scope already chosen: its leaves then expect very different ratios, and a pooled binomial
//! would count the chosen scope's variance against it. Summing before testing is the point: a
//! 3% brownout on 40 leaves of 300 probes each at a 1% baseline is 480 failures where 120 are
//! expected (`G` = 311), while each leaf alone is 12 where 3 are expected (`G` = 7.8, under the
//! threshold of about 14 that searching thousands of scopes needs).
//!
//! Search, repeated while a scope qualifies:
//! 1. Sum `N`, `F`, `E` for every canonical scope and compute `G` and the fitted extra ratio
//!    `r = (F - E) / (N - E)`.
//! 2. A scope qualifies when `G >= ln(M / ALPHA)` (`M` the number of scopes searched,
//!    [`ALPHA`] 1%: at most a 1% chance that noise alone names a scope) and `r >= MIN_SHIFT`.
//! 3. Coarse to fine: take the qualifying scope with the highest `G` that is homogeneous: no
//!    value of a free dimension is a healthy part of it. A child (the scope with one more
//!    dimension fixed) is healthy when its own counts favour "no fault" over "the scope's fault"
//!    by a log-likelihood ratio of at least `ln(C / BETA)` (`C` children tested, [`BETA`] 1%:
//!    a child that really carries the fault is called healthy with probability at most 1%).
//!    So `{tenant=t1}` failing in zones a and b but not c is not named; `{az=a, tenant=t1}`
//!    and `{az=b, tenant=t1}` are. The likelihood ratio crosses zero where the child's excess is
//!    half the scope's, so a coarse scope is named only when every part carries about half of
//!    its fitted ratio or more, or the evidence is too thin to tell.
//! 4. Record the scope, then refit the extra ratios of all chosen scopes jointly (each
//!    re-estimated with the others held, a few passes), so that of two overlapping causes the
//!    first chosen does not keep the second's failures; every leaf then expects
//!    `1 - (1 - e_i) * product of (1 - r)` over its chosen scopes.
//!
//! A lone leaf is a scope too: a stuck leaf is chosen (it has no children, so it is always
//! homogeneous) and fitted like any scope, so it neither inflates the fitted ratio of a real
//! cause around it nor makes that cause look heterogeneous. Only scopes of at least
//! `min_leaves` leaves are reported; lone leaves stay unexplained, as in the live verdict.
//!
//! Bounds. Before the search, every scope gets an upper bound of its gain: the sum over its
//! leaves of each leaf's own best gain at its baseline (a common `r` fits no better than one per
//! leaf, and refits only raise what leaves expect, which lowers each leaf's gain). Scopes whose
//! bound is under the threshold can never qualify and are not looked at again; in a snapshot of
//! many high-cardinality columns that is nearly every deep scope. Each step tests at most
//! [`MAX_CANDIDATES`] qualifying scopes for homogeneity, strongest first, and at most
//! [`MAX_SCOPES`] scopes are chosen. How deep the index goes is the caller's (`localize` caps it
//! by the size of the snapshot).
//!
//! Then generalize: a chosen scope is replaced by a homogeneous parent (one fixed dimension
//! freed) when the jointly refitted model explains the leaves at least as well with the parent
//! (same number of fitted ratios, so the log-likelihoods compare directly). Of a weak cause under
//! a strong overlapping one, the greedy step can take only the part the strong one does not
//! cover. Then prune: a chosen scope whose gain, with every other chosen scope fitted first, falls
//! below the threshold adds too little and is dropped (the weakest first, then refit). The
//! reported gain of each kept scope is that leave-one-out gain: how much it adds to the others.

use crate::correlator::scopes::{ScopeId, ScopeIndex, NO_SCOPE};

/// Family-wise chance that noise alone names a scope: the gain threshold is `ln(M / ALPHA)`.
pub const ALPHA: f64 = 0.01;
/// Chance that a child carrying the fault is called healthy: the healthy-child threshold is
/// `ln(C / BETA)`.
pub const BETA: f64 = 0.01;
/// Smallest fitted extra failure ratio named: below half a percentage point a scope's excess
/// is within the error of the baselines themselves, however many probes it sums.
pub const MIN_SHIFT: f64 = 0.005;
/// Passes of the joint refit of the chosen scopes' extra ratios.
pub const BACKFIT_SWEEPS: usize = 4;
/// At most this many scopes (lone leaves included) are chosen before pruning.
pub const MAX_SCOPES: usize = 32;
/// At most this many qualifying scopes, strongest first, are tested for homogeneity in a step;
/// when none of them is homogeneous the search stops.
pub const MAX_CANDIDATES: usize = 64;

/// Counts of one leaf and the failure ratio it is expected to have.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeafCounts {
    pub attempts: u64,
    pub failures: u64,
    /// Expected failure ratio, in (0, 1].
    pub expected: f64,
}

/// One chosen scope and its figures, with every other chosen scope fitted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Found {
    pub scope: ScopeId,
    /// Failed probes expected in the scope.
    pub expected_failures: f64,
    /// Failed probes observed in the scope.
    pub failures: u64,
    /// Fitted extra failure ratio `r`.
    pub shift: f64,
    /// Log-likelihood gain `G`.
    pub gain: f64,
}

/// The gain of `failures` in `attempts` where every probe expected the same ratio, `expected`
/// failures in all (see the module doc).
pub fn gain(attempts: f64, failures: f64, expected: f64) -> f64 {
    if attempts <= 0.0 || failures <= expected {
        return 0.0;
    }
    let rest = attempts - failures;
    let term = if rest > 0.0 { rest * (rest / (attempts - expected)).ln() } else { 0.0 };
    failures * (failures / expected).ln() + term
}

/// The gain threshold when `searched` canonical scopes are searched: `ln(M / ALPHA)`.
pub fn threshold(searched: usize) -> f64 {
    (searched.max(1) as f64 / ALPHA).ln()
}

/// A leaf's own best gain at its expected ratio: the most it adds to any scope's gain.
fn own_gain(leaf: &LeafCounts) -> f64 {
    gain(leaf.attempts as f64, leaf.failures as f64, leaf.attempts as f64 * leaf.expected)
}

/// Whether a gain bound reaches the threshold (a bound a hair under it, by rounding, does).
fn may_reach(bound: f64, threshold: f64) -> bool {
    bound >= threshold * (1.0 - 1e-9)
}

/// One leaf's failure term of the gain at extra ratio `r`: `f ln(1 + r (1 - e) / e)`.
fn failure_term(failures: u64, expected: f64, r: f64) -> f64 {
    if failures == 0 {
        0.0
    } else {
        failures as f64 * (r * (1.0 - expected) / expected).ln_1p()
    }
}

/// The success term of the gain: `(N - F) ln(1 - r)`, 0 without successes.
fn success_term(x: &Sums, r: f64) -> f64 {
    let rest = x.n - x.f;
    if rest <= 0.0 {
        0.0
    } else {
        rest * (-r).ln_1p()
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    n: f64,
    f: f64,
    e: f64,
}

impl Sums {
    fn add(&mut self, leaf: &LeafCounts, expected: f64) {
        self.n += leaf.attempts as f64;
        self.f += leaf.failures as f64;
        self.e += leaf.attempts as f64 * expected;
    }
    fn shift(&self) -> f64 {
        if self.f <= self.e || self.n <= self.e {
            0.0
        } else {
            (self.f - self.e) / (self.n - self.e)
        }
    }
}

/// The dimensions on which every cell of `scope` agrees.
fn closure(index: &ScopeIndex, scope: ScopeId) -> usize {
    let cells = index.cells(scope);
    let first = cells[0] as usize;
    (0..index.dimensions().len())
        .filter(|&d| cells.iter().all(|&c| index.cell_value(c as usize, d) == index.cell_value(first, d)))
        .fold(0usize, |m, d| m | 1 << d)
}

/// The search over one snapshot.
pub struct Search<'a> {
    index: &'a ScopeIndex,
    leaves: &'a [LeafCounts],
    min_leaves: u32,
    /// Canonical scopes: the `M` of the threshold.
    searched: usize,
    /// The canonical scopes whose gain bound reaches the threshold: the only ones that can
    /// qualify.
    candidates: Vec<ScopeId>,
    threshold: f64,
}

impl<'a> Search<'a> {
    /// Prepares the search; `leaves` are in the index's cell order; scopes of fewer than
    /// `min_leaves` leaves are fitted but not reported.
    pub fn new(index: &'a ScopeIndex, leaves: &'a [LeafCounts], min_leaves: u32) -> Self {
        Self::searching(index, leaves, min_leaves, index.canonical_count())
    }

    /// [`Search::new`] on an index pruned to the scopes that can qualify (see
    /// [`Search::can_qualify`]), of the `searched` canonical scopes the threshold counts.
    pub fn searching(
        index: &'a ScopeIndex,
        leaves: &'a [LeafCounts],
        min_leaves: u32,
        searched: usize,
    ) -> Self {
        let threshold = threshold(searched);
        let mut bound = vec![0.0f64; index.scope_count()];
        for (cell, leaf) in leaves.iter().enumerate() {
            let own = own_gain(leaf);
            if own > 0.0 {
                for &s in index.scopes_of(cell).iter().filter(|&&s| s != NO_SCOPE) {
                    bound[s as usize] += own;
                }
            }
        }
        let candidates = (0..index.scope_count() as ScopeId)
            .filter(|&s| index.is_canonical(s) && may_reach(bound[s as usize], threshold))
            .collect();
        Search { index, leaves, min_leaves, searched, candidates, threshold }
    }

    /// Each leaf's own best gain at its expected ratio: the most it adds to any scope's gain.
    pub fn own_gains(leaves: &[LeafCounts]) -> Vec<f64> {
        leaves.iter().map(own_gain).collect()
    }

    /// Whether a scope of these cells can ever qualify against `threshold`: the sum of their
    /// [`Search::own_gains`] (its gain bound) reaches it. Grows with the cells, as a pruned
    /// index needs.
    pub fn can_qualify(own_gains: &[f64], cells: &[u32], threshold: f64) -> bool {
        may_reach(cells.iter().map(|&c| own_gains[c as usize]).sum(), threshold)
    }

    /// `M`: the canonical scopes searched, the bound ones included.
    pub fn searched(&self) -> usize {
        self.searched
    }

    /// The scopes whose gain bound let them be candidates at all.
    pub fn candidates(&self) -> usize {
        self.candidates.len()
    }

    /// The gain a scope must reach: `ln(M / ALPHA)`.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Runs the search (see the module documentation): the reported scopes, strongest first.
    pub fn run(&self) -> Vec<Found> {
        let mut expected: Vec<f64> = self.leaves.iter().map(|l| l.expected).collect();
        let mut chosen: Vec<ScopeId> = Vec::new();
        let mut sums = vec![Sums::default(); self.index.scope_count()];
        let mut gains = vec![0.0; self.index.scope_count()];
        while chosen.len() < MAX_SCOPES {
            self.gains(&expected, &mut sums, &mut gains);
            let mut qualifying: Vec<(ScopeId, f64)> = self
                .candidates
                .iter()
                .filter(|&&s| sums[s as usize].shift() >= MIN_SHIFT && gains[s as usize] >= self.threshold)
                .map(|&s| (s, gains[s as usize]))
                .collect();
            qualifying.sort_by(|a, b| {
                b.1.total_cmp(&a.1)
                    .then(self.index.fixed_count(a.0).cmp(&self.index.fixed_count(b.0)))
                    .then(a.0.cmp(&b.0))
            });
            let Some(&(s, _)) = qualifying
                .iter()
                .take(MAX_CANDIDATES)
                .find(|(s, _)| self.is_homogeneous(*s, sums[*s as usize].shift(), &expected))
            else {
                break;
            };
            chosen.push(s);
            expected = self.refit(&chosen, None);
        }
        self.generalize(&mut chosen);
        self.prune(chosen)
    }

    /// Sums and gain of every scope under `expected`.
    fn gains(&self, expected: &[f64], sums: &mut [Sums], gains: &mut [f64]) {
        sums.fill(Sums::default());
        gains.fill(0.0);
        for (cell, leaf) in self.leaves.iter().enumerate() {
            for &s in self.index.scopes_of(cell).iter().filter(|&&s| s != NO_SCOPE) {
                sums[s as usize].add(leaf, expected[cell]);
            }
        }
        for (cell, leaf) in self.leaves.iter().enumerate() {
            for &s in self.index.scopes_of(cell).iter().filter(|&&s| s != NO_SCOPE) {
                let r = sums[s as usize].shift();
                if r > 0.0 {
                    gains[s as usize] += failure_term(leaf.failures, expected[cell], r);
                }
            }
        }
        for (g, x) in gains.iter_mut().zip(sums.iter()) {
            let r = x.shift();
            *g = if r > 0.0 { *g + success_term(x, r) } else { 0.0 };
        }
    }

    /// Sums and gain of one scope under `expected`.
    fn scope_gain(&self, scope: ScopeId, expected: &[f64]) -> (Sums, f64) {
        let mut x = Sums::default();
        for &cell in self.index.cells(scope) {
            x.add(&self.leaves[cell as usize], expected[cell as usize]);
        }
        let r = x.shift();
        if r <= 0.0 {
            return (x, 0.0);
        }
        let failures: f64 = self
            .index
            .cells(scope)
            .iter()
            .map(|&c| failure_term(self.leaves[c as usize].failures, expected[c as usize], r))
            .sum();
        (x, failures + success_term(&x, r))
    }

    /// Whether no value of a free dimension is a healthy part of `scope` at extra ratio `r`:
    /// a child is healthy when its gain at `r` is `-ln(C / BETA)` or less, the log-likelihood
    /// ratio of "no fault" against "the scope's fault" on its own leaves.
    fn is_homogeneous(&self, scope: ScopeId, r: f64, expected: &[f64]) -> bool {
        let index = self.index;
        let mut children: Vec<(Sums, f64)> = Vec::new();
        let mut tested = 0usize;
        let mut worst = f64::INFINITY;
        for d in 0..index.dimensions().len() {
            if index.fixed_value(scope, d).is_some() {
                continue;
            }
            children.clear();
            children.resize(index.values(d).len(), (Sums::default(), 0.0));
            for &cell in index.cells(scope) {
                let (leaf, e) = (&self.leaves[cell as usize], expected[cell as usize]);
                let child = &mut children[index.cell_value(cell as usize, d) as usize];
                child.0.add(leaf, e);
                child.1 += failure_term(leaf.failures, e, r);
            }
            let present = children.iter().filter(|c| c.0.n > 0.0).count();
            if present < 2 {
                continue;
            }
            tested += present;
            for (x, failures) in children.iter().filter(|c| c.0.n > 0.0) {
                worst = worst.min(failures + success_term(x, r));
            }
        }
        tested == 0 || worst > -(tested as f64 / BETA).ln()
    }

    /// Expected ratios with every scope of `chosen` but `skip` fitted jointly: a leaf keeps
    /// `(1 - e) * product of (1 - r)` over its chosen scopes, and each scope's `r` is estimated
    /// again with the others held, [`BACKFIT_SWEEPS`] times over, so the first of two
    /// overlapping scopes does not keep the other's failures.
    fn refit(&self, chosen: &[ScopeId], skip: Option<usize>) -> Vec<f64> {
        let scopes: Vec<ScopeId> =
            chosen.iter().enumerate().filter(|&(i, _)| Some(i) != skip).map(|(_, &s)| s).collect();
        let mut keep: Vec<f64> = self.leaves.iter().map(|l| 1.0 - l.expected).collect();
        let mut rates = vec![0.0f64; scopes.len()];
        for _ in 0..BACKFIT_SWEEPS {
            for (k, &s) in scopes.iter().enumerate() {
                let mut x = Sums::default();
                for &cell in self.index.cells(s) {
                    let cell = cell as usize;
                    keep[cell] /= 1.0 - rates[k];
                    x.add(&self.leaves[cell], 1.0 - keep[cell]);
                }
                // Below 1, so the division above can undo it.
                rates[k] = x.shift().min(1.0 - 1e-9);
                for &cell in self.index.cells(s) {
                    keep[cell as usize] *= 1.0 - rates[k];
                }
            }
        }
        keep.into_iter().map(|k| 1.0 - k).collect()
    }

    /// Log-likelihood of every leaf's failures at `expected`.
    fn log_likelihood(&self, expected: &[f64]) -> f64 {
        self.leaves
            .iter()
            .zip(expected)
            .map(|(l, &e)| {
                let f = if l.failures > 0 { l.failures as f64 * e.ln() } else { 0.0 };
                let rest = (l.attempts - l.failures) as f64;
                f + if rest > 0.0 { rest * (-e).ln_1p() } else { 0.0 }
            })
            .sum()
    }

    /// Replaces a chosen scope by a parent (one fixed dimension freed) when the parent is
    /// homogeneous and the refitted model explains the leaves at least as well with it: of a
    /// weak cause under a strong overlapping one, the greedy step can take only the part the
    /// strong one does not cover (`protocol=kafka&network=public` under `network=private`).
    fn generalize(&self, chosen: &mut [ScopeId]) {
        let mut changed = true;
        while changed {
            changed = false;
            for i in 0..chosen.len() {
                let current = self.log_likelihood(&self.refit(chosen, None));
                let others = self.refit(chosen, Some(i));
                for parent in self.parents(chosen[i]) {
                    if chosen.contains(&parent) {
                        continue;
                    }
                    let (x, _) = self.scope_gain(parent, &others);
                    if !self.is_homogeneous(parent, x.shift(), &others) {
                        continue;
                    }
                    let previous = std::mem::replace(&mut chosen[i], parent);
                    if self.log_likelihood(&self.refit(chosen, None)) >= current {
                        changed = true;
                        break;
                    }
                    chosen[i] = previous;
                }
            }
        }
    }

    /// The canonical scopes just above `scope`: of the indexed scopes that fix some of the
    /// labels its cells share (a broker's cells share its zone and protocol too) and hold more
    /// cells, those that contain no other such scope.
    fn parents(&self, scope: ScopeId) -> Vec<ScopeId> {
        let index = self.index;
        let first = index.cells(scope)[0] as usize;
        let shared = closure(index, scope);
        // Every subset of the shared dimensions, in ascending mask order: the scope of `first`
        // that fixes them.
        let mut subsets = vec![shared];
        let mut mask = shared;
        while mask != 0 {
            mask = (mask - 1) & shared;
            subsets.push(mask);
        }
        let mut above: Vec<ScopeId> = Vec::new();
        for mask in subsets.into_iter().rev() {
            if let Some(p) = index.scope_of(first, mask) {
                if index.is_canonical(p) && index.total(p) > index.total(scope) && !above.contains(&p) {
                    above.push(p);
                }
            }
        }
        // All of them hold `first`, so `q` lies inside `p` exactly when `q`'s cells agree on
        // every dimension `p` fixes.
        let closures: Vec<usize> = above.iter().map(|&q| closure(index, q)).collect();
        (0..above.len())
            .filter(|&i| {
                let fixed = index.mask(above[i]);
                !(0..above.len()).any(|j| j != i && closures[j] & fixed == fixed)
            })
            .map(|i| above[i])
            .collect()
    }

    /// Drops chosen scopes that add less than the threshold to the others; the figures of the
    /// rest are leave-one-out, strongest first.
    fn prune(&self, mut chosen: Vec<ScopeId>) -> Vec<Found> {
        loop {
            let found: Vec<Found> = (0..chosen.len())
                .map(|i| {
                    let expected = self.refit(&chosen, Some(i));
                    let (x, gain) = self.scope_gain(chosen[i], &expected);
                    Found {
                        scope: chosen[i],
                        expected_failures: x.e,
                        failures: x.f as u64,
                        shift: x.shift(),
                        gain,
                    }
                })
                .collect();
            let weakest = (0..found.len()).min_by(|&a, &b| found[a].gain.total_cmp(&found[b].gain));
            match weakest {
                Some(w) if found[w].gain < self.threshold || found[w].shift < MIN_SHIFT => {
                    chosen.remove(w);
                }
                _ => {
                    let mut found = found;
                    found.retain(|f| self.index.total(f.scope) >= self.min_leaves);
                    found.sort_by(|a, b| {
                        b.gain
                            .total_cmp(&a.gain)
                            .then(self.index.fixed_count(a.scope).cmp(&self.index.fixed_count(b.scope)))
                            .then(a.scope.cmp(&b.scope))
                    });
                    return found;
                }
            }
        }
    }
}
