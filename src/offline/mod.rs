//! Offline tools on what was recorded: an SRE tunes thresholds on history with the live code,
//! not a copy, and localizes a fault in a snapshot of counts.
//!
//! - [`record`]: one probe outcome as a JSON line (`run --record` writes it).
//! - [`replay`]: recorded outcomes through the live correlator, printing the verdict timeline.
//! - [`localize`]: the scopes behind one CSV snapshot of cells, tested on summed counts over
//!   the same scope index.

pub mod localize;
pub mod record;
pub mod replay;

pub use record::OutcomeRecord;
