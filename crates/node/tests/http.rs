//! The HTTP API of real `ringkvd` processes, driven with real `curl` over HTTPS (the cluster CA
//! as `--cacert`): health endpoints, the KV routes with forwarding, errors, `/metrics`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod curl;

use common::{Cluster, FAULT_INJECTION, HTTP_ADDR};
use curl::Curl;
use std::process::Command;
use std::time::{Duration, Instant};

const SHARDS: u64 = 4;

fn http_extra() -> String {
    format!("http_addr = \"{HTTP_ADDR}\"\n{FAULT_INJECTION}")
}

/// `/livez` answers while the process runs; `/readyz` is 200 once the node is joined, its map
/// fresh and every local shard has a leader, 503 with reasons on a node cut off from its peers,
/// and 200 again after healing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_a_partition_and_livez_stays_up() {
    // JSON logs, and every request "slow" (>= 1 ms) so each leaves a line with its request id.
    let extra = format!(
        "log_format = \"json\"\nslow_request_ms = 1\n{}",
        http_extra()
    );
    let mut cluster = Cluster::start_with(3, SHARDS, &extra, true).await;
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

    // A forwarded write takes well over 1 ms (quorum and fsync): a slow request.
    let put = curl.run(0, &["-X", "PUT", "--data-binary", "v"], "/v1/kv/slow");
    assert_eq!(put.status, 204, "{}", put.text());
    // The log is JSON lines; slow requests carry the request span (id, method, path).
    let log = std::fs::read_to_string(cluster.dir.path().join("node-1.log")).unwrap();
    let mut slow = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let entry: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        if entry["fields"]["message"] == "slow request" {
            slow.push(entry);
        }
    }
    assert!(!slow.is_empty(), "no slow-request line in\n{log}");
    let span = &slow[0]["span"];
    assert_eq!(span["name"], "http", "{}", slow[0]);
    assert!(span["request_id"].as_u64().is_some(), "{}", slow[0]);
    assert!(
        span["path"].as_str().is_some_and(|p| p.starts_with('/')),
        "{}",
        slow[0]
    );
    let mut ids: Vec<u64> = slow
        .iter()
        .filter_map(|e| e["span"]["request_id"].as_u64())
        .collect();
    let count = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), count, "request ids repeat");
}

/// The key routes through real curl: any node serves any key (forwarded to the leader), reads
/// by consistency, HEAD, DELETE, cas 200/409, a batch, binary keys, 413 and 400, and a killed
/// shard leader: the next request through a follower succeeds after re-election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_routes_forward_to_leaders_and_survive_a_killed_leader() {
    let extra = format!("{}[limits]\nmax_value_bytes = 1024\n", http_extra());
    let mut cluster = Cluster::start_with(3, SHARDS, &extra, true).await;
    cluster
        .wait_for_leaders(SHARDS, Duration::from_secs(30))
        .await;
    let curl = Curl::new(&cluster);
    for index in 0..3 {
        curl.wait(index, "/readyz", "ready", |a| a.status == 200)
            .await;
    }
    // PUT on node 2, linearizable GET on node 3, stale GET on node 1.
    let put = curl.run(1, &["-X", "PUT", "--data-binary", "hello"], "/v1/kv/tour");
    assert_eq!(put.status, 204, "{}", put.text());
    let get = curl.get(2, "/v1/kv/tour");
    assert_eq!((get.status, get.text().as_str()), (200, "hello"));
    let lin = curl.get(2, "/v1/kv/tour?consistency=linearizable");
    assert_eq!((lin.status, lin.text().as_str()), (200, "hello"));
    curl.wait(0, "/v1/kv/tour?consistency=stale", "stale read", |a| {
        a.status == 200 && a.body == b"hello"
    })
    .await;
    // HEAD: 200 and 404, no body.
    assert_eq!(curl.run(0, &["-I"], "/v1/kv/tour").status, 200);
    assert_eq!(curl.run(0, &["-I"], "/v1/kv/absent").status, 404);
    // A missing key is a JSON 404.
    let missing = curl.get(1, "/v1/kv/absent");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "not_found");
    // DELETE, then 404.
    assert_eq!(curl.run(2, &["-X", "DELETE"], "/v1/kv/tour").status, 204);
    assert_eq!(curl.get(0, "/v1/kv/tour").status, 404);
    // Compare-and-swap: create when absent (200), then a wrong expectation (409 + current).
    let cas = |index: usize, body: &str| {
        curl.run(
            index,
            &[
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "--data-binary",
                body,
            ],
            "/v1/kv/lock/cas",
        )
    };
    let created = cas(0, r#"{"expected": null, "new": "v1"}"#);
    assert_eq!(created.status, 200, "{}", created.text());
    assert_eq!(created.json()["swapped"], true);
    let conflict = cas(1, r#"{"expected": "v0", "new": "v2"}"#);
    assert_eq!(conflict.status, 409, "{}", conflict.text());
    assert_eq!(conflict.json()["swapped"], false);
    assert_eq!(conflict.json()["current"], "v1");
    let swapped = cas(2, r#"{"expected": "v1", "new_b64": "AP8="}"#);
    assert_eq!(swapped.status, 200, "{}", swapped.text());
    let binary = curl.get(0, "/v1/kv/lock");
    assert_eq!(
        (binary.status, binary.body.as_slice()),
        (200, &b"\x00\xff"[..])
    );
    // Binary keys: percent-encoded bytes.
    let put = curl.run(
        0,
        &["-X", "PUT", "--data-binary", "b"],
        "/v1/kv/%FF%00k%2Fx",
    );
    assert_eq!(put.status, 204, "{}", put.text());
    assert_eq!(curl.get(1, "/v1/kv/%ff%00k%2fx").body, b"b");
    // A batch (atomic, one shard: the same key twice).
    let batch = curl.run(
        1,
        &[
            "-X",
            "POST",
            "--data-binary",
            r#"{"ops": [{"op": "put", "key": "bk", "value": "1"}, {"op": "put", "key": "bk", "value": "2"}]}"#,
        ],
        "/v1/batch",
    );
    assert_eq!(batch.status, 204, "{}", batch.text());
    assert_eq!(curl.get(2, "/v1/kv/bk").body, b"2");
    // Limits: 413 for a value over max_value_bytes and a key over max_key_bytes.
    let big = cluster.dir.path().join("big.bin");
    std::fs::write(&big, vec![b'x'; 2000]).unwrap();
    let at_big = format!("@{}", big.display());
    let too_big = curl.run(0, &["-X", "PUT", "--data-binary", &at_big], "/v1/kv/big");
    assert_eq!(too_big.status, 413, "{}", too_big.text());
    assert_eq!(too_big.json()["error"]["code"], "too_large");
    let long_key = format!("/v1/kv/{}", "k".repeat(5000));
    let too_long = curl.run(0, &["-X", "PUT", "--data-binary", "v"], &long_key);
    assert_eq!(too_long.status, 413, "{}", too_long.text());
    // 400 for a bad consistency name, an unknown parameter, a bad JSON body.
    let bad = curl.get(0, "/v1/kv/bk?consistency=strong");
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(bad.json()["error"]["code"], "bad_request");
    assert_eq!(curl.get(0, "/v1/kv/bk?consistensy=stale").status, 400);
    assert_eq!(cas(0, "{not json").status, 400);
    assert_eq!(cas(0, r#"{"new": "x"}"#).status, 400);

    // The cluster documents, from any node.
    let status = curl.get(2, "/v1/cluster/status");
    assert_eq!(status.status, 200, "{}", status.text());
    let status = status.json();
    assert_eq!(
        status["nodes"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    assert!(
        status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["reachable"] == true),
        "{status}"
    );
    assert_eq!(
        status["shards"].as_array().map(Vec::len),
        Some(SHARDS as usize + 1),
        "the data shards and PD's group 0: {status}"
    );
    let shards = curl.get(0, "/v1/cluster/shards").json();
    assert_eq!(
        shards["shards"].as_array().map(Vec::len),
        Some(SHARDS as usize)
    );
    let nodes = curl.get(1, "/v1/cluster/nodes").json();
    assert_eq!(nodes["nodes"].as_array().map(Vec::len), Some(3), "{nodes}");
    assert_eq!(nodes["nodes"][0]["state"], "Up", "{nodes}");
    let openapi = curl.get(0, "/v1/openapi.yaml");
    assert_eq!(openapi.status, 200);
    assert!(
        openapi.text().starts_with("openapi: 3"),
        "{}",
        openapi.text()
    );

    // Kill the leader of the shard of "failover"; the next write through a follower succeeds
    // once a new leader is elected (the embedded client retries within its budget).
    let map = cluster.shard_map(0).await;
    let shard = map.shard_for_key(b"failover").unwrap().id;
    let leader = cluster.leader_of(shard).await;
    cluster.kill_node(leader);
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let put = curl.run(
        survivors[0],
        &["-X", "PUT", "--data-binary", "after"],
        "/v1/kv/failover",
    );
    assert_eq!(put.status, 204, "{}", put.text());
    let get = curl.get(survivors[1], "/v1/kv/failover");
    assert_eq!((get.status, get.text().as_str()), (200, "after"));
}

/// One parsed sample line of the Prometheus text format.
fn samples(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other
                .parse()
                .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}")),
        };
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            name.starts_with("ringkv_")
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        samples.push((series.to_string(), value));
    }
    samples
}

/// The sum of every sample whose series starts with `prefix` (a name, maybe with labels).
fn total(samples: &[(String, f64)], prefix: &str) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| series.starts_with(prefix))
        .map(|(_, value)| value)
        .sum()
}

/// `promtool check metrics` (Debian's `prometheus` package; .ci/run installs it) on `text`.
fn promtool_check(text: &str) {
    use std::io::Write as _;
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!("promtool not installed: only the built-in parse checked /metrics");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `/metrics` parses as Prometheus text (and passes promtool's lint), every series is
/// `ringkv_`-prefixed, and counters move with traffic: HTTP requests, proposals, group commits,
/// transport bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_traffic() {
    let mut cluster = Cluster::start_with(3, SHARDS, &http_extra(), true).await;
    cluster
        .wait_for_leaders(SHARDS, Duration::from_secs(30))
        .await;
    let curl = Curl::new(&cluster);
    for index in 0..3 {
        curl.wait(index, "/readyz", "ready", |a| a.status == 200)
            .await;
    }
    let scrape = |index: usize| {
        let answer = curl.get(index, "/metrics");
        assert_eq!(answer.status, 200, "{}", answer.text());
        let text = answer.text();
        promtool_check(&text);
        samples(&text)
    };
    let before: Vec<_> = (0..3).map(scrape).collect();
    const PUTS: usize = 20;
    for i in 0..PUTS {
        let put = curl.run(
            0,
            &["-X", "PUT", "--data-binary", "v"],
            &format!("/v1/kv/m{i}"),
        );
        assert_eq!(put.status, 204, "{}", put.text());
    }
    assert_eq!(curl.get(0, "/v1/kv/m0").status, 200);
    let after: Vec<_> = (0..3).map(scrape).collect();
    let puts =
        |s: &[(String, f64)]| total(s, "ringkv_http_requests_total{op=\"put\",result=\"ok\"}");
    assert_eq!(
        puts(&after[0]) - puts(&before[0]),
        PUTS as f64,
        "{:?}",
        after[0]
            .iter()
            .filter(|(series, _)| series.starts_with("ringkv_http"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        total(
            &after[0],
            "ringkv_http_request_duration_seconds_count{op=\"get\"}"
        ),
        1.0
    );
    let sum = |all: &[Vec<(String, f64)>], prefix: &str| -> f64 {
        all.iter().map(|s| total(s, prefix)).sum()
    };
    for (prefix, at_least) in [
        ("ringkv_raft_proposals_total", PUTS as f64),
        ("ringkv_storage_group_commit_entries_count", 1.0),
        ("ringkv_storage_fsync_duration_seconds_count", 1.0),
        ("ringkv_transport_bytes_total", 1.0),
        ("ringkv_client_requests_total", PUTS as f64),
        // The embedded client's puts, answered by the shard leaders' native service.
        (
            "ringkv_requests_total{op=\"put\",result=\"ok\"}",
            PUTS as f64,
        ),
    ] {
        let moved = sum(&after, prefix) - sum(&before, prefix);
        assert!(
            moved >= at_least,
            "{prefix} moved by {moved}, expected >= {at_least}"
        );
    }
    // Which node leads what depends on the elections at start; over the three nodes every
    // shard has one leader.
    let leaders = sum(&after, "ringkv_raft_shards{role=\"leader\"}");
    assert!(
        leaders >= SHARDS as f64,
        "{leaders} leaders over the nodes, expected >= {SHARDS}"
    );
    for name in [
        "ringkv_process_resident_memory_bytes",
        "ringkv_process_open_fds",
        "ringkv_storage_disk_bytes",
        "ringkv_transport_rtt_seconds",
    ] {
        assert!(total(&after[0], name) > 0.0, "{name} is zero or missing");
    }
    // Every metric the Grafana dashboard queries exists in a live /metrics.
    let live: std::collections::BTreeSet<String> = after
        .iter()
        .flatten()
        .map(|(series, _)| series.split('{').next().unwrap_or_default().to_string())
        .collect();
    let dashboard_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/ringkv.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboard_path).unwrap()).unwrap();
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("ringkv_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 15, "{queried:?}");
    let missing: Vec<&String> = queried
        .iter()
        .filter(|name| !live.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries unknown metrics {missing:?}"
    );

    let leaders = sum(&after, "ringkv_raft_shards{role=\"leader\"}");
    assert_eq!(
        leaders,
        (SHARDS + 1) as f64,
        "every shard and PD has one leader"
    );
}

/// Authentication and namespaces over HTTP: 401 without credentials or with a bad token, a
/// token from `POST /v1/auth/token`, per-user namespaces (isolation), 403 for another user's
/// namespace and for admin-only routes, admins reaching any namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_namespaces_401_and_403() {
    let mut cluster = Cluster::start_with(3, SHARDS, &http_extra(), true).await;
    cluster
        .wait_for_leaders(SHARDS, Duration::from_secs(30))
        .await;
    let curl = Curl::new(&cluster);
    curl.wait(0, "/readyz", "ready", |a| a.status == 200).await;
    for (name, password) in [
        ("alice", "alice's long password"),
        ("bob", "bob's long password"),
    ] {
        let hash = ringkv_node::auth::password::hash(&ringkv_types::Secret::new(password)).unwrap();
        let command = ringkv_pd::Command::Auth {
            command: ringkv_pd::AuthCommand::AddUser {
                name: name.into(),
                password_hash: hash,
            },
            now_ms: 0,
        };
        cluster.pd_call(&command).await.unwrap();
    }
    // No credentials, or a bad token: 401.
    let anonymous = curl.run_as(0, &[], &[], "/v1/kv/doc");
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    assert_eq!(anonymous.json()["error"]["code"], "unauthenticated");
    let forged = curl.run_as(
        0,
        &["-H", "Authorization: Bearer not.a.token"],
        &[],
        "/v1/kv/doc",
    );
    assert_eq!(forged.status, 401, "{}", forged.text());
    // Probes need no credentials.
    assert_eq!(curl.run_as(0, &[], &[], "/livez").status, 200);
    // Logins: a wrong password is 401, a right one gives a token. The user table reaches
    // every node through PD; wait until node 2 knows alice.
    let login = |index: usize, user: &str, password: &str| {
        let body = serde_json::json!({ "user": user, "password": password }).to_string();
        curl.run_as(
            index,
            &[],
            &["-X", "POST", "--data-binary", &body],
            "/v1/auth/token",
        )
    };
    let wrong = login(1, "alice", "guess");
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    let deadline = Instant::now() + Duration::from_secs(30);
    let token = |user: &str, password: &str| loop {
        let answer = login(1, user, password);
        if answer.status == 200 {
            let body = answer.json();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            assert!(body["expires_at"].as_u64().unwrap() > now, "{body}");
            return body["token"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "login: {} {}",
            answer.status,
            answer.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let alice = format!(
        "Authorization: Bearer {}",
        token("alice", "alice's long password")
    );
    let bob = format!(
        "Authorization: Bearer {}",
        token("bob", "bob's long password")
    );
    // Alice writes in her namespace through node 3 and reads it back through node 1.
    let put = curl.run_as(
        2,
        &["-H", &alice],
        &["-X", "PUT", "--data-binary", "a"],
        "/v1/kv/doc",
    );
    assert_eq!(put.status, 204, "{}", put.text());
    let get = curl.run_as(0, &["-H", &alice], &[], "/v1/kv/doc");
    assert_eq!((get.status, get.text().as_str()), (200, "a"));
    // Bob's `doc` is another key (his namespace); alice's namespace is refused to him.
    assert_eq!(curl.run_as(0, &["-H", &bob], &[], "/v1/kv/doc").status, 404);
    let denied = curl.run_as(0, &["-H", &bob], &[], "/v1/kv/doc?namespace=alice");
    assert_eq!(denied.status, 403, "{}", denied.text());
    assert_eq!(denied.json()["error"]["code"], "permission_denied");
    let denied = curl.run_as(
        1,
        &["-H", &bob],
        &["-X", "PUT", "--data-binary", "b"],
        "/v1/kv/doc?namespace=alice",
    );
    assert_eq!(denied.status, 403, "{}", denied.text());
    // The PD state (users) is for administrators; routing status is for everyone.
    assert_eq!(
        curl.run_as(0, &["-H", &bob], &[], "/v1/cluster/shards")
            .status,
        403
    );
    assert_eq!(
        curl.run_as(0, &["-H", &bob], &[], "/v1/cluster/status")
            .status,
        200
    );
    // root (the client-ringctl certificate) reaches alice's namespace; raw keys without one.
    let admin = curl.get(1, "/v1/kv/doc?namespace=alice");
    assert_eq!((admin.status, admin.text().as_str()), (200, "a"));
    assert_eq!(curl.get(1, "/v1/kv/doc").status, 404);
    // A token on a connection with a certificate counts as neither (as natively).
    let both = curl.run(0, &["-H", &alice], "/v1/kv/doc");
    assert_eq!(both.status, 401, "{}", both.text());
}
