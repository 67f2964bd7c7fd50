//! A rolling restart of the compose cluster under load, on real containers (`deploy/compose.yaml`,
//! image `ringkv:dev` with `ringkv-bench`). Skipped without Docker (failed under `CI=true`);
//! build the image first: `deploy/docker/build-local.sh`.

use ringkv_deploy_tests::{Project, docker_ready, image};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long the clients run: long enough for three restarts, each waiting for health.
const LOAD_SECS: u64 = 150;

/// The load container, removed when dropped (declare it after the project).
struct LoadGuard(String);

impl Drop for LoadGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.0])
            .output();
    }
}

fn container_status(container: &str) -> String {
    let output = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Status}}", container])
        .output()
        .unwrap_or_else(|e| panic!("docker inspect: {e}"));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// 16 clients (`ringkv-bench --check-linearizability`, in a container on the compose network)
/// run gets, puts, deletes and compare-and-swaps while each node is restarted in turn
/// (`docker restart`, SIGTERM then start) and waited for (healthy, every shard led) before the
/// next. No request may fail beyond the client's retries, and the recorded history must be
/// linearizable by the simulator's checker.
#[test]
fn a_rolling_restart_under_16_clients_loses_nothing_and_stays_linearizable() {
    if !docker_ready() {
        return;
    }
    let project = Project::new("l");
    project.up();
    let load = format!("{}_load", project.name);
    let _load_guard = LoadGuard(load.clone());
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
        "16",
        "--duration",
        &duration,
        "--json",
    ]);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    for n in 1..=3u8 {
        assert_eq!(
            container_status(&load),
            "running",
            "the load ended before node {n}'s restart"
        );
        let restart = Instant::now();
        project.docker(&["restart", "-t", "10", &project.container(n)]);
        project.wait_healthy(n);
        project.wait_all_led();
        eprintln!("node {n} restarted and ready in {:?}", restart.elapsed());
        std::thread::sleep(Duration::from_secs(5));
    }
    assert_eq!(
        container_status(&load),
        "running",
        "the load ended before the last restart was over ({:?}); lengthen LOAD_SECS",
        started.elapsed()
    );
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
    eprintln!("rolling restart under load: {result}");
    assert_eq!(result["verdict"], "linearizable", "{result}");
    assert!(result["ops"].as_u64().unwrap_or(0) > 1000, "{result}");
    assert_eq!(
        (
            result["failed_reads"].as_u64(),
            result["unknown_writes"].as_u64()
        ),
        (Some(0), Some(0)),
        "requests failed beyond the client's retries: {result}"
    );
}
