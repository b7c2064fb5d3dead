//! AMQP 0-9-1 backend (lapin): one long-lived connection per (node, vhost, user), a channel per
//! cell, publisher confirms, and a per-cell queue of the target's type (classic, quorum or
//! stream), bounded so probes can never fill a broker or leave queues behind ([`QueueKind`]).
//!
//! The connection is supervised by [`AmqpNode::supervise`]: it connects, waits for the
//! connection to fail, and reconnects with a backoff that never exceeds the cells' probe
//! interval ([`crate::retry`]), so a returned broker is seen by the next probe round. Cells open their channel lazily on publish
//! (and reopen it after a channel error); while the connection is down a publish fails at once
//! with `connect_failed`, and while the broker blocks publishers (resource alarm) with
//! `publish_failed{kind=blocked}`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::backend::{forward, BoxFuture, CellBackend, Deliveries, Delivery, ProbeError, DELIVERY_BUFFER};
use crate::outcome::ErrorKind;
use crate::percent_encode as encode;
use crate::retry::Retry;

/// Largest AMQP frame we negotiate. lapin keeps send and receive ring buffers of 32 frames per
/// connection: at RabbitMQ's default 128 KiB that is 8 MiB a connection, touched page by page as
/// probes go through (it looked like a leak); probes are small, 8 KiB frames make it 512 KiB.
const FRAME_MAX: u32 = 8192;

/// How to reach one node as one user in one vhost.
#[derive(Clone)]
pub struct AmqpClientConfig {
    /// `host:port`.
    pub address: String,
    pub vhost: String,
    pub user: String,
    /// Never logged.
    pub password: String,
    pub tls: bool,
    /// PEM certificates trusted as roots for TLS, besides the system's trust store.
    pub ca_pem: Option<String>,
    pub heartbeat: Duration,
    /// Bound on connecting and on opening a channel.
    pub timeout: Duration,
    /// The shortest probe interval of the cells on this connection: once lost, it is tried
    /// again at least this often.
    pub interval: Duration,
}

impl std::fmt::Debug for AmqpClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpClientConfig")
            .field("address", &self.address)
            .field("vhost", &self.vhost)
            .field("user", &self.user)
            .field("tls", &self.tls)
            .field("ca_pem", &self.ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// Settings of one cell's probe queue.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    pub name: String,
    pub kind: QueueKind,
    /// `x-message-ttl` (classic and quorum); `x-max-age` of a stream.
    pub ttl: Duration,
    /// `x-max-length` (classic and quorum).
    pub max_length: u32,
    /// `x-expires` (classic and quorum): the queue is deleted this long after its last
    /// consumer went away.
    pub expires: Duration,
}

/// The RabbitMQ queue type a cell probes through, with what bounds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueKind {
    /// Non-durable, bounded by message TTL, max length and expiry; deleted when the cell retires.
    Classic,
    /// Replicated (Raft) and always durable; bounded like a classic queue (message TTL needs
    /// RabbitMQ 3.10 or later); deleted when the cell retires.
    Quorum,
    /// An append-only log: retention by age (`ttl`) and by size, applied a whole segment at a
    /// time; consumed from the next offset with a prefetch. Streams take no `x-expires`, so the
    /// probe never deletes one: its name is stable and the next run reuses it.
    Stream {
        /// `x-max-length-bytes`; segments are a quarter of it, so at most about 1.25 times
        /// this is kept on each replica.
        max_bytes: u64,
    },
}

/// Messages a stream consumer may hold unacknowledged: streams refuse a consumer without a
/// prefetch. A probe is acknowledged as it arrives, so a few are enough.
const STREAM_PREFETCH: u16 = 16;

impl QueueSpec {
    /// Whether the queue is declared durable (quorum queues and streams must be).
    fn durable(&self) -> bool {
        self.kind != QueueKind::Classic
    }

    /// The declaration's arguments for the queue's type.
    fn arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        let millis = |d: Duration| AMQPValue::LongLongInt(d.as_millis() as i64);
        match self.kind {
            QueueKind::Classic | QueueKind::Quorum => {
                if self.kind == QueueKind::Quorum {
                    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
                }
                args.insert("x-message-ttl".into(), millis(self.ttl));
                args.insert("x-expires".into(), millis(self.expires));
                args.insert("x-max-length".into(), AMQPValue::LongLongInt(self.max_length.into()));
            }
            QueueKind::Stream { max_bytes } => {
                args.insert("x-queue-type".into(), AMQPValue::LongString("stream".into()));
                let age = format!("{}s", self.ttl.as_secs().max(1));
                args.insert("x-max-age".into(), AMQPValue::LongString(age.into()));
                args.insert("x-max-length-bytes".into(), AMQPValue::LongLongInt(max_bytes as i64));
                let segment = (max_bytes / 4).max(1) as i64;
                args.insert("x-stream-max-segment-size-bytes".into(), AMQPValue::LongLongInt(segment));
            }
        }
        args
    }
}

/// The connection state cells read: up with a connection, or down with the reason.
#[derive(Clone)]
enum Link {
    /// Before the first connection attempt finished.
    Connecting,
    Up(Arc<Connection>),
    Down(ErrorKind),
}

/// One supervised connection shared by the cells of a (node, vhost, user).
pub struct AmqpNode {
    config: AmqpClientConfig,
    link: watch::Sender<Link>,
    /// The cells' consumer loops; each ends when its channel closes or the node stops.
    consumers: TaskTracker,
    stopped: CancellationToken,
    /// Connections established after the first.
    reconnects: std::sync::atomic::AtomicU64,
}

impl AmqpNode {
    pub fn new(config: AmqpClientConfig) -> Arc<Self> {
        let (link, _) = watch::channel(Link::Connecting);
        Arc::new(AmqpNode {
            config,
            link,
            consumers: TaskTracker::new(),
            stopped: CancellationToken::new(),
            reconnects: Default::default(),
        })
    }

    /// Connections re-established after a loss.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until the first connection attempt has finished, successful or not.
    pub async fn attempted(&self) {
        let mut rx = self.link.subscribe();
        let _ = rx.wait_for(|l| !matches!(l, Link::Connecting)).await;
    }

    /// Waits until every consumer loop ended (after `supervise` returned, the connection is
    /// closed and they all end).
    pub async fn consumers_done(&self) {
        self.consumers.close();
        self.consumers.wait().await;
    }

    /// Keeps the connection up until cancelled: connect, wait for failure, back off (at most
    /// one probe interval from the start of the failed attempt), repeat.
    pub async fn supervise(self: Arc<Self>, cancel: CancellationToken) {
        let mut retry = Retry::new(self.config.interval);
        let mut connected_before = false;
        loop {
            let started = tokio::time::Instant::now();
            let attempt =
                tokio::time::timeout(self.config.timeout.max(Duration::from_secs(1)), self.connect());
            let result = tokio::select! {
                _ = cancel.cancelled() => break,
                r = attempt => r.unwrap_or(Err(ErrorKind::Timeout)),
            };
            // The next attempt is due a delay after the failed attempt started, or after the
            // loss of the connection it made.
            let failed = match result {
                Ok(conn) => {
                    retry.reset();
                    let conn = Arc::new(conn);
                    let mut events = conn.events_listener();
                    if connected_before {
                        self.reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    connected_before = true;
                    self.link.send_replace(Link::Up(conn.clone()));
                    info!(address = %self.config.address, vhost = %self.config.vhost, "amqp connected");
                    let reason = loop {
                        let event = tokio::select! {
                            _ = cancel.cancelled() => {
                                self.link.send_replace(Link::Down(ErrorKind::Client));
                                self.stopped.cancel();
                                let closing = conn.close(200, "crossprobe stopping".into());
                                let _ = tokio::time::timeout(self.config.timeout, closing).await;
                                return;
                            }
                            e = events.next() => e,
                        };
                        match event {
                            Some(lapin::Event::Error(e)) => break kind(&e),
                            None => break ErrorKind::Refused,
                            Some(other) => debug!(event = ?other, "amqp connection event"),
                        }
                        if !conn.status().connected() {
                            break ErrorKind::Refused;
                        }
                    };
                    warn!(address = %self.config.address, vhost = %self.config.vhost, kind = %reason, "amqp connection lost");
                    self.link.send_replace(Link::Down(reason));
                    tokio::time::Instant::now()
                }
                Err(k) => {
                    self.link.send_replace(Link::Down(k));
                    debug!(address = %self.config.address, kind = %k, "amqp connect failed");
                    started
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = retry.wait(failed) => {}
            }
        }
        self.link.send_replace(Link::Down(ErrorKind::Client));
        self.stopped.cancel();
    }

    async fn connect(&self) -> Result<Connection, ErrorKind> {
        let c = &self.config;
        let uri = format!(
            "{}://{}:{}@{}/{}?heartbeat={}&frame_max={FRAME_MAX}",
            if c.tls { "amqps" } else { "amqp" },
            encode(&c.user),
            encode(&c.password),
            c.address,
            encode(&c.vhost),
            c.heartbeat.as_secs().max(1),
        );
        let props = ConnectionProperties::default().with_connection_name("crossprobe".into());
        let tls = OwnedTLSConfig { identity: None, cert_chain: c.ca_pem.clone() };
        let runtime = lapin::runtime::default_runtime().map_err(|e| kind(&e))?;
        Connection::connect_with_config(&uri, props, tls, runtime).await.map_err(|e| {
            let k = kind(&e);
            // Over TLS, an I/O error that is not the network's is the handshake's (an untrusted
            // certificate, a name mismatch, a peer that does not speak TLS).
            if c.tls && k == ErrorKind::Refused && !network_error(&e) {
                ErrorKind::Tls
            } else {
                k
            }
        })
    }

    /// A cell whose probes go through `queue`; its channel opens on first publish.
    pub fn cell(self: &Arc<Self>, queue: QueueSpec) -> (AmqpCell, Deliveries) {
        let (tx, rx) = mpsc::channel(DELIVERY_BUFFER);
        (AmqpCell { node: self.clone(), queue, tx, channel: Mutex::new(None) }, rx)
    }
}

/// One cell's channel on a shared connection.
pub struct AmqpCell {
    node: Arc<AmqpNode>,
    queue: QueueSpec,
    tx: mpsc::Sender<Delivery>,
    channel: Mutex<Option<Channel>>,
}

impl AmqpCell {
    /// The cell's channel with confirms on, its queue declared and consumed; opened when missing.
    async fn channel(&self, conn: &Connection) -> Result<Channel, ProbeError> {
        if let Some(ch) = self.channel.lock().expect("channel lock").as_ref() {
            if ch.status().connected() {
                return Ok(ch.clone());
            }
        }
        let open = async {
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            let declare = QueueDeclareOptions { durable: self.queue.durable(), ..Default::default() };
            ch.queue_declare(self.queue.name.as_str().into(), declare, self.queue.arguments()).await?;
            let mut consume = FieldTable::default();
            if let QueueKind::Stream { .. } = self.queue.kind {
                ch.basic_qos(STREAM_PREFETCH, BasicQosOptions::default()).await?;
                consume.insert("x-stream-offset".into(), AMQPValue::LongString("next".into()));
            }
            let consumer = ch
                .basic_consume(
                    self.queue.name.as_str().into(),
                    ShortString::from(format!("crossprobe-{}", self.queue.name)),
                    BasicConsumeOptions::default(),
                    consume,
                )
                .await?;
            Ok::<_, lapin::Error>((ch, consumer))
        };
        // Half the probe timeout, so an unanswered set-up is a connection failure, not a
        // publish timeout.
        let (ch, mut consumer) = tokio::time::timeout(self.node.config.timeout / 2, open)
            .await
            .map_err(|_| ProbeError::Connect(ErrorKind::Timeout))?
            .map_err(|e| ProbeError::Connect(kind(&e)))?;
        let tx = self.tx.clone();
        let stopped = self.node.stopped.clone();
        // Ends when the channel closes or the node stops; acks each message so the queue
        // stays empty.
        self.node.consumers.spawn(async move {
            loop {
                let delivery = tokio::select! {
                    _ = stopped.cancelled() => break,
                    d = consumer.next() => d,
                };
                let Some(Ok(delivery)) = delivery else { break };
                forward(&tx, &delivery.data);
                let _ = delivery.ack(BasicAckOptions::default()).await;
            }
        });
        debug!(queue = %self.queue.name, "amqp cell channel open");
        *self.channel.lock().expect("channel lock") = Some(ch.clone());
        Ok(ch)
    }
}

impl AmqpCell {
    /// Retires the cell (a configuration reload removed it, or the process stops): deletes its
    /// queue (not a stream, see [`QueueKind::Stream`]) and closes its channel, which ends its
    /// consumer loop. Best effort, bounded by the timeout; a queue left behind expires on its own
    /// (`x-expires`).
    async fn release(&self) {
        let Some(ch) = self.channel.lock().expect("channel lock").take() else { return };
        let retire = async {
            if !matches!(self.queue.kind, QueueKind::Stream { .. }) {
                let _ = ch.queue_delete(self.queue.name.as_str().into(), QueueDeleteOptions::default()).await;
            }
            let _ = ch.close(200, "crossprobe cell removed".into()).await;
        };
        let _ = tokio::time::timeout(self.node.config.timeout, retire).await;
        debug!(queue = %self.queue.name, "amqp cell retired");
    }

    /// Waits for the connection's first attempt and opens the channel, so the first probe
    /// measures the broker rather than the set-up.
    async fn set_up(&self) -> Result<(), ProbeError> {
        self.node.attempted().await;
        let conn = match &*self.node.link.borrow() {
            Link::Up(conn) => conn.clone(),
            Link::Connecting => return Err(ProbeError::Connect(ErrorKind::Client)),
            Link::Down(k) => return Err(ProbeError::Connect(*k)),
        };
        self.channel(&conn).await.map(|_| ())
    }
}

impl CellBackend for AmqpCell {
    fn publish(&self, payload: Vec<u8>) -> BoxFuture<'_, Result<(), ProbeError>> {
        Box::pin(self.send(payload))
    }

    fn prepare(&self) -> BoxFuture<'_, Result<(), ProbeError>> {
        Box::pin(self.set_up())
    }

    fn retire(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.release())
    }
}

impl AmqpCell {
    async fn send(&self, payload: Vec<u8>) -> Result<(), ProbeError> {
        let conn = match &*self.node.link.borrow() {
            Link::Up(conn) => conn.clone(),
            Link::Connecting => return Err(ProbeError::Connect(ErrorKind::Client)),
            Link::Down(k) => return Err(ProbeError::Connect(*k)),
        };
        if conn.status().blocked() {
            return Err(ProbeError::Publish(ErrorKind::Blocked));
        }
        let ch = self.channel(&conn).await?;
        let options = BasicPublishOptions { mandatory: true, ..Default::default() };
        let confirm = ch
            .basic_publish(
                "".into(),
                self.queue.name.as_str().into(),
                options,
                &payload,
                BasicProperties::default(),
            )
            .await
            .map_err(|e| ProbeError::Publish(kind(&e)))?;
        match confirm.await.map_err(|e| ProbeError::Publish(kind(&e)))? {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_returned)) => Err(ProbeError::Publish(ErrorKind::NotFound)),
            Confirmation::Nack(_) => Err(ProbeError::Publish(ErrorKind::Nack)),
            Confirmation::NotRequested => Ok(()),
        }
    }
}

/// Whether `e` is an I/O error of the network itself (refused, reset, unreachable, closed).
fn network_error(e: &lapin::Error) -> bool {
    use std::io::ErrorKind as Io;
    let lapin::ErrorKind::IOError(io) = e.kind() else { return false };
    matches!(
        io.kind(),
        Io::ConnectionRefused
            | Io::ConnectionReset
            | Io::ConnectionAborted
            | Io::NotConnected
            | Io::AddrNotAvailable
            | Io::AddrInUse
            | Io::BrokenPipe
            | Io::TimedOut
            | Io::HostUnreachable
            | Io::NetworkUnreachable
            | Io::NetworkDown
    )
}

fn kind(e: &lapin::Error) -> ErrorKind {
    use lapin::ErrorKind as K;
    match e.kind() {
        K::IOError(io) => match io.kind() {
            std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Refused,
        },
        K::MissingHeartbeatError => ErrorKind::Timeout,
        K::ProtocolError(amqp) => match amqp.get_id() {
            403 | 530 => ErrorKind::Auth,
            404 => ErrorKind::NotFound,
            320 => ErrorKind::Refused,
            _ => ErrorKind::Broker,
        },
        K::AuthProviderError(_) => ErrorKind::Auth,
        K::InvalidConnectionState(_) => ErrorKind::Refused,
        _ => ErrorKind::Broker,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_network_io_errors_are_the_networks() {
        use std::io::{Error, ErrorKind as Io};
        // rustls reports an untrusted certificate as InvalidData; a peer that does not speak
        // TLS as InvalidData too ("corrupt message").
        let cases = [
            (Io::ConnectionRefused, true),
            (Io::ConnectionReset, true),
            (Io::TimedOut, true),
            (Io::InvalidData, false),
            (Io::Other, false),
        ];
        for (kind, network) in cases {
            let e = lapin::Error::from(Error::new(kind, "x"));
            assert_eq!(super::network_error(&e), network, "{kind:?}");
        }
        let protocol = lapin::Error::from(lapin::ErrorKind::MissingHeartbeatError);
        assert!(!super::network_error(&protocol));
    }

    #[test]
    fn each_queue_type_is_declared_with_the_arguments_that_bound_it() {
        use super::{QueueKind, QueueSpec};
        use std::time::Duration;
        let spec = |kind| QueueSpec {
            name: "q".into(),
            kind,
            ttl: Duration::from_secs(60),
            max_length: 100,
            expires: Duration::from_secs(600),
        };
        let keys = |q: &QueueSpec| q.arguments().inner().keys().map(|k| k.to_string()).collect::<Vec<_>>();
        let classic = spec(QueueKind::Classic);
        assert!(!classic.durable());
        assert_eq!(keys(&classic), ["x-expires", "x-max-length", "x-message-ttl"]);
        let quorum = spec(QueueKind::Quorum);
        assert!(quorum.durable());
        assert_eq!(keys(&quorum), ["x-expires", "x-max-length", "x-message-ttl", "x-queue-type"]);
        // Streams refuse an expiry and a message TTL; they are bounded by age and size.
        let stream = spec(QueueKind::Stream { max_bytes: 1 << 20 });
        assert!(stream.durable());
        assert_eq!(
            keys(&stream),
            ["x-max-age", "x-max-length-bytes", "x-queue-type", "x-stream-max-segment-size-bytes"]
        );
        let args = stream.arguments();
        assert_eq!(args.inner().get("x-max-age"), Some(&super::AMQPValue::LongString("60s".into())));
    }

    #[test]
    fn uri_components_are_percent_encoded() {
        assert_eq!(super::encode("/"), "%2F");
        assert_eq!(super::encode("a b@c:d"), "a%20b%40c%3Ad");
        assert_eq!(super::encode("acme-1.x_y~"), "acme-1.x_y~");
    }
}
