//! Quiescence in real `ringkvd` processes (`raft.quiesce`, on by default): idle shards go
//! quiet, a write to a quiet shard and a linearizable read of it are served, and when the node
//! leading quiet shards is killed (-9), the node-level liveness report makes their followers
//! elect new leaders (nothing else would: a quiet follower hears no per-shard heartbeat to
//! miss). Every wait is a bounded correctness timeout, not a speed assertion.

mod common;

use bytes::Bytes;
use common::{Cluster, HTTP_ADDR, PD_SCHEDULERS_OFF, get, kv, put};
use ringkv_types::{KvResult, ReadConsistency, Response, ShardDescriptor, ShardId};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const SHARDS: u64 = 24;

/// A metric of node `index`'s `/metrics` (plain HTTP on loopback), `None` when unreachable.
fn metric(cluster: &Cluster, index: usize, name: &str) -> Option<f64> {
    let addr = cluster.http_addrs[index];
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Waits (bounded) until every running node reports at least `count` quiescent replicas.
async fn wait_quiescent(cluster: &Cluster, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen: Vec<Option<f64>> = (0..cluster.nodes.len())
            .filter(|&index| cluster.nodes[index].is_some())
            .map(|index| metric(cluster, index, "ringkv_raft_shards_quiescent"))
            .collect();
        if seen.iter().all(|q| q.is_some_and(|q| q >= count as f64)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not go quiescent: {seen:?} of {count}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One key per shard.
fn keys(map: &ringkv_types::ShardMap) -> BTreeMap<ShardId, (String, ShardDescriptor)> {
    let mut keys = BTreeMap::new();
    for i in 0.. {
        let key = format!("key-{i}");
        let Some(descriptor) = map.shard_for_key(key.as_bytes()) else {
            panic!("the map does not cover {key}");
        };
        let descriptor = descriptor.clone();
        keys.entry(descriptor.id).or_insert((key, descriptor));
        if keys.len() == map.shards.len() {
            return keys;
        }
    }
    unreachable!()
}

/// The leader of every shard among the running nodes, as seen by their status.
async fn leaders(cluster: &mut Cluster) -> BTreeMap<ShardId, usize> {
    let mut leaders = BTreeMap::new();
    for index in 0..cluster.nodes.len() {
        if cluster.nodes[index].is_none() {
            continue;
        }
        let Some(status) = cluster.try_status(index).await else {
            continue;
        };
        for replica in status.replicas.iter().filter(|r| r.is_leader) {
            leaders.insert(replica.shard, index);
        }
    }
    leaders
}

async fn write(cluster: &mut Cluster, at: usize, descriptor: &ShardDescriptor, key: &str, v: &str) {
    match cluster
        .try_call(at, &kv(descriptor, None, put(key, v)))
        .await
    {
        Some(Response::Kv(KvResult::Written { .. })) => {}
        other => panic!("write of {key} on node {}: {other:?}", at + 1),
    }
}

async fn read(cluster: &mut Cluster, at: usize, descriptor: &ShardDescriptor, key: &str) -> Bytes {
    let request = kv(descriptor, None, get(key, ReadConsistency::Linearizable));
    match cluster.try_call(at, &request).await {
        Some(Response::Kv(KvResult::Value { value: Some(v), .. })) => v,
        other => panic!("read of {key} on node {}: {other:?}", at + 1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_shards_serve_and_fail_over_when_their_leaders_node_dies() {
    let extra = format!("http_addr = \"{HTTP_ADDR}\"\nhttp_tls = false\n{PD_SCHEDULERS_OFF}");
    let mut cluster = Cluster::start_with(3, SHARDS, &extra, true).await;
    cluster
        .wait_for_leaders(SHARDS, Duration::from_secs(60))
        .await;
    // Every data shard goes quiet on every node (PD's group proposes a tick every second and
    // stays awake).
    wait_quiescent(&cluster, SHARDS).await;

    // A write to each quiet shard and a linearizable read of it, on its leader.
    let map = cluster.shard_map(0).await;
    let keys = keys(&map);
    let led = leaders(&mut cluster).await;
    for (shard, (key, descriptor)) in &keys {
        let leader = led[shard];
        write(&mut cluster, leader, descriptor, key, "one").await;
        assert_eq!(read(&mut cluster, leader, descriptor, key).await, "one");
    }
    // They go quiet again.
    wait_quiescent(&cluster, SHARDS).await;

    // Kill -9 the node leading the most (quiet) shards: each of them elects a leader on a
    // surviving node and takes a write.
    let led = leaders(&mut cluster).await;
    let mut count = [0usize; 3];
    for (&shard, &index) in &led {
        if shard != ShardId::PD {
            count[index] += 1;
        }
    }
    let victim = (0..3).max_by_key(|&i| count[i]).unwrap();
    let orphans: Vec<ShardId> = led
        .iter()
        .filter(|&(&shard, &index)| index == victim && shard != ShardId::PD)
        .map(|(&shard, _)| shard)
        .collect();
    assert!(!orphans.is_empty());
    cluster.kill_node(victim);
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(60);
    loop {
        let now_led = leaders(&mut cluster).await;
        let missing: Vec<&ShardId> = orphans
            .iter()
            .filter(|shard| now_led.get(shard).is_none_or(|&i| i == victim))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new leader after the kill for shards {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{} quiet shards of node {} had new leaders {:?} after the kill",
        orphans.len(),
        victim + 1,
        killed.elapsed()
    );
    let now_led = leaders(&mut cluster).await;
    for shard in &orphans {
        let (key, descriptor) = &keys[shard];
        let leader = now_led[shard];
        assert_eq!(read(&mut cluster, leader, descriptor, key).await, "one");
        write(&mut cluster, leader, descriptor, key, "two").await;
        assert_eq!(read(&mut cluster, leader, descriptor, key).await, "two");
    }
    // The survivors saw the dead node and reported it.
    for index in (0..3).filter(|&i| i != victim) {
        let reports = metric(&cluster, index, "ringkv_peer_node_down_reports_total");
        assert!(
            reports.is_some_and(|r| r >= 1.0),
            "node {}: {reports:?}",
            index + 1
        );
    }
}
