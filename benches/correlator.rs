//! One correlator tick at 100, 1,000 and 10,000 cells (4 dimensions: zones x tenants x 2
//! protocols, one broker per zone and protocol), in three states: all healthy; zone 1 down plus
//! 1% stuck cells (a realistic partial); everything failing (the most scopes to count). Every
//! ok probe carries a round trip, and the cells have learned their baselines, so the slow layer
//! judges them; a fourth state has zone 1 twenty times slower (a degraded zone) and nothing
//! failing.
//!
//! `cargo bench --bench correlator`

use std::time::Duration;

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

/// A correlator whose cells have learned their baselines (2 ms), then seen 20 probes each,
/// failing where `fails(cell)` and 40 ms where `slow(cell)`, ticking all along, so that its
/// scopes are active.
fn primed(m: &Matrix, fails: impl Fn(usize) -> bool, slow: impl Fn(usize) -> bool) -> Correlator {
    let s = CorrelatorSettings::default();
    let mut c = Correlator::new(m, &s).unwrap();
    let learning = s.brownout.learning_probes;
    for round in 0..learning + 20 {
        for cell in 0..m.len() {
            let after = round >= learning;
            let outcome = if after && fails(cell) { Outcome::Lost } else { Outcome::Ok };
            let ms = if after && slow(cell) { 40 } else { 2 };
            c.record_rtt(cell, &outcome, Some(Duration::from_millis(ms))).unwrap();
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
        let z1: Faults = Box::new(|c| m.cells()[c].labels[zone] == "z1");
        let none: Faults = Box::new(|_| false);
        let cases: [(&str, Faults, &Faults); 4] = [
            ("healthy", Box::new(|_| false), &none),
            ("zone_down_1pct_stuck", Box::new(|c| m.cells()[c].labels[zone] == "z1" || c % 100 == 7), &none),
            ("all_failing", Box::new(|_| true), &none),
            ("zone_slow", Box::new(|_| false), &z1),
        ];
        for (name, fails, slow) in cases {
            let mut c = primed(&m, fails, slow);
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| b.iter(|| c.tick().level));
            if name == "zone_slow" {
                // What the evaluator reads each tick for the baseline gauges and the cells' view.
                let b = c.brownouts().unwrap();
                group.bench_with_input(BenchmarkId::new("cell_latency", n), &n, |bench, _| {
                    bench.iter(|| b.cells().map(|l| l.baseline_p50_ms.unwrap_or(0.0)).sum::<f64>())
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, tick);
criterion_main!(benches);
