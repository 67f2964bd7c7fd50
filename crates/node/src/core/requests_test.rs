//! The client request path in the core, over memory only (a [`MemoryLog`] and a
//! [`MemoryState`]), driven through the core's own Ready handling: refusals (unknown shard,
//! stale epoch, not leader), a write proposed, persisted, applied and answered, a retried
//! session write applied once, and a stale read handed to the driver at the applied index.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test")]

use super::node_core::NodeCore;
use super::replies::{Outcome, RequestId};
use super::requests::KvRouted;
use crate::config::LimitsConfig;
use crate::group::{Group, NodeStorage};
use bytes::Bytes;
use ringkv_raft::{Config, RawNode};
use ringkv_storage::{MemoryLog, MemoryState, StateStore};
use ringkv_types::{
    Epoch, KvOp, KvRequest, KvResult, LogIndex, NodeId, ReadConsistency, Replica, ReplicaRole,
    Response, ShardDescriptor, ShardId, WireError, WriteSession, member_id, ring,
};
use std::collections::BTreeMap;

const SHARD: ShardId = ShardId(9);

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

/// A node whose core, log and applied state are all in memory.
struct MemoryNode {
    core: NodeCore<MemoryLog>,
    log: MemoryLog,
    state: MemoryState,
}

impl MemoryNode {
    fn new() -> Self {
        let log = MemoryLog::new();
        let descriptor = descriptor();
        let member = descriptor.replicas[0].member;
        let storage = NodeStorage::new(log.clone(), Group::conf_of(&descriptor));
        let raw = RawNode::new(Config::new(member, SHARD), storage).unwrap();
        let group = Group::new(SHARD, member, Some(descriptor), raw, LogIndex::ZERO);
        let core = NodeCore::new(NodeId(1), BTreeMap::from([(SHARD, group)]), BTreeMap::new());
        Self {
            core,
            log,
            state: MemoryState::new(),
        }
    }

    /// Runs turns until nothing is dirty: Readies through the core, each turn's writes made
    /// durable in memory, committed entries applied into the memory state.
    fn settle(&mut self) {
        for _ in 0..32 {
            if self.core.dirty.is_empty() {
                return;
            }
            for shard in std::mem::take(&mut self.core.dirty) {
                self.core.note_polled(shard);
                let group = self.core.groups.get_mut(&shard).unwrap();
                if !group.raw.has_ready() {
                    continue;
                }
                let ready = group.raw.ready().unwrap();
                let output = self.core.handle_ready(shard, ready).unwrap();
                if !output.committed.is_empty() {
                    self.core
                        .apply_run(&mut self.state, shard, output.committed)
                        .unwrap();
                }
                self.core.serve_reads(shard, &self.state, 5_000);
                self.core.dirty.insert(shard);
            }
            if let Some(writes) = self.core.take_writes() {
                let mark = self.state.journal_mark();
                for group in writes.into_groups().values() {
                    group.apply_to_log(&self.log).unwrap();
                }
                self.state.batches_durable(mark);
                for shard in self.core.batch_durable().unwrap() {
                    self.core.serve_reads(shard, &self.state, 5_000);
                }
            }
        }
        panic!("the node never settled");
    }

    fn request(&mut self, op: KvOp, epoch: Epoch, id: u64) -> KvRouted {
        let request = KvRequest {
            shard: SHARD,
            epoch,
            session: Some(WriteSession {
                session_id: 4,
                sequence: 1,
            }),
            timeout_ms: 0,
            op,
        };
        self.core
            .kv_request(
                request,
                RequestId(id),
                5_000,
                &LimitsConfig::default(),
                None,
            )
            .unwrap()
    }
}

fn put() -> KvOp {
    KvOp::Put {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"v"),
    }
}

#[test]
fn requests_are_refused_proposed_applied_and_answered_through_the_core() {
    let mut node = MemoryNode::new();
    let epoch = descriptor().epoch;
    // Not leader yet: refused with the descriptor, nothing proposed.
    assert_eq!(node.request(put(), epoch, 1), KvRouted::Done);
    let refused = node.core.replies.take();
    assert!(matches!(
        refused.as_slice(),
        [(
            RequestId(1),
            Outcome::Answer(Response::Error(WireError::NotLeader { .. }))
        )]
    ));
    // A stale epoch: the client is sent the current descriptor.
    let stale = Epoch::default();
    assert_eq!(node.request(put(), stale, 2), KvRouted::Done);
    assert_eq!(
        node.core.replies.take(),
        vec![(
            RequestId(2),
            Outcome::Answer(Response::Error(WireError::EpochMismatch {
                descriptor: descriptor()
            }))
        )]
    );

    node.core
        .groups
        .get_mut(&SHARD)
        .unwrap()
        .raw
        .campaign()
        .unwrap();
    node.core.dirty.insert(SHARD);
    node.settle();
    assert!(node.core.groups[&SHARD].raw.is_leader());

    // A write and its retry (same session and sequence): both proposed, applied once.
    assert_eq!(node.request(put(), epoch, 3), KvRouted::Proposed);
    assert_eq!(node.request(put(), epoch, 4), KvRouted::Proposed);
    assert!(node.core.replies.is_empty());
    node.settle();
    let answers = node.core.replies.take();
    let index = match answers.first() {
        Some((RequestId(3), Outcome::Answer(Response::Kv(KvResult::Written { index })))) => *index,
        other => panic!("unexpected first answer {other:?}"),
    };
    assert_eq!(answers.len(), 2);
    let stored = node.state.value(&ring::storage_key(b"k")).unwrap().unwrap();
    assert_eq!(
        (stored.value.as_ref(), stored.version),
        (&b"v"[..], index.0)
    );
    assert_eq!(
        node.log.hard_state().commit,
        node.core.groups[&SHARD].applied
    );

    // A linearizable read waits for its ReadIndex round, then for apply to reach its index;
    // the core serves it from the memory state.
    let get = KvOp::Get {
        key: Bytes::from_static(b"k"),
        consistency: ReadConsistency::Linearizable,
    };
    assert_eq!(node.request(get, epoch, 6), KvRouted::Done);
    assert_eq!(node.core.groups[&SHARD].reads_new.len(), 1);
    node.core.issue_reads();
    node.settle();
    let group = &node.core.groups[&SHARD];
    assert!(group.reads_new.is_empty() && group.reads_sent.is_empty());
    assert!(group.reads_ready.is_empty());
    let applied = group.applied;
    assert_eq!(
        node.core.replies.take(),
        vec![(
            RequestId(6),
            Outcome::Answer(Response::Kv(KvResult::Value {
                value: Some(Bytes::from_static(b"v")),
                applied,
            }))
        )]
    );

    // A scan through the same path: one page with the key, complete.
    let scan = KvOp::Scan {
        start: Bytes::new(),
        prefix: Bytes::new(),
        limit: 10,
        keys_only: false,
        consistency: ReadConsistency::Lease,
    };
    assert_eq!(node.request(scan, epoch, 7), KvRouted::Done);
    node.core.issue_reads();
    node.settle();
    match node.core.replies.take().as_slice() {
        [(RequestId(7), Outcome::Answer(Response::Kv(KvResult::ScanPage { items, next, .. })))] => {
            assert_eq!(items.len(), 1);
            assert_eq!(items[0].key.as_ref(), b"k");
            assert_eq!(items[0].value.as_deref(), Some(&b"v"[..]));
            assert_eq!(*next, None);
        }
        other => panic!("scan answered {other:?}"),
    }

    // A stale read goes back to the driver at the applied index, which serves it from the
    // same state.
    let get = KvOp::Get {
        key: Bytes::from_static(b"k"),
        consistency: ReadConsistency::Stale,
    };
    match node.request(get, epoch, 5) {
        KvRouted::StaleRead {
            op,
            applied,
            arc,
            now_ms,
        } => {
            assert_eq!(applied, node.core.groups[&SHARD].applied);
            assert_eq!(
                crate::kv_read::read_now(&node.state, &op, applied, arc, now_ms),
                Response::Kv(KvResult::Value {
                    value: Some(Bytes::from_static(b"v")),
                    applied,
                })
            );
        }
        other => panic!("stale read routed {other:?}"),
    }
}
