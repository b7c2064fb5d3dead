//! Discovery's broker I/O and bookkeeping: reading a discovered target's brokers (Kafka: the
//! cluster metadata, with the client settings its cells use) or running nodes (RabbitMQ: the
//! management API), and the last known set of every discovered target, which an answer changes
//! only when it is usable.
//!
//! An answer that names no broker, or no answer at all (the bootstrap unreachable, a timeout),
//! keeps the last known set and is logged: a cluster is never emptied by one bad metadata read.

use std::collections::BTreeMap;

use tracing::{info, warn};

use super::{CellSpec, ClientError, ClientSpec, Reads};
use crate::config::{Found, ValidatedConfig};

/// Why a target's brokers could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(transparent)]
    Clients(#[from] ClientError),
    #[error("the cluster did not answer: {0}")]
    Unreachable(#[from] crossprobe_probes::backend::ProbeError),
    #[error("the target has no cell to take client settings from")]
    NoCell,
    #[error("the management API: {0}")]
    Management(#[from] super::management::ManagementError),
    #[error("the management API's password: {0}")]
    Secret(String),
}

/// One read's answer, for the target it names.
pub type Answer = (String, Result<Vec<Found>, DiscoveryError>);

/// The longest wait for the management API's answers: the probe timeout, but at least this.
const MANAGEMENT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads the brokers of target `target` of `config` (a source configuration, before
/// [`ValidatedConfig::discovered`]), within the target's probe timeout.
pub async fn read(config: &ValidatedConfig, target: usize) -> Result<Vec<Found>, DiscoveryError> {
    let t = &config.targets[target];
    if let Some(m) = t.discovery.as_ref().and_then(|d| d.management.as_ref()) {
        let password = m.credentials.password.resolve().map_err(DiscoveryError::Secret)?;
        let within = t.probe.timeout.max(MANAGEMENT_WAIT);
        let nodes = super::management::nodes(&m.address, &m.credentials.user, &password, within).await?;
        return Ok(named(nodes.into_iter().map(|n| (n.name, n.amqp)).collect()));
    }
    let cell = config.matrix.cells().iter().find(|c| c.target == target).ok_or(DiscoveryError::NoCell)?;
    let spec = CellSpec::resolve(config, 0, cell, &mut Reads::default())?;
    let ClientSpec::Kafka { config: client, topic, .. } = spec.client else {
        return Err(DiscoveryError::NoCell);
    };
    let brokers = crossprobe_probes::kafka::discover(&client, &topic).await?;
    Ok(brokers
        .into_iter()
        .map(|b| Found { id: b.id.to_string(), suffix: b.id.to_string(), address: b.address })
        .collect())
}

/// RabbitMQ nodes as [`Found`]: each named by the part of its name before the `@` when that is
/// unique among them, else by its whole name with the `@` made a `.`.
fn named(nodes: Vec<(String, String)>) -> Vec<Found> {
    let short = |n: &str| n.split_once('@').map_or(n, |(s, _)| s).to_owned();
    let unique = |s: &str| nodes.iter().filter(|(n, _)| short(n) == s).count() == 1;
    nodes
        .iter()
        .map(|(name, address)| {
            let s = short(name);
            let suffix = if unique(&s) { s } else { name.replace('@', ".") };
            Found { id: name.clone(), suffix, address: address.clone() }
        })
        .collect()
}

/// The last known brokers of every discovered target, by target name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Known(BTreeMap<String, Vec<Found>>);

impl Known {
    /// The sets, as [`ValidatedConfig::discovered`] takes them.
    pub fn sets(&self) -> &BTreeMap<String, Vec<Found>> {
        &self.0
    }

    /// Takes one answer for `target`; returns whether its set changed. An error or an empty
    /// answer keeps the last set.
    pub fn update(&mut self, target: &str, answer: Result<Vec<Found>, DiscoveryError>) -> bool {
        let mut brokers = match answer {
            Ok(b) if !b.is_empty() => b,
            Ok(_) => {
                warn!(target, "discovery: the cluster named no broker; keeping the last known set");
                return false;
            }
            Err(e) => {
                warn!(target, error = %e, "discovery: cannot read the brokers; keeping the last known set");
                return false;
            }
        };
        brokers.sort();
        brokers.dedup();
        let last = self.0.get(target);
        if last == Some(&brokers) {
            return false;
        }
        let ids = |b: &[Found]| b.iter().map(|f| f.id.to_string()).collect::<Vec<_>>().join(",");
        info!(
            target,
            before = %last.map_or("none".to_owned(), |b| ids(b)),
            now = %ids(&brokers),
            "discovery: the cluster's brokers changed"
        );
        self.0.insert(target.to_owned(), brokers);
        true
    }

    /// Forgets targets no longer discovered by `config`.
    pub fn retain(&mut self, config: &ValidatedConfig) {
        self.0.retain(|name, _| config.targets.iter().any(|t| &t.name == name && t.discovery.is_some()));
    }
}

/// Reads every discovered target of `config` at once and records the answers.
pub async fn read_all(config: &ValidatedConfig, known: &mut Known) -> bool {
    let targets: Vec<usize> =
        (0..config.targets.len()).filter(|&i| config.targets[i].discovery.is_some()).collect();
    let answers = futures_util::future::join_all(targets.iter().map(|&i| read(config, i))).await;
    let mut changed = false;
    for (i, answer) in targets.into_iter().zip(answers) {
        changed |= known.update(&config.targets[i].name, answer);
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::{DiscoveryError, Known};
    use crate::config::Found;

    fn brokers(ids: &[i32]) -> Vec<Found> {
        ids.iter()
            .map(|&id| Found { id: id.to_string(), suffix: id.to_string(), address: format!("h{id}:9092") })
            .collect()
    }

    #[test]
    fn nodes_are_named_by_their_short_name_unless_two_share_it() {
        let found = super::named(vec![
            ("rabbit@h1".into(), "h1:5672".into()),
            ("rabbit@h2".into(), "h2:5672".into()),
            ("rabbit-c@h3".into(), "h3:5672".into()),
        ]);
        let suffixes: Vec<&str> = found.iter().map(|f| f.suffix.as_str()).collect();
        assert_eq!(suffixes, ["rabbit.h1", "rabbit.h2", "rabbit-c"]);
        assert_eq!(found[2].id, "rabbit-c@h3", "zones are keyed by the full node name");
    }

    #[test]
    fn only_a_usable_answer_changes_the_known_set() {
        let mut k = Known::default();
        assert!(k.update("kafka", Ok(brokers(&[2, 1]))), "first answer");
        assert!(!k.update("kafka", Ok(brokers(&[1, 2]))), "same set in another order");
        assert!(!k.update("kafka", Ok(Vec::new())), "an answer naming no broker is ignored");
        let unreachable = DiscoveryError::Unreachable(crossprobe_probes::backend::ProbeError::Connect(
            crossprobe_probes::ErrorKind::Timeout,
        ));
        assert!(!k.update("kafka", Err(unreachable)), "no answer keeps the set");
        assert_eq!(k.sets()["kafka"], brokers(&[1, 2]));
        assert!(k.update("kafka", Ok(brokers(&[1, 2, 3]))), "a broker added");
        assert!(k.update("kafka", Ok(brokers(&[2, 3]))), "a broker removed");
        assert_eq!(k.sets()["kafka"], brokers(&[2, 3]));
    }
}
