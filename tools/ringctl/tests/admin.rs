//! The admin commands end to end: the real `ringctl` binary against fake nodes (real QUIC and
//! mTLS) whose placement driver is a real `ringkv_pd::PdState` applying the commands it gets.
//! Checks exit codes, one-line refusals, JSON that parses, and the state changes; and
//! `local add-node` on the same layout `local up` makes, with a stand-in `ringkvd`.
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, reason = "tests: a failure is a test failure")]

mod common;

use ringkv_client::test_support::FakeNodes;
use ringkv_pd::{Apply, Command, NodeRegistration, NodeState, PdState, Settings, test_support};
use ringkv_types::{
    AdminRequest, AdminResult, NodeAddress, NodeId, Request, Response, ShardId, WireError,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The name `local up` gives its clusters (add-node issues certificates for it).
const CLUSTER: &str = "local";
/// The fake node that leads the placement driver.
const PD_LEADER: NodeId = NodeId(2);

type Shared = Arc<Mutex<PdState>>;

fn answer(pd: &Shared, me: NodeId, request: Request) -> Response {
    let mut state = pd.lock().unwrap();
    let admin = match request {
        Request::Admin(admin) => admin,
        Request::Kv(_) | Request::WithToken { .. } | Request::Watch(_) => {
            return Response::Error(WireError::InvalidRequest {
                reason: "not faked".into(),
            });
        }
    };
    match admin {
        AdminRequest::GetShardMap => {
            Response::Admin(AdminResult::ShardMap(state.shard_map.clone()))
        }
        AdminRequest::GetNodes => Response::Admin(AdminResult::Nodes(
            state
                .nodes
                .values()
                .filter_map(|n| {
                    let addr = n.addr.parse::<std::net::SocketAddr>().ok()?.to_string();
                    Some(NodeAddress { node: n.id, addr })
                })
                .collect(),
        )),
        AdminRequest::Pd { .. } | AdminRequest::PdState | AdminRequest::PdPlan { .. }
            if me != PD_LEADER =>
        {
            Response::Error(WireError::NotLeader {
                leader_hint: Some(PD_LEADER),
                descriptor: None,
            })
        }
        AdminRequest::Pd { command } => {
            let command: Command = postcard::from_bytes(&command).unwrap();
            let result = state.apply(&command);
            state.check_invariants();
            let bytes = postcard::to_stdvec(&result).unwrap();
            Response::Admin(AdminResult::Pd(bytes.into()))
        }
        AdminRequest::PdState => {
            let bytes = postcard::to_stdvec(&*state).unwrap();
            Response::Admin(AdminResult::Pd(bytes.into()))
        }
        AdminRequest::PdPlan { balancing } => {
            let bytes = postcard::to_stdvec(&ringkv_pd::plan_with(&state, balancing)).unwrap();
            Response::Admin(AdminResult::Pd(bytes.into()))
        }
        _ => Response::Error(WireError::InvalidRequest {
            reason: "not faked".into(),
        }),
    }
}

struct Fake {
    pd: Shared,
    _nodes: FakeNodes,
    _dir: tempfile::TempDir,
    config: PathBuf,
}

fn registration(addr: &str) -> NodeRegistration {
    NodeRegistration {
        addr: addr.into(),
        labels: BTreeMap::new(),
        capacity_bytes: 1 << 30,
    }
}

/// Three fake nodes; PD knows them with four shards on all three, leaders spread (2, 1, 1).
async fn start() -> Fake {
    let validity = ringkv_client::test_support::validity();
    let pd: Shared = Arc::new(Mutex::new(PdState::new()));
    let answering = pd.clone();
    let nodes = FakeNodes::start(
        CLUSTER,
        1..=3,
        |_| {},
        move |node, request| answer(&answering, node, request),
    );
    let ca = &nodes.ca;
    let endpoints: Vec<(NodeId, SocketAddr)> = nodes
        .endpoints
        .iter()
        .map(|e| (e.node, nodes.addr(e.node)))
        .collect();
    {
        let mut state = pd.lock().unwrap();
        let map = test_support::round_robin_map(3, 4, 3);
        let shards = map.shards.clone();
        let nodes = endpoints
            .iter()
            .map(|(node, addr)| (*node, addr.to_string()));
        let bootstrap = test_support::bootstrap_at(CLUSTER, nodes, map, Settings::default());
        state.apply(&bootstrap).unwrap();
        for (descriptor, leader) in shards.iter().zip([1, 2, 3, 1]) {
            let report = ringkv_types::pd::ShardReport {
                descriptor: descriptor.clone(),
                leader: NodeId(leader),
                stats: Default::default(),
                caught_up_learners: Vec::new(),
                split_hint: None,
                now_ms: 2,
            };
            state.apply(&Command::ShardReport(report)).unwrap();
        }
    }
    // The layout `local up` makes: certs/ and ringctl.toml in the cluster directory.
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    ca.to_pem_pair().write(&certs, "ca").unwrap();
    ca.issue_client("ringctl", validity)
        .unwrap()
        .write(&certs, "client-ringctl")
        .unwrap();
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|(node, addr)| format!("\"{}@{addr}\"", node.get()))
        .collect();
    let config = dir.path().join("ringctl.toml");
    std::fs::write(
        &config,
        format!(
            "cluster = \"{CLUSTER}\"\nendpoints = [{}]\nrequest_timeout_ms = 3000\n\n[tls]\n\
             ca_cert = \"certs/ca.pem\"\ncert = \"certs/client-ringctl.pem\"\n\
             key = \"certs/client-ringctl.key\"\n",
            endpoints.join(", ")
        ),
    )
    .unwrap();
    Fake {
        pd,
        _nodes: nodes,
        _dir: dir,
        config,
    }
}

/// Runs ringctl with `args` (off the runtime's threads, which serve the fake nodes), without
/// the caller's `RINGCTL_*` environment ([`common::ringctl`]).
async fn ringctl(config: &Path, args: &[&str]) -> Output {
    let config = config.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::ringctl(&config, &args)
    })
    .await
    .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns stdout.
fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

/// Asserts exit code 5 (an error other than auth, availability or a missing key) with a
/// one-line error containing `needle`.
fn refused(output: &Output, needle: &str) {
    refused_with(output, 5, needle);
}

/// Asserts exit code `code` with a one-line error containing `needle`.
fn refused_with(output: &Output, code: i32, needle: &str) {
    let err = stderr(output);
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {err}",
        stdout(output)
    );
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_drive_the_placement_driver() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let fake = start().await;
        let config = fake.config.as_path();

        let nodes = json(&ok(&ringctl(config, &["nodes", "--json"]).await));
        assert_eq!(nodes["nodes"].as_array().map(Vec::len), Some(3));
        assert_eq!(nodes["nodes"][0]["replicas"], 4);
        assert_eq!(nodes["nodes"][0]["leaders"], 2);
        assert_eq!(nodes["pd_leader"], PD_LEADER.get());
        let table = ok(&ringctl(config, &["nodes"]).await);
        assert!(
            table.starts_with("placement driver leader: node 2\nID"),
            "{table}"
        );
        assert_eq!(table.lines().count(), 5);

        // Schedulers: off, listed off, then rebalance turns it back on; the cluster is already
        // balanced (4 replicas each, leaders 2/1/1), so it ends at once.
        ok(&ringctl(config, &["scheduler", "disable", "balance-leaders"]).await);
        let listed = json(&ok(&ringctl(config, &["scheduler", "list", "--json"]).await));
        assert_eq!(listed["schedulers"]["balance-leaders"], false);
        let out = ok(&ringctl(config, &["rebalance", "--timeout", "10"]).await);
        assert!(out.contains("enabled scheduler balance-leaders"), "{out}");
        assert!(out.contains("balanced after"), "{out}");
        let out = ok(&ringctl(config, &["rebalance", "--json"]).await);
        let last = out.lines().last().map(json).unwrap_or_default();
        assert_eq!(last["result"], "balanced", "{out}");
        assert!(fake.pd.lock().unwrap().settings.balance_leaders);

        // A fourth node joins with nothing: the dry run plans moves to it.
        fake.pd
            .lock()
            .unwrap()
            .apply(&Command::RegisterNode {
                node: registration("127.0.0.1:9"),
                now_ms: 3,
            })
            .unwrap();
        let dry = json(&ok(
            &ringctl(config, &["rebalance", "--dry-run", "--json"]).await
        ));
        assert_eq!(dry["balance"]["replica_spread"], 4);
        assert!(
            dry["plan"].as_array().is_some_and(|p| !p.is_empty()),
            "{dry}"
        );
        assert!(
            fake.pd.lock().unwrap().operators.is_empty(),
            "a dry run changes nothing"
        );
        // Nothing moves in the fake, so following the rebalance times out with exit 4; in JSON
        // mode every line on stdout is one JSON object.
        refused_with(
            &ringctl(config, &["rebalance", "--timeout", "2"]).await,
            4,
            "not finished after 2 s",
        );
        let output = ringctl(config, &["rebalance", "--timeout", "1", "--json"]).await;
        refused_with(&output, 4, "not finished after 1 s");
        let lines: Vec<Value> = stdout(&output).lines().map(json).collect();
        assert!(!lines.is_empty());
        assert!(lines.iter().all(|l| l["replicas"]["4"] == 0), "{lines:?}");

        // Operators: a move is created once; a second one on the busy shard is refused.
        let out = ok(&ringctl(config, &["move-shard", "1", "--from", "1", "--to", "4"]).await);
        assert!(
            out.contains("created operator op1: move shard 1 from n1 to n4"),
            "{out}"
        );
        refused(
            &ringctl(config, &["move-shard", "s1", "--from", "2", "--to", "4"]).await,
            "shard 1 is busy with operator op1",
        );
        let shards = json(&ok(&ringctl(config, &["shards", "--json"]).await));
        assert_eq!(
            shards["shards"][0]["operator"]["steps"][0],
            "add learner on n4"
        );
        refused(
            &ringctl(config, &["transfer-leader", "9", "--to", "1"]).await,
            "unknown shard",
        );
        refused(
            &ringctl(config, &["transfer-leader", "2", "--to", "4"]).await,
            "cannot change shard 2",
        );

        // --wait follows an operator to its end: the test plays the shard leader reporting
        // the transfer done.
        let waiting = {
            let config = config.to_path_buf();
            tokio::spawn(async move {
                ringctl(
                    &config,
                    &[
                        "transfer-leader",
                        "2",
                        "--to",
                        "3",
                        "--wait",
                        "--timeout",
                        "30",
                    ],
                )
                .await
            })
        };
        loop {
            let report = {
                let state = fake.pd.lock().unwrap();
                state.operators.get(&ShardId(2)).map(|_| {
                    let descriptor = state.descriptor(ShardId(2)).cloned().unwrap();
                    ringkv_types::pd::ShardReport {
                        descriptor,
                        leader: NodeId(3),
                        stats: Default::default(),
                        caught_up_learners: Vec::new(),
                        split_hint: None,
                        now_ms: state.now_ms + 1,
                    }
                })
            };
            if let Some(report) = report {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                let mut state = fake.pd.lock().unwrap();
                state.apply(&Command::ShardReport(report)).unwrap();
                assert!(!state.operators.contains_key(&ShardId(2)));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let out = ok(&waiting.await.unwrap());
        assert!(out.contains("created operator op2"), "{out}");
        assert!(
            out.contains("operator op2 finished: transfer the leadership of shard 2 to n3"),
            "{out}"
        );

        // Nodes: removal is refused while replicas remain; draining marks the node.
        refused(
            &ringctl(config, &["remove-node", "2"]).await,
            "node 2 still holds 4 replica(s); drain it first",
        );
        ok(&ringctl(config, &["drain-node", "3", "--no-wait"]).await);
        assert_eq!(
            fake.pd.lock().unwrap().nodes[&NodeId(3)].state,
            NodeState::Draining
        );
        refused(
            &ringctl(config, &["drain-node", "8", "--no-wait"]).await,
            "unknown node 8",
        );

        // Settings.
        ok(&ringctl(config, &["scheduler", "set", "max_operators", "8"]).await);
        assert_eq!(fake.pd.lock().unwrap().settings.max_operators, 8);
        refused(
            &ringctl(config, &["scheduler", "set", "max_operators", "0"]).await,
            "max_operators",
        );
        refused(
            &ringctl(config, &["scheduler", "enable", "balance"]).await,
            "unknown scheduler",
        );
    })
    .await
    .expect("finished within 120 s");
}

/// A stand-in `ringkvd` that only waits to be stopped.
fn fake_ringkvd(dir: &Path) -> PathBuf {
    let path = dir.join("fake-ringkvd");
    std::fs::write(&path, "#!/bin/sh\nexec sleep 600\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_add_node_registers_configures_and_runs_a_node_until_stopped() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let fake = start().await;
        let dir = fake.config.parent().unwrap().to_path_buf();
        let ringkvd = fake_ringkvd(&dir);
        let mut child = common::clean_ringctl()
            .args(["local", "add-node", "--dir"])
            .arg(&dir)
            .env("RINGKVD_BIN", &ringkvd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        // Lines until one contains `needle` (bounded), off the runtime's threads.
        let lines = Arc::new(Mutex::new(lines));
        let wait_line = |needle: &'static str| {
            let lines = lines.clone();
            tokio::task::spawn_blocking(move || {
                let lines = lines.lock().unwrap();
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                let mut seen = Vec::new();
                while let Ok(line) = lines
                    .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                {
                    let found = line.contains(needle);
                    seen.push(line);
                    if found {
                        return (true, seen);
                    }
                }
                (false, seen)
            })
        };
        // PD registers node 4 and add-node starts the stand-in, which cannot heartbeat: the
        // test heartbeats for it once it runs.
        let node = NodeId(4);
        let started = wait_line("started node 4").await.unwrap();
        assert!(
            started.0,
            "add-node never started the node: {:?}",
            started.1
        );
        {
            let mut state = fake.pd.lock().unwrap();
            let now_ms = state.now_ms + 1000;
            state
                .apply(&Command::NodeHeartbeat {
                    node,
                    stats: Default::default(),
                    now_ms,
                })
                .unwrap();
        }
        let seen = wait_line("is Up in the placement driver").await.unwrap();
        assert!(seen.0, "add-node never saw the node Up: {:?}", seen.1);
        let registered = fake.pd.lock().unwrap().nodes[&node].addr.clone();
        let port = fake.pd.lock().unwrap().nodes[&NodeId(1)]
            .addr
            .rsplit_once(':')
            .map(|(_, port)| port.to_string())
            .unwrap();
        assert_eq!(registered, format!("127.0.0.14:{port}"));
        assert!(dir.join("certs").join("node-4.pem").is_file());
        let config: toml::Table = toml::from_str(
            &std::fs::read_to_string(dir.join("node-4").join("ringkvd.toml")).unwrap(),
        )
        .unwrap();
        assert_eq!(config["node_id"].as_integer(), Some(4));
        assert_eq!(config["listen_addr"].as_str(), Some(registered.as_str()));
        assert_eq!(config["join"].as_array().map(Vec::len), Some(3));
        assert!(config.get("initial_cluster").is_none());
        // SIGTERM stops add-node, which stops its node and exits cleanly.
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        assert!(status.success(), "{status}");

        // Without a cluster directory: one clear line, exit 1.
        let empty = tempfile::tempdir().unwrap();
        let output = tokio::task::spawn_blocking({
            let path = empty.path().to_path_buf();
            move || {
                common::clean_ringctl()
                    .args(["local", "add-node", "--dir"])
                    .arg(path)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        refused(&output, "holds no local cluster");
    })
    .await
    .expect("finished within 120 s");
}
