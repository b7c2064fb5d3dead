//! The local zones script itself: a second `install` changes nothing, and a separate set of
//! zones (own state directory and ports) comes up, answers, and leaves no process behind after
//! `down`.

use std::path::Path;
use std::process::Command;

fn ctl(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local/crossprobe-local"))
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("crossprobe-local runs")
}

#[test]
fn a_second_install_finds_everything_present() {
    let out = ctl(&["install"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "install failed: {}", String::from_utf8_lossy(&out.stderr));
    for component in [
        "rabbitmq-server",
        "prometheus",
        "prometheus-alertmanager",
        "libssl-dev",
        "pkg-config",
        "openssl",
        "stunnel4",
        "tansu",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{component}:")))
            .unwrap_or_else(|| panic!("no line for {component} in:\n{stdout}"));
        assert!(line.contains("present"), "{component} should be present already: {line}");
    }
    assert!(!stdout.contains("installing"), "a second install must not install anything:\n{stdout}");
}

/// Processes whose environment carries this state directory's owner mark.
fn owned_by(state: &str) -> Vec<String> {
    let mark = format!("CROSSPROBE_LOCAL_OWNER={state}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(env) = std::fs::read(entry.path().join("environ")) else { continue };
        if env.split(|b| *b == 0).any(|kv| kv == mark.as_bytes()) {
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            if !status.lines().any(|l| l.starts_with("State:") && l.contains("zombie")) {
                found.push(format!(
                    "{name} {}",
                    std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default().trim()
                ));
            }
        }
    }
    found
}

#[test]
fn separate_zones_come_up_and_down_leaves_no_process() {
    let state = std::env::temp_dir().join(format!("crossprobe-zones-{}", std::process::id()));
    let state = state.to_str().unwrap();
    // Its own ports: from CROSSPROBE_TEST_ZONES_PORT_BASE, default 23000 (the suite's zones are
    // on CROSSPROBE_LOCAL_PORT_BASE, 19000, and quorum_live's cluster on 21000).
    let base = std::env::var("CROSSPROBE_TEST_ZONES_PORT_BASE").unwrap_or_else(|_| "23000".to_owned());
    let env = [("CROSSPROBE_LOCAL_STATE", state), ("CROSSPROBE_LOCAL_PORT_BASE", base.as_str())];
    let up = ctl(&["up"], &env);
    let survivors_if_failed = || {
        let _ = ctl(&["down"], &env);
    };
    if !up.status.success() {
        survivors_if_failed();
        panic!("up failed: {}", String::from_utf8_lossy(&up.stderr));
    }
    let running = owned_by(state);
    assert!(
        running.len() >= 16,
        "expected 9 tansu (plain, SSL and SASL_SSL), 3 stunnel, 3 RabbitMQ nodes and epmd, found {running:?}"
    );
    let down = ctl(&["down"], &env);
    assert!(down.status.success(), "down failed: {}", String::from_utf8_lossy(&down.stderr));
    // Exited children may take a moment to be reaped; zombies are excluded above.
    let left = owned_by(state);
    assert!(left.is_empty(), "processes left after down: {left:?}");
    let _ = std::fs::remove_dir_all(state);
}
