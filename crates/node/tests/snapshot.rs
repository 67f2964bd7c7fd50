//! A follower that missed compacted entries catches up by a streamed snapshot.
//!
//! (Appends the leader sent while the follower was down may still sit in the transport's peer
//! queue and be delivered on reconnection, so a shard can also catch up from those; with two
//! shards and tens of writes, at least one shard has needed a snapshot in every run so far:
//! run with `RUST_LOG=ringkv_node=info` to see "sending a snapshot".)

mod common;

use bytes::Bytes;
use common::{Cluster, get, kv, put};
use ringkv_types::{KvResult, ReadConsistency, Response};
use std::time::{Duration, Instant};

const SHARDS: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_catches_up_from_a_snapshot() {
    let mut cluster = Cluster::start(3, SHARDS, "[raft]\nlog_compaction_entries = 10\n").await;
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
}
