//! A follower that missed compacted entries catches up by a streamed snapshot.
//!
//! Appends the leaders sent while the follower was down could sit in their transports' peer
//! queues and be delivered on reconnection, letting it catch up without a snapshot; so the other
//! two nodes restart (dropping those queues) before the follower returns, and every shard must
//! then send a snapshot (`RUST_LOG=ringkv_node=info` shows "sending a snapshot").

mod common;

use bytes::Bytes;
use common::{Cluster, get, kv, put};
use ringkv_types::{KvResult, ReadConsistency, Response};
use std::time::{Duration, Instant};

const SHARDS: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_catches_up_from_a_snapshot() {
    let mut cluster =
        Cluster::start_with(3, SHARDS, "[raft]\nlog_compaction_entries = 10\n", true).await;
    cluster
        .wait_for_leaders(SHARDS, Duration::from_secs(30))
        .await;
    let map = cluster.shard_map(0).await;
    cluster.stop_node(2).await;

    let keys: Vec<String> = (0..60).map(|i| format!("snap-{i}")).collect();
    for (sequence, key) in keys.iter().enumerate() {
        let descriptor = map.shard_for_key(key.as_bytes()).unwrap().clone();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let leader = cluster.leader_of(descriptor.id).await;
            let answer = cluster
                .call(
                    leader,
                    kv(&descriptor, Some((3, sequence as u64 + 1)), put(key, key)),
                )
                .await;
            match answer {
                Response::Kv(KvResult::Written { .. }) => break,
                other => {
                    assert!(Instant::now() < deadline, "{key}: {other:?}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    // Nodes 1 and 2 restart (their queues for node 3 are gone) and elect leaders between them.
    for index in 0..2 {
        cluster.stop_node(index).await;
    }
    for index in 0..2 {
        cluster.start_node(index).await;
    }
    cluster
        .wait_for_leaders(SHARDS, Duration::from_secs(30))
        .await;
    // Node 3 comes back; its log ends before the leaders' compaction points.
    cluster.start_node(2).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for key in &keys {
        let descriptor = map.shard_for_key(key.as_bytes()).unwrap().clone();
        loop {
            let answer = cluster
                .call(2, kv(&descriptor, None, get(key, ReadConsistency::Stale)))
                .await;
            match answer {
                Response::Kv(KvResult::Value {
                    value: Some(value), ..
                }) => {
                    assert_eq!(value, Bytes::from(key.clone()));
                    break;
                }
                Response::Kv(KvResult::Value { value: None, .. }) => {}
                other => panic!("{key}: {other:?}"),
            }
            assert!(Instant::now() < deadline, "node 3 never caught up on {key}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // And it keeps following: a new write reaches it.
    let descriptor = map.shard_for_key(b"after").unwrap().clone();
    let leader = cluster.leader_of(descriptor.id).await;
    let answer = cluster
        .call(
            leader,
            kv(&descriptor, Some((3, 1000)), put("after", "yes")),
        )
        .await;
    assert!(
        matches!(answer, Response::Kv(KvResult::Written { .. })),
        "{answer:?}"
    );
    loop {
        let answer = cluster
            .call(
                2,
                kv(&descriptor, None, get("after", ReadConsistency::Stale)),
            )
            .await;
        if matches!(answer, Response::Kv(KvResult::Value { value: Some(_), .. })) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 3 stopped following: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.stop_all().await;
    // Every shard was caught up by a snapshot (the leaders log each one they send).
    let mut logs = String::new();
    for id in 1..=2 {
        let path = cluster.dir.path().join(format!("node-{id}.log"));
        logs.push_str(&strip_ansi(&std::fs::read_to_string(path).unwrap()));
    }
    for shard in &map.shards {
        let line = format!("sending a snapshot shard={} to=n3", shard.id);
        assert!(logs.contains(&line), "no snapshot for {}", shard.id);
    }
}

/// Removes terminal colour codes (`ESC [ ... m`) from a log.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
