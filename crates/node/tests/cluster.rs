//! A 3-node in-process cluster on loopback: bootstrap, reads and writes, restart, refusals.

mod common;

use bytes::Bytes;
use common::{Cluster, get, kv, put};
use ringkv_types::{Epoch, KvOp, KvResult, ReadConsistency, Request, Response, ShardId, WireError};
use std::time::Duration;

const SHARDS: u64 = 4;
const LIMITS: &str = "[limits]\nmax_key_bytes = 64\nmax_value_bytes = 1024\nmax_request_bytes = 4096\nmax_batch_ops = 4\n";

/// Bootstrap elects a leader for every shard and for the placement driver; every node reports
/// the same map, covering the ring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_elects_leaders_and_serves_writes_and_reads() {
    let mut cluster = Cluster::start(3, SHARDS, LIMITS).await;
    let leaders = cluster
        .wait_for_leaders(SHARDS, Duration::from_secs(30))
        .await;
    assert_eq!(leaders.len() as u64, SHARDS + 1);
    let map = cluster.shard_map(0).await;
    assert!(map.covers_ring());
    assert_eq!(map.shards.len() as u64, SHARDS);
    assert_eq!(cluster.shard_map(2).await, map);
    match cluster
        .call(1, Request::Admin(ringkv_types::AdminRequest::GetNodes))
        .await
    {
        Response::Admin(ringkv_types::AdminResult::Nodes(nodes)) => {
            let addrs: Vec<_> = nodes
                .iter()
                .map(|n| n.addr.parse().unwrap())
                .collect::<Vec<std::net::SocketAddr>>();
            assert_eq!(addrs, cluster.addrs);
            assert_eq!(nodes[2].node, ringkv_types::NodeId(3));
        }
        other => panic!("{other:?}"),
    }
    // Fault injection is off unless the config enables it: the request is refused, clearly.
    match cluster
        .call(
            0,
            Request::Admin(ringkv_types::AdminRequest::SetFaults {
                cut: vec![ringkv_types::NodeId(2)],
            }),
        )
        .await
    {
        Response::Error(WireError::InvalidRequest { reason }) => {
            assert!(reason.contains("fault_injection"), "{reason}");
        }
        other => panic!("SetFaults accepted without [debug] fault_injection: {other:?}"),
    }
    // Followers learn the leader from its first message: every replica names one soon.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = cluster.status(1).await;
        assert_eq!(status.replicas.len() as u64, SHARDS + 1);
        if status.replicas.iter().all(|r| r.leader.is_some()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Put through the leader; linearizable and lease reads on the leader see it.
    let descriptor = map.shard_for_key(b"alpha").unwrap().clone();
    let leader = cluster.leader_of(descriptor.id).await;
    let answer = cluster
        .call(leader, kv(&descriptor, Some((7, 1)), put("alpha", "one")))
        .await;
    assert!(
        matches!(answer, Response::Kv(KvResult::Written { .. })),
        "{answer:?}"
    );
    for consistency in [ReadConsistency::Linearizable, ReadConsistency::Lease] {
        let answer = cluster
            .call(leader, kv(&descriptor, None, get("alpha", consistency)))
            .await;
        match answer {
            Response::Kv(KvResult::Value { value, .. }) => {
                assert_eq!(value, Some(Bytes::from_static(b"one")));
            }
            other => panic!("{consistency:?}: {other:?}"),
        }
    }
    // A stale read on a follower sees it once applied there.
    let follower = (leader + 1) % 3;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = cluster
            .call(
                follower,
                kv(&descriptor, None, get("alpha", ReadConsistency::Stale)),
            )
            .await;
        match answer {
            Response::Kv(KvResult::Value {
                value: Some(value),
                applied,
            }) => {
                assert_eq!(value, Bytes::from_static(b"one"));
                assert!(applied.get() > 0);
                break;
            }
            Response::Kv(KvResult::Value { value: None, .. }) => {}
            other => panic!("stale read: {other:?}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "follower never applied the write"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Exactly-once: a compare-and-swap retried with the same sequence is applied once and
    // answers the saved result.
    let cas = KvOp::CompareAndSwap {
        key: Bytes::from_static(b"alpha"),
        expected: Some(Bytes::from_static(b"one")),
        new: Some(Bytes::from_static(b"two")),
    };
    let first = cluster
        .call(leader, kv(&descriptor, Some((7, 2)), cas.clone()))
        .await;
    let retry = cluster
        .call(leader, kv(&descriptor, Some((7, 2)), cas.clone()))
        .await;
    match (&first, &retry) {
        (
            Response::Kv(KvResult::Swapped {
                succeeded: true,
                previous: a,
                ..
            }),
            Response::Kv(KvResult::Swapped {
                succeeded: true,
                previous: b,
                ..
            }),
        ) => {
            assert_eq!(a, &Some(Bytes::from_static(b"one")));
            assert_eq!(a, b);
        }
        other => panic!("{other:?}"),
    }
    let fresh = cluster
        .call(leader, kv(&descriptor, Some((7, 3)), cas))
        .await;
    assert!(
        matches!(
            fresh,
            Response::Kv(KvResult::Swapped {
                succeeded: false,
                ..
            })
        ),
        "{fresh:?}"
    );

    // Refusals carry what the client needs to reroute.
    let answer = cluster
        .call(follower, kv(&descriptor, Some((7, 4)), put("alpha", "x")))
        .await;
    match answer {
        Response::Error(WireError::NotLeader {
            leader_hint,
            descriptor: Some(d),
        }) => {
            assert_eq!(leader_hint, Some(ringkv_types::NodeId(leader as u64 + 1)));
            assert_eq!(d, descriptor);
        }
        other => panic!("write on a follower: {other:?}"),
    }
    let mut stale = descriptor.clone();
    stale.epoch = Epoch {
        conf_ver: 0,
        version: 0,
    };
    let answer = cluster
        .call(
            leader,
            kv(&stale, None, get("alpha", ReadConsistency::Stale)),
        )
        .await;
    assert!(
        matches!(&answer, Response::Error(WireError::EpochMismatch { descriptor: d }) if *d == descriptor),
        "{answer:?}"
    );
    let foreign = (0..)
        .map(|i| format!("other-{i}"))
        .find(|key| !descriptor.contains_key(key.as_bytes()))
        .unwrap();
    let answer = cluster
        .call(leader, kv(&descriptor, Some((7, 5)), put(&foreign, "x")))
        .await;
    assert_eq!(
        answer,
        Response::Error(WireError::KeyNotInShard {
            shard: descriptor.id
        })
    );
    let mut missing = descriptor.clone();
    missing.id = ShardId(999);
    let answer = cluster
        .call(
            leader,
            kv(&missing, None, get("alpha", ReadConsistency::Stale)),
        )
        .await;
    assert_eq!(
        answer,
        Response::Error(WireError::ShardNotFound {
            shard: ShardId(999)
        })
    );

    // Limits are answered with clear, non-retryable errors.
    let big = "v".repeat(1025);
    let answer = cluster
        .call(leader, kv(&descriptor, Some((7, 6)), put("alpha", &big)))
        .await;
    assert_eq!(
        answer,
        Response::Error(WireError::ValueTooLarge {
            size: 1025,
            max: 1024
        })
    );
    let ops = vec![
        ringkv_types::BatchOp::Delete {
            key: Bytes::from_static(b"alpha")
        };
        5
    ];
    let answer = cluster
        .call(leader, kv(&descriptor, Some((7, 7)), KvOp::Batch { ops }))
        .await;
    assert_eq!(
        answer,
        Response::Error(WireError::BatchTooLarge { count: 5, max: 4 })
    );
    let answer = cluster
        .call(
            leader,
            Request::Kv(ringkv_types::KvRequest {
                shard: descriptor.id,
                epoch: descriptor.epoch,
                session: None,
                timeout_ms: 0,
                op: KvOp::Delete {
                    key: Bytes::from(vec![b'k'; 65]),
                },
            }),
        )
        .await;
    assert!(
        matches!(
            answer,
            Response::Error(
                WireError::KeyTooLarge { size: 65, max: 64 } | WireError::KeyNotInShard { .. }
            )
        ),
        "{answer:?}"
    );
    cluster.stop_all().await;
}

/// Acknowledged writes survive a restart of every node, and every group resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_a_full_cluster_restart() {
    let mut cluster = Cluster::start(3, SHARDS, "").await;
    cluster
        .wait_for_leaders(SHARDS, Duration::from_secs(30))
        .await;
    let map = cluster.shard_map(0).await;
    let keys: Vec<String> = (0..24).map(|i| format!("key-{i}")).collect();
    for (sequence, key) in keys.iter().enumerate() {
        let descriptor = map.shard_for_key(key.as_bytes()).unwrap().clone();
        let leader = cluster.leader_of(descriptor.id).await;
        let answer = cluster
            .call(
                leader,
                kv(
                    &descriptor,
                    Some((9, sequence as u64 + 1)),
                    put(key, &format!("value of {key}")),
                ),
            )
            .await;
        assert!(
            matches!(answer, Response::Kv(KvResult::Written { .. })),
            "{key}: {answer:?}"
        );
    }
    cluster.stop_all().await;
    for index in 0..3 {
        cluster.start_node(index).await;
    }
    cluster
        .wait_for_leaders(SHARDS, Duration::from_secs(30))
        .await;
    assert_eq!(cluster.shard_map(1).await, map);
    for key in &keys {
        let descriptor = map.shard_for_key(key.as_bytes()).unwrap().clone();
        let leader = cluster.leader_of(descriptor.id).await;
        let answer = cluster
            .call(
                leader,
                kv(&descriptor, None, get(key, ReadConsistency::Linearizable)),
            )
            .await;
        match answer {
            Response::Kv(KvResult::Value { value, .. }) => {
                assert_eq!(value, Some(Bytes::from(format!("value of {key}"))), "{key}");
            }
            other => panic!("{key}: {other:?}"),
        }
    }
    cluster.stop_all().await;
}

/// A session's exactly-once record lives while the session writes and is dropped, on every
/// replica, once idle past `limits.session_idle_ms` (log time): a retry inside the window is
/// answered from the record (not applied again), the same sequence after expiry is a new
/// write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire_through_the_log() {
    let mut cluster = Cluster::start(
        3,
        1,
        "[limits]\nsession_idle_ms = 2000\nclient_request_timeout_ms = 1000\n",
    )
    .await;
    cluster.wait_for_leaders(1, Duration::from_secs(30)).await;
    let map = cluster.shard_map(0).await;
    let descriptor = map.shard_for_key(b"k").unwrap().clone();
    let leader = cluster.leader_of(descriptor.id).await;
    let write = |value: &str| kv(&descriptor, Some((41, 1)), put("k", value));
    let written = |answer: &Response| matches!(answer, Response::Kv(KvResult::Written { .. }));

    let first = cluster.call(leader, write("first")).await;
    assert!(written(&first), "{first:?}");
    // A retry of (41, 1) with another value inside the window: answered, not applied.
    let retry = cluster.call(leader, write("retry")).await;
    assert!(written(&retry), "{retry:?}");
    let read = || kv(&descriptor, None, get("k", ReadConsistency::Linearizable));
    match cluster.call(leader, read()).await {
        Response::Kv(KvResult::Value { value, .. }) => {
            assert_eq!(value, Some(Bytes::from_static(b"first")));
        }
        other => panic!("{other:?}"),
    }

    // Idle past 2 s (expiry passes run every second): the record is gone, so the same
    // sequence is a new write. Bounded wait for the pass.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut value = Bytes::new();
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let answer = cluster.call(leader, write("after expiry")).await;
        assert!(written(&answer), "{answer:?}");
        if let Response::Kv(KvResult::Value { value: Some(v), .. }) =
            cluster.call(leader, read()).await
        {
            value = v;
        }
        if value == "after expiry" {
            break;
        }
    }
    assert_eq!(
        value,
        Bytes::from_static(b"after expiry"),
        "session never expired"
    );
    // The followers apply the same entries (the expiry, then the new write): each shows it.
    for node in 0..3 {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let answer = cluster
                .call(
                    node,
                    kv(&descriptor, None, get("k", ReadConsistency::Stale)),
                )
                .await;
            if matches!(&answer, Response::Kv(KvResult::Value { value: Some(v), .. }) if v == "after expiry")
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {node}: {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    cluster.stop_all().await;
}
