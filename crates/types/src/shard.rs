//! Shard descriptors: which arc of the ring a shard owns, its epoch, and where its replicas live.

use crate::ids::{NodeId, ShardId};
use crate::ring::Arc;
use serde::{Deserialize, Serialize};

/// A shard's version, compared on every request (DESIGN.md section 3).
///
/// `conf_ver` bumps on every membership change, `version` on every split or merge. A request
/// carries the epoch its client routed with; a replica whose epoch differs answers
/// [`WireError::EpochMismatch`](crate::wire_error::WireError::EpochMismatch) with its descriptor.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Epoch {
    /// Bumped by membership changes.
    pub conf_ver: u64,
    /// Bumped by splits (the arc changed).
    pub version: u64,
}

impl Epoch {
    /// Whether `self` is older than `other` in either component: a descriptor with a stale epoch
    /// should be replaced by the newer one.
    pub fn is_stale_against(&self, other: &Epoch) -> bool {
        self.conf_ver < other.conf_ver || self.version < other.version
    }
}

/// A replica's role in its Raft group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ReplicaRole {
    /// Votes and counts toward quorums.
    Voter,
    /// Receives the log but does not vote (catching up before promotion).
    Learner,
}

/// One replica of a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Replica {
    /// The node holding the replica.
    pub node: NodeId,
    /// Its role.
    pub role: ReplicaRole,
}

/// What a client needs to route to a shard and a replica needs to check a request.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShardDescriptor {
    /// The shard (and Raft group) id.
    pub id: ShardId,
    /// The arc of the ring the shard owns.
    pub arc: Arc,
    /// Membership and split version.
    pub epoch: Epoch,
    /// Replicas, sorted by node id.
    pub replicas: Vec<Replica>,
}

impl ShardDescriptor {
    /// Whether the shard owns the ring position of `key`.
    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.arc.contains(crate::ring::position(key))
    }

    /// The voters' node ids.
    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.replicas
            .iter()
            .filter(|r| r.role == ReplicaRole::Voter)
            .map(|r| r.node)
    }

    /// The replica on `node`, if any.
    pub fn replica_on(&self, node: NodeId) -> Option<&Replica> {
        self.replicas.iter().find(|r| r.node == node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_staleness_compares_each_component() {
        let base = Epoch {
            conf_ver: 2,
            version: 3,
        };
        assert!(
            Epoch {
                conf_ver: 1,
                version: 3
            }
            .is_stale_against(&base)
        );
        assert!(
            Epoch {
                conf_ver: 2,
                version: 2
            }
            .is_stale_against(&base)
        );
        assert!(!base.is_stale_against(&base));
        assert!(
            !Epoch {
                conf_ver: 3,
                version: 3
            }
            .is_stale_against(&base)
        );
    }

    #[test]
    fn descriptor_lists_voters_and_finds_replicas() {
        let descriptor = ShardDescriptor {
            id: ShardId(1),
            arc: Arc::FULL,
            epoch: Epoch::default(),
            replicas: vec![
                Replica {
                    node: NodeId(1),
                    role: ReplicaRole::Voter,
                },
                Replica {
                    node: NodeId(2),
                    role: ReplicaRole::Learner,
                },
                Replica {
                    node: NodeId(3),
                    role: ReplicaRole::Voter,
                },
            ],
        };
        assert_eq!(
            descriptor.voters().collect::<Vec<_>>(),
            vec![NodeId(1), NodeId(3)]
        );
        assert_eq!(
            descriptor.replica_on(NodeId(2)).map(|r| r.role),
            Some(ReplicaRole::Learner)
        );
        assert!(descriptor.replica_on(NodeId(4)).is_none());
        assert!(descriptor.contains_key(b"anything"));
    }
}
