//! Keys with a time-to-live against a real 3-node cluster through the client library: a key is
//! there until its time is up and then absent for every read consistency on every node; a put
//! refreshes or clears the TTL; `persist` clears it; the expiry survives a leader change (the
//! expiry time is in the replicated value, and the new leader removes the key); and the
//! removal goes through the log, so every replica's store drops the key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{Cluster, kv};
use ringkv_client::{Client, KeyTtl, ReadConsistency};
use ringkv_types::inspect::{InspectRequest, InspectResult};
use ringkv_types::{AdminRequest, AdminResult, KvOp, KvResult, NodeId, Request, Response};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

async fn connect(cluster: &Cluster) -> Client {
    cluster.rust_client(None).await
}

/// The keys node `index` stores (as written, expired or not), from its inspector.
async fn stored_keys(cluster: &mut Cluster, index: usize) -> BTreeSet<String> {
    let answer = cluster
        .call(
            index,
            Request::Admin(AdminRequest::Inspect(InspectRequest::Data {
                shard: None,
                limit: 1000,
            })),
        )
        .await;
    let Response::Admin(AdminResult::Inspect(InspectResult::Data(shards))) = answer else {
        panic!("inspect answered {answer:?}");
    };
    shards
        .iter()
        .flat_map(|shard| &shard.entries)
        .map(|entry| String::from_utf8_lossy(&entry.key.bytes).into_owned())
        .collect()
}

/// A stale read of `key` on node `index` (its own applied state, its own clock).
async fn stale_get(cluster: &mut Cluster, index: usize, key: &str) -> Option<Bytes> {
    let map = cluster.shard_map(index).await;
    let descriptor = map.shard_for_key(key.as_bytes()).unwrap().clone();
    let op = KvOp::Get {
        key: Bytes::copy_from_slice(key.as_bytes()),
        consistency: ReadConsistency::Stale,
    };
    match cluster.call(index, kv(&descriptor, None, op)).await {
        Response::Kv(KvResult::Value { value, .. }) => value,
        other => panic!("stale get on node {} answered {other:?}", index + 1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_keys_expire_on_every_replica_through_the_log_across_a_leader_change() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let mut cluster = Cluster::start(3, 1, "").await;
        cluster.wait_for_leaders(1, Duration::from_secs(30)).await;
        let client = connect(&cluster).await;
        let shard = cluster.shard_map(0).await.shards[0].id;
        let short = Duration::from_secs(3);

        // There, with a positive TTL no longer than asked.
        let started = Instant::now();
        client.put_with_ttl("short", "v", short).await.unwrap();
        client.put_with_ttl("moved", "v", short).await.unwrap();
        client.put_with_ttl("refreshed", "v", short).await.unwrap();
        client.put_with_ttl("cleared", "v", short).await.unwrap();
        client.put_with_ttl("persisted", "v", short).await.unwrap();
        client.put("plain", "v").await.unwrap();
        assert_eq!(client.get("short").await.unwrap(), Some(Bytes::from("v")));
        match client.ttl("short").await.unwrap() {
            KeyTtl::Expires(left) => assert!(left > Duration::ZERO && left <= short, "{left:?}"),
            other => panic!("ttl answered {other:?}"),
        }
        assert_eq!(client.ttl("plain").await.unwrap(), KeyTtl::Persistent);
        assert_eq!(client.ttl("never-written").await.unwrap(), KeyTtl::Absent);
        assert!(matches!(
            client.put_with_ttl("zero", "v", Duration::ZERO).await,
            Err(ringkv_client::Error::InvalidTtl { .. })
        ));

        // Refresh with a longer TTL; clear one with a plain put; persist one.
        client
            .put_with_ttl("refreshed", "w", Duration::from_secs(120))
            .await
            .unwrap();
        client.put("cleared", "w").await.unwrap();
        assert!(client.persist("persisted").await.unwrap());
        assert!(!client.persist("persisted").await.unwrap(), "no TTL left");
        assert!(!client.persist("never-written").await.unwrap());
        assert_eq!(client.ttl("persisted").await.unwrap(), KeyTtl::Persistent);

        // Move the leadership before the keys expire: the new leader must hide and remove them.
        let old_leader = cluster.leader_of(shard).await;
        let to = (old_leader + 1) % 3;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // `None` when the call itself failed: ask again until the deadline.
            let answer = cluster
                .try_call(
                    old_leader,
                    &Request::Admin(AdminRequest::TransferLeader {
                        shard,
                        to: NodeId(to as u64 + 1),
                    }),
                )
                .await;
            if cluster.leader_of(shard).await == to {
                break;
            }
            assert!(Instant::now() < deadline, "transfer: {answer:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        tokio::time::sleep((started + short + Duration::from_millis(300)) - Instant::now()).await;
        // Absent for every consistency, on every node.
        for key in ["short", "moved"] {
            assert_eq!(client.get(key).await.unwrap(), None, "{key}");
            assert!(!client.exists(key).await.unwrap(), "{key}");
            assert_eq!(client.ttl(key).await.unwrap(), KeyTtl::Absent, "{key}");
            assert_eq!(
                client.get_with(key, ReadConsistency::Lease).await.unwrap(),
                None
            );
            assert_eq!(
                client
                    .get_many(vec![Bytes::from(key)], ReadConsistency::Linearizable)
                    .await
                    .unwrap(),
                vec![None]
            );
            for index in 0..3 {
                assert_eq!(stale_get(&mut cluster, index, key).await, None, "{key}");
            }
        }
        for (key, value) in [
            ("refreshed", "w"),
            ("cleared", "w"),
            ("persisted", "v"),
            ("plain", "v"),
        ] {
            assert_eq!(
                client.get(key).await.unwrap(),
                Some(Bytes::from(value)),
                "{key}"
            );
        }
        // Written again after expiring: a new key without a TTL.
        client.put("short", "again").await.unwrap();
        assert_eq!(client.ttl("short").await.unwrap(), KeyTtl::Persistent);

        // The new leader's sweep removes "moved" through the log: every replica drops it (the
        // store still held it when it became invisible). "short" was written again.
        let deadline = Instant::now() + Duration::from_secs(30);
        let want: BTreeSet<String> = ["short", "refreshed", "cleared", "persisted", "plain"]
            .map(String::from)
            .into();
        for index in 0..3 {
            loop {
                let keys = stored_keys(&mut cluster, index).await;
                if keys == want {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {} stores {keys:?}, want {want:?}",
                    index + 1
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        cluster.stop_all().await;
    })
    .await
    .expect("test finished in time");
}
