//! The core's state: the local groups, which of them have work, the removed members, and what
//! the turn sends to peers and the answers to client requests. The driver holds one [`NodeCore`] and feeds it inputs.

use super::outbox::Outbox;
use super::persist::PersistQueue;
use super::replies::Replies;
use super::writes::TurnWrites;
use crate::error::Result;
use crate::group::Group;
use ringkv_storage::GroupStorage;
use ringkv_types::raft::Message;
use ringkv_types::{NodeId, ShardId, member_node};
use std::collections::{BTreeMap, BTreeSet};

/// The node core's state, over the durable log `L` of each group (see
/// [`crate::group::NodeStorage`]): the fjall store's [`GroupStorage`] in `ringkvd`, a
/// [`ringkv_storage::MemoryLog`] in tests and the simulator.
pub struct NodeCore<L = GroupStorage> {
    /// This node.
    pub node: NodeId,
    /// The local replicas, by shard.
    pub groups: BTreeMap<ShardId, Group<L>>,
    /// Groups touched since their last Ready (a message, proposal, read, tick or commit):
    /// only these are polled for a Ready.
    pub dirty: BTreeSet<ShardId>,
    /// Groups that may not be quiescent: only these are ticked. A group leaves the set at a
    /// tick that finds it quiescent (with no leader transfer waiting) and comes back when its
    /// Ready is polled while it is awake ([`NodeCore::note_polled`]); everything that wakes a
    /// group (a message, proposal, read, liveness report) also marks it dirty.
    pub awake: BTreeSet<ShardId>,
    /// The highest removed Raft member id per shard: messages to it or older are ignored.
    pub tombstones: BTreeMap<ShardId, NodeId>,
    /// The turn's outgoing Raft messages, per peer node.
    pub outbox: Outbox,
    /// Answers to client requests, for the driver to hand to their callers.
    pub replies: Replies,
    /// What the turn persists so far: taken by [`NodeCore::take_writes`] as one batch.
    pub writes: TurnWrites,
    /// Which submitted batch makes each Ready durable.
    pub persist: PersistQueue,
    /// The context of the next ReadIndex round.
    pub next_read_context: u64,
    /// Groups whose `reads_new` may be non-empty: [`NodeCore::issue_reads`] visits only these
    /// (not every group, every turn).
    pub reads_waiting: BTreeSet<ShardId>,
    /// Deliberate bugs (the simulator's tests only; see [`super::planted`]).
    pub planted: super::planted::PlantedNodeBugs,
}

impl<L: ringkv_raft::Storage> NodeCore<L> {
    /// A core for `node` over `groups` (all dirty, so each is polled once at start), with the
    /// tombstones read from the store.
    pub fn new(
        node: NodeId,
        groups: BTreeMap<ShardId, Group<L>>,
        tombstones: BTreeMap<ShardId, NodeId>,
    ) -> Self {
        let dirty: BTreeSet<ShardId> = groups.keys().copied().collect();
        Self {
            node,
            groups,
            awake: dirty.clone(),
            dirty,
            tombstones,
            outbox: Outbox::new(),
            replies: Replies::new(),
            writes: TurnWrites::new(),
            persist: PersistQueue::new(),
            next_read_context: 1,
            reads_waiting: BTreeSet::new(),
            planted: super::planted::PlantedNodeBugs::default(),
        }
    }

    /// Adds a replica created for a message (see [`super::route::Route::Create`]).
    pub fn insert_group(&mut self, group: Group<L>) {
        self.awake.insert(group.shard);
        self.groups.insert(group.shard, group);
    }

    /// Takes the local replica of `shard` out of the core (it was removed).
    pub fn take_group(&mut self, shard: ShardId) -> Option<Group<L>> {
        self.dirty.remove(&shard);
        self.awake.remove(&shard);
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

    /// Gives every awake group `ticks` ticks; the groups with work become dirty, the
    /// quiescent ones leave the awake set (their ticks would do nothing). The cost is
    /// proportional to the awake groups, not to all groups.
    ///
    /// # Errors
    /// A Raft storage read failure.
    pub fn tick(&mut self, ticks: u64) -> Result<()> {
        if ticks == 0 {
            return Ok(());
        }
        let mut quiet = Vec::new();
        for shard in &self.awake {
            let Some(group) = self.groups.get_mut(shard) else {
                quiet.push(*shard);
                continue;
            };
            for _ in 0..ticks {
                group.raw.tick()?;
            }
            if group.raw.has_ready() {
                self.dirty.insert(*shard);
            }
            // A waiting leader transfer times out by ticks (`tick_transfers`): keep ticking.
            if group.raw.is_quiescent() && group.pending_transfers.is_empty() {
                quiet.push(*shard);
            }
        }
        for shard in quiet {
            self.awake.remove(&shard);
        }
        Ok(())
    }

    /// Called for every dirty group as its Ready is polled: a group that is not quiescent
    /// (woken by whatever made it dirty) is ticked again from now on.
    pub fn note_polled(&mut self, shard: ShardId) {
        if self
            .groups
            .get(&shard)
            .is_some_and(|group| !group.raw.is_quiescent())
        {
            self.awake.insert(shard);
        }
    }

    /// The liveness input: peer node `node` is suspected dead. Every local group with a
    /// member on it (or whose known leader is on it) gets `report_peer_down` for that member:
    /// a quiescent follower of a dead leader wakes and campaigns an election timeout later,
    /// a quiescent leader wakes and checks its quorum. Returns how many groups were told.
    pub fn report_node_down(&mut self, node: NodeId) -> usize {
        let mut told = 0;
        for (shard, group) in &mut self.groups {
            let mut members: Vec<NodeId> = group
                .descriptor
                .replicas
                .iter()
                .filter(|replica| replica.node == node)
                .map(|replica| replica.member)
                .collect();
            let leader = group.raw.status().leader;
            if leader.is_some() && member_node(leader) == node && !members.contains(&leader) {
                members.push(leader);
            }
            if members.is_empty() {
                continue;
            }
            for member in members {
                group.raw.report_peer_down(member);
            }
            self.dirty.insert(*shard);
            told += 1;
        }
        told
    }

    /// The peer nodes that host a replica of some local group (the nodes whose liveness
    /// matters here).
    pub fn peer_nodes(&self) -> BTreeSet<NodeId> {
        let mut peers = BTreeSet::new();
        for group in self.groups.values() {
            for replica in &group.descriptor.replicas {
                if replica.node != self.node {
                    peers.insert(replica.node);
                }
            }
        }
        peers
    }

    /// How many local replicas wait for a snapshot to initialize them.
    pub fn uninitialized_count(&self) -> usize {
        self.groups.values().filter(|g| !g.initialized).count()
    }
}
