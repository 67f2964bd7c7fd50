//! Snapshots and log compaction: Raft §7 (InstallSnapshot), thesis §5.

mod common;

use bytes::Bytes;
use common::{Network, append_entries, log_of, snapshot_of};
use ringkv_types::raft::MessageBody;
use ringkv_types::{LogIndex, NodeId};

fn data(items: &[&'static [u8]]) -> Vec<Bytes> {
    items.iter().map(|d| Bytes::from_static(d)).collect()
}

/// Elects node 1, commits `a`, takes node 3 down, commits `b`..`f` and compacts the leader's
/// (and node 2's) log past everything node 3 has. Returns the compaction index.
fn lagging_follower_behind_compaction(network: &mut Network) -> LogIndex {
    network.campaign(1);
    network.propose(1, b"a");
    network.down.insert(NodeId(3));
    for item in [&b"b"[..], b"c", b"d", b"e", b"f"] {
        network
            .node(1)
            .propose(Bytes::from_static(item))
            .expect("the leader accepts proposals");
        network.stabilize();
    }
    let index = network.compact(1);
    assert_eq!(network.compact(2), index);
    assert!(network.peer(1).node.status().first_index > network.peer(3).node.status().last_index);
    index
}

/// Raft §7: a follower that needs entries the leader has already discarded is sent the
/// leader's snapshot (InstallSnapshot); it installs it (state machine and log), and the leader
/// then continues with ordinary appends from the snapshot index on.
#[test]
fn lagging_follower_is_caught_up_by_snapshot_then_appends() {
    let mut network = Network::new(3);
    let compacted = lagging_follower_behind_compaction(&mut network);
    network.down.remove(&NodeId(3));
    network.delivered.clear();
    network.tick_all(3);

    let snapshots = network.delivered_between(1, 3, "InstallSnapshot");
    assert_eq!(snapshots.len(), 1, "exactly one snapshot sent");
    let snapshot = snapshot_of(snapshots[0]).unwrap();
    assert_eq!(snapshot.meta.index, compacted);
    assert_eq!(network.peer(3).node.status().stats.snapshots_installed, 1);
    assert_eq!(network.peer(3).applied_index, compacted);
    assert_eq!(
        network.applied_data(3),
        data(&[b"a", b"b", b"c", b"d", b"e", b"f"])
    );
    assert_eq!(network.peer(3).node.status().first_index, compacted.next());
    assert_eq!(
        network.peer(3).storage.current_snapshot().meta.index,
        compacted
    );

    // Afterwards the follower is replicated by ordinary appends.
    network.delivered.clear();
    let index = network.propose(1, b"g");
    assert!(
        network
            .delivered_between(1, 3, "InstallSnapshot")
            .is_empty()
    );
    assert!(
        network
            .delivered_between(1, 3, "Append")
            .iter()
            .any(|m| append_entries(m) > 0)
    );
    for id in 1..=3 {
        assert_eq!(network.peer(id).applied_index, index, "node {id}");
        assert_eq!(
            network.applied_data(id),
            data(&[b"a", b"b", b"c", b"d", b"e", b"f", b"g"])
        );
    }
    assert_eq!(log_of(network.peer(3)), log_of(network.peer(1)));
    assert_eq!(network.peer(1).node.status().stats.snapshots_sent, 1);
}

/// Raft §7 (receiver rule: a snapshot that describes a prefix of the receiver's log, or that
/// is older than what it has committed, must not replace its state). A delayed duplicate of an
/// old snapshot reaches a follower that has since committed and applied more: the follower
/// keeps its log and state machine and only acknowledges its commit index.
#[test]
fn snapshot_older_than_follower_commit_is_ignored() {
    let mut network = Network::new(3);
    lagging_follower_behind_compaction(&mut network);
    network.down.remove(&NodeId(3));
    network.tick_all(3);
    let old = network.delivered_between(1, 3, "InstallSnapshot")[0].clone();
    network.propose(1, b"g");
    network.propose(1, b"h");
    let before = network.peer(3).node.status();
    assert!(before.committed > snapshot_of(&old).unwrap().meta.index);
    let log_before = log_of(network.peer(3));

    network.node(3).step(old).unwrap();
    let ready = network.node(3).ready().unwrap();
    assert!(
        ready.snapshot.is_none(),
        "stale snapshot handed out for install"
    );
    assert!(ready.entries.is_empty());
    assert!(ready.committed_entries.is_empty());
    let answers: Vec<&MessageBody> = ready
        .messages
        .iter()
        .chain(&ready.persisted_messages)
        .map(|m| &m.body)
        .collect();
    assert!(
        matches!(
            answers.as_slice(),
            [MessageBody::AppendResponse { reject: false, index, .. }] if *index == before.committed
        ),
        "{answers:?}"
    );
    network.node(3).on_persisted(ready.number).unwrap();
    let after = network.peer(3).node.status();
    assert_eq!(after.stats.snapshots_installed, 1);
    assert_eq!(after.committed, before.committed);
    assert_eq!(after.first_index, before.first_index);
    assert_eq!(log_of(network.peer(3)), log_before);
    network.stabilize();
    assert_eq!(network.applied_data(3), network.applied_data(1));
}

/// Raft §7: InstallSnapshot is retried like any other RPC. A snapshot lost in transit (with no
/// report from the transport) is sent again after the leader's retry period of two election
/// timeouts, and then installed; the leader does not flood the follower with copies meanwhile.
#[test]
fn snapshot_lost_in_transit_is_resent_after_timeout() {
    let mut network = Network::new(3);
    lagging_follower_behind_compaction(&mut network);
    network.down.remove(&NodeId(3));
    let mut lost_one = false;
    network.drop_filter = Some(Box::new(move |m| {
        let drop = !lost_one && m.body.kind() == "InstallSnapshot";
        lost_one |= drop;
        drop
    }));
    network.delivered.clear();
    let election_timeout = common::config(1).election_timeout_ticks;
    network.tick_all(election_timeout);
    assert_eq!(network.dropped.len(), 1, "the first snapshot was lost");
    assert!(
        network
            .delivered_between(1, 3, "InstallSnapshot")
            .is_empty(),
        "resent too early"
    );
    assert_eq!(network.peer(3).node.status().stats.snapshots_installed, 0);

    network.tick_all(2 * election_timeout);
    assert_eq!(network.delivered_between(1, 3, "InstallSnapshot").len(), 1);
    assert_eq!(network.peer(3).node.status().stats.snapshots_installed, 1);
    assert_eq!(network.applied_data(3), network.applied_data(1));
    network.propose(1, b"g");
    assert_eq!(network.applied_data(3), network.applied_data(1));
}

/// Raft §7 with a transport that reports failures: after `report_snapshot(to, false)` the
/// leader sends the snapshot again right away, without waiting for the retry timer.
#[test]
fn snapshot_reported_lost_is_resent_at_once() {
    let mut network = Network::new(3);
    lagging_follower_behind_compaction(&mut network);
    network.down.remove(&NodeId(3));
    let mut lost_one = false;
    network.drop_filter = Some(Box::new(move |m| {
        let drop = !lost_one && m.body.kind() == "InstallSnapshot";
        lost_one |= drop;
        drop
    }));
    network.delivered.clear();
    // One heartbeat round makes the leader notice node 3 and send the snapshot, which is lost.
    network.tick_all(common::config(1).heartbeat_ticks);
    assert_eq!(network.dropped.len(), 1);
    network.stabilize();
    assert!(
        network
            .delivered_between(1, 3, "InstallSnapshot")
            .is_empty()
    );

    // The transport reports the failure; no tick passes before the resend.
    network.node(1).report_snapshot(NodeId(3), false);
    network.stabilize();
    assert_eq!(network.delivered_between(1, 3, "InstallSnapshot").len(), 1);
    assert_eq!(network.peer(1).node.status().stats.snapshots_sent, 2);
    assert_eq!(network.peer(3).node.status().stats.snapshots_installed, 1);
    assert_eq!(network.applied_data(3), network.applied_data(1));
}

/// Thesis §5.1: a server restarts from its latest snapshot plus the log after it. A follower
/// and then the leader restart from compacted storage: each rebuilds its state machine from
/// the snapshot, applies only the committed entries after it (no entry twice), and the group
/// keeps committing.
#[test]
fn restart_from_compacted_storage_resumes() {
    let mut network = Network::new(3);
    network.campaign(1);
    for item in [&b"a"[..], b"b", b"c"] {
        network.propose(1, item);
    }
    let compacted = network.compact(2);
    network.propose(1, b"d");
    network.restart(2);
    let status = network.peer(2).node.status();
    assert_eq!(status.first_index, compacted.next());
    assert_eq!(network.peer(2).applied_index, compacted);
    network.tick_all(3);
    assert_eq!(network.applied_data(2), data(&[b"a", b"b", b"c", b"d"]));
    assert_eq!(network.peer(2).node.status().stats.snapshots_installed, 0);

    network.compact(1);
    network.restart(1);
    network.tick_all(40);
    let leaders = network.leaders();
    assert_eq!(leaders.len(), 1);
    network.propose(leaders[0].get(), b"e");
    for id in 1..=3 {
        assert_eq!(
            network.applied_data(id),
            data(&[b"a", b"b", b"c", b"d", b"e"]),
            "node {id}"
        );
    }
    assert_eq!(
        network.peer(1).node.status().first_index,
        network.peer(1).storage.current_snapshot().meta.index.next()
    );
}

/// Raft §7 and thesis §5.1: an installed snapshot is durable. A follower that restarts right
/// after installing one comes back with the snapshot's state machine and log position and
/// needs no second snapshot.
#[test]
fn follower_restarts_from_installed_snapshot() {
    let mut network = Network::new(3);
    let compacted = lagging_follower_behind_compaction(&mut network);
    network.down.remove(&NodeId(3));
    network.tick_all(3);
    assert_eq!(network.peer(3).node.status().stats.snapshots_installed, 1);
    network.restart(3);
    assert_eq!(network.peer(3).applied_index, compacted);
    assert_eq!(
        network.applied_data(3),
        data(&[b"a", b"b", b"c", b"d", b"e", b"f"])
    );
    network.propose(1, b"g");
    network.tick_all(3);
    assert_eq!(network.applied_data(3), network.applied_data(1));
    assert_eq!(network.peer(1).node.status().stats.snapshots_sent, 1);
}

/// Raft §7 (receiver rule 7: "discard the entire log" when it does not contain the snapshot's
/// last entry): a former leader that appended entries nobody else has, while the rest of the
/// group moved on and compacted, is repaired by the snapshot; its orphan entries are dropped
/// and never applied.
#[test]
fn snapshot_replaces_a_conflicting_log() {
    let mut network = Network::new(3);
    network.campaign(1);
    network.propose(1, b"a");
    network.isolate(1);
    for _ in 0..5 {
        network
            .node(1)
            .propose(Bytes::from_static(b"orphan"))
            .expect("still leader");
    }
    network.stabilize();
    network.campaign(2);
    for item in [&b"b"[..], b"c", b"d"] {
        network.propose(2, item);
    }
    let compacted = network.compact(2);
    network.compact(3);
    assert!(
        network.peer(1).node.status().last_index >= compacted,
        "the orphan log is long"
    );
    network.heal();
    network.tick_all(5);
    assert_eq!(network.leaders(), vec![NodeId(2)]);
    assert_eq!(network.peer(1).node.status().stats.snapshots_installed, 1);
    assert_eq!(network.applied_data(1), data(&[b"a", b"b", b"c", b"d"]));
    assert_eq!(log_of(network.peer(1)), log_of(network.peer(2)));
    network.propose(2, b"e");
    assert_eq!(
        network.applied_data(1),
        data(&[b"a", b"b", b"c", b"d", b"e"])
    );
}

/// Raft §7 (receiver rule 6: "if an existing log entry has the same index and term as the
/// snapshot's last included entry, retain log entries following it"): a follower that already
/// holds the snapshot's last entry (it only lacks the commit index) does not install the
/// snapshot; it learns the commit, keeps its log and applies from it.
#[test]
fn snapshot_within_the_follower_log_only_advances_commit() {
    let mut network = Network::new(3);
    network.campaign(1);
    network.propose(1, b"a");
    // Node 2 receives b but not the news that it committed.
    network.drop_filter = Some(Box::new(|m| {
        m.to == NodeId(2)
            && (m.body.kind() == "Heartbeat"
                || (m.body.kind() == "Append" && append_entries(m) == 0))
    }));
    let index = network.propose(1, b"b");
    let before = network.peer(2).node.status();
    assert_eq!(before.last_index, index);
    assert!(before.committed < index);
    network.drop_filter = None;
    network.compact(1);
    let snapshot = network.peer(1).storage.current_snapshot();
    assert_eq!(snapshot.meta.index, index);
    let log_before = log_of(network.peer(2));

    let term = network.peer(1).node.term();
    network
        .node(2)
        .step(ringkv_types::raft::Message {
            group: common::GROUP,
            from: NodeId(1),
            to: NodeId(2),
            term,
            body: MessageBody::InstallSnapshot { snapshot },
        })
        .expect("step");
    let ready = network.node(2).ready().expect("ready");
    assert!(
        ready.snapshot.is_none(),
        "a snapshot of entries the follower holds was installed"
    );
    assert_eq!(ready.hard_state.map(|h| h.commit), Some(index));
    assert_eq!(
        ready
            .committed_entries
            .iter()
            .map(|e| e.index)
            .collect::<Vec<_>>(),
        vec![index]
    );
    network
        .node(2)
        .on_persisted(ready.number)
        .expect("on_persisted");
    network.node(2).on_applied(index);
    assert_eq!(log_of(network.peer(2)), log_before);
    assert_eq!(network.peer(2).node.status().stats.snapshots_installed, 0);
}

/// Raft §7 with thesis §4.2.1: a learner added after the leader compacted its log starts from
/// nothing; it is caught up by a snapshot (which carries the configuration as of its index)
/// and then by appends, including the configuration entry that added it.
#[test]
fn learner_added_after_compaction_is_caught_up_by_snapshot() {
    let mut network = Network::new(3);
    network.campaign(1);
    for item in [&b"a"[..], b"b"] {
        network.propose(1, item);
    }
    let compacted = network.compact(1);
    network.add_peer(NodeId(4), ringkv_raft::MemStorage::new());
    network
        .node(1)
        .propose_conf_change(ringkv_raft::ConfChange::AddLearner(NodeId(4)))
        .expect("add learner");
    network.stabilize();
    network.propose(1, b"c");
    let learner = network.peer(4).node.status();
    assert_eq!(learner.stats.snapshots_installed, 1);
    assert_eq!(learner.first_index, compacted.next());
    assert!(learner.conf.is_learner(NodeId(4)));
    assert_eq!(network.applied_data(4), data(&[b"a", b"b", b"c"]));
    assert_eq!(log_of(network.peer(4)), log_of(network.peer(1)));
}

/// With a driver that reports every snapshot (`snapshot_reports`, as ringkvd), a snapshot still
/// on its way is not sent a second time however long it takes: before, the leader sent a new
/// copy every two election timeouts (each a whole shard, competing with the first); the report
/// alone triggers the resend.
#[test]
fn a_reported_snapshot_in_flight_is_not_sent_again_by_the_timer() {
    let mut network = Network::with_config(3, |config| config.snapshot_reports = true);
    lagging_follower_behind_compaction(&mut network);
    network.down.remove(&NodeId(3));
    // The transfer is "in flight": the message never arrives and nobody reports yet.
    network.drop_filter = Some(Box::new(|m| m.body.kind() == "InstallSnapshot"));
    network.delivered.clear();
    let election = common::config(1).election_timeout_ticks;
    for _ in 0..10 * election {
        network.tick_all(1);
        network.stabilize();
    }
    assert_eq!(
        network.peer(1).node.status().stats.snapshots_sent,
        1,
        "a second snapshot was sent while the first was unreported"
    );
    let dropped = |network: &Network| {
        network
            .dropped
            .iter()
            .filter(|m| m.body.kind() == "InstallSnapshot")
            .count()
    };
    assert_eq!(dropped(&network), 1);

    // The driver reports the end of the transfer (lost): the leader sends again at once.
    network.drop_filter = None;
    network.node(1).report_snapshot(NodeId(3), false);
    network.stabilize();
    assert_eq!(network.peer(1).node.status().stats.snapshots_sent, 2);
    assert_eq!(network.peer(3).node.status().stats.snapshots_installed, 1);
    assert_eq!(network.applied_data(3), network.applied_data(1));
}
