//! End to end with real processes only: `ringctl local up` starts three `ringkvd` nodes,
//! `ringctl local add-node` starts a fourth that joins, `ringctl rebalance --json` follows the
//! placement driver until replica and leader counts are balanced, and `nodes --json` /
//! `shards --json` parse and agree with it; `remove-node` refuses a node that still holds
//! replicas, `drain-node` empties it and `remove-node` then succeeds; the data written before
//! stays readable. Default PD timing (1 s heartbeats and
//! ticks), as a developer's `local up` runs. Skipped (with a message) when no `ringkvd` sits
//! next to `ringctl` outside CI. Every process is stopped on drop; every wait is bounded.
#![allow(missing_docs)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure is a test failure"
)]

mod common;

use common::{Cluster, Foreground, START_TIMEOUT, ringctl, skip_without_ringkvd, test_port};
use serde_json::Value;
use std::process::Output;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;

fn json(output: &Output) -> Value {
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {output:?}"))
}

fn spread(counts: &serde_json::Map<String, Value>) -> u64 {
    let values: Vec<u64> = counts.values().map(|v| v.as_u64().unwrap()).collect();
    values.iter().max().unwrap() - values.iter().min().unwrap()
}

#[test]
fn local_up_add_node_and_rebalance_with_the_real_binaries() {
    if skip_without_ringkvd() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster_dir = dir.path().join("cluster");
    let config = cluster_dir.join("ringctl.toml");
    let up = Cluster::start(&cluster_dir, test_port(0));
    let keys: Vec<String> = (0..20).map(|i| format!("grow-{i}")).collect();
    for key in &keys {
        let put = ringctl(&config, &["kv", "put", key, &format!("v-{key}")]);
        assert!(put.status.success(), "{put:?}");
    }
    let before = json(&ringctl(&config, &["nodes", "--json"]));
    assert_eq!(before["nodes"].as_array().unwrap().len(), 3, "{before}");

    let started = Instant::now();
    let mut added = Foreground::spawn("add-node", &["local", "add-node"], &cluster_dir);
    added.wait_for_line("is Up in the placement driver", START_TIMEOUT);
    let rebalance = ringctl(
        &config,
        &["rebalance", "--json", "--timeout", "240", "--interval", "1"],
    );
    assert!(rebalance.status.success(), "{rebalance:?}");
    let stdout = String::from_utf8(rebalance.stdout.clone()).unwrap();
    let last: Value = serde_json::from_str(stdout.lines().last().expect("rebalance printed"))
        .expect("every rebalance line is JSON");
    assert_eq!(last["result"], "balanced", "{stdout}");
    println!(
        "rebalance with ringctl: 3 -> 4 nodes balanced {:.1} s after add-node started: {last}",
        started.elapsed().as_secs_f64()
    );

    // `nodes --json`: four Up nodes, the new one holding replicas, counts within one.
    let nodes = json(&ringctl(&config, &["nodes", "--json"]));
    let list = nodes["nodes"].as_array().unwrap();
    assert_eq!(list.len(), 4, "{nodes}");
    assert!(list.iter().all(|n| n["state"] == "Up"), "{nodes}");
    let replicas: Vec<u64> = list
        .iter()
        .map(|n| n["replicas"].as_u64().unwrap())
        .collect();
    assert_eq!(replicas.iter().sum::<u64>(), 3 * SHARDS as u64, "{nodes}");
    assert!(
        replicas.iter().max().unwrap() - replicas.iter().min().unwrap() <= 1,
        "{nodes}"
    );
    let leaders: Vec<u64> = list
        .iter()
        .map(|n| n["leaders"].as_u64().unwrap())
        .collect();
    assert!(
        leaders.iter().max().unwrap() - leaders.iter().min().unwrap() <= 1,
        "{nodes}"
    );
    assert!(spread(last["replicas"].as_object().unwrap()) <= 1, "{last}");
    assert!(spread(last["leaders"].as_object().unwrap()) <= 1, "{last}");

    // `shards --json`: every shard with three voters, a leader and no operator in flight.
    let shards = json(&ringctl(&config, &["shards", "--json"]));
    let list = shards["shards"].as_array().unwrap();
    assert_eq!(list.len(), SHARDS, "{shards}");
    for shard in list {
        let replicas = shard["replicas"].as_array().unwrap();
        assert_eq!(replicas.len(), 3, "{shard}");
        assert!(replicas.iter().all(|r| r["role"] == "voter"), "{shard}");
        assert!(shard["leader"].is_u64(), "{shard}");
        assert!(shard["operator"].is_null(), "{shard}");
    }

    // A node that holds replicas cannot be removed: drain it first.
    let remove = ringctl(&config, &["remove-node", "4"]);
    assert_eq!(remove.status.code(), Some(5), "{remove:?}");
    assert!(
        String::from_utf8_lossy(&remove.stderr).contains("drain it first"),
        "{remove:?}"
    );

    // Drain node 4 back to zero replicas, then remove it.
    let draining = Instant::now();
    let drain = ringctl(
        &config,
        &["drain-node", "4", "--timeout", "240", "--interval", "1"],
    );
    assert!(drain.status.success(), "{drain:?}");
    assert!(
        String::from_utf8_lossy(&drain.stdout).contains("node 4 holds no replicas"),
        "{drain:?}"
    );
    println!(
        "drain-node 4 finished in {:.1} s",
        draining.elapsed().as_secs_f64()
    );
    let remove = ringctl(&config, &["remove-node", "4"]);
    assert!(remove.status.success(), "{remove:?}");
    let nodes = json(&ringctl(&config, &["nodes", "--json"]));
    let list = nodes["nodes"].as_array().unwrap();
    let removed = list.iter().find(|n| n["id"] == 4).expect("node 4 listed");
    assert_eq!(removed["state"], "Removed", "{nodes}");
    assert_eq!(removed["replicas"], 0, "{nodes}");
    let replicas: u64 = list.iter().map(|n| n["replicas"].as_u64().unwrap()).sum();
    assert_eq!(replicas, 3 * SHARDS as u64, "{nodes}");

    for key in &keys {
        let get = ringctl(&config, &["kv", "get", key]);
        assert_eq!(
            String::from_utf8_lossy(&get.stdout),
            format!("v-{key}\n"),
            "{get:?}"
        );
    }
    // The removed node learns it at its next heartbeat and stops (exit 1), and with it the
    // `add-node` that ran it in the foreground; its data dir keeps a `REMOVED` marker.
    added.expect_failed_exit(Duration::from_secs(60));
    assert!(
        cluster_dir
            .join("node-4")
            .join("data")
            .join("REMOVED")
            .is_file()
    );
    up.stop();
}
