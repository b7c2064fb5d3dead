//! `localize` on generated layered faults: precision and recall of the named scopes against
//! the root causes, by number of causes, depth and strength, and the time per case; the
//! algorithm before aggregate evidence (each leaf tested alone, then the live set cover) next to
//! the current one.
//!
//! `cargo bench --bench localize [-- --cases N] [--seed S] [--show N]` (`--show` prints the
//! first N cases the current algorithm gets wrong). `-- --wide-csv ROWS [--seed S]` prints a
//! snapshot of ROWS leaves over ten high-cardinality label columns instead (the input of the
//! time and memory figures in `benches/README.md`).
//!
//! The generator (seeded, deterministic): 3 zones; Kafka with two brokers per zone and RabbitMQ
//! with one node per zone (9 brokers); 20 tenants; an extra label `network` (public, private):
//! 360 leaves, 5 dimensions. Each leaf has 100 to 600 attempts and a baseline drawn
//! log-uniformly in [0.1%, 3%]; its true background is the baseline times a factor in [0.8,
//! 1.25] (baselines are estimates). A case has 0 to 3 root causes; a cause fixes 1 to 3
//! dimensions of a random leaf, is a canonical scope of at least 2 leaves, and neither contains
//! nor lies inside another cause. Half the causes are weak (an extra failure ratio of 1 to 5%,
//! which few leaves show on their own) and half strong (10 to 60%). Half the cases also get one
//! flaky leaf (20 to 100% extra) that is no cause. Failures are binomial draws.
//!
//! Matching: *exact* when a named scope has the cells of a cause. *Loose* when the two cell sets
//! share at least half of their union (Jaccard >= 0.5): an on-call who reads such a scope looks
//! where most of the fault is, and most of what they look at is faulty; `{az=b}` for the
//! Kafka of zone b (80 of 120 leaves) matches, `{tenant=t01}` for tenant t01 in zone b (6 of
//! 18) does not. Precision: named scopes that match some cause over all named scopes. Recall:
//! causes that some named scope matches over all causes.

use std::time::{Duration, Instant};

use crossprobe::config::CorrelatorSettings;
use crossprobe::correlator::{explain, ScopeId, ScopeIndex, Thresholds, Workspace};
use crossprobe::matrix::Matrix;
use crossprobe::offline::localize::{localize, Leaf, Snapshot};

const DIMS: [&str; 5] = ["az", "tenant", "protocol", "broker", "network"];

/// splitmix64: small, seeded, the same on every machine.
struct Draws(u64);

impl Draws {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    fn binomial(&mut self, n: u64, p: f64) -> u64 {
        (0..n).filter(|_| self.unit() < p).count() as u64
    }
}

fn matrix() -> Matrix {
    let mut cells = Vec::new();
    for az in ["a", "b", "c"] {
        let brokers =
            [("kafka", format!("k-{az}1")), ("kafka", format!("k-{az}2")), ("amqp", format!("r-{az}"))];
        for (protocol, broker) in brokers {
            for t in 1..=20 {
                for network in ["public", "private"] {
                    cells.push(vec![
                        az.to_owned(),
                        format!("t{t:02}"),
                        protocol.to_owned(),
                        broker.clone(),
                        network.to_owned(),
                    ]);
                }
            }
        }
    }
    Matrix::from_labels(DIMS.map(String::from).to_vec(), cells)
}

struct Cause {
    scope: ScopeId,
    depth: u32,
    weak: bool,
}

struct Case {
    snapshot: Snapshot,
    causes: Vec<Cause>,
}

fn contains(index: &ScopeIndex, outer: ScopeId, inner: ScopeId) -> bool {
    let outer = index.cells(outer);
    index.cells(inner).iter().all(|c| outer.binary_search(c).is_ok())
}

fn generate(m: &Matrix, index: &ScopeIndex, causes: usize, draws: &mut Draws) -> Case {
    let d = DIMS.len();
    let mut chosen: Vec<Cause> = Vec::new();
    while chosen.len() < causes {
        let cell = draws.below(m.len());
        let depth = 1 + draws.below(3);
        let mut dims: Vec<usize> = (0..d).collect();
        for i in 0..depth {
            let j = i + draws.below(d - i);
            dims.swap(i, j);
        }
        let labels = &m.cells()[cell].labels;
        let pairs: Vec<(&str, &str)> = dims[..depth].iter().map(|&i| (DIMS[i], labels[i].as_str())).collect();
        let Some(scope) = index.find(&pairs) else { continue };
        let clash = chosen.iter().any(|c| contains(index, c.scope, scope) || contains(index, scope, c.scope));
        if !index.is_canonical(scope) || index.total(scope) < 2 || clash {
            continue;
        }
        chosen.push(Cause { scope, depth: index.fixed_count(scope), weak: draws.unit() < 0.5 });
    }
    let mut extra = vec![0.0f64; m.len()];
    for c in &chosen {
        let r = if c.weak { draws.range(0.01, 0.05) } else { draws.range(0.10, 0.60) };
        for &cell in index.cells(c.scope) {
            extra[cell as usize] = 1.0 - (1.0 - extra[cell as usize]) * (1.0 - r);
        }
    }
    if draws.unit() < 0.5 {
        let cell = draws.below(m.len());
        extra[cell] = 1.0 - (1.0 - extra[cell]) * (1.0 - draws.range(0.2, 1.0));
    }
    let leaves = (0..m.len())
        .map(|cell| {
            let attempts = 100 + draws.below(501) as u64;
            let baseline = (draws.range(0.001f64.ln(), 0.03f64.ln())).exp();
            let background = (baseline * draws.range(0.8, 1.25)).min(1.0);
            let ratio = 1.0 - (1.0 - background) * (1.0 - extra[cell]);
            Leaf { attempts, failures: draws.binomial(attempts, ratio), baseline }
        })
        .collect();
    Case { snapshot: Snapshot { matrix: m.clone(), leaves }, causes: chosen }
}

/// The algorithm before aggregate evidence: leaves failing on their own counts, explained by
/// the live correlator's set cover with the default thresholds.
/// Builds its own index, as `localize` did, so the times compare.
fn leaf_by_leaf(snapshot: &Snapshot) -> Vec<ScopeId> {
    let index = &ScopeIndex::new(&snapshot.matrix).expect("the bench matrix");
    let failing: Vec<usize> =
        (0..snapshot.leaves.len()).filter(|&i| snapshot.leaves[i].is_failing()).collect();
    let mut ws = Workspace::new(index);
    let th = Thresholds::from(&CorrelatorSettings::default());
    explain(index, &failing, &[], &th, &mut ws).into_iter().map(|c| c.scope).collect()
}

fn aggregate(index: &ScopeIndex, snapshot: &Snapshot) -> Vec<ScopeId> {
    let found = localize(snapshot, &CorrelatorSettings::default()).expect("a generated snapshot");
    found
        .scopes
        .iter()
        .map(|s| {
            let pairs: Vec<(&str, &str)> =
                s.evidence.labels.0.iter().map(|(d, v)| (d.as_str(), v.as_str())).collect();
            index.find(&pairs).expect("a named scope exists")
        })
        .collect()
}

fn jaccard(index: &ScopeIndex, a: ScopeId, b: ScopeId) -> f64 {
    let (x, y) = (index.cells(a), index.cells(b));
    let shared = x.iter().filter(|c| y.binary_search(c).is_ok()).count();
    shared as f64 / (x.len() + y.len() - shared) as f64
}

/// Hits over totals, for precision or recall.
#[derive(Default, Clone, Copy)]
struct Ratio {
    hits: u32,
    total: u32,
}

impl Ratio {
    fn add(&mut self, hit: bool) {
        self.hits += u32::from(hit);
        self.total += 1;
    }
    fn show(&self) -> String {
        if self.total == 0 {
            "-".to_owned()
        } else {
            format!("{:.2}", f64::from(self.hits) / f64::from(self.total))
        }
    }
}

/// Figures of one algorithm; index 0 exact, 1 loose.
#[derive(Default)]
struct Tally {
    precision_by_causes: [[Ratio; 2]; 4],
    recall_by_causes: [[Ratio; 2]; 4],
    recall_by_depth: [[Ratio; 2]; 4],
    recall_by_strength: [[Ratio; 2]; 2],
    named_by_causes: [u32; 4],
    cases_by_causes: [u32; 4],
    all_right_by_causes: [u32; 4],
    time: Duration,
    slowest: Duration,
    cases: u32,
}

impl Tally {
    fn record(&mut self, index: &ScopeIndex, case: &Case, named: &[ScopeId], took: Duration) {
        let k = case.causes.len();
        self.cases += 1;
        self.cases_by_causes[k] += 1;
        self.named_by_causes[k] += named.len() as u32;
        self.time += took;
        self.slowest = self.slowest.max(took);
        let matches = |loose: bool, a: ScopeId, b: ScopeId| {
            if loose {
                jaccard(index, a, b) >= 0.5
            } else {
                index.cells(a) == index.cells(b)
            }
        };
        for (m, loose) in [false, true].into_iter().enumerate() {
            for &s in named {
                self.precision_by_causes[k][m].add(case.causes.iter().any(|c| matches(loose, s, c.scope)));
            }
            for c in &case.causes {
                let hit = named.iter().any(|&s| matches(loose, s, c.scope));
                self.recall_by_causes[k][m].add(hit);
                self.recall_by_depth[c.depth as usize][m].add(hit);
                self.recall_by_strength[usize::from(c.weak)][m].add(hit);
            }
        }
        let exact =
            named.len() == k && case.causes.iter().all(|c| named.iter().any(|&s| matches(false, s, c.scope)));
        self.all_right_by_causes[k] += u32::from(exact);
    }
}

fn pair(r: &[Ratio; 2]) -> String {
    format!("{} / {}", r[0].show(), r[1].show())
}

fn report(old: &Tally, new: &Tally) {
    println!("\nPrecision and recall, exact / loose, leaf by leaf (before) and aggregate (now):\n");
    println!(concat!(
        "| causes | cases | named per case before | named per case now | precision before | ",
        "precision now | recall before | recall now | all exactly right before | now |"
    ));
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for k in 0..4 {
        let n = old.cases_by_causes[k].max(1) as f64;
        println!(
            "| {k} | {} | {:.3} | {:.3} | {} | {} | {} | {} | {:.2} | {:.2} |",
            old.cases_by_causes[k],
            f64::from(old.named_by_causes[k]) / n,
            f64::from(new.named_by_causes[k]) / n,
            pair(&old.precision_by_causes[k]),
            pair(&new.precision_by_causes[k]),
            pair(&old.recall_by_causes[k]),
            pair(&new.recall_by_causes[k]),
            f64::from(old.all_right_by_causes[k]) / n,
            f64::from(new.all_right_by_causes[k]) / n,
        );
    }
    let total = |t: &Tally, f: fn(&Tally) -> &[[Ratio; 2]; 4]| {
        let mut sum = [Ratio::default(); 2];
        for r in f(t) {
            for m in 0..2 {
                sum[m].hits += r[m].hits;
                sum[m].total += r[m].total;
            }
        }
        sum
    };
    println!(
        "| all | {} | {:.3} | {:.3} | {} | {} | {} | {} | {:.2} | {:.2} |",
        old.cases,
        f64::from(old.named_by_causes.iter().sum::<u32>()) / f64::from(old.cases),
        f64::from(new.named_by_causes.iter().sum::<u32>()) / f64::from(new.cases),
        pair(&total(old, |t| &t.precision_by_causes)),
        pair(&total(new, |t| &t.precision_by_causes)),
        pair(&total(old, |t| &t.recall_by_causes)),
        pair(&total(new, |t| &t.recall_by_causes)),
        f64::from(old.all_right_by_causes.iter().sum::<u32>()) / f64::from(old.cases),
        f64::from(new.all_right_by_causes.iter().sum::<u32>()) / f64::from(new.cases),
    );
    println!("\n| cause | causes | recall before | recall now |");
    println!("|---|---|---|---|");
    for depth in 1..4 {
        println!(
            "| depth {depth} | {} | {} | {} |",
            old.recall_by_depth[depth][0].total,
            pair(&old.recall_by_depth[depth]),
            pair(&new.recall_by_depth[depth])
        );
    }
    for (i, name) in ["strong (10-60%)", "weak (1-5%)"].into_iter().enumerate() {
        println!(
            "| {name} | {} | {} | {} |",
            old.recall_by_strength[i][0].total,
            pair(&old.recall_by_strength[i]),
            pair(&new.recall_by_strength[i])
        );
    }
    for (name, t) in [("before", old), ("now", new)] {
        println!(
            "\ntime per case {name}: mean {:.2} ms, slowest {:.2} ms",
            t.time.as_secs_f64() * 1e3 / f64::from(t.cases),
            t.slowest.as_secs_f64() * 1e3
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let option = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.parse::<u64>().unwrap_or_else(|_| panic!("{name} takes a number")))
            .unwrap_or(default)
    };
    if args.iter().any(|a| a == "--wide-csv") {
        print!(
            "{}",
            crossprobe::correlator::testkit::wide_snapshot_csv(
                option("--wide-csv", 5000),
                option("--seed", 13)
            )
        );
        return;
    }
    let cases = option("--cases", 4000);
    let (show, mut shown) = (option("--show", 0), 0);
    let mut draws = Draws(option("--seed", 13));
    let m = matrix();
    let index = ScopeIndex::new(&m).expect("the bench matrix");
    let (mut old, mut new) = (Tally::default(), Tally::default());
    let started = Instant::now();
    for i in 0..cases {
        let case = generate(&m, &index, (i % 4) as usize, &mut draws);
        let t = Instant::now();
        let named = leaf_by_leaf(&case.snapshot);
        old.record(&index, &case, &named, t.elapsed());
        if std::env::var("TRACE_CASE").is_ok_and(|v| v == i.to_string()) {
            std::env::set_var("TRACE", "1");
        } else {
            std::env::remove_var("TRACE");
        }
        let t = Instant::now();
        let named = aggregate(&index, &case.snapshot);
        new.record(&index, &case, &named, t.elapsed());
        let mut wrong: Vec<ScopeId> = named.clone();
        wrong.sort_unstable();
        let mut want: Vec<ScopeId> = case.causes.iter().map(|c| c.scope).collect();
        want.sort_unstable();
        if shown < show && wrong != want {
            shown += 1;
            let causes: Vec<String> = case
                .causes
                .iter()
                .map(|c| format!("{} ({})", index.describe(c.scope), if c.weak { "weak" } else { "strong" }))
                .collect();
            let named: Vec<String> = named.iter().map(|&s| index.describe(s)).collect();
            println!("case {i}: causes {causes:?}, named {named:?}");
        }
    }
    println!(
        "{cases} cases, {} leaves, {} dimensions, seed {} ({:.1} s)",
        m.len(),
        DIMS.len(),
        option("--seed", 13),
        started.elapsed().as_secs_f64()
    );
    report(&old, &new);
}
