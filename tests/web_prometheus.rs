//! A real Prometheus scraping the daemon over HTTPS with basic auth, set by an exporter-toolkit
//! web configuration file (`--web.config.file`) as exporters are: the job with the CA and the
//! right password is up, the job with a wrong password is down; and after the users in the file
//! are rotated, without a restart, the other way round. No broker needed: the daemon's HTTP
//! server runs whatever its cells see.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use crossprobe::daemon::Daemon;
use support::prometheus::Prometheus;
use support::web::{basic_auth_users, web_config, with_web_file, write_web_file, Pki};
use support::{eventually, http_get, parse, stop_daemon};

/// Two jobs on the same daemon, differing only in the password.
fn start_prometheus(target: SocketAddr, ca: &std::path::Path, password: &str) -> Prometheus {
    let job = |name: &str, password: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {}\n    basic_auth:\n      username: prometheus\n      password: {password}\n    static_configs:\n      - targets: [\"{target}\"]\n",
            ca.display()
        )
    };
    Prometheus::start(&format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{}{}",
        job("crossprobe-web", password),
        job("crossprobe-web-wrong", "not-the-password"),
    ))
}

/// The value of `up` for `job`, once Prometheus has scraped it.
fn up(p: &Prometheus, job: &str) -> Result<String, String> {
    p.value(&format!("up{{job=\"{job}\"}}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_over_https_with_basic_auth_from_a_web_config_file_and_follows_a_user_rotation() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let server = ca.server(&pki, "server");
    let tls = server.tls_server_config("  min_version: TLS13\n");
    let web = with_web_file(&pki, &format!("{tls}{}", basic_auth_users("prometheus", "scrape-me")));
    let config = parse(&web_config(&pki, ""));
    let cells = config.matrix.len();
    let d = Daemon::start(config, web).await.unwrap();
    let prom = start_prometheus(d.addr(), &ca.path, "scrape-me");

    let wrong =
        eventually("up == 1 with the right password, the wrong job scraped", Duration::from_secs(60), || {
            match (up(&prom, "crossprobe-web"), up(&prom, "crossprobe-web-wrong")) {
                (Ok(right), Ok(wrong)) if right == "1" => Ok(wrong),
                other => Err(format!("{other:?}\n{}", prom.log())),
            }
        })
        .await;
    assert_eq!(wrong, "0", "a wrong password must leave the target down");
    // Prometheus asks for gzip: the daemon's compressed exposition must read as every cell.
    let stored = eventually("every cell's state stored", Duration::from_secs(30), || {
        prom.value("count(crossprobe_cell_state{job=\"crossprobe-web\"})")
    })
    .await;
    assert_eq!(stored, cells.to_string(), "one crossprobe_cell_state per cell");
    let (_, body) = http_get(prom.addr, "/api/v1/targets").unwrap();
    assert!(body.contains("401 Unauthorized"), "the wrong job should fail on 401, targets: {body}");

    // Rotate the password in the file, as an operator would: no restart, and the jobs swap.
    write_web_file(&pki, &format!("{tls}{}", basic_auth_users("prometheus", "not-the-password")));
    eventually("the jobs swap after the rotation", Duration::from_secs(60), || {
        match (up(&prom, "crossprobe-web"), up(&prom, "crossprobe-web-wrong")) {
            (Ok(old), Ok(new)) if old == "0" && new == "1" => Ok(()),
            other => Err(format!("{other:?}\n{}", prom.log())),
        }
    })
    .await;
    drop(prom);
    stop_daemon(d).await;
}
