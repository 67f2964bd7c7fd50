//! Users and tokens end to end with real processes: `ringctl local up`, then `ringctl user`,
//! `ringctl auth login`, `--token`, `--namespace`, `auth rotate-key`, `user passwd`, and the
//! exit codes (0 ok, 1 not found, 2 usage, 3 unauthenticated or denied). Skipped (with a
//! message) when no `ringkvd` binary sits next to `ringctl`. Every process is killed on drop.
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, reason = "tests: a failure is a test failure")]

use std::io::{BufRead, BufReader, Write};
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

fn ringkvd_present() -> bool {
    let dir = PathBuf::from(RINGCTL);
    dir.parent().is_some_and(|dir| {
        dir.join(format!("ringkvd{}", std::env::consts::EXE_SUFFIX))
            .is_file()
    })
}

/// A port unlikely to collide with a developer's cluster (7100) or a parallel run.
fn test_port() -> u16 {
    40_000 + u16::try_from(std::process::id() % 20_000).unwrap()
}

/// Runs ringctl with `stdin` as its standard input (a password), and optional extra env.
fn ringctl_in(config: &Path, args: &[&str], stdin: &str, token: Option<&str>) -> Output {
    let mut command = Command::new(RINGCTL);
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RINGCTL_TOKEN")
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

fn ringctl(config: &Path, args: &[&str]) -> Output {
    ringctl_in(config, args, "", None)
}

fn code(output: &Output) -> Option<i32> {
    output.status.code()
}

#[test]
fn users_log_in_and_tokens_reach_only_their_namespace() {
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
    let cluster = Cluster::start(&cluster_dir, test_port());

    let added = ringctl_in(&config, &["user", "add", "alice"], "alice-secret\n", None);
    assert_eq!(code(&added), Some(0), "{added:?}");
    let bad_role = ringctl(&config, &["user", "grant", "alice", "superuser"]);
    assert_eq!(code(&bad_role), Some(2), "{bad_role:?}");
    let bad_args = ringctl(&config, &["user", "grant", "alice"]);
    assert_eq!(code(&bad_args), Some(2), "{bad_args:?}");

    // The first signing key appears shortly after the cluster starts: retry the login.
    let deadline = Instant::now() + Duration::from_secs(30);
    let token = loop {
        let login = ringctl_in(&config, &["auth", "login", "alice"], "alice-secret\n", None);
        if login.status.success() {
            break String::from_utf8(login.stdout).unwrap().trim().to_string();
        }
        assert!(Instant::now() < deadline, "no login: {login:?}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let wrong = ringctl_in(&config, &["auth", "login", "alice"], "guess\n", None);
    assert_eq!(code(&wrong), Some(3), "{wrong:?}");
    assert!(!String::from_utf8_lossy(&wrong.stderr).contains("guess"));

    // As alice: her namespace works, administration does not.
    let put = ringctl_in(&config, &["kv", "put", "x", "alice's"], "", Some(&token));
    assert_eq!(code(&put), Some(0), "{put:?}");
    let get = ringctl_in(&config, &["kv", "get", "x"], "", Some(&token));
    assert_eq!(get.stdout, b"alice's\n", "{get:?}");
    let flag = ringctl(&config, &["--token", &token, "kv", "get", "x"]);
    assert_eq!(flag.stdout, b"alice's\n", "{flag:?}");
    for args in [
        &["user", "list"][..],
        &["user", "add", "eve", "--no-password"],
        &["remove-node", "3"],
        &["drain-node", "3", "--no-wait"],
        &["scheduler", "disable", "repair"],
        &["auth", "rotate-key"],
        &["--namespace", "root", "kv", "get", "x"],
    ] {
        let refused = ringctl_in(&config, args, "", Some(&token));
        assert_eq!(code(&refused), Some(3), "{args:?}: {refused:?}");
    }
    let forged = ringctl_in(&config, &["kv", "get", "x"], "", Some("a.b.c"));
    assert_eq!(code(&forged), Some(3), "{forged:?}");

    // Root: raw keys by default, alice's through --namespace.
    let raw = ringctl(&config, &["kv", "get", "x"]);
    assert_eq!(code(&raw), Some(1), "{raw:?}");
    let hers = ringctl(&config, &["--namespace", "alice", "kv", "get", "x"]);
    assert_eq!(hers.stdout, b"alice's\n", "{hers:?}");
    let list = ringctl(&config, &["user", "list", "--json"]);
    let users: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(users[0]["name"], "alice", "{users}");
    assert_eq!(users[0]["admin"], false, "{users}");

    // A rotated key keeps the token; a new password revokes it.
    let rotate = ringctl(&config, &["auth", "rotate-key"]);
    assert_eq!(code(&rotate), Some(0), "{rotate:?}");
    let still = ringctl_in(&config, &["kv", "get", "x"], "", Some(&token));
    assert_eq!(still.stdout, b"alice's\n", "{still:?}");
    let passwd = ringctl_in(&config, &["user", "passwd", "alice"], "new-secret\n", None);
    assert_eq!(code(&passwd), Some(0), "{passwd:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let old = ringctl_in(&config, &["kv", "get", "x"], "", Some(&token));
        if code(&old) == Some(3) {
            break;
        }
        assert!(Instant::now() < deadline, "old token still works: {old:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    cluster.stop();
}
