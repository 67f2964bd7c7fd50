//! Real `ringkvd` processes on loopback: kill -9 of a shard leader (writes resume after
//! re-election, the killed node catches up: it serves every value written, those written while
//! it was down included), and kill -9 of every node keeps every acknowledged write.

mod common;

use bytes::Bytes;
use common::{Cluster, get, kv, put};
use ringkv_types::{KvResult, ReadConsistency, Response, ShardDescriptor};
use std::time::{Duration, Instant};

const SHARDS: u64 = 3;

/// Writes `key = value` through whichever node leads, retrying routing answers until `deadline`.
async fn write(cluster: &mut Cluster, descriptor: &ShardDescriptor, sequence: u64, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leader = cluster.leader_of(descriptor.id).await;
        let request = kv(
            descriptor,
            Some((42, sequence)),
            put(key, &format!("v-{key}")),
        );
        match cluster.try_call(leader, &request).await {
            Some(Response::Kv(KvResult::Written { .. })) => return,
            other => {
                assert!(Instant::now() < deadline, "{key}: {other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn read(cluster: &mut Cluster, descriptor: &ShardDescriptor, key: &str) -> Option<Bytes> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leader = cluster.leader_of(descriptor.id).await;
        let request = kv(descriptor, None, get(key, ReadConsistency::Linearizable));
        match cluster.try_call(leader, &request).await {
            Some(Response::Kv(KvResult::Value { value, .. })) => return value,
            other => {
                assert!(Instant::now() < deadline, "{key}: {other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leaders_fail_over_and_acknowledged_writes_survive_kill_9() {
    let mut cluster = Cluster::start_with(3, SHARDS, "", true).await;
    cluster
        .wait_for_leaders(SHARDS, Duration::from_secs(30))
        .await;
    let map = cluster.shard_map(0).await;
    let keys: Vec<(String, ShardDescriptor)> = (0..30)
        .map(|i| {
            let key = format!("k{i}");
            let descriptor = map.shard_for_key(key.as_bytes()).unwrap().clone();
            (key, descriptor)
        })
        .collect();
    let mut sequence = 0;
    for (key, descriptor) in &keys[..10] {
        sequence += 1;
        write(&mut cluster, descriptor, sequence, key).await;
    }

    // Kill -9 the leader of the first shard: writes resume once another replica is elected.
    let victim = cluster.leader_of(map.shards[0].id).await;
    cluster.kill_node(victim);
    for (key, descriptor) in &keys[10..20] {
        sequence += 1;
        write(&mut cluster, descriptor, sequence, key).await;
    }
    // The killed node restarts and catches up: stale reads on it return every write so far,
    // those made while it was down included, with the value written (each key is written
    // once, so any other value is wrong, not merely old).
    cluster.start_node(victim).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for (key, descriptor) in &keys[..20] {
        loop {
            let request = kv(descriptor, None, get(key, ReadConsistency::Stale));
            match cluster.try_call(victim, &request).await {
                Some(Response::Kv(KvResult::Value {
                    value: Some(value), ..
                })) => {
                    assert_eq!(
                        value,
                        Bytes::from(format!("v-{key}")),
                        "node {} caught up on {key} with the wrong value",
                        victim + 1
                    );
                    break;
                }
                // Not applied there yet, or the node is still starting.
                Some(Response::Kv(KvResult::Value { value: None, .. }) | Response::Error(_))
                | None => {}
                Some(other) => panic!("stale read of {key} on node {}: {other:?}", victim + 1),
            }
            assert!(
                Instant::now() < deadline,
                "node {} never caught up on {key}",
                victim + 1
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for (key, descriptor) in &keys[20..] {
        sequence += 1;
        write(&mut cluster, descriptor, sequence, key).await;
    }

    // Kill -9 every node, restart them all: every acknowledged write is there.
    for index in 0..3 {
        cluster.kill_node(index);
    }
    for index in 0..3 {
        cluster.start_node(index).await;
    }
    cluster
        .wait_for_leaders(SHARDS, Duration::from_secs(30))
        .await;
    for (key, descriptor) in &keys {
        let value = read(&mut cluster, descriptor, key).await;
        assert_eq!(value, Some(Bytes::from(format!("v-{key}"))), "{key}");
    }
    cluster.stop_all().await;
}
