//! Tuning on history: recordings that last (rotated, compressed, torn lines, wall-clock
//! windows), `replay --summary` and `replay --compare`, on the recorded scenarios under
//! `tests/replay/` (see `tests/replay_cli.rs`) and on records made here.

mod support;

use std::path::{Path, PathBuf};

use crossprobe::offline::recording::{Recorder, Retention};
use crossprobe::offline::OutcomeRecord;
use support::{crossprobe, root};

/// `crossprobe args`, which must succeed; its stdout.
fn stdout_of(args: &[&str]) -> String {
    let out = crossprobe(args);
    assert!(out.status.success(), "crossprobe {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A scratch directory for one test, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("crossprobe-history-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// 2026-11-30T22:00:00Z in milliseconds: the wall clock the stamped scenarios start at.
const BASE_MS: u64 = 1_796_076_000_000;

/// A recorded scenario with wall-clock time on every record: `BASE_MS + at_ms`.
fn stamped(name: &str) -> Vec<OutcomeRecord> {
    stretched(name, 1)
}

/// A recorded scenario with `time` at `BASE_MS + at_ms * factor` (and `at_ms` likewise).
fn stretched(name: &str, factor: u64) -> Vec<OutcomeRecord> {
    let text = std::fs::read_to_string(root().join("tests/replay").join(format!("{name}.jsonl"))).unwrap();
    text.lines()
        .map(|l| {
            let mut r: OutcomeRecord = serde_json::from_str(l).unwrap();
            r.at_ms *= factor;
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(BASE_MS + r.at_ms);
            r.at_time(t)
        })
        .collect()
}

fn lines(records: &[OutcomeRecord]) -> String {
    let mut out = Vec::new();
    for r in records {
        r.write_line(&mut out).unwrap();
    }
    String::from_utf8(out).unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_recording_rotated_by_size_replays_as_one_file() {
    let dir = Dir::new("rotated");
    let records = stamped("zone-b");
    let retention = Retention { max_bytes: 20_000, ..Retention::default() };
    let mut recorder = Recorder::open(&dir.file("outcomes.jsonl"), retention).unwrap();
    for r in &records {
        recorder.write(r).unwrap();
    }
    recorder.finish().unwrap();
    drop(recorder);
    let mut names: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let rotated = names.iter().filter(|n| n.ends_with(".gz")).count();
    assert!(rotated >= 3, "1,200 records of ~150 bytes in 20,000-byte files rotate several times: {names:?}");
    assert_eq!(rotated + 1, names.len(), "rotated files are compressed, one live file: {names:?}");
    assert_eq!(names[1], "outcomes.jsonl.20261130T220000.000Z.gz", "named by their first record's time");

    let whole = Dir::new("whole");
    std::fs::write(whole.file("all.jsonl"), lines(&records)).unwrap();
    for mode in [&[][..], &["--summary"][..]] {
        let one = stdout_of(&[&["replay", "--input", path(&whole.file("all.jsonl"))], mode].concat());
        let set = stdout_of(&[&["replay", "--input", path(&dir.0)], mode].concat());
        assert_eq!(set, one, "replay {mode:?} over the rotated set");
    }
}

#[test]
fn a_window_over_rotated_files_skips_those_outside_it_unread() {
    // Zone b's 50 s stretched to 500 s, in files of ~20 s each.
    let dir = Dir::new("rotated-window");
    let records = stretched("zone-b", 10);
    let retention = Retention { max_bytes: 20_000, ..Retention::default() };
    let mut recorder = Recorder::open(&dir.file("outcomes.jsonl"), retention).unwrap();
    for r in &records {
        recorder.write(r).unwrap();
    }
    recorder.finish().unwrap();
    let whole = Dir::new("rotated-window-whole");
    std::fs::write(whole.file("all.jsonl"), lines(&records)).unwrap();
    let window = ["--from", "2026-11-30T22:03:20Z", "--to", "2026-11-30T22:05:00Z"];
    let one = stdout_of(&[&["replay", "--input", path(&whole.file("all.jsonl"))], &window[..]].concat());
    // The first rotated file ends more than a minute before --from: it is not even read.
    let first = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gz"))
        .min()
        .unwrap();
    std::fs::write(&first, "not gzip").unwrap();
    let set = stdout_of(&[&["replay", "--input", path(&dir.0)], &window[..]].concat());
    assert_eq!(set, one, "the windowed replay over the rotated set");
    let out = crossprobe(&["replay", "--input", path(&dir.0)]);
    assert!(!out.status.success(), "without a window the broken first file is read and fails");
}

#[test]
fn a_torn_line_loses_only_itself_and_replay_names_it() {
    let dir = Dir::new("torn");
    let records = stamped("zone-b");
    let live = dir.file("outcomes.jsonl");
    // A crash cut record 600 in the middle; the next run appends the rest.
    let torn = lines(&records[600..601]);
    std::fs::write(&live, format!("{}{}", lines(&records[..600]), &torn[..torn.len() / 2])).unwrap();
    let mut recorder = Recorder::open(&live, Retention::default()).unwrap();
    for r in &records[601..] {
        recorder.write(r).unwrap();
    }
    recorder.finish().unwrap();

    let out = crossprobe(&["replay", "--input", path(&live)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}: line 601: cut short", live.display())),
        "the torn line is named: {stderr}"
    );
    let without = dir.file("without.jsonl");
    std::fs::write(&without, lines(&[&records[..600], &records[601..]].concat())).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), stdout_of(&["replay", "--input", path(&without)]));

    // Anything else that is not a record still stops the replay, naming its line.
    std::fs::write(&without, format!("{}{{\"at_ms\": oops}}\n", lines(&records[..3]))).unwrap();
    let out = crossprobe(&["replay", "--input", path(&without)]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 4: invalid record"));
}

#[test]
fn from_and_to_select_by_wall_clock_time() {
    let dir = Dir::new("window");
    let records = stamped("zone-b");
    std::fs::write(dir.file("all.jsonl"), lines(&records)).unwrap();
    let (from, to) = (BASE_MS + 6_000, BASE_MS + 40_000);
    let inside: Vec<OutcomeRecord> =
        records.iter().filter(|r| (from..to).contains(&r.clock_ms().unwrap())).cloned().collect();
    std::fs::write(dir.file("inside.jsonl"), lines(&inside)).unwrap();
    let windowed = stdout_of(&[
        "replay",
        "--input",
        path(&dir.file("all.jsonl")),
        "--from",
        "2026-11-30T22:00:06Z",
        "--to",
        "2026-11-30T22:00:40Z",
    ]);
    assert_eq!(windowed, stdout_of(&["replay", "--input", path(&dir.file("inside.jsonl"))]));
    assert!(windowed.starts_with(&format!("{{\"at_ms\":{}", from + 1000)), "{windowed}");

    // A recording without wall-clock time replays as before, but cannot be windowed.
    let old = "tests/replay/zone-b.jsonl";
    let out = crossprobe(&["replay", "--input", old, "--from", "2026-11-30T22:00:06Z"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1: --from/--to select by wall-clock time"));
}

#[test]
fn summary_of_the_recorded_scenarios() {
    let cases: [(&str, &str); 4] = [
        // One cell: no scope, no incident; suspect from its third failure to the end.
        ("one-cell-stuck", "totals: 0 incidents, 0 pages, 0 tickets, suspect for 22s\n"),
        // The first zone b probe failed at 5.080 s; the ticket holds through recovery.
        (
            "zone-b",
            "incident 1: +8s to +44s (36s), partial, paged: no, tickets: 1, time to detect: 2s 920ms\n\
             \x20 partial az=b: +8s to +44s (36s)\n\
             totals: 1 incidents, 0 pages, 1 tickets, suspect for 0s\n",
        ),
        // Still failing at the end: open, a page at once, no ticket yet (22 s < 30 s).
        (
            "amqp-two-zones",
            "incident 1: +8s to the end, still open (22s+), outage, paged: yes, tickets: 0, time to detect: 2s 990ms\n\
             \x20 outage broker=r-a: +8s to the end, still open (22s+)\n\
             \x20 outage broker=r-b: +8s to the end, still open (22s+)\n\
             totals: 1 incidents, 1 pages, 0 tickets, suspect for 0s\n",
        ),
        // Three zones one after the other: one incident, each zone down 17 s, under the
        // ticket's 30 s.
        (
            "rolling-restart",
            "incident 1: +8s to +39s (31s), partial, paged: no, tickets: 0, time to detect: 3s\n\
             \x20 partial az=a: +8s to +25s (17s)\n\
             \x20 partial az=b: +15s to +32s (17s)\n\
             \x20 partial az=c: +22s to +39s (17s)\n\
             totals: 1 incidents, 0 pages, 0 tickets, suspect for 0s\n",
        ),
    ];
    for (name, want) in cases {
        let got = stdout_of(&["replay", "--summary", "--input", &format!("tests/replay/{name}.jsonl")]);
        assert_eq!(got, want, "{name}");
    }
    // With wall-clock time, times print as such.
    let dir = Dir::new("summary-wall");
    std::fs::write(dir.file("zone-b.jsonl"), lines(&stamped("zone-b"))).unwrap();
    let got = stdout_of(&["replay", "--summary", "--input", path(&dir.file("zone-b.jsonl"))]);
    assert_eq!(
        got,
        "incident 1: 2026-11-30T22:00:08.000Z to 2026-11-30T22:00:44.000Z (36s), partial, paged: no, tickets: 1, time to detect: 2s 920ms\n\
         \x20 partial az=b: 2026-11-30T22:00:08.000Z to 2026-11-30T22:00:44.000Z (36s)\n\
         totals: 1 incidents, 0 pages, 1 tickets, suspect for 0s\n"
    );
}

/// The demo configuration with `extra` appended to its `[correlator]` (which it does not have).
fn demo_with(dir: &Dir, name: &str, extra: &str) -> PathBuf {
    let text = std::fs::read_to_string(root().join("config/examples/local.toml")).unwrap();
    assert!(!text.contains("[correlator"), "the demo config sets no [correlator]");
    let file = dir.file(name);
    std::fs::write(&file, format!("{text}\n{extra}")).unwrap();
    file
}

#[test]
fn compare_two_settings_over_the_same_history() {
    let dir = Dir::new("compare");
    let config = root().join("config/examples/local.toml");
    let m = crossprobe::config::ValidatedConfig::load(&config).expect("the demo config loads").matrix;
    let (az, protocol) = (m.dimension_index("az").unwrap(), m.dimension_index("protocol").unwrap());
    // AMQP fails in zones a and b from second 5 to 29 (both tenants: an outage by the default
    // quorum of 2 zones and 2 tenants); then zone c's Kafka from second 60 to 89.
    let mut out = Vec::new();
    for t in 0..120u64 {
        for (i, cell) in m.cells().iter().enumerate() {
            let amqp_ab = (5..30).contains(&t) && cell.labels[protocol] == "amqp" && cell.labels[az] != "c";
            let kafka_c = (60..90).contains(&t) && cell.labels[protocol] == "kafka" && cell.labels[az] == "c";
            let o = if amqp_ab || kafka_c {
                crossprobe_probes::Outcome::Lost
            } else {
                crossprobe_probes::Outcome::Ok
            };
            OutcomeRecord::new(t * 1000 + 10 * i as u64, &m, cell, &o, None).write_line(&mut out).unwrap();
        }
    }
    std::fs::write(dir.file("history.jsonl"), out).unwrap();
    let a = demo_with(&dir, "a.toml", "");
    let b = demo_with(
        &dir,
        "b.toml",
        "[correlator]\nwindow = 6\nfailures_to_fail = 4\n[correlator.quorum]\naz = 3\n",
    );
    let got =
        stdout_of(&["replay", "--input", path(&dir.file("history.jsonl")), "--compare", path(&a), path(&b)]);
    // B's quorum of 3 zones loses the page; 4 failures of 6 detect one probe later.
    assert_eq!(
        got,
        "incident +8s to +44s (36s): scopes broker=rabbit-a + broker=rabbit-b (same); level outage -> partial; pages 1 -> 0 (-1); tickets 2 -> 2; time to detect 2s 940ms -> 3s 940ms (1s slower)\n\
         incident +1m 3s to +1m 44s (41s): scopes broker=kafka-c (same); level partial -> partial; pages 0 -> 0; tickets 1 -> 1; time to detect 2s 960ms -> 3s 960ms (1s slower)\n\
         totals: incidents 2 -> 2; pages 1 -> 0 (-1); tickets 3 -> 3; suspect for 0s -> 0s\n"
    );
}

#[test]
fn the_summary_pages_and_tickets_by_the_alert_rules_conditions() {
    use yaml_rust2::YamlLoader;
    let text = std::fs::read_to_string(root().join("deploy/prometheus/crossprobe-rules.yml")).unwrap();
    let docs = YamlLoader::load_from_str(&text).unwrap();
    let rules: Vec<&yaml_rust2::Yaml> =
        docs[0]["groups"].as_vec().unwrap().iter().flat_map(|g| g["rules"].as_vec().unwrap()).collect();
    let rule = |name: &str| *rules.iter().find(|r| r["alert"].as_str() == Some(name)).unwrap();
    let page = rule("CrossprobeOutageConfirmed");
    assert!(page["for"].is_badvalue(), "a page fires on the first outage tick: no `for`");
    assert!(page["expr"].as_str().unwrap().contains("crossprobe_outage_confirmed"));
    let ticket = rule("CrossprobePartialOutage");
    assert!(ticket["expr"].as_str().unwrap().contains("crossprobe_scope_down == 1"));
    let ticket_for = humantime::parse_duration(ticket["for"].as_str().unwrap()).unwrap();
    assert_eq!(
        ticket_for,
        crossprobe::offline::summary::TICKET_FOR,
        "summary.rs follows the ticket rule's `for`"
    );
}
