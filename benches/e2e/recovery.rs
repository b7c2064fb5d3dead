//! Recovery: a real fault on zone b (paused, killed, or restarted: killed and healed at once),
//! held, then healed; the time from `heal` returning (the zone's brokers answer real requests
//! again) to each of zone b's cells' first ok probe. The target is one probe interval plus one
//! round trip: the clients retry at least once per interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossprobe::shutdown::Shutdown;
use crossprobe::workers::{Seen, WorkerPool};
use crossprobe_probes::tracker::Event;
use crossprobe_probes::Outcome;

use super::support::{brokers, local_matrix, parse, Timing};
use super::{ms, quantile, Options};

/// The daemon's defaults (and `config/examples/local.toml`).
const TIMING: Timing = Timing { interval: "1s", timeout: "500ms" };

/// How long a fault is held before `heal` (none for a restart): long enough for the clients to
/// notice the loss and for a growing back-off to grow.
const HOLD: Duration = Duration::from_secs(8);

/// Every probe outcome of the run: (cell, when it ended, ok).
type Log = Arc<Mutex<Vec<(usize, Instant, bool)>>>;

/// The cells' first ok probe that ended after `since`, for each of `cells`, waiting up to
/// `limit`; `None` for a cell that had none.
async fn first_ok(log: &Log, cells: &[usize], since: Instant, limit: Duration) -> Vec<Option<Instant>> {
    let deadline = Instant::now() + limit;
    loop {
        let found: Vec<Option<Instant>> = {
            let log = log.lock().unwrap();
            cells
                .iter()
                .map(|c| {
                    log.iter().find(|(cell, at, ok)| cell == c && *at > since && *ok).map(|(_, at, _)| *at)
                })
                .collect()
        };
        if found.iter().all(Option::is_some) || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until each of `cells` ended its last 3 probes ok.
async fn healthy(log: &Log, cells: &[usize], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let ok = {
            let log = log.lock().unwrap();
            cells.iter().all(|c| {
                let last: Vec<bool> =
                    log.iter().rev().filter(|(cell, ..)| cell == c).take(3).map(|(.., ok)| *ok).collect();
                last.len() == 3 && last.iter().all(|ok| *ok)
            })
        };
        if ok {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Runs the local zones' control script (blocking, off the runtime), returning when it did.
async fn ctl(args: &'static [&'static str]) -> Instant {
    let ctl =
        brokers().ctl().expect("recovery needs the local zones (crossprobe-local), not the user's brokers");
    let ctl = ctl.to_owned();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(&ctl).args(args).output().expect("crossprobe-local runs");
        assert!(
            out.status.success(),
            "crossprobe-local {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Instant::now()
    })
    .await
    .unwrap()
}

pub async fn run(o: &Options) {
    let b = brokers();
    let (toml, _) = local_matrix(b, &TIMING);
    let config = parse(&toml);
    let (interval, timeout) = (config.targets[0].probe.interval, config.targets[0].probe.timeout);
    let m = &config.matrix;
    let label = |cell: &crossprobe::matrix::Cell, dim: &str| {
        m.labels(cell).find(|(d, _)| *d == dim).map(|(_, v)| v.to_owned()).unwrap_or_default()
    };
    // Zone b's cells by protocol.
    let mut zone_b: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, cell) in m.cells().iter().enumerate() {
        if label(cell, "az") == "b" {
            zone_b.entry(label(cell, "protocol")).or_default().push(i);
        }
    }
    let all_b: Vec<usize> = zone_b.values().flatten().copied().collect();

    let mut probing = WorkerPool::start(&config, false, &Shutdown::new()).unwrap();
    let log: Log = Arc::default();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let drain = {
        let log = log.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    r = probing.next() => {
                        let Some(r) = r else { break };
                        if let Seen::Probe(Event::Done(d)) = r.seen {
                            log.lock().unwrap().push((r.cell, r.at, d.outcome == Outcome::Ok));
                        }
                    }
                }
            }
            probing
        })
    };
    assert!(healthy(&log, &all_b, Duration::from_secs(60)).await, "zone b's cells are not healthy at start");

    println!(
        "\n## recovery: zone b, {} trials per fault, interval {interval:?}, timeout {timeout:?}, faults held {HOLD:?}\n",
        o.trials
    );
    println!("| fault | protocol | heal took p50 ms | recovery p50 ms | recovery p95 ms | recovery max ms | target ms | samples | misses |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let faults: [(&str, &'static [&'static str], Duration); 3] = [
        ("pause", &["fault", "b", "pause"], HOLD),
        ("kill", &["fault", "b", "kill"], HOLD),
        ("restart", &["fault", "b", "kill"], Duration::ZERO),
    ];
    for (name, fault, hold) in faults {
        let mut took = Vec::new();
        let mut samples: HashMap<String, (Vec<Duration>, usize)> = HashMap::new();
        for _ in 0..o.trials {
            ctl(fault).await;
            tokio::time::sleep(hold).await;
            let asked = Instant::now();
            let healed = ctl(&["heal", "b"]).await;
            took.push(healed - asked);
            for (protocol, cells) in &zone_b {
                let first = first_ok(&log, cells, healed, Duration::from_secs(60)).await;
                let entry = samples.entry(protocol.clone()).or_default();
                for f in first {
                    match f {
                        Some(at) => entry.0.push(at - healed),
                        None => entry.1 += 1,
                    }
                }
            }
            assert!(
                healthy(&log, &all_b, Duration::from_secs(90)).await,
                "zone b did not become healthy after {name}"
            );
        }
        let mut protocols: Vec<_> = samples.into_iter().collect();
        protocols.sort_by(|a, b| a.0.cmp(&b.0));
        for (protocol, (mut s, misses)) in protocols {
            println!(
                "| {name} | {protocol} | {} | {} | {} | {} | {} | {} | {misses} |",
                ms(quantile(&mut took, 0.5)),
                ms(quantile(&mut s, 0.5)),
                ms(quantile(&mut s, 0.95)),
                ms(quantile(&mut s, 1.0)),
                ms(interval),
                s.len()
            );
        }
    }
    let _ = stop.send(());
    let mut probing = drain.await.unwrap();
    probing.stop().await.unwrap();
}
