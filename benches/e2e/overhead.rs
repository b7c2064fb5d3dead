//! Overhead: the daemon's end-to-end round trip next to a bare client's, on the same broker, at
//! the same cadence and message size, running at the same time so both see the same broker.

use std::time::Duration;

use crossprobe::shutdown::Shutdown;
use crossprobe::workers::{Seen, WorkerPool};
use crossprobe_probes::tracker::Event;

use super::support::{brokers, parse, unique};
use super::{bare, ms, quantile, Options};

const INTERVAL: Duration = Duration::from_millis(100);
const SIZE: usize = 256;

pub async fn run(o: &Options) {
    let b = brokers();
    let id = unique();
    let toml = format!(
        r#"[daemon]
listen = "127.0.0.1:0"
instance = "bench-{id}"
[probe]
interval = "100ms"
timeout = "90ms"
message_size = {SIZE}
[[targets]]
name = "kafka-a"
protocol = "kafka"
az = "a"
addresses = ["{kafka}"]
kafka = {{ fetch_wait = "5ms" }}
[[targets]]
name = "rabbit-a"
protocol = "amqp"
az = "a"
addresses = ["{amqp}"]
[[tenants]]
name = "acme"
kafka = {{ topic = "bench-daemon-{id}" }}
amqp = {{ vhost = "acme", user = "crossprobe-acme", password_env = "CROSSPROBE_ACME_AMQP_PASSWORD" }}
"#,
        kafka = b.kafka[0],
        amqp = b.amqp[0]
    );
    let config = parse(&toml);
    let period = Duration::from_secs(o.seconds);
    let uri = format!("amqp://crossprobe-acme:{}@{}/acme", b.acme_password, b.amqp[0]);
    let mut probing = WorkerPool::start(&config, false, &Shutdown::new()).unwrap();
    let daemon = async {
        let (mut kafka, mut amqp) = (Vec::new(), Vec::new());
        let end = tokio::time::Instant::now() + period;
        while let Ok(Some(r)) = tokio::time::timeout_at(end, probing.next()).await {
            if let Seen::Probe(Event::Done(d)) = r.seen {
                if let (false, Some(rt)) = (d.outcome.is_failure(), d.roundtrip) {
                    if r.cell == 0 {
                        kafka.push(rt)
                    } else {
                        amqp.push(rt)
                    }
                }
            }
        }
        (kafka, amqp)
    };
    let bare_name = format!("bench-bare-{id}");
    let bare_kafka = bare::kafka(&b.kafka[0], &bare_name, SIZE, INTERVAL, period);
    let bare_amqp = bare::amqp(&uri, &bare_name, SIZE, INTERVAL, period);
    let ((mut dk, mut da), mut bk, mut ba) = tokio::join!(daemon, bare_kafka, bare_amqp);
    probing.stop().await.unwrap();

    println!("\n## overhead: round trip, daemon vs bare client, same broker, {INTERVAL:?} cadence, {SIZE} B, {}s at once\n", o.seconds);
    println!("| protocol | bare p50 ms | daemon p50 ms | p50 ratio | bare p99 ms | daemon p99 ms | p99 ratio | samples bare/daemon |");
    println!("|---|---|---|---|---|---|---|---|");
    for (name, bare, daemon) in [("kafka (tansu)", &mut bk, &mut dk), ("amqp (RabbitMQ)", &mut ba, &mut da)] {
        let (b50, d50) = (quantile(bare, 0.5), quantile(daemon, 0.5));
        let (b99, d99) = (quantile(bare, 0.99), quantile(daemon, 0.99));
        println!(
            "| {name} | {} | {} | {:.3} | {} | {} | {:.3} | {}/{} |",
            ms(b50),
            ms(d50),
            d50.as_secs_f64() / b50.as_secs_f64(),
            ms(b99),
            ms(d99),
            d99.as_secs_f64() / b99.as_secs_f64(),
            bare.len(),
            daemon.len()
        );
    }
}
