//! What the correlator concludes at each tick: the [`Verdict`], its [`Level`], the active scopes
//! with their evidence, and the cells it could not place. The live [`Correlator`]
//! (`super::live`) produces it; the evaluator publishes it and `replay` prints it.

use std::time::SystemTime;

use serde::Serialize;

use super::brownout::Degraded;
use super::evidence::{Labels, ScopeEvidence};
use super::quorum::QuorumCheck;
use super::window::CellState;

/// Most cells outside every active scope a verdict lists by name.
pub const MAX_LISTED_CELLS: usize = 20;

/// How bad things are, from the whole matrix's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    Suspect,
    Partial,
    Outage,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Suspect => "suspect",
            Level::Partial => "partial",
            Level::Outage => "outage",
        }
    }

    /// Value of the `crossprobe_verdict` gauge: 0 ok, 1 suspect, 2 partial, 3 outage.
    pub fn gauge(self) -> i64 {
        self as i64
    }
}

/// An active scope with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveScope {
    /// `failing_cells` counts the scope's cells in a failure episode, failing or recovering.
    #[serde(flatten)]
    pub evidence: ScopeEvidence,
    /// Of `failing_cells`, those whose latest probes succeeded.
    pub recovering_cells: u32,
    /// The most common error among the scope's cells in an episode (their latest failure), with
    /// how many cells it is.
    pub error: Option<ErrorShare>,
    pub flapping: bool,
    /// Entered on strong evidence, without waiting out `enter_ticks`.
    pub strong_evidence: bool,
    /// Ticks since activation, the activation tick included.
    pub ticks_active: u64,
    /// Wall-clock time of the activation tick, RFC 3339.
    pub active_since: String,
}

/// The most common error among some cells: an error kind (`timeout`, `refused`, `auth`, ...) or,
/// for outcomes without one, the outcome (`lost`, `late`, `corrupt`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorShare {
    pub kind: &'static str,
    pub cells: u32,
}

/// A cell in a failure episode outside every active scope: noise, or a cell stuck on its own.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoneCell {
    pub labels: Labels,
    pub state: CellState,
    /// Wall-clock time of the tick it turned failing in this episode, RFC 3339.
    pub failing_since: String,
    /// Seconds from then to this tick.
    pub failing_for_seconds: u64,
    /// Its latest failure.
    pub error: &'static str,
}

/// The correlator's conclusion at one tick, with everything that justifies it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub level: Level,
    /// The rule that decided the level, for people: `quorum: az 2/2, tenant 3/2`.
    pub rule: String,
    /// Evaluation ticks since start; 0 before the first.
    pub tick: u64,
    /// Wall-clock time of the tick, RFC 3339; empty before the first.
    pub at: String,
    /// No cell has reported yet: `ok` for want of evidence, not on evidence.
    pub starting: bool,
    /// Cells in a failure episode: failing now or recovering.
    pub failing_cells: usize,
    /// Of those, the cells whose latest probes succeeded.
    pub recovering_cells: usize,
    pub total_cells: usize,
    /// Cells in a failure episode outside every active scope.
    pub unexplained_failing_cells: usize,
    pub quorum: Vec<QuorumCheck>,
    /// Active scopes, most failing cells first.
    pub scopes: Vec<ActiveScope>,
    /// The cells outside every active scope, longest failing first, at most
    /// [`MAX_LISTED_CELLS`].
    pub unexplained: Vec<LoneCell>,
    /// Degraded scopes and cells: round trips far above their cells' baselines. Failing cells
    /// are never counted here.
    pub degraded: Degraded,
}

impl Verdict {
    /// The fixed labels of each active scope, in verdict order.
    pub fn scope_labels(&self) -> Vec<&Labels> {
        self.scopes.iter().map(|s| &s.evidence.labels).collect()
    }
}

/// `2026-11-30T16:20:00Z`: seconds are enough for a person and keep the text stable. RFC 3339
/// ends with the year 9999: a later time (a replayed `at_ms` far in the future) shows as its
/// last second.
pub(super) fn rfc3339(t: SystemTime) -> String {
    let last = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(253_402_300_799);
    humantime::format_rfc3339_seconds(t.min(last)).to_string()
}
