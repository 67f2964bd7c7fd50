//! Leadership transfer: thesis §3.10.

mod common;

use bytes::Bytes;
use common::{Network, log_of};
use ringkv_raft::{ConfChange, Error, Role};
use ringkv_types::NodeId;
use ringkv_types::raft::MessageBody;

fn election_timeout() -> u64 {
    common::config(1).election_timeout_ticks
}

/// Thesis §3.10: the leader sends TimeoutNow to a follower whose log is already up to date; the
/// target starts an election at once (without waiting for its timer, and past the other
/// voters' leader stickiness) and wins in the next term. The old leader steps down.
#[test]
fn transfer_to_up_to_date_follower() {
    let mut network = Network::new(3);
    network.campaign(1);
    network.propose(1, b"a");
    let term = network.peer(1).node.term();
    network.delivered.clear();
    network.node(1).transfer_leader(NodeId(2)).unwrap();
    network.stabilize();
    assert_eq!(network.delivered_between(1, 2, "TimeoutNow").len(), 1);
    assert_eq!(network.leaders(), vec![NodeId(2)]);
    assert_eq!(network.peer(2).node.term(), term.next());
    assert_eq!(network.peer(1).node.status().role, Role::Follower);
    assert_eq!(network.peer(1).node.status().leader, NodeId(2));
    network.propose(2, b"b");
    for id in 1..=3 {
        assert_eq!(
            network.applied_data(id),
            vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]
        );
    }
}

/// Thesis §3.10 step 1: a target that lags is first brought up to date by ordinary
/// replication, and only then sent TimeoutNow; so it wins with every committed entry.
#[test]
fn transfer_to_lagging_follower_catches_it_up_first() {
    let mut network = Network::new(3);
    network.campaign(1);
    network.cut.insert((NodeId(1), NodeId(3)));
    for item in [&b"a"[..], b"b", b"c"] {
        network.propose(1, item);
    }
    let leader_last = network.peer(1).node.status().last_index;
    assert!(network.peer(3).node.status().last_index < leader_last);
    network.heal();
    network.delivered.clear();
    network.node(1).transfer_leader(NodeId(3)).unwrap();
    network.stabilize();

    let position = |predicate: &dyn Fn(&ringkv_types::raft::Message) -> bool| {
        network.delivered.iter().position(predicate)
    };
    let timeout_now = position(&|m| m.to == NodeId(3) && m.body.kind() == "TimeoutNow")
        .expect("TimeoutNow was sent");
    let caught_up = position(&|m| {
        m.from == NodeId(3)
            && matches!(m.body, MessageBody::AppendResponse { reject: false, index, .. } if index == leader_last)
    })
    .expect("the target acknowledged the leader's last entry");
    assert!(
        caught_up < timeout_now,
        "TimeoutNow sent before the target caught up"
    );
    assert_eq!(network.delivered_between(1, 3, "TimeoutNow").len(), 1);
    assert_eq!(network.leaders(), vec![NodeId(3)]);
    network.propose(3, b"d");
    assert_eq!(log_of(network.peer(1)), log_of(network.peer(3)));
    for id in 1..=3 {
        assert_eq!(network.applied_data(id).len(), 4, "node {id}");
    }
}

/// Thesis §3.10 step 1: while a transfer is in progress the leader stops accepting client
/// requests (they could be lost or delay the transfer forever): proposals are refused with
/// `TransferInProgress`, and configuration changes too.
#[test]
fn proposals_are_refused_during_a_transfer() {
    let mut network = Network::new(3);
    network.campaign(1);
    network.isolate(3);
    network.propose(1, b"a");
    network.node(1).transfer_leader(NodeId(3)).unwrap();
    network.stabilize();
    assert!(network.node(1).is_leader());
    let refused = network.node(1).propose(Bytes::from_static(b"b"));
    assert!(
        matches!(refused, Err(Error::TransferInProgress { .. })),
        "{refused:?}"
    );
    let refused = network
        .node(1)
        .propose_conf_change(ConfChange::AddLearner(NodeId(4)));
    assert!(
        matches!(refused, Err(Error::ConfChangeRefused { .. })),
        "{refused:?}"
    );
    assert_eq!(network.applied_data(1), vec![Bytes::from_static(b"a")]);
}

/// Thesis §3.10: "If the transfer does not complete within an election timeout, the prior
/// leader aborts the transfer and resumes accepting client requests." The target is down, so
/// the transfer cannot finish: one tick short of an election timeout after it started,
/// proposals are still refused; after a full election timeout they are accepted again and
/// commit, and the old leader still leads.
#[test]
fn transfer_that_cannot_finish_is_abandoned_after_an_election_timeout() {
    let mut network = Network::new(3);
    network.campaign(1);
    network.propose(1, b"a");
    // Start the transfer in the middle of the leader's election-timeout period.
    network.tick_all(3);
    network.down.insert(NodeId(3));
    network.node(1).transfer_leader(NodeId(3)).unwrap();
    network.stabilize();
    network.tick_all(election_timeout() - 1);
    let refused = network.node(1).propose(Bytes::from_static(b"early"));
    assert!(
        matches!(refused, Err(Error::TransferInProgress { .. })),
        "abandoned too early"
    );
    network.tick_all(1);
    assert!(network.node(1).is_leader());
    let index = network.node(1).propose(Bytes::from_static(b"b"));
    assert!(
        index.is_ok(),
        "transfer not abandoned after an election timeout: {index:?}"
    );
    network.stabilize();
    assert_eq!(
        network.applied_data(2),
        vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]
    );
}

/// Thesis §3.10 with the abandonment above: a transfer that was abandoned leaves no trace.
/// When the target comes back later it is not handed leadership by a stale TimeoutNow.
#[test]
fn abandoned_transfer_sends_no_late_timeout_now() {
    let mut network = Network::new(3);
    network.campaign(1);
    network.down.insert(NodeId(3));
    network.node(1).transfer_leader(NodeId(3)).unwrap();
    network.stabilize();
    network.tick_all(2 * election_timeout());
    network.propose(1, b"a");
    network.delivered.clear();
    network.down.remove(&NodeId(3));
    network.tick_all(5);
    assert!(network.delivered_between(1, 3, "TimeoutNow").is_empty());
    assert_eq!(network.leaders(), vec![NodeId(1)]);
    assert_eq!(network.applied_data(3), vec![Bytes::from_static(b"a")]);
}

/// Thesis §3.10: only a voter can take over. A transfer to the leader itself, to a learner or
/// to a stranger does nothing: no TimeoutNow, and proposals are still accepted.
#[test]
fn transfer_to_self_learner_or_stranger_is_a_no_op() {
    let mut network = Network::new(3);
    network.campaign(1);
    network.add_peer(NodeId(4), ringkv_raft::MemStorage::new());
    network
        .node(1)
        .propose_conf_change(ConfChange::AddLearner(NodeId(4)))
        .expect("add learner");
    network.stabilize();
    network.delivered.clear();
    for target in [1, 4, 9] {
        network
            .node(1)
            .transfer_leader(NodeId(target))
            .expect("leader");
        network.stabilize();
        network
            .node(1)
            .propose(Bytes::from_static(b"x"))
            .expect("proposals still accepted");
        network.stabilize();
    }
    assert_eq!(network.delivered_count("TimeoutNow"), 0);
    assert_eq!(network.leaders(), vec![NodeId(1)]);
    assert_eq!(network.applied_data(4).len(), 3);
}

/// Thesis §3.10: a follower cannot transfer leadership; it says who leads.
#[test]
fn transfer_on_a_follower_returns_not_leader() {
    let mut network = Network::new(3);
    network.campaign(1);
    let refused = network.node(2).transfer_leader(NodeId(3));
    assert!(
        matches!(refused, Err(Error::NotLeader { leader_hint, .. }) if leader_hint == NodeId(1)),
        "{refused:?}"
    );
}
