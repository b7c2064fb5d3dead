//! The explanation: which scopes account for the failing cells. One pure function, used by the
//! live correlator every tick (and so by `replay`).
//!
//! 1. Count failing cells per scope: each failing cell adds one to each of its 2^D scopes, so
//!    the work is proportional to the failing cells, not to the matrix.
//! 2. Candidates: canonical scopes (see [`ScopeIndex`]) with `failing >= min_failing_cells` and
//!    `failing / total >= enter_ratio`, or `>= exit_ratio` for a scope already active (leaving
//!    is easier than entering). A scope that is not active must also pass the caller's entry
//!    test (the live correlator's coherence, see [`coherence`](super::coherence)).
//! 3. Exactness: a scope that is not active is not a candidate when, fixing one more
//!    dimension, one of its sub-scopes is wholly healthy (no failing cell: a healthy zone,
//!    tenant, protocol, broker) while every sub-scope that does fail could be named itself (it
//!    meets `min_failing_cells` and the ratio). The coarse scope would tell the reader "all of
//!    it" where a whole value is fine; its failing sub-scopes say exactly where. A healthy
//!    sub-scope too small to stand for itself (one cell of a broker's four) does not split its
//!    parent: the parent is then the exact name. An active scope is exempt: when part of it
//!    recovers first, splitting it would open new, narrower tickets in the middle of its own
//!    recovery.
//! 4. Greedy weighted set cover of the failing cells. Choosing a scope costs
//!    `1 + LAMBDA * healthy cells in it`, with `LAMBDA` = 0.1; leaving a failing cell unexplained
//!    costs 1. Repeatedly take the candidate with the lowest cost per failing cell it newly
//!    covers; ties go to fewer fixed dimensions, then more failing cells, then the lower scope
//!    id (dimension order, then value). Stop when the best candidate costs 1.0 or more per new
//!    cell: explaining those cells would cost more than calling them noise.
//! 5. Failing cells that no chosen scope covers stay unexplained.
//!
//! `LAMBDA` sets how many healthy cells a scope may carry among the exact candidates: a coarse
//! scope wins over its children as long as covering all of them at once is cheaper than one
//! scope each. On 3 zones x 4 tenants x 2 protocols: zone b down -> `{az=b}`; amqp down in zones
//! a and b for three tenants -> `{broker=r-a}` and `{broker=r-b}` (`{protocol=amqp}`, 1.6 / 6,
//! is not a candidate: its zone c is wholly healthy, and each broker, 3 of 4 failing, can be
//! named; its healthy tenant umbrella is one cell per broker, too small to split a broker);
//! zones b and c down -> `{az=b}`, `{az=c}` (not `{}`, whose zone a is healthy); zone b plus
//! tenant acme -> `{az=b}` then `{tenant=acme}`, not `{}` (2.2 / 12 loses to 1 / 8).

use super::scopes::{ScopeId, ScopeIndex};
use crate::config::CorrelatorSettings;

/// Cost of one healthy cell inside a chosen scope, relative to one unexplained failing cell:
/// `LAMBDA_NUM / LAMBDA_DEN` = 0.1. Kept as a fraction so costs compare exactly.
pub const LAMBDA_NUM: u64 = 1;
/// See [`LAMBDA_NUM`].
pub const LAMBDA_DEN: u64 = 10;

/// The candidate thresholds, taken from `[correlator]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub min_failing_cells: u32,
    pub enter_ratio: f64,
    pub exit_ratio: f64,
}

impl From<&CorrelatorSettings> for Thresholds {
    fn from(s: &CorrelatorSettings) -> Self {
        Thresholds {
            min_failing_cells: s.min_failing_cells,
            enter_ratio: s.enter_ratio,
            exit_ratio: s.exit_ratio,
        }
    }
}

/// One chosen scope and the failing cells it was the first to cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub scope: ScopeId,
    pub explained: u32,
}

/// Scratch buffers sized for one index, reused across calls so a tick allocates nothing big.
/// They carry no state from one call to the next: the result depends only on the inputs. After
/// a call, the per-scope and per-cell figures of that call can be read.
#[derive(Debug, Clone)]
pub struct Workspace {
    failing: Vec<u32>,
    uncovered: Vec<u32>,
    active: Vec<bool>,
    /// Scopes with a non-zero `failing`, to reset and scan only those.
    touched: Vec<ScopeId>,
    is_failing: Vec<bool>,
    covered: Vec<bool>,
    marked: Vec<u32>,
    candidates: Vec<ScopeId>,
    children: Vec<ScopeId>,
}

impl Workspace {
    pub fn new(index: &ScopeIndex) -> Self {
        let (s, c) = (index.scope_count(), index.cell_count());
        Workspace {
            failing: vec![0; s],
            uncovered: vec![0; s],
            active: vec![false; s],
            touched: Vec::new(),
            is_failing: vec![false; c],
            covered: vec![false; c],
            marked: Vec::new(),
            candidates: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Failing cells in `scope` at the last call.
    pub fn failing(&self, scope: ScopeId) -> u32 {
        self.failing[scope as usize]
    }

    /// Whether `cell` was failing at the last call.
    pub fn is_failing(&self, cell: usize) -> bool {
        self.is_failing[cell]
    }

    /// Whether `cell` was failing and covered by a chosen scope at the last call.
    pub fn is_covered(&self, cell: usize) -> bool {
        self.covered[cell]
    }

    /// Number of distinct failing cells at the last call.
    pub fn failing_cells(&self) -> usize {
        self.marked.len()
    }

    fn reset(&mut self) {
        for &s in &self.touched {
            self.failing[s as usize] = 0;
            self.uncovered[s as usize] = 0;
        }
        for &c in &self.marked {
            self.is_failing[c as usize] = false;
            self.covered[c as usize] = false;
        }
        self.touched.clear();
        self.marked.clear();
        self.candidates.clear();
    }
}

/// Chooses the scopes that explain `failing` cells (indices into the matrix; out-of-range and
/// repeated entries are ignored), in the order they were picked. `active` scopes qualify with
/// the looser exit ratio. See the module documentation for the algorithm.
pub fn explain(
    index: &ScopeIndex,
    failing: &[usize],
    active: &[ScopeId],
    thresholds: &Thresholds,
    ws: &mut Workspace,
) -> Vec<Choice> {
    explain_with(index, failing, active, thresholds, |_| true, ws)
}

/// [`explain`], where a scope that is not active is a candidate only when `may_enter` accepts
/// it (an active scope keeps its hysteresis).
pub fn explain_with(
    index: &ScopeIndex,
    failing: &[usize],
    active: &[ScopeId],
    thresholds: &Thresholds,
    may_enter: impl Fn(ScopeId) -> bool,
    ws: &mut Workspace,
) -> Vec<Choice> {
    ws.reset();
    for &cell in failing {
        if cell >= index.cell_count() || ws.is_failing[cell] {
            continue;
        }
        ws.is_failing[cell] = true;
        ws.marked.push(cell as u32);
        for &s in index.scopes_of(cell) {
            if ws.failing[s as usize] == 0 {
                ws.touched.push(s);
            }
            ws.failing[s as usize] += 1;
        }
    }
    for &s in active {
        if let Some(a) = ws.active.get_mut(s as usize) {
            *a = true;
        }
    }
    let nameable = |ws: &Workspace, s: ScopeId| {
        let f = ws.failing[s as usize];
        let ratio = if ws.active[s as usize] { thresholds.exit_ratio } else { thresholds.enter_ratio };
        f >= thresholds.min_failing_cells && f64::from(f) >= ratio * f64::from(index.total(s)) - 1e-9
    };
    for i in 0..ws.touched.len() {
        let s = ws.touched[i];
        ws.uncovered[s as usize] = ws.failing[s as usize];
        if !index.is_canonical(s) || !nameable(ws, s) || !(ws.active[s as usize] || may_enter(s)) {
            continue;
        }
        if !ws.active[s as usize] && !is_exact(index, s, ws, &nameable) {
            continue;
        }
        ws.candidates.push(s);
    }
    for &s in active {
        if let Some(a) = ws.active.get_mut(s as usize) {
            *a = false;
        }
    }

    // Cost in units of 1 / LAMBDA_DEN, so every comparison is on integers.
    let cost = |s: ScopeId, f: u32| LAMBDA_DEN + LAMBDA_NUM * u64::from(index.total(s) - f);
    let mut chosen = Vec::new();
    loop {
        let mut best: Option<(ScopeId, u64, u64)> = None;
        for &s in &ws.candidates {
            let new = u64::from(ws.uncovered[s as usize]);
            if new == 0 {
                continue;
            }
            let f = ws.failing[s as usize];
            let c = cost(s, f);
            let better = match best {
                None => true,
                Some((b, bc, bn)) => (c * bn)
                    .cmp(&(bc * new))
                    .then(index.fixed_count(s).cmp(&index.fixed_count(b)))
                    .then(ws.failing[b as usize].cmp(&f))
                    .then(s.cmp(&b))
                    .is_lt(),
            };
            if better {
                best = Some((s, c, new));
            }
        }
        let Some((s, c, new)) = best else { break };
        if c >= LAMBDA_DEN * new {
            break;
        }
        for &cell in index.cells(s) {
            let cell = cell as usize;
            if ws.is_failing[cell] && !ws.covered[cell] {
                ws.covered[cell] = true;
                for &t in index.scopes_of(cell) {
                    ws.uncovered[t as usize] -= 1;
                }
            }
        }
        chosen.push(Choice { scope: s, explained: new as u32 });
    }
    chosen
}

/// Whether no dimension splits `scope` into a wholly healthy sub-scope and failing sub-scopes
/// that could each be named (module documentation, step 3).
fn is_exact(
    index: &ScopeIndex,
    scope: ScopeId,
    ws: &mut Workspace,
    nameable: &impl Fn(&Workspace, ScopeId) -> bool,
) -> bool {
    let mask = index.mask(scope);
    for d in (0..index.dimensions().len()).filter(|&d| mask & (1 << d) == 0) {
        let mut children = std::mem::take(&mut ws.children);
        children.clear();
        children.extend(index.cells(scope).iter().filter_map(|&c| index.scope_of(c as usize, mask | 1 << d)));
        children.sort_unstable();
        children.dedup();
        let healthy = children.iter().any(|&c| ws.failing[c as usize] == 0);
        let split = healthy && children.iter().all(|&c| ws.failing[c as usize] == 0 || nameable(ws, c));
        ws.children = children;
        if split {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlator::testkit::{cells_matching, grid, nested, scope};
    use crate::matrix::Matrix;

    type Pairs = Vec<(&'static str, &'static str)>;
    type Scope = Vec<(String, String)>;

    fn choose(m: &Matrix, failing: &[usize], active: &[ScopeId]) -> (ScopeIndex, Vec<ScopeId>) {
        let index = ScopeIndex::new(m).unwrap();
        let th = Thresholds::from(&CorrelatorSettings::default());
        let chosen = explain(&index, failing, active, &th, &mut Workspace::new(&index));
        (index, chosen.into_iter().map(|c| c.scope).collect())
    }

    /// Explains the cells matching any of `faults` on `m`, as label pairs.
    fn explain_on(m: &Matrix, faults: &[Pairs]) -> Vec<Vec<(String, String)>> {
        let (index, chosen) = choose(m, &cells_matching(m, faults), &[]);
        chosen
            .into_iter()
            .map(|s| index.labels(s).map(|(d, v)| (d.to_owned(), v.to_owned())).collect())
            .collect()
    }

    #[test]
    fn worked_checks() {
        let amqp_ab_3_tenants: Vec<Pairs> = ["a", "b"]
            .into_iter()
            .flat_map(|az| {
                ["acme", "globex", "initech"].map(|t| vec![("az", az), ("tenant", t), ("protocol", "amqp")])
            })
            .collect();
        let cases: Vec<(&str, Vec<Pairs>, Vec<Scope>)> = vec![
            ("zone b", vec![vec![("az", "b")]], vec![scope(&[("az", "b")])]),
            ("tenant acme everywhere", vec![vec![("tenant", "acme")]], vec![scope(&[("tenant", "acme")])]),
            (
                "amqp in a and b for 3 of 4 tenants: its two brokers, zone c's amqp being healthy",
                amqp_ab_3_tenants,
                vec![scope(&[("broker", "r-a")]), scope(&[("broker", "r-b")])],
            ),
            (
                "amqp in a and b for every tenant",
                vec![vec![("protocol", "amqp"), ("az", "a")], vec![("protocol", "amqp"), ("az", "b")]],
                vec![scope(&[("broker", "r-a")]), scope(&[("broker", "r-b")])],
            ),
            ("amqp everywhere", vec![vec![("protocol", "amqp")]], vec![scope(&[("protocol", "amqp")])]),
            (
                "zones b and c, zone a healthy: the two zones, not everything",
                vec![vec![("az", "b")], vec![("az", "c")]],
                vec![scope(&[("az", "b")]), scope(&[("az", "c")])],
            ),
            (
                "tenant globex in zones a and b: named with its zones",
                vec![vec![("tenant", "globex"), ("az", "a")], vec![("tenant", "globex"), ("az", "b")]],
                vec![
                    scope(&[("az", "a"), ("tenant", "globex")]),
                    scope(&[("az", "b"), ("tenant", "globex")]),
                ],
            ),
            (
                // Not the zone, whose tenant umbrella is healthy; the zone's two brokers, 3 of 4
                // failing each, are cheaper than three tenant pairs.
                "zone b but one tenant: its brokers",
                vec![
                    vec![("az", "b"), ("tenant", "acme")],
                    vec![("az", "b"), ("tenant", "globex")],
                    vec![("az", "b"), ("tenant", "initech")],
                ],
                vec![scope(&[("broker", "k-b")]), scope(&[("broker", "r-b")])],
            ),
            (
                "zone b but one cell: still the zone (no wholly healthy value)",
                vec![
                    vec![("az", "b"), ("protocol", "amqp")],
                    vec![("az", "b"), ("tenant", "acme")],
                    vec![("az", "b"), ("tenant", "globex")],
                    vec![("az", "b"), ("tenant", "initech")],
                ],
                vec![scope(&[("az", "b")])],
            ),
            ("everything", vec![vec![]], vec![scope(&[])]),
            (
                "zone b and tenant acme",
                vec![vec![("az", "b")], vec![("tenant", "acme")]],
                vec![scope(&[("az", "b")]), scope(&[("tenant", "acme")])],
            ),
            (
                "a pair",
                vec![vec![("az", "b"), ("tenant", "acme")]],
                vec![scope(&[("az", "b"), ("tenant", "acme")])],
            ),
            ("one cell", vec![vec![("az", "b"), ("tenant", "acme"), ("protocol", "kafka")]], vec![]),
            (
                "four unrelated cells",
                vec![
                    vec![("az", "a"), ("tenant", "acme"), ("protocol", "kafka")],
                    vec![("az", "b"), ("tenant", "globex"), ("protocol", "amqp")],
                    vec![("az", "c"), ("tenant", "initech"), ("protocol", "kafka")],
                    vec![("az", "a"), ("tenant", "umbrella"), ("protocol", "amqp")],
                ],
                vec![],
            ),
            ("no failing cell", vec![], vec![]),
        ];
        for (name, faults, want) in cases {
            assert_eq!(explain_on(&grid(), &faults), want, "{name}");
        }
    }

    #[test]
    fn nested_brokers_are_named_by_broker() {
        let m = nested();
        assert_eq!(explain_on(&m, &[vec![("broker", "k-b1")]]), vec![scope(&[("broker", "k-b1")])]);
        // Both Kafka brokers of zone b: the zone's Kafka, not two brokers.
        assert_eq!(
            explain_on(&m, &[vec![("broker", "k-b1")], vec![("broker", "k-b2")]]),
            vec![scope(&[("az", "b"), ("protocol", "kafka")])]
        );
        // In the plain grid a broker is its zone's protocol: the broker name is the one kept.
        assert_eq!(
            explain_on(&grid(), &[vec![("az", "b"), ("protocol", "kafka")]]),
            vec![scope(&[("broker", "k-b")])]
        );
    }

    #[test]
    fn active_scopes_use_the_exit_ratio() {
        let m = grid();
        // 3 of zone b's 8 cells on both protocols: below enter (0.5), above exit (0.25).
        let failing = cells_matching(
            &m,
            &[
                vec![("az", "b"), ("tenant", "acme")],
                vec![("az", "b"), ("tenant", "globex"), ("protocol", "kafka")],
            ],
        );
        assert_eq!(failing.len(), 3);
        let (index, fresh) = choose(&m, &failing, &[]);
        let zone_b = index.find(&[("az", "b")]).unwrap();
        let pair = index.find(&[("az", "b"), ("tenant", "acme")]).unwrap();
        assert_eq!(fresh, [pair], "not active: only the pair passes the enter ratio");
        let (_, held) = choose(&m, &failing, &[zone_b]);
        assert_eq!(held, [zone_b], "active: zone b stays a candidate at 3/8 and covers all three");
    }

    #[test]
    fn results_do_not_depend_on_input_order_or_repeats() {
        let m = grid();
        let mut failing = cells_matching(&m, &[vec![("az", "b")]]);
        let (index, a) = choose(&m, &failing, &[]);
        failing.reverse();
        failing.push(failing[0]);
        failing.push(10_000);
        let (_, b) = choose(&m, &failing, &[]);
        assert_eq!(a, b);
        assert_eq!(a, [index.find(&[("az", "b")]).unwrap()]);
    }
}
