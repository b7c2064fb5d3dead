//! Reloading the configuration while the daemon runs: the ways a reload is asked for (SIGHUP,
//! `POST /-/reload`, `--watch-config`), why one is refused, and the [`ReloadPlan`] that the
//! worker pool and the evaluator both apply.
//!
//! A plan is computed once: it holds the validated new configuration, the restart-only check
//! has passed, and it maps every new cell to the running one it continues. Nothing running
//! changes until the plan exists and the new clients are created.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::clients::ClientError;
use crate::config::{ConfigSource, LoadError, ValidatedConfig};
use crate::correlator::CorrelatorError;
use crate::files;
use crate::matrix::CellId;

/// Why a reload left the running configuration in place.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the daemon was started without a configuration file to reload")]
    NoSource,
    #[error("{0}")]
    Invalid(#[from] LoadError),
    #[error("{0} cannot change while the daemon runs; restart it to apply")]
    NeedsRestart(String),
    #[error(transparent)]
    Clients(#[from] ClientError),
    #[error(transparent)]
    Correlator(#[from] CorrelatorError),
    #[error("the daemon is stopping")]
    Stopping,
}

/// What a reload changed among the cells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    pub added: usize,
    pub removed: usize,
    /// Kept cells whose settings changed: their worker restarted, their series and state kept.
    pub restarted: usize,
    pub unchanged: usize,
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} added, {} removed, {} restarted, {} unchanged",
            self.added, self.removed, self.restarted, self.unchanged
        )
    }
}

/// A configuration to switch to, checked against the running one.
pub struct ReloadPlan {
    pub config: ValidatedConfig,
    /// For each cell of the new matrix, the index of the same cell (by id) in the running
    /// matrix: its worker goes on, or restarts in its place when its settings changed.
    pub previous: Vec<Option<usize>>,
    /// [`ReloadPlan::previous`] where the cell also kept its labels: such a cell keeps its
    /// series and its correlator window; one whose labels changed starts them afresh.
    pub carried: Vec<Option<usize>>,
}

impl ReloadPlan {
    /// Checks that `next` can replace `running` without a restart, and maps its cells.
    pub fn new(running: &ValidatedConfig, next: ValidatedConfig) -> Result<ReloadPlan, ReloadError> {
        let (old, new) = (&running.daemon, &next.daemon);
        let fixed = [
            ("[daemon] listen", old.listen != new.listen),
            ("[daemon] instance", old.instance != new.instance),
            ("[daemon] vantage", old.vantage != new.vantage),
            ("[daemon] latency_by", old.latency_by != new.latency_by),
            ("[daemon] log_format", old.log_format != new.log_format),
            ("[daemon.web]", old.web != new.web),
            ("the set of matrix dimensions", running.matrix.dimensions() != next.matrix.dimensions()),
        ];
        let changed: Vec<&str> = fixed.iter().filter(|(_, c)| *c).map(|(what, _)| *what).collect();
        if !changed.is_empty() {
            return Err(ReloadError::NeedsRestart(changed.join(", ")));
        }
        let cells = running.matrix.cells();
        let by_id: HashMap<&CellId, usize> = cells.iter().enumerate().map(|(i, c)| (&c.id, i)).collect();
        let previous: Vec<Option<usize>> =
            next.matrix.cells().iter().map(|c| by_id.get(&c.id).copied()).collect();
        let carried = next
            .matrix
            .cells()
            .iter()
            .zip(&previous)
            .map(|(c, p)| p.filter(|&i| cells[i].labels == c.labels))
            .collect();
        Ok(ReloadPlan { config: next, previous, carried })
    }
}

/// A reload asked of the run loop, and where its result goes.
pub type ReloadRequest = oneshot::Sender<Result<Applied, ReloadError>>;

/// Asks the run loop for reloads; cloned into the HTTP server for `POST /-/reload`.
#[derive(Clone)]
pub struct ReloadHandle(mpsc::Sender<ReloadRequest>);

impl ReloadHandle {
    /// A handle and the run loop's end of it.
    pub fn channel() -> (ReloadHandle, mpsc::Receiver<ReloadRequest>) {
        let (tx, rx) = mpsc::channel(4);
        (ReloadHandle(tx), rx)
    }

    /// Asks for a reload and waits for its result.
    pub async fn reload(&self) -> Result<Applied, ReloadError> {
        let (tx, rx) = oneshot::channel();
        self.0.send(tx).await.map_err(|_| ReloadError::Stopping)?;
        rx.await.unwrap_or(Err(ReloadError::Stopping))
    }
}

/// The configuration file behind a running daemon, and `--watch-config`'s view of it.
pub struct ConfigWatch {
    source: Option<ConfigSource>,
    every: Option<Duration>,
    /// Hash of the source file's content when it was last loaded or tried.
    watched: Option<u64>,
    /// A changed content seen at the last look, waiting to be seen again unchanged.
    settling: Option<u64>,
}

impl ConfigWatch {
    /// Watches `source` every `every` when given; without a source, reloads are refused.
    pub fn new(source: Option<ConfigSource>, every: Option<Duration>) -> ConfigWatch {
        let watched = source.as_ref().map(|s| content_hash(&s.path));
        ConfigWatch { source, every, watched, settling: None }
    }

    /// How often to look at the file, when `--watch-config` asked for it.
    pub fn every(&self) -> Option<Duration> {
        self.every
    }

    /// Reads and validates the file. It is read once: what is marked as seen is exactly what
    /// is validated.
    pub fn load(&mut self) -> Result<ValidatedConfig, ReloadError> {
        let source = self.source.as_ref().ok_or(ReloadError::NoSource)?;
        let text = source.read();
        self.watched = Some(text_hash(text.as_deref().unwrap_or_default()));
        self.settling = None;
        Ok(source.parse(&text?)?)
    }

    /// Whether the file's content differs from what was last loaded or tried (so a broken file
    /// is reported once, not at every look) and is the same as at the previous look (so a file
    /// caught half-written by an editor is not loaded).
    pub fn changed(&mut self) -> bool {
        let (Some(source), Some(seen)) = (&self.source, self.watched) else { return false };
        let now = content_hash(&source.path);
        let settled = now != seen && self.settling == Some(now);
        self.settling = (now != seen).then_some(now);
        settled
    }
}

/// A hash of a file's text; that of empty text when it cannot be read (a reload then reports
/// why). Read the bounded way, as a reload reads it: a FIFO or a hung mount never blocks the
/// run loop.
fn content_hash(path: &std::path::Path) -> u64 {
    text_hash(&files::read_text(path, files::MAX_CONFIG_BYTES).unwrap_or_default())
}

fn text_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}
