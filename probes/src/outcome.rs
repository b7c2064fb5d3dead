//! What one probe ended as, and the bounded error kinds that label failures.

use std::fmt;

/// Why a publish or a connection failed: a closed set, so it can label metrics. Built from
/// broker errors by the backends; never from error strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No answer in time.
    Timeout,
    /// The connection was refused or reset.
    Refused,
    /// Authentication or authorization failed.
    Auth,
    /// TLS handshake or certificate failure.
    Tls,
    /// The broker negatively acknowledged the message.
    Nack,
    /// The broker blocked publishers (RabbitMQ resource alarm).
    Blocked,
    /// Topic, partition, queue or vhost missing.
    NotFound,
    /// Any other error the broker reported.
    Broker,
    /// The client itself is unavailable (being rebuilt, shut down).
    Client,
    /// The consumer group's coordinator did not take the offset commit (Kafka group stage):
    /// consumers in groups are stuck while produce and fetch may still work.
    Coordinator,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::Timeout,
        ErrorKind::Refused,
        ErrorKind::Auth,
        ErrorKind::Tls,
        ErrorKind::Nack,
        ErrorKind::Blocked,
        ErrorKind::NotFound,
        ErrorKind::Broker,
        ErrorKind::Client,
        ErrorKind::Coordinator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Refused => "refused",
            ErrorKind::Auth => "auth",
            ErrorKind::Tls => "tls",
            ErrorKind::Nack => "nack",
            ErrorKind::Blocked => "blocked",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Broker => "broker",
            ErrorKind::Client => "client",
            ErrorKind::Coordinator => "coordinator",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The end of one probe. `late` is a failure too: a message back after its timeout is reported
/// on arrival, and the probe it belonged to has already ended as `lost`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    Late,
    Lost,
    PublishFailed(ErrorKind),
    ConnectFailed(ErrorKind),
    Corrupt,
}

/// The outcome names, the values of the `outcome` label.
pub const OUTCOME_NAMES: [&str; 6] = ["ok", "late", "lost", "publish_failed", "connect_failed", "corrupt"];

impl Outcome {
    /// Everything but `ok` counts against a cell.
    pub fn is_failure(&self) -> bool {
        !matches!(self, Outcome::Ok)
    }

    /// The `outcome` label value.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Late => "late",
            Outcome::Lost => "lost",
            Outcome::PublishFailed(_) => "publish_failed",
            Outcome::ConnectFailed(_) => "connect_failed",
            Outcome::Corrupt => "corrupt",
        }
    }

    /// The error kind of a failed publish or connection.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Outcome::PublishFailed(k) | Outcome::ConnectFailed(k) => Some(*k),
            _ => None,
        }
    }

    /// Parses an outcome name; failed publishes and connections get `kind` (or `broker`).
    pub fn from_name(name: &str, kind: Option<ErrorKind>) -> Option<Outcome> {
        let kind = kind.unwrap_or(ErrorKind::Broker);
        Some(match name {
            "ok" => Outcome::Ok,
            "late" => Outcome::Late,
            "lost" => Outcome::Lost,
            "publish_failed" => Outcome::PublishFailed(kind),
            "connect_failed" => Outcome::ConnectFailed(kind),
            "corrupt" => Outcome::Corrupt,
            _ => return None,
        })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            Some(kind) => write!(f, "{}{{kind={kind}}}", self.name()),
            None => f.write_str(self.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_only_ok_is_healthy() {
        for name in OUTCOME_NAMES {
            let o = Outcome::from_name(name, Some(ErrorKind::Blocked)).unwrap();
            assert_eq!(o.name(), name);
            assert_eq!(o.is_failure(), name != "ok");
        }
        assert_eq!(Outcome::from_name("fine", None), None);
        assert_eq!(Outcome::PublishFailed(ErrorKind::Blocked).to_string(), "publish_failed{kind=blocked}");
    }
}
