//! Watches under faults, end to end (and versions across a split, which resumes rely on): a key watch that sees every acknowledged write exactly
//! once across kill -9 of the shard leader's `ringkvd` process (and a resume from the last
//! version it saw); a prefix watch across a split of the shard holding the prefix, resumed from
//! its positions in the split-created shard; a key watch resumed from an event's index in a
//! split-created shard, from the version a read returned there, and from a version the key had
//! before the split.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{Cluster, pd_config};
use ringkv_client::{Client, Watch, WatchEvent, WatchEventType, WatchOptions};
use ringkv_pd::{AdminOperator, Command, Response as PdResponse};
use ringkv_types::{ReadConsistency, ShardId, namespace, ring};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(60);
const NAMESPACE: &str = "w";

/// Events collected by a task that reads a watch until told to stop.
struct Collector {
    events: Arc<Mutex<Vec<WatchEvent>>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<Watch>,
}

impl Collector {
    fn start(mut watch: Watch) -> Collector {
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (events, stop) = (events.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(100), watch.next()).await {
                        Ok(Some(Ok(event))) => events.lock().unwrap().push(event),
                        Ok(Some(Err(error))) => panic!("the watch failed: {error}"),
                        Ok(None) => panic!("the watch ended"),
                        Err(_) => {}
                    }
                }
                watch
            })
        };
        Collector { events, stop, task }
    }

    /// Waits (bounded) until `done` holds for the events, then stops; returns the watch and
    /// the events.
    async fn finish(self, done: impl Fn(&[WatchEvent]) -> bool) -> (Watch, Vec<WatchEvent>) {
        let deadline = Instant::now() + WAIT;
        while !done(&self.events.lock().unwrap()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        let watch = self.task.await.unwrap();
        let events = std::mem::take(&mut *self.events.lock().unwrap());
        (watch, events)
    }
}

fn value_of(event: &WatchEvent) -> u32 {
    match &event.kind {
        WatchEventType::Put(value) => std::str::from_utf8(value).unwrap().parse().unwrap(),
        other => panic!("expected a put, got {other:?}"),
    }
}

/// The ring position of `key` in [`NAMESPACE`].
fn position(key: &str) -> u64 {
    ring::position(&namespace::encode(NAMESPACE, key.as_bytes()).unwrap())
}

/// Splits shard 1 at `at` through PD and waits until node `live`'s map shows two shards.
async fn split(cluster: &mut Cluster, at: u64, live: usize) {
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
    loop {
        let map = cluster.shard_map(live).await;
        if map.shards.len() == 2 && map.covers_ring() {
            return;
        }
        assert!(Instant::now() < deadline, "the split never showed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The term of shard 1 on node `index`, if it answers.
async fn term_on(cluster: &mut Cluster, index: usize) -> u64 {
    let status = cluster.status(index).await;
    let replica = status.replicas.iter().find(|r| r.shard == ShardId(1));
    replica.map_or(0, |replica| replica.term.get())
}

/// Kills (-9) the leader of shard 1 and waits until another node leads it in a higher term.
/// Returns the killed node's index.
async fn kill_the_leader(cluster: &mut Cluster) -> usize {
    let leader = cluster.leader_of(ShardId(1)).await;
    let term_before = term_on(cluster, leader).await;
    cluster.kill_node(leader);
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let successor = cluster.leader_among(ShardId(1), &others).await;
    let term = term_on(cluster, successor).await;
    assert!(
        term > term_before,
        "node {} leads in term {term} after the leader (term {term_before}) was killed",
        successor + 1
    );
    println!(
        "killed node {} (leader in term {term_before}); node {} leads in term {term}",
        leader + 1,
        successor + 1
    );
    leader
}

/// Writes 1..=100 to one key, one at a time, while a watcher follows it; kill -9 of the
/// shard leader's process after 20 writes (restarted after 35) and again after 60 (restarted
/// after 75); after 50 the watch is dropped and a new one resumes from the last version it
/// saw. Every acknowledged write shows up exactly once, in order, with the version its put
/// answered; a write that was not acknowledged shows up once at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_watch_sees_every_acknowledged_write_once_across_kill_9_of_the_leader() {
    tokio::time::timeout(Duration::from_secs(400), async {
        let mut cluster = Cluster::start_with(3, 1, &pd_config(false), true).await;
        cluster.wait_for_leaders(1, Duration::from_secs(30)).await;
        let client = cluster.rust_client(Some(NAMESPACE)).await;
        let first = client.put_versioned("hot", "0").await.unwrap();
        let options = |after| WatchOptions {
            after: Some(after),
            ..WatchOptions::default()
        };
        let mut collector = Some(Collector::start(
            client.watch_with("hot", options(first)).unwrap(),
        ));
        let mut before_resume = Vec::new();
        let mut killed = None;
        let mut acknowledged: BTreeMap<u32, u64> = BTreeMap::new();
        for i in 1..=100u32 {
            if i == 21 || i == 61 {
                killed = Some(kill_the_leader(&mut cluster).await);
            }
            if i == 36 || i == 76 {
                let index = killed.take().unwrap();
                cluster.start_node(index).await;
                println!("restarted node {}", index + 1);
            }
            if i == 51 {
                // Resume from the last version seen, as a client that reconnects would.
                let seen = collector.take().unwrap();
                let (watch, events) = seen.finish(|_| true).await;
                drop(watch);
                let last = events.last().map_or(first, |event| event.index);
                println!(
                    "resuming after version {last} ({} events so far)",
                    events.len()
                );
                before_resume = events;
                collector = Some(Collector::start(
                    client.watch_with("hot", options(last)).unwrap(),
                ));
            }
            if let Ok(version) = client.put_versioned("hot", i.to_string()).await {
                acknowledged.insert(i, version);
            }
        }
        assert!(
            acknowledged.len() >= 90,
            "only {acknowledged:?} acknowledged"
        );
        let last_acknowledged = *acknowledged.keys().next_back().unwrap();
        let (_watch, after_resume) = collector
            .take()
            .unwrap()
            .finish(|events| events.iter().any(|e| value_of(e) == last_acknowledged))
            .await;

        let events: Vec<&WatchEvent> = before_resume.iter().chain(&after_resume).collect();
        let seen: Vec<u32> = events.iter().map(|e| value_of(e)).collect();
        assert!(
            seen.windows(2).all(|pair| pair[0] < pair[1]),
            "out of order or repeated: {seen:?}"
        );
        for (value, version) in &acknowledged {
            let event = events.iter().find(|e| value_of(e) == *value);
            let event =
                event.unwrap_or_else(|| panic!("{value} acknowledged, never seen: {seen:?}"));
            assert_eq!(event.version, *version, "version of {value}");
            assert_eq!(event.key, Bytes::from("hot"));
        }
        assert!(
            before_resume.iter().any(|e| value_of(e) > 20)
                && after_resume.iter().any(|e| value_of(e) > 60),
            "events after each kill"
        );
        println!(
            "watch across two kill -9 of the leader and a resume: {} acknowledged, {} events \
             ({} before the resume)",
            acknowledged.len(),
            seen.len(),
            before_resume.len()
        );
        cluster.stop_all().await;
    })
    .await
    .expect("the test ran too long");
}

/// A prefix watch on `p/` while 12 keys under it and 4 outside it are written; shard 1 (the
/// only one) splits in the middle of the ring after 40 rounds; after 80 the watch is dropped
/// and a new one resumes from its per-shard positions (one of them in the split-created
/// shard). Every acknowledged write under the prefix is seen exactly once, in order per key,
/// at the index its put answered, with growing versions per key; nothing outside the prefix;
/// events from both shards. Seen failing before the client kept reloading the map after a
/// split until PD showed the new shard: the watch never followed it (`positions` had shard 1
/// only, 43 of 80 events seen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_watch_sees_every_write_once_across_a_split_and_resumes_in_the_new_shard() {
    tokio::time::timeout(Duration::from_secs(300), async {
        let mut cluster = Cluster::start(3, 1, &pd_config(false)).await;
        cluster.wait_for_leaders(1, Duration::from_secs(30)).await;
        let client = cluster.rust_client(Some(NAMESPACE)).await;
        let watch = client.watch_prefix("p/", WatchOptions::default()).unwrap();
        let deadline = Instant::now() + WAIT;
        while watch.positions().is_empty() {
            assert!(Instant::now() < deadline, "the prefix watch never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let middle = 1u64 << 63;
        let keys: Vec<String> = (0..12).map(|k| format!("p/{k}")).collect();
        let right = keys.iter().filter(|k| position(k) >= middle).count();
        assert!(
            (1..keys.len()).contains(&right),
            "keys on both sides of the split: {right} of {}",
            keys.len()
        );
        let mut collector = Some(Collector::start(watch));
        let mut before_resume = Vec::new();
        let mut acknowledged: BTreeMap<(String, u32), u64> = BTreeMap::new();
        let mut positions = BTreeMap::new();
        for i in 1..=120u32 {
            if i == 41 {
                split(&mut cluster, middle, 0).await;
                println!("split at round {i}");
            }
            if i == 81 {
                let (watch, events) = collector.take().unwrap().finish(|_| true).await;
                positions = watch.positions();
                drop(watch);
                println!(
                    "resuming from {positions:?} ({} events so far)",
                    events.len()
                );
                before_resume = events;
                let options = WatchOptions {
                    positions: positions.clone(),
                    ..WatchOptions::default()
                };
                collector = Some(Collector::start(
                    client.watch_prefix("p/", options).unwrap(),
                ));
            }
            let key = &keys[i as usize % keys.len()];
            if let Ok(version) = client.put_versioned(key.clone(), i.to_string()).await {
                acknowledged.insert((key.clone(), i), version);
            }
            // Outside the prefix: never seen.
            let _ = client.put(format!("q/{}", i % 4), i.to_string()).await;
        }
        assert!(
            acknowledged.len() >= 110,
            "only {} acknowledged",
            acknowledged.len()
        );
        assert_eq!(
            positions.len(),
            2,
            "positions in both shards: {positions:?}"
        );
        let total = acknowledged.len();
        let (_watch, after_resume) = collector
            .take()
            .unwrap()
            .finish(|events| before_resume.len() + events.len() >= total)
            .await;

        let events: Vec<&WatchEvent> = before_resume.iter().chain(&after_resume).collect();
        let mut per_key: BTreeMap<Bytes, Vec<u32>> = BTreeMap::new();
        let mut shards = BTreeSet::new();
        for event in &events {
            assert!(
                event.key.starts_with(b"p/"),
                "outside the prefix: {event:?}"
            );
            per_key
                .entry(event.key.clone())
                .or_default()
                .push(value_of(event));
            shards.insert(event.shard);
        }
        for (key, values) in &per_key {
            assert!(
                values.windows(2).all(|pair| pair[0] < pair[1]),
                "{key:?}: out of order or repeated: {values:?}"
            );
        }
        for ((key, value), version) in &acknowledged {
            let event = events
                .iter()
                .find(|e| e.key == key.as_bytes() && value_of(e) == *value)
                .unwrap_or_else(|| panic!("{key}={value} acknowledged, never seen"));
            // The put answers its log index; in the split-created shard the stored version
            // may be above it (the key kept its parent's version; docs/data-model.md).
            assert_eq!(event.index, *version, "index of {key}={value}");
            assert!(
                event.version >= event.index,
                "version of {key}={value}: {event:?}"
            );
        }
        let mut versions: BTreeMap<&Bytes, Vec<u64>> = BTreeMap::new();
        for event in &events {
            versions.entry(&event.key).or_default().push(event.version);
        }
        for (key, versions) in &versions {
            assert!(
                versions.windows(2).all(|pair| pair[0] < pair[1]),
                "{key:?}: versions not growing: {versions:?}"
            );
        }
        assert_eq!(
            shards.len(),
            2,
            "events from both sides of the split: {shards:?}"
        );
        assert!(
            after_resume.iter().any(|e| e.shard != ShardId(1)),
            "the resumed watch saw the split-created shard"
        );
        println!(
            "prefix watch across a split and a resume: {} acknowledged, {} events, shards \
             {shards:?}",
            acknowledged.len(),
            events.len()
        );
        cluster.stop_all().await;
    })
    .await
    .expect("the test ran too long");
}

/// A cluster of one shard whose log is pushed past 60, split in the middle of the ring, and a
/// key of the split-created shard written before the split: (cluster, client, key, the key's
/// version, which it keeps from the parent).
/// A key moved to a split-created shard: its version before the split, then the versions of
/// `later` more writes of it (values 101, 102, ...) made in the parent before the split.
async fn split_created_key(later: u32) -> (Cluster, Client, String, u64, Vec<u64>) {
    let mut cluster = Cluster::start(3, 1, &pd_config(false)).await;
    cluster.wait_for_leaders(1, Duration::from_secs(30)).await;
    let client: Client = cluster.rust_client(Some(NAMESPACE)).await;
    let middle = 1u64 << 63;
    // Push the parent's log well past where the new shard's will be.
    for i in 0..60 {
        client.put(format!("fill-{i}"), "x").await.unwrap();
    }
    let key = (0..)
        .map(|k| format!("moved-{k}"))
        .find(|k| position(k) >= middle)
        .unwrap();
    let before = client.put_versioned(key.clone(), "0").await.unwrap();
    let mut parent_writes = Vec::new();
    for i in 1..=later {
        parent_writes.push(
            client
                .put_versioned(key.clone(), (100 + i).to_string())
                .await
                .unwrap(),
        );
    }
    split(&mut cluster, middle, 0).await;
    client.shard_map().await.unwrap();
    let read = client
        .get_versioned(key.clone(), ReadConsistency::Linearizable)
        .await
        .unwrap()
        .expect("the key survives the split");
    let last = parent_writes.last().copied().unwrap_or(before);
    assert_eq!(read.version, last, "the split keeps the version");
    let shard = client
        .shard_for_key(&namespace::encode(NAMESPACE, key.as_bytes()).unwrap())
        .unwrap()
        .id;
    assert_ne!(shard, ShardId(1), "{key} is in the split-created shard");
    (cluster, client, key, before, parent_writes)
}

/// The next `count` events of `watch` (value, version, index), within 10 s, and nothing more
/// for half a second.
async fn next_events(watch: &mut Watch, count: usize) -> Vec<(u32, u64, u64)> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < count && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), watch.next()).await {
            Ok(Some(Ok(event))) => seen.push((value_of(&event), event.version, event.index)),
            Ok(other) => panic!("the watch ended: {other:?}"),
            Err(_) => {}
        }
    }
    if let Ok(more) = tokio::time::timeout(Duration::from_millis(500), watch.next()).await {
        panic!("more than {count} events: {seen:?}, then {more:?}");
    }
    seen
}

/// A split-created shard's log continues at the split, so a key's events there carry versions
/// equal to their log indexes, above the version the key had in the parent. A key watch
/// resumed from the last event's index sees the writes after it, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_watch_resumes_from_an_event_index_in_a_split_created_shard() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let (mut cluster, client, key, before, _) = split_created_key(0).await;
        let mut watch = client.watch(key.clone()).unwrap();
        let deadline = Instant::now() + WAIT;
        while watch.positions().is_empty() {
            assert!(Instant::now() < deadline, "the watch never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        client.put(key.clone(), "1").await.unwrap();
        let first = next_events(&mut watch, 1).await;
        let (_, version, index) = first[0];
        assert!(
            version > before && index == version,
            "the version is the new shard's index, above the parent's: {first:?} (version \
             before the split {before})"
        );
        drop(watch);
        let mut written = Vec::new();
        for i in 2..=3u32 {
            written.push(
                client
                    .put_versioned(key.clone(), i.to_string())
                    .await
                    .unwrap(),
            );
        }
        let options = WatchOptions {
            after: Some(index),
            ..WatchOptions::default()
        };
        let mut watch = client.watch_with(key.clone(), options).unwrap();
        let seen = next_events(&mut watch, 2).await;
        let values: Vec<u32> = seen.iter().map(|(value, ..)| *value).collect();
        let indexes: Vec<u64> = seen.iter().map(|(_, _, index)| *index).collect();
        assert_eq!(
            values,
            [2, 3],
            "the writes after the event, once each: {seen:?}"
        );
        assert_eq!(indexes, written, "each at the index its put answered");
        println!("{key}: first event {first:?}, after resuming from index {index}: {seen:?}");
        cluster.stop_all().await;
    })
    .await
    .expect("the test ran too long");
}

/// The same resume from the version a read returned after the split (the key's last write
/// in the parent), which `WatchOptions::after` documents as a resume point: the writes after
/// the read, once each. (Failed while the new shard's log restarted at index 5: `left: []`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_watch_resumes_from_a_read_version_in_a_split_created_shard() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let (mut cluster, client, key, before, _) = split_created_key(0).await;
        let options = WatchOptions {
            after: Some(before),
            ..WatchOptions::default()
        };
        let mut watch = client.watch_with(key.clone(), options).unwrap();
        let mut written = Vec::new();
        for i in 1..=3u32 {
            written.push(
                client
                    .put_versioned(key.clone(), i.to_string())
                    .await
                    .unwrap(),
            );
        }
        let seen = next_events(&mut watch, 3).await;
        let values: Vec<u32> = seen.iter().map(|(value, ..)| *value).collect();
        let indexes: Vec<u64> = seen.iter().map(|(_, _, index)| *index).collect();
        assert_eq!(
            values,
            [1, 2, 3],
            "the writes after the read, once each: {seen:?}"
        );
        assert_eq!(indexes, written, "each at the index its put answered");
        cluster.stop_all().await;
    })
    .await
    .expect("the test ran too long");
}

/// A resume in the split-created shard from a version the key had *before* the split: the
/// key's later writes in the parent come from the new shard's copy of the parent's history,
/// then its writes in the new shard; each once, in order, at the index its put answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_watch_resumes_in_the_new_shard_from_a_version_seen_before_the_split() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let (mut cluster, client, key, before, parent_writes) = split_created_key(2).await;
        let options = WatchOptions {
            after: Some(before),
            ..WatchOptions::default()
        };
        let mut watch = client.watch_with(key.clone(), options).unwrap();
        let mut written = parent_writes.clone();
        written.push(client.put_versioned(key.clone(), "3").await.unwrap());
        let seen = next_events(&mut watch, 3).await;
        let indexes: Vec<u64> = seen.iter().map(|(_, _, index)| *index).collect();
        assert_eq!(
            indexes, written,
            "the two writes in the parent after the version, then the one in the new shard: \
             {seen:?}"
        );
        assert!(
            written[1] < written[2],
            "the new shard's log continues the parent's"
        );
        cluster.stop_all().await;
    })
    .await
    .expect("the test ran too long");
}

/// Versions keep growing across a split: a key deleted and written again in the split-created
/// shard gets a version above every version it had in the parent, so a compare-and-swap holding
/// a version from before the split fails. (While the new shard's log restarted at index 5, the
/// rewritten key got a small version, and one the key once had in the parent would match.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rewritten_in_a_split_created_shard_never_gets_an_old_version_back() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let (mut cluster, client, key, before, parent_writes) = split_created_key(1).await;
        let last_in_parent = parent_writes[0];
        client.delete(key.clone()).await.unwrap();
        let rewritten = client.put_versioned(key.clone(), "7").await.unwrap();
        assert!(
            rewritten > last_in_parent,
            "rewritten at version {rewritten}, at or below its version {last_in_parent} in the \
             parent"
        );
        for stale in [before, last_in_parent] {
            let outcome = client
                .compare_version_and_swap(key.clone(), stale, Some(Bytes::from("8")))
                .await
                .unwrap();
            assert!(!outcome.succeeded, "a stale version {stale} matched");
            assert_eq!(outcome.previous_version, rewritten);
        }
        let outcome = client
            .compare_version_and_swap(key.clone(), rewritten, Some(Bytes::from("9")))
            .await
            .unwrap();
        assert!(outcome.succeeded, "the current version matches");
        assert!(outcome.index > rewritten);
        cluster.stop_all().await;
    })
    .await
    .expect("the test ran too long");
}
