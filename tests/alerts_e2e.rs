//! The alert rules against a real Prometheus scraping the daemon, which probes the local
//! zones: a fault on zone b makes `CrossprobePartialOutage` fire with az="b" (its summary naming
//! only that label, its description the dominant failure queried from the daemon's counters),
//! a fault on every zone makes `CrossprobeOutageConfirmed` fire, and healing clears both. A
//! brownout of zone b (`fault b slow 200ms`) makes `/verdict` name `az=b` degraded and
//! `CrossprobeDegraded` fire, and healing clears both.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crossprobe::daemon::{Daemon, RunOptions};
use serde_json::Value;
use support::prometheus::Prometheus;
use support::{brokers, eventually, exclusive, http_get, local_matrix, parse, stop_daemon, FAST};

fn start_prometheus(target: SocketAddr) -> Prometheus {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/crossprobe-rules.yml");
    Prometheus::start(&format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: crossprobe\n    static_configs:\n      - targets: [\"{target}\"]\n",
        rules.display()
    ))
}

/// The label sets of firing alerts named `name`.
fn firing(p: &Prometheus, name: &str) -> Result<Vec<Value>, String> {
    let alerts = p.query(&format!("ALERTS{{alertname=\"{name}\",alertstate=\"firing\"}}"))?;
    Ok(alerts.into_iter().map(|r| r["metric"].clone()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_and_confirmed_outage_alerts_fire_in_prometheus_and_clear_after_heal() {
    let _x = exclusive().await;
    let b = brokers();
    let (toml, _) = local_matrix(b, &FAST);
    let d = Daemon::start(parse(&toml), RunOptions::default()).await.unwrap();
    let prom = start_prometheus(d.addr());
    eventually("Prometheus scrapes the daemon", Duration::from_secs(60), || {
        let up = prom.value("up{job=\"crossprobe\"}")?;
        (up == "1").then_some(()).ok_or(up)
    })
    .await;

    let Some(zone_b) = b.fault("b", "pause", None) else { return };
    let alerts = eventually("CrossprobePartialOutage firing with az=b", Duration::from_secs(120), || {
        let a = firing(&prom, "CrossprobePartialOutage")?;
        if a.iter().any(|m| m["az"] == "b" && m["tenant"] == "*" && m["severity"] == "ticket") {
            Ok(a)
        } else {
            Err(format!("{a:?}"))
        }
    })
    .await;
    assert!(
        firing(&prom, "CrossprobeOutageConfirmed").unwrap().is_empty(),
        "one zone is not an outage: {alerts:?}"
    );
    // What the on-call reads: the scope's fixed labels only, the dominant failure of its cells
    // as Prometheus queried it from the daemon's counters, and the runbook.
    let alert = prom
        .alerts()
        .unwrap()
        .into_iter()
        .find(|a| a["labels"]["alertname"] == "CrossprobePartialOutage" && a["labels"]["az"] == "b")
        .expect("the firing alert is listed");
    let notes = &alert["annotations"];
    assert_eq!(notes["summary"], "Broker scope down: az=b", "{alert}");
    let description = notes["description"].as_str().unwrap_or_default();
    assert!(
        description.contains("Dominant failure over 5 minutes: ") && !description.contains("none counted"),
        "the description names the failure of zone b's cells: {description}"
    );
    assert_eq!(
        notes["runbook_url"],
        "https://github.com/crossprobe/crossprobe/blob/main/docs/runbooks/CrossprobePartialOutage.md"
    );

    let zone_a = b.fault("a", "pause", None).unwrap();
    let zone_c = b.fault("c", "pause", None).unwrap();
    eventually("CrossprobeOutageConfirmed firing", Duration::from_secs(90), || {
        let a = firing(&prom, "CrossprobeOutageConfirmed")?;
        if a.iter().any(|m| m["severity"] == "page") {
            Ok(())
        } else {
            Err(format!("{a:?}"))
        }
    })
    .await;

    for fault in [zone_a, zone_b, zone_c] {
        fault.heal();
    }
    eventually("both alerts cleared after healing", Duration::from_secs(150), || {
        let partial = firing(&prom, "CrossprobePartialOutage")?;
        let outage = firing(&prom, "CrossprobeOutageConfirmed")?;
        if partial.is_empty() && outage.is_empty() {
            Ok(())
        } else {
            Err(format!("partial {partial:?}, outage {outage:?}"))
        }
    })
    .await;
    stop_daemon(d).await;
}

/// The brownout half of `/verdict`, and the cells' latency (for failure messages).
fn degraded(addr: SocketAddr) -> Result<Value, String> {
    let (status, body) = http_get(addr, "/verdict").map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
    let mut g = v["evidence"]["degraded"].clone();
    g["level"] = v["verdict"].clone();
    g["cells"] = v["cells"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            serde_json::json!([c["id"], c["state"], c["latency"], c["baseline_p50_ms"], c["current_p50_ms"]])
        })
        .collect();
    Ok(g)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_zone_is_named_degraded_its_alert_fires_and_healing_clears_both() {
    let _x = exclusive().await;
    let b = brokers();
    let (mut toml, _) = local_matrix(b, &FAST);
    // 40 probes at 500 ms: every baseline is learned in 20 s instead of 5 minutes.
    toml += "[correlator.brownout]\nlearning_probes = 40\n";
    let d = Daemon::start(parse(&toml), RunOptions::default()).await.unwrap();
    let prom = start_prometheus(d.addr());
    eventually("every cell learned its baseline", Duration::from_secs(90), || {
        let g = degraded(d.addr())?;
        let cells = g["cells"].as_array().map_or(0, Vec::len);
        let normal = g["cells"].as_array().into_iter().flatten().filter(|c| c[2] == "normal").count();
        (cells == 12 && normal == cells && g["learning_cells"] == 0).then_some(()).ok_or(g.to_string())
    })
    .await;

    let Some(zone_b) = b.fault("b", "slow", Some("200ms")) else { return };
    let slowed = std::time::Instant::now();
    let scope = eventually("/verdict names az=b degraded", Duration::from_secs(30), || {
        let g = degraded(d.addr())?;
        let named: Vec<&Value> = g["scopes"].as_array().into_iter().flatten().map(|s| &s["labels"]).collect();
        if named == [&serde_json::json!({"az": "b"})] {
            Ok(g["scopes"][0].clone())
        } else {
            Err(g.to_string())
        }
    })
    .await;
    eprintln!("az=b degraded {:?} after the fault: {scope}", slowed.elapsed());

    eventually("CrossprobeDegraded firing with az=b", Duration::from_secs(90), || {
        let a = firing(&prom, "CrossprobeDegraded")?;
        if a.iter().any(|m| m["az"] == "b" && m["tenant"] == "*" && m["severity"] == "ticket") {
            Ok(())
        } else {
            Err(format!("{a:?}"))
        }
    })
    .await;
    eprintln!("CrossprobeDegraded firing {:?} after the fault", slowed.elapsed());
    // By now the cells' last probes are all from the brownout: the evidence shows it.
    let g = degraded(d.addr()).unwrap();
    let scope = &g["scopes"][0];
    let (base, now) = (scope["baseline_p50_ms"].as_f64().unwrap(), scope["current_p50_ms"].as_f64().unwrap());
    // Above the slow rule's bar (3x the baseline and 10 ms over it, the defaults): the duty
    // cycle's delays spread from 0 to 200 ms, so an absolute bound on their median is not a
    // property of the brownout.
    assert!(now > (3.0 * base).max(base + 10.0), "current p50 {now} ms against baseline {base} ms: {g}");
    assert_eq!(
        (&scope["labels"], &scope["degraded_cells"]),
        (&serde_json::json!({"az": "b"}), &serde_json::json!(4)),
        "{g}"
    );
    assert_eq!(g["level"], "ok", "slow, not failing: {g}");
    let other = prom.query("crossprobe_scope_degraded{az!=\"b\"}").unwrap();
    assert!(other.is_empty(), "only zone b is degraded: {other:?}");

    zone_b.heal();
    eventually("degraded scope and alert cleared after healing", Duration::from_secs(90), || {
        let g = degraded(d.addr())?;
        let a = firing(&prom, "CrossprobeDegraded")?;
        if g["scopes"].as_array().is_some_and(Vec::is_empty) && g["degraded_cells"] == 0 && a.is_empty() {
            Ok(())
        } else {
            Err(format!("verdict {g}, alerts {a:?}"))
        }
    })
    .await;
    stop_daemon(d).await;
}
