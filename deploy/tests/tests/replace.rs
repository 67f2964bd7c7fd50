//! A node's volume replaced by an empty one, on real containers (`deploy/compose.yaml`, image
//! `ringkv:dev`): the node must not rejoin as its old member; then the documented replacement
//! (docs/deploy.md, "Replacing a node that lost its data") works. Skipped without Docker
//! (failed under `CI=true`); build the image first: `deploy/docker/build-local.sh`.

use ringkv_deploy_tests::{Project, docker_ready, image};
use std::process::Command;
use std::time::{Duration, Instant};

/// A container started with `docker run` next to a compose project, and its volume: both
/// removed when dropped. Declare it after the project so it goes first (the network cannot be
/// removed while a container is attached).
struct RunGuard {
    container: String,
    volume: String,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.container])
            .output();
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &self.volume])
            .output();
    }
}

/// `docker inspect -f FORMAT CONTAINER`, trimmed.
fn inspect(container: &str, format: &str) -> String {
    let output = Command::new("docker")
        .args(["inspect", "-f", format, container])
        .output()
        .unwrap_or_else(|e| panic!("docker inspect: {e}"));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Waits (bounded) until `container` has exited; returns its exit code.
fn wait_exited(container: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if inspect(container, "{{.State.Status}}") == "exited" {
            return inspect(container, "{{.State.ExitCode}}")
                .parse()
                .unwrap_or(-1);
        }
        assert!(
            Instant::now() < deadline,
            "{container} with an empty volume kept running: it rejoined as its old member"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Node 3's volume is deleted and recreated empty; node 3 started on it exits with the store
/// mismatch and the procedure. The replacement: certificate for node 4 (same CA, in the certs
/// volume), node 4 started with `join` on the compose network, `ringctl drain-node 3` and
/// `ringctl remove-node 3`; every key written before is served, writes go on, and node 3 is
/// told it was removed if started again.
#[test]
fn a_node_on_an_empty_volume_is_refused_and_replaced() {
    if !docker_ready() {
        return;
    }
    let project = Project::new("r");
    project.up();
    let mut written = Vec::new();
    for i in 0..30 {
        let key = format!("before-{i}");
        let (status, body) = project.curl(1, "PUT", &format!("/v1/kv/{key}"), Some(&key));
        assert!((200..300).contains(&status), "PUT {key}: {status} {body}");
        written.push(key);
    }

    // Node 3 loses its volume.
    project.compose_ok(&["stop", "-t", "10", "ringkv-3"]);
    project.compose_ok(&["rm", "-f", "ringkv-3"]);
    project.docker(&["volume", "rm", &format!("{}_data-3", project.name)]);
    project.compose_ok(&["up", "-d", "--no-deps", "ringkv-3"]);
    let code = wait_exited(&project.container(3));
    let logs = project.logs(3);
    assert_ne!(code, 0, "node 3 refused with an error exit; logs:\n{logs}");
    assert!(
        logs.contains("refusing to start node 3")
            && logs.contains("must not rejoin as node 3")
            && logs.contains("ringctl remove-node 3"),
        "node 3 names the mismatch and the procedure; logs:\n{logs}"
    );
    assert!(
        !logs.contains("opened the store"),
        "node 3 opened its groups; logs:\n{logs}"
    );

    // The replacement: a certificate for node 4 from the same CA, then node 4 joins.
    let certs = format!("{}_certs:/certs", project.name);
    let output = Command::new("docker")
        .args(["run", "--rm", "-v", &certs, "--entrypoint", "ringctl"])
        .arg(image())
        .args([
            "certs",
            "create",
            "--dir=/certs",
            "--cluster=ringkv",
            "--node=4=ringkv-4",
        ])
        .output()
        .unwrap_or_else(|e| panic!("docker run ringctl certs: {e}"));
    assert!(output.status.success(), "certs for node 4: {output:?}");
    let node4 = format!("{}_ringkv-4_run", project.name);
    let _node4_guard = RunGuard {
        container: node4.clone(),
        volume: format!("{}_data-4", project.name),
    };
    let data4 = format!("{}_data-4:/var/lib/ringkv", project.name);
    let certs_ro = format!("{certs}:ro");
    project.docker(&[
        "run",
        "-d",
        "--name",
        &node4,
        "--hostname",
        "ringkv-4",
        "--network",
        &project.network(),
        "--network-alias",
        "ringkv-4",
        "-v",
        &data4,
        "-v",
        &certs_ro,
        "-e",
        "RINGKV_CLUSTER=ringkv",
        "-e",
        "RINGKV_NODE_ID=4",
        "-e",
        "RINGKV_JOIN=ringkv-1:7100,ringkv-2:7100",
        "-e",
        "RINGKV_ADVERTISE_ADDR=ringkv-4:7100",
        &image(),
    ]);
    let drain = project.ringctl(1, &["drain-node", "3", "--timeout", "240"]);
    println!("{}", String::from_utf8_lossy(&drain.stdout));
    if !drain.status.success() {
        // Everything that says why the last replicas did not move: the map with its
        // operators, and what every live node logged.
        let shards = project.ringctl(1, &["shards"]);
        let node4_logs = Command::new("docker")
            .args(["logs", "--tail", "60", &node4])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned());
        panic!(
            "ringctl drain-node 3: {}\n{}\nringctl shards:\n{}\nnode 1 logs:\n{}\n\
             node 2 logs:\n{}\nnode 4 logs:\n{node4_logs:?}",
            String::from_utf8_lossy(&drain.stdout),
            String::from_utf8_lossy(&drain.stderr),
            String::from_utf8_lossy(&shards.stdout),
            project.logs(1),
            project.logs(2),
        );
    }
    let remove = project.ringctl(1, &["remove-node", "3"]);
    assert!(remove.status.success(), "ringctl remove-node 3: {remove:?}");
    let nodes = project.ringctl(1, &["nodes", "--json"]);
    let text = String::from_utf8_lossy(&nodes.stdout);
    assert!(
        nodes.status.success() && text.contains("ringkv-4:7100"),
        "{text}"
    );

    // Every key is served (through nodes 1 and 2), and writes go on.
    for key in &written {
        for n in [1, 2] {
            let (status, body) = project.curl(n, "GET", &format!("/v1/kv/{key}"), None);
            assert_eq!((status, body.as_str()), (200, key.as_str()), "{key} on {n}");
        }
    }
    let (status, body) = project.curl(2, "PUT", "/v1/kv/after", Some("replaced"));
    assert!((200..300).contains(&status), "PUT after: {status} {body}");
    let output = project.ringctl(1, &["kv", "get", "after"]);
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "replaced");

    // Node 3 started again (empty volume) is told it was removed.
    project.compose_ok(&["rm", "-f", "ringkv-3"]);
    project.docker(&["volume", "rm", &format!("{}_data-3", project.name)]);
    project.compose_ok(&["up", "-d", "--no-deps", "ringkv-3"]);
    let code = wait_exited(&project.container(3));
    let logs = project.logs(3);
    assert_ne!(code, 0, "logs:\n{logs}");
    assert!(logs.contains("n3 was removed"), "logs:\n{logs}");
}
