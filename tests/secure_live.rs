//! TLS and SASL against the local zones' secure endpoints, verified against the test CA: Kafka
//! over SSL and over SASL_SSL (SCRAM) and AMQP over TLS probe ok; a certificate from another CA
//! is a `tls` connection failure on both protocols, a wrong password an `auth` one; a zone's
//! faults take its secure endpoints down too, and heal restores them; and no secret reaches the
//! logs, `/verdict`, `/metrics` or `check`'s output.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crossprobe::daemon;
use crossprobe_probes::outcome::{ErrorKind, Outcome};
use support::{brokers, exclusive, parse, unique, Secure};

/// Where a password comes from, as a TOML key and value.
fn from_env(var: &str) -> String {
    format!("password_env = \"{var}\"")
}

fn from_file(path: &Path) -> String {
    format!("password_file = \"{}\"", path.display())
}

/// A daemon section, then `targets` and `tenants` as TOML. The timeout is generous: a first
/// probe includes the TLS handshake and SCRAM's key derivation (a debug build), which took more
/// than 800 ms (the old timeout) on a loaded 2-core machine; the failures these tests expect come at once.
fn config(id: &str, targets: &[String], tenants: &[String]) -> String {
    let mut toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:0\"\ninstance = \"secure-{id}\"\n\n[probe]\ninterval = \"2s\"\ntimeout = \"1500ms\"\n\n"
    );
    for t in targets.iter().chain(tenants) {
        toml += t;
        toml += "\n";
    }
    toml
}

/// A Kafka target over SSL (`sasl`: None) or SASL_SSL with that mechanism, trusting `ca`.
fn kafka_target(s: &Secure, name: &str, sasl: Option<&str>, ca: &Path, tenants: &[&str]) -> String {
    let (address, security) = match sasl {
        None => (&s.kafka_ssl[0], "security_protocol = \"ssl\"".to_owned()),
        Some(m) => {
            (&s.kafka_sasl_ssl[0], format!("security_protocol = \"sasl_ssl\", sasl_mechanism = \"{m}\""))
        }
    };
    format!(
        "[[targets]]\nname = \"{name}\"\nprotocol = \"kafka\"\naz = \"a\"\naddresses = [\"{address}\"]\ntenants = {tenants:?}\nkafka = {{ {security}, ca_file = \"{}\", fetch_wait = \"5ms\" }}\n",
        ca.display()
    )
}

/// An AMQP target over TLS, trusting `ca`.
fn amqp_target(s: &Secure, ca: &Path, tenants: &[&str]) -> String {
    format!(
        "[[targets]]\nname = \"rabbit-a\"\nprotocol = \"amqp\"\naz = \"a\"\naddresses = [\"{}\"]\ntenants = {tenants:?}\namqp = {{ tls = true, ca_file = \"{}\" }}\n",
        s.amqps[0],
        ca.display()
    )
}

/// A tenant; `kafka_password`: None for no SASL user, `amqp_password`: None for no AMQP.
fn tenant(id: &str, name: &str, kafka_password: Option<String>, amqp_password: Option<String>) -> String {
    let sasl = kafka_password.map(|p| format!(", user = \"crossprobe-{name}\", {p}")).unwrap_or_default();
    let mut toml =
        format!("[[tenants]]\nname = \"{name}\"\nkafka = {{ topic = \"crossprobe-{name}-{id}\"{sasl} }}\n");
    if let Some(p) = amqp_password {
        toml += &format!("amqp = {{ vhost = \"{name}\", user = \"crossprobe-{name}\", {p} }}\n");
    }
    toml
}

/// The tenant's right passwords, as the local zones' `env` exports them.
fn amqp_password(tenant: &str) -> Option<String> {
    Some(from_env(&format!("CROSSPROBE_{}_AMQP_PASSWORD", tenant.to_uppercase())))
}

fn kafka_password(tenant: &str) -> Option<String> {
    Some(from_env(&format!("CROSSPROBE_{}_KAFKA_PASSWORD", tenant.to_uppercase())))
}

/// The secure endpoints, or `None` (saying so) when the brokers come from an environment
/// without them.
fn secure() -> Option<&'static Secure> {
    let s = brokers().secure.as_ref();
    if s.is_none() {
        eprintln!("skipping: no secure endpoints (CROSSPROBE_CA_FILE is not set)");
    }
    s
}

/// A file holding `text`, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("crossprobe-secure-{}-{name}", unique()));
        std::fs::write(&path, format!("{text}\n")).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `once` on `toml`: each cell's id and outcome.
async fn once(toml: &str) -> Vec<(String, Outcome)> {
    let config = parse(toml);
    let results = daemon::once(&config).await.expect("once runs");
    config
        .matrix
        .cells()
        .iter()
        .zip(results)
        .map(|(cell, r)| (cell.id.to_string(), r.unwrap_or_else(|| panic!("{}: no result", cell.id)).outcome))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_over_ssl_and_sasl_ssl_and_amqp_over_tls_probe_ok() {
    let _x = exclusive().await;
    let Some(s) = secure() else { return };
    let id = unique();
    let toml = config(
        &id,
        &[
            kafka_target(s, "kafka-ssl", None, &s.ca_file, &["initech"]),
            kafka_target(s, "kafka-scram-512", Some("SCRAM-SHA-512"), &s.ca_file, &["acme", "globex"]),
            kafka_target(s, "kafka-scram-256", Some("SCRAM-SHA-256"), &s.ca_file, &["acme"]),
            amqp_target(s, &s.ca_file, &["acme", "globex"]),
        ],
        &[
            tenant(&id, "acme", kafka_password("acme"), amqp_password("acme")),
            tenant(&id, "globex", kafka_password("globex"), amqp_password("globex")),
            tenant(&id, "initech", None, None),
        ],
    );
    let outcomes = once(&toml).await;
    assert_eq!(outcomes.len(), 6, "{outcomes:?}");
    for (cell, outcome) in &outcomes {
        assert_eq!(*outcome, Outcome::Ok, "{cell}: expected ok over TLS, saw {outcome:?} ({outcomes:?})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_an_untrusted_ca_is_a_tls_failure_on_both_protocols() {
    let _x = exclusive().await;
    let Some(s) = secure() else { return };
    let id = unique();
    let other = &s.untrusted_ca_file;
    let toml = config(
        &id,
        &[
            kafka_target(s, "kafka-ssl", None, other, &["globex"]),
            kafka_target(s, "kafka-sasl", Some("SCRAM-SHA-512"), other, &["acme"]),
            amqp_target(s, other, &["acme"]),
        ],
        &[
            tenant(&id, "acme", kafka_password("acme"), amqp_password("acme")),
            tenant(&id, "globex", None, None),
        ],
    );
    let outcomes = once(&toml).await;
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    for (cell, outcome) in &outcomes {
        assert_eq!(
            *outcome,
            Outcome::ConnectFailed(ErrorKind::Tls),
            "{cell}: a server certificate not signed by ca_file must fail the TLS handshake ({outcomes:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_amqp_password_over_tls_is_an_auth_failure() {
    let _x = exclusive().await;
    let Some(s) = secure() else { return };
    let id = unique();
    let wrong = TempFile::new("wrong-password", &format!("wrong-{}", unique()));
    let toml = config(
        &id,
        &[kafka_target(s, "kafka-a", None, &s.ca_file, &["acme"]), amqp_target(s, &s.ca_file, &["acme"])],
        &[tenant(&id, "acme", None, Some(from_file(&wrong.0)))],
    );
    let outcomes = once(&toml).await;
    let expected = [
        ("kafka-a/acme".to_owned(), Outcome::Ok),
        ("rabbit-a/acme".to_owned(), Outcome::ConnectFailed(ErrorKind::Auth)),
    ];
    assert_eq!(outcomes, expected, "TLS works, so only the AMQP login may fail, as auth");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_kafka_password_over_sasl_ssl_is_an_auth_failure() {
    let _x = exclusive().await;
    let Some(s) = secure() else { return };
    let id = unique();
    let wrong = TempFile::new("wrong-kafka-password", &format!("wrong-{}", unique()));
    let toml = config(
        &id,
        &[
            kafka_target(s, "kafka-scram-512", Some("SCRAM-SHA-512"), &s.ca_file, &["acme", "globex"]),
            kafka_target(s, "kafka-plain", Some("PLAIN"), &s.ca_file, &["globex"]),
        ],
        &[
            tenant(&id, "acme", Some(from_file(&wrong.0)), None),
            tenant(&id, "globex", kafka_password("globex"), None),
        ],
    );
    let outcomes = once(&toml).await;
    let expected = [
        ("kafka-scram-512/acme".to_owned(), Outcome::ConnectFailed(ErrorKind::Auth)),
        ("kafka-scram-512/globex".to_owned(), Outcome::Ok),
        // tansu 0.6.0 has no PLAIN (not compiled into its SASL library): refused, whatever the
        // password.
        ("kafka-plain/globex".to_owned(), Outcome::ConnectFailed(ErrorKind::Auth)),
    ];
    assert_eq!(outcomes, expected, "only the wrong password and the unsupported mechanism are refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_or_killing_a_zone_takes_its_secure_endpoints_down_and_heal_restores_them() {
    let _x = exclusive().await;
    let Some(s) = secure() else { return };
    let id = unique();
    let toml = config(
        &id,
        &[
            kafka_target(s, "kafka-ssl", None, &s.ca_file, &["globex"]),
            kafka_target(s, "kafka-sasl", Some("SCRAM-SHA-512"), &s.ca_file, &["acme"]),
            amqp_target(s, &s.ca_file, &["acme"]),
        ],
        &[
            tenant(&id, "acme", kafka_password("acme"), amqp_password("acme")),
            tenant(&id, "globex", None, None),
        ],
    );
    for kind in ["pause", "kill"] {
        let Some(fault) = brokers().fault("a", kind, None) else { return };
        let outcomes = once(&toml).await;
        assert!(
            outcomes.iter().all(|(_, o)| *o != Outcome::Ok),
            "{kind} of zone a: every secure endpoint of the zone should fail: {outcomes:?}"
        );
        // After a kill, heal starts the SASL broker afresh and stores the SCRAM users again.
        fault.heal();
        let outcomes = once(&toml).await;
        assert!(
            outcomes.iter().all(|(_, o)| *o == Outcome::Ok),
            "after heal from {kind}: every secure endpoint should be ok again: {outcomes:?}"
        );
    }
}

/// Output of a finished process, both streams.
fn output_of(mut command: Command) -> String {
    let out = command.output().expect("crossprobe runs");
    format!(
        "exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `crossprobe run` with `rust_log` until /metrics shows, on both protocols, an ok probe and a
/// connection failure of kind `auth`, then SIGTERM: everything it wrote, and the last /verdict and /metrics.
fn run_until_auth_failure(config: &Path, envs: &[(&str, &str)], rust_log: Option<&str>) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crossprobe"));
    command.args(["run", "--config", config.to_str().unwrap()]).envs(envs.iter().copied());
    match rust_log {
        Some(filter) => command.env("RUST_LOG", filter),
        None => command.env_remove("RUST_LOG"),
    };
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("crossprobe starts");
    let mut stdout = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all += &line;
            all += "\n";
        }
        all
    });
    let started = rx.iter().find(|l| l.contains("crossprobe started"));
    let addr: Option<std::net::SocketAddr> = started
        .as_deref()
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("listen=")))
        .and_then(|a| a.trim_matches('"').parse().ok());
    let mut served = String::new();
    if let Some(addr) = addr {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, metrics) = support::http_get(addr, "/metrics").expect("GET /metrics");
            let seen = |metric: &str, protocol: &str, what: &str| {
                metrics.lines().any(|l| {
                    l.starts_with(&format!("{metric}{{"))
                        && l.contains(&format!("protocol=\"{protocol}\""))
                        && l.contains(what)
                        && !l.ends_with(" 0")
                })
            };
            let done = ["kafka", "amqp"].iter().all(|p| {
                seen("crossprobe_probe_errors_total", p, "kind=\"auth\"")
                    && seen("crossprobe_probes_total", p, "outcome=\"ok\"")
            });
            if done || Instant::now() > deadline {
                let (_, verdict) = support::http_get(addr, "/verdict").expect("GET /verdict");
                served = format!("--- /metrics\n{metrics}\n--- /verdict\n{verdict}\n");
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = child.wait().unwrap();
    format!(
        "--- exit {:?}\n--- stdout\n{}--- stderr\n{}{served}",
        status.code(),
        stdout.join().unwrap(),
        stderr.join().unwrap()
    )
}

#[test]
fn no_secret_reaches_logs_endpoints_or_check_output() {
    let _x = tokio::runtime::Runtime::new().unwrap().block_on(exclusive());
    let Some(s) = secure() else { return };
    let id = unique();
    let secret = |what: &str| format!("s3cr3t-{what}-{}{}", unique(), unique());
    // Over SASL_SSL (SCRAM-SHA-512) and AMQP over TLS: globex's passwords, from the environment,
    // are right (ok); acme's and initech's, distinctive ones from the environment and from
    // files, are wrong (auth), so the error paths see them too.
    let kafka_env = secret("kafka-env");
    let kafka_file = TempFile::new("kafka", &secret("kafka-file"));
    let amqp_file = TempFile::new("amqp", &secret("amqp-file"));
    let amqp_right = std::env::var("CROSSPROBE_GLOBEX_AMQP_PASSWORD").unwrap();
    let kafka_right = std::env::var("CROSSPROBE_GLOBEX_KAFKA_PASSWORD").unwrap();
    let secrets = [
        kafka_env.clone(),
        std::fs::read_to_string(&kafka_file.0).unwrap().trim().to_owned(),
        std::fs::read_to_string(&amqp_file.0).unwrap().trim().to_owned(),
        amqp_right.clone(),
        kafka_right.clone(),
    ];
    let kafka_var = format!("CROSSPROBE_LEAK_KAFKA_{id}");
    let toml = config(
        &id,
        &[
            kafka_target(s, "kafka-sasl", Some("SCRAM-SHA-512"), &s.ca_file, &["acme", "globex", "initech"]),
            amqp_target(s, &s.ca_file, &["acme", "globex"]),
        ],
        &[
            tenant(&id, "acme", Some(from_env(&kafka_var)), Some(from_file(&amqp_file.0))),
            tenant(&id, "globex", kafka_password("globex"), amqp_password("globex")),
            tenant(&id, "initech", Some(from_file(&kafka_file.0)), None),
        ],
    );
    let config = TempFile::new("config.toml", &toml);
    let envs = [
        (kafka_var.as_str(), kafka_env.as_str()),
        ("CROSSPROBE_GLOBEX_AMQP_PASSWORD", &amqp_right),
        ("CROSSPROBE_GLOBEX_KAFKA_PASSWORD", &kafka_right),
    ];

    let mut seen = Vec::new();
    let mut check = Command::new(env!("CARGO_BIN_EXE_crossprobe"));
    check.args(["check", "--config", config.0.to_str().unwrap()]).envs(envs);
    let checked = output_of(check);
    assert!(checked.starts_with("exit Some(0)"), "check should pass:\n{checked}");
    seen.push(("check".to_owned(), checked));
    // The default filter (info), debug, and trace: the last includes lapin's frames and
    // librdkafka's protocol logs, where a password would show if any library wrote one.
    for rust_log in [None, Some("debug"), Some("trace")] {
        let out = run_until_auth_failure(&config.0, &envs, rust_log);
        let what = format!("run with RUST_LOG={rust_log:?}");
        for protocol in ["kafka", "amqp"] {
            let counted = |what: &str| {
                out.lines().any(|l| {
                    l.contains(&format!("protocol=\"{protocol}\"")) && l.contains(what) && !l.ends_with(" 0")
                })
            };
            assert!(
                counted("kind=\"auth\"") && counted("outcome=\"ok\""),
                "{what}: /metrics should count {protocol} auth failures (the secrets were used) and ok probes:\n{out}"
            );
        }
        assert!(out.contains("--- exit Some(0)"), "{what}: should stop cleanly on SIGTERM:\n{out}");
        seen.push((what, out));
    }
    for (what, out) in &seen {
        for secret in &secrets {
            assert!(!out.contains(secret.as_str()), "{what}: a secret ({secret}) appears in:\n{out}");
        }
    }
}
