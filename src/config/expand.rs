//! Expands `[[targets]]` x `[[tenants]]` into the probe matrix, applying each target's tenant
//! list and `[matrix] exclude`, and checks the result: every pair must be probe-able, exclusions
//! must match something, no two cells may carry the same labels, and the matrix is not empty.
//!
//! The size is checked first, by counting: the cells of every target's tenants, before
//! exclusions, may not exceed `[matrix] max_cells`, so an oversized matrix is refused before
//! any cell is built.

use std::collections::BTreeMap;

use super::error::{key, quoted, Problems};
use super::raw::RawConfig;
use super::values::{self, Limits};
use super::{Endpoint, KafkaSecurity, Target, Tenant};
use crate::matrix::{Cell, CellId, Matrix, Selector, BASE_DIMENSIONS};

/// `[matrix] max_cells` when not set.
pub const DEFAULT_MAX_CELLS: u32 = 10_000;
/// The highest `max_cells` accepted.
pub const MAX_CELLS_LIMIT: i64 = 1_000_000;

pub(super) fn expand(
    p: &mut Problems,
    raw: &RawConfig,
    targets: &[(Target, usize)],
    tenants: &[Tenant],
) -> Option<Matrix> {
    // Later checks would only echo earlier mistakes if some targets were dropped.
    let complete = targets.len() == raw.targets.len();
    let mut dimensions: Vec<String> = BASE_DIMENSIONS.iter().map(|d| d.to_string()).collect();
    if let Some((first, _)) = targets.first() {
        dimensions.extend(first.labels.keys().cloned());
    }
    // The first tenant of each name; later duplicates are already reported and take no part.
    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, t) in raw.tenants.iter().enumerate() {
        by_name.entry(t.name.get_ref().as_str()).or_insert(i);
    }
    let first_of_name = |i: usize| by_name[raw.tenants[i].name.get_ref().as_str()] == i;

    let max_cells = values::count(
        p,
        "matrix.max_cells",
        raw.matrix.max_cells.as_ref(),
        DEFAULT_MAX_CELLS,
        Limits { min: 1, max: MAX_CELLS_LIMIT },
    );
    let tenants_of = |protocol: super::Protocol| {
        (0..raw.tenants.len())
            .filter(|&i| {
                first_of_name(i)
                    && match protocol {
                        super::Protocol::Kafka => raw.tenants[i].kafka.is_some(),
                        super::Protocol::Amqp => raw.tenants[i].amqp.is_some(),
                    }
            })
            .count() as u64
    };
    let (kafka_tenants, amqp_tenants) =
        (tenants_of(super::Protocol::Kafka), tenants_of(super::Protocol::Amqp));
    let planned: u64 = targets
        .iter()
        .map(|(t, ri)| match &raw.targets[*ri].tenants {
            Some(list) => list.len() as u64,
            None => match t.protocol() {
                super::Protocol::Kafka => kafka_tenants,
                super::Protocol::Amqp => amqp_tenants,
            },
        })
        .sum();
    if planned > u64::from(max_cells) {
        p.add(
            "matrix.max_cells",
            raw.matrix.max_cells.as_ref().map(|m| m.span()),
            format!(
                "the targets and their tenants make {planned} cells before exclusions, more than max_cells ({max_cells}); raise [matrix] max_cells (at most {MAX_CELLS_LIMIT}) if the matrix is meant to be this large"
            ),
        );
        return None;
    }

    let mut cells = Vec::new();
    for (ti, (target, ri)) in targets.iter().enumerate() {
        let rt = &raw.targets[*ri];
        let path = format!("targets[{ri}] {}", quoted(&target.name));
        let protocol = target.protocol();
        let supports = |i: usize| match protocol {
            super::Protocol::Kafka => raw.tenants[i].kafka.is_some(),
            super::Protocol::Amqp => raw.tenants[i].amqp.is_some(),
        };
        let chosen: Vec<usize> = match &rt.tenants {
            None => (0..raw.tenants.len()).filter(|&i| supports(i) && first_of_name(i)).collect(),
            Some(list) => {
                let mut chosen = Vec::new();
                for (j, name) in list.iter().enumerate() {
                    let key = format!("{path}.tenants[{j}]");
                    match by_name.get(name.get_ref().as_str()) {
                        None => p.add(
                            key,
                            Some(name.span()),
                            format!("unknown tenant {} (tenants: {})", quoted(name.get_ref()), names(&by_name)),
                        ),
                        Some(&i) if chosen.contains(&i) => {
                            p.add(key, Some(name.span()), format!("tenant {} listed twice", quoted(name.get_ref())))
                        }
                        Some(&i) if !supports(i) => p.add(
                            key,
                            Some(name.span()),
                            format!(
                                "tenant {} has no [tenants.{protocol}] settings, so it cannot be probed on this {protocol} target",
                                quoted(name.get_ref())
                            ),
                        ),
                        Some(&i) => chosen.push(i),
                    }
                }
                chosen
            }
        };
        for i in chosen {
            let mut labels =
                vec![target.az.clone(), tenants[i].name.clone(), protocol.to_string(), target.broker.clone()];
            labels.extend(target.labels.values().cloned());
            let id = CellId::new(&target.name, &tenants[i].name);
            cells.push(Cell { key: id.key(), id, target: ti, tenant: i, labels });
        }
    }

    for (i, rule) in raw.matrix.exclude.iter().enumerate() {
        let path = format!("matrix.exclude[{i}]");
        let mut fixed = Vec::new();
        for (dim, value) in rule.get_ref() {
            match dimensions.iter().position(|d| d == dim) {
                Some(d) => fixed.push((d, value.get_ref().clone())),
                None => p.add(
                    format!("{path}.{}", key(dim)),
                    Some(value.span()),
                    format!("unknown dimension {} (dimensions: {})", quoted(dim), dimensions.join(", ")),
                ),
            }
        }
        if fixed.len() != rule.get_ref().len() {
            continue;
        }
        if fixed.is_empty() {
            p.add(path, Some(rule.span()), "an empty rule would exclude every cell".into());
            continue;
        }
        let selector = Selector::new(fixed);
        let before = cells.len();
        cells.retain(|c| !selector.matches(c));
        if cells.len() == before && complete {
            p.add(path, Some(rule.span()), "matches no cell; remove it or fix its values".into());
        }
    }

    credentials_fit(p, raw, targets, &cells);
    let matrix = Matrix::new(dimensions, cells);
    let mut seen: BTreeMap<&[String], &Cell> = BTreeMap::new();
    for c in matrix.cells() {
        if let Some(first) = seen.insert(&c.labels, c) {
            p.add(
                "matrix",
                None,
                format!(
                    "cells {} and {} carry the same labels ({}); give one target its own broker or label",
                    first.id,
                    c.id,
                    matrix.describe(c)
                ),
            );
        }
    }
    if matrix.is_empty() && complete {
        let why = if raw.targets.is_empty() {
            "no [[targets]] are configured"
        } else if raw.tenants.is_empty() {
            "no [[tenants]] are configured"
        } else if raw.matrix.exclude.is_empty() {
            "no tenant has settings for any target's protocol"
        } else {
            "every cell is excluded"
        };
        p.add("matrix", None, format!("no cells to probe: {why}"));
    }
    Some(matrix)
}

/// Kafka credentials fit per listener: a tenant probed on a SASL target needs a user, which a
/// plain target probing the same tenant does not use; a user that no target ever uses is a
/// mistake. One problem per tenant, where its settings are, naming the targets.
fn credentials_fit(p: &mut Problems, raw: &RawConfig, targets: &[(Target, usize)], cells: &[Cell]) {
    for (i, t) in raw.tenants.iter().enumerate() {
        let Some(k) = &t.kafka else { continue };
        let (mut sasl, mut plain) = (Vec::new(), 0usize);
        for c in cells.iter().filter(|c| c.tenant == i) {
            let (target, _) = &targets[c.target];
            if let Endpoint::Kafka(kt) = &target.endpoint {
                if matches!(kt.security_protocol, KafkaSecurity::SaslPlaintext | KafkaSecurity::SaslSsl) {
                    sasl.push(target.name.as_str());
                } else {
                    plain += 1;
                }
            }
        }
        let path = format!("tenants[{i}] {}.kafka", quoted(t.name.get_ref()));
        match &k.user {
            None if !sasl.is_empty() => p.add(
                path,
                Some(k.topic.span()),
                format!(
                    "has no user, but SASL target{} {} probe{} it; add user with password_env or password_file",
                    if sasl.len() == 1 { "" } else { "s" },
                    listed(&sasl),
                    if sasl.len() == 1 { "s" } else { "" },
                ),
            ),
            Some(user) if sasl.is_empty() && plain > 0 => p.add(
                format!("{path}.user"),
                Some(user.span()),
                "would never be used: no target that probes this tenant uses SASL (security_protocol sasl_plaintext or sasl_ssl)".into(),
            ),
            _ => {}
        }
    }
}

/// `"a", "b", "c" and 4 more`.
fn listed(names: &[&str]) -> String {
    const SHOWN: usize = 5;
    let shown: Vec<String> = names.iter().take(SHOWN).map(|n| quoted(n)).collect();
    match names.len().checked_sub(SHOWN) {
        Some(more) if more > 0 => format!("{} and {more} more", shown.join(", ")),
        _ => shown.join(", "),
    }
}

fn names(by_name: &BTreeMap<&str, usize>) -> String {
    if by_name.is_empty() {
        "none".into()
    } else {
        by_name.keys().copied().collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::ValidatedConfig;

    const TENANTS: &str = r#"
[[tenants]]
name = "acme"
kafka = { topic = "p-acme" }
amqp = { vhost = "acme", user = "acme", password_env = "ACME" }

[[tenants]]
name = "globex"
kafka = { topic = "p-globex" }
"#;

    fn target(name: &str, protocol: &str, az: &str, extra: &str) -> String {
        format!("[[targets]]\nname = \"{name}\"\nprotocol = \"{protocol}\"\naz = \"{az}\"\naddresses = [\"127.0.0.1:1\"]\n{extra}\n")
    }

    fn cells(toml: &str) -> Vec<(String, Vec<String>)> {
        let config = ValidatedConfig::parse(toml, Path::new("test.toml")).unwrap_or_else(|e| panic!("{e}"));
        config.matrix.cells().iter().map(|c| (c.id.to_string(), c.labels.clone())).collect()
    }

    fn ids(toml: &str) -> Vec<String> {
        cells(toml).into_iter().map(|(id, _)| id).collect()
    }

    #[test]
    fn every_tenant_with_settings_for_the_protocol_by_default() {
        let toml = [target("k-a", "kafka", "a", ""), target("r-a", "amqp", "a", ""), TENANTS.into()].concat();
        assert_eq!(ids(&toml), ["k-a/acme", "k-a/globex", "r-a/acme"]);
    }

    #[test]
    fn labels_follow_the_dimension_order_with_extras_sorted() {
        let extra = "labels = { zone_group = \"eu\", network = \"public\" }";
        let toml = [target("k-a", "kafka", "a", extra), TENANTS.into()].concat();
        let config = ValidatedConfig::parse(&toml, Path::new("t")).unwrap();
        assert_eq!(
            config.matrix.dimensions(),
            ["az", "tenant", "protocol", "broker", "network", "zone_group"]
        );
        assert_eq!(cells(&toml)[0].1, ["a", "acme", "kafka", "k-a", "public", "eu"]);
    }

    #[test]
    fn a_target_tenant_list_restricts_its_cells() {
        let toml = [target("k-a", "kafka", "a", "tenants = [\"globex\"]"), TENANTS.into()].concat();
        assert_eq!(ids(&toml), ["k-a/globex"]);
    }

    #[test]
    fn exclude_rules_remove_matching_cells() {
        let toml = [
            target("k-a", "kafka", "a", ""),
            target("k-b", "kafka", "b", ""),
            target("r-b", "amqp", "b", ""),
            TENANTS.into(),
            "[matrix]\nexclude = [{ az = \"b\", tenant = \"acme\" }]\n".into(),
        ]
        .concat();
        assert_eq!(ids(&toml), ["k-a/acme", "k-a/globex", "k-b/globex"]);
    }

    #[test]
    fn cell_ids_and_keys_do_not_depend_on_order() {
        let a = [target("k-a", "kafka", "a", ""), target("k-b", "kafka", "b", ""), TENANTS.into()].concat();
        let b = [target("k-b", "kafka", "b", ""), target("k-a", "kafka", "a", ""), TENANTS.into()].concat();
        let keys = |toml: &str| {
            let c = ValidatedConfig::parse(toml, Path::new("t")).unwrap();
            let mut k: Vec<_> = c.matrix.cells().iter().map(|c| (c.id.to_string(), c.key)).collect();
            k.sort();
            k
        };
        assert_eq!(keys(&a), keys(&b));
    }

    #[test]
    fn a_shared_broker_label_needs_another_label_to_tell_cells_apart() {
        let ok = [
            target("k-a-1", "kafka", "a", "broker = \"k-a\"\nlabels = { network = \"public\" }"),
            target("k-a-2", "kafka", "a", "broker = \"k-a\"\nlabels = { network = \"private\" }"),
            TENANTS.into(),
        ]
        .concat();
        assert_eq!(ids(&ok).len(), 4);
        let clash = ok.replace("\"private\"", "\"public\"");
        let err = ValidatedConfig::parse(&clash, Path::new("t")).unwrap_err();
        assert_eq!(err.problems().len(), 2, "one problem per clashing pair: {err}");
        assert!(err.problems()[0].message.contains("carry the same labels"), "{err}");
    }

    #[test]
    fn sasl_targets_need_tenant_users_and_plain_targets_refuse_them() {
        let sasl = target("k-a", "kafka", "a", "kafka = { security_protocol = \"sasl_ssl\" }");
        let err = ValidatedConfig::parse(&[sasl, TENANTS.into()].concat(), Path::new("t")).unwrap_err();
        let messages: Vec<_> = err.problems().iter().map(|p| format!("{}: {}", p.path, p.message)).collect();
        assert_eq!(
            messages,
            [
                "tenants[0] \"acme\".kafka: has no user, but SASL target \"k-a\" probes it; add user with password_env or password_file",
                "tenants[1] \"globex\".kafka: has no user, but SASL target \"k-a\" probes it; add user with password_env or password_file"
            ]
        );
        let with_user =
            TENANTS.replace("topic = \"p-acme\"", "topic = \"p-acme\", user = \"u\", password_env = \"P\"");
        let plain = [target("k-a", "kafka", "a", "tenants = [\"acme\"]"), with_user.clone()].concat();
        let err = ValidatedConfig::parse(&plain, Path::new("t")).unwrap_err();
        assert_eq!(err.problems().len(), 1, "{err}");
        assert_eq!(err.problems()[0].path, "tenants[0] \"acme\".kafka.user");
        assert!(err.problems()[0].message.starts_with("would never be used"), "{err}");
    }

    #[test]
    fn one_tenant_on_a_plain_and_a_sasl_listener_fits() {
        let with_user =
            TENANTS.replace("topic = \"p-acme\"", "topic = \"p-acme\", user = \"u\", password_env = \"P\"");
        let both = [
            target("k-plain", "kafka", "a", "tenants = [\"acme\"]"),
            target(
                "k-sasl",
                "kafka",
                "b",
                "tenants = [\"acme\"]\nkafka = { security_protocol = \"sasl_ssl\" }",
            ),
            with_user,
        ]
        .concat();
        assert_eq!(ids(&both), ["k-plain/acme", "k-sasl/acme"]);
    }

    #[test]
    fn the_matrix_size_is_refused_before_expanding() {
        let toml =
            [target("k-a", "kafka", "a", ""), target("k-b", "kafka", "b", ""), TENANTS.into()].concat();
        assert_eq!(ids(&toml).len(), 4);
        let err = ValidatedConfig::parse(&format!("{toml}\n[matrix]\nmax_cells = 3\n"), Path::new("t"))
            .unwrap_err();
        assert_eq!(
            err.problems().iter().map(|p| (p.path.as_str(), p.message.as_str())).collect::<Vec<_>>(),
            [(
                "matrix.max_cells",
                "the targets and their tenants make 4 cells before exclusions, more than max_cells (3); raise [matrix] max_cells (at most 1000000) if the matrix is meant to be this large"
            )]
        );
    }
}
