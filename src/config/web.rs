//! `[daemon.web]`: TLS and HTTP basic authentication of the daemon's own endpoints, modelled on
//! the web configuration of Prometheus's exporter-toolkit (`tls_server_config` and
//! `basic_auth_users`), with the same meaning for the same keys; and the server's own limits
//! (connections, timeouts) and whether `POST /-/reload` answers.
//!
//! The files are read and parsed at check time, so `crossprobe check` catches a missing file, a
//! key that is not PEM or a key that does not belong to the certificate before a deployment
//! does. Password hashes are never quoted in messages: a hash is an offline guessing target.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::error::{key, Problems};
use super::raw::{RawWeb, Str};
use super::values::{self, Limits};
use crate::pem;

/// `[daemon.web]`; the default (section absent) is plain HTTP without authentication, with the
/// default limits and `POST /-/reload` off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSettings {
    /// Serve HTTPS instead of HTTP.
    pub tls: Option<TlsFiles>,
    /// User name to bcrypt hash; empty means no authentication.
    pub basic_auth_users: BTreeMap<String, PasswordHash>,
    /// Connections open at once; one more is closed as soon as it is accepted, so a flood of
    /// idle connections cannot take the file descriptors the broker clients need.
    pub max_connections: usize,
    /// A new connection gets this long for its TLS handshake and first request head; a request
    /// head, once its first byte arrived, must be complete within it.
    pub header_read_timeout: Duration,
    /// A kept-alive connection waiting for its next request, or a response that the client does
    /// not read, is closed after this long without progress.
    pub idle_timeout: Duration,
    /// Whether `POST /-/reload` answers, like Prometheus's `--web.enable-lifecycle`.
    pub enable_lifecycle: bool,
}

/// Defaults of the limits, in `config/crossprobe.toml` too.
pub const MAX_CONNECTIONS: usize = 256;
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for WebSettings {
    fn default() -> Self {
        WebSettings {
            tls: None,
            basic_auth_users: BTreeMap::new(),
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            enable_lifecycle: false,
        }
    }
}

/// PEM files of the HTTPS server, re-read when they change (see `web::tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server certificate, followed by any intermediates.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by one of these CAs.
    pub client_ca_file: Option<PathBuf>,
}

/// A bcrypt hash of a password. Not the password, but a target for offline guessing, so it is
/// never printed: `Debug` shows only that it is there.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// A hash as written in the config; validation admits only bcrypt.
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

/// Checks `[daemon.web]`, recording every problem.
pub(super) fn web(p: &mut Problems, raw: Option<&RawWeb>) -> WebSettings {
    let Some(raw) = raw else { return WebSettings::default() };
    let max_connections = values::count(
        p,
        &format!("{PATH}.max_connections"),
        raw.max_connections.as_ref(),
        MAX_CONNECTIONS as u32,
        Limits { min: 1, max: 65_536 },
    ) as usize;
    let timeout = |p: &mut Problems, key: &str, value: Option<&Str>, default: Duration| {
        let range = (Duration::from_millis(100), Duration::from_secs(3600));
        values::duration_in(p, &format!("{PATH}.{key}"), value, default, range)
    };
    WebSettings {
        tls: tls_files(p, raw),
        basic_auth_users: users(p, raw),
        max_connections,
        header_read_timeout: timeout(
            p,
            "header_read_timeout",
            raw.header_read_timeout.as_ref(),
            HEADER_READ_TIMEOUT,
        ),
        idle_timeout: timeout(p, "idle_timeout", raw.idle_timeout.as_ref(), IDLE_TIMEOUT),
        enable_lifecycle: raw.enable_lifecycle.unwrap_or(false),
    }
}

const PATH: &str = "daemon.web";

/// The TLS files, each read and parsed as the server will. Relative names are relative to the
/// working directory, as the daemon's own.
fn tls_files(p: &mut Problems, raw: &RawWeb) -> Option<TlsFiles> {
    let (cert, key) = match (&raw.tls_cert_file, &raw.tls_key_file) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) => {
            if let Some(ca) = &raw.tls_client_ca_file {
                p.add(
                    format!("{PATH}.tls_client_ca_file"),
                    Some(ca.span()),
                    "only applies with tls_cert_file and tls_key_file".into(),
                );
            }
            return None;
        }
        (Some(given), None) | (None, Some(given)) => {
            let missing = if raw.tls_key_file.is_none() { "tls_key_file" } else { "tls_cert_file" };
            p.add(
                PATH,
                Some(given.span()),
                format!("{missing} is missing: give both tls_cert_file and tls_key_file, or neither"),
            );
            return None;
        }
    };
    let (cert_file, key_file) = (PathBuf::from(cert.get_ref()), PathBuf::from(key.get_ref()));
    let client_ca_file = raw.tls_client_ca_file.as_ref().map(|ca| PathBuf::from(ca.get_ref()));
    let certs = pem::certificates(&cert_file).map_err(|e| blame(p, "tls_cert_file", cert, e));
    let key_der = pem::private_key(&key_file).map_err(|e| blame(p, "tls_key_file", key, e));
    if let (Some(ca), Some(path)) = (&raw.tls_client_ca_file, &client_ca_file) {
        if let Err(e) = pem::client_roots(path) {
            blame(p, "tls_client_ca_file", ca, e);
        }
    }
    let (Ok(certs), Ok(key_der)) = (certs, key_der) else { return None };
    if let Err(e) = pem::certified_key(certs, key_der, &cert_file, &key_file) {
        if e.blames(&cert_file) {
            blame(p, "tls_cert_file", cert, e);
        } else {
            blame(p, "tls_key_file", key, e);
        }
    }
    Some(TlsFiles { cert_file, key_file, client_ca_file })
}

fn blame(p: &mut Problems, key: &str, value: &Str, e: pem::TlsError) {
    p.add(format!("{PATH}.{key}"), Some(value.span()), e.to_string());
}

fn users(p: &mut Problems, raw: &RawWeb) -> BTreeMap<String, PasswordHash> {
    let Some(users) = &raw.basic_auth_users else { return BTreeMap::new() };
    let mut out = BTreeMap::new();
    for (user, hash) in users {
        let path = format!("{PATH}.basic_auth_users.{}", key(user));
        if user.is_empty() || user.contains(':') {
            // RFC 7617: the user-id cannot contain a colon; it separates user and password.
            p.add(&path, Some(hash.span()), "a user name must be non-empty and contain no ':'".into());
            continue;
        }
        if !is_bcrypt(hash.get_ref()) {
            // The value is never quoted: it may be a password written where its hash belongs.
            p.add(
                &path,
                Some(hash.span()),
                "is not a bcrypt hash (\"$2y$\", \"$2b$\" or \"$2a$\", a cost from 04 to 31, then 53 characters of salt and hash); only bcrypt is supported, as in Prometheus's web config".into(),
            );
            continue;
        }
        out.insert(user.clone(), PasswordHash(hash.get_ref().clone()));
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
mod tests {
    use super::*;

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

    #[test]
    fn hashes_never_show_in_debug_output() {
        let settings = WebSettings {
            basic_auth_users: BTreeMap::from([("alice".into(), PasswordHash("$2y$04$secret".into()))]),
            ..WebSettings::default()
        };
        let shown = format!("{settings:?}");
        assert!(shown.contains("alice") && !shown.contains("$2y$"), "{shown}");
    }

    #[test]
    fn user_names_are_quoted_only_when_needed() {
        assert_eq!(key("alice"), "alice");
        assert_eq!(key("bob:x"), "\"bob:x\"");
        assert_eq!(key(""), "\"\"");
    }
}
