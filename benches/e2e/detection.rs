//! Detection: a real fault (zone b paused; every zone paused) injected at a random phase, and
//! the time until `/verdict` shows it (`partial` naming az=b; `outage`), then after healing the
//! time until the verdict is `ok` with no scope. Compared with the target (the third failed
//! probe round plus one tick) and with the old floor (the cell window's k-th failure plus
//! `enter_ticks`). Then a blip: every zone paused for two probe rounds, which must confirm
//! nothing. Flap detection is turned off for the benchmark (see `run`).

use std::time::{Duration, Instant};

use crossprobe::config::CorrelatorSettings;
use crossprobe::daemon::{Daemon, RunOptions};
use serde_json::Value;

use super::support::{brokers, http_get, local_matrix, parse, Timing};
use super::{ms, quantile, Options};

const TIMING: Timing = Timing { interval: "500ms", timeout: "400ms" };

fn verdict(d: &Daemon) -> Option<(String, String)> {
    let (_, body) = http_get(d.addr(), "/verdict").ok()?;
    let v: Value = serde_json::from_str(&body).ok()?;
    Some((v["verdict"].as_str()?.to_owned(), v["scopes"].to_string()))
}

/// Polls every 10 ms until `done` holds; the time it took.
async fn until(d: &Daemon, done: impl Fn(&str, &str) -> bool, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some((level, scopes)) = verdict(d) {
            if done(&level, &scopes) {
                return Some(start.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

pub async fn run(o: &Options) {
    let b = brokers();
    let (toml, _) = local_matrix(b, &TIMING);
    // Trials fault the same scopes again and again: with flap detection on, the scope would be
    // held active (by design) and later trials would measure the hold, not the detection.
    let config = parse(&format!("{toml}\n[correlator]\nflap_changes = 1000\n"));
    let c = CorrelatorSettings::default();
    let (interval, timeout) = (config.targets[0].probe.interval, config.targets[0].probe.timeout);
    let d = Daemon::start(config, RunOptions::default()).await.unwrap();
    until(&d, |l, s| l == "ok" && s == "[]", Duration::from_secs(60)).await.expect("healthy at start");

    // The old floor: half an interval to the next probe, k-1 more probes, the last one's
    // timeout, and the enter_ticks-1 further ticks a scope had to be chosen.
    let old_floor =
        interval / 2 + interval * (c.failures_to_fail - 1) + timeout + c.tick * (c.enter_ticks - 1);
    // The target for many cells failing together: the third failed round (two intervals after
    // the first, which ends by its timeout) plus one tick.
    let target = timeout + interval * 2 + c.tick;
    let clear_floor = interval * c.successes_to_recover + c.tick * c.exit_ticks;
    println!(
        "\n## detection: {} trials per fault, interval {interval:?}, timeout {timeout:?}, tick {:?}\n",
        o.trials, c.tick
    );
    println!("| fault | verdict | detect p50 ms | detect p95 ms | target ms | p50 / target | old floor ms | clear p50 ms | clear p95 ms | clear floor ms | misses |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, zones, wanted) in
        [("zone b paused", &["b"][..], "partial az=b"), ("all zones paused", &["a", "b", "c"][..], "outage")]
    {
        let (mut detect, mut clear, mut misses) = (Vec::new(), Vec::new(), 0);
        for trial in 0..o.trials {
            let phase = Duration::from_nanos(
                (super::support::unique().len() as u64 * 7919 + trial as u64 * 104_729)
                    % interval.as_nanos() as u64,
            );
            tokio::time::sleep(phase).await;
            let faults: Vec<_> = zones.iter().filter_map(|z| b.fault(z, "pause", None)).collect();
            let seen = until(
                &d,
                |l, s| {
                    if wanted == "outage" {
                        l == "outage"
                    } else {
                        l == "partial" && s == r#"[{"az":"b"}]"#
                    }
                },
                Duration::from_secs(60),
            )
            .await;
            for f in faults {
                f.heal();
            }
            let cleared = until(&d, |l, s| l == "ok" && s == "[]", Duration::from_secs(120)).await;
            match (seen, cleared) {
                (Some(s), Some(c)) => {
                    detect.push(s);
                    clear.push(c);
                }
                _ => misses += 1,
            }
        }
        let (d50, d95) = (quantile(&mut detect, 0.5), quantile(&mut detect, 0.95));
        println!(
            "| {name} | {wanted} | {} | {} | {} | {:.2} | {} | {} | {} | {} | {misses} |",
            ms(d50),
            ms(d95),
            ms(target),
            d50.as_secs_f64() / target.as_secs_f64(),
            ms(old_floor),
            ms(quantile(&mut clear, 0.5)),
            ms(quantile(&mut clear, 0.95)),
            ms(clear_floor)
        );
    }
    blips(o, &d, interval, timeout).await;
    d.stop();
    d.wait().await.unwrap();
}

/// Every zone paused long enough for each cell to lose one or two probes (two probe rounds:
/// probes started in the first `pause - timeout` of the pause fail, those started later are
/// answered in time once the brokers resume), then healed: the verdict must never be `outage`.
async fn blips(o: &Options, d: &Daemon, interval: Duration, timeout: Duration) {
    let b = brokers();
    let pause = interval * 2 + timeout - Duration::from_millis(50);
    let (mut paged, mut partial) = (0, 0);
    for _ in 0..o.trials {
        let Some(fault) = b.fault("all", "pause", None) else { return };
        let start = Instant::now();
        let (mut saw_outage, mut saw_partial) = (false, false);
        let mut fault = Some(fault);
        while start.elapsed() < pause + Duration::from_secs(8) {
            if start.elapsed() >= pause {
                if let Some(f) = fault.take() {
                    f.heal();
                }
            }
            if let Some((level, _)) = verdict(d) {
                saw_outage |= level == "outage";
                saw_partial |= level == "partial";
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        paged += usize::from(saw_outage);
        partial += usize::from(saw_partial);
        until(d, |l, s| l == "ok" && s == "[]", Duration::from_secs(120)).await.expect("ok after a blip");
    }
    println!(
        "\n| blip | pause ms | trials | outage seen | partial seen |\n|---|---|---|---|---|\n| every zone, two rounds | {} | {} | {paged} | {partial} |",
        ms(pause),
        o.trials
    );
}
