//! Ready handling in the core over a memory log: a follower's acknowledgement of appended
//! entries leaves only once the batch holding them is durable (persist before acknowledge),
//! and the turn's writes describe exactly what the log then holds.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test")]

use super::node_core::NodeCore;
use crate::group::{Group, NodeStorage};
use bytes::Bytes;
use ringkv_raft::{Config, RawNode};
use ringkv_storage::MemoryLog;
use ringkv_types::raft::{Entry, EntryPayload, Message, MessageBody};
use ringkv_types::{
    Epoch, LogIndex, NodeId, Replica, ReplicaRole, ShardDescriptor, ShardId, Term, member_id, ring,
};
use std::collections::BTreeMap;

const SHARD: ShardId = ShardId(5);

/// Node 2's core with a follower of `SHARD` (voters on nodes 1 and 2) over `log`.
fn follower(log: &MemoryLog) -> NodeCore<MemoryLog> {
    let replicas = [1, 2]
        .map(|node| Replica {
            node: NodeId(node),
            role: ReplicaRole::Voter,
            member: member_id(NodeId(node), 1),
        })
        .to_vec();
    let descriptor = ShardDescriptor {
        id: SHARD,
        arc: ring::Arc::FULL,
        epoch: Epoch::default(),
        replicas,
    };
    let member = member_id(NodeId(2), 1);
    let storage = NodeStorage::new(log.clone(), Group::conf_of(&descriptor));
    let raw = RawNode::new(Config::new(member, SHARD), storage).unwrap();
    let group = Group::new(SHARD, member, Some(descriptor), raw, LogIndex::ZERO);
    NodeCore::new(NodeId(2), BTreeMap::from([(SHARD, group)]), BTreeMap::new())
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
