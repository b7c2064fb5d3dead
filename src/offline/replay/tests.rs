//! Replay: the record format, ticks, errors naming lines, odd `at_ms` values and gaps.

use super::*;
use crate::correlator::testkit::grid;
use crossprobe_probes::{ErrorKind, Outcome};

fn run(input: &str, matrix: Option<&Matrix>) -> Result<Vec<serde_json::Value>, ReplayError> {
    let inferred;
    let matrix = match matrix {
        Some(m) => m,
        None => {
            inferred = infer_matrix(input.as_bytes())?;
            &inferred
        }
    };
    let mut out = Vec::new();
    replay(input.as_bytes(), matrix, &CorrelatorSettings::default(), &mut out)?;
    Ok(String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect())
}

fn line(at_ms: u64, az: &str, outcome: &str) -> String {
    format!(
        r#"{{"at_ms": {at_ms}, "cell": {{"az": "{az}", "tenant": "acme", "protocol": "kafka", "broker": "k-{az}"}}, "outcome": "{outcome}"}}"#
    )
}

#[test]
fn records_round_trip_in_dimension_order() {
    let m = grid();
    let cell = &m.cells()[1];
    let o = Outcome::PublishFailed(ErrorKind::Blocked);
    let r = OutcomeRecord::new(12_000, &m, cell, &o, Some(1.5));
    let mut buf = Vec::new();
    r.write_line(&mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    assert_eq!(
        text,
        "{\"at_ms\":12000,\"cell\":{\"az\":\"a\",\"tenant\":\"acme\",\"protocol\":\"amqp\",\"broker\":\"r-a\"},\
         \"outcome\":\"publish_failed\",\"rtt_ms\":1.5,\"kind\":\"blocked\"}\n"
    );
    let back: OutcomeRecord = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r);
    assert_eq!(back.outcome(), Some(o));
}

#[test]
fn ticks_follow_at_ms() {
    // Records at 0 and 2500 ms: ticks at 1000, 2000 (no records) and 3000; the first tick is
    // always printed, later ones only on a change.
    let input = [line(0, "a", "ok"), line(2500, "a", "ok")].join("\n");
    let out = run(&input, None).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["at_ms"], 1000);
    assert_eq!(out[0]["verdict"], "ok");
    assert_eq!(out[0]["evidence"]["tick"], 1);
    // Five failures of two cells of zone a, one per second: suspect at the third.
    let mut lines = Vec::new();
    for t in 0..5 {
        lines.push(line(t * 1000, "a", "lost"));
        lines.push(line(t * 1000 + 1, "b", "ok"));
    }
    let out = run(&lines.join("\n"), None).unwrap();
    let got: Vec<(u64, &str)> =
        out.iter().map(|v| (v["at_ms"].as_u64().unwrap(), v["verdict"].as_str().unwrap())).collect();
    assert_eq!(got, [(1000, "ok"), (3000, "suspect")]);
}

#[test]
fn errors_name_the_line() {
    let m = grid();
    let cases: Vec<(String, Option<&Matrix>, &str)> = vec![
        (format!("{}\nnot json", line(0, "a", "ok")), None, "line 2: invalid record"),
        (line(0, "a", "fine"), None, "line 1: unknown outcome \"fine\" (expected one of ok, late, lost"),
        (
            line(0, "x", "ok"),
            Some(&m),
            "line 1: cell {az=x, tenant=acme, protocol=kafka, broker=k-x} is not in the matrix",
        ),
        (
            [line(5000, "a", "ok"), line(1000, "a", "ok")].join("\n"),
            None,
            "line 2: at_ms 1000 is before the tick already evaluated",
        ),
        (
            format!("{}\n\n{}", line(0, "a", "ok"), r#"{"at_ms": 1, "cell": {"az": "a"}, "outcome": "ok"}"#),
            None,
            "line 3: cell labels",
        ),
        (
            r#"{"at_ms": 1, "cell": {"az": "a", "az": "b"}, "outcome": "ok"}"#.into(),
            None,
            "line 1: invalid record: label \"az\" given twice",
        ),
        (
            r#"{"at_ms": 1, "cell": {}, "outcome": "ok", "extra": 1}"#.into(),
            None,
            "line 1: invalid record: unknown field `extra`",
        ),
        (String::new(), Some(&m), "the input holds no records"),
    ];
    for (input, matrix, want) in cases {
        let err = run(&input, matrix).expect_err(want).to_string();
        assert!(err.starts_with(want), "want {want:?}, got {err:?}");
    }
}

#[test]
fn the_largest_at_ms_is_an_error_not_a_spin() {
    let input = [line(0, "a", "ok"), line(u64::MAX, "a", "lost")].join("\n");
    let err = run(&input, None).unwrap_err().to_string();
    assert!(err.starts_with("line 2: at_ms 18446744073709551615 leaves no room for its tick"), "{err}");
    let err = run(&line(u64::MAX - 999, "a", "ok"), None).unwrap_err().to_string();
    assert!(err.starts_with("line 1: at_ms"), "{err}");
    // The largest that fits: one tick right after it.
    let out = run(&line(u64::MAX - 1000, "a", "ok"), None).unwrap();
    assert_eq!(out[0]["at_ms"], u64::MAX);
}

#[test]
fn huge_gaps_are_one_step() {
    // Zone a fails for ten seconds, then a record 10^15 ticks later and one at the end of
    // time: walking would take years.
    let mut lines = Vec::new();
    for t in 0..10 {
        lines.push(line(t * 1000, "a", "lost"));
        lines.push(line(t * 1000 + 1, "b", "ok"));
    }
    lines.push(line(1_000_000_000_000_000_000, "a", "ok"));
    lines.push(line(u64::MAX - 5000, "b", "ok"));
    let started = std::time::Instant::now();
    let out = run(&lines.join("\n"), None).unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "took {:?}", started.elapsed());
    let got: Vec<(u64, &str)> =
        out.iter().map(|v| (v["at_ms"].as_u64().unwrap(), v["verdict"].as_str().unwrap())).collect();
    assert_eq!(got, [(1000, "ok"), (3000, "suspect")]);
}

/// Records of `m` in rounds: each round every cell probes once, failing as its fault says
/// (`faults[round % len]` is a set of zones down), and rounds are `gaps[round]` ticks apart.
fn rounds(m: &Matrix, faults: &[u8], gaps: &[u64]) -> String {
    let mut out = Vec::new();
    let mut at = 0u64;
    for (round, gap) in gaps.iter().enumerate() {
        let down = faults[round % faults.len()];
        for (i, cell) in m.cells().iter().enumerate() {
            let zone = ["a", "b", "c"].iter().position(|z| *z == cell.labels[0]).unwrap();
            let o = if down & (1 << zone) != 0 { Outcome::Lost } else { Outcome::Ok };
            OutcomeRecord::new(at + i as u64, m, cell, &o, None).write_line(&mut out).unwrap();
        }
        at += gap * 1000;
    }
    String::from_utf8(out).unwrap()
}

fn timeline(input: &str, m: &Matrix, settings: &CorrelatorSettings, skip: bool) -> String {
    let mut r = Replay::new(m, settings).unwrap();
    r.skip_gaps = skip;
    let mut out = Vec::new();
    for rec in records(input.as_bytes()) {
        let (line, rec) = rec.unwrap();
        r.feed(line, &rec, &mut out).unwrap();
    }
    r.finish(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Skipping settled gaps prints exactly what walking every tick prints, evidence, tick
    /// numbers and times included, with short hysteresis so that entering, resolving and
    /// flapping all happen inside gaps.
    #[test]
    fn skipping_gaps_prints_what_walking_prints(
        faults in proptest::collection::vec(0u8..8, 1..6),
        gaps in proptest::collection::vec(proptest::prop_oneof![3 => 1u64..3, 1 => 3u64..30, 1 => 30u64..120], 5..30),
        enter in 1u32..4,
        exit_extra in 0u32..6,
        flap_window in 5u32..60,
        flap_changes in 2u32..5,
    ) {
        let m = grid();
        let settings = CorrelatorSettings {
            enter_ticks: enter,
            exit_ticks: enter + exit_extra,
            flap_window_ticks: flap_window,
            flap_changes,
            ..CorrelatorSettings::default()
        };
        let input = rounds(&m, &faults, &gaps);
        let walked = timeline(&input, &m, &settings, false);
        let skipped = timeline(&input, &m, &settings, true);
        proptest::prop_assert_eq!(skipped, walked);
    }
}

#[test]
fn long_lines_and_bad_bytes_name_their_line() {
    let long = format!("{}\n{}", line(0, "a", "ok"), "x".repeat(MAX_LINE_BYTES + 1));
    let err = run(&long, None).unwrap_err().to_string();
    assert_eq!(err, format!("line 2: longer than {MAX_LINE_BYTES} bytes"));
    let mut bytes = line(0, "a", "ok").into_bytes();
    bytes.extend_from_slice(b"\n\xff\n");
    let m = grid();
    let err = replay(&bytes[..], &m, &CorrelatorSettings::default(), &mut Vec::new()).unwrap_err();
    assert_eq!(err.to_string(), "line 2: not UTF-8 text");
    // CRLF line ends are fine.
    let crlf = [line(0, "a", "ok"), line(1000, "a", "ok")].join("\r\n");
    assert_eq!(run(&crlf, None).unwrap().len(), 1);
}

#[test]
fn inferred_matrix_orders_dimensions() {
    let input = r#"{"at_ms": 0, "cell": {"zone_group": "g1", "tenant": "t", "az": "a"}, "outcome": "ok"}
{"at_ms": 0, "cell": {"az": "b", "zone_group": "g1", "tenant": "t"}, "outcome": "ok"}"#;
    let m = infer_matrix(input.as_bytes()).unwrap();
    assert_eq!(m.dimensions(), ["az", "tenant", "zone_group"]);
    let cells: Vec<&[String]> = m.cells().iter().map(|c| c.labels.as_slice()).collect();
    assert_eq!(cells, [["a", "t", "g1"], ["b", "t", "g1"]]);
}

#[test]
fn recorded_round_trips_replay_as_degraded_scopes() {
    // The grid's 24 cells at 2 ms for 400 s (learning takes 300 probes), then zone b at 200 ms
    // for 30 s, then 2 ms again.
    let m = grid();
    let mut lines = Vec::new();
    for t in 0..460u64 {
        for (i, cell) in m.cells().iter().enumerate() {
            let slow = (400..430).contains(&t) && cell.labels[0] == "b";
            let rtt = if slow { 200.0 } else { 2.0 + (t + i as u64) as f64 % 3.0 * 0.1 };
            let r = OutcomeRecord::new(t * 1000 + i as u64, &m, cell, &Outcome::Ok, Some(rtt));
            let mut buf = Vec::new();
            r.write_line(&mut buf).unwrap();
            lines.push(String::from_utf8(buf).unwrap());
        }
    }
    let out = run(&lines.concat(), Some(&m)).unwrap();
    let timeline: Vec<(u64, &str, serde_json::Value)> = out
        .iter()
        .map(|v| (v["at_ms"].as_u64().unwrap(), v["verdict"].as_str().unwrap(), v["degraded"].clone()))
        .collect();
    assert_eq!(timeline.len(), 3, "{timeline:?}");
    assert_eq!(timeline[0], (1000, "ok", serde_json::Value::Null), "no degraded key while there are none");
    let (at, level, degraded) = &timeline[1];
    assert!((401_000..=412_000).contains(at) && *level == "ok", "{timeline:?}");
    assert_eq!(*degraded, serde_json::json!([{"az": "b"}]));
    let evidence = &out[1]["evidence"]["degraded"]["scopes"][0];
    assert_eq!(evidence["degraded_cells"], 8, "{evidence}");
    assert!(evidence["factor"].as_f64().unwrap() > 3.0, "{evidence}");
    assert!(timeline[2].0 > 430_000 && timeline[2].2.is_null(), "cleared after the brownout: {timeline:?}");
}
