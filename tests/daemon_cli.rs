//! `crossprobe run` as a process: it loads the config, logs the matrix, and stops cleanly on
//! SIGTERM and SIGINT with exit code 0; a bad config exits 64 before anything starts; a vantage
//! labels every series on /metrics and `--shard` narrows the matrix.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;
use support::Process;

/// The local example with the HTTP server on a free port, in a temporary file removed on drop.
struct LocalConfig(std::path::PathBuf);

impl LocalConfig {
    fn new() -> Self {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/examples/local.toml"))
                .unwrap();
        let text = text.replace("listen = \"127.0.0.1:9464\"", "listen = \"127.0.0.1:0\"");
        assert!(text.contains("127.0.0.1:0"), "the local example should listen on 127.0.0.1:9464");
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("crossprobe-cli-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        LocalConfig(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for LocalConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Starts `crossprobe run` with `args` and `env` in the crate's directory, its stderr as a
/// channel of lines.
fn run_logged(args: &[&str], env: &[(&str, &str)]) -> (Process, mpsc::Receiver<String>) {
    let mut daemon = Process(
        Command::new(env!("CARGO_BIN_EXE_crossprobe"))
            .arg("run")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("crossprobe starts"),
    );
    let stderr = daemon.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (daemon, rx)
}

/// The address in the start-up line's `listen=`.
fn listen_addr(started: &str) -> std::net::SocketAddr {
    started
        .split_whitespace()
        .find_map(|w| w.strip_prefix("listen="))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no listen address in {started}"))
}

/// Sends SIG`signal` and waits up to `within` for the exit.
fn stop_within(daemon: &mut Process, signal: &str, within: Duration) -> std::process::ExitStatus {
    let child = &mut daemon.0;
    let status =
        Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill -{signal} failed");
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(exit) = child.try_wait().unwrap() {
            return exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "crossprobe did not stop within {within:?} of SIG{signal}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stops_cleanly_on(signal: &str) {
    let config = LocalConfig::new();
    // No brokers are needed: cells without them report connect_failed, the daemon runs on.
    let (mut daemon, rx) = run_logged(
        &["--config", config.path()],
        &[("CROSSPROBE_ACME_AMQP_PASSWORD", "unused"), ("CROSSPROBE_GLOBEX_AMQP_PASSWORD", "unused")],
    );
    let mut seen = Vec::new();
    let started = rx
        .iter()
        .find(|l| {
            seen.push(l.clone());
            l.contains("crossprobe started")
        })
        .unwrap_or_else(|| panic!("no start-up line before the log ended: {seen:?}"));
    assert!(started.contains("cells=12"), "start-up line should count 12 cells: {started}");

    let exit = stop_within(&mut daemon, signal, Duration::from_secs(20));
    assert_eq!(exit.code(), Some(0), "exit status after SIG{signal}");
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(
        rest.iter().any(|l| l.contains("stopping") && l.contains(&format!("SIG{signal}"))),
        "expected a log line naming SIG{signal}, saw: {rest:?}"
    );
}

#[test]
fn run_stops_cleanly_on_sigterm() {
    stops_cleanly_on("TERM");
}

#[test]
fn run_stops_cleanly_on_sigint() {
    stops_cleanly_on("INT");
}

#[test]
fn run_and_once_without_passwords_exit_64_naming_every_one() {
    for command in ["run", "once"] {
        let config = LocalConfig::new();
        let out = Command::new(env!("CARGO_BIN_EXE_crossprobe"))
            .args([command, "--config", config.path()])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("CROSSPROBE_ACME_AMQP_PASSWORD")
            .env_remove("CROSSPROBE_GLOBEX_AMQP_PASSWORD")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{command}: {stderr}");
        assert!(stderr.contains(": 2 problems found"), "{command}: both variables, not the first: {stderr}");
        for var in ["CROSSPROBE_ACME_AMQP_PASSWORD", "CROSSPROBE_GLOBEX_AMQP_PASSWORD"] {
            assert!(
                stderr.contains(&format!("environment variable {var} is not set")),
                "{command}: the error should name {var}: {stderr}"
            );
        }
    }
}

#[test]
fn run_with_an_unreadable_ca_file_exits_1_naming_it() {
    let dir = std::env::temp_dir().join(format!("crossprobe-ca-{}", support::unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_pem = dir.join("not-pem.txt");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let missing = dir.join("missing.pem");
    let cases = [
        ("kafka", "kafka = { security_protocol = \"ssl\", ca_file = \"CA\" }", &missing, "missing.pem"),
        ("amqp", "amqp = { tls = true, ca_file = \"CA\" }", &missing, "missing.pem"),
        ("amqp", "amqp = { tls = true, ca_file = \"CA\" }", &not_pem, "holds no PEM certificate"),
    ];
    for (protocol, table, ca, expected) in cases {
        let config = dir.join("ca.toml");
        let table = table.replace("CA", ca.to_str().unwrap());
        std::fs::write(
            &config,
            format!(
                "[daemon]\nlisten = \"127.0.0.1:0\"\n\n[[targets]]\nname = \"t\"\nprotocol = \"{protocol}\"\naz = \"a\"\naddresses = [\"127.0.0.1:1\"]\n{table}\n\n[[tenants]]\nname = \"acme\"\nkafka = {{ topic = \"p\" }}\namqp = {{ vhost = \"acme\", user = \"acme\", password_env = \"CROSSPROBE_TEST_UNUSED_PASSWORD\" }}\n"
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_crossprobe"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env("CROSSPROBE_TEST_UNUSED_PASSWORD", "unused")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{protocol} with ca_file {}: {stderr}", ca.display());
        assert!(
            stderr.contains("target \\\"t\\\": ca_file") && stderr.contains(expected),
            "{protocol}: the error should name the target and say what is wrong ({expected}): {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_with_a_bad_config_exits_64() {
    let out = Command::new(env!("CARGO_BIN_EXE_crossprobe"))
        .args(["run", "--config", "tests/config/invalid/three_mistakes.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 problems found"));
    // A limit of the correlator is a configuration error with its place, as `check` says, not
    // a runtime failure (exit 1) without one.
    let out = Command::new(env!("CARGO_BIN_EXE_crossprobe"))
        .args(["run", "--config", "tests/config/invalid/eleven_dimensions.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains(
            "eleven_dimensions.toml:8:77: targets[0] \"kafka-a\".labels: 7 extra labels make 11 dimensions"
        ),
        "{stderr}"
    );
}

/// A matrix on 127.0.0.1:1, where nothing listens: no broker is touched, every cell reports
/// connect_failed and the daemon runs on.
const VANTAGE_CONFIG: &str = r#"
[daemon]
listen = "127.0.0.1:0"
instance = "vantage-test"
vantage = "zone-a"

[[targets]]
name = "kafka-a"
protocol = "kafka"
az = "a"
addresses = ["127.0.0.1:1"]

[[targets]]
name = "kafka-b"
protocol = "kafka"
az = "b"
addresses = ["127.0.0.1:1"]

[[targets]]
name = "rabbit-a"
protocol = "amqp"
az = "a"
addresses = ["127.0.0.1:1"]

[[tenants]]
name = "acme"
kafka = { topic = "probe-acme" }
amqp = { vhost = "acme", user = "acme", password_env = "CROSSPROBE_TEST_UNUSED_PASSWORD" }

[[tenants]]
name = "globex"
kafka = { topic = "probe-globex" }
amqp = { vhost = "globex", user = "globex", password_env = "CROSSPROBE_TEST_UNUSED_PASSWORD" }
"#;

#[test]
fn run_with_a_vantage_and_a_shard_labels_and_narrows_what_it_exports() {
    let dir = std::env::temp_dir().join(format!("crossprobe-vantage-{}", support::unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("vantage.toml");
    std::fs::write(&config, VANTAGE_CONFIG).unwrap();
    let config = config.to_str().unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_crossprobe"))
        .args(["check", "--config", config, "--shard", "1/2"])
        .env("CROSSPROBE_TEST_UNUSED_PASSWORD", "unused")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "check --shard 1/2: {}", String::from_utf8_lossy(&check.stderr));
    let shard_cells: Vec<&str> =
        stdout.lines().filter_map(|l| l.split_whitespace().next()).filter(|c| c.contains('/')).collect();
    assert!(!shard_cells.is_empty() && shard_cells.len() < 6, "shard 1/2 of 6 cells: {stdout}");

    let (_daemon, rx) =
        run_logged(&["--config", config, "--shard", "1/2"], &[("CROSSPROBE_TEST_UNUSED_PASSWORD", "unused")]);
    let started =
        rx.iter().find(|l| l.contains("crossprobe started")).expect("a start-up line before the log ended");
    assert!(started.contains("vantage=zone-a"), "the start-up line should name the vantage: {started}");
    assert!(
        started.contains(&format!("cells={}", shard_cells.len())),
        "the daemon should probe the {} cells of shard 1/2: {started}",
        shard_cells.len()
    );
    let addr = listen_addr(&started);

    let (status, metrics) = support::http_get(addr, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "GET /metrics: {metrics}");
    let samples: Vec<&str> = metrics.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    let unlabelled: Vec<&&str> = samples.iter().filter(|l| !l.contains("vantage=\"zone-a\"")).collect();
    assert!(!samples.is_empty() && unlabelled.is_empty(), "series without the vantage: {unlabelled:?}");
    let states = samples.iter().filter(|l| l.starts_with("crossprobe_cell_state{")).count();
    assert_eq!(states, shard_cells.len(), "one cell_state series per cell of the shard:\n{metrics}");
    for cell in &shard_cells {
        let (target, tenant) = cell.split_once('/').unwrap();
        let series = format!("broker=\"{target}\",protocol=");
        assert!(
            samples.iter().any(|l| l.starts_with("crossprobe_cell_state{")
                && l.contains(&series)
                && l.contains(&format!("tenant=\"{tenant}\""))),
            "no cell_state series for {cell}:\n{metrics}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The evaluation tick `/verdict` reports.
fn verdict_tick(addr: std::net::SocketAddr) -> u64 {
    let (status, body) = support::http_get(addr, "/verdict").expect("GET /verdict");
    assert_eq!(status, 200, "GET /verdict: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("/verdict is JSON");
    v["evidence"]["tick"].as_u64().unwrap_or_else(|| panic!("no evidence.tick in {body}"))
}

#[test]
fn a_reload_from_a_fifo_is_refused_and_the_daemon_runs_on() {
    let dir = std::env::temp_dir().join(format!("crossprobe-fifo-{}", support::unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("crossprobe.toml");
    std::fs::write(&config, VANTAGE_CONFIG).unwrap();
    let (mut daemon, rx) =
        run_logged(&["--config", config.to_str().unwrap()], &[("CROSSPROBE_TEST_UNUSED_PASSWORD", "unused")]);
    let started =
        rx.iter().find(|l| l.contains("crossprobe started")).expect("a start-up line before the log ended");
    let addr = listen_addr(&started);

    // The configuration path now names a FIFO that no one ever writes.
    std::fs::remove_file(&config).unwrap();
    let made = Command::new("mkfifo").arg(&config).status().expect("mkfifo runs");
    assert!(made.success());
    let pid = daemon.0.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let refused = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(line) if line.contains("reload refused") => break line,
            Ok(_) => {}
            Err(_) => panic!("no refused reload in the log within 30s of SIGHUP"),
        }
    };
    assert!(refused.contains("not a regular file"), "the refusal should say why: {refused}");

    // The evaluator goes on: the verdict keeps ticking (1 s ticks).
    let before = verdict_tick(addr);
    std::thread::sleep(Duration::from_millis(2500));
    let after = verdict_tick(addr);
    assert!(after > before, "the verdict stopped at tick {before} (then {after}) after the reload");

    let exit = stop_within(&mut daemon, "TERM", Duration::from_secs(30));
    assert_eq!(exit.code(), Some(0), "exit status after SIGTERM");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The records in a record file, as JSON values.
fn records_in(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Runs the daemon with `--record` until the file holds at least `n` records, then stops it.
fn record_until(config: &LocalConfig, record: &std::path::Path, n: usize) {
    let (mut daemon, _rx) = run_logged(
        &["--config", config.path(), "--record", record.to_str().unwrap()],
        &[("CROSSPROBE_ACME_AMQP_PASSWORD", "unused"), ("CROSSPROBE_GLOBEX_AMQP_PASSWORD", "unused")],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while records_in(record).len() < n {
        assert!(std::time::Instant::now() < deadline, "fewer than {n} records within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(stop_within(&mut daemon, "TERM", Duration::from_secs(20)).code(), Some(0));
}

#[test]
fn a_restarted_recording_keeps_both_runs() {
    let config = LocalConfig::new();
    let record = std::env::temp_dir().join(format!("crossprobe-cli-{}-record.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&record);
    // No brokers needed: cells without them record connect_failed every interval.
    record_until(&config, &record, 24);
    let first = records_in(&record);
    record_until(&config, &record, first.len() + 24);
    let both = records_in(&record);
    let _ = std::fs::remove_file(&record);
    assert_eq!(both[..first.len()], first[..], "the second run appended to the first run's records");
    let restarts = both.windows(2).filter(|w| w[1]["at_ms"].as_u64() < w[0]["at_ms"].as_u64()).count();
    assert!(restarts >= 1, "the second run's at_ms starts again near 0");
    let times: Vec<&str> = both.iter().map(|r| r["time"].as_str().expect("every record has time")).collect();
    let first_run_end = times[first.len() - 1];
    assert!(
        times[first.len()..].iter().all(|t| *t >= first_run_end),
        "wall-clock time goes on across the restart"
    );
}
