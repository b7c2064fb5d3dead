//! Brownouts: a latency baseline per cell, slow probes, degraded cells, and the degraded scopes
//! that explain them.
//!
//! - **Baseline.** Each cell learns the distribution of its own `ok` round trips as a histogram
//!   of log-latency (buckets 5% wide, 1 µs to about 5 minutes) whose weights decay with a
//!   half-life of `baseline_half_life` of evaluation ticks: quantiles of log-latency over a long,
//!   exponentially decaying window. Quantiles of the logarithm are robust: a 1% tail of probes
//!   ten times slower moves the median by nothing and the 99th percentile by one bucket. A cell
//!   with fewer than `learning_probes` learned probes is *learning*: it is never judged.
//! - **Slow probe.** An `ok` probe whose round trip exceeds
//!   `max(slow_factor x p50, p50 + slow_margin)` of its cell's baseline. The factor makes the
//!   rule scale-free (6 ms to 200 ms on Kafka is slow); the margin keeps sub-millisecond noise
//!   out (0.4 ms to 0.9 ms on RabbitMQ is not).
//! - **Degraded cell.** The same k-of-n window as failing ([`CellWindow`]) over the last `window`
//!   judged probes, with k chosen by a test instead of by hand: k is the smallest count of slow
//!   probes whose one-sided binomial tail under the cell's own learned slow ratio `p0` (floored
//!   at `slow_floor`) is at most `significance`. With the defaults (20 probes, p0 = 1%, 1e-12)
//!   that is 9 slow probes of 20: ordinary jitter (1% of probes ten times slower) makes that
//!   with a chance of about 2e-13 per probe, a real brownout on its ninth slow probe. A
//!   degraded cell is healthy again after `successes_to_recover` probes in a row that are not
//!   slow. A probe's slowness is learned into the slow ratio only when it leaves the window of
//!   a cell that is not degraded, so a brownout cannot raise its own bar: its first slow probes
//!   are still in the window when they make the cell degraded.
//! - **Absorption.** The baseline learns the `ok` probes of a cell that is not degraded (its
//!   occasional slow probes included), so a slow drift is followed as the weights decay. It
//!   learns nothing while the cell is degraded: otherwise a cell with a short history (a daemon
//!   started an hour ago) would absorb a brownout in as many probes as it has history. A cell
//!   degraded for a whole `baseline_half_life` without a break (4 hours by default) has seen a
//!   lasting shift: it starts learning afresh, and after `learning_probes` its new level is the
//!   baseline. So a lasting shift is absorbed after one half-life plus the learning time,
//!   whatever the history: long enough for a ticket to be seen and acted on in the same shift,
//!   short enough that a deliberate change (a broker moved farther away) stops alerting by
//!   itself.
//! - **Failures outrank slowness.** A cell in a failure episode (failing or recovering) is
//!   forgotten by the slow layer: it is never also degraded, and is judged afresh once healthy.
//! - **Scopes.** Degraded cells are explained by a second [`Correlator`] over the slow/not-slow
//!   outcomes: the very same scope search, coherence, hysteresis and quorum as failures. Its
//!   quorum makes the `widespread` flag (see [`Degraded`]).

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::coherence::ln_binomial_tail;
use super::evidence::{Labels, Values};
use super::live::Correlator;
use super::verdict::{Level, Verdict};
use super::window::{CellState, WindowSettings};
use super::CorrelatorError;
use crate::config::{BrownoutSettings, CorrelatorSettings};
use crate::matrix::Matrix;

/// Buckets of the log-latency histogram: bucket `i` holds round trips in
/// `[GROWTH^i, GROWTH^(i+1))` microseconds.
const BUCKETS: usize = 400;
/// Ratio between bucket bounds: 5%, so a quantile is good to about 2.5%.
const GROWTH: f64 = 1.05;
/// Decayed weights are rescaled before they grow past this (f32 keeps 7 digits; only the ratios
/// between buckets matter).
const RESCALE_ABOVE: f64 = 1e12;
/// The error name of a slow probe in the slow layer.
const SLOW: &str = "slow";

/// One cell's learned round-trip distribution.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    /// Decayed weights per log-latency bucket; empty until the first probe.
    weights: Vec<f32>,
    total: f64,
    /// Decayed weights of the probes judged while the cell was not degraded, and of the slow
    /// ones among them.
    judged: f64,
    slow: f64,
    /// Probes learned, not decayed: the learning threshold.
    learned: u64,
    /// Tick at which a probe weighs 1.
    origin: u64,
}

impl Baseline {
    fn weight(&mut self, tick: u64, half_life_ticks: f64) -> f64 {
        let w = ((tick.saturating_sub(self.origin)) as f64 / half_life_ticks).exp2();
        if w <= RESCALE_ABOVE {
            return w;
        }
        let scale = 1.0 / w;
        for b in &mut self.weights {
            *b = (f64::from(*b) * scale) as f32;
        }
        self.total *= scale;
        self.judged *= scale;
        self.slow *= scale;
        self.origin = tick;
        1.0
    }

    /// Learns one `ok` round trip (milliseconds) seen at `tick`.
    fn learn(&mut self, ms: f64, tick: u64, half_life_ticks: f64) {
        let w = self.weight(tick, half_life_ticks);
        if self.weights.is_empty() {
            self.weights = vec![0.0; BUCKETS];
        }
        let us = (ms * 1000.0).max(1.0);
        let i = ((us.ln() / GROWTH.ln()) as usize).min(BUCKETS - 1);
        self.weights[i] += w as f32;
        self.total += w;
        self.learned += 1;
    }

    /// Learns whether a probe judged while the cell was not degraded was slow.
    fn learn_slow(&mut self, slow: bool, tick: u64, half_life_ticks: f64) {
        let w = self.weight(tick, half_life_ticks);
        self.judged += w;
        if slow {
            self.slow += w;
        }
    }

    /// The `q` quantile in milliseconds (the geometric middle of its bucket); `None` before the
    /// first probe.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total <= 0.0 {
            return None;
        }
        let target = q * self.total;
        let mut sum = 0.0;
        let last = self.weights.iter().rposition(|&w| w > 0.0).unwrap_or(0);
        let i = self
            .weights
            .iter()
            .position(|&w| {
                sum += f64::from(w);
                sum >= target
            })
            .unwrap_or(last)
            .min(last);
        Some(GROWTH.powf(i as f64 + 0.5) / 1000.0)
    }

    /// Share of the judged probes that were slow, by decayed weight; 0 before any.
    pub fn slow_ratio(&self) -> f64 {
        if self.judged > 0.0 {
            self.slow / self.judged
        } else {
            0.0
        }
    }

    /// Probes learned so far.
    pub fn learned(&self) -> u64 {
        self.learned
    }
}

/// The last round trips of one cell, in milliseconds: the "current" latency of the evidence.
#[derive(Debug, Clone, Default)]
struct Recent {
    ms: Vec<f32>,
    next: usize,
}

impl Recent {
    fn push(&mut self, ms: f64, keep: usize) {
        if self.ms.len() < keep {
            self.ms.push(ms as f32);
        } else if keep > 0 {
            self.ms[self.next % keep] = ms as f32;
        }
        self.next = (self.next + 1) % keep.max(1);
    }
}

/// Where a cell's latency stands against its baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencyState {
    /// Fewer than `learning_probes` probes learned: never judged.
    Learning,
    Normal,
    Degraded,
}

/// A cell's round trips now and in its baseline, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CellLatency {
    pub latency: LatencyState,
    pub baseline_p50_ms: Option<f64>,
    pub baseline_p99_ms: Option<f64>,
    /// Median of the cell's last `successes_to_recover` ok round trips.
    pub current_p50_ms: Option<f64>,
}

/// Latency evidence of a degraded scope or cell, over its degraded cells.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencyEvidence {
    /// Median over the degraded cells of their baselines' p50 and p99.
    pub baseline_p50_ms: Option<f64>,
    pub baseline_p99_ms: Option<f64>,
    /// Quantiles of the degraded cells' last `successes_to_recover` ok round trips, pooled: as
    /// many as clear a degraded cell, and few enough that a brownout shows in them on the probe
    /// that makes its cell degraded.
    pub current_p50_ms: Option<f64>,
    pub current_p99_ms: Option<f64>,
    /// `current_p50_ms / baseline_p50_ms`.
    pub factor: Option<f64>,
}

/// An active degraded scope with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DegradedScope {
    pub labels: Labels,
    /// Cells in a degraded episode (degraded, or not slow for fewer than
    /// `successes_to_recover` probes yet).
    pub degraded_cells: u32,
    pub total_cells: u32,
    /// Slow probes over judged probes, summed over the scope's cells' windows, and over every
    /// other cell.
    pub slow_ratio_inside: Option<f64>,
    pub slow_ratio_outside: Option<f64>,
    /// Distinct values of each free dimension among the degraded cells.
    pub values: Values,
    #[serde(flatten)]
    pub latency: LatencyEvidence,
    pub flapping: bool,
    pub strong_evidence: bool,
    pub ticks_active: u64,
    pub active_since: String,
}

/// A degraded cell outside every degraded scope.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlowCell {
    pub labels: Labels,
    pub state: CellState,
    pub degraded_since: String,
    pub degraded_for_seconds: u64,
    #[serde(flatten)]
    pub latency: LatencyEvidence,
}

/// The brownout half of a verdict: degraded scopes beside the failing ones.
///
/// A brownout across the quorum of zones and tenants is a flag (`widespread`), not a level of
/// its own: the level says whether probes are lost, and a brownout is not loss. Slowness that
/// spans zones and tenants is also what a shared dependency (a storage backend, the network
/// path to every zone) does on a bad day: it deserves a ticket with the widest name, and pages
/// only where the SRE opts in (an alert on `crossprobe_degraded_widespread`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Degraded {
    /// The degraded cells in the active scopes meet the outage quorum.
    pub widespread: bool,
    /// The rule of the slow layer: `confined to az=b (...)`, `quorum: ...`, `no degraded cells`.
    pub rule: String,
    /// Cells in a degraded episode.
    pub degraded_cells: usize,
    /// Cells still learning their baseline.
    pub learning_cells: usize,
    pub scopes: Vec<DegradedScope>,
    /// Degraded cells outside every degraded scope, longest first.
    pub unexplained: Vec<SlowCell>,
}

impl Default for Degraded {
    fn default() -> Self {
        Degraded {
            widespread: false,
            rule: "no degraded cells".to_owned(),
            degraded_cells: 0,
            learning_cells: 0,
            scopes: Vec::new(),
            unexplained: Vec::new(),
        }
    }
}

/// Baselines and the slow layer of one matrix.
#[derive(Debug, Clone)]
pub struct Brownouts {
    settings: BrownoutSettings,
    half_life_ticks: f64,
    log_alpha: f64,
    baselines: Vec<Baseline>,
    recent: Vec<Recent>,
    /// Per cell, the tick its current degraded episode began.
    degraded_since: Vec<Option<u64>>,
    /// The scope machinery, on slow (failed) and not slow (ok) judged probes.
    slow: Correlator,
}

/// The slow layer's settings: the failure layer's scope rules with the brownout window.
fn slow_settings(s: &CorrelatorSettings) -> CorrelatorSettings {
    CorrelatorSettings {
        window: s.brownout.window,
        failures_to_fail: 1,
        successes_to_recover: s.brownout.successes_to_recover,
        ..s.clone()
    }
}

impl Brownouts {
    pub fn new(matrix: &Matrix, settings: &CorrelatorSettings) -> Result<Self, CorrelatorError> {
        let b = settings.brownout;
        let tick = settings.tick.max(Duration::from_millis(1)).as_secs_f64();
        Ok(Brownouts {
            settings: b,
            half_life_ticks: (b.baseline_half_life.as_secs_f64() / tick).max(1.0),
            log_alpha: b.significance.ln(),
            baselines: vec![Baseline::default(); matrix.len()],
            recent: vec![Recent::default(); matrix.len()],
            degraded_since: vec![None; matrix.len()],
            slow: Correlator::bare(matrix, &slow_settings(settings))?,
        })
    }

    /// The same, for a reloaded matrix: kept cells (`previous[i]` is new cell `i`'s old index)
    /// keep their baselines and their slow windows; new cells start learning.
    pub fn reconfigured(
        &self,
        matrix: &Matrix,
        settings: &CorrelatorSettings,
        previous: &[Option<usize>],
    ) -> Result<Self, CorrelatorError> {
        let mut next = Brownouts::new(matrix, settings)?;
        for (i, p) in previous.iter().enumerate() {
            if let Some(p) = p.filter(|&p| p < self.baselines.len()) {
                next.baselines[i] = self.baselines[p].clone();
                next.recent[i] = self.recent[p].clone();
                next.degraded_since[i] = self.degraded_since[p];
            }
        }
        next.slow = self.slow.reconfigured(matrix, &slow_settings(settings), previous)?;
        Ok(next)
    }

    /// Slow when above `max(factor x p50, p50 + margin)`.
    fn threshold(&self, p50: f64) -> f64 {
        (self.settings.slow_factor * p50).max(p50 + self.settings.slow_margin.as_secs_f64() * 1000.0)
    }

    /// The smallest count of slow probes in a full window whose binomial tail under `p0` is at
    /// most `significance`; past the window (never degraded) when no count is.
    pub fn slow_probes_needed(&self, p0: f64) -> u32 {
        let n = self.settings.window;
        (1..=n).find(|&k| ln_binomial_tail(u64::from(k), u64::from(n), p0) <= self.log_alpha).unwrap_or(n + 1)
    }

    /// Takes one probe of `cell` at `tick`: `state` is the cell's failure state after it, `rtt`
    /// the round trip of an `ok` probe.
    pub fn record(&mut self, cell: usize, tick: u64, state: CellState, rtt: Option<Duration>) {
        if state.in_episode() {
            self.slow.forget(cell);
            self.degraded_since[cell] = None;
            return;
        }
        let Some(rtt) = rtt else { return };
        let ms = rtt.as_secs_f64() * 1000.0;
        let (h, s) = (self.half_life_ticks, self.settings);
        self.recent[cell].push(ms, s.successes_to_recover as usize);
        if self.baselines[cell].learned >= u64::from(s.learning_probes) {
            let base = &self.baselines[cell];
            let slow = base.quantile(0.5).is_some_and(|p50| ms > self.threshold(p50));
            let k = self.slow_probes_needed(base.slow_ratio().max(s.slow_floor));
            let ws = WindowSettings {
                window: s.window,
                failures_to_fail: k,
                successes_to_recover: s.successes_to_recover,
            };
            // The probe this one pushes out of the window, learned only now: a brownout's first
            // slow probes are still in the window when it turns the cell degraded, so they
            // never raise the slow ratio that judges them.
            let leaving = self.slow.window(cell).and_then(|w| w.oldest(s.window));
            let Ok(judged) = self.slow.record_flag(cell, slow.then_some(SLOW), &ws) else { return };
            if judged.in_episode() {
                // Not learned: a brownout must not become the baseline probe by probe (a cell
                // with a short history would absorb it in as many probes). Degraded for a whole
                // half-life, the cell starts learning afresh: the shift has lasted.
                let since = *self.degraded_since[cell].get_or_insert(tick);
                if (tick.saturating_sub(since) as f64) < h {
                    return;
                }
                self.baselines[cell] = Baseline::default();
                self.slow.forget(cell);
                self.degraded_since[cell] = None;
            } else {
                self.degraded_since[cell] = None;
                if let Some(was_slow) = leaving {
                    self.baselines[cell].learn_slow(was_slow, tick, h);
                }
            }
        }
        self.baselines[cell].learn(ms, tick, h);
    }

    /// Forgets `cell`'s slow window (a cell that stopped reporting); its baseline stays.
    pub fn forget(&mut self, cell: usize) {
        self.slow.forget(cell);
    }

    /// Evaluates the slow layer at `now`.
    pub fn tick_at(&mut self, now: SystemTime) {
        self.slow.tick_at(now);
    }

    pub fn settled(&self) -> bool {
        self.slow.settled()
    }

    pub fn skip_idle(&mut self, ticks: u64) -> bool {
        self.slow.skip_idle(ticks)
    }

    /// The baseline of every cell, in matrix order.
    pub fn baselines(&self) -> &[Baseline] {
        &self.baselines
    }

    /// Where each cell's latency stands, in matrix order.
    pub fn cells(&self) -> impl ExactSizeIterator<Item = CellLatency> + '_ {
        self.baselines.iter().zip(&self.recent).zip(self.slow.cell_states()).map(|((b, r), state)| {
            CellLatency {
                latency: if b.learned < u64::from(self.settings.learning_probes) {
                    LatencyState::Learning
                } else if state.in_episode() {
                    LatencyState::Degraded
                } else {
                    LatencyState::Normal
                },
                baseline_p50_ms: b.quantile(0.5),
                baseline_p99_ms: b.quantile(0.99),
                current_p50_ms: quantile(&mut r.ms.clone(), 0.5),
            }
        })
    }

    /// The evidence of the degraded cells `cells`.
    fn evidence(&self, cells: impl Iterator<Item = usize>) -> LatencyEvidence {
        let (mut p50s, mut p99s, mut recent) = (Vec::new(), Vec::new(), Vec::new());
        for c in cells {
            p50s.extend(self.baselines[c].quantile(0.5).map(|v| v as f32));
            p99s.extend(self.baselines[c].quantile(0.99).map(|v| v as f32));
            recent.extend_from_slice(&self.recent[c].ms);
        }
        let baseline_p50_ms = quantile(&mut p50s, 0.5);
        let current_p50_ms = quantile(&mut recent, 0.5);
        LatencyEvidence {
            baseline_p50_ms,
            baseline_p99_ms: quantile(&mut p99s, 0.5),
            current_p50_ms,
            current_p99_ms: quantile(&mut recent, 0.99),
            factor: baseline_p50_ms.zip(current_p50_ms).map(|(b, c)| c / b),
        }
    }

    /// The brownout half of the verdict, from the slow layer's last tick.
    pub fn degraded(&self) -> Degraded {
        let v: &Verdict = self.slow.verdict();
        let index = self.slow.index();
        let in_episode: Vec<bool> = self.slow.cell_states().map(CellState::in_episode).collect();
        let scopes = v
            .scopes
            .iter()
            .map(|s| {
                let pairs: Vec<(&str, &str)> =
                    s.evidence.labels.0.iter().map(|(d, v)| (d.as_str(), v.as_str())).collect();
                let cells = index.find(&pairs).map_or(&[][..], |id| index.cells(id));
                DegradedScope {
                    labels: s.evidence.labels.clone(),
                    degraded_cells: s.evidence.failing_cells,
                    total_cells: s.evidence.total_cells,
                    slow_ratio_inside: s.evidence.failure_ratio_inside,
                    slow_ratio_outside: s.evidence.failure_ratio_outside,
                    values: s.evidence.values.clone(),
                    latency: self.evidence(cells.iter().map(|&c| c as usize).filter(|&c| in_episode[c])),
                    flapping: s.flapping,
                    strong_evidence: s.strong_evidence,
                    ticks_active: s.ticks_active,
                    active_since: s.active_since.clone(),
                }
            })
            .collect();
        let unexplained = v
            .unexplained
            .iter()
            .map(|lone| {
                let pairs: Vec<(&str, &str)> =
                    lone.labels.0.iter().map(|(d, v)| (d.as_str(), v.as_str())).collect();
                let cell = index.find(&pairs).and_then(|id| index.cells(id).first().copied());
                SlowCell {
                    labels: lone.labels.clone(),
                    state: lone.state,
                    degraded_since: lone.failing_since.clone(),
                    degraded_for_seconds: lone.failing_for_seconds,
                    latency: self.evidence(cell.map(|c| c as usize).into_iter()),
                }
            })
            .collect();
        let learning =
            self.baselines.iter().filter(|b| b.learned < u64::from(self.settings.learning_probes)).count();
        Degraded {
            widespread: v.level == Level::Outage,
            rule: if v.failing_cells == 0 { "no degraded cells".to_owned() } else { v.rule.clone() },
            degraded_cells: v.failing_cells,
            learning_cells: learning,
            scopes,
            unexplained,
        }
    }
}

/// The `q` quantile of `values` (nearest rank); `None` when empty. Sorts `values`.
fn quantile(values: &mut [f32], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f32::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(f64::from(values[rank - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_median_ignores_a_one_percent_tail_and_follows_a_drift_after_one_half_life() {
        let mut b = Baseline::default();
        let h = 100.0;
        for t in 0..1000u64 {
            b.learn(if t % 100 == 0 { 80.0 } else { 8.0 }, t, h);
        }
        let p50 = b.quantile(0.5).unwrap();
        assert!((7.6..8.4).contains(&p50), "p50 {p50} ms, want about 8");
        assert!(b.quantile(0.99).unwrap() < 9.0, "1% of spikes sit at the 99th percentile's edge");
        // A lasting shift to 200 ms: the median stays until the new level holds half the
        // weight, one half-life (100 ticks) later.
        for t in 1000..1090u64 {
            b.learn(200.0, t, h);
        }
        assert!(b.quantile(0.5).unwrap() < 9.0, "not absorbed before one half-life");
        for t in 1090..1110u64 {
            b.learn(200.0, t, h);
        }
        assert!(b.quantile(0.5).unwrap() > 190.0, "absorbed after one half-life");
    }

    #[test]
    fn the_baseline_survives_rescaling() {
        let mut b = Baseline::default();
        // 100 half-lives: weights grow by 2^100 and are rescaled on the way.
        for t in 0..10_000u64 {
            b.learn(1.0 + (t % 3) as f64, t, 100.0);
        }
        let p50 = b.quantile(0.5).unwrap();
        assert!((1.9..2.1).contains(&p50), "p50 {p50}");
        assert!(b.total.is_finite() && b.weights.iter().all(|w| w.is_finite()));
    }

    #[test]
    fn slow_probes_needed_follows_the_binomial_tail() {
        let m = crate::correlator::testkit::grid();
        let b = Brownouts::new(&m, &CorrelatorSettings::default()).unwrap();
        assert_eq!(b.slow_probes_needed(0.01), 9, "9 of 20 at 1% is about 2e-13, 8 of 20 1e-11");
        assert!(b.slow_probes_needed(0.05) > 9);
        assert_eq!(b.slow_probes_needed(0.9), 21, "a cell slow 90% of the time is never judged");
    }
}
