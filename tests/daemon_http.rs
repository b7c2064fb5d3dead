//! The daemon in-process against the local zones, through its HTTP surface: readiness, every
//! metric of the README table, the verdict following a real fault and its healing, and
//! `--record` output that `replay` accepts.

mod support;

use std::time::Duration;

use crossprobe::daemon::{Daemon, RunOptions};
use serde_json::Value;
use support::{brokers, eventually, exclusive, http_get, local_matrix, parse, stop_daemon, FAST};

fn verdict(d: &Daemon) -> Result<Value, String> {
    let (status, body) = http_get(d.addr(), "/verdict").map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("status {status}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
}

fn level_and_scopes(v: &Value) -> (String, String) {
    (v["verdict"].as_str().unwrap_or_default().to_owned(), v["scopes"].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_its_verdict_metrics_and_readiness_and_follows_a_real_fault() {
    let _x = exclusive().await;
    let b = brokers();
    let (toml, _) = local_matrix(b, &FAST);
    let config = parse(&toml);
    let record = tempfile_path("record.jsonl");
    let d = Daemon::start(config, RunOptions { record: Some(record.clone()), ..Default::default() })
        .await
        .unwrap();

    assert_eq!(http_get(d.addr(), "/healthz").unwrap().0, 200);
    eventually("ready", Duration::from_secs(30), || match http_get(d.addr(), "/readyz") {
        Ok((200, _)) => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await;
    let healthy = eventually("every cell healthy, verdict ok", Duration::from_secs(30), || {
        let v = verdict(&d)?;
        let cells = v["cells"].as_array().cloned().unwrap_or_default();
        let all = cells.len() == 12 && cells.iter().all(|c| c["state"] == "healthy");
        if all && v["verdict"] == "ok" {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    })
    .await;
    assert_eq!(healthy["scopes"], serde_json::json!([]));

    let (_, metrics) = http_get(d.addr(), "/metrics").unwrap();
    for name in [
        "crossprobe_probes_total{",
        "crossprobe_roundtrip_seconds_bucket{",
        "crossprobe_cell_state{",
        "crossprobe_verdict 0",
        "crossprobe_outage_confirmed 0",
        "crossprobe_build_info{",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }

    let Some(fault) = b.fault("b", "pause", None) else { return stop_daemon(d).await };
    let partial = eventually("partial verdict naming az=b", Duration::from_secs(30), || {
        let v = verdict(&d)?;
        match level_and_scopes(&v) {
            (l, s) if l == "partial" && s == r#"[{"az":"b"}]"# => Ok(v),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(partial["evidence"]["rule"].as_str().unwrap_or_default().contains("az=b"), "{partial}");
    let (_, metrics) = http_get(d.addr(), "/metrics").unwrap();
    assert!(
        metrics.contains(r#"crossprobe_scope_down{az="b",broker="*",protocol="*",tenant="*"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("crossprobe_verdict 2"));

    fault.heal();
    eventually("ok again after heal, az=b resolved", Duration::from_secs(60), || {
        let v = verdict(&d)?;
        match level_and_scopes(&v) {
            (l, s) if l == "ok" && s == "[]" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    stop_daemon(d).await;

    // The record replays through the same correlator: it saw zone b go partial and recover.
    let config_file = tempfile_path("config.toml");
    std::fs::write(&config_file, &toml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crossprobe"))
        .args(["replay", "--input", record.to_str().unwrap(), "--config", config_file.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "replay failed: {}", String::from_utf8_lossy(&out.stderr));
    let levels: Vec<String> = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["verdict"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        levels.contains(&"partial".to_owned()) && levels.last().map(String::as_str) == Some("ok"),
        "replayed timeline: {stdout}"
    );
}

fn tempfile_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("crossprobe-test-{}", support::unique()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}
