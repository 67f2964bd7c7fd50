//! Splitting a shard inside its Raft group, decided in the core: no data moves.
//!
//! The leader proposes `LogCommand::SplitFromEntry { epoch, new_shard, at }` (the first format,
//! `LogCommand::Split`, started the new log at index 5; old entries replay as written). Every
//! replica applies it at the same index, deterministically: when the shard's epoch still
//! equals `epoch` and `at` lies strictly inside its arc, the shard keeps `[start, at)` with
//! `version + 1`, and the new group starts for `[at, end)` with the same replicas and member
//! ids, `version + 1`, its log at the split entry's index and term, and a copy of the parent's
//! exactly-once session records. The data already sits in the store under `position ‖ key`.
//! Starting the new log where the parent's stood keeps every key's version (the log index of
//! its last write) growing across the split: the new shard's writes get indexes above every
//! version its keys had in the parent, so a stale version never matches again and a watch
//! resumes from any version seen before or after the split.
//!
//! # Two calls and the driver's I/O between them
//! ```text
//!   NodeCore::begin_split ── stale or invalid ──► skipped (applied index moves), done
//!        │ valid
//!        ▼  SplitChild { left, right, create: Option<NewGroup>, .. }
//!   driver, when `create` is Some:
//!        1. submits the turn's batch built so far (NodeCore::take_writes)
//!        2. writes the NewGroup in one durable write (after everything submitted: FIFO)
//!        3. opens the new group's Raft log (Group<L>)
//!        ▼
//!   NodeCore::finish_split ── replaces an uninitialized replica, inserts the new group,
//!                             commits the parent's shrunken descriptor with the split's
//!                             applied index, answers the proposer
//! ```
//!
//! Order on one replica, so a crash at any point recovers:
//! 1. the current group-commit batch is submitted, then the new group is written in one
//!    durable batch (applied state, configuration, compaction point, hard state, sessions,
//!    descriptor); everything submitted earlier is durable before it (the writer is FIFO);
//! 2. the parent's shrunken descriptor is committed with the split entry's applied index (an
//!    apply batch, durable with the next group commit).
//!
//! A crash between 1 and 2 re-applies the split at restart; the new group then exists
//! (initialized) and is left alone.
//!
//! Race: the new group's leader (on a faster replica) may reach a replica that has not applied
//! the split yet, which then creates an uninitialized replica of the new group and may vote in
//! it. When the split applies there, it replaces that replica but keeps its term and vote (a
//! replica must never vote twice in one term). If the new group's replica was already filled
//! by a snapshot, it is newer than the split and is left alone.

use super::answers::not_leader;
use super::apply_plan::Split;
use super::node_core::NodeCore;
use crate::error::Result;
use crate::group::Group;
use crate::node::{BOOTSTRAP_START, create_group_batch, initial_hard_state};
use crate::replica_meta;
use ringkv_storage::{
    AppliedState, MemoryLog, MemoryState, SessionRecord, StateStore, WriteBatchBuilder,
};
use ringkv_types::raft::{HardState, SnapshotMeta};
use ringkv_types::{
    AdminResult, Epoch, LogIndex, NodeId, Response, ShardDescriptor, ShardId, Term, WireError,
};
use tracing::{info, warn};

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

/// The split's new group as it is first written, in one durable write: its log and applied
/// state start at `start` with the descriptor's configuration, its hard state keeps what an
/// uninitialized replica of it persisted, and its session table is the parent's.
#[derive(Clone, Debug, PartialEq)]
pub struct NewGroup {
    /// The new shard's descriptor.
    pub descriptor: ShardDescriptor,
    /// Where its log starts (the split entry's index and term; index 5 for the first format).
    pub start: (LogIndex, Term),
    /// The hard state an uninitialized replica of it already persisted (or was about to).
    pub previous: HardState,
    /// The parent's exactly-once session records at the split.
    pub sessions: Vec<(u64, SessionRecord)>,
    /// Whether no key of the new shard has a version above `start`: its log continues the
    /// parent's and the parent's versions follow the parent's index
    /// (`replica_meta::versions_follow_index_key`; a child of a first-format child holds
    /// versions above any index of its own).
    pub versions_follow_index: bool,
}

impl NewGroup {
    /// The hard state the write saves.
    pub fn hard_state(&self) -> HardState {
        initial_hard_state(self.start, Some(self.previous))
    }

    /// The fjall write batch that creates the group (the driver writes it synchronously).
    ///
    /// # Errors
    /// Encoding the descriptor.
    pub fn into_batch(self) -> Result<WriteBatchBuilder> {
        let mut batch = create_group_batch(
            &self.descriptor,
            self.start,
            Some(self.previous),
            self.versions_follow_index,
        )?;
        batch.set_sessions(self.descriptor.id, self.sessions);
        Ok(batch)
    }

    /// Creates the group in memory, as [`NewGroup::into_batch`] written by the fjall store:
    /// `log` starts at `start` with the hard state, and `state` durably gets the applied
    /// position, configuration, sessions and descriptor (every batch committed before is
    /// durable first). For the simulator and tests.
    ///
    /// # Errors
    /// Encoding the descriptor.
    pub fn write_to_memory(&self, log: &MemoryLog, state: &mut MemoryState) -> Result<()> {
        let conf = Group::conf_of(&self.descriptor);
        let (index, term) = self.start;
        log.install(SnapshotMeta {
            index,
            term,
            conf: conf.clone(),
        });
        log.set_hard_state(self.hard_state());
        let shard = self.descriptor.id;
        let mut meta = vec![(
            replica_meta::descriptor_key(shard),
            replica_meta::encode_descriptor(&self.descriptor)?,
        )];
        if self.versions_follow_index {
            meta.push((replica_meta::versions_follow_index_key(shard), Vec::new()));
        }
        state.initialize_shard_durable(
            shard,
            AppliedState { index, term },
            conf,
            self.sessions.clone(),
            &meta,
        );
        Ok(())
    }
}

/// A split that applies: what [`NodeCore::begin_split`] decided, for the driver's I/O and
/// [`NodeCore::finish_split`].
#[derive(Debug)]
pub struct SplitChild {
    /// The parent shard.
    pub parent: ShardId,
    /// The split entry's index and term.
    pub entry: (LogIndex, Term),
    /// The parent's descriptor after the split.
    pub left: ShardDescriptor,
    /// The new shard's descriptor.
    pub right: ShardDescriptor,
    /// Whether the new log starts at the split entry ([`Split::from_entry`]).
    pub from_entry: bool,
    /// The new group to write durably and open, when this node creates it: `None` when a
    /// replica of it is already initialized here (by a snapshot, or before a crash), was
    /// removed here, or this node holds no replica of it.
    pub create: Option<NewGroup>,
    /// This node's member id in the new group.
    pub member: NodeId,
    /// Whether this replica leads the parent (its new group then campaigns at once, unless
    /// the replaced replica had voted).
    pub parent_leads: bool,
}

/// What applying a split entry did.
#[derive(Debug)]
pub enum SplitStep {
    /// Stale (the epoch moved since the proposal) or invalid: skipped alike on every replica,
    /// the applied index moved.
    Skipped,
    /// It applies: the driver does the I/O [`SplitChild::create`] asks for, then calls
    /// [`NodeCore::finish_split`].
    Applies(Box<SplitChild>),
}

impl<L: ringkv_raft::Storage> NodeCore<L> {
    /// Applies a committed split entry of `shard` at `(index, term)`, first half: validates
    /// the epoch and the split point, computes both descriptors and the new group's initial
    /// state. `child_on_disk` is the hard state the store holds for the new shard (default
    /// when none); `child_removing` whether a removal of it is still deleting its data here.
    ///
    /// # Errors
    /// Store errors.
    pub fn begin_split<S: StateStore>(
        &mut self,
        store: &mut S,
        shard: ShardId,
        (index, term): (LogIndex, Term),
        split: Split,
        child_on_disk: HardState,
        child_removing: bool,
    ) -> Result<SplitStep> {
        let Some(group) = self.groups.get(&shard) else {
            return Ok(SplitStep::Skipped);
        };
        let outcome = if group.initialized && split.epoch == group.descriptor.epoch {
            split_descriptors(&group.descriptor, split.new_shard, split.at)
        } else {
            None
        };
        let Some((left, right)) = outcome else {
            self.skip_split(store, shard, (index, term))?;
            return Ok(SplitStep::Skipped);
        };
        let parent_leads = group.raw.is_leader();
        let versions_follow_index = split.from_entry
            && group
                .machine
                .data()
                .is_some_and(|data| data.versions_follow_index);
        let start = if split.from_entry {
            (index, term)
        } else {
            BOOTSTRAP_START
        };
        let child = right.id;
        let member = right.replica_on(self.node).map(|r| r.member);
        let create = match member {
            _ if self.groups.get(&child).is_some_and(|g| g.initialized) => {
                info!(%child, "the split's new shard is already initialized here");
                None
            }
            _ if self.tombstones.contains_key(&child) || child_removing => {
                warn!(%child, "the split's new shard was removed here; not recreating it");
                None
            }
            None => None,
            Some(_) => {
                // The highest term and its vote this node ever persisted (or is about to) for
                // the new group: the in-memory state of an uninitialized replica, else what is
                // on disk.
                let in_memory = self.groups.get(&child).map(|group| {
                    let status = group.raw.status();
                    HardState {
                        term: status.term,
                        vote: status.vote,
                        commit: LogIndex::ZERO,
                    }
                });
                let previous = match in_memory {
                    Some(state) if state.term >= child_on_disk.term => state,
                    _ => child_on_disk,
                };
                let sessions = if self.planted.forgets_split_sessions() {
                    Vec::new()
                } else {
                    store.sessions(shard)?
                };
                Some(NewGroup {
                    descriptor: right.clone(),
                    start,
                    previous,
                    sessions,
                    versions_follow_index,
                })
            }
        };
        Ok(SplitStep::Applies(Box::new(SplitChild {
            parent: shard,
            entry: (index, term),
            left,
            right,
            from_entry: split.from_entry,
            create,
            member: member.unwrap_or(NodeId::NONE),
            parent_leads,
        })))
    }

    /// Applies a split, second half, once the driver wrote [`SplitChild::create`] durably and
    /// opened the new group as `opened` (`None` when nothing was created): an uninitialized
    /// replica of the new shard is replaced (its held-back messages go out: the durable write
    /// made everything before it durable; its proposals are answered `ShardNotFound`), the
    /// new group joins the core (campaigning at once on the parent's leader, unless the
    /// replaced replica had voted), then the parent's shrunken descriptor commits with the
    /// split's applied index and the proposer is answered with both halves.
    ///
    /// # Errors
    /// Encoding the descriptor; a Raft error from the campaign; store errors.
    pub fn finish_split<S: StateStore>(
        &mut self,
        store: &mut S,
        split: Box<SplitChild>,
        opened: Option<Group<L>>,
    ) -> Result<()> {
        let SplitChild {
            parent,
            entry,
            left,
            right,
            create,
            parent_leads,
            ..
        } = *split;
        if let (Some(created), Some(mut group)) = (create, opened) {
            let child = right.id;
            for message in self.persist.take_shard(child) {
                // An uninitialized replica sends no snapshot: nothing else comes back.
                let _ = self.outbox.route(message);
            }
            if let Some(mut old) = self.take_group(child) {
                for (_, proposal) in std::mem::take(&mut old.proposals) {
                    self.replies.send(
                        proposal.reply,
                        Response::Error(WireError::ShardNotFound { shard: child }),
                    );
                }
            }
            if parent_leads && created.previous.vote == NodeId::NONE {
                // The parent's leader starts the first election of the new group at once.
                group.raw.campaign()?;
            }
            info!(%child, member = %group.member, "created the split's new shard");
            self.insert_group(group);
            self.dirty.insert(child);
        }
        self.commit_split(store, parent, entry, left, right)
    }

    /// Applies a split entry of `shard` at `index` that no longer applies (the epoch moved
    /// since the proposal, or the point is outside the arc): every replica skips it alike,
    /// moving only the applied index, and the proposer is answered.
    ///
    /// # Errors
    /// Store errors.
    pub fn skip_split<S: StateStore>(
        &mut self,
        store: &mut S,
        shard: ShardId,
        (index, term): (LogIndex, Term),
    ) -> Result<()> {
        warn!(%shard, %index, "skipping a split that no longer applies");
        super::apply::commit_position(store, shard, AppliedState { index, term }, &[])?;
        let Some(group) = self.groups.get_mut(&shard) else {
            return Ok(());
        };
        group.applied = index;
        group.raw.on_applied(index);
        if let Some(pending) = group.pending_split.take() {
            let response = if pending.index == index && pending.term == term {
                Response::Error(WireError::EpochMismatch {
                    descriptor: group.descriptor.clone(),
                })
            } else {
                not_leader(group.leader_hint(), &group.descriptor)
            };
            self.replies.send(pending.reply, response);
        }
        Ok(())
    }

    /// The parent's shrunken descriptor `left` commits with the split's applied index, and
    /// the proposer is answered with both halves.
    fn commit_split<S: StateStore>(
        &mut self,
        store: &mut S,
        shard: ShardId,
        (index, term): (LogIndex, Term),
        left: ShardDescriptor,
        right: ShardDescriptor,
    ) -> Result<()> {
        // IMPORTANT: the parent's new descriptor commits with the split's applied index.
        let name = replica_meta::descriptor_key(shard);
        let value = replica_meta::encode_descriptor(&left)?;
        super::apply::commit_position(
            store,
            shard,
            AppliedState { index, term },
            &[(name.as_slice(), value.as_slice())],
        )?;
        let Some(group) = self.groups.get_mut(&shard) else {
            return Ok(());
        };
        info!(%shard, new_shard = %right.id, at = ?right.arc.start, epoch = ?left.epoch,
            "split applied");
        group.descriptor = left.clone();
        group.applied = index;
        group.raw.on_applied(index);
        if let Some(pending) = group
            .pending_split
            .take_if(|pending| pending.index <= index)
        {
            let response = if pending.index == index && pending.term == term {
                Response::Admin(AdminResult::ShardSplit { left, right })
            } else {
                not_leader(group.leader_hint(), &group.descriptor)
            };
            self.replies.send(pending.reply, response);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_types::ring::Arc;
    use ringkv_types::{Replica, ReplicaRole, member_id};

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
