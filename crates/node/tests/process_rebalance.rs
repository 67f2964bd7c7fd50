//! Real `ringkvd` processes: a 3-node cluster grows to 5 under concurrent clients and the
//! placement driver rebalances it, then splits a shard, all while the clients' history stays
//! linearizable and no client call fails beyond the client's own retries.
//!
//! The before/after replica and leader counts per node and the times taken are printed (run
//! with `--nocapture`) for the note. Nothing asserts on timing. `RINGKV_LONG_TESTS=1`
//! runs a larger variant (16 shards, 16 clients, 32 keys, 20 000 preloaded 1 KiB values instead
//! of 1 000).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "tests: a failure is a test failure"
)]

mod common;
mod workload;

use common::{Cluster, get, kv};
use ringkv_pd::{AdminOperator, Command, NodeState, Response as PdResponse, SchedulerKind};
use ringkv_types::{KvResult, ReadConsistency, Response, WireError, ring};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use workload::{
    KeepLogsOnPanic, Workload, actual_counts, connect, decode, key_name, pd_config, pd_leaders,
    pd_replicas, spread, wait_for_pd,
};

/// Size of each preloaded value.
const BULK_VALUE_BYTES: usize = 1024;

/// Grow 3 → 5 under load, rebalance replicas and leaders, then split a shard under load.
///
/// Client failures: the bound is zero. No node dies here, so every failure would be a request
/// that a move, a leader transfer or a split made the client give up on: the client retries
/// reroutes with the same write sequence (exactly once), and its 20 s budget is far longer
/// than any single placement step. A write whose outcome is unknown would also weaken the
/// linearizability check, so none is tolerated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_grows_from_three_to_five_nodes_and_splits_under_linearizable_load() {
    let long = workload::long_variant();
    // Bulk keys (not touched by the clients) make the moved replicas' snapshots carry data.
    let (shards, clients, keys, bulk) = if long {
        (16, 16, 32, 20_000)
    } else {
        (8, 12, 16, 1_000)
    };
    let mut cluster = Cluster::start_with(3, shards, &pd_config(60_000), true).await;
    let _logs = KeepLogsOnPanic::new(&cluster, "rebalance");
    cluster
        .wait_for_leaders(shards, Duration::from_secs(30))
        .await;
    let admin = connect(&cluster).await;
    let preloading = Instant::now();
    workload::preload(&admin, bulk, BULK_VALUE_BYTES).await;
    println!(
        "preloaded {bulk} keys of {BULK_VALUE_BYTES} bytes in {:.1} s",
        preloading.elapsed().as_secs_f64()
    );
    let load = Workload::start(&cluster, clients, keys).await;
    load.wait_for_progress(200).await;

    let (replicas, leaders) = actual_counts(&mut cluster).await;
    println!("before: replicas per node {replicas:?}, leaders per node {leaders:?}");
    let started = Instant::now();
    let fourth = workload::join_one(&mut cluster).await;
    let fifth = workload::join_one(&mut cluster).await;
    wait_for_pd(&mut cluster, "nodes 4 and 5 registered and up", |state| {
        state.nodes.len() == 5 && state.nodes.values().all(|n| n.state == NodeState::Up)
    })
    .await;
    println!(
        "nodes {} and {} joined in {:.1} s",
        fourth + 1,
        fifth + 1,
        started.elapsed().as_secs_f64()
    );

    let balancing = Instant::now();
    let operations_before = load.progress.load(Ordering::Relaxed);
    for scheduler in [
        SchedulerKind::BalanceReplicas,
        SchedulerKind::BalanceLeaders,
    ] {
        let answer = admin
            .pd_call(Command::SetScheduler {
                scheduler,
                enabled: true,
            })
            .await
            .expect("PD turns the balancing scheduler on");
        assert_eq!(answer, PdResponse::Done, "{scheduler:?}");
    }
    let state = wait_for_pd(&mut cluster, "replicas and leaders balanced", |state| {
        let replicas = pd_replicas(state);
        replicas.len() == 5
            && spread(&replicas) <= 1
            && spread(&pd_leaders(state)) <= 1
            && state.operators.is_empty()
    })
    .await;
    // The nodes agree with PD once removed replicas are deleted and leadership settled.
    let deadline = Instant::now() + workload::WAIT;
    let (replicas, leaders) = loop {
        let (replicas, leaders) = actual_counts(&mut cluster).await;
        if replicas == pd_replicas(&state) && leaders.len() == 5 && spread(&leaders) <= 1 {
            break (replicas, leaders);
        }
        assert!(
            Instant::now() < deadline,
            "nodes hold {replicas:?} (leaders {leaders:?}), PD says {:?}",
            pd_replicas(&state)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "after: replicas per node {replicas:?}, leaders per node {leaders:?}; balanced {:.1} s \
         after the schedulers were switched on ({:.1} s after node 4 started); operators: {} \
         finished, {} cancelled; {} client calls completed meanwhile",
        balancing.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64(),
        state.operator_counts.finished,
        state.operator_counts.cancelled,
        load.progress.load(Ordering::Relaxed) - operations_before
    );
    assert_eq!(
        state.operator_counts.cancelled, 0,
        "an operator was cancelled"
    );
    load.wait_for_progress(200).await;

    // Split, under the same load, a shard holding at least two of the workload's keys, between
    // them, so both halves hold keys the clients use.
    let mut positions: Vec<(u64, u8)> = (0..keys)
        .map(|key| (ring::position(key_name(key).as_bytes()), key))
        .collect();
    positions.sort_unstable();
    let (parent, at) = state
        .shard_map
        .shards
        .iter()
        .find_map(|descriptor| {
            let inside: Vec<u64> = positions
                .iter()
                .map(|(position, _)| *position)
                .filter(|position| descriptor.arc.contains(*position))
                .collect();
            let at = *inside.get(1)?;
            (at > inside[0]).then(|| (descriptor.clone(), at))
        })
        .expect("some shard holds two workload keys (more keys than shards)");
    let splitting = Instant::now();
    let answer = admin
        .pd_call(Command::AddOperator {
            operator: AdminOperator::SplitShard {
                shard: parent.id,
                at: Some(at),
            },
            now_ms: 0,
        })
        .await
        .expect("PD accepts the split");
    assert!(matches!(answer, PdResponse::Operator(_)), "{answer:?}");
    let state = wait_for_pd(&mut cluster, "split recorded", |state| {
        state.shard_map.shards.len() as u64 == shards + 1
            && state.operators.is_empty()
            && state
                .descriptor(parent.id)
                .is_some_and(|d| d.arc.end == Some(at))
    })
    .await;
    let left = state.descriptor(parent.id).unwrap().clone();
    let right = state
        .shard_map
        .shards
        .iter()
        .find(|d| d.arc.start == at)
        .expect("a shard starts where the split cut")
        .clone();
    assert_eq!(right.arc.end, parent.arc.end);
    println!(
        "split {} at {at:#x} into {} and {} in {:.1} s",
        parent.id,
        left.id,
        right.id,
        splitting.elapsed().as_secs_f64()
    );
    // The clients keep working across the split (their maps go stale and are refreshed).
    load.wait_for_progress(400).await;

    let (tally, finals) = load.finish(&admin).await;
    println!(
        "clients: {} calls completed, {} unknown writes, {} failed reads",
        tally.completed, tally.unknown_writes, tally.failed_reads
    );
    assert_eq!(tally.failures(), 0, "client calls failed beyond retries");
    workload::check_preloaded(&admin, bulk, BULK_VALUE_BYTES).await;

    // Both halves serve their keys: a linearizable read sent straight to each half's leader,
    // with the half's descriptor, returns what the clients' history ended with.
    let mut served = [0, 0];
    for (position, key) in positions {
        let (half, descriptor) = if left.arc.contains(position) {
            (0, &left)
        } else if right.arc.contains(position) {
            (1, &right)
        } else {
            continue;
        };
        let name = key_name(key);
        // The balancing schedulers may have moved the half since (a newer `conf_ver`): follow
        // the descriptor the replica answers with, as long as the arc is the half's.
        let mut descriptor = descriptor.clone();
        let deadline = Instant::now() + workload::WAIT;
        let value = loop {
            let leader = cluster.leader_of(descriptor.id).await;
            let request = kv(&descriptor, None, get(&name, ReadConsistency::Linearizable));
            match cluster.try_call(leader, &request).await {
                Some(Response::Kv(KvResult::Value { value, .. })) => break decode(value),
                Some(Response::Error(WireError::EpochMismatch {
                    descriptor: current,
                })) if current.arc == descriptor.arc => descriptor = current,
                other => assert!(
                    Instant::now() < deadline,
                    "{name} on {}: {other:?}",
                    descriptor.id
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(value, finals[&key], "{name} on {}", descriptor.id);
        served[half] += 1;
    }
    assert!(
        served[0] > 0 && served[1] > 0,
        "keys on both halves: {served:?}"
    );
    admin.close().await;
    cluster.stop_all().await;
}
