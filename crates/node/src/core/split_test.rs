//! A split applied by the core over a memory log and state, driven as the event loop and the
//! simulator drive it: the new group starts at the split entry with the parent's sessions and
//! is durable before the parent's shrunken descriptor, and a split proposed against an old
//! epoch is skipped alike.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test")]

use super::apply_plan::{self, Step};
use super::machine::MachineKind;
use super::node_core::NodeCore;
use super::replies::{Outcome, RequestId};
use super::split::SplitStep;
use crate::group::{Group, NodeStorage};
use crate::log_command::LogCommand;
use crate::replica_meta;
use bytes::Bytes;
use ringkv_raft::{Config, RawNode};
use ringkv_storage::{Command, MemoryLog, MemoryState, Operation, SessionRequest, StateStore};
use ringkv_types::raft::HardState;
use ringkv_types::{
    AdminResult, Epoch, LogIndex, NodeId, Replica, ReplicaRole, Response, ShardDescriptor, ShardId,
    member_id, ring,
};
use std::collections::BTreeMap;

const SHARD: ShardId = ShardId(3);
const CHILD: ShardId = ShardId(9);

fn descriptor() -> ShardDescriptor {
    ShardDescriptor {
        id: SHARD,
        arc: ring::Arc::FULL,
        epoch: Epoch {
            conf_ver: 1,
            version: 1,
        },
        replicas: vec![Replica {
            node: NodeId(1),
            role: ReplicaRole::Voter,
            member: member_id(NodeId(1), 1),
        }],
    }
}

/// What the test's driver keeps beside the core: the logs and the state.
struct Driver {
    logs: BTreeMap<ShardId, MemoryLog>,
    state: MemoryState,
    /// Unsynced apply batches when the new group's write was made (checked after).
    unsynced_at_create: Option<usize>,
    /// The state right after the split applied.
    after_split: Option<MemoryState>,
}

impl Driver {
    /// Takes every Ready of every group, applying in steps; a split goes through the core's
    /// two halves with the memory I/O between them.
    fn pump(&mut self, core: &mut NodeCore<MemoryLog>) {
        for _ in 0..32 {
            let shards: Vec<ShardId> = core
                .groups
                .iter()
                .filter(|(_, group)| group.raw.has_ready())
                .map(|(shard, _)| *shard)
                .collect();
            if shards.is_empty() {
                return;
            }
            for shard in shards {
                let group = core.groups.get_mut(&shard).unwrap();
                let ready = group.raw.ready().unwrap();
                let log = &self.logs[&shard];
                log.append(&ready.entries).unwrap();
                if let Some(hard_state) = ready.hard_state {
                    log.set_hard_state(hard_state);
                }
                group.raw.on_persisted(ready.number).unwrap();
                if let Some(soft) = ready.soft_state {
                    group.leader = soft.leader;
                    group.role = soft.role;
                }
                for step in apply_plan::steps(MachineKind::Data, ready.committed_entries) {
                    match step {
                        Step::Run(run) => {
                            core.apply_run(&mut self.state, shard, run).unwrap();
                        }
                        Step::Split { index, term, split } => {
                            self.split(core, shard, (index, term), split);
                        }
                        Step::Expiry { .. } => unreachable!("no expiry proposed"),
                    }
                }
            }
        }
        panic!("the groups never settled");
    }

    fn split(
        &mut self,
        core: &mut NodeCore<MemoryLog>,
        shard: ShardId,
        entry: (LogIndex, ringkv_types::Term),
        split: apply_plan::Split,
    ) {
        let step = core
            .begin_split(
                &mut self.state,
                shard,
                entry,
                split,
                HardState::default(),
                false,
            )
            .unwrap();
        let SplitStep::Applies(split) = step else {
            return;
        };
        let created = split.create.clone().unwrap();
        let log = MemoryLog::new();
        created.write_to_memory(&log, &mut self.state).unwrap();
        self.unsynced_at_create = Some(self.state.unsynced_count());
        let applied = self.state.applied(CHILD).unwrap();
        log.set_applied(applied, self.state.conf_state(CHILD));
        self.logs.insert(CHILD, log.clone());
        let mut config = Config::new(split.member, CHILD);
        config.applied = applied.index;
        let raw =
            RawNode::new(config, NodeStorage::new(log, Group::conf_of(&split.right))).unwrap();
        let group = Group::new(
            CHILD,
            split.member,
            Some(split.right.clone()),
            raw,
            applied.index,
        );
        core.finish_split(&mut self.state, split, Some(group))
            .unwrap();
        self.after_split = Some(self.state.clone());
    }
}

/// A one-replica core hosting `SHARD`, leading it, with one session write applied.
fn leading_core() -> (NodeCore<MemoryLog>, Driver) {
    let log = MemoryLog::new();
    let member = member_id(NodeId(1), 1);
    let storage = NodeStorage::new(log.clone(), Group::conf_of(&descriptor()));
    let raw = RawNode::new(Config::new(member, SHARD), storage).unwrap();
    let group = Group::new(SHARD, member, Some(descriptor()), raw, LogIndex::ZERO);
    let mut core = NodeCore::new(NodeId(1), BTreeMap::from([(SHARD, group)]), BTreeMap::new());
    let mut driver = Driver {
        logs: BTreeMap::from([(SHARD, log)]),
        state: MemoryState::new(),
        unsynced_at_create: None,
        after_split: None,
    };
    core.groups.get_mut(&SHARD).unwrap().raw.campaign().unwrap();
    driver.pump(&mut core);
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
    };
    let group = core.groups.get_mut(&SHARD).unwrap();
    group.raw.propose(write.encode().unwrap()).unwrap();
    driver.pump(&mut core);
    assert_eq!(driver.state.session(SHARD, 8).unwrap().unwrap().sequence, 1);
    (core, driver)
}

#[test]
fn a_split_starts_the_new_group_at_its_entry_with_the_parents_sessions() {
    let (mut core, mut driver) = leading_core();
    let at = ring::position(b"k");
    let proposed = core
        .propose_split(
            SHARD,
            descriptor().epoch,
            CHILD,
            Some(at),
            RequestId(5),
            false,
        )
        .unwrap();
    assert!(proposed);
    let index = core.groups[&SHARD].pending_split.as_ref().unwrap().index;
    driver.pump(&mut core);

    let (left, right) = super::split::split_descriptors(&descriptor(), CHILD, at).unwrap();
    let answer = Response::Admin(AdminResult::ShardSplit {
        left: left.clone(),
        right: right.clone(),
    });
    assert_eq!(
        core.replies.take(),
        vec![(RequestId(5), Outcome::Answer(answer))]
    );
    assert_eq!(core.groups[&SHARD].descriptor, left);
    assert_eq!(core.groups[&CHILD].descriptor, right);
    assert!(core.groups[&CHILD].initialized);
    // The new log starts at the split entry: its applied state and compaction point (the new
    // group, led by the parent's leader, has applied its own first entry since).
    let state = driver.after_split.as_ref().unwrap();
    assert_eq!(state.applied(CHILD).unwrap().index, index);
    assert_eq!(state.applied(SHARD).unwrap().index, index);
    assert_eq!(driver.logs[&CHILD].snapshot_meta().index, index);
    // The exactly-once records came along.
    assert_eq!(
        state.sessions(CHILD).unwrap(),
        state.sessions(SHARD).unwrap()
    );
    assert_eq!(state.session(CHILD, 8).unwrap().unwrap().sequence, 1);
    // Crash order: the new group was durable with everything before it; the parent's
    // shrunken descriptor is one unsynced apply batch after it. A crash losing it keeps the
    // new group, and the parent applies the split again at restart.
    assert_eq!(driver.unsynced_at_create, Some(0));
    let stored = |state: &MemoryState, shard| {
        state
            .meta(&replica_meta::descriptor_key(shard))
            .unwrap()
            .map(|bytes| replica_meta::decode_descriptor(&bytes).unwrap())
    };
    assert_eq!(stored(state, SHARD), Some(left));
    let mut crashed = state.clone();
    assert_eq!(crashed.crash(0), 1);
    assert!(crashed.applied(SHARD).unwrap().index < index);
    assert_eq!(stored(&crashed, SHARD), None);
    assert_eq!(crashed.applied(CHILD).unwrap().index, index);
    assert_eq!(stored(&crashed, CHILD), Some(right));
    assert_eq!(crashed.session(CHILD, 8).unwrap().unwrap().sequence, 1);
}

#[test]
fn a_split_against_an_old_epoch_is_skipped() {
    let (mut core, mut driver) = leading_core();
    let stale = LogCommand::SplitFromEntry {
        epoch: Epoch::default(),
        new_shard: CHILD,
        at: ring::position(b"k"),
    };
    let group = core.groups.get_mut(&SHARD).unwrap();
    let index = group.raw.propose(stale.encode().unwrap()).unwrap();
    driver.pump(&mut core);
    assert_eq!(core.groups[&SHARD].descriptor, descriptor());
    assert!(!core.groups.contains_key(&CHILD));
    assert_eq!(driver.state.applied(SHARD).unwrap().index, index);
    assert_eq!(driver.state.applied(CHILD).unwrap().index, LogIndex::ZERO);
}

#[test]
fn a_new_shards_snapshot_waits_until_the_parent_here_applied_the_split() {
    // This replica's parent has not applied the split; the new shard's leader (elsewhere)
    // reached it, so it holds an uninitialized replica of the new shard.
    let (mut core, driver) = leading_core();
    let at = ring::position(b"k");
    let (left, right) = super::split::split_descriptors(&descriptor(), CHILD, at).unwrap();
    let member = member_id(NodeId(1), 1);
    let log = MemoryLog::new();
    let raw = RawNode::new(
        Config::new(member, CHILD),
        NodeStorage::new(log, ringkv_types::raft::ConfState::default()),
    )
    .unwrap();
    core.insert_group(Group::new(CHILD, member, None, raw, LogIndex::ZERO));
    // The new shard's snapshot: its arc holds "k", which the parent here still applies to.
    let mut leader_state = MemoryState::new();
    leader_state
        .commit_apply(ringkv_storage::ApplyBatch::new(
            CHILD,
            ringkv_storage::AppliedState {
                index: LogIndex(20),
                term: ringkv_types::Term(2),
            },
        ))
        .unwrap();
    let snapshot = leader_state
        .snapshot(CHILD, right.arc, Group::conf_of(&right))
        .unwrap();
    let offer = |core: &mut NodeCore<MemoryLog>| {
        let message = ringkv_types::raft::Message {
            group: CHILD,
            from: member_id(NodeId(2), 1),
            to: member,
            term: ringkv_types::Term(2),
            body: ringkv_types::raft::MessageBody::InstallSnapshot {
                snapshot: ringkv_types::raft::Snapshot {
                    meta: snapshot.meta.clone(),
                    data: Bytes::new(),
                },
            },
        };
        core.offer_snapshot(message, snapshot.clone().into(), right.clone(), None)
            .unwrap()
    };
    assert!(!offer(&mut core), "installed over the parent's keys");
    assert!(core.groups[&CHILD].pending_install.is_none());
    // Once the parent here holds only its own half (it applied the split, or installed a
    // snapshot of its shrunken arc), the new shard's snapshot is taken.
    core.groups.get_mut(&SHARD).unwrap().descriptor = left;
    assert!(offer(&mut core));
    assert!(core.groups[&CHILD].pending_install.is_some());
    drop(driver);
}
