//! Localize: CSV errors, the leaf test, the gain statistic, and the search on hand-made and
//! generated snapshots.

use super::*;

#[test]
fn failing_leaves() {
    let cases = [
        ("no attempts", 0, 0, 0.0, false),
        ("clean", 100, 0, 0.0, false),
        ("10% without a baseline", 100, 10, 0.0, true),
        ("one failure in ten", 10, 1, 0.0, true),
        ("one failure in twenty", 20, 1, 0.0, true),
        ("4% is under the margin", 100, 4, 0.0, false),
        ("15% on a 10% baseline: not significant", 100, 15, 0.1, false),
        ("15% on a 10% baseline over 1000", 1000, 150, 0.1, true),
        ("12% on a 10% baseline over 100000: under the margin", 100_000, 12_000, 0.1, false),
        ("all failing with a baseline of 1", 100, 100, 1.0, false),
    ];
    for (name, attempts, failures, baseline, want) in cases {
        assert_eq!(Leaf { attempts, failures, baseline }.is_failing(), want, "{name}");
    }
}

#[test]
fn malformed_snapshots_name_the_line() {
    let cases = [
        ("", "the snapshot has no header"),
        ("az,tenant,failures,attempts\n", "line 1: the header must be"),
        ("az,attempts\n", "line 1: the header must be"),
        ("attempts,failures\n", "line 1: the header must be"),
        ("az,az,attempts,failures\n", "line 1: label column \"az\" is empty, repeated or reserved"),
        ("az,attempts,failures\n", "the snapshot has no rows"),
        ("# comment\naz,attempts,failures\n\na,10\n", "line 4: 2 fields, the header has 3"),
        ("az,attempts,failures\na,ten,1\n", "line 2: attempts \"ten\" is not a count"),
        ("az,attempts,failures\na,1,2\n", "line 2: failures (2) exceed attempts (1)"),
        ("az,attempts,failures\na,1,1\na,2,2\n", "line 3: the same leaf as line 2"),
        ("az,attempts,failures\n\"a\",1,1\n", "line 2: quoted fields are not supported"),
        ("az,attempts,failures\n ,1,1\n", "line 2: label az is empty"),
        (
            "az,attempts,failures,expected_failure_ratio\na,1,1,1.5\n",
            "line 2: expected_failure_ratio \"1.5\"",
        ),
    ];
    for (text, want) in cases {
        let err = parse_csv(text).expect_err(want).to_string();
        assert!(err.starts_with(want), "want {want:?}, got {err:?}");
    }
}

#[test]
fn zone_b_is_named_first() {
    let mut csv = String::from("az, tenant, protocol, attempts, failures, expected_failure_ratio\n");
    for az in ["a", "b", "c"] {
        for tenant in ["acme", "globex", "initech", "umbrella"] {
            for protocol in ["kafka", "amqp"] {
                let failures = match (az, tenant, protocol) {
                    ("b", _, _) => 60,
                    (_, "acme", "kafka") if az != "b" => 45,
                    _ => 1,
                };
                csv.push_str(&format!("{az},{tenant},{protocol},300,{failures},0.01\n"));
            }
        }
    }
    let found = localize(&parse_csv(&csv).unwrap(), &CorrelatorSettings::default()).unwrap();
    assert_eq!(found.to_text(), "az=b\ntenant=acme&protocol=kafka\n");
    assert_eq!((found.leaves, found.failing_leaves, found.unexplained_failing_leaves), (24, 10, 0));
    let b = &found.scopes[0].evidence;
    assert_eq!((b.failing_cells, b.total_cells), (8, 8));
    assert_eq!(b.failure_ratio_inside, Some(0.2));
    assert_eq!(b.spans.0, [("tenant".to_owned(), 4), ("protocol".to_owned(), 2)]);
}

/// Deterministic draws for generated snapshots (splitmix64).
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn binomial(&mut self, n: u64, p: f64) -> u64 {
        (0..n).filter(|_| self.next() < p).count() as u64
    }
}

/// 3 zones x 20 tenants x 2 protocols (one broker per zone and protocol), 400 probes a leaf,
/// each leaf's baseline drawn in [0.002, 0.03] and its failures drawn at that baseline plus
/// the extra ratio `fault(labels)`.
fn snapshot(seed: u64, fault: impl Fn(&[String]) -> f64) -> Snapshot {
    let mut draws = Draws(seed);
    let dims = ["az", "tenant", "protocol", "broker"].map(String::from).to_vec();
    let (mut labels, mut leaves) = (Vec::new(), Vec::new());
    for az in ["a", "b", "c"] {
        for t in 1..=20 {
            for (protocol, b) in [("kafka", "k"), ("amqp", "r")] {
                let l = vec![az.to_owned(), format!("t{t:02}"), protocol.to_owned(), format!("{b}-{az}")];
                let baseline = 0.002 + 0.028 * draws.next();
                let ratio = 1.0 - (1.0 - baseline) * (1.0 - fault(&l));
                leaves.push(Leaf { attempts: 400, failures: draws.binomial(400, ratio), baseline });
                labels.push(l);
            }
        }
    }
    Snapshot { matrix: Matrix::from_labels(dims, labels), leaves }
}

fn named(s: &Snapshot) -> Vec<String> {
    let found = localize(s, &CorrelatorSettings::default()).unwrap();
    let mut names: Vec<String> = found.to_text().lines().map(str::to_owned).collect();
    names.sort();
    names
}

#[test]
fn noise_names_no_scope() {
    for seed in 0..20 {
        assert_eq!(named(&snapshot(seed, |_| 0.0)), Vec::<String>::new(), "seed {seed}");
    }
}

#[test]
fn a_brownout_invisible_in_every_leaf_is_found_in_the_sum() {
    for seed in 0..5 {
        let s = snapshot(seed, |l| if l[0] == "b" { 0.03 } else { 0.0 });
        let found = localize(&s, &CorrelatorSettings::default()).unwrap();
        assert_eq!(found.to_text(), "az=b\n", "seed {seed}");
        // Zone b's 40 leaves each fail about 4-5% against a 5-point margin: few or none
        // is failing on its own counts.
        assert!(found.failing_leaves <= 4, "seed {seed}: {} failing leaves", found.failing_leaves);
        let b = &found.scopes[0];
        assert!((b.extra_failure_ratio - 0.03).abs() < 0.01, "seed {seed}: {}", b.extra_failure_ratio);
    }
}

#[test]
fn a_stuck_leaf_or_two_unrelated_ones_are_no_scope() {
    let stuck = |l: &[String]| match (l[0].as_str(), l[1].as_str(), l[2].as_str()) {
        ("a", "t03", "kafka") | ("c", "t11", "amqp") => 1.0,
        _ => 0.0,
    };
    for seed in 0..5 {
        let s = snapshot(seed, stuck);
        let found = localize(&s, &CorrelatorSettings::default()).unwrap();
        assert_eq!(found.to_text(), "", "seed {seed}");
        assert_eq!((found.failing_leaves, found.unexplained_failing_leaves), (2, 2), "seed {seed}");
    }
}

#[test]
fn a_tenant_down_in_two_zones_is_named_with_those_zones() {
    for seed in 0..5 {
        let s = snapshot(seed, |l| if l[1] == "t07" && l[0] != "c" { 0.5 } else { 0.0 });
        assert_eq!(named(&s), ["az=a&tenant=t07", "az=b&tenant=t07"], "seed {seed}");
    }
}

#[test]
fn causes_at_two_depths_are_both_named_once() {
    let fault = |l: &[String]| {
        let zone = if l[0] == "c" { 0.2 } else { 0.0 };
        let pair = if l[1] == "t12" && l[2] == "amqp" { 0.08 } else { 0.0 };
        1.0 - (1.0 - zone) * (1.0 - pair)
    };
    for seed in 0..5 {
        assert_eq!(named(&snapshot(seed, fault)), ["az=c", "tenant=t12&protocol=amqp"], "seed {seed}");
    }
}

#[test]
fn a_weak_cause_under_a_strong_overlapping_one_is_named_whole() {
    // Kafka loses 3% everywhere; zone c loses 30%, its Kafka broker included. The part of
    // Kafka outside zone c must not stand for the whole.
    let fault = |l: &[String]| {
        let zone = if l[0] == "c" { 0.3 } else { 0.0 };
        let kafka = if l[2] == "kafka" { 0.03 } else { 0.0 };
        1.0 - (1.0 - zone) * (1.0 - kafka)
    };
    for seed in 0..5 {
        let found = localize(&snapshot(seed, fault), &CorrelatorSettings::default()).unwrap();
        assert_eq!(found.to_text(), "az=c\nprotocol=kafka\n", "seed {seed}");
        for s in &found.scopes {
            assert!(
                s.gain >= found.gain_threshold,
                "seed {seed}: {} adds {}",
                s.evidence.labels.describe(),
                s.gain
            );
        }
        let kafka = &found.scopes[1];
        assert!(
            (kafka.extra_failure_ratio - 0.03).abs() < 0.01,
            "seed {seed}: {}",
            kafka.extra_failure_ratio
        );
    }
}

#[test]
fn a_weak_zone_half_under_a_strong_protocol_is_named_whole() {
    // AMQP loses 30% everywhere, zone b 5% on both protocols: after AMQP is fitted, the
    // greedy step sees zone b's Kafka half more clearly than zone b; the refitted model
    // prefers the whole zone.
    let fault = |l: &[String]| {
        let amqp = if l[2] == "amqp" { 0.3 } else { 0.0 };
        let zone = if l[0] == "b" { 0.05 } else { 0.0 };
        1.0 - (1.0 - amqp) * (1.0 - zone)
    };
    for seed in 0..8 {
        assert_eq!(named(&snapshot(seed, fault)), ["az=b", "protocol=amqp"], "seed {seed}");
    }
}

#[test]
fn the_background_is_the_middle_of_the_probes() {
    let leaf = |attempts, failures| Leaf { attempts, failures, baseline: 0.0 };
    let cases = [
        ("one leaf", vec![leaf(100, 3)], 0.03),
        ("a broken minority", vec![leaf(100, 1), leaf(100, 2), leaf(100, 90)], 0.02),
        ("weighted by attempts", vec![leaf(1000, 1), leaf(10, 5), leaf(10, 6)], 0.001),
        ("no attempts", vec![leaf(0, 0)], 0.0),
    ];
    for (name, leaves, want) in cases {
        assert_eq!(background_ratio(&leaves), want, "{name}");
    }
    // Without the column, a zone failing 20% on a 1% background is found against that
    // background, which the zone does not move.
    let mut csv = String::from("az,tenant,attempts,failures\n");
    for az in ["a", "b", "c"] {
        for t in 0..6 {
            csv.push_str(&format!("{az},t{t},1000,{}\n", if az == "b" { 200 } else { 10 + t }));
        }
    }
    let s = parse_csv(&csv).unwrap();
    assert!(s.leaves.iter().all(|l| l.baseline == 0.014));
    assert_eq!(localize(&s, &CorrelatorSettings::default()).unwrap().to_text(), "az=b\n");
}

#[test]
fn the_index_depth_fits_the_budget() {
    // (leaves, columns, budget, depth)
    let cases = [
        (360, 5, MAX_MEMBERSHIPS, 5),
        (16_384, 10, MAX_MEMBERSHIPS, 10),
        (16_385, 10, MAX_MEMBERSHIPS, 8),
        (5000, 10, MAX_MEMBERSHIPS, 10),
        (100_000, 10, MAX_MEMBERSHIPS, 2),
        (MAX_LEAVES, 10, MAX_MEMBERSHIPS, 1),
        (10, 3, 10, 0),
    ];
    for (leaves, columns, budget, depth) in cases {
        assert_eq!(searchable_depth(leaves, columns, budget), depth, "{leaves} leaves, {columns} columns");
    }
}

#[test]
fn a_wide_snapshot_is_searched_within_its_bounds() {
    use crate::correlator::testkit::wide_snapshot_csv;
    let snapshot = parse_csv(&wide_snapshot_csv(600, 7)).unwrap();
    let settings = CorrelatorSettings::default();
    // A budget that holds every scope, and one that holds the scopes of two columns at most.
    let full = localize_within(&snapshot, &settings, usize::MAX).unwrap();
    let capped = localize_within(&snapshot, &settings, 600 * 57).unwrap();
    assert_eq!((full.searched_depth, capped.searched_depth), (10, 2));
    for found in [&full, &capped] {
        assert_eq!(found.to_text(), "az=z1&tenant=t03\n", "depth {}", found.searched_depth);
    }
}

// The statistic of `search`.

#[test]
fn gain_is_the_binomial_log_likelihood_ratio() {
    // (attempts, failures, expected, gain), the gains computed apart from this code.
    let cases = [
        (1000.0, 20.0, 10.0, 3.913619576461304),
        (300.0, 300.0, 3.0, 1381.5510557964276),
        (12000.0, 480.0, 120.0, 310.93178549654533),
        (300.0, 12.0, 3.0, 7.773294637413631),
        (100.0, 5.0, 5.0, 0.0),
        (100.0, 2.0, 5.0, 0.0),
        (0.0, 0.0, 0.0, 0.0),
    ];
    for (n, f, e, want) in cases {
        let got = search::gain(n, f, e);
        assert!((got - want).abs() < 1e-9, "gain({n}, {f}, {e}) = {got}, want {want}");
    }
}

#[test]
fn noise_reaches_the_gain_rarely() {
    // The Chernoff bound: P(F >= f) <= exp(-gain). Exact binomial tails for n = 200, p = 0.02.
    let (n, p) = (200u32, 0.02f64);
    let pmf = |k: u32| -> f64 {
        let ln_choose: f64 = (0..k).map(|i| f64::from(n - i).ln() - f64::from(i + 1).ln()).sum();
        (ln_choose + f64::from(k) * p.ln() + f64::from(n - k) * (1.0 - p).ln()).exp()
    };
    for f in 5..40u32 {
        let tail: f64 = (f..=n).map(pmf).sum();
        let bound = (-search::gain(f64::from(n), f64::from(f), f64::from(n) * p)).exp();
        assert!(tail <= bound, "F >= {f}: tail {tail} above the bound {bound}");
    }
}
