//! Log replication and commit: Raft §5.3, §5.4.2 (Figure 8), fast backtracking, pipelining.

mod common;

use bytes::Bytes;
use common::{Network, append_entries, log_of};
use ringkv_raft::MemStorage;
use ringkv_types::raft::{ConfState, Entry, EntryPayload, HardState, MessageBody};
use ringkv_types::{LogIndex, NodeId, Term};

/// Raft §5.3: an entry proposed to the leader is replicated and applied everywhere, in order.
#[test]
fn proposals_commit_and_apply_in_order_everywhere() {
    let mut network = Network::new(3);
    network.campaign(1);
    for data in [&b"a"[..], b"b", b"c"] {
        network.node(1).propose(Bytes::from_static(data)).unwrap();
    }
    network.stabilize();
    let expected: Vec<Bytes> = [&b"a"[..], b"b", b"c"]
        .iter()
        .map(|d| Bytes::from_static(d))
        .collect();
    for id in 1..=3 {
        assert_eq!(network.applied_data(id), expected, "node {id}");
    }
    assert_eq!(log_of(network.peer(1)), log_of(network.peer(3)));
}

/// Proposals made in one driver turn leave as one append per follower (batching in `flush`).
#[test]
fn proposals_of_one_turn_go_out_as_one_append_per_follower() {
    let mut network = Network::new(3);
    network.campaign(1);
    network.delivered.clear();
    for _ in 0..10 {
        network.node(1).propose(Bytes::from_static(b"x")).unwrap();
    }
    network.stabilize();
    let appends: Vec<usize> = network
        .delivered
        .iter()
        .filter(|m| m.from == NodeId(1) && append_entries(m) > 0)
        .map(append_entries)
        .collect();
    assert_eq!(appends, vec![10, 10]);
}

/// Raft §5.4.2 and Figure 8: a leader must not commit an entry of an earlier term by counting
/// replicas, only by committing an entry of its own term after it. Node 1 holds index 2 from
/// term 2, which nodes 2 and 3 lack; it becomes leader of term 3 and sends one entry per
/// message. When node 2 has acknowledged index 2 (now on a majority: nodes 1 and 2) but not yet
/// the term-3 no-op at index 3, index 2 must still be uncommitted: in Figure 8 (d) a server
/// with a term-3 entry at index 2 could still be elected and overwrite it.
#[test]
fn figure_8_previous_term_entry_is_not_committed_by_counting() {
    let conf = ConfState::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
    let entry = |index: u64, term: u64| Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Normal(Bytes::from_static(b"old")),
    };
    let mut network = Network::with_config(3, |c| {
        c.max_message_bytes = 1;
        c.max_inflight_messages = 1;
    });
    for id in 1..=3u64 {
        let storage = MemStorage::with_conf(conf.clone());
        let mut log = vec![entry(1, 1)];
        if id == 1 {
            log.push(entry(2, 2));
        }
        storage.append(&log);
        storage.set_hard_state(HardState {
            term: Term(2),
            vote: NodeId::NONE,
            commit: LogIndex(1),
        });
        network.peers.remove(&NodeId(id));
        network.add_peer(NodeId(id), storage);
    }
    network.cut.insert((NodeId(1), NodeId(3)));
    network.node(1).campaign().unwrap();
    let mut saw_old_entry_on_majority_only = false;
    for _ in 0..10_000 {
        let mut progressed = false;
        for id in 1..=3 {
            progressed |= network.process_ready(NodeId(id));
        }
        progressed |= network.deliver_one();
        let leader = network.peer(1).node.status();
        if leader.role != ringkv_raft::Role::Leader {
            continue;
        }
        let follower = network.peer(2).node.status();
        let follower_has = |index: u64| {
            follower.last_index >= LogIndex(index)
                && network
                    .node_entries(2, index)
                    .is_some_and(|t| t == leader_term(index, leader.term))
        };
        if follower_has(2) && !follower_has(3) {
            saw_old_entry_on_majority_only = true;
            assert!(
                leader.committed < LogIndex(2),
                "term-2 entry committed by counting"
            );
        }
        if !progressed {
            break;
        }
    }
    assert!(
        saw_old_entry_on_majority_only,
        "the scenario never reached Figure 8's state"
    );
    assert_eq!(network.peer(1).node.status().committed, LogIndex(3));
    assert_eq!(network.applied_data(2), vec![Bytes::from_static(b"old"); 2]);
}

fn leader_term(index: u64, leader_term: Term) -> Term {
    if index == 2 { Term(2) } else { leader_term }
}

/// A follower with a long conflicting suffix is repaired in a few round trips thanks to the
/// conflict-term hint, not one index per round trip.
#[test]
fn fast_backtracking_skips_a_whole_conflicting_term() {
    let mut network = Network::new(3);
    network.campaign(1);
    network.isolate(1);
    for _ in 0..50 {
        network
            .node(1)
            .propose(Bytes::from_static(b"orphan"))
            .unwrap();
    }
    network.stabilize();
    network.campaign(2);
    network.heal();
    network.isolate(1);
    network.propose(2, b"real");
    network.heal();
    network.delivered.clear();
    network.tick_all(5);
    let rejections = network
        .delivered
        .iter()
        .filter(|m| {
            matches!(m.body, MessageBody::AppendResponse { reject: true, .. })
                && m.from == NodeId(1)
        })
        .count();
    assert!(
        rejections <= 3,
        "{rejections} rejections to repair a 50-entry conflict"
    );
    assert_eq!(log_of(network.peer(1)), log_of(network.peer(2)));
    assert_eq!(network.applied_data(1), vec![Bytes::from_static(b"real")]);
}

/// The inflight window bounds unacknowledged appends: with acknowledgements withheld the
/// leader stops after `max_inflight_messages` appends.
#[test]
fn inflight_window_bounds_unacknowledged_appends() {
    let mut network = Network::with_config(3, |c| c.max_inflight_messages = 4);
    network.campaign(1);
    network.cut.insert((NodeId(2), NodeId(1)));
    network.cut.insert((NodeId(3), NodeId(1)));
    network.delivered.clear();
    for _ in 0..20 {
        network.node(1).propose(Bytes::from_static(b"x")).unwrap();
        network.stabilize();
    }
    let appends_to_2 = network
        .delivered
        .iter()
        .filter(|m| m.to == NodeId(2) && append_entries(m) > 0)
        .count();
    assert_eq!(appends_to_2, 4);
    network.heal();
    network.tick_all(5);
    assert_eq!(network.applied_data(2).len(), 20);
}

/// A crashed follower restarts from its storage and catches up.
#[test]
fn restarted_follower_catches_up() {
    let mut network = Network::new(3);
    network.campaign(1);
    network.propose(1, b"one");
    network.down.insert(NodeId(3));
    network.propose(1, b"two");
    network.restart(3);
    network.tick_all(5);
    assert_eq!(network.applied_data(3), network.applied_data(1));
    assert_eq!(network.applied_data(3).len(), 2);
}
