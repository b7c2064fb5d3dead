//! The alert rules against a real Prometheus scraping the daemon, which probes the local
//! zones: a fault on zone b makes `CrossprobePartialOutage` fire with az="b", a fault on every
//! zone makes `CrossprobeOutageConfirmed` fire, and healing clears both.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crossprobe::daemon::{Daemon, RunOptions};
use serde_json::Value;
use support::{brokers, encode, eventually, exclusive, free_port, http_get, local_matrix, parse, FAST};

/// A Prometheus server of this test, stopped by process id when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus(target: SocketAddr) -> Prometheus {
    let dir = std::env::temp_dir().join(format!("crossprobe-prometheus-{}", support::unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/crossprobe-rules.yml");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: crossprobe\n    static_configs:\n      - targets: [\"{target}\"]\n",
        rules.display()
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus starts (installed by deploy/local/crossprobe-local install)");
    Prometheus { child, addr, _dir: dir }
}

/// The label sets of firing alerts named `name`.
fn firing(p: &Prometheus, name: &str) -> Result<Vec<Value>, String> {
    let query = format!("ALERTS{{alertname=\"{name}\",alertstate=\"firing\"}}");
    let (status, body) =
        http_get(p.addr, &format!("/api/v1/query?query={}", encode(&query))).map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("status {status}: {body}"));
    }
    let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    Ok(v["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|r| r["metric"].clone())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_and_confirmed_outage_alerts_fire_in_prometheus_and_clear_after_heal() {
    let _x = exclusive().await;
    let b = brokers();
    let (toml, _) = local_matrix(b, &FAST);
    let d = Daemon::start(parse(&toml), RunOptions::default()).await.unwrap();
    let prom = start_prometheus(d.addr());
    eventually("Prometheus scrapes the daemon", Duration::from_secs(60), || {
        let (_, body) =
            http_get(prom.addr, &format!("/api/v1/query?query={}", encode("up{job=\"crossprobe\"}")))
                .map_err(|e| e.to_string())?;
        if body.contains(r#""value":["#) && body.contains(r#","1"]"#) {
            Ok(())
        } else {
            Err(body)
        }
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
    d.stop();
    tokio::time::timeout(Duration::from_secs(20), d.wait()).await.unwrap().unwrap();
}
