//! An AMQP cell's connection settings and probe queue: one connection per (node, vhost, user,
//! password, TLS settings), a channel and a queue per cell.

use std::time::Duration;

use crossprobe_probes::amqp::{AmqpClientConfig, QueueSpec};

use super::{hash, ClientError, ClientSpec, Reads};
use crate::config::{AmqpTarget, QueueKind, Target, Tenant};
use crate::matrix::Cell;

/// The connection and queue settings of AMQP cell `cell` of `target` for `tenant`, for the
/// process whose random id is `run`.
pub(super) fn spec<'a>(
    instance: &str,
    run: u64,
    cell: &Cell,
    target: &'a Target,
    a: &'a AmqpTarget,
    tenant: &'a Tenant,
    reads: &mut Reads<'a>,
) -> Result<ClientSpec, ClientError> {
    let t = tenant.amqp.as_ref().expect("the matrix pairs amqp targets with amqp tenants");
    let client = AmqpClientConfig {
        address: target.addresses[0].clone(),
        vhost: t.vhost.clone(),
        user: t.credentials.user.clone(),
        password: reads.secret(&tenant.name, &t.credentials.password)?,
        tls: a.tls,
        ca_pem: a.ca_file.as_ref().map(|path| reads.ca(&target.name, path)).transpose()?,
        heartbeat: a.heartbeat,
        timeout: target.probe.timeout,
        interval: target.probe.interval,
    };
    // The target's whole section, so settings added later count without a change here.
    let key = hash(&(
        &client.address,
        &client.vhost,
        &client.user,
        &client.password,
        &client.ca_pem,
        format!("{a:?}"),
        client.timeout,
        client.interval,
    ));
    let queue = QueueSpec {
        name: queue_name(instance, run, cell, a.queue),
        kind: a.queue,
        ttl: a.queue_ttl,
        max_length: a.queue_max_length,
        expires: (target.probe.interval * 10).max(Duration::from_secs(600)),
    };
    Ok(ClientSpec::Amqp { key, config: client, queue })
}

/// The probe queue of a cell: per daemon instance and per process (`run`, the random id the
/// process stamps on its probes), so neither replicas nor two processes with one configuration
/// (a rolling update's old and new pod) take each other's probes. A process deletes its queues
/// when it stops; `x-expires` removes those of a process that died. A quorum queue's name ends
/// in `.quorum`.
///
/// A stream has no expiry, so its name leaves out the process: the next run reuses it rather
/// than leaving one behind per run. Every consumer of a stream reads every message, so two
/// processes on one stream each see the other's probes and drop them as foreign, as on Kafka.
pub fn queue_name(instance: &str, run: u64, cell: &Cell, kind: QueueKind) -> String {
    let cell = cell.id.as_str().replace('/', ".");
    match kind {
        QueueKind::Classic => format!("crossprobe.{instance}.{:08x}.{cell}", run as u32),
        QueueKind::Quorum => format!("crossprobe.{instance}.{:08x}.{cell}.quorum", run as u32),
        QueueKind::Stream { .. } => format!("crossprobe.{instance}.{cell}.stream"),
    }
}
