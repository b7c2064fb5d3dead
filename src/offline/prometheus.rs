//! History from Prometheus: per-cell outcomes rebuilt from the `crossprobe_probes_total`
//! counters, for `replay --prometheus URL --from T1 --to T2`.
//!
//! One range query (`/api/v1/query_range`, `step` = the scrape interval, in chunks of at most
//! [`MAX_POINTS`] steps) reads every cell's counter per outcome. Between two points a counter's
//! increase is the number of probes of that outcome in that step; a value below the previous
//! one is a counter reset (the daemon restarted) and counts from zero, as PromQL's `increase`
//! does. The first point of a series is its baseline.
//!
//! What scrape resolution loses: outcomes are known per step, not per probe. Within one step a
//! cell's probes are replayed evenly spaced across it, its failures spread evenly among its
//! successes, so sub-step timing and order are gone: a detection or a recovery can shift by up
//! to one step, and time to detect is measured to the step. Latency (`rtt_ms`) and error kinds
//! are not in the counters. A scrape Prometheus missed merges two steps into one.
//!
//! The cell of a series is its labels less `__name__`, `outcome`, and the target labels `job`,
//! `instance` and `vantage`; two series of the same cell and outcome (two daemons probing the
//! same cell) are an error: narrow them with `--selector`. Plain `http://` only: no TLS or
//! authentication in front of Prometheus.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crossprobe_probes::outcome::OUTCOME_NAMES;
use serde::Deserialize;

use super::record::{rfc3339_ms, OutcomeRecord};
use crate::correlator::Labels;

/// Most steps one range query asks for: Prometheus refuses more than 11,000 points per series.
pub const MAX_POINTS: u64 = 10_000;

/// Most bytes of one response: a day at 1 s steps of a few hundred series is well below it.
pub const MAX_RESPONSE_BYTES: u64 = 1 << 30;

/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Labels of a series that are not the cell's.
const NOT_CELL: [&str; 5] = ["__name__", "outcome", "job", "instance", "vantage"];

/// Where and what to read.
#[derive(Debug, Clone)]
pub struct Query {
    /// `http://host:port` with an optional path prefix (`http://host/prometheus`).
    pub url: String,
    /// A label matcher list for the series, such as `{job="crossprobe"}`; empty for all.
    pub selector: String,
    /// The resolution: set it to the scrape interval.
    pub step: Duration,
}

/// Why Prometheus could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    #[error("{0:?} is not a URL of the form http://host:port[/prefix] (https is not supported)")]
    Url(String),
    #[error("--prometheus needs both --from and --to")]
    Window,
    #[error("cannot reach Prometheus at {url}: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("Prometheus answered {status}: {body}")]
    Status { status: String, body: String },
    #[error("Prometheus's answer is not a range query result: {0}")]
    Answer(String),
    #[error("two series for the cell {cell} and outcome {outcome}: narrow them with --selector (e.g. {{instance=\"...\"}})")]
    Duplicate { cell: String, outcome: String },
    #[error("no crossprobe_probes_total series matched {selector} between --from and --to")]
    NoSeries { selector: String },
}

/// The answer of `/api/v1/query_range`.
#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    metric: BTreeMap<String, String>,
    values: Vec<(f64, String)>,
}

/// A cell's labels, in the series' (sorted) order.
type CellLabels = Vec<(String, String)>;

/// The outcome records that the counters between `from_ms` and `to_ms` imply, in time order.
pub fn records(q: &Query, from_ms: u64, to_ms: u64) -> Result<Vec<OutcomeRecord>, PrometheusError> {
    let step_ms = (q.step.as_millis() as u64).max(1);
    // Per (cell, outcome): the time and value of its last point.
    let mut last: HashMap<(CellLabels, String), (u64, f64)> = HashMap::new();
    // Per (step end, cell): the step's start, and the increase of each outcome.
    let mut steps: BTreeMap<(u64, CellLabels), (u64, BTreeMap<String, u64>)> = BTreeMap::new();
    let mut start = from_ms;
    while start <= to_ms {
        let end = to_ms.min(start + (MAX_POINTS - 1) * step_ms);
        let mut seen = std::collections::HashSet::new();
        for s in query_range(q, start, end, step_ms)? {
            let outcome = s.metric.get("outcome").cloned().unwrap_or_default();
            let cell: CellLabels = s
                .metric
                .iter()
                .filter(|(k, _)| !NOT_CELL.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let key = (cell, outcome);
            if !seen.insert(key.clone()) {
                return Err(PrometheusError::Duplicate { cell: Labels(key.0).describe(), outcome: key.1 });
            }
            for (t, v) in s.values {
                let (at, v) = ((t * 1000.0).round() as u64, v.parse::<f64>().unwrap_or(0.0));
                let prev = last.insert(key.clone(), (at, v));
                let Some((prev_at, prev_v)) = prev else { continue };
                if at <= prev_at {
                    continue;
                }
                let inc = if v >= prev_v { v - prev_v } else { v };
                let n = inc.round() as u64;
                if n > 0 {
                    let e = steps.entry((at, key.0.clone())).or_insert((prev_at, BTreeMap::new()));
                    e.0 = e.0.max(prev_at);
                    *e.1.entry(key.1.clone()).or_default() += n;
                }
            }
        }
        start = end + step_ms;
    }
    if last.is_empty() {
        return Err(PrometheusError::NoSeries { selector: q.selector.clone() });
    }
    let mut out = Vec::new();
    for ((at, cell), (since, counts)) in steps {
        out.extend(spread(since, at, &Labels(cell), &counts));
    }
    out.sort_by_key(|r| r.at_ms);
    Ok(out)
}

/// The probes of one cell in one step `(since, at]`, evenly spaced, failures spread evenly
/// among successes.
fn spread(since: u64, at: u64, cell: &Labels, counts: &BTreeMap<String, u64>) -> Vec<OutcomeRecord> {
    let ok = counts.get("ok").copied().unwrap_or(0);
    let mut failures: Vec<&str> = Vec::new();
    for name in OUTCOME_NAMES.iter().filter(|n| **n != "ok") {
        for _ in 0..counts.get(*name).copied().unwrap_or(0) {
            failures.push(name);
        }
    }
    let n = ok + failures.len() as u64;
    let f = failures.len() as u64;
    let mut next_failure = failures.into_iter();
    (0..n)
        .map(|k| {
            let at_ms = since + (at - since) * (k + 1) / (n + 1);
            let failed = (k + 1) * f / n > k * f / n;
            let outcome = if failed { next_failure.next().unwrap_or("lost") } else { "ok" };
            OutcomeRecord {
                time: Some(rfc3339_ms(at_ms)),
                at_ms,
                cell: cell.clone(),
                outcome: outcome.to_owned(),
                rtt_ms: None,
                kind: None,
            }
        })
        .collect()
}

/// The series of one range query.
fn query_range(q: &Query, from_ms: u64, to_ms: u64, step_ms: u64) -> Result<Vec<Series>, PrometheusError> {
    let promql = format!("crossprobe_probes_total{}", q.selector);
    let path = format!(
        "/api/v1/query_range?query={}&start={}&end={}&step={}",
        crossprobe_probes::percent_encode(&promql),
        secs(from_ms),
        secs(to_ms),
        secs(step_ms)
    );
    let (status, body) = get(&q.url, &path)?;
    let answer: Answer = serde_json::from_str(&body).map_err(|e| {
        if status.starts_with("200") {
            PrometheusError::Answer(format!("{e}"))
        } else {
            PrometheusError::Status { status: status.clone(), body: crate::config::escaped(&body) }
        }
    })?;
    if answer.status != "success" {
        return Err(PrometheusError::Status {
            status,
            body: crate::config::escaped(&answer.error.unwrap_or_default()),
        });
    }
    Ok(answer.data.map(|d| d.result).unwrap_or_default())
}

fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// One HTTP/1.0 GET (the server closes the connection after the body, and sends no chunked
/// encoding): the status line's code and reason, and the body.
fn get(url: &str, path: &str) -> Result<(String, String), PrometheusError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| PrometheusError::Url(url.to_owned()))?;
    let (host, prefix) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
    if host.is_empty() {
        return Err(PrometheusError::Url(url.to_owned()));
    }
    let connect = |source| PrometheusError::Connect { url: url.to_owned(), source };
    let with_port = if host.contains(':') { host.to_owned() } else { format!("{host}:80") };
    let addr = with_port
        .to_socket_addrs()
        .map_err(connect)?
        .next()
        .ok_or_else(|| connect(std::io::Error::other("no address")))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(connect)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT)).map_err(connect)?;
    let prefix = prefix.trim_end_matches('/');
    let target = if prefix.is_empty() { path.to_owned() } else { format!("/{prefix}{path}") };
    write!(stream, "GET {target} HTTP/1.0\r\nHost: {host}\r\nAccept: application/json\r\n\r\n")
        .map_err(connect)?;
    let mut raw = Vec::new();
    stream.take(MAX_RESPONSE_BYTES).read_to_end(&mut raw).map_err(connect)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().and_then(|l| l.split_once(' ')).map_or("", |(_, s)| s).to_owned();
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_spreads_its_failures_among_its_successes() {
        let cell = Labels(vec![("az".into(), "b".into())]);
        let counts = BTreeMap::from([("ok".to_owned(), 2), ("lost".to_owned(), 2)]);
        let r = spread(1000, 6000, &cell, &counts);
        let got: Vec<(u64, &str)> = r.iter().map(|r| (r.at_ms, r.outcome.as_str())).collect();
        assert_eq!(got, [(2000, "ok"), (3000, "lost"), (4000, "ok"), (5000, "lost")]);
        let all_failed = spread(0, 2000, &cell, &BTreeMap::from([("connect_failed".to_owned(), 1)]));
        assert_eq!(all_failed[0].outcome, "connect_failed");
        assert_eq!(all_failed[0].at_ms, 1000);
    }

    #[test]
    fn urls_other_than_plain_http_are_refused() {
        for url in ["https://p:9090", "p:9090", "http://"] {
            assert!(matches!(get(url, "/"), Err(PrometheusError::Url(_))), "{url}");
        }
    }
}
