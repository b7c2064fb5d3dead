//! Orderly stop: one cancellation tree and one task tracker for every task the daemon starts.
//!
//! Tasks are spawned through [`Shutdown::spawn`] so none is left running unseen; a signal
//! cancels the root token, and [`Shutdown::drain`] waits, within a grace period, for all of them.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The root of the daemon's cancellation tree and the tracker of its tasks.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancelled when the daemon begins to stop.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Starts a tracked task; [`Shutdown::drain`] waits for it.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Begins the stop: every task watching the token sees it cancelled.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Waits for every tracked task to end, up to `grace`. Returns false if some were still
    /// running when the grace period ran out.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait()).await.is_ok()
    }
}

/// The stop signals, listened for from creation on: create this before announcing start-up, so
/// a signal sent right after never meets the default handler (which kills without cleanup).
pub struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    /// Resolves on the next SIGINT or SIGTERM, naming it.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_tasks_that_honour_the_token() {
        let s = Shutdown::new();
        let token = s.token();
        s.spawn(async move {
            token.cancelled().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
        s.trigger();
        assert!(s.drain(Duration::from_secs(1)).await, "task should finish within grace");
    }

    #[tokio::test(start_paused = true)]
    async fn drain_reports_a_task_that_overstays() {
        let s = Shutdown::new();
        s.spawn(tokio::time::sleep(Duration::from_secs(60)));
        s.trigger();
        assert!(!s.drain(Duration::from_secs(1)).await, "grace should run out");
    }
}
