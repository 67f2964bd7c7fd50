//! The core's state: the local groups, which of them have work, the removed members, and what
//! the turn sends to peers and the answers to client requests. The driver holds one [`NodeCore`] and feeds it inputs.

use super::outbox::Outbox;
use super::replies::Replies;
use crate::error::Result;
use crate::group::Group;
use ringkv_types::raft::Message;
use ringkv_types::{NodeId, ShardId};
use std::collections::{BTreeMap, BTreeSet};

/// The node core's state.
pub struct NodeCore {
    /// This node.
    pub node: NodeId,
    /// The local replicas, by shard.
    pub groups: BTreeMap<ShardId, Group>,
    /// Groups touched since their last Ready (a message, proposal, read, tick or commit):
    /// only these are polled for a Ready.
    pub dirty: BTreeSet<ShardId>,
    /// The highest removed Raft member id per shard: messages to it or older are ignored.
    pub tombstones: BTreeMap<ShardId, NodeId>,
    /// The turn's outgoing Raft messages, per peer node.
    pub outbox: Outbox,
    /// Answers to client requests, for the driver to hand to their callers.
    pub replies: Replies,
}

impl NodeCore {
    /// A core for `node` over `groups` (all dirty, so each is polled once at start), with the
    /// tombstones read from the store.
    pub fn new(
        node: NodeId,
        groups: BTreeMap<ShardId, Group>,
        tombstones: BTreeMap<ShardId, NodeId>,
    ) -> Self {
        let dirty = groups.keys().copied().collect();
        Self {
            node,
            groups,
            dirty,
            tombstones,
            outbox: Outbox::new(),
            replies: Replies::new(),
        }
    }

    /// Adds a replica created for a message (see [`super::route::Route::Create`]).
    pub fn insert_group(&mut self, group: Group) {
        self.groups.insert(group.shard, group);
    }

    /// Takes the local replica of `shard` out of the core (it was removed).
    pub fn take_group(&mut self, shard: ShardId) -> Option<Group> {
        self.dirty.remove(&shard);
        self.groups.remove(&shard)
    }

    /// Records that `member` of `shard` is removed: messages to it or an older member are
    /// dropped from now on.
    pub fn bury(&mut self, shard: ShardId, member: NodeId) {
        let dead = self.tombstones.entry(shard).or_insert(member);
        *dead = (*dead).max(member);
    }

    /// Steps `message` into its group and marks the group dirty. False when the group is not
    /// hosted here.
    ///
    /// # Errors
    /// A Raft storage read failure.
    pub fn step(&mut self, message: Message) -> Result<bool> {
        let shard = message.group;
        let Some(group) = self.groups.get_mut(&shard) else {
            return Ok(false);
        };
        group.raw.step(message)?;
        self.dirty.insert(shard);
        Ok(true)
    }

    /// Gives every group `ticks` ticks; the groups with work become dirty.
    ///
    /// # Errors
    /// A Raft storage read failure.
    pub fn tick(&mut self, ticks: u64) -> Result<()> {
        if ticks == 0 {
            return Ok(());
        }
        for (shard, group) in &mut self.groups {
            for _ in 0..ticks {
                group.raw.tick()?;
            }
            if group.raw.has_ready() {
                self.dirty.insert(*shard);
            }
        }
        Ok(())
    }

    /// How many local replicas wait for a snapshot to initialize them.
    pub fn uninitialized_count(&self) -> usize {
        self.groups.values().filter(|g| !g.initialized).count()
    }
}
