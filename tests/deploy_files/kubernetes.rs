//! The Kubernetes manifests' contract, on what `kubectl kustomize deploy/kubernetes` renders
//! (every object validated offline against the Kubernetes schemas by kubernetes-validate): one
//! Deployment per zone, pinned to it by node affinity, probed on `/readyz` and `/healthz`,
//! running its zone's ConfigMap, whose `vantage` is that zone and which validates; passwords
//! from the Secret; non-root with a read-only root file system; Service, PodMonitor and
//! PodDisruptionBudget selecting the pods; the PrometheusRule and the dashboard ConfigMap
//! holding what deploy/prometheus/ and deploy/grafana/ hold.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use crossprobe::config::{Secret, ValidatedConfig};
use yaml_rust2::{Yaml, YamlLoader};

use super::{root, yaml_docs};

/// `kubectl kustomize deploy/kubernetes`, rendered once per test binary.
fn rendered() -> &'static str {
    static RENDERED: OnceLock<String> = OnceLock::new();
    RENDERED.get_or_init(|| {
        let out = Command::new("kubectl")
            .args(["kustomize", "deploy/kubernetes"])
            .current_dir(root())
            .output()
            .expect("kubectl runs (deploy/local/crossprobe-local install puts it there)");
        assert!(out.status.success(), "kubectl kustomize failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    })
}

/// Every object kustomize renders, and the example Secret (applied by hand), by kind.
fn manifests() -> BTreeMap<String, Vec<Yaml>> {
    let mut docs = YamlLoader::load_from_str(rendered()).expect("kustomize renders YAML");
    docs.extend(yaml_docs(&root().join("deploy/kubernetes/secret.example.yaml")).unwrap());
    let mut out: BTreeMap<String, Vec<Yaml>> = BTreeMap::new();
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap_or_else(|| panic!("an object without kind: {doc:?}"));
        out.entry(kind.to_owned()).or_default().push(doc);
    }
    out
}

/// The objects of `kind` whose name starts with `prefix`.
fn named<'a>(all: &'a BTreeMap<String, Vec<Yaml>>, kind: &str, prefix: &str) -> Vec<&'a Yaml> {
    all.get(kind)
        .into_iter()
        .flatten()
        .filter(|d| d["metadata"]["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .collect()
}

fn one<'a>(all: &'a BTreeMap<String, Vec<Yaml>>, kind: &str) -> &'a Yaml {
    match all.get(kind).map(Vec::as_slice) {
        Some([doc]) => doc,
        other => panic!("expected one {kind}, found {}", other.map_or(0, <[Yaml]>::len)),
    }
}

fn str_of<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str().unwrap_or_else(|| panic!("{what}: expected a string, found {y:?}"))
}

/// A label selector's `matchLabels`, or a pod's labels.
fn labels(y: &Yaml) -> BTreeMap<String, String> {
    let hash = y.as_hash().unwrap_or_else(|| panic!("expected labels, found {y:?}"));
    hash.iter()
        .map(|(k, v)| (str_of(k, "label key").to_owned(), str_of(v, "label value").to_owned()))
        .collect()
}

fn selects(selector: &BTreeMap<String, String>, pod: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| pod.get(k) == Some(v))
}

/// The configuration file a Deployment mounts, from its ConfigMap.
fn mounted_config(all: &BTreeMap<String, Vec<Yaml>>, spec: &Yaml) -> (String, String) {
    let volume = &spec["volumes"][0]["configMap"];
    let name = str_of(&volume["name"], "the config volume's ConfigMap");
    let configmap = match named(all, "ConfigMap", name).as_slice() {
        [one] if one["metadata"]["name"].as_str() == Some(name) => *one,
        _ => panic!("no ConfigMap {name}"),
    };
    assert_eq!(str_of(&volume["items"][0]["path"], "mounted path"), "crossprobe.toml");
    let key = str_of(&volume["items"][0]["key"], "ConfigMap key").to_owned();
    let text = str_of(&configmap["data"][key.as_str()], &format!("{name} data {key}")).to_owned();
    (format!("{name}/{key}"), text)
}

#[test]
fn each_zone_has_a_deployment_pinned_to_it_and_probed_on_health_paths() {
    let all = manifests();
    let deployments = &all["Deployment"];
    let secret = one(&all, "Secret");
    let secret_keys: BTreeSet<String> = labels(&secret["stringData"]).into_keys().collect();
    let mut zones = BTreeSet::new();
    for d in deployments {
        let name = str_of(&d["metadata"]["name"], "Deployment name");
        let pod = &d["spec"]["template"];
        let spec = &pod["spec"];
        assert!(
            selects(&labels(&d["spec"]["selector"]["matchLabels"]), &labels(&pod["metadata"]["labels"])),
            "{name}: its selector must match its pods"
        );
        let term = &spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchExpressions"][0];
        assert_eq!(str_of(&term["key"], name), "topology.kubernetes.io/zone", "{name}: zone affinity");
        assert_eq!(str_of(&term["operator"], name), "In", "{name}: zone affinity operator");
        let zone = str_of(&term["values"][0], name);
        assert_eq!(term["values"].as_vec().map(Vec::len), Some(1), "{name}: exactly one zone");
        assert!(zones.insert(zone.to_owned()), "{name}: zone {zone} has two Deployments");

        let c = &spec["containers"][0];
        // ConfigMap edits reach the pod only through a directory mount (not subPath), and are
        // applied by --watch-config.
        let args: Vec<&str> = c["args"].as_vec().into_iter().flatten().filter_map(Yaml::as_str).collect();
        assert!(args.windows(2).any(|w| w[0] == "--watch-config"), "{name}: run --watch-config: {args:?}");
        assert!(c["volumeMounts"][0]["subPath"].is_badvalue(), "{name}: the config is not a subPath mount");
        let port = &c["ports"][0];
        assert_eq!((str_of(&port["name"], name), port["containerPort"].as_i64()), ("metrics", Some(9464)));
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            let get = &c[probe]["httpGet"];
            assert_eq!(get["path"].as_str(), Some(path), "{name}: {probe} path");
            assert_eq!(get["port"].as_str(), Some("metrics"), "{name}: {probe} port");
        }
        assert_eq!(spec["securityContext"]["runAsNonRoot"].as_bool(), Some(true), "{name}: runAsNonRoot");
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{name}: read-only root");
        assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false), "{name}: no escalation");
        assert_eq!(sc["capabilities"]["drop"][0].as_str(), Some("ALL"), "{name}: drop ALL caps");
        assert!(
            c["resources"]["requests"].is_hash() && c["resources"]["limits"].is_hash(),
            "{name}: resources"
        );

        let (key, text) = mounted_config(&all, spec);
        let config = ValidatedConfig::parse(&text, Path::new(&key))
            .unwrap_or_else(|e| panic!("{name}: {key} does not validate:\n{e}"));
        assert_eq!(config.daemon.vantage.as_deref(), Some(zone), "{name}: {key} must probe from its zone");
        assert_eq!(config.daemon.listen.port(), 9464, "{name}: {key} must listen on the metrics port");
        assert!(config.daemon.listen.ip().is_unspecified(), "{name}: {key} must listen on all interfaces");

        let env: BTreeMap<&str, &Yaml> = c["env"]
            .as_vec()
            .into_iter()
            .flatten()
            .map(|e| (str_of(&e["name"], "env name"), &e["valueFrom"]["secretKeyRef"]))
            .collect();
        let needed = config.tenants.iter().flat_map(|t| {
            let kafka = t.kafka.as_ref().and_then(|k| k.credentials.as_ref()).map(|c| &c.password);
            kafka.into_iter().chain(t.amqp.as_ref().map(|a| &a.credentials.password))
        });
        for secret_source in needed {
            let Secret::Env(var) = secret_source else { panic!("{name}: {key} should use password_env") };
            let from = env.get(var.as_str()).unwrap_or_else(|| panic!("{name}: {var} is not set"));
            assert_eq!(from["name"], secret["metadata"]["name"], "{name}: {var} from another Secret");
            assert!(secret_keys.contains(str_of(&from["key"], var)), "{name}: the Secret has no {var}");
        }
    }
    assert_eq!(zones.len(), 3, "expected one Deployment per zone a, b, c: {zones:?}");
}

#[test]
fn the_zones_configs_differ_only_in_vantage() {
    let all = manifests();
    let files: Vec<&str> = named(&all, "ConfigMap", "crossprobe-config-")
        .iter()
        .map(|c| str_of(&c["data"]["crossprobe.toml"], "crossprobe.toml"))
        .collect();
    assert_eq!(files.len(), 3, "one configuration per zone");
    let without_vantage: BTreeSet<String> = files
        .iter()
        .map(|text| text.lines().filter(|l| !l.starts_with("vantage =")).collect::<Vec<_>>().join("\n"))
        .collect();
    assert_eq!(without_vantage.len(), 1, "the zones' files must be the same matrix: {files:#?}");
}

/// kubernetes-validate checks every object against the schemas of Kubernetes 1.37, offline
/// (they ship in the package). The Prometheus Operator's kinds have no schema there: their
/// shape is checked by the tests above and below.
#[test]
fn every_rendered_object_validates_against_the_kubernetes_schemas() {
    let file = std::env::temp_dir().join(format!("ecosystem-kustomize-{}.yaml", std::process::id()));
    std::fs::write(&file, rendered()).unwrap();
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", "1.37.0"])
        .arg(&file)
        .output()
        .expect("kubernetes-validate runs (deploy/local/crossprobe-local install puts it there)");
    std::fs::remove_file(&file).unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubernetes-validate failed:\n{report}");
    let all = manifests();
    for (kind, docs) in &all {
        for doc in docs {
            let name = str_of(&doc["metadata"]["name"], kind);
            if kind == "Secret" {
                continue; // the example, not rendered
            }
            let line = report
                .lines()
                .find(|l| {
                    l.contains(&format!("resource {}/{name} ", kind.to_lowercase()))
                        || l.contains(&format!("kind {kind} "))
                })
                .unwrap_or_else(|| panic!("kubernetes-validate said nothing of {kind} {name}:\n{report}"));
            let checked = line.contains("passed");
            let unknown = line.contains("Couldn't find schema")
                && doc["apiVersion"].as_str() == Some("monitoring.coreos.com/v1");
            assert!(checked || unknown, "{kind} {name}: {line}");
        }
    }
}

/// A YAML value as JSON, so that two documents compare equal whatever their key order
/// (kustomize sorts keys).
fn json(y: &Yaml) -> serde_json::Value {
    use serde_json::Value;
    match y {
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(r) => Value::String(r.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(a) => Value::Array(a.iter().map(json).collect()),
        Yaml::Hash(h) => {
            Value::Object(h.iter().map(|(k, v)| (str_of(k, "key").to_owned(), json(v))).collect())
        }
        _ => Value::Null,
    }
}

/// The generated PrometheusRule holds exactly the groups of the rule files, and the dashboard
/// ConfigMap exactly the dashboard: `deploy/kubernetes/generate` rewrites both.
#[test]
fn generated_objects_hold_their_sources() {
    let all = manifests();
    let rule = one(&all, "PrometheusRule");
    let mut groups = Vec::new();
    // Every rule file, in name order (as the script's glob lists them).
    for file in super::files(&root().join("deploy/prometheus"), &["-rules.yml"]) {
        let doc = yaml_docs(&file).unwrap().remove(0);
        groups.extend(doc["groups"].as_vec().unwrap().iter().cloned());
    }
    assert!(groups.len() >= 4, "expected the groups of every rule file");
    let groups = json(&Yaml::Array(groups));
    assert!(
        json(&rule["spec"]["groups"]) == groups,
        "deploy/kubernetes/prometheusrule.yaml differs from deploy/prometheus/*-rules.yml: run deploy/kubernetes/generate"
    );
    let dashboard = named(&all, "ConfigMap", "crossprobe-dashboard");
    let dashboard = dashboard.first().expect("the dashboard ConfigMap");
    assert_eq!(
        dashboard["metadata"]["labels"]["grafana_dashboard"].as_str(),
        Some("1"),
        "the sidecar's label"
    );
    let shipped: serde_json::Value =
        serde_json::from_str(str_of(&dashboard["data"]["crossprobe.json"], "crossprobe.json")).unwrap();
    assert!(
        shipped == super::dashboard(),
        "deploy/kubernetes/grafana-dashboard.yaml differs from deploy/grafana/crossprobe.json: run deploy/kubernetes/generate"
    );
}

#[test]
fn service_podmonitor_and_budget_cover_every_pod() {
    let all = manifests();
    let pods: Vec<BTreeMap<String, String>> =
        all["Deployment"].iter().map(|d| labels(&d["spec"]["template"]["metadata"]["labels"])).collect();
    let service = one(&all, "Service");
    let port = &service["spec"]["ports"][0];
    assert_eq!((port["name"].as_str(), port["port"].as_i64()), (Some("metrics"), Some(9464)));
    let monitor = one(&all, "PodMonitor");
    assert_eq!(monitor["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    assert_eq!(monitor["spec"]["podMetricsEndpoints"][0]["port"].as_str(), Some("metrics"));
    let budget = one(&all, "PodDisruptionBudget");
    for (what, selector) in [
        ("Service", labels(&service["spec"]["selector"])),
        ("PodMonitor", labels(&monitor["spec"]["selector"]["matchLabels"])),
        ("PodDisruptionBudget", labels(&budget["spec"]["selector"]["matchLabels"])),
    ] {
        assert!(pods.iter().all(|p| selects(&selector, p)), "the {what} must select every zone's pods");
    }
    // The job label is the pods' name label: "crossprobe", as the Prometheus rules expect.
    let job_label = str_of(&monitor["spec"]["jobLabel"], "jobLabel");
    assert!(pods.iter().all(|p| p.get(job_label).map(String::as_str) == Some("crossprobe")));

    // What is applied: one configuration and one Deployment per zone, and one of each other.
    let kinds: BTreeMap<&str, usize> = all.iter().map(|(k, v)| (k.as_str(), v.len())).collect();
    let expected = [
        ("ConfigMap", 4),
        ("Deployment", 3),
        ("PodDisruptionBudget", 1),
        ("PodMonitor", 1),
        ("PrometheusRule", 1),
        ("Secret", 1),
        ("Service", 1),
    ];
    assert_eq!(kinds, BTreeMap::from(expected), "rendered objects by kind (Secret: the example)");
}
