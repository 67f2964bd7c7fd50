//! Fakes for the tests of crates that talk to a cluster (this crate's, `ringctl`'s): nodes on
//! 127.0.0.1 with real QUIC and mutual TLS whose answers the test gives, and a client of them.
//! Compiled only with the `test-support` feature, which only dev-dependencies turn on.
#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    reason = "test fixtures: a failure is the test's failure"
)]

use crate::{Client, ClientConfig, Endpoint, TlsSource};
use ringkv_transport::certs::{ClusterCa, TlsIdentity, Validity};
use ringkv_transport::{Transport, TransportConfig};
use ringkv_types::{NodeId, PeerIdentity, Request, Response};
use std::net::SocketAddr;
use std::time::Duration;

/// Certificates of fakes are valid for a day.
pub fn validity() -> Validity {
    Validity::days_from_now(1)
}

/// Fake nodes: one transport each (its own certificate from [`FakeNodes::ca`]), answering every
/// client request with the test's function. Their transports stop when this is dropped.
pub struct FakeNodes {
    /// The cluster CA: issue client certificates with it.
    pub ca: ClusterCa,
    /// Every node's endpoint, in the order started (a stopped node's stays: it answers nothing).
    pub endpoints: Vec<Endpoint>,
    cluster: String,
    transports: Vec<(NodeId, Transport)>,
}

impl FakeNodes {
    /// Starts nodes `ids` of `cluster` on 127.0.0.1 (ephemeral ports), each transport
    /// configured by `adjust`, each answering `answer(node, request)`.
    pub fn start<A>(
        cluster: &str,
        ids: impl IntoIterator<Item = u64>,
        adjust: impl Fn(&mut TransportConfig),
        answer: A,
    ) -> Self
    where
        A: Fn(NodeId, Request) -> Response + Clone + Send + Sync + 'static,
    {
        let ca = ClusterCa::generate(cluster, validity()).unwrap();
        let mut transports = Vec::new();
        let mut endpoints = Vec::new();
        for id in ids {
            let node = NodeId(id);
            let pair = ca
                .issue_node(node, &["127.0.0.1".parse().unwrap()], validity())
                .unwrap();
            let identity = TlsIdentity::from_pem(ca.cert_pem(), &pair).unwrap();
            let mut config =
                TransportConfig::new(node, cluster, SocketAddr::from(([127, 0, 0, 1], 0)));
            adjust(&mut config);
            let answer = answer.clone();
            let handler = move |_peer: PeerIdentity, request: Request| {
                let response = answer(node, request);
                async move { response }
            };
            let (transport, _inbound) = Transport::builder(config, identity)
                .handler(handler)
                .start()
                .unwrap();
            endpoints.push(Endpoint {
                node,
                addr: transport.local_addr().unwrap().to_string(),
            });
            transports.push((node, transport));
        }
        Self {
            ca,
            endpoints,
            cluster: cluster.to_string(),
            transports,
        }
    }

    /// The address of `node`.
    pub fn addr(&self, node: NodeId) -> SocketAddr {
        let endpoint = self.endpoints.iter().find(|e| e.node == node).unwrap();
        endpoint.addr.parse().unwrap()
    }

    /// Stops `node`: its address answers nothing from now on.
    pub async fn stop(&mut self, node: NodeId) {
        if let Some(at) = self.transports.iter().position(|(id, _)| *id == node) {
            let (_, transport) = self.transports.remove(at);
            transport.shutdown().await;
        }
    }

    /// A client seeded with `seeds`, with short timeouts: 500 ms per attempt and dial, 5 s per
    /// call.
    pub async fn client(&self, seeds: Vec<Endpoint>) -> Client {
        let pair = self.ca.issue_client("ringctl", validity()).unwrap();
        let identity = TlsIdentity::from_pem(self.ca.cert_pem(), &pair).unwrap();
        let mut config = ClientConfig::new(seeds, &self.cluster, TlsSource::Identity(identity));
        config.bind_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.attempt_timeout = Duration::from_millis(500);
        config.connect_timeout = Duration::from_millis(500);
        config.request_timeout = Duration::from_secs(5);
        Client::connect(config).await.unwrap()
    }
}
