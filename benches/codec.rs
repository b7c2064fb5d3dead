//! The probe payload codec and the tracker's receive path: what every probe costs in the
//! worker besides broker I/O.
//!
//! `cargo bench --bench codec`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use crossprobe_probes::payload::Header;
use crossprobe_probes::tracker::Tracker;

fn codec(c: &mut Criterion) {
    let header = Header { instance: 0xfeed, cell: 42, seq: 7, sent_ns: 123_456_789 };
    let mut group = c.benchmark_group("payload");
    for size in [64usize, 256, 4096] {
        group.bench_with_input(BenchmarkId::new("encode", size), &size, |b, &size| {
            b.iter(|| header.encode(size))
        });
        let bytes = header.encode(size);
        group.bench_with_input(BenchmarkId::new("decode", size), &bytes, |b, bytes| {
            b.iter(|| Header::decode(bytes))
        });
    }
    group.finish();

    c.bench_function("tracker/start+ack+receive (256 B)", |b| {
        let epoch = Instant::now();
        let mut t = Tracker::new(0xfeed, 42, Duration::from_millis(500), epoch);
        b.iter(|| {
            let now = Instant::now();
            let h = t.start(now);
            t.acked(h.seq, now);
            t.received(&h.encode(256), now)
        })
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
