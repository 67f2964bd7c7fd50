//! The data API beyond single keys, through the client library against a real cluster:
//! versions (returned by reads and writes, compare-and-swap on them), batch gets across
//! shards, and a scan that runs while its shard splits and keys churn: every key present for
//! the whole scan is returned exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{Cluster, pd_config};
use ringkv_client::{Client, ReadConsistency, ScanOptions};
use ringkv_pd::{AdminOperator, Command, Response as PdResponse};
use ringkv_types::ShardId;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

/// A client with the `ringctl` certificate (admin, raw keys) or in `namespace`.
async fn connect(cluster: &Cluster, namespace: Option<&str>) -> Client {
    cluster.rust_client(namespace).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_batch_gets_and_version_compares() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let mut cluster = Cluster::start(3, 4, "").await;
        cluster.wait_for_leaders(4, Duration::from_secs(30)).await;
        let client = connect(&cluster, None).await;

        // A write answers its version; a read returns it; a rewrite raises it.
        let first = client.put_versioned("k", "1").await.unwrap();
        let read = client
            .get_versioned("k", ReadConsistency::Linearizable)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((read.value, read.version), (Bytes::from("1"), first));
        let second = client.put_versioned("k", "2").await.unwrap();
        assert!(second > first, "{second} after {first}");

        // Compare on the version: a stale one fails and answers the current one.
        let stale = client
            .compare_version_and_swap("k", first, Some(Bytes::from("x")))
            .await
            .unwrap();
        assert!(!stale.succeeded);
        assert_eq!(stale.previous_version, second);
        assert_eq!(stale.previous, Some(Bytes::from("2")));
        let swapped = client
            .compare_version_and_swap("k", second, Some(Bytes::from("3")))
            .await
            .unwrap();
        assert!(swapped.succeeded);
        let now = client
            .get_versioned("k", ReadConsistency::Linearizable)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((now.value, now.version), (Bytes::from("3"), swapped.index));
        // 0 = absent: create-if-absent, once.
        let create = |key: &'static str| client.compare_version_and_swap(key, 0, Some("c".into()));
        assert!(create("fresh").await.unwrap().succeeded);
        assert!(!create("fresh").await.unwrap().succeeded);
        // A deleting version compare.
        let version = client
            .get_versioned("fresh", ReadConsistency::Lease)
            .await
            .unwrap()
            .unwrap()
            .version;
        let deleted = client
            .compare_version_and_swap("fresh", version, None)
            .await
            .unwrap();
        assert!(deleted.succeeded);
        assert_eq!(client.get("fresh").await.unwrap(), None);

        // A batch get over keys of every shard, with absent keys, in the order asked.
        let keys: Vec<String> = (0..60).map(|i| format!("many-{i}")).collect();
        let mut versions = BTreeMap::new();
        for key in keys.iter().step_by(2) {
            let version = client
                .put_versioned(key.clone(), key.clone())
                .await
                .unwrap();
            versions.insert(key.clone(), version);
        }
        let shards: std::collections::BTreeSet<ShardId> = {
            let map = cluster.shard_map(0).await;
            keys.iter()
                .filter_map(|key| map.shard_for_key(key.as_bytes()).map(|d| d.id))
                .collect()
        };
        assert_eq!(shards.len(), 4, "the keys cover every shard");
        for consistency in [
            ReadConsistency::Linearizable,
            ReadConsistency::Lease,
            ReadConsistency::Stale,
        ] {
            let wire: Vec<Bytes> = keys.iter().map(|k| Bytes::from(k.clone())).collect();
            let found = client.get_many(wire, consistency).await.unwrap();
            assert_eq!(found.len(), keys.len());
            for (key, found) in keys.iter().zip(&found) {
                match versions.get(key) {
                    Some(version) if consistency != ReadConsistency::Stale => {
                        let found = found.as_ref().expect(key);
                        assert_eq!(
                            (&found.value[..], found.version),
                            (key.as_bytes(), *version)
                        );
                    }
                    Some(_) => {}
                    None => assert!(found.is_none(), "{key}"),
                }
            }
        }
        cluster.stop_all().await;
    })
    .await
    .expect("the test ran too long");
}

/// Scans page by page while the shard holding the cursor splits (through PD) and other keys
/// are written and deleted: every key present for the whole scan comes back exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_survives_a_split_without_losing_or_repeating_keys() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let mut cluster = Cluster::start(3, 1, &pd_config(false)).await;
        cluster.wait_for_leaders(1, Duration::from_secs(30)).await;
        let client = connect(&cluster, Some("scan")).await;
        let stable: Vec<String> = (0..300).map(|i| format!("stable-{i}")).collect();
        for key in &stable {
            client.put(key.clone(), key.clone()).await.unwrap();
        }

        // Churn: keys that come and go during the scan (may or may not be seen).
        let stop = Arc::new(AtomicBool::new(false));
        let churn = {
            let client = client.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("churn-{}", round % 40);
                    if round.is_multiple_of(3) {
                        let _ = client.delete(key).await;
                    } else {
                        let _ = client.put(key, "c").await;
                    }
                    round += 1;
                }
            })
        };

        let mut scan = client
            .scan(
                "",
                ScanOptions {
                    page_size: 25,
                    ..ScanOptions::default()
                },
            )
            .unwrap();
        let mut seen: BTreeMap<Bytes, u32> = BTreeMap::new();
        let mut pages = 0;
        let mut split_done = false;
        while let Some(page) = scan.next_page().await.unwrap() {
            pages += 1;
            for entry in page {
                assert!(entry.value.is_some());
                *seen.entry(entry.key).or_default() += 1;
            }
            if pages == 3 && !split_done {
                // Cut the shard right after the cursor's position: the scan continues in the
                // (new) right shard, with a map that no longer matches.
                let cursor = scan.cursor().unwrap();
                let position = u64::from_be_bytes(cursor[..8].try_into().unwrap());
                let at = position.checked_add(1 << 40).filter(|at| *at > position);
                let answer = cluster
                    .pd_call(&Command::AddOperator {
                        operator: AdminOperator::SplitShard {
                            shard: ShardId(1),
                            at,
                        },
                        now_ms: 0,
                    })
                    .await;
                assert!(matches!(answer, Ok(PdResponse::Operator(_))), "{answer:?}");
                let deadline = Instant::now() + WAIT;
                loop {
                    let map = cluster.shard_map(0).await;
                    if map.shards.len() == 2 && map.covers_ring() {
                        break;
                    }
                    assert!(Instant::now() < deadline, "the split never showed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                split_done = true;
            }
        }
        stop.store(true, Ordering::Relaxed);
        churn.await.unwrap();
        assert!(
            split_done,
            "the scan ended before the split ({pages} pages)"
        );
        let twice: Vec<_> = seen.iter().filter(|(_, count)| **count > 1).collect();
        assert!(twice.is_empty(), "keys returned twice: {twice:?}");
        for key in &stable {
            assert_eq!(seen.get(key.as_bytes()), Some(&1), "{key} missing");
        }
        let extra: Vec<_> = seen
            .keys()
            .filter(|key| !key.starts_with(b"stable-") && !key.starts_with(b"churn-"))
            .collect();
        assert!(extra.is_empty(), "keys nobody wrote: {extra:?}");
        println!(
            "scan during split: {} pages, {} keys ({} stable, all once)",
            pages,
            seen.len(),
            stable.len()
        );

        // A prefix scan, keys only; another namespace's keys stay invisible.
        let other = connect(&cluster, Some("other")).await;
        other.put("stable-x", "not scan's").await.unwrap();
        let mut prefixed = client
            .scan(
                "stable-1",
                ScanOptions {
                    page_size: 7,
                    keys_only: true,
                    ..ScanOptions::default()
                },
            )
            .unwrap();
        let mut keys = Vec::new();
        while let Some(entry) = prefixed.next().await.unwrap() {
            assert!(entry.value.is_none());
            keys.push(String::from_utf8(entry.key.to_vec()).unwrap());
        }
        keys.sort();
        let mut expected: Vec<String> = stable
            .iter()
            .filter(|k| k.starts_with("stable-1"))
            .cloned()
            .collect();
        expected.sort();
        assert_eq!(keys, expected);
        cluster.stop_all().await;
    })
    .await
    .expect("the test ran too long");
}
