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
    /// first voter (else the first replica). When that node is to be avoided (marked down),
    /// the next voter after it that is not; when every voter is avoided, the first choice
    /// anyway. `None` when the map has no shard or no replica.
    #[cfg(test)]
    pub fn route(&self, key: &[u8], avoid: &dyn Fn(NodeId) -> bool) -> Option<Route> {
        self.route_position(ringkv_types::ring::position(key), avoid)
    }

    /// [`Routing::route`] for the shard `shard` by id (a watch of it); `None` when the map has
    /// no such shard.
    pub fn route_shard(&self, shard: ShardId, avoid: &dyn Fn(NodeId) -> bool) -> Option<Route> {
        let descriptor = self.map.shards.iter().find(|d| d.id == shard)?;
        self.route_position(descriptor.arc.start, avoid)
            .filter(|route| route.shard == shard)
    }

    /// [`Routing::route`] for the shard owning ring `position` (a scan's cursor).
    pub fn route_position(&self, position: u64, avoid: &dyn Fn(NodeId) -> bool) -> Option<Route> {
        let descriptor = self.map.shard_for_position(position)?;
        let cached = self
            .leaders
            .get(&descriptor.id)
            .copied()
            .filter(|node| descriptor.replica_on(*node).is_some());
        let first = cached
            .or_else(|| descriptor.voters().next())
            .or_else(|| descriptor.replicas.first().map(|r| r.node))?;
        let node = if avoid(first) {
            next_voter(descriptor, first, avoid).unwrap_or(first)
        } else {
            first
        };
        Some(Route {
            shard: descriptor.id,
            epoch: descriptor.epoch,
            node,
            replicas: descriptor.replicas.len(),
        })
    }

    /// Where to send a stale read of `key`: replica number `choice` (modulo the replica count),
    /// spreading stale reads over every replica, or the next one not to be avoided.
    #[cfg(test)]
    pub fn route_any_replica(
        &self,
        key: &[u8],
        choice: u64,
        avoid: &dyn Fn(NodeId) -> bool,
    ) -> Option<Route> {
        self.route_any_replica_position(ringkv_types::ring::position(key), choice, avoid)
    }

    /// [`Routing::route_any_replica`] for the shard owning ring `position`.
    pub fn route_any_replica_position(
        &self,
        position: u64,
        choice: u64,
        avoid: &dyn Fn(NodeId) -> bool,
    ) -> Option<Route> {
        let descriptor = self.map.shard_for_position(position)?;
        let count = descriptor.replicas.len();
        let start = usize::try_from(choice.checked_rem(u64::try_from(count).ok()?)?).ok()?;
        let pick = |offset: usize| descriptor.replicas.get((start + offset) % count);
        let replica = (0..count)
            .filter_map(pick)
            .find(|replica| !avoid(replica.node))
            .or_else(|| pick(0))?;
        Some(Route {
            shard: descriptor.id,
            epoch: descriptor.epoch,
            node: replica.node,
            replicas: count,
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

    /// `node` answered `NotLeader` for `shard`. A hint naming a node to be avoided (marked
    /// down: typically a leader that just died or froze, which the other replicas still name
    /// until they elect a new one) is not
    /// followed: the next voter not avoided is tried after a backoff, so a call waits for the
    /// election instead of bouncing between a live replica and a dead leader.
    pub fn not_leader(
        &mut self,
        shard: ShardId,
        node: NodeId,
        leader_hint: Option<NodeId>,
        descriptor: Option<ShardDescriptor>,
        avoid: &dyn Fn(NodeId) -> bool,
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
            Some(hint) if hint.is_some() && hint != node && avoid(hint) => {
                self.advance_past(shard, node, avoid);
                Update::Backoff
            }
            Some(hint) if hint.is_some() && hint != node && is_replica(self, hint) => {
                self.leaders.insert(shard, hint);
                Update::Rerouted
            }
            Some(hint) if hint.is_some() && hint != node => {
                // The leader is a node the cached descriptor does not list: the shard moved
                // (or the replica's descriptor was not sent), so the map is behind.
                self.advance_past(shard, node, avoid);
                Update::Reload
            }
            _ => {
                self.advance_past(shard, node, avoid);
                Update::Backoff
            }
        }
    }

    /// A replica answered `EpochMismatch` with its descriptor.
    pub fn epoch_mismatch(&mut self, descriptor: ShardDescriptor) -> Update {
        self.take_descriptor(descriptor)
    }

    /// `node` did not answer for `shard` (unreachable, failing): guess the next voter that is
    /// not to be avoided.
    pub fn unreachable(&mut self, shard: ShardId, node: NodeId, avoid: &dyn Fn(NodeId) -> bool) {
        self.advance_past(shard, node, avoid);
    }

    /// Sets the leader guess of `shard` to the voter after `node` (wrapping around), skipping
    /// `node` and the voters to avoid (unless all are).
    fn advance_past(&mut self, shard: ShardId, node: NodeId, avoid: &dyn Fn(NodeId) -> bool) {
        let Some(descriptor) = self.map.shards.iter().find(|d| d.id == shard) else {
            return;
        };
        let next = next_voter(descriptor, node, &|candidate| {
            candidate == node || avoid(candidate)
        })
        .or_else(|| next_voter(descriptor, node, &|candidate| candidate == node))
        .or_else(|| descriptor.voters().next());
        match next {
            Some(next) => self.leaders.insert(shard, next),
            None => self.leaders.remove(&shard),
        };
    }
}

/// The first voter of `descriptor` after `node` (wrapping around, `node` itself last) that is
/// not to be avoided; counting from the first voter when `node` is not one.
fn next_voter(
    descriptor: &ShardDescriptor,
    node: NodeId,
    avoid: &dyn Fn(NodeId) -> bool,
) -> Option<NodeId> {
    let voters: Vec<NodeId> = descriptor.voters().collect();
    let start = voters
        .iter()
        .position(|v| *v == node)
        .map_or(0, |at| at + 1);
    (0..voters.len())
        .filter_map(|offset| voters.get((start + offset) % voters.len()).copied())
        .find(|candidate| !avoid(*candidate))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_types::ring::Arc;
    use ringkv_types::{Replica, ReplicaRole};

    /// Avoid no node.
    fn none(_: NodeId) -> bool {
        false
    }

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
            .find(|k| routing.route(k, &none).map(|r| r.shard) == Some(ShardId(shard)))
            .unwrap_or_default()
    }

    #[test]
    fn first_guess_is_the_first_voter_then_the_hint() {
        let mut routing = Routing::new(map(1));
        let key = key_in(&routing, 2);
        assert_eq!(routing.route(&key, &none).map(|r| r.node), Some(NodeId(1)));
        let update = routing.not_leader(ShardId(2), NodeId(1), Some(NodeId(3)), None, &none);
        assert_eq!(update, Update::Rerouted);
        assert_eq!(routing.route(&key, &none).map(|r| r.node), Some(NodeId(3)));
        // The other shard keeps its own guess.
        let other = key_in(&routing, 1);
        assert_eq!(
            routing.route(&other, &none).map(|r| r.node),
            Some(NodeId(1))
        );
    }

    #[test]
    fn no_hint_or_unreachable_rotates_through_voters() {
        let mut routing = Routing::new(map(1));
        let key = key_in(&routing, 1);
        assert_eq!(
            routing.not_leader(ShardId(1), NodeId(1), None, None, &none),
            Update::Backoff
        );
        assert_eq!(routing.route(&key, &none).map(|r| r.node), Some(NodeId(2)));
        // A hint naming the node that refused, or NONE, is no hint.
        routing.not_leader(ShardId(1), NodeId(2), Some(NodeId(2)), None, &none);
        assert_eq!(routing.route(&key, &none).map(|r| r.node), Some(NodeId(3)));
        routing.unreachable(ShardId(1), NodeId(3), &none);
        assert_eq!(routing.route(&key, &none).map(|r| r.node), Some(NodeId(1)));
        routing.not_leader(ShardId(1), NodeId(1), Some(NodeId::NONE), None, &none);
        assert_eq!(routing.route(&key, &none).map(|r| r.node), Some(NodeId(2)));
        // Stale reads pick any replica.
        let picks: Vec<_> = (0..3)
            .filter_map(|choice| routing.route_any_replica(&key, choice, &none))
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
        let route = routing.route(&key, &none);
        assert_eq!(route.map(|r| r.node), Some(NodeId(4)));
        assert_eq!(route.map(|r| r.epoch.conf_ver), Some(2));
        // An older descriptor is ignored.
        assert_eq!(
            routing.epoch_mismatch(descriptor(1, arc, 1, &[1, 2, 3])),
            Update::Backoff
        );
        assert_eq!(routing.route(&key, &none).map(|r| r.node), Some(NodeId(4)));
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
            &none,
        );
        assert_eq!(update, Update::Rerouted);
        assert_eq!(routing.route(&key, &none).map(|r| r.node), Some(NodeId(7)));
    }

    #[test]
    fn older_or_broken_maps_are_refused_and_guesses_survive() {
        let mut routing = Routing::new(map(5));
        let key = key_in(&routing, 1);
        routing.not_leader(ShardId(1), NodeId(1), Some(NodeId(2)), None, &none);
        assert!(!routing.replace_map(map(4)));
        assert!(!routing.replace_map(ShardMap::default()));
        assert!(routing.replace_map(map(6)));
        assert_eq!(routing.map().version, 6);
        assert_eq!(routing.route(&key, &none).map(|r| r.node), Some(NodeId(2)));
        // A hint for a node that is not a replica means the map is behind: reload it (and
        // meanwhile try the next voter).
        assert_eq!(
            routing.not_leader(ShardId(1), NodeId(2), Some(NodeId(9)), None, &none),
            Update::Reload
        );
        assert_eq!(routing.route(&key, &none).map(|r| r.node), Some(NodeId(3)));
    }

    /// The rolling-restart bug: node 3 led and is restarting; nodes 1 and 2 still name it as
    /// the leader. Following the hint at once made a call bounce 1 -> 3 -> 1 -> 3 with no
    /// pause and spend its 64 attempts in under half a second. A hint to a node known down is
    /// not followed: the next live voter is tried after a backoff.
    #[test]
    fn a_hint_to_a_node_known_down_is_not_followed() {
        let mut routing = Routing::new(map(1));
        let key = key_in(&routing, 1);
        let down = |node: NodeId| node == NodeId(3);
        assert_eq!(
            routing.not_leader(ShardId(1), NodeId(1), Some(NodeId(3)), None, &down),
            Update::Backoff
        );
        assert_eq!(routing.route(&key, &down).map(|r| r.node), Some(NodeId(2)));
        assert_eq!(
            routing.not_leader(ShardId(1), NodeId(2), Some(NodeId(3)), None, &down),
            Update::Backoff
        );
        assert_eq!(routing.route(&key, &down).map(|r| r.node), Some(NodeId(1)));
        // Once the node is back, its hint is followed again.
        assert_eq!(
            routing.not_leader(ShardId(1), NodeId(1), Some(NodeId(3)), None, &none),
            Update::Rerouted
        );
        assert_eq!(routing.route(&key, &none).map(|r| r.node), Some(NodeId(3)));
    }

    #[test]
    fn routing_skips_nodes_marked_down_unless_all_are() {
        let mut routing = Routing::new(map(1));
        let key = key_in(&routing, 1);
        // The first voter (node 1) is down: go to the next one at once.
        let one_down = |node: NodeId| node == NodeId(1);
        assert_eq!(
            routing.route(&key, &one_down).map(|r| r.node),
            Some(NodeId(2))
        );
        // The cached leader is down: the voter after it.
        routing.not_leader(ShardId(1), NodeId(1), Some(NodeId(3)), None, &none);
        let three_down = |node: NodeId| node == NodeId(3);
        assert_eq!(
            routing.route(&key, &three_down).map(|r| r.node),
            Some(NodeId(1))
        );
        // An unreachable node moves the guess past the down ones too.
        let two_down = |node: NodeId| node == NodeId(2);
        routing.unreachable(ShardId(1), NodeId(1), &two_down);
        assert_eq!(routing.route(&key, &none).map(|r| r.node), Some(NodeId(3)));
        // All down: still a route (the cached guess).
        let all_down = |_: NodeId| true;
        assert_eq!(
            routing.route(&key, &all_down).map(|r| r.node),
            Some(NodeId(3))
        );
        // Stale reads skip down replicas as well.
        let picks: Vec<_> = (0..3)
            .filter_map(|choice| routing.route_any_replica(&key, choice, &one_down))
            .map(|r| r.node)
            .collect();
        assert_eq!(picks, [NodeId(2), NodeId(2), NodeId(3)]);
    }
}
