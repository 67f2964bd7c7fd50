//! `ringctl` with etcdctl's habits and the database inspector, end to end with the real
//! binaries (`ringctl local up` running real `ringkvd` processes): `kv has` exit codes,
//! `kv watch --count/--timeout`, `--endpoints host:port` without node ids and without a config file, the `RINGCTL_*`
//! environment twins, `kv put` from stdin, `-w json|simple`, shell completion; and the
//! inspector reading a node killed with SIGKILL, offline, which must show exactly the keys and
//! values written, the puts in its Raft log at increasing indexes, and agree with what the
//! running node answered online. Every process is killed on drop; every wait is bounded.
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, reason = "tests: a failure is a test failure")]

mod common;

use common::{Cluster, clean_ringctl, ringctl, skip_without_ringkvd, test_port};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The tests of this file each run a cluster on the same loopback IPs: one at a time.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json(output: &Output) -> Value {
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(output)))
}

/// The flags that replace `ringctl.toml` for the cluster in `dir`.
fn tls_flags(dir: &Path) -> Vec<String> {
    let certs = dir.join("certs");
    let path = |name: &str| certs.join(name).to_string_lossy().into_owned();
    vec![
        "--cacert".into(),
        path("ca.pem"),
        "--cert".into(),
        path("client-ringctl.pem"),
        "--key".into(),
        path("client-ringctl.key"),
        "--cluster".into(),
        "local".into(),
    ]
}

#[test]
fn completion_prints_a_script_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef ringctl"),
        ("fish", "complete -c ringctl"),
    ] {
        let output = clean_ringctl()
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(output.status.success(), "{shell}: {output:?}");
        let script = stdout(&output);
        assert!(
            script.contains(marker),
            "{shell}: no {marker:?} in the script"
        );
        assert!(
            script.contains("inspect"),
            "{shell}: subcommands are listed"
        );
    }
    let bad = clean_ringctl()
        .args(["completion", "cmd"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
}

#[test]
fn etcdctl_habits_with_the_real_binaries() {
    if skip_without_ringkvd() {
        return;
    }
    let _one = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let cluster_dir = dir.path().join("cluster");
    let config = cluster_dir.join("ringctl.toml");
    let port = test_port(1);
    let cluster = Cluster::start(&cluster_dir, port);

    // kv has: exit 0 and "true" when present, exit 1 and "false" when absent.
    assert!(
        ringctl(&config, &["kv", "put", "hello", "world"])
            .status
            .success()
    );
    let has = ringctl(&config, &["kv", "has", "hello"]);
    assert_eq!(
        (has.status.code(), stdout(&has).as_str()),
        (Some(0), "true\n"),
        "{has:?}"
    );
    let has_not = ringctl(&config, &["kv", "has", "nope"]);
    assert_eq!(
        (has_not.status.code(), stdout(&has_not).as_str()),
        (Some(1), "false\n"),
        "{has_not:?}"
    );
    let has_stale = ringctl(&config, &["kv", "has", "hello", "--consistency", "stale"]);
    assert_eq!(has_stale.status.code(), Some(0), "{has_stale:?}");

    // kv put --ttl, kv ttl (ms left, `none` without a TTL, exit 1 once gone), kv persist.
    let put_ttl = ringctl(&config, &["kv", "put", "short", "v", "--ttl", "2s"]);
    let started = Instant::now();
    assert!(put_ttl.status.success(), "{put_ttl:?}");
    let left = ringctl(&config, &["kv", "ttl", "short"]);
    assert!(left.status.success(), "{left:?}");
    let ms: u64 = stdout(&left).trim().parse().unwrap();
    assert!(ms > 0 && ms <= 2_000, "{left:?}");
    assert!(
        ringctl(&config, &["kv", "put", "kept", "v", "--ttl", "1m"])
            .status
            .success()
    );
    let persist = ringctl(&config, &["kv", "persist", "kept"]);
    assert_eq!(stdout(&persist), "true\n", "{persist:?}");
    let none = ringctl(&config, &["kv", "ttl", "kept"]);
    assert_eq!(
        (none.status.code(), stdout(&none).as_str()),
        (Some(0), "none\n")
    );
    let ttl_json = json(&ringctl(&config, &["kv", "ttl", "hello", "-w", "json"]));
    assert_eq!(
        (ttl_json["exists"].clone(), ttl_json["ttl_ms"].clone()),
        (true.into(), Value::Null)
    );
    let bad = ringctl(&config, &["kv", "put", "x", "v", "--ttl", "0s"]);
    assert!(!bad.status.success(), "{bad:?}");
    std::thread::sleep(
        (started + Duration::from_millis(2_300)).saturating_duration_since(Instant::now()),
    );
    let gone = ringctl(&config, &["kv", "get", "short"]);
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    let gone = ringctl(&config, &["kv", "ttl", "short"]);
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    let kept = ringctl(&config, &["kv", "get", "kept"]);
    assert_eq!(
        (kept.status.code(), stdout(&kept).as_str()),
        (Some(0), "v\n"),
        "{kept:?}"
    );

    // kv watch: from a version, --count events then exit 0; --timeout ends a quiet watch.
    let first = json(&ringctl(
        &config,
        &["-w", "json", "kv", "put", "watched", "w1"],
    ));
    let after = first["version"].as_u64().unwrap().to_string();
    for value in ["w2", "w3"] {
        assert!(
            ringctl(&config, &["kv", "put", "watched", value])
                .status
                .success()
        );
    }
    let watched = ringctl(
        &config,
        &[
            "-w", "json", "kv", "watch", "watched", "--after", &after, "--count", "2",
        ],
    );
    assert!(watched.status.success(), "{watched:?}");
    let lines: Vec<Value> = stdout(&watched)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let values: Vec<&str> = lines.iter().filter_map(|l| l["value"].as_str()).collect();
    assert_eq!(values, ["w2", "w3"], "{watched:?}");
    assert!(
        lines
            .iter()
            .all(|l| l["type"] == "put" && l["key"] == "watched")
    );
    let plain = ringctl(
        &config,
        &[
            "kv",
            "watch",
            "watched",
            "--after",
            &after,
            "--count",
            "5",
            "--timeout",
            "1s",
        ],
    );
    assert!(plain.status.success(), "{plain:?}");
    let plain = stdout(&plain);
    assert_eq!(plain.lines().count(), 2, "{plain}");
    assert!(plain.starts_with("put watched w2 version="), "{plain}");

    // -w json on kv and status.
    let get = json(&ringctl(&config, &["-w", "json", "kv", "get", "hello"]));
    assert_eq!(get["value"], "world");
    assert_eq!(get["found"], true);
    let has = json(&ringctl(&config, &["kv", "has", "hello", "-w", "json"]));
    assert_eq!(has["exists"], true);
    let status = json(&ringctl(&config, &["status", "-w", "json"]));
    assert_eq!(status["shards"].as_array().map(Vec::len), Some(17));
    // `--json` still works, and means the same.
    let status_alias = json(&ringctl(&config, &["status", "--json"]));
    assert_eq!(status_alias["shards"].as_array().map(Vec::len), Some(17));
    // -w simple: rows without a header.
    let nodes = ringctl(&config, &["nodes", "-w", "simple"]);
    assert!(nodes.status.success(), "{nodes:?}");
    let lines: Vec<String> = stdout(&nodes).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with("1, 127.0.0.11:"), "{lines:?}");
    // status -w simple: the three node rows, then one row per shard (16 and PD's), no headers.
    let status = ringctl(&config, &["status", "-w", "simple"]);
    assert!(status.status.success(), "{status:?}");
    let lines: Vec<String> = stdout(&status).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3 + 17, "{lines:?}");
    assert!(lines[0].starts_with("n1, 127.0.0.11:"), "{lines:?}");
    assert!(lines.iter().all(|l| !l.contains("SHARD")), "{lines:?}");

    // Consistency names are listed possible values: a bad one is a usage error naming them.
    let bad = ringctl(
        &config,
        &["kv", "get", "hello", "--consistency", "eventual"],
    );
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    let message = String::from_utf8_lossy(&bad.stderr);
    assert!(
        message.contains("linearizable") && message.contains("lease") && message.contains("stale"),
        "{message}"
    );

    // kv put KEY reads the value from stdin (all of it, newlines included).
    let mut put = clean_ringctl()
        .arg("--config")
        .arg(&config)
        .args(["kv", "put", "from-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    put.stdin
        .take()
        .unwrap()
        .write_all(b"line one\nline two")
        .unwrap();
    let put = put.wait_with_output().unwrap();
    assert!(put.status.success(), "{put:?}");
    let get = ringctl(&config, &["kv", "get", "from-stdin"]);
    assert_eq!(get.stdout, b"line one\nline two\n", "{get:?}");

    // --endpoints host:port (no node ids) and TLS flags, with no config file at all.
    let endpoints = format!("127.0.0.11:{port},127.0.0.12:{port}");
    let flags = clean_ringctl()
        .env("RINGCTL_CONFIG", dir.path().join("absent.toml"))
        .args(["--endpoints", &endpoints])
        .args(tls_flags(&cluster_dir))
        .args(["kv", "get", "hello"])
        .output()
        .unwrap();
    assert_eq!(flags.stdout, b"world\n", "{flags:?}");
    // The client learned the other nodes' ids: status reaches all three.
    let flags_status = clean_ringctl()
        .env("RINGCTL_CONFIG", dir.path().join("absent.toml"))
        .args(["--endpoints", &format!("127.0.0.13:{port}")])
        .args(tls_flags(&cluster_dir))
        .args(["-w", "json", "status"])
        .output()
        .unwrap();
    let document = json(&flags_status);
    let reachable = document["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|node| node["reachable"] == true)
        .count();
    assert_eq!(reachable, 3, "{document}");

    // The environment twins, and flags over the environment.
    let flag_list = tls_flags(&cluster_dir);
    let env_twin = |name: &str| {
        let at = flag_list.iter().position(|f| f == name).unwrap();
        flag_list[at + 1].clone()
    };
    let with_env = |extra: &[&str]| {
        clean_ringctl()
            .env("RINGCTL_CONFIG", dir.path().join("absent.toml"))
            .env("RINGCTL_ENDPOINTS", format!("127.0.0.12:{port}"))
            .env("RINGCTL_CACERT", env_twin("--cacert"))
            .env("RINGCTL_CERT", env_twin("--cert"))
            .env("RINGCTL_KEY", env_twin("--key"))
            .env("RINGCTL_CLUSTER", "local")
            .env("RINGCTL_WRITE_OUT", "json")
            .args(extra)
            .output()
            .unwrap()
    };
    let env_has = with_env(&["kv", "has", "hello"]);
    assert_eq!(env_has.status.code(), Some(0), "{env_has:?}");
    assert_eq!(json(&env_has)["exists"], true);
    // A flag beats its twin: a wrong cluster name in the flag fails although the env is right.
    let flag_wins = with_env(&["--cluster", "other", "kv", "has", "hello"]);
    assert!(!flag_wins.status.success(), "{flag_wins:?}");
    // ... and a right flag beats a wrong variable.
    let fixed = clean_ringctl()
        .env("RINGCTL_ENDPOINTS", "127.0.0.99:1")
        .arg("--config")
        .arg(&config)
        .args([
            "--endpoints",
            &format!("127.0.0.11:{port}"),
            "kv",
            "has",
            "hello",
        ])
        .output()
        .unwrap();
    assert_eq!(fixed.status.code(), Some(0), "{fixed:?}");

    cluster.stop();
}

/// The keys and values a JSON `inspect data` answer shows, across shards.
fn data_of(document: &Value) -> BTreeMap<String, String> {
    let mut data = BTreeMap::new();
    for shard in document["shards"].as_array().unwrap() {
        assert_eq!(shard["more"], false, "{shard}");
        for entry in shard["entries"].as_array().unwrap() {
            let key = entry["key"].as_str().unwrap().to_string();
            let value = entry["value"].as_str().unwrap().to_string();
            assert!(data.insert(key, value).is_none(), "a key shown twice");
        }
    }
    data
}

fn inspect_offline(data_dir: &Path, args: &[&str]) -> Output {
    clean_ringctl()
        .arg("inspect")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn inspector_shows_a_killed_nodes_writes_offline_and_agrees_with_the_running_node() {
    if skip_without_ringkvd() {
        return;
    }
    let _one = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let cluster_dir = dir.path().join("cluster");
    let config = cluster_dir.join("ringctl.toml");
    let mut cluster = Cluster::start(&cluster_dir, test_port(2));

    // Writes, in order: 20 puts, an overwrite and a delete.
    let mut expected = BTreeMap::new();
    let mut puts: Vec<(String, String)> = Vec::new();
    for i in 0..20 {
        let (key, value) = (format!("key-{i:02}"), format!("value {i}"));
        let put = ringctl(&config, &["kv", "put", &key, &value]);
        assert!(put.status.success(), "{put:?}");
        expected.insert(key.clone(), value.clone());
        puts.push((key, value));
    }
    let put = ringctl(&config, &["kv", "put", "key-03", "second value"]);
    assert!(put.status.success(), "{put:?}");
    expected.insert("key-03".into(), "second value".into());
    puts.push(("key-03".into(), "second value".into()));
    assert!(
        ringctl(&config, &["kv", "delete", "key-07"])
            .status
            .success()
    );
    expected.remove("key-07");

    // Online: node 3 (a follower or leader, whichever) shows the same data once it applied
    // every write; bounded wait.
    let online_args = [
        "inspect", "--node", "3", "-w", "json", "data", "--limit", "1000",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let online = loop {
        let document = json(&ringctl(&config, &online_args));
        if data_of(&document) == expected {
            break document;
        }
        assert!(
            Instant::now() < deadline,
            "node 3 never showed the writes online: {:?}",
            data_of(&document)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let online_shard = online["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|shard| !shard["entries"].as_array().unwrap().is_empty())
        .unwrap()["shard"]
        .as_u64()
        .unwrap()
        .to_string();
    let online_raft = json(&ringctl(
        &config,
        &[
            "inspect",
            "--node",
            "3",
            "-w",
            "json",
            "raft",
            "--shard",
            &online_shard,
            "--limit",
            "1000",
        ],
    ));

    // A running node's dir is refused, clearly, and left alone.
    let node_1_dir = cluster_dir.join("node-1").join("data");
    let refused = inspect_offline(&node_1_dir, &["status"]);
    // Exit 5: "any other error" in docs/ringctl.md's exit-code table.
    assert_eq!(refused.status.code(), Some(5), "{refused:?}");
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("running ringkvd"), "{message}");

    cluster.kill_node(3);
    let data_dir = cluster_dir.join("node-3").join("data");

    // Offline data: exactly what was written, and what node 3 answered online.
    let offline = json(&inspect_offline(
        &data_dir,
        &["-w", "json", "data", "--limit", "1000"],
    ));
    assert_eq!(data_of(&offline), expected);
    assert_eq!(offline, online, "online and offline data views differ");

    // Offline raft: every put, in order, at increasing indexes; the online view is a prefix.
    let status = json(&inspect_offline(&data_dir, &["-w", "json", "status"]));
    assert_eq!(status["node"], 3, "{status}");
    let mut logged: Vec<(u64, String, String)> = Vec::new();
    let mut deleted: Vec<(u64, String)> = Vec::new();
    for shard in offline["shards"].as_array().unwrap() {
        let id = shard["shard"].as_u64().unwrap().to_string();
        let raft = json(&inspect_offline(
            &data_dir,
            &["raft", "--shard", &id, "--limit", "1000", "-w", "json"],
        ));
        assert_eq!(raft["more"], false);
        let entries = raft["entries"].as_array().unwrap();
        let indexes: Vec<u64> = entries
            .iter()
            .map(|e| e["index"].as_u64().unwrap())
            .collect();
        assert!(indexes.windows(2).all(|w| w[0] < w[1]), "{indexes:?}");
        for entry in entries.iter().filter(|e| e["kind"] == "put") {
            let op = &entry["ops"][0];
            logged.push((
                entry["index"].as_u64().unwrap(),
                op["key"].as_str().unwrap().to_string(),
                op["value"].as_str().unwrap().to_string(),
            ));
        }
        if id == online_shard {
            let online_entries = online_raft["entries"].as_array().unwrap();
            assert!(
                entries.len() >= online_entries.len()
                    && entries[..online_entries.len()] == online_entries[..],
                "the online raft view of shard {id} is not a prefix of the offline one"
            );
        }
        for entry in entries.iter().filter(|e| e["kind"] == "delete") {
            deleted.push((
                entry["index"].as_u64().unwrap(),
                entry["ops"][0]["key"].as_str().unwrap().to_string(),
            ));
        }
    }
    // Each written put appears once in some shard's log; per key, in the order written.
    let mut written_per_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (key, value) in &puts {
        written_per_key.entry(key).or_default().push(value);
    }
    let mut logged_per_key: BTreeMap<&str, Vec<(u64, &str)>> = BTreeMap::new();
    for (index, key, value) in &logged {
        logged_per_key.entry(key).or_default().push((*index, value));
    }
    assert_eq!(
        logged_per_key.keys().collect::<Vec<_>>(),
        written_per_key.keys().collect::<Vec<_>>()
    );
    for (key, values) in &written_per_key {
        let in_log = &logged_per_key[key];
        assert!(
            in_log.windows(2).all(|w| w[0].0 < w[1].0),
            "{key}: {in_log:?}"
        );
        let logged_values: Vec<&str> = in_log.iter().map(|(_, v)| *v).collect();
        assert_eq!(&logged_values, values, "{key}");
    }
    // The delete of key-07 is in its shard's log, after its put.
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0].1, "key-07");
    assert!(deleted[0].0 > logged_per_key["key-07"][0].0);
    let meta = json(&inspect_offline(&data_dir, &["meta", "-w", "json"]));
    for shard in meta["shards"].as_array().unwrap() {
        assert!(shard["error"].is_null(), "{shard}");
        let applied = shard["applied"]["index"].as_u64().unwrap();
        let last = shard["log"]["last"].as_u64().unwrap();
        assert!(applied <= last.max(shard["snapshot"]["index"].as_u64().unwrap()));
    }
    // Tables print too.
    let table = inspect_offline(&data_dir, &["data", "--limit", "5"]);
    assert!(table.status.success(), "{table:?}");
    assert!(stdout(&table).starts_with("SHARD"), "{}", stdout(&table));

    cluster.stop();
}
