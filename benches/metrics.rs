//! Rendering `/metrics` (what one scrape costs) and recording one outcome, at 1,000 and 10,000
//! cells of 4 dimensions, after every cell has seen some ok probes (histograms and HDR
//! windows populated): with latency kept per zone, protocol and broker (the default), and per
//! cell (every dimension in `latency_by`, the opt-in for small matrices) at 1,000 cells. Also
//! the gzip of a 10,000-cell scrape, which the server does when the scraper asks for it.
//!
//! `cargo bench --bench metrics`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use crossprobe::matrix::Matrix;
use crossprobe::metrics::Metrics;
use crossprobe_probes::outcome::Outcome;
use crossprobe_probes::tracker::{Event, ProbeResult};

fn matrix(cells: usize) -> Matrix {
    let dims = ["az", "tenant", "protocol", "broker"].map(String::from).to_vec();
    let zones = 10;
    let tenants = cells / zones / 2;
    let mut labels = Vec::new();
    for z in 0..zones {
        for t in 0..tenants {
            for (protocol, b) in [("kafka", "k"), ("amqp", "r")] {
                labels.push(vec![format!("z{z}"), format!("t{t}"), protocol.into(), format!("{b}-z{z}")]);
            }
        }
    }
    Matrix::from_labels(dims, labels)
}

fn ok(ms: u64) -> Event {
    Event::Done(ProbeResult {
        seq: 1,
        outcome: Outcome::Ok,
        publish: Some(Duration::from_micros(500)),
        roundtrip: Some(Duration::from_millis(ms)),
    })
}

fn metrics(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics");
    group.sample_size(10);
    let by_group: Vec<String> = ["az", "protocol", "broker"].map(String::from).to_vec();
    let by_cell: Vec<String> = ["az", "tenant", "protocol", "broker"].map(String::from).to_vec();
    for (cells, latency_by, name) in [
        (1_000usize, &by_group, "render"),
        (10_000, &by_group, "render"),
        (1_000, &by_cell, "render_per_cell"),
    ] {
        let m = matrix(cells);
        let metrics = Metrics::new(None, latency_by, &m, Duration::from_millis(500)).unwrap();
        for cell in 0..m.len() {
            for ms in 1..=5 {
                metrics.record(cell, &ok(ms));
            }
        }
        group.bench_with_input(BenchmarkId::new(name, cells), &metrics, |b, metrics| {
            b.iter(|| metrics.render().len())
        });
        if name == "render_per_cell" {
            continue;
        }
        if cells == 10_000 {
            group.bench_with_input(BenchmarkId::new("render_gzip", cells), &metrics, |b, metrics| {
                b.iter(|| crossprobe::server::gzip(metrics.render().as_bytes()).len())
            });
        }
        group.bench_with_input(BenchmarkId::new("record_ok", cells), &metrics, |b, metrics| {
            let mut cell = 0;
            b.iter(|| {
                cell = (cell + 7) % cells;
                metrics.record(cell, &ok(3))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, metrics);
criterion_main!(benches);
