//! Real `ringkvd` processes: a node whose data dir was lost must not rejoin as itself. Node 3
//! (a placement-driver host, so the bootstrap path) is killed, its data dir emptied, and it is
//! restarted: it must exit at once with the store mismatch and the replacement procedure, and
//! must never have rejoined its groups. Then the documented replacement (docs/deploy.md): a new
//! node joins under a new id, node 3 is drained (what `ringctl drain-node 3` does) and removed
//! (`ringctl remove-node 3`); every key is served with the replacement holding node 3's
//! replicas. Node 3 started again after its removal is refused as removed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "tests: a failure is a test failure"
)]

mod common;
mod workload;

use common::Cluster;
use ringkv_pd::{Command, NodeState};
use ringkv_types::NodeId;
use std::time::Duration;
use workload::{KeepLogsOnPanic, connect, wait_for_pd};

const KEYS: u64 = 300;
const VALUE_BYTES: usize = 256;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_data_is_refused_then_replaced() {
    let shards = 4;
    // Repair after a long time only: the replacement is the operator's procedure here.
    let config = workload::pd_config(600_000);
    let mut cluster = Cluster::start_with(3, shards, &config, true).await;
    let _logs = KeepLogsOnPanic::new(&cluster, "replace");
    cluster
        .wait_for_leaders(shards, Duration::from_secs(30))
        .await;
    let client = connect(&cluster).await;
    workload::preload(&client, KEYS, VALUE_BYTES).await;
    // Every node reported its data dir's incarnation (agents do at start, once PD leads).
    let state = wait_for_pd(&mut cluster, "every node's store is recorded", |state| {
        state.store_incarnations.len() == 3
    })
    .await;
    let recorded = state.store_incarnations[&NodeId(3)];

    // Node 3 loses its disk: killed, its data dir emptied, started again.
    cluster.kill_node(2);
    let data_dir = cluster.dir.path().join("node-3");
    std::fs::remove_dir_all(&data_dir).unwrap();
    std::fs::create_dir_all(&data_dir).unwrap();
    cluster.start_node(2).await;
    let (code, log) = cluster
        .wait_for_exit(
            2,
            "with an emptied data dir kept running: it rejoined as itself",
        )
        .await;
    assert_ne!(code, Some(0), "refused with an error exit; log:\n{log}");
    assert!(
        log.contains("refusing to start node 3")
            && log.contains(&format!("recorded store incarnation {recorded:016x}"))
            && log.contains("must not rejoin as node 3")
            && log.contains("ringctl drain-node 3")
            && log.contains("ringctl remove-node 3"),
        "the refusal names the mismatch and the replacement procedure; log:\n{log}"
    );
    // It never ran a group: nothing but its identity and an empty store in the dir, and PD
    // still has the old incarnation.
    let state = cluster.pd_state().await;
    assert_eq!(state.store_incarnations[&NodeId(3)], recorded);
    assert!(
        !log.contains("opened the store"),
        "the refused node opened its groups; log:\n{log}"
    );

    // The replacement: a new node under a new id joins, node 3 is drained and removed.
    let replacement = workload::join_one(&mut cluster).await;
    let new_id = NodeId(replacement as u64 + 1);
    assert_eq!(new_id, NodeId(4));
    let answer = cluster
        .pd_call(&Command::SetNodeState {
            node: NodeId(3),
            state: NodeState::Draining,
            now_ms: 0,
        })
        .await;
    assert!(answer.is_ok(), "drain node 3: {answer:?}");
    wait_for_pd(&mut cluster, "node 3 holds no replica", |state| {
        state.replica_counts().get(&NodeId(3)).copied().unwrap_or(0) == 0
            && state.operators.is_empty()
    })
    .await;
    let answer = cluster
        .pd_call(&Command::SetNodeState {
            node: NodeId(3),
            state: NodeState::Removed,
            now_ms: 0,
        })
        .await;
    assert!(answer.is_ok(), "remove node 3: {answer:?}");
    let state = cluster.pd_state().await;
    assert_eq!(
        state.replica_counts().get(&new_id).copied(),
        Some(shards),
        "the replacement holds a replica of every shard"
    );
    assert!(state.store_incarnations.contains_key(&new_id));

    // Every key is served, by nodes 1, 2 and the replacement.
    workload::check_preloaded(&client, KEYS, VALUE_BYTES).await;
    client.put("after-replace", "yes").await.unwrap();
    assert_eq!(
        client.get("after-replace").await.unwrap().as_deref(),
        Some(&b"yes"[..])
    );

    // The old node, started again with its empty dir, is told it was removed.
    std::fs::remove_dir_all(&data_dir).unwrap();
    std::fs::create_dir_all(&data_dir).unwrap();
    cluster.start_node(2).await;
    let (code, log) = cluster
        .wait_for_exit(
            2,
            "with an emptied data dir kept running: it rejoined as itself",
        )
        .await;
    assert_ne!(code, Some(0), "log:\n{log}");
    assert!(log.contains("node n3 was removed"), "log:\n{log}");
    cluster.stop_all().await;
}
