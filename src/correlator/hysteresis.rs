//! Hysteresis of scopes: when a chosen scope becomes active, when an active one resolves, and
//! when one is flapping.
//!
//! - A scope becomes active after being chosen by the explanation for `enter_ticks` consecutive
//!   ticks, or at once when it is chosen on strong evidence (see
//!   [`coherence`](super::coherence)): the cells' k-of-n windows already held the failure for
//!   as long as a single cell needs, and many cells failing together need no more waiting.
//! - A scope can be retired at once (see [`Hysteresis::retire`]): when a wider scope that covers
//!   it becomes active, the narrower one would only repeat part of it.
//! - An active scope resolves after `exit_ticks` consecutive ticks in which it is not chosen
//!   (while active it is a candidate with the looser `exit_ratio`, see `explain`).
//! - Activations and resolutions are the scope's changes. When a change would bring the changes
//!   within the last `flap_window_ticks` to `flap_changes`, the scope is flagged `flapping`: a
//!   flapping scope stays active and resolves only after `flap_window_ticks` ticks without being
//!   chosen, so a flapping fault fires once instead of resolving and firing again.

use std::collections::{BTreeMap, VecDeque};
use std::time::SystemTime;

use super::scopes::ScopeId;
use crate::config::CorrelatorSettings;

/// Where one scope stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Track {
    /// Consecutive ticks chosen, up to and including the last one.
    pub chosen_streak: u32,
    /// Consecutive ticks not chosen while active.
    pub clean_streak: u32,
    /// Tick of the activation, while active.
    pub active_since: Option<u64>,
    /// Wall-clock time of the activation tick, while active.
    pub active_since_at: Option<SystemTime>,
    /// Whether the activation was on strong evidence, without waiting out `enter_ticks`.
    pub strong: bool,
    pub flapping: bool,
    /// Ticks of recent activations and resolutions.
    changes: VecDeque<u64>,
    last_chosen: u64,
}

/// The tracks of every scope that is pending, active, or changed recently.
#[derive(Debug, Clone)]
pub struct Hysteresis {
    tracks: BTreeMap<ScopeId, Track>,
    enter_ticks: u32,
    exit_ticks: u32,
    flap_window_ticks: u32,
    flap_changes: u32,
    activations: u64,
    resolutions: u64,
}

impl Hysteresis {
    pub fn new(s: &CorrelatorSettings) -> Self {
        Hysteresis {
            tracks: BTreeMap::new(),
            enter_ticks: s.enter_ticks.max(1),
            exit_ticks: s.exit_ticks.max(1),
            flap_window_ticks: s.flap_window_ticks.max(1),
            flap_changes: s.flap_changes.max(2),
            activations: 0,
            resolutions: 0,
        }
    }

    /// The same tracks under new settings and a new scope index (a reload): `map` gives each
    /// scope's id in the new index, or `None` when the scope no longer exists (its track is
    /// dropped). Activation and resolution counts carry over.
    pub fn carried(&self, s: &CorrelatorSettings, map: impl Fn(ScopeId) -> Option<ScopeId>) -> Hysteresis {
        let mut next = Hysteresis::new(s);
        next.tracks = self.tracks.iter().filter_map(|(&id, t)| Some((map(id)?, t.clone()))).collect();
        next.activations = self.activations;
        next.resolutions = self.resolutions;
        next
    }

    /// Applies one tick's explanation at wall-clock time `now`: each chosen scope, and whether
    /// it was chosen on strong evidence. `tick` must increase by one per call, starting at 1.
    pub fn update(&mut self, tick: u64, now: SystemTime, chosen: impl IntoIterator<Item = (ScopeId, bool)>) {
        for (s, strong) in chosen {
            let t = self.tracks.entry(s).or_default();
            t.chosen_streak = t.chosen_streak.saturating_add(1);
            t.clean_streak = 0;
            t.last_chosen = tick;
            if t.active_since.is_none() && (strong || t.chosen_streak >= self.enter_ticks) {
                t.active_since = Some(tick);
                t.active_since_at = Some(now);
                t.strong = strong && t.chosen_streak < self.enter_ticks;
                t.changes.push_back(tick);
                self.activations += 1;
                if t.changes.len() as u32 >= self.flap_changes {
                    t.flapping = true;
                }
            }
        }
        let horizon = tick.saturating_sub(u64::from(self.flap_window_ticks));
        for t in self.tracks.values_mut() {
            while t.changes.front().is_some_and(|&c| c <= horizon) {
                t.changes.pop_front();
            }
            if t.last_chosen == tick {
                continue;
            }
            t.chosen_streak = 0;
            if t.active_since.is_none() {
                continue;
            }
            t.clean_streak += 1;
            let resolve = if t.flapping {
                t.clean_streak >= self.flap_window_ticks
            } else if t.clean_streak >= self.exit_ticks {
                // This resolution would be one change too many: hold the scope instead.
                t.flapping = t.changes.len() as u32 + 1 >= self.flap_changes;
                !t.flapping
            } else {
                false
            };
            if resolve {
                t.active_since = None;
                t.active_since_at = None;
                t.flapping = false;
                t.clean_streak = 0;
                t.changes.push_back(tick);
                self.resolutions += 1;
            }
        }
        self.tracks.retain(|_, t| t.active_since.is_some() || t.chosen_streak > 0 || !t.changes.is_empty());
    }

    /// Applies `ticks` ticks up to `tick` in each of which exactly the active scopes are chosen,
    /// as that many [`Hysteresis::update`] calls would: their chosen streaks grow, nothing enters
    /// or resolves, and changes older than the flap window are forgotten.
    pub fn skip_chosen(&mut self, tick: u64, ticks: u64) {
        let grown = u32::try_from(ticks).unwrap_or(u32::MAX);
        let horizon = tick.saturating_sub(u64::from(self.flap_window_ticks));
        for t in self.tracks.values_mut() {
            while t.changes.front().is_some_and(|&c| c <= horizon) {
                t.changes.pop_front();
            }
            if t.active_since.is_some() {
                t.chosen_streak = t.chosen_streak.saturating_add(grown);
                t.clean_streak = 0;
                t.last_chosen = tick;
            } else {
                t.chosen_streak = 0;
            }
        }
        self.tracks.retain(|_, t| t.active_since.is_some() || t.chosen_streak > 0 || !t.changes.is_empty());
    }

    /// Resolves active `scope` at once (a wider active scope covers it); it counts as a
    /// resolution and a change. Its chosen streak starts again, so it re-enters only on its own.
    pub fn retire(&mut self, tick: u64, scope: ScopeId) {
        if let Some(t) = self.tracks.get_mut(&scope) {
            if t.active_since.take().is_some() {
                t.active_since_at = None;
                t.flapping = false;
                t.clean_streak = 0;
                t.chosen_streak = 0;
                t.changes.push_back(tick);
                self.resolutions += 1;
            }
        }
    }

    /// Scopes activated at `tick`.
    pub fn activated_at(&self, tick: u64) -> impl Iterator<Item = ScopeId> + '_ {
        self.tracks.iter().filter(move |(_, t)| t.active_since == Some(tick)).map(|(&s, _)| s)
    }

    /// Active scopes in id order.
    pub fn active(&self) -> impl Iterator<Item = (ScopeId, &Track)> + '_ {
        self.tracks.iter().filter(|(_, t)| t.active_since.is_some()).map(|(&s, t)| (s, t))
    }

    /// Chosen but not yet active scopes, with their consecutive chosen ticks.
    pub fn pending(&self) -> impl Iterator<Item = (ScopeId, u32)> + '_ {
        self.tracks
            .iter()
            .filter(|(_, t)| t.active_since.is_none() && t.chosen_streak > 0)
            .map(|(&s, t)| (s, t.chosen_streak))
    }

    pub fn enter_ticks(&self) -> u32 {
        self.enter_ticks
    }

    /// Activations since start.
    pub fn activations(&self) -> u64 {
        self.activations
    }

    /// Resolutions since start.
    pub fn resolutions(&self) -> u64 {
        self.resolutions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `pattern` ('x' chosen, 's' chosen on strong evidence, '.' not) for scope 7 and returns per tick 'A' active,
    /// 'F' active and flapping, '.' inactive, plus the activation and resolution counts.
    fn run(pattern: &str, s: &CorrelatorSettings) -> (String, u64, u64) {
        let mut h = Hysteresis::new(s);
        let mut out = String::new();
        for (i, c) in pattern.chars().enumerate() {
            let chosen: &[(ScopeId, bool)] = match c {
                'x' => &[(7, false)],
                's' => &[(7, true)],
                _ => &[],
            };
            h.update(i as u64 + 1, SystemTime::UNIX_EPOCH, chosen.iter().copied());
            out.push(match h.active().next() {
                Some((_, t)) if t.flapping => 'F',
                Some(_) => 'A',
                None => '.',
            });
        }
        (out, h.activations(), h.resolutions())
    }

    fn settings(enter: u32, exit: u32, window: u32, changes: u32) -> CorrelatorSettings {
        CorrelatorSettings {
            enter_ticks: enter,
            exit_ticks: exit,
            flap_window_ticks: window,
            flap_changes: changes,
            ..CorrelatorSettings::default()
        }
    }

    #[test]
    fn enter_exit_and_flapping() {
        let s = settings(2, 3, 20, 4);
        let cases: &[(&str, &str, &str, u64, u64)] = &[
            ("one chosen tick never enters", "x.x.x.", "......", 0, 0),
            ("enter after two ticks", "xx", ".A", 1, 0),
            ("strong evidence enters at once", "s..", "AAA", 1, 0),
            ("strong evidence after a weak tick", "xs", ".A", 1, 0),
            ("resolve after three clean ticks", "xx...", ".AAA.", 1, 1),
            ("a chosen tick restarts the clean count", "xx..x..x...", ".AAAAAAAAA.", 1, 1),
            // A, R, A, then the second resolution would be the fourth change: held, flapping.
            ("flapping is held active", "xx...xx....x", ".AAA..AAAFFF", 2, 1),
        ];
        for (name, pattern, want, activations, resolutions) in cases {
            let got = run(pattern, &s);
            assert_eq!(got, (want.to_string(), *activations, *resolutions), "{name}: {pattern}");
        }
    }

    #[test]
    fn retired_scopes_resolve_at_once_and_reenter_on_their_own() {
        let s = settings(2, 3, 20, 4);
        let mut h = Hysteresis::new(&s);
        let now = SystemTime::UNIX_EPOCH;
        h.update(1, now, [(7, true)]);
        assert_eq!(h.activated_at(1).collect::<Vec<_>>(), [7]);
        h.retire(2, 7);
        assert_eq!(h.active().count(), 0);
        assert_eq!((h.activations(), h.resolutions()), (1, 1));
        h.update(2, now, [(7, false)]);
        assert_eq!(h.active().count(), 0, "the chosen streak started again");
        h.update(3, now, [(7, false)]);
        assert_eq!(h.activated_at(3).collect::<Vec<_>>(), [7]);
        assert!(!h.active().next().unwrap().1.strong, "entered on enter_ticks");
    }

    #[test]
    fn flapping_scope_resolves_after_a_clean_flap_window() {
        let s = settings(1, 2, 10, 2);
        // Active at tick 1; the first resolution would be the second change: flapping.
        let pattern = format!("x{}", ".".repeat(12));
        let (got, activations, resolutions) = run(&pattern, &s);
        assert_eq!(got, "AAFFFFFFFF...", "held for a clean flap window of 10 ticks, then resolved");
        assert_eq!((activations, resolutions), (1, 1));
    }
}
