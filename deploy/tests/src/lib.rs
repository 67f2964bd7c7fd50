//! Helpers for tests on real containers: a compose project per test, removed with its volumes by
//! a guard even when the test panics; Docker and the `ringkv:dev` image checked first.
//!
//! Without Docker the tests skip with a message, except under `CI=true`, where they fail.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The image the tests run (`deploy/docker/build-local.sh` builds it).
pub fn image() -> String {
    std::env::var("RINGKV_IMAGE").unwrap_or_else(|_| "ringkv:dev".to_string())
}

/// Whether the tests can run: Docker answers and the image exists. Under `CI=true` a missing
/// Docker or image is a failure, elsewhere a skip (with a message on stderr).
pub fn docker_ready() -> bool {
    let docker = Command::new("docker")
        .args(["image", "inspect", &image()])
        .output();
    let ok = matches!(&docker, Ok(output) if output.status.success());
    if ok {
        return true;
    }
    let reason = match docker {
        Err(error) => format!("docker cannot run: {error}"),
        Ok(output) => format!(
            "docker image inspect {} failed: {}",
            image(),
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("container tests need Docker and the image under CI=true: {reason}");
    }
    eprintln!(
        "SKIPPED: container tests need Docker and {} ({reason}); run deploy/docker/build-local.sh",
        image()
    );
    false
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A compose project of `deploy/compose.yaml` under a unique name, with HTTP published on
/// free ports of 127.0.0.1. Dropping it runs `down -v` (containers, network and volumes).
pub struct Project {
    /// The compose project name.
    pub name: String,
    /// The host ports of node 1, 2, 3's HTTPS API.
    pub http_ports: [u16; 3],
    ca_file: PathBuf,
    /// The `root` client certificate and key, copied out of the certs volume for curl.
    cert_file: PathBuf,
    key_file: PathBuf,
}

/// Writes `text` to `path`, readable by the owner only (it may be a private key).
fn write_owner_only(path: &std::path::Path, text: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    file.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

impl Project {
    /// A new project (nothing started yet).
    pub fn new(test: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("ringkvt{}{}{test}", std::process::id(), nanos % 100_000);
        let temp = |suffix: &str| std::env::temp_dir().join(format!("{name}-{suffix}"));
        Self {
            http_ports: [free_port(), free_port(), free_port()],
            ca_file: temp("ca.pem"),
            cert_file: temp("client-root.pem"),
            key_file: temp("client-root.key"),
            name,
        }
    }

    /// Runs `docker-compose -p NAME -f deploy/compose.yaml ARGS`.
    pub fn compose(&self, args: &[&str]) -> Output {
        let file = repo_root().join("deploy/compose.yaml");
        let mut command = Command::new("docker-compose");
        command
            .arg("-p")
            .arg(&self.name)
            .arg("-f")
            .arg(file)
            .args(args)
            .env("RINGKV_IMAGE", image());
        for (i, port) in self.http_ports.iter().enumerate() {
            command.env(format!("RINGKV_HTTP_PORT_{}", i + 1), port.to_string());
        }
        command
            .output()
            .unwrap_or_else(|e| panic!("docker-compose {args:?}: {e}"))
    }

    /// As [`Project::compose`], panicking with its output when it fails.
    pub fn compose_ok(&self, args: &[&str]) -> String {
        let output = self.compose(args);
        assert!(
            output.status.success(),
            "docker-compose {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The container of node `n` (Compose v1 names: `<project>_ringkv-<n>_1`).
    pub fn container(&self, n: u8) -> String {
        format!("{}_ringkv-{n}_1", self.name)
    }

    /// `up -d`, then waits until every node is healthy (/readyz) and every shard has a leader.
    pub fn up(&self) {
        self.compose_ok(&["up", "-d"]);
        for n in 1..=3 {
            self.wait_healthy(n);
        }
        self.wait_all_led();
        // curl presents the root client certificate (HTTP requests need a principal).
        for (from, to) in [
            ("/certs/ca.pem", &self.ca_file),
            ("/certs/client-root.pem", &self.cert_file),
            ("/certs/client-root.key", &self.key_file),
        ] {
            let text = self.compose_ok(&["exec", "-T", "ringkv-1", "cat", from]);
            write_owner_only(to, &text);
        }
    }

    /// Waits (at most three minutes) for node `n`'s health check to pass.
    pub fn wait_healthy(&self, n: u8) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let output = Command::new("docker")
                .args([
                    "inspect",
                    "-f",
                    "{{.State.Health.Status}}",
                    &self.container(n),
                ])
                .output()
                .unwrap_or_else(|e| panic!("docker inspect: {e}"));
            let status = String::from_utf8_lossy(&output.stdout).trim().to_string();
            if status == "healthy" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {n} not healthy (status `{status}`); logs:\n{}",
                self.logs(n)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The last 100 lines of node `n`'s log.
    pub fn logs(&self, n: u8) -> String {
        let output = Command::new("docker")
            .args(["logs", "--tail", "100", &self.container(n)])
            .output();
        match output {
            Ok(output) => format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => error.to_string(),
        }
    }

    /// `ringctl ARGS` inside node `n`'s container (no flags: the image's ringctl.toml).
    pub fn ringctl(&self, n: u8, args: &[&str]) -> Output {
        let service = format!("ringkv-{n}");
        let mut all = vec!["exec", "-T", service.as_str(), "ringctl"];
        all.extend_from_slice(args);
        self.compose(&all)
    }

    /// Waits (at most two minutes) until `ringctl shards --json` shows a leader for every shard.
    pub fn wait_all_led(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut last = String::new();
        while Instant::now() < deadline {
            let output = self.ringctl(1, &["shards", "--json"]);
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            if output.status.success()
                && let Ok(json) = serde_json::from_slice::<serde_json::Value>(&output.stdout)
                && let Some(shards) = json["shards"].as_array()
                && !shards.is_empty()
                && shards.iter().all(|s| s["leader"].is_u64())
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("not every shard has a leader: {last}");
    }

    /// `curl` from the host to node `n`'s published HTTPS port; returns (HTTP status, body).
    pub fn curl(&self, n: u8, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let port = self.http_ports[usize::from(n - 1)];
        let url = format!("https://127.0.0.1:{port}{path}");
        let mut command = Command::new("curl");
        command
            .args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
            .arg("--cacert")
            .arg(&self.ca_file)
            .arg("--cert")
            .arg(&self.cert_file)
            .arg("--key")
            .arg(&self.key_file)
            .args(["-X", method]);
        if let Some(body) = body {
            command.args(["--data-binary", body]);
        }
        let output = command
            .arg(&url)
            .output()
            .unwrap_or_else(|e| panic!("curl: {e}"));
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// `docker ARGS` on this project's node `n` (kill, start, stop...).
    pub fn docker_node(&self, verb: &str, n: u8) {
        let output = Command::new("docker")
            .args([verb, &self.container(n)])
            .output()
            .unwrap_or_else(|e| panic!("docker {verb}: {e}"));
        assert!(
            output.status.success(),
            "docker {verb} {}: {}",
            self.container(n),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--remove-orphans", "-t", "5"]);
        for file in [&self.ca_file, &self.cert_file, &self.key_file] {
            let _ = std::fs::remove_file(file);
        }
    }
}

impl Project {
    /// The compose network the nodes share (Compose v1: `<project>_default`).
    pub fn network(&self) -> String {
        format!("{}_default", self.name)
    }

    /// Cuts node `n` off the network (`docker network disconnect`): a real partition, every
    /// packet to and from the node is lost, including its published port.
    pub fn disconnect(&self, n: u8) {
        self.docker(&["network", "disconnect", &self.network(), &self.container(n)]);
    }

    /// Puts node `n` back on the network under its service name (peers dial the name, and the
    /// node may come back with another IP).
    pub fn reconnect(&self, n: u8) {
        let alias = format!("ringkv-{n}");
        self.docker(&[
            "network",
            "connect",
            "--alias",
            &alias,
            &self.network(),
            &self.container(n),
        ]);
    }

    /// `docker ARGS`, panicking with its stderr when it fails.
    pub fn docker(&self, args: &[&str]) {
        let output = Command::new("docker")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("docker {args:?}: {e}"));
        assert!(
            output.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
