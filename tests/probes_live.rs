//! Round-trip probes against the real local zones: every cell ok, and each real fault (pause,
//! kill, memory alarm, revoked tenant, stray messages) seen where it happens and nowhere else,
//! with recovery after healing and no daemon restart.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crossprobe::config::ValidatedConfig;
use crossprobe::daemon::{self, Probing};
use crossprobe_probes::outcome::Outcome;
use crossprobe_probes::tracker::Event;
use support::{brokers, exclusive, local_matrix, parse, FAST};

/// Outcomes per cell id seen over `period`.
async fn collect(
    p: &mut Probing,
    config: &ValidatedConfig,
    period: Duration,
) -> BTreeMap<String, Vec<Outcome>> {
    let mut seen: BTreeMap<String, Vec<Outcome>> = BTreeMap::new();
    let until = tokio::time::Instant::now() + period;
    while let Ok(Some(r)) = tokio::time::timeout_at(until, p.next()).await {
        if let Event::Done(d) = r.event {
            seen.entry(config.matrix.cells()[r.cell].id.to_string()).or_default().push(d.outcome);
        }
    }
    seen
}

/// Waits until every cell matching `filter` has reported `ok` since the call, or panics.
async fn until_ok(
    p: &mut Probing,
    config: &ValidatedConfig,
    filter: impl Fn(&str) -> bool,
    within: Duration,
) {
    let mut pending: Vec<String> =
        config.matrix.cells().iter().map(|c| c.id.to_string()).filter(|id| filter(id)).collect();
    let deadline = tokio::time::Instant::now() + within;
    while !pending.is_empty() {
        match tokio::time::timeout_at(deadline, p.next()).await {
            Ok(Some(r)) => {
                if matches!(r.event, Event::Done(d) if d.outcome == Outcome::Ok) {
                    let id = config.matrix.cells()[r.cell].id.to_string();
                    pending.retain(|c| *c != id);
                }
            }
            _ => panic!("cells {pending:?} did not report ok within {within:?}"),
        }
    }
}

fn in_zone(zone: &'static str) -> impl Fn(&str) -> bool {
    move |id: &str| id.split('/').next().is_some_and(|t| t.ends_with(&format!("-{zone}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_local_cell_is_ok_with_positive_latencies() {
    let _x = exclusive().await;
    let (toml, _) = local_matrix(brokers(), &FAST);
    let config = parse(&toml);
    let results = daemon::once(&config).await.expect("once runs");
    assert_eq!(results.len(), 12);
    for (cell, r) in config.matrix.cells().iter().zip(&results) {
        let r = r.unwrap_or_else(|| panic!("{}: no result", cell.id));
        assert_eq!(r.outcome, Outcome::Ok, "{}: {r:?}", cell.id);
        let (publish, roundtrip) = (r.publish.unwrap(), r.roundtrip.unwrap());
        assert!(publish > Duration::ZERO && roundtrip > Duration::ZERO, "{}: {r:?}", cell.id);
        assert!(roundtrip < Duration::from_millis(400), "{}: round trip above the timeout: {r:?}", cell.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_zone_fails_within_the_timeout_and_recovers_after_heal() {
    let _x = exclusive().await;
    let b = brokers();
    let (toml, _) = local_matrix(b, &FAST);
    let config = parse(&toml);
    let mut p = Probing::start(&config, false, None).await.unwrap();
    until_ok(&mut p, &config, |_| true, Duration::from_secs(20)).await;

    let Some(fault) = b.fault("b", "pause", None) else { return p.stop().await.unwrap() };
    let _ = collect(&mut p, &config, Duration::from_millis(600)).await; // probes started before the pause
    let seen = collect(&mut p, &config, Duration::from_secs(3)).await;
    for cell in config.matrix.cells() {
        let id = cell.id.to_string();
        let outcomes = seen.get(&id).unwrap_or_else(|| panic!("{id}: no outcome in 3 s: {seen:?}"));
        if in_zone("b")(&id) {
            assert!(
                outcomes.iter().all(|o| matches!(
                    o,
                    Outcome::Lost | Outcome::PublishFailed(_) | Outcome::ConnectFailed(_)
                )),
                "{id}: expected only failures while paused, saw {outcomes:?}"
            );
        } else {
            assert!(
                outcomes.iter().all(|o| *o == Outcome::Ok),
                "{id}: expected ok in a healthy zone, saw {outcomes:?}"
            );
        }
    }

    // `once` under the same fault: never hangs, zone b fails, a and c are ok.
    let started = Instant::now();
    let (toml_once, _) = local_matrix(b, &FAST);
    let config_once = parse(&toml_once);
    let results = daemon::once(&config_once).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "once took {:?} with zone b paused",
        started.elapsed()
    );
    for (cell, r) in config_once.matrix.cells().iter().zip(&results) {
        let ok = r.is_some_and(|r| r.outcome == Outcome::Ok);
        assert_eq!(ok, !in_zone("b")(cell.id.as_str()), "once, {}: {r:?}", cell.id);
    }

    fault.heal();
    until_ok(&mut p, &config, in_zone("b"), Duration::from_secs(60)).await;
    p.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_zone_reports_connect_failed_and_recovers_after_restart() {
    let _x = exclusive().await;
    let b = brokers();
    let (toml, _) = local_matrix(b, &FAST);
    let config = parse(&toml);
    let mut p = Probing::start(&config, false, None).await.unwrap();
    until_ok(&mut p, &config, |_| true, Duration::from_secs(20)).await;

    let Some(fault) = b.fault("b", "kill", None) else { return p.stop().await.unwrap() };
    let _ = collect(&mut p, &config, Duration::from_secs(3)).await; // clients notice the refusal
    let seen = collect(&mut p, &config, Duration::from_secs(2)).await;
    for cell in config.matrix.cells() {
        let id = cell.id.to_string();
        let outcomes = &seen[&id];
        if in_zone("b")(&id) {
            assert!(
                outcomes.iter().all(|o| matches!(o, Outcome::ConnectFailed(_))),
                "{id}: expected connect_failed with the broker killed, saw {outcomes:?}"
            );
        } else {
            assert!(outcomes.iter().all(|o| *o == Outcome::Ok), "{id}: expected ok, saw {outcomes:?}");
        }
    }
    fault.heal();
    until_ok(&mut p, &config, in_zone("b"), Duration::from_secs(60)).await;
    p.stop().await.unwrap();
}
