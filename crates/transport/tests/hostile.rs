//! Hostile bytes from authenticated parties: the node closes the offending connection or
//! answers `InvalidRequest`, never panics, and keeps serving everyone else.

mod common;

use common::*;
use ringkv_transport::{FaultInjector, node_server_name};
use ringkv_types::envelope::FORMAT_VERSION;
use ringkv_types::{NodeId, Response, WireError, codec};
use serde::Serialize;
use std::time::Duration;

/// Mirrors the transport's private stream header; also pins its wire layout.
#[derive(Serialize)]
enum StreamKind {
    Control,
}

#[derive(Serialize)]
struct StreamHeader {
    kind: StreamKind,
    from: NodeId,
    to: NodeId,
    cluster: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_peer_stream_closes_only_that_connection() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let ca = new_ca();
        let faults = FaultInjector::new();
        let (node_2, mut inbound_2) = start(config(2, loopback()), node_identity(&ca, 2), &faults);
        let addr_2 = node_2.local_addr().unwrap();
        let header = StreamHeader {
            kind: StreamKind::Control,
            from: NodeId(1),
            to: NodeId(2),
            cluster: CLUSTER.into(),
        };
        let header_frame = codec::encode(&header, 1024).unwrap();
        let mut oversized = vec![FORMAT_VERSION];
        oversized.extend_from_slice(&u32::MAX.to_le_bytes());
        oversized.extend_from_slice(&[0; 4]);
        let undecodable = ringkv_types::envelope::encode(&[0xff; 32]);
        for garbage in [oversized, undecodable] {
            let endpoint = raw_client(&node_identity(&ca, 1), true);
            let name = node_server_name(NodeId(2), CLUSTER);
            let connection = endpoint.connect(addr_2, &name).unwrap().await.unwrap();
            let mut stream = connection.open_uni().await.unwrap();
            stream.write_all(&header_frame).await.unwrap();
            stream.write_all(&garbage).await.unwrap();
            let reason = tokio::time::timeout(WAIT, connection.closed()).await.expect("connection not closed");
            assert!(
                matches!(reason, quinn::ConnectionError::ApplicationClosed(ref close) if close.error_code == 0x11u32.into()),
                "unexpected close: {reason}"
            );
        }
        // The node still talks to the genuine node 1.
        let (node_1, _inbound_1) = start(config(1, loopback()), node_identity(&ca, 1), &faults);
        node_1.add_peer(NodeId(2), addr_2);
        until_delivered(&node_1, 2, &mut inbound_2).await;
        node_1.shutdown().await;
        node_2.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_client_requests_are_answered_invalid() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let ca = new_ca();
        let handler = |_peer, _request| async { Response::Error(WireError::Busy) };
        let (node, _inbound) =
            start_with_handler(config(1, loopback()), node_identity(&ca, 1), handler);
        let endpoint = raw_client(&client_identity(&ca, "fuzzer"), true);
        let name = node_server_name(NodeId(1), CLUSTER);
        let connection = endpoint
            .connect(node.local_addr().unwrap(), &name)
            .unwrap()
            .await
            .unwrap();
        let inputs: [&[u8]; 3] = [b"", b"\x01\x00\x00\x00\x00\x00\x00\x00\x00", &[0xee; 300]];
        for input in inputs {
            let (mut send, mut recv) = connection.open_bi().await.unwrap();
            send.write_all(input).await.unwrap();
            send.finish().unwrap();
            let bytes = tokio::time::timeout(WAIT, recv.read_to_end(1 << 20))
                .await
                .unwrap()
                .unwrap();
            let response: Response = codec::decode(&bytes, 1 << 20).unwrap();
            assert!(
                matches!(response, Response::Error(WireError::InvalidRequest { .. })),
                "{response:?}"
            );
        }
        assert_eq!(node.stats().client_requests, 0);
        node.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_stream_reset_before_its_header_keeps_the_connection() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let ca = new_ca();
        let faults = FaultInjector::new();
        let (node_2, mut inbound_2) = start(config(2, loopback()), node_identity(&ca, 2), &faults);
        let endpoint = raw_client(&node_identity(&ca, 1), true);
        let name = node_server_name(NodeId(2), CLUSTER);
        let connection = endpoint
            .connect(node_2.local_addr().unwrap(), &name)
            .unwrap()
            .await
            .unwrap();
        let header = StreamHeader {
            kind: StreamKind::Control,
            from: NodeId(1),
            to: NodeId(2),
            cluster: CLUSTER.into(),
        };
        let mut control = connection.open_uni().await.unwrap();
        control
            .write_all(&codec::encode(&header, 1024).unwrap())
            .await
            .unwrap();
        for round in 1..=5 {
            // A stream that arrives as a bare reset: QUIC discards its data, header included.
            let mut abandoned = connection.open_uni().await.unwrap();
            abandoned.reset(0x20u32.into()).unwrap();
            let batch = ringkv_types::RaftBatch::new(vec![heartbeat(1, 2, round)]);
            control
                .write_all(&codec::encode(&batch, 1 << 20).unwrap())
                .await
                .unwrap();
            let delivered = recv_within(&mut inbound_2, WAIT)
                .await
                .unwrap_or_else(|| panic!("round {round}: heartbeat not delivered"));
            assert_eq!(context_of(&delivered.messages[0]), Some(round));
        }
        assert!(
            connection.close_reason().is_none(),
            "{:?}",
            connection.close_reason()
        );
        assert_eq!(node_2.stats().peers_rejected, 0);
        node_2.shutdown().await;
    })
    .await
    .expect("test timed out");
}
