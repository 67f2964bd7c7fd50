//! `ringctl status [--json]`: nodes, shards, leaders, terms, commit and applied indexes.

use anyhow::Result;
use ringkv_client::Client;
use ringkv_types::{NodeId, NodeStatus, ReplicaStatus, ShardId, ShardMap};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

/// What every reachable node said, plus the shard map.
struct Snapshot {
    map: Option<ShardMap>,
    map_error: Option<String>,
    nodes: Vec<(NodeId, String, Result<NodeStatus, String>)>,
}

async fn collect(client: &Client) -> Snapshot {
    let (map, map_error) = match client.shard_map().await {
        Ok(map) => (Some(map), None),
        Err(error) => (None, Some(error.to_string())),
    };
    let mut nodes = Vec::new();
    for endpoint in client.nodes() {
        let status = client
            .node_status(endpoint.node)
            .await
            .map_err(|e| e.to_string());
        nodes.push((endpoint.node, endpoint.addr.to_string(), status));
    }
    Snapshot {
        map,
        map_error,
        nodes,
    }
}

/// Every shard id seen in the map or in a node's replicas, with the replicas reported.
fn by_shard(snapshot: &Snapshot) -> BTreeMap<ShardId, Vec<(NodeId, &ReplicaStatus)>> {
    let mut shards: BTreeMap<ShardId, Vec<(NodeId, &ReplicaStatus)>> = BTreeMap::new();
    if let Some(map) = &snapshot.map {
        for descriptor in &map.shards {
            shards.entry(descriptor.id).or_default();
        }
    }
    for (node, _, status) in &snapshot.nodes {
        if let Ok(status) = status {
            for replica in &status.replicas {
                shards
                    .entry(replica.shard)
                    .or_default()
                    .push((*node, replica));
            }
        }
    }
    shards
}

/// The leader's report for a shard: the leading replica with the highest term.
fn leader<'a>(replicas: &[(NodeId, &'a ReplicaStatus)]) -> Option<(NodeId, &'a ReplicaStatus)> {
    replicas
        .iter()
        .filter(|(_, r)| r.is_leader)
        .max_by_key(|(_, r)| r.term)
        .copied()
}

/// Prints the status as tables, or as JSON.
pub async fn run(client: &Client, as_json: bool) -> Result<()> {
    let snapshot = collect(client).await;
    let shards = by_shard(&snapshot);
    if as_json {
        let nodes: Vec<_> = snapshot
            .nodes
            .iter()
            .map(|(node, addr, status)| match status {
                Ok(status) => json!({ "node": node.get(), "addr": addr, "reachable": true,
                    "uptime_secs": status.uptime_secs, "replicas": status.replicas }),
                Err(error) => json!({ "node": node.get(), "addr": addr, "reachable": false,
                    "error": error }),
            })
            .collect();
        let shard_rows: Vec<_> = shards
            .iter()
            .map(|(shard, replicas)| {
                let descriptor = snapshot
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
                    "replicas": descriptor.map(|d| d.replicas.iter().map(|r| r.node.get()).collect::<Vec<_>>()),
                    "leader": lead.map(|(node, _)| node.get()),
                    "term": lead.map(|(_, r)| r.term.get()),
                    "commit": lead.map(|(_, r)| r.commit.get()),
                    "applied": applied,
                })
            })
            .collect();
        let document = json!({
            "map_version": snapshot.map.as_ref().map(|m| m.version),
            "map_error": snapshot.map_error,
            "nodes": nodes,
            "shards": shard_rows,
        });
        println!("{}", serde_json::to_string_pretty(&document)?);
        return Ok(());
    }
    match (&snapshot.map, &snapshot.map_error) {
        (Some(map), _) => println!(
            "shard map version {}, {} shards",
            map.version,
            map.shards.len()
        ),
        (None, Some(error)) => println!("shard map unavailable: {error}"),
        (None, None) => {}
    }
    println!();
    println!(
        "{:<6} {:<22} {:>9} {:>9} {:>6}",
        "NODE", "ADDRESS", "UPTIME", "REPLICAS", "LEADS"
    );
    for (node, addr, status) in &snapshot.nodes {
        match status {
            Ok(status) => println!(
                "{:<6} {:<22} {:>8}s {:>9} {:>6}",
                node.to_string(),
                addr,
                status.uptime_secs,
                status.replicas.len(),
                status.replicas.iter().filter(|r| r.is_leader).count()
            ),
            Err(error) => println!("{:<6} {:<22} unreachable: {error}", node.to_string(), addr),
        }
    }
    println!();
    println!(
        "{:<6} {:<10} {:<8} {:>6} {:>10}  APPLIED",
        "SHARD", "REPLICAS", "LEADER", "TERM", "COMMIT"
    );
    let mut leaderless = BTreeSet::new();
    for (shard, replicas) in &shards {
        let descriptor = snapshot
            .map
            .as_ref()
            .and_then(|m| m.shards.iter().find(|d| d.id == *shard));
        let members = match descriptor {
            Some(d) => d
                .replicas
                .iter()
                .map(|r| r.node.get().to_string())
                .collect::<Vec<_>>()
                .join(","),
            None => replicas
                .iter()
                .map(|(n, _)| n.get().to_string())
                .collect::<Vec<_>>()
                .join(","),
        };
        let applied = replicas
            .iter()
            .map(|(node, r)| format!("{node}:{}", r.applied.get()))
            .collect::<Vec<_>>()
            .join(" ");
        let label = if *shard == ShardId::PD {
            "pd".to_string()
        } else {
            shard.to_string()
        };
        match leader(replicas) {
            Some((node, r)) => println!(
                "{:<6} {:<10} {:<8} {:>6} {:>10}  {applied}",
                label,
                members,
                node.to_string(),
                r.term.get(),
                r.commit.get()
            ),
            None => {
                leaderless.insert(*shard);
                println!(
                    "{:<6} {:<10} {:<8} {:>6} {:>10}  {applied}",
                    label, members, "-", "-", "-"
                );
            }
        }
    }
    if !leaderless.is_empty() {
        println!();
        println!("{} shard(s) without a known leader", leaderless.len());
    }
    Ok(())
}
