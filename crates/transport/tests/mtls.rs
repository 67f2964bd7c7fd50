//! Mutual TLS: who may connect, and who may claim to be which node.
//!
//! A client whose certificate is refused may see `connect()` succeed (TLS 1.3 finishes the
//! client side first); the refusal then shows on the first stream operation. These tests accept
//! either, and check the server side never served the intruder.

mod common;

use common::*;
use ringkv_transport::{ClientEndpoint, FaultInjector, node_server_name};
use ringkv_types::{AdminRequest, NodeId, PeerIdentity, RaftBatch, Request, Response, codec};
use std::time::Duration;

/// Answers every request with the caller's identity as the transport computed it.
fn who_am_i() -> impl ringkv_transport::ClientHandler {
    |peer: PeerIdentity, _request: Request| async move {
        Response::Error(ringkv_types::WireError::InvalidRequest {
            reason: format!("{peer:?}"),
        })
    }
}

/// Mirrors the transport's private stream header (as `hostile.rs` does).
#[derive(serde::Serialize)]
enum StreamKind {
    Control,
}

#[derive(serde::Serialize)]
struct StreamHeader {
    kind: StreamKind,
    from: NodeId,
    to: NodeId,
    cluster: String,
}

async fn ask(connection: &quinn::Connection) -> Option<String> {
    let frame = codec::encode(&Request::Admin(AdminRequest::NodeStatus), 1 << 20).ok()?;
    let (mut send, mut recv) = connection.open_bi().await.ok()?;
    send.write_all(&frame).await.ok()?;
    send.finish().ok()?;
    let bytes = recv.read_to_end(1 << 20).await.ok()?;
    match codec::decode::<Response>(&bytes, 1 << 20).ok()? {
        Response::Error(ringkv_types::WireError::InvalidRequest { reason }) => Some(reason),
        other => Some(format!("{other:?}")),
    }
}

/// The transport hands the handler the identity the TLS session proves: a node certificate is
/// that node, a client certificate is its name, no certificate is anonymous (served, so that
/// token users can connect). Only a node certificate may open a Raft stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_learns_who_calls_and_only_nodes_speak_raft() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let ca = new_ca();
        let (node, mut inbound) =
            start_with_handler(config(2, loopback()), node_identity(&ca, 2), who_am_i());
        let addr = node.local_addr().unwrap();
        let name = node_server_name(NodeId(2), CLUSTER);
        let cases = [
            (Some(node_identity(&ca, 1)), "Node(n1)"),
            (
                Some(client_identity(&ca, "alice")),
                "ClientCert { name: \"alice\" }",
            ),
            (None, "Anonymous"),
        ];
        for (identity, expected) in cases {
            let present = identity.is_some();
            let identity = identity.unwrap_or_else(|| node_identity(&ca, 9));
            let endpoint = raw_client(&identity, present);
            let connection = endpoint.connect(addr, &name).unwrap().await.unwrap();
            assert_eq!(ask(&connection).await.as_deref(), Some(expected));
        }
        assert_eq!(node.stats().client_requests, 3);

        // A client certificate (or none) claiming to be node 1 on a Raft stream is refused.
        for present in [true, false] {
            let rejected = node.stats().peers_rejected;
            let endpoint = raw_client(&client_identity(&ca, "mallory"), present);
            let connection = endpoint.connect(addr, &name).unwrap().await.unwrap();
            let header = StreamHeader {
                kind: StreamKind::Control,
                from: NodeId(1),
                to: NodeId(2),
                cluster: CLUSTER.into(),
            };
            let mut stream = connection.open_uni().await.unwrap();
            stream
                .write_all(&codec::encode(&header, 1024).unwrap())
                .await
                .unwrap();
            let batch = RaftBatch::new(vec![heartbeat(1, 2, 0)]);
            let _ = stream
                .write_all(&codec::encode(&batch, 1 << 20).unwrap())
                .await;
            tokio::time::timeout(WAIT, connection.closed())
                .await
                .expect("a Raft stream without a node certificate was not closed");
            eventually("stream refused", || node.stats().peers_rejected > rejected).await;
        }
        assert!(
            recv_within(&mut inbound, Duration::from_millis(300))
                .await
                .is_none()
        );
        node.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_another_ca_are_refused() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let ca = new_ca();
        let other_ca = new_ca(); // same cluster name, different key
        let faults = FaultInjector::new();
        let (node_2, mut inbound_2) = start(config(2, loopback()), node_identity(&ca, 2), &faults);
        let addr_2 = node_2.local_addr().unwrap();

        // A node certified by another CA (but trusting ours, so only the server can refuse it)
        // cannot peer: the handshake fails on node 2's side.
        let mut intruder_identity = node_identity(&other_ca, 1);
        intruder_identity.ca = node_identity(&ca, 9).ca;
        let (intruder, _inbound) = start(config(1, loopback()), intruder_identity, &faults);
        intruder.add_peer(NodeId(2), addr_2);
        for context in 0..20 {
            let _ = intruder.send(NodeId(2), RaftBatch::new(vec![heartbeat(1, 2, context)]));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            recv_within(&mut inbound_2, Duration::from_millis(300))
                .await
                .is_none()
        );
        eventually("handshake refused", || {
            node_2.stats().handshake_failures >= 1
        })
        .await;
        assert_eq!(
            node_2.peer_stats(NodeId(1)),
            None,
            "node 2 never saw node 1"
        );

        // A node that trusts only the other CA refuses node 2 itself: the dial fails.
        let (stranger, _inbound) =
            start(config(1, loopback()), node_identity(&other_ca, 1), &faults);
        stranger.add_peer(NodeId(2), addr_2);
        let _ = stranger.send(NodeId(2), RaftBatch::new(vec![heartbeat(1, 2, 0)]));
        eventually("dial refused", || {
            stranger.peer_stats(NodeId(2)).unwrap().connect_failures >= 1
        })
        .await;
        assert!(!stranger.is_connected(NodeId(2)));
        stranger.shutdown().await;

        // A client certified by another CA (trusting ours) gets no answer.
        let mut mallory = client_identity(&other_ca, "mallory");
        mallory.ca = node_identity(&ca, 9).ca;
        let client = ClientEndpoint::new(&mallory, CLUSTER, loopback()).unwrap();
        let outcome = match client.connect(NodeId(2), addr_2).await {
            Err(_) => None,
            Ok(connection) => connection
                .call(&Request::Admin(AdminRequest::NodeStatus), WAIT)
                .await
                .ok(),
        };
        assert!(outcome.is_none(), "a client from another CA was served");
        assert_eq!(node_2.stats().client_requests, 0);
        intruder.shutdown().await;
        node_2.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_a_different_node_id_is_refused() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let ca = new_ca();
        let faults = FaultInjector::new();
        let (node_2, mut inbound_2) = start(config(2, loopback()), node_identity(&ca, 2), &faults);
        let addr_2 = node_2.local_addr().unwrap();

        // Node 3's certificate, claiming to be node 1: the stream header is refused.
        let (impostor, _inbound) = start(config(1, loopback()), node_identity(&ca, 3), &faults);
        impostor.add_peer(NodeId(2), addr_2);
        for context in 0..20 {
            let _ = impostor.send(NodeId(2), RaftBatch::new(vec![heartbeat(1, 2, context)]));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eventually("impostor rejected", || node_2.stats().peers_rejected >= 1).await;
        assert!(
            recv_within(&mut inbound_2, Duration::from_millis(300))
                .await
                .is_none()
        );
        impostor.shutdown().await;

        // Dialing "node 2" at an address where node 5's certificate answers fails the handshake.
        let (node_1, _inbound_1) = start(config(1, loopback()), node_identity(&ca, 1), &faults);
        let (wrong, mut wrong_inbound) =
            start(config(2, loopback()), node_identity(&ca, 5), &faults);
        node_1.add_peer(NodeId(2), wrong.local_addr().unwrap());
        for context in 0..20 {
            let _ = node_1.send(NodeId(2), RaftBatch::new(vec![heartbeat(1, 2, context)]));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eventually("dial failure", || {
            node_1.peer_stats(NodeId(2)).unwrap().connect_failures >= 1
        })
        .await;
        assert!(
            recv_within(&mut wrong_inbound, Duration::from_millis(300))
                .await
                .is_none()
        );
        assert!(!node_1.is_connected(NodeId(2)));

        // The genuine pair still works.
        node_1.add_peer(NodeId(2), addr_2);
        until_delivered(&node_1, 2, &mut inbound_2).await;
        node_1.shutdown().await;
        wrong.shutdown().await;
        node_2.shutdown().await;
    })
    .await
    .expect("test timed out");
}
