//! The `check` command against every configuration fixture: each invalid fixture must fail with
//! exit code 64 and exactly the messages in its `.expected` file; every file under `config/`
//! must pass.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn crossprobe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crossprobe"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
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
        let out = crossprobe(&["check", "--config", &name]);
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
