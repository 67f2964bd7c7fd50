//! Splitting a shard inside its Raft group: no data moves.
//!
//! The leader proposes `LogCommand::SplitFromEntry { epoch, new_shard, at }` (the first format,
//! `LogCommand::Split`, started the new log at index 5; old entries replay as written). Every
//! replica applies it
//! at the same index, deterministically: when the shard's epoch still equals `epoch` and `at`
//! lies strictly inside its arc, the shard keeps `[start, at)` with `version + 1`, and the new
//! group starts for `[at, end)` with the same replicas and member ids, `version + 1`, its log
//! at the split entry's index and term, and a copy of the parent's exactly-once session
//! records. The data already sits in the store under `position ‖ key`. Starting the new log
//! where the parent's stood keeps every key's version (the log index of its last write)
//! growing across the split: the new shard's writes get indexes above every version its keys
//! had in the parent, so a stale version never matches again and a watch resumes from any
//! version seen before or after the split.
//!
//! Order on one replica, so a crash at any point recovers:
//! 1. the current group-commit batch is submitted, then the new group is written in one
//!    durable batch (applied state, configuration, compaction point, hard state, sessions,
//!    descriptor); everything submitted earlier is durable before it (the writer is FIFO);
//! 2. the parent's shrunken descriptor is written with the split entry's applied index.
//!
//! A crash between 1 and 2 re-applies the split at restart; the new group then exists
//! (initialized) and is left alone.
//!
//! Race: the new group's leader (on a faster replica) may reach a replica that has not applied
//! the split yet, which then creates an uninitialized replica of the new group and may vote in
//! it. When the split applies there, it replaces that replica but keeps its term and vote (a
//! replica must never vote twice in one term). If the new group's replica was already filled
//! by a snapshot, it is newer than the split and is left alone.

use super::{EventLoop, Internal};
use crate::core::apply_plan::Split;
use crate::core::machine::MachineKind;
use crate::core::replies::RequestId;
use crate::error::Result;
use crate::group::PendingChange;
use crate::log_command::LogCommand;
use crate::node::{BOOTSTRAP_START, create_group_batch, open_group};
use ringkv_types::raft::HardState;
use ringkv_types::{Epoch, LogIndex, Response, ShardDescriptor, ShardId, Term, WireError};
use tracing::{info, warn};

use super::requests::not_leader;

/// The two descriptors after splitting `parent` at `at`, or `None` when `at` is not strictly
/// inside its arc.
pub fn split_descriptors(
    parent: &ShardDescriptor,
    new_shard: ShardId,
    at: u64,
) -> Option<(ShardDescriptor, ShardDescriptor)> {
    let (left_arc, right_arc) = parent.arc.split_at(at)?;
    let epoch = Epoch {
        conf_ver: parent.epoch.conf_ver,
        version: parent.epoch.version.saturating_add(1),
    };
    let left = ShardDescriptor {
        id: parent.id,
        arc: left_arc,
        epoch,
        replicas: parent.replicas.clone(),
    };
    let right = ShardDescriptor {
        id: new_shard,
        arc: right_arc,
        epoch,
        replicas: parent.replicas.clone(),
    };
    Some((left, right))
}

fn invalid(reason: String) -> Response {
    Response::Error(WireError::InvalidRequest { reason })
}

impl EventLoop {
    /// `AdminRequest::SplitShard`, on the shard's leader.
    pub(super) fn split_shard(
        &mut self,
        shard: ShardId,
        epoch: Epoch,
        new_shard: ShardId,
        at: Option<u64>,
        slot: RequestId,
    ) -> Result<()> {
        let taken = self.core.groups.contains_key(&new_shard)
            || self.map.shards.iter().any(|d| d.id == new_shard)
            || self.core.tombstones.contains_key(&new_shard);
        let group = match self.core.groups.get_mut(&shard) {
            Some(group) if group.machine.is_data() && group.initialized => group,
            _ => {
                self.core
                    .replies
                    .send(slot, Response::Error(WireError::ShardNotFound { shard }));
                return Ok(());
            }
        };
        if !group.raw.is_leader() {
            self.core
                .replies
                .send(slot, not_leader(group.leader_hint(), &group.descriptor));
            return Ok(());
        }
        if epoch != group.descriptor.epoch {
            self.core.replies.send(
                slot,
                Response::Error(WireError::EpochMismatch {
                    descriptor: group.descriptor.clone(),
                }),
            );
            return Ok(());
        }
        if group.pending_change.is_some() || group.pending_split.is_some() {
            self.core.replies.send(
                slot,
                invalid(format!(
                    "shard {shard}: a membership change or split is already in progress"
                )),
            );
            return Ok(());
        }
        if MachineKind::of(new_shard) != MachineKind::Data || new_shard == shard || taken {
            self.core.replies.send(
                slot,
                invalid(format!("shard id {new_shard} is not free for a split")),
            );
            return Ok(());
        }
        let at = at.unwrap_or_else(|| group.descriptor.arc.midpoint());
        if group.descriptor.arc.split_at(at).is_none() {
            self.core.replies.send(
                slot,
                invalid(format!(
                    "position {at} is not strictly inside the arc of shard {shard}"
                )),
            );
            return Ok(());
        }
        let data = LogCommand::SplitFromEntry {
            epoch,
            new_shard,
            at,
        }
        .encode()?;
        match group.raw.propose(data) {
            Ok(index) => {
                self.metrics.raft_proposals.inc();
                info!(%shard, %new_shard, at, %index, "proposed a split");
                group.pending_split = Some(PendingChange {
                    index,
                    term: group.raw.term(),
                    reply: slot,
                });
                self.core.dirty.insert(shard);
            }
            Err(ringkv_raft::Error::NotLeader { .. }) => {
                self.core
                    .replies
                    .send(slot, not_leader(group.leader_hint(), &group.descriptor));
            }
            Err(
                ringkv_raft::Error::ProposalDropped { .. }
                | ringkv_raft::Error::TransferInProgress { .. },
            ) => self
                .core
                .replies
                .send(slot, Response::Error(WireError::Busy)),
            Err(error) => self.core.replies.send(
                slot,
                Response::Error(WireError::Internal {
                    reason: error.to_string(),
                }),
            ),
        }
        Ok(())
    }

    /// Applies a committed split entry of `shard` at `index` (see the module docs).
    pub(super) fn apply_split(
        &mut self,
        shard: ShardId,
        index: LogIndex,
        term: Term,
        split: Split,
        internal: &mut Internal,
    ) -> Result<()> {
        let Some(group) = self.core.groups.get(&shard) else {
            return Ok(());
        };
        let outcome = if group.initialized && split.epoch == group.descriptor.epoch {
            split_descriptors(&group.descriptor, split.new_shard, split.at)
        } else {
            None
        };
        let Some((left, right)) = outcome else {
            // Stale (the epoch moved since the proposal) or invalid: every replica skips it.
            self.core
                .skip_split(&mut self.store, shard, (index, term))?;
            self.watch.record(shard, index.0, index.0, &[]);
            return Ok(());
        };
        let parent_leads = group.raw.is_leader();
        // The new shard's versions follow its index when its log continues the parent's and
        // the parent's versions follow the parent's index (a child of the first format's child
        // holds versions above any index of its own).
        let follows = split.from_entry
            && group
                .machine
                .data()
                .is_some_and(|data| data.versions_follow_index);
        let start = if split.from_entry {
            (index, term)
        } else {
            BOOTSTRAP_START
        };
        self.create_split_child(shard, &right, (start, follows), parent_leads, internal)?;
        let (kept, child) = (left.clone(), right.clone());
        self.core
            .finish_split(&mut self.store, shard, (index, term), left, right)?;
        // Watchers of the parent end here (after every change up to the split); the child's
        // history starts with the parent's changes of its keys.
        self.watch
            .split(shard, index.0, kept, &child, split.from_entry);
        Ok(())
    }

    /// Creates the split's new group here, its log starting at `start` (the split entry's
    /// index and term; `versions_follow_index` as `create_group_batch` takes it), unless a replica of it was already initialized (by a snapshot, or
    /// before a crash). An uninitialized replica is replaced, keeping its hard state.
    fn create_split_child(
        &mut self,
        parent: ShardId,
        right: &ShardDescriptor,
        (start, versions_follow_index): ((LogIndex, Term), bool),
        parent_leads: bool,
        internal: &mut Internal,
    ) -> Result<()> {
        let child = right.id;
        if self.core.groups.get(&child).is_some_and(|g| g.initialized) {
            info!(%child, "the split's new shard is already initialized here");
            return Ok(());
        }
        if self.core.tombstones.contains_key(&child)
            || self.removals.iter().any(|r| r.shard() == child)
            || self.removals_waiting.iter().any(|(_, s, _)| *s == child)
        {
            warn!(%child, "the split's new shard was removed here; not recreating it");
            return Ok(());
        }
        let Some(member) = right.replica_on(self.config.node_id).map(|r| r.member) else {
            return Ok(());
        };
        // The highest term and its vote this node ever persisted (or is about to) for the new
        // group: the in-memory state of an uninitialized replica, else what is on disk.
        let on_disk = self.store.group(child)?.hard_state();
        let in_memory = self.core.groups.get(&child).map(|group| {
            let status = group.raw.status();
            HardState {
                term: status.term,
                vote: status.vote,
                commit: LogIndex::ZERO,
            }
        });
        let previous = match in_memory {
            Some(state) if state.term >= on_disk.term => state,
            _ => on_disk,
        };
        // IMPORTANT: everything queued for the uninitialized replica goes to the writer first,
        // so our batch below is the last word on its hard state.
        self.submit_now(internal)?;
        let mut batch = create_group_batch(right, start, Some(previous), versions_follow_index)?;
        batch.set_sessions(child, self.store.sessions(parent)?);
        self.store.write(batch)?;
        // Every batch submitted before is durable now: the old replica's pending
        // acknowledgements go out, and it is forgotten.
        let messages = self.core.persist.take_shard(child);
        let mut snapshots = Vec::new();
        for message in messages {
            self.route(message, &mut snapshots);
        }
        if let Some(mut old) = self.core.groups.remove(&child) {
            for (_, proposal) in std::mem::take(&mut old.proposals) {
                self.core.replies.send(
                    proposal.reply,
                    Response::Error(WireError::ShardNotFound { shard: child }),
                );
            }
        }
        let mut group = open_group(
            &self.store,
            &self.config,
            child,
            member,
            Some(right.clone()),
        )?;
        if parent_leads && previous.vote == ringkv_types::NodeId::NONE {
            // The parent's leader starts the first election of the new group at once.
            group.raw.campaign()?;
        }
        info!(%child, %member, "created the split's new shard");
        self.core.insert_group(group);
        self.core.dirty.insert(child);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_types::ring::Arc;
    use ringkv_types::{NodeId, Replica, ReplicaRole, member_id};

    #[test]
    fn a_split_cuts_the_arc_and_bumps_the_version() {
        let parent = ShardDescriptor {
            id: ShardId(3),
            arc: Arc {
                start: 100,
                end: Some(200),
            },
            epoch: Epoch {
                conf_ver: 4,
                version: 2,
            },
            replicas: vec![Replica::new(member_id(NodeId(1), 4), ReplicaRole::Voter)],
        };
        let (left, right) = split_descriptors(&parent, ShardId(9), 150).unwrap();
        assert_eq!(
            left.arc,
            Arc {
                start: 100,
                end: Some(150)
            }
        );
        assert_eq!(
            right.arc,
            Arc {
                start: 150,
                end: Some(200)
            }
        );
        assert_eq!(left.id, ShardId(3));
        assert_eq!(right.id, ShardId(9));
        for descriptor in [&left, &right] {
            assert_eq!(
                descriptor.epoch,
                Epoch {
                    conf_ver: 4,
                    version: 3
                }
            );
            assert_eq!(descriptor.replicas, parent.replicas);
        }
        for bad in [100, 99, 200, 250] {
            assert!(
                split_descriptors(&parent, ShardId(9), bad).is_none(),
                "{bad}"
            );
        }
    }
}
