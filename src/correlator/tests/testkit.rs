//! Matrices and drivers shared by the correlator's tests, the integration tests and the
//! benchmarks.

use crate::config::CorrelatorSettings;
use crate::matrix::{Matrix, BASE_DIMENSIONS};
use crossprobe_probes::Outcome;

use super::{Correlator, Labels, Level};

pub const ZONES: [&str; 3] = ["a", "b", "c"];
pub const TENANTS: [&str; 4] = ["acme", "globex", "initech", "umbrella"];

fn dims() -> Vec<String> {
    BASE_DIMENSIONS.iter().map(|s| s.to_string()).collect()
}

/// 3 zones x 4 tenants x 2 protocols, one broker per zone and protocol (`k-a`, `r-a`, ...):
/// 24 cells.
pub fn grid() -> Matrix {
    let mut cells = Vec::new();
    for az in ZONES {
        for tenant in TENANTS {
            for (protocol, b) in [("kafka", "k"), ("amqp", "r")] {
                cells.push(vec![az.into(), tenant.into(), protocol.into(), format!("{b}-{az}")]);
            }
        }
    }
    Matrix::from_labels(dims(), cells)
}

/// 3 zones x 4 tenants with brokers nested in zones: two Kafka brokers (`k-a1`, `k-a2`) and
/// one RabbitMQ node (`r-a`) per zone: 36 cells.
pub fn nested() -> Matrix {
    let mut cells = Vec::new();
    for az in ZONES {
        for tenant in TENANTS {
            for (protocol, broker) in
                [("kafka", format!("k-{az}1")), ("kafka", format!("k-{az}2")), ("amqp", format!("r-{az}"))]
            {
                cells.push(vec![az.into(), tenant.into(), protocol.into(), broker]);
            }
        }
    }
    Matrix::from_labels(dims(), cells)
}

/// `zones x tenants x 2 protocols`, one broker per zone and protocol.
pub fn wide(zones: usize, tenants: usize) -> Matrix {
    let mut cells = Vec::new();
    for z in 0..zones {
        for t in 0..tenants {
            for (protocol, b) in [("kafka", "k"), ("amqp", "r")] {
                cells.push(vec![format!("z{z}"), format!("t{t}"), protocol.into(), format!("{b}-z{z}")]);
            }
        }
    }
    Matrix::from_labels(dims(), cells)
}

/// Whether `cell` carries every `(dimension, value)` of `pairs`.
pub fn in_scope(m: &Matrix, cell: usize, pairs: &[(&str, &str)]) -> bool {
    pairs.iter().all(|(d, v)| m.dimension_index(d).is_some_and(|i| m.cells()[cell].labels[i] == *v))
}

/// Cells matching any of `faults`, each a conjunction of `(dimension, value)` pairs.
pub fn cells_matching(m: &Matrix, faults: &[Vec<(&str, &str)>]) -> Vec<usize> {
    (0..m.len()).filter(|&c| faults.iter().any(|f| in_scope(m, c, f))).collect()
}

/// Scope labels as `(dimension, value)` string pairs, for comparisons.
pub fn pairs(l: &Labels) -> Vec<(String, String)> {
    l.0.clone()
}

/// Owned pairs from a literal scope.
pub fn scope(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(d, v)| (d.to_string(), v.to_string())).collect()
}

/// One tick of a run: the level and the active scopes after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub level: Level,
    pub scopes: Vec<Vec<(String, String)>>,
}

/// Wall-clock time of tick `t` in the drivers: one second per tick from a fixed origin, so runs
/// are reproducible.
pub fn at(t: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000 + t)
}

/// Drives a correlator for `ticks` ticks; each tick every cell probes once and fails when
/// `fails(tick, cell)` (ticks count from 0). Returns the state after each tick.
pub fn drive(
    m: &Matrix,
    settings: &CorrelatorSettings,
    ticks: u64,
    mut fails: impl FnMut(u64, usize) -> bool,
) -> (Vec<Step>, Correlator) {
    let mut c = Correlator::new(m, settings).expect("test matrix is valid");
    let mut steps = Vec::new();
    for t in 0..ticks {
        for cell in 0..m.len() {
            let o = if fails(t, cell) { Outcome::Lost } else { Outcome::Ok };
            c.record(cell, &o).expect("cell index in range");
        }
        let v = c.tick_at(at(t));
        steps.push(Step { level: v.level, scopes: v.scope_labels().into_iter().map(pairs).collect() });
    }
    (steps, c)
}

/// Seeded SplitMix64: reproducible randomness without a dependency.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// Label columns of [`wide_snapshot_csv`] and how many values each has (`0`: one per row).
pub const WIDE_COLUMNS: [(&str, u64); 10] = [
    ("az", 3),
    ("tenant", 20),
    ("protocol", 2),
    ("broker", 50),
    ("rack", 100),
    ("host", 300),
    ("client", 1000),
    ("topic", 2000),
    ("partition", 5000),
    ("session", 0),
];

/// A `localize` snapshot of `rows` leaves over the ten high-cardinality label columns of
/// [`WIDE_COLUMNS`], 100 to 600 attempts each at a 1% failure ratio, plus 30% more in
/// `az=z1&tenant=t03` (about one leaf in sixty): the shape that made an exhaustive scope index
/// blow up. Deterministic for a seed.
pub fn wide_snapshot_csv(rows: u64, seed: u64) -> String {
    let mut rng = SplitMix(seed);
    let mut out = WIDE_COLUMNS.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(",");
    out.push_str(",attempts,failures\n");
    for row in 0..rows {
        let mut faulty = true;
        for (i, &(name, values)) in WIDE_COLUMNS.iter().enumerate() {
            let v = if values == 0 { row } else { rng.next_u64() % values };
            faulty &= match name {
                "az" => v == 1,
                "tenant" => v == 3,
                _ => true,
            };
            let prefix = &name[..1];
            out.push_str(&if i == 0 { format!("z{v}") } else { format!(",{prefix}{v:02}") });
        }
        let attempts = 100 + rng.next_u64() % 501;
        let p = if faulty { 0.31 } else { 0.01 };
        let failures = (0..attempts).filter(|_| rng.chance(p)).count();
        out.push_str(&format!(",{attempts},{failures}\n"));
    }
    out
}
