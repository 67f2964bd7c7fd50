//! Elections: Raft §5.2 (leader election), §5.4.1 (election restriction), thesis §9.6
//! (pre-vote) and §6.2 (check-quorum).

mod common;

use common::{Network, log_of};
use ringkv_raft::Role;
use ringkv_types::{NodeId, Term};

/// Raft §5.2: a follower that hears nothing for an election timeout campaigns and, with a
/// majority of votes, becomes the only leader of its term.
#[test]
fn timeout_elects_exactly_one_leader() {
    let mut network = Network::new(3);
    network.tick_all(30);
    let leaders = network.leaders();
    assert_eq!(leaders.len(), 1, "leaders: {leaders:?}");
    let term = network.peers[&leaders[0]].node.term();
    for peer in network.peers.values() {
        let status = peer.node.status();
        assert_eq!(status.term, term);
        assert_eq!(status.leader, leaders[0]);
    }
}

/// Raft §5.4.1: a voter refuses a candidate whose log is less up to date than its own.
#[test]
fn candidate_with_stale_log_is_refused() {
    let mut network = Network::new(3);
    network.campaign(1);
    network.isolate(3);
    network.propose(1, b"x");
    network.heal();
    // Node 3 missed the entry; even after the leader is gone it cannot win.
    network.isolate(1);
    network.node(3).campaign().unwrap();
    network.stabilize();
    assert_ne!(network.peer(3).node.status().role, Role::Leader);
    assert!(network.peer(2).node.status().vote != NodeId(3));
}

/// Thesis §9.6: a node that was partitioned away keeps timing out, but pre-vote stops it from
/// bumping its term, so when it rejoins it does not depose the healthy leader.
#[test]
fn rejoining_partitioned_node_does_not_disrupt_with_pre_vote() {
    let mut network = Network::new(3);
    network.campaign(1);
    let term = network.peer(1).node.term();
    network.isolate(3);
    network.tick_all(100);
    assert_eq!(
        network.peer(3).node.term(),
        term,
        "pre-vote must not bump the term"
    );
    network.heal();
    network.tick_all(20);
    assert_eq!(network.leaders(), vec![NodeId(1)]);
    assert_eq!(network.peer(1).node.term(), term);
}

/// Without pre-vote the same partition makes the rejoining node's higher term depose the
/// leader: the contrast shows what pre-vote buys.
#[test]
fn without_pre_vote_a_rejoining_node_disrupts() {
    let mut network = Network::with_config(3, |c| {
        c.pre_vote = false;
        c.check_quorum = false;
    });
    network.campaign(1);
    let term = network.peer(1).node.term();
    network.isolate(3);
    network.tick_all(100);
    assert!(network.peer(3).node.term() > term);
    network.heal();
    network.tick_all(25);
    assert!(
        network.peer(1).node.term() > term,
        "leader saw the higher term"
    );
}

/// Thesis §6.2: a leader cut off from the majority steps down within an election timeout
/// (check-quorum), so clients stop waiting on it; the majority elects a new leader.
#[test]
fn leader_in_minority_steps_down_by_check_quorum() {
    let mut network = Network::new(5);
    network.campaign(1);
    network.partition(&[1, 2], &[3, 4, 5]);
    network.tick_all(25);
    assert_ne!(network.peer(1).node.status().role, Role::Leader);
    let leaders = network.leaders();
    assert_eq!(leaders.len(), 1);
    assert!([3, 4, 5].contains(&leaders[0].get()));
}

/// Raft §5.2/§5.3: a partitioned leader cannot commit; the majority side elects a new leader
/// and commits; after healing the old leader steps down and its uncommitted entry is replaced.
#[test]
fn partitioned_leader_cannot_commit_and_is_replaced() {
    let mut network = Network::new(3);
    network.campaign(1);
    network.partition(&[1], &[2, 3]);
    let stale_index = network
        .node(1)
        .propose(bytes::Bytes::from_static(b"lost"))
        .unwrap();
    network.stabilize();
    network.tick_all(40);
    assert!(
        network.applied_data(1).is_empty(),
        "minority leader committed"
    );
    let new_leader = network
        .leaders()
        .into_iter()
        .find(|id| id.get() != 1)
        .unwrap();
    network.propose(new_leader.get(), b"kept");
    network.heal();
    network.tick_all(10);
    for id in 1..=3 {
        assert_eq!(
            network.applied_data(id),
            vec![bytes::Bytes::from_static(b"kept")]
        );
    }
    assert_eq!(log_of(network.peer(1)), log_of(network.peer(2)));
    let entry = &network
        .node(1)
        .entries(stale_index, stale_index.next(), u64::MAX)
        .unwrap()[0];
    assert!(entry.term > Term(1), "stale entry replaced");
}

/// Election timeouts are randomized (Raft §5.2): replicas with the same seed but different ids
/// draw different timeouts, so they rarely campaign together.
#[test]
fn election_timeouts_are_randomized_per_replica() {
    let mut network = Network::new(5);
    network.tick_all(1);
    let mut first_campaign_ticks = Vec::new();
    for id in 1..=5u64 {
        let mut solo = Network::new(5);
        solo.isolate(id);
        let mut tick = 0;
        while solo.peer(id).node.status().role == Role::Follower && tick < 100 {
            solo.node(id).tick().unwrap();
            tick += 1;
        }
        first_campaign_ticks.push(tick);
    }
    first_campaign_ticks.sort_unstable();
    first_campaign_ticks.dedup();
    assert!(
        first_campaign_ticks.len() > 1,
        "all replicas drew the same timeout"
    );
    assert!(
        first_campaign_ticks.iter().all(|&t| (10..20).contains(&t)),
        "{first_campaign_ticks:?}"
    );
}

/// The leader dies; follower 2 times out first while follower 3 still counts the leader's
/// lease, so 3 ignores 2's pre-vote. When 3 times out in turn, 2 (a pre-candidate that has not
/// heard from the leader for a whole election timeout) must grant 3's pre-vote and vote at once:
/// a pre-candidate has forgotten the dead leader, so it does not guard that leader's lease
/// (were it to, the two would ignore each other's pre-votes for another full timeout).
#[test]
fn a_pre_candidate_does_not_guard_a_dead_leaders_lease() {
    let mut network = Network::new(3);
    network.campaign(1);
    network.down.insert(NodeId(1));
    // Follower 2 alone runs out its election timeout and pre-campaigns; 3 hears it while still
    // inside the lease (its own timer has not moved), so it ignores the pre-vote.
    for _ in 0..100 {
        network.node(2).tick().unwrap();
        network.stabilize();
        if network.peer(2).node.status().role == Role::PreCandidate {
            break;
        }
    }
    assert_eq!(network.peer(2).node.status().role, Role::PreCandidate);
    assert!(network.leaders().is_empty());
    // Now follower 3 alone times out: its pre-vote and vote go to 2, which must grant both.
    for _ in 0..100 {
        network.node(3).tick().unwrap();
        network.stabilize();
        if network.peer(3).node.status().role != Role::Follower {
            break;
        }
    }
    assert_eq!(
        network.leaders(),
        vec![NodeId(3)],
        "3's election must succeed at once"
    );
}

/// The leader dies and both followers time out at the same moment: each sends its pre-vote
/// before hearing the other's. The tie is broken (equal logs: the higher tie rank, a hash of
/// group, term and id, goes on; the other grants and gives way), so one election in the next
/// term succeeds instead of two candidates splitting the vote and waiting out another
/// randomized timeout.
#[test]
fn simultaneous_pre_candidates_do_not_split_the_vote() {
    let mut network = Network::new(3);
    network.campaign(1);
    let term = network.peer(1).node.term();
    network.down.insert(NodeId(1));
    // Tick each follower to its timeout without delivering anything in between.
    for id in [2, 3] {
        for _ in 0..100 {
            if network.peer(id).node.status().role == Role::PreCandidate {
                break;
            }
            network.node(id).tick().unwrap();
        }
        assert_eq!(network.peer(id).node.status().role, Role::PreCandidate);
    }
    network.stabilize();
    let leaders = network.leaders();
    assert_eq!(leaders.len(), 1, "leaders: {leaders:?}");
    let leader = leaders[0];
    assert_eq!(
        network.peers[&leader].node.term(),
        term.next(),
        "no term was wasted"
    );
    for id in [2, 3] {
        assert_eq!(network.peer(id).node.status().leader, leader);
    }
}

/// A replica told to defer its election (a brand-new group whose preferred leader starts a
/// moment later) does not campaign when its normal timer would fire, and does once the
/// deferral is over.
#[test]
fn a_deferred_election_waits_for_its_deferral_then_happens() {
    let mut network = Network::new(3);
    // Node 1, the preferred leader, has not started.
    network.isolate(1);
    for id in [2, 3] {
        network.node(id).defer_election(100);
    }
    // Past twice the election timeout (10 ticks): an undeferred timer would have fired.
    network.tick_all(25);
    for id in [2, 3] {
        let status = network.peer(id).node.status();
        assert_eq!(status.role, Role::Follower, "node {id} campaigned early");
    }
    network.tick_all(100);
    let leaders = network.leaders();
    assert_eq!(leaders.len(), 1, "leaders: {leaders:?}");
    assert_ne!(leaders[0], NodeId(1));
}
