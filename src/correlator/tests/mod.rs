//! The correlator's scenario and property tests, run on the matrices of [`super::testkit`].
//!
//! - `scenarios`: recorded-style faults and the verdicts they must give.
//! - `traps`: what must not page or ticket: coincidences, stuck cells, rolling restarts, blips.
//! - `properties`: invariants under random noise (the long run is `--ignored`).
//! - `reloads`: state carried across a configuration reload.
//! - `brownouts`: latency baselines and degraded scopes.

mod brownouts;
mod properties;
mod reloads;
mod scenarios;
mod traps;
