//! The outcome record: one probe outcome as a JSON line, the format `run --record` writes and
//! `replay` reads.

use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use crate::correlator::Labels;
use crate::matrix::{Cell, Matrix};
use crossprobe_probes::{ErrorKind, Outcome};

/// One probe outcome as recorded: the line format of `run --record` and `replay`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeRecord {
    /// Milliseconds since the Unix epoch (or any fixed origin) when the probe ended.
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
            at_ms,
            cell: Labels(matrix.labels(cell).map(|(d, v)| (d.to_owned(), v.to_owned())).collect()),
            outcome: outcome.name().to_owned(),
            rtt_ms,
            kind: outcome.kind(),
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
