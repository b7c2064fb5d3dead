//! The `crossprobe` command: parses arguments, calls the library, maps the result to an exit
//! code (0 ok, 64 bad configuration or usage, 1 runtime failure).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use crossprobe::config::{ConfigSource, LogFormat, Secrets, ValidatedConfig};
use crossprobe::daemon::RunOptions;
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
        /// Also write every probe outcome to FILE as JSON lines, the input format of `replay`.
        #[arg(long, value_name = "FILE")]
        record: Option<PathBuf>,
        /// Read the configuration file this often (e.g. "5s") and reload it, as SIGHUP does, when
        /// its content changed and then stayed the same for one interval. Follows symlink swaps
        /// such as Kubernetes ConfigMap updates.
        #[arg(long, value_name = "INTERVAL", value_parser = parse_interval)]
        watch_config: Option<std::time::Duration>,
        #[command(flatten)]
        shard: ShardArg,
    },
    /// Feed recorded outcomes (JSON lines) through the correlator and print each verdict change.
    Replay {
        #[arg(long, short, value_name = "FILE")]
        input: PathBuf,
        /// Use this configuration's matrix and [correlator] settings instead of the input's
        /// cells and the defaults.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print the scopes that explain one snapshot of cells (CSV), strongest first.
    Localize {
        #[arg(long, short, value_name = "FILE.csv")]
        input: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
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
        Command::Check { config: path, skip_secrets, shard } => {
            let secrets = if skip_secrets { Secrets::Skip } else { Secrets::Read };
            match source(&path, &shard).load_with(secrets) {
                Ok(config) => {
                    for w in &config.warnings {
                        eprintln!("warning: {}", w.render(&path));
                    }
                    print!("{}", crossprobe::tables::matrix_table(&config));
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
            match runtime().and_then(|rt| Ok(rt.block_on(crossprobe::daemon::once(&config))?)) {
                Ok(results) => {
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
        Command::Run { config: path, record, shard, watch_config } => {
            let config = match load_shard(&path, &shard) {
                Ok(config) => config,
                Err(code) => return code,
            };
            init_logging(config.daemon.log_format);
            log_warnings(&path, &config);
            log_shard(&shard, &config);
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => return fail(e),
            };
            let options =
                RunOptions { record, source: Some(source(&path, &shard)), watch: watch_config, sighup: true };
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
        Command::Replay { input, config } => replay(&input, config),
        Command::Localize { input, format } => localize(&input, format),
    }
}

fn replay(input: &std::path::Path, config: Option<PathBuf>) -> ExitCode {
    use crossprobe::offline::replay::{replay_file, ReplayError};
    let config = match config.map(|c| load(&c)).transpose() {
        Ok(config) => config,
        Err(code) => return code,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match replay_file(input, config.as_ref().map(|c| (&c.matrix, &c.correlator)), &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ ReplayError::Write(_)) => {
            eprintln!("{}: {e}", input.display());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{}: {e}", input.display());
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn fail(e: anyhow::Error) -> ExitCode {
    tracing::error!(error = format!("{e:#}"), "crossprobe failed");
    ExitCode::FAILURE
}
