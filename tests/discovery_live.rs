//! Kafka discovery and the group stage against the real local zones (tansu 0.6.0: one broker,
//! id 111, per zone's cluster): the discovery example probes every cell ok through the targets
//! discovery made; a cluster unreachable at start leaves its cells `connect_failed`, gains its
//! broker's cells within a discovery period once it answers (the other cells undisturbed) and
//! keeps them when it stops answering; the group stage commits the probes' offsets through the
//! consumer group. What tansu cannot show (several brokers, leadership moves, a coordinator that
//! fails apart from its broker) is unit-tested with scripted answers: see README, "Discovery and
//! the group stage".

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use crossprobe::daemon::{self, Daemon, RunOptions};
use crossprobe::shutdown::Shutdown;
use crossprobe::workers::WorkerPool;
use crossprobe_probes::outcome::Outcome;
use support::{brokers, collect, eventually, exclusive, free_port, http_get, parse, stop_daemon, unique};

/// `config/examples/discovery.toml` on the suite's zones, with topics and instance of its own.
fn discovery_example(b: &support::Brokers, id: &str) -> String {
    let mut toml = std::fs::read_to_string("config/examples/discovery.toml").unwrap();
    for i in 0..3 {
        toml = toml.replace(&format!("127.0.0.1:{}", 19092 + i), &b.kafka[i]);
        toml = toml.replace(&format!("127.0.0.1:{}", 19672 + i), &b.amqp[i]);
    }
    toml.replace("instance = \"local-discovery\"", &format!("instance = \"test-{id}\""))
        .replace("listen = \"127.0.0.1:9466\"", "listen = \"127.0.0.1:0\"")
        .replace("topic = \"crossprobe-acme\"", &format!("topic = \"crossprobe-acme-{id}\""))
        .replace("topic = \"crossprobe-globex\"", &format!("topic = \"crossprobe-globex-{id}\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_discovery_example_probes_every_cell_ok_through_the_brokers_found() {
    let b = brokers();
    let _guard = exclusive().await;
    let source = parse(&discovery_example(b, &unique()));
    let (config, results) = daemon::once_discovered(&source).await.expect("once runs");
    let ids: Vec<String> = config.matrix.cells().iter().map(|c| c.id.to_string()).collect();
    for z in ["a", "b", "c"] {
        for t in ["acme", "globex"] {
            let id = format!("kafka-{z}-111/{t}");
            assert!(ids.contains(&id), "discovery made no cell {id}; cells: {ids:?}");
        }
    }
    assert_eq!(ids.len(), 12, "3 zones x 2 tenants x 2 protocols; cells: {ids:?}");
    let failed: Vec<String> = ids
        .iter()
        .zip(&results)
        .filter(|(_, r)| !r.is_some_and(|r| r.outcome == Outcome::Ok))
        .map(|(id, r)| format!("{id}: {:?}", r.map(|r| r.outcome)))
        .collect();
    assert!(failed.is_empty(), "every cell ok expected; not ok: {failed:?}");
    let zone_of =
        |id: &str| config.matrix.cells().iter().find(|c| c.id.as_str() == id).unwrap().labels[0].clone();
    assert_eq!(zone_of("kafka-c-111/acme"), "c", "zone from the zones map");
    assert_eq!(zone_of("kafka-b-111/acme"), "b", "zone from the target's az");
}

/// Forwards TCP connections on `port` to `to` until aborted (its connections go with it).
fn forward(port: u16, to: String) -> tokio::task::JoinHandle<()> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is still free");
    listener.set_nonblocking(true).unwrap();
    tokio::spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            let to = to.clone();
            connections.spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

/// `crossprobe_probes_total` by (broker, outcome), from `/metrics`.
fn probes(d: &Daemon) -> Result<BTreeMap<(String, String), u64>, String> {
    let (_, text) = http_get(d.addr(), "/metrics").map_err(|e| e.to_string())?;
    let label = |line: &str, name: &str| {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        Some(line[start..].split('"').next()?.to_owned())
    };
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("crossprobe_probes_total{")) {
        let (Some(broker), Some(outcome)) = (label(line, "broker"), label(line, "outcome")) else { continue };
        let n = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0);
        out.insert((broker, outcome), n);
    }
    Ok(out)
}

fn count(m: &BTreeMap<(String, String), u64>, broker: &str, outcome: &str) -> u64 {
    m.get(&(broker.to_owned(), outcome.to_owned())).copied().unwrap_or(0)
}

fn brokers_of(m: &BTreeMap<(String, String), u64>) -> Vec<String> {
    let mut b: Vec<String> = m.keys().map(|(b, _)| b.clone()).collect();
    b.dedup();
    b
}

/// A discovered cluster whose bootstrap does not answer at start: its cells report
/// `connect_failed` and the daemon runs on. Once the bootstrap answers, the broker's cells
/// replace them within one discovery period, while a listed target's cells keep their workers
/// and counts. When the bootstrap stops answering, the broker's cells stay: a failed discovery
/// keeps the last known set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_connect_failed_then_gains_its_brokers_cells_and_keeps_them() {
    let b = brokers();
    let _guard = exclusive().await;
    let id = unique();
    let bootstrap = free_port();
    let toml = format!(
        r#"[daemon]
listen = "127.0.0.1:0"
instance = "test-{id}"

[probe]
interval = "500ms"
timeout = "400ms"

[[targets]]
name = "kafka-x"
protocol = "kafka"
az = "a"
addresses = ["127.0.0.1:{bootstrap}"]
kafka = {{ fetch_wait = "5ms" }}
discovery = {{ every = "2s" }}

[[targets]]
name = "kafka-b"
protocol = "kafka"
az = "b"
addresses = ["{}"]
kafka = {{ fetch_wait = "5ms" }}

[[tenants]]
name = "acme"
kafka = {{ topic = "crossprobe-acme-{id}" }}
"#,
        b.kafka[1]
    );
    let d = Daemon::start(parse(&toml), RunOptions::default()).await.expect("the daemon starts");
    eventually("the undiscovered cluster's cell reports connect_failed", Duration::from_secs(20), || {
        let m = probes(&d)?;
        (count(&m, "kafka-x", "connect_failed") >= 2 && count(&m, "kafka-b", "ok") >= 2)
            .then_some(())
            .ok_or(format!("{m:?}"))
    })
    .await;
    let before = count(&probes(&d).unwrap(), "kafka-b", "ok");

    let forwarder = forward(bootstrap, b.kafka[0].clone());
    let found_at = std::time::Instant::now();
    // One discovery period (2 s) plus a probe round and the metadata timeouts, generously.
    eventually("the broker's cell replaces the bootstrap's", Duration::from_secs(30), || {
        let m = probes(&d)?;
        let gone = !brokers_of(&m).contains(&"kafka-x".to_owned());
        (gone && count(&m, "kafka-x-111", "ok") >= 1).then_some(()).ok_or(format!("{m:?}"))
    })
    .await;
    let took = found_at.elapsed();
    let after = count(&probes(&d).unwrap(), "kafka-b", "ok");
    assert!(after >= before, "the listed target's counts were reset: {before} ok before, {after} after");

    forwarder.abort();
    let _ = forwarder.await;
    // Three discovery periods with the bootstrap gone: every read fails.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let m = probes(&d).unwrap();
    assert_eq!(
        brokers_of(&m),
        ["kafka-b", "kafka-x-111"],
        "a failed discovery keeps the last known brokers; series: {m:?}"
    );
    let later = count(&m, "kafka-b", "ok");
    assert!(later > after, "the listed target kept probing ok: {after} then {later}");
    eprintln!("discovered within {took:?} of the bootstrap answering");
    stop_daemon(d).await;
}

/// The group stage on tansu: every probe commits its partition's position through the group
/// `crossprobe-<instance>`, and the committed offset is read back from the coordinator. (With
/// one broker the coordinator is that broker: a coordinator failure apart from a broker failure
/// cannot be made here; the coordinator error codes' kind is unit-tested.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_stage_commits_each_probes_offset_through_the_consumer_group() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let b = brokers();
    let _guard = exclusive().await;
    let id = unique();
    let topic = format!("crossprobe-acme-{id}");
    let toml = format!(
        r#"[daemon]
listen = "127.0.0.1:0"
instance = "test-{id}"

[probe]
interval = "500ms"
timeout = "400ms"

[[targets]]
name = "kafka-a"
protocol = "kafka"
az = "a"
addresses = ["{}"]
kafka = {{ fetch_wait = "5ms", group_commit = true }}

[[tenants]]
name = "acme"
kafka = {{ topic = "{topic}" }}
"#,
        b.kafka[0]
    );
    let config = parse(&toml);
    let mut pool = WorkerPool::start(&config, false, &Shutdown::new()).unwrap();
    let seen = collect(&mut pool, &config, Duration::from_secs(6)).await;
    pool.stop().await.unwrap();
    let outcomes = &seen["kafka-a/acme"];
    let ok = outcomes.iter().filter(|o| **o == Outcome::Ok).count();
    assert!(ok >= 5, "the group stage's probes should be ok; saw {outcomes:?}");

    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &b.kafka[0])
        .set("group.id", format!("crossprobe-test-{id}"))
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(&topic, 0);
    let committed =
        tokio::task::spawn_blocking(move || consumer.committed_offsets(tpl, Duration::from_secs(10)))
            .await
            .unwrap()
            .expect("the coordinator answers the committed offsets");
    let offset = committed.elements()[0].offset();
    // Each probe commits the position the previous ones reached: at least ok - 1 messages.
    match offset {
        rdkafka::Offset::Offset(n) => {
            assert!(n >= ok as i64 - 1, "committed offset {n} after {ok} ok probes")
        }
        other => panic!("expected a committed offset for the group, got {other:?}"),
    }
}

/// RabbitMQ discovery on a real three-node cluster (`CROSSPROBE_LOCAL_AMQP_CLUSTER=1`, ports from
/// `CROSSPROBE_TEST_CLUSTER_PORT_BASE`): the management API's running nodes each get their
/// cells; a node whose RabbitMQ application stops loses its cells within a discovery period
/// while the other nodes' cells go on counting, and gains them back once it runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_leaving_or_joining_a_rabbitmq_cluster_loses_or_gains_its_cells() {
    if brokers().ctl().is_none() {
        eprintln!("skipped: the tests run against the user's own brokers, without crossprobe-local");
        return;
    }
    let cluster = support::Cluster::up();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("discovery-{}", unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, variable: &str| {
        let path = dir.join(name);
        std::fs::write(&path, cluster.var(variable)).unwrap();
        path.display().to_string()
    };
    let (monitor, acme) =
        (file("monitor", "CROSSPROBE_MONITOR_PASSWORD"), file("acme", "CROSSPROBE_ACME_AMQP_PASSWORD"));
    let id = unique();
    let toml = format!(
        r#"[daemon]
listen = "127.0.0.1:0"
instance = "test-{id}"

[probe]
interval = "500ms"
timeout = "400ms"

[[targets]]
name = "amqp"
protocol = "amqp"
az = "a"
addresses = ["{}"]
discovery = {{ every = "2s", management_url = "{}", user = "crossprobe-monitor", password_file = "{monitor}", zones = {{ "rabbit-b@localhost" = "b", "rabbit-c@localhost" = "c" }} }}

[[tenants]]
name = "acme"
amqp = {{ vhost = "acme", user = "crossprobe-acme", password_file = "{acme}" }}
"#,
        cluster.var("CROSSPROBE_AMQP_A"),
        cluster.var("CROSSPROBE_AMQP_MANAGEMENT_A"),
    );
    let d = Daemon::start(parse(&toml), RunOptions::default()).await.expect("the daemon starts");
    let all = ["amqp-rabbit-a", "amqp-rabbit-b", "amqp-rabbit-c"];
    let every_ok = |d: &Daemon, want: &[&str]| {
        let m = probes(d)?;
        (brokers_of(&m) == want && want.iter().all(|b| count(&m, b, "ok") >= 2))
            .then_some(m.clone())
            .ok_or(format!("{m:?}"))
    };
    eventually("every node's cell probes ok", Duration::from_secs(30), || every_ok(&d, &all)).await;

    let left = std::time::Instant::now();
    cluster.rabbit("rabbitmqctl", "c", &["stop_app"]);
    let m = eventually("node c's cell retired", Duration::from_secs(20), || {
        let m = probes(&d)?;
        (brokers_of(&m) == all[..2]).then_some(m.clone()).ok_or(format!("{m:?}"))
    })
    .await;
    let took = left.elapsed();
    let before = count(&m, "amqp-rabbit-a", "ok");
    eventually("node a's cell goes on", Duration::from_secs(10), || {
        let m = probes(&d)?;
        (count(&m, "amqp-rabbit-a", "ok") > before + 2).then_some(()).ok_or(format!("{m:?}"))
    })
    .await;

    let joined = std::time::Instant::now();
    cluster.rabbit("rabbitmqctl", "c", &["start_app"]);
    eventually("node c's cell back and ok", Duration::from_secs(30), || every_ok(&d, &all)).await;
    eprintln!(
        "node c's cell retired {took:?} after stop_app; back and ok {:?} after start_app",
        joined.elapsed()
    );
    let m = probes(&d).unwrap();
    assert!(
        count(&m, "amqp-rabbit-a", "ok") > before,
        "node a's counts were kept through both changes: {before} then {m:?}"
    );
    stop_daemon(d).await;
    let _ = std::fs::remove_dir_all(&dir);
}
