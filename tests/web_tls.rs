//! The web configuration file (`--web.config.file`, exporter-toolkit's format) against the real
//! daemon, started in-process with no reachable broker: HTTPS with basic auth and headers on
//! every endpoint, client certificates, certificate and user rotation without a restart, a bad
//! new file keeping the last good one, and `check` keeping hashes to itself.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use crossprobe::daemon::Daemon;
use support::web::{basic_auth_users, bcrypt_hash, web_config, with_web_file, write_web_file, Client, Pki};
use support::{http_get, parse, stop_daemon};

/// Polls `/healthz` (with `auth`) until it answers `want`, for up to 10 s; the last answer.
async fn until_status(
    client: &Client,
    addr: std::net::SocketAddr,
    auth: Option<(&str, &str)>,
    want: u16,
) -> Result<u16, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = client.get(addr, "/healthz", auth).await.map(|r| r.status);
        match got {
            Ok(status) if status == want => return Ok(status),
            other if Instant::now() > deadline => return other.map_err(|e| format!("{e:?}")),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The value of a metric line `name` in the daemon's `/metrics`.
async fn metric(
    client: &Client,
    addr: std::net::SocketAddr,
    auth: Option<(&str, &str)>,
    name: &str,
) -> String {
    let body = client.get(addr, "/metrics", auth).await.unwrap().body;
    body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')).unwrap_or("absent").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_basic_auth_guards_every_endpoint() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let server = ca.server(&pki, "server");
    let headers =
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n";
    let web =
        format!("{}{}{headers}", server.tls_server_config(""), basic_auth_users("prometheus", "scrape-me"));
    let d = Daemon::start(parse(&web_config(&pki, "")), with_web_file(&pki, &web)).await.unwrap();
    let client = Client::new(&ca.path, None);
    let right = Some(("prometheus", "scrape-me"));

    let metrics = client.get(d.addr(), "/metrics", right).await.unwrap();
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert!(metrics.body.contains("crossprobe_build_info"), "not the metrics page: {}", metrics.body);
    let verdict = client.get(d.addr(), "/verdict", right).await.unwrap();
    assert_eq!(verdict.status, 200, "{verdict:?}");
    assert_eq!(verdict.header("content-type"), Some("application/json"), "{verdict:?}");
    let healthz = client.get(d.addr(), "/healthz", right).await.unwrap();
    assert_eq!((healthz.status, healthz.body.as_str()), (200, "ok\n"), "{healthz:?}");

    for (what, path, auth) in [
        ("no credentials", "/metrics", None),
        ("no credentials", "/healthz", None),
        ("no credentials, unknown path", "/nowhere", None),
        ("a wrong password", "/metrics", Some(("prometheus", "scrape-you"))),
        ("an unknown user", "/verdict", Some(("grafana", "scrape-me"))),
    ] {
        let r = client.get(d.addr(), path, auth).await.unwrap();
        assert_eq!(r.status, 401, "{what} on {path} must be refused: {r:?}");
        assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"crossprobe\""), "{what}: {r:?}");
        assert!(!r.body.contains("crossprobe_"), "{what}: a refusal must not carry data: {r:?}");
        assert_eq!(
            r.header("x-frame-options"),
            Some("deny"),
            "{what}: the file's headers are on refusals too: {r:?}"
        );
    }
    assert_eq!(metrics.header("x-frame-options"), Some("deny"), "{metrics:?}");
    assert_eq!(metrics.header("x-content-type-options"), Some("nosniff"), "{metrics:?}");

    let plain = http_get(d.addr(), "/healthz");
    assert!(
        matches!(plain, Err(_) | Ok((0, _))),
        "plain HTTP to the HTTPS port must get no HTTP answer, saw {plain:?}"
    );
    let stranger = Client::new(&pki.ca("other-ca").path, None).get(d.addr(), "/healthz", right).await;
    assert!(stranger.is_err(), "a client trusting another CA must not get through: {stranger:?}");
    stop_daemon(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ca_requires_a_certificate_it_signed() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let server = ca.server(&pki, "server");
    let clients = pki.ca("clients");
    let extra = format!(
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: \"{}\"\n",
        clients.path.display()
    );
    let web = with_web_file(&pki, &server.tls_server_config(&extra));
    let d = Daemon::start(parse(&web_config(&pki, "")), web).await.unwrap();

    let signed = Client::new(&ca.path, Some(&clients.client(&pki, "prometheus")));
    let r = signed.get(d.addr(), "/metrics", None).await.unwrap();
    assert_eq!(r.status, 200, "a certificate signed by the client CA must get through: {r:?}");

    let anonymous = Client::new(&ca.path, None).get(d.addr(), "/metrics", None).await;
    assert!(anonymous.is_err(), "a client without a certificate must be refused: {anonymous:?}");
    // Signed, but by the server's CA, which is not the client CA.
    let foreign = Client::new(&ca.path, Some(&ca.client(&pki, "intruder")));
    let r = foreign.get(d.addr(), "/metrics", None).await;
    assert!(r.is_err(), "a certificate from another CA must be refused: {r:?}");
    stop_daemon(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificates_are_served_to_new_connections_and_bad_ones_are_not() {
    let pki = Pki::new();
    let old_ca = pki.ca("old-ca");
    let live = old_ca.server(&pki, "live");
    let web = with_web_file(&pki, &live.tls_server_config(""));
    let d = Daemon::start(parse(&web_config(&pki, "")), web).await.unwrap();
    let (trusts_old, new_ca) = (Client::new(&old_ca.path, None), pki.ca("new-ca"));
    let trusts_new = Client::new(&new_ca.path, None);
    assert_eq!(trusts_old.get(d.addr(), "/healthz", None).await.unwrap().status, 200);

    let rotated = new_ca.server(&pki, "rotated");
    std::fs::copy(&rotated.key, &live.key).unwrap();
    std::fs::copy(&rotated.cert, &live.cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match trusts_new.get(d.addr(), "/healthz", None).await {
            Ok(r) if r.status == 200 => break,
            other if Instant::now() > deadline => panic!("the rotated certificate is not served: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let r = trusts_old.get(d.addr(), "/healthz", None).await;
    assert!(r.is_err(), "the old certificate must no longer be served: {r:?}");

    // A key that does not match (written a file-time tick later, so the change is seen): the
    // last good pair stays in use.
    tokio::time::sleep(Duration::from_millis(20)).await;
    std::fs::copy(pki.ca("spare").server(&pki, "spare").key, &live.key).unwrap();
    let r = trusts_new.get(d.addr(), "/healthz", None).await;
    assert_eq!(r.map(|r| r.status), Ok(200), "a broken rotation must keep the previous certificate");
    stop_daemon(d).await;
}

#[test]
fn check_keeps_password_hashes_to_itself() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let server = ca.server(&pki, "server");
    let hash = bcrypt_hash("check-me");
    let web = write_web_file(
        &pki,
        &format!("{}basic_auth_users:\n  prometheus: \"{hash}\"\n", server.tls_server_config("")),
    );
    let file = pki.path("web.toml");
    std::fs::write(&file, web_config(&pki, "")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_crossprobe"))
        .args(["check", "--config"])
        .arg(&file)
        .arg("--web.config.file")
        .arg(&web)
        .output()
        .unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "check should pass: {all}");
    // The salt and hash part: the 53 characters after "$2b$04$".
    assert!(!all.contains(&hash[7..]) && !all.contains("$2"), "check printed hash material: {all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_users_take_effect_without_a_restart_and_a_bad_file_keeps_the_last_good_one() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let server = ca.server(&pki, "server");
    let tls = server.tls_server_config("");
    let file = |users: &str| write_web_file(&pki, &format!("{tls}{users}"));
    let web = with_web_file(&pki, &format!("{tls}{}", basic_auth_users("alice", "first")));
    let d = Daemon::start(parse(&web_config(&pki, "")), web).await.unwrap();
    let client = Client::new(&ca.path, None);
    let (alice, bob) = (Some(("alice", "first")), Some(("bob", "second")));
    assert_eq!(client.get(d.addr(), "/healthz", alice).await.unwrap().status, 200);
    assert_eq!(client.get(d.addr(), "/healthz", bob).await.unwrap().status, 401);

    // Rotate: bob in, alice out (her success was remembered: that must not keep her in).
    file(&basic_auth_users("bob", "second"));
    assert_eq!(until_status(&client, d.addr(), bob, 200).await, Ok(200), "the new user is not let in");
    assert_eq!(
        client.get(d.addr(), "/healthz", alice).await.unwrap().status,
        401,
        "the removed user still gets in"
    );
    assert_eq!(
        metric(&client, d.addr(), bob, "crossprobe_web_config_reloads_total{result=\"success\"}").await,
        "1"
    );

    // A mistake in the new file: bob's access stays, the failure is counted and shown.
    file("basic_auth_users:\n  carol: hunter2\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&client, d.addr(), bob, "crossprobe_web_config_reloads_total{result=\"failure\"}").await
        != "1"
    {
        assert!(Instant::now() < deadline, "the bad file was not counted as a failed reload");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        client.get(d.addr(), "/healthz", bob).await.unwrap().status,
        200,
        "a bad file must keep the last good users"
    );
    assert_eq!(metric(&client, d.addr(), bob, "crossprobe_web_config_last_reload_success").await, "0");

    // Switching to plain HTTP needs a restart: refused, HTTPS with bob goes on.
    write_web_file(&pki, &basic_auth_users("dave", "third"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&client, d.addr(), bob, "crossprobe_web_config_reloads_total{result=\"failure\"}").await
        != "2"
    {
        assert!(Instant::now() < deadline, "a switch to HTTP was not refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(client.get(d.addr(), "/healthz", bob).await.unwrap().status, 200, "HTTPS with bob must go on");

    // No users: the endpoint is open, as in exporter-toolkit.
    file("");
    assert_eq!(
        until_status(&client, d.addr(), None, 200).await,
        Ok(200),
        "a file without users must open the endpoint"
    );
    assert_eq!(metric(&client, d.addr(), None, "crossprobe_web_config_last_reload_success").await, "1");
    stop_daemon(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_versions_suites_and_optional_client_certificates_are_as_the_file_says() {
    use rustls::CipherSuite::{
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 as AES128, TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 as AES256,
    };
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let server = ca.server(&pki, "server");
    let clients = pki.ca("clients");
    // rcgen's keys are ECDSA P-256, so the ECDSA suites apply.
    let extra = format!(
        "  max_version: TLS12\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n  curve_preferences: [CurveP256]\n\
         \x20 client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: \"{}\"\n",
        clients.path.display()
    );
    let d =
        Daemon::start(parse(&web_config(&pki, "")), with_web_file(&pki, &server.tls_server_config(&extra)))
            .await
            .unwrap();

    let tls12 =
        Client::tls12_only(&ca.path, AES256).connect(d.addr()).await.expect("TLS 1.2 with the named suite");
    assert_eq!(tls12.get_ref().1.negotiated_cipher_suite().map(|s| s.suite()), Some(AES256));
    let other_suite = Client::tls12_only(&ca.path, AES128).connect(d.addr()).await;
    assert!(
        other_suite.is_err(),
        "a suite the file does not name must be refused: {:?}",
        other_suite.map(|_| ())
    );
    let default = Client::new(&ca.path, None).connect(d.addr()).await.expect("a default client");
    assert_eq!(
        default.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2),
        "max_version TLS12 holds"
    );

    // VerifyClientCertIfGiven: no certificate is fine, one from the client CA is fine, one
    // from another CA is refused.
    let r = Client::new(&ca.path, None).get(d.addr(), "/healthz", None).await;
    assert_eq!(r.map(|r| r.status), Ok(200), "no client certificate is allowed");
    let r = Client::new(&ca.path, Some(&clients.client(&pki, "prometheus")))
        .get(d.addr(), "/healthz", None)
        .await;
    assert_eq!(r.map(|r| r.status), Ok(200), "a certificate from the client CA is allowed");
    let r = Client::new(&ca.path, Some(&ca.client(&pki, "intruder"))).get(d.addr(), "/healthz", None).await;
    assert!(r.is_err(), "a certificate from another CA must be refused: {r:?}");
    drop((tls12, default));
    stop_daemon(d).await;
}
