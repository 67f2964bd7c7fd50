//! `ringctl status [-w json|table|simple]`: nodes, shards, leaders, terms, commit and applied
//! indexes. The JSON document is the one `GET /v1/cluster/status` serves
//! ([`ringkv_client::views::ClusterStatus::json`]).

use crate::view::{self, Table};
use anyhow::Result;
use ringkv_client::Client;
use ringkv_client::views::{ClusterStatus, leader};
use ringkv_types::{NodeStatus, ShardId};

/// Prints the status as tables, or as JSON.
pub async fn run(client: &Client, as_json: bool) -> Result<()> {
    let status = ClusterStatus::collect(client).await;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&status.json())?);
    } else {
        print!("{}", text(&status, view::is_simple()));
    }
    Ok(())
}

/// The status for people: a node table and a shard table (in the simple format, `-w simple`,
/// the rows of both without headers or notes).
pub fn text(status: &ClusterStatus, simple: bool) -> String {
    let mut out = String::new();
    if !simple {
        match (&status.map, &status.map_error) {
            (Some(map), _) => out.push_str(&format!(
                "shard map version {}, {} shards\n\n",
                map.version,
                map.shards.len()
            )),
            (None, Some(error)) => out.push_str(&format!("shard map unavailable: {error}\n\n")),
            (None, None) => {}
        }
    }
    let mut nodes = Table::new(&["NODE", "ADDRESS", "UPTIME", "REPLICAS", "LEADS"]);
    for (node, addr, answer) in &status.nodes {
        match answer {
            Ok(answer) => nodes.row(vec![
                node.to_string(),
                addr.clone(),
                format!("{}s", answer.uptime_secs),
                answer.replicas.len().to_string(),
                answer
                    .replicas
                    .iter()
                    .filter(|r| r.is_leader)
                    .count()
                    .to_string(),
            ]),
            Err(error) => nodes.row(vec![
                node.to_string(),
                addr.clone(),
                format!("unreachable: {error}"),
            ]),
        }
    }
    out.push_str(&render(&nodes, simple));
    for (node, _, answer) in status.nodes.iter().filter(|_| !simple) {
        if let Ok(NodeStatus {
            space_alarm: Some(alarm),
            ..
        }) = answer
        {
            out.push_str(&format!(
                "ALARM NOSPACE: node {node} has {} MiB free, under its reserve of {} MiB: \
                 writes adding data are refused (reads and deletes work)\n",
                alarm.free_bytes >> 20,
                alarm.reserve_bytes >> 20
            ));
        }
    }
    if !simple {
        out.push('\n');
    }
    let mut shards = Table::new(&["SHARD", "REPLICAS", "LEADER", "TERM", "COMMIT", "APPLIED"]);
    let mut leaderless = 0;
    for (shard, replicas) in &status.by_shard() {
        let descriptor = status
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
        let (lead, term, commit) = match leader(replicas) {
            Some((node, r)) => (
                node.to_string(),
                r.term.get().to_string(),
                r.commit.get().to_string(),
            ),
            None => {
                leaderless += 1;
                ("-".to_string(), "-".to_string(), "-".to_string())
            }
        };
        shards.row(vec![label, members, lead, term, commit, applied]);
    }
    out.push_str(&render(&shards, simple));
    if leaderless > 0 && !simple {
        out.push_str(&format!("\n{leaderless} shard(s) without a known leader\n"));
    }
    out
}

fn render(table: &Table, simple: bool) -> String {
    if simple {
        table.render_simple()
    } else {
        table.render_aligned()
    }
}

#[cfg(test)]
#[path = "status_test.rs"]
mod status_test;
