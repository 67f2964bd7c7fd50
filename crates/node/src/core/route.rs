//! Routing a peer's Raft message (already validated) to a local group: by Raft member id,
//! with removed members, tombstones and replicas created by a message.
//!
//! ```text
//!   message to member m of shard s, no local replica ── m on this node, m > tombstone(s),
//!                                                       no removal of s running
//!        └──► Create: uninitialized replica (member m, empty log, no descriptor)
//!   ReplicaRemoved for the local member ─────────────► Remove (the local replica)
//!   message to a newer member of this node ──────────► Remove (the stale local replica)
//!   message from a member the descriptor shows removed ► Drop, ReplicaRemoved notice queued
//! ```

use super::machine::MachineKind;
use super::node_core::NodeCore;
use ringkv_types::raft::{Message, MessageBody};
use ringkv_types::{NodeId, ShardDescriptor, ShardId, member_node};
use tracing::{debug, info, warn};

/// Uninitialized replicas a node keeps at most: each costs a Raft core and a little state, and
/// they are created by messages from peers.
pub const UNINITIALIZED_REPLICAS_MAX: usize = 1024;

/// What to do with a peer's message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Step it into the local group.
    Step,
    /// Create an uninitialized replica of the shard as the message's destination member (the
    /// driver opens its log), then step it.
    Create,
    /// Remove the local replica of the shard (it was removed, or a newer member of this node
    /// exists); the message is dropped.
    Remove,
    /// Drop it (any notice it calls for is queued in the outbox).
    Drop,
}

impl<L: ringkv_raft::Storage> NodeCore<L> {
    /// Where `message` goes. `removing(shard)` tells whether the data of a removed replica of
    /// `shard` is still being deleted (no new replica may be created meanwhile).
    pub fn route(&mut self, message: &Message, removing: impl Fn(ShardId) -> bool) -> Route {
        let shard = message.group;
        if matches!(message.body, MessageBody::ReplicaRemoved) {
            if self
                .groups
                .get(&shard)
                .is_some_and(|group| group.machine.is_data() && group.member == message.to)
            {
                info!(%shard, member = %message.to, from = %message.from,
                    "told that this replica was removed");
                return Route::Remove;
            }
            return Route::Drop;
        }
        if let Some(group) = self.groups.get(&shard)
            && group.initialized
            && was_removed(&group.descriptor, message.from)
        {
            debug!(%shard, member = %message.from, "message from a removed member");
            let notice = Message {
                group: shard,
                from: group.member,
                to: message.from,
                term: group.raw.term(),
                body: MessageBody::ReplicaRemoved,
            };
            self.outbox.push(member_node(message.from), notice);
            return Route::Drop;
        }
        self.accept(message, removing)
    }

    /// Where `message` goes by its destination member alone (a snapshot stream's message is
    /// not checked for removed senders). See [`NodeCore::route`].
    pub fn accept(&mut self, message: &Message, removing: impl Fn(ShardId) -> bool) -> Route {
        let shard = message.group;
        if member_node(message.to) != self.node {
            debug!(%shard, to = %message.to, "message for another node");
            return Route::Drop;
        }
        if let Some(group) = self.groups.get(&shard) {
            if message.to == group.member {
                return Route::Step;
            }
            if message.to > group.member && group.machine.is_data() {
                info!(%shard, old = %group.member, new = %message.to,
                    "a newer member of this node exists: removing the stale replica");
                return Route::Remove;
            }
            debug!(%shard, to = %message.to, "message for a stale member");
            return Route::Drop;
        }
        self.route_new(message, removing)
    }

    /// A message for a group not hosted here: creates an uninitialized replica for a message
    /// from a leader or candidate.
    fn route_new(&self, message: &Message, removing: impl Fn(ShardId) -> bool) -> Route {
        let shard = message.group;
        let creates = matches!(
            message.body,
            MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
                | MessageBody::Vote { .. }
                | MessageBody::PreVote { .. }
        );
        if !creates || MachineKind::of(shard) == MachineKind::Pd {
            return Route::Drop;
        }
        if self
            .tombstones
            .get(&shard)
            .is_some_and(|&dead| message.to <= dead)
        {
            debug!(%shard, to = %message.to, "message for a removed member");
            return Route::Drop;
        }
        if removing(shard) {
            // The old replica's data is still being deleted; Raft retries.
            return Route::Drop;
        }
        if self.uninitialized_count() >= UNINITIALIZED_REPLICAS_MAX {
            warn!(%shard, "too many uninitialized replicas; dropping a message");
            return Route::Drop;
        }
        Route::Create
    }
}

/// Whether `member` was a member of the shard and is no longer, by `descriptor`: a member is
/// added with incarnation = the `conf_ver` of the descriptor that adds it, so a member whose
/// incarnation is at most `conf_ver` and that is absent was removed (member ids are never
/// reused). A member added by a configuration not applied yet has a higher incarnation.
pub fn was_removed(descriptor: &ShardDescriptor, member: NodeId) -> bool {
    descriptor.replica_of_member(member).is_none()
        && u64::from(ringkv_types::ids::member_incarnation(member)) <= descriptor.epoch.conf_ver
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_types::raft::MessageBody;
    use ringkv_types::{Term, member_id};
    use std::collections::BTreeMap;

    fn core_of(node: u64) -> NodeCore {
        NodeCore::new(NodeId(node), BTreeMap::new(), BTreeMap::new())
    }

    fn message(shard: u64, to: NodeId, body: MessageBody) -> Message {
        Message {
            group: ShardId(shard),
            from: member_id(NodeId(2), 1),
            to,
            term: Term(3),
            body,
        }
    }

    fn heartbeat() -> MessageBody {
        MessageBody::Heartbeat {
            commit: ringkv_types::LogIndex(0),
            context: 0,
        }
    }

    #[test]
    fn a_leaders_message_for_an_unknown_shard_creates_a_replica() {
        let mut core = core_of(1);
        let to = member_id(NodeId(1), 2);
        assert_eq!(
            core.route(&message(7, to, heartbeat()), |_| false),
            Route::Create
        );
    }

    #[test]
    fn messages_that_must_not_create_a_replica_are_dropped() {
        let mut core = core_of(1);
        let to = member_id(NodeId(1), 2);
        // For another node.
        let other = member_id(NodeId(3), 2);
        assert_eq!(
            core.route(&message(7, other, heartbeat()), |_| false),
            Route::Drop
        );
        // For the placement driver's group, which is never created by a message.
        assert_eq!(
            core.route(&message(0, to, heartbeat()), |_| false),
            Route::Drop
        );
        // While the removed replica's data is being deleted.
        assert_eq!(
            core.route(&message(7, to, heartbeat()), |_| true),
            Route::Drop
        );
        // A removal notice for a replica not hosted here.
        let removed = message(7, to, MessageBody::ReplicaRemoved);
        assert_eq!(core.route(&removed, |_| false), Route::Drop);
        // For a member at or below the shard's tombstone.
        core.bury(ShardId(7), to);
        assert_eq!(
            core.route(&message(7, to, heartbeat()), |_| false),
            Route::Drop
        );
        // A newer member of this node may be created again.
        let newer = member_id(NodeId(1), 3);
        assert_eq!(
            core.route(&message(7, newer, heartbeat()), |_| false),
            Route::Create
        );
        assert!(core.outbox.take().is_empty());
    }

    #[test]
    fn tombstones_only_grow() {
        let mut core = core_of(1);
        core.bury(ShardId(7), member_id(NodeId(1), 5));
        core.bury(ShardId(7), member_id(NodeId(1), 2));
        assert_eq!(
            core.tombstones.get(&ShardId(7)),
            Some(&member_id(NodeId(1), 5))
        );
    }
}
