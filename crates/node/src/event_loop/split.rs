//! Splitting a shard, the driver's part: the leader's proposal (`AdminRequest::SplitShard`)
//! and the I/O of applying a split. The core decides (`core/split.rs`: the epoch and split
//! point checks, both descriptors, the new group's initial state with the parent's sessions,
//! and the crash-safe order); the driver submits the turn's batch, writes the new group in one
//! durable write, opens its Raft log and records the watches' side.

use super::{EventLoop, Internal};
use crate::core::apply_plan::Split;
use crate::core::replies::RequestId;
use crate::core::split::SplitStep;
use crate::error::Result;
use crate::node::open_group;
use ringkv_types::{Epoch, LogIndex, ShardId, Term};

impl EventLoop {
    /// `AdminRequest::SplitShard`, on the shard's leader: the core checks and proposes it
    /// ([`crate::core::node_core::NodeCore::propose_split`]).
    pub(super) fn split_shard(
        &mut self,
        shard: ShardId,
        epoch: Epoch,
        new_shard: ShardId,
        at: Option<u64>,
        slot: RequestId,
    ) -> Result<()> {
        let in_map = self.map.shards.iter().any(|d| d.id == new_shard);
        if self
            .core
            .propose_split(shard, epoch, new_shard, at, slot, in_map)?
        {
            self.metrics.raft_proposals.inc();
        }
        Ok(())
    }

    /// Applies a committed split entry of `shard` at `index` through the core
    /// ([`crate::core::node_core::NodeCore::begin_split`] and `finish_split`), doing the I/O
    /// it asks for in between: the turn's batch is submitted, then the new group is written
    /// in one durable write (the writer is FIFO: everything submitted before is durable
    /// first) and opened.
    pub(super) fn apply_split(
        &mut self,
        shard: ShardId,
        index: LogIndex,
        term: Term,
        split: Split,
        internal: &mut Internal,
    ) -> Result<()> {
        let child = split.new_shard;
        let removing = self.removals.iter().any(|r| r.shard() == child)
            || self.removals_waiting.iter().any(|(_, s, _)| *s == child);
        // The new group's hard state on disk matters only when the core may create it here
        // (not for a group already initialized, removed or being removed: no store read then).
        let may_create = !removing
            && !self.core.tombstones.contains_key(&child)
            && !self.core.groups.get(&child).is_some_and(|g| g.initialized);
        let on_disk = if may_create {
            self.store.group(child)?.hard_state()
        } else {
            ringkv_types::raft::HardState::default()
        };
        let step = self.core.begin_split(
            &mut self.store,
            shard,
            (index, term),
            split,
            on_disk,
            removing,
        )?;
        let split = match step {
            SplitStep::Skipped => {
                self.watch.record(shard, index.0, index.0, &[]);
                return Ok(());
            }
            SplitStep::Applies(split) => split,
        };
        let opened = match &split.create {
            Some(created) => {
                // IMPORTANT: everything queued for an uninitialized replica goes to the writer
                // first, so the new group's write is the last word on its hard state.
                self.submit_now(internal)?;
                self.store.write(created.clone().into_batch()?)?;
                Some(open_group(
                    &self.store,
                    &self.config,
                    child,
                    split.member,
                    Some(split.right.clone()),
                )?)
            }
            None => None,
        };
        let (kept, right, from_entry) = (split.left.clone(), split.right.clone(), split.from_entry);
        self.core.finish_split(&mut self.store, split, opened)?;
        // Watchers of the parent end here (after every change up to the split); the child's
        // history starts with the parent's changes of its keys.
        self.watch.split(shard, index.0, kept, &right, from_entry);
        Ok(())
    }
}
