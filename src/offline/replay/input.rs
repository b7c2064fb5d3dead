//! What a replay reads: a recording (a file, or a directory of rotated files) or Prometheus's
//! counters, the wall-clock window of it to keep, and the passes over it (the matrix inferred
//! from its cells, then the replay).

use std::io::Write;
use std::path::PathBuf;

use super::{line_error, records, InferredCells, Observer, Replay, ReplayError};
use crate::config::CorrelatorSettings;
use crate::correlator::CorrelatorError;
use crate::matrix::Matrix;
use crate::offline::record::OutcomeRecord;
use crate::offline::{prometheus, recording};

/// The wall-clock window of records to replay, milliseconds since the Unix epoch: `[from, to)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub from: Option<u64>,
    pub to: Option<u64>,
}

impl Window {
    fn is_set(&self) -> bool {
        self.from.is_some() || self.to.is_some()
    }

    /// Whether the record at `line` lies in the window; a window needs wall-clock time.
    fn contains(&self, line: usize, r: &OutcomeRecord) -> Result<bool, ReplayError> {
        if !self.is_set() {
            return Ok(true);
        }
        if r.time.is_none() {
            return Err(ReplayError::NoTime { line });
        }
        let at = r.clock_ms().map_err(|m| line_error(line, m))?;
        Ok(self.from.is_none_or(|f| at >= f) && self.to.is_none_or(|t| at < t))
    }
}

/// Where the records come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A record file or a directory of rotated files.
    Recording(PathBuf),
    /// The `crossprobe_probes_total` counters in a Prometheus.
    Prometheus(prometheus::Query),
}

/// What to replay: a source, and the window of it to keep.
#[derive(Debug)]
pub struct Input {
    pub source: Source,
    pub window: Window,
    /// Records read from Prometheus, read once for all the passes over them.
    fetched: std::cell::OnceCell<Vec<OutcomeRecord>>,
}

/// What a replay read, beside what it reported.
#[derive(Debug, Default)]
pub struct Fed {
    /// The lines cut short that it skipped, as `FILE: line N`.
    pub torn: Vec<String>,
    /// The first record carried wall-clock time.
    pub wall_clock: bool,
}

impl Input {
    pub fn new(source: Source, window: Window) -> Self {
        Input { source, window, fetched: std::cell::OnceCell::new() }
    }

    /// The input as an error message names it: the path, or the Prometheus URL.
    pub fn name(&self) -> String {
        match &self.source {
            Source::Recording(path) => path.display().to_string(),
            Source::Prometheus(q) => q.url.clone(),
        }
    }

    /// The matrix of the recording's distinct cells in the window (see [`infer_matrix`]).
    pub fn infer_matrix(&self) -> Result<Matrix, ReplayError> {
        let mut cells = InferredCells::default();
        self.each(&mut Vec::new(), |line, r| {
            cells.add(line, r)?;
            Ok(())
        })?;
        cells.matrix()
    }

    /// Feeds the recording's records in the window through `replay`, reporting to `out`.
    pub fn feed(&self, replay: &mut Replay, out: &mut impl Observer) -> Result<Fed, ReplayError> {
        let mut torn = Vec::new();
        let mut wall_clock = None;
        self.each(&mut torn, |line, r| {
            wall_clock.get_or_insert(r.time.is_some());
            replay.feed(line, &r, out)
        })?;
        replay.finish(out)?;
        Ok(Fed { torn, wall_clock: wall_clock.unwrap_or(false) })
    }

    /// Calls `f` on every record in the window, file by file; a torn line goes to `torn`.
    fn each(
        &self,
        torn: &mut Vec<String>,
        mut f: impl FnMut(usize, OutcomeRecord) -> Result<(), ReplayError>,
    ) -> Result<(), ReplayError> {
        let path = match &self.source {
            Source::Recording(path) => path,
            Source::Prometheus(q) => {
                let (Some(from), Some(to)) = (self.window.from, self.window.to) else {
                    return Err(prometheus::PrometheusError::Window.into());
                };
                if self.fetched.get().is_none() {
                    let _ = self.fetched.set(prometheus::records(q, from, to)?);
                }
                for (i, r) in self.fetched.get().into_iter().flatten().enumerate() {
                    f(i + 1, r.clone())?;
                }
                return Ok(());
            }
        };
        let files = recording::files(path)?;
        let several = files.len() > 1 || files.first() != Some(path);
        // A window skips the rotated files its names place wholly outside it, without reading
        // them.
        let starts: Vec<Option<u64>> = files.iter().map(|f| recording::named_start(f)).collect();
        let slack = recording::NAME_SLACK.as_millis() as u64;
        for (i, path) in files.iter().enumerate() {
            let next = starts.get(i + 1).copied().flatten();
            if let (Some(from), Some(next)) = (self.window.from, next) {
                if next.saturating_add(slack) <= from {
                    continue;
                }
            }
            if let (Some(to), Some(start)) = (self.window.to, starts[i]) {
                if start >= to.saturating_add(slack) {
                    break;
                }
            }
            let in_file = |e: ReplayError| match several {
                true => ReplayError::InFile { path: path.clone(), source: Box::new(e) },
                false => e,
            };
            let input =
                recording::open(path).map_err(|source| ReplayError::Open { path: path.clone(), source })?;
            for rec in records(input) {
                let (line, r) = match rec {
                    Err(ReplayError::Torn { line }) => {
                        torn.push(format!("{}: line {line}", path.display()));
                        continue;
                    }
                    rec => rec.map_err(in_file)?,
                };
                if self.window.contains(line, &r).map_err(in_file)? {
                    f(line, r).map_err(in_file)?;
                }
            }
        }
        Ok(())
    }
}

/// The matrix and settings of a replay: `config`'s, or the recording's distinct cells with the
/// default settings.
pub fn setup(
    input: &Input,
    config: Option<(&Matrix, &CorrelatorSettings)>,
) -> Result<(Matrix, CorrelatorSettings), ReplayError> {
    match config {
        Some((m, s)) => Ok((m.clone(), s.clone())),
        None => Ok((input.infer_matrix()?, CorrelatorSettings::default())),
    }
}

/// Replays `input` with `settings` on `matrix` (see [`setup`]), reporting to `out`. Without a
/// configuration, a quorum over a label the input lacks names the missing label.
pub fn run(
    input: &Input,
    matrix: &Matrix,
    settings: &CorrelatorSettings,
    configured: bool,
    out: &mut impl Observer,
) -> Result<Fed, ReplayError> {
    let replay = Replay::new(matrix, settings).map_err(|e| match e {
        ReplayError::Correlator(CorrelatorError::UnknownQuorumDimension(d)) if !configured => {
            ReplayError::QuorumLabel(d)
        }
        e => e,
    });
    input.feed(&mut replay?, out)
}

/// Replays the recording at `input`, printing the timeline to `out`. With `config` (its matrix
/// and settings) cells must be in the configured matrix; without, the matrix is the input's
/// distinct cells and the settings are the defaults.
pub fn replay_file(
    input: &Input,
    config: Option<(&Matrix, &CorrelatorSettings)>,
    out: &mut impl Write,
) -> Result<Fed, ReplayError> {
    let (matrix, settings) = setup(input, config)?;
    let fed = run(input, &matrix, &settings, config.is_some(), out)?;
    out.flush().map_err(ReplayError::Write)?;
    Ok(fed)
}
