//! Checks a parsed configuration and turns it into a [`ValidatedConfig`].
//!
//! Every check records its problem and goes on, so one run reports every mistake in the file.
//! Scalar checks (durations, sizes, addresses, names) live in `values`; this file walks the
//! sections and ties them together; `plan` expands and checks the matrix.

use std::collections::BTreeMap;
use std::time::Duration;

use super::error::{key, quoted, Problem, Problems};
use super::raw::{RawBrownout, RawConfig, RawCorrelator, RawDaemon, RawProbe, RawTenant};
use super::values::{self, Limits};
use super::*;

pub(super) fn validate(source: &str, secrets: Secrets) -> Result<ValidatedConfig, Vec<Problem>> {
    let raw: RawConfig = super::parse::parse(source)?;
    let mut p = Problems::new(source);
    let mut daemon = daemon(&mut p, &raw.daemon);
    let defaults = probe_defaults(&mut p, &raw.probe);
    let tenants = tenants(&mut p, &raw.tenants);
    let targets = super::targets::targets(&mut p, &raw.targets, defaults);
    let mut correlator = correlator(&mut p, &raw.correlator);
    let matrix = super::expand::expand(&mut p, &raw, &targets, &tenants);
    let mut warnings = Vec::new();
    if let Some(matrix) = &matrix {
        correlator.quorum = quorum(&mut p, &raw.correlator, matrix, &mut warnings);
        daemon.latency_by = latency_by(&mut p, &raw.daemon, matrix);
        // The environment is read only for a file without mistakes: its problems are about
        // this machine, not about the file.
        if p.is_empty() && secrets == Secrets::Read {
            missing_secrets(&mut p, &raw, &targets, &tenants, matrix);
        }
    }
    match (p.is_empty(), matrix) {
        (true, Some(matrix)) => Ok(ValidatedConfig {
            daemon,
            targets: targets.into_iter().map(|(t, _)| t).collect(),
            tenants,
            correlator,
            matrix,
            warnings,
        }),
        _ => Err(p.into_vec()),
    }
}

/// Reads every password the matrix's cells use (Kafka ones on SASL targets, every AMQP one),
/// and the management API's of discovered AMQP targets, once per source, and reports each that cannot be read, by variable or file name, at the key
/// that names it. Values are read and dropped, never shown.
fn missing_secrets(
    p: &mut Problems,
    raw: &RawConfig,
    targets: &[(Target, usize)],
    tenants: &[Tenant],
    matrix: &Matrix,
) {
    let mut seen: Vec<&Secret> = Vec::new();
    for cell in matrix.cells() {
        let (target, _) = &targets[cell.target];
        let (tenant, rt) = (&tenants[cell.tenant], &raw.tenants[cell.tenant]);
        let (credentials, protocol, keys) = match &target.endpoint {
            Endpoint::Kafka(k)
                if matches!(k.security_protocol, KafkaSecurity::SaslPlaintext | KafkaSecurity::SaslSsl) =>
            {
                let keys = rt.kafka.as_ref().map(|k| (&k.password_env, &k.password_file));
                (tenant.kafka.as_ref().and_then(|k| k.credentials.as_ref()), "kafka", keys)
            }
            Endpoint::Kafka(_) => continue,
            Endpoint::Amqp(_) => {
                let keys = rt.amqp.as_ref().map(|a| (&a.password_env, &a.password_file));
                (tenant.amqp.as_ref().map(|a| &a.credentials), "amqp", keys)
            }
        };
        let (Some(c), Some((env, file))) = (credentials, keys) else { continue };
        if seen.contains(&&c.password) {
            continue;
        }
        seen.push(&c.password);
        if let Err(reason) = c.password.resolve() {
            let (key, span) = match (env, file) {
                (Some(v), _) => ("password_env", Some(v.span())),
                (None, Some(f)) => ("password_file", Some(f.span())),
                (None, None) => ("user", None),
            };
            let path = format!("tenants[{}] {}.{protocol}.{key}", cell.tenant, quoted(&tenant.name));
            p.add(path, span, reason);
        }
    }
    // The management API's passwords of discovered AMQP targets.
    for (t, ri) in targets {
        let Some(m) = t.discovery.as_ref().and_then(|d| d.management.as_ref()) else { continue };
        let Err(reason) = m.credentials.password.resolve() else { continue };
        let d = raw.targets[*ri].discovery.as_ref().map(|d| d.get_ref());
        let (key, span) = match d.map(|d| (&d.password_env, &d.password_file)) {
            Some((Some(v), _)) => ("password_env", Some(v.span())),
            Some((None, Some(f))) => ("password_file", Some(f.span())),
            _ => ("user", None),
        };
        p.add(format!("targets[{ri}] {}.discovery.{key}", quoted(&t.name)), span, reason);
    }
}

fn daemon(p: &mut Problems, raw: &RawDaemon) -> Daemon {
    let listen = match &raw.listen {
        None => SocketAddr::from(([127, 0, 0, 1], 9464)),
        Some(s) => s.get_ref().parse().unwrap_or_else(|_| {
            p.add(
                "daemon.listen",
                Some(s.span()),
                format!("{} is not an IP address and port (e.g. \"127.0.0.1:9464\")", quoted(s.get_ref())),
            );
            SocketAddr::from(([127, 0, 0, 1], 9464))
        }),
    };
    let instance = match &raw.instance {
        Some(s) => {
            values::name(p, "daemon.instance", s);
            s.get_ref().clone()
        }
        None => default_instance(),
    };
    let log_format = match raw.log_format.as_ref().map(|s| (s.get_ref().as_str(), s)) {
        None | Some(("text", _)) => LogFormat::Text,
        Some(("json", _)) => LogFormat::Json,
        Some((other, s)) => {
            p.add(
                "daemon.log_format",
                Some(s.span()),
                format!("unknown log format {} (expected \"text\" or \"json\")", quoted(other)),
            );
            LogFormat::Text
        }
    };
    let vantage = raw.vantage.as_ref().map(|s| {
        values::name(p, "daemon.vantage", s);
        s.get_ref().clone()
    });
    let web = super::web::web(p, raw.web.as_ref());
    Daemon { listen, instance, log_format, vantage, latency_by: Vec::new(), web }
}

/// Dimensions latency series are kept by unless `[daemon] latency_by` says otherwise: the ones
/// a latency problem is localised by (a zone's network, a protocol, one broker), and few enough
/// values that they cost tens of series, not one per cell.
const DEFAULT_LATENCY_BY: [&str; 3] = ["az", "protocol", "broker"];

/// `[daemon] latency_by`: dimensions of the matrix, each once; by default those of
/// [`DEFAULT_LATENCY_BY`] the matrix has.
fn latency_by(p: &mut Problems, raw: &RawDaemon, matrix: &Matrix) -> Vec<String> {
    let Some(list) = &raw.latency_by else {
        return (DEFAULT_LATENCY_BY.iter())
            .filter(|d| matrix.dimension_index(d).is_some())
            .map(|d| d.to_string())
            .collect();
    };
    let mut out: Vec<String> = Vec::new();
    for (i, d) in list.get_ref().iter().enumerate() {
        let name = d.get_ref();
        let problem = if matrix.dimension_index(name).is_none() {
            format!("{} is not a dimension of the matrix ({})", quoted(name), matrix.dimensions().join(", "))
        } else if out.contains(name) {
            format!("{} is listed twice", quoted(name))
        } else {
            out.push(name.clone());
            continue;
        };
        p.add(format!("daemon.latency_by[{i}]"), Some(d.span()), problem);
    }
    out
}

/// The host name, so replicas on different hosts differ without configuration.
fn default_instance() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "crossprobe".to_owned())
}

/// The `[probe]` defaults that targets inherit.
pub(super) const PROBE_DEFAULTS: ProbeSettings = ProbeSettings {
    interval: Duration::from_secs(1),
    timeout: Duration::from_millis(500),
    message_size: 256,
};

fn probe_defaults(p: &mut Problems, raw: &RawProbe) -> ProbeSettings {
    let settings = values::probe_settings(
        p,
        "probe",
        PROBE_DEFAULTS,
        raw.interval.as_ref(),
        raw.timeout.as_ref(),
        raw.message_size.as_ref(),
    );
    settings.unwrap_or(PROBE_DEFAULTS)
}

fn tenants(p: &mut Problems, raw: &[RawTenant]) -> Vec<Tenant> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, t) in raw.iter().enumerate() {
        let path = format!("tenants[{i}] {}", quoted(t.name.get_ref()));
        values::name(p, &format!("tenants[{i}].name"), &t.name);
        if let Some(first) = seen.insert(t.name.get_ref(), i) {
            p.add(
                format!("tenants[{i}].name"),
                Some(t.name.span()),
                format!("duplicate name {} (also tenants[{first}])", quoted(t.name.get_ref())),
            );
        }
        let kafka = t.kafka.as_ref().map(|k| {
            let path = format!("{path}.kafka");
            values::topic(p, &format!("{path}.topic"), &k.topic);
            let credentials = match &k.user {
                None => {
                    values::no_password_without_user(p, &path, k);
                    None
                }
                Some(user) => values::credentials(
                    p,
                    &path,
                    user,
                    k.password.as_ref(),
                    k.password_env.as_ref(),
                    k.password_file.as_ref(),
                ),
            };
            KafkaTenant { topic: k.topic.get_ref().clone(), credentials }
        });
        let amqp = t.amqp.as_ref().and_then(|a| {
            let path = format!("{path}.amqp");
            if a.vhost.get_ref().is_empty() {
                p.add(format!("{path}.vhost"), Some(a.vhost.span()), "must not be empty".into());
            }
            let credentials = values::credentials(
                p,
                &path,
                &a.user,
                a.password.as_ref(),
                a.password_env.as_ref(),
                a.password_file.as_ref(),
            )?;
            Some(AmqpTenant { vhost: a.vhost.get_ref().clone(), credentials })
        });
        if t.kafka.is_none() && t.amqp.is_none() {
            p.add(
                path,
                Some(t.name.span()),
                "has neither [tenants.kafka] nor [tenants.amqp] settings, so it can never be probed".into(),
            );
        }
        out.push(Tenant { name: t.name.get_ref().clone(), kafka, amqp });
    }
    out
}

fn correlator(p: &mut Problems, raw: &RawCorrelator) -> CorrelatorSettings {
    let d = CorrelatorSettings::default();
    let count = |p: &mut Problems, key: &str, v: &Option<toml::Spanned<i64>>, def: u32, max: i64| {
        values::count(p, &format!("correlator.{key}"), v.as_ref(), def, Limits { min: 1, max })
    };
    let tick = values::duration_in(
        p,
        "correlator.tick",
        raw.tick.as_ref(),
        d.tick,
        (Duration::from_millis(100), Duration::from_secs(60)),
    );
    let window = count(p, "window", &raw.window, d.window, 64);
    let failures_to_fail = count(p, "failures_to_fail", &raw.failures_to_fail, d.failures_to_fail, 64);
    let successes_to_recover =
        count(p, "successes_to_recover", &raw.successes_to_recover, d.successes_to_recover, 64);
    let min_failing_cells =
        count(p, "min_failing_cells", &raw.min_failing_cells, d.min_failing_cells, 1_000_000);
    let enter_ticks = count(p, "enter_ticks", &raw.enter_ticks, d.enter_ticks, 3600);
    let exit_ticks = count(p, "exit_ticks", &raw.exit_ticks, d.exit_ticks, 3600);
    let flap_window_ticks =
        count(p, "flap_window_ticks", &raw.flap_window_ticks, d.flap_window_ticks, 86_400);
    let flap_changes = count(p, "flap_changes", &raw.flap_changes, d.flap_changes, 1000);
    let enter_ratio = values::ratio(p, "correlator.enter_ratio", raw.enter_ratio.as_ref(), d.enter_ratio);
    let exit_ratio = values::ratio(p, "correlator.exit_ratio", raw.exit_ratio.as_ref(), d.exit_ratio);
    let onset_rounds = count(p, "onset_rounds", &raw.onset_rounds, d.onset_rounds, 64);
    let blip_rounds = values::count(
        p,
        "correlator.blip_rounds",
        raw.blip_rounds.as_ref(),
        d.blip_rounds,
        Limits { min: 0, max: 64 },
    );
    let significance =
        open_unit(p, "correlator.significance", raw.significance.as_ref(), d.significance, 0.01);
    let background_floor =
        open_unit(p, "correlator.background_floor", raw.background_floor.as_ref(), d.background_floor, 0.5);
    if blip_rounds + 2 > failures_to_fail + enter_ticks {
        let span = raw.blip_rounds.as_ref().map(|s| s.span());
        p.add(
            "correlator.blip_rounds",
            span,
            format!(
                "({blip_rounds}) must not exceed failures_to_fail + enter_ticks - 2 ({}): a failure that long already confirms a scope and the quorum the ordinary way",
                (failures_to_fail + enter_ticks).saturating_sub(2)
            ),
        );
    }

    if failures_to_fail > window {
        let span = raw.failures_to_fail.as_ref().or(raw.window.as_ref()).map(|s| s.span());
        p.add(
            "correlator.failures_to_fail",
            span,
            format!("({failures_to_fail}) must not exceed window ({window})"),
        );
    }
    if exit_ratio >= enter_ratio {
        let span = raw.exit_ratio.as_ref().or(raw.enter_ratio.as_ref()).map(|s| s.span());
        p.add(
            "correlator.exit_ratio",
            span,
            format!("({exit_ratio}) must be below enter_ratio ({enter_ratio}) so that leaving is easier than entering"),
        );
    }
    if exit_ticks < enter_ticks {
        let span = raw.exit_ticks.as_ref().or(raw.enter_ticks.as_ref()).map(|s| s.span());
        p.add(
            "correlator.exit_ticks",
            span,
            format!("({exit_ticks}) must not be below enter_ticks ({enter_ticks}): a scope must stay clean longer than it takes to enter"),
        );
    }
    if flap_changes < 2 {
        p.add(
            "correlator.flap_changes",
            raw.flap_changes.as_ref().map(|s| s.span()),
            format!("({flap_changes}) must be at least 2"),
        );
    }
    CorrelatorSettings {
        tick,
        window,
        failures_to_fail,
        successes_to_recover,
        min_failing_cells,
        enter_ratio,
        exit_ratio,
        enter_ticks,
        exit_ticks,
        flap_window_ticks,
        flap_changes,
        onset_rounds,
        blip_rounds,
        significance,
        background_floor,
        quorum: d.quorum,
        brownout: brownout(p, &raw.brownout),
    }
}

/// `[correlator.brownout]`.
fn brownout(p: &mut Problems, raw: &RawBrownout) -> BrownoutSettings {
    let d = BrownoutSettings::default();
    let path = |key: &str| format!("correlator.brownout.{key}");
    let count = |p: &mut Problems, key: &str, v: &Option<toml::Spanned<i64>>, def: u32, max: i64| {
        values::count(p, &path(key), v.as_ref(), def, Limits { min: 1, max })
    };
    let baseline_half_life = values::duration_in(
        p,
        &path("baseline_half_life"),
        raw.baseline_half_life.as_ref(),
        d.baseline_half_life,
        (Duration::from_secs(60), Duration::from_secs(30 * 86_400)),
    );
    let slow_margin = values::duration_in(
        p,
        &path("slow_margin"),
        raw.slow_margin.as_ref(),
        d.slow_margin,
        (Duration::ZERO, Duration::from_secs(60)),
    );
    let slow_factor = match &raw.slow_factor {
        Some(v) if !(*v.get_ref() >= 1.0 && *v.get_ref() <= 1000.0) => {
            p.add(path("slow_factor"), Some(v.span()), format!("{} is not in [1, 1000]", v.get_ref()));
            d.slow_factor
        }
        Some(v) => *v.get_ref(),
        None => d.slow_factor,
    };
    BrownoutSettings {
        baseline_half_life,
        learning_probes: count(p, "learning_probes", &raw.learning_probes, d.learning_probes, 1_000_000),
        slow_factor,
        slow_margin,
        window: count(p, "window", &raw.window, d.window, 64),
        significance: open_unit(p, &path("significance"), raw.significance.as_ref(), d.significance, 0.01),
        slow_floor: open_unit(p, &path("slow_floor"), raw.slow_floor.as_ref(), d.slow_floor, 0.5),
        successes_to_recover: count(
            p,
            "successes_to_recover",
            &raw.successes_to_recover,
            d.successes_to_recover,
            64,
        ),
    }
}

/// A probability in (0, `max`]; the default when absent or out of range (with a problem).
fn open_unit(
    p: &mut Problems,
    path: &str,
    value: Option<&toml::Spanned<f64>>,
    default: f64,
    max: f64,
) -> f64 {
    let Some(v) = value else { return default };
    let r = *v.get_ref();
    if !(r > 0.0 && r <= max) {
        p.add(path, Some(v.span()), format!("{r} is not in (0, {max}]"));
        return default;
    }
    r
}

/// `[correlator.quorum]`, checked against the dimensions and values the matrix really has. The
/// default quorum is checked too: one the matrix can never meet (a single tenant against the
/// default of two) is a warning, since nothing could ever page.
fn quorum(
    p: &mut Problems,
    raw: &RawCorrelator,
    matrix: &Matrix,
    warnings: &mut Vec<Problem>,
) -> BTreeMap<String, Quorum> {
    let Some(raw) = &raw.quorum else {
        let quorum = CorrelatorSettings::default().quorum;
        let available = |dim: &str| matrix.dimension_index(dim).map_or(0, |d| matrix.values_of(d).len());
        let reachable: Vec<String> = quorum
            .iter()
            .map(|(dim, q)| format!("{dim} = {}", q.required(available(dim)).min(available(dim)).max(1)))
            .collect();
        for (dim, q) in &quorum {
            let (required, available) = (q.required(available(dim)), available(dim));
            if required > available {
                warnings.push(Problem::new(
                    &format!("correlator.quorum.{}", key(dim)),
                    &format!(
                        "the default quorum requires {required} values of {dim} but the matrix has {available}, so an outage can never be confirmed and nothing pages; write [correlator.quorum] {} to page within what the matrix has",
                        reachable.join(", ")
                    ),
                    None,
                ));
            }
        }
        return quorum;
    };
    let mut out = BTreeMap::new();
    for (dim, value) in raw {
        let path = format!("correlator.quorum.{}", key(dim));
        let span = Some(value.span());
        let Some(d) = matrix.dimension_index(dim) else {
            p.add(
                path,
                span,
                format!("unknown dimension {} (dimensions: {})", quoted(dim), matrix.dimensions().join(", ")),
            );
            continue;
        };
        let q = match value.get_ref() {
            toml::Value::Integer(n) if *n >= 1 && *n <= u32::MAX as i64 => Quorum::Count(*n as u32),
            toml::Value::Float(f) if *f > 0.0 && *f <= 1.0 => Quorum::Fraction(*f),
            other => {
                p.add(
                    path,
                    span,
                    format!("{other} is neither a count of at least 1 nor a fraction in (0, 1]"),
                );
                continue;
            }
        };
        let available = matrix.values_of(d).len();
        if q.required(available) > available {
            p.add(
                path,
                span,
                format!(
                    "requires {} values of {dim} but the matrix has {available}, so an outage could never be confirmed",
                    q.required(available)
                ),
            );
        }
        out.insert(dim.clone(), q);
    }
    out
}
