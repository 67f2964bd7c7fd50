//! The fault-injection handle: partitions (both ways and one way), delays, drops, healing.

mod common;

use common::*;
use ringkv_transport::{Fault, FaultInjector, SendOutcome};
use ringkv_types::{NodeId, RaftBatch};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_handle_partitions_delays_drops_and_heals() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let ca = new_ca();
        let faults = FaultInjector::new();
        let (node_1, mut inbound_1) = start(config(1, loopback()), node_identity(&ca, 1), &faults);
        let (node_2, mut inbound_2) = start(config(2, loopback()), node_identity(&ca, 2), &faults);
        node_1.add_peer(NodeId(2), node_2.local_addr().unwrap());
        node_2.add_peer(NodeId(1), node_1.local_addr().unwrap());
        until_delivered(&node_1, 2, &mut inbound_2).await;
        until_delivered(&node_2, 1, &mut inbound_1).await;
        let send_1_to_2 =
            |context| node_1.send(NodeId(2), RaftBatch::new(vec![heartbeat(1, 2, context)]));
        let send_2_to_1 =
            |context| node_2.send(NodeId(1), RaftBatch::new(vec![heartbeat(2, 1, context)]));
        let quiet = Duration::from_millis(300);

        // Both ways.
        faults.partition(&[NodeId(1)], &[NodeId(2)]);
        assert_eq!(send_1_to_2(1), SendOutcome::Faulted);
        assert_eq!(send_2_to_1(1), SendOutcome::Faulted);
        assert!(recv_within(&mut inbound_2, quiet).await.is_none());
        assert!(recv_within(&mut inbound_1, quiet).await.is_none());

        // One way: 1 -> 2 stays cut, 2 -> 1 works.
        faults.heal_one_way(NodeId(2), NodeId(1));
        assert_eq!(send_2_to_1(2), SendOutcome::Queued);
        assert_eq!(
            context_of(&recv_within(&mut inbound_1, WAIT).await.unwrap().messages[0]),
            Some(2)
        );
        assert_eq!(send_1_to_2(2), SendOutcome::Faulted);
        assert!(recv_within(&mut inbound_2, quiet).await.is_none());

        // Heal.
        faults.heal(NodeId(1), NodeId(2));
        assert_eq!(send_1_to_2(3), SendOutcome::Queued);
        assert_eq!(
            context_of(&recv_within(&mut inbound_2, WAIT).await.unwrap().messages[0]),
            Some(3)
        );

        // Delay.
        faults.set(
            NodeId(1),
            NodeId(2),
            Fault::Delay(Duration::from_millis(200)),
        );
        let sent_at = Instant::now();
        assert_eq!(send_1_to_2(4), SendOutcome::Queued);
        assert!(recv_within(&mut inbound_2, WAIT).await.is_some());
        assert!(sent_at.elapsed() >= Duration::from_millis(200));

        // Drop one in two.
        faults.set(NodeId(1), NodeId(2), Fault::Drop { one_in: 2 });
        let outcomes: Vec<_> = (10..20).map(send_1_to_2).collect();
        let queued = outcomes
            .iter()
            .filter(|o| **o == SendOutcome::Queued)
            .count();
        assert_eq!(queued, 5);
        let mut received = 0;
        while recv_within(&mut inbound_2, quiet).await.is_some() {
            received += 1;
        }
        assert_eq!(received, 5);
        faults.heal_all();
        assert!(node_1.peer_stats(NodeId(2)).unwrap().send_drops >= 7);
        node_1.shutdown().await;
        node_2.shutdown().await;
    })
    .await
    .expect("test timed out");
}
