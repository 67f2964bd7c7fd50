//! The `ringkvd` binary: configuration errors exit non-zero with the field named; a running node
//! stops cleanly (exit 0) on SIGTERM. Every child is killed on drop and bounded by timeouts.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions; a failure is a test failure"
)]

use ringkv_transport::certs::{ClusterCa, Validity};
use ringkv_types::NodeId;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Kills the child when dropped, so a failing test leaves no process behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Guard {
    fn wait_for_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "ringkvd did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(stderr) = self.0.stderr.as_mut() {
            let _ = stderr.read_to_string(&mut text);
        }
        text
    }
}

fn ringkvd(config: &Path) -> Guard {
    Guard(
        Command::new(env!("CARGO_BIN_EXE_ringkvd"))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

fn single_node_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let validity = Validity::days_from_now(1);
    let ca = ClusterCa::generate("solo", validity).unwrap();
    ca.to_pem_pair().write(dir, "ca").unwrap();
    ca.issue_node(NodeId(1), &[], validity)
        .unwrap()
        .write(dir, "node-1")
        .unwrap();
    let text = format!(
        r#"node_id = 1
cluster = "solo"
listen_addr = "127.0.0.1:{port}"
data_dir = "data"
initial_cluster = ["1@127.0.0.1:{port}"]
initial_shards = 2
replication_factor = 1
[tls]
ca_cert = "ca.pem"
cert = "node-1.pem"
key = "node-1.key"
{extra}
"#
    );
    let path = dir.join("node.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn invalid_configs_exit_non_zero_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[raft]\ntick_ms = 0\n", "raft.tick_ms"),
        (
            "[limits]\nmax_value_bytes = 999999999\n",
            "limits.max_value_bytes",
        ),
        ("[raft]\nheartbeat_ticks = 50\n", "raft"),
        ("[storage]\nfsync = false\n", "unknown field `fsync`"),
    ];
    for (extra, expected) in cases {
        let path = single_node_config(dir.path(), extra);
        let mut node = ringkvd(&path);
        let status = node.wait_for_exit(Duration::from_secs(20));
        let stderr = node.stderr();
        assert_eq!(status.code(), Some(1), "{extra}: {stderr}");
        assert!(stderr.contains(expected), "{extra}: {stderr}");
    }
    let mut node = ringkvd(&dir.path().join("missing.toml"));
    assert_eq!(node.wait_for_exit(Duration::from_secs(20)).code(), Some(1));
    assert!(node.stderr().contains("cannot read config file"));
}

#[test]
fn sigterm_stops_a_running_node_cleanly_and_it_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = single_node_config(dir.path(), "");
    for round in 0..2 {
        let mut node = ringkvd(&path);
        // Give it time to open the store and elect itself; then ask it to stop.
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            node.0.try_wait().unwrap().is_none(),
            "round {round}: exited early: {}",
            node.stderr()
        );
        let killed = Command::new("kill")
            .arg("-TERM")
            .arg(node.0.id().to_string())
            .status()
            .unwrap();
        assert!(killed.success());
        let status = node.wait_for_exit(Duration::from_secs(20));
        let stderr = node.stderr();
        assert_eq!(status.code(), Some(0), "round {round}: {stderr}");
        assert!(stderr.contains("store flushed"), "round {round}: {stderr}");
    }
    // The data dir remembers its node and cluster: another cluster name is refused, even with
    // a certificate of that cluster (which passes the certificate check at start).
    let validity = Validity::days_from_now(1);
    let other = ClusterCa::generate("other", validity).unwrap();
    other.to_pem_pair().write(dir.path(), "other-ca").unwrap();
    other
        .issue_node(NodeId(1), &[], validity)
        .unwrap()
        .write(dir.path(), "other-node-1")
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("cluster = \"solo\"", "cluster = \"other\"")
            .replace("\"ca.pem\"", "\"other-ca.pem\"")
            .replace("\"node-1.pem\"", "\"other-node-1.pem\"")
            .replace("\"node-1.key\"", "\"other-node-1.key\""),
    )
    .unwrap();
    let mut node = ringkvd(&path);
    let status = node.wait_for_exit(Duration::from_secs(20));
    let stderr = node.stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("belongs to"), "{stderr}");
}

/// A journal damaged while the node was down (zeroed bytes; fjall would cut the journal there
/// and forget acknowledged entries and votes) stops the node at start: exit 1 and a message
/// naming the damage and the shards, every time it is started.
#[test]
fn a_damaged_journal_stops_the_node_at_start_naming_the_shards() {
    let dir = tempfile::tempdir().unwrap();
    let path = single_node_config(dir.path(), "");
    let mut node = ringkvd(&path);
    // Let the node write several group commits (bootstrap, elections, PD ticks) before the
    // damage: at least 1.5 s and 8 KiB of journal, at most 30 s (a loaded machine starts slowly).
    let started = std::time::Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        assert!(node.0.try_wait().unwrap().is_none(), "{}", node.stderr());
        let written: u64 = std::fs::read_dir(dir.path().join("data"))
            .map(|items| {
                items
                    .filter_map(|item| item.ok())
                    .filter(|item| item.path().extension().is_some_and(|e| e == "jnl"))
                    .filter_map(|item| std::fs::read(item.path()).ok())
                    // Journals are preallocated: count up to the last written byte.
                    .map(|bytes| bytes.iter().rposition(|b| *b != 0).map_or(0, |at| at + 1) as u64)
                    .sum()
            })
            .unwrap_or(0);
        let elapsed = started.elapsed();
        if elapsed > Duration::from_secs(30)
            || (elapsed >= Duration::from_millis(1500) && written >= 8192)
        {
            break;
        }
    }
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(node.0.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(node.wait_for_exit(Duration::from_secs(20)).code(), Some(0));

    let data = dir.path().join("data");
    let journals: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|item| item.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jnl"))
        .collect();
    let journal = journals
        .iter()
        .max_by_key(|p| {
            let bytes = std::fs::read(p).unwrap();
            bytes.iter().rposition(|b| *b != 0).unwrap_or(0)
        })
        .unwrap();
    let mut bytes = std::fs::read(journal).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
    assert!(end > 1000, "{journals:?}: only {end} bytes");
    // From a third of the way in to the end: the later group commits are gone.
    bytes[end / 3..end].fill(0);
    std::fs::write(journal, bytes).unwrap();

    for attempt in 0..2 {
        let mut node = ringkvd(&path);
        let status = node.wait_for_exit(Duration::from_secs(20));
        let stderr = node.stderr();
        println!("attempt {attempt}: {stderr}");
        assert_eq!(status.code(), Some(1), "attempt {attempt}: {stderr}");
        assert!(
            stderr.contains("acknowledged writes are missing")
                && stderr.contains("shards affected: s"),
            "attempt {attempt}: {stderr}"
        );
    }
}
