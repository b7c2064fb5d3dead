//! The verdicts an on-call is paged on, against the local zones with the daemon at its
//! defaults (1 s interval, 500 ms timeout, default correlator, no vantage): a rolling restart
//! (each zone's brokers killed and healed, the next zone 1 s after the previous one answers
//! again) is seen zone by zone and never a page; two zones paused at once is a confirmed outage,
//! cleared after healing.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossprobe::daemon::{Daemon, RunOptions};
use serde_json::Value;
use support::{brokers, eventually, exclusive, http_get, local_matrix, parse, stop_daemon, Fault, Timing};

/// The daemon's `[probe]` defaults, as in `config/examples/local.toml`.
const DEFAULTS: Timing = Timing { interval: "1s", timeout: "500ms" };

/// How often the sampler reads `/metrics` and `/verdict`.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// One reading of the daemon's verdict.
#[derive(Debug, Clone)]
struct Sample {
    /// Since the sampler started.
    at: Duration,
    /// `crossprobe_outage_confirmed`.
    outage: Option<f64>,
    level: String,
    /// The explaining scopes, as `/verdict` lists them.
    scopes: Vec<Value>,
    /// Cells not `healthy`, as `id=state`.
    unhealthy: Vec<String>,
    /// Cells listed in `/verdict` (none before the first evaluation).
    cells: usize,
}

impl Sample {
    /// A scope inside `zone`: the zone itself, or one of its brokers (the local matrix names
    /// them `kafka-{zone}` and `rabbit-{zone}`). A restarted broker that is back within a probe
    /// or two is rightly not blamed, so a zone's kill may be named by its other broker alone.
    fn names_zone(&self, zone: &str) -> bool {
        let brokers = [format!("kafka-{zone}"), format!("rabbit-{zone}")];
        self.scopes.iter().any(|s| s["az"] == zone || brokers.iter().any(|b| s["broker"] == b.as_str()))
    }

    /// `zone` named, or one of its cells failing.
    fn sees_zone(&self, zone: &str) -> bool {
        let cells = [format!("kafka-{zone}/"), format!("rabbit-{zone}/")];
        self.names_zone(zone)
            || self
                .unhealthy
                .iter()
                .any(|u| u.ends_with("=failing") && cells.iter().any(|c| u.starts_with(c.as_str())))
    }

    fn all_healthy(&self) -> bool {
        self.cells > 0 && self.level == "ok" && self.unhealthy.is_empty() && self.outage == Some(0.0)
    }
}

fn read(addr: SocketAddr, started: Instant) -> Result<Sample, String> {
    let (status, metrics) = http_get(addr, "/metrics").map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("/metrics answered {status}"));
    }
    let outage = metrics
        .lines()
        .find(|l| l.starts_with("crossprobe_outage_confirmed "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok());
    let (_, body) = http_get(addr, "/verdict").map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    let cells = v["cells"].as_array().ok_or_else(|| format!("no cells in /verdict: {body}"))?;
    let unhealthy = cells
        .iter()
        .filter(|c| c["state"] != "healthy")
        .map(|c| format!("{}={}", c["id"].as_str().unwrap_or("?"), c["state"].as_str().unwrap_or("?")))
        .collect();
    Ok(Sample {
        at: started.elapsed(),
        outage,
        level: v["verdict"].as_str().unwrap_or("").to_owned(),
        scopes: v["scopes"].as_array().cloned().unwrap_or_default(),
        unhealthy,
        cells: cells.len(),
    })
}

/// Reads the verdict every [`SAMPLE_EVERY`] on its own thread, so a blocked runtime or a slow
/// fault command cannot hide a moment from it.
struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    started: Instant,
}

impl Sampler {
    fn start(addr: SocketAddr) -> Sampler {
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let thread = {
            let (samples, errors, stop) = (samples.clone(), errors.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let next = Instant::now() + SAMPLE_EVERY;
                    match read(addr, started) {
                        Ok(s) => samples.lock().unwrap().push(s),
                        Err(e) => errors.lock().unwrap().push(e),
                    }
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
            })
        };
        Sampler { samples, errors, stop, thread: Some(thread), started }
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn last(&self) -> Option<Sample> {
        self.samples.lock().unwrap().last().cloned()
    }

    /// Stops sampling; every sample taken.
    fn finish(mut self) -> (Vec<Sample>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("sampler thread");
        }
        let samples = std::mem::take(&mut *self.samples.lock().unwrap());
        let errors = std::mem::take(&mut *self.errors.lock().unwrap());
        (samples, errors)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Injects `kind` into `zone` off the runtime (the script takes seconds); `None` when the
/// brokers are the user's own.
async fn fault(zone: &'static str, kind: &'static str) -> Option<Fault> {
    tokio::task::spawn_blocking(move || brokers().fault(zone, kind, None)).await.unwrap()
}

/// Heals a fault off the runtime; returns once the zone answers again.
async fn heal(f: Fault) {
    tokio::task::spawn_blocking(move || f.heal()).await.unwrap();
}

/// Starts the daemon at its defaults on the local zones and waits until every cell is healthy.
async fn healthy_daemon() -> Daemon {
    let (toml, _) = local_matrix(brokers(), &DEFAULTS);
    let d = Daemon::start(parse(&toml), RunOptions::default()).await.unwrap();
    let addr = d.addr();
    let started = Instant::now();
    eventually("every cell healthy and the verdict ok at start", Duration::from_secs(90), || {
        let s = read(addr, started)?;
        if s.all_healthy() {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
    // Faults only once the clients have run a while.
    tokio::time::sleep(SETTLE).await;
    d
}

/// How long the daemon runs healthy before the first fault.
const SETTLE: Duration = Duration::from_secs(15);

/// The samples around `at`, for a failure message.
fn around(samples: &[Sample], at: Duration) -> String {
    samples
        .iter()
        .filter(|s| s.at + Duration::from_secs(3) >= at && s.at <= at + Duration::from_secs(3))
        .map(|s| format!("  {:>6.1}s outage={:?} {} {:?}", s.at.as_secs_f64(), s.outage, s.level, s.scopes))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The verdict's changes over the run, one line each, for the test's output.
fn timeline(samples: &[Sample]) -> String {
    let mut lines = Vec::new();
    let mut last: Option<(Option<f64>, &str, &Vec<Value>)> = None;
    for s in samples {
        let now = (s.outage, s.level.as_str(), &s.scopes);
        if last != Some(now) {
            lines.push(format!(
                "  {:>6.1}s outage={:?} {} {:?}",
                s.at.as_secs_f64(),
                s.outage,
                s.level,
                s.scopes
            ));
            last = Some(now);
        }
    }
    lines.join("\n")
}

/// Waits until every cell is healthy again after `since`, then stops the sampler and the
/// daemon, prints the verdict timeline and checks the sampler missed nothing; the samples.
async fn settle(sampler: Sampler, d: Daemon, since: Duration, what: &str) -> Vec<Sample> {
    eventually(what, Duration::from_secs(120), || match sampler.last() {
        Some(s) if s.at > since && s.all_healthy() => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await;
    let (samples, errors) = sampler.finish();
    stop_daemon(d).await;
    eprintln!("verdict timeline:\n{}", timeline(&samples));
    assert_continuous(&samples, &errors);
    samples
}

/// Checks that the sampler saw the whole run: no gap long enough to hide a page.
fn assert_continuous(samples: &[Sample], errors: &[String]) {
    let longest = samples.windows(2).map(|w| w[1].at - w[0].at).max().unwrap_or_default();
    assert!(
        longest < Duration::from_secs(2),
        "the sampler missed {longest:?} of the verdict (errors: {errors:?})"
    );
    assert!(errors.len() * 20 < samples.len().max(1), "too many failed readings: {errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_is_a_ticket_per_zone_never_a_page() {
    let _x = exclusive().await;
    let d = healthy_daemon().await;
    let sampler = Sampler::start(d.addr());
    // When each zone was killed, since the sampler started.
    let mut killed = Vec::new();
    for zone in ["a", "b", "c"] {
        killed.push((zone, sampler.now()));
        let Some(f) = fault(zone, "kill").await else { return };
        heal(f).await;
        if zone != "c" {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let healed = sampler.now();
    let samples = settle(sampler, d, healed, "every cell healthy again after the restart").await;
    let mut problems = Vec::new();
    let paged: Vec<&Sample> = samples.iter().filter(|s| s.outage != Some(0.0)).collect();
    if let (Some(first), Some(last)) = (paged.first(), paged.last()) {
        problems.push(format!(
            "a rolling restart must never confirm an outage: crossprobe_outage_confirmed was not 0 in {} of {} samples, from {:.1}s to {:.1}s (zones killed at {}; last healed at {:.1}s); verdicts around the first:\n{}",
            paged.len(),
            samples.len(),
            first.at.as_secs_f64(),
            last.at.as_secs_f64(),
            killed.iter().map(|(z, t)| format!("{z} {:.1}s", t.as_secs_f64())).collect::<Vec<_>>().join(", "),
            healed.as_secs_f64(),
            around(&samples, first.at)
        ));
    }
    // Each zone's kill is seen within a generous bound: a scope inside it is named, or (a
    // restart short enough to stay within the blip tolerance is `suspect`, not a ticket) its
    // cells turn failing.
    let named_within = Duration::from_secs(30);
    for (zone, at) in &killed {
        if !samples.iter().any(|s| s.at >= *at && s.at <= *at + named_within && s.sees_zone(zone)) {
            problems.push(format!(
                "zone {zone}, killed at {:.1}s, was never seen (az={zone} or one of its brokers named, or its cells failing) within {named_within:?}; verdicts after the kill:\n{}",
                at.as_secs_f64(),
                around(&samples, *at + Duration::from_secs(3))
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_zones_paused_at_once_confirm_an_outage_that_clears_after_heal() {
    let _x = exclusive().await;
    let d = healthy_daemon().await;
    let addr = d.addr();
    let sampler = Sampler::start(addr);
    let Some(a) = fault("a", "pause").await else { return };
    let Some(b) = fault("b", "pause").await else { return };
    let paused = sampler.now();
    let confirmed = eventually(
        "crossprobe_outage_confirmed 1 with zones a and b paused",
        Duration::from_secs(60),
        || match sampler.last() {
            Some(s) if s.outage == Some(1.0) => Ok(s),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    eprintln!(
        "outage confirmed {:.1}s after the pause: {} {:?}",
        (confirmed.at - paused).as_secs_f64(),
        confirmed.level,
        confirmed.scopes
    );
    assert_eq!(
        confirmed.level, "outage",
        "the confirmed-outage gauge and the verdict disagree: {confirmed:?}"
    );
    heal(a).await;
    heal(b).await;
    let healed = sampler.now();
    let samples = settle(sampler, d, healed, "the outage cleared and every cell healthy after heal").await;
    let cleared = samples.iter().find(|s| s.at > healed && s.outage == Some(0.0)).map(|s| s.at - healed);
    eprintln!("outage cleared {cleared:?} after heal returned");
}
