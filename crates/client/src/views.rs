//! The cluster documents `ringctl status|nodes|shards --json` print and the HTTP API serves at
//! `/v1/cluster/status|nodes|shards`: one definition, so the two can never drift apart.
//!
//! Everything here but [`ClusterStatus::collect`] is a pure function of what the cluster said,
//! so the shapes are unit-tested without a cluster.

use crate::Client;
use ringkv_types::pd::{NodeInfo, NodeState, Operator, OperatorKind, PdState, Step};
use ringkv_types::{NodeId, NodeStatus, ReplicaRole, ReplicaStatus, ShardId, ShardMap};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A node's state as printed.
pub fn state_text(state: NodeState) -> &'static str {
    match state {
        NodeState::Up => "Up",
        NodeState::Down => "Down",
        NodeState::Draining => "Draining",
        NodeState::Removed => "Removed",
    }
}

/// An operator kind as printed.
pub fn kind_text(kind: OperatorKind) -> &'static str {
    match kind {
        OperatorKind::Repair => "repair",
        OperatorKind::Drain => "drain",
        OperatorKind::Split => "split",
        OperatorKind::BalanceReplicas => "balance-replicas",
        OperatorKind::BalanceLeaders => "balance-leaders",
        OperatorKind::Admin => "admin",
        OperatorKind::Rollback => "rollback",
    }
}

/// One step in words.
pub fn step_text(step: &Step) -> String {
    match *step {
        Step::AddLearner { node, .. } => format!("add learner on {node}"),
        Step::PromoteLearner { node } => format!("promote {node}"),
        Step::TransferLeader { to } => format!("transfer leader to {to}"),
        Step::RemoveReplica { node } => format!("remove {node}"),
        Step::Split { new_shard, at } => format!("split at {at:016x} (new {new_shard})"),
    }
}

/// An operator as JSON: id, shard, kind, the current step's index and every step in words.
pub fn operator_json(operator: &Operator) -> Value {
    json!({
        "id": operator.id.0,
        "shard": operator.shard.get(),
        "kind": kind_text(operator.kind),
        "current": operator.current,
        "steps": operator.steps.iter().map(step_text).collect::<Vec<_>>(),
    })
}

/// Bytes used on a node: capacity minus the free bytes it reported, if it reported any.
pub fn used_bytes(node: &NodeInfo) -> Option<u64> {
    (node.stats.capacity_bytes > 0).then(|| {
        node.stats
            .capacity_bytes
            .saturating_sub(node.stats.available_bytes)
    })
}

/// The nodes PD knows: address, state, replica and leader counts, capacity, last heartbeat;
/// `pd_leader` is the placement driver's leader as the asking client knows it.
pub fn nodes_json(state: &PdState, pd_leader: Option<NodeId>) -> Value {
    let replicas = state.replica_counts();
    let leaders = state.leader_counts();
    let nodes: Vec<Value> = state
        .nodes
        .values()
        .map(|node| {
            json!({
                "id": node.id.get(),
                "addr": node.addr,
                "state": state_text(node.state),
                "replicas": replicas.get(&node.id).copied().unwrap_or(0),
                "leaders": leaders.get(&node.id).copied().unwrap_or(0),
                "capacity_bytes": node.capacity_bytes,
                "used_bytes": used_bytes(node),
                "labels": node.labels,
                "last_heartbeat_ms": node.last_heartbeat_ms,
            })
        })
        .collect();
    json!({ "pd_leader": pd_leader.map(NodeId::get), "nodes": nodes })
}

/// The shard map as PD's leader holds it: arcs, epochs, replicas, leaders, sizes, operators.
pub fn shards_json(state: &PdState) -> Value {
    let shards: Vec<Value> = state
        .shard_map
        .shards
        .iter()
        .map(|descriptor| {
            let status = state.shards.get(&descriptor.id);
            json!({
                "id": descriptor.id.get(),
                "arc": { "start": descriptor.arc.start, "end": descriptor.arc.end },
                "epoch": { "conf_ver": descriptor.epoch.conf_ver, "version": descriptor.epoch.version },
                "replicas": descriptor.replicas.iter().map(|r| json!({
                    "node": r.node.get(),
                    "role": match r.role { ReplicaRole::Voter => "voter", ReplicaRole::Learner => "learner" },
                })).collect::<Vec<_>>(),
                "leader": state.leader(descriptor.id).map(NodeId::get),
                "size_bytes": status.map(|s| s.stats.size_bytes),
                "keys": status.map(|s| s.stats.keys),
                "operator": state.operator(descriptor.id).map(operator_json),
            })
        })
        .collect();
    json!({ "map_version": state.shard_map.version, "shards": shards })
}

/// What every node said about its replicas, plus the shard map: `ringctl status`.
#[derive(Clone, Debug, Default)]
pub struct ClusterStatus {
    /// The shard map, if it could be loaded.
    pub map: Option<ShardMap>,
    /// Why the map could not be loaded.
    pub map_error: Option<String>,
    /// Every node the client knows, by id: its address and its status or the error asking it.
    pub nodes: Vec<(NodeId, String, Result<NodeStatus, String>)>,
}

impl ClusterStatus {
    /// Loads the shard map and asks every known node for its status, all nodes at once (a
    /// dead node costs one attempt timeout, not one per node).
    pub async fn collect(client: &Client) -> Self {
        let (map, map_error) = match client.shard_map().await {
            Ok(map) => (Some(map), None),
            Err(error) => (None, Some(error.to_string())),
        };
        let mut asks = tokio::task::JoinSet::new();
        for endpoint in client.nodes() {
            let client = client.clone();
            asks.spawn(async move {
                let status = client
                    .node_status(endpoint.node)
                    .await
                    .map_err(|e| e.to_string());
                (endpoint.node, endpoint.addr.to_string(), status)
            });
        }
        let mut nodes = Vec::new();
        while let Some(joined) = asks.join_next().await {
            if let Ok(answer) = joined {
                nodes.push(answer);
            }
        }
        nodes.sort_by_key(|(node, _, _)| *node);
        Self {
            map,
            map_error,
            nodes,
        }
    }

    /// Every shard id seen in the map or in a node's replicas, with the replicas reported.
    pub fn by_shard(&self) -> BTreeMap<ShardId, Vec<(NodeId, &ReplicaStatus)>> {
        let mut shards: BTreeMap<ShardId, Vec<(NodeId, &ReplicaStatus)>> = BTreeMap::new();
        if let Some(map) = &self.map {
            for descriptor in &map.shards {
                shards.entry(descriptor.id).or_default();
            }
        }
        for (node, _, status) in &self.nodes {
            for replica in status.iter().flat_map(|s| s.replicas.iter()) {
                shards
                    .entry(replica.shard)
                    .or_default()
                    .push((*node, replica));
            }
        }
        shards
    }

    /// The document of `ringctl status --json` and `GET /v1/cluster/status`.
    pub fn json(&self) -> Value {
        let nodes: Vec<Value> = self
            .nodes
            .iter()
            .map(|(node, addr, status)| match status {
                Ok(status) => json!({ "node": node.get(), "addr": addr, "reachable": true,
                    "uptime_secs": status.uptime_secs, "replicas": status.replicas,
                    "space_alarm": status.space_alarm.map(|a| json!({
                        "free_bytes": a.free_bytes, "reserve_bytes": a.reserve_bytes })) }),
                Err(error) => json!({ "node": node.get(), "addr": addr, "reachable": false,
                    "error": error }),
            })
            .collect();
        let shards: Vec<Value> = self
            .by_shard()
            .iter()
            .map(|(shard, replicas)| {
                let descriptor = self
                    .map
                    .as_ref()
                    .and_then(|m| m.shards.iter().find(|d| d.id == *shard));
                let lead = leader(replicas);
                let applied: BTreeMap<String, u64> = replicas
                    .iter()
                    .map(|(node, r)| (node.to_string(), r.applied.get()))
                    .collect();
                json!({
                    "shard": shard.get(),
                    "arc": descriptor.map(|d| json!({ "start": d.arc.start, "end": d.arc.end })),
                    "epoch": descriptor.map(|d| d.epoch),
                    "replicas": descriptor
                        .map(|d| d.replicas.iter().map(|r| r.node.get()).collect::<Vec<_>>()),
                    "leader": lead.map(|(node, _)| node.get()),
                    "term": lead.map(|(_, r)| r.term.get()),
                    "commit": lead.map(|(_, r)| r.commit.get()),
                    "applied": applied,
                })
            })
            .collect();
        json!({
            "map_version": self.map.as_ref().map(|m| m.version),
            "map_error": self.map_error,
            "nodes": nodes,
            "shards": shards,
        })
    }
}

/// The leader's report for a shard: the leading replica with the highest term.
pub fn leader<'a>(replicas: &[(NodeId, &'a ReplicaStatus)]) -> Option<(NodeId, &'a ReplicaStatus)> {
    replicas
        .iter()
        .filter(|(_, r)| r.is_leader)
        .max_by_key(|(_, r)| r.term)
        .copied()
}
