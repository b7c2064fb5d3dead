//! The `crossprobe` command: parses arguments, calls the library, maps the result to an exit
//! code (0 ok, 64 bad configuration or usage, 1 runtime failure).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use crossprobe::config::{ConfigSource, LogFormat, Secrets, ValidatedConfig, WebConfig};
use crossprobe::daemon::RunOptions;
use crossprobe::offline::prometheus::{PrometheusError, Query};
use crossprobe::offline::recording::Retention;
use crossprobe::offline::replay::{self, Input, Source, Window};
use crossprobe::offline::summary::{self, Summary};
use crossprobe::shard::Shard;

const EXIT_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    name = "crossprobe",
    version,
    about = "Round-trip prober for Kafka and RabbitMQ with cross-dimension outage correlation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration, read the passwords it names, and print the expanded probe
    /// matrix.
    Check {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Do not read the password variables and files the configuration names (to check a
        /// file where the deployment's secrets are not, such as CI).
        #[arg(long)]
        skip_secrets: bool,
        #[command(flatten)]
        web: WebConfigArg,
        #[command(flatten)]
        shard: ShardArg,
    },
    /// Run one probe in every cell and print the outcomes; exit 0 only if all are ok.
    Once {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        #[command(flatten)]
        shard: ShardArg,
    },
    /// Run the daemon until SIGINT or SIGTERM.
    Run {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Also append every probe outcome to FILE as JSON lines, the input format of `replay`.
        /// FILE rotates to FILE.<time of its first record>.gz by size or age; rotated files are
        /// deleted after --record-keep.
        #[arg(long, value_name = "FILE")]
        record: Option<PathBuf>,
        /// Rotate the record file when it reaches this many bytes (e.g. "64MiB").
        #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
        record_max_size: u64,
        /// Rotate the record file when its first record is this old (e.g. "1h").
        #[arg(long, value_name = "AGE", default_value = "1h", value_parser = parse_interval)]
        record_max_age: std::time::Duration,
        /// Delete a rotated record file once its newest record is this old (e.g. "8days").
        #[arg(long, value_name = "AGE", default_value = "8days", value_parser = parse_interval)]
        record_keep: std::time::Duration,
        /// Read the configuration file this often (e.g. "5s") and reload it, as SIGHUP does, when
        /// its content changed and then stayed the same for one interval. Follows symlink swaps
        /// such as Kubernetes ConfigMap updates.
        #[arg(long, value_name = "INTERVAL", value_parser = parse_interval)]
        watch_config: Option<std::time::Duration>,
        #[command(flatten)]
        web: WebConfigArg,
        #[command(flatten)]
        shard: ShardArg,
    },
    /// Print the exporter-toolkit web configuration file (for --web.config.file) that says what
    /// the retired TLS and basic-auth keys of [daemon.web] in FILE said.
    WebConfig {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Feed recorded outcomes (JSON lines) through the correlator and print each verdict change.
    Replay {
        /// A record file (`.gz` is decompressed) or a directory holding one rotated recording.
        #[arg(
            long,
            short,
            value_name = "FILE|DIR",
            required_unless_present = "prometheus",
            conflicts_with = "prometheus"
        )]
        input: Option<PathBuf>,
        /// Rebuild the outcomes from the crossprobe_probes_total counters in this Prometheus
        /// (http://host:port) between --from and --to, instead of a recording.
        #[arg(long, value_name = "URL", requires_all = ["from", "to"])]
        prometheus: Option<String>,
        /// With --prometheus: the resolution of the counters; set it to the scrape interval.
        #[arg(long, value_name = "INTERVAL", default_value = "15s", value_parser = parse_interval, requires = "prometheus")]
        step: std::time::Duration,
        /// With --prometheus: label matchers that pick one daemon's series, e.g.
        /// '{job="crossprobe"}'.
        #[arg(long, value_name = "MATCHERS", default_value = "", requires = "prometheus")]
        selector: String,
        /// Replay only records at or after this wall-clock time (RFC 3339, UTC:
        /// "2026-11-30T22:15:00Z").
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        from: Option<u64>,
        /// Replay only records before this wall-clock time (RFC 3339, UTC).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        to: Option<u64>,
        /// Use this configuration's matrix and [correlator] settings instead of the input's
        /// cells and the defaults.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the incidents (scopes, levels, times, time to detect, pages and tickets) and
        /// the totals instead of the timeline.
        #[arg(long)]
        summary: bool,
        /// Replay with both configurations and print what changes from A to B: pages,
        /// tickets, time to detect, scopes.
        #[arg(long, num_args = 2, value_names = ["A.toml", "B.toml"], conflicts_with_all = ["config", "summary"])]
        compare: Option<Vec<PathBuf>>,
    },
    /// Print the scopes that explain one snapshot of cells (CSV), strongest first.
    Localize {
        #[arg(long, short, value_name = "FILE.csv")]
        input: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

/// `--web.config.file FILE`, shared by `check` and `run`.
#[derive(Clone, clap::Args)]
struct WebConfigArg {
    /// An exporter-toolkit web configuration file (YAML, as Prometheus exporters take it): TLS,
    /// basic auth and response headers of every endpoint, re-read when it changes. Without
    /// it the daemon serves plain HTTP without authentication.
    #[arg(long = "web.config.file", value_name = "FILE")]
    web_config_file: Option<PathBuf>,
}

impl WebConfigArg {
    /// Checks the file, printing every problem; a bad file is a usage error.
    fn check(&self) -> Result<(), ExitCode> {
        let Some(path) = &self.web_config_file else { return Ok(()) };
        WebConfig::load(path).map(|_| ()).map_err(|e| {
            eprintln!("{e}");
            ExitCode::from(EXIT_USAGE)
        })
    }
}

/// `--shard I/N [--shard-by DIM]`, shared by `check`, `once` and `run`.
#[derive(Clone, clap::Args)]
struct ShardArg {
    /// Probe only shard I of N (0 <= I < N): the cells whose key is I modulo N, so N replicas
    /// with the same config probe every cell exactly once.
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
    /// Keep each value of this dimension (e.g. tenant) whole on one shard: the key is the
    /// value's hash, not the cell's, so each replica's correlator sees whole scopes.
    #[arg(long, value_name = "DIM", requires = "shard")]
    shard_by: Option<String>,
}

impl ShardArg {
    fn shard(&self) -> Option<Shard> {
        self.shard.clone().map(|s| s.by(self.shard_by.clone()))
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    /// One scope per line: `az=b&tenant=acme`, `*` for everything.
    Text,
    /// The scopes with their evidence.
    Json,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return if usage { ExitCode::from(EXIT_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    match cli.command {
        Command::Check { config: path, skip_secrets, web, shard } => {
            if let Err(code) = web.check() {
                return code;
            }
            let secrets = if skip_secrets { Secrets::Skip } else { Secrets::Read };
            match source(&path, &shard).load_with(secrets) {
                Ok(config) => {
                    for w in &config.warnings {
                        eprintln!("warning: {}", w.render(&path));
                    }
                    print!("{}", crossprobe::tables::matrix_table(&config));
                    print!("{}", crossprobe::tables::discovered(&config));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(EXIT_USAGE)
                }
            }
        }
        Command::Once { config: path, shard } => {
            let config = match load_shard(&path, &shard) {
                Ok(config) => config,
                Err(code) => return code,
            };
            init_logging(config.daemon.log_format);
            log_warnings(&path, &config);
            log_shard(&shard, &config);
            match runtime().and_then(|rt| Ok(rt.block_on(crossprobe::daemon::once_discovered(&config))?)) {
                Ok((config, results)) => {
                    print!("{}", crossprobe::tables::discovered(&config));
                    print!("{}", crossprobe::tables::once_table(&config, &results));
                    let all_ok = results.iter().all(|r| r.is_some_and(|r| !r.outcome.is_failure()));
                    if all_ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => fail(e),
            }
        }
        Command::Run {
            config: path,
            record,
            record_max_size,
            record_max_age,
            record_keep,
            shard,
            watch_config,
            web,
        } => {
            let config = match load_shard(&path, &shard) {
                Ok(config) => config,
                Err(code) => return code,
            };
            if let Err(code) = web.check() {
                return code;
            }
            init_logging(config.daemon.log_format);
            log_warnings(&path, &config);
            log_shard(&shard, &config);
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => return fail(e),
            };
            let retention =
                Retention { max_bytes: record_max_size, max_age: record_max_age, keep: record_keep };
            let options = RunOptions {
                record,
                retention,
                source: Some(source(&path, &shard)),
                watch: watch_config,
                sighup: true,
                web_config_file: web.web_config_file,
            };
            let result = rt.block_on(crossprobe::daemon::run(config, options));
            if result.is_err() {
                // After a second stop signal or a stop past its bound, tasks may still run: the
                // process exits without waiting for them.
                rt.shutdown_background();
            }
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e.into()),
            }
        }
        Command::Replay { input, prometheus, step, selector, from, to, config, summary, compare } => {
            let source = match (input, prometheus) {
                (Some(path), _) => Source::Recording(path),
                (None, Some(url)) => Source::Prometheus(Query { url, selector, step }),
                (None, None) => unreachable!("clap requires --input or --prometheus"),
            };
            let input = Input::new(source, Window { from, to });
            match (compare, summary) {
                (Some(ab), _) => replay_compare(&input, &ab[0], &ab[1]),
                (None, true) => replay_summary(&input, config),
                (None, false) => replay(&input, config),
            }
        }
        Command::Localize { input, format } => localize(&input, format),
        Command::WebConfig { config } => web_config(&config),
    }
}

fn replay(input: &Input, config: Option<PathBuf>) -> ExitCode {
    let config = match config.map(|c| load(&c)).transpose() {
        Ok(config) => config,
        Err(code) => return code,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let fed = replay::replay_file(input, config.as_ref().map(|c| (&c.matrix, &c.correlator)), &mut out);
    replayed(
        input,
        fed.map(|fed| {
            warn_torn(&fed);
            String::new()
        }),
    )
}

/// The summary of one replay, with `config`'s matrix and settings or the input's cells and the
/// defaults.
fn summarize(
    input: &Input,
    config: Option<&ValidatedConfig>,
) -> Result<(Summary, replay::Fed), replay::ReplayError> {
    Summary::replay(input, config.map(|c| (&c.matrix, &c.correlator)))
}

fn replay_summary(input: &Input, config: Option<PathBuf>) -> ExitCode {
    let config = match config.map(|c| load(&c)).transpose() {
        Ok(config) => config,
        Err(code) => return code,
    };
    let text = summarize(input, config.as_ref()).map(|(s, fed)| {
        warn_torn(&fed);
        summary::render(&s, summary::Clock { wall: fed.wall_clock })
    });
    replayed(input, text)
}

fn replay_compare(input: &Input, a: &std::path::Path, b: &std::path::Path) -> ExitCode {
    let (ca, cb) = match (load(a), load(b)) {
        (Ok(ca), Ok(cb)) => (ca, cb),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let text = summarize(input, Some(&ca)).and_then(|(sa, fed)| {
        warn_torn(&fed);
        let (sb, _) = summarize(input, Some(&cb))?;
        let names = (a.display().to_string(), b.display().to_string());
        Ok(summary::compare(&sa, &sb, (&names.0, &names.1), summary::Clock { wall: fed.wall_clock }))
    });
    replayed(input, text)
}

fn warn_torn(fed: &replay::Fed) {
    for t in &fed.torn {
        eprintln!("warning: {t}: cut short (a crash while writing?); skipped");
    }
}

/// Prints `text` and maps a replay's result to an exit code: 1 when stdout or Prometheus failed,
/// 64 for bad input.
fn replayed(input: &Input, text: Result<String, replay::ReplayError>) -> ExitCode {
    use std::io::Write;
    match text {
        Ok(text) => {
            if let Err(e) = std::io::stdout().lock().write_all(text.as_bytes()) {
                eprintln!("writing output: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(
            e @ (replay::ReplayError::Write(_)
            | replay::ReplayError::Prometheus(
                PrometheusError::Connect { .. } | PrometheusError::Status { .. },
            )),
        ) => {
            eprintln!("{}: {e}", input.name());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{}: {e}", input.name());
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn localize(input: &std::path::Path, format: Format) -> ExitCode {
    match crossprobe::offline::localize::localize_file(input) {
        Ok(found) => {
            match format {
                Format::Text => print!("{}", found.to_text()),
                Format::Json => match serde_json::to_string_pretty(&found) {
                    Ok(json) => println!("{json}"),
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::FAILURE;
                    }
                },
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", input.display());
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// `crossprobe web-config`: the retired `[daemon.web]` keys as a web configuration file.
fn web_config(path: &std::path::Path) -> ExitCode {
    let text = match crossprobe::files::read_text(path, crossprobe::files::MAX_CONFIG_BYTES) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("cannot read {}: {e}", path.display());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match crossprobe::config::migrate_web(&text) {
        Ok(Some(yaml)) => {
            print!("# From the [daemon.web] of {}: give it as `crossprobe run --web.config.file FILE`,\n# then delete those keys from the TOML.\n{yaml}", path.display());
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!("{}: no TLS or basic-auth keys in [daemon.web]: nothing to migrate", path.display());
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in problems {
                eprintln!("{}", p.render(path));
            }
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn load(path: &std::path::Path) -> Result<ValidatedConfig, ExitCode> {
    ValidatedConfig::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_USAGE)
    })
}

/// Loads a configuration and keeps only `shard.shard`'s cells; a shard without cells is a usage
/// error, like a bad configuration.
fn load_shard(path: &std::path::Path, shard: &ShardArg) -> Result<ValidatedConfig, ExitCode> {
    source(path, shard).load().map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_USAGE)
    })
}

fn source(path: &std::path::Path, shard: &ShardArg) -> ConfigSource {
    ConfigSource { path: path.to_owned(), shard: shard.shard() }
}

fn log_warnings(path: &std::path::Path, config: &ValidatedConfig) {
    for w in &config.warnings {
        tracing::warn!(warning = %w.render(path), "the configuration is valid, but probably not what was meant");
    }
}

fn log_shard(shard: &ShardArg, config: &ValidatedConfig) {
    if let Some(shard) = shard.shard() {
        tracing::info!(shard = %shard, cells = config.matrix.len(), "probing one shard of the matrix");
    }
}

/// Without `RUST_LOG`: INFO, but lapin's own logs off, since it logs every broker disconnect
/// as an error; the clients report connection state themselves, and broker failures are data.
const DEFAULT_LOG_FILTER: &str = "info,lapin=off";

/// Installs the global log subscriber: `RUST_LOG` filters (default [`DEFAULT_LOG_FILTER`]),
/// text or JSON, on stderr.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. \"5s\")"))?;
    if d < std::time::Duration::from_millis(100) {
        return Err("at least 100ms".into());
    }
    Ok(d)
}

/// A size in bytes: a number with an optional binary unit (`64MiB`, `512KiB`, `1GiB`).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(format!("unknown unit {unit:?} (expected B, KiB, MiB or GiB, e.g. \"64MiB\")")),
    };
    let n: u64 = n.parse().map_err(|_| format!("{s:?} is not a size such as \"64MiB\""))?;
    match n.checked_mul(scale) {
        Some(b) if b >= 4096 => Ok(b),
        Some(_) => Err("at least 4KiB".into()),
        None => Err("too large".into()),
    }
}

/// A wall-clock time (RFC 3339 in UTC) as milliseconds since the Unix epoch.
fn parse_time(s: &str) -> Result<u64, String> {
    crossprobe::offline::record::unix_ms(s)
        .ok_or_else(|| format!("{s:?} is not an RFC 3339 UTC time such as \"2026-11-30T22:15:00Z\""))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn fail(e: anyhow::Error) -> ExitCode {
    tracing::error!(error = format!("{e:#}"), "crossprobe failed");
    ExitCode::FAILURE
}
