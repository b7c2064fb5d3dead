//! Login flood: how long a user's first login takes while another address keeps the daemon busy
//! with wrong basic-auth passwords.
//!
//! Starts `crossprobe run` (the binary given by `--binary`, `target/release/crossprobe` by
//! default, so an older build can be measured too) on a free port of 127.0.0.1, with basic auth
//! (a `--web.config.file`) for `--users` users (bcrypt cost 10, as `htpasswd -nBC 10` makes) and an AMQP target on a
//! closed port (no broker needed). It keeps `--flood` requests with a wrong password in flight
//! from 127.0.0.2, each sent again as soon as it is answered, and times the first login of each
//! user from 127.0.0.1, one user after the other (a first login is never remembered yet, so
//! each needs a bcrypt check).
//!
//! ```sh
//! cargo build --release && cargo bench --bench login [-- --binary PATH] [--flood 200] [--users 5]
//! ```

use std::io::BufRead;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

struct Args {
    binary: String,
    flood: usize,
    users: usize,
}

fn args() -> Args {
    let mut out = Args { binary: "target/release/crossprobe".into(), flood: 200, users: 5 };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--binary" => out.binary = it.next().expect("--binary PATH"),
            "--flood" => out.flood = it.next().and_then(|n| n.parse().ok()).expect("--flood N"),
            "--users" => out.users = it.next().and_then(|n| n.parse().ok()).expect("--users N"),
            // `cargo bench` passes --bench; the rest are ours.
            _ => {}
        }
    }
    out
}

/// GET /metrics with basic auth, from address `from`; the status, 0 if the exchange failed.
async fn get_metrics(from: IpAddr, addr: SocketAddr, user: &str, password: &str) -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if socket.bind(SocketAddr::new(from, 0)).is_err() {
        return 0;
    }
    let Ok(mut stream) = socket.connect(addr).await else { return 0 };
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {token}\r\nConnection: close\r\n\r\n"
    );
    let mut buf = request.as_bytes();
    while !buf.is_empty() {
        match std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_write(cx, buf)).await {
            Ok(n) if n > 0 => buf = &buf[n..],
            _ => return 0,
        }
    }
    let mut answer = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let mut rb = ReadBuf::new(&mut chunk);
        match std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_read(cx, &mut rb)).await {
            Ok(()) if rb.filled().is_empty() => break,
            Ok(()) => answer.extend_from_slice(rb.filled()),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(answer.get(9..12).unwrap_or_default()).parse().unwrap_or(0)
}

fn main() {
    let args = args();
    let dir = std::env::temp_dir().join(format!("crossprobe-login-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let passwords: Vec<String> = (0..args.users).map(|i| format!("first-login-{i}")).collect();
    let users: Vec<String> = passwords
        .iter()
        .enumerate()
        .map(|(i, p)| format!("  user{i}: \"{}\"\n", bcrypt::hash(p, 10).unwrap()))
        .collect();
    std::fs::write(dir.join("password"), "unused\n").unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        "[daemon]\nlisten = \"127.0.0.1:0\"\ninstance = \"login-bench\"\n\n\
         [[targets]]\nname = \"rabbit-a\"\nprotocol = \"amqp\"\naz = \"a\"\naddresses = [\"127.0.0.1:{closed}\"]\n\n\
         [[tenants]]\nname = \"acme\"\namqp = {{ vhost = \"acme\", user = \"acme\", password_file = \"{}\" }}\n",
        dir.join("password").display()
    );
    let file = dir.join("login.toml");
    std::fs::write(&file, config).unwrap();
    let web = dir.join("web.yml");
    std::fs::write(&web, format!("basic_auth_users:\n{}", users.concat())).unwrap();
    let mut child = Command::new(&args.binary)
        .args(["run", "--config"])
        .arg(&file)
        .arg("--web.config.file")
        .arg(&web)
        .env("RUST_LOG", "info,lapin=off")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", args.binary));
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr: SocketAddr = loop {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("{} ended before starting", args.binary);
        }
        if let Some(a) = line.split_whitespace().find_map(|w| w.strip_prefix("listen=")) {
            break a.parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in stderr.lines() {});

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let (times, checked, shed) = runtime.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let (checked, shed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let flooder: IpAddr = [127, 0, 0, 2].into();
        let mut flood = Vec::new();
        for _ in 0..args.flood {
            let (stop, checked, shed) = (stop.clone(), checked.clone(), shed.clone());
            flood.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match get_metrics(flooder, addr, "user0", "wrong").await {
                        401 => checked.fetch_add(1, Ordering::Relaxed),
                        429 => shed.fetch_add(1, Ordering::Relaxed),
                        _ => 0,
                    };
                }
            }));
        }
        // Let the flood fill the queue.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut times = Vec::new();
        for (i, password) in passwords.iter().enumerate() {
            let start = Instant::now();
            let status = tokio::time::timeout(
                Duration::from_secs(60),
                get_metrics([127, 0, 0, 1].into(), addr, &format!("user{i}"), password),
            )
            .await
            .unwrap_or(0);
            times.push((start.elapsed(), status));
        }
        stop.store(true, Ordering::Relaxed);
        for f in flood {
            let _ = f.await;
        }
        (times, checked.load(Ordering::Relaxed), shed.load(Ordering::Relaxed))
    });
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    let mut seconds: Vec<f64> = times.iter().map(|(t, _)| t.as_secs_f64()).collect();
    seconds.sort_by(f64::total_cmp);
    let ok = times.iter().filter(|(_, s)| *s == 200).count();
    println!("binary: {}", args.binary);
    println!("flood: {} requests in flight from 127.0.0.2, wrong password, bcrypt cost 10", args.flood);
    println!(
        "first login of {} users from 127.0.0.1, one after the other: min {:.2} s, median {:.2} s, max {:.2} s; {ok} of {} got 200",
        seconds.len(),
        seconds[0],
        seconds[seconds.len() / 2],
        seconds[seconds.len() - 1],
        seconds.len()
    );
    println!("flood answers meanwhile: {checked} x 401 (checked), {shed} x 429 (refused unchecked)");
}
