use std::path::Path;

use crossprobe_probes::outcome::{ErrorKind, Outcome};
use crossprobe_probes::tracker::ProbeResult;

use super::*;
use crate::config::ValidatedConfig;

fn metrics() -> Metrics {
    metrics_with(None, None)
}

fn local() -> ValidatedConfig {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/local.toml"))
            .unwrap();
    ValidatedConfig::parse(&text, Path::new("local.toml")).unwrap()
}

/// The local example's metrics, with a vantage and with latency kept by other dimensions than
/// the configured ones.
fn metrics_with(vantage: Option<&str>, latency_by: Option<&[&str]>) -> Metrics {
    let config = local();
    let by =
        latency_by.map_or(config.daemon.latency_by.clone(), |b| b.iter().map(|d| d.to_string()).collect());
    Metrics::new(vantage, &by, &config.matrix, Duration::from_millis(500)).unwrap()
}

fn line<'a>(text: &'a str, start: &str) -> Option<&'a str> {
    text.lines().find(|l| l.starts_with(start))
}

const CELL0: [(&str, &str); 4] =
    [("az", "a"), ("tenant", "acme"), ("protocol", "kafka"), ("broker", "kafka-a")];

/// The latency group of [`CELL0`] by default.
const GROUP0: [(&str, &str); 3] = [("az", "a"), ("protocol", "kafka"), ("broker", "kafka-a")];

/// A series as the matrix's series are written: its labels sorted by name, then the family's.
fn series(name: &str, labels: &[(&str, &str)], extra: &[(&str, &str)]) -> String {
    let mut all: Vec<(&str, &str)> = labels.to_vec();
    all.sort();
    let inner: Vec<String> = all.iter().chain(extra).map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

#[test]
fn every_cell_series_exists_at_start_up() {
    let text = metrics().render();
    for outcome in OUTCOME_NAMES {
        let s = format!("{} 0", series("crossprobe_probes_total", &CELL0, &[("outcome", outcome)]));
        assert!(text.contains(&s), "missing {s}");
    }
    assert_eq!(text.lines().filter(|l| l.starts_with("crossprobe_probes_total{")).count(), 12 * 6);
    assert_eq!(text.lines().filter(|l| l.starts_with("crossprobe_cell_state{")).count(), 12);
    assert!(text.contains(&format!("{} -1", series("crossprobe_cell_state", &CELL0, &[]))));
    assert!(text.contains("crossprobe_verdict 0") && text.contains("crossprobe_outage_confirmed 0"));
    let [version, revision, rustc] = super::BUILD;
    let build =
        format!("crossprobe_build_info{{revision=\"{revision}\",rustc=\"{rustc}\",version=\"{version}\"}} 1");
    assert!(text.contains(&build), "{build} not in:\n{text}");
    assert!(!revision.is_empty() && !rustc.is_empty(), "build.rs sets both, \"unknown\" when it cannot tell");
    #[cfg(target_os = "linux")]
    assert!(text.contains("\nprocess_resident_memory_bytes "), "no process metrics in:\n{text}");
}

#[test]
fn reports_are_counted_by_outcome_kind_and_latency() {
    let m = metrics();
    let ok = ProbeResult {
        seq: 1,
        outcome: Outcome::Ok,
        publish: Some(Duration::from_millis(1)),
        roundtrip: Some(Duration::from_millis(7)),
    };
    m.record(0, &Event::Done(ok));
    m.record(
        0,
        &Event::Done(ProbeResult {
            outcome: Outcome::PublishFailed(ErrorKind::Blocked),
            publish: None,
            roundtrip: None,
            ..ok
        }),
    );
    m.record(0, &Event::Duplicate { seq: 1 });
    m.record(0, &Event::Foreign);
    let text = m.render();
    for expected in [
        series("crossprobe_probes_total", &CELL0, &[("outcome", "ok")]),
        series("crossprobe_probes_total", &CELL0, &[("outcome", "publish_failed")]),
        series("crossprobe_probe_errors_total", &CELL0, &[("stage", "publish"), ("kind", "blocked")]),
        series("crossprobe_duplicates_total", &CELL0, &[]),
        series("crossprobe_foreign_messages_total", &CELL0, &[]),
        series("crossprobe_roundtrip_seconds_count", &GROUP0, &[]),
    ] {
        assert!(text.contains(&format!("{expected} 1")), "expected {expected} 1 in:\n{text}");
    }
    let p50 =
        line(&text, &series("crossprobe_roundtrip_window_seconds", &GROUP0, &[("quantile", "0.5")])).unwrap();
    let v: f64 = p50.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((v - 0.007).abs() < 0.0001, "HDR p50 should be 7 ms, saw {p50}");
}

#[test]
fn scope_series_appear_and_disappear_with_the_verdict() {
    let m = metrics();
    let zone_b = vec!["b".to_owned(), "*".into(), "*".into(), "*".into()];
    m.set_verdict(2, false, vec![zone_b.clone()]);
    let text = m.render();
    assert!(
        text.contains("crossprobe_scope_down{az=\"b\",broker=\"*\",protocol=\"*\",tenant=\"*\"} 1"),
        "{text}"
    );
    assert!(text.contains("crossprobe_verdict 2"));
    m.set_verdict(0, false, vec![]);
    let text = m.render();
    assert!(!text.contains("crossprobe_scope_down{"), "a cleared scope must be removed:\n{text}");
}

/// Sample lines (not comments) of a rendered registry.
fn samples(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect()
}

#[test]
fn a_vantage_labels_every_series_and_none_labels_none() {
    let with = metrics_with(Some("zone-a"), None);
    with.set_verdict(2, false, vec![vec!["b".into(), "*".into(), "*".into(), "*".into()]]);
    let text = with.render();
    let all = samples(&text);
    assert!(all.len() > 100, "expected every cell series, saw {} samples", all.len());
    let unlabelled: Vec<&&str> = all.iter().filter(|l| !l.contains("vantage=\"zone-a\"")).collect();
    assert!(unlabelled.is_empty(), "series without vantage=\"zone-a\": {unlabelled:?}");
    assert!(text.contains("crossprobe_verdict{vantage=\"zone-a\"} 2"), "{text}");
    assert!(
        text.contains(&format!("{} -1", series("crossprobe_cell_state", &CELL0, &[("vantage", "zone-a")])))
    );

    let without = metrics().render();
    assert!(!without.contains("vantage"), "no vantage configured, yet one is exported:\n{without}");
    assert!(without.contains("crossprobe_verdict 0"));
}

#[test]
fn buckets_double_up_to_the_timeout() {
    assert_eq!(latency_buckets(Duration::from_millis(4)), [0.0005, 0.001, 0.002, 0.004]);
    let b = latency_buckets(Duration::from_millis(500));
    assert_eq!((b.first(), b.last(), b.len()), (Some(&0.0005), Some(&0.5), 11));
}

/// The README's metrics table and the registry must list the same metrics with the same types.
#[test]
fn readme_metrics_table_matches_the_registry() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme.split("## Metrics").nth(1).expect("README has a Metrics section");
    let documented: std::collections::BTreeMap<String, String> = section
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cols.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((name.to_owned(), cols.get(2)?.to_string()))
        })
        .collect();
    let m = metrics();
    // The error counter is created on first use, scope series only while a scope is down or
    // degraded.
    m.set_verdict(2, false, vec![vec!["b".into(), "*".into(), "*".into(), "*".into()]]);
    m.set_degraded(false, vec![vec!["c".into(), "*".into(), "*".into(), "*".into()]]);
    let failed = ProbeResult {
        seq: 1,
        outcome: Outcome::ConnectFailed(ErrorKind::Refused),
        publish: None,
        roundtrip: None,
    };
    m.record(0, &Event::Done(failed));
    let rendered: std::collections::BTreeMap<String, String> = m
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            (name.to_owned(), kind.to_owned())
        })
        .collect();
    assert_eq!(documented, rendered, "README metrics table (left) differs from the registry (right)");
}

#[test]
fn a_reload_keeps_kept_cells_series_and_removes_the_others() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/local.toml"))
            .unwrap();
    let before = ValidatedConfig::parse(&text, Path::new("local.toml")).unwrap().matrix;
    let m = Metrics::new(None, &local().daemon.latency_by, &before, Duration::from_millis(500)).unwrap();
    let failed = ProbeResult {
        seq: 1,
        outcome: Outcome::ConnectFailed(ErrorKind::Refused),
        publish: None,
        roundtrip: None,
    };
    let ok = ProbeResult {
        seq: 2,
        outcome: Outcome::Ok,
        publish: None,
        roundtrip: Some(Duration::from_millis(3)),
    };
    for cell in 0..before.len() {
        m.record(cell, &Event::Done(failed));
        m.record(cell, &Event::Done(ok));
    }
    // Without zone c (4 cells), cells in reverse order: every kept cell moves.
    let az = before.dimension_index("az").unwrap();
    let kept = before.filtered(|c| c.labels[az] != "c");
    let after = Matrix::new(before.dimensions().to_vec(), kept.cells().iter().rev().cloned().collect());
    let previous: Vec<Option<usize>> =
        after.cells().iter().map(|c| before.cells().iter().position(|o| o.id == c.id)).collect();
    m.reconfigure(&after, &previous);
    m.record(0, &Event::Done(ok));
    let text = m.render();
    assert!(!text.contains("az=\"c\""), "zone c series should be gone:\n{text}");
    let ok_of = |labels: &[(&str, &str)]| {
        let s = series("crossprobe_probes_total", labels, &[("outcome", "ok")]);
        line(&text, &format!("{s} ")).unwrap_or_else(|| panic!("missing {s}")).to_owned()
    };
    // after[0] is the last kept cell of the old order: its count went on from 1 to 2.
    let last: Vec<(&str, &str)> = before
        .dimensions()
        .iter()
        .map(String::as_str)
        .zip(after.cells()[0].labels.iter().map(String::as_str))
        .collect();
    assert!(ok_of(&last).ends_with(" 2"), "{}", ok_of(&last));
    assert!(ok_of(&CELL0).ends_with(" 1"), "{}", ok_of(&CELL0));
    let errors =
        series("crossprobe_probe_errors_total", &CELL0, &[("stage", "connect"), ("kind", "refused")]);
    assert!(line(&text, &format!("{errors} ")).is_some_and(|l| l.ends_with(" 1")), "{errors} kept");
    assert_eq!(text.lines().filter(|l| l.starts_with("crossprobe_cell_state{")).count(), 8);
    assert_eq!(text.lines().filter(|l| l.starts_with("crossprobe_probe_errors_total{")).count(), 8);

    // Zone c back: fresh series from zero.
    let previous: Vec<Option<usize>> =
        before.cells().iter().map(|c| after.cells().iter().position(|o| o.id == c.id)).collect();
    m.reconfigure(&before, &previous);
    let text = m.render();
    let c0: Vec<(&str, &str)> =
        vec![("az", "c"), ("tenant", "acme"), ("protocol", "kafka"), ("broker", "kafka-c")];
    let s = series("crossprobe_probes_total", &c0, &[("outcome", "ok")]);
    assert!(line(&text, &format!("{s} ")).is_some_and(|l| l.ends_with(" 0")), "{s} starts at 0:\n{text}");
}

#[test]
fn reloads_are_counted_and_a_failure_sets_the_success_gauge_to_0() {
    let m = metrics();
    m.reloaded(true);
    m.reloaded(false);
    let text = m.render();
    assert!(text.contains("crossprobe_config_last_reload_success 0"));
    assert!(text.contains("crossprobe_config_reloads_total{result=\"failure\"} 1"));
    assert!(text.contains("crossprobe_config_reloads_total{result=\"success\"} 1"));
    m.reloaded(true);
    assert!(m.render().contains("crossprobe_config_last_reload_success 1"));
}

#[test]
fn windowed_round_trips_group_cells_by_the_dimensions_asked_for() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/local.toml"))
            .unwrap();
    let config = ValidatedConfig::parse(&text, Path::new("local.toml")).unwrap();
    let m =
        Metrics::new(None, &config.daemon.latency_by, &config.matrix, Duration::from_millis(500)).unwrap();
    let mut fed = 0;
    for (i, cell) in config.matrix.cells().iter().enumerate() {
        if cell.labels[0] == "a" && cell.labels[2] == "kafka" {
            for ms in [2, 2, 2, 10] {
                let r = ProbeResult {
                    seq: 1,
                    outcome: Outcome::Ok,
                    publish: None,
                    roundtrip: Some(Duration::from_millis(ms)),
                };
                m.record(i, &Event::Done(r));
                fed += 1;
            }
        }
    }
    let groups = m.roundtrip_window_by(&["protocol", "az", "no-such-dimension"], &[0.5, 0.99]);
    let keys: Vec<String> = groups
        .iter()
        .map(|g| g.labels.iter().map(|(d, v)| format!("{d}={v}")).collect::<Vec<_>>().join("&"))
        .collect();
    assert_eq!(
        keys,
        [
            "az=a&protocol=amqp",
            "az=a&protocol=kafka",
            "az=b&protocol=amqp",
            "az=b&protocol=kafka",
            "az=c&protocol=amqp",
            "az=c&protocol=kafka"
        ],
        "one group per zone and protocol, labels in dimension order"
    );
    let a_kafka = &groups[1];
    assert_eq!(a_kafka.samples, fed);
    let [p50, p99] = a_kafka.seconds[..] else { panic!("two quantiles expected: {a_kafka:?}") };
    assert!((p50 - 0.002).abs() < 0.0001 && (p99 - 0.010).abs() < 0.0001, "p50 {p50} p99 {p99}");
    assert!(groups.iter().filter(|g| g.samples == 0).all(|g| g.seconds.is_empty()), "{groups:?}");
}

#[test]
fn round_trips_beyond_a_second_are_kept_in_the_window() {
    // Timeouts may exceed the windows' initial 1 s bound; such round trips must grow the
    // window, not be dropped.
    let m = metrics();
    for (seq, ms) in [(1, 3), (2, 2_500), (3, 2_500)] {
        let r = ProbeResult {
            seq,
            outcome: Outcome::Ok,
            publish: None,
            roundtrip: Some(Duration::from_millis(ms)),
        };
        m.record(0, &Event::Done(r));
    }
    let text = m.render();
    let p50 =
        line(&text, &series("crossprobe_roundtrip_window_seconds", &GROUP0, &[("quantile", "0.5")])).unwrap();
    let v: f64 = p50.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((v - 2.5).abs() < 0.025, "HDR p50 should be 2.5 s within 1 %, saw {p50}");
}

/// Samples of `family` (its name followed by `{` or a space).
fn count(text: &str, family: &str) -> usize {
    text.lines().filter(|l| l.strip_prefix(family).is_some_and(|r| r.starts_with(['{', ' ']))).count()
}

#[test]
fn a_cell_costs_fourteen_series_and_latency_is_kept_per_zone_protocol_and_broker() {
    let m = metrics();
    let text = m.render();
    let cells = 12;
    let per_cell = [
        "crossprobe_probes_total",
        "crossprobe_duplicates_total",
        "crossprobe_reorders_total",
        "crossprobe_foreign_messages_total",
        "crossprobe_late_messages_total",
        "crossprobe_corrupt_messages_total",
        "crossprobe_cell_state",
        "crossprobe_roundtrip_baseline_seconds",
    ];
    let cell_series: usize = per_cell.iter().map(|f| count(&text, f)).sum();
    assert_eq!(cell_series, cells * 14, "14 series a cell:\n{text}");
    // The local example has one broker per zone and protocol: 6 latency groups.
    assert_eq!(count(&text, "crossprobe_roundtrip_seconds_count"), 6, "{text}");
    assert_eq!(count(&text, "crossprobe_publish_seconds_count"), 6, "{text}");
    assert_eq!(count(&text, "crossprobe_roundtrip_window_seconds"), 6 * QUANTILES.len(), "{text}");
    let group = series("crossprobe_roundtrip_seconds_count", &GROUP0, &[]);
    assert!(text.contains(&format!("{group} 0")), "missing {group}:\n{text}");
    // Latency per group; only the baseline is per cell.
    let per_cell_latency = |l: &str| {
        l.starts_with("crossprobe_roundtrip")
            && !l.starts_with("crossprobe_roundtrip_baseline")
            && l.contains("tenant=")
    };
    assert!(!text.lines().any(per_cell_latency), "{text}");
    let samples = samples(&text).len();
    assert!(samples <= cells * 14 + 6 * 40 + 30, "{samples} samples in all:\n{text}");
}

#[test]
fn latency_by_every_dimension_keeps_latency_per_cell_and_both_tenants_add_up() {
    let all = ["az", "tenant", "protocol", "broker"];
    let per_cell = metrics_with(None, Some(&all));
    let per_group = metrics();
    let ok = |ms| ProbeResult {
        seq: 1,
        outcome: Outcome::Ok,
        publish: Some(Duration::from_micros(700)),
        roundtrip: Some(Duration::from_millis(ms)),
    };
    // Cells 0 and 1: zone a, kafka, kafka-a; tenants acme and globex.
    for m in [&per_cell, &per_group] {
        m.record(0, &Event::Done(ok(3)));
        m.record(1, &Event::Done(ok(5)));
    }
    let text = per_cell.render();
    assert_eq!(count(&text, "crossprobe_roundtrip_seconds_count"), 12, "{text}");
    let acme = series("crossprobe_roundtrip_seconds_count", &CELL0, &[]);
    assert!(text.contains(&format!("{acme} 1")), "missing {acme} 1:\n{text}");
    let text = per_group.render();
    let group = series("crossprobe_roundtrip_seconds_count", &GROUP0, &[]);
    assert!(text.contains(&format!("{group} 2")), "both cells' probes in {group}:\n{text}");
    let sum = series("crossprobe_roundtrip_seconds_sum", &GROUP0, &[]);
    let v: f64 = line(&text, &format!("{sum} ")).unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    assert!((v - 0.008).abs() < 1e-9, "sum of 3 ms and 5 ms, saw {v}");
    let le = series("crossprobe_roundtrip_seconds_bucket", &GROUP0, &[("le", "0.004")]);
    assert!(text.contains(&format!("{le} 1")), "buckets are cumulative: {le} 1 expected:\n{text}");
    let inf = series("crossprobe_roundtrip_seconds_bucket", &GROUP0, &[("le", "+Inf")]);
    assert!(text.contains(&format!("{inf} 2")), "{inf} 2 expected:\n{text}");
}

#[test]
fn label_values_are_escaped() {
    let m = Metrics::new(
        None,
        &[],
        &Matrix::from_labels(vec!["az".into()], vec![vec!["a\"b\\c\nd".into()]]),
        Duration::from_millis(500),
    )
    .unwrap();
    let text = m.render();
    assert!(text.contains("crossprobe_cell_state{az=\"a\\\"b\\\\c\\nd\"} -1"), "{text}");
    assert!(text.contains("crossprobe_roundtrip_seconds_count 0"), "one group without labels:\n{text}");
}

/// A Kafka cell's partition series: the move counter from start-up (AMQP cells have none), the
/// replicas once known; a worker restarted by a reload counts from zero again, and the exported
/// counter still only grows.
#[test]
fn partition_series_follow_the_workers_and_never_go_down() {
    use crossprobe_probes::backend::PartitionHealth;
    let m = metrics();
    let changes = series("crossprobe_partition_leader_changes_total", &CELL0, &[]);
    let isr = series("crossprobe_partition_in_sync_replicas", &CELL0, &[]);
    let text = m.render();
    assert!(text.contains(&format!("{changes} 0")), "created at start-up");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("crossprobe_partition_leader_changes_total{")).count(),
        6
    );
    assert!(line(&text, &isr).is_none(), "replicas unknown before the metadata was read");
    let n = m.table.read().unwrap().cells.len();
    let at = |h: PartitionHealth| {
        let mut v = vec![None; n];
        v[0] = Some(h);
        v
    };
    m.set_partitions(&at(PartitionHealth { leader_changes: 2, replicas: 3, in_sync: 3 }));
    m.set_partitions(&at(PartitionHealth { leader_changes: 3, replicas: 3, in_sync: 2 }));
    // A new worker after a reload: its own count starts again.
    m.set_partitions(&at(PartitionHealth { leader_changes: 1, replicas: 3, in_sync: 2 }));
    let text = m.render();
    assert_eq!(line(&text, &changes), Some(format!("{changes} 4").as_str()));
    assert_eq!(line(&text, &isr), Some(format!("{isr} 2").as_str()));
}

#[test]
fn a_cells_baseline_is_nan_while_learning_and_its_quantiles_once_learned() {
    let m = metrics();
    let cells = local().matrix.len();
    let mut baselines = vec![None; cells];
    baselines[0] = Some((8.0, 20.0));
    m.set_baselines(baselines);
    let text = m.render();
    let lines: Vec<&str> =
        text.lines().filter(|l| l.starts_with("crossprobe_roundtrip_baseline_seconds{")).collect();
    assert_eq!(lines.len(), cells * 2, "{text}");
    assert_eq!(lines.iter().filter(|l| l.ends_with(" NaN")).count(), (cells - 1) * 2, "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("quantile=\"0.5\"") && l.ends_with(" 0.008")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("quantile=\"0.99\"") && l.ends_with(" 0.02")), "{lines:#?}");
}
