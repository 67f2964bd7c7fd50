//! The client request path of a data shard in the core: a KV request is checked against the
//! replica (hosted, initialized, epoch, limits), refused `NotLeader` by a follower, queued for
//! a ReadIndex round (linearizable and lease reads) or proposed (writes, stamped with log
//! time); its answer comes when its entry applies or its read is confirmed. A stale read is
//! served by the driver from its store ([`KvRouted::StaleRead`]). The turn's reads become one
//! ReadIndex round per group and mode ([`NodeCore::issue_reads`]).

use super::answers::{not_leader, proposal_refused};
use super::node_core::NodeCore;
use super::replies::RequestId;
use crate::config::LimitsConfig;
use crate::error::Result;
use crate::group::{PendingRead, Proposal, WriteKind};
use crate::log_command::LogCommand;
use crate::service::{check_request, command_of};
use ringkv_raft::{ReadMode, Storage};
use ringkv_types::ring::Arc;
use ringkv_types::{
    KvOp, KvRequest, LogIndex, NodeId, ReadConsistency, Response, SpaceAlarm, WireError,
};
use std::collections::BTreeMap;

/// What the core made of a KV request.
#[derive(Debug, PartialEq)]
pub enum KvRouted {
    /// Answered, queued for its ReadIndex round, or waiting for nothing the driver does.
    Done,
    /// Proposed to the group (answered when its entry applies).
    Proposed,
    /// A stale read for the driver to serve now from the applied state at `applied`, at log
    /// time `now_ms`, over the shard's `arc`.
    StaleRead {
        /// The read.
        op: KvOp,
        /// The replica's applied index.
        applied: LogIndex,
        /// The shard's arc.
        arc: Arc,
        /// The read's log time.
        now_ms: u64,
    },
}

impl<L: Storage> NodeCore<L> {
    /// Takes the KV request `request` of the caller `slot` (see the module docs). `now_ms` is
    /// the wall clock (read by the driver) for log time; `alarm` the low-space alarm refusing
    /// a write that adds data (the driver measures it).
    ///
    /// # Errors
    /// A log command that cannot be encoded.
    pub fn kv_request(
        &mut self,
        request: KvRequest,
        slot: RequestId,
        now_ms: u64,
        limits: &LimitsConfig,
        alarm: Option<(NodeId, SpaceAlarm)>,
    ) -> Result<KvRouted> {
        let shard = request.shard;
        let group = match self.groups.get_mut(&shard) {
            Some(group) if group.machine.is_data() && group.initialized => group,
            _ => {
                self.replies
                    .send(slot, Response::Error(WireError::ShardNotFound { shard }));
                return Ok(KvRouted::Done);
            }
        };
        if let Err(error) = check_request(&request, &group.descriptor, limits) {
            self.replies.send(slot, Response::Error(error));
            return Ok(KvRouted::Done);
        }
        let read = match &request.op {
            KvOp::Get { consistency, .. }
            | KvOp::Exists { consistency, .. }
            | KvOp::GetMany { consistency, .. }
            | KvOp::Scan { consistency, .. }
            | KvOp::Ttl { consistency, .. } => Some(*consistency),
            _ => None,
        };
        if let Some(consistency) = read {
            let mode = match consistency {
                ReadConsistency::Stale if group.installing.is_some() => {
                    let index = group.installing.map(|(_, index)| index).unwrap_or_default();
                    // A snapshot's data is moving into the range (see `snapshot_install`): a
                    // read now could see part of it. It waits for the install (`on_durable`
                    // serves it).
                    group.reads_ready.push((
                        index,
                        vec![PendingRead {
                            op: request.op,
                            reply: slot,
                        }],
                    ));
                    return Ok(KvRouted::Done);
                }
                ReadConsistency::Stale => {
                    group.reads_served += 1;
                    let arc = group.descriptor.arc;
                    let now_ms = group.next_stamp(now_ms);
                    return Ok(KvRouted::StaleRead {
                        op: request.op,
                        applied: group.applied,
                        arc,
                        now_ms,
                    });
                }
                ReadConsistency::Linearizable => ReadMode::Safe,
                ReadConsistency::Lease => ReadMode::Lease,
            };
            if !group.raw.is_leader() {
                self.replies
                    .send(slot, not_leader(group.leader_hint(), &group.descriptor));
                return Ok(KvRouted::Done);
            }
            group.reads_new.push((
                mode,
                PendingRead {
                    op: request.op,
                    reply: slot,
                },
            ));
            self.reads_waiting.insert(shard);
            return Ok(KvRouted::Done);
        }
        if !group.raw.is_leader() {
            self.replies
                .send(slot, not_leader(group.leader_hint(), &group.descriptor));
            return Ok(KvRouted::Done);
        }
        if let Some((node, alarm)) = alarm {
            self.replies.send(
                slot,
                Response::Error(WireError::NoSpace {
                    node,
                    free_bytes: alarm.free_bytes,
                    reserve_bytes: alarm.reserve_bytes,
                }),
            );
            return Ok(KvRouted::Done);
        }
        let kind = match request.op {
            KvOp::CompareAndSwap { .. } => WriteKind::CompareAndSwap,
            _ => WriteKind::Write,
        };
        let Some(command) = command_of(&request) else {
            self.replies.drop_request(slot);
            return Ok(KvRouted::Done);
        };
        let data = LogCommand::KvAt {
            now_ms: group.next_stamp(now_ms),
            command,
        }
        .encode()?;
        match group.raw.propose(data) {
            Ok(index) => {
                let term = group.raw.term();
                let proposal = Proposal {
                    term,
                    kind,
                    reply: slot,
                };
                if let Some(replaced) = group.proposals.insert(index, proposal) {
                    self.replies.drop_request(replaced.reply);
                }
                #[cfg(feature = "planted-bugs")]
                if self.planted.answer_before_apply
                    && let Some(early) = group.proposals.remove(&index)
                {
                    // PLANTED BUG: the write is answered before it is committed or applied.
                    self.replies.send(
                        early.reply,
                        Response::Kv(ringkv_types::KvResult::Written { index }),
                    );
                }
                self.dirty.insert(shard);
                return Ok(KvRouted::Proposed);
            }
            Err(error) => self.replies.send(slot, proposal_refused(group, &error)),
        }
        Ok(KvRouted::Done)
    }

    /// Starts one ReadIndex round per group and mode for the reads that arrived this turn.
    pub fn issue_reads(&mut self) {
        for shard in std::mem::take(&mut self.reads_waiting) {
            let Some(group) = self.groups.get_mut(&shard) else {
                continue;
            };
            if group.reads_new.is_empty() {
                continue;
            }
            let mut by_mode: BTreeMap<u8, (ReadMode, Vec<PendingRead>)> = BTreeMap::new();
            for (mode, read) in group.reads_new.drain(..) {
                let key = u8::from(mode == ReadMode::Lease);
                by_mode
                    .entry(key)
                    .or_insert_with(|| (mode, Vec::new()))
                    .1
                    .push(read);
            }
            for (mode, reads) in by_mode.into_values() {
                let context = self.next_read_context;
                self.next_read_context += 1;
                match group.raw.read_index(context, mode) {
                    Ok(()) => {
                        group.reads_sent.insert(context, reads);
                    }
                    Err(ringkv_raft::Error::NotLeader { .. }) => {
                        let hint = group.leader_hint();
                        for read in reads {
                            self.replies
                                .send(read.reply, not_leader(hint, &group.descriptor));
                        }
                    }
                    Err(_) => {
                        for read in reads {
                            self.replies
                                .send(read.reply, Response::Error(WireError::Busy));
                        }
                    }
                }
            }
            self.dirty.insert(shard);
        }
    }
}
