//! The cell layer: one k-of-n window per cell, with asymmetric recovery.
//!
//! A cell turns `Failing` when `failures_to_fail` of its last `window` probes failed, and turns
//! `Healthy` again only after `successes_to_recover` successes in a row, so a single lucky probe
//! never clears a failing cell and a single failed probe never leaves this layer. In between, a
//! cell whose latest probe succeeded is `Recovering`: it still belongs to its failure episode (a
//! scope's ticket holds through it), but it is not failing *now*, so it never counts towards the
//! outage quorum. The window is a bit set (at most 64 probes, which config validation enforces),
//! so the window's attempts and failures are exact, additive counts that scopes can sum.

use crate::config::CorrelatorSettings;

/// Largest window a cell can keep: one bit per probe in a `u64`.
pub const MAX_WINDOW: u32 = 64;

/// What the cell layer concludes about one cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CellState {
    /// No outcome recorded yet.
    Unknown,
    Healthy,
    /// In a failure episode, and the latest probe failed.
    Failing,
    /// In a failure episode, but the latest probes succeeded: fewer than `successes_to_recover`
    /// in a row so far.
    Recovering,
}

impl CellState {
    /// Value of the `crossprobe_cell_state` gauge: 0 healthy, 1 failing, 2 recovering,
    /// -1 unknown.
    pub fn gauge(self) -> i64 {
        match self {
            CellState::Unknown => -1,
            CellState::Healthy => 0,
            CellState::Failing => 1,
            CellState::Recovering => 2,
        }
    }

    /// Whether the cell is in a failure episode (failing or recovering): what a scope's ticket
    /// is made of.
    pub fn in_episode(self) -> bool {
        matches!(self, CellState::Failing | CellState::Recovering)
    }
}

/// The cell-layer parameters, taken from `[correlator]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSettings {
    /// Probes remembered, 1 to [`MAX_WINDOW`].
    pub window: u32,
    pub failures_to_fail: u32,
    pub successes_to_recover: u32,
}

impl From<&CorrelatorSettings> for WindowSettings {
    fn from(s: &CorrelatorSettings) -> Self {
        WindowSettings {
            window: s.window.clamp(1, MAX_WINDOW),
            failures_to_fail: s.failures_to_fail,
            successes_to_recover: s.successes_to_recover,
        }
    }
}

/// The last `window` outcomes of one cell and the state they imply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellWindow {
    /// Bit i set: the i-th most recent probe failed.
    failed: u64,
    /// Outcomes held, up to the window size.
    held: u32,
    /// Successes since the last failure.
    streak: u32,
    /// Failures since the last success: how long the current failure has lasted, in probes.
    run: u32,
    state: CellState,
}

impl Default for CellWindow {
    fn default() -> Self {
        CellWindow { failed: 0, held: 0, streak: 0, run: 0, state: CellState::Unknown }
    }
}

impl CellWindow {
    /// Adds one outcome and returns the new state.
    ///
    /// The failing condition is checked only when a failure arrives: with a recovery streak
    /// shorter than the window, old failures may still be in the window after the cell has
    /// recovered, and a success must never make a cell fail.
    pub fn record(&mut self, failed: bool, s: &WindowSettings) -> CellState {
        let mask = if s.window >= MAX_WINDOW { u64::MAX } else { (1u64 << s.window) - 1 };
        self.failed = ((self.failed << 1) | u64::from(failed)) & mask;
        self.held = (self.held + 1).min(s.window);
        self.streak = if failed { 0 } else { self.streak.saturating_add(1) };
        self.run = if failed { self.run.saturating_add(1) } else { 0 };
        self.state = match self.state {
            CellState::Failing | CellState::Recovering if self.streak >= s.successes_to_recover => {
                CellState::Healthy
            }
            CellState::Failing | CellState::Recovering if failed => CellState::Failing,
            CellState::Failing | CellState::Recovering => CellState::Recovering,
            CellState::Unknown | CellState::Healthy if failed && self.failures() >= s.failures_to_fail => {
                CellState::Failing
            }
            CellState::Unknown | CellState::Healthy => CellState::Healthy,
        };
        self.state
    }

    pub fn state(&self) -> CellState {
        self.state
    }

    /// The same history under new settings (a reload): a shorter window forgets the oldest
    /// outcomes; the state stands until the next outcome is judged by the new thresholds.
    pub fn rewindowed(mut self, s: &WindowSettings) -> CellWindow {
        let mask = if s.window >= MAX_WINDOW { u64::MAX } else { (1u64 << s.window) - 1 };
        self.failed &= mask;
        self.held = self.held.min(s.window);
        self
    }

    /// Outcomes in the window (the denominator of the cell's failure ratio).
    pub fn attempts(&self) -> u32 {
        self.held
    }

    /// Failed outcomes in the window.
    pub fn failures(&self) -> u32 {
        self.failed.count_ones()
    }

    /// Whether the oldest probe of a full window of `window` probes failed: the outcome the
    /// next one pushes out; `None` while the window is not full.
    pub fn oldest(&self, window: u32) -> Option<bool> {
        (self.held >= window && window > 0 && window <= MAX_WINDOW)
            .then(|| self.failed >> (window - 1) & 1 == 1)
    }

    /// Consecutive failed probes up to the latest one (0 when the latest succeeded).
    pub fn run(&self) -> u32 {
        self.run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: WindowSettings =
        WindowSettings { window: 5, failures_to_fail: 3, successes_to_recover: 5 };

    /// Feeds `pattern` ('x' failed, '.' ok) and returns the state after each outcome as a string
    /// ('F' failing, 'H' healthy).
    fn run(pattern: &str, s: &WindowSettings) -> String {
        let mut w = CellWindow::default();
        pattern
            .chars()
            .map(|c| match w.record(c == 'x', s) {
                CellState::Failing => 'F',
                CellState::Recovering => 'R',
                CellState::Healthy => 'H',
                CellState::Unknown => '?',
            })
            .collect()
    }

    #[test]
    fn k_of_n_and_m_in_a_row() {
        let short_recovery = WindowSettings { window: 10, failures_to_fail: 3, successes_to_recover: 2 };
        let cases: &[(&str, &WindowSettings, &str, &str)] = &[
            ("one failure stays healthy", &DEFAULTS, "..x..", "HHHHH"),
            ("two of five stay healthy", &DEFAULTS, "x.x....x", "HHHHHHHH"),
            ("three of five fail", &DEFAULTS, "x.x.x", "HHHHF"),
            ("three in a row fail", &DEFAULTS, "xxx", "HHF"),
            ("three spread over six do not", &DEFAULTS, "x..x..x", "HHHHHHH"),
            ("four successes are not enough", &DEFAULTS, "xxx....x", "HHFRRRRF"),
            ("five successes recover", &DEFAULTS, "xxx.....", "HHFRRRRH"),
            ("a lucky success does not clear", &DEFAULTS, "xxx.xx.x", "HHFRFFRF"),
            ("flapping stays in its episode", &DEFAULTS, "x.x.x.x.x.x.x.", "HHHHFRFRFRFRFR"),
            (
                "recovered cell is not re-failed by old failures on a success",
                &short_recovery,
                "xxx....",
                "HHFRHHH",
            ),
            ("recovered cell fails again on a new failure", &short_recovery, "xxx..x", "HHFRHF"),
        ];
        for (name, s, pattern, want) in cases {
            assert_eq!(run(pattern, s), *want, "{name}: pattern {pattern}");
        }
    }

    #[test]
    fn counts_are_over_the_window() {
        let mut w = CellWindow::default();
        assert_eq!((w.state(), w.attempts(), w.failures()), (CellState::Unknown, 0, 0));
        for f in [true, false, true] {
            w.record(f, &DEFAULTS);
        }
        assert_eq!((w.attempts(), w.failures(), w.run()), (3, 2, 1));
        assert_eq!((w.oldest(3), w.oldest(5)), (Some(true), None), "x.x: the oldest failed");
        w.record(true, &DEFAULTS);
        assert_eq!((w.state(), w.run()), (CellState::Failing, 2), "x.xx: three of four failed");
        w.record(false, &DEFAULTS);
        assert_eq!((w.state(), w.run()), (CellState::Recovering, 0));
        for _ in 0..4 {
            w.record(false, &DEFAULTS);
        }
        // "x.xx....." holds its last five, ".....": no failure, and five successes recovered it.
        assert_eq!((w.state(), w.attempts(), w.failures()), (CellState::Healthy, 5, 0));
    }

    #[test]
    fn a_64_probe_window_keeps_every_bit() {
        let s = WindowSettings { window: 64, failures_to_fail: 64, successes_to_recover: 1 };
        let mut w = CellWindow::default();
        for i in 0..64 {
            assert_eq!(w.record(true, &s), if i == 63 { CellState::Failing } else { CellState::Healthy });
        }
        assert_eq!((w.attempts(), w.failures()), (64, 64));
    }
}
