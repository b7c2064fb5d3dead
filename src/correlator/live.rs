//! The live correlator: owns the cell windows, the scope index and the hysteresis, and turns them
//! into one [`Verdict`] per tick.
//!
//! A cell in a failure episode is failing (its latest probe failed) or recovering (its latest
//! probes succeeded, not yet `successes_to_recover` in a row). Episodes make tickets: the
//! explanation, the hysteresis and the levels below `outage` count both. Only cells failing now
//! make a page.
//!
//! Levels, from the cells in an episode, the explanation and the active scopes:
//! - `ok`: no cell in an episode. Before any cell has reported the verdict is `ok` with
//!   `starting` set: no evidence either way.
//! - `suspect`: cells in an episode, but none inside an active scope (noise, a stuck cell, or a
//!   scope still waiting out `enter_ticks`).
//! - `outage`: cells inside active scopes, and the cells failing *now* that this tick's
//!   explanation accounts for meet the quorum (see [`quorum`](super::quorum): by default two
//!   zones each failing for two tenants and two tenants each failing in two zones), either for
//!   the last `enter_ticks` ticks, or at once when the quorum is met by *sustained* cells alone
//!   (failing for more than `blip_rounds` probes in a row: the evidence that lets a scope enter
//!   at once, see [`coherence`](super::coherence)).
//! - `partial`: otherwise; the fault is localized to the active scopes.
//!
//! The quorum is judged on the cells of the scopes chosen *this tick*, not on every cell of every
//! active scope: an active scope that is only waiting out `exit_ticks` with one failing cell left
//! cannot tip the balance, nor can recovering cells, nor a coincidence of one tick.
//!
//! When a scope becomes active and covers another active scope, the narrower one is retired at
//! once: the wider one says everything it said.

use std::time::SystemTime;

use super::brownout::Brownouts;
use super::coherence::{largest_run, onset_window, Cells, Coherence, CoherenceSettings};
use super::evidence::{scope_evidence, Labels};
use super::explain::{explain_with, Thresholds, Workspace};
use super::hysteresis::Hysteresis;
use super::quorum::{self, QuorumRule};
use super::scopes::{ScopeId, ScopeIndex};
use super::verdict::{rfc3339, ActiveScope, ErrorShare, Level, LoneCell, Verdict, MAX_LISTED_CELLS};
use super::window::{CellState, CellWindow, WindowSettings};
use super::CorrelatorError;
use crate::config::CorrelatorSettings;
use crate::matrix::Matrix;
use crossprobe_probes::Outcome;

/// Cell states, scope index and hysteresis of one matrix.
#[derive(Debug, Clone)]
pub struct Correlator {
    window: WindowSettings,
    thresholds: Thresholds,
    index: ScopeIndex,
    windows: Vec<CellWindow>,
    /// Per cell: the tick it turned failing in its current episode, and that tick's wall-clock
    /// time once evaluated.
    onsets: Vec<u64>,
    onsets_at: Vec<SystemTime>,
    /// Per cell: the tick its last outcome was counted in, and ticks per probe round.
    last_seen: Vec<u64>,
    rounds: Vec<u32>,
    /// Per cell: its latest failure (error kind or outcome name).
    errors: Vec<&'static str>,
    ws: Workspace,
    coherence: Coherence,
    hysteresis: Hysteresis,
    quorum: QuorumRule,
    tick: u64,
    /// Whether any outcome was ever recorded: until then the verdict is `starting`.
    reported: bool,
    /// Consecutive ticks the explained failing cells met the quorum.
    quorum_streak: u32,
    /// Whether the last tick left nothing to change on ticks without outcomes (see
    /// [`Correlator::skip_idle`]).
    settled: bool,
    episode: Vec<usize>,
    active: Vec<ScopeId>,
    /// Per cell, the tick that last counted it.
    cell_stamp: Vec<u64>,
    explained: Vec<usize>,
    verdict: Verdict,
    /// Latency baselines and the slow layer (itself a correlator without one).
    brownout: Option<Box<Brownouts>>,
}

impl Correlator {
    /// Builds the tables for `matrix`, with latency baselines and degraded scopes; every quorum
    /// dimension must be one of its dimensions.
    pub fn new(matrix: &Matrix, settings: &CorrelatorSettings) -> Result<Self, CorrelatorError> {
        let mut c = Correlator::bare(matrix, settings)?;
        c.brownout = Some(Box::new(Brownouts::new(matrix, settings)?));
        c.verdict.degraded.learning_cells = matrix.len();
        Ok(c)
    }

    /// The failure layer alone: what the slow layer of [`Brownouts`] is made of.
    pub(super) fn bare(matrix: &Matrix, settings: &CorrelatorSettings) -> Result<Self, CorrelatorError> {
        let index = ScopeIndex::new(matrix)?;
        let quorum = QuorumRule::new(&index, &settings.quorum)?;
        let n = matrix.len();
        Ok(Correlator {
            window: WindowSettings::from(settings),
            thresholds: Thresholds::from(settings),
            ws: Workspace::new(&index),
            coherence: Coherence::new(&index, CoherenceSettings::from(settings)),
            windows: vec![CellWindow::default(); n],
            onsets: vec![0; n],
            onsets_at: vec![SystemTime::UNIX_EPOCH; n],
            last_seen: vec![0; n],
            rounds: vec![1; n],
            errors: vec!["lost"; n],
            hysteresis: Hysteresis::new(settings),
            quorum,
            tick: 0,
            reported: false,
            quorum_streak: 0,
            settled: false,
            episode: Vec::new(),
            active: Vec::new(),
            cell_stamp: vec![0; n],
            explained: Vec::new(),
            verdict: Verdict {
                level: Level::Ok,
                rule: "starting: no tick evaluated yet".to_owned(),
                tick: 0,
                at: String::new(),
                starting: true,
                failing_cells: 0,
                recovering_cells: 0,
                total_cells: n,
                unexplained_failing_cells: 0,
                quorum: Vec::new(),
                scopes: Vec::new(),
                unexplained: Vec::new(),
                degraded: Default::default(),
            },
            index,
            brownout: None,
        })
    }

    /// The correlator of a reloaded configuration, keeping this one's state wherever it still
    /// applies: `previous[i]` is the index in the old matrix of new cell `i` (`None` for a new
    /// cell). Kept cells keep their windows and onsets; scopes that still exist (the same
    /// dimension values) keep their hysteresis; the tick count and the quorum streak go on. New
    /// thresholds apply from the next outcome and tick.
    pub fn reconfigured(
        &self,
        matrix: &Matrix,
        settings: &CorrelatorSettings,
        previous: &[Option<usize>],
    ) -> Result<Correlator, CorrelatorError> {
        let mut next = Correlator::bare(matrix, settings)?;
        if let Some(b) = &self.brownout {
            next.brownout = Some(Box::new(b.reconfigured(matrix, settings, previous)?));
        }
        for (i, p) in previous.iter().enumerate() {
            if let Some(p) = p.filter(|&p| p < self.windows.len()) {
                next.windows[i] = self.windows[p].rewindowed(&next.window);
                next.onsets[i] = self.onsets[p];
                next.onsets_at[i] = self.onsets_at[p];
                next.last_seen[i] = self.last_seen[p];
                next.rounds[i] = self.rounds[p];
                next.errors[i] = self.errors[p];
            }
        }
        let (old, new) = (&self.index, &next.index);
        next.hysteresis = self.hysteresis.carried(settings, |s| {
            let labels: Vec<(&str, &str)> = old.labels(s).collect();
            new.find(&labels)
        });
        next.tick = self.tick;
        next.reported = self.reported;
        next.quorum_streak = self.quorum_streak;
        next.verdict = Verdict { total_cells: matrix.len(), ..self.verdict.clone() };
        Ok(next)
    }

    /// Adds the outcome of one probe of cell `cell` (its index in the matrix), without a round
    /// trip: the latency baseline learns nothing from it.
    pub fn record(&mut self, cell: usize, outcome: &Outcome) -> Result<CellState, CorrelatorError> {
        self.record_rtt(cell, outcome, None)
    }

    /// Adds the outcome of one probe of cell `cell` and, for an `ok` probe, its round trip.
    pub fn record_rtt(
        &mut self,
        cell: usize,
        outcome: &Outcome,
        rtt: Option<std::time::Duration>,
    ) -> Result<CellState, CorrelatorError> {
        let failure = outcome.is_failure().then(|| outcome.kind().map_or(outcome.name(), |k| k.as_str()));
        let window = self.window;
        let state = self.record_flag(cell, failure, &window)?;
        let tick = self.tick + 1;
        if let Some(b) = &mut self.brownout {
            b.record(cell, tick, state, if failure.is_none() { rtt } else { None });
        }
        Ok(state)
    }

    /// Adds one probe of cell `cell`, failed with `failure` (an error name) or not, judged by
    /// `window` (the slow layer passes each cell's own threshold).
    pub(super) fn record_flag(
        &mut self,
        cell: usize,
        failure: Option<&'static str>,
        window: &WindowSettings,
    ) -> Result<CellState, CorrelatorError> {
        let cells = self.windows.len();
        let w = self.windows.get_mut(cell).ok_or(CorrelatorError::NoSuchCell { cell, cells })?;
        let before = w.state();
        let state = w.record(failure.is_some(), window);
        self.reported = true;
        // Counted in the next tick.
        let stamp = self.tick + 1;
        if self.last_seen[cell] > 0 {
            self.rounds[cell] = (stamp - self.last_seen[cell]).clamp(1, 3600) as u32;
        }
        self.last_seen[cell] = stamp;
        if let Some(error) = failure {
            self.errors[cell] = error;
        }
        if state == CellState::Failing && !before.in_episode() {
            self.onsets[cell] = stamp;
        }
        Ok(state)
    }

    /// Cell `cell`'s window.
    pub(super) fn window(&self, cell: usize) -> Option<&CellWindow> {
        self.windows.get(cell)
    }

    /// Forgets cell `cell`'s outcomes: it is `unknown` until its next outcome (a cell that
    /// stopped reporting must not keep standing for its last state).
    pub fn forget(&mut self, cell: usize) {
        if let Some(w) = self.windows.get_mut(cell) {
            *w = CellWindow::default();
            self.last_seen[cell] = 0;
            self.rounds[cell] = 1;
        }
        if let Some(b) = &mut self.brownout {
            b.forget(cell);
        }
    }

    /// Evaluates the matrix once, at the current wall-clock time; call once per evaluation tick.
    pub fn tick(&mut self) -> &Verdict {
        self.tick_at(SystemTime::now())
    }

    /// Evaluates the matrix once at wall-clock time `now` (a replay passes the recorded time).
    pub fn tick_at(&mut self, now: SystemTime) -> &Verdict {
        self.tick += 1;
        let tick = self.tick;
        self.episode.clear();
        let mut all = (0u64, 0u64);
        let mut failing_now = 0usize;
        let reported = self.reported;
        for (i, w) in self.windows.iter().enumerate() {
            all.0 += u64::from(w.attempts());
            all.1 += u64::from(w.failures());
            if w.state().in_episode() {
                self.episode.push(i);
                if self.onsets[i] == tick {
                    self.onsets_at[i] = now;
                }
            }
            failing_now += usize::from(w.state() == CellState::Failing);
        }
        let cells = Cells { windows: &self.windows, onsets: &self.onsets, rounds: &self.rounds };
        self.coherence.evaluate(&self.index, cells);

        self.active.clear();
        self.active.extend(self.hysteresis.active().map(|(s, _)| s));
        let activations = self.hysteresis.activations() + self.hysteresis.resolutions();
        let coherence = &self.coherence;
        let chosen = explain_with(
            &self.index,
            &self.episode,
            &self.active,
            &self.thresholds,
            |s| coherence.entry(s).may_enter,
            &mut self.ws,
        );
        self.hysteresis.update(tick, now, chosen.iter().map(|c| (c.scope, coherence.entry(c.scope).strong)));
        self.retire_covered(tick);
        // The active set is what the next explanation starts from: when it did not change and
        // this tick chose exactly it, a tick without new outcomes chooses it again.
        let unchanged = self.hysteresis.activations() + self.hysteresis.resolutions() == activations;
        let mut chosen_scopes: Vec<ScopeId> = chosen.iter().map(|c| c.scope).collect();
        chosen_scopes.sort_unstable();
        self.active.clear();
        self.active.extend(self.hysteresis.active().map(|(s, _)| s));
        let chose_the_active = chosen_scopes == self.active;

        // Cells in an episode inside active scopes, counted once.
        let mut inside = 0usize;
        for &s in &self.active {
            for &cell in self.index.cells(s) {
                let cell = cell as usize;
                if self.ws.is_failing(cell) && self.cell_stamp[cell] != tick {
                    self.cell_stamp[cell] = tick;
                    inside += 1;
                }
            }
        }
        // The quorum, on the cells failing now that this tick's explanation accounts for; and
        // on the sustained ones among them, which confirm at once.
        let windows = &self.windows;
        let ws = &self.ws;
        self.explained.clear();
        self.explained.extend(
            self.episode
                .iter()
                .copied()
                .filter(|&c| ws.is_covered(c) && windows[c].state() == CellState::Failing),
        );
        let quorum = self.quorum.check(&self.index, &self.explained);
        let quorum_met = !self.explained.is_empty() && quorum.iter().all(|q| q.met);
        self.quorum_streak = if quorum_met { self.quorum_streak.saturating_add(1) } else { 0 };
        let strong_met = quorum_met && {
            self.strong_cells();
            !self.explained.is_empty()
                && self.quorum.check(&self.index, &self.explained).iter().all(|q| q.met)
        };

        let mut scopes: Vec<ActiveScope> =
            self.hysteresis.active().map(|(s, t)| self.active_scope(s, t, tick, all)).collect();
        // Most failing cells first, then coarser; the sort is stable over scope ids.
        scopes.sort_by(|a, b| {
            b.evidence
                .failing_cells
                .cmp(&a.evidence.failing_cells)
                .then(a.evidence.labels.0.len().cmp(&b.evidence.labels.0.len()))
        });

        let episode = self.episode.len();
        let (level, rule) = if !reported {
            (Level::Ok, "starting: no cell has reported yet".to_owned())
        } else if episode == 0 {
            (Level::Ok, "no failing cells".to_owned())
        } else if inside == 0 {
            (Level::Suspect, self.suspect_rule())
        } else if quorum_met && (strong_met || self.quorum_streak >= self.hysteresis.enter_ticks()) {
            (Level::Outage, format!("quorum: {}", quorum::describe(&quorum)))
        } else {
            let names: Vec<String> = scopes
                .iter()
                .filter(|s| s.evidence.failing_cells > 0)
                .map(|s| s.evidence.labels.describe())
                .collect();
            let why = if quorum_met {
                format!("quorum met for {} of {} ticks", self.quorum_streak, self.hysteresis.enter_ticks())
            } else {
                format!("quorum: {}", quorum::describe(&quorum))
            };
            (Level::Partial, format!("confined to {} ({why})", names.join(" + ")))
        };
        let streak_done = self.quorum_streak == 0 || self.quorum_streak >= self.hysteresis.enter_ticks();
        let degraded = match &mut self.brownout {
            Some(b) => {
                b.tick_at(now);
                b.degraded()
            }
            None => Default::default(),
        };
        let slow_settled = self.brownout.as_ref().is_none_or(|b| b.settled());
        self.settled = unchanged && chose_the_active && streak_done && slow_settled;
        let unexplained = self.lone_cells(now);
        self.verdict = Verdict {
            level,
            rule,
            tick,
            at: rfc3339(now),
            starting: !reported,
            failing_cells: episode,
            recovering_cells: episode - failing_now,
            total_cells: self.windows.len(),
            unexplained_failing_cells: episode - inside,
            quorum,
            scopes,
            unexplained,
            degraded,
        };
        &self.verdict
    }

    /// Whether the last tick left the correlator where ticks without new outcomes keep it: the
    /// explanation chose exactly the active scopes, none entered or resolved, and the quorum
    /// streak (if any) is past `enter_ticks`. Such ticks change no level and no scope, only
    /// counters, which [`Correlator::skip_idle`] advances in one step.
    pub fn settled(&self) -> bool {
        self.settled
    }

    /// Advances over `ticks` evaluation ticks in which no outcome arrived, in one step, leaving
    /// the correlator as `ticks` calls of [`Correlator::tick_at`] would (tick count, hysteresis
    /// streaks and flap history, quorum streak); the verdict is that of the last evaluated tick
    /// until the next one. Only after a tick that [`Correlator::settled`]; otherwise `false` and
    /// nothing changes.
    pub fn skip_idle(&mut self, ticks: u64) -> bool {
        if !self.settled {
            return false;
        }
        if let Some(b) = &mut self.brownout {
            b.skip_idle(ticks);
        }
        self.tick = self.tick.saturating_add(ticks);
        self.hysteresis.skip_chosen(self.tick, ticks);
        if self.quorum_streak > 0 {
            self.quorum_streak = self.quorum_streak.saturating_add(u32::try_from(ticks).unwrap_or(u32::MAX));
        }
        true
    }

    /// Narrows `explained` to the evidence that confirms an outage at once: the sustained cells
    /// (failing for more than `blip_rounds` probes in a row) whose onsets lie together, the
    /// largest such group and the latest of equal ones, as in
    /// [`coherence`](super::coherence). Two faults that began apart (a rolling restart's zone
    /// going down while the last one still fails) never confirm each other this way.
    fn strong_cells(&mut self) {
        let (windows, onsets, rounds) = (&self.windows, &self.onsets, &self.rounds);
        let st = *self.coherence.settings();
        self.explained.retain(|&c| windows[c].run() > st.blip_rounds);
        self.explained.sort_by_key(|&c| (onsets[c], c));
        let window = onset_window(st.onset_rounds, self.explained.iter().map(|&c| rounds[c]));
        let explained = &self.explained;
        let run = largest_run(|i| onsets[explained[i]], explained.len(), window);
        self.explained.truncate(run.end);
        self.explained.drain(..run.start);
    }

    /// Retires every active scope that a scope activated at `tick` covers (all of its cells are
    /// the wider scope's).
    fn retire_covered(&mut self, tick: u64) {
        let wide: Vec<ScopeId> = self.hysteresis.activated_at(tick).collect();
        if wide.is_empty() {
            return;
        }
        let index = &self.index;
        let covers = |w: ScopeId, n: ScopeId| {
            w != n && index.total(n) < index.total(w) && {
                let mask = index.mask(w);
                index.cells(n).iter().all(|&c| index.scope_of(c as usize, mask) == Some(w))
            }
        };
        let narrow: Vec<ScopeId> = self
            .hysteresis
            .active()
            .map(|(s, _)| s)
            .filter(|&n| wide.iter().any(|&w| covers(w, n)))
            .collect();
        for n in narrow {
            self.hysteresis.retire(tick, n);
        }
    }

    fn active_scope(
        &self,
        s: ScopeId,
        t: &super::hysteresis::Track,
        tick: u64,
        all: (u64, u64),
    ) -> ActiveScope {
        let windows = &self.windows;
        let counts = |c: usize| (u64::from(windows[c].attempts()), u64::from(windows[c].failures()));
        let mut recovering = 0u32;
        let mut errors: Vec<(&'static str, u32)> = Vec::new();
        for &c in self.index.cells(s) {
            let c = c as usize;
            if !self.ws.is_failing(c) {
                continue;
            }
            recovering += u32::from(windows[c].state() == CellState::Recovering);
            match errors.iter_mut().find(|(k, _)| *k == self.errors[c]) {
                Some(e) => e.1 += 1,
                None => errors.push((self.errors[c], 1)),
            }
        }
        // The most cells; ties to the name first in order, so the choice is deterministic.
        let error = errors
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
            .map(|(kind, cells)| ErrorShare { kind, cells });
        ActiveScope {
            evidence: scope_evidence(&self.index, &self.ws, s, counts, all),
            recovering_cells: recovering,
            error,
            flapping: t.flapping,
            strong_evidence: t.strong,
            ticks_active: t.active_since.map_or(0, |since| tick - since + 1),
            active_since: t.active_since_at.map(rfc3339).unwrap_or_default(),
        }
    }

    /// Cells in an episode outside every active scope, longest failing first.
    fn lone_cells(&self, now: SystemTime) -> Vec<LoneCell> {
        let mut lone: Vec<usize> =
            self.episode.iter().copied().filter(|&c| self.cell_stamp[c] != self.tick).collect();
        lone.sort_by_key(|&c| (self.onsets[c], c));
        lone.truncate(MAX_LISTED_CELLS);
        lone.into_iter()
            .map(|c| {
                let labels = (0..self.index.dimensions().len())
                    .map(|d| {
                        let v = self.index.cell_value(c, d) as usize;
                        (self.index.dimensions()[d].clone(), self.index.values(d)[v].clone())
                    })
                    .collect();
                LoneCell {
                    labels: Labels(labels),
                    state: self.windows[c].state(),
                    failing_since: rfc3339(self.onsets_at[c]),
                    failing_for_seconds: now.duration_since(self.onsets_at[c]).map_or(0, |d| d.as_secs()),
                    error: self.errors[c],
                }
            })
            .collect()
    }

    fn suspect_rule(&self) -> String {
        let pending: Vec<String> = self
            .hysteresis
            .pending()
            .map(|(s, n)| format!("{} {n}/{}", self.index.describe(s), self.hysteresis.enter_ticks()))
            .collect();
        if !pending.is_empty() {
            format!("awaiting enter_ticks: {}", pending.join(", "))
        } else if self.active.is_empty() {
            "no scope passes thresholds".to_owned()
        } else {
            "failing cells lie outside the active scopes".to_owned()
        }
    }

    /// The verdict of the last tick.
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// State of every cell, in matrix order.
    pub fn cell_states(&self) -> impl ExactSizeIterator<Item = CellState> + '_ {
        self.windows.iter().map(CellWindow::state)
    }

    /// The scope index the correlator scores.
    pub fn index(&self) -> &ScopeIndex {
        &self.index
    }

    /// Latency baselines and the slow layer; `None` in the slow layer itself.
    pub fn brownouts(&self) -> Option<&Brownouts> {
        self.brownout.as_deref()
    }

    /// Scope activations and resolutions since start, for metrics and tests.
    pub fn changes(&self) -> (u64, u64) {
        (self.hysteresis.activations(), self.hysteresis.resolutions())
    }
}
