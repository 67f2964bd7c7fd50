//! Membership changes, one server at a time with learners first: thesis §4.1 (safety of
//! single-server changes, configuration in force on append), §4.2.1 (catching up new servers as
//! non-voting members), §4.2.2 (removing the current leader).

mod common;

use bytes::Bytes;
use common::{Network, log_of};
use ringkv_raft::{ConfChange, Error, MemStorage, Role};
use ringkv_types::raft::{ConfState, MessageBody};
use ringkv_types::{LogIndex, NodeId};

fn conf(voters: &[u64], learners: &[u64]) -> ConfState {
    ConfState {
        voters: voters.iter().copied().map(NodeId).collect(),
        learners: learners.iter().copied().map(NodeId).collect(),
    }
}

fn change(network: &mut Network, leader: u64, change: ConfChange) -> LogIndex {
    let index = network
        .node(leader)
        .propose_conf_change(change)
        .expect("the change is accepted");
    network.stabilize();
    index
}

fn committed(network: &Network, id: u64) -> LogIndex {
    network.peer(id).node.status().committed
}

/// Thesis §4.2.1: a new server joins as a learner. It receives the log (including the
/// configuration that added it) but never campaigns and its vote is not counted.
#[test]
fn learner_receives_entries_but_does_not_vote() {
    let mut network = Network::new(3);
    network.campaign(1);
    network.propose(1, b"a");
    network.add_peer(NodeId(4), MemStorage::new());
    change(&mut network, 1, ConfChange::AddLearner(NodeId(4)));
    network.propose(1, b"b");
    assert_eq!(network.peer(4).node.conf_state(), &conf(&[1, 2, 3], &[4]));
    assert_eq!(network.applied_data(4), network.applied_data(1));
    assert_eq!(log_of(network.peer(4)), log_of(network.peer(1)));

    // A learner never campaigns, however long it hears nothing.
    let term = network.peer(4).node.term();
    network.isolate(4);
    network.tick_all(100);
    assert_eq!(network.peer(4).node.term(), term);
    assert_eq!(network.peer(4).node.status().role, Role::Follower);
    network.heal();

    // Its vote does not count: with the leader and voter 3 gone, voter 2 campaigns. Voters
    // only ask voters, so a copy of the request is handed to the learner too; the learner
    // grants it, which must not make a majority of {1, 2, 3}.
    network.down.insert(NodeId(1));
    network.down.insert(NodeId(3));
    network.node(2).campaign().unwrap();
    network.process_ready(NodeId(2));
    let mut request = network
        .queue
        .iter()
        .find(|m| matches!(m.body, MessageBody::Vote { .. }))
        .cloned()
        .unwrap();
    assert!(
        network.queue.iter().all(|m| m.to != NodeId(4)),
        "a learner was asked to vote"
    );
    request.to = NodeId(4);
    network.queue.push_back(request);
    network.stabilize();
    assert!(
        network.delivered.iter().any(|m| m.from == NodeId(4)
            && m.to == NodeId(2)
            && matches!(m.body, MessageBody::VoteResponse { reject: false })),
        "the learner granted its vote"
    );
    assert_ne!(network.peer(2).node.status().role, Role::Leader);
}

/// Thesis §4.2.1: a learner does not count toward commit; once promoted it does. Voters
/// {1, 2} and learner 3: with voter 2 down, the leader's and the learner's acknowledgements
/// are two of three members but one of two voters, so nothing commits. After promotion
/// (voters {1, 2, 3}) the same failure leaves a majority and commits continue.
#[test]
fn learner_is_not_counted_toward_commit_until_promoted() {
    let mut network = Network::new(2);
    network.campaign(1);
    network.add_peer(NodeId(3), MemStorage::new());
    change(&mut network, 1, ConfChange::AddLearner(NodeId(3)));
    network.propose(1, b"a");
    assert_eq!(network.applied_data(3), vec![Bytes::from_static(b"a")]);

    network.down.insert(NodeId(2));
    let index = network.node(1).propose(Bytes::from_static(b"b")).unwrap();
    network.stabilize();
    assert_eq!(
        network.peer(3).node.status().last_index,
        index,
        "the learner acknowledged b"
    );
    assert!(
        committed(&network, 1) < index,
        "a learner's ack made b commit"
    );
    network.down.remove(&NodeId(2));
    network.tick_all(3);
    assert_eq!(committed(&network, 1), index);

    change(&mut network, 1, ConfChange::PromoteLearner(NodeId(3)));
    assert_eq!(network.peer(1).node.conf_state(), &conf(&[1, 2, 3], &[]));
    assert_eq!(network.peer(3).node.conf_state(), &conf(&[1, 2, 3], &[]));
    network.down.insert(NodeId(2));
    let index = network.node(1).propose(Bytes::from_static(b"c")).unwrap();
    network.stabilize();
    assert_eq!(committed(&network, 1), index, "the promoted voter counts");
    assert_eq!(network.applied_data(3), network.applied_data(1));
}

/// Thesis §4.1: removing a voter shrinks the majority. After removing voter 3 from
/// {1, 2, 3}, node 3 (still running) receives nothing more and counts for nothing: with node 2
/// down, the leader alone cannot commit.
#[test]
fn removed_voter_no_longer_counts_or_receives() {
    let mut network = Network::new(3);
    network.campaign(1);
    network.propose(1, b"a");
    let index = change(&mut network, 1, ConfChange::Remove(NodeId(3)));
    assert_eq!(committed(&network, 1), index);
    assert_eq!(network.peer(1).node.conf_state(), &conf(&[1, 2], &[]));
    assert_eq!(network.peer(2).node.conf_state(), &conf(&[1, 2], &[]));

    network.propose(1, b"b");
    assert_eq!(network.applied_data(2).len(), 2);
    network.delivered.clear();
    network.down.insert(NodeId(2));
    let index = network.node(1).propose(Bytes::from_static(b"c")).unwrap();
    network.tick_all(3);
    assert!(
        network.delivered.iter().all(|m| m.to != NodeId(3)),
        "removed node still contacted"
    );
    assert!(committed(&network, 1) < index, "committed without voter 2");
    network.down.remove(&NodeId(2));
    network.tick_all(3);
    assert_eq!(committed(&network, 1), index);
}

/// Thesis §4.2.2: a leader that removes itself keeps leading (without counting itself) until
/// the change commits, then steps down; the remaining voters elect a new leader, and the old
/// one never campaigns again.
#[test]
fn leader_removing_itself_steps_down_after_commit() {
    let mut network = Network::new(3);
    network.campaign(1);
    network.propose(1, b"a");
    let index = network
        .node(1)
        .propose_conf_change(ConfChange::Remove(NodeId(1)))
        .unwrap();
    // The new configuration is in force on append: the leader no longer counts itself.
    assert_eq!(network.peer(1).node.conf_state(), &conf(&[2, 3], &[]));
    assert!(network.node(1).is_leader());
    network.stabilize();
    assert!(committed(&network, 1) >= index);
    assert_ne!(
        network.peer(1).node.status().role,
        Role::Leader,
        "leader kept leading"
    );

    network.tick_all(40);
    let leaders = network.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], NodeId(1));
    let new_leader = leaders[0].get();
    network.propose(new_leader, b"b");
    for id in [2, 3] {
        assert_eq!(
            network.applied_data(id),
            vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]
        );
        assert_eq!(network.peer(id).node.conf_state(), &conf(&[2, 3], &[]));
    }
    assert_eq!(
        network.peer(1).node.status().stats.elections,
        1,
        "removed node campaigned"
    );
}

/// Thesis §4.2.2: a server not part of its own latest configuration still campaigns while that
/// configuration is uncommitted. Leader 4 of four voters appends its own removal while cut off
/// and steps down (check-quorum); node 1 is cut off too. Nodes 2 and 3 still count 4 as a voter
/// (they never saw the removal) and 4 refuses them its vote (its log is longer), so only 4 can
/// end the stall: it campaigns under its latest configuration {1, 2, 3}, commits the removal
/// and steps down, and 2 or 3 takes over. Before the fix 4 never campaigned and the group stayed
/// without a leader (the shape of ringkv-sim seed 7152).
#[test]
fn a_voter_whose_uncommitted_configuration_removes_it_still_campaigns() {
    let mut network = Network::new(4);
    network.campaign(4);
    network.propose(4, b"a");
    network.isolate(4);
    let removal = network
        .node(4)
        .propose_conf_change(ConfChange::Remove(NodeId(4)))
        .unwrap();
    network.isolate(1);
    network.tick_all(60);
    assert_ne!(
        network.peer(4).node.status().role,
        Role::Leader,
        "the cut-off leader stepped down"
    );
    assert!(network.leaders().is_empty(), "no majority could talk yet");

    network.heal();
    network.isolate(1);
    network.tick_all(200);
    let leaders = network.leaders();
    assert_eq!(leaders.len(), 1, "leaders: {leaders:?}");
    assert!(
        leaders[0] == NodeId(2) || leaders[0] == NodeId(3),
        "leader {} is not in the configuration {{1, 2, 3}}",
        leaders[0]
    );
    for id in [2, 3] {
        assert!(committed(&network, id) >= removal, "node {id}");
        assert_eq!(network.peer(id).node.conf_state(), &conf(&[1, 2, 3], &[]));
    }
    assert!(
        network.peer(4).node.status().stats.elections >= 2,
        "node 4 campaigned again after its removal was appended"
    );
}

/// Thesis §4.1: only one change may be pending at a time. While the first change is not
/// committed (the followers are cut off) a second one is refused; once it commits the second
/// one is accepted.
#[test]
fn second_change_is_refused_while_one_is_uncommitted() {
    let mut network = Network::new(3);
    network.campaign(1);
    network.isolate(1);
    network
        .node(1)
        .propose_conf_change(ConfChange::AddLearner(NodeId(4)))
        .unwrap();
    network.stabilize();
    let refused = network
        .node(1)
        .propose_conf_change(ConfChange::AddLearner(NodeId(5)));
    assert!(
        matches!(refused, Err(Error::ConfChangeRefused { .. })),
        "{refused:?}"
    );
    network.heal();
    network.tick_all(3);
    assert_eq!(network.peer(1).node.conf_state(), &conf(&[1, 2, 3], &[4]));
    change(&mut network, 1, ConfChange::AddLearner(NodeId(5)));
    assert_eq!(
        network.peer(2).node.conf_state(),
        &conf(&[1, 2, 3], &[4, 5])
    );
}

/// Thesis §4.2.1: only learners are promoted. Promoting a voter or a stranger is refused and
/// appends nothing.
#[test]
fn promoting_a_non_learner_is_refused() {
    let mut network = Network::new(3);
    network.campaign(1);
    let last = network.peer(1).node.status().last_index;
    for target in [2, 9] {
        let refused = network
            .node(1)
            .propose_conf_change(ConfChange::PromoteLearner(NodeId(target)));
        assert!(
            matches!(refused, Err(Error::ConfChangeRefused { .. })),
            "{refused:?}"
        );
    }
    assert_eq!(network.peer(1).node.status().last_index, last);
    assert_eq!(network.peer(1).node.conf_state(), &conf(&[1, 2, 3], &[]));
}

/// Thesis §4.1 and the single-server-change erratum (raft-dev, 2015): a new leader must commit
/// an entry of its own term before appending a configuration change, otherwise a change from
/// an earlier leader that it does not know about could have been decided by a disjoint
/// majority. Node 1 is elected but its no-op is not committed yet (acknowledgements are lost):
/// the change is refused; once the no-op commits it is accepted.
#[test]
fn change_before_leader_commits_in_its_term_is_refused() {
    let mut network = Network::new(3);
    network.drop_filter = Some(Box::new(|m| {
        matches!(m.body, MessageBody::AppendResponse { .. })
    }));
    network.campaign(1);
    assert!(network.node(1).is_leader());
    let status = network.peer(1).node.status();
    assert!(
        status.committed < status.last_index,
        "the no-op is not committed"
    );
    let refused = network
        .node(1)
        .propose_conf_change(ConfChange::AddLearner(NodeId(4)));
    assert!(
        matches!(refused, Err(Error::ConfChangeRefused { .. })),
        "{refused:?}"
    );
    assert_eq!(network.peer(1).node.status().last_index, status.last_index);

    network.drop_filter = None;
    network.tick_all(3);
    let status = network.peer(1).node.status();
    assert_eq!(status.committed, status.last_index);
    change(&mut network, 1, ConfChange::AddLearner(NodeId(4)));
    assert_eq!(network.peer(1).node.conf_state(), &conf(&[1, 2, 3], &[4]));
}

/// Thesis §4.1: a server uses the latest configuration in its log whether or not it is
/// committed, and reverts when that entry is removed by a conflicting leader. Five voters;
/// leader 1 appends "add learner 9" but only node 2 gets it (and node 2's answers are lost), so
/// node 2's configuration changes at once although the entry is not committed. Nodes 1 and 2
/// are then cut off; node 3 is elected by {3, 4, 5} and overwrites index of the change; when
/// node 2 rejoins, the entry is truncated and its configuration reverts to the old one.
#[test]
fn configuration_applies_on_append_and_reverts_on_truncation() {
    let mut network = Network::new(5);
    network.campaign(1);
    network.propose(1, b"a");
    for other in [3, 4, 5] {
        network.cut.insert((NodeId(1), NodeId(other)));
    }
    network.cut.insert((NodeId(2), NodeId(1)));
    let index = network
        .node(1)
        .propose_conf_change(ConfChange::AddLearner(NodeId(9)))
        .unwrap();
    network.stabilize();
    let status = network.peer(2).node.status();
    assert_eq!(status.last_index, index, "node 2 appended the change");
    assert!(status.committed < index, "the change is not committed");
    assert_eq!(
        status.conf,
        conf(&[1, 2, 3, 4, 5], &[9]),
        "in force on append"
    );
    assert_eq!(status.conf_index, index);

    network.heal();
    network.isolate(1);
    network.isolate(2);
    network.campaign(3);
    assert!(network.node(3).is_leader());
    network.propose(3, b"b");
    network.heal();
    network.isolate(1);
    network.tick_all(3);

    let status = network.peer(2).node.status();
    assert_ne!(
        network.node_entries(2, index.get()),
        network.node_entries(1, index.get())
    );
    assert_eq!(
        status.conf,
        conf(&[1, 2, 3, 4, 5], &[]),
        "the truncated change still applies"
    );
    assert!(status.conf_index < index);
    assert_eq!(log_of(network.peer(2)), log_of(network.peer(3)));
    assert_eq!(
        network.applied_data(2),
        vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]
    );
}

/// Thesis §4.2.1: once promoted, a former learner is a full voter: its vote counts, and it can
/// be elected. Voters {1, 2} plus learner 3; after promoting 3 and losing leader 1, node 3
/// wins with node 2's vote alone.
#[test]
fn promoted_learner_votes_and_can_lead() {
    let mut network = Network::new(2);
    network.campaign(1);
    network.add_peer(NodeId(3), MemStorage::new());
    change(&mut network, 1, ConfChange::AddLearner(NodeId(3)));
    network.propose(1, b"a");
    change(&mut network, 1, ConfChange::PromoteLearner(NodeId(3)));
    network.down.insert(NodeId(1));
    network.campaign(3);
    assert_eq!(network.leaders(), vec![NodeId(3)]);
    network.propose(3, b"b");
    assert_eq!(
        network.applied_data(2),
        vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]
    );
}

/// Thesis §4.1: a removed voter's vote no longer counts toward elections either. After 3 is
/// removed from {1, 2, 3} and leader 1 is lost, node 2 cannot win with node 3's vote (still
/// running, still willing): it needs 1, which is down.
#[test]
fn removed_voter_vote_does_not_count() {
    let mut network = Network::new(3);
    network.campaign(1);
    change(&mut network, 1, ConfChange::Remove(NodeId(3)));
    assert_eq!(network.peer(2).node.conf_state(), &conf(&[1, 2], &[]));
    network.down.insert(NodeId(1));
    network.node(2).campaign().expect("campaign");
    network.process_ready(NodeId(2));
    assert!(
        network.queue.iter().all(|m| m.to != NodeId(3)),
        "a removed voter was asked"
    );
    let mut request = network
        .queue
        .iter()
        .find(|m| matches!(m.body, MessageBody::Vote { .. }))
        .cloned()
        .expect("vote request to node 1");
    request.to = NodeId(3);
    network.queue.push_back(request);
    network.stabilize();
    assert!(
        network.delivered.iter().any(|m| m.from == NodeId(3)
            && matches!(m.body, MessageBody::VoteResponse { reject: false }))
    );
    assert_ne!(network.peer(2).node.status().role, Role::Leader);
}

/// Thesis §4.1: a removed server that missed its removal must not disrupt the group. Node 3 is
/// down while it is removed; when it comes back it still believes it is a voter and times out,
/// but pre-vote and leader stickiness keep the leader in place and the term unchanged.
#[test]
fn removed_server_that_missed_its_removal_does_not_disrupt() {
    let mut network = Network::new(3);
    network.campaign(1);
    network.down.insert(NodeId(3));
    change(&mut network, 1, ConfChange::Remove(NodeId(3)));
    let term = network.peer(1).node.term();
    network.down.remove(&NodeId(3));
    network.tick_all(100);
    assert_eq!(network.leaders(), vec![NodeId(1)]);
    assert_eq!(network.peer(1).node.term(), term);
    network.propose(1, b"a");
    assert_eq!(network.applied_data(2), vec![Bytes::from_static(b"a")]);
}

/// Thesis §4.1: a server's configuration is the latest one in its log, so it survives a
/// restart. A learner that joined from an empty log restarts and is still a learner (it never
/// campaigns), then is promoted and, after another restart, is a voter that can win.
#[test]
fn configuration_from_the_log_survives_restarts() {
    let mut network = Network::new(3);
    network.campaign(1);
    network.add_peer(NodeId(4), MemStorage::new());
    change(&mut network, 1, ConfChange::AddLearner(NodeId(4)));
    network.propose(1, b"a");
    network.restart(4);
    assert_eq!(network.peer(4).node.conf_state(), &conf(&[1, 2, 3], &[4]));
    network.tick_all(3);
    assert_eq!(network.applied_data(4), vec![Bytes::from_static(b"a")]);
    assert_eq!(network.peer(4).node.status().stats.elections, 0);

    change(&mut network, 1, ConfChange::PromoteLearner(NodeId(4)));
    network.restart(4);
    assert_eq!(network.peer(4).node.conf_state(), &conf(&[1, 2, 3, 4], &[]));
    network.down.insert(NodeId(1));
    network.campaign(4);
    assert_eq!(network.leaders(), vec![NodeId(4)]);
}
