//! The core applies through whatever [`StateStore`] it is given: a one-replica group driven
//! through its real Raft path (campaign, propose, persist, commit) applies into a
//! [`MemoryState`], answers its writes, and applies a retried session write once. The core
//! also runs over a Raft log in memory ([`MemoryLog`]): nothing of it touches a disk, and a
//! crash that loses the unsynced apply batches is repaired by re-applying the durable log.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test")]

use super::node_core::NodeCore;
use super::replies::{Outcome, RequestId};
use crate::group::{Group, NodeStorage, Proposal, WriteKind};
use crate::log_command::LogCommand;
use bytes::Bytes;
use ringkv_raft::{Config, RawNode};
use ringkv_storage::{
    Command, MemoryLog, MemoryState, Operation, SessionRequest, StateStore, Store, StoreConfig,
    WriteBatchBuilder,
};
use ringkv_types::{
    Epoch, KvResult, LogIndex, NodeId, Replica, ReplicaRole, Response, ShardDescriptor, ShardId,
    member_id, ring,
};
use std::collections::BTreeMap;

const SHARD: ShardId = ShardId(3);

/// Takes every Ready of the group: log writes go to the fjall `log` store (the Raft log stays
/// there), committed entries are applied by the core into `state`.
fn pump(core: &mut NodeCore, log: &Store, state: &mut MemoryState) {
    for _ in 0..16 {
        let group = core.groups.get_mut(&SHARD).unwrap();
        if !group.raw.has_ready() {
            return;
        }
        let ready = group.raw.ready().unwrap();
        let mut batch = WriteBatchBuilder::new();
        batch.append(SHARD, &ready.entries).unwrap();
        if let Some(hard_state) = ready.hard_state {
            batch.set_hard_state(SHARD, hard_state);
        }
        log.write(batch).unwrap();
        group.raw.on_persisted(ready.number).unwrap();
        if let Some(soft) = ready.soft_state {
            group.leader = soft.leader;
            group.role = soft.role;
        }
        if !ready.committed_entries.is_empty() {
            core.apply_run(state, SHARD, ready.committed_entries)
                .unwrap();
        }
    }
    panic!("the group never settled");
}

#[test]
fn a_group_applies_into_the_memory_store_and_a_retry_applies_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = Store::open(StoreConfig::new(dir.path())).unwrap();
    let member = member_id(NodeId(1), 1);
    let descriptor = ShardDescriptor {
        id: SHARD,
        arc: ring::Arc::FULL,
        epoch: Epoch::default(),
        replicas: vec![Replica {
            node: NodeId(1),
            role: ReplicaRole::Voter,
            member,
        }],
    };
    let storage = NodeStorage::new(log.group(SHARD).unwrap(), Group::conf_of(&descriptor));
    let raw = RawNode::new(Config::new(member, SHARD), storage).unwrap();
    let group = Group::new(SHARD, member, Some(descriptor), raw, LogIndex::ZERO);
    let mut core = NodeCore::new(NodeId(1), BTreeMap::from([(SHARD, group)]), BTreeMap::new());
    let mut state = MemoryState::new();

    core.groups.get_mut(&SHARD).unwrap().raw.campaign().unwrap();
    pump(&mut core, &log, &mut state);
    assert!(core.groups[&SHARD].raw.is_leader());

    let write = LogCommand::KvAt {
        now_ms: 1_000,
        command: Command {
            session: Some(SessionRequest {
                session: 8,
                sequence: 1,
            }),
            operations: vec![Operation::Put {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
            }],
        },
    }
    .encode()
    .unwrap();
    let mut indexes = Vec::new();
    for reply in [RequestId(1), RequestId(2)] {
        // The second is the client's retry of the first (same session and sequence).
        let group = core.groups.get_mut(&SHARD).unwrap();
        let index = group.raw.propose(write.clone()).unwrap();
        let term = group.raw.term();
        group.proposals.insert(
            index,
            Proposal {
                term,
                kind: WriteKind::Write,
                reply,
            },
        );
        indexes.push(index);
    }
    pump(&mut core, &log, &mut state);

    let answers = core.replies.take();
    // Both answer the index of the entry that applied the write (its version): the retry's
    // own entry applied nothing.
    let expected: Vec<(RequestId, Outcome)> = [RequestId(1), RequestId(2)]
        .into_iter()
        .map(|id| {
            let answer = Response::Kv(KvResult::Written { index: indexes[0] });
            (id, Outcome::Answer(answer))
        })
        .collect();
    assert_eq!(answers, expected);
    // Applied once: the value carries the first write's index as its version.
    let stored = state.value(&ring::storage_key(b"k")).unwrap().unwrap();
    assert_eq!(
        (stored.value.as_ref(), stored.version),
        (&b"v"[..], indexes[0].0)
    );
    assert_eq!(state.session(SHARD, 8).unwrap().unwrap().sequence, 1);
    assert_eq!(state.applied(SHARD).unwrap().index, indexes[1]);
    assert_eq!(core.groups[&SHARD].applied, indexes[1]);
    // Apply went through the given store only: the fjall store holds the log, not the data.
    assert_eq!(log.get(b"k").unwrap(), None);
    // Nothing was made durable: a crash loses every applied batch.
    assert!(state.crash(0) > 0);
    assert_eq!(state.value(&ring::storage_key(b"k")).unwrap(), None);
}

fn descriptor_of(member: NodeId) -> ShardDescriptor {
    ShardDescriptor {
        id: SHARD,
        arc: ring::Arc::FULL,
        epoch: Epoch::default(),
        replicas: vec![Replica {
            node: NodeId(1),
            role: ReplicaRole::Voter,
            member,
        }],
    }
}

/// A core of node 1 hosting `SHARD` over `log`, applied up to what `state` holds.
fn memory_core(log: &MemoryLog, state: &MemoryState) -> NodeCore<MemoryLog> {
    let member = member_id(NodeId(1), 1);
    let descriptor = descriptor_of(member);
    let storage = NodeStorage::new(log.clone(), Group::conf_of(&descriptor));
    let applied = state.applied(SHARD).unwrap().index;
    let mut config = Config::new(member, SHARD);
    config.applied = applied;
    let raw = RawNode::new(config, storage).unwrap();
    let group = Group::new(SHARD, member, Some(descriptor), raw, applied);
    NodeCore::new(NodeId(1), BTreeMap::from([(SHARD, group)]), BTreeMap::new())
}

/// As [`pump`], with the log in memory: a Ready's entries and hard state are written to the
/// memory log before `on_persisted` (the log holds only what is durable).
fn pump_memory(core: &mut NodeCore<MemoryLog>, log: &MemoryLog, state: &mut MemoryState) {
    for _ in 0..16 {
        let group = core.groups.get_mut(&SHARD).unwrap();
        if !group.raw.has_ready() {
            return;
        }
        let ready = group.raw.ready().unwrap();
        log.append(&ready.entries).unwrap();
        if let Some(hard_state) = ready.hard_state {
            log.set_hard_state(hard_state);
        }
        group.raw.on_persisted(ready.number).unwrap();
        if let Some(soft) = ready.soft_state {
            group.leader = soft.leader;
            group.role = soft.role;
        }
        if !ready.committed_entries.is_empty() {
            core.apply_run(state, SHARD, ready.committed_entries)
                .unwrap();
        }
    }
    panic!("the group never settled");
}

#[test]
fn the_core_runs_over_a_memory_log_and_reapplies_what_a_crash_lost() {
    let log = MemoryLog::new();
    let mut state = MemoryState::new();
    let mut core = memory_core(&log, &state);
    core.groups.get_mut(&SHARD).unwrap().raw.campaign().unwrap();
    pump_memory(&mut core, &log, &mut state);
    assert!(core.groups[&SHARD].raw.is_leader());

    let write = LogCommand::KvAt {
        now_ms: 1_000,
        command: Command {
            session: None,
            operations: vec![Operation::Put {
                key: Bytes::from_static(b"m"),
                value: Bytes::from_static(b"1"),
            }],
        },
    }
    .encode()
    .unwrap();
    let group = core.groups.get_mut(&SHARD).unwrap();
    let index = group.raw.propose(write).unwrap();
    let term = group.raw.term();
    group.proposals.insert(
        index,
        Proposal {
            term,
            kind: WriteKind::Write,
            reply: RequestId(7),
        },
    );
    pump_memory(&mut core, &log, &mut state);
    let answer = Response::Kv(KvResult::Written { index });
    assert_eq!(
        core.replies.take(),
        vec![(RequestId(7), Outcome::Answer(answer))]
    );
    // The entry is in the memory log, committed by its hard state.
    assert_eq!(log.bounds().1, index);
    assert!(log.hard_state().commit >= index);

    // A crash loses every apply batch (none was made durable); the log survives. A core
    // restarted over the same log re-applies the committed entries and finds the write again.
    drop(core);
    assert!(state.crash(0) > 0);
    assert_eq!(state.value(&ring::storage_key(b"m")).unwrap(), None);
    let mut core = memory_core(&log, &state);
    core.groups.get_mut(&SHARD).unwrap().raw.campaign().unwrap();
    pump_memory(&mut core, &log, &mut state);
    let stored = state.value(&ring::storage_key(b"m")).unwrap().unwrap();
    assert_eq!(
        (stored.value.as_ref(), stored.version),
        (&b"1"[..], index.0)
    );
    assert!(core.groups[&SHARD].applied >= index);
}
