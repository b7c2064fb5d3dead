//! When a client that lost its broker tries again.
//!
//! A prober must see a returned broker as soon as its cells probe again, so a client never
//! backs off beyond the probe interval of its cells: after a failure the delay grows from
//! [`FIRST`] by doubling, is capped at the interval, and is jittered down to half of that
//! ("equal jitter": many clients losing one broker at once do not retry in step). Delays are
//! counted from the start of the failed attempt, so attempts start at most one interval apart
//! unless an attempt itself lasts longer (it is bounded by its own timeout).

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tokio::time::Instant;

/// The first delay after a loss.
pub const FIRST: Duration = Duration::from_millis(100);

/// The retry schedule of one client.
#[derive(Debug, Clone)]
pub struct Retry {
    within: Duration,
    /// The delay before jitter for the next failure.
    next: Duration,
    /// splitmix64 state for the jitter.
    state: u64,
}

impl Retry {
    /// A schedule that never waits longer than `within` (the shortest probe interval of the
    /// client's cells; a zero `within` retries at once).
    pub fn new(within: Duration) -> Self {
        let seed = std::collections::hash_map::RandomState::new().build_hasher().finish();
        Retry::seeded(within, seed)
    }

    /// Like [`Retry::new`] with a fixed jitter seed, for reproducible tests.
    pub fn seeded(within: Duration, seed: u64) -> Self {
        Retry { within, next: FIRST.min(within), state: seed }
    }

    /// The longest delay this schedule ever gives.
    pub fn within(&self) -> Duration {
        self.within
    }

    /// The client connected: the next loss starts again from [`FIRST`].
    pub fn reset(&mut self) {
        self.next = FIRST.min(self.within);
    }

    /// The delay after one more failure, in `[d / 2, d]` where `d` doubles from [`FIRST`] up to
    /// `within`.
    pub fn delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.within);
        let half = d / 2;
        let span = (d - half).as_nanos() as u64;
        half + Duration::from_nanos(if span == 0 { 0 } else { self.random() % (span + 1) })
    }

    /// Waits until the next attempt is due, counting the delay from `started`, the start of the
    /// attempt that failed.
    pub async fn wait(&mut self, started: Instant) {
        tokio::time::sleep_until(started + self.delay()).await;
    }

    fn random(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;
    use tokio::time::Instant;

    use super::{Retry, FIRST};

    proptest! {
        #[test]
        fn a_delay_never_exceeds_the_interval(within_ms in 0u64..120_000, seed: u64, failures in 1usize..64) {
            let within = Duration::from_millis(within_ms);
            let mut r = Retry::seeded(within, seed);
            for _ in 0..failures {
                let d = r.delay();
                prop_assert!(d <= within, "{d:?} > {within:?}");
            }
            // Long outages settle at the interval, jittered no lower than its half.
            if failures > 20 {
                let d = r.delay();
                prop_assert!(d >= within / 2, "{d:?} < half of {within:?}");
            }
        }
    }

    #[test]
    fn delays_grow_from_the_first_and_start_over_after_a_connection() {
        let mut r = Retry::seeded(Duration::from_secs(1), 7);
        let bounds: Vec<Duration> = [100, 200, 400, 800, 1000, 1000].map(Duration::from_millis).to_vec();
        for d in &bounds {
            let got = r.delay();
            assert!(got >= *d / 2 && got <= *d, "expected a delay in [{:?}, {d:?}], got {got:?}", *d / 2);
        }
        r.reset();
        let got = r.delay();
        assert!(got <= FIRST, "after a reset the first delay is at most {FIRST:?}, got {got:?}");
    }

    #[test]
    fn jitter_spreads_clients_that_lost_the_same_broker() {
        let delays: std::collections::HashSet<Duration> = (0..20)
            .map(|seed| {
                let mut r = Retry::seeded(Duration::from_secs(1), seed);
                (0..10).map(|_| r.delay()).last().unwrap()
            })
            .collect();
        assert!(delays.len() > 10, "20 clients should not retry in step: {delays:?}");
    }

    /// Drives the schedule as a supervisor does (attempt, fail, wait from the attempt's start)
    /// on tokio's paused clock: attempts start at most one interval apart, whatever their length
    /// below the interval and however long the outage.
    #[tokio::test(start_paused = true)]
    async fn attempts_start_at_most_one_interval_apart() {
        for (interval_ms, attempt_ms) in [(1000, 0), (1000, 400), (500, 490), (100, 30), (5000, 1000)] {
            let interval = Duration::from_millis(interval_ms);
            let attempt = Duration::from_millis(attempt_ms);
            let mut r = Retry::new(interval);
            let mut starts = Vec::new();
            let outage = Instant::now();
            while outage.elapsed() < Duration::from_secs(120) {
                let started = Instant::now();
                starts.push(started);
                tokio::time::sleep(attempt).await;
                r.wait(started).await;
            }
            let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
            let longest = gaps.iter().max().unwrap();
            assert!(
                *longest <= interval,
                "interval {interval:?}, attempts of {attempt:?}: a gap of {longest:?} between attempts"
            );
            let shortest = gaps.iter().min().unwrap();
            assert!(
                *shortest >= attempt,
                "interval {interval:?}: attempts overlap ({shortest:?} < {attempt:?})"
            );
            // After the climb, attempts come no more often than every half interval: a down broker
            // is not hammered.
            let settled = gaps.iter().skip(10).min().unwrap();
            assert!(
                *settled >= (interval / 2).max(attempt),
                "interval {interval:?}: settled gap {settled:?} below half the interval"
            );
        }
    }
}
