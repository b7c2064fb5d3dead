//! The cross-correlator: from probe outcomes to cell states, from cell states to the scopes that
//! explain them, and from those to one verdict (`ok`, `suspect`, `partial`, `outage`) with its
//! evidence. See "Correlator" in DESIGN.md.
//!
//! - [`brownout`]: per-cell latency baselines, slow probes, degraded cells; their scopes come
//!   from a second correlator over slow probes (the same search, coherence and hysteresis).
//! - [`window`]: per-cell k-of-n window with m-in-a-row recovery (failing, recovering, healthy).
//! - [`coherence`]: whether a scope's failing cells are no coincidence (onsets together,
//!   significantly above the background), and whether the evidence confirms it at once.
//! - [`scopes`]: every scope that has cells, indexed once per matrix.
//! - [`explain`]: the pure explanation (greedy weighted set cover).
//! - [`evidence`]: the figures behind a scope.
//! - [`hysteresis`]: when scopes become active, resolve, or are flagged flapping.
//! - [`quorum`]: whether explained failures corroborate each other across dimensions (outage).
//! - [`live`]: the live [`Correlator`]: windows, index, hysteresis; one verdict per tick.
//! - [`verdict`]: the [`Verdict`], its level and evidence.
//! - [`testkit`]: matrices and drivers for tests and benchmarks (`tests/` beside it holds the
//!   scenario and property tests).

pub mod brownout;
pub mod coherence;
pub mod evidence;
pub mod explain;
pub mod hysteresis;
pub mod live;
pub mod quorum;
pub mod scopes;
pub mod verdict;
pub mod window;

#[path = "tests/testkit.rs"]
pub mod testkit;
#[cfg(test)]
mod tests;

pub use brownout::{Brownouts, CellLatency, Degraded, DegradedScope, LatencyState};
pub use evidence::{Labels, ScopeEvidence};
pub use explain::{explain, explain_with, Choice, Thresholds, Workspace};
pub use live::Correlator;
pub use quorum::QuorumCheck;
pub use scopes::{ScopeId, ScopeIndex};
pub use verdict::{ActiveScope, ErrorShare, Level, LoneCell, Verdict};
pub use window::{CellState, CellWindow};

/// Why a correlator could not be built or fed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorrelatorError {
    #[error("the matrix has {dimensions} dimensions; the correlator handles at most {max}")]
    TooManyDimensions { dimensions: usize, max: usize },
    #[error("the matrix has {0} cells, too many to index")]
    TooManyCells(usize),
    #[error("quorum dimension \"{0}\" is not a dimension of the matrix")]
    UnknownQuorumDimension(String),
    #[error("cell {cell} does not exist (the matrix has {cells} cells)")]
    NoSuchCell { cell: usize, cells: usize },
}
