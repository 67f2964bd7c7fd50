//! Connection and request limits: peers keep slots clients cannot take, address validation,
//! permits and byte budgets taken before a request is buffered, response write timeouts,
//! clamped client timeouts, idle client connections, and the byte budget of the Raft queue.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use ringkv_transport::{ClientEndpoint, ClientHandler, FaultInjector, node_server_name};
use ringkv_types::raft::{Entry, EntryPayload, Message, MessageBody};
use ringkv_types::{
    Epoch, KvOp, KvRequest, KvResult, LogIndex, NodeId, PeerIdentity, RaftBatch, ReadConsistency,
    Request, Response, ShardId, Term, WireError, codec,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

fn get(key: Bytes, timeout_ms: u32) -> Request {
    Request::Kv(KvRequest {
        shard: ShardId(1),
        epoch: Epoch::default(),
        session: None,
        timeout_ms,
        op: KvOp::Get {
            key,
            consistency: ReadConsistency::Linearizable,
        },
    })
}

fn small() -> Request {
    get(Bytes::from_static(b"k"), 0)
}

/// Answers a `Get` with the key as value.
fn echo() -> impl ClientHandler {
    |_peer: PeerIdentity, request: Request| async move {
        match request {
            Request::Kv(KvRequest {
                op: KvOp::Get { key, .. },
                ..
            }) => Response::Kv(KvResult::Value {
                value: Some(key),
                applied: LogIndex(1),
            }),
            _ => Response::Error(WireError::InvalidRequest {
                reason: "only get".into(),
            }),
        }
    }
}

fn is_value(response: &Response) -> bool {
    matches!(response, Response::Kv(KvResult::Value { .. }))
}

/// A raw QUIC connection to node 1 at `addr` with a client certificate.
async fn raw_connection(
    ca: &ringkv_transport::certs::ClusterCa,
    addr: std::net::SocketAddr,
) -> (quinn::Endpoint, quinn::Connection) {
    let endpoint = raw_client(&client_identity(ca, "raw"), true);
    let connection = endpoint
        .connect(addr, &node_server_name(NodeId(1), CLUSTER))
        .unwrap()
        .await
        .unwrap();
    (endpoint, connection)
}

fn frame_of(request: &Request) -> Vec<u8> {
    let mut frame = Vec::new();
    codec::encode_into(request, &mut frame, 64 << 20).unwrap();
    frame
}

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .unwrap_or_else(|_| panic!("{what}: test timed out"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_lock_out_a_restarting_peer() {
    within("peer slots", async {
        let ca = new_ca();
        let faults = FaultInjector::new();
        // Node 2 accepts (the smaller id dials). Room for 4 connections, 2 of them clients.
        let mut config_2 = config(2, loopback());
        config_2.max_connections = 4;
        config_2.max_client_connections = 2;
        let (node_2, mut inbound_2) = start(config_2, node_identity(&ca, 2), &faults);
        let addr_2 = node_2.local_addr().unwrap();

        // Four clients: two get slots, two are closed after their handshake.
        let mut clients = Vec::new();
        let mut served = 0;
        for name in ["a", "b", "c", "d"] {
            let client =
                ClientEndpoint::new(&client_identity(&ca, name), CLUSTER, loopback()).unwrap();
            if let Ok(connection) = client.connect(NodeId(2), addr_2).await {
                // No handler: an admitted client is answered `Unavailable`.
                if connection.call(&small(), WAIT).await.is_ok() {
                    served += 1;
                }
                clients.push((client, connection));
            }
        }
        assert_eq!(
            served, 2,
            "exactly max_client_connections clients are served"
        );
        assert_eq!(node_2.stats().clients_refused, 2);

        // A peer still connects, and after a restart again.
        let (node_1, mut inbound_1) = start(config(1, loopback()), node_identity(&ca, 1), &faults);
        let addr_1 = node_1.local_addr().unwrap();
        node_1.add_peer(NodeId(2), addr_2);
        node_2.add_peer(NodeId(1), addr_1);
        until_delivered(&node_1, 2, &mut inbound_2).await;
        until_delivered(&node_2, 1, &mut inbound_1).await;
        node_1.shutdown().await;
        drop(inbound_1);
        let (node_1, mut inbound_1) =
            start_on(config(1, addr_1), node_identity(&ca, 1), &faults).await;
        node_1.add_peer(NodeId(2), addr_2);
        until_delivered(&node_1, 2, &mut inbound_2).await;
        until_delivered(&node_2, 1, &mut inbound_1).await;
        // The admitted clients still hold their slots: a new client is still refused.
        let late = ClientEndpoint::new(&client_identity(&ca, "e"), CLUSTER, loopback()).unwrap();
        if let Ok(connection) = late.connect(NodeId(2), addr_2).await {
            assert!(connection.call(&small(), WAIT).await.is_err());
        }
        assert_eq!(node_2.stats().clients_refused, 3);
        for (client, _) in clients {
            client.close_within(Duration::from_millis(100)).await;
        }
        node_1.shutdown().await;
        node_2.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_clients_validate_their_address_and_known_peers_do_not() {
    within("address validation", async {
        let ca = new_ca();
        let faults = FaultInjector::new();
        let (node_1, mut inbound_1) = start(config(1, loopback()), node_identity(&ca, 1), &faults);
        let (node_2, mut inbound_2) = start(config(2, loopback()), node_identity(&ca, 2), &faults);
        let (addr_1, addr_2) = (node_1.local_addr().unwrap(), node_2.local_addr().unwrap());
        node_1.add_peer(NodeId(2), addr_2);
        node_2.add_peer(NodeId(1), addr_1);
        until_delivered(&node_1, 2, &mut inbound_2).await;
        until_delivered(&node_2, 1, &mut inbound_1).await;
        assert_eq!(
            node_2.stats().address_validations,
            0,
            "a known peer is not retried"
        );

        let (node, _inbound) =
            start_with_handler(config(3, loopback()), node_identity(&ca, 3), echo());
        let client =
            ClientEndpoint::new(&client_identity(&ca, "app"), CLUSTER, loopback()).unwrap();
        let connection = client
            .connect(NodeId(3), node.local_addr().unwrap())
            .await
            .unwrap();
        assert!(is_value(&connection.call(&small(), WAIT).await.unwrap()));
        assert_eq!(node.stats().address_validations, 1);

        let mut off = config(4, loopback());
        off.client_address_validation = false;
        let (node_off, _inbound) = start_with_handler(off, node_identity(&ca, 4), echo());
        let connection = client
            .connect(NodeId(4), node_off.local_addr().unwrap())
            .await
            .unwrap();
        assert!(is_value(&connection.call(&small(), WAIT).await.unwrap()));
        assert_eq!(node_off.stats().address_validations, 0);
        client.close_within(Duration::from_millis(100)).await;
        for node in [node_1, node_2, node, node_off] {
            node.shutdown().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_takes_its_permit_before_it_is_read_and_stalled_requests_time_out() {
    within("permit before read", async {
        let ca = new_ca();
        let mut node_config = config(1, loopback());
        node_config.client_inflight_max = 1;
        node_config.client_read_timeout = Duration::from_millis(500);
        let (node, _inbound) = start_with_handler(node_config, node_identity(&ca, 1), echo());
        let addr = node.local_addr().unwrap();
        // A stream that sends three bytes of its request and stalls.
        let (raw_endpoint, raw) = raw_connection(&ca, addr).await;
        let (mut send, mut recv) = raw.open_bi().await.unwrap();
        send.write_all(&frame_of(&small())[..3]).await.unwrap();

        let client =
            ClientEndpoint::new(&client_identity(&ca, "app"), CLUSTER, loopback()).unwrap();
        let connection = client.connect(NodeId(1), addr).await.unwrap();
        // While it holds the permit, others are answered `Busy`.
        assert!(busy_within(&connection, &small()).await);
        // After the read timeout the stalled stream is reset and the permit is free.
        let reset = recv.read_to_end(1 << 20).await;
        assert!(reset.is_err(), "the stalled stream is reset: {reset:?}");
        assert_eq!(node.stats().client_read_timeouts, 1);
        assert!(is_value(&connection.call(&small(), WAIT).await.unwrap()));
        raw_endpoint.close(0u32.into(), b"");
        client.close_within(Duration::from_millis(100)).await;
        node.shutdown().await;
    })
    .await;
}

/// Whether calls of `request` are answered `Busy` within a second.
async fn busy_within(connection: &ringkv_transport::ClientConnection, request: &Request) -> bool {
    for _ in 0..100 {
        if connection.call(request, WAIT).await.unwrap() == Response::Error(WireError::Busy) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bytes_beyond_the_budget_are_busy_before_they_are_buffered() {
    within("byte budget", async {
        let ca = new_ca();
        let mut node_config = config(1, loopback());
        node_config.max_frame_bytes = 1 << 20;
        node_config.snapshot_chunk_bytes = 256 << 10;
        node_config.client_inbound_bytes_max = 1 << 20;
        let (node, _inbound) = start_with_handler(node_config, node_identity(&ca, 1), echo());
        let addr = node.local_addr().unwrap();
        // A request of 900 kB whose first bytes arrive and the rest is held back.
        let big = frame_of(&get(Bytes::from(vec![1u8; 900_000]), 0));
        let (raw_endpoint, raw) = raw_connection(&ca, addr).await;
        let (mut send, mut recv) = raw.open_bi().await.unwrap();
        send.write_all(&big[..100]).await.unwrap();

        let client =
            ClientEndpoint::new(&client_identity(&ca, "app"), CLUSTER, loopback()).unwrap();
        let connection = client.connect(NodeId(1), addr).await.unwrap();
        // 200 kB more do not fit in the 1 MiB budget; a small request does.
        let medium = get(Bytes::from(vec![2u8; 200_000]), 0);
        assert!(busy_within(&connection, &medium).await);
        assert!(node.stats().client_bytes_busy >= 1);
        assert!(is_value(&connection.call(&small(), WAIT).await.unwrap()));
        // Once the big request completes, its bytes are released.
        send.write_all(&big[100..]).await.unwrap();
        send.finish().unwrap();
        let answer = recv.read_to_end(2 << 20).await.unwrap();
        let answer: Response = codec::decode(&answer, 2 << 20).unwrap();
        assert!(is_value(&answer));
        assert!(is_value(&connection.call(&medium, WAIT).await.unwrap()));
        raw_endpoint.close(0u32.into(), b"");
        client.close_within(Duration::from_millis(100)).await;
        node.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_its_response_loses_the_stream() {
    within("write timeout", async {
        let ca = new_ca();
        let mut node_config = config(1, loopback());
        node_config.client_inflight_max = 1;
        node_config.client_write_timeout = Duration::from_millis(300);
        // A 12 MiB answer: more than the 8 MiB stream window, so writing it needs a reader.
        let handler = |_peer: PeerIdentity, _request: Request| async move {
            Response::Kv(KvResult::Value {
                value: Some(Bytes::from(vec![3u8; 12 << 20])),
                applied: LogIndex(1),
            })
        };
        let (node, _inbound) = start_with_handler(node_config, node_identity(&ca, 1), handler);
        let addr = node.local_addr().unwrap();
        let (raw_endpoint, raw) = raw_connection(&ca, addr).await;
        let (mut send, mut recv) = raw.open_bi().await.unwrap();
        send.write_all(&frame_of(&small())).await.unwrap();
        send.finish().unwrap();
        // Not reading: the write times out and the stream is reset.
        eventually("the response write times out", || {
            node.stats().client_write_timeouts == 1
        })
        .await;
        let read = recv.read_to_end(16 << 20).await;
        assert!(read.is_err(), "the unread response is reset, not delivered");
        // The permit it held is free again.
        let client =
            ClientEndpoint::new(&client_identity(&ca, "app"), CLUSTER, loopback()).unwrap();
        let connection = client.connect(NodeId(1), addr).await.unwrap();
        assert!(is_value(&connection.call(&small(), WAIT).await.unwrap()));
        raw_endpoint.close(0u32.into(), b"");
        client.close_within(Duration::from_millis(100)).await;
        node.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requested_timeout_is_clamped_to_client_timeout_max() {
    within("timeout clamp", async {
        let ca = new_ca();
        let mut node_config = config(1, loopback());
        node_config.client_request_timeout = Duration::from_millis(100);
        node_config.client_timeout_max = Duration::from_millis(300);
        let seen = Arc::new(AtomicU32::new(0));
        let handler = {
            let seen = seen.clone();
            move |_peer: PeerIdentity, request: Request| {
                if let Request::Kv(kv) = &request {
                    seen.store(kv.timeout_ms, Ordering::SeqCst);
                }
                std::future::pending::<Response>()
            }
        };
        let (node, _inbound) = start_with_handler(node_config, node_identity(&ca, 1), handler);
        let client =
            ClientEndpoint::new(&client_identity(&ca, "app"), CLUSTER, loopback()).unwrap();
        let connection = client
            .connect(NodeId(1), node.local_addr().unwrap())
            .await
            .unwrap();
        // Ten minutes asked for; the server gives up after 300 ms.
        let response = connection
            .call(&get(Bytes::from_static(b"k"), 600_000), WAIT)
            .await
            .unwrap();
        assert_eq!(response, Response::Error(WireError::Timeout));
        assert_eq!(
            seen.load(Ordering::SeqCst),
            300,
            "the handler sees the clamped value"
        );
        client.close_within(Duration::from_millis(100)).await;
        node.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_client_connections_are_closed_and_peer_links_are_not() {
    within("idle clients", async {
        let ca = new_ca();
        let faults = FaultInjector::new();
        let idle = |id: u64| {
            let mut config = config(id, loopback());
            config.client_idle_timeout = Duration::from_millis(300);
            config
        };
        let (node_1, mut inbound_1) = start_with_handler(idle(1), node_identity(&ca, 1), echo());
        let (node_2, mut inbound_2) = start(idle(2), node_identity(&ca, 2), &faults);
        let (addr_1, addr_2) = (node_1.local_addr().unwrap(), node_2.local_addr().unwrap());
        node_1.add_peer(NodeId(2), addr_2);
        node_2.add_peer(NodeId(1), addr_1);
        until_delivered(&node_1, 2, &mut inbound_2).await;

        let (raw_endpoint, raw) = raw_connection(&ca, addr_1).await;
        let (mut send, recv) = raw.open_bi().await.unwrap();
        send.write_all(&frame_of(&small())).await.unwrap();
        send.finish().unwrap();
        let mut recv = recv;
        assert!(recv.read_to_end(1 << 20).await.is_ok());
        // The QUIC idle timeout is 30 s; the server closes the connection long before.
        let reason = tokio::time::timeout(WAIT, raw.closed()).await.unwrap();
        assert!(
            matches!(&reason, quinn::ConnectionError::ApplicationClosed(close)
                if close.error_code == quinn::VarInt::from_u32(0x13)),
            "closed as idle: {reason}"
        );
        assert_eq!(node_1.stats().client_idle_closed, 1);
        // The peer link, idle as far as requests go, stays up.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(node_1.is_connected(NodeId(2)));
        assert_eq!(node_2.peer_stats(NodeId(1)).unwrap().reconnects, 0);
        until_delivered(&node_2, 1, &mut inbound_1).await;
        raw_endpoint.close(0u32.into(), b"");
        node_1.shutdown().await;
        node_2.shutdown().await;
    })
    .await;
}

/// An append carrying one entry of `bytes` bytes.
fn big_append(from: u64, to: u64, index: u64, bytes: usize) -> Message {
    Message {
        group: ShardId(1),
        from: NodeId(from),
        to: NodeId(to),
        term: Term(1),
        body: MessageBody::Append {
            prev_index: LogIndex(index - 1),
            prev_term: Term(1),
            entries: vec![Entry {
                term: Term(1),
                index: LogIndex(index),
                payload: EntryPayload::Normal(Bytes::from(vec![7u8; bytes])),
            }],
            commit: LogIndex(0),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raft_inbound_queue_is_bounded_in_bytes() {
    within("raft byte budget", async {
        let ca = new_ca();
        let faults = FaultInjector::new();
        let bounded = |id: u64| {
            let mut config = config(id, loopback());
            config.max_frame_bytes = 1 << 20;
            config.snapshot_chunk_bytes = 256 << 10;
            config.raft_inbound_bytes_max = 1 << 20;
            config.client_inbound_bytes_max = 1 << 20;
            config
        };
        let (node_1, _inbound_1) = start(bounded(1), node_identity(&ca, 1), &faults);
        let (node_2, mut inbound_2) = start(bounded(2), node_identity(&ca, 2), &faults);
        node_1.add_peer(NodeId(2), node_2.local_addr().unwrap());
        node_2.add_peer(NodeId(1), node_1.local_addr().unwrap());
        until_delivered(&node_1, 2, &mut inbound_2).await;
        // 40 batches of 100 kB (4 MB) while node 2 reads nothing: far below the 1024-batch
        // bound, four times the byte budget.
        for index in 1..=40 {
            let batch = RaftBatch::new(vec![big_append(1, 2, index, 100_000)]);
            let _ = node_1.send(NodeId(2), batch);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        eventually("batches beyond the budget are dropped", || {
            node_2.stats().raft_inbound_budget_drops > 0
        })
        .await;
        assert!(inbound_2.raft.queued_bytes() <= 1 << 20);
        assert!(node_2.peer_stats(NodeId(1)).unwrap().receive_drops > 0);
        // Reading frees the budget.
        while inbound_2.raft.try_recv().is_ok() {}
        assert_eq!(inbound_2.raft.queued_bytes(), 0);
        until_delivered(&node_1, 2, &mut inbound_2).await;
        node_1.shutdown().await;
        node_2.shutdown().await;
    })
    .await;
}
