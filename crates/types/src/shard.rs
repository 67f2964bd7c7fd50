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
    /// Its Raft member id: [`member_id`](crate::ids::member_id)`(node, incarnation)`. A replica
    /// removed from a shard and added back is a NEW member (a fresh incarnation), so votes and
    /// acknowledgements of the old one can never be counted for it.
    pub member: NodeId,
}

impl Replica {
    /// A replica of `node` under `member` (whose node must be `node`).
    pub fn new(member: NodeId, role: ReplicaRole) -> Self {
        Self {
            node: crate::ids::member_node(member),
            role,
            member,
        }
    }
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

    /// The voters' Raft member ids.
    pub fn voter_members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.replicas
            .iter()
            .filter(|r| r.role == ReplicaRole::Voter)
            .map(|r| r.member)
    }

    /// The replica whose Raft member id is `member`, if any.
    pub fn replica_of_member(&self, member: NodeId) -> Option<&Replica> {
        self.replicas.iter().find(|r| r.member == member)
    }

    /// The descriptor after a configuration change took effect: the replicas are exactly the
    /// configuration's voters and learners (nodes from [`member_node`](crate::ids::member_node),
    /// sorted by node), `conf_ver` is bumped by one, the arc and `version` are kept.
    ///
    /// Deterministic: every replica applying the same configuration entry derives the same
    /// descriptor.
    #[must_use]
    pub fn with_conf(&self, conf: &crate::raft::ConfState) -> ShardDescriptor {
        let mut replicas: Vec<Replica> = conf
            .voters
            .iter()
            .map(|&member| Replica::new(member, ReplicaRole::Voter))
            .chain(
                conf.learners
                    .iter()
                    .map(|&member| Replica::new(member, ReplicaRole::Learner)),
            )
            .collect();
        replicas.sort_by_key(|replica| (replica.node, replica.member));
        ShardDescriptor {
            id: self.id,
            arc: self.arc,
            epoch: Epoch {
                conf_ver: self.epoch.conf_ver.saturating_add(1),
                version: self.epoch.version,
            },
            replicas,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::member_id;
    use crate::raft::ConfState;

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
                Replica::new(member_id(NodeId(1), 1), ReplicaRole::Voter),
                Replica::new(member_id(NodeId(2), 3), ReplicaRole::Learner),
                Replica::new(member_id(NodeId(3), 1), ReplicaRole::Voter),
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
        assert_eq!(
            descriptor.voter_members().collect::<Vec<_>>(),
            vec![member_id(NodeId(1), 1), member_id(NodeId(3), 1)]
        );
        assert_eq!(
            descriptor
                .replica_of_member(member_id(NodeId(2), 3))
                .map(|r| r.node),
            Some(NodeId(2))
        );
        assert!(
            descriptor
                .replica_of_member(member_id(NodeId(2), 1))
                .is_none()
        );
    }

    #[test]
    fn configuration_changes_derive_the_next_descriptor() {
        let base = ShardDescriptor {
            id: ShardId(4),
            arc: Arc::FULL,
            epoch: Epoch {
                conf_ver: 3,
                version: 2,
            },
            replicas: vec![
                Replica::new(member_id(NodeId(1), 1), ReplicaRole::Voter),
                Replica::new(member_id(NodeId(2), 1), ReplicaRole::Voter),
            ],
        };
        let m = |node: u64, incarnation: u32| member_id(NodeId(node), incarnation);
        let cases = [
            (
                "add a learner",
                ConfState {
                    voters: vec![m(1, 1), m(2, 1)],
                    learners: vec![m(3, 4)],
                },
                vec![
                    (1, ReplicaRole::Voter, m(1, 1)),
                    (2, ReplicaRole::Voter, m(2, 1)),
                    (3, ReplicaRole::Learner, m(3, 4)),
                ],
            ),
            (
                "promote it",
                ConfState {
                    voters: vec![m(1, 1), m(2, 1), m(3, 4)],
                    learners: vec![],
                },
                vec![
                    (1, ReplicaRole::Voter, m(1, 1)),
                    (2, ReplicaRole::Voter, m(2, 1)),
                    (3, ReplicaRole::Voter, m(3, 4)),
                ],
            ),
            (
                "remove a voter",
                ConfState {
                    voters: vec![m(2, 1)],
                    learners: vec![],
                },
                vec![(2, ReplicaRole::Voter, m(2, 1))],
            ),
        ];
        for (name, conf, expected) in cases {
            let next = base.with_conf(&conf);
            let got: Vec<(u64, ReplicaRole, NodeId)> = next
                .replicas
                .iter()
                .map(|r| (r.node.get(), r.role, r.member))
                .collect();
            assert_eq!(got, expected, "{name}");
            assert_eq!(next.epoch.conf_ver, 4, "{name}");
            assert_eq!(next.epoch.version, 2, "{name}");
            assert_eq!(next.arc, base.arc, "{name}");
            assert_eq!(next.id, base.id, "{name}");
        }
    }
}
