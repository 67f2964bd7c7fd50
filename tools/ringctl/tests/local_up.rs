//! End to end with real processes: `ringctl local up` starts three `ringkvd` nodes, the kv
//! commands and `status --json` work against them, a restart reuses the data, and SIGTERM stops
//! everything. Skipped (with a message) when no `ringkvd` binary sits next to `ringctl`, which
//! `cargo test --workspace` builds. Every process is killed on drop; every wait is bounded.
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, reason = "tests: a failure is a test failure")]

mod common;

use common::{Cluster, process_gone, ringctl, skip_without_ringkvd, test_port};
use std::time::{Duration, Instant};

#[test]
fn local_up_serves_kv_and_status_and_restarts_with_its_data() {
    if skip_without_ringkvd() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster_dir = dir.path().join("cluster");
    let config = cluster_dir.join("ringctl.toml");
    let port = test_port(0);

    let cluster = Cluster::start(&cluster_dir, port);
    let put = ringctl(&config, &["kv", "put", "hello", "world"]);
    assert!(put.status.success(), "{put:?}");
    let get = ringctl(&config, &["kv", "get", "hello"]);
    assert!(get.status.success(), "{get:?}");
    assert_eq!(get.stdout, b"world\n");
    let missing = ringctl(&config, &["kv", "get", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
    let cas = ringctl(
        &config,
        &["kv", "cas", "hello", "--expected", "nope", "--new", "x"],
    );
    assert_eq!(cas.status.code(), Some(1), "{cas:?}");
    let status = ringctl(&config, &["status", "--json"]);
    assert!(status.status.success(), "{status:?}");
    let document: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let shards = document["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 17, "16 data shards and the placement driver");
    assert!(shards.iter().all(|shard| shard["leader"].is_u64()));
    cluster.stop();

    // Same directory: certificates, configs and data are reused.
    let cluster = Cluster::start(&cluster_dir, port);
    let get = ringctl(&config, &["kv", "get", "hello"]);
    assert_eq!(get.stdout, b"world\n", "{get:?}");
    cluster.stop();
}

/// `ringctl local up` killed with SIGKILL (so neither its signal handler nor `kill_on_drop`
/// runs) must not leave its nodes running: they get the parent-death signal.
#[test]
fn a_killed_local_up_takes_its_nodes_with_it() {
    if skip_without_ringkvd() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(&dir.path().join("cluster"), test_port(1));
    let pids: Vec<u32> = cluster.pids.values().copied().collect();
    assert_eq!(pids.len(), 3, "{:?}", cluster.pids);
    cluster.kill_ringctl();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pids.iter().all(|pid| process_gone(*pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let orphans: Vec<u32> = pids.into_iter().filter(|pid| !process_gone(*pid)).collect();
    for pid in &orphans {
        // Clean up before failing: the test must not leave processes behind.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    assert!(
        orphans.is_empty(),
        "nodes {orphans:?} outlived the killed `ringctl local up`"
    );
}
