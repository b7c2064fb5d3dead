//! An AMQP cell's connection settings and probe queue: one connection per (node, vhost, user,
//! password, TLS settings), a channel and a queue per cell.

use std::time::Duration;

use crossprobe_probes::amqp::{AmqpClientConfig, QueueSpec};

use super::{hash, ClientError, ClientSpec, Reads};
use crate::config::{AmqpTarget, Target, Tenant};
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
        name: queue_name(instance, run, cell),
        ttl: a.queue_ttl,
        max_length: a.queue_max_length,
        expires: (target.probe.interval * 10).max(Duration::from_secs(600)),
    };
    Ok(ClientSpec::Amqp { key, config: client, queue })
}

/// The probe queue of a cell: per daemon instance and per process (`run`, the random id the
/// process stamps on its probes), so neither replicas nor two processes with one configuration
/// (a rolling update's old and new pod) read each other's probes. A process deletes its queues
/// when it stops; `x-expires` removes those of a process that died.
pub fn queue_name(instance: &str, run: u64, cell: &Cell) -> String {
    format!("crossprobe.{instance}.{:08x}.{}", run as u32, cell.id.as_str().replace('/', "."))
}
