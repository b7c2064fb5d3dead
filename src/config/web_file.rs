//! The web configuration file of `--web.config.file`, in the format of Prometheus's
//! exporter-toolkit (`docs/web-configuration.md` there), so the file an operator writes for
//! node_exporter serves crossprobe too: `tls_server_config`, `http_server_config` and
//! `basic_auth_users`, with the same keys, names and defaults.
//!
//! What rustls cannot do is refused by name, never silently dropped: TLS 1.0 and 1.1, cipher
//! suites and curves the crypto provider lacks, client certificates that are asked for but not
//! verified, `client_allowed_sans`, inline PEM, HTTP/2. Unknown and repeated keys are errors
//! with their key path and line, as exporter-toolkit's strict YAML decoding makes them.
//!
//! The PEM files are read and checked here, as `check` reads the TOML's files; relative names
//! are relative to the directory of the web configuration file, as in exporter-toolkit. Password
//! hashes are never quoted in messages: a hash is an offline guessing target.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::error::{quoted, ConfigError, Problem};
use super::yaml::{self, join, Node};
use crate::{files, pem};

/// What the file asks of the HTTP server; the default (an empty file) is plain HTTP without
/// authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebConfig {
    /// Serve HTTPS instead of HTTP.
    pub tls: Option<TlsSettings>,
    /// User name to bcrypt hash; empty means no authentication.
    pub basic_auth_users: BTreeMap<String, PasswordHash>,
    /// Headers added to every response (`http_server_config.headers`).
    pub headers: Vec<(String, String)>,
}

/// `tls_server_config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The server certificate, followed by any intermediates.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_auth: ClientAuth,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// TLS 1.2 suites in order of preference; empty means the provider's defaults.
    pub cipher_suites: Vec<CipherSuite>,
    /// Key exchange groups in order of preference; empty means the provider's defaults.
    pub curve_preferences: Vec<Curve>,
    /// The server's order of suites wins over the client's (exporter-toolkit's default).
    pub prefer_server_cipher_suites: bool,
}

/// `client_auth_type` with its `client_ca_file`; the types that ask for a certificate without
/// verifying it (`RequestClientCert`, `RequireAnyClientCert`) are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// `NoClientCert`, the default.
    None,
    /// `VerifyClientCertIfGiven`: a certificate is optional, and verified when given.
    VerifyIfGiven(PathBuf),
    /// `RequireAndVerifyClientCert`.
    Require(PathBuf),
}

/// `min_version` and `max_version`, as rustls offers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// The TLS 1.2 suites rustls offers, by their Go (and IANA) names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherSuite {
    EcdheEcdsaAes128GcmSha256,
    EcdheEcdsaAes256GcmSha384,
    EcdheEcdsaChacha20Poly1305,
    EcdheRsaAes128GcmSha256,
    EcdheRsaAes256GcmSha384,
    EcdheRsaChacha20Poly1305,
}

/// The key exchange groups rustls offers, by Go's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    X25519,
    P256,
    P384,
}

/// A bcrypt hash of a password. Not the password, but a target for offline guessing, so it is
/// never printed: `Debug` shows only that it is there.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// A hash as written in the file; validation admits only bcrypt.
    pub fn new(hash: impl Into<String>) -> PasswordHash {
        PasswordHash(hash.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

const CIPHER_SUITES: [(&str, CipherSuite); 8] = [
    ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", CipherSuite::EcdheEcdsaAes128GcmSha256),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", CipherSuite::EcdheEcdsaAes256GcmSha384),
    ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", CipherSuite::EcdheEcdsaChacha20Poly1305),
    ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", CipherSuite::EcdheRsaAes128GcmSha256),
    ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", CipherSuite::EcdheRsaAes256GcmSha384),
    ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", CipherSuite::EcdheRsaChacha20Poly1305),
    // Go's older names of the same two suites.
    ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305", CipherSuite::EcdheEcdsaChacha20Poly1305),
    ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305", CipherSuite::EcdheRsaChacha20Poly1305),
];

const CURVES: [(&str, Curve); 3] =
    [("X25519", Curve::X25519), ("CurveP256", Curve::P256), ("CurveP384", Curve::P384)];

/// The headers exporter-toolkit lets a file set, with the values it admits (empty: any).
const HEADERS: [(&str, &[&str]); 5] = [
    ("Content-Security-Policy", &[]),
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
];

impl WebConfig {
    /// Reads and checks a web configuration file, reporting every problem with its key path
    /// and line.
    pub fn load(path: &Path) -> Result<WebConfig, ConfigError> {
        let source = files::read_text(path, files::MAX_CONFIG_BYTES)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let dir = path.parent().unwrap_or(Path::new(""));
        Self::parse(&source, dir).map_err(|problems| ConfigError::Invalid { file: path.to_owned(), problems })
    }

    /// Checks the text of a web configuration; file names in it are relative to `dir`.
    pub fn parse(source: &str, dir: &Path) -> Result<WebConfig, Vec<Problem>> {
        let Some(doc) = yaml::parse(source).map_err(|e| vec![e])? else { return Ok(WebConfig::default()) };
        let mut p = Vec::new();
        let top = doc.mapping(&mut p, "", &["tls_server_config", "http_server_config", "basic_auth_users"]);
        let config = WebConfig {
            tls: top.get("tls_server_config").and_then(|n| tls(&mut p, n, dir)),
            basic_auth_users: top.get("basic_auth_users").map(|n| users(&mut p, n)).unwrap_or_default(),
            headers: top.get("http_server_config").map(|n| http(&mut p, n)).unwrap_or_default(),
        };
        if !p.is_empty() {
            p.sort_by_key(|p| p.location.unwrap_or((usize::MAX, 0)));
            return Err(p);
        }
        Ok(config)
    }

    /// Every file the configuration names, to notice when one changes.
    pub fn files(&self) -> Vec<&Path> {
        let Some(tls) = &self.tls else { return Vec::new() };
        let mut out = vec![tls.cert_file.as_path(), tls.key_file.as_path()];
        if let ClientAuth::VerifyIfGiven(ca) | ClientAuth::Require(ca) = &tls.client_auth {
            out.push(ca);
        }
        out
    }
}

const TLS: &str = "tls_server_config";

fn tls(p: &mut Vec<Problem>, node: &Node, dir: &Path) -> Option<TlsSettings> {
    const KEYS: [&str; 13] = [
        "cert_file",
        "key_file",
        "client_auth_type",
        "client_ca_file",
        "min_version",
        "max_version",
        "cipher_suites",
        "curve_preferences",
        "prefer_server_cipher_suites",
        "client_allowed_sans",
        "cert",
        "key",
        "client_ca",
    ];
    let m = node.mapping(p, TLS, &KEYS);
    if m.is_empty() {
        // As in exporter-toolkit: an empty section serves plain HTTP. (With other keys but no
        // certificate it serves plain HTTP too, ignoring them; here that is a mistake.)
        return None;
    }
    for (k, why) in [
        ("client_allowed_sans", "is not supported: rustls's client verifier does not filter by SAN; issue client certificates from a CA that signs only allowed clients"),
        ("cert", "(inline PEM) is not supported: write the certificate to a file and name it in cert_file"),
        ("key", "(inline PEM) is not supported: write the key to a file and name it in key_file"),
        ("client_ca", "(inline PEM) is not supported: write the CAs to a file and name it in client_ca_file"),
    ] {
        if let Some(n) = m.get(k) {
            p.push(n.problem(&join(TLS, k), why));
        }
    }
    let cert = file(p, &m, "cert_file", dir);
    let key = file(p, &m, "key_file", dir);
    let ca = file(p, &m, "client_ca_file", dir);
    let client_auth = client_auth(p, &m, ca.as_ref());
    let min_version = version(p, &m, "min_version", TlsVersion::Tls12);
    let max_version = version(p, &m, "max_version", TlsVersion::Tls13);
    if min_version > max_version {
        p.push(node.problem(TLS, "min_version is above max_version"));
    }
    let cipher_suites = names(
        p,
        &m,
        "cipher_suites",
        &CIPHER_SUITES,
        "TLS 1.2 suites; TLS 1.3 suites cannot be chosen, in Go either",
    );
    let curve_preferences = names(
        p,
        &m,
        "curve_preferences",
        &CURVES,
        "CurveP521 and post-quantum groups are not in the crypto provider",
    );
    let prefer_server_cipher_suites = m
        .get("prefer_server_cipher_suites")
        .and_then(|n| n.boolean(p, &join(TLS, "prefer_server_cipher_suites")))
        .unwrap_or(true);
    let (cert_file, key_file) = match (cert, key) {
        (Some(cert), Some(key)) => (cert, key),
        (cert, _) => {
            let missing = if cert.is_none() { "cert_file" } else { "key_file" };
            p.push(
                node.problem(TLS, &format!("{missing} is missing: HTTPS needs both cert_file and key_file")),
            );
            return None;
        }
    };
    check_files(p, &cert_file, &key_file, ca.as_ref());
    Some(TlsSettings {
        cert_file: cert_file.0,
        key_file: key_file.0,
        client_auth,
        min_version,
        max_version,
        cipher_suites,
        curve_preferences,
        prefer_server_cipher_suites,
    })
}

/// A file name of the section, relative to `dir`, with the value that named it.
fn file<'a>(
    p: &mut Vec<Problem>,
    m: &BTreeMap<&str, &'a Node>,
    k: &str,
    dir: &Path,
) -> Option<(PathBuf, &'a Node)> {
    let n = *m.get(k)?;
    let name = n.string(p, &join(TLS, k)).filter(|s| !s.is_empty())?;
    Some((dir.join(name), n))
}

fn client_auth(p: &mut Vec<Problem>, m: &BTreeMap<&str, &Node>, ca: Option<&(PathBuf, &Node)>) -> ClientAuth {
    let path = join(TLS, "client_auth_type");
    let given = m.get("client_auth_type").and_then(|n| Some((n.string(p, &path)?, *n)));
    let needs_ca = |p: &mut Vec<Problem>, n: &Node, name: &str| match ca {
        Some((file, _)) => Some(file.clone()),
        None => {
            p.push(n.problem(
                &path,
                &format!("{name} needs client_ca_file, the CAs that sign client certificates"),
            ));
            None
        }
    };
    let auth = match given {
        None | Some(("" | "NoClientCert", _)) => ClientAuth::None,
        Some(("VerifyClientCertIfGiven", n)) => {
            needs_ca(p, n, "VerifyClientCertIfGiven").map_or(ClientAuth::None, ClientAuth::VerifyIfGiven)
        }
        Some(("RequireAndVerifyClientCert", n)) => {
            needs_ca(p, n, "RequireAndVerifyClientCert").map_or(ClientAuth::None, ClientAuth::Require)
        }
        Some((name @ ("RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert"), n)) => {
            p.push(n.problem(&path, &format!("{name} (a client certificate taken without verifying it) is not supported: use VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file")));
            ClientAuth::None
        }
        Some((other, n)) => {
            p.push(n.problem(&path, &format!("{} is not a client auth type (NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)", quoted(other))));
            ClientAuth::None
        }
    };
    if let (ClientAuth::None, Some((_, n)), None | Some(("" | "NoClientCert", _))) = (&auth, ca, given) {
        // exporter-toolkit refuses this too: CAs that would verify nothing.
        p.push(n.problem(&join(TLS, "client_ca_file"), "is set but client_auth_type does not verify client certificates: set client_auth_type: RequireAndVerifyClientCert (or VerifyClientCertIfGiven)"));
    }
    auth
}

fn version(p: &mut Vec<Problem>, m: &BTreeMap<&str, &Node>, k: &str, default: TlsVersion) -> TlsVersion {
    let Some(n) = m.get(k) else { return default };
    let path = join(TLS, k);
    match n.string(p, &path) {
        Some("TLS12") => TlsVersion::Tls12,
        Some("TLS13") => TlsVersion::Tls13,
        Some(old @ ("TLS10" | "TLS11")) => {
            p.push(n.problem(&path, &format!("{old} is not supported: rustls offers TLS12 and TLS13 only")));
            default
        }
        Some(other) => {
            p.push(n.problem(&path, &format!("{} is not a TLS version (TLS12, TLS13)", quoted(other))));
            default
        }
        None => default,
    }
}

/// A list of names from `table`, in the order given.
fn names<T: Copy>(
    p: &mut Vec<Problem>,
    m: &BTreeMap<&str, &Node>,
    k: &str,
    table: &[(&str, T)],
    why: &str,
) -> Vec<T> {
    let Some(n) = m.get(k) else { return Vec::new() };
    let path = join(TLS, k);
    let mut out = Vec::new();
    for (i, item) in n.sequence(p, &path).iter().enumerate() {
        let here = format!("{path}[{i}]");
        let Some(name) = item.string(p, &here) else { continue };
        match table.iter().find(|(known, _)| *known == name) {
            Some((_, value)) => out.push(*value),
            None => {
                let known: Vec<&str> = table.iter().map(|(name, _)| *name).collect();
                p.push(item.problem(
                    &here,
                    &format!("{} is not supported (supported: {}; {why})", quoted(name), known.join(", ")),
                ));
            }
        }
    }
    out
}

/// Reads the PEM files as the server will, blaming the key whose file is wrong.
fn check_files(
    p: &mut Vec<Problem>,
    cert: &(PathBuf, &Node),
    key: &(PathBuf, &Node),
    ca: Option<&(PathBuf, &Node)>,
) {
    let blame = |p: &mut Vec<Problem>, k: &str, n: &Node, e: pem::TlsError| {
        p.push(n.problem(&join(TLS, k), &e.to_string()))
    };
    let certs = pem::certificates(&cert.0).map_err(|e| blame(p, "cert_file", cert.1, e));
    let key_der = pem::private_key(&key.0).map_err(|e| blame(p, "key_file", key.1, e));
    if let Some((file, n)) = ca {
        if let Err(e) = pem::client_roots(file) {
            blame(p, "client_ca_file", n, e);
        }
    }
    let (Ok(certs), Ok(key_der)) = (certs, key_der) else { return };
    if let Err(e) = pem::certified_key(certs, key_der, &cert.0, &key.0) {
        if e.blames(&cert.0) {
            blame(p, "cert_file", cert.1, e);
        } else {
            blame(p, "key_file", key.1, e);
        }
    }
}

fn http(p: &mut Vec<Problem>, node: &Node) -> Vec<(String, String)> {
    const HTTP: &str = "http_server_config";
    let m = node.mapping(p, HTTP, &["http2", "headers"]);
    if let Some(n) = m.get("http2") {
        if n.boolean(p, &join(HTTP, "http2")) == Some(true) {
            p.push(n.problem(&join(HTTP, "http2"), "crossprobe serves HTTP/1.1 only (Prometheus scrapes over HTTP/1.1 by default): remove the key or set it to false"));
        }
    }
    let Some(headers) = m.get("headers") else { return Vec::new() };
    let path = join(HTTP, "headers");
    let known: Vec<&str> = HEADERS.iter().map(|(name, _)| *name).collect();
    let mut out = Vec::new();
    for (name, n) in headers.mapping(p, &path, &known) {
        let here = join(&path, name);
        let Some(value) = n.string(p, &here) else { continue };
        let allowed = HEADERS.iter().find(|(h, _)| *h == name).map_or(&[][..], |(_, values)| *values);
        if !allowed.is_empty() && !allowed.contains(&value) {
            p.push(n.problem(
                &here,
                &format!("{} is not allowed (one of: {})", quoted(value), allowed.join(", ")),
            ));
        } else if value.is_empty() || !value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
            p.push(n.problem(&here, "must be non-empty printable ASCII"));
        } else {
            out.push((name.to_owned(), value.to_owned()));
        }
    }
    out
}

fn users(p: &mut Vec<Problem>, node: &Node) -> BTreeMap<String, PasswordHash> {
    let mut out = BTreeMap::new();
    for (user, n) in node.mapping(p, "basic_auth_users", &[]) {
        let path = join("basic_auth_users", user);
        if user.is_empty() || user.contains(':') {
            // RFC 7617: the user-id cannot contain a colon; it separates user and password.
            p.push(n.problem(&path, "a user name must be non-empty and contain no ':'"));
            continue;
        }
        let Some(hash) = n.string(p, &path) else { continue };
        if !is_bcrypt(hash) {
            // The value is never quoted: it may be a password written where its hash belongs.
            p.push(n.problem(&path, "is not a bcrypt hash (\"$2y$\", \"$2b$\" or \"$2a$\", a cost from 04 to 31, then 53 characters of salt and hash); only bcrypt is supported, as in exporter-toolkit"));
            continue;
        }
        out.insert(user.to_owned(), PasswordHash(hash.to_owned()));
    }
    out
}

/// Whether `s` is a bcrypt hash in the modular crypt format: `$2y$10$` and 53 characters of
/// salt and hash. `$2x$` (a buggy historical variant) is refused, as Go's bcrypt does.
fn is_bcrypt(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 60
        && matches!(&b[..4], b"$2a$" | b"$2b$" | b"$2y$")
        && b[4..6].iter().all(u8::is_ascii_digit)
        && (4..=31).contains(&((b[4] - b'0') * 10 + (b[5] - b'0')))
        && b[6] == b'$'
        && b[7..].iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'/'))
}

#[cfg(test)]
mod tests;
