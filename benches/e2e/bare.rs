//! Minimal bare clients, written for the benchmark: one rdkafka produce-consume loop and one
//! lapin publish-consume loop, each timing publish start to consume with the same clock, the
//! same cadence and the same message size as the daemon's probes.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// A message of `size` bytes that starts with its sequence number.
fn numbered(seq: u64, size: usize) -> Vec<u8> {
    let mut payload = vec![0u8; size.max(8)];
    payload[..8].copy_from_slice(&seq.to_be_bytes());
    payload
}

/// Round trips of a bare rdkafka loop for `period`, one message per `interval`.
pub async fn kafka(
    bootstrap: &str,
    topic: &str,
    size: usize,
    interval: Duration,
    period: Duration,
) -> Vec<Duration> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    admin.create_topics([&new], &AdminOptions::new()).await.unwrap();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "crossprobe-bench-bare")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()
        .unwrap();
    let (_, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(5)).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(high)).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut samples = Vec::new();
    let end = Instant::now() + period;
    let mut ticker = tokio::time::interval(interval);
    let mut seq = 0u64;
    while Instant::now() < end {
        ticker.tick().await;
        seq += 1;
        let payload = numbered(seq, size);
        let start = Instant::now();
        let sent =
            producer.send(FutureRecord::<(), _>::to(topic).partition(0).payload(&payload), Duration::ZERO);
        if sent.await.is_err() {
            continue;
        }
        let wait = tokio::time::timeout(Duration::from_millis(400), async {
            loop {
                let Ok(m) = consumer.recv().await else { continue };
                if m.payload().is_some_and(|p| p.len() >= 8 && p[..8] == seq.to_be_bytes()) {
                    return Instant::now();
                }
            }
        });
        if let Ok(at) = wait.await {
            samples.push(at - start);
        }
    }
    samples
}

/// Round trips of a bare lapin loop (publisher confirms on) for `period`.
pub async fn amqp(
    uri: &str,
    queue: &str,
    size: usize,
    interval: Duration,
    period: Duration,
) -> Vec<Duration> {
    let conn = lapin::Connection::connect(uri, lapin::ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
    ch.queue_declare(queue.into(), options, FieldTable::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(queue.into(), "bench".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let mut samples = Vec::new();
    let end = Instant::now() + period;
    let mut ticker = tokio::time::interval(interval);
    let mut seq = 0u64;
    while Instant::now() < end {
        ticker.tick().await;
        seq += 1;
        let payload = numbered(seq, size);
        let start = Instant::now();
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &payload,
                lapin::BasicProperties::default(),
            )
            .await
            .unwrap();
        let received = tokio::time::timeout(Duration::from_millis(400), async {
            while let Some(Ok(d)) = consumer.next().await {
                let at = Instant::now();
                let _ = d.ack(BasicAckOptions::default()).await;
                if d.data.len() >= 8 && d.data[..8] == seq.to_be_bytes() {
                    return Some(at);
                }
            }
            None
        });
        // Like the daemon: only an acknowledged publish counts.
        let (confirmed, received) = tokio::join!(confirm, received);
        if let (Ok(_), Ok(Some(at))) = (confirmed, received) {
            samples.push(at - start);
        }
    }
    let _ = conn.close(200, "bench done".into()).await;
    samples
}
