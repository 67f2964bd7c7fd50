//! The compose cluster on real containers (`deploy/compose.yaml`, image `ringkv:dev`).
//! Skipped without Docker (failed under `CI=true`); build the image first:
//! `deploy/docker/build-local.sh`.

use ringkv_deploy_tests::{Project, docker_ready};
use std::time::{Duration, Instant};

/// Up: every node healthy and every shard led; a key written over HTTPS on node 1 is read on
/// node 3; `ringctl` inside a container works with no flags. Then `docker kill` of node 1:
/// writes through the other nodes resume; node 1 restarts (`docker start`, a new IP is
/// possible: peers dial its service name) and serves the keys written while it was down.
/// Then `down` + `up` with the volumes kept: every acknowledged write is back.
#[test]
fn compose_cluster_serves_survives_a_kill_and_a_full_restart() {
    if !docker_ready() {
        return;
    }
    let project = Project::new("a");
    let started = Instant::now();
    project.up();
    eprintln!("cluster up and led in {:?}", started.elapsed());

    let (status, body) = project.curl(1, "PUT", "/v1/kv/hello", Some("world"));
    assert!(
        (200..300).contains(&status),
        "PUT on node 1: {status} {body}"
    );
    let (status, body) = project.curl(3, "GET", "/v1/kv/hello", None);
    assert_eq!((status, body.as_str()), (200, "world"), "GET on node 3");
    let output = project.ringctl(2, &["kv", "get", "hello"]);
    assert!(output.status.success(), "ringctl kv get: {output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "world");
    assert!(project.ringctl(1, &["status"]).status.success());

    // SIGKILL node 1, write through node 2 while it is down.
    project.docker_node("kill", 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let key = format!("during-kill-{i}");
        loop {
            let output = project.ringctl(2, &["kv", "put", &key, &format!("v{i}")]);
            if output.status.success() {
                acknowledged.push(key);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "writes did not resume after the kill: {output:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    project.docker_node("start", 1);
    project.wait_healthy(1);
    project.wait_all_led();
    for (i, key) in acknowledged.iter().enumerate() {
        let (status, body) = project.curl(1, "GET", &format!("/v1/kv/{key}"), None);
        assert_eq!(
            (status, body.as_str()),
            (200, format!("v{i}").as_str()),
            "{key} on node 1"
        );
    }

    // Down and up again with the volumes kept.
    project.compose_ok(&["down", "-t", "10"]);
    project.up();
    for (i, key) in acknowledged.iter().enumerate() {
        let (status, body) = project.curl(3, "GET", &format!("/v1/kv/{key}"), None);
        assert_eq!(
            (status, body.as_str()),
            (200, format!("v{i}").as_str()),
            "{key} after up"
        );
    }
    let (status, body) = project.curl(2, "GET", "/v1/kv/hello", None);
    assert_eq!((status, body.as_str()), (200, "world"));
    eprintln!("whole test in {:?}", started.elapsed());
}

/// The node that leads the placement driver (group 0), from `ringctl status -w json` on node 1.
fn pd_leader(project: &Project) -> u8 {
    let output = project.ringctl(1, &["status", "-w", "json"]);
    assert!(output.status.success(), "ringctl status: {output:?}");
    let status: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("status is not JSON ({e}): {output:?}"));
    let leader = status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|node| node["replicas"].as_array().into_iter().flatten())
        .find(|replica| replica["shard"] == 0 && replica["leader"].is_u64())
        .and_then(|replica| replica["leader"].as_u64())
        .unwrap_or_else(|| panic!("no PD leader in {status}"));
    u8::try_from(leader).unwrap_or_else(|e| panic!("PD leader {leader}: {e}"))
}

/// A real network partition of the placement driver's leader: its node is disconnected from
/// the compose network. A write sent to it from inside its container fails as unavailable or
/// timed out (exit code 4) and is never applied; the majority elects leaders for the shards
/// (and the PD group) the cut node led, takes writes on every shard and answers placement
/// commands. After `docker network connect` (the node may get a new IP; peers dial its name)
/// the node catches up: its stale reads return every write the majority acknowledged, and the
/// refused write is absent everywhere.
#[test]
fn a_disconnected_pd_leader_cannot_write_and_catches_up_after_reconnecting() {
    if !docker_ready() {
        return;
    }
    let project = Project::new("p");
    project.up();
    let cut = pd_leader(&project);
    let majority = cut % 3 + 1;
    eprintln!("isolating node {cut} (PD leader); writing through node {majority}");

    project.disconnect(cut);
    // Inside the isolated container: its client reaches only its own node, which cannot commit.
    let refused = project.ringctl(cut, &["kv", "put", "refused-while-cut", "x"]);
    assert_eq!(
        refused.status.code(),
        Some(4),
        "a write on the isolated node must fail as unavailable/timeout: {refused:?}"
    );

    // The majority keeps writing, on every shard (keys spread over the ring)...
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut acknowledged = Vec::new();
    for i in 0..24 {
        let key = format!("majority-{i}");
        loop {
            let path = format!("/v1/kv/{key}");
            let (status, body) = project.curl(majority, "PUT", &path, Some("m"));
            if (200..300).contains(&status) {
                acknowledged.push(key);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the majority did not take {key}: {status} {body}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    // ...and a new PD leader answers placement commands.
    loop {
        let nodes = project.ringctl(majority, &["nodes", "-w", "json"]);
        if nodes.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no PD leader among the majority: {nodes:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    project.reconnect(cut);
    project.wait_healthy(cut);
    project.wait_all_led();
    // The cut node's own replicas catch up: its stale reads see every acknowledged write.
    let deadline = Instant::now() + Duration::from_secs(60);
    for key in &acknowledged {
        loop {
            let path = format!("/v1/kv/{key}?consistency=stale");
            let (status, body) = project.curl(cut, "GET", &path, None);
            if (status, body.as_str()) == (200, "m") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {cut} did not catch up on {key}: {status} {body}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    for n in 1..=3 {
        let (status, body) = project.curl(n, "GET", "/v1/kv/refused-while-cut", None);
        assert_eq!(status, 404, "the refused write on node {n}: {body}");
    }
}
