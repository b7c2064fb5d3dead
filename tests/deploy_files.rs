//! The deployment files under `deploy/`, checked without a network, a cluster or a Docker
//! engine: every YAML file (every document of it) and every JSON file parses; the Grafana
//! dashboard queries only metrics the daemon exports (the README's metrics table, itself checked
//! against the registry) or recording rules defines; the Dockerfile and the systemd unit keep
//! their contract; every alert links a runbook page that exists and has the four sections. The
//! Kubernetes manifests are checked in `deploy_files/kubernetes.rs`.

#[path = "deploy_files/kubernetes.rs"]
mod kubernetes;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Files under `dir` whose names end in one of `suffixes`, sorted.
fn files(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path, suffixes));
        } else if suffixes.iter().any(|s| path.to_string_lossy().ends_with(s)) {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Every document of a YAML file; a parse error names the file, line and column.
fn yaml_docs(path: &Path) -> Result<Vec<Yaml>, String> {
    YamlLoader::load_from_str(&read(path)).map_err(|e| format!("{}: {e}", path.display()))
}

#[test]
fn every_yaml_file_parses_every_document() {
    let all = files(&root().join("deploy"), &[".yml", ".yaml"]);
    assert!(all.len() >= 13, "expected the Prometheus, Alertmanager and Kubernetes files, found {all:?}");
    let mut problems = Vec::new();
    for path in &all {
        match yaml_docs(path) {
            Ok(docs) if docs.is_empty() => problems.push(format!("{}: no document", path.display())),
            Ok(docs) => {
                for (i, doc) in docs.iter().enumerate() {
                    if !doc.is_hash() {
                        problems.push(format!("{} document {i}: not a mapping: {doc:?}", path.display()));
                    }
                }
            }
            Err(e) => problems.push(e),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_json_file_parses() {
    let all = files(&root().join("deploy"), &[".json"]);
    assert!(!all.is_empty(), "expected at least the Grafana dashboard");
    for path in all {
        if let Err(e) = serde_json::from_str::<Value>(&read(&path)) {
            panic!("{}: {e}", path.display());
        }
    }
}

/// The metric names in the README's metrics table (parsed as `src/metrics/tests.rs` does).
fn exported_metrics() -> BTreeSet<String> {
    let readme = read(&root().join("README.md"));
    let section = readme.split("## Metrics").nth(1).expect("README has a Metrics section");
    section
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| {
            let name = l.split('|').map(str::trim).nth(1)?;
            Some(name.strip_prefix('`')?.strip_suffix('`')?.to_owned())
        })
        .collect()
}

/// Names of the recording rules in deploy/prometheus/.
fn recording_rules() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for path in files(&root().join("deploy/prometheus"), &["-rules.yml"]) {
        for doc in yaml_docs(&path).unwrap() {
            for group in doc["groups"].as_vec().into_iter().flatten() {
                for rule in group["rules"].as_vec().into_iter().flatten() {
                    out.extend(rule["record"].as_str().map(str::to_owned));
                }
            }
        }
    }
    out
}

/// Every rule file is loaded by the shipped Prometheus configuration and unit-tested by a
/// promtool test file beside it (run by `deploy/local/crossprobe-local test`), which loads it.
#[test]
fn every_rule_file_is_loaded_and_has_its_promtool_tests() {
    let prometheus = read(&root().join("deploy/prometheus/prometheus.yml"));
    let rule_files = files(&root().join("deploy/prometheus"), &["-rules.yml"]);
    assert!(rule_files.len() >= 3, "expected the rules, vantage and shard rule files: {rule_files:?}");
    for path in rule_files {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(prometheus.contains(&format!("- {name}")), "prometheus.yml does not load {name}");
        let test = path.with_file_name(name.replace(".yml", ".test.yml"));
        let docs = yaml_docs(&test).unwrap_or_else(|e| panic!("{name} has no promtool test file: {e}"));
        let loaded: Vec<&str> =
            docs[0]["rule_files"].as_vec().into_iter().flatten().filter_map(|r| r.as_str()).collect();
        assert_eq!(loaded, [name.as_str()], "{} should test {name}", test.display());
        assert!(!docs[0]["tests"].as_vec().is_none_or(|t| t.is_empty()), "{} has no tests", test.display());
    }
}

/// The crossprobe series an expression names: `crossprobe_...` metrics with histogram suffixes
/// stripped, and `crossprobe:...` recording rules. Label values (`job="crossprobe"`) are not
/// names: a name continues with `_` or `:` right after `crossprobe`.
fn names_in(expr: &str) -> Vec<String> {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("crossprobe") {
        let before = rest[..at].chars().next_back();
        let len = rest[at..].find(|c: char| !is_name_char(c)).unwrap_or(rest.len() - at);
        let name = &rest[at..at + len];
        let follows = name.as_bytes().get("crossprobe".len());
        if !before.is_some_and(is_name_char) && matches!(follows, Some(b'_' | b':')) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|_| !name.contains(':')))
                .unwrap_or(name);
            out.push(base.to_owned());
        }
        rest = &rest[at + len.max(1)..];
    }
    out
}

/// The names in `exprs` that neither the daemon exports nor a recording rule defines.
fn unknown_names<'a>(exprs: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    let known: BTreeSet<String> = exported_metrics().into_iter().chain(recording_rules()).collect();
    exprs.into_iter().flat_map(names_in).filter(|n| !known.contains(n)).collect()
}

/// Every query string of a dashboard: panel targets' `expr`, template variables' `query` and
/// `definition`, wherever they nest.
fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => queries(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

fn dashboard() -> Value {
    serde_json::from_str(&read(&root().join("deploy/grafana/crossprobe.json"))).unwrap()
}

#[test]
fn names_are_found_and_misspellings_caught() {
    assert_eq!(
        names_in(
            r#"histogram_quantile(0.99, sum by (le) (rate(crossprobe_roundtrip_seconds_bucket{job="crossprobe"}[5m])))"#
        ),
        ["crossprobe_roundtrip_seconds"]
    );
    assert_eq!(
        names_in("crossprobe:probe_success:ratio_rate5m / xcrossprobe_y"),
        ["crossprobe:probe_success:ratio_rate5m"]
    );
    assert!(unknown_names(["sum(crossprobe_verdict)", "crossprobe:zone_down:vantages"]).is_empty());
    assert_eq!(
        unknown_names(["rate(crossprobe_probes_totl[5m])", "crossprobe:nope"]),
        BTreeSet::from(["crossprobe:nope".to_owned(), "crossprobe_probes_totl".to_owned()])
    );
}

#[test]
fn dashboard_queries_only_exported_metrics_and_recording_rules() {
    let mut exprs = Vec::new();
    queries(&dashboard(), &mut exprs);
    assert!(exprs.len() >= 20, "expected the dashboard's queries, found {exprs:?}");
    let unknown = unknown_names(exprs.iter().map(String::as_str));
    assert!(unknown.is_empty(), "the dashboard queries series nobody exports: {unknown:?}");
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| names_in(e)).collect();
    for required in [
        "crossprobe_verdict",
        "crossprobe_outage_confirmed",
        "crossprobe_scope_down",
        "crossprobe_cell_state",
        "crossprobe_roundtrip_seconds",
        "crossprobe_roundtrip_window_seconds",
        "crossprobe_probes_total",
        "crossprobe_probe_errors_total",
    ] {
        assert!(used.contains(required), "the dashboard should show {required}; it uses {used:?}");
    }
}

#[test]
fn dashboard_maps_verdicts_and_filters_by_dimension() {
    let d = dashboard();
    let panels = d["panels"].as_array().unwrap();
    let verdict = panels.iter().find(|p| p["title"] == "Verdict timeline").expect("a verdict timeline");
    let mapping = &verdict["fieldConfig"]["defaults"]["mappings"][0]["options"];
    for (value, text) in [("0", "ok"), ("1", "suspect"), ("2", "partial"), ("3", "outage")] {
        assert_eq!(mapping[value]["text"], text, "verdict {value} should read {text}: {mapping}");
    }
    let variables = d["templating"]["list"].as_array().unwrap();
    for name in ["az", "tenant", "protocol"] {
        let v = variables.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no ${name}"));
        let query = v["definition"].as_str().unwrap_or_default();
        assert!(query.starts_with("label_values(crossprobe_") && query.ends_with(&format!(", {name})")));
    }
    assert!(variables.iter().any(|v| v["type"] == "datasource"), "queries need a datasource variable");
}

/// Where every alert's `runbook_url` points: the page `docs/runbooks/<alert>.md` of this
/// repository on GitHub.
const RUNBOOKS: &str = "https://github.com/crossprobe/crossprobe/blob/main/docs/runbooks/";

/// The sections of a runbook page, in the order an incident goes.
const RUNBOOK_SECTIONS: [&str; 4] = [
    "## What it means for users",
    "## How to see what is wrong",
    "## What to do first",
    "## How to confirm recovery",
];

/// Every alert rule of deploy/prometheus/: (file, alert name, its rule).
fn alert_rules() -> Vec<(PathBuf, String, Yaml)> {
    let mut out = Vec::new();
    for path in files(&root().join("deploy/prometheus"), &["-rules.yml"]) {
        for doc in yaml_docs(&path).unwrap() {
            for group in doc["groups"].as_vec().into_iter().flatten() {
                for rule in group["rules"].as_vec().into_iter().flatten() {
                    if let Some(name) = rule["alert"].as_str() {
                        out.push((path.clone(), name.to_owned(), rule.clone()));
                    }
                }
            }
        }
    }
    out
}

/// The problems of an alert's runbook link and page: the link must name the page of the alert,
/// the page must exist and hold the four sections in order.
fn runbook_problems(name: &str, rule: &Yaml, pages: &Path) -> Vec<String> {
    let want = format!("{RUNBOOKS}{name}.md");
    let url = rule["annotations"]["runbook_url"].as_str();
    if url != Some(want.as_str()) {
        return vec![format!("{name}: runbook_url is {url:?}, expected {want:?}")];
    }
    let page = pages.join(format!("{name}.md"));
    let Ok(text) = std::fs::read_to_string(&page) else {
        return vec![format!("{name}: no runbook page {}", page.display())];
    };
    let headings: Vec<&str> = text.lines().filter(|l| l.starts_with("## ")).collect();
    if headings != RUNBOOK_SECTIONS {
        return vec![format!("{}: sections {headings:?}, expected {RUNBOOK_SECTIONS:?}", page.display())];
    }
    let mut out = Vec::new();
    for (i, section) in RUNBOOK_SECTIONS.iter().enumerate() {
        let body = text.split(section).nth(1).unwrap_or("");
        let body = RUNBOOK_SECTIONS.get(i + 1).map_or(body, |next| body.split(next).next().unwrap_or(""));
        if body.trim().is_empty() {
            out.push(format!("{}: section {section:?} is empty", page.display()));
        }
    }
    out
}

#[test]
fn every_alert_links_a_runbook_page_with_the_four_sections() {
    let pages = root().join("docs/runbooks");
    let alerts = alert_rules();
    assert!(alerts.len() >= 10, "expected the alerts of both rule files, found {}", alerts.len());
    let problems: Vec<String> = alerts
        .iter()
        .flat_map(|(path, name, rule)| {
            runbook_problems(name, rule, &pages).into_iter().map(move |p| format!("{}: {p}", path.display()))
        })
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // And no page outlives its alert.
    let names: BTreeSet<&str> = alerts.iter().map(|(_, name, _)| name.as_str()).collect();
    for page in files(&pages, &[".md"]) {
        let stem = page.file_stem().unwrap().to_string_lossy();
        assert!(
            stem == "README" || names.contains(stem.as_ref()),
            "{}: no alert of that name",
            page.display()
        );
    }
}

#[test]
fn a_missing_or_incomplete_runbook_is_caught() {
    let dir = std::env::temp_dir().join(format!("ecosystem-runbooks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rule = |url: &str| {
        YamlLoader::load_from_str(&format!("annotations: {{runbook_url: \"{url}\"}}")).unwrap().remove(0)
    };
    let good = format!("{RUNBOOKS}X.md");
    assert!(runbook_problems("X", &rule(&good), &dir)[0].contains("no runbook page"));
    assert!(runbook_problems("X", &rule("https://example.org/X"), &dir)[0].contains("expected"));
    let full: String = RUNBOOK_SECTIONS.iter().map(|s| format!("{s}\ntext\n")).collect();
    std::fs::write(dir.join("X.md"), &full).unwrap();
    assert_eq!(runbook_problems("X", &rule(&good), &dir), Vec::<String>::new());
    std::fs::write(dir.join("X.md"), full.replace("## What to do first\ntext", "## What to do first\n"))
        .unwrap();
    assert!(runbook_problems("X", &rule(&good), &dir)[0].contains("is empty"));
    std::fs::write(dir.join("X.md"), full.replace("## How to confirm recovery\ntext\n", "")).unwrap();
    assert!(runbook_problems("X", &rule(&good), &dir)[0].contains("sections"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dockerfile_caches_dependencies_apart_labels_the_image_and_runs_as_non_root() {
    let docker = read(&root().join("deploy/Dockerfile"));
    let instructions: Vec<&str> =
        docker.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    let stages: Vec<&str> = instructions
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .filter_map(|l| l.split(" AS ").nth(1))
        .collect();
    assert_eq!(stages, ["deps", "builder", "runtime"], "dependency-only stage, builder, runtime");
    for line in [
        r#"ENTRYPOINT ["crossprobe"]"#,
        r#"CMD ["run", "--config", "/etc/crossprobe/crossprobe.toml"]"#,
        "EXPOSE 9464",
        "USER 10001:10001",
        "FROM deps AS builder",
    ] {
        assert!(instructions.contains(&line), "Dockerfile lacks `{line}`");
    }
    for label in ["title", "description", "source", "licenses", "version", "revision"] {
        assert!(docker.contains(&format!("org.opencontainers.image.{label}=")), "no OCI label {label}");
    }
    assert!(!instructions.iter().any(|l| l.starts_with("HEALTHCHECK")), "probes are the orchestrator's");
    assert!(docker.contains("NOT BUILT"), "the header must say the image was never built here");
    // The dependency stage compiles with empty sources: every bench Cargo.toml declares needs
    // one, or cargo refuses the manifest.
    let deps = docker.split(" AS deps").nth(1).unwrap().split(" AS builder").next().unwrap();
    let manifest: toml::Table = read(&root().join("Cargo.toml")).parse().unwrap();
    for bench in manifest["bench"].as_array().unwrap() {
        let name = bench["name"].as_str().unwrap();
        let path =
            bench.get("path").and_then(|p| p.as_str()).map_or(format!("benches/{name}.rs"), str::to_owned);
        let stubbed = deps.contains(&path)
            || deps.contains(&format!(" {name} "))
            || deps.contains(&format!(" {name};"));
        assert!(stubbed, "the deps stage makes no empty {path} for bench {name}");
    }
    let ignore = read(&root().join(".dockerignore"));
    assert!(ignore.lines().any(|l| l.trim() == "target/"), ".dockerignore must exclude target/");
}

/// The Debian package that installed `path`, following the /lib -> /usr/lib merge both ways.
fn package_of(path: &str) -> String {
    let real = std::fs::canonicalize(path).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    let candidates = [
        path.to_owned(),
        real.clone(),
        path.strip_prefix("/usr").map_or(format!("/usr{path}"), str::to_owned),
        real.strip_prefix("/usr").map_or(format!("/usr{real}"), str::to_owned),
    ];
    for candidate in candidates {
        let out =
            std::process::Command::new("dpkg").args(["-S", &candidate]).output().expect("dpkg runs (Debian)");
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            return text.split([':', ',']).next().unwrap().trim().to_owned();
        }
    }
    panic!("no Debian package owns {path}")
}

/// The runtime stage installs exactly the library packages the binary links, beyond those the
/// base image has (`# runtime-base-packages:`): a new dynamic link (say, libsasl2 for Kerberos)
/// fails here instead of at the image's first start, and a package no longer linked is
/// dropped. The binary is this test build's; a release build links the same libraries (same
/// features, same link flags), and this machine runs Debian bookworm like the image.
#[test]
fn runtime_image_installs_the_libraries_the_binary_links() {
    let ldd =
        std::process::Command::new("ldd").arg(env!("CARGO_BIN_EXE_crossprobe")).output().expect("ldd runs");
    assert!(ldd.status.success(), "ldd: {}", String::from_utf8_lossy(&ldd.stderr));
    let linked: BTreeSet<String> = String::from_utf8_lossy(&ldd.stdout)
        .lines()
        .filter_map(|l| {
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| package_of(path))
        })
        .collect();
    assert!(linked.contains("libc6"), "ldd found no glibc: {linked:?}");
    let docker = read(&root().join("deploy/Dockerfile"));
    let runtime = docker.split(" AS runtime").nth(1).expect("a runtime stage");
    let base: BTreeSet<String> = runtime
        .lines()
        .find_map(|l| l.trim().strip_prefix("# runtime-base-packages:"))
        .expect("the runtime stage names what its base image provides")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let installed: BTreeSet<String> = runtime
        .lines()
        .find_map(|l| l.split("apt-get install -y --no-install-recommends").nth(1))
        .expect("the runtime stage installs packages")
        .split_whitespace()
        .take_while(|w| *w != "\\")
        .map(str::to_owned)
        .collect();
    let libraries: BTreeSet<String> = installed.iter().filter(|p| p.starts_with("lib")).cloned().collect();
    let provided: BTreeSet<String> = base.union(&libraries).cloned().collect();
    assert_eq!(
        provided, linked,
        "runtime stage (base + installed lib* packages, left) and ldd (right) differ"
    );
}

#[test]
fn systemd_unit_runs_the_daemon_sandboxed() {
    let unit = read(&root().join("deploy/systemd/crossprobe.service"));
    let settings: BTreeSet<&str> =
        unit.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with(['#', '['])).collect();
    for line in [
        "Type=exec",
        "ExecStart=/usr/local/bin/crossprobe run --config /etc/crossprobe/crossprobe.toml",
        "EnvironmentFile=-/etc/crossprobe/secrets.env",
        "Restart=on-failure",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
        "LockPersonality=yes",
        "RestrictRealtime=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
    ] {
        assert!(settings.contains(line), "crossprobe.service lacks `{line}`");
    }
    // SIGHUP reloads the configuration in place.
    assert!(
        settings.contains(&"ExecReload=/bin/kill -HUP $MAINPID"),
        "crossprobe.service reloads with SIGHUP"
    );
}
