//! A partial network partition on real containers: node 1 cut off from node 2 only, while both
//! still reach node 3 (`deploy/compose.yaml`, image `ringkv:dev` with `ringkv-bench`). Skipped
//! without Docker (failed under `CI=true`); build the image first: `deploy/docker/build-local.sh`.
//!
//! Docker cannot cut one pair of containers on a shared network, so the test changes the
//! topology: two more networks, `cut-a` (nodes 1 and 3) and `cut-b` (nodes 2 and 3), each node
//! under its service name as alias, then nodes 1 and 2 leave the compose network. Node 1 then
//! cannot even resolve `ringkv-2` (and the other way round); node 3 reaches both. The load
//! container joins both networks too, so it reaches every node.

use ringkv_deploy_tests::{Project, docker_ready, image};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long the clients run: before, during (about 40 s) and after the cut.
const LOAD_SECS: u64 = 90;

/// Containers and networks this test adds, removed when dropped (declare it after the project:
/// it is dropped first, so the project's `down` finds its network free).
struct Extras {
    load: String,
    networks: Vec<String>,
}

impl Drop for Extras {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.load])
            .output();
        for network in &self.networks {
            // Disconnects what is still attached (the nodes), then removes the network.
            if let Ok(output) = Command::new("docker")
                .args([
                    "network",
                    "inspect",
                    "-f",
                    "{{range .Containers}}{{.Name}} {{end}}",
                    network,
                ])
                .output()
            {
                for container in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                    let _ = Command::new("docker")
                        .args(["network", "disconnect", "-f", network, container])
                        .output();
                }
            }
            let _ = Command::new("docker")
                .args(["network", "rm", network])
                .output();
        }
    }
}

fn container_status(container: &str) -> String {
    let output = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Status}}", container])
        .output()
        .unwrap_or_else(|e| panic!("docker inspect: {e}"));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Whether `from`'s container can open a TCP connection to `host`'s HTTP port (8100), using
/// curl inside the container (the image has curl; any HTTP answer, even an error, counts).
fn reaches(project: &Project, from: u8, host: &str) -> bool {
    let url = format!("https://{host}:8100/livez");
    let service = format!("ringkv-{from}");
    let output = project.compose(&[
        "exec",
        "-T",
        &service,
        "curl",
        "-sk",
        "-o",
        "/dev/null",
        "--max-time",
        "3",
        &url,
    ]);
    output.status.success()
}

/// Node 1 and node 2 cannot reach each other, both reach node 3, under 8 clients
/// (`ringkv-bench --check-linearizability` in a container on every network). While cut, a write
/// to every shard succeeds (through node 3's HTTP API, which forwards to the leaders, wherever
/// they moved) and node 3 answers placement commands; no write is refused for a split brain.
/// After healing, every node's replicas hold every write acknowledged while cut, and the
/// clients' history is linearizable.
#[test]
fn a_node_cut_off_from_one_peer_only_keeps_every_shard_writable_and_linearizable() {
    if !docker_ready() {
        return;
    }
    let project = Project::new("c");
    project.up();
    let cut_a = format!("{}_cut-a", project.name);
    let cut_b = format!("{}_cut-b", project.name);
    let load = format!("{}_load", project.name);
    let _extras = Extras {
        load: load.clone(),
        networks: vec![cut_a.clone(), cut_b.clone()],
    };
    let certs = format!("{}_certs:/certs:ro", project.name);
    let duration = LOAD_SECS.to_string();
    project.docker(&[
        "run",
        "-d",
        "--name",
        &load,
        "--network",
        &project.network(),
        "-v",
        &certs,
        "--entrypoint",
        "ringkv-bench",
        &image(),
        "--check-linearizability",
        "--clients",
        "8",
        "--duration",
        &duration,
        "--json",
    ]);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(10));

    // The cut: 1 and 3 share cut-a, 2 and 3 share cut-b, then 1 and 2 leave the compose
    // network.
    for network in [&cut_a, &cut_b] {
        project.docker(&["network", "create", network]);
    }
    for (network, n) in [(&cut_a, 1u8), (&cut_a, 3), (&cut_b, 2), (&cut_b, 3)] {
        let alias = format!("ringkv-{n}");
        project.docker(&[
            "network",
            "connect",
            "--alias",
            &alias,
            network,
            &project.container(n),
        ]);
    }
    for network in [&cut_a, &cut_b] {
        project.docker(&["network", "connect", network, &load]);
    }
    project.disconnect(1);
    project.disconnect(2);
    let cut_at = Instant::now();
    assert!(
        !reaches(&project, 1, "ringkv-2"),
        "node 1 still reaches node 2"
    );
    assert!(
        !reaches(&project, 2, "ringkv-1"),
        "node 2 still reaches node 1"
    );
    assert!(
        reaches(&project, 1, "ringkv-3"),
        "node 1 does not reach node 3"
    );
    assert!(
        reaches(&project, 2, "ringkv-3"),
        "node 2 does not reach node 3"
    );
    assert!(reaches(&project, 3, "ringkv-1") && reaches(&project, 3, "ringkv-2"));
    eprintln!("cut 1 <-> 2 in {:?}", cut_at.elapsed());

    // Every shard keeps taking writes: keys spread over the ring, through node 3 (published
    // port; it forwards to each shard's leader).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut acknowledged = Vec::new();
    let mut retries = 0u32;
    for i in 0..48 {
        let key = format!("cut-{i}");
        loop {
            let path = format!("/v1/kv/{key}");
            let (status, body) = project.curl(3, "PUT", &path, Some("c"));
            if (200..300).contains(&status) {
                acknowledged.push(key);
                break;
            }
            retries += 1;
            assert!(
                Instant::now() < deadline,
                "{key} was not written while 1 and 2 were cut: {status} {body}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    eprintln!(
        "{} writes through node 3 while cut ({retries} retried attempts), in {:?}",
        acknowledged.len(),
        cut_at.elapsed()
    );
    // Placement commands need the PD leader, reachable from node 3 wherever it is.
    let nodes = project.ringctl(3, &["nodes", "-w", "json"]);
    assert!(nodes.status.success(), "ringctl nodes on node 3: {nodes:?}");
    // Stay cut for a while under the load (elections, if any, play out).
    let hold = Duration::from_secs(40);
    if let Some(left) = hold.checked_sub(cut_at.elapsed()) {
        std::thread::sleep(left);
    }
    assert_eq!(
        container_status(&load),
        "running",
        "the load ended while cut"
    );

    // Heal: 1 and 2 back on the compose network (new IPs possible; peers dial the names).
    project.reconnect(1);
    project.reconnect(2);
    for (network, n) in [(&cut_a, 1u8), (&cut_a, 3), (&cut_b, 2), (&cut_b, 3)] {
        project.docker(&["network", "disconnect", network, &project.container(n)]);
    }
    for network in [&cut_a, &cut_b] {
        project.docker(&["network", "disconnect", network, &load]);
    }
    eprintln!("healed after {:?} cut", cut_at.elapsed());
    for n in 1..=3 {
        project.wait_healthy(n);
    }
    project.wait_all_led();
    // Every replica holds what was acknowledged while cut: stale reads on each node.
    let deadline = Instant::now() + Duration::from_secs(60);
    for n in 1..=3 {
        for key in &acknowledged {
            loop {
                let path = format!("/v1/kv/{key}?consistency=stale");
                let (status, body) = project.curl(n, "GET", &path, None);
                if (status, body.as_str()) == (200, "c") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {n} did not catch up on {key}: {status} {body}"
                );
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    }

    let deadline = Instant::now() + Duration::from_secs(LOAD_SECS + 120);
    while container_status(&load) == "running" {
        assert!(Instant::now() < deadline, "the load did not end");
        std::thread::sleep(Duration::from_secs(1));
    }
    let output = Command::new("docker")
        .args(["logs", &load])
        .output()
        .unwrap_or_else(|e| panic!("docker logs: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| panic!("no result from the load: {stdout}{stderr}"));
    let result: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    eprintln!(
        "partial partition under load ({:?} in all): {result}",
        started.elapsed()
    );
    assert_eq!(result["verdict"], "linearizable", "{result}");
    assert!(result["ops"].as_u64().unwrap_or(0) > 500, "{result}");
}
