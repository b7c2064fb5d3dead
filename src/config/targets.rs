//! Checks `[[targets]]`: identity, addresses, labels, probe overrides and the protocol-specific
//! tables, resolving defaults into a [`Target`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::error::{quoted, Problems};
use super::raw::{RawAmqpTarget, RawDiscovery, RawKafkaTarget, RawTarget, Str};
use super::values::{self, Limits};
use super::*;
use crate::matrix::{BASE_DIMENSIONS, MAX_DIMENSIONS};

/// Dimensions every cell carries; extra labels may not reuse them, nor names Prometheus or the
/// daemon's own metrics give a meaning.
pub const RESERVED_LABELS: &[&str] = &[
    "az", "tenant", "protocol", "broker", "outcome", "kind", "stage", "vantage", "instance", "job", "le",
    "quantile",
];

/// Valid targets, each with its index in `[[targets]]`; invalid ones are reported and left out.
pub(super) fn targets(p: &mut Problems, raw: &[RawTarget], defaults: ProbeSettings) -> Vec<(Target, usize)> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, t) in raw.iter().enumerate() {
        let errors_before = p.len();
        let path = format!("targets[{i}] {}", quoted(t.name.get_ref()));
        values::name(p, &format!("targets[{i}].name"), &t.name);
        if let Some(first) = seen.insert(t.name.get_ref(), i) {
            p.add(
                format!("targets[{i}].name"),
                Some(t.name.span()),
                format!("duplicate name {} (also targets[{first}])", quoted(t.name.get_ref())),
            );
        }
        values::name(p, &format!("{path}.az"), &t.az);
        if let Some(b) = &t.broker {
            values::name(p, &format!("{path}.broker"), b);
        }
        let addresses: &[Str] = t.addresses.as_ref().map_or(&[], |a| a.get_ref());
        if addresses.is_empty() {
            p.add(
                format!("{path}.addresses"),
                Some(t.addresses.as_ref().map_or(t.name.span(), |a| a.span())),
                "at least one host:port is required".into(),
            );
        }
        for (j, a) in addresses.iter().enumerate() {
            values::address(p, &format!("{path}.addresses[{j}]"), a);
        }
        for (key, value) in &t.labels {
            label(p, &path, key, value);
        }
        let probe = values::probe_settings(
            p,
            &path,
            defaults,
            t.interval.as_ref(),
            t.timeout.as_ref(),
            t.message_size.as_ref(),
        );
        let endpoint = endpoint(p, &path, t, probe.unwrap_or(defaults).timeout);
        let discovery = t.discovery.as_ref().map(|d| discovery(p, &path, t, d));
        if let (Some(probe), Some(endpoint)) = (probe, endpoint) {
            if p.len() == errors_before {
                out.push((
                    Target {
                        name: t.name.get_ref().clone(),
                        az: t.az.get_ref().clone(),
                        broker: t.broker.as_ref().unwrap_or(&t.name).get_ref().clone(),
                        addresses: addresses.iter().map(|a| a.get_ref().clone()).collect(),
                        labels: t.labels.iter().map(|(k, v)| (k.clone(), v.get_ref().clone())).collect(),
                        probe,
                        endpoint,
                        discovery,
                        discovered_at: None,
                    },
                    i,
                ));
            }
        }
    }
    same_label_keys(p, raw);
    out
}

/// `[targets.discovery]`: the target names a cluster (Kafka: by its bootstrap addresses;
/// AMQP: by its management API) whose brokers or nodes are found, so it names none.
fn discovery(p: &mut Problems, path: &str, t: &RawTarget, d: &toml::Spanned<RawDiscovery>) -> Discovery {
    let target_path = path;
    let path = format!("{path}.discovery");
    let raw = d.get_ref();
    let kafka = t.protocol.get_ref() == "kafka";
    if let Some(id) = &t.broker_id {
        p.add(
            format!("{target_path}.broker_id"),
            Some(id.span()),
            "a discovered target names no broker: each broker found gets its own target".into(),
        );
    }
    let every = values::duration_in(
        p,
        &format!("{path}.every"),
        raw.every.as_ref(),
        Duration::from_secs(30),
        (Duration::from_secs(1), Duration::from_secs(3600)),
    );
    let mut zones = BTreeMap::new();
    for (id, zone) in &raw.zones {
        let key = format!("{path}.zones.{}", super::error::key(id));
        if kafka && id.parse::<i32>().map_or(true, |n| n < 0) {
            p.add(
                key.clone(),
                Some(zone.span()),
                format!("{} is not a broker id (a whole number)", quoted(id)),
            );
        }
        values::name(p, &key, zone);
        zones.insert(id.clone(), zone.get_ref().clone());
    }
    let management = if kafka {
        let amqp_only =
            [&raw.management_url, &raw.user, &raw.password, &raw.password_env, &raw.password_file];
        if let Some(v) = amqp_only.into_iter().flatten().next() {
            p.add(
                path.clone(),
                Some(v.span()),
                "management_url, user and passwords only apply to amqp targets (a Kafka cluster is read through its bootstrap addresses)".into(),
            );
        }
        None
    } else {
        management(p, &path, raw, d.span())
    };
    Discovery { every, zones, management }
}

/// An AMQP target's management API: `http://host:port`, a user and a password source.
fn management(
    p: &mut Problems,
    path: &str,
    raw: &RawDiscovery,
    span: std::ops::Range<usize>,
) -> Option<Management> {
    let Some(url) = &raw.management_url else {
        p.add(
            path.to_owned(),
            Some(span),
            "an amqp target's nodes are listed by the RabbitMQ management API: set management_url (e.g. \"http://127.0.0.1:15672\")".into(),
        );
        return None;
    };
    let key = format!("{path}.management_url");
    let address = match url.get_ref().strip_prefix("http://") {
        Some(rest) => rest.trim_end_matches('/').to_owned(),
        None => {
            p.add(
                key,
                Some(url.span()),
                format!("{} is not an http:// URL (https is not supported: reach the API over a trusted network or a local proxy)", quoted(url.get_ref())),
            );
            return None;
        }
    };
    values::address(p, &key, &toml::Spanned::new(url.span(), address.clone()));
    let Some(user) = &raw.user else {
        p.add(
            format!("{path}.user"),
            Some(url.span()),
            "the management API needs a user (tagged monitoring)".into(),
        );
        return None;
    };
    let credentials = values::credentials(
        p,
        path,
        user,
        raw.password.as_ref(),
        raw.password_env.as_ref(),
        raw.password_file.as_ref(),
    )?;
    Some(Management { address, credentials })
}

fn label(p: &mut Problems, path: &str, key: &str, value: &Str) {
    let valid = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !key.starts_with("__");
    if !valid {
        p.add(
            format!("{path}.labels"),
            Some(value.span()),
            format!(
                "{} is not a valid label name (letters, digits, '_'; not starting with a digit or \"__\")",
                quoted(key)
            ),
        );
    } else if RESERVED_LABELS.contains(&key) {
        p.add(
            format!("{path}.labels.{}", super::error::key(key)),
            Some(value.span()),
            format!("{} is reserved (reserved: {})", quoted(key), RESERVED_LABELS.join(", ")),
        );
    }
    values::name(p, &format!("{path}.labels.{}", super::error::key(key)), value);
}

/// Extra labels become dimensions, so every target must carry the same keys, and no more than
/// the correlator can index.
fn same_label_keys(p: &mut Problems, raw: &[RawTarget]) {
    let Some(first) = raw.first() else { return };
    let extra = MAX_DIMENSIONS - BASE_DIMENSIONS.len();
    if let Some((_, value)) = first.labels.iter().nth(extra) {
        p.add(
            format!("targets[0] {}.labels", quoted(first.name.get_ref())),
            Some(value.span()),
            format!(
                "{} extra labels make {} dimensions with {}; the correlator handles at most {MAX_DIMENSIONS} (at most {extra} extra labels)",
                first.labels.len(),
                first.labels.len() + BASE_DIMENSIONS.len(),
                BASE_DIMENSIONS.join(", "),
            ),
        );
    }
    let keys = |t: &RawTarget| t.labels.keys().cloned().collect::<Vec<_>>();
    let expected = keys(first);
    for (i, t) in raw.iter().enumerate().skip(1) {
        let got = keys(t);
        if got != expected {
            let show = |k: &[String]| {
                if k.is_empty() {
                    "none".to_owned()
                } else {
                    k.join(", ")
                }
            };
            p.add(
                format!("targets[{i}] {}.labels", quoted(t.name.get_ref())),
                Some(t.name.span()),
                format!(
                    "has label keys [{}] but targets[0] {} has [{}]; every target must carry the same label keys",
                    show(&got),
                    quoted(first.name.get_ref()),
                    show(&expected)
                ),
            );
        }
    }
}

fn endpoint(p: &mut Problems, path: &str, t: &RawTarget, timeout: Duration) -> Option<Endpoint> {
    let protocol = match t.protocol.get_ref().parse::<Protocol>() {
        Ok(protocol) => protocol,
        Err(e) => {
            p.add(format!("{path}.protocol"), Some(t.protocol.span()), e.to_string());
            return None;
        }
    };
    let misplaced = |p: &mut Problems, key: &str, span| {
        p.add(
            format!("{path}.{key}"),
            Some(span),
            format!(
                "only applies to {key} targets, but this target's protocol is {}",
                quoted(t.protocol.get_ref())
            ),
        );
    };
    match protocol {
        Protocol::Kafka => {
            if let Some(a) = &t.amqp {
                misplaced(p, "amqp", a.span());
            }
            let default = RawKafkaTarget::default();
            let raw = t.kafka.as_ref().map_or(&default, |k| k.get_ref());
            kafka(p, path, raw, t, timeout).map(Endpoint::Kafka)
        }
        Protocol::Amqp => {
            if let Some(k) = &t.kafka {
                misplaced(p, "kafka", k.span());
            }
            if let Some(id) = &t.broker_id {
                p.add(format!("{path}.broker_id"), Some(id.span()), "only applies to kafka targets".into());
            }
            let default = RawAmqpTarget::default();
            let raw = t.amqp.as_ref().map_or(&default, |a| a.get_ref());
            amqp(p, &format!("{path}.amqp"), raw, timeout).map(Endpoint::Amqp)
        }
    }
}

fn kafka(
    p: &mut Problems,
    target_path: &str,
    k: &RawKafkaTarget,
    t: &RawTarget,
    timeout: Duration,
) -> Option<KafkaTarget> {
    let broker_id = t.broker_id.as_ref().map(|id| {
        let limits = Limits { min: 0, max: i32::MAX as i64 };
        values::count(p, &format!("{target_path}.broker_id"), Some(id), 0, limits) as i32
    });
    let path = &format!("{target_path}.kafka");
    let fetch_wait = values::duration_in(
        p,
        &format!("{path}.fetch_wait"),
        k.fetch_wait.as_ref(),
        default_fetch_wait(timeout),
        (Duration::from_millis(1), Duration::from_secs(1)),
    );
    if fetch_wait >= timeout {
        p.add(
            format!("{path}.fetch_wait"),
            k.fetch_wait.as_ref().map(|s| s.span()),
            format!(
                "({}) must be less than the probe timeout ({})",
                humantime::format_duration(fetch_wait),
                humantime::format_duration(timeout)
            ),
        );
    }
    let topic_retention = values::duration_in(
        p,
        &format!("{path}.topic_retention"),
        k.topic_retention.as_ref(),
        Duration::from_secs(600),
        (Duration::from_secs(60), Duration::from_secs(7 * 86_400)),
    );
    let security_protocol = match k.security_protocol.as_ref().map(|s| (s.get_ref().as_str(), s)) {
        None | Some(("plaintext", _)) => KafkaSecurity::Plaintext,
        Some(("ssl", _)) => KafkaSecurity::Ssl,
        Some(("sasl_plaintext", _)) => KafkaSecurity::SaslPlaintext,
        Some(("sasl_ssl", _)) => KafkaSecurity::SaslSsl,
        Some((other, s)) => {
            p.add(
                format!("{path}.security_protocol"),
                Some(s.span()),
                format!(
                    "unknown security protocol {} (expected plaintext, ssl, sasl_plaintext or sasl_ssl)",
                    quoted(other)
                ),
            );
            return None;
        }
    };
    let sasl = matches!(security_protocol, KafkaSecurity::SaslPlaintext | KafkaSecurity::SaslSsl);
    let sasl_mechanism = match (k.sasl_mechanism.as_ref(), sasl) {
        (None, false) => None,
        (None, true) => Some(SaslMechanism::Plain),
        (Some(s), false) => {
            p.add(
                format!("{path}.sasl_mechanism"),
                Some(s.span()),
                "only applies with security_protocol sasl_plaintext or sasl_ssl".into(),
            );
            None
        }
        (Some(s), true) => match s.get_ref().as_str() {
            "PLAIN" => Some(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Some(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Some(SaslMechanism::ScramSha512),
            other => {
                p.add(
                    format!("{path}.sasl_mechanism"),
                    Some(s.span()),
                    format!(
                        "unknown SASL mechanism {} (expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)",
                        quoted(other)
                    ),
                );
                None
            }
        },
    };
    let tls = matches!(security_protocol, KafkaSecurity::Ssl | KafkaSecurity::SaslSsl);
    Some(KafkaTarget {
        broker_id,
        fetch_wait,
        topic_retention,
        security_protocol,
        sasl_mechanism,
        ca_file: ca_file(p, path, k.ca_file.as_ref(), tls, "security_protocol ssl or sasl_ssl"),
        group_commit: k.group_commit.unwrap_or(false),
    })
}

fn amqp(p: &mut Problems, path: &str, a: &RawAmqpTarget, timeout: Duration) -> Option<AmqpTarget> {
    let tls = a.tls.unwrap_or(false);
    let heartbeat = values::duration_in(
        p,
        &format!("{path}.heartbeat"),
        a.heartbeat.as_ref(),
        Duration::from_secs(10),
        (Duration::from_secs(1), Duration::from_secs(300)),
    );
    let queue_ttl = values::duration_in(
        p,
        &format!("{path}.queue_ttl"),
        a.queue_ttl.as_ref(),
        Duration::from_secs(60),
        (Duration::from_secs(1), Duration::from_secs(3600)),
    );
    if queue_ttl <= timeout {
        p.add(
            format!("{path}.queue_ttl"),
            a.queue_ttl.as_ref().map(|s| s.span()),
            format!(
                "({}) must exceed the probe timeout ({}), or probes expire before they can return",
                humantime::format_duration(queue_ttl),
                humantime::format_duration(timeout)
            ),
        );
    }
    let queue_max_length = values::count(
        p,
        &format!("{path}.queue_max_length"),
        a.queue_max_length.as_ref(),
        100,
        Limits { min: 1, max: 10_000 },
    );
    let stream_max_bytes = values::count(
        p,
        &format!("{path}.stream_max_bytes"),
        a.stream_max_bytes.as_ref(),
        1 << 20,
        Limits { min: 64 << 10, max: 1 << 30 },
    );
    let queue = match a.queue_type.as_ref().map(|t| t.get_ref().as_str()) {
        None | Some("classic") => QueueKind::Classic,
        Some("quorum") => QueueKind::Quorum,
        Some("stream") => QueueKind::Stream { max_bytes: stream_max_bytes.into() },
        Some(other) => {
            p.add(
                format!("{path}.queue_type"),
                a.queue_type.as_ref().map(|t| t.span()),
                format!("unknown queue type {} (expected classic, quorum or stream)", quoted(other)),
            );
            QueueKind::Classic
        }
    };
    if let (Some(v), false) = (&a.stream_max_bytes, matches!(queue, QueueKind::Stream { .. })) {
        p.add(
            format!("{path}.stream_max_bytes"),
            Some(v.span()),
            "only applies with queue_type stream".to_owned(),
        );
    }
    Some(AmqpTarget {
        tls,
        ca_file: ca_file(p, path, a.ca_file.as_ref(), tls, "tls = true"),
        heartbeat,
        queue_ttl,
        queue_max_length,
        queue,
    })
}

fn ca_file(p: &mut Problems, path: &str, value: Option<&Str>, tls: bool, needs: &str) -> Option<PathBuf> {
    let v = value?;
    if !tls {
        p.add(format!("{path}.ca_file"), Some(v.span()), format!("only applies with {needs}"));
        return None;
    }
    Some(PathBuf::from(v.get_ref()))
}

/// `fetch_wait` unless set: 500 ms, below half the probe timeout. Apache Kafka answers a fetch as
/// soon as a probe arrives (`fetch.min.bytes` 1), so a long wait costs no latency and spares the
/// broker about 200 empty fetches a second per cluster that a 5 ms wait makes. A broker that
/// holds every fetch for the full wait (tansu, the local zones' broker) needs a short one set
/// per target (`fetch_wait = "5ms"`).
fn default_fetch_wait(timeout: Duration) -> Duration {
    (timeout / 2).min(Duration::from_millis(500)).max(Duration::from_millis(1))
}
