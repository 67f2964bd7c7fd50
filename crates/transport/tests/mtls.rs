//! Mutual TLS: who may connect, and who may claim to be which node.
//!
//! A client whose certificate is refused may see `connect()` succeed (TLS 1.3 finishes the
//! client side first); the refusal then shows on the first stream operation. These tests accept
//! either, and check the server side never served the intruder.

mod common;

use common::*;
use ringkv_transport::{ClientEndpoint, FaultInjector, node_server_name};
use ringkv_types::{AdminRequest, NodeId, RaftBatch, Request, Response};
use std::time::Duration;

fn answer_everything() -> impl ringkv_transport::ClientHandler {
    |_request: Request| async { Response::Error(ringkv_types::WireError::Busy) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let ca = new_ca();
        let identity = node_identity(&ca, 1);
        let (node, _inbound) =
            start_with_handler(config(1, loopback()), identity.clone(), answer_everything());
        let endpoint = raw_client(&identity, false);
        let name = node_server_name(NodeId(1), CLUSTER);
        let served = match endpoint
            .connect(node.local_addr().unwrap(), &name)
            .unwrap()
            .await
        {
            Err(_) => false,
            Ok(connection) => {
                let attempt = async {
                    let (mut send, mut recv) = connection.open_bi().await.ok()?;
                    send.write_all(b"hello").await.ok()?;
                    send.finish().ok()?;
                    recv.read_to_end(1024).await.ok()
                };
                tokio::time::timeout(WAIT, attempt)
                    .await
                    .expect("refusal not noticed")
                    .is_some()
            }
        };
        assert!(!served, "a client without a certificate was served");
        eventually("handshake failure counted", || {
            node.stats().handshake_failures >= 1
        })
        .await;
        assert_eq!(node.stats().client_requests, 0);
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
