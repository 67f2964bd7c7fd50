//! Real `ringkvd` processes under concurrent clients: a node killed (-9) for longer than
//! `max_down_time_ms` has its replicas rebuilt on the other nodes until every shard is back to
//! three voters, with the data; then a node is drained to zero replicas and removed. The
//! clients' history stays linearizable throughout and no call fails beyond the client's
//! retries. Times are printed (`--nocapture`); nothing asserts on them. `RINGKV_LONG_TESTS=1`
//! runs a larger variant (8 shards, 12 clients, 10 000 preloaded 1 KiB values instead of 4
//! shards, 6 clients and 500 values).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "tests: a failure is a test failure"
)]

mod common;
mod workload;

use common::{Cluster, get, kv};
use ringkv_pd::{Command, NodeState, Response as PdResponse};
use ringkv_types::{
    AdminRequest, AdminResult, KvResult, NodeId, ReadConsistency, ReplicaRole, Request, Response,
    ShardId,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use workload::{KeepLogsOnPanic, Workload, actual_counts, connect, wait_for_pd};

const BULK_VALUE_BYTES: usize = 1024;
/// Short, so that the test waits seconds, not the production half hour.
const MAX_DOWN_TIME_MS: u64 = 3000;

/// Which nodes hold a replica of each shard, from the running nodes' own status.
async fn holders(cluster: &mut Cluster) -> BTreeMap<ShardId, BTreeSet<u64>> {
    let mut holders: BTreeMap<ShardId, BTreeSet<u64>> = BTreeMap::new();
    for index in 0..cluster.nodes.len() {
        if cluster.nodes[index].is_none() {
            continue;
        }
        let Some(status) = cluster.try_status(index).await else {
            continue;
        };
        for replica in status.replicas.iter().filter(|r| r.shard.get() != 0) {
            holders
                .entry(replica.shard)
                .or_default()
                .insert(status.node.get());
        }
    }
    holders
}

/// Client failures: the bound is zero here too. The killed node's calls time out after one
/// attempt (2 s) and the client moves to another replica; a new leader is elected within about
/// a second; the client's 20 s budget covers both with room to spare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_repaired_elsewhere_then_a_drained_node_is_removed() {
    let (shards, clients, bulk) = if workload::long_variant() {
        (8, 12, 10_000)
    } else {
        (4, 6, 500)
    };
    let config = workload::pd_config(MAX_DOWN_TIME_MS);
    let mut cluster = Cluster::start_with(3, shards, &config, true).await;
    let _logs = KeepLogsOnPanic::new(&cluster, "repair");
    cluster
        .wait_for_leaders(shards, Duration::from_secs(30))
        .await;
    // Two spare nodes (balancing is off, so they hold nothing until repair or drain).
    workload::join_one(&mut cluster).await;
    workload::join_one(&mut cluster).await;
    let admin = connect(&cluster).await;
    workload::preload(&admin, bulk, BULK_VALUE_BYTES).await;
    let load = Workload::start(&cluster, clients, 8).await;
    load.wait_for_progress(100).await;

    // Kill -9 node 3 (a placement-driver host too: PD keeps a majority on nodes 1 and 2).
    let dead = NodeId(3);
    let before = holders(&mut cluster).await;
    let had_replica: Vec<ShardId> = before
        .iter()
        .filter(|(_, nodes)| nodes.contains(&dead.get()))
        .map(|(shard, _)| *shard)
        .collect();
    assert!(!had_replica.is_empty(), "node 3 holds replicas: {before:?}");
    println!("before the kill: holders per shard {before:?}");
    cluster.kill_node(2);
    let killed = Instant::now();
    let state = wait_for_pd(&mut cluster, "replicas of node 3 rebuilt", |state| {
        state.operators.is_empty()
            && state.shard_map.shards.iter().all(|d| {
                d.replica_on(dead).is_none()
                    && d.voters().count() == 3
                    && d.replicas.iter().all(|r| r.role == ReplicaRole::Voter)
            })
    })
    .await;
    assert_ne!(state.nodes[&dead].state, NodeState::Up);
    // The live nodes hold what PD says: three replicas of every shard, none lost.
    let deadline = Instant::now() + workload::WAIT;
    let after = loop {
        let after = holders(&mut cluster).await;
        let expected: BTreeMap<ShardId, BTreeSet<u64>> = state
            .shard_map
            .shards
            .iter()
            .map(|d| (d.id, d.replicas.iter().map(|r| r.node.get()).collect()))
            .collect();
        if after == expected {
            break after;
        }
        assert!(
            Instant::now() < deadline,
            "nodes hold {after:?}, PD says {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "repair: node 3 killed, every shard back to 3 voters on live nodes in {:.1} s \
         (max_down_time {MAX_DOWN_TIME_MS} ms): holders per shard {after:?}",
        killed.elapsed().as_secs_f64()
    );
    for shard in &had_replica {
        assert_eq!(after[shard].len(), 3, "{shard}");
        assert!(!after[shard].contains(&dead.get()), "{shard}");
    }
    // The rebuilt replicas hold the data: a stale read on each new replica returns a preloaded
    // key of its shard (bounded wait: it may still be applying the snapshot's tail).
    for shard in &had_replica {
        let descriptor = state.descriptor(*shard).unwrap().clone();
        let key = (0..bulk)
            .map(|i| format!("bulk-{i}"))
            .find(|key| descriptor.contains_key(key.as_bytes()))
            .expect("every shard holds some of the preloaded keys");
        for node in after[shard].difference(&before[shard]) {
            let index = *node as usize - 1;
            let request = kv(&descriptor, None, get(&key, ReadConsistency::Stale));
            let deadline = Instant::now() + workload::WAIT;
            loop {
                match cluster.try_call(index, &request).await {
                    Some(Response::Kv(KvResult::Value {
                        value: Some(value), ..
                    })) => {
                        assert!(value.starts_with(format!("{key}:").as_bytes()), "{key}");
                        break;
                    }
                    other => assert!(
                        Instant::now() < deadline,
                        "{key} on the new replica of {shard} on node {node}: {other:?}"
                    ),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    // Drain node 4 (it received replicas during the repair) to zero, then remove it. (PD
    // accepts `Removed` for a node with replicas, as the way to give up on a dead node;
    // `ringctl remove-node` refuses it, see the ringctl tests.)
    let drained = NodeId(4);
    let (replicas, _) = actual_counts(&mut cluster).await;
    assert!(
        replicas.get(&drained.get()).copied().unwrap_or(0) > 0,
        "node 4 holds replicas after the repair: {replicas:?}"
    );
    let draining = Instant::now();
    let answer = admin
        .pd_call(Command::SetNodeState {
            node: drained,
            state: NodeState::Draining,
            now_ms: 0,
        })
        .await
        .expect("PD marks node 4 draining");
    assert_eq!(answer, PdResponse::Done);
    wait_for_pd(&mut cluster, "node 4 drained", |state| {
        state.operators.is_empty()
            && state.shard_map.shards.iter().all(|d| {
                d.replica_on(drained).is_none()
                    && d.voters().count() == 3
                    && d.replicas.iter().all(|r| r.role == ReplicaRole::Voter)
            })
    })
    .await;
    let deadline = Instant::now() + workload::WAIT;
    loop {
        let (replicas, _) = actual_counts(&mut cluster).await;
        if replicas.get(&drained.get()) == Some(&0) {
            println!(
                "drain: node 4 holds zero replicas after {:.1} s; replicas per node {replicas:?}",
                draining.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(Instant::now() < deadline, "node 4 still holds {replicas:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let answer = admin
        .pd_call(Command::SetNodeState {
            node: drained,
            state: NodeState::Removed,
            now_ms: 0,
        })
        .await
        .expect("PD removes the drained node");
    assert_eq!(answer, PdResponse::Done);
    let state = cluster.pd_state().await;
    assert_eq!(state.nodes[&drained].state, NodeState::Removed);
    match cluster
        .call(0, Request::Admin(AdminRequest::GetNodes))
        .await
    {
        Response::Admin(AdminResult::Nodes(nodes)) => assert!(
            nodes.iter().all(|n| n.node != drained),
            "GetNodes still lists the removed node: {nodes:?}"
        ),
        other => panic!("unexpected nodes answer {other:?}"),
    }
    // The removed node learns it from its next heartbeat and stops (exit 1) instead of serving.
    let deadline = Instant::now() + workload::WAIT;
    loop {
        let exited = match cluster.nodes[3].as_mut() {
            Some(common::Running::Process(child)) => child.0.try_wait().expect("try_wait"),
            _ => panic!("node 4 runs as a process"),
        };
        if let Some(status) = exited {
            assert!(
                !status.success(),
                "a removed node exits with an error: {status}"
            );
            cluster.nodes[3] = None;
            // It left a marker in its data dir and refuses to start again.
            let config = cluster.config_paths[3].clone();
            let marker = config.parent().unwrap().join("node-4").join("REMOVED");
            assert!(marker.is_file(), "{} written", marker.display());
            let restart = std::process::Command::new(env!("CARGO_BIN_EXE_ringkvd"))
                .arg("--config")
                .arg(&config)
                .output()
                .expect("ringkvd runs");
            let stderr = String::from_utf8_lossy(&restart.stderr);
            assert!(
                !restart.status.success() && stderr.contains("was removed from the cluster"),
                "a removed node refuses to start: {stderr}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the removed node 4 keeps running"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    load.wait_for_progress(100).await;

    let (tally, _) = load.finish(&admin).await;
    println!(
        "clients: {} calls completed, {} unknown writes, {} failed reads",
        tally.completed, tally.unknown_writes, tally.failed_reads
    );
    assert_eq!(tally.failures(), 0, "client calls failed beyond retries");
    workload::check_preloaded(&admin, bulk, BULK_VALUE_BYTES).await;
    admin.close().await;
    cluster.stop_all().await;
}
