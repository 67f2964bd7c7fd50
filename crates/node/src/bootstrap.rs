//! The deterministic initial layout: every node of `initial_cluster` computes the same shard
//! map, so no coordination is needed before the first elections.
//!
//! The ring is cut into `initial_shards` equal arcs (shard ids `1..=initial_shards`), placed
//! round-robin by a greedy rule ([`initial_layout`]) that gives every node `shards * rf / nodes`
//! replicas (±1) and about `shards / nodes` preferred leaderships (the one replica that
//! campaigns at bootstrap). The placement driver (group 0) has every initial
//! node as a voter; the smallest node id campaigns for it.

use ringkv_types::ring::Arc;
use ringkv_types::{
    Epoch, NodeId, Replica, ReplicaRole, ShardDescriptor, ShardId, ShardMap, member_id,
};

/// Index and term at which every new group's log starts (its first entry is at index 6).
///
/// A new group does not start from an empty log: its applied state, configuration and log
/// compaction point are set to this index when it is created (at bootstrap, or by a split), so
/// a replica with an empty log (one added later, or created by a message) is behind the
/// leader's first index and is filled by a snapshot, which carries the data and the descriptor a
/// log replay would lack. A replica created by a message keeps a higher term it has voted in.
pub const INITIAL_LOG_INDEX: u64 = 5;

/// The epoch every shard starts with.
pub const INITIAL_EPOCH: Epoch = Epoch {
    conf_ver: 1,
    version: 1,
};

/// The initial shard map for `nodes` (any order; duplicates ignored) and each shard's
/// preferred leader.
///
/// Deterministic: replica slots are dealt round-robin over the sorted nodes (shard `i` gets the
/// nodes at positions `i * rf .. i * rf + rf`, modulo the node count), so replica counts per
/// node differ by at most one; each shard's preferred leader is its replica leading the fewest
/// shards so far (ties broken by rotating from position `i`), which keeps leader counts within
/// one of each other for the cluster shapes we run (tested for 3 to 5 nodes).
pub fn initial_layout(
    nodes: &[NodeId],
    shards: u64,
    replication_factor: usize,
) -> (ShardMap, Vec<NodeId>) {
    let mut nodes = nodes.to_vec();
    nodes.sort_unstable();
    nodes.dedup();
    let count = nodes.len().max(1);
    let replicas_per_shard = replication_factor.min(nodes.len());
    let mut leader_counts = vec![0usize; nodes.len()];
    let mut leaders = Vec::new();
    let descriptors = Arc::split_even(shards)
        .into_iter()
        .enumerate()
        .map(|(i, arc)| {
            let rotation = |position: usize| (position + count - i % count) % count;
            // Replica slots are dealt round-robin: slot `i * rf + j` goes to node `slot % n`.
            let order: Vec<usize> = (0..replicas_per_shard)
                .map(|j| (i * replicas_per_shard + j) % count)
                .collect();
            if let Some(&leader) = order
                .iter()
                .min_by_key(|&&p| (leader_counts.get(p).copied(), rotation(p)))
            {
                if let Some(c) = leader_counts.get_mut(leader) {
                    *c += 1;
                }
                leaders.extend(nodes.get(leader).copied());
            }
            let mut replicas: Vec<Replica> = order
                .iter()
                .filter_map(|&p| nodes.get(p))
                .map(|&node| Replica::new(member_id(node, 1), ReplicaRole::Voter))
                .collect();
            replicas.sort_by_key(|replica| replica.node);
            ShardDescriptor {
                id: ShardId(i as u64 + 1),
                arc,
                epoch: INITIAL_EPOCH,
                replicas,
            }
        })
        .collect();
    (
        ShardMap {
            version: 1,
            shards: descriptors,
        },
        leaders,
    )
}

/// The initial shard map (see [`initial_layout`]).
pub fn initial_shard_map(nodes: &[NodeId], shards: u64, replication_factor: usize) -> ShardMap {
    initial_layout(nodes, shards, replication_factor).0
}

/// The node that campaigns once when `shard` of the initial layout is brand new: the smallest
/// node id for the placement driver, else the shard's preferred leader.
pub fn preferred_leader(
    nodes: &[NodeId],
    shards: u64,
    replication_factor: usize,
    shard: ShardId,
) -> Option<NodeId> {
    PreferredLeaders::new(nodes, shards, replication_factor).of(shard)
}

/// Every preferred leader of the initial layout, computed once: [`preferred_leader`] computes
/// the whole layout, so asking it for each of N shards costs N layouts (seconds at 4,096).
#[derive(Clone, Debug)]
pub struct PreferredLeaders {
    pd: Option<NodeId>,
    shards: Vec<NodeId>,
}

impl PreferredLeaders {
    /// The preferred leaders of the layout of `shards` shards over `nodes`.
    pub fn new(nodes: &[NodeId], shards: u64, replication_factor: usize) -> Self {
        Self {
            pd: nodes.iter().min().copied(),
            shards: initial_layout(nodes, shards, replication_factor).1,
        }
    }

    /// The node that campaigns once when `shard` is brand new (see [`preferred_leader`]).
    pub fn of(&self, shard: ShardId) -> Option<NodeId> {
        if shard == ShardId::PD {
            return self.pd;
        }
        let position = usize::try_from(shard.get().checked_sub(1)?).ok()?;
        self.shards.get(position).copied()
    }
}

/// The placement driver's descriptor: the whole ring (it owns no data), every initial node a
/// voter.
pub fn pd_descriptor(nodes: &[NodeId]) -> ShardDescriptor {
    let mut replicas: Vec<Replica> = nodes
        .iter()
        .map(|&node| Replica::new(member_id(node, 1), ReplicaRole::Voter))
        .collect();
    replicas.sort_by_key(|replica| replica.node);
    replicas.dedup();
    ShardDescriptor {
        id: ShardId::PD,
        arc: Arc::FULL,
        epoch: INITIAL_EPOCH,
        replicas,
    }
}

/// The settings that shape a cluster when it is created, as `(field, value)` sorted by field:
/// the initial shard map comes from `initial_cluster`, `initial_shards` and
/// `replication_factor`, the placement driver's initial state from those, `cluster` and the
/// `[pd]` scheduler settings. Every initial node must create the cluster with the same values;
/// they compare them before creating it (see `store_check`), and a node records them with its
/// groups (see [`crate::node`]).
pub fn bootstrap_fields(config: &crate::config::NodeConfig) -> Vec<(String, String)> {
    let mut initial: Vec<(NodeId, &str)> = config
        .initial_cluster
        .iter()
        .map(|e| (e.node, e.addr.as_str()))
        .collect();
    initial.sort_unstable();
    let initial = initial
        .iter()
        .map(|(node, addr)| format!("{}@{addr}", node.get()))
        .collect::<Vec<_>>()
        .join(",");
    let settings = config.pd_settings();
    let mut fields = vec![
        ("cluster".to_string(), config.cluster.clone()),
        ("initial_cluster".to_string(), initial),
        (
            "initial_shards".to_string(),
            config.initial_shards.to_string(),
        ),
        (
            "replication_factor".to_string(),
            config.replication_factor.to_string(),
        ),
        ("pd.repair".to_string(), settings.repair.to_string()),
        (
            "pd.balance_replicas".to_string(),
            settings.balance_replicas.to_string(),
        ),
        (
            "pd.balance_leaders".to_string(),
            settings.balance_leaders.to_string(),
        ),
        ("pd.drain".to_string(), settings.drain.to_string()),
        ("pd.split".to_string(), settings.split.to_string()),
        (
            "pd.max_operators".to_string(),
            settings.max_operators.to_string(),
        ),
        (
            "pd.max_snapshots_per_node".to_string(),
            settings.max_snapshots_per_node.to_string(),
        ),
        (
            "pd.max_snapshot_bytes_per_sec".to_string(),
            settings.max_snapshot_bytes_per_sec.to_string(),
        ),
        (
            "pd.heartbeat_timeout_ms".to_string(),
            settings.heartbeat_timeout_ms.to_string(),
        ),
        (
            "pd.max_down_time_ms".to_string(),
            settings.max_down_time_ms.to_string(),
        ),
        (
            "pd.operator_step_timeout_ms".to_string(),
            settings.operator_step_timeout_ms.to_string(),
        ),
        (
            "pd.split_size_bytes".to_string(),
            settings.split_size_bytes.to_string(),
        ),
        (
            "pd.split_load_per_sec".to_string(),
            settings.split_load_per_sec.to_string(),
        ),
    ];
    fields.sort();
    fields
}

/// The fields on which `ours` and `theirs` differ, as ``"`field`: here A, there B"``
/// (a field only one side names counts as differing, its value shown as `(none)`).
pub fn differences(ours: &[(String, String)], theirs: &[(String, String)]) -> Vec<String> {
    let mut names: Vec<&str> = ours
        .iter()
        .chain(theirs)
        .map(|(name, _)| name.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    let value = |side: &[(String, String)], name: &str| {
        side.iter()
            .find(|(field, _)| field == name)
            .map_or_else(|| "(none)".to_string(), |(_, value)| value.clone())
    };
    names
        .into_iter()
        .filter_map(|name| {
            let (here, there) = (value(ours, name), value(theirs, name));
            (here != there).then(|| format!("`{name}`: here {here}, there {there}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn counts(
        map: &ShardMap,
        nodes: &[NodeId],
    ) -> (BTreeMap<NodeId, usize>, BTreeMap<NodeId, usize>) {
        let mut replicas = BTreeMap::new();
        let mut leaders = BTreeMap::new();
        for shard in &map.shards {
            for replica in &shard.replicas {
                *replicas.entry(replica.node).or_insert(0) += 1;
            }
            let leader = preferred_leader(
                nodes,
                map.shards.len() as u64,
                shard.replicas.len(),
                shard.id,
            )
            .unwrap();
            assert!(
                shard.replica_on(leader).is_some(),
                "leader must hold a replica"
            );
            *leaders.entry(leader).or_insert(0) += 1;
        }
        (replicas, leaders)
    }

    #[test]
    fn replicas_and_leaders_are_spread_fairly() {
        for (node_count, shards, rf) in [
            (3u64, 16u64, 3usize),
            (5, 16, 3),
            (5, 7, 3),
            (3, 1, 1),
            (4, 16, 3),
            (5, 32, 3),
            (3, 5, 2),
        ] {
            let nodes: Vec<NodeId> = (1..=node_count).map(NodeId).collect();
            let map = initial_shard_map(&nodes, shards, rf);
            assert!(map.covers_ring());
            assert_eq!(map.shards.len() as u64, shards);
            for shard in &map.shards {
                assert_eq!(shard.replicas.len(), rf);
                assert_eq!(shard.epoch, INITIAL_EPOCH);
            }
            let (replicas, leaders) = counts(&map, &nodes);
            let spread = |m: &BTreeMap<NodeId, usize>| {
                let max = m.values().max().copied().unwrap_or(0);
                let min = if m.len() as u64 == node_count {
                    m.values().min().copied().unwrap_or(0)
                } else {
                    0
                };
                max - min
            };
            assert!(
                spread(&replicas) <= 1,
                "{node_count}/{shards}/{rf}: {replicas:?}"
            );
            assert!(
                spread(&leaders) <= 1,
                "{node_count}/{shards}/{rf}: {leaders:?}"
            );
        }
    }

    #[test]
    fn every_node_computes_the_same_map_whatever_the_order() {
        let a = initial_shard_map(&[NodeId(3), NodeId(1), NodeId(2)], 16, 3);
        let b = initial_shard_map(&[NodeId(1), NodeId(2), NodeId(3), NodeId(2)], 16, 3);
        assert_eq!(a, b);
        assert_eq!(
            preferred_leader(&[NodeId(9), NodeId(4)], 4, 2, ShardId::PD),
            Some(NodeId(4))
        );
        assert_eq!(pd_descriptor(&[NodeId(2), NodeId(1)]).replicas.len(), 2);
    }

    #[test]
    fn differences_name_each_field_and_both_values() {
        let ours = vec![
            ("initial_shards".to_string(), "8".to_string()),
            ("replication_factor".to_string(), "3".to_string()),
        ];
        let theirs = vec![
            ("initial_shards".to_string(), "16".to_string()),
            ("pd.split".to_string(), "true".to_string()),
            ("replication_factor".to_string(), "3".to_string()),
        ];
        assert_eq!(
            differences(&ours, &theirs),
            vec![
                "`initial_shards`: here 8, there 16".to_string(),
                "`pd.split`: here (none), there true".to_string(),
            ]
        );
        assert!(differences(&ours, &ours).is_empty());
    }
}
