//! The in-flight tracker of one cell: turns publishes, acknowledgements, receipts and deadlines
//! into probe outcomes, and counts what does not belong (duplicates, reorders, late arrivals,
//! foreign and corrupt messages).
//!
//! Every probe ends exactly once, as a [`ProbeResult`]:
//! - `ok`: acknowledged by the broker and received back within the timeout;
//! - `publish_failed{kind}`: refused by the broker, or not acknowledged within the timeout;
//! - `connect_failed{kind}`: the cell's client was down;
//! - `lost`: acknowledged but not back within the timeout;
//! - `corrupt`: came back with a bad checksum.
//!
//! A message back after its probe ended is reported as [`Event::Late`]: counted, but it does
//! not change the outcome already given. The tracker is pure bookkeeping: time is passed in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::outcome::{ErrorKind, Outcome};
use crate::payload::{DecodeError, Header};

/// How many recent sequence numbers are remembered to tell duplicates apart: the last 1,024
/// probes started, one bit each (128 bytes a cell; a `u64` per slot took 8 KiB, the largest
/// per-cell cost at 10,000 cells).
const SEEN_WINDOW: usize = 1024;

/// The end of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeResult {
    pub seq: u64,
    pub outcome: Outcome,
    /// Publish start to broker acknowledgement, when acknowledged.
    pub publish: Option<Duration>,
    /// Publish start to receipt, when received.
    pub roundtrip: Option<Duration>,
}

/// What a received message turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A probe ended with this message.
    Done(ProbeResult),
    /// Our probe, back after it had already ended; `roundtrip` is how long it took.
    Late { seq: u64, roundtrip: Duration },
    /// A sequence number received a second time.
    Duplicate { seq: u64 },
    /// A sequence number below the highest already received (also reported as what it is).
    Reorder { seq: u64 },
    /// A valid probe of another daemon instance or an earlier run of this one.
    Foreign,
    /// Not a valid probe: garbage or a bad checksum.
    Corrupt,
    /// A probe of this instance for another cell sharing the topic partition: ignored.
    OtherCell,
}

#[derive(Debug)]
struct InFlight {
    seq: u64,
    started: Instant,
    acked: Option<Duration>,
    received: Option<Duration>,
}

/// Bookkeeping of one cell's probes.
#[derive(Debug)]
pub struct Tracker {
    instance: u64,
    cell: u64,
    timeout: Duration,
    epoch: Instant,
    next_seq: u64,
    in_flight: VecDeque<InFlight>,
    highest_received: Option<u64>,
    /// Bit `seq % SEEN_WINDOW`: probe `seq` was received. Cleared when the slot's next probe
    /// starts, so a bit always speaks of one of the last [`SEEN_WINDOW`] probes started.
    seen: [u64; SEEN_WINDOW / 64],
}

/// Word and mask of `seq`'s bit in [`Tracker::seen`].
fn seen_bit(seq: u64) -> (usize, u64) {
    let slot = (seq % SEEN_WINDOW as u64) as usize;
    (slot / 64, 1 << (slot % 64))
}

impl Tracker {
    /// `epoch` is the process start: send times in payloads are nanoseconds since it.
    pub fn new(instance: u64, cell: u64, timeout: Duration, epoch: Instant) -> Self {
        Tracker {
            instance,
            cell,
            timeout,
            epoch,
            next_seq: 1,
            in_flight: VecDeque::new(),
            highest_received: None,
            seen: [0; SEEN_WINDOW / 64],
        }
    }

    /// Applies a new probe timeout (a configuration reload), to probes in flight too. The
    /// sequence, duplicate window and probes in flight carry over, so a restarted worker picks
    /// up where the previous one stopped.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Starts a probe at `now`: returns the header to encode and publish.
    pub fn start(&mut self, now: Instant) -> Header {
        let seq = self.next_seq;
        self.next_seq += 1;
        let (word, bit) = seen_bit(seq);
        self.seen[word] &= !bit;
        self.in_flight.push_back(InFlight { seq, started: now, acked: None, received: None });
        let sent_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        Header { instance: self.instance, cell: self.cell, seq, sent_ns }
    }

    /// The broker acknowledged probe `seq`; ends it if it already came back.
    pub fn acked(&mut self, seq: u64, now: Instant) -> Option<ProbeResult> {
        let i = self.position(seq)?;
        let p = &mut self.in_flight[i];
        p.acked = Some(now.saturating_duration_since(p.started));
        p.received.is_some().then(|| self.finish(i, Outcome::Ok))
    }

    /// Probe `seq` could not be published: `outcome` is `publish_failed` or `connect_failed`.
    pub fn failed(&mut self, seq: u64, outcome: Outcome) -> Option<ProbeResult> {
        let i = self.position(seq)?;
        Some(self.finish(i, outcome))
    }

    /// Classifies a message consumed from this cell's topic partition or queue.
    pub fn received(&mut self, bytes: &[u8], now: Instant) -> Vec<Event> {
        let header = match Header::decode(bytes) {
            Ok(h) => h,
            Err(DecodeError::Checksum(h)) if h.instance == self.instance && h.cell == self.cell => {
                return match self.position(h.seq) {
                    Some(i) => {
                        self.in_flight[i].received =
                            Some(now.saturating_duration_since(self.in_flight[i].started));
                        vec![Event::Corrupt, Event::Done(self.finish(i, Outcome::Corrupt))]
                    }
                    None => vec![Event::Corrupt],
                };
            }
            Err(_) => return vec![Event::Corrupt],
        };
        if header.instance != self.instance || header.seq >= self.next_seq || header.seq == 0 {
            return vec![Event::Foreign];
        }
        if header.cell != self.cell {
            return vec![Event::OtherCell];
        }
        // Older than the window: its bit is a later probe's, so it cannot be told a duplicate.
        if header.seq + SEEN_WINDOW as u64 >= self.next_seq {
            let (word, bit) = seen_bit(header.seq);
            if self.seen[word] & bit != 0 {
                return vec![Event::Duplicate { seq: header.seq }];
            }
            self.seen[word] |= bit;
        }
        let mut events = Vec::with_capacity(2);
        match self.highest_received {
            Some(h) if header.seq < h => events.push(Event::Reorder { seq: header.seq }),
            _ => self.highest_received = Some(header.seq),
        }
        match self.position(header.seq) {
            Some(i) => {
                let p = &mut self.in_flight[i];
                p.received = Some(now.saturating_duration_since(p.started));
                if p.acked.is_some() {
                    events.push(Event::Done(self.finish(i, Outcome::Ok)));
                }
            }
            None => {
                let sent = self.epoch + Duration::from_nanos(header.sent_ns);
                events.push(Event::Late { seq: header.seq, roundtrip: now.saturating_duration_since(sent) });
            }
        }
        events
    }

    /// Ends every probe whose timeout passed by `now`: `lost` if acknowledged, otherwise
    /// `publish_failed{timeout}`.
    pub fn expire(&mut self, now: Instant) -> Vec<ProbeResult> {
        let mut out = Vec::new();
        while let Some(p) = self.in_flight.front() {
            if now < p.started + self.timeout {
                break;
            }
            let outcome =
                if p.acked.is_some() { Outcome::Lost } else { Outcome::PublishFailed(ErrorKind::Timeout) };
            out.push(self.finish(0, outcome));
        }
        out
    }

    /// When the oldest probe in flight times out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.in_flight.front().map(|p| p.started + self.timeout)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    fn position(&self, seq: u64) -> Option<usize> {
        // Probes start in sequence order, so the deque is sorted by seq.
        self.in_flight.binary_search_by_key(&seq, |p| p.seq).ok()
    }

    fn finish(&mut self, i: usize, outcome: Outcome) -> ProbeResult {
        let p = self.in_flight.remove(i).expect("index from position()");
        let (publish, roundtrip) = match outcome {
            Outcome::Ok | Outcome::Lost | Outcome::Corrupt => (p.acked, p.received),
            _ => (None, None),
        };
        ProbeResult { seq: p.seq, outcome, publish, roundtrip }
    }
}

#[cfg(test)]
mod tests;
