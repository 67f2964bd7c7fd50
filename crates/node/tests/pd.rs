//! The placement driver hosted by the nodes: its state matches what clients see, nodes join,
//! and PD's orders (executed by the shard leaders) rebalance, split, drain and repair while a
//! client keeps working. Every wait is bounded; nothing asserts on timing (the numbers are
//! printed for the issue note).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;
mod workload;

use bytes::Bytes;
use common::{Cluster, pd_config};
use ringkv_client::Client;
use ringkv_pd::{AdminOperator, Command, NodeState, PdState, Response as PdResponse};
use ringkv_types::{AdminRequest, AdminResult, NodeId, ReplicaRole, Request, Response};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use workload::{WAIT, actual_counts, spread, wait_for_pd};

/// A client seeded with the first three nodes and `more` (nodes that join later).
async fn client(cluster: &Cluster, more: &[SocketAddr]) -> Client {
    let seeds: Vec<SocketAddr> = cluster.addrs.iter().take(3).chain(more).copied().collect();
    cluster.rust_client_seeded(&seeds, None).await
}

/// PD's replica counts per `Up` node.
fn pd_replicas(state: &PdState) -> BTreeMap<u64, u64> {
    state
        .replica_counts()
        .into_iter()
        .filter(|(node, _)| {
            state
                .nodes
                .get(node)
                .is_some_and(|n| n.state == NodeState::Up)
        })
        .map(|(node, count)| (node.get(), count))
        .collect()
}

/// A client writing new keys and reading earlier ones until stopped; returns the keys written
/// and the number of failed calls (after the client's own retries).
fn start_load(
    client: Arc<Client>,
    stop: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut written = Vec::new();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let key = format!("load-{i}");
            match client.put(key.clone(), format!("value-{i}")).await {
                Ok(()) => written.push(key),
                Err(error) => {
                    println!("load: put {key} failed: {error}");
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Some(earlier) = written.get((i as usize * 7) % written.len().max(1)) {
                let expected = format!("value-{}", &earlier["load-".len()..]);
                match client.get(earlier.clone()).await {
                    Ok(Some(value)) if value.as_ref() == expected.as_bytes() => {}
                    Ok(other) => panic!("read {earlier}: got {other:?}, expected {expected}"),
                    Err(error) => {
                        println!("load: get {earlier} failed: {error}");
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        written
    })
}

async fn check_all(client: &Client, keys: &[String]) {
    for key in keys {
        let expected = format!("value-{}", &key["load-".len()..]);
        let value = client.get(key.clone()).await.unwrap();
        assert_eq!(value, Some(Bytes::from(expected)), "{key}");
    }
}

/// A 3-node cluster starts with a PD state whose map is what every node serves; two nodes
/// join; with the balancing schedulers on, PD moves replicas and leaders until counts differ by
/// at most one, while a client writes and reads without a failed call; all data stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_and_the_cluster_rebalances_under_load() {
    grow_and_rebalance(8, 2000, 1024).await;
}

/// The same with more shards and data, for numbers: `cargo test -p ringkv-node --test pd --
/// --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: measures a larger rebalance"]
async fn a_larger_rebalance() {
    grow_and_rebalance(16, 20_000, 1024).await;
}

async fn grow_and_rebalance(shards: u64, keys: usize, value_bytes: usize) {
    let mut cluster = Cluster::start(3, shards, &pd_config(true)).await;
    cluster
        .wait_for_leaders(shards, Duration::from_secs(30))
        .await;
    let state = cluster.pd_state().await;
    assert_eq!(state.nodes.len(), 3);
    assert_eq!(state.shard_map.shards.len() as u64, shards);
    for index in 0..3 {
        assert_eq!(
            cluster.shard_map(index).await,
            state.shard_map,
            "node {index}"
        );
    }

    // The joining nodes' addresses are given to the client up front (written before the
    // client learned joined nodes by itself; `process_rebalance.rs` covers a client seeded
    // with the first three nodes only).
    let joining = [common::reserve_addr(), common::reserve_addr()];
    let client = Arc::new(client(&cluster, &joining).await);
    // Some data, so the moves stream real snapshots.
    let preloaded = preload(&client, keys, value_bytes).await;
    println!("preloaded {keys} keys of {value_bytes} B over {shards} shards (3 replicas each)");
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let load = start_load(client.clone(), stop.clone(), errors.clone());
    // The leaders' load counters reach PD as rates.
    wait_for_pd(&mut cluster, "write rates reported", |state| {
        state.shards.values().any(|s| s.stats.writes_per_sec > 0)
            && state.nodes.values().any(|n| n.stats.writes_per_sec > 0)
    })
    .await;

    let (replicas, leaders) = actual_counts(&mut cluster).await;
    println!("before: replicas per node {replicas:?}, leaders per node {leaders:?}");
    let started = Instant::now();
    let fourth = cluster.add_joining_node_at(joining[0]).await;
    let fifth = cluster.add_joining_node_at(joining[1]).await;
    wait_for_pd(&mut cluster, "both nodes registered", |state| {
        state.nodes.len() == 5 && state.nodes.values().all(|n| n.state == NodeState::Up)
    })
    .await;
    let state = wait_for_pd(&mut cluster, "replicas and leaders balanced", |state| {
        let replicas = pd_replicas(state);
        let leaders: BTreeMap<u64, u64> = state
            .leader_counts()
            .into_iter()
            .map(|(node, count)| (node.get(), count))
            .collect();
        replicas.len() == 5
            && spread(&replicas) <= 1
            && spread(&leaders) <= 1
            && state.operators.is_empty()
    })
    .await;
    // The nodes agree with PD once removed replicas are gone and leadership settled.
    let deadline = Instant::now() + WAIT;
    let (replicas, leaders) = loop {
        let (replicas, leaders) = actual_counts(&mut cluster).await;
        let pd = pd_replicas(&state);
        if replicas == pd && spread(&leaders) <= 1 {
            break (replicas, leaders);
        }
        assert!(
            Instant::now() < deadline,
            "nodes hold {replicas:?} (leaders {leaders:?}), PD says {pd:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let elapsed = started.elapsed();
    println!(
        "after: replicas per node {replicas:?}, leaders per node {leaders:?}; \
         rebalanced in {:.1} s ({} operators finished, {} cancelled)",
        elapsed.as_secs_f64(),
        state.operator_counts.finished,
        state.operator_counts.cancelled
    );
    // A joined node serves PD's map and knows every node.
    for index in [fourth, fifth] {
        let deadline = Instant::now() + WAIT;
        loop {
            let map = cluster
                .try_call(index, &Request::Admin(AdminRequest::GetShardMap))
                .await;
            if let Some(Response::Admin(AdminResult::ShardMap(map))) = map {
                let current = cluster.pd_state().await.shard_map;
                if map == current {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {index} never served PD's map"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        match cluster
            .call(index, Request::Admin(AdminRequest::GetNodes))
            .await
        {
            Response::Admin(AdminResult::Nodes(nodes)) => assert_eq!(nodes.len(), 5),
            other => panic!("unexpected nodes answer {other:?}"),
        }
    }

    stop.store(true, Ordering::Relaxed);
    let written = load.await.unwrap();
    let failed = errors.load(Ordering::Relaxed);
    println!(
        "client: {} writes acknowledged during the rebalance, {failed} failed calls",
        written.len()
    );
    assert_eq!(failed, 0, "client calls failed beyond retries");
    check_all(&client, &written).await;
    check_preloaded(&client, &preloaded, value_bytes).await;
    client.close().await;
    cluster.stop_all().await;
}

/// Writes `count` keys `pre-<i>` of `size` bytes with 8 concurrent writers.
async fn preload(client: &Arc<Client>, count: usize, size: usize) -> Vec<String> {
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..8 {
        let client = client.clone();
        writers.spawn(async move {
            for i in (writer..count).step_by(8) {
                let value = vec![b'a' + (i % 26) as u8; size];
                client.put(format!("pre-{i}"), value).await.unwrap();
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    (0..count).map(|i| format!("pre-{i}")).collect()
}

async fn check_preloaded(client: &Client, keys: &[String], size: usize) {
    for (i, key) in keys.iter().enumerate() {
        let value = client.get(key.clone()).await.unwrap().unwrap();
        assert_eq!(value.len(), size, "{key}");
        assert!(value.iter().all(|&b| b == b'a' + (i % 26) as u8), "{key}");
    }
}

/// A split ordered through PD shows in the map every node serves, and keys on both halves stay
/// readable; draining a node moves every replica off it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_split_and_drain() {
    let mut cluster = Cluster::start(3, 4, &pd_config(false)).await;
    cluster.wait_for_leaders(4, Duration::from_secs(30)).await;
    let joining = common::reserve_addr();
    cluster.add_joining_node_at(joining).await;
    wait_for_pd(&mut cluster, "node 4 registered", |state| {
        state.nodes.len() == 4
    })
    .await;
    let client = client(&cluster, &[joining]).await;
    let keys: Vec<String> = (0..200).map(|i| format!("load-{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        client.put(key.clone(), format!("value-{i}")).await.unwrap();
    }

    let shard = ringkv_types::ShardId(1);
    let parent = cluster.pd_state().await.descriptor(shard).unwrap().clone();
    let answer = cluster
        .pd_call(&Command::AddOperator {
            operator: AdminOperator::SplitShard { shard, at: None },
            now_ms: 0,
        })
        .await;
    assert!(matches!(answer, Ok(PdResponse::Operator(_))), "{answer:?}");
    let state = wait_for_pd(&mut cluster, "split recorded", |state| {
        state.shard_map.shards.len() == 5
            && state.operators.is_empty()
            && state.shard_map.shards.iter().all(|d| d.epoch.version >= 1)
    })
    .await;
    let left = state.descriptor(shard).unwrap();
    assert!(left.arc.end.is_some() && left.arc.end != parent.arc.end);
    let right = state
        .shard_map
        .shards
        .iter()
        .find(|d| Some(d.arc.start) == left.arc.end)
        .unwrap();
    assert_eq!(right.arc.end, parent.arc.end);
    let deadline = Instant::now() + WAIT;
    loop {
        let map = cluster.shard_map(0).await;
        if map.shards.len() == 5 && map.covers_ring() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "GetShardMap never showed the split"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut on_both = [0, 0];
    for (i, key) in keys.iter().enumerate() {
        let position = ringkv_types::ring::position(key.as_bytes());
        if left.arc.contains(position) {
            on_both[0] += 1;
        } else if right.arc.contains(position) {
            on_both[1] += 1;
        }
        let value = client.get(key.clone()).await.unwrap();
        assert_eq!(value, Some(Bytes::from(format!("value-{i}"))), "{key}");
    }
    assert!(
        on_both[0] > 0 && on_both[1] > 0,
        "keys on both halves: {on_both:?}"
    );

    let drained = NodeId(2);
    let started = Instant::now();
    let answer = cluster
        .pd_call(&Command::SetNodeState {
            node: drained,
            state: NodeState::Draining,
            now_ms: 0,
        })
        .await;
    assert_eq!(answer, Ok(PdResponse::Done));
    wait_for_pd(&mut cluster, "node 2 drained", |state| {
        state.operators.is_empty()
            && state
                .shard_map
                .shards
                .iter()
                .all(|d| d.replica_on(drained).is_none() && d.voters().count() == 3)
    })
    .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (replicas, _) = actual_counts(&mut cluster).await;
        if replicas.get(&2) == Some(&0) {
            println!(
                "drain: node 2 emptied in {:.1} s; replicas per node {replicas:?}",
                started.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(Instant::now() < deadline, "node 2 still holds {replicas:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (i, key) in keys.iter().enumerate() {
        let value = client.get(key.clone()).await.unwrap();
        assert_eq!(value, Some(Bytes::from(format!("value-{i}"))), "{key}");
    }

    // The joined node restarts: it registers again under its id, reopens its replicas from
    // their descriptors and heartbeats.
    let (before, _) = actual_counts(&mut cluster).await;
    let heartbeat = cluster.pd_state().await.nodes[&NodeId(4)].last_heartbeat_ms;
    cluster.stop_node(3).await;
    cluster.start_node(3).await;
    wait_for_pd(&mut cluster, "node 4 heartbeats again", |state| {
        state.nodes[&NodeId(4)].last_heartbeat_ms > heartbeat + 1000
            && state.nodes[&NodeId(4)].state == NodeState::Up
            && state.nodes.len() == 4
    })
    .await;
    let (after, _) = actual_counts(&mut cluster).await;
    assert_eq!(
        after.get(&4),
        before.get(&4),
        "node 4's replicas after its restart"
    );
    for (i, key) in keys.iter().enumerate() {
        let value = client.get(key.clone()).await.unwrap();
        assert_eq!(value, Some(Bytes::from(format!("value-{i}"))), "{key}");
    }
    client.close().await;
    cluster.stop_all().await;
}

/// Shard leaders measure their shards' sizes and report them; PD splits the shards that grew
/// past `split_size_bytes`, and every key stays readable through the new layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_past_the_size_threshold_are_split() {
    const THRESHOLD: u64 = 96 * 1024;
    let config = pd_config(false).replace(
        "split = false",
        &format!("split = true\nsplit_size_bytes = {THRESHOLD}"),
    );
    let mut cluster = Cluster::start(3, 2, &config).await;
    cluster.wait_for_leaders(2, Duration::from_secs(30)).await;
    let client = Arc::new(client(&cluster, &[]).await);
    // About 400 KiB of user data over 2 shards: both are well past the threshold.
    let keys = preload(&client, 400, 1024).await;
    // Every key counted exactly once across the reported sizes (measurements taken while the
    // preload ran are replaced within a few heartbeats), every shard under the threshold.
    let state = wait_for_pd(&mut cluster, "sizes reported and shards split", |state| {
        state.shard_map.shards.len() >= 4
            && state.operators.is_empty()
            && state.shards.values().map(|s| s.stats.keys).sum::<u64>() == 400
            && state
                .shards
                .values()
                .all(|s| s.stats.size_bytes > 0 && s.stats.size_bytes <= THRESHOLD)
    })
    .await;
    let sizes: Vec<(u64, u64, u64)> = state
        .shards
        .iter()
        .map(|(id, s)| (id.get(), s.stats.size_bytes, s.stats.keys))
        .collect();
    println!(
        "{} shards after size splits: (shard, bytes, keys) {sizes:?}",
        state.shard_map.shards.len()
    );
    assert!(state.shard_map.covers_ring());
    check_preloaded(&client, &keys, 1024).await;
    client.close().await;
    cluster.stop_all().await;
}

/// A node stopped for longer than `max_down_time_ms` loses its replicas: PD rebuilds them on
/// the other nodes until every shard has three voters again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_repaired_elsewhere() {
    let mut cluster = Cluster::start(3, 4, &pd_config(false)).await;
    cluster.wait_for_leaders(4, Duration::from_secs(30)).await;
    let joining = common::reserve_addr();
    cluster.add_joining_node_at(joining).await;
    wait_for_pd(&mut cluster, "node 4 registered", |state| {
        state.nodes.len() == 4
    })
    .await;
    let client = client(&cluster, &[joining]).await;
    let keys: Vec<String> = (0..100).map(|i| format!("load-{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        client.put(key.clone(), format!("value-{i}")).await.unwrap();
    }
    let dead = NodeId(3);
    cluster.stop_node(2).await;
    let started = Instant::now();
    let state = wait_for_pd(&mut cluster, "replicas of node 3 rebuilt", |state| {
        state.operators.is_empty()
            && state.shard_map.shards.iter().all(|d| {
                d.replica_on(dead).is_none()
                    && d.voters().count() == 3
                    && d.replicas.iter().all(|r| r.role == ReplicaRole::Voter)
            })
    })
    .await;
    println!(
        "repair: node 3 down, replicas rebuilt in {:.1} s (max_down_time 3 s); PD counts {:?}",
        started.elapsed().as_secs_f64(),
        state.replica_counts()
    );
    for (i, key) in keys.iter().enumerate() {
        let value = client.get(key.clone()).await.unwrap();
        assert_eq!(value, Some(Bytes::from(format!("value-{i}"))), "{key}");
    }
    client.close().await;
    cluster.stop_all().await;
}

/// A joining node registers under its configured id (ids need not be contiguous); a node that
/// claims the address of another live node under a different id stops with an error saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_with_another_nodes_address_stops() {
    let mut cluster = Cluster::start(3, 2, &pd_config(false)).await;
    cluster.wait_for_leaders(2, Duration::from_secs(30)).await;
    let addr = common::reserve_addr();
    let path = cluster.write_joining_config(9, addr);
    let config = ringkv_node::NodeConfig::load(&path).unwrap();
    let node = ringkv_node::start(config).await.unwrap();
    wait_for_pd(&mut cluster, "node 9 registered", |state| {
        state
            .nodes
            .get(&NodeId(9))
            .is_some_and(|n| n.state == NodeState::Up)
    })
    .await;
    tokio::time::timeout(WAIT, node.stop())
        .await
        .expect("node 9 stops in time")
        .expect("node 9 stops cleanly");

    // Node 9 is still a member (Up, or Down for a while): its address is not free.
    let path = cluster.write_joining_config(10, addr);
    let config = ringkv_node::NodeConfig::load(&path).unwrap();
    let mut node = ringkv_node::start(config).await.unwrap();
    let result = tokio::time::timeout(WAIT, node.join())
        .await
        .expect("the node stops");
    let error = result
        .expect_err("the node stops with an error")
        .to_string();
    assert!(
        error.contains("cannot register node n10") && error.contains("another live node"),
        "{error}"
    );
    assert!(!cluster.pd_state().await.nodes.contains_key(&NodeId(10)));
    cluster.stop_all().await;
}

/// A learner added while its node's Raft traffic is cut off, reported down by the leader's
/// node and left behind by a group that went quiet, catches up once the traffic flows again,
/// and the move finishes well before PD's operator step timeout. (A learner never campaigns:
/// before the fix the quiet leader never sent it the log, PD never saw it caught up and the
/// move, like the drain of deploy/tests replace.rs under load, waited for the step timeout.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_left_behind_by_a_quiet_group_catches_up() {
    let extra = format!(
        "{}{}",
        common::FAULT_INJECTION,
        pd_config(false).replace(
            "operator_step_timeout_ms = 30000",
            "operator_step_timeout_ms = 600000"
        )
    );
    let mut cluster = Cluster::start(3, 2, &extra).await;
    cluster.wait_for_leaders(2, Duration::from_secs(30)).await;
    let fourth = cluster.add_joining_node().await;
    wait_for_pd(&mut cluster, "node 4 registered", |state| {
        state.nodes.len() == 4
    })
    .await;
    cluster.isolate(fourth).await;
    let shard = ringkv_types::ShardId(1);
    let answer = cluster
        .pd_call(&Command::AddOperator {
            operator: AdminOperator::MoveReplica {
                shard,
                from: NodeId(3),
                to: NodeId(4),
            },
            now_ms: 0,
        })
        .await;
    assert!(matches!(answer, Ok(PdResponse::Operator(_))), "{answer:?}");
    wait_for_pd(&mut cluster, "learner on node 4 in PD's map", |state| {
        state
            .descriptor(shard)
            .and_then(|d| d.replica_on(NodeId(4)))
            .is_some()
    })
    .await;
    // Several election timeouts (500 ms): node 4 is reported down to the shard's leader,
    // whose group has nothing else to do.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        cluster.pd_state().await.operators.contains_key(&shard),
        "the move cannot finish while node 4 is cut off"
    );
    let healed = Instant::now();
    cluster.heal().await;
    let deadline = healed + Duration::from_secs(60);
    loop {
        let state = cluster.pd_state().await;
        let descriptor = state.descriptor(shard).unwrap();
        let done = !state.operators.contains_key(&shard)
            && descriptor
                .replica_on(NodeId(4))
                .is_some_and(|r| r.role == ReplicaRole::Voter)
            && descriptor.replica_on(NodeId(3)).is_none();
        if done {
            println!(
                "move to node 4 finished {:.1} s after the heal",
                healed.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the move is stuck: {:?}, operator {:?}",
            descriptor,
            state.operators.get(&shard)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.stop_all().await;
}
