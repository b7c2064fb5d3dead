//! Real brokers for integration tests: the local zones of `deploy/local/crossprobe-local`
//! (brought up once per test run, or reused when already running), or a user's own brokers
//! given by environment variables (then fault injection is unavailable and fault tests say so).
//!
//! Tests that touch brokers take [`exclusive`] first: tests of one binary run one at a time, so
//! a fault injected by one never lands in another. A [`Fault`] heals its zone when dropped,
//! also when the test panics.

#![allow(dead_code)]

pub mod prometheus;
pub mod web;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub const ZONES: [&str; 3] = ["a", "b", "c"];

/// A process a test started (the daemon, mostly), killed if the test fails before it stops it,
/// so none outlives the test.
pub struct Process(pub std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Addresses and credentials of the three zones.
#[derive(Debug)]
pub struct Brokers {
    pub kafka: [String; 3],
    pub amqp: [String; 3],
    pub acme_password: String,
    pub globex_password: String,
    /// The TLS and SASL endpoints, when there are any.
    pub secure: Option<Secure>,
    /// The control script, when the zones are ours to break.
    ctl: Option<PathBuf>,
}

/// The zones' secure endpoints, with certificates signed by a test CA: Kafka over SSL, Kafka
/// over SASL_SSL (SCRAM-SHA-256/512; users `crossprobe-<tenant>`, passwords
/// `CROSSPROBE_<TENANT>_KAFKA_PASSWORD`), AMQP over TLS. From the environment:
/// `CROSSPROBE_KAFKA_SSL_A..C`, `CROSSPROBE_KAFKA_SASL_SSL_A..C`, `CROSSPROBE_AMQPS_A..C`,
/// `CROSSPROBE_CA_FILE`, `CROSSPROBE_UNTRUSTED_CA_FILE`.
#[derive(Debug)]
pub struct Secure {
    pub kafka_ssl: [String; 3],
    pub kafka_sasl_ssl: [String; 3],
    pub amqps: [String; 3],
    /// The CA that signed the brokers' certificates.
    pub ca_file: PathBuf,
    /// A CA that signed none of them.
    pub untrusted_ca_file: PathBuf,
}

/// The user's own brokers: `CROSSPROBE_KAFKA_A..C`, `CROSSPROBE_AMQP_A..C` and the tenants'
/// AMQP passwords; `CROSSPROBE_LOCAL_CTL` when fault injection is possible.
const USER_BROKERS: &str = "CROSSPROBE_KAFKA_A";

/// The Kafka table of a target on the local zones' tansu, which answers a fetch only when its
/// wait is over: a short `fetch_wait` (the default, 500 ms, suits Apache Kafka).
pub const TANSU_FETCH: &str = "kafka = { fetch_wait = \"5ms\" }\n";

pub fn brokers() -> &'static Brokers {
    static BROKERS: OnceLock<Brokers> = OnceLock::new();
    BROKERS.get_or_init(|| {
        // Daemon logs on stderr only when asked for (RUST_LOG=info cargo test ...).
        if std::env::var_os("RUST_LOG").is_some() {
            let filter = tracing_subscriber::EnvFilter::from_default_env();
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
        }
        if std::env::var_os(USER_BROKERS).is_none() {
            let out = ctl_command(&ctl_path(), &["up"]);
            assert!(
                out.status.success(),
                "crossprobe-local up failed (run `deploy/local/crossprobe-local install` first):\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let env = ctl_command(&ctl_path(), &["env"]);
            for line in String::from_utf8_lossy(&env.stdout).lines() {
                if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
                    // Set once, under the OnceLock, for configs that name these variables.
                    std::env::set_var(k, v.trim_matches('\''));
                }
            }
        }
        let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
        Brokers {
            kafka: ZONES.map(|z| var(&format!("CROSSPROBE_KAFKA_{}", z.to_uppercase()))),
            amqp: ZONES.map(|z| var(&format!("CROSSPROBE_AMQP_{}", z.to_uppercase()))),
            acme_password: var("CROSSPROBE_ACME_AMQP_PASSWORD"),
            globex_password: var("CROSSPROBE_GLOBEX_AMQP_PASSWORD"),
            secure: std::env::var_os("CROSSPROBE_CA_FILE").map(|ca| Secure {
                kafka_ssl: ZONES.map(|z| var(&format!("CROSSPROBE_KAFKA_SSL_{}", z.to_uppercase()))),
                kafka_sasl_ssl: ZONES
                    .map(|z| var(&format!("CROSSPROBE_KAFKA_SASL_SSL_{}", z.to_uppercase()))),
                amqps: ZONES.map(|z| var(&format!("CROSSPROBE_AMQPS_{}", z.to_uppercase()))),
                ca_file: PathBuf::from(ca),
                untrusted_ca_file: PathBuf::from(var("CROSSPROBE_UNTRUSTED_CA_FILE")),
            }),
            ctl: std::env::var_os("CROSSPROBE_LOCAL_CTL").map(PathBuf::from),
        }
    })
}

fn ctl_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local/crossprobe-local")
}

fn ctl_command(ctl: &Path, args: &[&str]) -> std::process::Output {
    Command::new(ctl).args(args).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", ctl.display()))
}

/// Serializes broker tests within one test binary.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// An injected fault; dropping it heals the zone.
pub struct Fault {
    ctl: PathBuf,
    zone: String,
}

impl Brokers {
    /// Injects `kind` (with `arg`, e.g. the tenant of `revoke`) into `zone`. Returns `None`
    /// (and says why) when the brokers are the user's own.
    pub fn fault(&self, zone: &str, kind: &str, arg: Option<&str>) -> Option<Fault> {
        let Some(ctl) = &self.ctl else {
            eprintln!("skipping fault {kind} on zone {zone}: brokers come from the environment, not crossprobe-local");
            return None;
        };
        let mut args = vec!["fault", zone, kind];
        args.extend(arg);
        let out = ctl_command(ctl, &args);
        // Registered before checking, so even a half-applied fault is healed.
        let fault = Fault { ctl: ctl.clone(), zone: zone.to_owned() };
        assert!(out.status.success(), "fault {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        Some(fault)
    }

    /// The brokers' control script, when they are ours.
    pub fn ctl(&self) -> Option<&Path> {
        self.ctl.as_deref()
    }
}

impl Fault {
    /// Heals now, checking that it worked.
    pub fn heal(self) {
        let out = ctl_command(&self.ctl, &["heal", &self.zone]);
        assert!(out.status.success(), "heal {} failed: {}", self.zone, String::from_utf8_lossy(&out.stderr));
        std::mem::forget(self);
    }
}

impl Drop for Fault {
    fn drop(&mut self) {
        let out = ctl_command(&self.ctl, &["heal", &self.zone]);
        if !out.status.success() {
            eprintln!("heal {} failed: {}", self.zone, String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// A random suffix so every test has its own topics, queues and instance.
pub fn unique() -> String {
    format!("{:08x}", crossprobe::workers::random_u64() as u32)
}

/// Probe timing of a generated matrix.
pub struct Timing {
    pub interval: &'static str,
    pub timeout: &'static str,
}

pub const FAST: Timing = Timing { interval: "500ms", timeout: "400ms" };

/// The local example's matrix (3 zones x 2 tenants x 2 protocols) on `brokers`, with topics,
/// queues and instance unique to this call.
pub fn local_matrix(b: &Brokers, timing: &Timing) -> (String, String) {
    let id = unique();
    let mut toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:0\"\ninstance = \"test-{id}\"\n\n[probe]\ninterval = \"{}\"\ntimeout = \"{}\"\n\n",
        timing.interval, timing.timeout
    );
    for (i, z) in ZONES.iter().enumerate() {
        toml += &format!(
            "[[targets]]\nname = \"kafka-{z}\"\nprotocol = \"kafka\"\naz = \"{z}\"\naddresses = [\"{}\"]\n{TANSU_FETCH}\n",
            b.kafka[i]
        );
        toml += &format!(
            "[[targets]]\nname = \"rabbit-{z}\"\nprotocol = \"amqp\"\naz = \"{z}\"\naddresses = [\"{}\"]\n\n",
            b.amqp[i]
        );
    }
    for t in ["acme", "globex"] {
        toml += &format!(
            "[[tenants]]\nname = \"{t}\"\nkafka = {{ topic = \"crossprobe-{t}-{id}\" }}\namqp = {{ vhost = \"{t}\", user = \"crossprobe-{t}\", password_env = \"CROSSPROBE_{}_AMQP_PASSWORD\" }}\n\n",
            t.to_uppercase()
        );
    }
    (toml, id)
}

pub fn parse(toml: &str) -> crossprobe::config::ValidatedConfig {
    crossprobe::config::ValidatedConfig::parse(toml, Path::new("generated.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

/// A plain HTTP/1.1 GET on loopback: status and body. Enough for our endpoints and
/// Prometheus's API, without an HTTP client dependency.
pub fn http_get(addr: std::net::SocketAddr, path_and_query: &str) -> std::io::Result<(u16, String)> {
    http(addr, "GET", path_and_query)
}

/// A bodiless HTTP/1.1 request of any method, like [`http_get`].
pub fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path_and_query: &str,
) -> std::io::Result<(u16, String)> {
    let (head, body) = http_response(addr, method, path_and_query)?;
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, body))
}

/// A bodiless HTTP/1.1 request: the response's head (status line and headers) and its body.
pub fn http_response(
    addr: std::net::SocketAddr,
    method: &str,
    path_and_query: &str,
) -> std::io::Result<(String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    Ok((head.to_owned(), if chunked { dechunk(body) } else { body.to_owned() }))
}

/// Stops a daemon and checks it stopped cleanly within 20 s.
pub async fn stop_daemon(d: crossprobe::daemon::Daemon) {
    d.stop();
    tokio::time::timeout(std::time::Duration::from_secs(20), d.wait())
        .await
        .expect("daemon stops in time")
        .expect("clean stop");
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Percent-encodes a query parameter value.
pub use crossprobe_probes::percent_encode as encode;

/// Polls `check` every 250 ms until it returns `Some`, or panics after `within` naming `what`
/// and the last value seen.
pub async fn eventually<T, F: FnMut() -> Result<T, String>>(
    what: &str,
    within: std::time::Duration,
    mut check: F,
) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if std::time::Instant::now() > deadline => {
                panic!("{what}: not within {within:?}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    }
}

/// Outcomes per cell id that `pool` reports over `period`.
pub async fn collect(
    pool: &mut crossprobe::workers::WorkerPool,
    config: &crossprobe::config::ValidatedConfig,
    period: std::time::Duration,
) -> std::collections::BTreeMap<String, Vec<crossprobe_probes::outcome::Outcome>> {
    use crossprobe::workers::Seen;
    use crossprobe_probes::tracker::Event;
    let mut seen: std::collections::BTreeMap<String, Vec<_>> = std::collections::BTreeMap::new();
    let until = tokio::time::Instant::now() + period;
    while let Ok(Some(r)) = tokio::time::timeout_at(until, pool.next()).await {
        if let Seen::Probe(Event::Done(d)) = r.seen {
            seen.entry(config.matrix.cells()[r.cell].id.to_string()).or_default().push(d.outcome);
        }
    }
    seen
}

/// A RabbitMQ command line tool (`rabbitmqctl`, `rabbitmq-queues`) aimed at `node` of the
/// crossprobe-local zones whose ports start at `base`: they run their own epmd on BASE+369.
pub fn rabbitmq_tool(tool: &str, node: &str, base: u16) -> Command {
    let mut command = Command::new(tool);
    command.args(["-n", node]).env("ERL_EPMD_PORT", (base + 369).to_string());
    command
}

/// The port base of the suite's zones (`CROSSPROBE_LOCAL_PORT_BASE`, default 19000).
pub fn local_port_base() -> u16 {
    std::env::var("CROSSPROBE_LOCAL_PORT_BASE").ok().and_then(|b| b.parse().ok()).unwrap_or(19000)
}

/// The repository's root, where the CLI tests run the binary.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `crossprobe ARGS`, run at the repository root until it ends.
pub fn crossprobe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_crossprobe"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("crossprobe runs")
}

/// `command`'s output, killing it and failing the test when it has not ended within `bound`
/// (generous: the point is "ends", not "is fast").
pub fn output_within(command: &mut Command, bound: std::time::Duration) -> std::process::Output {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the command starts");
    let deadline = std::time::Instant::now() + bound;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} still ran after {bound:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A clustered set of local zones (`CROSSPROBE_LOCAL_AMQP_CLUSTER=1`) with its own state
/// directory and ports from `CROSSPROBE_TEST_CLUSTER_PORT_BASE` (default 21000), taken down on
/// drop.
pub struct Cluster {
    pub base: u16,
    env: Vec<(String, String)>,
    /// `export NAME=VALUE` lines of `crossprobe-local env`.
    vars: BTreeMap<String, String>,
}

impl Cluster {
    pub fn up() -> Cluster {
        let base: u16 = std::env::var("CROSSPROBE_TEST_CLUSTER_PORT_BASE")
            .ok()
            .and_then(|b| b.parse().ok())
            .unwrap_or(21000);
        let state = std::env::temp_dir().join(format!("crossprobe-cluster-{base}"));
        let env = vec![
            ("CROSSPROBE_LOCAL_STATE".to_owned(), state.to_str().unwrap().to_owned()),
            ("CROSSPROBE_LOCAL_PORT_BASE".to_owned(), base.to_string()),
            ("CROSSPROBE_LOCAL_AMQP_CLUSTER".to_owned(), "1".to_owned()),
        ];
        let mut cluster = Cluster { base, env, vars: BTreeMap::new() };
        let up = cluster.ctl(&["up"]);
        assert!(up.status.success(), "up failed: {}", String::from_utf8_lossy(&up.stderr));
        let vars = String::from_utf8(cluster.ctl(&["env"]).stdout).unwrap();
        cluster.vars = vars
            .lines()
            .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches(['\'', '"']).to_owned()))
            .collect();
        cluster
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local/crossprobe-local"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("crossprobe-local runs")
    }

    pub fn var(&self, name: &str) -> &str {
        self.vars.get(name).unwrap_or_else(|| panic!("{name} not in crossprobe-local env: {:?}", self.vars))
    }

    /// A RabbitMQ command line tool run against node `rabbit-<zone>`; panics when it fails.
    pub fn rabbit(&self, tool: &str, zone: &str, args: &[&str]) -> String {
        let out =
            rabbitmq_tool(tool, &format!("rabbit-{zone}@localhost"), self.base).args(args).output().unwrap();
        assert!(out.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let down = self.ctl(&["down"]);
        if !down.status.success() {
            eprintln!("down failed: {}", String::from_utf8_lossy(&down.stderr));
        }
    }
}
