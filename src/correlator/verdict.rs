//! The live correlator: owns the cell windows, the scope index and the hysteresis, and turns them
//! into one [`Verdict`] per tick.
//!
//! Levels, from the failing cells, the explanation and the active scopes:
//! - `ok`: no failing cell.
//! - `suspect`: failing cells, but none inside an active scope (noise, or a scope still waiting
//!   out `enter_ticks`).
//! - `outage`: failing cells inside active scopes, and for the last `enter_ticks` ticks the
//!   failing cells the explanation accounts for, taken together, met the quorum (see
//!   [`quorum`](super::quorum): by default two zones each failing for two tenants and two
//!   tenants each failing in two zones).
//! - `partial`: otherwise; the fault is localized to the active scopes.
//!
//! The quorum is judged on the cells of the scopes chosen *this tick*, not on every cell of every
//! active scope, and must hold for `enter_ticks` ticks like a scope: an active scope that is only
//! waiting out `exit_ticks` with one failing cell left cannot tip the balance, nor can a
//! coincidence of one tick.

use serde::Serialize;

use super::evidence::{scope_evidence, Labels, ScopeEvidence};
use super::explain::{explain, Thresholds, Workspace};
use super::hysteresis::Hysteresis;
use super::quorum::{self, QuorumCheck, QuorumRule};
use super::scopes::{ScopeId, ScopeIndex};
use super::window::{CellState, CellWindow, WindowSettings};
use super::CorrelatorError;
use crate::config::CorrelatorSettings;
use crate::matrix::Matrix;
use crossprobe_probes::Outcome;

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
    #[serde(flatten)]
    pub evidence: ScopeEvidence,
    pub flapping: bool,
    /// Ticks since activation, the activation tick included.
    pub ticks_active: u64,
}

/// The correlator's conclusion at one tick, with everything that justifies it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub level: Level,
    /// The rule that decided the level, for people: `quorum: az 2/2, tenant 3/2`.
    pub rule: String,
    /// Evaluation ticks since start; 0 before the first.
    pub tick: u64,
    pub failing_cells: usize,
    pub total_cells: usize,
    /// Failing cells outside every active scope.
    pub unexplained_failing_cells: usize,
    pub quorum: Vec<QuorumCheck>,
    /// Active scopes, most failing cells first.
    pub scopes: Vec<ActiveScope>,
}

impl Verdict {
    /// The fixed labels of each active scope, in verdict order.
    pub fn scope_labels(&self) -> Vec<&Labels> {
        self.scopes.iter().map(|s| &s.evidence.labels).collect()
    }
}

/// Cell states, scope index and hysteresis of one matrix.
#[derive(Debug, Clone)]
pub struct Correlator {
    window: WindowSettings,
    thresholds: Thresholds,
    index: ScopeIndex,
    windows: Vec<CellWindow>,
    ws: Workspace,
    hysteresis: Hysteresis,
    quorum: QuorumRule,
    tick: u64,
    /// Consecutive ticks the explained failing cells met the quorum.
    quorum_streak: u32,
    failing: Vec<usize>,
    active: Vec<ScopeId>,
    /// Per cell, the tick that last counted it.
    cell_stamp: Vec<u64>,
    explained: Vec<usize>,
    verdict: Verdict,
}

impl Correlator {
    /// Builds the tables for `matrix`; every quorum dimension must be one of its dimensions.
    pub fn new(matrix: &Matrix, settings: &CorrelatorSettings) -> Result<Self, CorrelatorError> {
        let index = ScopeIndex::new(matrix)?;
        let quorum = QuorumRule::new(&index, &settings.quorum)?;
        Ok(Correlator {
            window: WindowSettings::from(settings),
            thresholds: Thresholds::from(settings),
            ws: Workspace::new(&index),
            windows: vec![CellWindow::default(); matrix.len()],
            hysteresis: Hysteresis::new(settings),
            quorum,
            tick: 0,
            quorum_streak: 0,
            failing: Vec::new(),
            active: Vec::new(),
            cell_stamp: vec![0; matrix.len()],
            explained: Vec::new(),
            verdict: Verdict {
                level: Level::Ok,
                rule: "no tick evaluated yet".to_owned(),
                tick: 0,
                failing_cells: 0,
                total_cells: matrix.len(),
                unexplained_failing_cells: 0,
                quorum: Vec::new(),
                scopes: Vec::new(),
            },
            index,
        })
    }

    /// The correlator of a reloaded configuration, keeping this one's state wherever it still
    /// applies: `previous[i]` is the index in the old matrix of new cell `i` (`None` for a new
    /// cell). Kept cells keep their windows; scopes that still exist (the same dimension values)
    /// keep their hysteresis; the tick count and the quorum streak go on. New thresholds apply
    /// from the next outcome and tick.
    pub fn reconfigured(
        &self,
        matrix: &Matrix,
        settings: &CorrelatorSettings,
        previous: &[Option<usize>],
    ) -> Result<Correlator, CorrelatorError> {
        let mut next = Correlator::new(matrix, settings)?;
        for (window, p) in next.windows.iter_mut().zip(previous) {
            if let Some(w) = p.and_then(|p| self.windows.get(p)) {
                *window = w.rewindowed(&next.window);
            }
        }
        let (old, new) = (&self.index, &next.index);
        next.hysteresis = self.hysteresis.carried(settings, |s| {
            let labels: Vec<(&str, &str)> = old.labels(s).collect();
            new.find(&labels)
        });
        next.tick = self.tick;
        next.quorum_streak = self.quorum_streak;
        next.verdict = Verdict { total_cells: matrix.len(), ..self.verdict.clone() };
        Ok(next)
    }

    /// Adds the outcome of one probe of cell `cell` (its index in the matrix).
    pub fn record(&mut self, cell: usize, outcome: &Outcome) -> Result<CellState, CorrelatorError> {
        let cells = self.windows.len();
        let w = self.windows.get_mut(cell).ok_or(CorrelatorError::NoSuchCell { cell, cells })?;
        Ok(w.record(outcome.is_failure(), &self.window))
    }

    /// Forgets cell `cell`'s outcomes: it is `unknown` until its next outcome (a cell that
    /// stopped reporting must not keep standing for its last state).
    pub fn forget(&mut self, cell: usize) {
        if let Some(w) = self.windows.get_mut(cell) {
            *w = CellWindow::default();
        }
    }

    /// Evaluates the matrix once; call once per evaluation tick.
    pub fn tick(&mut self) -> &Verdict {
        self.tick += 1;
        self.failing.clear();
        let mut all = (0u64, 0u64);
        for (i, w) in self.windows.iter().enumerate() {
            all.0 += u64::from(w.attempts());
            all.1 += u64::from(w.failures());
            if w.state() == CellState::Failing {
                self.failing.push(i);
            }
        }
        self.active.clear();
        self.active.extend(self.hysteresis.active().map(|(s, _)| s));
        let chosen = explain(&self.index, &self.failing, &self.active, &self.thresholds, &mut self.ws);
        self.hysteresis.update(self.tick, chosen.iter().map(|c| c.scope));
        self.active.clear();
        self.active.extend(self.hysteresis.active().map(|(s, _)| s));

        // Failing cells inside active scopes, counted once.
        let tick = self.tick;
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
        // The quorum, on the failing cells this tick's explanation accounts for.
        self.explained.clear();
        self.explained.extend(self.failing.iter().copied().filter(|&c| self.ws.is_covered(c)));
        let quorum = self.quorum.check(&self.index, &self.explained, tick);
        let explained = self.explained.len();
        let quorum_met = explained > 0 && quorum.iter().all(|q| q.met);
        self.quorum_streak = if quorum_met { self.quorum_streak + 1 } else { 0 };

        let windows = &self.windows;
        let counts = |c: usize| (u64::from(windows[c].attempts()), u64::from(windows[c].failures()));
        let mut scopes: Vec<ActiveScope> = self
            .hysteresis
            .active()
            .map(|(s, t)| ActiveScope {
                evidence: scope_evidence(&self.index, &self.ws, s, counts, all),
                flapping: t.flapping,
                ticks_active: t.active_since.map_or(0, |since| tick - since + 1),
            })
            .collect();
        // Most failing cells first, then coarser; the sort is stable over scope ids.
        scopes.sort_by(|a, b| {
            b.evidence
                .failing_cells
                .cmp(&a.evidence.failing_cells)
                .then(a.evidence.labels.0.len().cmp(&b.evidence.labels.0.len()))
        });

        let failing = self.failing.len();
        let (level, rule) = if failing == 0 {
            (Level::Ok, "no failing cells".to_owned())
        } else if inside == 0 {
            (Level::Suspect, self.suspect_rule())
        } else if self.quorum_streak >= self.hysteresis.enter_ticks() {
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
        self.verdict = Verdict {
            level,
            rule,
            tick,
            failing_cells: failing,
            total_cells: self.windows.len(),
            unexplained_failing_cells: failing - inside,
            quorum,
            scopes,
        };
        &self.verdict
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

    /// Scope activations and resolutions since start, for metrics and tests.
    pub fn changes(&self) -> (u64, u64) {
        (self.hysteresis.activations(), self.hysteresis.resolutions())
    }
}
