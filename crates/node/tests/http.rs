//! The HTTP API of real `ringkvd` processes, driven with real `curl` over HTTPS (the cluster CA
//! as `--cacert`): health endpoints, the KV routes with forwarding, errors, `/metrics`.

mod common;

use common::{Cluster, FAULT_INJECTION, HTTP_ADDR};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const SHARDS: u64 = 4;

/// An answer of curl: the status (0 when no HTTP answer came) and the body.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Runs `curl` against node `index` of `cluster`.
struct Curl {
    ca: PathBuf,
    out: PathBuf,
    bases: Vec<String>,
}

impl Curl {
    fn new(cluster: &Cluster) -> Self {
        Self {
            ca: cluster.dir.path().join("certs/ca.pem"),
            out: cluster.dir.path().join("curl.out"),
            bases: cluster
                .http_addrs
                .iter()
                .map(|addr| format!("https://{addr}"))
                .collect(),
        }
    }

    /// `curl [args] https://<node index>/<path>`.
    fn run(&self, index: usize, args: &[&str], path: &str) -> Answer {
        let _ = std::fs::remove_file(&self.out);
        let url = format!("{}{path}", self.bases[index]);
        let output = Command::new("curl")
            .args(["-sS", "--max-time", "15", "--cacert"])
            .arg(&self.ca)
            .arg("-o")
            .arg(&self.out)
            .args(["-w", "%{http_code}"])
            .args(args)
            .arg(&url)
            .output()
            .unwrap_or_else(|e| panic!("cannot run curl: {e}"));
        let status = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        let body = std::fs::read(&self.out).unwrap_or_default();
        Answer { status, body }
    }

    fn get(&self, index: usize, path: &str) -> Answer {
        self.run(index, &[], path)
    }

    /// Repeats `curl` until `accept` holds (bounded), returning the accepted answer.
    async fn wait(
        &self,
        index: usize,
        path: &str,
        what: &str,
        accept: impl Fn(&Answer) -> bool,
    ) -> Answer {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = self.get(index, path);
            if accept(&answer) {
                return answer;
            }
            assert!(
                Instant::now() < deadline,
                "node {}: {what}: last answer {} {}",
                index + 1,
                answer.status,
                answer.text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn http_extra() -> String {
    format!("http_addr = \"{HTTP_ADDR}\"\n{FAULT_INJECTION}")
}

/// `/livez` answers while the process runs; `/readyz` is 200 once the node is joined, its map
/// fresh and every local shard has a leader, 503 with reasons on a node cut off from its peers,
/// and 200 again after healing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_a_partition_and_livez_stays_up() {
    let mut cluster = Cluster::start_with(3, SHARDS, &http_extra(), true).await;
    let curl = Curl::new(&cluster);
    for index in 0..3 {
        let ready = curl
            .wait(index, "/readyz", "ready", |a| a.status == 200)
            .await;
        assert_eq!(ready.json()["ready"], true, "{}", ready.text());
        let live = curl.get(index, "/livez");
        assert_eq!(live.status, 200, "{}", live.text());
    }
    cluster.isolate(0).await;
    let cut_off = curl
        .wait(0, "/readyz", "503 when cut off", |a| a.status == 503)
        .await;
    let body = cut_off.json();
    assert_eq!(body["ready"], false, "{body}");
    let reasons = body["reasons"].as_array().cloned().unwrap_or_default();
    assert!(!reasons.is_empty(), "{body}");
    assert_eq!(curl.get(0, "/livez").status, 200);
    cluster.heal().await;
    curl.wait(0, "/readyz", "ready after healing", |a| a.status == 200)
        .await;
}
