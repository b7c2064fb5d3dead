//! The correlator's scoring, offline, on what was recorded: an SRE tunes thresholds on history
//! with the live code, not a copy.
//!
//! - [`record`]: one probe outcome as a JSON line (`run --record` writes it).
//! - [`replay`]: recorded outcomes through the live correlator, printing the verdict timeline.
//! - [`localize`]: one CSV snapshot of cells through the same explanation.

pub mod localize;
pub mod record;
pub mod replay;

pub use record::OutcomeRecord;
