//! End-to-end benchmarks against the local zones (`deploy/local/crossprobe-local`): how
//! faithfully the daemon measures (overhead next to bare clients), how fast it sees a real
//! outage (detection), how fast it sees a healed one (recovery), and what it costs (scale).
//! Prints one table per part.
//!
//! ```text
//! cargo bench --bench e2e -- [overhead] [detection] [recovery] [scale] [--seconds S] [--trials N] [--cells 12,120,600]
//!     [--interval 1s] [--measure 30s] [--fetch-wait 5ms]
//! ```
//!
//! With no part named, all four run. Needs root (the zones' faults) and takes about 20
//! minutes in all; see benches/README.md for the figures and how they were produced.

#[path = "../../tests/support/mod.rs"]
mod support;

mod bare;
mod detection;
mod overhead;
mod recovery;
mod scale;

use std::time::Duration;

/// Command-line options.
pub struct Options {
    pub parts: Vec<String>,
    pub seconds: u64,
    pub trials: usize,
    pub cells: Vec<usize>,
    /// Probe interval of the scale part: 1 s, or longer to run many cells per broker.
    pub interval: Duration,
    /// How long the scale part measures, after its warm-up.
    pub measure: Duration,
    /// The scale part's Kafka `fetch_wait`: tansu's 5 ms by default (it holds a fetch for the
    /// whole wait), or longer to measure what the idle fetches cost.
    pub fetch_wait: Duration,
}

fn options() -> Options {
    let mut o = Options {
        parts: Vec::new(),
        seconds: 60,
        trials: 20,
        cells: vec![12, 120, 600, 1200],
        interval: Duration::from_secs(1),
        measure: Duration::from_secs(30),
        fetch_wait: Duration::from_millis(5),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match a.as_str() {
            "--seconds" => o.seconds = value("--seconds").parse().expect("--seconds: a number"),
            "--trials" => o.trials = value("--trials").parse().expect("--trials: a number"),
            "--cells" => {
                o.cells = value("--cells").split(',').map(|c| c.parse().expect("--cells: numbers")).collect()
            }
            "--interval" => {
                o.interval = humantime::parse_duration(&value("--interval")).expect("--interval: 30s")
            }
            "--measure" => {
                o.measure = humantime::parse_duration(&value("--measure")).expect("--measure: 10m")
            }
            "--fetch-wait" => {
                o.fetch_wait = humantime::parse_duration(&value("--fetch-wait")).expect("--fetch-wait: 500ms")
            }
            "--bench" => {}
            part @ ("overhead" | "detection" | "recovery" | "scale") => o.parts.push(part.to_owned()),
            other => panic!("unknown argument {other:?} (parts: overhead, detection, recovery, scale)"),
        }
    }
    if o.parts.is_empty() {
        o.parts = ["overhead", "detection", "recovery", "scale"].map(String::from).to_vec();
    }
    o
}

/// Quantile `q` of `samples` (sorted in place), nearest rank.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort();
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let o = options();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!(
        "machine: {} cores, {} MiB; {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        support_memory_mib(),
        std::process::Command::new("date")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    );
    for part in &o.parts {
        match part.as_str() {
            "overhead" => runtime.block_on(overhead::run(&o)),
            "detection" => runtime.block_on(detection::run(&o)),
            "recovery" => runtime.block_on(recovery::run(&o)),
            "scale" => runtime.block_on(scale::run(&o)),
            _ => unreachable!(),
        }
    }
}

fn support_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}
