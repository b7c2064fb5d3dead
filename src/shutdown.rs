//! The stop tree: one cancellation tree and one task tracker for every task the daemon starts.
//!
//! The tree is a chain, so each part can be stopped on its own and in order while cancelling an
//! outer token still stops everything inside it:
//!
//! ```text
//! server (root)  the HTTP server: stopped last, so the final scrape sees final counts
//!   clients      broker clients (Kafka consumers, AMQP supervisors)
//!     workers    probe workers: stopped first, they finish their probes in flight
//!       request  "please stop": a signal or `Daemon::stop`; the run loop then stops the rest
//! ```
//!
//! Every task is spawned on [`Shutdown::spawn`], so none runs unseen; [`Shutdown::drain`] waits,
//! within a grace period, for all of them.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The daemon's cancellation tree and the tracker of its tasks. Clones share both.
#[derive(Debug, Clone)]
pub struct Shutdown {
    server: CancellationToken,
    clients: CancellationToken,
    workers: CancellationToken,
    request: CancellationToken,
    tracker: TaskTracker,
}

impl Default for Shutdown {
    fn default() -> Self {
        let server = CancellationToken::new();
        let clients = server.child_token();
        let workers = clients.child_token();
        let request = workers.child_token();
        Shutdown { server, clients, workers, request, tracker: TaskTracker::new() }
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancelled when a stop is asked for; the run loop watches it.
    pub fn request(&self) -> &CancellationToken {
        &self.request
    }

    /// Cancelled when the probe workers must stop scheduling.
    pub fn workers(&self) -> &CancellationToken {
        &self.workers
    }

    /// Cancelled when the broker clients must close.
    pub fn clients(&self) -> &CancellationToken {
        &self.clients
    }

    /// Cancelled when the HTTP server must stop: the root, so everything else stops with it.
    pub fn server(&self) -> &CancellationToken {
        &self.server
    }

    /// The tracker every task is spawned on.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Starts a tracked task; [`Shutdown::drain`] waits for it.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
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
    async fn drain_waits_for_tasks_that_honour_their_token() {
        let s = Shutdown::new();
        let token = s.workers().clone();
        s.spawn(async move {
            token.cancelled().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
        s.server().cancel();
        assert!(s.drain(Duration::from_secs(1)).await, "task should finish within grace");
    }

    #[tokio::test(start_paused = true)]
    async fn drain_reports_a_task_that_overstays() {
        let s = Shutdown::new();
        s.spawn(tokio::time::sleep(Duration::from_secs(60)));
        s.server().cancel();
        assert!(!s.drain(Duration::from_secs(1)).await, "grace should run out");
    }

    #[test]
    fn each_part_stops_alone_and_an_outer_token_stops_what_is_inside() {
        let s = Shutdown::new();
        s.request().cancel();
        assert!(!s.workers().is_cancelled(), "a stop request does not stop the workers by itself");
        s.workers().cancel();
        assert!(!s.clients().is_cancelled(), "clients outlive the workers");
        let t = Shutdown::new();
        t.server().cancel();
        for (name, token) in [("clients", t.clients()), ("workers", t.workers()), ("request", t.request())] {
            assert!(token.is_cancelled(), "cancelling the root must reach {name}");
        }
    }
}
