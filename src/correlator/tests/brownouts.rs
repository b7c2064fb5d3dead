//! Brownouts: ordinary jitter never degrades anything; a slow zone, a slow broker and a slow
//! cell are named for what they are; failures outrank slowness; baselines survive reloads.

use proptest::prelude::*;

use crate::config::CorrelatorSettings;
use crate::correlator::testkit::{at, grid, in_scope, pairs, scope, SplitMix};
use crate::correlator::{Correlator, LatencyState, Level};
use crate::matrix::Matrix;
use crossprobe_probes::Outcome;

/// A cell's usual round trip: 8 ms through Kafka (tansu with a 5 ms fetch wait), 0.5 ms
/// through RabbitMQ.
fn usual_ms(m: &Matrix, cell: usize) -> f64 {
    if in_scope(m, cell, &[("protocol", "kafka")]) {
        8.0
    } else {
        0.5
    }
}

/// Log-normal jitter around `median` with log-spread `sigma`, and a tail: a share `spikes` of
/// probes ten times slower.
fn jitter(rng: &mut SplitMix, median: f64, sigma: f64, spikes: f64) -> f64 {
    let u = |rng: &mut SplitMix| ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let z = (-2.0 * u(rng).ln()).sqrt() * (std::f64::consts::TAU * u(rng)).cos();
    let ms = median * (sigma * z).exp();
    if rng.chance(spikes) {
        ms * 10.0
    } else {
        ms
    }
}

/// What one tick showed of the brownout half of the verdict.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    level: Level,
    degraded: Vec<Vec<(String, String)>>,
    degraded_cells: usize,
    lone: Vec<Vec<(String, String)>>,
    widespread: bool,
}

/// Drives every cell with one ok probe a tick, its round trip `rtt(tick, cell, rng)` in ms, or
/// a lost probe when that is `None`.
fn drive(
    m: &Matrix,
    settings: &CorrelatorSettings,
    ticks: std::ops::Range<u64>,
    c: &mut Correlator,
    seed: u64,
    mut rtt: impl FnMut(u64, usize, &mut SplitMix) -> Option<f64>,
) -> Vec<Seen> {
    let _ = settings;
    let mut rng = SplitMix(seed);
    let mut seen = Vec::new();
    for t in ticks {
        for cell in 0..m.len() {
            match rtt(t, cell, &mut rng) {
                Some(ms) => {
                    c.record_rtt(cell, &Outcome::Ok, Some(std::time::Duration::from_secs_f64(ms / 1000.0)))
                }
                None => c.record(cell, &Outcome::Lost),
            }
            .unwrap();
        }
        let v = c.tick_at(at(t));
        seen.push(Seen {
            level: v.level,
            degraded: v.degraded.scopes.iter().map(|s| pairs(&s.labels)).collect(),
            degraded_cells: v.degraded.degraded_cells,
            lone: v.degraded.unexplained.iter().map(|s| pairs(&s.labels)).collect(),
            widespread: v.degraded.widespread,
        });
    }
    seen
}

/// A grid correlator that has learned `warm` ticks of ordinary jitter.
fn warmed(warm: u64, seed: u64) -> (Matrix, CorrelatorSettings, Correlator) {
    let m = grid();
    let s = CorrelatorSettings::default();
    let mut c = Correlator::new(&m, &s).unwrap();
    let seen =
        drive(&m, &s, 0..warm, &mut c, seed, |_, cell, rng| Some(jitter(rng, usual_ms(&m, cell), 0.2, 0.01)));
    assert!(seen.iter().all(|s| s.degraded_cells == 0), "warm-up degraded a cell");
    (m, s, c)
}

#[test]
fn hours_of_log_normal_jitter_with_one_percent_spikes_degrade_nothing() {
    let m = grid();
    let s = CorrelatorSettings::default();
    let mut c = Correlator::new(&m, &s).unwrap();
    // Three hours of one probe a second in 24 cells: 259,200 probes, 2,600 of them 10x slow.
    let seen = drive(&m, &s, 0..3 * 3600, &mut c, 7, |_, cell, rng| {
        Some(jitter(rng, usual_ms(&m, cell), 0.3, 0.01))
    });
    let worst = seen.iter().map(|s| s.degraded_cells).max().unwrap();
    assert_eq!(worst, 0, "jitter made a cell degraded");
    assert!(seen.iter().all(|s| s.degraded.is_empty() && s.level == Level::Ok));
    let b = c.brownouts().unwrap();
    assert!(b.cells().all(|l| l.latency == LatencyState::Normal), "every cell learned its baseline");
}

#[test]
fn a_zone_200ms_slower_is_a_degraded_zone_within_seconds() {
    let (m, s, mut c) = warmed(600, 1);
    let seen = drive(&m, &s, 600..660, &mut c, 2, |_, cell, rng| {
        let extra = if in_scope(&m, cell, &[("az", "b")]) { 200.0 } else { 0.0 };
        Some(jitter(rng, usual_ms(&m, cell), 0.2, 0.01) + extra)
    });
    let first = seen.iter().position(|s| !s.degraded.is_empty()).expect("zone b named degraded");
    assert!(first < 15, "named after {first} ticks");
    let last = seen.last().unwrap();
    assert_eq!(last.degraded, vec![scope(&[("az", "b")])]);
    assert_eq!((last.degraded_cells, last.level, last.widespread), (8, Level::Ok, false), "{last:?}");
    let v = c.verdict();
    let z = &v.degraded.scopes[0];
    let factor = z.latency.factor.unwrap();
    assert!(factor > 3.0, "current p50 against baseline p50: {factor}");
    assert!(z.latency.current_p50_ms.unwrap() > 200.0 && z.latency.baseline_p50_ms.unwrap() < 9.0, "{z:?}");

    // Healed: not slow for `successes_to_recover` probes, then resolved after exit_ticks.
    let seen =
        drive(&m, &s, 660..700, &mut c, 3, |_, cell, rng| Some(jitter(rng, usual_ms(&m, cell), 0.2, 0.01)));
    assert!(seen.last().unwrap().degraded.is_empty() && seen.last().unwrap().degraded_cells == 0);
}

#[test]
fn a_broker_five_times_slower_is_a_degraded_broker() {
    let (m, s, mut c) = warmed(600, 4);
    let seen = drive(&m, &s, 600..640, &mut c, 5, |_, cell, rng| {
        let k = if in_scope(&m, cell, &[("broker", "k-b")]) { 5.0 } else { 1.0 };
        Some(jitter(rng, usual_ms(&m, cell), 0.2, 0.01) * k)
    });
    let last = seen.last().unwrap();
    assert_eq!(last.degraded, vec![scope(&[("broker", "k-b")])], "{last:?}");
    assert_eq!(last.degraded_cells, 4);
}

#[test]
fn a_single_cell_twenty_times_slower_is_reported_on_its_own() {
    let (m, s, mut c) = warmed(600, 6);
    // A Kafka cell (8 ms): 20x an AMQP cell's 0.5 ms is 10 ms, inside the 10 ms margin.
    let slow = 4;
    let seen = drive(&m, &s, 600..660, &mut c, 7, |_, cell, rng| {
        Some(jitter(rng, usual_ms(&m, cell), 0.2, 0.01) * if cell == slow { 20.0 } else { 1.0 })
    });
    assert!(seen.iter().all(|s| s.degraded.is_empty()), "one cell never makes a scope");
    let last = seen.last().unwrap();
    assert_eq!(last.degraded_cells, 1);
    let labels: Vec<(String, String)> =
        m.dimensions().iter().cloned().zip(m.cells()[slow].labels.iter().cloned()).collect();
    assert_eq!(last.lone, vec![labels]);
}

#[test]
fn a_failing_zone_is_not_also_degraded() {
    let (m, s, mut c) = warmed(600, 8);
    // Zone b: every other probe lost, the others 200 ms slow: failing, never degraded.
    let seen = drive(&m, &s, 600..660, &mut c, 9, |t, cell, rng| {
        let ms = jitter(rng, usual_ms(&m, cell), 0.2, 0.01);
        match in_scope(&m, cell, &[("az", "b")]) {
            true if t % 2 == 0 => None,
            true => Some(ms + 200.0),
            false => Some(ms),
        }
    });
    let last = seen.last().unwrap();
    assert_eq!(last.level, Level::Partial);
    assert!(seen.iter().all(|s| s.degraded_cells == 0), "failures outrank slowness");
}

#[test]
fn a_learning_cell_is_never_degraded_and_a_reload_keeps_kept_baselines() {
    let m = grid();
    let s = CorrelatorSettings::default();
    let mut c = Correlator::new(&m, &s).unwrap();
    // 200 ms from the start: that is what the cells learn, nothing is slow against it.
    let seen = drive(&m, &s, 0..400, &mut c, 10, |_, _, rng| Some(jitter(rng, 200.0, 0.2, 0.0)));
    assert!(seen.iter().all(|s| s.degraded_cells == 0));
    assert_eq!(c.verdict().degraded.learning_cells, 0);

    // A reload that keeps the first 20 cells and adds 4 new ones.
    let kept: Vec<Option<usize>> = (0..24).map(|i| (i < 20).then_some(i)).collect();
    let r = c.reconfigured(&m, &s, &kept).unwrap();
    let states: Vec<LatencyState> = r.brownouts().unwrap().cells().map(|l| l.latency).collect();
    assert!(states[..20].iter().all(|&l| l == LatencyState::Normal), "{states:?}");
    assert!(states[20..].iter().all(|&l| l == LatencyState::Learning), "{states:?}");
    let p50 = r.brownouts().unwrap().cells().next().unwrap().baseline_p50_ms.unwrap();
    assert!((180.0..220.0).contains(&p50), "kept baseline p50 {p50}");
}

#[test]
fn a_brownout_right_after_learning_does_not_raise_its_own_bar() {
    // 40 probes of history, then zone b 200 ms slower: its first slow probes must make the
    // cells degraded, not the slow ratio that judges them (nor the baseline) climb.
    let m = grid();
    let mut s = CorrelatorSettings::default();
    s.brownout.learning_probes = 40;
    let mut c = Correlator::new(&m, &s).unwrap();
    let seen = drive(&m, &s, 0..120, &mut c, 12, |t, cell, rng| {
        let extra = if t >= 45 && in_scope(&m, cell, &[("az", "b")]) { 200.0 } else { 0.0 };
        Some(jitter(rng, usual_ms(&m, cell), 0.2, 0.01) + extra)
    });
    let first = seen.iter().position(|s| s.degraded == vec![scope(&[("az", "b")])]).expect("az=b degraded");
    assert!((45..70).contains(&first), "named at tick {first}");
    assert!(seen[first..].iter().all(|s| s.degraded == vec![scope(&[("az", "b")])]), "and it stays");
}

#[test]
fn a_lasting_shift_is_absorbed_after_one_half_life_and_relearning() {
    let m = grid();
    let mut s = CorrelatorSettings::default();
    s.brownout.baseline_half_life = std::time::Duration::from_secs(300);
    let mut c = Correlator::new(&m, &s).unwrap();
    let usual = |t: u64, cell: usize, rng: &mut SplitMix| {
        let extra = if t >= 600 && in_scope(&m, cell, &[("az", "b")]) { 200.0 } else { 0.0 };
        Some(jitter(rng, usual_ms(&m, cell), 0.2, 0.01) + extra)
    };
    let seen = drive(&m, &s, 0..1300, &mut c, 11, usual);
    let degraded = |t: usize| seen[t].degraded == vec![scope(&[("az", "b")])];
    // Degraded from the shift on, and for a whole half-life (300 ticks), although the cells had
    // only 600 ticks of history: the brownout is not learned probe by probe.
    assert!((620..=905).all(degraded), "az=b degraded through the half-life");
    // Then the cells learn afresh (300 probes) and the new level is their baseline.
    assert!(seen[1250].degraded.is_empty() && seen[1250].degraded_cells == 0, "{:?}", seen[1250]);
    let b = c.brownouts().unwrap();
    let zone_b: Vec<_> = b.cells().enumerate().filter(|(i, _)| in_scope(&m, *i, &[("az", "b")])).collect();
    assert!(
        zone_b.iter().all(|(_, l)| l.latency == LatencyState::Normal && l.baseline_p50_ms.unwrap() > 190.0),
        "{zone_b:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// An hour of jitter of any spread up to 0.35 and tail spikes up to 1% never makes a
    /// degraded scope, nor a widespread brownout.
    #[test]
    fn jitter_never_makes_a_degraded_scope(seed in any::<u64>(), sigma in 0.05f64..0.35, spikes in 0.0f64..0.01) {
        let m = grid();
        let s = CorrelatorSettings::default();
        let mut c = Correlator::new(&m, &s).unwrap();
        let seen = drive(&m, &s, 0..3600, &mut c, seed, |_, cell, rng| Some(jitter(rng, usual_ms(&m, cell), sigma, spikes)));
        prop_assert!(seen.iter().all(|s| s.degraded.is_empty() && !s.widespread));
    }
}
