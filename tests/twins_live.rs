//! Two `crossprobe run` processes with one configuration (a rolling update's old and new pod,
//! or `replicas: 2`) against the local zones: neither takes the other's probes, and neither
//! leaves a probe queue behind once both stopped.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{brokers, eventually, exclusive, free_port, http_get, local_matrix, Process, Timing};

/// The daemon's `[probe]` defaults, as in `config/examples/local.toml`.
const DEFAULTS: Timing = Timing { interval: "1s", timeout: "500ms" };

/// How long both run side by side once every cell of both has probed ok.
const SIDE_BY_SIDE: Duration = Duration::from_secs(30);

/// The sum of `metric` over every series whose labels include `label`.
fn sum(text: &str, metric: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn metrics(addr: SocketAddr) -> Result<String, String> {
    match http_get(addr, "/metrics") {
        Ok((200, body)) => Ok(body),
        other => Err(format!("{other:?}")),
    }
}

/// Probes of `addr`'s daemon that went wrong because of the other: lost or late. (On Kafka each
/// reads the other's probes from the shared partition and drops them as foreign: that is by
/// design and takes nothing away.)
fn stolen(addr: SocketAddr) -> Result<f64, String> {
    let text = metrics(addr)?;
    Ok(sum(&text, "crossprobe_probes_total", "outcome=\"lost\"")
        + sum(&text, "crossprobe_probes_total", "outcome=\"late\"")
        + sum(&text, "crossprobe_late_messages_total", ""))
}

/// `vhost`'s queue names on crossprobe-local's node `node`.
fn queues(node: &str, vhost: &str) -> Vec<String> {
    let out = support::rabbitmq_tool("rabbitmqctl", &format!("{node}@localhost"), support::local_port_base())
        .args(["-q", "list_queues", "-p", vhost, "name"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_with_one_configuration_take_none_of_each_others_probes() {
    let b = brokers();
    let _x = exclusive().await;
    let (toml, id) = local_matrix(b, &DEFAULTS);
    let instance = format!("test-{id}");
    let mut daemons = Vec::new();
    let mut files = Vec::new();
    for twin in 0..2 {
        let port = free_port();
        let text = toml.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""));
        let path = std::env::temp_dir().join(format!("crossprobe-twin-{id}-{twin}.toml"));
        std::fs::write(&path, text).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_crossprobe"))
            .args(["run", "--config", path.to_str().unwrap()])
            .env("RUST_LOG", "warn,lapin=off")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("crossprobe starts");
        daemons.push((Process(child), SocketAddr::from(([127, 0, 0, 1], port))));
        files.push(path);
    }

    // Both probe every cell ok, then run side by side.
    for (_, addr) in &daemons {
        eventually("every cell of both daemons probed ok", Duration::from_secs(90), || {
            let text = metrics(*addr)?;
            let ok = text
                .lines()
                .filter(|l| l.starts_with("crossprobe_probes_total{") && l.contains("outcome=\"ok\""))
                .filter(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) > 0.0)
                .count();
            if ok == 12 {
                Ok(())
            } else {
                Err(format!("{ok} of 12 cells probed ok"))
            }
        })
        .await;
    }
    let before: Vec<f64> = daemons.iter().map(|(_, a)| stolen(*a).unwrap()).collect();
    tokio::time::sleep(SIDE_BY_SIDE).await;
    let after: Vec<f64> = daemons.iter().map(|(_, a)| stolen(*a).unwrap()).collect();
    let ok: Vec<f64> = daemons
        .iter()
        .map(|(_, a)| sum(&metrics(*a).unwrap(), "crossprobe_probes_total", "outcome=\"ok\""))
        .collect();

    // Both stop; their queues go with them.
    let mut queues_before = Vec::new();
    for zone in ["a", "b", "c"] {
        for vhost in ["acme", "globex"] {
            queues_before.extend(queues(&format!("rabbit-{zone}"), vhost));
        }
    }
    for (p, _) in &mut daemons {
        let status = Command::new("kill").args(["-TERM", &p.0.id().to_string()]).status().unwrap();
        assert!(status.success());
    }
    for (p, _) in &mut daemons {
        let exit = p.0.wait().unwrap();
        assert_eq!(exit.code(), Some(0), "exit status after SIGTERM");
    }
    for f in &files {
        let _ = std::fs::remove_file(f);
    }
    let mine = |q: &String| q.starts_with(&format!("crossprobe.{instance}."));
    let ours_running = queues_before.iter().filter(|q| mine(q)).count();
    let mut left = Vec::new();
    for zone in ["a", "b", "c"] {
        for vhost in ["acme", "globex"] {
            left.extend(queues(&format!("rabbit-{zone}"), vhost).into_iter().filter(mine));
        }
    }

    eprintln!("probes ok {ok:?}; lost or late before {before:?}, after {after:?}");
    for (twin, (b, a)) in before.iter().zip(&after).enumerate() {
        assert_eq!(a - b, 0.0, "daemon {twin} lost {} probes to its twin in {SIDE_BY_SIDE:?}", a - b);
    }
    assert_eq!(ours_running, 12, "each daemon has its own 6 probe queues: {queues_before:?}");
    assert!(left.is_empty(), "queues left behind once both stopped: {left:?}");
}
