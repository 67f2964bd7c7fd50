//! A split on a simulated node, driven as the event loop drives it (`event_loop/split.rs`):
//! the core decides ([`NodeCore::begin_split`]), the node does the I/O it asks for (submit
//! the turn's batch, write the new group in one synchronous durable write that waits for
//! every batch submitted before it, open the new group's log), and the core finishes
//! ([`NodeCore::finish_split`]). Also the replicas created for a message to a group not here
//! (the new shard's leader reaching a replica that has not applied the split yet, or one
//! that skipped it through a snapshot of the parent).

use super::node::SimNode;
use ringkv_node::core::apply_plan::Split;
use ringkv_node::core::node_core::NodeCore;
use ringkv_node::core::route::Route;
use ringkv_node::core::split::SplitStep;
use ringkv_node::group::{Group, NodeStorage};
use ringkv_raft::RawNode;
use ringkv_storage::{MemoryLog, StateStore};
use ringkv_types::raft::{ConfState, Message};
use ringkv_types::{LogIndex, ShardId, Term};

impl SimNode {
    /// Applies a committed split entry of `shard` through the core's two halves, with the
    /// simulated disk's I/O between them.
    ///
    /// # Errors
    /// A core error, as text.
    pub(super) fn apply_split(
        &mut self,
        core: &mut NodeCore<MemoryLog>,
        shard: ShardId,
        entry: (LogIndex, Term),
        split: Split,
    ) -> Result<(), String> {
        let child = split.new_shard;
        let on_disk = self
            .durable_logs
            .get(&child)
            .map(MemoryLog::hard_state)
            .unwrap_or_default();
        let step = core
            .begin_split(&mut self.state, shard, entry, split, on_disk, false)
            .map_err(|e| e.to_string())?;
        let SplitStep::Applies(split) = step else {
            return Ok(());
        };
        let opened = match &split.create {
            Some(created) => {
                // The turn's batch so far goes to the writer, and the synchronous write of the
                // new group waits for every batch before it: they are durable now (the core
                // hears of them at the next disk completion, as from the ticket waiter).
                self.submit(core, (0, 0))?;
                while let Some(batch) = self.disk.pop_front() {
                    self.make_durable(batch)?;
                    self.durable_unreported += 1;
                }
                let durable = self.durable_logs.entry(child).or_default().clone();
                created
                    .write_to_memory(&durable, &mut self.state)
                    .map_err(|e| e.to_string())?;
                let log = durable.fork();
                self.logs.insert(child, log.clone());
                log.set_applied(
                    self.state.applied(child).map_err(|e| e.to_string())?,
                    self.state.conf_state(child),
                );
                let applied = created.start.0;
                let config = self.raft_config(child, split.member, applied);
                let storage = NodeStorage::new(log, Group::conf_of(&split.right));
                let raw = RawNode::new(config, storage).map_err(|e| e.to_string())?;
                self.split_created = true;
                let mut group =
                    Group::new(child, split.member, Some(split.right.clone()), raw, applied);
                if let Some(data) = group.machine.data_mut() {
                    data.versions_follow_index = created.versions_follow_index;
                }
                Some(group)
            }
            None => None,
        };
        self.splits_applied
            .push((split.left.clone(), split.right.clone(), split.entry.0.0));
        core.finish_split(&mut self.state, split, opened)
            .map_err(|e| e.to_string())
    }

    /// Creates an uninitialized replica for `message` when the core's routing says so (its
    /// group is not here): an empty log, or the one a replica of it left before (its hard
    /// state: a replica never votes twice in one term), filled by a snapshot later.
    pub(super) fn create_for(&mut self, message: &Message) {
        let Some(core) = self.core.as_mut() else {
            return;
        };
        if core.groups.contains_key(&message.group)
            || core.route(message, |_| false) != Route::Create
        {
            return;
        }
        let shard = message.group;
        let durable = self.durable_logs.entry(shard).or_default().clone();
        let log = self
            .logs
            .entry(shard)
            .or_insert_with(|| durable.fork())
            .clone();
        let config = self.raft_config(shard, message.to, LogIndex::ZERO);
        let Ok(raw) = RawNode::new(config, NodeStorage::new(log, ConfState::default())) else {
            return;
        };
        let Some(core) = self.core.as_mut() else {
            return;
        };
        core.insert_group(Group::new(shard, message.to, None, raw, LogIndex::ZERO));
    }
}
