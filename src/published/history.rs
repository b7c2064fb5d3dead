//! The last verdict changes, for the status page: a small ring the report task feeds once per
//! evaluation, newest first.
//!
//! A change is a new level or a new set of explaining scopes; figures that move within one
//! explanation (a ratio, a count of failing cells) are not changes, so a steady fault takes one
//! entry, not one per tick. The ring knows nothing of the matrix: cells added or removed at run
//! time only show through the verdicts themselves.

use std::collections::VecDeque;
use std::time::SystemTime;

use serde::Serialize;

use crate::correlator::{Labels, Level, Verdict};

/// Changes kept by default.
pub const KEEP: usize = 20;

/// One verdict change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// Wall-clock time of the evaluation, RFC 3339 in UTC to the second.
    pub at: String,
    /// The evaluation tick, as in the verdict.
    pub tick: u64,
    pub level: Level,
    /// Fixed labels of each explaining scope, in verdict order.
    pub scopes: Vec<Labels>,
    /// The verdict in plain words, as `/verdict` said it at the time.
    pub explanation: String,
}

/// The last changes, bounded.
#[derive(Debug, Clone)]
pub struct VerdictHistory {
    /// Newest first.
    changes: VecDeque<Change>,
    keep: usize,
}

impl Default for VerdictHistory {
    fn default() -> Self {
        VerdictHistory::new(KEEP)
    }
}

impl VerdictHistory {
    /// A ring of at most `keep` changes (at least one).
    pub fn new(keep: usize) -> Self {
        let keep = keep.max(1);
        VerdictHistory { changes: VecDeque::with_capacity(keep), keep }
    }

    /// Takes one evaluated verdict; records it when its level or scopes differ from the newest
    /// change, or when there is none yet. The placeholder before the first tick is skipped.
    /// Returns whether it recorded.
    pub fn observe(&mut self, at: SystemTime, verdict: &Verdict, explanation: &str) -> bool {
        if verdict.tick == 0 {
            return false;
        }
        let scopes = verdict.scope_labels();
        let same = self.changes.front().is_some_and(|last| {
            last.level == verdict.level
                && last.scopes.len() == scopes.len()
                && last.scopes.iter().eq(scopes.iter().copied())
        });
        if same {
            return false;
        }
        if self.changes.len() == self.keep {
            self.changes.pop_back();
        }
        self.changes.push_front(Change {
            at: humantime::format_rfc3339_seconds(at).to_string(),
            tick: verdict.tick,
            level: verdict.level,
            scopes: scopes.into_iter().cloned().collect(),
            explanation: explanation.to_owned(),
        });
        true
    }

    /// The changes kept, newest first.
    pub fn newest_first(&self) -> impl ExactSizeIterator<Item = &Change> {
        self.changes.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::correlator::evidence::Spans;
    use crate::correlator::{ActiveScope, ScopeEvidence};

    fn verdict(tick: u64, level: Level, zones: &[&str]) -> Verdict {
        let scopes = zones
            .iter()
            .map(|z| ActiveScope {
                evidence: ScopeEvidence {
                    labels: Labels(vec![("az".to_owned(), (*z).to_owned())]),
                    failing_cells: 4,
                    total_cells: 4,
                    failure_ratio_inside: None,
                    failure_ratio_outside: None,
                    share_of_failing: 1.0,
                    spans: Spans::default(),
                    values: Default::default(),
                },
                recovering_cells: 0,
                error: None,
                flapping: false,
                strong_evidence: false,
                ticks_active: 1,
                active_since: String::new(),
            })
            .collect();
        Verdict {
            level,
            rule: String::new(),
            tick,
            at: String::new(),
            starting: false,
            failing_cells: 4 * zones.len(),
            recovering_cells: 0,
            total_cells: 12,
            unexplained_failing_cells: 0,
            quorum: Vec::new(),
            scopes,
            unexplained: Vec::new(),
            degraded: Default::default(),
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_000_000 + secs)
    }

    #[test]
    fn records_changes_of_level_or_scopes_only_newest_first() {
        let mut h = VerdictHistory::new(KEEP);
        let steps: &[(u64, Level, &[&str], bool)] = &[
            (0, Level::Ok, &[], false),
            (1, Level::Ok, &[], true),
            (2, Level::Ok, &[], false),
            (3, Level::Suspect, &[], true),
            (4, Level::Partial, &["b"], true),
            (5, Level::Partial, &["b"], false),
            (6, Level::Partial, &["b", "c"], true),
            (7, Level::Partial, &["c", "b"], true),
            (8, Level::Ok, &[], true),
        ];
        for &(tick, level, zones, recorded) in steps {
            assert_eq!(h.observe(at(tick), &verdict(tick, level, zones), "words"), recorded, "tick {tick}");
        }
        let ticks: Vec<u64> = h.newest_first().map(|c| c.tick).collect();
        assert_eq!(ticks, [8, 7, 6, 4, 3, 1]);
        let newest = h.newest_first().next().unwrap();
        assert_eq!(
            (newest.at.as_str(), newest.level, newest.explanation.as_str()),
            ("2026-11-18T11:06:48Z", Level::Ok, "words")
        );
        let b = h.newest_first().find(|c| c.tick == 4).unwrap();
        assert_eq!(serde_json::to_value(b).unwrap()["scopes"], serde_json::json!([{"az": "b"}]));
    }

    #[test]
    fn the_ring_is_bounded_and_drops_the_oldest() {
        let mut h = VerdictHistory::new(3);
        for tick in 1..=10 {
            let level = if tick % 2 == 0 { Level::Ok } else { Level::Suspect };
            assert!(h.observe(at(tick), &verdict(tick, level, &[]), ""));
        }
        let ticks: Vec<u64> = h.newest_first().map(|c| c.tick).collect();
        assert_eq!(ticks, [10, 9, 8]);
        assert_eq!(VerdictHistory::default().keep, KEEP);
        assert_eq!(VerdictHistory::new(0).keep, 1);
    }
}
