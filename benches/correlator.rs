//! One correlator tick at 100, 1,000 and 10,000 cells (4 dimensions: zones x tenants x 2
//! protocols, one broker per zone and protocol), in three states: all healthy; zone 1 down plus
//! 1% stuck cells (a realistic partial); everything failing (the most scopes to count).
//!
//! `cargo bench --bench correlator`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use crossprobe::config::CorrelatorSettings;
use crossprobe::correlator::Correlator;
use crossprobe::matrix::Matrix;
use crossprobe_probes::Outcome;

/// Which cells fail in one benchmarked state.
type Faults<'a> = Box<dyn Fn(usize) -> bool + 'a>;

/// `zones x tenants x 2` cells.
fn matrix(zones: usize, tenants: usize) -> Matrix {
    let dims = ["az", "tenant", "protocol", "broker"].map(String::from).to_vec();
    let mut cells = Vec::new();
    for z in 0..zones {
        for t in 0..tenants {
            for (protocol, b) in [("kafka", "k"), ("amqp", "r")] {
                cells.push(vec![format!("z{z}"), format!("t{t}"), protocol.into(), format!("{b}-z{z}")]);
            }
        }
    }
    Matrix::from_labels(dims, cells)
}

/// A correlator whose cells have seen five probes each, failing where `fails(cell)`, and that
/// has ticked long enough for its scopes to be active.
fn primed(m: &Matrix, fails: impl Fn(usize) -> bool) -> Correlator {
    let mut c = Correlator::new(m, &CorrelatorSettings::default()).unwrap();
    for _ in 0..5 {
        for cell in 0..m.len() {
            c.record(cell, if fails(cell) { &Outcome::Lost } else { &Outcome::Ok }).unwrap();
        }
        c.tick();
    }
    c
}

fn tick(cr: &mut Criterion) {
    let mut group = cr.benchmark_group("tick");
    for (zones, tenants) in [(5, 10), (10, 50), (10, 500)] {
        let m = matrix(zones, tenants);
        let n = m.len();
        let zone = m.dimension_index("az").unwrap();
        let cases: [(&str, Faults); 3] = [
            ("healthy", Box::new(|_| false)),
            ("zone_down_1pct_stuck", Box::new(|c| m.cells()[c].labels[zone] == "z1" || c % 100 == 7)),
            ("all_failing", Box::new(|_| true)),
        ];
        for (name, fails) in cases {
            let mut c = primed(&m, fails);
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| b.iter(|| c.tick().level));
        }
    }
    group.finish();
}

criterion_group!(benches, tick);
criterion_main!(benches);
