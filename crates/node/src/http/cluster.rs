//! `GET /v1/cluster/status`, `/v1/cluster/shards`, `/v1/cluster/nodes`: the documents of
//! `ringctl status --json`, `ringctl shards --json` and `ringctl nodes --json`, gathered through
//! the embedded client (any node answers for the whole cluster).

use super::auth;
use super::error::ApiError;
use super::{AppState, ConnectionInfo};
use axum::Json;
use axum::extract::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use ringkv_pd::{NodeState, Operator, OperatorKind, PdState};
use ringkv_types::{AdminRequest, Request};
use ringkv_types::{NodeId, NodeStatus, ReplicaRole, ReplicaStatus, ShardId};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Checks the caller as the native service would for `request` (what the route reads).
fn admit(
    state: &AppState,
    headers: &HeaderMap,
    connection: Option<&Extension<ConnectionInfo>>,
    request: AdminRequest,
) -> Result<(), ApiError> {
    auth::admit(
        state,
        headers,
        &auth::peer(connection),
        &Request::Admin(request),
    )
    .map(|_| ())
}

/// Every node's status and every shard's leader, term, commit and applied indexes.
pub(super) async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
    connection: Option<Extension<ConnectionInfo>>,
) -> Response {
    let result: Result<Value, ApiError> = async {
        // The routing information every client may read.
        admit(
            &state,
            &headers,
            connection.as_ref(),
            AdminRequest::GetShardMap,
        )?;
        admit(
            &state,
            &headers,
            connection.as_ref(),
            AdminRequest::NodeStatus,
        )?;
        let client = state.inner.forwarder.client().await?.clone();
        let (map, map_error) = match client.shard_map().await {
            Ok(map) => (Some(map), None),
            Err(error) => (None, Some(error.to_string())),
        };
        // Every node at once: a dead node costs one attempt timeout, not one per node.
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
        let mut nodes: Vec<(NodeId, String, Result<NodeStatus, String>)> = Vec::new();
        while let Some(joined) = asks.join_next().await {
            if let Ok(answer) = joined {
                nodes.push(answer);
            }
        }
        nodes.sort_by_key(|(node, _, _)| *node);
        let mut shards: BTreeMap<ShardId, Vec<(NodeId, &ReplicaStatus)>> = BTreeMap::new();
        if let Some(map) = &map {
            for descriptor in &map.shards {
                shards.entry(descriptor.id).or_default();
            }
        }
        for (node, _, status) in &nodes {
            for replica in status.iter().flat_map(|s| s.replicas.iter()) {
                shards
                    .entry(replica.shard)
                    .or_default()
                    .push((*node, replica));
            }
        }
        let shard_rows: Vec<Value> = shards
            .iter()
            .map(|(shard, replicas)| {
                let descriptor = map
                    .as_ref()
                    .and_then(|m| m.shards.iter().find(|d| d.id == *shard));
                let lead = replicas
                    .iter()
                    .filter(|(_, r)| r.is_leader)
                    .max_by_key(|(_, r)| r.term);
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
        let node_rows: Vec<Value> = nodes
            .iter()
            .map(|(node, addr, status)| match status {
                Ok(status) => json!({ "node": node.get(), "addr": addr, "reachable": true,
                    "uptime_secs": status.uptime_secs, "replicas": status.replicas }),
                Err(error) => json!({ "node": node.get(), "addr": addr, "reachable": false,
                    "error": error }),
            })
            .collect();
        Ok(json!({
            "map_version": map.as_ref().map(|m| m.version),
            "map_error": map_error,
            "nodes": node_rows,
            "shards": shard_rows,
        }))
    }
    .await;
    respond(result)
}

fn respond(result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(document) => Json(document).into_response(),
        Err(error) => error.into_response(),
    }
}

/// PD's state, which holds the user table: administrators only, as natively.
async fn pd_state(
    state: &AppState,
    headers: &HeaderMap,
    connection: Option<&Extension<ConnectionInfo>>,
) -> Result<PdState, ApiError> {
    admit(state, headers, connection, AdminRequest::PdState)?;
    let client = state.inner.forwarder.client().await?;
    Ok(client.pd_state().await?)
}

fn kind_text(kind: OperatorKind) -> &'static str {
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

fn operator_json(operator: &Operator) -> Value {
    json!({
        "id": operator.id.0,
        "shard": operator.shard.get(),
        "kind": kind_text(operator.kind),
        "current": operator.current,
        "steps": operator.steps.len(),
    })
}

/// The shard map as PD's leader holds it: arcs, epochs, replicas, leaders, sizes, operators.
pub(super) async fn shards(
    State(state): State<AppState>,
    headers: HeaderMap,
    connection: Option<Extension<ConnectionInfo>>,
) -> Response {
    let result = pd_state(&state, &headers, connection.as_ref()).await.map(|pd| {
        let shards: Vec<Value> = pd
            .shard_map
            .shards
            .iter()
            .map(|descriptor| {
                let status = pd.shards.get(&descriptor.id);
                json!({
                    "id": descriptor.id.get(),
                    "arc": { "start": descriptor.arc.start, "end": descriptor.arc.end },
                    "epoch": { "conf_ver": descriptor.epoch.conf_ver, "version": descriptor.epoch.version },
                    "replicas": descriptor.replicas.iter().map(|r| json!({
                        "node": r.node.get(),
                        "role": match r.role { ReplicaRole::Voter => "voter", ReplicaRole::Learner => "learner" },
                    })).collect::<Vec<_>>(),
                    "leader": pd.leader(descriptor.id).map(NodeId::get),
                    "size_bytes": status.map(|s| s.stats.size_bytes),
                    "keys": status.map(|s| s.stats.keys),
                    "operator": pd.operator(descriptor.id).map(operator_json),
                })
            })
            .collect();
        json!({ "map_version": pd.shard_map.version, "shards": shards })
    });
    respond(result)
}

/// The nodes PD knows: address, state, replica and leader counts, capacity, last heartbeat.
pub(super) async fn nodes(
    State(state): State<AppState>,
    headers: HeaderMap,
    connection: Option<Extension<ConnectionInfo>>,
) -> Response {
    let result = pd_state(&state, &headers, connection.as_ref())
        .await
        .map(|pd| {
            let replicas = pd.replica_counts();
            let leaders = pd.leader_counts();
            let nodes: Vec<Value> = pd
                .nodes
                .values()
                .map(|node| {
                    let state = match node.state {
                        NodeState::Up => "Up",
                        NodeState::Down => "Down",
                        NodeState::Draining => "Draining",
                        NodeState::Removed => "Removed",
                    };
                    let used = (node.stats.capacity_bytes > 0).then(|| {
                        node.stats
                            .capacity_bytes
                            .saturating_sub(node.stats.available_bytes)
                    });
                    json!({
                        "id": node.id.get(),
                        "addr": node.addr,
                        "state": state,
                        "replicas": replicas.get(&node.id).copied().unwrap_or(0),
                        "leaders": leaders.get(&node.id).copied().unwrap_or(0),
                        "capacity_bytes": node.capacity_bytes,
                        "used_bytes": used,
                        "labels": node.labels,
                        "last_heartbeat_ms": node.last_heartbeat_ms,
                    })
                })
                .collect();
            json!({ "nodes": nodes })
        });
    respond(result)
}
