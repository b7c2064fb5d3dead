//! A Kafka cell's client settings: one cluster client (producer and consumer) per bootstrap
//! list, security, credentials, CA and timing, so cells that agree on all of them share it.

use crossprobe_probes::kafka::KafkaClientConfig;

use super::{hash, ClientError, ClientSpec, Reads};
use crate::config::{KafkaSecurity, KafkaTarget, SaslMechanism, Target, Tenant};

/// The client settings of a Kafka cell of `target` for `tenant`.
pub(super) fn spec<'a>(
    target: &'a Target,
    k: &'a KafkaTarget,
    tenant: &'a Tenant,
    reads: &mut Reads<'a>,
) -> Result<ClientSpec, ClientError> {
    let t = tenant.kafka.as_ref().expect("the matrix pairs kafka targets with kafka tenants");
    let mut properties = vec![("security.protocol".into(), security(k.security_protocol).into())];
    if let Some(m) = k.sasl_mechanism {
        properties.push(("sasl.mechanism".into(), mechanism(m).into()));
    }
    // Credentials fit per listener: a plain listener of a tenant that has them on a SASL
    // listener does not use them.
    let sasl = matches!(k.security_protocol, KafkaSecurity::SaslPlaintext | KafkaSecurity::SaslSsl);
    if let Some(c) = t.credentials.as_ref().filter(|_| sasl) {
        properties.push(("sasl.username".into(), c.user.clone()));
        properties.push(("sasl.password".into(), reads.secret(&tenant.name, &c.password)?));
    }
    // librdkafka reads the file itself; its content is part of the key, so a reload after the
    // CA was rotated builds new clients.
    let ca = match &k.ca_file {
        Some(path) => {
            properties.push(("ssl.ca.location".into(), path.display().to_string()));
            Some(reads.ca(&target.name, path)?)
        }
        None => None,
    };
    let mut addresses = target.addresses.clone();
    addresses.sort();
    let key = hash(&(
        &addresses,
        &properties,
        &ca,
        k.fetch_wait,
        target.probe.timeout,
        k.topic_retention,
        target.probe.interval,
    ));
    let config = KafkaClientConfig {
        bootstrap: target.addresses.join(","),
        properties,
        fetch_wait: k.fetch_wait,
        timeout: target.probe.timeout,
        topic_retention: k.topic_retention,
        interval: target.probe.interval,
    };
    Ok(ClientSpec::Kafka {
        key,
        config,
        topic: t.topic.clone(),
        broker_id: k.broker_id,
        group: k.group_commit,
    })
}

fn security(s: KafkaSecurity) -> &'static str {
    match s {
        KafkaSecurity::Plaintext => "plaintext",
        KafkaSecurity::Ssl => "ssl",
        KafkaSecurity::SaslPlaintext => "sasl_plaintext",
        KafkaSecurity::SaslSsl => "sasl_ssl",
    }
}

fn mechanism(m: SaslMechanism) -> &'static str {
    match m {
        SaslMechanism::Plain => "PLAIN",
        SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
        SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
    }
}
