//! `replay --summary` and `replay --compare`: a replayed timeline summed up as incidents, and
//! two settings compared over the same history.
//!
//! - An **incident** is a stretch of ticks during which some scope is active (its
//!   `crossprobe_scope_down` series is 1) or the level is `partial` or `outage`. It begins at the
//!   first such tick and ends at the first tick with neither; one still open when the input ends
//!   ends there and is marked open.
//! - **Time to detect**: from the first failed probe of the current failure streak of the cells
//!   of the scopes that opened the incident (a cell's streak ends after
//!   `successes_to_recover` ok probes in a row, the rule that makes a cell healthy again), to
//!   the tick that opened it.
//! - **Pages** follow the `CrossprobeOutageConfirmed` rule (`crossprobe_outage_confirmed == 1`,
//!   no `for`): each entry into `outage` is a page. **Tickets** follow
//!   `CrossprobePartialOutage` (`crossprobe_scope_down == 1` for [`TICKET_FOR`]): each scope
//!   activation that lasts that long is a ticket. A one-tick outage counts as a page although a
//!   scrape could miss it: the summary errs towards the noisier reading.
//! - **Suspect time** adds up the ticks at level `suspect`.
//!
//! Times print as RFC 3339 when the records carry wall-clock time, else as `+` the replay
//! clock (`at_ms`); durations as `1m 5s`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::record::rfc3339_ms;
use super::replay::{run, setup, Change, Fed, Input, Observer, ReplayError};
use crate::config::CorrelatorSettings;
use crate::correlator::Level;
use crate::matrix::Matrix;

/// The `for` of the `CrossprobePartialOutage` alert (deploy/prometheus/crossprobe-rules.yml):
/// how long a scope must stay down to open a ticket.
pub const TICKET_FOR: Duration = Duration::from_secs(30);

/// One scope's part in an incident.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopeSpan {
    /// `az=b&tenant=acme`, `*` for everything.
    pub scope: String,
    /// The highest level while it was active.
    pub level: Level,
    pub from_ms: u64,
    /// `None` while still active when the input ended.
    pub to_ms: Option<u64>,
}

/// One incident (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub from_ms: u64,
    pub to_ms: Option<u64>,
    /// The highest level reached.
    pub level: Level,
    /// Scopes in order of activation; a scope active twice appears twice.
    pub scopes: Vec<ScopeSpan>,
    pub pages: u32,
    /// Time from the first failed probe to the opening tick, when a cell of the opening scopes
    /// had failed.
    pub detect_ms: Option<u64>,
}

impl Incident {
    /// Scope activations that lasted [`TICKET_FOR`] (up to `end_ms` for those still active).
    pub fn tickets(&self, end_ms: u64) -> u32 {
        let f = TICKET_FOR.as_millis() as u64;
        self.scopes.iter().filter(|s| s.to_ms.unwrap_or(end_ms).saturating_sub(s.from_ms) >= f).count() as u32
    }

    /// The distinct scopes, sorted.
    fn scope_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.scopes.iter().map(|s| s.scope.as_str()).collect();
        names.sort();
        names.dedup();
        names
    }

    fn overlaps(&self, other: &Incident, end_ms: u64) -> bool {
        self.from_ms < other.to_ms.unwrap_or(end_ms).max(other.from_ms + 1)
            && other.from_ms < self.to_ms.unwrap_or(end_ms).max(self.from_ms + 1)
    }
}

/// Collects incidents from a replay ([`Observer`]).
pub struct Summary {
    /// Cells of the matrix by their labels, to find the cells of a scope.
    cells: Vec<Vec<(String, String)>>,
    successes_to_recover: u32,
    /// Per cell: the first failure of its streak, and the ok probes in a row since the last.
    streaks: Vec<(Option<u64>, u32)>,
    pub incidents: Vec<Incident>,
    /// Active scopes of the open incident: scope -> index in its `scopes`.
    active: BTreeMap<String, usize>,
    level: Level,
    /// Since when the level has been `suspect`.
    suspect_since: Option<u64>,
    pub suspect_ms: u64,
    /// The last tick.
    pub end_ms: u64,
}

impl Summary {
    /// Replays `input` (with a configuration's matrix and settings, or the input's cells and the
    /// defaults, as [`super::replay::setup`]) and sums it up.
    pub fn replay(
        input: &Input,
        config: Option<(&Matrix, &CorrelatorSettings)>,
    ) -> Result<(Summary, Fed), ReplayError> {
        let (matrix, settings) = setup(input, config)?;
        let mut summary = Summary::new(&matrix, &settings);
        let fed = run(input, &matrix, &settings, config.is_some(), &mut summary)?;
        Ok((summary, fed))
    }

    pub fn new(matrix: &Matrix, settings: &CorrelatorSettings) -> Self {
        let cells = matrix
            .cells()
            .iter()
            .map(|c| matrix.labels(c).map(|(d, v)| (d.to_owned(), v.to_owned())).collect())
            .collect();
        Summary {
            cells,
            successes_to_recover: settings.successes_to_recover.max(1),
            streaks: vec![(None, 0); matrix.len()],
            incidents: Vec::new(),
            active: BTreeMap::new(),
            level: Level::Ok,
            suspect_since: None,
            suspect_ms: 0,
            end_ms: 0,
        }
    }

    /// The first failure of the current streak among the cells in `scope`.
    fn first_failure(&self, scope: &[(String, String)]) -> Option<u64> {
        self.cells
            .iter()
            .zip(&self.streaks)
            .filter(|(cell, _)| scope.iter().all(|kv| cell.contains(kv)))
            .filter_map(|(_, (first, _))| *first)
            .min()
    }
}

impl Observer for Summary {
    fn outcome(&mut self, at_ms: u64, cell: usize, failed: bool) {
        let (first, oks) = &mut self.streaks[cell];
        if failed {
            first.get_or_insert(at_ms);
            *oks = 0;
        } else {
            *oks += 1;
            if *oks >= self.successes_to_recover {
                *first = None;
            }
        }
    }

    /// Closes the suspect time still running when the input ended.
    fn end(&mut self, at_ms: u64) {
        self.end_ms = self.end_ms.max(at_ms);
        if let Some(since) = self.suspect_since.take() {
            self.suspect_ms += self.end_ms - since;
        }
    }

    fn change(&mut self, c: &Change) -> Result<(), ReplayError> {
        let at = c.at_ms;
        self.end_ms = self.end_ms.max(at);
        match (self.level == Level::Suspect, c.verdict == Level::Suspect) {
            (false, true) => self.suspect_since = Some(at),
            (true, false) => self.suspect_ms += at - self.suspect_since.take().unwrap_or(at),
            _ => {}
        }
        let was = self.level;
        self.level = c.verdict;
        let now: BTreeMap<String, &crate::correlator::Labels> =
            c.scopes.iter().map(|l| (l.describe(), *l)).collect();
        let in_incident = !now.is_empty() || c.verdict >= Level::Partial;
        let open = self.incidents.last().is_some_and(|i| i.to_ms.is_none());
        if !in_incident {
            if open {
                let inc = self.incidents.last_mut().expect("open incident");
                inc.to_ms = Some(at);
                for s in inc.scopes.iter_mut().filter(|s| s.to_ms.is_none()) {
                    s.to_ms = Some(at);
                }
                self.active.clear();
            }
            return Ok(());
        }
        if !open {
            let detect =
                now.values().filter_map(|l| self.first_failure(&l.0)).min().map(|f| at.saturating_sub(f));
            self.incidents.push(Incident {
                from_ms: at,
                to_ms: None,
                level: c.verdict,
                scopes: Vec::new(),
                pages: 0,
                detect_ms: detect,
            });
        }
        let inc = self.incidents.last_mut().expect("open incident");
        inc.level = inc.level.max(c.verdict);
        if c.verdict == Level::Outage && was != Level::Outage {
            inc.pages += 1;
        }
        self.active.retain(|name, i| {
            let keep = now.contains_key(name);
            if !keep {
                inc.scopes[*i].to_ms = Some(at);
            }
            keep
        });
        for name in now.keys() {
            let i = *self.active.entry(name.clone()).or_insert_with(|| {
                inc.scopes.push(ScopeSpan {
                    scope: name.clone(),
                    level: c.verdict,
                    from_ms: at,
                    to_ms: None,
                });
                inc.scopes.len() - 1
            });
            inc.scopes[i].level = inc.scopes[i].level.max(c.verdict);
        }
        Ok(())
    }
}

/// How times print: wall-clock or offsets on the replay clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub wall: bool,
}

impl Clock {
    fn at(self, ms: u64) -> String {
        if self.wall {
            rfc3339_ms(ms)
        } else {
            format!("+{}", dur(ms))
        }
    }

    fn span(self, from: u64, to: Option<u64>, end: u64) -> String {
        match to {
            Some(to) => format!("{} to {} ({})", self.at(from), self.at(to), dur(to - from)),
            None => format!("{} to the end, still open ({}+)", self.at(from), dur(end.saturating_sub(from))),
        }
    }
}

fn dur(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn detect(ms: Option<u64>) -> String {
    ms.map_or("unknown (no failed probe in its scopes)".into(), dur)
}

/// The `--summary` text: one block per incident, then the totals.
pub fn render(s: &Summary, clock: Clock) -> String {
    let mut out = String::new();
    for (n, i) in s.incidents.iter().enumerate() {
        let _ = writeln!(
            out,
            "incident {}: {}, {}, paged: {}, tickets: {}, time to detect: {}",
            n + 1,
            clock.span(i.from_ms, i.to_ms, s.end_ms),
            i.level.as_str(),
            yes(i.pages > 0),
            i.tickets(s.end_ms),
            detect(i.detect_ms)
        );
        for sc in &i.scopes {
            let _ = writeln!(
                out,
                "  {} {}: {}",
                sc.level.as_str(),
                sc.scope,
                clock.span(sc.from_ms, sc.to_ms, s.end_ms)
            );
        }
    }
    let (pages, tickets) = totals(s);
    let _ = writeln!(
        out,
        "totals: {} incidents, {pages} pages, {tickets} tickets, suspect for {}",
        s.incidents.len(),
        dur(s.suspect_ms)
    );
    out
}

fn totals(s: &Summary) -> (u32, u32) {
    (s.incidents.iter().map(|i| i.pages).sum(), s.incidents.iter().map(|i| i.tickets(s.end_ms)).sum())
}

fn delta(a: u32, b: u32) -> String {
    match b as i64 - a as i64 {
        0 => format!("{a} -> {b}"),
        d => format!("{a} -> {b} ({d:+})"),
    }
}

/// The `--compare` text: incidents of `a` and `b` matched by overlapping time, what changed in
/// each, the incidents only one of them has, then the totals.
pub fn compare(a: &Summary, b: &Summary, names: (&str, &str), clock: Clock) -> String {
    let end = a.end_ms.max(b.end_ms);
    let mut out = String::new();
    let mut b_matched = vec![false; b.incidents.len()];
    for ia in &a.incidents {
        let matched: Vec<usize> =
            (0..b.incidents.len()).filter(|&j| ia.overlaps(&b.incidents[j], end)).collect();
        let _ = write!(out, "incident {}: ", clock.span(ia.from_ms, ia.to_ms, end));
        if matched.is_empty() {
            let _ = writeln!(
                out,
                "only in {}: {} {}, pages {}, tickets {}",
                names.0,
                ia.level.as_str(),
                ia.scope_names().join(" + "),
                ia.pages,
                ia.tickets(end)
            );
            continue;
        }
        for &j in &matched {
            b_matched[j] = true;
        }
        let ib: Vec<&Incident> = matched.iter().map(|&j| &b.incidents[j]).collect();
        let mut b_scopes: Vec<&str> = ib.iter().flat_map(|i| i.scope_names()).collect();
        b_scopes.sort();
        b_scopes.dedup();
        let a_scopes = ia.scope_names();
        let scopes = if a_scopes == b_scopes {
            format!("scopes {} (same)", a_scopes.join(" + "))
        } else {
            format!("scopes {} -> {}", a_scopes.join(" + "), b_scopes.join(" + "))
        };
        let b_level = ib.iter().map(|i| i.level).max().unwrap_or(Level::Ok);
        let detect = match (ia.detect_ms, ib[0].detect_ms) {
            (Some(x), Some(y)) if y < x => format!("{} -> {} ({} faster)", dur(x), dur(y), dur(x - y)),
            (Some(x), Some(y)) if y > x => format!("{} -> {} ({} slower)", dur(x), dur(y), dur(y - x)),
            (x, y) => format!("{} -> {}", x.map_or("unknown".into(), dur), y.map_or("unknown".into(), dur)),
        };
        let _ = writeln!(
            out,
            "{}; level {} -> {}; pages {}; tickets {}; time to detect {}",
            scopes,
            ia.level.as_str(),
            b_level.as_str(),
            delta(ia.pages, ib.iter().map(|i| i.pages).sum()),
            delta(ia.tickets(end), ib.iter().map(|i| i.tickets(end)).sum()),
            detect
        );
    }
    for (ib, _) in b.incidents.iter().zip(&b_matched).filter(|(_, m)| !**m) {
        let _ = writeln!(
            out,
            "incident {}: only in {}: {} {}, pages {}, tickets {}",
            clock.span(ib.from_ms, ib.to_ms, end),
            names.1,
            ib.level.as_str(),
            ib.scope_names().join(" + "),
            ib.pages,
            ib.tickets(end)
        );
    }
    let ((pa, ta), (pb, tb)) = (totals(a), totals(b));
    let _ = writeln!(
        out,
        "totals: incidents {}; pages {}; tickets {}; suspect for {} -> {}",
        delta(a.incidents.len() as u32, b.incidents.len() as u32),
        delta(pa, pb),
        delta(ta, tb),
        dur(a.suspect_ms),
        dur(b.suspect_ms)
    );
    out
}
