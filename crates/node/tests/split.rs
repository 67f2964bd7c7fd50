//! A shard splits inside its Raft group while clients write; every key stays readable through
//! the shard that now owns it, with the new epochs, across a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{CALL_TIMEOUT, Cluster, get, kv, put};
use ringkv_transport::ClientConnection;
use ringkv_types::{
    AdminRequest, AdminResult, Epoch, KvResult, ReadConsistency, Request, Response,
    ShardDescriptor, ShardId, WireError,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PARENT: ShardId = ShardId(1);
const CHILD: ShardId = ShardId(2);

async fn descriptor_via(connection: &ClientConnection, shard: ShardId) -> Option<ShardDescriptor> {
    match connection
        .call(
            &Request::Admin(AdminRequest::GetShard { shard }),
            CALL_TIMEOUT,
        )
        .await
    {
        Ok(Response::Admin(AdminResult::Shard(descriptor))) => descriptor,
        _ => None,
    }
}

/// Writes `key` through whichever node and shard accept it (the routing a client does).
async fn put_anywhere(connections: &[ClientConnection], key: &str, session: (u64, u64)) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for connection in connections {
            for shard in [PARENT, CHILD] {
                let Some(descriptor) = descriptor_via(connection, shard).await else {
                    continue;
                };
                if !descriptor.contains_key(key.as_bytes()) {
                    continue;
                }
                let request = kv(&descriptor, Some(session), put(key, key));
                if let Ok(Response::Kv(KvResult::Written { .. })) =
                    connection.call(&request, CALL_TIMEOUT).await
                {
                    return;
                }
            }
        }
        assert!(Instant::now() < deadline, "{key} never written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The leader's descriptor of `shard`.
async fn leader_descriptor(cluster: &mut Cluster, shard: ShardId) -> (usize, ShardDescriptor) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leader = cluster.leader_of(shard).await;
        if let Some(Response::Admin(AdminResult::Shard(Some(descriptor)))) = cluster
            .try_call(leader, &Request::Admin(AdminRequest::GetShard { shard }))
            .await
        {
            return (leader, descriptor);
        }
        assert!(Instant::now() < deadline, "no descriptor for {shard}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn split(cluster: &mut Cluster, at: Option<u64>) -> Response {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (leader, descriptor) = leader_descriptor(cluster, PARENT).await;
        let answer = cluster
            .call(
                leader,
                Request::Admin(AdminRequest::SplitShard {
                    shard: PARENT,
                    epoch: descriptor.epoch,
                    new_shard: CHILD,
                    at,
                }),
            )
            .await;
        if !matches!(
            answer,
            Response::Error(WireError::NotLeader { .. } | WireError::Busy)
        ) {
            return answer;
        }
        assert!(Instant::now() < deadline, "split refused: {answer:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads every key linearizably from the leader of the shard that owns it, checking epochs.
async fn check_keys(
    cluster: &mut Cluster,
    keys: &[String],
    left: &ShardDescriptor,
    right: &ShardDescriptor,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for key in keys {
        let (owner, other) = if left.contains_key(key.as_bytes()) {
            (left, right)
        } else {
            (right, left)
        };
        assert!(owner.contains_key(key.as_bytes()));
        loop {
            let leader = cluster.leader_of(owner.id).await;
            let answer = cluster
                .call(
                    leader,
                    kv(owner, None, get(key, ReadConsistency::Linearizable)),
                )
                .await;
            match answer {
                Response::Kv(KvResult::Value {
                    value: Some(value), ..
                }) => {
                    assert_eq!(value, Bytes::from(key.clone()));
                    break;
                }
                Response::Error(WireError::NotLeader { .. }) => {}
                other => panic!("{key} in {}: {other:?}", owner.id),
            }
            assert!(Instant::now() < deadline, "{key} unreadable");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The other shard refuses the key; the old epoch is refused.
        let leader = cluster.leader_of(other.id).await;
        let answer = cluster
            .call(leader, kv(other, None, get(key, ReadConsistency::Stale)))
            .await;
        assert!(
            matches!(answer, Response::Error(WireError::KeyNotInShard { .. })),
            "{key} in {}: {answer:?}",
            other.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_splits_under_concurrent_writes() {
    let mut cluster = Cluster::start(3, 1, "").await;
    cluster.wait_for_leaders(1, Duration::from_secs(30)).await;
    let (leader, before) = leader_descriptor(&mut cluster, PARENT).await;
    let mut connections = Vec::new();
    for index in 0..3 {
        connections.push(cluster.connection(index).await.unwrap());
    }
    let first: Vec<String> = (0..20).map(|i| format!("first-{i}")).collect();
    for (sequence, key) in first.iter().enumerate() {
        put_anywhere(&connections, key, (1, sequence as u64 + 1)).await;
    }

    // A key of the future new shard, written with session 2 before the split.
    let probe = (0..)
        .map(|i| format!("probe-{i}"))
        .find(|key| ringkv_types::ring::position(key.as_bytes()) >= before.arc.midpoint())
        .unwrap();
    put_anywhere(&connections, &probe, (2, 1)).await;

    // Bad inputs.
    let bad = [
        (
            AdminRequest::SplitShard {
                shard: PARENT,
                epoch: before.epoch,
                new_shard: PARENT,
                at: None,
            },
            "not free",
        ),
        (
            AdminRequest::SplitShard {
                shard: PARENT,
                epoch: before.epoch,
                new_shard: CHILD,
                at: Some(before.arc.start),
            },
            "strictly inside",
        ),
    ];
    for (request, expected) in bad {
        match cluster.call(leader, Request::Admin(request.clone())).await {
            Response::Error(WireError::InvalidRequest { reason }) => {
                assert!(reason.contains(expected), "{request:?}: {reason}");
            }
            other => panic!("{request:?}: {other:?}"),
        }
    }
    let answer = cluster
        .call(
            leader,
            Request::Admin(AdminRequest::SplitShard {
                shard: PARENT,
                epoch: Epoch {
                    conf_ver: before.epoch.conf_ver,
                    version: before.epoch.version + 3,
                },
                new_shard: CHILD,
                at: None,
            }),
        )
        .await;
    assert!(
        matches!(answer, Response::Error(WireError::EpochMismatch { .. })),
        "{answer:?}"
    );

    // Writers run while the shard splits: two sessions, one write in flight each, writing
    // until the split is done (at least 30 writes each, at most `MAX_WRITES`). Each write
    // records when it was sent and when it was acknowledged.
    const MAX_WRITES: u64 = 5_000;
    let split_over = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..2u64)
        .map(|writer| {
            let connections = connections.clone();
            let split_over = split_over.clone();
            let progress = progress.clone();
            tokio::spawn(async move {
                let mut written = Vec::new();
                for i in 0..MAX_WRITES {
                    if i >= 30 && split_over.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("during-{writer}-{i}");
                    let sent = Instant::now();
                    put_anywhere(&connections, &key, (10 + writer, i + 1)).await;
                    written.push((key, sent, Instant::now()));
                    progress.fetch_add(1, Ordering::Relaxed);
                }
                written
            })
        })
        .collect();
    // The split starts once both writers are going.
    let deadline = Instant::now() + Duration::from_secs(30);
    while progress.load(Ordering::Relaxed) < 10 {
        assert!(Instant::now() < deadline, "the writers made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let split_sent = Instant::now();
    let (left, right) = match split(&mut cluster, None).await {
        Response::Admin(AdminResult::ShardSplit { left, right }) => (left, right),
        other => panic!("split: {other:?}"),
    };
    let split_done = Instant::now();
    split_over.store(true, Ordering::Relaxed);
    assert_eq!(left.id, PARENT);
    assert_eq!(right.id, CHILD);
    assert_eq!(left.arc.start, before.arc.start);
    assert_eq!(left.arc.end, Some(before.arc.midpoint()));
    assert_eq!(right.arc.start, before.arc.midpoint());
    assert_eq!(right.arc.end, before.arc.end);
    assert_eq!(left.epoch.version, before.epoch.version + 1);
    assert_eq!(right.epoch, left.epoch);
    let mut all = first.clone();
    all.push(probe.clone());
    let mut overlapping = 0;
    for writer in writers {
        for (key, sent, acknowledged) in writer.await.unwrap() {
            // In flight while the split was: sent before it finished, acknowledged after it
            // started.
            if sent < split_done && acknowledged > split_sent {
                overlapping += 1;
            }
            all.push(key);
        }
    }
    println!("{overlapping} writes were in flight during the split");
    assert!(
        overlapping > 0,
        "no write was in flight during the split: the test split an idle shard"
    );
    cluster.wait_for_leaders(2, Duration::from_secs(30)).await;
    check_keys(&mut cluster, &all, &left, &right).await;
    // Both halves got keys (xxh3 spreads them).
    assert!(all.iter().any(|k| left.contains_key(k.as_bytes())));
    assert!(all.iter().any(|k| right.contains_key(k.as_bytes())));
    // The parent's old epoch is refused with its new descriptor.
    let (leader, _) = leader_descriptor(&mut cluster, PARENT).await;
    let answer = cluster
        .call(
            leader,
            kv(&before, None, get(&first[0], ReadConsistency::Stale)),
        )
        .await;
    match answer {
        Response::Error(WireError::EpochMismatch { descriptor }) => assert_eq!(descriptor, left),
        other => panic!("{other:?}"),
    }
    // A write retried (same session and sequence) to the new shard after the split is not
    // applied twice: the new shard has the parent's session records.
    let (leader, _) = leader_descriptor(&mut cluster, CHILD).await;
    let answer = cluster
        .call(leader, kv(&right, Some((2, 1)), put(&probe, "again")))
        .await;
    assert!(
        matches!(answer, Response::Kv(KvResult::Written { .. })),
        "{answer:?}"
    );
    check_keys(&mut cluster, std::slice::from_ref(&probe), &left, &right).await;

    // A restart keeps both shards.
    cluster.stop_all().await;
    for index in 0..3 {
        cluster.start_node(index).await;
    }
    cluster.wait_for_leaders(2, Duration::from_secs(30)).await;
    let (_, left_after) = leader_descriptor(&mut cluster, PARENT).await;
    let (_, right_after) = leader_descriptor(&mut cluster, CHILD).await;
    assert_eq!(left_after, left);
    assert_eq!(right_after, right);
    let mut connections = Vec::new();
    for index in 0..3 {
        connections.push(cluster.connection(index).await.unwrap());
    }
    let after: Vec<String> = (0..10).map(|i| format!("after-{i}")).collect();
    for (sequence, key) in after.iter().enumerate() {
        put_anywhere(&connections, key, (20, sequence as u64 + 1)).await;
    }
    all.extend(after);
    check_keys(&mut cluster, &all, &left, &right).await;
    cluster.stop_all().await;
}

/// A replica that was down during the split comes back: the new shard's leader reaches it
/// before (or after) it replays the split from the parent's log, so it may first create an
/// uninitialized replica of the new shard; either way it ends with both shards and every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_down_during_the_split_catches_up_on_both_shards() {
    let mut cluster = Cluster::start(3, 1, "").await;
    cluster.wait_for_leaders(1, Duration::from_secs(30)).await;
    let (leader, _) = leader_descriptor(&mut cluster, PARENT).await;
    let slow = (0..3).find(|index| *index != leader).unwrap();
    let mut connections = Vec::new();
    for index in 0..3 {
        connections.push(cluster.connection(index).await.unwrap());
    }
    let first: Vec<String> = (0..20).map(|i| format!("first-{i}")).collect();
    for (sequence, key) in first.iter().enumerate() {
        put_anywhere(&connections, key, (1, sequence as u64 + 1)).await;
    }
    cluster.stop_node(slow).await;
    let (left, right) = match split(&mut cluster, None).await {
        Response::Admin(AdminResult::ShardSplit { left, right }) => (left, right),
        other => panic!("split: {other:?}"),
    };
    let live: Vec<ClientConnection> = (0..3)
        .filter(|index| *index != slow)
        .map(|index| connections[index].clone())
        .collect();
    let second: Vec<String> = (0..20).map(|i| format!("second-{i}")).collect();
    for (sequence, key) in second.iter().enumerate() {
        put_anywhere(&live, key, (2, sequence as u64 + 1)).await;
    }
    cluster.start_node(slow).await;
    // The returning node serves both shards, with the split's descriptors, and every key.
    let deadline = Instant::now() + Duration::from_secs(30);
    for key in first.iter().chain(&second) {
        let owner = if left.contains_key(key.as_bytes()) {
            &left
        } else {
            &right
        };
        loop {
            let answer = cluster
                .try_call(slow, &kv(owner, None, get(key, ReadConsistency::Stale)))
                .await;
            if let Some(Response::Kv(KvResult::Value {
                value: Some(value), ..
            })) = answer
            {
                assert_eq!(value, Bytes::from(key.clone()));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} never served {key}: {answer:?}",
                slow + 1
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for (shard, expected) in [(PARENT, &left), (CHILD, &right)] {
        let connection = cluster.connection(slow).await.unwrap();
        assert_eq!(
            descriptor_via(&connection, shard).await.as_ref(),
            Some(expected)
        );
    }
    cluster.stop_all().await;
}
