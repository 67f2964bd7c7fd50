//! End to end with real processes: `ringctl local up` starts three `ringkvd` nodes, the kv
//! commands and `status --json` work against them, a restart reuses the data, and SIGTERM stops
//! everything. Skipped (with a message) when no `ringkvd` binary sits next to `ringctl`, which
//! `cargo test --workspace` builds. Every process is killed on drop; every wait is bounded.
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, reason = "tests: a failure is a test failure")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const RINGCTL: &str = env!("CARGO_BIN_EXE_ringctl");
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// `ringctl local up`, killed (with its nodes) when dropped.
struct Cluster {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Cluster {
    fn start(dir: &Path, port: u16) -> Self {
        let mut child = Command::new(RINGCTL)
            .args(["local", "up", "--port", &port.to_string(), "--dir"])
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
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        let mut cluster = Self { child, lines };
        cluster.wait_for_line("is up", START_TIMEOUT);
        cluster
    }

    fn wait_for_line(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(_) => panic!("no line containing {needle:?} within {timeout:?}"),
            }
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "ringctl exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "ringctl did not stop in 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // ringctl's own children are killed when it dies (kill_on_drop covers its panics; a
        // SIGKILL would orphan them, so try SIGTERM first).
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

fn ringkvd_present() -> bool {
    let dir = PathBuf::from(RINGCTL);
    dir.parent().is_some_and(|dir| {
        dir.join(format!("ringkvd{}", std::env::consts::EXE_SUFFIX))
            .is_file()
    })
}

/// A port unlikely to collide with a developer's cluster (7100) or a parallel run.
fn test_port() -> u16 {
    20_000 + u16::try_from(std::process::id() % 20_000).unwrap()
}

#[test]
fn local_up_serves_kv_and_status_and_restarts_with_its_data() {
    if !ringkvd_present() {
        // CI runs `cargo test --workspace`, which builds ringkvd: a missing binary is a bug there.
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
    let port = test_port();

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
