//! Node liveness: which peer nodes this node has heard from lately.
//!
//! Quiescent groups send nothing, so a follower cannot notice by silence that the leader of a
//! quiet group died. Instead the node watches its peers as a whole (CockroachDB's coalesced
//! heartbeats, TiKV's store heartbeats): every heartbeat interval it sends each peer node that
//! shares a shard with it one `NodeAlive` message, whatever the number of shared shards, and
//! any batch from a peer counts as hearing from it. A peer not heard from for the timeout (an
//! election timeout) is *down*: the driver reports it to every local group it is a member of
//! ([`super::node_core::NodeCore::report_node_down`]), so that quiescent followers of a dead
//! leader campaign. Each peer is reported once per silence; the next message from it makes it
//! up again (the Raft core forgets its own suspicion on that member's next message).
//!
//! A false suspicion (the peer or this node stalled) only wakes groups: a woken follower asks
//! its leader for a heartbeat and hears it before its election timer runs out. The memory is
//! one entry per peer node sharing a shard with this node.

use super::time::Mono;
use ringkv_types::NodeId;
use std::collections::BTreeMap;
use std::time::Duration;

/// What this node knows of one peer node.
#[derive(Clone, Copy, Debug)]
struct Peer {
    /// When a message from it last arrived (or when it started being watched).
    heard: Mono,
    /// Reported down, and not heard from since.
    down: bool,
}

/// The peers watched and when each was last heard from.
#[derive(Debug)]
pub struct Liveness {
    timeout: Duration,
    peers: BTreeMap<NodeId, Peer>,
}

impl Liveness {
    /// Watches no peer yet; a peer silent for `timeout` is down.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            peers: BTreeMap::new(),
        }
    }

    /// Watches exactly `peers`: a new one counts as heard at `now` (it gets a whole timeout
    /// before it can be down), one no longer listed is forgotten.
    pub fn set_peers(&mut self, peers: impl IntoIterator<Item = NodeId>, now: Mono) {
        let mut next = BTreeMap::new();
        for node in peers {
            let peer = self.peers.get(&node).copied().unwrap_or(Peer {
                heard: now,
                down: false,
            });
            next.insert(node, peer);
        }
        self.peers = next;
    }

    /// A message from `node` arrived at `now`. True when `node` was down (it is up again).
    pub fn heard(&mut self, node: NodeId, now: Mono) -> bool {
        let Some(peer) = self.peers.get_mut(&node) else {
            return false;
        };
        peer.heard = peer.heard.max(now);
        std::mem::replace(&mut peer.down, false)
    }

    /// The peers silent for longer than the timeout at `now` that were not down yet; they are
    /// down from now on (each silence is reported once).
    pub fn expire(&mut self, now: Mono) -> Vec<NodeId> {
        let mut down = Vec::new();
        for (&node, peer) in &mut self.peers {
            if !peer.down && now.since(peer.heard) > self.timeout {
                peer.down = true;
                down.push(node);
            }
        }
        down
    }

    /// The watched peers, in order: the nodes to send `NodeAlive` to.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers.keys().copied()
    }

    /// How many watched peers are down.
    pub fn down_count(&self) -> usize {
        self.peers.values().filter(|peer| peer.down).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Mono {
        Mono(Duration::from_millis(ms))
    }

    #[test]
    fn a_silent_peer_is_down_once_and_up_again_when_heard() {
        let mut liveness = Liveness::new(Duration::from_millis(500));
        liveness.set_peers([NodeId(2), NodeId(3)], at(0));
        assert!(liveness.expire(at(500)).is_empty(), "not past the timeout");
        assert!(!liveness.heard(NodeId(2), at(400)));
        assert_eq!(liveness.expire(at(600)), [NodeId(3)]);
        assert!(
            liveness.expire(at(700)).is_empty(),
            "reported once per silence"
        );
        assert_eq!(liveness.down_count(), 1);
        assert!(liveness.heard(NodeId(3), at(800)), "was down");
        assert_eq!(liveness.down_count(), 0);
        assert_eq!(liveness.expire(at(1_000)), [NodeId(2)]);
        assert!(liveness.expire(at(1_300)).is_empty());
        assert_eq!(liveness.expire(at(1_301)), [NodeId(3)]);
    }

    #[test]
    fn unknown_senders_are_ignored_and_new_peers_get_a_grace_period() {
        let mut liveness = Liveness::new(Duration::from_millis(500));
        assert!(!liveness.heard(NodeId(9), at(0)));
        liveness.set_peers([NodeId(2)], at(0));
        liveness.set_peers([NodeId(2), NodeId(4)], at(400));
        assert_eq!(liveness.expire(at(600)), [NodeId(2)]);
        assert_eq!(liveness.expire(at(901)), [NodeId(4)]);
        liveness.set_peers([NodeId(4)], at(1_000));
        assert_eq!(liveness.peers().collect::<Vec<_>>(), [NodeId(4)]);
        assert_eq!(liveness.down_count(), 1);
    }
}
