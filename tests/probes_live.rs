//! Round-trip probes against the real local zones: every cell ok, and each real fault (pause,
//! kill, memory alarm, revoked tenant, stray messages) seen where it happens and nowhere else,
//! with recovery after healing and no daemon restart; a slow zone (brownout) only slower.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crossprobe::config::{QueueKind, ValidatedConfig};
use crossprobe::daemon;
use crossprobe::shutdown::Shutdown;
use crossprobe::workers::{Seen, WorkerPool};
use crossprobe_probes::outcome::{ErrorKind, Outcome};
use crossprobe_probes::tracker::Event;
use support::{brokers, collect, exclusive, local_matrix, parse, FAST};

/// Waits until every cell matching `filter` has reported `ok` since the call, or panics.
async fn until_ok(
    p: &mut WorkerPool,
    config: &ValidatedConfig,
    filter: impl Fn(&str) -> bool,
    within: Duration,
) {
    let mut pending: Vec<String> =
        config.matrix.cells().iter().map(|c| c.id.to_string()).filter(|id| filter(id)).collect();
    let deadline = tokio::time::Instant::now() + within;
    while !pending.is_empty() {
        match tokio::time::timeout_at(deadline, p.next()).await {
            Ok(Some(r)) => {
                if matches!(r.seen, Seen::Probe(Event::Done(d)) if d.outcome == Outcome::Ok) {
                    let id = config.matrix.cells()[r.cell].id.to_string();
                    pending.retain(|c| *c != id);
                }
            }
            _ => panic!("cells {pending:?} did not report ok within {within:?}"),
        }
    }
}

/// The local matrix, probing, once every cell has reported ok.
async fn healthy_matrix() -> (ValidatedConfig, WorkerPool) {
    let (toml, _) = local_matrix(brokers(), &FAST);
    let config = parse(&toml);
    let mut p = WorkerPool::start(&config, false, &Shutdown::new()).unwrap();
    until_ok(&mut p, &config, |_| true, Duration::from_secs(20)).await;
    (config, p)
}

/// Every zone-b cell's outcomes satisfy `failed` (described by `what`); every other cell's are ok.
fn only_zone_b(
    config: &ValidatedConfig,
    seen: &BTreeMap<String, Vec<Outcome>>,
    what: &str,
    failed: impl Fn(&Outcome) -> bool,
) {
    for cell in config.matrix.cells() {
        let id = cell.id.to_string();
        let outcomes = seen.get(&id).unwrap_or_else(|| panic!("{id}: no outcome: {seen:?}"));
        if in_zone("b")(&id) {
            assert!(outcomes.iter().all(&failed), "{id}: expected {what}, saw {outcomes:?}");
        } else {
            assert!(outcomes.iter().all(|o| *o == Outcome::Ok), "{id}: expected ok, saw {outcomes:?}");
        }
    }
}

fn in_zone(zone: &'static str) -> impl Fn(&str) -> bool {
    move |id: &str| id.split('/').next().is_some_and(|t| t.ends_with(&format!("-{zone}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_local_cell_is_ok_with_positive_latencies() {
    let _x = exclusive().await;
    let (toml, _) = local_matrix(brokers(), &FAST);
    let config = parse(&toml);
    let results = daemon::once(&config).await.expect("once runs");
    assert_eq!(results.len(), 12);
    for (cell, r) in config.matrix.cells().iter().zip(&results) {
        let r = r.unwrap_or_else(|| panic!("{}: no result", cell.id));
        assert_eq!(r.outcome, Outcome::Ok, "{}: {r:?}", cell.id);
        let (publish, roundtrip) = (r.publish.unwrap(), r.roundtrip.unwrap());
        assert!(publish > Duration::ZERO && roundtrip > Duration::ZERO, "{}: {r:?}", cell.id);
        assert!(roundtrip < Duration::from_millis(400), "{}: round trip above the timeout: {r:?}", cell.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_zone_fails_within_the_timeout_and_recovers_after_heal() {
    let _x = exclusive().await;
    let b = brokers();
    let (config, mut p) = healthy_matrix().await;

    let Some(fault) = b.fault("b", "pause", None) else { return p.stop().await.unwrap() };
    let _ = collect(&mut p, &config, Duration::from_millis(600)).await; // probes started before the pause
    let seen = collect(&mut p, &config, Duration::from_secs(3)).await;
    only_zone_b(&config, &seen, "only failures while paused", |o| {
        matches!(o, Outcome::Lost | Outcome::PublishFailed(_) | Outcome::ConnectFailed(_))
    });

    // `once` under the same fault: never hangs, zone b fails, a and c are ok.
    let started = Instant::now();
    let (toml_once, _) = local_matrix(b, &FAST);
    let config_once = parse(&toml_once);
    let results = daemon::once(&config_once).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "once took {:?} with zone b paused",
        started.elapsed()
    );
    for (cell, r) in config_once.matrix.cells().iter().zip(&results) {
        let ok = r.is_some_and(|r| r.outcome == Outcome::Ok);
        assert_eq!(ok, !in_zone("b")(cell.id.as_str()), "once, {}: {r:?}", cell.id);
    }

    fault.heal();
    until_ok(&mut p, &config, in_zone("b"), Duration::from_secs(60)).await;
    p.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_zone_reports_connect_failed_and_recovers_after_restart() {
    let _x = exclusive().await;
    let b = brokers();
    let (config, mut p) = healthy_matrix().await;

    let Some(fault) = b.fault("b", "kill", None) else { return p.stop().await.unwrap() };
    let _ = collect(&mut p, &config, Duration::from_secs(3)).await; // clients notice the refusal
    let seen = collect(&mut p, &config, Duration::from_secs(2)).await;
    only_zone_b(&config, &seen, "connect_failed with the broker killed", |o| {
        matches!(o, Outcome::ConnectFailed(_))
    });
    fault.heal();
    until_ok(&mut p, &config, in_zone("b"), Duration::from_secs(60)).await;
    p.stop().await.unwrap();
}

/// Runs a matrix until every cell is ok, injects `kind` on zone b (with `arg`), and returns the
/// outcomes per cell over the next 3 seconds (after `settle` for the fault to bite); heals and
/// waits for recovery before returning.
async fn outcomes_under_fault(
    kind: &str,
    arg: Option<&str>,
    settle: Duration,
) -> Option<BTreeMap<String, Vec<Outcome>>> {
    let b = brokers();
    let (config, mut p) = healthy_matrix().await;
    let Some(fault) = b.fault("b", kind, arg) else {
        p.stop().await.unwrap();
        return None;
    };
    let _ = collect(&mut p, &config, settle).await;
    let seen = collect(&mut p, &config, Duration::from_secs(3)).await;
    fault.heal();
    until_ok(&mut p, &config, |_| true, Duration::from_secs(60)).await;
    p.stop().await.unwrap();
    Some(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_alarm_blocks_only_the_amqp_cells_of_that_node() {
    let _x = exclusive().await;
    let Some(seen) = outcomes_under_fault("memory-alarm", None, Duration::from_secs(1)).await else { return };
    for (id, outcomes) in &seen {
        if id.starts_with("rabbit-b/") {
            assert!(
                outcomes.iter().all(|o| matches!(o, Outcome::PublishFailed(_))),
                "{id}: expected publish_failed while the node blocks publishers, saw {outcomes:?}"
            );
            assert!(outcomes.contains(&Outcome::PublishFailed(ErrorKind::Blocked)), "{id}: {outcomes:?}");
        } else {
            assert!(outcomes.iter().all(|o| *o == Outcome::Ok), "{id}: expected ok, saw {outcomes:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_tenant_fails_only_that_tenant() {
    let _x = exclusive().await;
    let Some(seen) = outcomes_under_fault("revoke", Some("acme"), Duration::from_secs(1)).await else {
        return;
    };
    for (id, outcomes) in &seen {
        if id == "rabbit-b/acme" {
            assert!(
                outcomes.iter().all(|o| *o == Outcome::ConnectFailed(ErrorKind::Auth)),
                "{id}: expected connect_failed{{kind=auth}}, saw {outcomes:?}"
            );
        } else {
            assert!(outcomes.iter().all(|o| *o == Outcome::Ok), "{id}: expected ok, saw {outcomes:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_messages_are_counted_as_duplicate_corrupt_and_foreign_never_ok() {
    use crossprobe_probes::payload::Header;
    let _x = exclusive().await;
    let b = brokers();
    let (config, mut p) = healthy_matrix().await;

    let kafka_cell = config.matrix.cells().iter().position(|c| c.id.as_str() == "kafka-a/acme").unwrap();
    let amqp_cell = config.matrix.cells().iter().position(|c| c.id.as_str() == "rabbit-a/acme").unwrap();
    let strays = |cell: usize| {
        let key = config.matrix.cells()[cell].key;
        vec![
            Header { instance: p.instance_id(), cell: key, seq: 1, sent_ns: 0 }.encode(64),
            b"definitely not a probe".to_vec(),
            Header { instance: p.instance_id() ^ 1, cell: key, seq: 1, sent_ns: 0 }.encode(64),
        ]
    };
    let topic =
        config.tenants[config.matrix.cells()[kafka_cell].tenant].kafka.as_ref().unwrap().topic.clone();
    inject_kafka(&b.kafka[0], &topic, strays(kafka_cell));
    let queue = crossprobe::clients::queue_name(
        &config.daemon.instance,
        p.instance_id(),
        &config.matrix.cells()[amqp_cell],
        QueueKind::Classic,
    );
    inject_amqp(&b.amqp[0], &b.acme_password, &queue, strays(amqp_cell)).await;

    let mut events: BTreeMap<usize, Vec<Event>> = BTreeMap::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some(r)) = tokio::time::timeout_at(until, p.next()).await {
        if let Seen::Probe(e) = r.seen {
            events.entry(r.cell).or_default().push(e);
        }
    }
    p.stop().await.unwrap();
    for cell in [kafka_cell, amqp_cell] {
        let e = &events[&cell];
        let id = &config.matrix.cells()[cell].id;
        assert!(e.contains(&Event::Duplicate { seq: 1 }), "{id}: no duplicate in {e:?}");
        assert!(e.contains(&Event::Corrupt), "{id}: no corrupt message in {e:?}");
        assert!(e.contains(&Event::Foreign), "{id}: no foreign message in {e:?}");
        let done: Vec<_> =
            e.iter().filter_map(|e| if let Event::Done(d) = e { Some(d) } else { None }).collect();
        assert!(
            done.iter().all(|d| d.outcome == Outcome::Ok && d.seq > 1),
            "{id}: strays must not end probes: {done:?}"
        );
    }
}

fn inject_kafka(bootstrap: &str, topic: &str, messages: Vec<Vec<u8>>) {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    for m in &messages {
        producer.send(BaseRecord::<(), _>::to(topic).partition(0).payload(m)).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(5)).unwrap();
}

async fn inject_amqp(address: &str, password: &str, queue: &str, messages: Vec<Vec<u8>>) {
    use lapin::options::BasicPublishOptions;
    let uri = format!("amqp://crossprobe-acme:{password}@{address}/acme");
    let conn = lapin::Connection::connect(&uri, lapin::ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    for m in &messages {
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            m,
            lapin::BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    conn.close(200, "done".into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_topics_carry_retention_and_probe_queues_ttl_and_max_length() {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    let _x = exclusive().await;
    let b = brokers();
    let (toml, _) = local_matrix(b, &FAST);
    let config = parse(&toml);
    let results = daemon::once(&config).await.unwrap();
    assert!(results.iter().all(|r| r.is_some_and(|r| r.outcome == Outcome::Ok)), "{results:?}");

    let topic = config.tenants[0].kafka.as_ref().unwrap().topic.clone();
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &b.kafka[0]).create().unwrap();
    let described =
        admin.describe_configs([&ResourceSpecifier::Topic(&topic)], &AdminOptions::new()).await.unwrap();
    let resource = described.into_iter().next().unwrap().expect("topic config described");
    let retention = resource.get("retention.ms").and_then(|e| e.value.clone());
    assert_eq!(retention.as_deref(), Some("600000"), "retention.ms of {topic}");

    if b.ctl().is_none() {
        eprintln!("skipping the queue read-back: the brokers are not crossprobe-local's");
        return;
    }
    // While a pool runs its queue carries the settings; once it stopped the queue is gone.
    let mut p = WorkerPool::start(&config, false, &Shutdown::new()).unwrap();
    until_ok(&mut p, &config, |_| true, Duration::from_secs(20)).await;
    let cell = config.matrix.cells().iter().find(|c| c.id.as_str() == "rabbit-a/acme").unwrap();
    let queue =
        crossprobe::clients::queue_name(&config.daemon.instance, p.instance_id(), cell, QueueKind::Classic);
    let listing = list_queues("rabbit-a");
    let line = listing
        .lines()
        .find(|l| l.starts_with(&queue))
        .unwrap_or_else(|| panic!("{queue} not in:\n{listing}"));
    for expected in ["x-message-ttl", "60000", "x-max-length", "100", "x-expires"] {
        assert!(line.contains(expected), "{queue}: {expected} missing in {line}");
    }
    p.stop().await.unwrap();
    let listing = list_queues("rabbit-a");
    let prefix = format!("crossprobe.{}.{:08x}.", config.daemon.instance, p.instance_id() as u32);
    assert!(
        !listing.lines().any(|l| l.starts_with(&prefix)),
        "queues left behind by a stopped pool:\n{listing}"
    );
}

/// `name type arguments` of every queue of vhost `acme` on crossprobe-local's node `node`.
fn list_queues(node: &str) -> String {
    let out = support::rabbitmq_tool("rabbitmqctl", &format!("{node}@localhost"), support::local_port_base())
        .args(["-q", "list_queues", "-p", "acme", "name", "type", "arguments"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_protocol_faults_hit_only_that_protocol_of_the_zone() {
    let _x = exclusive().await;
    let failed =
        |o: &Outcome| matches!(o, Outcome::Lost | Outcome::PublishFailed(_) | Outcome::ConnectFailed(_));
    let refused = |o: &Outcome| matches!(o, Outcome::ConnectFailed(_));
    type Expected<'a> = &'a dyn Fn(&Outcome) -> bool;
    let cases: [(&str, &str, Expected); 4] = [
        ("kafka-pause", "kafka-b/", &failed),
        ("amqp-pause", "rabbit-b/", &failed),
        ("kafka-kill", "kafka-b/", &refused),
        ("amqp-kill", "rabbit-b/", &refused),
    ];
    for (kind, hit, expected) in cases {
        // A kill is seen through the client's statistics (every second), then its clients are
        // rebuilt: give it the time the kill test gives.
        let settle = Duration::from_secs(if kind.ends_with("kill") { 3 } else { 1 });
        let Some(seen) = outcomes_under_fault(kind, None, settle).await else { return };
        for (id, outcomes) in &seen {
            if id.starts_with(hit) {
                assert!(outcomes.iter().all(expected), "{kind}, {id}: expected failures, saw {outcomes:?}");
            } else {
                assert!(
                    outcomes.iter().all(|o| *o == Outcome::Ok),
                    "{kind}, {id}: expected ok, saw {outcomes:?}"
                );
            }
        }
    }
}

/// `config/examples/local-<kind>.toml` on `b`'s nodes, under an instance of its own.
fn queue_type_example(b: &support::Brokers, kind: &str) -> ValidatedConfig {
    let mut toml = std::fs::read_to_string(format!("config/examples/local-{kind}.toml")).unwrap();
    for (i, default) in ["127.0.0.1:19672", "127.0.0.1:19673", "127.0.0.1:19674"].iter().enumerate() {
        toml = toml.replace(default, &b.amqp[i]);
    }
    let instance = format!("test-{}", support::unique());
    parse(&toml.replace(&format!("instance = \"local-{kind}\""), &format!("instance = \"{instance}\"")))
}

/// The quorum and stream examples probe every cell ok, through queues of their type with the
/// arguments that bound them; a quorum queue goes when its pool stops, a stream stays for the
/// next run, and two pools on one stream each drop the other's probes as foreign.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_and_streams_probe_ok_bounded_by_their_arguments() {
    let _x = exclusive().await;
    let b = brokers();
    for (kind, queue_kind, arguments) in [
        ("quorum", QueueKind::Quorum, &["quorum", "x-message-ttl", "x-max-length", "x-expires"][..]),
        (
            "stream",
            QueueKind::Stream { max_bytes: 1 << 20 },
            &[
                "stream",
                "x-max-age",
                "\"60s\"",
                "x-max-length-bytes",
                "1048576",
                "x-stream-max-segment-size-bytes",
            ][..],
        ),
    ] {
        let config = queue_type_example(b, kind);
        let crossprobe::config::Endpoint::Amqp(amqp) = &config.targets[0].endpoint else {
            panic!("an amqp target")
        };
        assert_eq!(amqp.queue, queue_kind);
        let results = daemon::once(&config).await.unwrap();
        assert!(results.iter().all(|r| r.is_some_and(|r| r.outcome == Outcome::Ok)), "{kind}: {results:?}");

        let mut p = WorkerPool::start(&config, false, &Shutdown::new()).unwrap();
        until_ok(&mut p, &config, |_| true, Duration::from_secs(20)).await;
        let cell = config.matrix.cells().iter().find(|c| c.id.as_str() == "rabbit-a/acme").unwrap();
        let queue =
            crossprobe::clients::queue_name(&config.daemon.instance, p.instance_id(), cell, queue_kind);
        if b.ctl().is_some() {
            let listing = list_queues("rabbit-a");
            let line = listing
                .lines()
                .find(|l| l.starts_with(&format!("{queue}\t")))
                .unwrap_or_else(|| panic!("{queue} not in:\n{listing}"));
            for expected in arguments {
                assert!(line.contains(expected), "{queue}: {expected} missing in {line}");
            }
        }
        if kind == "stream" {
            // A second process on the same streams: every probe of both still comes back ok.
            let mut twin = WorkerPool::start(&config, false, &Shutdown::new()).unwrap();
            until_ok(&mut twin, &config, |_| true, Duration::from_secs(20)).await;
            let (mine, theirs) = tokio::join!(
                collect(&mut p, &config, Duration::from_secs(4)),
                collect(&mut twin, &config, Duration::from_secs(4))
            );
            for seen in [&mine, &theirs] {
                assert_eq!(seen.len(), 6, "{seen:?}");
                assert!(seen.values().flatten().all(|o| *o == Outcome::Ok), "{seen:?}");
            }
            twin.stop().await.unwrap();
        }
        p.stop().await.unwrap();
        if b.ctl().is_some() {
            let kept = list_queues("rabbit-a").lines().any(|l| l.starts_with(&format!("{queue}\t")));
            assert_eq!(kept, kind == "stream", "{queue} kept after the pool stopped: {kept}");
            if kept {
                delete_queue("rabbit-a", &queue);
            }
        }
    }
}

fn delete_queue(node: &str, queue: &str) {
    let out = support::rabbitmq_tool("rabbitmqctl", &format!("{node}@localhost"), support::local_port_base())
        .args(["-q", "delete_queue", "-p", "acme", queue])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `fault b slow 200ms` (the zone's brokers duty-cycled): zone b's round trips take far longer
/// while its probes still come back, the other zones are untouched, and heal ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_zone_takes_longer_without_failing_and_the_others_do_not() {
    let _x = exclusive().await;
    let b = brokers();
    let (config, mut p) = healthy_matrix().await;
    let Some(fault) = b.fault("b", "slow", Some("200ms")) else { return p.stop().await.unwrap() };
    let mut rtts: BTreeMap<bool, Vec<Duration>> = BTreeMap::new();
    let mut outcomes: BTreeMap<bool, Vec<Outcome>> = BTreeMap::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(8);
    while let Ok(Some(r)) = tokio::time::timeout_at(until, p.next()).await {
        if let Seen::Probe(Event::Done(d)) = r.seen {
            let slow = in_zone("b")(config.matrix.cells()[r.cell].id.as_str());
            outcomes.entry(slow).or_default().push(d.outcome);
            rtts.entry(slow).or_default().extend(d.roundtrip);
        }
    }
    fault.heal();
    until_ok(&mut p, &config, in_zone("b"), Duration::from_secs(60)).await;
    p.stop().await.unwrap();

    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (slow, others) = (median(rtts.get_mut(&true).unwrap()), median(rtts.get_mut(&false).unwrap()));
    eprintln!("median round trip: zone b {slow:?}, zones a and c {others:?}");
    assert!(slow >= Duration::from_millis(40) && slow >= others * 3, "zone b {slow:?}, others {others:?}");
    let b_ok = outcomes[&true].iter().filter(|o| **o == Outcome::Ok).count();
    assert!(b_ok * 10 >= outcomes[&true].len() * 8, "zone b mostly ok while slow: {:?}", outcomes[&true]);
    assert!(outcomes[&false].iter().all(|o| *o == Outcome::Ok), "zones a and c: {:?}", outcomes[&false]);
}
