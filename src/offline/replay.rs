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
//! level, the set of active scopes or the set of degraded scopes changes (and for the first
//! tick). The `ok` records' `rtt_ms` feed the cells' latency baselines exactly as live round
//! trips do, so a recording replays its brownouts: a line lists the active degraded scopes in
//! `degraded` (left out when there are none) and `evidence.degraded` has their figures.
//!
//! Gaps cost nothing: once a tick without records leaves the correlator settled (see
//! [`Correlator::settled`]), the remaining empty ticks of the gap are taken in one step, with the
//! timeline and the state they would have given tick by tick. A gap whose ticks never settle is
//! walked for at most [`MAX_UNSETTLED_TICKS`]. Lines are at most [`MAX_LINE_BYTES`] long, and
//! `at_ms` leaves room for one tick after it.
//!
//! The replay clock is a record's wall-clock `time` when it has one (what `run --record`
//! writes), else its `at_ms`: old recordings replay as before, and a recording appended across
//! restarts stays in order although each run's `at_ms` starts again at 0. The input is a file
//! (`.gz` is decompressed) or a directory of rotated files ([`super::recording::files`]);
//! `--from`/`--to` keep the records whose time lies in `[from, to)`. A line cut short (a JSON
//! text that ends early: a crash while writing) is skipped and reported with its file and line;
//! any other bad line stops the replay.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, BufRead, Read, Write};
use std::path::PathBuf;

use serde::Serialize;

use super::record::OutcomeRecord;
use super::{prometheus, recording};
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
    #[error("line {line}: cut short (a crash while writing?)")]
    Torn { line: usize },
    #[error("{}: {source}", path.display())]
    InFile { path: PathBuf, source: Box<ReplayError> },
    #[error(transparent)]
    Recording(#[from] recording::RecordingError),
    #[error(transparent)]
    Prometheus(#[from] prometheus::PrometheusError),
    #[error("line {line}: --from/--to select by wall-clock time, and this record has none (a recording made before records carried it)")]
    NoTime { line: usize },
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
/// longer than [`MAX_LINE_BYTES`] or not UTF-8 is an error naming it; a line cut short is
/// [`ReplayError::Torn`], after which reading goes on.
pub fn records(input: impl BufRead) -> impl Iterator<Item = Result<(usize, OutcomeRecord), ReplayError>> {
    Lines { input, line: 0, done: false }.filter_map(|line| match line {
        Err(e) => Some(Err(e)),
        Ok((_, l)) if l.trim().is_empty() => None,
        Ok((line_no, l)) => {
            Some(serde_json::from_str::<OutcomeRecord>(&l).map(|r| (line_no, r)).map_err(|e| {
                if e.is_eof() {
                    ReplayError::Torn { line: line_no }
                } else {
                    line_error(line_no, format!("invalid record: {e}"))
                }
            }))
        }
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
    let mut cells = InferredCells::default();
    for rec in records(input) {
        match rec {
            Err(ReplayError::Torn { .. }) => {}
            rec => {
                let (line, r) = rec?;
                cells.add(line, r)?;
            }
        }
    }
    cells.matrix()
}

/// The distinct cells of records, and their label names as first seen.
#[derive(Default)]
struct InferredCells {
    names: Option<(usize, BTreeSet<String>)>,
    cells: BTreeSet<Vec<(String, String)>>,
}

impl InferredCells {
    fn add(&mut self, line: usize, r: OutcomeRecord) -> Result<(), ReplayError> {
        let names = &mut self.names;
        let keys: BTreeSet<String> = r.cell.0.iter().map(|(k, _)| k.clone()).collect();
        match &*names {
            None => *names = Some((line, keys)),
            Some((first, known)) if *known != keys => {
                return Err(line_error(
                    line,
                    format!("cell labels {keys:?} differ from line {first}'s {known:?}"),
                ))
            }
            Some(_) => {}
        }
        self.cells.insert(r.cell.0);
        Ok(())
    }

    fn matrix(self) -> Result<Matrix, ReplayError> {
        let (Some((_, names)), cells) = (self.names, self.cells) else { return Err(ReplayError::Empty) };
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
}

/// One change of the timeline: the level or the set of active scopes differs from the tick
/// before (or it is the first tick).
#[derive(Debug, Serialize)]
pub struct Change<'a> {
    pub at_ms: u64,
    pub verdict: Level,
    pub scopes: Vec<&'a Labels>,
    /// The degraded scopes (round trips far above their cells' baselines, from `rtt_ms`);
    /// printed only when there are some.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub degraded: Vec<&'a Labels>,
    pub evidence: &'a Verdict,
}

/// What a replay reports to: the timeline printer, or [`super::summary`]'s incident tracker.
pub trait Observer {
    /// One record fed, at `at_ms` on the replay clock, in cell `cell` of the matrix.
    fn outcome(&mut self, _at_ms: u64, _cell: usize, _failed: bool) {}
    /// One change of the timeline.
    fn change(&mut self, change: &Change) -> Result<(), ReplayError>;
    /// The input ended; `at_ms` is its last tick.
    fn end(&mut self, _at_ms: u64) {}
}

/// Any writer prints the timeline: one JSON line per change.
impl<W: Write> Observer for W {
    fn change(&mut self, change: &Change) -> Result<(), ReplayError> {
        serde_json::to_writer(&mut *self, change).map_err(|e| ReplayError::Write(e.into()))?;
        self.write_all(b"\n").map_err(ReplayError::Write)
    }
}

/// Feeds records through a correlator and reports verdict changes.
pub struct Replay {
    correlator: Correlator,
    dims: Vec<String>,
    cells: HashMap<Vec<String>, usize>,
    tick_ms: u64,
    next_boundary: Option<u64>,
    last: Option<(Level, Vec<Labels>, Vec<Labels>)>,
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
    pub fn feed(
        &mut self,
        line: usize,
        r: &OutcomeRecord,
        out: &mut impl Observer,
    ) -> Result<(), ReplayError> {
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
        let at_ms = r.clock_ms().map_err(|m| line_error(line, m))?;
        if at_ms.checked_add(self.tick_ms).is_none() {
            return Err(line_error(
                line,
                format!(
                    "at_ms {} leaves no room for its tick: it must be below {}",
                    at_ms,
                    u64::MAX - self.tick_ms + 1
                ),
            ));
        }
        let boundary = *self.next_boundary.get_or_insert(at_ms + self.tick_ms);
        if at_ms < boundary - self.tick_ms {
            return Err(line_error(
                line,
                format!(
                    "{} is before the tick already evaluated at {}; sort the input by time",
                    clock_name(r, at_ms),
                    clock_name(r, boundary - self.tick_ms)
                ),
            ));
        }
        // Every boundary up to `at_ms` is a tick; `at_ms + tick_ms` fits, so they all do.
        let mut walked = 0u64;
        while let Some(next) = self.next_boundary.filter(|&b| at_ms >= b) {
            let remaining = (at_ms - next) / self.tick_ms + 1;
            if walked > 0 && self.skip_gaps && self.correlator.skip_idle(remaining) {
                self.next_boundary = Some(next + remaining * self.tick_ms);
                break;
            }
            if walked >= MAX_UNSETTLED_TICKS {
                return Err(line_error(
                    line,
                    format!(
                        "{} is {remaining} more ticks after the previous records, and the correlator did not settle within {MAX_UNSETTLED_TICKS}",
                        clock_name(r, at_ms)
                    ),
                ));
            }
            self.tick(out)?;
            walked += 1;
        }
        let rtt = r
            .rtt_ms
            .filter(|ms| ms.is_finite() && *ms >= 0.0)
            .map(|ms| std::time::Duration::from_secs_f64(ms / 1000.0));
        self.correlator.record_rtt(cell, &outcome, rtt)?;
        out.outcome(at_ms, cell, outcome.is_failure());
        Ok(())
    }

    /// Runs the tick that covers the last records; an input without records is an error.
    pub fn finish(&mut self, out: &mut impl Observer) -> Result<(), ReplayError> {
        let Some(last) = self.next_boundary else { return Err(ReplayError::Empty) };
        self.tick(out)?;
        out.end(last);
        Ok(())
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

    fn tick(&mut self, out: &mut impl Observer) -> Result<(), ReplayError> {
        let Some(at_ms) = self.next_boundary else { return Ok(()) };
        self.next_boundary = Some(at_ms.saturating_add(self.tick_ms));
        let v = self.correlator.tick_at(std::time::UNIX_EPOCH + std::time::Duration::from_millis(at_ms));
        let degraded: Vec<&Labels> = v.degraded.scopes.iter().map(|s| &s.labels).collect();
        let now = (
            v.level,
            v.scope_labels().into_iter().cloned().collect::<Vec<_>>(),
            degraded.iter().copied().cloned().collect::<Vec<_>>(),
        );
        if self.last.as_ref() != Some(&now) {
            out.change(&Change { at_ms, verdict: v.level, scopes: v.scope_labels(), degraded, evidence: v })?;
            self.last = Some(now);
        }
        Ok(())
    }
}

/// A point on the replay clock as the record gives it: `time` or `at_ms`.
fn clock_name(r: &OutcomeRecord, ms: u64) -> String {
    match r.time {
        Some(_) => format!("time {}", super::record::rfc3339_ms(ms)),
        None => format!("at_ms {ms}"),
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

mod input;

pub use input::{replay_file, run, setup, Fed, Input, Source, Window};

#[cfg(test)]
mod tests;
