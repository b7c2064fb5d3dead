//! A real Prometheus scraping the daemon over HTTPS with basic auth, as `[daemon.web]` is meant
//! to be used: the job with the CA and the right password is up, the job with a wrong password
//! is down. No broker needed: the daemon's HTTP server runs whatever its cells see.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crossprobe::daemon::{Daemon, RunOptions};
use serde_json::Value;
use support::web::{bcrypt_hash, web_config, Pki};
use support::{encode, eventually, free_port, http_get, parse};

/// A Prometheus server of this test, stopped by process id when dropped (also on panic).
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Two jobs on the same daemon, differing only in the password.
fn start_prometheus(target: SocketAddr, ca: &std::path::Path, password: &str) -> Prometheus {
    let dir = std::env::temp_dir().join(format!("crossprobe-prometheus-web-{}", support::unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let job = |name: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {}\n    basic_auth:\n      username: prometheus\n      password: {password}\n    static_configs:\n      - targets: [\"{target}\"]\n",
            ca.display()
        )
    };
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{}{}",
        job("crossprobe-web", password),
        job("crossprobe-web-wrong", "not-the-password"),
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
        .expect("prometheus starts (Debian package prometheus)");
    Prometheus { child, addr, dir }
}

/// The value of `up` for `job`, once Prometheus has scraped it.
fn up(p: &Prometheus, job: &str) -> Result<String, String> {
    let query = format!("up{{job=\"{job}\"}}");
    let (status, body) =
        http_get(p.addr, &format!("/api/v1/query?query={}", encode(&query))).map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("status {status}: {body}"));
    }
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    v["data"]["result"][0]["value"][1].as_str().map(str::to_owned).ok_or(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_over_https_with_basic_auth_and_a_wrong_password_is_down() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let server = ca.server(&pki, "server");
    let web = format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\nbasic_auth_users = {{ prometheus = \"{}\" }}",
        server.cert.display(),
        server.key.display(),
        bcrypt_hash("scrape-me")
    );
    let d = Daemon::start(parse(&web_config(&pki, &web)), RunOptions::default()).await.unwrap();
    let prom = start_prometheus(d.addr(), &ca.path, "scrape-me");
    let log = prom.dir.join("prometheus.log");
    let last_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let wrong =
        eventually("up == 1 with the right password, the wrong job scraped", Duration::from_secs(60), || {
            match (up(&prom, "crossprobe-web"), up(&prom, "crossprobe-web-wrong")) {
                (Ok(right), Ok(wrong)) if right == "1" => Ok(wrong),
                other => Err(format!("{other:?}\n{}", last_log())),
            }
        })
        .await;
    assert_eq!(wrong, "0", "a wrong password must leave the target down");
    let (_, body) = http_get(prom.addr, "/api/v1/targets").unwrap();
    assert!(body.contains("401 Unauthorized"), "the wrong job should fail on 401, targets: {body}");
    drop(prom);
    d.stop();
    tokio::time::timeout(Duration::from_secs(20), d.wait()).await.unwrap().unwrap();
}
