//! The routing table: the cached shard map and the believed leader of each shard. Pure state,
//! no I/O; [`Client`](crate::Client) updates it from the answers it gets.

use ringkv_types::{Epoch, NodeId, ShardDescriptor, ShardId, ShardMap};
use std::collections::HashMap;

/// Where to send one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    /// The shard owning the key.
    pub shard: ShardId,
    /// The epoch of the cached descriptor.
    pub epoch: Epoch,
    /// The node believed to lead the shard.
    pub node: NodeId,
    /// Replicas of the shard (for "tried them all" accounting).
    pub replicas: usize,
}

/// What an answer told the routing table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Update {
    /// A better target is known: retry at once.
    Rerouted,
    /// Nothing better is known: back off before retrying.
    Backoff,
    /// The cached map no longer fits (a split, an unknown shard): reload it.
    Reload,
}

/// The cached shard map plus a leader guess per shard.
#[derive(Debug, Default)]
pub(crate) struct Routing {
    map: ShardMap,
    leaders: HashMap<ShardId, NodeId>,
}

impl Routing {
    /// A table over `map`, with no leader known yet.
    #[cfg(test)]
    pub fn new(map: ShardMap) -> Self {
        Self {
            map,
            leaders: HashMap::new(),
        }
    }

    /// The cached map.
    pub fn map(&self) -> &ShardMap {
        &self.map
    }

    /// The cached descriptor of `key`'s shard.
    pub fn descriptor_for_key(&self, key: &[u8]) -> Option<&ShardDescriptor> {
        self.map.shard_for_key(key)
    }

    /// Where to send a request for `key`: the cached leader if it is still a replica, else the
    /// first voter (else the first replica). `None` when the map has no shard or no replica.
    pub fn route(&self, key: &[u8]) -> Option<Route> {
        let descriptor = self.map.shard_for_key(key)?;
        let cached = self
            .leaders
            .get(&descriptor.id)
            .copied()
            .filter(|node| descriptor.replica_on(*node).is_some());
        let node = cached
            .or_else(|| descriptor.voters().next())
            .or_else(|| descriptor.replicas.first().map(|r| r.node))?;
        Some(Route {
            shard: descriptor.id,
            epoch: descriptor.epoch,
            node,
            replicas: descriptor.replicas.len(),
        })
    }

    /// Where to send a stale read of `key`: replica number `choice` (modulo the replica count),
    /// spreading stale reads over every replica.
    pub fn route_any_replica(&self, key: &[u8], choice: u64) -> Option<Route> {
        let descriptor = self.map.shard_for_key(key)?;
        let count = u64::try_from(descriptor.replicas.len()).ok()?;
        let index = usize::try_from(choice.checked_rem(count)?).ok()?;
        let replica = descriptor.replicas.get(index)?;
        Some(Route {
            shard: descriptor.id,
            epoch: descriptor.epoch,
            node: replica.node,
            replicas: descriptor.replicas.len(),
        })
    }

    /// Replaces the map when `map` is at least as new; leader guesses survive for nodes that are
    /// still replicas. Returns whether the map was taken.
    pub fn replace_map(&mut self, map: ShardMap) -> bool {
        if !map.covers_ring() || (self.map.covers_ring() && map.version < self.map.version) {
            return false;
        }
        self.leaders.retain(|shard, node| {
            map.shards
                .iter()
                .any(|d| d.id == *shard && d.replica_on(*node).is_some())
        });
        self.map = map;
        true
    }

    /// Takes a descriptor a replica sent, if it is not older than the cached one. A descriptor
    /// whose arc differs (a split or merge) cannot be patched in: the map must be reloaded.
    fn take_descriptor(&mut self, descriptor: ShardDescriptor) -> Update {
        let Some(slot) = self.map.shards.iter_mut().find(|d| d.id == descriptor.id) else {
            return Update::Reload;
        };
        if descriptor.epoch.is_stale_against(&slot.epoch) {
            return Update::Backoff;
        }
        if descriptor.arc != slot.arc {
            return Update::Reload;
        }
        *slot = descriptor;
        Update::Rerouted
    }

    /// `node` answered `NotLeader` for `shard`.
    pub fn not_leader(
        &mut self,
        shard: ShardId,
        node: NodeId,
        leader_hint: Option<NodeId>,
        descriptor: Option<ShardDescriptor>,
    ) -> Update {
        if let Some(descriptor) = descriptor
            && self.take_descriptor(descriptor) == Update::Reload
        {
            return Update::Reload;
        }
        let is_replica = |routing: &Self, candidate: NodeId| {
            routing
                .map
                .shards
                .iter()
                .any(|d| d.id == shard && d.replica_on(candidate).is_some())
        };
        match leader_hint {
            Some(hint) if hint.is_some() && hint != node && is_replica(self, hint) => {
                self.leaders.insert(shard, hint);
                Update::Rerouted
            }
            Some(hint) if hint.is_some() && hint != node => {
                // The leader is a node the cached descriptor does not list: the shard moved
                // (or the replica's descriptor was not sent), so the map is behind.
                self.advance_past(shard, node);
                Update::Reload
            }
            _ => {
                self.advance_past(shard, node);
                Update::Backoff
            }
        }
    }

    /// A replica answered `EpochMismatch` with its descriptor.
    pub fn epoch_mismatch(&mut self, descriptor: ShardDescriptor) -> Update {
        self.take_descriptor(descriptor)
    }

    /// `node` did not answer for `shard` (unreachable, failing): guess the next voter.
    pub fn unreachable(&mut self, shard: ShardId, node: NodeId) {
        self.advance_past(shard, node);
    }

    /// Sets the leader guess of `shard` to the voter after `node` (wrapping around).
    fn advance_past(&mut self, shard: ShardId, node: NodeId) {
        let Some(descriptor) = self.map.shards.iter().find(|d| d.id == shard) else {
            return;
        };
        let voters: Vec<NodeId> = descriptor.voters().collect();
        let next = match voters.iter().position(|v| *v == node) {
            Some(at) => voters.get((at + 1) % voters.len()).copied(),
            None => voters.first().copied(),
        };
        match next {
            Some(next) => self.leaders.insert(shard, next),
            None => self.leaders.remove(&shard),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_types::ring::Arc;
    use ringkv_types::{Replica, ReplicaRole};

    fn descriptor(id: u64, arc: Arc, epoch: u64, nodes: &[u64]) -> ShardDescriptor {
        ShardDescriptor {
            id: ShardId(id),
            arc,
            epoch: Epoch {
                conf_ver: epoch,
                version: 1,
            },
            replicas: nodes
                .iter()
                .map(|n| Replica::new(ringkv_types::member_id(NodeId(*n), 1), ReplicaRole::Voter))
                .collect(),
        }
    }

    /// Two shards, each on nodes 1, 2, 3.
    fn map(version: u64) -> ShardMap {
        let shards = Arc::split_even(2)
            .into_iter()
            .enumerate()
            .map(|(i, arc)| descriptor(i as u64 + 1, arc, 1, &[1, 2, 3]))
            .collect();
        ShardMap { version, shards }
    }

    fn key_in(routing: &Routing, shard: u64) -> Vec<u8> {
        (0u32..)
            .map(|i| i.to_be_bytes().to_vec())
            .find(|k| routing.route(k).map(|r| r.shard) == Some(ShardId(shard)))
            .unwrap_or_default()
    }

    #[test]
    fn first_guess_is_the_first_voter_then_the_hint() {
        let mut routing = Routing::new(map(1));
        let key = key_in(&routing, 2);
        assert_eq!(routing.route(&key).map(|r| r.node), Some(NodeId(1)));
        let update = routing.not_leader(ShardId(2), NodeId(1), Some(NodeId(3)), None);
        assert_eq!(update, Update::Rerouted);
        assert_eq!(routing.route(&key).map(|r| r.node), Some(NodeId(3)));
        // The other shard keeps its own guess.
        let other = key_in(&routing, 1);
        assert_eq!(routing.route(&other).map(|r| r.node), Some(NodeId(1)));
    }

    #[test]
    fn no_hint_or_unreachable_rotates_through_voters() {
        let mut routing = Routing::new(map(1));
        let key = key_in(&routing, 1);
        assert_eq!(
            routing.not_leader(ShardId(1), NodeId(1), None, None),
            Update::Backoff
        );
        assert_eq!(routing.route(&key).map(|r| r.node), Some(NodeId(2)));
        // A hint naming the node that refused, or NONE, is no hint.
        routing.not_leader(ShardId(1), NodeId(2), Some(NodeId(2)), None);
        assert_eq!(routing.route(&key).map(|r| r.node), Some(NodeId(3)));
        routing.unreachable(ShardId(1), NodeId(3));
        assert_eq!(routing.route(&key).map(|r| r.node), Some(NodeId(1)));
        routing.not_leader(ShardId(1), NodeId(1), Some(NodeId::NONE), None);
        assert_eq!(routing.route(&key).map(|r| r.node), Some(NodeId(2)));
        // Stale reads pick any replica.
        let picks: Vec<_> = (0..3)
            .filter_map(|choice| routing.route_any_replica(&key, choice))
            .map(|r| r.node)
            .collect();
        assert_eq!(picks, [NodeId(1), NodeId(2), NodeId(3)]);
    }

    #[test]
    fn descriptors_replace_entries_unless_stale_or_split() {
        let mut routing = Routing::new(map(1));
        let key = key_in(&routing, 1);
        let arc = routing
            .descriptor_for_key(&key)
            .map(|d| d.arc)
            .unwrap_or(Arc::FULL);
        // Membership moved to nodes 4, 5, 6 with a newer epoch.
        let moved = descriptor(1, arc, 2, &[4, 5, 6]);
        assert_eq!(routing.epoch_mismatch(moved), Update::Rerouted);
        let route = routing.route(&key);
        assert_eq!(route.map(|r| r.node), Some(NodeId(4)));
        assert_eq!(route.map(|r| r.epoch.conf_ver), Some(2));
        // An older descriptor is ignored.
        assert_eq!(
            routing.epoch_mismatch(descriptor(1, arc, 1, &[1, 2, 3])),
            Update::Backoff
        );
        assert_eq!(routing.route(&key).map(|r| r.node), Some(NodeId(4)));
        // A split changes the arc: only a map reload can fix that.
        let half = arc
            .split_at(arc.midpoint())
            .map(|(low, _)| low)
            .unwrap_or(arc);
        assert_eq!(
            routing.epoch_mismatch(descriptor(1, half, 3, &[4, 5, 6])),
            Update::Reload
        );
        assert_eq!(
            routing.epoch_mismatch(descriptor(9, arc, 3, &[4])),
            Update::Reload
        );
        // NotLeader with a descriptor applies it, then the hint.
        let update = routing.not_leader(
            ShardId(1),
            NodeId(4),
            Some(NodeId(7)),
            Some(descriptor(1, arc, 3, &[4, 7])),
        );
        assert_eq!(update, Update::Rerouted);
        assert_eq!(routing.route(&key).map(|r| r.node), Some(NodeId(7)));
    }

    #[test]
    fn older_or_broken_maps_are_refused_and_guesses_survive() {
        let mut routing = Routing::new(map(5));
        let key = key_in(&routing, 1);
        routing.not_leader(ShardId(1), NodeId(1), Some(NodeId(2)), None);
        assert!(!routing.replace_map(map(4)));
        assert!(!routing.replace_map(ShardMap::default()));
        assert!(routing.replace_map(map(6)));
        assert_eq!(routing.map().version, 6);
        assert_eq!(routing.route(&key).map(|r| r.node), Some(NodeId(2)));
        // A hint for a node that is not a replica means the map is behind: reload it (and
        // meanwhile try the next voter).
        assert_eq!(
            routing.not_leader(ShardId(1), NodeId(2), Some(NodeId(9)), None),
            Update::Reload
        );
        assert_eq!(routing.route(&key).map(|r| r.node), Some(NodeId(3)));
    }
}
