//! The RabbitMQ management API, as node discovery reads it: the running nodes (`/api/nodes`)
//! and their AMQP listeners (`/api/overview`), over plain HTTP/1.1 with basic auth, on hyper's
//! client (already in the tree for the server side). One short connection per request.

use std::time::Duration;

use base64::Engine as _;
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;

/// Why the API gave no node list.
#[derive(Debug, thiserror::Error)]
pub enum ManagementError {
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no answer within {within:?}")]
    Timeout { path: &'static str, within: Duration },
    #[error("{path}: HTTP {status}{hint}")]
    Status { path: &'static str, status: u16, hint: &'static str },
    #[error("{path}: {reason}")]
    Http { path: &'static str, reason: String },
}

/// A running node and its AMQP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// `host:port` of its plain AMQP listener.
    pub amqp: String,
}

#[derive(serde::Deserialize)]
struct NodeInfo {
    name: String,
    #[serde(default)]
    running: bool,
}

#[derive(serde::Deserialize)]
struct Overview {
    #[serde(default)]
    listeners: Vec<Listener>,
}

#[derive(serde::Deserialize)]
struct Listener {
    node: String,
    protocol: String,
    ip_address: String,
    port: u16,
}

/// The running nodes of the cluster behind `address`, each with its AMQP listener; nodes
/// without one are left out. Each request is bounded by `within`.
pub async fn nodes(
    address: &str,
    user: &str,
    password: &str,
    within: Duration,
) -> Result<Vec<Node>, ManagementError> {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let nodes: Vec<NodeInfo> = get(address, "/api/nodes", &auth, within).await?;
    let overview: Overview = get(address, "/api/overview", &auth, within).await?;
    Ok(listeners(nodes, overview))
}

/// Pairs running nodes with their `amqp` listeners. A listener on every interface is reached by
/// the host of the node's name (`rabbit@host`).
fn listeners(nodes: Vec<NodeInfo>, overview: Overview) -> Vec<Node> {
    nodes
        .into_iter()
        .filter(|n| n.running)
        .filter_map(|n| {
            let l = overview.listeners.iter().find(|l| l.node == n.name && l.protocol == "amqp")?;
            let host = match l.ip_address.as_str() {
                "::" | "0.0.0.0" => n.name.split_once('@').map_or("localhost", |(_, h)| h).to_owned(),
                ip if ip.contains(':') => format!("[{ip}]"),
                ip => ip.to_owned(),
            };
            Some(Node { amqp: format!("{host}:{}", l.port), name: n.name })
        })
        .collect()
}

async fn get<T: serde::de::DeserializeOwned>(
    address: &str,
    path: &'static str,
    auth: &str,
    within: Duration,
) -> Result<T, ManagementError> {
    let http = |reason: String| ManagementError::Http { path, reason };
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|source| ManagementError::Connect { address: address.to_owned(), source })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http(e.to_string()))?;
        // Ends with the exchange: the request asks the server to close.
        let driver = tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, address)
            .header(hyper::header::AUTHORIZATION, format!("Basic {auth}"))
            .header(hyper::header::CONNECTION, "close")
            .body(String::new())
            .map_err(|e| http(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(|e| http(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| http(e.to_string()))?.to_bytes();
        driver.abort();
        if status != 200 {
            let hint = match status {
                401 => " (wrong user or password)",
                403 => " (the user needs the monitoring tag)",
                _ => "",
            };
            return Err(ManagementError::Status { path, status, hint });
        }
        serde_json::from_slice(&body).map_err(|e| http(format!("unexpected answer: {e}")))
    };
    tokio::time::timeout(within, exchange).await.unwrap_or(Err(ManagementError::Timeout { path, within }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_nodes_are_paired_with_their_amqp_listener() {
        let nodes: Vec<NodeInfo> = serde_json::from_str(
            r#"[{"name":"rabbit-a@localhost","running":true},{"name":"rabbit-b@h2","running":true},
                {"name":"rabbit-c@h3","running":false},{"name":"rabbit-d@h4","running":true}]"#,
        )
        .unwrap();
        let overview: Overview = serde_json::from_str(
            r#"{"listeners":[
                {"node":"rabbit-a@localhost","protocol":"amqp","ip_address":"127.0.0.1","port":5672},
                {"node":"rabbit-a@localhost","protocol":"http","ip_address":"::","port":15672},
                {"node":"rabbit-b@h2","protocol":"amqp","ip_address":"::","port":5673},
                {"node":"rabbit-c@h3","protocol":"amqp","ip_address":"::1","port":5674},
                {"node":"rabbit-d@h4","protocol":"amqp/ssl","ip_address":"::1","port":5671}]}"#,
        )
        .unwrap();
        let got: Vec<(String, String)> =
            listeners(nodes, overview).into_iter().map(|n| (n.name, n.amqp)).collect();
        assert_eq!(
            got,
            [
                ("rabbit-a@localhost".to_owned(), "127.0.0.1:5672".to_owned()),
                ("rabbit-b@h2".to_owned(), "h2:5673".to_owned()),
            ],
            "a stopped node and one without a plain AMQP listener are left out"
        );
    }
}
