//! Quorum queues on a real three-node RabbitMQ cluster (`CROSSPROBE_LOCAL_AMQP_CLUSTER=1`, its own
//! state directory and ports, brought up and down by the test): when the node that leads a
//! cell's queue is paused, the cell (connected to a healthy node) sees `publish_failed{timeout}`
//! until Raft elects a new leader among the other replicas (a probe caught in the hand-over may be
//! `lost`), then `ok` again while that node is still paused; the cells connected to the paused
//! node fail, and the rest never do.
//!
//! The ports start at `CROSSPROBE_TEST_CLUSTER_PORT_BASE` (default 21000). Skipped when the tests
//! run against the user's own brokers without crossprobe-local (`CROSSPROBE_LOCAL_CTL` unset).

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crossprobe::config::{QueueKind, ValidatedConfig};
use crossprobe::shutdown::Shutdown;
use crossprobe::workers::WorkerPool;
use crossprobe_probes::outcome::{ErrorKind, Outcome};
use support::{collect, Cluster};

/// The node that leads `queue` in vhost `acme`, and how many of its members are online.
fn leader(cluster: &Cluster, queue: &str) -> (String, usize) {
    let listing =
        cluster.rabbit("rabbitmqctl", "a", &["-q", "list_queues", "-p", "acme", "name", "leader", "online"]);
    let line = listing
        .lines()
        .find(|l| l.starts_with(&format!("{queue}\t")))
        .unwrap_or_else(|| panic!("{queue} not in:\n{listing}"));
    let mut fields = line.split('\t').skip(1);
    let leader = fields.next().unwrap().to_owned();
    let online = fields.next().unwrap_or("").matches('@').count();
    (leader, online)
}

/// `config/examples/local-quorum.toml` on the cluster's nodes, with the passwords in files.
fn quorum_example(cluster: &Cluster, dir: &Path) -> ValidatedConfig {
    let mut toml = std::fs::read_to_string("config/examples/local-quorum.toml").unwrap();
    for (zone, default) in [("A", "127.0.0.1:19672"), ("B", "127.0.0.1:19673"), ("C", "127.0.0.1:19674")] {
        toml = toml.replace(default, cluster.var(&format!("CROSSPROBE_AMQP_{zone}")));
    }
    for tenant in ["ACME", "GLOBEX"] {
        let variable = format!("CROSSPROBE_{tenant}_AMQP_PASSWORD");
        let file = dir.join(format!("{}.password", tenant.to_lowercase()));
        std::fs::write(&file, cluster.var(&variable)).unwrap();
        toml = toml.replace(
            &format!("password_env = \"{variable}\""),
            &format!("password_file = \"{}\"", file.display()),
        );
    }
    let instance = format!("test-{}", support::unique());
    support::parse(&toml.replace("instance = \"local-quorum\"", &format!("instance = \"{instance}\"")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_quorum_leader_times_publishes_out_until_a_new_leader_is_elected() {
    if support::brokers().ctl().is_none() {
        eprintln!("skipped: the tests run against the user's own brokers, without crossprobe-local");
        return;
    }
    let cluster = Cluster::up();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("quorum-{}", support::unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = quorum_example(&cluster, &dir);
    let mut p = WorkerPool::start(&config, false, &Shutdown::new()).unwrap();
    let healthy = collect(&mut p, &config, Duration::from_secs(8)).await;
    assert!(
        healthy.len() == 6 && healthy.values().all(|o| o.last() == Some(&Outcome::Ok)),
        "every cell ok at first: {healthy:?}"
    );

    // rabbit-a/acme's queue is led by node a (declared through it). Move the leadership away by
    // removing a's replica and adding it back, so the cell's own node stays healthy.
    let cell = config.matrix.cells().iter().find(|c| c.id.as_str() == "rabbit-a/acme").unwrap();
    let queue =
        crossprobe::clients::queue_name(&config.daemon.instance, p.instance_id(), cell, QueueKind::Quorum);
    assert_eq!(leader(&cluster, &queue).0, "rabbit-a@localhost");
    cluster.rabbit(
        "rabbitmq-queues",
        "a",
        &["delete_member", "--vhost", "acme", &queue, "rabbit-a@localhost"],
    );
    cluster.rabbit("rabbitmq-queues", "a", &["add_member", "--vhost", "acme", &queue, "rabbit-a@localhost"]);
    let leader =
        support::eventually("a new leader with three replicas online", Duration::from_secs(30), || {
            let (leader, online) = leader(&cluster, &queue);
            (leader != "rabbit-a@localhost" && online == 3)
                .then_some(leader.clone())
                .ok_or(format!("{leader}, {online} online"))
        })
        .await;
    let paused =
        leader.strip_prefix("rabbit-").and_then(|l| l.strip_suffix("@localhost")).unwrap().to_owned();
    let other = ["b", "c"].into_iter().find(|z| *z != paused).unwrap();
    // Probes of the move itself are not what is measured.
    collect(&mut p, &config, Duration::from_secs(3)).await;

    let fault = cluster.ctl(&["fault", &paused, "pause"]);
    assert!(fault.status.success(), "fault: {}", String::from_utf8_lossy(&fault.stderr));
    let seen = collect(&mut p, &config, Duration::from_secs(30)).await;
    let heal = cluster.ctl(&["heal", &paused]);
    p.stop().await.unwrap();
    assert!(heal.status.success(), "heal: {}", String::from_utf8_lossy(&heal.stderr));
    let _ = std::fs::remove_dir_all(&dir);

    let timeout = Outcome::PublishFailed(ErrorKind::Timeout);
    let moved = &seen["rabbit-a/acme"];
    let count = |o: Outcome| moved.iter().filter(|m| **m == o).count();
    eprintln!(
        "rabbit-a/acme with its leader on paused {paused}: {} publish timeouts, {} lost, {} ok",
        count(timeout),
        count(Outcome::Lost),
        count(Outcome::Ok)
    );
    let first_failure = moved.iter().position(|o| *o != Outcome::Ok);
    assert!(
        first_failure.is_some_and(|i| moved[i] == timeout),
        "rabbit-a/acme: the paused leader must time publishes out: {moved:?}"
    );
    // A probe caught in the hand-over can be lost: published, never delivered in time.
    assert!(
        moved.iter().all(|o| *o == Outcome::Ok || *o == timeout || *o == Outcome::Lost)
            && moved.iter().filter(|o| **o == Outcome::Lost).count() <= 2,
        "rabbit-a/acme: only publish timeouts, and at most two lost in the hand-over: {moved:?}"
    );
    assert!(
        moved.iter().rev().take(5).all(|o| *o == Outcome::Ok),
        "rabbit-a/acme: ok again through a new leader while {paused} is still paused: {moved:?}"
    );
    for tenant in ["acme", "globex"] {
        let down = &seen[&format!("rabbit-{paused}/{tenant}")];
        assert!(
            down.iter().rev().take(5).all(|o| *o != Outcome::Ok),
            "rabbit-{paused}/{tenant}: its node is paused: {down:?}"
        );
        let up = &seen[&format!("rabbit-{other}/{tenant}")];
        assert!(up.iter().all(|o| *o == Outcome::Ok), "rabbit-{other}/{tenant}: a paused follower: {up:?}");
    }
    let globex = &seen["rabbit-a/globex"];
    assert!(globex.iter().all(|o| *o == Outcome::Ok), "rabbit-a/globex: a paused follower: {globex:?}");
}
