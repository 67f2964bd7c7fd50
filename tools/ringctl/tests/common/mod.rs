//! Shared by the tests that run the real binaries: `ringctl local up` and `local add-node` as
//! child processes (stopped with their nodes on drop), running `ringctl`, and where `ringkvd`
//! is.
#![allow(dead_code, reason = "each test binary uses a part")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const RINGCTL: &str = env!("CARGO_BIN_EXE_ringctl");
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

/// `ringctl local up` (the usual child of these tests).
pub type Cluster = Foreground;

/// A long-running `ringctl` child (`local up`, `local add-node`) whose stdout is read line by
/// line (and echoed, prefixed with what it is); stopped with SIGTERM (which stops its nodes)
/// when dropped.
pub struct Foreground {
    child: Child,
    lines: mpsc::Receiver<String>,
    what: &'static str,
    /// The node processes `local up` reported (`started node N (pid P)`).
    pub pids: BTreeMap<u64, u32>,
}

impl Foreground {
    /// `ringctl local up --port PORT --dir DIR`, once it says the cluster is up.
    pub fn start(dir: &Path, port: u16) -> Self {
        let port = port.to_string();
        let mut cluster = Self::spawn("local up", &["local", "up", "--port", &port], dir);
        cluster.wait_for_line("is up", START_TIMEOUT);
        cluster
    }

    /// `ringctl ARGS --dir DIR`, without any `RINGCTL_*` variable of the test's environment.
    pub fn spawn(what: &'static str, args: &[&str], dir: &Path) -> Self {
        let mut child = clean_ringctl()
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
        Self {
            child,
            lines,
            what,
            pids: BTreeMap::new(),
        }
    }

    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some((node, pid)) = started_node(&line) {
                        self.pids.insert(node, pid);
                    }
                    if line.contains(needle) {
                        return;
                    }
                }
                Err(_) => panic!(
                    "{}: no line containing {needle:?} within {timeout:?}",
                    self.what
                ),
            }
        }
    }

    /// SIGKILLs node `node` (`local up` reports it and keeps the others running).
    pub fn kill_node(&mut self, node: u64) {
        let pid = self.pids.get(&node).copied().unwrap_or_else(|| {
            panic!("no pid for node {node} in {:?}", self.pids);
        });
        let status = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -KILL {pid}");
        // Bounded wait until the process is gone (its store lock is released with it).
        let deadline = Instant::now() + Duration::from_secs(30);
        while !process_gone(pid) {
            assert!(
                Instant::now() < deadline,
                "node {node} (pid {pid}) still runs"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs the `ringctl` child itself (no cleanup of its own can run) and reaps it.
    pub fn kill_ringctl(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits (bounded) for the process to exit by itself, with an error.
    pub fn expect_failed_exit(mut self, timeout: Duration) {
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
    pub fn stop(mut self) {
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

/// Whether process `pid` has exited (gone, or a zombie nobody reaped yet).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.contains(") Z ") || stat.contains(") X "),
        Err(_) => true,
    }
}

/// `started node N (pid P), log ...` -> (N, P).
fn started_node(line: &str) -> Option<(u64, u32)> {
    let rest = line.strip_prefix("started node ")?;
    let (node, rest) = rest.split_once(" (pid ")?;
    let (pid, _) = rest.split_once(')')?;
    Some((node.parse().ok()?, pid.parse().ok()?))
}

impl Drop for Foreground {
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

/// `ringctl --config CONFIG ARGS` with `stdin` as its standard input (a password) and
/// `RINGCTL_TOKEN` set to `token`, with no other `RINGCTL_*` variable from the caller's
/// environment.
pub fn ringctl_in(config: &Path, args: &[&str], stdin: &str, token: Option<&str>) -> Output {
    let mut command = clean_ringctl();
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        command.env("RINGCTL_TOKEN", token);
    }
    let mut child = command.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `ringctl --config CONFIG ARGS`, with no `RINGCTL_*` variables from the caller's environment.
pub fn ringctl(config: &Path, args: &[&str]) -> Output {
    let mut command = clean_ringctl();
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A `ringctl` command without any `RINGCTL_*` variable inherited from the test's environment.
pub fn clean_ringctl() -> Command {
    let mut command = Command::new(RINGCTL);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("RINGCTL_") {
            command.env_remove(name);
        }
    }
    command
}

pub fn ringkvd_present() -> bool {
    let dir = PathBuf::from(RINGCTL);
    dir.parent().is_some_and(|dir| {
        dir.join(format!("ringkvd{}", std::env::consts::EXE_SUFFIX))
            .is_file()
    })
}

/// Whether to skip for want of `ringkvd` (never under CI, where it is a bug).
pub fn skip_without_ringkvd() -> bool {
    if ringkvd_present() {
        return false;
    }
    // CI runs `cargo test --workspace`, which builds ringkvd: a missing binary is a bug there.
    assert!(
        std::env::var_os("CI").is_none(),
        "ringkvd was not built next to {RINGCTL}"
    );
    eprintln!("skipping: no ringkvd next to {RINGCTL}; run `cargo build --bins` first");
    true
}

/// A port unlikely to collide with a developer's cluster (7100) or a parallel run; `offset`
/// separates the clusters of one test binary.
pub fn test_port(offset: u16) -> u16 {
    20_000 + u16::try_from((std::process::id() + u32::from(offset) * 7919) % 20_000).unwrap()
}
