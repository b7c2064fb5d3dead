//! `replay --prometheus` against a real Prometheus that scraped the daemon while it probed the
//! local zones through a real fault: zone b paused for a minute. The timeline rebuilt from the
//! counters names the scopes the live daemon named.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossprobe::daemon::{Daemon, RunOptions};
use crossprobe::offline::record::rfc3339_ms;
use serde_json::Value;
use support::prometheus::Prometheus;
use support::{brokers, eventually, exclusive, http_get, local_matrix, parse, stop_daemon, FAST};

/// A scope as `k=v&k=v`, keys sorted, from a scope object or one with `labels`.
fn scope_name(s: &Value) -> String {
    let labels = if s["labels"].is_object() { &s["labels"] } else { s };
    let pairs: Vec<String> = labels
        .as_object()
        .map(|o| o.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?"))).collect())
        .unwrap_or_default();
    if pairs.is_empty() {
        "*".into()
    } else {
        pairs.join("&")
    }
}

/// The scopes and level of the daemon's verdict now.
fn live(addr: SocketAddr) -> Result<(String, Vec<String>), String> {
    let (_, body) = http_get(addr, "/verdict").map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    let scopes = v["scopes"].as_array().map(|a| a.iter().map(scope_name).collect()).unwrap_or_default();
    Ok((v["verdict"].as_str().unwrap_or("").to_owned(), scopes))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_prometheus_names_the_zone_the_daemon_named() {
    let _x = exclusive().await;
    let b = brokers();
    let (toml, _) = local_matrix(b, &FAST);
    let d = Daemon::start(parse(&toml), RunOptions::default()).await.unwrap();
    let prom = Prometheus::start(&format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: crossprobe\n    static_configs:\n      - targets: [\"{}\"]\n",
        d.addr()
    ));
    eventually("Prometheus scrapes the daemon and every cell is healthy", Duration::from_secs(90), || {
        let up = prom.value("up{job=\"crossprobe\"}")?;
        let (level, scopes) = live(d.addr())?;
        (up == "1" && level == "ok" && scopes.is_empty())
            .then_some(())
            .ok_or(format!("up {up}, {level} {scopes:?}"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let from = now_ms();

    let Some(zone_b) = b.fault("b", "pause", None) else { return };
    let addr = d.addr();
    // The live scopes, read every 200 ms on a thread of its own.
    let sampler = std::thread::spawn(move || {
        let mut seen = BTreeSet::new();
        let end = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < end {
            if let Ok((_, scopes)) = live(addr) {
                seen.extend(scopes);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        seen
    });
    let mut live_scopes = tokio::task::spawn_blocking(move || sampler.join().unwrap()).await.unwrap();
    zone_b.heal();
    eventually("the verdict back to ok without scopes after healing", Duration::from_secs(150), || {
        let (level, scopes) = live(addr)?;
        live_scopes.extend(scopes.iter().cloned());
        (level == "ok" && scopes.is_empty()).then_some(()).ok_or(format!("{level} {scopes:?}"))
    })
    .await;
    let to = now_ms() + 2_000;
    // Let Prometheus scrape past the window's end.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(live_scopes.contains("az=b"), "the live daemon should have named az=b: {live_scopes:?}");

    let url = format!("http://{}", prom.addr);
    let (from, to) = (rfc3339_ms(from), rfc3339_ms(to));
    let args = ["replay", "--prometheus", &url, "--from", &from, "--to", &to, "--step", "1s"];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crossprobe")).args(args).output().unwrap();
    assert!(out.status.success(), "replay {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let mut replayed = BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Value = serde_json::from_str(line).expect("each line is JSON");
        replayed.extend(v["scopes"].as_array().unwrap().iter().map(scope_name));
    }
    eprintln!("live scopes {live_scopes:?}, replayed from Prometheus {replayed:?}");
    assert_eq!(replayed, live_scopes, "the replayed timeline names the scopes the daemon named");

    let mut summary_args = args.to_vec();
    summary_args.push("--summary");
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_crossprobe")).args(&summary_args).output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    eprintln!("{summary}");
    assert!(out.status.success() && summary.contains(" az=b: "), "the summary names az=b: {summary}");
    drop(prom);
    stop_daemon(d).await;
}
