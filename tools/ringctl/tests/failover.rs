//! Failover seen by `ringctl`, with the real binaries: node 1, the first endpoint of
//! `ringctl.toml`, is killed with SIGKILL, and every command still works (the client learns
//! from a refused liveness probe that node 1 is down, loads the map from node 2 or 3 and routes
//! around node 1). Asserts success only; the timings are measured by
//! `bench/failover-bench.sh`. Every process is killed on drop; every wait is bounded.
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, reason = "tests: a failure is a test failure")]

mod common;

use common::{Cluster, ringctl, skip_without_ringkvd, test_port};
use std::process::Output;

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn every_command_works_with_the_first_endpoint_killed() {
    if skip_without_ringkvd() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster_dir = dir.path().join("cluster");
    let mut cluster = Cluster::start(&cluster_dir, test_port(5));
    let config = cluster_dir.join("ringctl.toml");
    ok(&ringctl(&config, &["kv", "put", "before", "1"]));
    cluster.kill_node(1);
    // Reads and writes of many keys: some shards were led by node 1 and must fail over.
    for i in 0..8 {
        let key = format!("after-{i}");
        ok(&ringctl(&config, &["kv", "put", &key, &i.to_string()]));
        let value = ok(&ringctl(&config, &["kv", "get", &key]));
        assert_eq!(value.trim(), i.to_string(), "{key}");
    }
    assert_eq!(ok(&ringctl(&config, &["kv", "get", "before"])).trim(), "1");
    let nodes = ok(&ringctl(&config, &["nodes", "--json"]));
    assert!(
        nodes.contains("\"id\": 2") || nodes.contains("\"id\":2"),
        "{nodes}"
    );
    ok(&ringctl(&config, &["status"]));
    ok(&ringctl(&config, &["shards"]));
    cluster.stop();
}
