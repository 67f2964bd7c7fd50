//! Ready handling in the core over a memory log: a follower's acknowledgement of appended
//! entries leaves only once the batch holding them is durable (persist before acknowledge),
//! and the turn's writes describe exactly what the log then holds; a snapshot held in memory
//! installs through the same writes into a memory log and state.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test")]

use super::node_core::NodeCore;
use super::replies::{Outcome, RequestId};
use crate::group::{Group, NodeStorage, Proposal, WriteKind};
use bytes::Bytes;
use ringkv_raft::{Config, RawNode};
use ringkv_storage::{
    AppliedState, ApplyBatch, MemoryLog, MemorySnapshot, MemoryState, StateStore, Versioned,
};
use ringkv_types::raft::{
    ConfState, Entry, EntryPayload, Message, MessageBody, Snapshot, SnapshotMeta,
};
use ringkv_types::{
    Epoch, LogIndex, NodeId, Replica, ReplicaRole, ShardDescriptor, ShardId, Term, member_id, ring,
};
use std::collections::BTreeMap;

const SHARD: ShardId = ShardId(5);

/// Node 2's core with a follower of `SHARD` (voters on nodes 1 and 2) over `log`.
fn follower(log: &MemoryLog) -> NodeCore<MemoryLog> {
    let descriptor = descriptor();
    let member = member_id(NodeId(2), 1);
    let storage = NodeStorage::new(log.clone(), Group::conf_of(&descriptor));
    let raw = RawNode::new(Config::new(member, SHARD), storage).unwrap();
    let group = Group::new(SHARD, member, Some(descriptor), raw, LogIndex::ZERO);
    NodeCore::new(NodeId(2), BTreeMap::from([(SHARD, group)]), BTreeMap::new())
}

/// `SHARD` with voters on nodes 1 and 2.
fn descriptor() -> ShardDescriptor {
    let replicas = [1, 2]
        .map(|node| Replica {
            node: NodeId(node),
            role: ReplicaRole::Voter,
            member: member_id(NodeId(node), 1),
        })
        .to_vec();
    ShardDescriptor {
        id: SHARD,
        arc: ring::Arc::FULL,
        epoch: Epoch::default(),
        replicas,
    }
}

fn append_from_leader() -> Message {
    let entry = |index| Entry {
        term: Term(1),
        index: LogIndex(index),
        payload: EntryPayload::Normal(Bytes::from_static(b"e")),
    };
    Message {
        group: SHARD,
        from: member_id(NodeId(1), 1),
        to: member_id(NodeId(2), 1),
        term: Term(1),
        body: MessageBody::Append {
            prev_index: LogIndex::ZERO,
            prev_term: Term::ZERO,
            entries: vec![entry(1), entry(2)],
            commit: LogIndex::ZERO,
        },
    }
}

/// Polls every dirty group's Ready through the core.
fn poll(core: &mut NodeCore<MemoryLog>) {
    for shard in std::mem::take(&mut core.dirty) {
        let group = core.groups.get_mut(&shard).unwrap();
        if group.raw.has_ready() {
            let ready = group.raw.ready().unwrap();
            let output = core.handle_ready(shard, ready).unwrap();
            assert!(output.snapshots.is_empty());
        }
    }
}

fn acknowledgements(core: &mut NodeCore<MemoryLog>) -> Vec<LogIndex> {
    core.outbox
        .take()
        .into_values()
        .flatten()
        .filter_map(|message| match message.body {
            MessageBody::AppendResponse { reject, index, .. } => {
                assert!(!reject);
                Some(index)
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_follower_acknowledges_entries_only_once_their_batch_is_durable() {
    let log = MemoryLog::new();
    let mut core = follower(&log);
    assert!(core.step(append_from_leader()).unwrap());
    poll(&mut core);
    // The entries are described, not durable: no acknowledgement yet, nothing in the log.
    assert_eq!(acknowledgements(&mut core), Vec::<LogIndex>::new());
    assert_eq!(log.bounds().1, LogIndex::ZERO);
    let writes = core.take_writes().unwrap();
    assert!(core.take_writes().is_none());
    assert_eq!(core.persist.in_flight(), 1);
    poll(&mut core);
    assert_eq!(acknowledgements(&mut core), Vec::<LogIndex>::new());

    // The simulated disk makes the batch durable: the log holds it, then the core is told.
    let groups = writes.into_groups();
    assert_eq!(groups.keys().copied().collect::<Vec<_>>(), vec![SHARD]);
    for group in groups.values() {
        assert_eq!(group.appends.iter().map(Vec::len).sum::<usize>(), 2);
        assert_eq!(group.hard_state.map(|state| state.term), Some(Term(1)));
        group.apply_to_log(&log).unwrap();
    }
    assert!(core.batch_durable().unwrap().is_empty());
    assert_eq!(log.bounds(), (LogIndex(1), LogIndex(2), Term(1)));
    assert_eq!(log.hard_state().term, Term(1));
    assert_eq!(acknowledgements(&mut core), vec![LogIndex(2)]);
    assert_eq!(core.persist.in_flight(), 0);
}

fn versioned(value: &'static [u8], version: u64) -> Versioned {
    Versioned {
        value: Bytes::from_static(value),
        version,
        expires_at_ms: 0,
    }
}

/// A snapshot taken from one memory state installs into another through the core: nothing is
/// visible before its batch is durable; then the log's compaction point, the applied position,
/// the range's data (the stale key gone) and the session table are the snapshot's, the group
/// reports the install done, and a write it proposed at a covered index is left unanswered.
#[test]
fn a_memory_snapshot_installs_through_the_turn_writes() {
    // The leader's state: one key and one session, applied to index 10.
    let mut leader = MemoryState::new();
    let mut batch = ApplyBatch::new(
        SHARD,
        AppliedState {
            index: LogIndex(10),
            term: Term(1),
        },
    );
    batch
        .values
        .insert(ring::storage_key(b"new"), Some(versioned(b"n", 9)));
    batch.sessions.insert(
        7,
        Some(ringkv_storage::SessionRecord {
            sequence: 3,
            last_ms: 0,
            result: Vec::new(),
            index: 9,
        }),
    );
    leader.commit_apply(batch).unwrap();
    let conf = Group::conf_of(&descriptor());
    let snapshot: MemorySnapshot = leader.snapshot(SHARD, ring::Arc::FULL, conf).unwrap();
    assert_eq!(snapshot.meta.index, LogIndex(10));

    // The follower holds a key the snapshot does not (stale data in the range).
    let log = MemoryLog::new();
    let mut state = MemoryState::new();
    let mut stale = ApplyBatch::new(
        SHARD,
        AppliedState {
            index: LogIndex(1),
            term: Term(1),
        },
    );
    stale
        .values
        .insert(ring::storage_key(b"old"), Some(versioned(b"o", 1)));
    state.commit_apply(stale).unwrap();
    let mut core = follower(&log);
    // Writes this replica proposed while it led: one at an index the snapshot covers (its
    // outcome is unknown: in the snapshot or replaced), one past it.
    let group = core.groups.get_mut(&SHARD).unwrap();
    for (index, reply) in [(9, 90), (11, 110)] {
        group.proposals.insert(
            LogIndex(index),
            Proposal {
                term: Term(1),
                kind: WriteKind::Write,
                reply: RequestId(reply),
            },
        );
    }
    let message = Message {
        group: SHARD,
        from: member_id(NodeId(1), 1),
        to: member_id(NodeId(2), 1),
        term: Term(1),
        body: MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                meta: snapshot.meta.clone(),
                data: Bytes::new(),
            },
        },
    };
    assert!(
        core.offer_snapshot(message, snapshot.into(), descriptor(), None)
            .unwrap()
    );
    poll(&mut core);
    let writes = core.take_writes().unwrap();
    assert_eq!(
        state.value(&ring::storage_key(b"old")).unwrap(),
        Some(versioned(b"o", 1))
    );
    for mut group in writes.into_groups().into_values() {
        group.apply_to_log(&log).unwrap();
        group.apply_to_state(&mut state).unwrap();
    }
    assert_eq!(core.batch_durable().unwrap(), vec![SHARD]);
    assert_eq!(core.groups[&SHARD].applied, LogIndex(10));
    // The covered write is left unanswered (never "not leader": it may have been committed);
    // the one past the snapshot still waits for its entry.
    assert_eq!(core.replies.take(), vec![(RequestId(90), Outcome::Dropped)]);
    assert_eq!(
        core.groups[&SHARD]
            .proposals
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        vec![LogIndex(11)]
    );
    assert_eq!(
        log.snapshot_meta(),
        SnapshotMeta {
            index: LogIndex(10),
            term: Term(1),
            conf: ConfState::with_voters(descriptor().voter_members()),
        }
    );
    assert_eq!(state.value(&ring::storage_key(b"old")).unwrap(), None);
    assert_eq!(
        state.value(&ring::storage_key(b"new")).unwrap(),
        Some(versioned(b"n", 9))
    );
    assert_eq!(state.sessions(SHARD).unwrap().len(), 1);
    assert_eq!(state.applied(SHARD).unwrap().index, LogIndex(10));
    // The install is durable: a crash keeps it.
    assert_eq!(state.unsynced_count(), 0);
    state.crash(0);
    assert_eq!(state.applied(SHARD).unwrap().index, LogIndex(10));
}
