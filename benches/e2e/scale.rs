//! Scale: the daemon binary as its own process at growing matrix sizes, against the local zones:
//! probes per second, CPU seconds per 1,000 probes and resident memory per cell, measured from
//! /proc over a steady period after a warm-up; then series per cell, and the size and time of
//! one scrape and of `/api/status`. The local brokers saturate near 600 probes a second, so
//! 10,000 cells run many cells per broker on a longer interval (`--interval 30s`: 333 probes a
//! second), with `--measure 10m` for the resident memory after ten minutes of probing.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::support::{brokers, free_port, http_get, unique, ZONES};
use super::Options;

const WARM_UP: Duration = Duration::from_secs(15);

/// A matrix of about `cells` cells: per zone, n Kafka and n AMQP targets on the zone's brokers,
/// each probing both tenants (cells = 3 zones x 2n targets x 2 tenants).
fn config(cells: usize, port: u16, interval: Duration, fetch_wait: Duration) -> (String, usize) {
    let b = brokers();
    let n = (cells / 12).max(1);
    let id = unique();
    // Timeout: half the interval, at most 2 s (a loaded broker answers late, not never).
    let timeout = (interval / 2).min(Duration::from_secs(2));
    let fetch = format!("kafka = {{ fetch_wait = \"{}\" }}\n", humantime::format_duration(fetch_wait));
    let mut toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:{port}\"\ninstance = \"scale-{id}\"\n[probe]\ninterval = \"{}\"\ntimeout = \"{}\"\n",
        humantime::format_duration(interval),
        humantime::format_duration(timeout)
    );
    for (i, z) in ZONES.iter().enumerate() {
        for j in 0..n {
            // The n targets of one broker name it (`broker`), as a fleet's config would, and
            // differ by a `slot` label: latency is then kept per real broker.
            toml += &format!("[[targets]]\nname = \"kafka-{z}-{j}\"\nprotocol = \"kafka\"\naz = \"{z}\"\nbroker = \"kafka-{z}\"\naddresses = [\"{}\"]\nlabels = {{ slot = \"{j}\" }}\n{fetch}", b.kafka[i]);
            toml += &format!("[[targets]]\nname = \"rabbit-{z}-{j}\"\nprotocol = \"amqp\"\naz = \"{z}\"\nbroker = \"rabbit-{z}\"\naddresses = [\"{}\"]\nlabels = {{ slot = \"{j}\" }}\n", b.amqp[i]);
        }
    }
    for t in ["acme", "globex"] {
        toml += &format!(
            "[[tenants]]\nname = \"{t}\"\nkafka = {{ topic = \"scale-{t}-{id}\" }}\namqp = {{ vhost = \"{t}\", user = \"crossprobe-{t}\", password_env = \"CROSSPROBE_{}_AMQP_PASSWORD\" }}\n",
            t.to_uppercase()
        );
    }
    (toml, 3 * 2 * n * 2)
}

/// (CPU seconds, resident KiB) of a process.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks / 100.0, rss)
}

/// Probes ended so far (all outcomes) and ok ones, from /metrics.
fn probes(port: u16) -> (f64, f64) {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let body = http_get(addr, "/metrics").map(|(_, b)| b).unwrap_or_default();
    let mut all = 0.0;
    let mut ok = 0.0;
    for l in body.lines().filter(|l| l.starts_with("crossprobe_probes_total{")) {
        let v: f64 = l.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        all += v;
        if l.contains("outcome=\"ok\"") {
            ok += v;
        }
    }
    (all, ok)
}

/// The best time of 5 requests for `path`, and the size of its body.
fn timed(port: u16, path: &str) -> (Duration, usize) {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut best = Duration::MAX;
    let mut size = 0;
    for _ in 0..5 {
        let start = std::time::Instant::now();
        size = http_get(addr, path).map(|(_, b)| b.len()).unwrap_or(0);
        best = best.min(start.elapsed());
    }
    (best, size)
}

pub async fn run(o: &Options) {
    let (interval, measure) = (o.interval, o.measure);
    let warm_up = WARM_UP.max(interval * 3);
    println!("\n## scale: {interval:?} interval, Kafka fetch_wait {:?}, warm-up {warm_up:?}, measured over {measure:?}, daemon as its own process (release)\n", o.fetch_wait);
    println!("| cells | probes/s | ok % | CPU s per 1,000 probes | probes/s per core-second | RSS MiB | RSS per cell KiB | series per cell | /metrics ms, MB | /api/status ms, KB |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &cells in &o.cells {
        let port = free_port();
        let (toml, cells) = config(cells, port, interval, o.fetch_wait);
        let path = std::env::temp_dir().join(format!("crossprobe-scale-{cells}.toml"));
        std::fs::write(&path, toml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_crossprobe"))
            .args(["run", "--config", path.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the daemon starts");
        tokio::time::sleep(warm_up).await;
        let (cpu0, _) = usage(child.id());
        let (p0, ok0) = probes(port);
        tokio::time::sleep(measure).await;
        let (cpu1, rss) = usage(child.id());
        let (p1, ok1) = probes(port);
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let body = http_get(addr, "/metrics").map(|(_, b)| b).unwrap_or_default();
        let series = body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count();
        let (scrape, scrape_size) = timed(port, "/metrics");
        let (status, status_size) = timed(port, "/api/status");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let _ = child.wait();
        let _ = std::fs::remove_file(&path);
        let n = p1 - p0;
        let cpu = cpu1 - cpu0;
        println!(
            "| {cells} | {:.0} | {:.1} | {:.3} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1}, {:.1} | {:.1}, {:.0} |",
            n / measure.as_secs_f64(),
            if n > 0.0 { 100.0 * (ok1 - ok0) / n } else { 0.0 },
            if n > 0.0 { 1000.0 * cpu / n } else { f64::NAN },
            if cpu > 0.0 { n / cpu } else { f64::NAN },
            rss as f64 / 1024.0,
            rss as f64 / cells as f64,
            series as f64 / cells as f64,
            scrape.as_secs_f64() * 1000.0,
            scrape_size as f64 / 1e6,
            status.as_secs_f64() * 1000.0,
            status_size as f64 / 1e3,
        );
    }
}
