//! The traps of issue 13, each in several variants, with the default settings: coincidences that
//! must not become tickets, a rolling restart that must not page, a blip that must confirm
//! nothing, and the evidence an on-call reads. Each trap has a scenario that must fire next to
//! the ones that must not, so neither passes by doing nothing.

use crate::config::CorrelatorSettings;
use crate::matrix::Matrix;
use crossprobe_probes::{ErrorKind, Outcome};

use crate::correlator::testkit::{at, cells_matching, drive, grid, in_scope, nested, scope, SplitMix, Step};
use crate::correlator::{CellState, Correlator, Level};

/// The labels of cell `c`, as `(dimension, value)` pairs.
fn labels(m: &Matrix, c: usize) -> Vec<(String, String)> {
    m.labels(&m.cells()[c]).map(|(d, v)| (d.to_owned(), v.to_owned())).collect()
}

/// Labels shared by two cells.
fn shared(m: &Matrix, a: usize, b: usize) -> usize {
    m.cells()[a].labels.iter().zip(&m.cells()[b].labels).filter(|(x, y)| x == y).count()
}

#[test]
fn a_stuck_cell_and_a_transient_next_to_it_are_two_suspects() {
    // One cell stuck from tick 5 on; later a neighbour (any cell sharing two labels or more with
    // it: same broker, same zone and tenant, same tenant and protocol...) fails for a while.
    let settings = CorrelatorSettings::default();
    for (name, m) in [("grid", grid()), ("nested", nested())] {
        let stuck = cells_matching(&m, &[vec![("az", "b"), ("tenant", "acme"), ("protocol", "kafka")]])[0];
        let neighbours: Vec<usize> =
            (0..m.len()).filter(|&c| c != stuck && shared(&m, c, stuck) >= 2).collect();
        assert!(neighbours.len() >= 4, "{name}: neighbours in several dimensions");
        for &other in &neighbours {
            for length in [3u64, 5, 12] {
                let (steps, c) = drive(&m, &settings, 100, |t, cell| {
                    (cell == stuck && t >= 5) || (cell == other && (60..60 + length).contains(&t))
                });
                let what = format!(
                    "{name}: stuck {:?}, transient {:?} for {length}",
                    labels(&m, stuck),
                    labels(&m, other)
                );
                assert!(
                    steps.iter().all(|s| s.scopes.is_empty() && s.level <= Level::Suspect),
                    "{what}: no scope is at fault: {steps:?}"
                );
                assert_eq!(steps[62].level, Level::Suspect, "{what}");
                assert_eq!(c.changes(), (0, 0), "{what}");
            }
        }
    }
}

#[test]
fn a_stuck_cell_reports_its_age_on_its_own() {
    let m = grid();
    let stuck = cells_matching(&m, &[vec![("az", "b"), ("tenant", "acme"), ("protocol", "kafka")]])[0];
    let mut c = Correlator::new(&m, &CorrelatorSettings::default()).unwrap();
    for t in 0..70 {
        for cell in 0..m.len() {
            let o =
                if cell == stuck && t >= 5 { Outcome::ConnectFailed(ErrorKind::Auth) } else { Outcome::Ok };
            c.record(cell, &o).unwrap();
        }
        c.tick_at(at(t));
    }
    let v = c.verdict();
    assert_eq!((v.level, v.failing_cells, v.unexplained_failing_cells), (Level::Suspect, 1, 1));
    assert_eq!(v.unexplained.len(), 1);
    let lone = &v.unexplained[0];
    assert_eq!(lone.labels.0, labels(&m, stuck));
    assert_eq!((lone.state, lone.error), (CellState::Failing, "auth"));
    // Failing since tick 7 (its third failure), 62 ticks of one second before tick 69.
    assert_eq!(lone.failing_for_seconds, 62);
    assert_eq!(lone.failing_since, humantime::format_rfc3339_seconds(at(7)).to_string());
}

/// Independent failures with probability `p` everywhere, plus `stuck` cells failing from tick 5
/// and one `transient` cell failing on ticks 300..310; counts ticks per level.
fn noise_with_stuck(m: &Matrix, p: f64, seed: u64, stuck: &[usize], transient: usize) -> [u64; 4] {
    let mut rng = SplitMix(seed);
    let (steps, _) = drive(m, &CorrelatorSettings::default(), 2000, |t, cell| {
        (t >= 5 && stuck.contains(&cell)) || (cell == transient && (300..310).contains(&t)) || rng.chance(p)
    });
    let mut levels = [0u64; 4];
    for s in &steps {
        levels[s.level as usize] += 1;
    }
    levels
}

#[test]
fn scattered_stuck_cells_and_noise_stay_suspect() {
    let m = grid();
    let cell = |az, tenant, protocol| {
        cells_matching(&m, &[vec![("az", az), ("tenant", tenant), ("protocol", protocol)]])[0]
    };
    let stuck = [
        cell("a", "acme", "amqp"),
        cell("b", "globex", "kafka"),
        cell("c", "initech", "amqp"),
        cell("a", "umbrella", "kafka"),
    ];
    // Transients that share a tenant and protocol, a zone and tenant, or a broker with a stuck
    // cell, over noise of 0, 2 and 5%.
    let transients = [cell("b", "acme", "amqp"), cell("a", "acme", "kafka"), cell("b", "umbrella", "kafka")];
    for p in [0.0, 0.02, 0.05] {
        for (seed, &transient) in transients.iter().enumerate() {
            let levels = noise_with_stuck(&m, p, seed as u64, &stuck, transient);
            assert_eq!(
                levels[Level::Partial as usize] + levels[Level::Outage as usize],
                0,
                "noise {p}: {levels:?}"
            );
            assert!(levels[Level::Suspect as usize] > 1900, "the stuck cells are suspect: {levels:?}");
        }
    }
}

/// Steps of a rolling restart: each of `groups` in turn down for `down` ticks, the next one
/// going down `gap` ticks after the previous came back; every cell recovers as soon as its
/// brokers answer again (the k-of-n recovery then holds it recovering for 5 probes).
fn rolling(m: &Matrix, groups: &[Vec<(&str, &str)>], down: u64, gap: u64) -> Vec<Step> {
    let members: Vec<Vec<usize>> =
        groups.iter().map(|g| cells_matching(m, std::slice::from_ref(g))).collect();
    let start = |i: usize| 5 + i as u64 * (down + gap);
    let end = start(groups.len()) + 40;
    let (steps, _) = drive(m, &CorrelatorSettings::default(), end, |t, cell| {
        members.iter().enumerate().any(|(i, g)| g.contains(&cell) && (start(i)..start(i) + down).contains(&t))
    });
    steps
}

#[test]
fn a_rolling_restart_is_a_ticket_per_step_never_a_page() {
    let zones: Vec<Vec<(&str, &str)>> = ["a", "b", "c"].iter().map(|z| vec![("az", *z)]).collect();
    let brokers = |m: &Matrix| -> Vec<Vec<(&'static str, String)>> {
        let b = m.dimension_index("broker").unwrap();
        let mut names: Vec<String> = m.cells().iter().map(|c| c.labels[b].clone()).collect();
        names.sort();
        names.dedup();
        names.into_iter().map(|n| vec![("broker", n)]).collect()
    };
    for (name, m) in [("grid", grid()), ("nested", nested())] {
        let by_broker = brokers(&m);
        let by_broker: Vec<Vec<(&str, &str)>> =
            by_broker.iter().map(|g| g.iter().map(|(d, v)| (*d, v.as_str())).collect()).collect();
        for (kind, groups) in [("zone", &zones), ("broker", &by_broker)] {
            for down in [3, 6, 12] {
                for gap in 0..=5 {
                    let steps = rolling(&m, groups, down, gap);
                    let what = format!("{name}, by {kind}, down {down} s, {gap} s apart");
                    assert!(
                        steps.iter().all(|s| s.level != Level::Outage),
                        "{what}: never a page: {steps:?}"
                    );
                    assert!(steps.iter().any(|s| s.level == Level::Partial), "{what}: each step is a ticket");
                    // Every scope named lies in one zone: steps may be named together when they
                    // began within `onset_rounds` of each other (both Kafka brokers of a zone), never
                    // across zones.
                    for s in &steps {
                        for sc in &s.scopes {
                            let p: Vec<(&str, &str)> =
                                sc.iter().map(|(d, v)| (d.as_str(), v.as_str())).collect();
                            let cells = cells_matching(&m, &[p]);
                            let one_zone = zones.iter().any(|z| cells.iter().all(|&c| in_scope(&m, c, z)));
                            assert!(one_zone, "{what}: {sc:?} spans zones: {steps:?}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn two_zones_failing_together_still_page() {
    // The fire case next to the rolling restart: zones a and b down at once.
    let m = grid();
    let down = cells_matching(&m, &[vec![("az", "a")], vec![("az", "b")]]);
    let (steps, _) = drive(&m, &CorrelatorSettings::default(), 30, |t, c| t >= 5 && down.contains(&c));
    assert_eq!(
        steps[7],
        Step { level: Level::Outage, scopes: vec![scope(&[("az", "a")]), scope(&[("az", "b")])] }
    );
    // Zone a failing from 5, zone b from 9: their onsets lie 4 rounds apart, more than
    // onset_rounds, so the quorum waits out enter_ticks instead of confirming at once, then
    // pages all the same.
    let (a, b) = (cells_matching(&m, &[vec![("az", "a")]]), cells_matching(&m, &[vec![("az", "b")]]));
    let (steps, _) = drive(&m, &CorrelatorSettings::default(), 30, |t, c| {
        (t >= 5 && a.contains(&c)) || (t >= 9 && b.contains(&c))
    });
    assert_eq!(steps[11].level, Level::Partial, "both zones failing now, onsets 4 rounds apart... {steps:?}");
    assert_eq!(steps[12].level, Level::Partial, "{steps:?}");
    assert_eq!(steps[13].level, Level::Outage, "...confirmed after enter_ticks: {steps:?}");
}

#[test]
fn a_blip_confirms_nothing_and_a_lasting_fault_confirms_on_its_third_round() {
    let m = grid();
    let settings = CorrelatorSettings::default();
    let zone_b = cells_matching(&m, &[vec![("az", "b")]]);
    // Everything, or zone b, failing for two probe rounds: nothing at all.
    for (what, cells) in [("everything", (0..m.len()).collect::<Vec<_>>()), ("zone b", zone_b.clone())] {
        let (steps, c) = drive(&m, &settings, 40, |t, cell| (5..7).contains(&t) && cells.contains(&cell));
        assert!(steps.iter().all(|s| s.level == Level::Ok && s.scopes.is_empty()), "{what}: {steps:?}");
        assert_eq!(c.changes(), (0, 0));
    }
    // Failing for good from tick 5: the third failed round is tick 7, confirmed on that tick.
    let (steps, _) = drive(&m, &settings, 20, |t, cell| t >= 5 && zone_b.contains(&cell));
    assert_eq!(steps[6].level, Level::Ok);
    assert_eq!(steps[7], Step { level: Level::Partial, scopes: vec![scope(&[("az", "b")])] });
    let (steps, _) = drive(&m, &settings, 20, |t, _| t >= 5);
    assert_eq!(steps[7], Step { level: Level::Outage, scopes: vec![scope(&[])] });

    // A longer blip tolerance: four rounds of everything never page; five do, in enter_ticks.
    let tolerant = CorrelatorSettings { blip_rounds: 4, ..settings };
    let (steps, _) = drive(&m, &tolerant, 40, |t, _| (5..9).contains(&t));
    assert!(steps.iter().all(|s| s.level != Level::Outage), "{steps:?}");
    let (steps, _) = drive(&m, &tolerant, 40, |t, _| (5..10).contains(&t));
    assert_eq!(steps.iter().position(|s| s.level == Level::Outage), Some(9), "{steps:?}");
}

#[test]
fn the_verdict_says_where_what_and_since_when() {
    let m = grid();
    let settings = CorrelatorSettings::default();
    let kafka_ab = cells_matching(
        &m,
        &[vec![("protocol", "kafka"), ("az", "a")], vec![("protocol", "kafka"), ("az", "b")]],
    );
    let mut c = Correlator::new(&m, &settings).unwrap();
    let v = c.verdict();
    assert!(v.starting && v.level == Level::Ok, "before the first tick: {v:?}");
    c.tick_at(at(0));
    assert!(c.verdict().starting, "a tick without outcomes is still starting: {:?}", c.verdict());
    assert_eq!(c.verdict().rule, "starting: no cell has reported yet");
    for t in 1..12 {
        for cell in 0..m.len() {
            let timed_out = t >= 5 && kafka_ab.contains(&cell);
            let o = if timed_out { Outcome::PublishFailed(ErrorKind::Timeout) } else { Outcome::Ok };
            c.record(cell, &o).unwrap();
        }
        c.tick_at(at(t));
    }
    let v = c.verdict();
    assert!(!v.starting);
    assert_eq!(v.level, Level::Outage, "{v:#?}");
    let names: Vec<_> = v.scope_labels().into_iter().map(|l| l.describe()).collect();
    assert_eq!(names, ["broker=k-a", "broker=k-b"]);
    let s = &v.scopes[0];
    let tenants = s.evidence.values.0.iter().find(|(d, _)| d == "tenant").map(|(_, v)| v.join(","));
    assert_eq!(tenants.as_deref(), Some("acme,globex,initech,umbrella"));
    assert_eq!(s.error.as_ref().map(|e| (e.kind, e.cells)), Some(("timeout", 4)));
    assert!(s.strong_evidence);
    // Active from tick 7, the third failed round.
    assert_eq!(
        (s.ticks_active, s.active_since.as_str()),
        (5, humantime::format_rfc3339_seconds(at(7)).to_string().as_str())
    );
    assert_eq!(v.at, humantime::format_rfc3339_seconds(at(11)).to_string());
}

#[test]
fn a_widening_scope_retires_the_narrower_one_at_once() {
    // Tenant acme's kafka in zone b first, then all of zone b.
    let m = grid();
    let pair = cells_matching(&m, &[vec![("az", "b"), ("tenant", "acme")]]);
    let zone_b = cells_matching(&m, &[vec![("az", "b")]]);
    let (steps, _) = drive(&m, &CorrelatorSettings::default(), 40, |t, c| {
        (t >= 5 && pair.contains(&c)) || (t >= 15 && zone_b.contains(&c))
    });
    assert!(steps[12].scopes == vec![scope(&[("az", "b"), ("tenant", "acme")])], "{steps:?}");
    let widened = steps.iter().position(|s| s.scopes.contains(&scope(&[("az", "b")]))).expect("zone b named");
    assert!(
        steps[widened..].iter().all(|s| s.scopes == vec![scope(&[("az", "b")])]),
        "the pair is not listed beside its zone: {steps:?}"
    );
}

#[test]
fn recovering_cells_hold_the_ticket_not_the_page() {
    let m = grid();
    let (steps, c) = drive(&m, &CorrelatorSettings::default(), 12, |t, _| (5..9).contains(&t));
    assert_eq!(steps[8].level, Level::Outage);
    // Tick 9: every cell's latest probe succeeded: recovering, the scope still active.
    assert_eq!(steps[9], Step { level: Level::Partial, scopes: vec![scope(&[])] });
    assert!(c.cell_states().all(|s| s == CellState::Recovering));
    assert_eq!(CellState::Recovering.gauge(), 2);
    let v = c.verdict();
    assert_eq!((v.failing_cells, v.recovering_cells), (24, 24));
    assert_eq!(v.scopes[0].recovering_cells, 24);
}
