//! What the web configuration file (`--web.config.file`) costs each request and connection when
//! it has not changed: the `stat` of the file and of the PEM files it names, and the lock around
//! the version in use (`web::file::WebFile::current`), against the work a change brings (read,
//! parse and check the YAML and the PEM files, build the rustls configuration).
//!
//! `cargo bench --bench web_file`

use criterion::{criterion_group, criterion_main, Criterion};
use crossprobe::config::WebConfig;
use crossprobe::web::file::WebFile;
use rcgen::{CertificateParams, KeyPair};

fn web_file(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("crossprobe-web-file-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.crt"), cert.pem()).unwrap();
    let hash = bcrypt::hash("scrape-me", 4).unwrap();
    let yaml = format!(
        "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n  client_auth_type: VerifyClientCertIfGiven\n  \
         client_ca_file: ca.crt\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n\
         basic_auth_users:\n  prometheus: \"{hash}\"\n"
    );
    let path = dir.join("web.yml");
    std::fs::write(&path, &yaml).unwrap();

    let file = WebFile::load(&path).unwrap();
    c.bench_function("web_file/current, unchanged (4 stats)", |b| b.iter(|| file.current()));
    c.bench_function("web_file/read and check a changed file", |b| {
        b.iter(|| WebConfig::load(&path).unwrap())
    });
    c.bench_function("web_file/load: read, check, build rustls config", |b| {
        b.iter(|| WebFile::load(&path).unwrap())
    });
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, web_file);
criterion_main!(benches);
