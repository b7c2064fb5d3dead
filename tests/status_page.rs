//! The status page at `/`, rendered by a real headless Chromium (Debian's `chromium`) against the
//! daemon probing the local zones with zone b paused: the DOM shows zone b's tiles failing and
//! zones a and c healthy, the verdict names zone b in plain words, and the screenshot (kept under
//! the test's output directory) is measured for the failing and the healthy colour. Also: the
//! page references nothing on the network, so it works offline.

mod support;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crossprobe::daemon::{Daemon, RunOptions};
use serde_json::Value;
use support::{
    brokers, eventually, exclusive, http_get, http_response, local_matrix, parse, stop_daemon, FAST,
};

/// Longest a Chromium run may take before it is killed.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);
/// Virtual time Chromium grants the page: enough for a poll of `/api/status` and a refresh.
const VIRTUAL_TIME_MS: u32 = 5000;

#[test]
fn the_page_references_nothing_on_the_network() {
    let page = crossprobe::status::PAGE.to_ascii_lowercase();
    for needle in ["http://", "https://", "//cdn", "@import", "src=", "<link"] {
        assert!(!page.contains(needle), "the status page must be self-contained; it contains {needle:?}");
    }
    // Every url( and href= is local (a fragment or a relative path), never a scheme or host.
    for needle in ["url(", "href="] {
        for (i, _) in page.match_indices(needle) {
            let target = page[i + needle.len()..].trim_start_matches(['"', '\'', ' ']);
            assert!(
                target.starts_with('#') || (!target.contains(':') && !target.starts_with("//")),
                "non-local {needle} at byte {i}: {}",
                &page[i..(i + 60).min(page.len())]
            );
        }
    }
    assert!(
        page.contains("fetch(\"api/status\""),
        "the page polls api/status, relative to where it is served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_zone_b_failing_in_headless_chromium() {
    let chromium = chromium_path();
    let colours = Colours::of_page(crossprobe::status::PAGE);
    let _x = exclusive().await;
    let b = brokers();
    let (toml, _) = local_matrix(b, &FAST);
    let d = Daemon::start(parse(&toml), RunOptions::default()).await.unwrap();

    let (head, page) = http_response(d.addr(), "GET", "/").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "GET / answered {head}");
    assert!(
        head.to_ascii_lowercase().contains("content-type: text/html; charset=utf-8"),
        "GET / headers: {head}"
    );
    assert_eq!(page, crossprobe::status::PAGE, "GET / serves the embedded page");

    eventually("every cell healthy, verdict ok", Duration::from_secs(45), || {
        let v = json(&d, "/verdict")?;
        let healthy =
            v["cells"].as_array().is_some_and(|c| c.len() == 12 && c.iter().all(|c| c["state"] == "healthy"));
        if healthy && v["verdict"] == "ok" {
            Ok(())
        } else {
            Err(v.to_string())
        }
    })
    .await;

    let Some(fault) = b.fault("b", "pause", None) else {
        eprintln!(
            "status page test: no fault injection with the user's brokers; only the healthy page was checked"
        );
        return stop_daemon(d).await;
    };
    let partial = eventually(
        "zone b's cells failing, a and c healthy, verdict partial {az=b}",
        Duration::from_secs(45),
        || {
            let v = json(&d, "/verdict")?;
            let cells = v["cells"].as_array().cloned().unwrap_or_default();
            let as_expected = cells.len() == 12
                && cells
                    .iter()
                    .all(|c| c["state"] == if c["labels"]["az"] == "b" { "failing" } else { "healthy" });
            if as_expected && v["verdict"] == "partial" && v["scopes"] == serde_json::json!([{"az": "b"}]) {
                Ok(v)
            } else {
                Err(v.to_string())
            }
        },
    )
    .await;
    assert_eq!(partial["explanation"], "Partial outage: zone b (4 of 4 cells failing)", "{partial}");

    // What the page polls: the verdict document plus latency per zone and protocol and the changes.
    let status = json(&d, "/api/status").unwrap();
    assert_eq!(status["verdict"], "partial", "{status}");
    let latency = status["latency"].as_array().cloned().unwrap_or_default();
    assert_eq!(latency.len(), 6, "one latency row per zone and protocol: {status}");
    for row in &latency {
        let az = row["labels"]["az"].as_str().unwrap_or_default();
        if az != "b" {
            let (p50, p99) = (row["p50_seconds"].as_f64(), row["p99_seconds"].as_f64());
            assert!(p50.is_some_and(|p| p > 0.0) && p99 >= p50, "zone {az} has probed fine: {row}");
        }
    }
    let changes = status["changes"].as_array().cloned().unwrap_or_default();
    assert!(changes.len() >= 2, "at least ok then partial: {status}");
    assert_eq!(changes[0]["level"], "partial", "newest change first: {changes:?}");
    assert_eq!(changes.last().unwrap()["level"], "ok", "the first change was the healthy start: {changes:?}");
    assert!(
        changes[0]["at"].as_str().is_some_and(|t| t.len() == 20 && t.ends_with('Z')),
        "RFC 3339 UTC: {changes:?}"
    );

    let url = format!("http://{}/", d.addr());
    let out = output_dir();
    let dom = tokio::task::spawn_blocking({
        let (chromium, url) = (chromium.clone(), url.clone());
        move || run_chromium(&chromium, &["--dump-dom"], &url)
    })
    .await
    .unwrap();
    let shot = out.join("zone-b-paused.png");
    let _ = std::fs::remove_file(&shot);
    tokio::task::spawn_blocking({
        let arg = format!("--screenshot={}", shot.display());
        move || run_chromium(&chromium, &[&arg], &url)
    })
    .await
    .unwrap();
    fault.heal();
    stop_daemon(d).await;

    // The rendered DOM: one tile per cell, in its zone's row, with its state.
    let tiles = tiles_of(&dom);
    let count = |az: &str, state: &str| tiles.iter().filter(|(a, s)| a == az && s == state).count();
    assert_eq!(tiles.len(), 12, "twelve tiles rendered; DOM:\n{dom}");
    assert_eq!(
        (count("b", "failing"), count("a", "healthy"), count("c", "healthy")),
        (4, 4, 4),
        "tiles: {tiles:?}"
    );
    let explanation = element_text(&dom, "<p id=\"explanation\">");
    assert!(explanation.contains("zone b"), "the verdict in words names zone b: {explanation:?}");
    assert!(
        element_text(&dom, "<span id=\"conn\"").contains("updated"),
        "the page polled successfully:\n{dom}"
    );

    // The screenshot: zone b's row in the failing colour between healthy rows a and c.
    println!("status page screenshot: {}", shot.display());
    let image = Image::decode(&shot);
    let failing = image.rows_with_run(colours.failing, 40);
    let healthy = image.rows_with_run(colours.healthy, 40);
    assert!(
        !failing.is_empty(),
        "no run of 40 px in the failing colour {:?} in {}",
        colours.failing,
        shot.display()
    );
    assert!(
        !healthy.is_empty(),
        "no run of 40 px in the healthy colour {:?} in {}",
        colours.healthy,
        shot.display()
    );
    let (f_top, f_bottom) = (failing[0], *failing.last().unwrap());
    assert!(
        healthy.iter().any(|&y| y < f_top) && healthy.iter().any(|&y| y > f_bottom),
        "failing rows {f_top}..={f_bottom} should lie between healthy ones (zone a above, zone c below); healthy rows: {}..={}",
        healthy[0],
        healthy.last().unwrap()
    );
    assert!(
        !healthy.iter().any(|y| (f_top..=f_bottom).contains(y)),
        "zone b's row holds healthy tiles too (rows {f_top}..={f_bottom}); see {}",
        shot.display()
    );
}

/// The page on its own, against a stand-in that answers one status document and then fails:
/// the page must render whatever cells the document has (here an extra `network` dimension, an
/// unknown cell and a degraded one), then keep that answer on screen and say the daemon is unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_keeps_its_last_answer_and_says_when_the_daemon_is_unreachable() {
    let chromium = chromium_path();
    let cell = |id: &str, az: &str, network: &str, state: &str| {
        serde_json::json!({
            "id": id,
            "labels": {"az": az, "tenant": "acme", "protocol": "kafka", "broker": id, "network": network},
            "state": state,
        })
    };
    // A healthy cell far above its baseline: degraded, in its own colour.
    let mut slow = cell("r-b", "b", "core", "healthy");
    slow["latency"] = "degraded".into();
    slow["baseline_p50_ms"] = 1.0.into();
    slow["current_p50_ms"] = 90.0.into();
    let document = serde_json::json!({
        "verdict": "suspect",
        "explanation": "Suspect: 1 of 3 cells failing, in no confirmed pattern (not paged)",
        "scopes": [],
        "evidence": {"rule": "no scope passes thresholds", "tick": 3},
        "cells": [cell("k-a", "a", "dmz", "failing"), cell("k-a2", "a", "core", "healthy"), cell("k-d", "d", "dmz", "unknown"), slow],
        "latency": [{"labels": {"az": "b", "protocol": "amqp"}, "ok_probes": 20, "p50_seconds": 0.09, "p99_seconds": 0.2, "baseline_p50_seconds": 0.001}],
        "changes": [],
        "now": "2026-11-24T06:00:00Z",
    });
    let stand_in = StandIn::start(document.to_string());
    let url = format!("http://{}/", stand_in.addr);
    let dom =
        tokio::task::spawn_blocking(move || run_chromium(&chromium, &["--dump-dom"], &url)).await.unwrap();
    let polls = stand_in.stop();

    assert!(polls >= 2, "the page polled again after its first answer ({polls} polls)");
    let mut tiles = tiles_of(&dom);
    tiles.sort();
    let want = [("a", "failing"), ("a", "healthy"), ("b", "degraded"), ("d", "unknown")]
        .map(|(a, s)| (a.to_owned(), s.to_owned()));
    assert_eq!(tiles, want, "DOM:\n{dom}");
    assert!(dom.contains("round trip p50 90.0 ms, baseline 1.00 ms"), "the degraded tile's title: {dom}");
    assert!(
        dom.contains("<td class=\"num baseline\">1.00 ms</td>"),
        "the zone table's baseline column: {dom}"
    );
    assert!(dom.contains("network=dmz"), "a tile's title carries every label, extra dimensions too:\n{dom}");
    assert_eq!(element_text(&dom, "<p id=\"explanation\">"), document["explanation"].as_str().unwrap());
    let conn = element_text(&dom, "<span id=\"conn\"");
    assert!(conn.starts_with("daemon unreachable since "), "the failed poll is shown: {conn:?}");
    assert!(dom.contains("<body class=\"stale\">"), "the last answer is shown as stale:\n{dom}");
}

/// A stand-in for the daemon: serves the page, answers `/api/status` once with a fixed document
/// and with 503 afterwards.
struct StandIn {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    polls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

impl StandIn {
    fn start(document: String) -> StandIn {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let polls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (stop2, polls2) = (stop.clone(), polls.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let (document, polls) = (document.clone(), polls2.clone());
                std::thread::spawn(move || {
                    use std::io::{BufRead, Write};
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut line = String::new();
                    let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                    if reader.read_line(&mut line).is_err() {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).map_or(true, |n| n == 0) || header == "\r\n" {
                            break;
                        }
                    }
                    let (status, kind, body) = match path.as_str() {
                        "/" => ("200 OK", "text/html; charset=utf-8", crossprobe::status::PAGE.to_owned()),
                        "/api/status" if polls.fetch_add(1, SeqCst) == 0 => {
                            ("200 OK", "application/json", document)
                        }
                        "/api/status" => ("503 Service Unavailable", "text/plain", "gone\n".to_owned()),
                        _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
                    };
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        StandIn { addr, stop, polls, thread }
    }

    /// Stops accepting and returns how many times `/api/status` was asked for.
    fn stop(self) -> usize {
        use std::sync::atomic::Ordering::SeqCst;
        self.stop.store(true, SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
        self.thread.join().unwrap();
        self.polls.load(SeqCst)
    }
}

/// `chromium` on PATH, or a failure that says how to get it.
fn chromium_path() -> PathBuf {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("chromium")).find(|c| c.is_file()))
        .unwrap_or_default();
    found.unwrap_or_else(|| {
        panic!("chromium is not installed (not found on PATH); run `deploy/local/crossprobe-local install`, which installs Debian's chromium")
    })
}

/// Runs headless Chromium on `url` with `extra` arguments and returns its stdout. Chromium runs
/// in its own process group with a throw-away profile; if it outlives [`CHROMIUM_TIMEOUT`] the
/// group is killed by its id.
fn run_chromium(chromium: &Path, extra: &[&str], url: &str) -> String {
    let profile = output_dir().join(format!("profile-{}", support::unique()));
    let mut cmd = Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--disable-background-networking",
        "--no-first-run",
        "--hide-scrollbars",
        "--force-color-profile=srgb",
        "--window-size=1280,900",
    ])
    .arg(format!("--virtual-time-budget={VIRTUAL_TIME_MS}"))
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium.display()));
    let pid = child.id();
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Chromium's helpers share its process group; whatever is left of it goes, by group id.
    let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).stderr(Stdio::null()).status();
    let _ = child.wait();
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let _ = std::fs::remove_dir_all(&profile);
    match status {
        None => {
            panic!("chromium {extra:?} did not finish within {CHROMIUM_TIMEOUT:?}; killed. stderr:\n{stderr}")
        }
        Some(s) if !s.success() => panic!("chromium {extra:?} failed ({s}); stderr:\n{stderr}"),
        Some(_) => stdout,
    }
}

/// `CARGO_TARGET_TMPDIR/status-page`, created.
fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `(az, state)` of every tile in a dumped DOM.
fn tiles_of(dom: &str) -> Vec<(String, String)> {
    let attr = |tag: &str, name: &str| -> String {
        let key = format!("{name}=\"");
        tag.find(&key)
            .map(|i| tag[i + key.len()..].split('"').next().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    dom.split("<div ")
        .skip(1)
        .map(|rest| rest.split('>').next().unwrap_or_default())
        .filter(|tag| attr(tag, "class").split(' ').next() == Some("tile"))
        .map(|tag| {
            let state = attr(tag, "class").split(' ').nth(1).unwrap_or_default().to_owned();
            assert_eq!(attr(tag, "data-state"), state, "class and data-state agree: {tag}");
            (attr(tag, "data-az"), state)
        })
        .collect()
}

/// The text of the element whose opening tag starts with `open`.
fn element_text(dom: &str, open: &str) -> String {
    let Some(i) = dom.find(open) else { panic!("no {open} in the DOM:\n{dom}") };
    let rest = &dom[i..];
    let start = rest.find('>').map_or(0, |j| j + 1);
    rest[start..].split('<').next().unwrap_or_default().to_owned()
}

/// The tile colours, read from the page's own CSS variables so the test follows the page.
struct Colours {
    failing: [u8; 3],
    healthy: [u8; 3],
}

impl Colours {
    fn of_page(page: &str) -> Colours {
        let var = |name: &str| -> [u8; 3] {
            let key = format!("--{name}: #");
            let i = page.find(&key).unwrap_or_else(|| panic!("the page defines no {key}"));
            let hex = &page[i + key.len()..i + key.len() + 6];
            let byte = |k: usize| u8::from_str_radix(&hex[k..k + 2], 16).unwrap();
            [byte(0), byte(2), byte(4)]
        };
        Colours { failing: var("failing"), healthy: var("healthy") }
    }
}

/// A decoded RGB(A) screenshot.
struct Image {
    width: usize,
    channels: usize,
    pixels: Vec<u8>,
}

impl Image {
    fn decode(path: &Path) -> Image {
        let file =
            std::fs::File::open(path).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", path.display()));
        let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        let channels = info.color_type.samples();
        assert!(channels >= 3, "an RGB screenshot, not {:?}", info.color_type);
        pixels.truncate(info.buffer_size());
        Image { width: info.width as usize, channels, pixels }
    }

    /// Rows holding a horizontal run of at least `min` pixels of exactly `rgb`: tiles, not the
    /// legend's small swatches.
    fn rows_with_run(&self, rgb: [u8; 3], min: usize) -> Vec<usize> {
        self.pixels
            .chunks(self.width * self.channels)
            .enumerate()
            .filter(|(_, row)| {
                let mut run = 0;
                row.chunks(self.channels).any(|p| {
                    run = if p[..3] == rgb { run + 1 } else { 0 };
                    run >= min
                })
            })
            .map(|(y, _)| y)
            .collect()
    }
}

fn json(d: &Daemon, path: &str) -> Result<Value, String> {
    let (status, body) = http_get(d.addr(), path).map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{path}: status {status}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{path}: {e}: {body}"))
}
