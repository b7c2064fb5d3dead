//! The web configuration file: a full file in exporter-toolkit's format, and one case per
//! mistake with the exact message, key path and place.

use super::*;

const HASH: &str = "$2y$04$WmFz0yq1XvYhRmOqBCcJGuX2fBVB6K5Byd0rR4mNC3gPjmW0lwN0S";

fn dir() -> &'static Path {
    Path::new("tests/config/web")
}

/// Each problem as `line:col path: message`.
fn problems(source: &str) -> Vec<String> {
    let e = WebConfig::parse(source, dir()).expect_err(source);
    e.iter()
        .map(|p| {
            let (line, col) = p.location.unwrap_or((0, 0));
            format!("{line}:{col} {}: {}", p.path, p.message)
        })
        .collect()
}

#[test]
fn a_full_exporter_toolkit_file_is_read_with_its_meaning() {
    let source = format!(
        "# As node_exporter's docs write it.\n\
         tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
         \x20 client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: server.crt\n\
         \x20 min_version: TLS13\n  max_version: TLS13\n\
         \x20 cipher_suites:\n    - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\n    - TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305\n\
         \x20 curve_preferences: [X25519, CurveP256]\n  prefer_server_cipher_suites: false\n\
         http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n\
         basic_auth_users:\n  prometheus: '{HASH}'\n  \"grafana\": \"{HASH}\"\n"
    );
    let config = WebConfig::parse(&source, dir()).unwrap();
    let tls = config.tls.as_ref().unwrap();
    assert_eq!(tls.cert_file, dir().join("server.crt"), "relative to the file's directory");
    assert_eq!(tls.client_auth, ClientAuth::Require(dir().join("server.crt")));
    assert_eq!((tls.min_version, tls.max_version), (TlsVersion::Tls13, TlsVersion::Tls13));
    assert_eq!(
        tls.cipher_suites,
        [CipherSuite::EcdheRsaAes256GcmSha384, CipherSuite::EcdheEcdsaChacha20Poly1305]
    );
    assert_eq!(tls.curve_preferences, [Curve::X25519, Curve::P256]);
    assert!(!tls.prefer_server_cipher_suites);
    assert_eq!(config.headers.len(), 2);
    assert_eq!(config.basic_auth_users.keys().collect::<Vec<_>>(), ["grafana", "prometheus"]);
    assert_eq!(config.files().len(), 3);
}

#[test]
fn empty_files_and_sections_serve_plain_http_without_auth() {
    for source in ["", "---\n", "tls_server_config:\nbasic_auth_users: {}\n", "tls_server_config: {}\n"] {
        assert_eq!(WebConfig::parse(source, dir()), Ok(WebConfig::default()), "{source:?}");
    }
    let auth_only = WebConfig::parse(&format!("basic_auth_users:\n  prometheus: {HASH}\n"), dir()).unwrap();
    assert!(auth_only.tls.is_none() && auth_only.basic_auth_users.len() == 1);
}

#[test]
fn every_mistake_names_its_key_path_and_line() {
    let cases: &[(&str, &[&str])] = &[
        ("tls_config:\n  cert_file: a\n", &["1:1 tls_config: unknown key, expected one of tls_server_config, http_server_config, basic_auth_users"]),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  cert_fil: x\n",
            &["4:3 tls_server_config.cert_fil: unknown key, expected one of cert_file, key_file, client_auth_type, client_ca_file, min_version, max_version, cipher_suites, curve_preferences, prefer_server_cipher_suites, client_allowed_sans, cert, key, client_ca"],
        ),
        ("tls_server_config:\n  cert_file: server.crt\n", &["2:3 tls_server_config: key_file is missing: HTTPS needs both cert_file and key_file"]),
        (
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: not-pem.txt\n",
            &[
                "2:14 tls_server_config.cert_file: cannot read \"tests/config/web/missing.crt\": No such file or directory (os error 2)",
                "3:13 tls_server_config.key_file: \"tests/config/web/not-pem.txt\" holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            ],
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n",
            &["3:13 tls_server_config.key_file: the private key in \"tests/config/web/other.key\" does not belong to the certificate in \"tests/config/web/server.crt\""],
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_ca_file: server.crt\n",
            &["4:19 tls_server_config.client_ca_file: is set but client_auth_type does not verify client certificates: set client_auth_type: RequireAndVerifyClientCert (or VerifyClientCertIfGiven)"],
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n",
            &["4:21 tls_server_config.client_auth_type: RequireAndVerifyClientCert needs client_ca_file, the CAs that sign client certificates"],
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAnyClientCert\n  client_ca_file: server.crt\n",
            &["4:21 tls_server_config.client_auth_type: RequireAnyClientCert (a client certificate taken without verifying it) is not supported: use VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file"],
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS11\n  max_version: SSL3\n",
            &[
                "4:16 tls_server_config.min_version: TLS11 is not supported: rustls offers TLS12 and TLS13 only",
                "5:16 tls_server_config.max_version: \"SSL3\" is not a TLS version (TLS12, TLS13)",
            ],
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS13\n  max_version: TLS12\n",
            &["2:3 tls_server_config: min_version is above max_version"],
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n  curve_preferences:\n    - CurveP521\n",
            &[
                "4:19 tls_server_config.cipher_suites[0]: \"TLS_RSA_WITH_AES_128_CBC_SHA\" is not supported (supported: TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305; TLS 1.2 suites; TLS 1.3 suites cannot be chosen, in Go either)",
                "6:7 tls_server_config.curve_preferences[0]: \"CurveP521\" is not supported (supported: X25519, CurveP256, CurveP384; CurveP521 and post-quantum groups are not in the crypto provider)",
            ],
        ),
        (
            "tls_server_config:\n  cert: '-----BEGIN CERTIFICATE-----'\n  client_allowed_sans: [a]\n",
            &[
                "2:3 tls_server_config: cert_file is missing: HTTPS needs both cert_file and key_file",
                "2:9 tls_server_config.cert: (inline PEM) is not supported: write the certificate to a file and name it in cert_file",
                "3:24 tls_server_config.client_allowed_sans: is not supported: rustls's client verifier does not filter by SAN; issue client certificates from a CA that signs only allowed clients",
            ],
        ),
        (
            "http_server_config:\n  http2: true\n  headers:\n    X-Frame-Options: allow\n    Server: crossprobe\n",
            &[
                "2:10 http_server_config.http2: crossprobe serves HTTP/1.1 only (Prometheus scrapes over HTTP/1.1 by default): remove the key or set it to false",
                "4:22 http_server_config.headers.X-Frame-Options: \"allow\" is not allowed (one of: deny, sameorigin)",
                "5:5 http_server_config.headers.Server: unknown key, expected one of Content-Security-Policy, Strict-Transport-Security, X-Content-Type-Options, X-Frame-Options, X-XSS-Protection",
            ],
        ),
        (
            &*format!("basic_auth_users:\n  prometheus: hunter2\n  \"bob:x\": {HASH}\n  alice: {HASH}\n  alice: {HASH}\n  carol: [a]\n"),
            &[
                "2:15 basic_auth_users.prometheus: is not a bcrypt hash (\"$2y$\", \"$2b$\" or \"$2a$\", a cost from 04 to 31, then 53 characters of salt and hash); only bcrypt is supported, as in exporter-toolkit",
                "3:12 basic_auth_users.\"bob:x\": a user name must be non-empty and contain no ':'",
                "5:3 basic_auth_users.alice: duplicate key (its value was given at line 4 already)",
                "6:10 basic_auth_users.carol: expected a string",
            ],
        ),
        ("basic_auth_users: [a]\n", &["1:19 basic_auth_users: expected a mapping (key: value lines)"]),
        ("basic_auth_users:\n  a: b\n c: d\n", &["3:3 : YAML syntax: while parsing a block mapping, did not find expected key"]),
    ];
    for (source, expected) in cases {
        assert_eq!(problems(source), *expected, "for the file:\n{source}");
    }
}

#[test]
fn hashes_never_show_in_messages_or_debug_output() {
    let shown =
        format!("{:?}", WebConfig::parse(&format!("basic_auth_users:\n  alice: {HASH}\n"), dir()).unwrap());
    assert!(shown.contains("alice") && !shown.contains("$2y$"), "{shown}");
    let bad = problems("basic_auth_users:\n  alice: $2y$04$short\n");
    assert!(!bad[0].contains("$2y$04$short"), "{bad:?}");
}

#[test]
fn only_wellformed_bcrypt_hashes_pass() {
    let good = bcrypt::hash("secret", 4).unwrap();
    assert!(is_bcrypt(&good), "{good}");
    for (case, value) in [
        ("a password", "hunter2"),
        ("empty", ""),
        ("sha-crypt", "$6$salt$0123456789012345678901234567890123456789012345678901"),
        ("2x variant", &good.replacen("$2b$", "$2x$", 1)),
        ("cost out of range", &good.replacen("$04$", "$99$", 1)),
        ("truncated", &good[..good.len() - 1]),
    ] {
        assert!(!is_bcrypt(value), "{case}: {value:?} was taken for a bcrypt hash");
    }
    for prefix in ["$2a$", "$2y$"] {
        let other = good.replacen("$2b$", prefix, 1);
        assert!(is_bcrypt(&other), "{prefix} should pass: {other}");
    }
}
