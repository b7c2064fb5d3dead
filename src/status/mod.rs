//! The status page at `/` and the document it polls, `/api/status`.
//!
//! The page is one self-contained HTML file (inline CSS and script, no external assets, so it
//! works offline and behind any proxy) that fetches `/api/status` every two seconds and rebuilds
//! itself from it: the matrix can change between two polls. The document is the `/verdict`
//! document plus what only the page needs, computed on request: round-trip quantiles per zone
//! and protocol from the metrics' HDR windows, and the last verdict changes.
//!
//! - [`words`]: verdicts in plain words (also served on `/verdict` as `explanation`).
//! - [`history`]: the last verdict changes, fed by the report task.

pub mod history;
pub mod words;

use serde_json::{json, Map, Value};

pub use history::{Change, VerdictHistory};

use crate::server::Shared;

/// The page, served as is.
pub const PAGE: &str = include_str!("page.html");

/// Dimensions the page's latency table groups by.
pub const LATENCY_BY: [&str; 2] = ["az", "protocol"];
/// Quantiles of the latency table, named `p50_seconds` and `p99_seconds`.
const LATENCY_QUANTILES: [(f64, &str); 2] = [(0.5, "p50_seconds"), (0.99, "p99_seconds")];

/// The `/verdict` document with `latency`, `changes` (newest first) and `now` added.
pub fn document(shared: &Shared) -> Value {
    let verdict = shared.verdict.read().expect("verdict lock").clone();
    let mut doc = match serde_json::from_str::<Value>(&verdict) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let quantiles: Vec<f64> = LATENCY_QUANTILES.iter().map(|(q, _)| *q).collect();
    let latency: Vec<Value> = shared
        .metrics
        .roundtrip_window_by(&LATENCY_BY, &quantiles)
        .into_iter()
        .map(|g| {
            let mut row = Map::new();
            row.insert("labels".into(), g.labels.into_iter().map(|(d, v)| (d, Value::String(v))).collect());
            row.insert("ok_probes".into(), g.samples.into());
            for (i, (_, name)) in LATENCY_QUANTILES.iter().enumerate() {
                row.insert((*name).into(), g.seconds.get(i).copied().map_or(Value::Null, Value::from));
            }
            Value::Object(row)
        })
        .collect();
    let changes: Vec<Value> = {
        let history = shared.history.lock().expect("history lock");
        history.newest_first().map(|c| json!(c)).collect()
    };
    doc.insert("latency".into(), latency.into());
    doc.insert("changes".into(), changes.into());
    doc.insert(
        "now".into(),
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().into(),
    );
    Value::Object(doc)
}
