//! Checks of single values: durations, counts, ratios, names, addresses, credentials.

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::error::{quoted, Problems};
use super::raw::{RawKafkaTenant, Str};
use super::{Credentials, ProbeSettings, Secret};

/// Inclusive bounds of an integer setting.
#[derive(Clone, Copy)]
pub struct Limits {
    pub min: i64,
    pub max: i64,
}

/// Smallest and largest probe message: the payload header must fit, and probes must stay tiny.
pub const MESSAGE_SIZE: Limits = Limits { min: 64, max: 1024 * 1024 };

const INTERVAL: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(3600));

/// Resolves interval, timeout and message size over `base`, reporting problems under `path`.
/// Returns `None` when a value was invalid (the problem is recorded).
pub fn probe_settings(
    p: &mut Problems,
    path: &str,
    base: ProbeSettings,
    interval: Option<&Str>,
    timeout: Option<&Str>,
    message_size: Option<&Spanned<i64>>,
) -> Option<ProbeSettings> {
    let errors_before = p.len();
    let interval_v = duration_in(p, &format!("{path}.interval"), interval, base.interval, INTERVAL);
    let timeout_v = duration_in(
        p,
        &format!("{path}.timeout"),
        timeout,
        base.timeout,
        (Duration::from_millis(1), INTERVAL.1),
    );
    let size =
        count(p, &format!("{path}.message_size"), message_size, base.message_size as u32, MESSAGE_SIZE);
    if p.len() > errors_before {
        return None;
    }
    if timeout_v >= interval_v {
        let span = timeout.or(interval).map(|s| s.span());
        p.add(
            format!("{path}.timeout"),
            span,
            format!(
                "({}) must be less than interval ({})",
                humantime::format_duration(timeout_v),
                humantime::format_duration(interval_v)
            ),
        );
        return None;
    }
    Some(ProbeSettings { interval: interval_v, timeout: timeout_v, message_size: size as usize })
}

/// A humantime duration within `[min, max]`, or `default` when absent or invalid.
pub fn duration_in(
    p: &mut Problems,
    path: &str,
    value: Option<&Str>,
    default: Duration,
    (min, max): (Duration, Duration),
) -> Duration {
    let Some(s) = value else { return default };
    match humantime::parse_duration(s.get_ref()) {
        Ok(d) if d >= min && d <= max => d,
        Ok(_) => {
            p.add(
                path,
                Some(s.span()),
                format!(
                    "{} is out of range ({} to {})",
                    quoted(s.get_ref()),
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            );
            default
        }
        Err(e) => {
            p.add(
                path,
                Some(s.span()),
                format!("{} is not a duration ({e}; write e.g. \"500ms\" or \"5s\")", quoted(s.get_ref())),
            );
            default
        }
    }
}

/// An integer within `limits`, or `default` when absent or invalid.
pub fn count(
    p: &mut Problems,
    path: &str,
    value: Option<&Spanned<i64>>,
    default: u32,
    limits: Limits,
) -> u32 {
    let Some(v) = value else { return default };
    let n = *v.get_ref();
    if n < limits.min || n > limits.max {
        p.add(path, Some(v.span()), format!("{n} is out of range ({} to {})", limits.min, limits.max));
        return default;
    }
    n as u32
}

/// A ratio in (0, 1], or `default`.
pub fn ratio(p: &mut Problems, path: &str, value: Option<&Spanned<f64>>, default: f64) -> f64 {
    let Some(v) = value else { return default };
    let r = *v.get_ref();
    if !(r > 0.0 && r <= 1.0) {
        p.add(path, Some(v.span()), format!("{r} is not in (0, 1]"));
        return default;
    }
    r
}

/// Names of targets, tenants, zones and the instance: they become label values and parts of
/// queue names, so they are kept to a portable alphabet.
pub fn name(p: &mut Problems, path: &str, value: &Str) {
    let s = value.get_ref();
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        p.add(
            path,
            Some(value.span()),
            format!("{} is not a valid name (1 to 64 characters: letters, digits, '_', '-', '.', starting with a letter or digit)", quoted(s)),
        );
    }
}

/// A Kafka topic name as brokers accept it.
pub fn topic(p: &mut Problems, path: &str, value: &Str) {
    let s = value.get_ref();
    let ok = !s.is_empty()
        && s.len() <= 249
        && s != "."
        && s != ".."
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        p.add(
            path,
            Some(value.span()),
            format!(
                "{} is not a valid Kafka topic name (1 to 249 of letters, digits, '_', '-', '.')",
                quoted(s)
            ),
        );
    }
}

/// `host:port` with a non-zero port; hosts are names, IPv4 addresses or `[IPv6]`.
pub fn address(p: &mut Problems, path: &str, value: &Str) {
    let s = value.get_ref();
    let valid_host = |h: &str| {
        if let Some(inner) = h.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            inner.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        }
    };
    let ok = match s.rsplit_once(':') {
        Some((host, port)) => valid_host(host) && port.parse::<u16>().is_ok_and(|p| p != 0),
        None => false,
    };
    if !ok {
        p.add(
            path,
            Some(value.span()),
            format!("{} is not host:port (e.g. \"127.0.0.1:9092\" or \"[::1]:5672\")", quoted(s)),
        );
    }
}

/// User and password source of a tenant; the password must come from the environment or a file.
pub fn credentials(
    p: &mut Problems,
    path: &str,
    user: &Str,
    inline: Option<&Str>,
    env: Option<&Str>,
    file: Option<&Str>,
) -> Option<Credentials> {
    if user.get_ref().is_empty() {
        p.add(format!("{path}.user"), Some(user.span()), "must not be empty".into());
    }
    if let Some(inline) = inline {
        // The value itself is never quoted: it is a secret.
        p.add(
            format!("{path}.password"),
            Some(inline.span()),
            "passwords may not be written in the config; use password_env or password_file".into(),
        );
        return None;
    }
    let password = match (env, file) {
        (Some(var), None) => {
            let v = var.get_ref();
            let ok = v.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                p.add(
                    format!("{path}.password_env"),
                    Some(var.span()),
                    format!("{} is not an environment variable name", quoted(v)),
                );
            }
            Secret::Env(v.clone())
        }
        (None, Some(file)) => {
            if file.get_ref().is_empty() {
                p.add(format!("{path}.password_file"), Some(file.span()), "must not be empty".into());
            }
            Secret::File(PathBuf::from(file.get_ref()))
        }
        (Some(_), Some(file)) => {
            p.add(
                format!("{path}.password_file"),
                Some(file.span()),
                "give either password_env or password_file, not both".into(),
            );
            return None;
        }
        (None, None) => {
            p.add(
                path,
                Some(user.span()),
                format!("user {} needs password_env or password_file", quoted(user.get_ref())),
            );
            return None;
        }
    };
    Some(Credentials { user: user.get_ref().clone(), password })
}

/// A Kafka tenant without SASL user must not carry a password source either.
pub fn no_password_without_user(p: &mut Problems, path: &str, k: &RawKafkaTenant) {
    let given = [&k.password, &k.password_env, &k.password_file];
    if let Some(s) = given.into_iter().flatten().next() {
        p.add(
            format!("{path}.user"),
            Some(s.span()),
            "a password is given but no user; set user for SASL or remove the password".into(),
        );
    }
}
