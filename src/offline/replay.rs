//! Replay: recorded outcomes (JSON lines) through the live correlator, printing the verdict
//! timeline, so thresholds can be tuned on history.
//!
//! One record per probe: `{"at_ms": 12000, "cell": {"az": "a", "tenant": "acme", "protocol":
//! "kafka", "broker": "k-a"}, "outcome": "lost"}`, with optional `rtt_ms` and, for
//! `publish_failed` / `connect_failed`, an optional error `kind` ([`OutcomeRecord`]).
//! `crossprobe run --record` writes the same format.
//!
//! Ticks follow `at_ms`: tick boundaries fall every `correlator.tick` after the first record's
//! `at_ms`, and the tick at boundary `B` evaluates every record with `at_ms < B`; ticks without
//! records still happen, and a last tick covers the last records. Records may be out of order
//! within the current tick, never behind an evaluated one. One JSON line is printed whenever the
//! level or the set of active scopes changes (and for the first tick).
//!
//! Gaps cost nothing: once a tick without records leaves the correlator settled (see
//! [`Correlator::settled`]), the remaining empty ticks of the gap are taken in one step, with the
//! timeline and the state they would have given tick by tick. A gap whose ticks never settle is
//! walked for at most [`MAX_UNSETTLED_TICKS`]. Lines are at most [`MAX_LINE_BYTES`] long, and
//! `at_ms` leaves room for one tick after it.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::record::OutcomeRecord;
use crate::config::{escaped, quoted, CorrelatorSettings};
use crate::correlator::{Correlator, CorrelatorError, Labels, Level, Verdict};
use crate::matrix::{Matrix, BASE_DIMENSIONS};
use crossprobe_probes::outcome::OUTCOME_NAMES;

/// Most ticks of one gap between records walked one by one while the correlator does not
/// settle; a settled gap of any length is one step.
pub const MAX_UNSETTLED_TICKS: u64 = 1_000_000;

/// Longest input line, in bytes: a record is a few hundred.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("cannot read {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("reading input: {0}")]
    Read(#[source] io::Error),
    #[error("writing output: {0}")]
    Write(#[source] io::Error),
    #[error("the input holds no records")]
    Empty,
    #[error(
        "the input's cells have no \"{0}\" label, which the outage quorum needs; \
         give --config with a [correlator.quorum] over the labels the input has"
    )]
    QuorumLabel(String),
    #[error(transparent)]
    Correlator(#[from] CorrelatorError),
}

/// An error of one input line; what it echoes of the line is escaped and bounded.
fn line_error(line: usize, message: impl Into<String>) -> ReplayError {
    ReplayError::Line { line, message: escaped(&message.into()) }
}

/// Reads the records of `input`, skipping blank lines, with their 1-based line numbers. A line
/// longer than [`MAX_LINE_BYTES`] or not UTF-8 is an error naming it.
pub fn records(input: impl BufRead) -> impl Iterator<Item = Result<(usize, OutcomeRecord), ReplayError>> {
    Lines { input, line: 0, done: false }.filter_map(|line| match line {
        Err(e) => Some(Err(e)),
        Ok((_, l)) if l.trim().is_empty() => None,
        Ok((line_no, l)) => Some(
            serde_json::from_str::<OutcomeRecord>(&l)
                .map(|r| (line_no, r))
                .map_err(|e| line_error(line_no, format!("invalid record: {e}"))),
        ),
    })
}

/// The lines of an input, each read at most [`MAX_LINE_BYTES`] (plus its newline) at a time.
struct Lines<R> {
    input: R,
    line: usize,
    done: bool,
}

impl<R: BufRead> Iterator for Lines<R> {
    type Item = Result<(usize, String), ReplayError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.line += 1;
        let mut buf = Vec::new();
        let limit = MAX_LINE_BYTES as u64 + 1;
        match (&mut self.input).take(limit).read_until(b'\n', &mut buf) {
            Err(e) => {
                self.done = true;
                return Some(Err(ReplayError::Read(e)));
            }
            Ok(0) => {
                self.done = true;
                return None;
            }
            Ok(_) => {}
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        } else if buf.len() > MAX_LINE_BYTES {
            self.done = true;
            return Some(Err(line_error(self.line, format!("longer than {MAX_LINE_BYTES} bytes"))));
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        Some(String::from_utf8(buf).map(|l| (self.line, l)).map_err(|_| {
            self.done = true;
            line_error(self.line, "not UTF-8 text")
        }))
    }
}

/// The matrix of the distinct cells in `input`: dimensions `az`, `tenant`, `protocol`, `broker`
/// (those present), then other label names sorted; every record must carry the same names.
pub fn infer_matrix(input: impl BufRead) -> Result<Matrix, ReplayError> {
    let mut names: Option<(usize, BTreeSet<String>)> = None;
    let mut cells: BTreeSet<Vec<(String, String)>> = BTreeSet::new();
    for rec in records(input) {
        let (line, r) = rec?;
        let keys: BTreeSet<String> = r.cell.0.iter().map(|(k, _)| k.clone()).collect();
        match &names {
            None => names = Some((line, keys)),
            Some((first, known)) if *known != keys => {
                return Err(line_error(
                    line,
                    format!("cell labels {keys:?} differ from line {first}'s {known:?}"),
                ))
            }
            Some(_) => {}
        }
        cells.insert(r.cell.0);
    }
    let Some((_, names)) = names else { return Err(ReplayError::Empty) };
    let mut dims: Vec<String> =
        BASE_DIMENSIONS.iter().filter(|d| names.contains(**d)).map(|d| d.to_string()).collect();
    dims.extend(names.iter().filter(|n| !BASE_DIMENSIONS.contains(&n.as_str())).cloned());
    let labels: BTreeSet<Vec<String>> = cells
        .into_iter()
        .map(|pairs| {
            let map: HashMap<String, String> = pairs.into_iter().collect();
            dims.iter().map(|d| map.get(d).cloned().unwrap_or_default()).collect()
        })
        .collect();
    Ok(Matrix::from_labels(dims, labels.into_iter().collect()))
}

/// One printed line of the timeline.
#[derive(Debug, Serialize)]
pub struct Change<'a> {
    pub at_ms: u64,
    pub verdict: Level,
    pub scopes: Vec<&'a Labels>,
    pub evidence: &'a Verdict,
}

/// Feeds records through a correlator and reports verdict changes.
pub struct Replay {
    correlator: Correlator,
    dims: Vec<String>,
    cells: HashMap<Vec<String>, usize>,
    tick_ms: u64,
    next_boundary: Option<u64>,
    last: Option<(Level, Vec<Labels>)>,
    /// Take settled gaps in one step; tests turn it off to compare with walking every tick.
    skip_gaps: bool,
}

impl Replay {
    pub fn new(matrix: &Matrix, settings: &CorrelatorSettings) -> Result<Self, ReplayError> {
        Ok(Replay {
            correlator: Correlator::new(matrix, settings)?,
            dims: matrix.dimensions().to_vec(),
            cells: matrix.cells().iter().enumerate().map(|(i, c)| (c.labels.clone(), i)).collect(),
            tick_ms: (settings.tick.as_millis() as u64).max(1),
            next_boundary: None,
            last: None,
            skip_gaps: true,
        })
    }

    /// Feeds one record (from line `line`), first running every tick it is past.
    pub fn feed(&mut self, line: usize, r: &OutcomeRecord, out: &mut impl Write) -> Result<(), ReplayError> {
        let outcome = r.outcome().ok_or_else(|| {
            line_error(
                line,
                format!(
                    "unknown outcome {} (expected one of {})",
                    quoted(&r.outcome),
                    OUTCOME_NAMES.join(", ")
                ),
            )
        })?;
        let cell = self.cell_index(line, &r.cell)?;
        if r.at_ms.checked_add(self.tick_ms).is_none() {
            return Err(line_error(
                line,
                format!(
                    "at_ms {} leaves no room for its tick: it must be below {}",
                    r.at_ms,
                    u64::MAX - self.tick_ms + 1
                ),
            ));
        }
        let boundary = *self.next_boundary.get_or_insert(r.at_ms + self.tick_ms);
        if r.at_ms < boundary - self.tick_ms {
            return Err(line_error(
                line,
                format!(
                    "at_ms {} is before the tick already evaluated at {}; sort the input by at_ms",
                    r.at_ms,
                    boundary - self.tick_ms
                ),
            ));
        }
        // Every boundary up to `at_ms` is a tick; `at_ms + tick_ms` fits, so they all do.
        let mut walked = 0u64;
        while let Some(next) = self.next_boundary.filter(|&b| r.at_ms >= b) {
            let remaining = (r.at_ms - next) / self.tick_ms + 1;
            if walked > 0 && self.skip_gaps && self.correlator.skip_idle(remaining) {
                self.next_boundary = Some(next + remaining * self.tick_ms);
                break;
            }
            if walked >= MAX_UNSETTLED_TICKS {
                return Err(line_error(
                    line,
                    format!(
                        "at_ms {} is {remaining} more ticks after the previous records, and the correlator did not settle within {MAX_UNSETTLED_TICKS}",
                        r.at_ms
                    ),
                ));
            }
            self.tick(out)?;
            walked += 1;
        }
        self.correlator.record(cell, &outcome)?;
        Ok(())
    }

    /// Runs the tick that covers the last records; an input without records is an error.
    pub fn finish(&mut self, out: &mut impl Write) -> Result<(), ReplayError> {
        if self.next_boundary.is_none() {
            return Err(ReplayError::Empty);
        }
        self.tick(out)
    }

    fn cell_index(&self, line: usize, labels: &Labels) -> Result<usize, ReplayError> {
        let describe = || labels.0.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ");
        if labels.0.len() != self.dims.len() {
            return Err(line_error(
                line,
                format!("cell {{{}}} must have exactly the labels {}", describe(), self.dims.join(", ")),
            ));
        }
        let mut key = Vec::with_capacity(self.dims.len());
        for d in &self.dims {
            match labels.0.iter().find(|(k, _)| k == d) {
                Some((_, v)) => key.push(v.clone()),
                None => {
                    return Err(line_error(line, format!("cell {{{}}} lacks the label \"{d}\"", describe())))
                }
            }
        }
        self.cells
            .get(&key)
            .copied()
            .ok_or_else(|| line_error(line, format!("cell {{{}}} is not in the matrix", describe())))
    }

    fn tick(&mut self, out: &mut impl Write) -> Result<(), ReplayError> {
        let Some(at_ms) = self.next_boundary else { return Ok(()) };
        self.next_boundary = Some(at_ms.saturating_add(self.tick_ms));
        let v = self.correlator.tick_at(std::time::UNIX_EPOCH + std::time::Duration::from_millis(at_ms));
        let now = (v.level, v.scope_labels().into_iter().cloned().collect::<Vec<_>>());
        if self.last.as_ref() != Some(&now) {
            let change = Change { at_ms, verdict: v.level, scopes: v.scope_labels(), evidence: v };
            serde_json::to_writer(&mut *out, &change).map_err(|e| ReplayError::Write(e.into()))?;
            out.write_all(b"\n").map_err(ReplayError::Write)?;
            self.last = Some(now);
        }
        Ok(())
    }
}

/// Replays `input` on `matrix` with `settings`, printing the timeline to `out`.
pub fn replay(
    input: impl BufRead,
    matrix: &Matrix,
    settings: &CorrelatorSettings,
    out: &mut impl Write,
) -> Result<(), ReplayError> {
    let mut replay = Replay::new(matrix, settings)?;
    for rec in records(input) {
        let (line, r) = rec?;
        replay.feed(line, &r, out)?;
    }
    replay.finish(out)?;
    out.flush().map_err(ReplayError::Write)
}

/// Replays the file at `path`. With `config` (its matrix and settings) cells must be in the
/// configured matrix; without, the matrix is the input's distinct cells and the settings are the
/// defaults.
pub fn replay_file(
    path: &Path,
    config: Option<(&Matrix, &CorrelatorSettings)>,
    out: &mut impl Write,
) -> Result<(), ReplayError> {
    let open = || {
        File::open(path)
            .map(BufReader::new)
            .map_err(|source| ReplayError::Open { path: path.to_owned(), source })
    };
    match config {
        Some((matrix, settings)) => replay(open()?, matrix, settings, out),
        None => {
            replay(open()?, &infer_matrix(open()?)?, &CorrelatorSettings::default(), out).map_err(|e| match e
            {
                ReplayError::Correlator(CorrelatorError::UnknownQuorumDimension(d)) => {
                    ReplayError::QuorumLabel(d)
                }
                e => e,
            })
        }
    }
}

#[cfg(test)]
mod tests {
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
                format!(
                    "{}\n\n{}",
                    line(0, "a", "ok"),
                    r#"{"at_ms": 1, "cell": {"az": "a"}, "outcome": "ok"}"#
                ),
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
}
