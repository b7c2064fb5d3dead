//! The HTTP server's limits, against the real binary with no broker (its AMQP targets are a
//! closed port: the cells report connect_failed and the daemon runs on): a stop that never waits
//! for a half-sent request, over HTTP or HTTPS; a stop that cuts a response the client does not
//! read, and a second signal that ends the stop at once; idle and half-sent connections closed,
//! and the connection cap holding under a low file limit with one warning; `POST /-/reload` off
//! by default and closed to other sites' pages when on. In process: a first login that a flood
//! of wrong passwords from another address does not hold up.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use crossprobe::daemon::Daemon;
use support::web::{
    basic_auth_users, read_to_end, web_config, with_web_file, write_all, write_web_file, Client, Pki,
};
use support::{http_get, parse, stop_daemon, unique};

/// `crossprobe run` on a config file, its log collected; killed on drop.
struct Running {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    addr: SocketAddr,
}

impl Running {
    /// Starts the binary on `config` (under `ulimit -n` when given) and waits for its start-up
    /// line.
    fn start(pki: &Pki, config: &str, open_files: Option<u32>) -> Running {
        Self::start_with(pki, config, None, open_files)
    }

    /// [`Running::start`] with a web configuration file.
    fn start_with(pki: &Pki, config: &str, web_file: Option<&Path>, open_files: Option<u32>) -> Running {
        let file = pki.path(&format!("config-{}.toml", unique()));
        std::fs::write(&file, config).unwrap();
        let bin = env!("CARGO_BIN_EXE_crossprobe");
        let mut command = match open_files {
            Some(n) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" run --config \"$@\""), bin]).arg(&file);
                c
            }
            None => {
                let mut c = Command::new(bin);
                c.args(["run", "--config"]).arg(&file);
                c
            }
        };
        if let Some(web_file) = web_file {
            command.arg("--web.config.file").arg(web_file);
        }
        let mut child = command
            .env("RUST_LOG", "info,lapin=off")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("crossprobe starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stderr, sink) = (child.stderr.take().unwrap(), log.clone());
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut running = Running { child, log, addr: SocketAddr::from(([127, 0, 0, 1], 0)) };
        let started = running.line("crossprobe started", Duration::from_secs(60));
        running.addr = started
            .split_whitespace()
            .find_map(|w| w.strip_prefix("listen="))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no listen address in {started}"));
        running
    }

    /// The first log line containing `text`, waited for up to `within`.
    fn line(&mut self, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.log.lock().unwrap().iter().find(|l| l.contains(text)) {
                return l.clone();
            }
            if Instant::now() > deadline || self.child.try_wait().unwrap().is_some() {
                std::thread::sleep(Duration::from_millis(200));
                panic!("no log line with {text:?} within {within:?}; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn count(&self, text: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|l| l.contains(text)).count()
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn signal(&self, name: &str) {
        let status =
            Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// The exit status, if the process ends within `within`.
    fn exit_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the log reader catch up with the last lines.
                std::thread::sleep(Duration::from_millis(200));
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Generous: the documented bound is the longest probe timeout plus 10 s.
const STOP_WITHIN: Duration = Duration::from_secs(60);

/// Whether the server closes `stream` (end of stream or reset) within `within`; what it sends
/// before closing is read and dropped.
fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {
                return true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return false,
            Err(e) => panic!("reading from the daemon: {e}"),
        }
    }
}

/// A GET of `/healthz` that keeps the connection alive, its answer read.
fn kept_alive(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"ok\n") {
        let n = s.read(&mut buf).expect("the /healthz answer");
        assert!(n > 0, "closed before answering: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_does_not_wait_for_half_sent_requests_over_http_or_https() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let server = ca.server(&pki, "server");
    for tls in [false, true] {
        let web_file = tls.then(|| write_web_file(&pki, &server.tls_server_config("")));
        let mut d = Running::start_with(&pki, &web_config(&pki, ""), web_file.as_deref(), None);
        let _silent = TcpStream::connect(d.addr).unwrap();
        let (_plain, _secure) = if tls {
            let mut stream = Client::new(&ca.path, None).connect(d.addr).await.unwrap();
            write_all(&mut stream, b"G").await.unwrap();
            (None, Some(stream))
        } else {
            let mut stream = TcpStream::connect(d.addr).unwrap();
            stream.write_all(b"G").unwrap();
            (Some((stream, kept_alive(d.addr))), None)
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        d.signal("TERM");
        let status = d.exit_within(STOP_WITHIN);
        let scheme = if tls { "https" } else { "http" };
        assert!(
            status.is_some(),
            "{scheme}: still running {STOP_WITHIN:?} after SIGTERM while a client holds a half-sent request; log:\n{}",
            d.log_text()
        );
        assert_eq!(status.unwrap().code(), Some(0), "{scheme}: a clean stop; log:\n{}", d.log_text());
        assert_eq!(d.count("stopped"), 1, "{scheme}: log:\n{}", d.log_text());
    }
}

/// A matrix whose `/metrics` is larger than the kernel will buffer for one socket (the largest
/// TCP send buffer plus a little), so a client that does not read holds the response.
fn large_matrix_config(pki: &Pki) -> String {
    let wmem = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").unwrap_or_default();
    let largest: usize = wmem.split_whitespace().nth(2).and_then(|n| n.parse().ok()).unwrap_or(4 << 20);
    // About 1.3 KB of /metrics per cell (12 series; latency is per zone, protocol and broker).
    let cells = (largest * 3 / 2 + (1 << 20)) / 1_200;
    let (targets, tenants) = (40, cells.div_ceil(40));
    let password = pki.path("amqp-password");
    std::fs::write(&password, "unused\n").unwrap();
    let port = support::free_port();
    let mut toml = format!(
        "[daemon]\nlisten = \"127.0.0.1:0\"\ninstance = \"limits-{}\"\n\n[probe]\ninterval = \"1m\"\ntimeout = \"1s\"\n\n",
        unique()
    );
    for i in 0..targets {
        toml += &format!(
            "[[targets]]\nname = \"rabbit-{i}\"\nprotocol = \"amqp\"\naz = \"z{}\"\naddresses = [\"127.0.0.1:{port}\"]\n\n",
            i % 3
        );
    }
    for t in 0..tenants {
        toml += &format!(
            "[[tenants]]\nname = \"t{t}\"\namqp = {{ vhost = \"t{t}\", user = \"u\", password_file = \"{}\" }}\n\n",
            password.display()
        );
    }
    toml
}

/// Asks for `/metrics` with a tiny receive buffer and never reads past its first bytes: the
/// server is left writing the response.
async fn stalled_scrape(addr: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let mut request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes();
    let mut stream = stream;
    write_all(&mut stream, &request).await.unwrap();
    request.clear();
    tokio::time::timeout(Duration::from_secs(30), stream.readable())
        .await
        .expect("the response begins")
        .unwrap();
    let mut first = [0u8; 16];
    let n = stream.peek(&mut first).await.unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&first[..n]));
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_cuts_a_response_the_client_does_not_read_and_a_second_signal_ends_it_at_once() {
    let pki = Pki::new();
    let config = large_matrix_config(&pki);

    let mut d = Running::start(&pki, &config, None);
    let _held = stalled_scrape(d.addr).await;
    d.signal("TERM");
    let status = d.exit_within(STOP_WITHIN);
    assert!(status.is_some(), "still running {STOP_WITHIN:?} after SIGTERM; log:\n{}", d.log_text());
    assert_eq!(status.unwrap().code(), Some(0), "the stop is clean all the same; log:\n{}", d.log_text());
    assert_eq!(
        d.count("closing HTTP connections whose requests did not finish in time"),
        1,
        "the cut connection is logged; log:\n{}",
        d.log_text()
    );
    drop(d);

    let mut d = Running::start(&pki, &config, None);
    let _held = stalled_scrape(d.addr).await;
    d.signal("TERM");
    d.line("stopping", Duration::from_secs(10));
    d.signal("TERM");
    let status = d.exit_within(STOP_WITHIN);
    assert!(status.is_some(), "a second SIGTERM must end the stop; log:\n{}", d.log_text());
    assert_eq!(
        status.unwrap().code(),
        Some(1),
        "an unfinished stop is not a clean one; log:\n{}",
        d.log_text()
    );
    assert_eq!(d.count("second stop signal"), 1, "log:\n{}", d.log_text());
}

#[test]
fn idle_and_half_sent_connections_are_closed_and_the_cap_holds_under_a_low_file_limit() {
    let pki = Pki::new();
    let web = "max_connections = 16\nheader_read_timeout = \"1s\"\nidle_timeout = \"2s\"";
    // 64 file descriptors: fewer than the connections below, more than the cap and the
    // daemon's own.
    let d = Running::start(&pki, &web_config(&pki, web), Some(64));

    let mut flood: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(d.addr).unwrap()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, s) in flood.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        assert!(closed_by_server(s, left), "idle connection {i} of 100 is still open after 30 s");
    }
    let healthz = (0..120).find_map(|_| match http_get(d.addr, "/healthz") {
        Ok((200, body)) => Some(body),
        _ => {
            std::thread::sleep(Duration::from_millis(250));
            None
        }
    });
    assert_eq!(healthz.as_deref(), Some("ok\n"), "/healthz answers once the idle flood is gone");
    assert_eq!(
        d.count("HTTP connection limit reached"),
        1,
        "one warning for the whole flood, not one per refused connection; log:\n{}",
        d.log_text()
    );

    let mut half = TcpStream::connect(d.addr).unwrap();
    half.write_all(b"GET /heal").unwrap();
    assert!(closed_by_server(&mut half, Duration::from_secs(30)), "a half-sent request head is timed out");

    let mut idle = kept_alive(d.addr);
    std::thread::sleep(Duration::from_millis(1200));
    idle.set_nonblocking(true).unwrap();
    let peeked = idle.peek(&mut [0u8; 1]);
    assert!(
        matches!(&peeked, Err(e) if e.kind() == ErrorKind::WouldBlock),
        "a kept-alive connection has idle_timeout (2s), not header_read_timeout (1s): {peeked:?}"
    );
    idle.set_nonblocking(false).unwrap();
    assert!(closed_by_server(&mut idle, Duration::from_secs(30)), "an idle kept-alive connection is closed");
}

/// `POST /-/reload` with `headers`: status and body.
fn post_reload(addr: SocketAddr, headers: &[(&str, &str)]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut request =
        format!("POST /-/reload HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n");
    for (name, value) in headers {
        request += &format!("{name}: {value}\r\n");
    }
    s.write_all(format!("{request}\r\n").as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    (head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), body.to_owned())
}

fn successful_reloads(addr: SocketAddr) -> String {
    let (_, metrics) = http_get(addr, "/metrics").unwrap();
    metrics
        .lines()
        .find(|l| l.starts_with("crossprobe_config_reloads_total{") && l.contains("result=\"success\""))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or("absent")
        .to_owned()
}

#[test]
fn the_reload_endpoint_is_off_by_default_and_closed_to_other_sites_pages() {
    let pki = Pki::new();
    let off = Running::start(&pki, &web_config(&pki, ""), None);
    let (status, body) = post_reload(off.addr, &[]);
    assert_eq!(status, 403, "off by default: {body}");
    assert!(body.contains("enable_lifecycle = true"), "the refusal says how to turn it on: {body}");
    assert_eq!(successful_reloads(off.addr), "0");
    drop(off);

    let on = Running::start(&pki, &web_config(&pki, "enable_lifecycle = true"), None);
    let addr = on.addr.to_string();
    let page = format!("http://{addr}");
    let refused: [(&str, &[(&str, &str)]); 5] = [
        ("the issue's attack", &[("Origin", "http://evil.example"), ("Content-Type", "text/plain")]),
        ("another origin", &[("Origin", "http://127.0.0.1:1")]),
        ("Sec-Fetch-Site cross-site", &[("Sec-Fetch-Site", "cross-site")]),
        ("Sec-Fetch-Site same-site", &[("Sec-Fetch-Site", "same-site"), ("Origin", &page)]),
        ("a form without Origin", &[("Content-Type", "application/x-www-form-urlencoded")]),
    ];
    for (what, headers) in refused {
        let (status, body) = post_reload(on.addr, headers);
        assert_eq!(status, 403, "{what} must be refused: {body}");
        assert!(body.starts_with("POST /-/reload refused: "), "{what}: {body}");
    }
    assert_eq!(successful_reloads(on.addr), "0", "refused requests reload nothing");
    for (what, headers) in [
        ("curl -X POST", &[][..]),
        ("a page of this server", &[("Origin", page.as_str()), ("Sec-Fetch-Site", "same-origin")][..]),
        ("a JSON body", &[("Content-Type", "application/json")][..]),
    ] {
        let (status, body) = post_reload(on.addr, headers);
        assert_eq!(
            (status, body.as_str()),
            (200, "reloaded: 0 added, 0 removed, 0 restarted, 1 unchanged\n"),
            "{what}"
        );
    }
    assert_eq!(successful_reloads(on.addr), "3");
}

/// `GET /metrics` with basic auth, from address `from`: the status (0 when the exchange failed).
async fn get_metrics(from: std::net::IpAddr, addr: SocketAddr, user: &str, password: &str) -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let Ok(mut stream) = socket.connect(addr).await else { return 0 };
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {token}\r\nConnection: close\r\n\r\n"
    );
    if write_all(&mut stream, request.as_bytes()).await.is_err() {
        return 0;
    }
    let answer = read_to_end(&mut stream).await.unwrap_or_default();
    String::from_utf8_lossy(answer.get(9..12).unwrap_or_default()).parse().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_login_is_not_queued_behind_a_flood_of_wrong_passwords_from_another_address() {
    let pki = Pki::new();
    let web = with_web_file(&pki, &basic_auth_users("prometheus", "scrape-me"));
    let d = Daemon::start(parse(&web_config(&pki, "")), web).await.unwrap();
    let addr = d.addr();
    let (stop, checked, shed) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let flooder: std::net::IpAddr = [127, 0, 0, 2].into();
    let mut flood = Vec::new();
    for _ in 0..64 {
        let (stop, checked, shed) = (stop.clone(), checked.clone(), shed.clone());
        flood.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match get_metrics(flooder, addr, "prometheus", "wrong").await {
                    401 => {
                        checked.fetch_add(1, Ordering::SeqCst);
                    }
                    429 => {
                        shed.fetch_add(1, Ordering::SeqCst);
                        // As Retry-After asks, though a flood would not.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => panic!("a wrong password got {other}"),
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while checked.load(Ordering::SeqCst) < 8 {
        assert!(Instant::now() < deadline, "the flood's wrong passwords are checked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = checked.load(Ordering::SeqCst);
    let status = get_metrics([127, 0, 0, 1].into(), addr, "prometheus", "scrape-me").await;
    let behind = checked.load(Ordering::SeqCst) - before;
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        f.await.unwrap();
    }
    assert_eq!(status, 200, "the right password gets in");
    assert!(
        behind <= 4,
        "the first login waited for {behind} checks of the flood (64 in flight from another address); \
         it should wait for the one running"
    );
    assert!(shed.load(Ordering::SeqCst) > 0, "the flood beyond a few checks per address is refused at once");
    stop_daemon(d).await;
}
