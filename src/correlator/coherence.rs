//! Coherence: whether a scope's failing cells are unlikely to be a coincidence, so that the scope
//! may be blamed, and whether the evidence is strong enough to confirm it at once.
//!
//! Two tests, both needed before a scope that is not active yet may enter (an active scope keeps
//! its hysteresis):
//!
//! 1. **Onset coherence.** Each cell in a failure episode (failing or recovering) has an onset:
//!    the tick it turned failing. A fault of a scope reaches its cells within a probe round or
//!    two, so cells whose onsets lie within `onset_rounds` probe rounds of each other
//!    corroborate each other. Per scope, the largest such group of its cells (the latest of
//!    equal groups) is its *coherent* group; its other cells in an episode began failing long
//!    before or after and are set aside. The coherent group alone must meet
//!    `min_failing_cells` and `enter_ratio`. A cell stuck for an hour next to a fresh transient
//!    makes two groups of one: no scope, two `suspect` cells.
//! 2. **Significance against the background.** The scope's probe failures are summed over its
//!    healthy cells and its coherent group (additive counts over each cell's window; set-aside
//!    cells are left out), and tested against the matrix's background failure ratio `p0` (the
//!    healthy cells' failures over their attempts, at least `background_floor`) with a
//!    one-sided binomial tail: `P(Binomial(attempts, p0) >= failures)`. The scope passes when
//!    that tail is at most `significance / S`, `S` being the number of canonical scopes: a
//!    Bonferroni split, so the chance that *any* scope of the matrix passes by coincidence at a
//!    given tick is at most `significance` (1e-8 by default: at one tick a second, well under
//!    one coincidence a year even if every tick were an independent draw).
//!
//! **Strong evidence** lets a scope enter on the tick it passes, without `enter_ticks` on top of
//! its cells' k-of-n windows: it passes both tests, and its *sustained* cells (coherent cells
//! failing now whose latest `blip_rounds + 1` or more probes all failed) alone meet
//! `min_failing_cells` and `enter_ratio`. A failure of at most `blip_rounds` probe rounds can
//! therefore never confirm a scope this way.
//!
//! Rounds and ticks: onsets are ticks; a cell's probe round is the number of ticks between its
//! last two outcomes (at least 1), and a group's window is `onset_rounds` times the longest round
//! among its cells. With the defaults (1 s interval, 1 s tick) a round is a tick.

use super::scopes::{ScopeId, ScopeIndex};
use super::window::{CellState, CellWindow};

/// The coherence parameters, taken from `[correlator]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CoherenceSettings {
    pub onset_rounds: u32,
    pub blip_rounds: u32,
    pub significance: f64,
    pub background_floor: f64,
    pub min_failing_cells: u32,
    pub enter_ratio: f64,
}

impl From<&crate::config::CorrelatorSettings> for CoherenceSettings {
    fn from(s: &crate::config::CorrelatorSettings) -> Self {
        CoherenceSettings {
            onset_rounds: s.onset_rounds,
            blip_rounds: s.blip_rounds,
            significance: s.significance,
            background_floor: s.background_floor,
            min_failing_cells: s.min_failing_cells,
            enter_ratio: s.enter_ratio,
        }
    }
}

/// What one tick concluded about one scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Entry {
    /// Cells of the coherent group.
    pub coherent: u32,
    /// The scope may enter: coherent and significant.
    pub may_enter: bool,
    /// ...and on strong evidence: it may enter at once.
    pub strong: bool,
}

/// Per-cell inputs of one evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Cells<'a> {
    pub windows: &'a [CellWindow],
    /// Tick each cell turned failing in its current episode.
    pub onsets: &'a [u64],
    /// Ticks per probe round of each cell, at least 1.
    pub rounds: &'a [u32],
}

/// Scratch space and results of the coherence tests for one scope index.
#[derive(Debug, Clone)]
pub struct Coherence {
    settings: CoherenceSettings,
    /// `ln(significance / canonical scopes)`: the largest log tail that passes.
    log_alpha: f64,
    entries: Vec<Entry>,
    touched: Vec<ScopeId>,
    /// `(onset, cell)` of every cell in an episode, sorted.
    onsets: Vec<(u64, u32)>,
    /// Per canonical scope, its cells in an episode as `(onset, cell)`, in onset order; only
    /// the `touched` scopes' lists are non-empty. Kept across ticks for their capacity.
    groups: Vec<Vec<(u64, u32)>>,
    in_group: Vec<bool>,
    background: f64,
}

impl Coherence {
    pub fn new(index: &ScopeIndex, settings: CoherenceSettings) -> Self {
        let tests = index.canonical_count().max(1) as f64;
        Coherence {
            settings,
            log_alpha: (settings.significance / tests).ln(),
            entries: vec![Entry::default(); index.scope_count()],
            touched: Vec::new(),
            onsets: Vec::new(),
            groups: vec![Vec::new(); index.scope_count()],
            in_group: vec![false; index.cell_count()],
            background: settings.background_floor,
        }
    }

    /// The parameters in use.
    pub fn settings(&self) -> &CoherenceSettings {
        &self.settings
    }

    /// The result of the last [`Coherence::evaluate`] for `scope`.
    pub fn entry(&self, scope: ScopeId) -> Entry {
        self.entries.get(scope as usize).copied().unwrap_or_default()
    }

    /// The background failure ratio of the last evaluation.
    pub fn background(&self) -> f64 {
        self.background
    }

    /// Runs both tests for every scope that holds a cell in a failure episode.
    pub fn evaluate(&mut self, index: &ScopeIndex, cells: Cells<'_>) {
        for &s in &self.touched {
            self.entries[s as usize] = Entry::default();
            self.groups[s as usize].clear();
        }
        self.touched.clear();
        self.onsets.clear();
        let (mut attempts, mut failures) = (0u64, 0u64);
        for (c, w) in cells.windows.iter().enumerate() {
            if w.state() == CellState::Healthy {
                attempts += u64::from(w.attempts());
                failures += u64::from(w.failures());
            }
            if w.state().in_episode() {
                self.onsets.push((cells.onsets[c], c as u32));
            }
        }
        let observed = if attempts == 0 { 0.0 } else { failures as f64 / attempts as f64 };
        self.background = observed.max(self.settings.background_floor);
        // Sorting the cells once by onset and then handing them to their scopes keeps every
        // scope's list in onset order: sorting (scope, onset) pairs instead costs 2^D times more.
        self.onsets.sort_unstable();
        for &(onset, c) in &self.onsets {
            for &s in index.scopes_of(c as usize) {
                if index.is_canonical(s) {
                    let group = &mut self.groups[s as usize];
                    if group.is_empty() {
                        self.touched.push(s);
                    }
                    group.push((onset, c));
                }
            }
        }
        self.touched.sort_unstable();

        let st = self.settings;
        let needed = |n: u32, s: ScopeId| {
            n >= st.min_failing_cells && f64::from(n) >= st.enter_ratio * f64::from(index.total(s)) - 1e-9
        };
        for &s in &self.touched {
            let group = &self.groups[s as usize];
            let window = onset_window(st.onset_rounds, group.iter().map(|&(_, c)| cells.rounds[c as usize]));
            let coherent = &group[largest_run(|i| group[i].0, group.len(), window)];
            let mut entry = Entry { coherent: coherent.len() as u32, ..Entry::default() };
            if needed(entry.coherent, s) {
                for &(_, c) in coherent {
                    self.in_group[c as usize] = true;
                }
                let (mut n, mut x) = (0u64, 0u64);
                for &c in index.cells(s) {
                    let w = &cells.windows[c as usize];
                    if w.state() == CellState::Healthy || self.in_group[c as usize] {
                        n += u64::from(w.attempts());
                        x += u64::from(w.failures());
                    }
                }
                let sustained = coherent
                    .iter()
                    .filter(|&&(_, c)| {
                        let w = &cells.windows[c as usize];
                        w.state() == CellState::Failing && w.run() > st.blip_rounds
                    })
                    .count() as u32;
                for &(_, c) in coherent {
                    self.in_group[c as usize] = false;
                }
                entry.may_enter = ln_binomial_tail(x, n, self.background) <= self.log_alpha;
                entry.strong = entry.may_enter && needed(sustained, s);
            }
            self.entries[s as usize] = entry;
        }
    }
}

/// The onset window of a group of cells: `onset_rounds` of the longest probe round (in ticks)
/// among them.
pub fn onset_window(onset_rounds: u32, rounds: impl Iterator<Item = u32>) -> u64 {
    u64::from(onset_rounds) * u64::from(rounds.max().unwrap_or(1).max(1))
}

/// Of `len` onsets in ascending order (`onset(i)`), the largest run lying within `window` of
/// each other, the latest of equal runs.
pub fn largest_run(onset: impl Fn(usize) -> u64, len: usize, window: u64) -> std::ops::Range<usize> {
    let (mut best, mut lo) = (0..0, 0usize);
    for hi in 0..len {
        while onset(hi) - onset(lo) > window {
            lo += 1;
        }
        if hi + 1 - lo >= best.len() {
            best = lo..hi + 1;
        }
    }
    best
}

/// `ln P(X >= x)` for `X ~ Binomial(n, p)`, `0 < p < 1`. Exact up to floating point: the first
/// term in logs, then the ratio of successive terms, which fall geometrically above the mean.
pub fn ln_binomial_tail(x: u64, n: u64, p: f64) -> f64 {
    if x == 0 {
        return 0.0;
    }
    if x > n {
        return f64::NEG_INFINITY;
    }
    let (nf, xf) = (n as f64, x as f64);
    if xf <= nf * p {
        // At or below the mean the tail is at least about one half: never significant.
        return 0.0;
    }
    let first =
        ln_factorial(n) - ln_factorial(x) - ln_factorial(n - x) + xf * p.ln() + (nf - xf) * (-p).ln_1p();
    let odds = p / (1.0 - p);
    let (mut sum, mut term) = (1.0f64, 1.0f64);
    for k in x..n {
        term *= (n - k) as f64 / (k + 1) as f64 * odds;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    (first + sum.ln()).min(0.0)
}

/// `ln(m!)`: summed exactly below 32, Stirling's series above (error below 1e-12 there).
fn ln_factorial(m: u64) -> f64 {
    if m < 32 {
        return (2..=m).map(|i| (i as f64).ln()).sum();
    }
    let x = m as f64;
    x * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI * x).ln() + 1.0 / (12.0 * x)
        - 1.0 / (360.0 * x * x * x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CorrelatorSettings;
    use crate::correlator::testkit::{cells_matching, grid};
    use crate::correlator::window::WindowSettings;

    /// `P(X >= x)` summed term by term with exact binomial coefficients.
    fn direct_tail(x: u64, n: u64, p: f64) -> f64 {
        let choose = |n: u64, k: u64| -> f64 {
            (0..k).fold(1u128, |a, i| a * (n - i) as u128 / (i + 1) as u128) as f64
        };
        (x..=n).map(|k| choose(n, k) * p.powi(k as i32) * (1.0 - p).powi((n - k) as i32)).sum()
    }

    #[test]
    fn binomial_tail_matches_the_direct_sum() {
        for &(x, n, p) in
            &[(6, 10, 0.05), (1, 10, 0.05), (24, 40, 0.01), (6, 15, 0.2), (40, 40, 0.3), (5, 60, 0.01)]
        {
            let (got, want) = (ln_binomial_tail(x, n, p), direct_tail(x, n, p).ln());
            assert!(
                (got - want).abs() < 1e-6 * want.abs().max(1.0),
                "P(X >= {x} | {n}, {p}): {got} vs {want}"
            );
        }
        assert_eq!(ln_binomial_tail(0, 10, 0.1), 0.0);
        assert_eq!(ln_binomial_tail(1, 100, 0.5), 0.0, "below the mean: not significant");
        let exact: f64 = (2..=40u64).map(|i| (i as f64).ln()).sum();
        assert!((ln_factorial(40) - exact).abs() < 1e-9);
    }

    /// Each group of cells probed `pattern` ('x' failed, '.' ok) after five clean probes and
    /// turned failing at the given onset tick; every other cell is healthy and clean.
    fn evaluate(groups: &[(Vec<usize>, u64, &str)]) -> (ScopeIndex, Coherence) {
        let m = grid();
        let index = ScopeIndex::new(&m).unwrap();
        let settings = CorrelatorSettings::default();
        let ws = WindowSettings::from(&settings);
        let mut windows = vec![CellWindow::default(); m.len()];
        let mut onsets = vec![0u64; m.len()];
        for w in windows.iter_mut() {
            for _ in 0..5 {
                w.record(false, &ws);
            }
        }
        for (cells, onset, pattern) in groups {
            for &c in cells {
                for p in pattern.chars() {
                    windows[c].record(p == 'x', &ws);
                }
                onsets[c] = *onset;
            }
        }
        let mut coherence = Coherence::new(&index, CoherenceSettings::from(&settings));
        let rounds = vec![1u32; m.len()];
        coherence.evaluate(&index, Cells { windows: &windows, onsets: &onsets, rounds: &rounds });
        (index, coherence)
    }

    #[test]
    fn onsets_and_significance_decide_entry() {
        let m = grid();
        let zone_b = cells_matching(&m, &[vec![("az", "b")]]);
        let (index, c) = evaluate(&[(zone_b.clone(), 100, "xxx")]);
        let e = c.entry(index.find(&[("az", "b")]).unwrap());
        assert_eq!(e, Entry { coherent: 8, may_enter: true, strong: true }, "a zone failing together");

        // Failing (3 of 5), but the latest run of failures is 2 rounds, within the blip
        // tolerance: coherent and significant, not strong.
        let (index, c) = evaluate(&[(zone_b.clone(), 100, "x..xx")]);
        let e = c.entry(index.find(&[("az", "b")]).unwrap());
        assert!(e.may_enter && !e.strong, "{e:?}");

        // Half the zone's cells began failing at 10, the other half at 100.
        let (early, late) = zone_b.split_at(4);
        let (index, c) = evaluate(&[(early.to_vec(), 10, "xxxxx"), (late.to_vec(), 100, "xxx")]);
        let e = c.entry(index.find(&[("az", "b")]).unwrap());
        assert_eq!(e.coherent, 4, "the larger (here: later) group only");
        assert!(e.may_enter, "4 of 8 coherent cells still meet enter_ratio");

        // One stuck cell and a fresh transient in the same pair: two groups of one.
        let pair = cells_matching(&m, &[vec![("az", "b"), ("tenant", "acme")]]);
        let (index, c) = evaluate(&[(vec![pair[0]], 10, "xxxxx"), (vec![pair[1]], 100, "xxx")]);
        let e = c.entry(index.find(&[("az", "b"), ("tenant", "acme")]).unwrap());
        assert_eq!(e, Entry { coherent: 1, may_enter: false, strong: false });
        // The same pair failing together is a scope.
        let (index, c) = evaluate(&[(pair.clone(), 100, "xxxxx")]);
        let e = c.entry(index.find(&[("az", "b"), ("tenant", "acme")]).unwrap());
        assert!(e.may_enter && e.strong, "{e:?}");
        // ...but three failures each in a pair are not significant at 1e-8 over the grid's
        // scopes: 6 of 10 probes against 1% is about 2e-10 (the floor of the background).
        let (index, c) = evaluate(&[(pair, 100, "xxx")]);
        let e = c.entry(index.find(&[("az", "b"), ("tenant", "acme")]).unwrap());
        assert_eq!(e, Entry { coherent: 2, may_enter: false, strong: false });
    }
}
