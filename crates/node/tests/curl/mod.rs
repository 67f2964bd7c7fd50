//! `curl` against the HTTP API of a test cluster's nodes, over HTTPS with the cluster CA and by
//! default the `root` client certificate: the one wrapper of `http.rs` and `http_data.rs`.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failure is a test failure"
)]

use crate::common::Cluster;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// An answer of curl: the status (0 when no HTTP answer came) and the body.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status (0 when no HTTP answer came).
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Runs `curl` against node `index` of `cluster`, by default with the `root` client
/// certificate (`client-ringctl`).
pub struct Curl {
    ca: PathBuf,
    out: PathBuf,
    bases: Vec<String>,
    root: Vec<String>,
}

impl Curl {
    /// Issues the `root` client certificate (`client-ringctl`) in the cluster's `certs`.
    pub fn new(cluster: &Cluster) -> Self {
        let certs = cluster.dir.path().join("certs");
        cluster
            .ca
            .issue_client(
                "ringctl",
                ringkv_transport::certs::Validity::days_from_now(1),
            )
            .unwrap()
            .write(&certs, "client-ringctl")
            .unwrap();
        let root = vec![
            "--cert".to_string(),
            certs.join("client-ringctl.pem").display().to_string(),
            "--key".to_string(),
            certs.join("client-ringctl.key").display().to_string(),
        ];
        Self {
            root,
            ca: cluster.dir.path().join("certs/ca.pem"),
            out: cluster.dir.path().join("curl.out"),
            bases: cluster
                .http_addrs
                .iter()
                .map(|addr| format!("https://{addr}"))
                .collect(),
        }
    }

    /// `curl [args] https://<node index>/<path>` as `root` (its client certificate).
    pub fn run(&self, index: usize, args: &[&str], path: &str) -> Answer {
        let root: Vec<&str> = self.root.iter().map(String::as_str).collect();
        self.run_as(index, &root, args, path)
    }

    /// `curl [credentials] [args] https://<node index>/<path>`.
    pub fn run_as(&self, index: usize, credentials: &[&str], args: &[&str], path: &str) -> Answer {
        let _ = std::fs::remove_file(&self.out);
        let url = format!("{}{path}", self.bases[index]);
        let output = Command::new("curl")
            .args(["-sS", "--max-time", "15", "--cacert"])
            .arg(&self.ca)
            .arg("-o")
            .arg(&self.out)
            .args(["-w", "%{http_code}"])
            .args(credentials)
            .args(args)
            .arg(&url)
            .output()
            .unwrap_or_else(|e| panic!("cannot run curl: {e}"));
        let status = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        let body = std::fs::read(&self.out).unwrap_or_default();
        if status == 0 {
            eprintln!("curl {url}: {}", String::from_utf8_lossy(&output.stderr));
        }
        Answer { status, body }
    }

    /// `GET https://<node index>/<path>` as `root`.
    pub fn get(&self, index: usize, path: &str) -> Answer {
        self.run(index, &[], path)
    }

    /// Repeats `curl` until `accept` holds (bounded), returning the accepted answer.
    pub async fn wait(
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

    /// `curl -i [args]` against node `index` as `root`: the status, the response headers
    /// (lowercase) and the body as text.
    pub fn head_and_body(&self, index: usize, args: &[&str], path: &str) -> (u16, String, String) {
        let with_headers: Vec<&str> = std::iter::once("-i").chain(args.iter().copied()).collect();
        let answer = self.run(index, &with_headers, path);
        let text = answer.text().replace("\r\n", "\n");
        let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
        (answer.status, head.to_lowercase(), body.to_string())
    }

    /// `curl [args]` against node `index` as `root`: the status and the body as JSON.
    pub fn json_at(&self, index: usize, args: &[&str], path: &str) -> (u16, serde_json::Value) {
        let answer = self.run(index, args, path);
        (answer.status, answer.json())
    }
}
