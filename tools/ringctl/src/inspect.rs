//! `ringctl inspect status|data|raft|meta`: asks a running node (admin request) or reads a
//! stopped node's data dir (`--data-dir`, through `ringkv_node::inspect`, the same code the node
//! runs), then prints tables or JSON.

use crate::cli::InspectCommand;
use crate::kv::{bytes_json, bytes_text};
use crate::view::{Table, arc_text};
use anyhow::{Context, Result, bail};
use ringkv_client::Client;
use ringkv_types::inspect::{
    EntryKind, Excerpt, InspectRequest, InspectResult, LogEntryView, OpView, RaftLogView,
    ShardData, ShardRecords,
};
use ringkv_types::{LogIndex, NodeId, ShardId};
use serde_json::{Value, json};
use std::path::Path;
use std::process::ExitCode;

/// The request for a command line.
pub fn request(command: &InspectCommand) -> InspectRequest {
    match command {
        InspectCommand::Status => InspectRequest::Status,
        InspectCommand::Data { shard, limit } => InspectRequest::Data {
            shard: *shard,
            limit: *limit,
        },
        InspectCommand::Raft { shard, from, limit } => InspectRequest::Raft {
            shard: *shard,
            from: from.map(LogIndex),
            limit: *limit,
        },
        InspectCommand::Meta { shard } => InspectRequest::Meta { shard: *shard },
    }
}

/// Reads the stopped node's data dir `dir` (refused while a node runs on it).
pub async fn offline(dir: &Path, request: InspectRequest, json: bool) -> Result<ExitCode> {
    let dir = dir.to_path_buf();
    let result = tokio::task::spawn_blocking(move || -> Result<InspectResult> {
        let store = ringkv_node::inspect::open_offline(&dir)?;
        let result = ringkv_node::inspect::inspect(&store, &request)
            .with_context(|| format!("inspecting {}", dir.display()))?;
        Ok(result)
    })
    .await
    .context("the inspector thread failed")??;
    print(&result, json)
}

/// Asks `node` (default: the first endpoint) about its own store.
pub async fn online(
    client: &Client,
    node: Option<NodeId>,
    request: InspectRequest,
    json: bool,
) -> Result<ExitCode> {
    let node = match node {
        Some(node) => node,
        None => match client.endpoints().first() {
            Some(endpoint) => endpoint.node,
            None => bail!("no endpoint to ask; pass --node N"),
        },
    };
    let result = client
        .inspect(node, request)
        .await
        .with_context(|| format!("inspecting node {node}"))?;
    print(&result, json)
}

fn print(result: &InspectResult, json: bool) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(&to_json(result))?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", to_text(result));
    Ok(ExitCode::SUCCESS)
}

fn excerpt_json(excerpt: &Excerpt) -> Value {
    let mut value = bytes_json(&excerpt.bytes);
    if excerpt.is_truncated() {
        value = json!({ "first_bytes": value, "len": excerpt.len });
    }
    value
}

fn excerpt_text(excerpt: &Excerpt) -> String {
    let text = bytes_text(&excerpt.bytes);
    if excerpt.is_truncated() {
        format!("{text}… ({} bytes)", excerpt.len)
    } else {
        text
    }
}

fn shard_label(shard: ShardId) -> String {
    if shard == ShardId::PD {
        "pd".into()
    } else {
        shard.get().to_string()
    }
}

fn records_json(records: &ShardRecords) -> Value {
    json!({
        "shard": records.shard.get(),
        "hard_state": {
            "term": records.hard_state.term.get(),
            "vote": records.hard_state.vote.get(),
            "commit": records.hard_state.commit.get(),
        },
        "applied": { "index": records.applied_index.get(), "term": records.applied_term.get() },
        "snapshot": { "index": records.snapshot_index.get(), "term": records.snapshot_term.get() },
        "log": { "first": records.first_index.get(), "last": records.last_index.get() },
        "conf": records.conf.as_ref().map(|conf| json!({
            "voters": conf.voters.iter().map(|v| v.get()).collect::<Vec<_>>(),
            "learners": conf.learners.iter().map(|v| v.get()).collect::<Vec<_>>(),
        })),
        "descriptor": records.descriptor.as_ref().map(|d| json!({
            "arc": { "start": d.arc.start, "end": d.arc.end },
            "epoch": { "conf_ver": d.epoch.conf_ver, "version": d.epoch.version },
            "replicas": d.replicas.iter().map(|r| json!({
                "node": r.node.get(),
                "role": format!("{:?}", r.role),
                "member": r.member.get(),
            })).collect::<Vec<_>>(),
        })),
        "tombstone": records.tombstone.map(|t| t.get()),
        "error": records.error,
    })
}

fn data_json(shard: &ShardData) -> Value {
    json!({
        "shard": shard.shard.get(),
        "arc": { "start": shard.arc.start, "end": shard.arc.end },
        "entries": shard.entries.iter().map(|entry| json!({
            "key": excerpt_json(&entry.key),
            "value": excerpt_json(&entry.value),
        })).collect::<Vec<_>>(),
        "more": shard.more,
    })
}

fn op_json(op: &OpView) -> Value {
    match op {
        OpView::Put { key, value } => {
            json!({ "op": "put", "key": excerpt_json(key), "value": excerpt_json(value) })
        }
        OpView::Delete { key } => json!({ "op": "delete", "key": excerpt_json(key) }),
        OpView::Cas { key, expected, new } => json!({
            "op": "cas",
            "key": excerpt_json(key),
            "expected": expected.as_ref().map(excerpt_json),
            "new": new.as_ref().map(excerpt_json),
        }),
        OpView::CasVersion {
            key,
            expected_version,
            new,
        } => json!({
            "op": "cas",
            "key": excerpt_json(key),
            "expected_version": expected_version,
            "new": new.as_ref().map(excerpt_json),
        }),
        OpView::PutTtl { key, value, ttl_ms } => json!({
            "op": "put",
            "key": excerpt_json(key),
            "value": excerpt_json(value),
            "ttl_ms": ttl_ms,
        }),
        OpView::Persist { key } => json!({ "op": "persist", "key": excerpt_json(key) }),
        OpView::Expire { key } => json!({ "op": "expire", "key": excerpt_json(key) }),
    }
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Noop => "noop",
        EntryKind::ConfChange => "conf-change",
        EntryKind::Put => "put",
        EntryKind::Delete => "delete",
        EntryKind::Cas => "cas",
        EntryKind::Batch => "batch",
        EntryKind::Split => "split",
        EntryKind::Pd => "pd",
        EntryKind::ShardMap => "shard-map",
        EntryKind::Undecodable => "undecodable",
        EntryKind::SessionExpiry => "session-expiry",
    }
}

fn entry_json(entry: &LogEntryView) -> Value {
    json!({
        "index": entry.index.get(),
        "term": entry.term.get(),
        "kind": kind_name(entry.kind),
        "session": entry.session.map(|s| json!({ "id": s.session_id, "sequence": s.sequence })),
        "ops": entry.ops.iter().map(op_json).collect::<Vec<_>>(),
        "detail": (!entry.detail.is_empty()).then_some(&entry.detail),
    })
}

fn raft_json(log: &RaftLogView) -> Value {
    json!({
        "shard": log.shard.get(),
        "first_index": log.first_index.get(),
        "last_index": log.last_index.get(),
        "entries": log.entries.iter().map(entry_json).collect::<Vec<_>>(),
        "more": log.more,
    })
}

/// The JSON document of an answer.
pub fn to_json(result: &InspectResult) -> Value {
    match result {
        InspectResult::Status(status) => json!({
            "node": status.node.map(|n| n.get()),
            "cluster_id": status.cluster_id,
            "shards": status.shards.iter().map(records_json).collect::<Vec<_>>(),
        }),
        InspectResult::Meta(shards) => {
            json!({ "shards": shards.iter().map(records_json).collect::<Vec<_>>() })
        }
        InspectResult::Data(shards) => {
            json!({ "shards": shards.iter().map(data_json).collect::<Vec<_>>() })
        }
        InspectResult::Raft(log) => raft_json(log),
    }
}

fn op_text(op: &OpView) -> String {
    let absent = |value: &Option<Excerpt>| {
        value
            .as_ref()
            .map_or_else(|| "(absent)".to_string(), excerpt_text)
    };
    match op {
        OpView::Put { key, value } => {
            format!("put {} = {}", excerpt_text(key), excerpt_text(value))
        }
        OpView::Delete { key } => format!("delete {}", excerpt_text(key)),
        OpView::Cas { key, expected, new } => format!(
            "cas {} if {} then {}",
            excerpt_text(key),
            absent(expected),
            new.as_ref()
                .map_or_else(|| "delete".to_string(), excerpt_text)
        ),
        OpView::CasVersion {
            key,
            expected_version,
            new,
        } => format!(
            "cas {} if version {expected_version} then {}",
            excerpt_text(key),
            new.as_ref()
                .map_or_else(|| "delete".to_string(), excerpt_text)
        ),
        OpView::PutTtl { key, value, ttl_ms } => format!(
            "put {} = {} ttl {ttl_ms}ms",
            excerpt_text(key),
            excerpt_text(value)
        ),
        OpView::Persist { key } => format!("persist {}", excerpt_text(key)),
        OpView::Expire { key } => format!("expire {} if its time is up", excerpt_text(key)),
    }
}

fn entry_text(entry: &LogEntryView) -> String {
    let mut text = entry.ops.iter().map(op_text).collect::<Vec<_>>().join("; ");
    if !entry.detail.is_empty() {
        if !text.is_empty() {
            text.push_str("; ");
        }
        text.push_str(&entry.detail);
    }
    if let Some(session) = entry.session {
        text.push_str(&format!(
            "  [session {:x} #{}]",
            session.session_id, session.sequence
        ));
    }
    text
}

/// A line around the tables, left out with `-w simple` (rows only).
fn prose(text: String) -> String {
    if crate::view::is_simple() {
        String::new()
    } else {
        text
    }
}

/// The tables of an answer.
pub fn to_text(result: &InspectResult) -> String {
    match result {
        InspectResult::Status(status) => {
            let mut out = prose(format!(
                "node {}, cluster id {}, {} shard(s)\n",
                status
                    .node
                    .map_or_else(|| "unknown".to_string(), |n| n.get().to_string()),
                status
                    .cluster_id
                    .map_or_else(|| "unknown".to_string(), |c| format!("{c:x}")),
                status.shards.len()
            ));
            let mut table = Table::new(&[
                "SHARD", "TERM", "VOTE", "COMMIT", "APPLIED", "FIRST", "LAST", "ARC", "ERROR",
            ]);
            for records in &status.shards {
                table.row(vec![
                    shard_label(records.shard),
                    records.hard_state.term.get().to_string(),
                    records.hard_state.vote.get().to_string(),
                    records.hard_state.commit.get().to_string(),
                    records.applied_index.get().to_string(),
                    records.first_index.get().to_string(),
                    records.last_index.get().to_string(),
                    records
                        .descriptor
                        .as_ref()
                        .map_or_else(|| "-".to_string(), |d| arc_text(&d.arc)),
                    records.error.clone().unwrap_or_default(),
                ]);
            }
            out.push_str(&table.render());
            out
        }
        InspectResult::Meta(shards) => {
            let mut table = Table::new(&[
                "SHARD",
                "TERM",
                "VOTE",
                "COMMIT",
                "APPLIED",
                "SNAPSHOT",
                "LOG",
                "CONF",
                "EPOCH",
                "REPLICAS",
                "TOMBSTONE",
                "ERROR",
            ]);
            for records in shards {
                let conf = records.conf.as_ref().map_or_else(
                    || "-".to_string(),
                    |conf| format!("voters {:?} learners {:?}", conf.voters, conf.learners),
                );
                let (epoch, replicas) = records.descriptor.as_ref().map_or_else(
                    || ("-".to_string(), "-".to_string()),
                    |d| {
                        (
                            format!("{}/{}", d.epoch.conf_ver, d.epoch.version),
                            d.replicas
                                .iter()
                                .map(|r| format!("{}:{:?}", r.node.get(), r.role))
                                .collect::<Vec<_>>()
                                .join(","),
                        )
                    },
                );
                table.row(vec![
                    shard_label(records.shard),
                    records.hard_state.term.get().to_string(),
                    records.hard_state.vote.get().to_string(),
                    records.hard_state.commit.get().to_string(),
                    format!(
                        "{}@{}",
                        records.applied_index.get(),
                        records.applied_term.get()
                    ),
                    format!(
                        "{}@{}",
                        records.snapshot_index.get(),
                        records.snapshot_term.get()
                    ),
                    format!(
                        "{}..{}",
                        records.first_index.get(),
                        records.last_index.get()
                    ),
                    conf,
                    epoch,
                    replicas,
                    records
                        .tombstone
                        .map_or_else(|| "-".to_string(), |t| t.get().to_string()),
                    records.error.clone().unwrap_or_default(),
                ]);
            }
            table.render()
        }
        InspectResult::Data(shards) => {
            let mut table = Table::new(&["SHARD", "KEY", "VALUE"]);
            let mut notes = String::new();
            for shard in shards {
                for entry in &shard.entries {
                    table.row(vec![
                        shard_label(shard.shard),
                        excerpt_text(&entry.key),
                        excerpt_text(&entry.value),
                    ]);
                }
                if shard.more {
                    notes.push_str(&format!(
                        "shard {} has more keys (raise --limit)\n",
                        shard.shard.get()
                    ));
                }
            }
            let mut out = table.render();
            out.push_str(&prose(notes));
            out
        }
        InspectResult::Raft(log) => {
            let mut out = prose(format!(
                "shard {} log {}..{}\n",
                shard_label(log.shard),
                log.first_index.get(),
                log.last_index.get()
            ));
            let mut table = Table::new(&["INDEX", "TERM", "KIND", "COMMAND"]);
            for entry in &log.entries {
                table.row(vec![
                    entry.index.get().to_string(),
                    entry.term.get().to_string(),
                    kind_name(entry.kind).to_string(),
                    entry_text(entry),
                ]);
            }
            out.push_str(&table.render());
            if log.more {
                out.push_str(&prose("more entries follow (--from, --limit)\n".into()));
            }
            out
        }
    }
}
