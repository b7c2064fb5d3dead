//! End-to-end scenarios of the live correlator with the default settings: outcomes in, verdict
//! and scopes out, tick by tick.

use crate::config::CorrelatorSettings;
use crate::matrix::Matrix;

use crate::correlator::testkit::{cells_matching, drive, grid, nested, scope, Step};
use crate::correlator::Level;

type Pairs = Vec<(&'static str, &'static str)>;

/// A persistent fault from tick `START` on, over the cells matching any of `faults`.
struct Case {
    name: &'static str,
    matrix: fn() -> Matrix,
    faults: Vec<Pairs>,
    level: Level,
    scopes: Vec<Vec<(String, String)>>,
    /// First tick showing `level` and `scopes`.
    from: usize,
}

const START: u64 = 5;
const TICKS: u64 = 40;

#[test]
fn persistent_faults() {
    let amqp_two_zones: Vec<Pairs> = ["a", "b"]
        .into_iter()
        .flat_map(|az| {
            ["acme", "globex", "initech"].map(|t| vec![("az", az), ("tenant", t), ("protocol", "amqp")])
        })
        .collect();
    // Failing from tick 5: a cell fails at its third failure (tick 7). A scope whose cells
    // began failing together, each for more than `blip_rounds` (2) probes in a row, and
    // significantly above the background, is confirmed at once on tick 7 (it waited out
    // `enter_ticks` on top before, until tick 9).
    let cases = vec![
        Case {
            name: "one cell failing persistently",
            matrix: grid,
            faults: vec![vec![("az", "b"), ("tenant", "acme"), ("protocol", "kafka")]],
            level: Level::Suspect,
            scopes: vec![],
            from: 7,
        },
        Case {
            name: "zone b",
            matrix: grid,
            faults: vec![vec![("az", "b")]],
            level: Level::Partial,
            scopes: vec![scope(&[("az", "b")])],
            from: 7,
        },
        Case {
            name: "tenant acme in every zone",
            matrix: grid,
            faults: vec![vec![("tenant", "acme")]],
            level: Level::Partial,
            scopes: vec![scope(&[("tenant", "acme")])],
            from: 7,
        },
        Case {
            name: "one broker everywhere it serves",
            matrix: nested,
            faults: vec![vec![("broker", "k-b1")]],
            level: Level::Partial,
            scopes: vec![scope(&[("broker", "k-b1")])],
            from: 7,
        },
        Case {
            // Named by its two brokers: zone c's amqp is healthy, so `{protocol=amqp}` would
            // send the reader to a zone that is fine.
            name: "amqp in two of three zones for three of four tenants",
            matrix: grid,
            faults: amqp_two_zones,
            level: Level::Outage,
            scopes: vec![scope(&[("broker", "r-a")]), scope(&[("broker", "r-b")])],
            from: 7,
        },
        Case {
            name: "zones b and c of three: the two zones, an outage",
            matrix: grid,
            faults: vec![vec![("az", "b")], vec![("az", "c")]],
            level: Level::Outage,
            scopes: vec![scope(&[("az", "b")]), scope(&[("az", "c")])],
            from: 7,
        },
        Case {
            name: "amqp in zones a and b for every tenant: its two brokers, an outage",
            matrix: nested,
            faults: vec![vec![("az", "a"), ("protocol", "amqp")], vec![("az", "b"), ("protocol", "amqp")]],
            level: Level::Outage,
            scopes: vec![scope(&[("broker", "r-a")]), scope(&[("broker", "r-b")])],
            from: 7,
        },
        Case {
            // Two cells per pair: three failed probes each (6 of 10) are not yet significant
            // at 1e-8 over the grid's scopes against a 1% floor; the fourth round makes them so.
            name: "tenant globex in zones a and b: named with its zones",
            matrix: grid,
            faults: vec![vec![("tenant", "globex"), ("az", "a")], vec![("tenant", "globex"), ("az", "b")]],
            level: Level::Partial,
            scopes: vec![
                scope(&[("az", "a"), ("tenant", "globex")]),
                scope(&[("az", "b"), ("tenant", "globex")]),
            ],
            from: 8,
        },
        Case {
            name: "everything",
            matrix: grid,
            faults: vec![vec![]],
            level: Level::Outage,
            scopes: vec![scope(&[])],
            from: 7,
        },
        Case {
            // Two localized faults at once: both named; only zone b fails for several tenants
            // and only acme in several zones, so they do not corroborate an outage.
            name: "zone b and tenant acme at once",
            matrix: grid,
            faults: vec![vec![("az", "b")], vec![("tenant", "acme")]],
            level: Level::Partial,
            scopes: vec![scope(&[("az", "b")]), scope(&[("tenant", "acme")])],
            from: 7,
        },
    ];
    let settings = CorrelatorSettings::default();
    for case in cases {
        let m = (case.matrix)();
        let faulty = cells_matching(&m, &case.faults);
        let (steps, _) = drive(&m, &settings, TICKS, |t, c| t >= START && faulty.contains(&c));
        let want = Step { level: case.level, scopes: case.scopes.clone() };
        let first = steps.iter().position(|s| *s == want);
        assert_eq!(first, Some(case.from), "{}: first tick with {want:?}; steps: {steps:#?}", case.name);
        assert!(
            steps[case.from..].iter().all(|s| *s == want),
            "{}: must hold once reached: {steps:#?}",
            case.name
        );
        assert!(
            steps[..START as usize].iter().all(|s| s.level == Level::Ok),
            "{}: ok before the fault",
            case.name
        );
        if case.level != Level::Outage {
            assert!(
                steps.iter().all(|s| s.level != Level::Outage),
                "{}: never outage: {steps:#?}",
                case.name
            );
        }
    }
}

#[test]
fn one_failed_probe_stays_ok() {
    let m = grid();
    let (steps, c) = drive(&m, &CorrelatorSettings::default(), 20, |t, cell| t == 5 && cell == 3);
    assert!(steps.iter().all(|s| s.level == Level::Ok && s.scopes.is_empty()), "{steps:#?}");
    assert_eq!(c.verdict().rule, "no failing cells");
}

#[test]
fn flapping_probes_fire_once() {
    // Zone b fails every other probe: 3 of 5 keeps its cells failing, so zone b is activated
    // once and never resolves.
    let m = grid();
    let zone_b = cells_matching(&m, &[vec![("az", "b")]]);
    let (steps, c) = drive(&m, &CorrelatorSettings::default(), 300, |t, cell| {
        t >= START && t % 2 == 1 && zone_b.contains(&cell)
    });
    assert_eq!(c.changes(), (1, 0), "one activation, no resolution");
    let first = steps.iter().position(|s| s.level == Level::Partial).expect("zone b is reported");
    let want = Step { level: Level::Partial, scopes: vec![scope(&[("az", "b")])] };
    assert!(steps[first..].iter().all(|s| *s == want), "{steps:#?}");
}

#[test]
fn flapping_scope_is_held_instead_of_refiring() {
    // Zone b down for 8 ticks, up for 22, over and over: long enough for every cell to recover
    // and the scope to resolve once; the next resolution would be the fourth change in 300 ticks,
    // so the scope is held active and flagged instead.
    let m = grid();
    let zone_b = cells_matching(&m, &[vec![("az", "b")]]);
    let (steps, c) =
        drive(&m, &CorrelatorSettings::default(), 200, |t, cell| t % 30 < 8 && zone_b.contains(&cell));
    assert_eq!(c.changes(), (2, 1), "activate, resolve, activate, then held");
    let v = c.verdict();
    assert_eq!(v.scopes.len(), 1);
    assert!(v.scopes[0].flapping, "flagged flapping");
    let last_resolution =
        steps.windows(2).filter(|w| !w[0].scopes.is_empty() && w[1].scopes.is_empty()).count();
    assert_eq!(last_resolution, 1, "the scope disappears once only");
}

#[test]
fn a_lucky_success_during_recovery_does_not_clear() {
    let m = grid();
    let zone_b = cells_matching(&m, &[vec![("az", "b")]]);
    // Down from 5 to 24 except for one good probe at 20; clean from 25.
    let (steps, c) = drive(&m, &CorrelatorSettings::default(), 60, |t, cell| {
        (START..25).contains(&t) && t != 20 && zone_b.contains(&cell)
    });
    let partial = Step { level: Level::Partial, scopes: vec![scope(&[("az", "b")])] };
    assert!(steps[9..29].iter().all(|s| *s == partial), "held through the lucky success: {steps:#?}");
    // Five clean probes (25..=29) clear the cells; the scope resolves on its tenth clean tick.
    let resolving = Step { level: Level::Ok, scopes: vec![scope(&[("az", "b")])] };
    assert_eq!(steps[28], partial);
    assert!(steps[29..38].iter().all(|s| *s == resolving), "{steps:#?}");
    assert_eq!(steps[38], Step { level: Level::Ok, scopes: vec![] });
    assert_eq!(c.changes(), (1, 1));
}
