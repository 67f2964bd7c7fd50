//! The embedded smart client every HTTP request is executed through.
//!
//! It dials the cluster with the node's own certificate, exactly as an external client would:
//! its own QUIC endpoint and connections, no shared state with the event loop (a request
//! waiting on its answer can never hold anything the loop needs). So any node serves any key:
//! the client routes to the shard's leader, follows `NotLeader` hints, retries within its
//! budget and keeps writes exactly-once with its sessions.
//!
//! It connects lazily (the first request after start, or after a failed attempt), since the
//! cluster may not be up when the node starts.

use super::error::ApiError;
use crate::config::NodeConfig;
use ringkv_client::{Client, ClientConfig, Endpoint, TlsSource};
use ringkv_transport::certs::TlsIdentity;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::sync::Mutex;

/// The lazily connected client.
pub(super) struct Forwarder {
    /// The configuration and, once connected, the client; a certificate reload swaps the
    /// identity and drops the client (requests in flight keep their clone).
    state: Mutex<(ClientConfig, Option<Client>)>,
}

impl Forwarder {
    /// A forwarder that will seed from this node and the initial cluster.
    pub(super) fn new(node: &NodeConfig, identity: &TlsIdentity) -> Self {
        let own = Endpoint {
            node: node.node_id,
            addr: dialable(node.listen_addr).to_string(),
        };
        let mut endpoints = vec![own];
        endpoints.extend(
            node.initial_cluster
                .iter()
                .filter(|e| e.node != node.node_id)
                .map(|e| Endpoint {
                    node: e.node,
                    addr: e.addr.clone(),
                }),
        );
        let mut config = ClientConfig::new(
            endpoints,
            node.cluster.clone(),
            TlsSource::Identity(identity.clone()),
        );
        let budget = Duration::from_millis(node.limits.client_request_timeout_ms);
        config.request_timeout = budget;
        config.attempt_timeout = budget.min(Duration::from_secs(2));
        config.connect_timeout = budget.min(Duration::from_secs(2));
        config.bind_addr = match node.listen_addr.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            IpAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            IpAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        };
        Self {
            state: Mutex::new((config, None)),
        }
    }

    /// The connected client, connecting first if needed.
    pub(super) async fn client(&self) -> Result<Client, ApiError> {
        let mut state = self.state.lock().await;
        if let Some(client) = &state.1 {
            return Ok(client.clone());
        }
        let client = Client::connect(state.0.clone())
            .await
            .map_err(|error| ApiError::unavailable(format!("cannot reach the cluster: {error}")))?;
        state.1 = Some(client.clone());
        Ok(client)
    }

    /// Presents `identity` and trusts its CAs from the next request on (a new client).
    pub(super) async fn reload(&self, identity: &TlsIdentity) {
        let mut state = self.state.lock().await;
        state.0.tls = TlsSource::Identity(identity.clone());
        state.1 = None;
    }
}

/// The address to dial this node at: its listen address, with a wildcard IP made loopback.
fn dialable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, listen.port()))
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, listen.port()))
        }
        _ => listen,
    }
}
