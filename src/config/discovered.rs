//! A configuration with its discovered targets expanded: each broker (Kafka) or running node
//! (RabbitMQ) found becomes a target of its own (one cell per tenant, as a listed target), so the daemon applies what discovery
//! found through the same [`crate::reload`] path as an edited file.
//!
//! Until a target's cluster has answered, the target stays as written: its cells probe its
//! addresses (Kafka: the bootstrap, with no broker named), and report `connect_failed` while
//! those cannot be reached.

use std::collections::BTreeMap;

use super::{Endpoint, Target, ValidatedConfig};
use crate::matrix::{Cell, CellId, Matrix};

/// One broker or node a discovered target's cluster named.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Found {
    /// What names it: the Kafka broker id, the RabbitMQ node name; the key of `zones`.
    pub id: String,
    /// The end of its target's name, `<target>-<suffix>`: the broker id, or the node's name
    /// made a valid name (`rabbit-a@localhost` is `rabbit-a`, or `rabbit-a.localhost` when two
    /// nodes share the part before the `@`).
    pub suffix: String,
    /// Kafka: its advertised `host:port` (its cells reach it through the cluster's bootstrap
    /// clients). AMQP: its AMQP listener, which its cells connect to.
    pub address: String,
}

/// Index of the `az` and `broker` dimensions ([`crate::matrix::BASE_DIMENSIONS`]).
const AZ: usize = 0;
const BROKER: usize = 3;

impl ValidatedConfig {
    /// This configuration with every discovered target that has an answer in `found` (by target
    /// name) replaced by one target per broker or node: named `<target>-<suffix>`, `broker`
    /// label `<broker>-<suffix>`, zone from `zones` or the target's `az`. Kafka: the same
    /// bootstrap addresses (one shared client per cluster) and the broker id its cells must hit;
    /// AMQP: the node's own AMQP listener.
    pub fn discovered(&self, found: &BTreeMap<String, Vec<Found>>) -> ValidatedConfig {
        let mut targets = Vec::new();
        // Source target -> its targets in the expanded configuration.
        let mut made: Vec<Vec<usize>> = Vec::new();
        for t in &self.targets {
            let brokers = t.discovery.as_ref().and_then(|_| found.get(&t.name)).filter(|b| !b.is_empty());
            let Some(brokers) = brokers else {
                made.push(vec![targets.len()]);
                targets.push(t.clone());
                continue;
            };
            made.push((targets.len()..targets.len() + brokers.len()).collect());
            targets.extend(brokers.iter().map(|b| broker_target(t, b)));
        }
        let mut cells = Vec::new();
        for c in self.matrix.cells() {
            for &ti in &made[c.target] {
                let t = &targets[ti];
                if t.discovered_at.is_none() {
                    cells.push(Cell { target: ti, ..c.clone() });
                    continue;
                }
                let id = CellId::new(&t.name, &self.tenants[c.tenant].name);
                let mut labels = c.labels.clone();
                labels[AZ] = t.az.clone();
                labels[BROKER] = t.broker.clone();
                cells.push(Cell { key: id.key(), id, target: ti, tenant: c.tenant, labels });
            }
        }
        ValidatedConfig {
            targets,
            matrix: Matrix::new(self.matrix.dimensions().to_vec(), cells),
            ..self.clone()
        }
    }

    /// Whether any target is discovered.
    pub fn discovers(&self) -> bool {
        self.targets.iter().any(|t| t.discovery.is_some())
    }
}

fn broker_target(t: &Target, b: &Found) -> Target {
    let zones = t.discovery.as_ref().map(|d| &d.zones);
    let mut endpoint = t.endpoint.clone();
    let addresses = match &mut endpoint {
        Endpoint::Kafka(k) => {
            k.broker_id = b.id.parse().ok();
            t.addresses.clone()
        }
        Endpoint::Amqp(_) => vec![b.address.clone()],
    };
    Target {
        name: format!("{}-{}", t.name, b.suffix),
        az: zones.and_then(|z| z.get(&b.id)).unwrap_or(&t.az).clone(),
        broker: format!("{}-{}", t.broker, b.suffix),
        addresses,
        discovery: None,
        discovered_at: Some(b.address.clone()),
        endpoint,
        ..t.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::Found;
    use crate::config::ValidatedConfig;

    const CONFIG: &str = r#"
[[targets]]
name = "kafka"
protocol = "kafka"
az = "a"
addresses = ["127.0.0.1:9092"]
discovery = { every = "10s", zones = { "2" = "b" } }

[[targets]]
name = "rabbit-a"
protocol = "amqp"
az = "a"
addresses = ["127.0.0.1:5672"]

[[tenants]]
name = "acme"
kafka = { topic = "probe-acme" }
amqp = { vhost = "/", user = "guest", password_env = "P" }

[[tenants]]
name = "beta"
kafka = { topic = "probe-beta" }
"#;

    fn cells(c: &ValidatedConfig) -> Vec<String> {
        c.matrix.cells().iter().map(|c| format!("{} {}", c.id, c.labels.join(","))).collect()
    }

    fn found(ids: &[i32]) -> BTreeMap<String, Vec<Found>> {
        let brokers = ids
            .iter()
            .map(|&id| Found { id: id.to_string(), suffix: id.to_string(), address: format!("h{id}:9092") })
            .collect();
        BTreeMap::from([("kafka".to_owned(), brokers)])
    }

    #[test]
    fn each_broker_found_becomes_a_target_with_the_tenants_cells() {
        let source = ValidatedConfig::parse(CONFIG, Path::new("t.toml")).unwrap();
        assert!(source.discovers());
        let before = cells(&source.discovered(&BTreeMap::new()));
        assert_eq!(before, cells(&source), "no answer yet: the target probes its bootstrap");
        let two = source.discovered(&found(&[1, 2]));
        assert_eq!(
            cells(&two),
            [
                "kafka-1/acme a,acme,kafka,kafka-1",
                "kafka-2/acme b,acme,kafka,kafka-2",
                "kafka-1/beta a,beta,kafka,kafka-1",
                "kafka-2/beta b,beta,kafka,kafka-2",
                "rabbit-a/acme a,acme,amqp,rabbit-a",
            ]
        );
        let t = &two.targets[two.matrix.cells()[1].target];
        assert_eq!(
            (t.discovered_at.as_deref(), t.addresses.as_slice()),
            (Some("h2:9092"), &["127.0.0.1:9092".to_owned()][..])
        );
        match &t.endpoint {
            crate::config::Endpoint::Kafka(k) => assert_eq!(k.broker_id, Some(2)),
            other => panic!("expected a kafka endpoint, got {other:?}"),
        }
    }

    /// Broker 3 joins and broker 1 leaves: the reload plan keeps broker 2's cells (same ids and
    /// labels), adds broker 3's and removes broker 1's.
    #[test]
    fn a_broker_added_or_removed_changes_only_its_cells() {
        let source = ValidatedConfig::parse(CONFIG, Path::new("t.toml")).unwrap();
        let running = source.discovered(&found(&[1, 2]));
        let next = source.discovered(&found(&[2, 3]));
        let plan = crate::reload::ReloadPlan::new(&running, next).unwrap();
        let ids = |c: &ValidatedConfig| c.matrix.cells().iter().map(|c| c.id.to_string()).collect::<Vec<_>>();
        let old = ids(&running);
        let kept: Vec<(String, Option<String>)> = ids(&plan.config)
            .into_iter()
            .zip(&plan.carried)
            .map(|(id, p)| (id, p.map(|i| old[i].clone())))
            .collect();
        assert_eq!(
            kept,
            [
                ("kafka-2/acme".to_owned(), Some("kafka-2/acme".to_owned())),
                ("kafka-3/acme".to_owned(), None),
                ("kafka-2/beta".to_owned(), Some("kafka-2/beta".to_owned())),
                ("kafka-3/beta".to_owned(), None),
                ("rabbit-a/acme".to_owned(), Some("rabbit-a/acme".to_owned())),
            ]
        );
    }
}
