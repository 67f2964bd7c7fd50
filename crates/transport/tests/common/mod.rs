//! Helpers shared by the transport integration tests: an in-memory CA, node configs on
//! 127.0.0.1, Raft messages with recognisable contents, and bounded waits.
#![allow(dead_code, missing_docs)]
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failure is a test failure"
)]

use bytes::Bytes;
use ringkv_transport::certs::{ClusterCa, TlsIdentity, Validity};
use ringkv_transport::{ClientHandler, FaultInjector, Inbound, Transport, TransportConfig};
use ringkv_types::raft::{Entry, EntryPayload, Message, MessageBody};
use ringkv_types::{LogIndex, NodeId, RaftBatch, ShardId, Term};
use std::net::SocketAddr;
use std::time::Duration;

pub const CLUSTER: &str = "test";
/// Upper bound for any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn validity() -> Validity {
    Validity::days_from_now(1)
}

pub fn new_ca() -> ClusterCa {
    ClusterCa::generate(CLUSTER, validity()).unwrap()
}

pub fn node_identity(ca: &ClusterCa, id: u64) -> TlsIdentity {
    let pair = ca
        .issue_node(NodeId(id), &["127.0.0.1".parse().unwrap()], validity())
        .unwrap();
    TlsIdentity::from_pem(ca.cert_pem(), &pair).unwrap()
}

pub fn client_identity(ca: &ClusterCa, name: &str) -> TlsIdentity {
    let pair = ca.issue_client(name, validity()).unwrap();
    TlsIdentity::from_pem(ca.cert_pem(), &pair).unwrap()
}

pub fn loopback() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

pub fn config(id: u64, bind: SocketAddr) -> TransportConfig {
    let mut config = TransportConfig::new(NodeId(id), CLUSTER, bind);
    config.reconnect_backoff_min = Duration::from_millis(20);
    config.reconnect_backoff_max = Duration::from_millis(200);
    config
}

pub fn start(
    config: TransportConfig,
    identity: TlsIdentity,
    faults: &FaultInjector,
) -> (Transport, Inbound) {
    Transport::builder(config, identity)
        .faults(faults.clone())
        .start()
        .unwrap()
}

pub fn start_with_handler(
    config: TransportConfig,
    identity: TlsIdentity,
    handler: impl ClientHandler,
) -> (Transport, Inbound) {
    Transport::builder(config, identity)
        .handler(handler)
        .start()
        .unwrap()
}

/// Starts a transport on `bind`, retrying while the port is still held by a previous instance.
pub async fn start_on(
    config: TransportConfig,
    identity: TlsIdentity,
    faults: &FaultInjector,
) -> (Transport, Inbound) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match Transport::builder(config.clone(), identity.clone())
            .faults(faults.clone())
            .start()
        {
            Ok(started) => return started,
            Err(error) if tokio::time::Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("cannot rebind: {error}"),
        }
    }
}

pub fn heartbeat(from: u64, to: u64, context: u64) -> Message {
    Message {
        group: ShardId(1),
        from: NodeId(from),
        to: NodeId(to),
        term: Term(1),
        body: MessageBody::Heartbeat {
            commit: LogIndex(0),
            context,
        },
    }
}

/// An append carrying one entry at `index` with a 100-byte payload.
pub fn append(from: u64, to: u64, index: u64) -> Message {
    Message {
        group: ShardId(1),
        from: NodeId(from),
        to: NodeId(to),
        term: Term(1),
        body: MessageBody::Append {
            prev_index: LogIndex(index.saturating_sub(1)),
            prev_term: Term(1),
            entries: vec![Entry {
                term: Term(1),
                index: LogIndex(index),
                payload: EntryPayload::Normal(Bytes::from(vec![7u8; 100])),
            }],
            commit: LogIndex(0),
        },
    }
}

pub fn context_of(message: &Message) -> Option<u64> {
    match message.body {
        MessageBody::Heartbeat { context, .. } => Some(context),
        _ => None,
    }
}

/// The next batch, or `None` after `limit`.
pub async fn recv_within(inbound: &mut Inbound, limit: Duration) -> Option<RaftBatch> {
    tokio::time::timeout(limit, inbound.raft.recv())
        .await
        .ok()
        .flatten()
}

/// Sends heartbeats from `from` to `to` every 20 ms until one arrives (within [`WAIT`]).
pub async fn until_delivered(sender: &Transport, to: u64, receiver: &mut Inbound) -> RaftBatch {
    let from = sender.node_id().get();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut context = 0;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no traffic from {from} to {to} within {WAIT:?}"
        );
        context += 1;
        let _ = sender.send(
            NodeId(to),
            RaftBatch::new(vec![heartbeat(from, to, context)]),
        );
        if let Some(batch) = recv_within(receiver, Duration::from_millis(20)).await {
            return batch;
        }
    }
}

/// Waits until `condition` holds, polling every 10 ms, for at most [`WAIT`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A bare quinn client endpoint presenting `identity` (or no certificate), for tests that speak
/// the wire protocol by hand.
pub fn raw_client(identity: &TlsIdentity, present_certificate: bool) -> quinn::Endpoint {
    use std::sync::Arc;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in identity.trust_roots() {
        roots.add(ca.clone()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut tls = if present_certificate {
        builder
            .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
            .unwrap()
    } else {
        builder.with_no_client_auth()
    };
    tls.alpn_protocols = vec![ringkv_transport::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client(loopback()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}
