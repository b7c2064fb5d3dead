//! The outcome record: one probe outcome as a JSON line, the format `run --record` writes and
//! `replay` reads.

use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::correlator::Labels;
use crate::matrix::{Cell, Matrix};
use crossprobe_probes::{ErrorKind, Outcome};

/// One probe outcome as recorded: the line format of `run --record` and `replay`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeRecord {
    /// Wall-clock time the probe ended, RFC 3339 in UTC with milliseconds. `run --record` writes
    /// the wall clock at start plus `at_ms`, so it never goes backward within one run (a clock
    /// step shows at the next start). Absent in recordings made before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Milliseconds since an origin when the probe ended: the process start for `run --record`
    /// (the monotonic clock), any fixed origin in hand-made files.
    pub at_ms: u64,
    /// The cell's labels, in dimension order.
    pub cell: Labels,
    /// An outcome name: `ok`, `late`, `lost`, `publish_failed`, `connect_failed`, `corrupt`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
}

impl OutcomeRecord {
    /// The record of one probe of `cell`.
    pub fn new(at_ms: u64, matrix: &Matrix, cell: &Cell, outcome: &Outcome, rtt_ms: Option<f64>) -> Self {
        OutcomeRecord {
            time: None,
            at_ms,
            cell: Labels(matrix.labels(cell).map(|(d, v)| (d.to_owned(), v.to_owned())).collect()),
            outcome: outcome.name().to_owned(),
            rtt_ms,
            kind: outcome.kind(),
        }
    }

    /// The same record stamped with wall-clock time `time`.
    pub fn at_time(self, time: SystemTime) -> Self {
        OutcomeRecord { time: Some(humantime::format_rfc3339_millis(time).to_string()), ..self }
    }

    /// Milliseconds on the replay clock: `time` since the Unix epoch when the record has it,
    /// otherwise `at_ms`. Errs with a message when `time` is not RFC 3339.
    pub fn clock_ms(&self) -> Result<u64, String> {
        match &self.time {
            None => Ok(self.at_ms),
            Some(t) => unix_ms(t).ok_or_else(|| {
                format!("time {t:?} is not an RFC 3339 UTC time such as \"2026-11-30T22:15:52.123Z\"")
            }),
        }
    }

    /// The outcome, if its name is known.
    pub fn outcome(&self) -> Option<Outcome> {
        Outcome::from_name(&self.outcome, self.kind)
    }

    /// Writes the record as one JSON line.
    pub fn write_line(&self, w: &mut impl Write) -> io::Result<()> {
        serde_json::to_writer(&mut *w, self)?;
        w.write_all(b"\n")
    }
}

/// Milliseconds since the Unix epoch of an RFC 3339 time (`Z` or no offset).
pub fn unix_ms(rfc3339: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(rfc3339).ok()?;
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_millis() as u64)
}

/// The wall-clock time `ms` milliseconds after the Unix epoch, RFC 3339 with milliseconds.
pub fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}
