//! Real `ringkvd` processes on loopback, one of them cut off from the other two through the
//! transport's fault hook (`AdminRequest::SetFaults`, enabled by `[debug] fault_injection`):
//! the isolated node cannot write, the majority can, and after healing every replica of every
//! shard holds the same data.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions; a failure is a test failure"
)]

mod common;

use bytes::Bytes;
use common::{Cluster, FAULT_INJECTION, get, kv, put};
use ringkv_types::{
    KvResult, ReadConsistency, Request, Response, ShardDescriptor, ShardId, ShardMap, WireError,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SHARDS: u64 = 3;
/// Server-side budget of the writes sent to the isolated node.
const MINORITY_TIMEOUT_MS: u32 = 2000;

/// Writes `key = value` through the leader of its shard among `candidates`, retrying routing
/// answers (elections) until a bounded deadline.
async fn write_among(
    cluster: &mut Cluster,
    candidates: &[usize],
    descriptor: &ShardDescriptor,
    session: (u64, u64),
    key: &str,
    value: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leader = cluster.leader_among(descriptor.id, candidates).await;
        let request = kv(descriptor, Some(session), put(key, value));
        match cluster.try_call(leader, &request).await {
            Some(Response::Kv(KvResult::Written { .. })) => return,
            other => {
                assert!(Instant::now() < deadline, "{key}: {other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A stale read of `key` on node `index`: what that replica has applied.
async fn stale_read(
    cluster: &mut Cluster,
    index: usize,
    map: &ShardMap,
    key: &str,
) -> Option<Bytes> {
    let descriptor = map.shard_for_key(key.as_bytes()).unwrap();
    let request = kv(descriptor, None, get(key, ReadConsistency::Stale));
    match cluster.call(index, request).await {
        Response::Kv(KvResult::Value { value, .. }) => value,
        other => panic!("stale read of {key} on node {}: {other:?}", index + 1),
    }
}

/// One key per shard, with a prefix: `{prefix}-{n}` for the first n landing in each shard.
fn key_per_shard(map: &ShardMap, prefix: &str) -> BTreeMap<ShardId, String> {
    let mut keys = BTreeMap::new();
    for n in 0..10_000 {
        let key = format!("{prefix}-{n}");
        let shard = map.shard_for_key(key.as_bytes()).unwrap().id;
        keys.entry(shard).or_insert(key);
        if keys.len() == map.shards.len() {
            break;
        }
    }
    assert_eq!(keys.len(), map.shards.len());
    keys
}

/// Waits (bounded) until, for every group, every node reports the same applied index.
async fn wait_until_replicas_agree(cluster: &mut Cluster) -> BTreeMap<ShardId, u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut applied: BTreeMap<ShardId, Vec<u64>> = BTreeMap::new();
        for index in 0..cluster.nodes.len() {
            for replica in cluster.status(index).await.replicas {
                applied
                    .entry(replica.shard)
                    .or_default()
                    .push(replica.applied.get());
            }
        }
        let agreed = applied
            .values()
            .all(|all| all.len() == cluster.nodes.len() && all.windows(2).all(|w| w[0] == w[1]));
        if agreed {
            return applied
                .into_iter()
                .map(|(shard, all)| (shard, all[0]))
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "replicas never agreed on applied indexes: {applied:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends a write for `key` straight to `index` and checks it is refused: `NotLeader`,
/// `Timeout` or `Unavailable`, answered within the request's own budget; never a success.
async fn assert_write_refused(
    cluster: &mut Cluster,
    index: usize,
    descriptor: &ShardDescriptor,
    session: (u64, u64),
    key: &str,
) {
    let mut request = kv(descriptor, Some(session), put(key, "from-the-minority"));
    if let Request::Kv(kv_request) = &mut request {
        kv_request.timeout_ms = MINORITY_TIMEOUT_MS;
    }
    let started = Instant::now();
    let answer = cluster.try_call(index, &request).await;
    eprintln!(
        "write of {key} to isolated node {} answered {answer:?} after {:?}",
        index + 1,
        started.elapsed()
    );
    match answer {
        Some(Response::Error(
            WireError::NotLeader { .. } | WireError::Timeout | WireError::Unavailable,
        )) => {}
        other => panic!(
            "a write to isolated node {} for {key} answered {other:?}",
            index + 1
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_minority_cannot_write_and_catches_up_after_healing() {
    let mut cluster = Cluster::start_with(3, SHARDS, FAULT_INJECTION, true).await;
    cluster
        .wait_for_leaders(SHARDS, Duration::from_secs(30))
        .await;
    let map = cluster.shard_map(0).await;
    let shared = key_per_shard(&map, "shared");
    let refused = key_per_shard(&map, "refused");
    let after = key_per_shard(&map, "after");
    let descriptor = |shard: &ShardId| map.shards.iter().find(|d| d.id == *shard).unwrap().clone();
    let all = [0, 1, 2];
    let mut sequence = 0;
    for (shard, key) in &shared {
        sequence += 1;
        write_among(
            &mut cluster,
            &all,
            &descriptor(shard),
            (1, sequence),
            key,
            "before",
        )
        .await;
    }

    // Every replica applies those writes before the cut (a follower learns the commit index
    // after the leader answered), so the isolated node's view below is known exactly.
    wait_until_replicas_agree(&mut cluster).await;

    // Cut off the leader of the first shard, so the minority starts out holding a leader.
    let victim = cluster.leader_of(map.shards[0].id).await;
    let majority: Vec<usize> = all.iter().copied().filter(|&i| i != victim).collect();
    cluster.isolate(victim).await;

    // The isolated node refuses writes to every shard (it still answers clients).
    let mut minority_sequence = 0;
    for (shard, key) in &refused {
        minority_sequence += 1;
        assert_write_refused(
            &mut cluster,
            victim,
            &descriptor(shard),
            (2, minority_sequence),
            key,
        )
        .await;
    }
    // The majority elects leaders where needed and keeps accepting writes.
    for (shard, key) in &shared {
        sequence += 1;
        write_among(
            &mut cluster,
            &majority,
            &descriptor(shard),
            (1, sequence),
            key,
            "during",
        )
        .await;
    }
    // The isolated node saw none of them, and still refuses writes (by now it has stepped down
    // or still cannot commit).
    for key in shared.values() {
        assert_eq!(
            stale_read(&mut cluster, victim, &map, key).await.as_deref(),
            Some(&b"before"[..]),
            "{key} on the isolated node"
        );
    }
    for (shard, key) in &refused {
        minority_sequence += 1;
        assert_write_refused(
            &mut cluster,
            victim,
            &descriptor(shard),
            (2, minority_sequence),
            key,
        )
        .await;
    }

    // Heal; a write per shard in the current term, then every replica converges.
    cluster.heal().await;
    for (shard, key) in &after {
        sequence += 1;
        write_among(
            &mut cluster,
            &all,
            &descriptor(shard),
            (1, sequence),
            key,
            "after",
        )
        .await;
    }
    let applied = wait_until_replicas_agree(&mut cluster).await;
    assert_eq!(applied.len() as u64, SHARDS + 1, "{applied:?}");
    let expected = shared
        .values()
        .map(|key| (key, Some("during")))
        .chain(refused.values().map(|key| (key, None)))
        .chain(after.values().map(|key| (key, Some("after"))));
    for (key, value) in expected {
        for index in all {
            assert_eq!(
                stale_read(&mut cluster, index, &map, key).await.as_deref(),
                value.map(str::as_bytes),
                "{key} on node {}",
                index + 1
            );
        }
    }
    cluster.stop_all().await;
}
