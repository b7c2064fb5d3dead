//! Offline tools on what was recorded: an SRE tunes thresholds on history with the live code,
//! not a copy, and localizes a fault in a snapshot of counts.
//!
//! - [`record`]: one probe outcome as a JSON line (`run --record` writes it).
//! - [`recording`]: the files of a lasting recording: appended, rotated, compressed, pruned;
//!   and the order replay reads them in.
//! - [`prometheus`]: per-cell outcomes rebuilt from the counters in Prometheus, to replay
//!   history nobody recorded.
//! - [`replay`]: recorded outcomes through the live correlator, printing the verdict timeline.
//! - [`summary`]: a replay summed up as incidents (`--summary`), and two settings compared over
//!   the same history (`--compare`).
//! - [`localize`]: the scopes behind one CSV snapshot of cells, tested on summed counts over
//!   the same scope index.

pub mod localize;
pub mod prometheus;
pub mod record;
pub mod recording;
pub mod replay;
pub mod summary;

pub use record::OutcomeRecord;
