//! A real Prometheus for tests: its own temporary directory and free port, stopped by process
//! id (and its directory removed) when dropped, also when the test panics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::{encode, free_port, http_get, unique};

pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus on `config`, the text of a prometheus.yml (files it names by absolute
    /// path).
    pub fn start(config: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("crossprobe-prometheus-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
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
        Prometheus { child, addr, dir }
    }

    /// The result vector of an instant query: one `{"metric": ..., "value": [t, "v"]}` per
    /// series.
    pub fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let (status, body) = http_get(self.addr, &format!("/api/v1/query?query={}", encode(promql)))
            .map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("status {status}: {body}"));
        }
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        v["data"]["result"].as_array().cloned().ok_or(body)
    }

    /// The alerts Prometheus holds (pending and firing), with their labels and expanded
    /// annotations: `/api/v1/alerts`.
    pub fn alerts(&self) -> Result<Vec<Value>, String> {
        let (status, body) = http_get(self.addr, "/api/v1/alerts").map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("status {status}: {body}"));
        }
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        v["data"]["alerts"].as_array().cloned().ok_or(body)
    }

    /// The value of the first series of an instant query, once there is one.
    pub fn value(&self, promql: &str) -> Result<String, String> {
        let result = self.query(promql)?;
        result.first().and_then(|r| r["value"][1].as_str()).map(str::to_owned).ok_or(format!("{result:?}"))
    }

    /// What Prometheus logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
