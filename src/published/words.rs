//! Verdicts in plain words, for people: "Partial outage: zone b (4 of 4 cells failing)".
//!
//! Everything said here is read off the verdict's own evidence (level, scopes, counts, quorum);
//! nothing is judged again, so the words cannot disagree with `/verdict` or the metrics. Kept in
//! Rust rather than in the page so it is tested, and so `/verdict` readers get it too.

use crate::correlator::{ActiveScope, Labels, Level, Verdict};

/// The headline of a level, as the page and the explanation start.
pub fn headline(level: Level) -> &'static str {
    match level {
        Level::Ok => "All healthy",
        Level::Suspect => "Suspect",
        Level::Partial => "Partial outage",
        Level::Outage => "Outage confirmed",
    }
}

/// A scope in words: `zone b`, `zone b, tenant acme`, `protocol kafka`, `every cell` for the
/// global scope. Extra dimensions read `<name> <value>`.
pub fn scope(labels: &Labels) -> String {
    if labels.0.is_empty() {
        return "every cell".to_owned();
    }
    let parts: Vec<String> = labels
        .0
        .iter()
        .map(|(d, v)| match d.as_str() {
            "az" => format!("zone {v}"),
            other => format!("{other} {v}"),
        })
        .collect();
    parts.join(", ")
}

/// The whole verdict in one sentence. `unknown` is the number of cells without an outcome yet,
/// which the verdict itself does not count. Degraded scopes follow the failures: "All healthy:
/// none of 12 cells failing; degraded: zone b (round trips 21x their baseline)".
pub fn explain(v: &Verdict, unknown: usize) -> String {
    let failures = explain_failures(v, unknown);
    let degraded: Vec<String> = v
        .degraded
        .scopes
        .iter()
        .map(|s| match s.latency.factor {
            Some(f) => format!("{} (round trips {f:.0}x their baseline)", scope(&s.labels)),
            None => scope(&s.labels),
        })
        .collect();
    if degraded.is_empty() {
        return failures;
    }
    let widespread = if v.degraded.widespread { " (widespread)" } else { "" };
    format!("{failures}; degraded{widespread}: {}", join_and(&degraded))
}

fn explain_failures(v: &Verdict, unknown: usize) -> String {
    if v.tick == 0 {
        return "Starting: no verdict evaluated yet".to_owned();
    }
    if v.total_cells == 0 {
        return "Nothing to probe: the matrix has no cells".to_owned();
    }
    let headline = headline(v.level);
    match v.level {
        Level::Ok if unknown >= v.total_cells => {
            format!("Starting: none of {} cells has reported yet", v.total_cells)
        }
        Level::Ok if unknown > 0 => format!(
            "No failures so far: {unknown} of {} cells {} no outcome yet",
            v.total_cells,
            if unknown == 1 { "has" } else { "have" }
        ),
        Level::Ok => format!("{headline}: none of {} cells failing", v.total_cells),
        Level::Suspect => format!(
            "{headline}: {} of {} cells failing, in no confirmed pattern (not paged)",
            v.failing_cells, v.total_cells
        ),
        Level::Partial | Level::Outage => {
            let failing: Vec<String> =
                v.scopes.iter().filter(|s| s.evidence.failing_cells > 0).map(scope_with_counts).collect();
            let mut out = format!("{headline}: {}", join_and(&failing));
            if v.level == Level::Outage {
                let spans: Vec<String> =
                    v.quorum.iter().map(|q| count(q.corroborated, &dimension_noun(&q.dimension))).collect();
                if !spans.is_empty() {
                    out += &format!(", corroborated across {}", join_and(&spans));
                }
            }
            if v.unexplained_failing_cells > 0 {
                out += &format!("; plus {} elsewhere", count(v.unexplained_failing_cells, "failing cell"));
            }
            let recovering: Vec<String> = v
                .scopes
                .iter()
                .filter(|s| s.evidence.failing_cells == 0)
                .map(|s| scope(&s.evidence.labels))
                .collect();
            if !recovering.is_empty() {
                out += &format!("; recovering: {}", join_and(&recovering));
            }
            out
        }
    }
}

fn scope_with_counts(s: &ActiveScope) -> String {
    let e = &s.evidence;
    let flapping = if s.flapping { ", flapping" } else { "" };
    format!("{} ({} of {} cells failing{flapping})", scope(&e.labels), e.failing_cells, e.total_cells)
}

fn dimension_noun(d: &str) -> String {
    match d {
        "az" => "zone".to_owned(),
        other => other.to_owned(),
    }
}

/// `1 zone`, `2 zones`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `a`, `a and b`, `a, b and c`.
fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlator::evidence::Spans;
    use crate::correlator::{QuorumCheck, ScopeEvidence};

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    fn active(pairs: &[(&str, &str)], failing: u32, total: u32, flapping: bool) -> ActiveScope {
        ActiveScope {
            evidence: ScopeEvidence {
                labels: labels(pairs),
                failing_cells: failing,
                total_cells: total,
                failure_ratio_inside: None,
                failure_ratio_outside: None,
                share_of_failing: 0.0,
                spans: Spans::default(),
                values: Default::default(),
            },
            recovering_cells: 0,
            error: None,
            flapping,
            strong_evidence: false,
            ticks_active: 1,
            active_since: String::new(),
        }
    }

    fn verdict(level: Level, failing: usize, unexplained: usize, scopes: Vec<ActiveScope>) -> Verdict {
        Verdict {
            level,
            rule: String::new(),
            tick: 7,
            at: String::new(),
            starting: false,
            failing_cells: failing,
            recovering_cells: 0,
            total_cells: 12,
            unexplained_failing_cells: unexplained,
            quorum: Vec::new(),
            scopes,
            unexplained: Vec::new(),
            degraded: Default::default(),
        }
    }

    fn quorum(dimension: &str, corroborated: usize) -> QuorumCheck {
        QuorumCheck {
            dimension: dimension.to_owned(),
            spanned: corroborated,
            corroborated,
            required: 2,
            met: true,
        }
    }

    #[test]
    fn verdicts_read_as_sentences() {
        let mut outage = verdict(Level::Outage, 6, 0, vec![active(&[("protocol", "kafka")], 6, 6, false)]);
        outage.quorum = vec![quorum("az", 3), quorum("tenant", 2)];
        let mut starting = verdict(Level::Ok, 0, 0, vec![]);
        starting.tick = 0;
        let cases: Vec<(&str, Verdict, usize, &str)> = vec![
            ("before the first tick", starting, 12, "Starting: no verdict evaluated yet"),
            ("all healthy", verdict(Level::Ok, 0, 0, vec![]), 0, "All healthy: none of 12 cells failing"),
            (
                "no failure but cells still unknown",
                verdict(Level::Ok, 0, 0, vec![]),
                1,
                "No failures so far: 1 of 12 cells has no outcome yet",
            ),
            (
                "no cell reported yet",
                verdict(Level::Ok, 0, 0, vec![]),
                12,
                "Starting: none of 12 cells has reported yet",
            ),
            (
                "suspect",
                verdict(Level::Suspect, 2, 2, vec![]),
                0,
                "Suspect: 2 of 12 cells failing, in no confirmed pattern (not paged)",
            ),
            (
                "one zone down",
                verdict(Level::Partial, 4, 0, vec![active(&[("az", "b")], 4, 4, false)]),
                0,
                "Partial outage: zone b (4 of 4 cells failing)",
            ),
            (
                "two scopes, a stray cell, a flapping scope and one recovering",
                verdict(
                    Level::Partial,
                    6,
                    1,
                    vec![
                        active(&[("az", "b")], 4, 4, false),
                        active(&[("az", "a"), ("tenant", "acme")], 1, 2, true),
                        active(&[("az", "c")], 0, 4, false),
                    ],
                ),
                0,
                "Partial outage: zone b (4 of 4 cells failing) and zone a, tenant acme (1 of 2 cells \
                 failing, flapping); plus 1 failing cell elsewhere; recovering: zone c",
            ),
            (
                "outage with its quorum",
                outage,
                0,
                "Outage confirmed: protocol kafka (6 of 6 cells failing), corroborated across 3 zones \
                 and 2 tenants",
            ),
        ];
        for (name, v, unknown, want) in cases {
            assert_eq!(explain(&v, unknown), want, "{name}");
        }
    }

    #[test]
    fn degraded_scopes_follow_the_failures() {
        use crate::correlator::brownout::LatencyEvidence;
        use crate::correlator::DegradedScope;
        let mut v = verdict(Level::Ok, 0, 0, vec![]);
        let latency = LatencyEvidence {
            baseline_p50_ms: Some(4.0),
            baseline_p99_ms: Some(9.0),
            current_p50_ms: Some(84.0),
            current_p99_ms: Some(200.0),
            factor: Some(21.0),
        };
        v.degraded.scopes.push(DegradedScope {
            labels: labels(&[("az", "b")]),
            degraded_cells: 8,
            total_cells: 8,
            slow_ratio_inside: Some(0.9),
            slow_ratio_outside: Some(0.0),
            values: Default::default(),
            latency,
            flapping: false,
            strong_evidence: true,
            ticks_active: 1,
            active_since: String::new(),
        });
        assert_eq!(
            explain(&v, 0),
            "All healthy: none of 12 cells failing; degraded: zone b (round trips 21x their baseline)"
        );
        v.degraded.widespread = true;
        assert!(explain(&v, 0).contains("; degraded (widespread): zone b"));
    }

    #[test]
    fn scopes_name_every_fixed_dimension() {
        assert_eq!(scope(&labels(&[])), "every cell");
        assert_eq!(
            scope(&labels(&[("az", "b"), ("broker", "kafka-b"), ("network", "dmz")])),
            "zone b, broker kafka-b, network dmz"
        );
        assert_eq!(join_and(&["a".into(), "b".into(), "c".into()]), "a, b and c");
    }
}
