//! Peer links: delivery in order, both directions, reconnection after restarts, snapshots,
//! bounded queues.

mod common;

use common::*;
use ringkv_transport::{FaultInjector, SendOutcome};
use ringkv_types::raft::{MessageBody, Snapshot, SnapshotMeta};
use ringkv_types::{LogIndex, NodeId, RaftBatch, ShardId, Term};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_arrive_in_order_on_each_stream_in_both_directions() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let ca = new_ca();
        let faults = FaultInjector::new();
        let mut config_1 = config(1, loopback());
        let mut config_2 = config(2, loopback());
        for config in [&mut config_1, &mut config_2] {
            config.peer_queue_batches_max = 10_000;
            config.raft_inbound_batches_max = 10_000;
        }
        let (node_1, mut inbound_1) = start(config_1, node_identity(&ca, 1), &faults);
        let (node_2, mut inbound_2) = start(config_2, node_identity(&ca, 2), &faults);
        node_1.add_peer(NodeId(2), node_2.local_addr().unwrap());
        node_2.add_peer(NodeId(1), node_1.local_addr().unwrap());
        until_delivered(&node_1, 2, &mut inbound_2).await;
        // Drain whatever probes are still in flight.
        while recv_within(&mut inbound_2, Duration::from_millis(100))
            .await
            .is_some()
        {}

        const COUNT: u64 = 3000;
        for i in 1..=COUNT {
            // Appends go on the bulk stream, heartbeats on the control stream.
            let batch = RaftBatch::new(vec![append(1, 2, i), heartbeat(1, 2, 1_000_000 + i)]);
            assert_eq!(node_1.send(NodeId(2), batch), SendOutcome::Queued);
            assert_eq!(
                node_2.send(NodeId(1), RaftBatch::new(vec![heartbeat(2, 1, i)])),
                SendOutcome::Queued
            );
        }
        let (mut last_index, mut last_context, mut messages) = (0, 1_000_000, 0);
        while messages < 2 * COUNT {
            let batch = recv_within(&mut inbound_2, WAIT)
                .await
                .expect("messages stopped arriving");
            for message in batch.messages {
                messages += 1;
                match message.body {
                    MessageBody::Append { entries, .. } => {
                        let index = entries[0].index.get();
                        assert_eq!(index, last_index + 1, "bulk stream out of order");
                        last_index = index;
                    }
                    MessageBody::Heartbeat { context, .. } => {
                        assert_eq!(context, last_context + 1, "control stream out of order");
                        last_context = context;
                    }
                    other => panic!("unexpected {}", other.kind()),
                }
            }
        }
        let mut last_back = 0;
        while last_back < COUNT {
            let batch = recv_within(&mut inbound_1, WAIT)
                .await
                .expect("replies stopped arriving");
            for message in &batch.messages {
                let context = context_of(message).unwrap();
                // The first few may be probes that raced the connection; after that, strictly in order.
                assert_eq!(
                    context,
                    last_back + 1,
                    "accepting side's stream out of order"
                );
                last_back = context;
            }
        }
        let stats = node_1.peer_stats(NodeId(2)).unwrap();
        assert_eq!(stats.send_drops, 0);
        assert!(stats.messages_sent >= 2 * COUNT && stats.bytes_sent > 0);
        assert_eq!(node_2.peer_stats(NodeId(1)).unwrap().receive_drops, 0);
        node_1.shutdown().await;
        node_2.shutdown().await;
    })
    .await
    .expect("test timed out");
}

/// Peers added by `host:port` with a DNS name (`localhost`) are resolved by the dialer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_added_by_dns_name_are_dialed() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let ca = new_ca();
        let faults = FaultInjector::new();
        let (node_1, _inbound_1) = start(config(1, loopback()), node_identity(&ca, 1), &faults);
        let (node_2, mut inbound_2) = start(config(2, loopback()), node_identity(&ca, 2), &faults);
        let port_1 = node_1.local_addr().unwrap().port();
        let port_2 = node_2.local_addr().unwrap().port();
        node_1.add_peer(NodeId(2), format!("localhost:{port_2}"));
        node_2.add_peer(NodeId(1), format!("localhost:{port_1}"));
        until_delivered(&node_1, 2, &mut inbound_2).await;
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_peers_are_reconnected_and_traffic_resumes() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let ca = new_ca();
        let faults = FaultInjector::new();
        let (node_1, mut inbound_1) = start(config(1, loopback()), node_identity(&ca, 1), &faults);
        let (node_2, mut inbound_2) = start(config(2, loopback()), node_identity(&ca, 2), &faults);
        let (addr_1, addr_2) = (node_1.local_addr().unwrap(), node_2.local_addr().unwrap());
        node_1.add_peer(NodeId(2), addr_2);
        node_2.add_peer(NodeId(1), addr_1);
        until_delivered(&node_1, 2, &mut inbound_2).await;
        until_delivered(&node_2, 1, &mut inbound_1).await;

        // Restart the accepting side (node 2) on the same port: node 1 redials.
        node_2.shutdown().await;
        drop(inbound_2);
        let (node_2, mut inbound_2) =
            start_on(config(2, addr_2), node_identity(&ca, 2), &faults).await;
        node_2.add_peer(NodeId(1), addr_1);
        until_delivered(&node_1, 2, &mut inbound_2).await;
        until_delivered(&node_2, 1, &mut inbound_1).await;
        assert!(node_1.peer_stats(NodeId(2)).unwrap().reconnects >= 1);

        // Restart the dialing side (node 1): node 2 takes the new connection in place of the old.
        node_1.shutdown().await;
        drop(inbound_1);
        let (node_1, mut inbound_1) =
            start_on(config(1, addr_1), node_identity(&ca, 1), &faults).await;
        node_1.add_peer(NodeId(2), addr_2);
        until_delivered(&node_1, 2, &mut inbound_2).await;
        until_delivered(&node_2, 1, &mut inbound_1).await;
        assert!(node_2.peer_stats(NodeId(1)).unwrap().reconnects >= 1);
        node_1.shutdown().await;
        node_2.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_mib_snapshot_streams_intact() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let ca = new_ca();
        let faults = FaultInjector::new();
        let (node_1, _inbound_1) = start(config(1, loopback()), node_identity(&ca, 1), &faults);
        let (node_2, mut inbound_2) = start(config(2, loopback()), node_identity(&ca, 2), &faults);
        node_1.add_peer(NodeId(2), node_2.local_addr().unwrap());
        until_delivered(&node_1, 2, &mut inbound_2).await;

        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..16 * 1024 * 1024)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let message = ringkv_types::raft::Message {
            group: ShardId(4),
            from: NodeId(1),
            to: NodeId(2),
            term: Term(3),
            body: MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        index: LogIndex(77),
                        term: Term(3),
                        conf: Default::default(),
                    },
                    data: Default::default(),
                },
            },
        };
        let sender = {
            let data = data.clone();
            let message = message.clone();
            async move {
                node_1
                    .send_snapshot(NodeId(2), message, std::io::Cursor::new(data))
                    .await
                    .map(|n| (n, node_1))
            }
        };
        let receiver = async {
            let mut incoming = inbound_2.snapshots.recv().await.expect("snapshot offered");
            assert_eq!(incoming.from(), NodeId(1));
            assert_eq!(incoming.message(), &message);
            incoming.read_to_end(32 * 1024 * 1024).await
        };
        let (sent, received) = tokio::join!(sender, receiver);
        let (sent, node_1) = sent.expect("snapshot sent");
        let received = received.expect("snapshot received");
        assert_eq!(sent, data.len() as u64);
        assert!(received == data, "snapshot data differs");
        assert_eq!(node_2.peer_stats(NodeId(1)).unwrap().snapshots_received, 1);
        assert_eq!(node_1.peer_stats(NodeId(2)).unwrap().snapshots_sent, 1);
        node_1.shutdown().await;
        node_2.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_raft_queues_drop_and_count() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let ca = new_ca();
        let faults = FaultInjector::new();
        // Sending side: a peer that is never reachable, with room for one batch per stream.
        let mut config_1 = config(1, loopback());
        config_1.peer_queue_batches_max = 1;
        let (node_1, _inbound_1) = start(config_1, node_identity(&ca, 1), &faults);
        let unreachable = NodeId(9);
        assert_eq!(
            node_1.send(unreachable, RaftBatch::new(vec![heartbeat(1, 9, 1)])),
            SendOutcome::Queued
        );
        assert_eq!(
            node_1.send(
                unreachable,
                RaftBatch::new(vec![heartbeat(1, 9, 2), heartbeat(1, 9, 3)])
            ),
            SendOutcome::QueueFull { dropped: 2 }
        );
        // A different stream (bulk) has its own queue.
        assert_eq!(
            node_1.send(unreachable, RaftBatch::new(vec![append(1, 9, 1)])),
            SendOutcome::Queued
        );
        assert_eq!(node_1.peer_stats(unreachable).unwrap().send_drops, 2);
        assert_eq!(
            node_1.send(NodeId(1), RaftBatch::new(vec![heartbeat(1, 1, 1)])),
            SendOutcome::Refused
        );

        // Receiving side: the node does not read; its queue holds 2 batches, the rest is dropped.
        let mut config_3 = config(3, loopback());
        config_3.raft_inbound_batches_max = 2;
        let (node_3, mut inbound_3) = start(config_3, node_identity(&ca, 3), &faults);
        node_1.add_peer(NodeId(3), node_3.local_addr().unwrap());
        until_delivered(&node_1, 3, &mut inbound_3).await;
        for context in 0..50 {
            let _ = node_1.send(
                NodeId(3),
                RaftBatch::new(vec![heartbeat(1, 3, 100 + context)]),
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Every batch is accounted for: received, dropped by the full inbound queue, or (on a
        // loaded machine) dropped by the sender's own one-batch queue before it left.
        eventually("receive drops", || {
            let stats = node_3.peer_stats(NodeId(1)).unwrap();
            let sender_drops = node_1.peer_stats(NodeId(3)).unwrap().send_drops;
            stats.receive_drops > 0
                && stats.receive_drops + stats.messages_received + sender_drops >= 51
        })
        .await;
        let mut queued = 0;
        while inbound_3.raft.try_recv().is_ok() {
            queued += 1;
        }
        assert!(queued <= 2, "inbound queue held {queued} batches");
        node_1.shutdown().await;
        node_3.shutdown().await;
    })
    .await
    .expect("test timed out");
}

/// Yields `left` bytes, then fails like a disk error.
struct FailingSource {
    left: usize,
}

impl tokio::io::AsyncRead for FailingSource {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _context: &mut std::task::Context<'_>,
        buffer: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.left == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::other("disk gone")));
        }
        let count = self.left.min(buffer.remaining());
        buffer.put_slice(&vec![1u8; count]);
        self.left -= count;
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_snapshot_is_reported_on_both_sides() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let ca = new_ca();
        let faults = FaultInjector::new();
        let (node_1, _inbound_1) = start(config(1, loopback()), node_identity(&ca, 1), &faults);
        let (node_2, mut inbound_2) = start(config(2, loopback()), node_identity(&ca, 2), &faults);
        node_1.add_peer(NodeId(2), node_2.local_addr().unwrap());
        until_delivered(&node_1, 2, &mut inbound_2).await;
        let message = ringkv_types::raft::Message {
            group: ShardId(4),
            from: NodeId(1),
            to: NodeId(2),
            term: Term(3),
            body: MessageBody::InstallSnapshot {
                snapshot: Snapshot::default(),
            },
        };

        // The sender's source fails after 3 MiB: the sender gets the source error, the receiver
        // an abort (never a silently short snapshot).
        let source = FailingSource { left: 3 << 20 };
        let (sent, received) = tokio::join!(
            node_1.send_snapshot(NodeId(2), message.clone(), source),
            async {
                let mut incoming = inbound_2.snapshots.recv().await.unwrap();
                incoming.read_to_end(64 << 20).await
            }
        );
        assert!(
            matches!(sent, Err(ringkv_transport::Error::SnapshotSource { .. })),
            "{sent:?}"
        );
        assert!(
            matches!(
                received,
                Err(ringkv_transport::Error::SnapshotAborted { .. })
            ),
            "{received:?}"
        );

        // The receiver abandons the snapshot: the sender learns it failed. (The data is larger
        // than the stream's receive window, so the sender cannot finish before the receiver
        // stops reading.)
        let data = std::io::Cursor::new(vec![0u8; 40 << 20]);
        let (sent, ()) = tokio::join!(node_1.send_snapshot(NodeId(2), message, data), async {
            let mut incoming = inbound_2.snapshots.recv().await.unwrap();
            let _first = incoming.next_chunk().await.unwrap();
            drop(incoming);
        });
        assert!(
            sent.is_err(),
            "sender did not notice the abandoned snapshot"
        );
        assert!(sent.unwrap_err().is_retryable());
        node_1.shutdown().await;
        node_2.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_failing_at_once_is_reported_and_the_link_survives() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let ca = new_ca();
        let faults = FaultInjector::new();
        let (node_1, _inbound_1) = start(config(1, loopback()), node_identity(&ca, 1), &faults);
        let (node_2, mut inbound_2) = start(config(2, loopback()), node_identity(&ca, 2), &faults);
        node_1.add_peer(NodeId(2), node_2.local_addr().unwrap());
        until_delivered(&node_1, 2, &mut inbound_2).await;
        let message = ringkv_types::raft::Message {
            group: ShardId(4),
            from: NodeId(1),
            to: NodeId(2),
            term: Term(3),
            body: MessageBody::InstallSnapshot {
                snapshot: Snapshot::default(),
            },
        };
        // The source fails before its first byte, so the stream ends right after its header
        // and `Start`: the receiver must still see the snapshot (aborted), not lose the stream
        // and certainly not drop the whole connection. Repeated because the stream ending
        // before the receiver read its header is a race.
        for attempt in 0..20 {
            let (sent, received) = tokio::join!(
                node_1.send_snapshot(NodeId(2), message.clone(), FailingSource { left: 0 }),
                async {
                    let mut incoming = tokio::time::timeout(WAIT, inbound_2.snapshots.recv())
                        .await
                        .unwrap_or_else(|_| panic!("attempt {attempt}: snapshot never arrived"))
                        .unwrap();
                    incoming.read_to_end(1 << 20).await
                }
            );
            assert!(
                matches!(sent, Err(ringkv_transport::Error::SnapshotSource { .. })),
                "attempt {attempt}: {sent:?}"
            );
            assert!(
                matches!(
                    received,
                    Err(ringkv_transport::Error::SnapshotAborted { .. })
                ),
                "attempt {attempt}: {received:?}"
            );
        }
        assert_eq!(node_2.stats().peers_rejected, 0, "node 2 refused node 1");
        assert_eq!(node_2.peer_stats(NodeId(1)).unwrap().reconnects, 0);
        assert_eq!(node_1.peer_stats(NodeId(2)).unwrap().reconnects, 0);
        until_delivered(&node_1, 2, &mut inbound_2).await;
        node_1.shutdown().await;
        node_2.shutdown().await;
    })
    .await
    .expect("test timed out");
}
