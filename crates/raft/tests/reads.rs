//! Linearizable reads without the log: thesis §6.4 (ReadIndex) and §6.4.1 (leader lease).

mod common;

use common::Network;
use ringkv_raft::{Error, ReadMode, ReadState};
use ringkv_types::NodeId;
use ringkv_types::raft::MessageBody;

fn heartbeats_from(network: &Network, leader: u64) -> usize {
    network
        .queue
        .iter()
        .filter(|m| m.from == NodeId(leader) && m.body.kind() == "Heartbeat")
        .count()
}

/// Delivers every queued message and runs each follower's Ready once, so that one round of
/// requests and answers completes; the leader's own Ready is left to the caller.
fn one_round_trip(network: &mut Network, leader: u64) {
    while network.deliver_one() {}
    let followers: Vec<NodeId> = network
        .peers
        .keys()
        .copied()
        .filter(|id| *id != NodeId(leader))
        .collect();
    for id in followers {
        network.process_ready(id);
    }
    while network.deliver_one() {}
}

/// A 3-node group led by node 1 with `x` committed and a heartbeat round done.
fn settled() -> Network {
    let mut network = Network::new(3);
    network.campaign(1);
    network.propose(1, b"x");
    network.tick_all(common::config(1).heartbeat_ticks);
    network
}

/// Thesis §6.4: the leader records its commit index, confirms leadership with a heartbeat
/// round sent after the read arrived, and only when a quorum answered hands out the read at the
/// recorded index.
#[test]
fn read_index_returns_commit_after_a_quorum_round() {
    let mut network = settled();
    let committed = network.peer(1).node.status().committed;
    network.node(1).read_index(7, ReadMode::Safe).unwrap();
    network.process_ready(NodeId(1));
    assert!(
        network.peer(1).read_states.is_empty(),
        "served before the round"
    );
    assert_eq!(
        heartbeats_from(&network, 1),
        2,
        "one round to each follower"
    );

    // Only node 2 answers: with the leader itself that is a quorum of three.
    network.cut.insert((NodeId(3), NodeId(1)));
    one_round_trip(&mut network, 1);
    network.process_ready(NodeId(1));
    assert_eq!(
        network.peer(1).read_states,
        vec![ReadState {
            context: 7,
            index: committed
        }]
    );
}

/// Thesis §6.4: with no quorum answering the round, the read is not served.
#[test]
fn read_index_waits_for_a_quorum_not_one_answer_short() {
    let mut network = Network::new(5);
    network.campaign(1);
    network.propose(1, b"x");
    network.node(1).read_index(1, ReadMode::Safe).unwrap();
    network.process_ready(NodeId(1));
    for silent in [3, 4, 5] {
        network.cut.insert((NodeId(silent), NodeId(1)));
    }
    one_round_trip(&mut network, 1);
    network.process_ready(NodeId(1));
    assert!(
        network.peer(1).read_states.is_empty(),
        "2 of 5 answered and the read was served"
    );
}

/// Thesis §6.4 (batching): reads that arrive before a round is sent share it: three reads,
/// one heartbeat per follower, three read states. A read that arrives after that round was
/// sent needs a new round: answers to the earlier one do not confirm it.
#[test]
fn reads_share_one_round_and_later_reads_need_the_next() {
    let mut network = settled();
    let committed = network.peer(1).node.status().committed;
    for context in 1..=3 {
        network.node(1).read_index(context, ReadMode::Safe).unwrap();
    }
    network.process_ready(NodeId(1));
    assert_eq!(heartbeats_from(&network, 1), 2);
    network.node(1).read_index(4, ReadMode::Safe).unwrap();
    one_round_trip(&mut network, 1);
    network.process_ready(NodeId(1));
    let expected: Vec<ReadState> = (1..=3)
        .map(|context| ReadState {
            context,
            index: committed,
        })
        .collect();
    assert_eq!(
        network.peer(1).read_states,
        expected,
        "read 4 rode on the earlier round"
    );
    network.stabilize();
    assert_eq!(
        network.peer(1).read_states.last(),
        Some(&ReadState {
            context: 4,
            index: committed
        })
    );
}

/// Thesis §6.4: a leader cut off in a minority cannot confirm it still leads, so a read issued
/// after the partition is never served by it, neither by ReadIndex nor by a lease that has run
/// out, while the majority elects a new leader and commits new writes.
#[test]
fn minority_leader_never_serves_reads_issued_after_the_partition() {
    let mut network = Network::new(5);
    network.campaign(1);
    network.propose(1, b"x");
    network.tick_all(common::config(1).heartbeat_ticks);
    network.partition(&[1, 2], &[3, 4, 5]);
    network.node(1).read_index(1, ReadMode::Safe).unwrap();
    network.stabilize();
    let mut lease_read_issued = false;
    for _ in 0..60 {
        network.tick_all(1);
        let node = network.node(1);
        if node.is_leader() && !node.lease_valid() && !lease_read_issued {
            node.read_index(2, ReadMode::Lease).unwrap();
            lease_read_issued = true;
        }
    }
    assert!(
        lease_read_issued,
        "the old leader's lease never ran out while it led"
    );
    let new_leader = network
        .leaders()
        .into_iter()
        .find(|id| id.get() >= 3)
        .unwrap();
    network.propose(new_leader.get(), b"y");
    network.tick_all(5);
    assert!(
        network.peer(1).read_states.is_empty(),
        "{:?}",
        network.peer(1).read_states
    );
}

/// Thesis §6.4 step 1: a new leader does not know the commit index until it commits an entry
/// of its term. A read arriving before that waits, even through a complete heartbeat round,
/// and is then served at (at least) the no-op's index, which covers everything the previous
/// leader committed.
#[test]
fn reads_before_the_new_leader_commits_its_no_op_wait_for_it() {
    let mut network = settled();
    network.drop_filter = Some(Box::new(|m| {
        m.to == NodeId(2) && matches!(m.body, MessageBody::AppendResponse { .. })
    }));
    network.campaign(2);
    assert!(network.node(2).is_leader());
    let status = network.peer(2).node.status();
    assert!(
        status.committed < status.last_index,
        "the no-op is not committed"
    );
    network.node(2).read_index(9, ReadMode::Safe).unwrap();
    network.tick_all(2 * common::config(2).heartbeat_ticks);
    assert!(
        network
            .delivered
            .iter()
            .any(|m| m.to == NodeId(2) && m.body.kind() == "HeartbeatResponse"),
        "a heartbeat round completed"
    );
    assert!(
        network.peer(2).read_states.is_empty(),
        "read served before the no-op committed"
    );

    network.drop_filter = None;
    network.tick_all(common::config(2).heartbeat_ticks);
    let no_op = status.last_index;
    assert_eq!(network.peer(2).node.status().committed, no_op);
    assert_eq!(
        network.peer(2).read_states,
        vec![ReadState {
            context: 9,
            index: no_op
        }]
    );
}

/// Thesis §6.4.1: while the lease holds (a quorum answered a heartbeat sent less than an
/// election timeout minus the drift margin ago) a lease read is served at once, with no round.
#[test]
fn lease_read_is_served_without_a_round_while_the_lease_holds() {
    let mut network = settled();
    assert!(network.node(1).lease_valid());
    let committed = network.peer(1).node.status().committed;
    network.node(1).read_index(5, ReadMode::Lease).unwrap();
    network.process_ready(NodeId(1));
    assert_eq!(
        heartbeats_from(&network, 1),
        0,
        "a round was sent for a lease read"
    );
    assert_eq!(
        network.peer(1).read_states,
        vec![ReadState {
            context: 5,
            index: committed
        }]
    );
}

/// Thesis §6.4.1: when the followers have been silent long enough that the lease ran out, a
/// lease read falls back to a ReadIndex round and is served only once a quorum answers it.
#[test]
fn lease_read_falls_back_to_a_round_when_the_lease_expired() {
    let mut network = settled();
    network.cut.insert((NodeId(2), NodeId(1)));
    network.cut.insert((NodeId(3), NodeId(1)));
    let mut ticks = 0;
    while network.node(1).lease_valid() {
        network.tick_all(1);
        ticks += 1;
        assert!(
            ticks <= common::config(1).election_timeout_ticks,
            "the lease never expired"
        );
    }
    assert!(network.node(1).is_leader());
    network.node(1).read_index(5, ReadMode::Lease).unwrap();
    network.process_ready(NodeId(1));
    assert!(
        network.peer(1).read_states.is_empty(),
        "served on an expired lease"
    );
    assert_eq!(heartbeats_from(&network, 1), 2, "no fallback round");
    network.heal();
    one_round_trip(&mut network, 1);
    network.process_ready(NodeId(1));
    let committed = network.peer(1).node.status().committed;
    assert_eq!(
        network.peer(1).read_states,
        vec![ReadState {
            context: 5,
            index: committed
        }]
    );
}

/// Thesis §6.4.1 and §3.10: once the leader sent TimeoutNow, the target may win an election
/// at once, ignoring the other voters' stickiness that the lease relies on. For the rest of the
/// term lease reads must fall back to rounds, even after the transfer is abandoned. Here the
/// TimeoutNow is lost, so node 1 keeps leading.
#[test]
fn lease_reads_fall_back_to_rounds_after_timeout_now() {
    let mut network = settled();
    assert!(network.node(1).lease_valid());
    network.drop_filter = Some(Box::new(|m| m.body.kind() == "TimeoutNow"));
    network.node(1).transfer_leader(NodeId(2)).unwrap();
    network.stabilize();
    assert_eq!(network.dropped.len(), 1, "TimeoutNow was sent (and lost)");
    assert!(!network.node(1).lease_valid());

    network.node(1).read_index(1, ReadMode::Lease).unwrap();
    network.process_ready(NodeId(1));
    assert!(
        network.peer(1).read_states.is_empty(),
        "lease read served after TimeoutNow"
    );
    assert_eq!(heartbeats_from(&network, 1), 2);
    network.stabilize();
    assert_eq!(network.peer(1).read_states.len(), 1);

    // Still in the same term after the transfer is given up: no lease.
    let term = network.peer(1).node.term();
    network.tick_all(3 * common::config(1).election_timeout_ticks);
    assert!(network.node(1).is_leader());
    assert_eq!(network.peer(1).node.term(), term);
    assert!(!network.node(1).lease_valid());
    network.node(1).read_index(2, ReadMode::Lease).unwrap();
    network.process_ready(NodeId(1));
    assert_eq!(
        network.peer(1).read_states.len(),
        1,
        "lease read served in the same term"
    );
    assert_eq!(heartbeats_from(&network, 1), 2);
}

/// Thesis §6.4: only the leader serves ReadIndex; a follower says who leads.
#[test]
fn read_index_on_a_follower_returns_not_leader() {
    let mut network = settled();
    for mode in [ReadMode::Safe, ReadMode::Lease] {
        let refused = network.node(2).read_index(1, mode);
        assert!(
            matches!(refused, Err(Error::NotLeader { leader_hint, .. }) if leader_hint == NodeId(1)),
            "{refused:?}"
        );
    }
    network.stabilize();
    assert!(network.peer(2).read_states.is_empty());
}

/// Thesis §6.4 with STYLE §6 (bounded queues): reads waiting for a round are capped; beyond
/// `max_pending_reads` they are refused, and accepted again once the waiting ones are served.
#[test]
fn pending_reads_are_bounded() {
    let mut network = Network::with_config(3, |c| c.max_pending_reads = 2);
    network.campaign(1);
    network.propose(1, b"x");
    network.cut.insert((NodeId(2), NodeId(1)));
    network.cut.insert((NodeId(3), NodeId(1)));
    for context in 1..=2 {
        network.node(1).read_index(context, ReadMode::Safe).unwrap();
    }
    network.stabilize();
    let refused = network.node(1).read_index(3, ReadMode::Safe);
    assert!(
        matches!(refused, Err(Error::ReadRefused { .. })),
        "{refused:?}"
    );
    network.heal();
    network.tick_all(common::config(1).heartbeat_ticks);
    assert_eq!(network.peer(1).read_states.len(), 2);
    network.node(1).read_index(3, ReadMode::Safe).unwrap();
    network.stabilize();
    assert_eq!(network.peer(1).read_states.len(), 3);
}
