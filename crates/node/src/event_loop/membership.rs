//! Membership on the node side: Raft member ids on messages, replicas created by a message and
//! removed by a configuration change (with tombstones), and the admin calls a shard leader
//! executes (`ChangeReplica`, `TransferLeader`). Which message creates or removes a replica is
//! decided by the core (`core/route.rs`); this file does what it decides.
//!
//! ```text
//!   message to member m of shard s, no local replica ── m on this node, m > tombstone(s),
//!                                                       no removal of s running
//!        └──► uninitialized replica (member m, empty log, no descriptor; persists its votes)
//!                 └── snapshot from the leader (data + descriptor) ──► initialized replica
//!   configuration entry applied without our member ──► removed: group stopped, tombstone(s) = m,
//!        log, state and data deleted in the background once the batches holding its last
//!        writes are durable
//! ```

use super::EventLoop;
use crate::core::replies::RequestId;
use crate::error::Result;
use crate::group::{PendingChange, PendingTransfer};
use crate::node::open_group;
use crate::replica_meta;
use ringkv_raft::ConfChange;
use ringkv_types::raft::Message;
use ringkv_types::{
    AdminResult, Epoch, LogIndex, NodeId, ReplicaChange, ReplicaRole, Response, ShardId, WireError,
    member_id,
};
use tracing::{info, warn};

use super::requests::not_leader;

/// How long a leader transfer may take before the caller gets `Timeout`.
const TRANSFER_TIMEOUT_MS: u64 = 10_000;

fn invalid(reason: String) -> Response {
    Response::Error(WireError::InvalidRequest { reason })
}

impl EventLoop {
    /// Creates an uninitialized replica of the shard as the destination member of `message`
    /// (see [`Route::Create`](crate::core::route::Route::Create)).
    pub(super) fn create_replica(&mut self, message: &Message) -> Result<()> {
        let shard = message.group;
        let group = open_group(&self.store, &self.config, shard, message.to, None)?;
        info!(%shard, member = %message.to, from = %message.from,
            "created an uninitialized replica");
        self.core.insert_group(group);
        Ok(())
    }

    /// Stops the local replica of `shard` (its member was removed): answers what waits on it,
    /// records the tombstone durably, and schedules the deletion of its log, state and data.
    pub(super) fn remove_group(&mut self, shard: ShardId) -> Result<()> {
        let Some(mut group) = self.core.take_group(shard) else {
            return Ok(());
        };
        self.watch.remove(shard);
        let gone = || Response::Error(WireError::ShardNotFound { shard });
        for (_, proposal) in std::mem::take(&mut group.proposals) {
            self.core.replies.send(proposal.reply, gone());
        }
        for (_, read) in group.reads_new.drain(..) {
            self.core.replies.send(read.reply, gone());
        }
        for (_, reads) in std::mem::take(&mut group.reads_sent) {
            for read in reads {
                self.core.replies.send(read.reply, gone());
            }
        }
        for (_, reads) in group.reads_ready.drain(..) {
            for read in reads {
                self.core.replies.send(read.reply, gone());
            }
        }
        for change in [group.pending_change.take(), group.pending_split.take()]
            .into_iter()
            .flatten()
        {
            self.core.replies.send(change.reply, gone());
        }
        for transfer in group.pending_transfers.drain(..) {
            self.core.replies.send(transfer.reply, gone());
        }
        // IMPORTANT: the tombstone is durable before anything is deleted, so a restart never
        // recreates the removed member.
        replica_meta::save_tombstone(&self.store, shard, group.member)?;
        self.core.bury(shard, group.member);
        // The current batch (if any) may hold the group's last writes: delete after it.
        let barrier = self.core.persist.submitted_count() + u64::from(!self.core.writes.is_empty());
        info!(%shard, member = %group.member, "replica removed; deleting its data");
        self.removals_waiting
            .push((barrier, shard, group.descriptor.arc));
        Ok(())
    }

    /// Starts the deletions whose batches are durable.
    pub(super) fn start_removals(&mut self) -> Result<()> {
        let durable = self.core.persist.durable_count();
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.removals_waiting)
            .into_iter()
            .partition(|(barrier, _, _)| *barrier <= durable);
        self.removals_waiting = waiting;
        for (_, shard, arc) in ready {
            let handle = self.store.remove_replica(shard, arc)?;
            self.store
                .delete_meta(&replica_meta::descriptor_key(shard))?;
            self.removals.push(handle);
        }
        Ok(())
    }

    /// Collects finished removals.
    pub(super) fn reap_removals(&mut self) {
        let (finished, running): (Vec<_>, Vec<_>) = std::mem::take(&mut self.removals)
            .into_iter()
            .partition(|handle| handle.is_finished());
        self.removals = running;
        for handle in finished {
            let shard = handle.shard();
            match handle.join() {
                Ok(keys) => info!(%shard, keys, "replica data deleted"),
                Err(error) => warn!(%shard, %error, "replica removal failed"),
            }
        }
    }

    /// Counts down leader transfers; answers `Timeout` to those that ran out.
    pub(super) fn tick_transfers(&mut self) {
        // A group with a transfer waiting stays awake (`NodeCore::tick`).
        for shard in &self.core.awake {
            let Some(group) = self.core.groups.get_mut(shard) else {
                continue;
            };
            if group.pending_transfers.is_empty() {
                continue;
            }
            // A leader whose Raft core abandoned the transfer (the target did not take over
            // within an election timeout) answers at once: the caller may try again.
            let abandoned_to =
                |to| group.raw.is_leader() && group.raw.transferring_to() != Some(to);
            let (expired, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut group.pending_transfers)
                .into_iter()
                .map(|mut t| {
                    t.ticks_left = t.ticks_left.saturating_sub(1);
                    t
                })
                .partition(|t| t.ticks_left == 0 || abandoned_to(t.to));
            group.pending_transfers = waiting;
            for transfer in expired {
                self.core
                    .replies
                    .send(transfer.reply, Response::Error(WireError::Timeout));
            }
        }
    }

    /// `AdminRequest::ChangeReplica`, on the shard's leader.
    pub(super) fn change_replica(
        &mut self,
        shard: ShardId,
        epoch: Epoch,
        change: ReplicaChange,
        slot: RequestId,
    ) {
        let response = self.propose_change(shard, epoch, change);
        match response {
            Ok(index) => {
                if let Some(group) = self.core.groups.get_mut(&shard) {
                    let term = group.raw.term();
                    let replaced = group.pending_change.replace(PendingChange {
                        index,
                        term,
                        reply: slot,
                    });
                    if let Some(replaced) = replaced {
                        self.core.replies.drop_request(replaced.reply);
                    }
                    self.core.dirty.insert(shard);
                } else {
                    self.core.replies.drop_request(slot);
                }
            }
            Err(response) => self.core.replies.send(slot, response),
        }
    }

    #[expect(
        clippy::result_large_err,
        reason = "a cold admin path; the error is the answer sent to the caller as is"
    )]
    fn propose_change(
        &mut self,
        shard: ShardId,
        epoch: Epoch,
        change: ReplicaChange,
    ) -> std::result::Result<LogIndex, Response> {
        let target_known = match change {
            ReplicaChange::AddLearner { node } => self.node_known(node),
            _ => true,
        };
        let group = match self.core.groups.get_mut(&shard) {
            Some(group) if group.machine.is_data() && group.initialized => group,
            _ => return Err(Response::Error(WireError::ShardNotFound { shard })),
        };
        if !group.raw.is_leader() {
            return Err(not_leader(group.leader_hint(), &group.descriptor));
        }
        if epoch != group.descriptor.epoch {
            return Err(Response::Error(WireError::EpochMismatch {
                descriptor: group.descriptor.clone(),
            }));
        }
        if group.pending_change.is_some() || group.pending_split.is_some() {
            return Err(invalid(format!(
                "shard {shard}: a membership change or split is already in progress"
            )));
        }
        let descriptor = &group.descriptor;
        let conf_change = match change {
            ReplicaChange::AddLearner { node } => {
                if !node.is_some() || node.get() >= ringkv_types::NODE_ID_LIMIT {
                    return Err(invalid(format!("{node} is not a valid node id")));
                }
                if !target_known {
                    return Err(invalid(format!(
                        "node {node} is unknown to the placement driver (or removed)"
                    )));
                }
                if descriptor.replica_on(node).is_some() {
                    return Err(invalid(format!(
                        "node {node} already holds a replica of shard {shard}"
                    )));
                }
                // The new member's incarnation is the new descriptor's conf_ver: conf_ver only
                // grows, so the member id was never used in this shard.
                let incarnation = descriptor
                    .epoch
                    .conf_ver
                    .checked_add(1)
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| {
                        invalid(format!("shard {shard}: conf_ver exhausted member ids"))
                    })?;
                ConfChange::AddLearner(member_id(node, incarnation))
            }
            ReplicaChange::Promote { node } => match descriptor.replica_on(node) {
                Some(replica) if replica.role == ReplicaRole::Learner => {
                    // A voter that lags would stall commits until it catches up: promote only
                    // a learner holding everything committed (it has had its snapshot).
                    let committed = group.raw.status().committed;
                    let matched = group.raw.match_index(replica.member).unwrap_or_default();
                    if matched < committed {
                        return Err(invalid(format!(
                            "the learner of shard {shard} on node {node} has not caught up yet \
                             (replicated up to {matched}, committed {committed}); retry later"
                        )));
                    }
                    ConfChange::PromoteLearner(replica.member)
                }
                Some(_) => {
                    return Err(invalid(format!(
                        "the replica of shard {shard} on node {node} is already a voter"
                    )));
                }
                None => {
                    return Err(invalid(format!(
                        "node {node} holds no replica of shard {shard}"
                    )));
                }
            },
            ReplicaChange::Remove { node } => {
                let Some(replica) = descriptor.replica_on(node) else {
                    return Err(invalid(format!(
                        "node {node} holds no replica of shard {shard}"
                    )));
                };
                if replica.member == group.member {
                    return Err(invalid(format!(
                        "the leader of shard {shard} cannot remove itself: transfer the \
                         leadership first"
                    )));
                }
                if replica.role == ReplicaRole::Voter && descriptor.voters().count() <= 2 {
                    return Err(invalid(format!(
                        "removing node {node} would leave shard {shard} with fewer than 2 voters"
                    )));
                }
                ConfChange::Remove(replica.member)
            }
        };
        match group.raw.propose_conf_change(conf_change) {
            Ok(index) => {
                self.metrics.raft_proposals.inc();
                info!(%shard, ?change, %index, "proposed a membership change");
                Ok(index)
            }
            Err(ringkv_raft::Error::NotLeader { .. }) => {
                Err(not_leader(group.leader_hint(), &group.descriptor))
            }
            Err(ringkv_raft::Error::ConfChangeRefused { reason, .. }) => {
                Err(invalid(format!("shard {shard}: change refused: {reason}")))
            }
            Err(error) => Err(Response::Error(WireError::Internal {
                reason: error.to_string(),
            })),
        }
    }

    /// `AdminRequest::TransferLeader`, on the shard's leader.
    pub(super) fn transfer_leader(&mut self, shard: ShardId, to: NodeId, slot: RequestId) {
        let ticks = TRANSFER_TIMEOUT_MS / self.config.raft.tick_ms.max(1);
        let group = match self.core.groups.get_mut(&shard) {
            Some(group) if group.initialized => group,
            _ => {
                return self
                    .core
                    .replies
                    .send(slot, Response::Error(WireError::ShardNotFound { shard }));
            }
        };
        if !group.raw.is_leader() {
            return self
                .core
                .replies
                .send(slot, not_leader(group.leader_hint(), &group.descriptor));
        }
        let target = match group.descriptor.replica_on(to) {
            Some(replica) if replica.role == ReplicaRole::Voter => replica.member,
            Some(_) => {
                return self.core.replies.send(
                    slot,
                    invalid(format!(
                        "the replica of shard {shard} on node {to} is a learner; promote it first"
                    )),
                );
            }
            None => {
                return self.core.replies.send(
                    slot,
                    invalid(format!("node {to} holds no replica of shard {shard}")),
                );
            }
        };
        if target == group.member {
            return self.core.replies.send(
                slot,
                Response::Admin(AdminResult::LeaderTransferred { shard, leader: to }),
            );
        }
        match group.raw.transfer_leader(target) {
            Ok(()) => {
                group.pending_transfers.push(PendingTransfer {
                    to: target,
                    ticks_left: ticks.max(1),
                    reply: slot,
                });
                self.core.dirty.insert(shard);
            }
            Err(ringkv_raft::Error::NotLeader { .. }) => {
                self.core
                    .replies
                    .send(slot, not_leader(group.leader_hint(), &group.descriptor));
            }
            Err(error) => self.core.replies.send(
                slot,
                Response::Error(WireError::Internal {
                    reason: error.to_string(),
                }),
            ),
        }
    }
}
