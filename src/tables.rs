//! Plain-text tables the CLI prints: the expanded matrix for `check`.

use std::fmt::Write as _;
use std::time::Duration;

use crossprobe_probes::tracker::ProbeResult;

use crate::config::ValidatedConfig;

/// Values of one dimension the summary line names; beyond, it counts them and names those
/// with the most cells, so a matrix of thousands of tenants still sums up in one line.
const SUMMARY_VALUES: usize = 5;

/// One row per cell (id, labels, target, interval, timeout), then a summary line with the
/// number of cells per dimension value (the [`SUMMARY_VALUES`] largest, and how many values).
pub fn matrix_table(config: &ValidatedConfig) -> String {
    let m = &config.matrix;
    let header = cell_header(config, &["target", "interval", "timeout"]);
    let rows: Vec<Vec<String>> = m
        .cells()
        .iter()
        .map(|c| {
            let target = &config.targets[c.target];
            let mut row = cell_row(c);
            row.push(target.name.clone());
            row.push(humantime::format_duration(target.probe.interval).to_string());
            row.push(humantime::format_duration(target.probe.timeout).to_string());
            row
        })
        .collect();
    let mut out = table(&header, &rows);
    let per_dimension: Vec<String> = m
        .dimensions()
        .iter()
        .enumerate()
        .map(|(d, name)| {
            let mut values: Vec<(&str, usize)> = m.values_of(d).into_iter().collect();
            let count = values.len();
            values.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
            let shown: Vec<String> =
                values.iter().take(SUMMARY_VALUES).map(|(v, n)| format!("{v}={n}")).collect();
            match count.saturating_sub(SUMMARY_VALUES) {
                0 => format!("{name}: {}", shown.join(" ")),
                more => format!("{name}: {count} values, most cells {} and {more} more", shown.join(" ")),
            }
        })
        .collect();
    let _ = writeln!(
        out,
        "{} cell{}; {}",
        m.len(),
        if m.len() == 1 { "" } else { "s" },
        per_dimension.join("; ")
    );
    out
}

/// One line per discovered target (`check`: where its brokers are read from, its cells being
/// those of the bootstrap until then) and per broker discovery made a target of (`once`).
pub fn discovered(config: &ValidatedConfig) -> String {
    let mut out = String::new();
    for t in &config.targets {
        if let Some(d) = &t.discovery {
            let _ = writeln!(
                out,
                "target \"{}\" is discovered: its brokers are read from {} every {}; until an answer its cells probe the bootstrap",
                t.name,
                t.addresses.join(","),
                humantime::format_duration(d.every)
            );
        }
        if let Some(at) = &t.discovered_at {
            let _ = writeln!(
                out,
                "target \"{}\" was discovered: broker {} at {at}, az {}",
                t.name, t.broker, t.az
            );
        }
    }
    out
}

/// One row per cell with the outcome of its probe and its latencies in milliseconds.
pub fn once_table(config: &ValidatedConfig, results: &[Option<ProbeResult>]) -> String {
    let m = &config.matrix;
    let header = cell_header(config, &["outcome", "publish_ms", "roundtrip_ms"]);
    let millis =
        |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.2}", d.as_secs_f64() * 1000.0));
    let rows: Vec<Vec<String>> = m
        .cells()
        .iter()
        .zip(results)
        .map(|(c, r)| {
            let mut row = cell_row(c);
            match r {
                Some(r) => row.extend([r.outcome.to_string(), millis(r.publish), millis(r.roundtrip)]),
                None => row.extend(["no_result".to_owned(), "-".to_owned(), "-".to_owned()]),
            }
            row
        })
        .collect();
    let ok = results.iter().filter(|r| r.is_some_and(|r| !r.outcome.is_failure())).count();
    let mut out = table(&header, &rows);
    let _ = writeln!(out, "{ok} of {} cells ok", results.len());
    out
}

/// `cell`, the dimensions, then `extra` column names.
fn cell_header(config: &ValidatedConfig, extra: &[&str]) -> Vec<String> {
    let mut header = vec!["cell".to_owned()];
    header.extend(config.matrix.dimensions().iter().cloned());
    header.extend(extra.iter().map(|s| s.to_string()));
    header
}

/// A cell's id and label values, the first columns of every per-cell table.
fn cell_row(cell: &crate::matrix::Cell) -> Vec<String> {
    let mut row = vec![cell.id.to_string()];
    row.extend(cell.labels.iter().cloned());
    row
}

/// Left-aligned columns separated by two spaces.
pub fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        let line: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_the_widest_cell() {
        let t = table(
            &["az".into(), "tenant".into()],
            &[vec!["a".into(), "acme".into()], vec!["bb".into(), "x".into()]],
        );
        assert_eq!(t, "az  tenant\na   acme\nbb  x\n");
    }
}
