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
