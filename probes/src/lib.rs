//! Broker I/O for crossprobe.
//!
//! This crate knows how to talk to brokers and nothing about when to probe or what a failure
//! means: scheduling, timeouts, correlation and metrics live in the daemon.
//!
//! - [`Protocol`]: the closed set of broker protocols a target can speak.
//! - [`outcome`]: what a probe ended as, and the bounded error kinds of failures.
//! - [`payload`]: the probe message codec: identity, send time, checksum, padding.
//! - [`tracker`]: per-cell bookkeeping that turns publishes and receipts into outcomes.
//! - [`backend`]: the broker I/O contract: acknowledged publish, deliveries back.
//! - [`kafka`]: the rdkafka backend.
//! - [`amqp`]: the lapin backend.
//! - [`retry`]: when a client that lost its broker tries again (never later than the probe
//!   interval).

#![forbid(unsafe_code)]

pub mod amqp;
pub mod backend;
pub mod kafka;
pub mod outcome;
pub mod payload;
pub mod retry;
pub mod tracker;

use std::fmt;
use std::str::FromStr;

pub use outcome::{ErrorKind, Outcome};

/// Percent-encodes a URI component (RFC 3986: everything but the unreserved characters), for
/// AMQP URIs here and the daemon's HTTP queries.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Wire protocol of a target; also the value of the `protocol` dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Kafka,
    Amqp,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Protocol::Kafka, Protocol::Amqp];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Kafka => "kafka",
            Protocol::Amqp => "amqp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The protocol name was neither `kafka` nor `amqp`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol \"{0}\" (expected \"kafka\" or \"amqp\")")]
pub struct UnknownProtocol(pub String);

impl FromStr for Protocol {
    type Err = UnknownProtocol;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Protocol::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| UnknownProtocol(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_round_trips_through_its_name() {
        for p in Protocol::ALL {
            assert_eq!(p.as_str().parse::<Protocol>(), Ok(p));
        }
        assert_eq!("mqtt".parse::<Protocol>(), Err(UnknownProtocol("mqtt".into())));
    }
}
