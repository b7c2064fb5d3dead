//! The long-running daemon: logging set-up, start-up from a validated config, and the orderly
//! stop on SIGINT or SIGTERM.

use std::io::IsTerminal;
use std::time::Duration;

use tracing::{debug, info};

use crate::config::{LogFormat, ValidatedConfig};
use crate::shutdown::{Shutdown, StopSignals};

/// How long tasks get to finish once a stop is asked for.
pub const GRACE: Duration = Duration::from_secs(10);

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen for signals: {0}")]
    Signals(#[source] std::io::Error),
    #[error("tasks still running {0:?} after the stop was asked for")]
    Stuck(Duration),
}

/// Installs the global log subscriber: `RUST_LOG` filters (default `info`), text or JSON.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (tests run several daemons in one process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs until SIGINT or SIGTERM, then stops in order.
pub async fn run(config: ValidatedConfig) -> Result<(), DaemonError> {
    let shutdown = Shutdown::new();
    let mut signals = StopSignals::install().map_err(DaemonError::Signals)?;
    let m = &config.matrix;
    info!(
        instance = %config.daemon.instance,
        cells = m.len(),
        targets = config.targets.len(),
        tenants = config.tenants.len(),
        dimensions = %m.dimensions().join(","),
        "crossprobe started"
    );
    for cell in m.cells() {
        debug!(cell = %cell.id, labels = %m.describe(cell), "cell");
    }
    let name = signals.recv().await;
    info!(signal = name, "stopping");
    shutdown.trigger();
    if !shutdown.drain(GRACE).await {
        return Err(DaemonError::Stuck(GRACE));
    }
    info!("stopped");
    Ok(())
}
