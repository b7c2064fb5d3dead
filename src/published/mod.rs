//! What the evaluator publishes for readers: the verdict document, readiness and the recent
//! verdict changes, as typed values. The evaluator is their one writer; the HTTP server and
//! the status page only read them, and nothing is serialized to be parsed back.
//!
//! - [`words`]: verdicts in plain words (the document's `explanation`).
//! - [`history`]: the last verdict changes, for the status page.

pub mod history;
pub mod words;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;

pub use history::{Change, VerdictHistory};

use crate::correlator::{CellLatency, CellState, Labels, Level, Verdict};

/// The `/verdict` document: the level, in words, the explaining scopes, the correlator's
/// evidence, and every cell's state.
#[derive(Debug, Clone, Serialize)]
pub struct VerdictDocument {
    pub verdict: Level,
    pub explanation: String,
    /// The fixed labels of each explaining scope, in verdict order.
    pub scopes: Vec<Labels>,
    pub evidence: Verdict,
    pub cells: Vec<CellView>,
}

/// One cell as the document shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CellView {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub state: CellState,
    /// Round trips against the cell's baseline: `latency` (`learning`, `normal`, `degraded`),
    /// `baseline_p50_ms`, `baseline_p99_ms`, `current_p50_ms`.
    #[serde(flatten)]
    pub latency: Option<CellLatency>,
}

/// The published state; shared behind an `Arc` between the evaluator and the readers.
#[derive(Debug)]
pub struct Published {
    verdict: RwLock<Option<Arc<VerdictDocument>>>,
    /// `None` when ready, otherwise why not.
    not_ready: RwLock<Option<String>>,
    history: Mutex<VerdictHistory>,
}

impl Default for Published {
    fn default() -> Self {
        Published {
            verdict: RwLock::new(None),
            not_ready: RwLock::new(Some("starting".into())),
            history: Mutex::new(VerdictHistory::default()),
        }
    }
}

impl Published {
    /// The current verdict document; `None` before the evaluator published one.
    pub fn verdict(&self) -> Option<Arc<VerdictDocument>> {
        self.verdict.read().expect("verdict lock").clone()
    }

    /// Replaces the verdict document.
    pub fn set_verdict(&self, document: VerdictDocument) {
        *self.verdict.write().expect("verdict lock") = Some(Arc::new(document));
    }

    /// `None` when ready, otherwise why not.
    pub fn not_ready(&self) -> Option<String> {
        self.not_ready.read().expect("readiness lock").clone()
    }

    /// Whether the daemon is ready (readiness is a start-up condition: once ready, it stays).
    pub fn is_ready(&self) -> bool {
        self.not_ready.read().expect("readiness lock").is_none()
    }

    /// Sets why the daemon is not ready, or `None` once it is.
    pub fn set_not_ready(&self, why: Option<String>) {
        *self.not_ready.write().expect("readiness lock") = why;
    }

    /// Adds a verdict to the history when its level or scopes changed.
    pub fn observe(&self, at: std::time::SystemTime, verdict: &Verdict, explanation: &str) {
        self.history.lock().expect("history lock").observe(at, verdict, explanation);
    }

    /// The recorded changes, newest first.
    pub fn changes(&self) -> Vec<Change> {
        self.history.lock().expect("history lock").newest_first().cloned().collect()
    }
}
