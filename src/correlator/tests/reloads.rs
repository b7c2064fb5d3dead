//! A reloaded correlator keeps its state: cell windows of kept cells, hysteresis of scopes that
//! still exist, the tick count; new thresholds apply from then on.

use crate::config::CorrelatorSettings;
use crate::matrix::Matrix;
use crossprobe_probes::Outcome;

use crate::correlator::testkit::{grid, in_scope, pairs, scope};
use crate::correlator::{CellState, Correlator, Level};

/// For each cell of `new`, the index of the cell of `old` with the same labels.
fn previous(old: &Matrix, new: &Matrix) -> Vec<Option<usize>> {
    new.cells().iter().map(|c| old.cells().iter().position(|o| o.labels == c.labels)).collect()
}

/// Every cell probes once, failing when in zone b; then one tick.
fn zone_b_down_tick(m: &Matrix, c: &mut Correlator) -> Level {
    for cell in 0..m.len() {
        let o = if in_scope(m, cell, &[("az", "b")]) { Outcome::Lost } else { Outcome::Ok };
        c.record(cell, &o).unwrap();
    }
    c.tick().level
}

fn without_tenant(m: &Matrix, tenant: &str) -> Matrix {
    let t = m.dimension_index("tenant").unwrap();
    m.filtered(|c| c.labels[t] != tenant)
}

#[test]
fn an_active_scope_survives_a_reload_that_adds_cells_and_changes_thresholds() {
    let before = without_tenant(&grid(), "umbrella");
    let settings = CorrelatorSettings::default();
    let mut c = Correlator::new(&before, &settings).unwrap();
    for _ in 0..12 {
        zone_b_down_tick(&before, &mut c);
    }
    assert_eq!(c.verdict().level, Level::Partial);
    let active_for = c.verdict().scopes[0].ticks_active;
    let (activations, _) = c.changes();

    let after = grid();
    let looser = CorrelatorSettings { exit_ticks: 30, enter_ticks: 5, ..settings.clone() };
    let mut r = c.reconfigured(&after, &looser, &previous(&before, &after)).unwrap();
    // The first tick after the reload: the new tenant's zone-b cells have not failed three times
    // yet, but the scope stays active instead of waiting out the new enter_ticks again.
    let level = zone_b_down_tick(&after, &mut r);
    assert_eq!(level, Level::Partial, "{:?}", r.verdict());
    let v = r.verdict();
    assert_eq!(
        v.scopes.iter().map(|s| pairs(&s.evidence.labels)).collect::<Vec<_>>(),
        [scope(&[("az", "b")])]
    );
    assert_eq!(v.scopes[0].ticks_active, active_for + 1, "the activation tick is kept");
    assert_eq!(v.tick, c.verdict().tick + 1, "ticks go on");
    assert_eq!(v.total_cells, after.len());
    assert_eq!(r.changes().0, activations, "no second activation");

    // The new exit_ticks applies: healed, the scope holds for 30 clean ticks, not 10.
    let mut cleared_at = None;
    for t in 1..=40 {
        for cell in 0..after.len() {
            r.record(cell, &Outcome::Ok).unwrap();
        }
        if r.tick().scopes.is_empty() && cleared_at.is_none() {
            cleared_at = Some(t);
        }
    }
    let cleared_at = cleared_at.expect("the scope resolves");
    assert!(cleared_at > 30, "resolved after {cleared_at} clean ticks; exit_ticks is 30 now");
}

#[test]
fn kept_cells_keep_their_windows_and_removed_scopes_are_dropped() {
    let before = grid();
    let settings = CorrelatorSettings::default();
    let mut c = Correlator::new(&before, &settings).unwrap();
    for _ in 0..12 {
        zone_b_down_tick(&before, &mut c);
    }
    // Zone b's targets removed altogether; zone a and c cells keep their (healthy) windows.
    let az = before.dimension_index("az").unwrap();
    let after = before.filtered(|cell| cell.labels[az] != "b");
    let mut r = c.reconfigured(&after, &settings, &previous(&before, &after)).unwrap();
    assert!(r.cell_states().all(|s| s == CellState::Healthy), "kept cells are not unknown again");
    for cell in 0..after.len() {
        r.record(cell, &Outcome::Ok).unwrap();
    }
    let v = r.tick();
    assert_eq!((v.level, v.scopes.len()), (Level::Ok, 0), "{v:?}");
}

#[test]
fn a_shorter_window_forgets_the_oldest_outcomes() {
    let m = grid();
    let settings = CorrelatorSettings::default();
    let mut c = Correlator::new(&m, &settings).unwrap();
    // Cell 0: three failures, then two successes: recovering, 3 of the last 5 failed.
    for o in [Outcome::Lost, Outcome::Lost, Outcome::Lost, Outcome::Ok, Outcome::Ok] {
        c.record(0, &o).unwrap();
    }
    let shorter = CorrelatorSettings { window: 3, failures_to_fail: 2, ..settings };
    let identity: Vec<Option<usize>> = (0..m.len()).map(Some).collect();
    let mut r = c.reconfigured(&m, &shorter, &identity).unwrap();
    assert_eq!(
        r.cell_states().next(),
        Some(CellState::Recovering),
        "the state stands until the next outcome"
    );
    // One more failure: in a window of 3 that is 2 failures (the oldest two fell out).
    assert_eq!(r.record(0, &Outcome::Lost).unwrap(), CellState::Failing);
    let v = r.tick();
    assert_eq!(v.failing_cells, 1);
}
