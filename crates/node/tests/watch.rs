//! Watches through the client library against an in-process cluster: every acknowledged write
//! of a key seen exactly once and in order across a leader stop and a split that moves the key;
//! resume from a version with no gap and no duplicate; `Compacted` below the history; a
//! stalled watcher cancelled with `SlowWatcher`; a prefix watch that sees its namespace only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{Cluster, pd_config};
use ringkv_client::{BatchOp, Client, Error, Watch, WatchEvent, WatchEventType, WatchOptions};
use ringkv_pd::{AdminOperator, Command, Response as PdResponse};
use ringkv_transport::certs::Validity;
use ringkv_types::{ShardId, namespace, ring};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

/// A client with the `ringctl` certificate in `namespace`.
async fn connect(cluster: &Cluster, namespace: &str) -> Client {
    cluster.rust_client(Some(namespace)).await
}

/// The next event within `within`; panics on an error, `None` on silence.
async fn next_event(watch: &mut Watch, within: Duration) -> Option<WatchEvent> {
    match tokio::time::timeout(within, watch.next()).await {
        Ok(Some(Ok(event))) => Some(event),
        Ok(Some(Err(error))) => panic!("the watch failed: {error}"),
        Ok(None) => panic!("the watch ended"),
        Err(_) => None,
    }
}

fn value_of(event: &WatchEvent) -> Bytes {
    match &event.kind {
        WatchEventType::Put(value) => value.clone(),
        other => panic!("expected a put, got {other:?}"),
    }
}

/// Writes 1..=60 to one key, one at a time, while a watcher follows it; the shard's leader is
/// stopped after 20 writes and the shard split (moving the key to the new shard) after 40.
/// Every acknowledged write shows up exactly once, in order, with growing versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_watch_sees_every_acknowledged_write_once_across_a_leader_stop_and_a_split() {
    tokio::time::timeout(Duration::from_secs(300), async {
        let mut cluster = Cluster::start(3, 1, &pd_config(false)).await;
        cluster.wait_for_leaders(1, Duration::from_secs(30)).await;
        let client = connect(&cluster, "w").await;
        let first = client.put_versioned("hot", "0").await.unwrap();
        let mut watch = client
            .watch_with(
                "hot",
                WatchOptions {
                    after: Some(first),
                    ..WatchOptions::default()
                },
            )
            .unwrap();

        let mut acknowledged = Vec::new();
        for i in 1..=60u32 {
            if i == 21 {
                let leader = cluster.leader_of(ShardId(1)).await;
                println!("stopping the leader, node {}", leader + 1);
                cluster.stop_node(leader).await;
            }
            if i == 41 {
                // Split right at the key's position: the key goes to the new (right) shard.
                let stored = namespace::encode("w", b"hot").unwrap();
                let at = ring::position(&stored).max(1);
                let answer = cluster
                    .pd_call(&Command::AddOperator {
                        operator: AdminOperator::SplitShard {
                            shard: ShardId(1),
                            at: Some(at),
                        },
                        now_ms: 0,
                    })
                    .await;
                assert!(matches!(answer, Ok(PdResponse::Operator(_))), "{answer:?}");
                let deadline = Instant::now() + WAIT;
                let live = (0..3).find(|i| cluster.nodes[*i].is_some()).unwrap();
                loop {
                    let map = cluster.shard_map(live).await;
                    if map.shards.len() == 2 && map.covers_ring() {
                        break;
                    }
                    assert!(Instant::now() < deadline, "the split never showed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            if client.put("hot", i.to_string()).await.is_ok() {
                acknowledged.push(i);
            }
        }
        assert!(acknowledged.len() >= 50, "only {acknowledged:?} acknowledged");

        let mut seen: Vec<u32> = Vec::new();
        let mut versions = Vec::new();
        let mut shards = std::collections::BTreeSet::new();
        let deadline = Instant::now() + WAIT;
        while seen.last() != Some(&60) && Instant::now() < deadline {
            let Some(event) = next_event(&mut watch, Duration::from_secs(5)).await else {
                continue;
            };
            assert_eq!(event.key, Bytes::from("hot"));
            let value: u32 = std::str::from_utf8(&value_of(&event))
                .unwrap()
                .parse()
                .unwrap();
            seen.push(value);
            versions.push(event.version);
            shards.insert(event.shard);
        }
        // Exactly once and in order: strictly increasing values (a write that was not
        // acknowledged may or may not appear, once at most).
        assert!(
            seen.windows(2).all(|pair| pair[0] < pair[1]),
            "out of order or repeated: {seen:?}"
        );
        assert!(
            versions.windows(2).all(|pair| pair[0] < pair[1]),
            "versions not growing: {versions:?}"
        );
        let missing: Vec<u32> = acknowledged
            .iter()
            .filter(|value| !seen.contains(value))
            .copied()
            .collect();
        assert!(missing.is_empty(), "acknowledged but never seen: {missing:?}");
        assert_eq!(shards.len(), 2, "events from both sides of the split: {shards:?}");
        // Nothing more.
        assert!(next_event(&mut watch, Duration::from_millis(500)).await.is_none());
        println!(
            "watch across a leader stop and a split: {} writes acknowledged, {} events, shards {shards:?}",
            acknowledged.len(),
            seen.len()
        );
        cluster.stop_all().await;
    })
    .await
    .expect("the test ran too long");
}

/// Resume from a version after a reconnect (no gap, no duplicate), `Compacted` once the
/// history (4 KiB here) no longer holds the resume point, and a prefix watch that sees only
/// its own namespace's keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_compacted_and_namespaces() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let mut cluster = Cluster::start(3, 2, "[limits]\nwatch_history_bytes = 4096\n").await;
        cluster.wait_for_leaders(2, Duration::from_secs(30)).await;
        let client = connect(&cluster, "a").await;
        let mut versions = Vec::new();
        for i in 1..=5 {
            versions.push(client.put_versioned("k", format!("v{i}")).await.unwrap());
        }
        // After the second write: the third to the fifth, once each.
        let options = |after| WatchOptions {
            after: Some(after),
            ..WatchOptions::default()
        };
        let mut watch = client.watch_with("k", options(versions[1])).unwrap();
        for i in 3..=5 {
            let event = next_event(&mut watch, WAIT).await.expect("an event");
            assert_eq!(value_of(&event), Bytes::from(format!("v{i}")));
            assert_eq!(
                (event.version, event.index),
                (versions[i - 1], versions[i - 1])
            );
        }
        assert!(
            next_event(&mut watch, Duration::from_millis(500))
                .await
                .is_none()
        );
        drop(watch);
        // Written while nobody watched; resumed from the last index seen.
        client.put("k", "v6").await.unwrap();
        client.delete("k").await.unwrap();
        let mut watch = client.watch_with("k", options(versions[4])).unwrap();
        let put = next_event(&mut watch, WAIT).await.expect("the put");
        assert_eq!(value_of(&put), Bytes::from("v6"));
        let deleted = next_event(&mut watch, WAIT).await.expect("the delete");
        assert_eq!(deleted.kind, WatchEventType::Delete);
        assert!(deleted.version > put.version);
        assert!(
            next_event(&mut watch, Duration::from_millis(500))
                .await
                .is_none()
        );
        drop(watch);

        // A prefix watch in namespace "a" while "b" writes the same key names.
        let other = connect(&cluster, "b").await;
        let mut everything = client.watch_prefix("", WatchOptions::default()).unwrap();
        // Registered on every shard before the writes: wait until positions are known.
        let deadline = Instant::now() + WAIT;
        while everything.positions().len() < 2 {
            assert!(Instant::now() < deadline, "the prefix watch never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for i in 0..20 {
            other.put(format!("p{i}"), "theirs").await.unwrap();
        }
        client.put("p-mine", "mine").await.unwrap();
        let event = next_event(&mut everything, WAIT)
            .await
            .expect("our own write");
        assert_eq!(
            (event.key.clone(), value_of(&event)),
            (Bytes::from("p-mine"), Bytes::from("mine"))
        );
        assert!(
            next_event(&mut everything, Duration::from_millis(500))
                .await
                .is_none()
        );
        drop(everything);

        // 4 KiB of history: 100 writes of 100 bytes push the first ones out.
        for i in 0..100 {
            client.put("k", vec![b'x'; 100 + i % 2]).await.unwrap();
        }
        let mut watch = client.watch_with("k", options(versions[0])).unwrap();
        match tokio::time::timeout(WAIT, watch.next()).await {
            Ok(Some(Err(Error::Compacted { oldest, .. }))) => {
                assert!(oldest > versions[4], "oldest {oldest}");
            }
            other => panic!("expected Compacted, got {other:?}"),
        }
        cluster.stop_all().await;
    })
    .await
    .expect("the test ran too long");
}

/// A watcher that stops reading while 32 MiB are written is cancelled with `SlowWatcher`
/// (the node queues at most `watch_buffer_bytes_max` for it, here 1 MiB; the QUIC stream
/// window, 8 MiB, and the client's 64-event channel hold the rest of what it gets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watcher_is_cancelled_as_slow() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let mut cluster = Cluster::start(
            3,
            1,
            "[limits]\nwatch_buffer_bytes_max = 1048576\nclient_write_timeout_ms = 120000\n",
        )
        .await;
        cluster.wait_for_leaders(1, Duration::from_secs(30)).await;
        let client = connect(&cluster, "s").await;
        let mut watch = client.watch_prefix("", WatchOptions::default()).unwrap();
        let deadline = Instant::now() + WAIT;
        while watch.positions().is_empty() {
            assert!(Instant::now() < deadline, "the watch never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let value = Bytes::from(vec![b'v'; 32 * 1024]);
        for batch in 0..128 {
            let ops = (0..8)
                .map(|i| BatchOp::Put {
                    key: Bytes::from(format!("k{batch}-{i}")),
                    value: value.clone(),
                })
                .collect();
            // All keys of a batch must share a shard: one shard here.
            client.batch(ops).await.unwrap();
        }
        let mut events = 0;
        let outcome = loop {
            match tokio::time::timeout(WAIT, watch.next()).await {
                Ok(Some(Ok(_))) => events += 1,
                Ok(Some(Err(error))) => break error,
                other => panic!("expected the watch to end, got {other:?} after {events}"),
            }
        };
        assert!(
            matches!(outcome, Error::SlowWatcher { .. }),
            "expected SlowWatcher, got {outcome}"
        );
        assert!(events < 1024, "{events} events: nothing was dropped");
        println!("stalled watcher: {events} events delivered, then {outcome}");
        cluster.stop_all().await;
    })
    .await
    .expect("the test ran too long");
}

/// Reads `curl`'s output lines on a thread (curl is killed on drop).
struct SseReader {
    _child: common::ChildGuard,
    lines: std::sync::mpsc::Receiver<String>,
}

impl SseReader {
    fn start(cluster: &Cluster, path: &str) -> Self {
        use std::io::BufRead;
        let certs = cluster.dir.path().join("certs");
        cluster
            .ca
            .issue_client("ringctl", Validity::days_from_now(1))
            .unwrap()
            .write(&certs, "client-ringctl")
            .unwrap();
        let file = |name: &str| certs.join(name).display().to_string();
        let mut child = std::process::Command::new("curl")
            .args(["-sS", "-N", "--max-time", "60", "--cacert"])
            .arg(file("ca.pem"))
            .arg("--cert")
            .arg(file("client-ringctl.pem"))
            .arg("--key")
            .arg(file("client-ringctl.key"))
            .arg(format!("https://{}{path}", cluster.http_addrs[0]))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("curl runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            _child: common::ChildGuard(child),
            lines,
        }
    }

    /// The next SSE event as (name, id, data JSON), skipping comments; `None` on silence.
    fn next(&self, within: Duration) -> Option<(String, String, serde_json::Value)> {
        let deadline = Instant::now() + within;
        let (mut name, mut id) = (String::new(), String::new());
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            if let Some(rest) = line.strip_prefix("event: ") {
                name = rest.to_string();
            } else if let Some(rest) = line.strip_prefix("id: ") {
                id = rest.to_string();
            } else if let Some(rest) = line.strip_prefix("data: ") {
                return Some((name, id, serde_json::from_str(rest).unwrap()));
            }
        }
    }
}

/// `GET /v1/watch` through real `curl`: puts, a delete and a resume from a version as SSE
/// events; `compacted` as an `error` event once the history moved past the resume point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_watch_streams_server_sent_events() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let extra = format!(
            "http_addr = \"{}\"\n[limits]\nwatch_history_bytes = 4096\n",
            common::HTTP_ADDR
        );
        let mut cluster = Cluster::start_with(3, 2, &extra, false).await;
        cluster.wait_for_leaders(2, Duration::from_secs(30)).await;
        let client = connect(&cluster, "h").await;
        let first = client.put_versioned("sse", "a").await.unwrap();
        client.put("sse", "b").await.unwrap();
        let reader = SseReader::start(
            &cluster,
            &format!("/v1/watch?key=sse&namespace=h&after={first}"),
        );
        let (name, id, data) = reader.next(WAIT).expect("the resumed put");
        assert_eq!(
            (name.as_str(), data["key"].as_str(), data["value"].as_str()),
            ("put", Some("sse"), Some("b"))
        );
        assert_eq!(id, format!("{}:{}", data["shard"], data["index"]));
        client.delete("sse").await.unwrap();
        let (name, _, data) = reader.next(WAIT).expect("the delete");
        assert_eq!(
            (name.as_str(), data["reason"].as_str()),
            ("delete", Some("deleted"))
        );
        assert!(
            reader.next(Duration::from_millis(500)).is_none(),
            "nothing more"
        );
        drop(reader);

        // Past the 4 KiB history: an error event, then the end.
        for i in 0..100 {
            client.put("sse", vec![b'x'; 100 + i % 2]).await.unwrap();
        }
        let reader = SseReader::start(
            &cluster,
            &format!("/v1/watch?key=sse&namespace=h&after={first}"),
        );
        let (name, _, data) = reader.next(WAIT).expect("the error event");
        assert_eq!(
            (name.as_str(), data["code"].as_str()),
            ("error", Some("compacted")),
            "{data}"
        );
        cluster.stop_all().await;
    })
    .await
    .expect("the test ran too long");
}
