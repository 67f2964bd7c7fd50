//! End to end with real processes: `ringctl local up` starts three `ringkvd` nodes, the kv
//! commands and `status --json` work against them, a restart reuses the data, and SIGTERM stops
//! everything. Skipped (with a message) when no `ringkvd` binary sits next to `ringctl`, which
//! `cargo test --workspace` builds. Every process is killed on drop; every wait is bounded.
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, reason = "tests: a failure is a test failure")]

mod common;

use common::{Cluster, ringctl, skip_without_ringkvd, test_port};

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
