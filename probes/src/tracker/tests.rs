use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

const INSTANCE: u64 = 0xabc;
const CELL: u64 = 7;
const TIMEOUT: Duration = Duration::from_millis(500);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn tracker(epoch: Instant) -> Tracker {
    Tracker::new(INSTANCE, CELL, TIMEOUT, epoch)
}

#[test]
fn ack_then_receipt_is_ok_with_both_latencies() {
    let t0 = Instant::now();
    let mut t = tracker(t0);
    let h = t.start(t0);
    assert_eq!(t.acked(h.seq, t0 + ms(2)), None, "not back yet");
    let events = t.received(&h.encode(64), t0 + ms(9));
    assert_eq!(
        events,
        [Event::Done(ProbeResult {
            seq: 1,
            outcome: Outcome::Ok,
            publish: Some(ms(2)),
            roundtrip: Some(ms(9))
        })]
    );
    assert_eq!(t.in_flight(), 0);
}

#[test]
fn receipt_before_ack_waits_for_the_ack() {
    let t0 = Instant::now();
    let mut t = tracker(t0);
    let h = t.start(t0);
    assert_eq!(t.received(&h.encode(64), t0 + ms(3)), []);
    let r = t.acked(h.seq, t0 + ms(4)).expect("ends on ack");
    assert_eq!((r.outcome, r.publish, r.roundtrip), (Outcome::Ok, Some(ms(4)), Some(ms(3))));
}

#[test]
fn deadlines_end_probes_as_lost_or_unacknowledged() {
    let t0 = Instant::now();
    let mut t = tracker(t0);
    let a = t.start(t0);
    let _b = t.start(t0 + ms(100));
    t.acked(a.seq, t0 + ms(1));
    assert_eq!(t.next_deadline(), Some(t0 + TIMEOUT));
    assert_eq!(t.expire(t0 + ms(499)), []);
    let first = t.expire(t0 + ms(500));
    assert_eq!(first.iter().map(|r| r.outcome).collect::<Vec<_>>(), [Outcome::Lost]);
    let second = t.expire(t0 + ms(600));
    assert_eq!(second[0].outcome, Outcome::PublishFailed(ErrorKind::Timeout));
    assert_eq!(t.next_deadline(), None);
}

#[test]
fn a_message_back_after_its_timeout_is_late_and_keeps_the_lost_outcome() {
    let t0 = Instant::now();
    let mut t = tracker(t0);
    let h = t.start(t0);
    t.acked(h.seq, t0 + ms(1));
    assert_eq!(t.expire(t0 + ms(500))[0].outcome, Outcome::Lost);
    assert_eq!(t.received(&h.encode(64), t0 + ms(700)), [Event::Late { seq: 1, roundtrip: ms(700) }]);
}

#[test]
fn duplicates_reorders_foreign_and_corrupt_never_count_as_ok() {
    let t0 = Instant::now();
    let mut t = tracker(t0);
    let one = t.start(t0);
    let two = t.start(t0 + ms(1));
    t.acked(1, t0 + ms(2));
    t.acked(2, t0 + ms(2));
    let done = |seq| {
        Event::Done(ProbeResult {
            seq,
            outcome: Outcome::Ok,
            publish: Some(ms(2 - seq + 1)),
            roundtrip: Some(ms(5 - seq + 1)),
        })
    };
    assert_eq!(t.received(&two.encode(64), t0 + ms(5)), [done(2)]);
    assert_eq!(t.received(&one.encode(64), t0 + ms(5)), [Event::Reorder { seq: 1 }, done(1)]);
    assert_eq!(t.received(&one.encode(64), t0 + ms(6)), [Event::Duplicate { seq: 1 }]);

    let other_run = Header { instance: 0x999, ..one };
    assert_eq!(t.received(&other_run.encode(64), t0 + ms(7)), [Event::Foreign]);
    let other_cell = Header { cell: 8, ..one };
    assert_eq!(t.received(&other_cell.encode(64), t0 + ms(7)), [Event::OtherCell]);
    assert_eq!(t.received(b"not a probe at all", t0 + ms(7)), [Event::Corrupt]);
}

#[test]
fn a_bad_checksum_on_a_probe_in_flight_ends_it_as_corrupt() {
    let t0 = Instant::now();
    let mut t = tracker(t0);
    let h = t.start(t0);
    t.acked(h.seq, t0 + ms(1));
    let mut bytes = h.encode(64);
    bytes[60] ^= 1;
    let events = t.received(&bytes, t0 + ms(4));
    assert_eq!(events[0], Event::Corrupt);
    assert!(matches!(events[1], Event::Done(ProbeResult { outcome: Outcome::Corrupt, .. })), "{events:?}");
}

#[test]
fn publish_and_connect_failures_end_the_probe_at_once() {
    let t0 = Instant::now();
    let mut t = tracker(t0);
    let h = t.start(t0);
    let r = t.failed(h.seq, Outcome::ConnectFailed(ErrorKind::Refused)).unwrap();
    assert_eq!((r.outcome, r.publish, r.roundtrip), (Outcome::ConnectFailed(ErrorKind::Refused), None, None));
    assert_eq!(t.failed(h.seq, Outcome::Lost), None, "a probe ends only once");
}

#[derive(Debug, Clone)]
enum Step {
    Start,
    Ack(u64),
    Receive(u64),
    Fail(u64),
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        Just(Step::Start),
        (1u64..20).prop_map(Step::Ack),
        (1u64..20).prop_map(Step::Receive),
        (1u64..20).prop_map(Step::Fail),
        (1u64..400).prop_map(Step::Advance),
    ]
}

proptest! {
    /// Whatever happens, each started probe ends exactly once, and `ok` only when it was both
    /// acknowledged and received within its timeout.
    #[test]
    fn every_probe_ends_exactly_once(steps in proptest::collection::vec(step(), 1..80)) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut t = tracker(t0);
        let mut sent: HashMap<u64, (Header, Instant)> = HashMap::new();
        let mut acked: HashMap<u64, Instant> = HashMap::new();
        let mut received: HashMap<u64, Instant> = HashMap::new();
        let mut ended: HashMap<u64, Outcome> = HashMap::new();
        let end = |r: ProbeResult, ended: &mut HashMap<u64, Outcome>| {
            prop_assert!(ended.insert(r.seq, r.outcome).is_none(), "probe {} ended twice", r.seq);
            Ok(())
        };
        for s in steps {
            match s {
                Step::Start => { let h = t.start(now); sent.insert(h.seq, (h, now)); }
                Step::Ack(seq) => if sent.contains_key(&seq) {
                    acked.entry(seq).or_insert(now);
                    if let Some(r) = t.acked(seq, now) { end(r, &mut ended)?; }
                },
                Step::Receive(seq) => if let Some((h, _)) = sent.get(&seq) {
                    received.entry(seq).or_insert(now);
                    for e in t.received(&h.encode(64), now) {
                        if let Event::Done(r) = e { end(r, &mut ended)?; }
                    }
                },
                Step::Fail(seq) => if let Some(r) = t.failed(seq, Outcome::PublishFailed(ErrorKind::Nack)) { end(r, &mut ended)?; },
                Step::Advance(n) => { now += ms(n); for r in t.expire(now) { end(r, &mut ended)?; } },
            }
        }
        now += TIMEOUT;
        for r in t.expire(now) { end(r, &mut ended)?; }
        prop_assert_eq!(ended.len(), sent.len());
        for (seq, outcome) in &ended {
            if *outcome == Outcome::Ok {
                let started = sent[seq].1;
                prop_assert!(acked.get(seq).is_some_and(|a| *a < started + TIMEOUT), "ok without timely ack");
                prop_assert!(received.get(seq).is_some_and(|r| *r < started + TIMEOUT), "ok without timely receipt");
            }
        }
    }
}

#[test]
fn duplicates_are_told_over_the_last_1024_probes_and_older_copies_are_not_blamed() {
    let t0 = Instant::now();
    let mut t = tracker(t0);
    let mut headers = Vec::new();
    for i in 0..3000u64 {
        let h = t.start(t0 + ms(i));
        t.acked(h.seq, t0 + ms(i));
        assert!(
            matches!(t.received(&h.encode(64), t0 + ms(i)).as_slice(), [Event::Done(_)]),
            "probe {} back once is ok",
            h.seq
        );
        headers.push(h);
    }
    let last = headers[2999];
    assert_eq!(t.received(&last.encode(64), t0 + ms(3001)), [Event::Duplicate { seq: 3000 }]);
    let in_window = headers[3000 - 1024];
    assert_eq!(t.received(&in_window.encode(64), t0 + ms(3001)), [Event::Duplicate { seq: in_window.seq }]);
    // Slot reused by probe 2001, which was received: an older copy of 977 is not its duplicate.
    let too_old = headers[976];
    let events = t.received(&too_old.encode(64), t0 + ms(3001));
    assert!(
        matches!(events.as_slice(), [Event::Reorder { seq: 977 }, Event::Late { seq: 977, .. }]),
        "{events:?}"
    );
}
