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

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const RINGCTL: &str = env!("CARGO_BIN_EXE_ringctl");
const START_TIMEOUT: Duration = Duration::from_secs(120);
const SHARDS: usize = 16;

/// A long-running `ringctl` child (`local up`, `local add-node`) whose stdout is read line by
/// line; stopped with SIGTERM (which stops its nodes) when dropped.
struct Foreground {
    child: Child,
    lines: mpsc::Receiver<String>,
    what: &'static str,
}

impl Foreground {
    fn start(what: &'static str, args: &[&str], dir: &Path) -> Self {
        let mut child = Command::new(RINGCTL)
            .args(args)
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("{what}: {line}");
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines, what }
    }

    fn wait_for_line(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(_) => panic!(
                    "{}: no line containing {needle:?} within {timeout:?}",
                    self.what
                ),
            }
        }
    }

    /// Waits (bounded) for the process to exit by itself, with an error.
    fn expect_failed_exit(mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(!status.success(), "{} exited with {status}", self.what);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} still runs after {timeout:?}",
                self.what
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{} exited with {status}", self.what);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop in 30 s",
                self.what
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        // SIGTERM first: ringctl stops its nodes on it (a SIGKILL would orphan them).
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn ringctl(config: &Path, args: &[&str]) -> Output {
    Command::new(RINGCTL)
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn json(output: &Output) -> Value {
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {output:?}"))
}

fn ringkvd_present() -> bool {
    let dir = PathBuf::from(RINGCTL);
    dir.parent().is_some_and(|dir| {
        dir.join(format!("ringkvd{}", std::env::consts::EXE_SUFFIX))
            .is_file()
    })
}

/// A port unlikely to collide with a developer's cluster (7100) or `local_up.rs` (which uses
/// `20000 + pid % 20000`; test binaries run one after the other anyway).
fn test_port() -> u16 {
    40_000 + u16::try_from(std::process::id() % 20_000).unwrap()
}

fn spread(counts: &serde_json::Map<String, Value>) -> u64 {
    let values: Vec<u64> = counts.values().map(|v| v.as_u64().unwrap()).collect();
    values.iter().max().unwrap() - values.iter().min().unwrap()
}

#[test]
fn local_up_add_node_and_rebalance_with_the_real_binaries() {
    if !ringkvd_present() {
        assert!(
            std::env::var_os("CI").is_none(),
            "ringkvd was not built next to {RINGCTL}"
        );
        eprintln!("skipping: no ringkvd next to {RINGCTL}; run `cargo build --bins` first");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster_dir = dir.path().join("cluster");
    let config = cluster_dir.join("ringctl.toml");
    let port = test_port().to_string();

    let mut up = Foreground::start("local up", &["local", "up", "--port", &port], &cluster_dir);
    up.wait_for_line("is up", START_TIMEOUT);
    let keys: Vec<String> = (0..20).map(|i| format!("grow-{i}")).collect();
    for key in &keys {
        let put = ringctl(&config, &["kv", "put", key, &format!("v-{key}")]);
        assert!(put.status.success(), "{put:?}");
    }
    let before = json(&ringctl(&config, &["nodes", "--json"]));
    assert_eq!(before["nodes"].as_array().unwrap().len(), 3, "{before}");

    let started = Instant::now();
    let mut added = Foreground::start("add-node", &["local", "add-node"], &cluster_dir);
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
