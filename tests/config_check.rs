//! The `check` command against every configuration fixture: each invalid fixture must fail with
//! exit code 64 and exactly the messages in its `.expected` file; every file under `config/`
//! must pass. `check` reads the passwords a configuration names: the fixtures are checked with
//! the local example's variables set and, since the shipped examples name files that exist
//! only where they are deployed, the examples with `--skip-secrets`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn crossprobe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crossprobe"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CROSSPROBE_ACME_AMQP_PASSWORD", "unused")
        .env("CROSSPROBE_GLOBEX_AMQP_PASSWORD", "unused")
        .output()
        .expect("crossprobe runs")
}

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(toml_files(&path));
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap().display().to_string()
}

#[test]
fn every_invalid_fixture_fails_with_its_exact_messages() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config/invalid");
    let fixtures = toml_files(&dir);
    assert!(fixtures.len() >= 10, "expected at least 10 invalid fixtures, found {}", fixtures.len());
    let mut failures = Vec::new();
    for fixture in &fixtures {
        let name = relative(fixture);
        let expected = std::fs::read_to_string(fixture.with_extension("expected"))
            .unwrap_or_else(|e| panic!("{name}: missing .expected file: {e}"));
        let out = crossprobe(&["check", "--config", &name]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(64) || stderr != expected || !out.stdout.is_empty() {
            failures.push(format!(
                "{name}: expected exit 64 and stderr:\n{expected}\nsaw exit {:?}, stdout {:?} and stderr:\n{stderr}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_shipped_config_passes_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let files = toml_files(&dir);
    assert!(files.len() >= 3, "expected the reference and two examples, found {files:?}");
    for file in files {
        let name = relative(&file);
        let out = crossprobe(&["check", "--skip-secrets", "--config", &name]);
        assert!(
            out.status.success(),
            "{name}: expected exit 0, saw {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn local_example_lists_twelve_cells() {
    let out = crossprobe(&["check", "--config", "config/examples/local.toml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "check failed: {}", String::from_utf8_lossy(&out.stderr));
    let rows = stdout.lines().filter(|l| l.contains('/')).count();
    assert_eq!(rows, 12, "expected 12 cell rows in:\n{stdout}");
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("12 cells; az: a=4 b=4 c=4; tenant: acme=6 globex=6; protocol: amqp=6 kafka=6;"),
        "unexpected summary line: {summary}"
    );
}

#[test]
fn an_inline_password_is_never_echoed() {
    let out = crossprobe(&["check", "--config", "tests/config/invalid/inline_password.toml"]);
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(all.contains("password"), "the problem should be reported: {all}");
    assert!(!all.contains("hunter2"), "the secret leaked into the output: {all}");
}

#[test]
fn basic_auth_values_are_never_echoed() {
    let out = crossprobe(&[
        "check",
        "--config",
        "config/examples/local.toml",
        "--web.config.file",
        "tests/config/web/bad-web.yml",
    ]);
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(all.contains("is not a bcrypt hash"), "the problem should be reported: {all}");
    assert!(!all.contains("hunter2"), "a password written in place of its hash leaked: {all}");
    assert!(!all.contains("WmFz0yq1"), "a hash leaked into the output: {all}");
}

#[test]
fn usage_errors_exit_64_and_version_exits_0() {
    let out = crossprobe(&["check"]);
    assert_eq!(out.status.code(), Some(64), "missing --config must be a usage error");
    let out = crossprobe(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(64), "unknown command must be a usage error");
    let out = crossprobe(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    let version = String::from_utf8_lossy(&out.stdout);
    assert_eq!(version.trim(), format!("crossprobe {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_missing_file_is_a_config_error() {
    let out = crossprobe(&["check", "--config", "tests/config/does-not-exist.toml"]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("cannot read tests/config/does-not-exist.toml: "),
        "unexpected message: {stderr}"
    );
}

/// Cell ids of the rows `check` printed (the first column of rows that hold a `/`).
fn cell_rows(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|id| id.contains('/'))
        .map(str::to_owned)
        .collect()
}

/// 64-bit FNV-1a, written out again here so the test does not trust the code it checks.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[test]
fn check_with_a_shard_prints_only_its_cells() {
    let config = "config/examples/production.toml";
    let out = crossprobe(&["check", "--skip-secrets", "--config", config]);
    assert!(out.status.success(), "check failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut all = cell_rows(&String::from_utf8_lossy(&out.stdout));
    assert!(all.len() >= 12, "expected the whole production matrix, saw {all:?}");
    let mut union = Vec::new();
    for i in 0..3 {
        let shard = format!("{i}/3");
        let out = crossprobe(&["check", "--skip-secrets", "--config", config, "--shard", &shard]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "check --shard {shard}: {}", String::from_utf8_lossy(&out.stderr));
        let cells = cell_rows(&stdout);
        assert!(!cells.is_empty(), "shard {shard} printed no cells:\n{stdout}");
        for id in &cells {
            assert_eq!(fnv1a(id) % 3, i, "shard {shard} printed cell {id}, which belongs to another shard");
        }
        let summary = stdout.lines().last().unwrap_or_default();
        assert!(
            summary.starts_with(&format!("{} cells;", cells.len())),
            "the summary should count the shard's cells only: {summary}"
        );
        union.extend(cells);
    }
    all.sort();
    union.sort();
    assert_eq!(union, all, "the three shards together must be the whole matrix, each cell once");
}

#[test]
fn the_summary_names_the_largest_values_of_a_large_dimension_not_every_value() {
    // 2 Kafka targets x 40 tenants, the first tenant also on a third target: 81 cells.
    let mut toml = String::new();
    for (name, tenants) in [("k-a", ""), ("k-b", ""), ("k-c", "tenants = [\"t00\"]\n")] {
        toml += &format!("[[targets]]\nname = \"{name}\"\nprotocol = \"kafka\"\naz = \"a\"\naddresses = [\"127.0.0.1:9092\"]\n{tenants}");
    }
    for t in 0..40 {
        toml += &format!("[[tenants]]\nname = \"t{t:02}\"\nkafka = {{ topic = \"probe-t{t:02}\" }}\n");
    }
    let path = std::env::temp_dir().join(format!("scale-summary-{}.toml", std::process::id()));
    std::fs::write(&path, toml).unwrap();
    let out = crossprobe(&["check", "--config", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "check failed: {}", String::from_utf8_lossy(&out.stderr));
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.contains("; tenant: 40 values, most cells t00=3 t01=2 t02=2 t03=2 t04=2 and 35 more;"),
        "unexpected summary line: {summary}"
    );
    assert!(!summary.contains("t39"), "every tenant listed: {summary}");
    assert!(summary.contains("; broker: k-a=40 k-b=40 k-c=1"), "few values are all listed: {summary}");
}

#[test]
fn check_with_shard_by_tenant_keeps_each_tenant_on_one_shard() {
    let config = "config/examples/production.toml";
    let out = crossprobe(&["check", "--skip-secrets", "--config", config]);
    let mut all = cell_rows(&String::from_utf8_lossy(&out.stdout));
    let mut union = Vec::new();
    let mut shard_of: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for i in 0..3 {
        let shard = format!("{i}/3");
        let out = crossprobe(&[
            "check",
            "--skip-secrets",
            "--config",
            config,
            "--shard",
            &shard,
            "--shard-by",
            "tenant",
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.code() == Some(64) && String::from_utf8_lossy(&out.stderr).contains("has none of") {
            continue; // fewer tenants than shards may leave one empty
        }
        assert!(out.status.success(), "check --shard {shard}: {}", String::from_utf8_lossy(&out.stderr));
        for id in cell_rows(&stdout) {
            let tenant = id.split_once('/').unwrap().1.to_owned();
            assert_eq!(fnv1a(&tenant) % 3, i, "shard {shard} printed {id}, whose tenant belongs to another");
            let on = shard_of.entry(tenant).or_default();
            if !on.contains(&i) {
                on.push(i);
            }
            union.push(id);
        }
    }
    assert!(shard_of.len() >= 2, "the production example should have several tenants: {shard_of:?}");
    for (tenant, on) in &shard_of {
        assert_eq!(on.len(), 1, "tenant {tenant} is on shards {on:?}: it must be whole on one");
    }
    all.sort();
    union.sort();
    assert_eq!(union, all, "the three shards together must be the whole matrix, each cell once");
}

#[test]
fn bad_shards_exit_64_with_a_clear_message() {
    let cases = [
        (vec!["check", "--shard", "3/3"], "shard index 3 is out of range: with 3 shards it must be 0 to 2"),
        (vec!["check", "--shard", "0/0"], "the number of shards must be at least 1, not 0"),
        (vec!["check", "--shard", "one/3"], "\"one/3\" is not I/N"),
        (vec!["once", "--shard", "1-3"], "\"1-3\" is not I/N"),
        (vec!["run", "--shard", "5/2"], "shard index 5 is out of range"),
        (vec!["check", "--shard-by", "tenant"], "--shard"),
        (
            vec!["check", "--shard", "0/2", "--shard-by", "zone"],
            "--shard-by zone: not a dimension of the matrix",
        ),
    ];
    for (args, expected) in cases {
        let mut args = args;
        args.extend(["--config", "config/examples/local.toml"]);
        let out = crossprobe(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: expected exit 64, stderr: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: expected {expected:?} in: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout, saw {:?}", out.stdout);
    }
}

#[test]
fn a_shard_without_cells_exits_64() {
    // 12 cells over 64 shards leave most shards empty; find one the way the daemon splits.
    let out = crossprobe(&["check", "--config", "config/examples/local.toml"]);
    let cells = cell_rows(&String::from_utf8_lossy(&out.stdout));
    let empty = (0..64).find(|i| cells.iter().all(|id| fnv1a(id) % 64 != *i)).unwrap();
    let shard = format!("{empty}/64");
    let out = crossprobe(&["check", "--config", "config/examples/local.toml", "--shard", &shard]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr,
        format!(
            "config/examples/local.toml: shard {shard} has none of the matrix's 12 cells; use fewer shards\n"
        )
    );
}

#[test]
fn only_regular_files_of_bounded_size_are_read() {
    let dir = std::env::temp_dir().join(format!("crossprobe-check-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo.toml");
    let _ = std::fs::remove_file(&fifo);
    assert!(Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs").success());
    let huge = dir.join("huge.toml");
    std::fs::write(&huge, format!("# {}\n", "x".repeat(4 * 1024 * 1024))).unwrap();
    let cases = [
        (fifo.to_str().unwrap(), "it is a FIFO, not a regular file"),
        ("/dev/zero", "it is a device, not a regular file"),
        (huge.to_str().unwrap(), "it holds more than 4194304 bytes"),
    ];
    for (path, why) in cases {
        // A FIFO no one writes would block a plain read forever: bound the wait, then fail.
        let out = support::output_within(
            Command::new(env!("CARGO_BIN_EXE_crossprobe")).args(["check", "--config", path]),
            std::time::Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{path}: {stderr}");
        assert_eq!(stderr, format!("cannot read {path}: {why}\n"), "{path}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn echoed_values_are_bounded_and_escaped() {
    let dir = std::env::temp_dir().join(format!("crossprobe-check-echo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Three megabytes in one value and in one key, a control character in a tenant's name.
    let big = "9".repeat(3 * 1024 * 1024);
    let config = dir.join("big.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nlisten = \"{big}\"\n\n[[targets]]\nname = \"k\"\nprotocol = \"kafka\"\naz = \"a\"\naddresses = [\"127.0.0.1:1\"]\n\n[[tenants]]\nname = \"t\\u0007\\r\"\nkafka = {{ topic = \"p\" }}\n"
        ),
    )
    .unwrap();
    let path = config.to_str().unwrap();
    let out = crossprobe(&["check", "--config", path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.len() < 2048, "{} bytes of messages for one long value", stderr.len());
    let expected = format!(
        "{path}: 2 problems found\n\
         {path}:2:10: daemon.listen: \"{}\"... (3145728 bytes) is not an IP address and port (e.g. \"127.0.0.1:9464\")\n\
         {path}:11:8: tenants[0].name: \"t\\u{{7}}\\r\" is not a valid name (1 to 64 characters: letters, digits, '_', '-', '.', starting with a letter or digit)\n",
        "9".repeat(64)
    );
    assert_eq!(stderr, expected);

    std::fs::write(&config, format!("[daemon]\n\"{big}\" = 1\n")).unwrap();
    let out = crossprobe(&["check", "--config", path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.len() < 2048, "{} bytes of messages for one long key", stderr.len());
    assert!(stderr.contains(":2:1: daemon.\"9999"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `check --config FILE` on `text` written to a scratch file, with `env` set.
fn check_text(name: &str, text: &str, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let dir = std::env::temp_dir().join(format!("crossprobe-check-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.toml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_crossprobe"))
        .args(["check", "--config", file.to_str().unwrap()])
        .envs(env.iter().copied())
        .output()
        .expect("crossprobe runs");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr).replace(file.to_str().unwrap(), "FILE");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

const ONE_TARGET: &str = "[[targets]]\nname = \"kafka-a\"\nprotocol = \"kafka\"\naz = \"a\"\naddresses = [\"127.0.0.1:1\"]\n\n[[targets]]\nname = \"kafka-b\"\nprotocol = \"kafka\"\naz = \"b\"\naddresses = [\"127.0.0.1:2\"]\n\n";

#[test]
fn a_default_quorum_the_matrix_cannot_meet_is_a_warning() {
    let text = format!("{ONE_TARGET}[[tenants]]\nname = \"acme\"\nkafka = {{ topic = \"p\" }}\n");
    let (code, stdout, stderr) = check_text("quorum", &text, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("kafka-a/acme"), "the matrix is printed: {stdout}");
    assert_eq!(
        stderr,
        "warning: FILE: correlator.quorum.tenant: the default quorum requires 2 values of tenant but the matrix has 1, so an outage can never be confirmed and nothing pages; write [correlator.quorum] az = 2, tenant = 1 to page within what the matrix has\n"
    );
    // The same numbers written out are refused, as before.
    let explicit = format!("{text}\n[correlator.quorum]\naz = 2\ntenant = 2\n");
    let (code, _, stderr) = check_text("quorum-explicit", &explicit, &[]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("correlator.quorum.tenant: requires 2 values of tenant but the matrix has 1"),
        "{stderr}"
    );
    // Written within reach: no warning.
    let reachable = format!("{text}\n[correlator.quorum]\naz = 2\ntenant = 1\n");
    let (code, _, stderr) = check_text("quorum-reachable", &reachable, &[]);
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
}

#[test]
fn check_names_every_missing_password_and_never_a_value() {
    // The local example without its variables: both are named, with their places.
    let out = Command::new(env!("CARGO_BIN_EXE_crossprobe"))
        .args(["check", "--config", "config/examples/local.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("CROSSPROBE_ACME_AMQP_PASSWORD")
        .env("CROSSPROBE_GLOBEX_AMQP_PASSWORD", "s3cr3t-never-shown")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert_eq!(
        stderr,
        "config/examples/local.toml: 1 problem found\n\
         config/examples/local.toml:59:67: tenants[0] \"acme\".amqp.password_env: environment variable CROSSPROBE_ACME_AMQP_PASSWORD is not set or not unicode\n"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cr3t"));
    // The production example names eight password files; none exists here.
    let out = crossprobe(&["check", "--config", "config/examples/production.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.starts_with("config/examples/production.toml: 8 problems found\n"), "{stderr}");
    for tenant in ["acme", "globex", "initech", "umbrella"] {
        for protocol in ["kafka", "amqp"] {
            let named = format!(
                "{protocol}.password_file: cannot read password file \"/run/secrets/{tenant}-{protocol}\": "
            );
            assert!(stderr.contains(&named), "expected {named:?} in {stderr}");
        }
    }
}

#[test]
fn one_tenant_on_a_plaintext_and_a_sasl_ssl_listener_passes() {
    let text = "[[targets]]\nname = \"kafka-plain\"\nprotocol = \"kafka\"\naz = \"a\"\naddresses = [\"127.0.0.1:9092\"]\n\n\
                [[targets]]\nname = \"kafka-sasl\"\nprotocol = \"kafka\"\naz = \"b\"\naddresses = [\"127.0.0.1:9093\"]\nkafka = { security_protocol = \"sasl_ssl\" }\n\n\
                [[tenants]]\nname = \"acme\"\nkafka = { topic = \"p-acme\", user = \"acme\", password_env = \"CROSSPROBE_CHECK_PW\" }\n\n\
                [[tenants]]\nname = \"globex\"\nkafka = { topic = \"p-globex\", user = \"globex\", password_env = \"CROSSPROBE_CHECK_PW\" }\n";
    let (code, stdout, stderr) = check_text("listeners", text, &[("CROSSPROBE_CHECK_PW", "x")]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.lines().filter(|l| l.contains('/')).count(), 4, "{stdout}");
}

#[test]
fn a_million_cells_are_refused_by_counting() {
    // 1,000 targets x 1,000 tenants in about 160 KB: a million cells if expanded.
    let mut text = String::new();
    for i in 0..1000 {
        text.push_str(&format!(
            "[[targets]]\nname=\"k{i}\"\nprotocol=\"kafka\"\naz=\"a\"\naddresses=[\"h:1\"]\n"
        ));
    }
    for i in 0..1000 {
        text.push_str(&format!("[[tenants]]\nname=\"t{i}\"\nkafka={{topic=\"p\"}}\n"));
    }
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = check_text("million", &text, &[]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stdout.is_empty());
    assert_eq!(
        stderr,
        "FILE: 1 problem found\nFILE: matrix.max_cells: the targets and their tenants make 1000000 cells before exclusions, more than max_cells (10000); raise [matrix] max_cells (at most 1000000) if the matrix is meant to be this large\n"
    );
    // Generous: counting takes milliseconds, expanding took minutes and most of a gigabyte.
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "took {:?}", started.elapsed());
}

#[test]
fn a_bad_web_config_file_exits_64_with_every_mistake_and_its_line() {
    let out = crossprobe(&[
        "check",
        "--config",
        "config/examples/local.toml",
        "--web.config.file",
        "tests/config/web/bad-web.yml",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr: {stderr}");
    let expected = "tests/config/web/bad-web.yml: 4 problems found\n\
        tests/config/web/bad-web.yml:4:13: tls_server_config.key_file: the private key in \"tests/config/web/other.key\" does not belong to the certificate in \"tests/config/web/server.crt\"\n\
        tests/config/web/bad-web.yml:5:16: tls_server_config.min_version: TLS10 is not supported: rustls offers TLS12 and TLS13 only\n\
        tests/config/web/bad-web.yml:7:15: basic_auth_users.prometheus: is not a bcrypt hash (\"$2y$\", \"$2b$\" or \"$2a$\", a cost from 04 to 31, then 53 characters of salt and hash); only bcrypt is supported, as in exporter-toolkit\n\
        tests/config/web/bad-web.yml:8:12: basic_auth_users.\"bob:x\": a user name must be non-empty and contain no ':'\n";
    assert_eq!(stderr, expected);
    assert!(out.stdout.is_empty(), "nothing on stdout, saw {:?}", out.stdout);
}

#[test]
fn web_config_prints_the_retired_keys_as_a_web_configuration_file() {
    let out = crossprobe(&["web-config", "--config", "tests/config/invalid/web_retired_keys.toml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let cwd = std::env::current_dir().unwrap();
    for line in [
        "tls_server_config:".to_owned(),
        format!("  cert_file: \"{}/tests/config/web/server.crt\"", cwd.display()),
        "  client_auth_type: RequireAndVerifyClientCert".to_owned(),
        "basic_auth_users:".to_owned(),
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line:?} missing from:\n{stdout}");
    }
    // What it prints is what --web.config.file takes.
    let yaml = std::env::temp_dir().join(format!("crossprobe-migrated-{}.yml", std::process::id()));
    std::fs::write(&yaml, stdout.as_bytes()).unwrap();
    let check = crossprobe(&[
        "check",
        "--config",
        "config/examples/local.toml",
        "--web.config.file",
        yaml.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&yaml);
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stderr));
}
