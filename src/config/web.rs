//! `[daemon.web]`: the HTTP server's own limits (connections, timeouts) and whether
//! `POST /-/reload` answers.
//!
//! TLS and basic authentication are not here: they are read from the exporter-toolkit web
//! configuration file of `--web.config.file` ([`super::web_file`]), as Prometheus's exporters
//! read them, so one file format says it everywhere. The keys that said it here before are
//! retired: each is an error that says how to migrate.

use std::path::Path;
use std::time::Duration;

use super::error::{Problem, Problems};
use super::raw::{RawWeb, Str};
use super::values::{self, Limits};

/// `[daemon.web]`; the default (section absent) has the default limits and `POST /-/reload`
/// off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSettings {
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
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            enable_lifecycle: false,
        }
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
    retired(p, raw);
    WebSettings {
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

/// Where the retired TLS and basic-auth keys went, said at each one.
const RETIRED: &str = "is retired: TLS and basic auth are read from an exporter-toolkit web configuration file \
given as `crossprobe run --web.config.file FILE`, as Prometheus exporters do; \
`crossprobe web-config --config FILE` prints that file from these keys (README, \"Migrating from [daemon.web] TLS and basic auth\")";

fn retired(p: &mut Problems, raw: &RawWeb) {
    for (key, value) in [
        ("tls_cert_file", &raw.tls_cert_file),
        ("tls_key_file", &raw.tls_key_file),
        ("tls_client_ca_file", &raw.tls_client_ca_file),
        ("basic_auth_users", &raw.basic_auth_users),
    ] {
        if let Some(value) = value {
            p.add(format!("{PATH}.{key}"), Some(value.span()), RETIRED.into());
        }
    }
}

/// The exporter-toolkit web configuration that says what the retired `[daemon.web]` keys of a
/// TOML configuration said (`crossprobe web-config`); `None` when it has none of them. File
/// names become absolute: the TOML's were relative to the working directory, the YAML's are
/// relative to its own directory.
pub fn migrate_web(source: &str) -> Result<Option<String>, Vec<Problem>> {
    let raw = super::parse::parse(source)?;
    let Some(web) = raw.daemon.web else { return Ok(None) };
    let mut p = Problems::new(source);
    let mut out = String::new();
    let mut file = |key: &str, value: &toml::Spanned<toml::Value>| -> Option<String> {
        let Some(name) = value.get_ref().as_str() else {
            p.add(format!("{PATH}.{key}"), Some(value.span()), "is not a string".into());
            return None;
        };
        let absolute = std::path::absolute(Path::new(name)).unwrap_or_else(|_| name.into());
        Some(yaml_string(&absolute.display().to_string()))
    };
    let cert = web.tls_cert_file.as_ref().and_then(|v| file("tls_cert_file", v));
    let key = web.tls_key_file.as_ref().and_then(|v| file("tls_key_file", v));
    let ca = web.tls_client_ca_file.as_ref().and_then(|v| file("tls_client_ca_file", v));
    if cert.is_some() || key.is_some() || ca.is_some() {
        out.push_str("tls_server_config:\n");
        for (k, v) in [("cert_file", &cert), ("key_file", &key)] {
            if let Some(v) = v {
                out.push_str(&format!("  {k}: {v}\n"));
            }
        }
        if let Some(ca) = ca {
            // The old key required and verified client certificates.
            out.push_str(&format!(
                "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {ca}\n"
            ));
        }
    }
    if let Some(users) = &web.basic_auth_users {
        let Some(table) = users.get_ref().as_table() else {
            p.add(format!("{PATH}.basic_auth_users"), Some(users.span()), "is not a table".into());
            return Err(p.into_vec());
        };
        out.push_str("basic_auth_users:\n");
        for (user, hash) in table {
            match hash.as_str() {
                Some(hash) => out.push_str(&format!("  {}: {}\n", yaml_string(user), yaml_string(hash))),
                None => p.add(
                    format!("{PATH}.basic_auth_users"),
                    Some(users.span()),
                    "a value is not a string".into(),
                ),
            }
        }
    }
    if !p.is_empty() {
        return Err(p.into_vec());
    }
    Ok((!out.is_empty()).then_some(out))
}

/// `s` as a YAML double-quoted string (JSON's escapes are YAML's).
fn yaml_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retired_keys_become_an_equivalent_web_configuration() {
        let hash = "$2y$04$WmFz0yq1XvYhRmOqBCcJGuX2fBVB6K5Byd0rR4mNC3gPjmW0lwN0S";
        let toml = format!(
            "[daemon.web]\ntls_cert_file = \"/etc/tls/tls.crt\"\ntls_key_file = \"/etc/tls/tls.key\"\n\
             tls_client_ca_file = \"/etc/tls/ca.crt\"\nbasic_auth_users = {{ prometheus = \"{hash}\" }}\nmax_connections = 9\n"
        );
        let yaml = migrate_web(&toml).unwrap().unwrap();
        assert_eq!(
            yaml,
            format!(
                "tls_server_config:\n  cert_file: \"/etc/tls/tls.crt\"\n  key_file: \"/etc/tls/tls.key\"\n\
                 \x20 client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: \"/etc/tls/ca.crt\"\n\
                 basic_auth_users:\n  \"prometheus\": \"{hash}\"\n"
            )
        );
        // What it prints is a web configuration file (the PEM files are not there to check).
        let users = crate::config::WebConfig::parse(
            &yaml.split("basic_auth_users").nth(1).map(|u| format!("basic_auth_users{u}")).unwrap(),
            Path::new("."),
        );
        assert_eq!(users.unwrap().basic_auth_users.len(), 1);
        assert_eq!(migrate_web("[daemon.web]\nmax_connections = 9\n").unwrap(), None);
        assert_eq!(migrate_web("[daemon]\nlisten = \"127.0.0.1:1\"\n").unwrap(), None);
    }
}
