//! Membership changes driven through the admin requests a placement driver will use:
//! add a learner, promote it, remove an old replica, re-add a removed node under a fresh Raft
//! member id, transfer leadership; every layout survives a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{Cluster, get, kv, put};
use ringkv_types::{
    AdminRequest, AdminResult, KvResult, NodeId, ReadConsistency, ReplicaChange, ReplicaRole,
    Request, Response, ShardDescriptor, ShardId, WireError,
};
use std::time::{Duration, Instant};

const SHARD: ShardId = ShardId(1);

async fn descriptor_on(
    cluster: &mut Cluster,
    index: usize,
    shard: ShardId,
) -> Option<ShardDescriptor> {
    match cluster
        .try_call(index, &Request::Admin(AdminRequest::GetShard { shard }))
        .await
    {
        Some(Response::Admin(AdminResult::Shard(descriptor))) => descriptor,
        _ => None,
    }
}

/// The leader's descriptor of `shard` (waiting for a leader).
async fn leader_descriptor(cluster: &mut Cluster, shard: ShardId) -> (usize, ShardDescriptor) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leader = cluster.leader_of(shard).await;
        if let Some(descriptor) = descriptor_on(cluster, leader, shard).await {
            return (leader, descriptor);
        }
        assert!(Instant::now() < deadline, "no descriptor for {shard}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `request` (built from the leader's current descriptor) to the leader until it answers
/// something other than a transient refusal.
async fn to_leader(
    cluster: &mut Cluster,
    shard: ShardId,
    request: impl Fn(&ShardDescriptor) -> AdminRequest,
) -> Response {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (leader, descriptor) = leader_descriptor(cluster, shard).await;
        let answer = cluster
            .call(leader, Request::Admin(request(&descriptor)))
            .await;
        let transient = match &answer {
            Response::Error(WireError::NotLeader { .. } | WireError::Timeout) => true,
            // Right after an election the leader must commit an entry of its term first.
            Response::Error(WireError::InvalidRequest { reason }) => {
                reason.contains("committed an entry in its term")
                    || reason.contains("not committed yet")
                    || reason.contains("already in progress")
                    || reason.contains("not caught up")
            }
            _ => false,
        };
        if !transient {
            return answer;
        }
        assert!(Instant::now() < deadline, "still refused: {answer:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn change(cluster: &mut Cluster, change: ReplicaChange) -> ShardDescriptor {
    let answer = to_leader(cluster, SHARD, |descriptor| AdminRequest::ChangeReplica {
        shard: SHARD,
        epoch: descriptor.epoch,
        change,
    })
    .await;
    match answer {
        Response::Admin(AdminResult::ReplicaChanged(descriptor)) => descriptor,
        other => panic!("{change:?}: {other:?}"),
    }
}

/// Removes a voter of `SHARD` that is neither its leader nor in `keep`, picking again when
/// leadership moves to the chosen node before the change arrives (an election under load).
async fn remove_a_follower(cluster: &mut Cluster, keep: &[NodeId]) -> (NodeId, ShardDescriptor) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (leader, descriptor) = leader_descriptor(cluster, SHARD).await;
        let leader_node = NodeId(leader as u64 + 1);
        let victim = descriptor
            .replicas
            .iter()
            .map(|r| r.node)
            .find(|node| *node != leader_node && !keep.contains(node))
            .expect("a follower to remove");
        let answer = to_leader(cluster, SHARD, |descriptor| AdminRequest::ChangeReplica {
            shard: SHARD,
            epoch: descriptor.epoch,
            change: ReplicaChange::Remove { node: victim },
        })
        .await;
        match answer {
            Response::Admin(AdminResult::ReplicaChanged(descriptor)) => {
                return (victim, descriptor);
            }
            Response::Error(WireError::InvalidRequest { reason })
                if reason.contains("cannot remove itself") && Instant::now() < deadline =>
            {
                continue;
            }
            other => panic!("remove {victim}: {other:?}"),
        }
    }
}

async fn write_keys(cluster: &mut Cluster, keys: &[String], session: u64) {
    for (sequence, key) in keys.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (leader, descriptor) = leader_descriptor(cluster, SHARD).await;
            let answer = cluster
                .call(
                    leader,
                    kv(
                        &descriptor,
                        Some((session, sequence as u64 + 1)),
                        put(key, key),
                    ),
                )
                .await;
            match answer {
                Response::Kv(KvResult::Written { .. }) => break,
                other => {
                    assert!(Instant::now() < deadline, "{key}: {other:?}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Waits until node `index` serves every key from its own replica.
async fn wait_for_keys(cluster: &mut Cluster, index: usize, keys: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for key in keys {
        loop {
            let descriptor = descriptor_on(cluster, index, SHARD).await;
            if let Some(descriptor) = descriptor {
                let answer = cluster
                    .call(
                        index,
                        kv(&descriptor, None, get(key, ReadConsistency::Stale)),
                    )
                    .await;
                if let Response::Kv(KvResult::Value {
                    value: Some(value), ..
                }) = answer
                {
                    assert_eq!(value, Bytes::from(key.clone()));
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {} never served {key}",
                index + 1
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Whether node `index` hosts a replica of the shard.
async fn hosts(cluster: &mut Cluster, index: usize) -> bool {
    cluster
        .status(index)
        .await
        .replicas
        .iter()
        .any(|replica| replica.shard == SHARD)
}

/// Waits until node `index` no longer hosts the shard.
async fn wait_until_gone(cluster: &mut Cluster, index: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while hosts(cluster, index).await {
        assert!(
            Instant::now() < deadline,
            "node {} keeps the shard",
            index + 1
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn keys(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

fn index_of(node: NodeId) -> usize {
    node.get() as usize - 1
}

/// After a node stopped: whether each of `keys` is in its store (a removal the stop
/// interrupted is finished first, as a restart would).
fn store_holds(cluster: &Cluster, index: usize, keys: &[String]) -> Vec<bool> {
    let path = cluster.dir.path().join(format!("node-{}", index + 1));
    let store = ringkv_storage::Store::open(ringkv_storage::StoreConfig::new(&path)).unwrap();
    for handle in store.resume_removals().unwrap() {
        handle.join().unwrap();
    }
    keys.iter()
        .map(|key| store.get(key.as_bytes()).unwrap().is_some())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_is_added_promoted_and_an_old_replica_removed() {
    // Four nodes, one shard of three replicas: one node starts without a replica.
    let mut cluster = Cluster::start(4, 1, "").await;
    cluster.wait_for_leaders(1, Duration::from_secs(30)).await;
    let (leader, initial) = leader_descriptor(&mut cluster, SHARD).await;
    let spare = (1..=4)
        .map(NodeId)
        .find(|node| initial.replica_on(*node).is_none())
        .unwrap();
    let first = keys("first", 30);
    write_keys(&mut cluster, &first, 7).await;

    // Bad inputs get clear errors.
    let epoch = initial.epoch;
    let holder = initial.replicas[0].node;
    let leader_node = NodeId(leader as u64 + 1);
    let follower = initial
        .replicas
        .iter()
        .map(|r| r.node)
        .find(|node| *node != leader_node)
        .unwrap();
    let bad = [
        (
            leader,
            AdminRequest::ChangeReplica {
                shard: SHARD,
                epoch,
                change: ReplicaChange::AddLearner { node: holder },
            },
            "already holds a replica",
        ),
        (
            leader,
            AdminRequest::ChangeReplica {
                shard: SHARD,
                epoch,
                change: ReplicaChange::Remove { node: leader_node },
            },
            "cannot remove itself",
        ),
        (
            leader,
            AdminRequest::ChangeReplica {
                shard: SHARD,
                epoch,
                change: ReplicaChange::Promote { node: follower },
            },
            "already a voter",
        ),
        (
            leader,
            AdminRequest::ChangeReplica {
                shard: SHARD,
                epoch,
                change: ReplicaChange::AddLearner { node: NodeId(99) },
            },
            "unknown",
        ),
        (
            leader,
            AdminRequest::TransferLeader {
                shard: SHARD,
                to: spare,
            },
            "holds no replica",
        ),
    ];
    for (index, request, expected) in bad {
        match cluster.call(index, Request::Admin(request.clone())).await {
            Response::Error(WireError::InvalidRequest { reason }) => {
                assert!(reason.contains(expected), "{request:?}: {reason}");
            }
            other => panic!("{request:?}: {other:?}"),
        }
    }
    let stale_epoch = ringkv_types::Epoch {
        conf_ver: epoch.conf_ver + 5,
        version: epoch.version,
    };
    let answer = cluster
        .call(
            leader,
            Request::Admin(AdminRequest::ChangeReplica {
                shard: SHARD,
                epoch: stale_epoch,
                change: ReplicaChange::AddLearner { node: spare },
            }),
        )
        .await;
    assert!(
        matches!(answer, Response::Error(WireError::EpochMismatch { .. })),
        "{answer:?}"
    );
    let answer = cluster
        .call(
            index_of(follower),
            Request::Admin(AdminRequest::ChangeReplica {
                shard: SHARD,
                epoch,
                change: ReplicaChange::AddLearner { node: spare },
            }),
        )
        .await;
    assert!(
        matches!(answer, Response::Error(WireError::NotLeader { .. })),
        "{answer:?}"
    );
    let answer = cluster
        .call(
            leader,
            Request::Admin(AdminRequest::ChangeReplica {
                shard: ShardId(42),
                epoch,
                change: ReplicaChange::AddLearner { node: spare },
            }),
        )
        .await;
    assert!(
        matches!(answer, Response::Error(WireError::ShardNotFound { .. })),
        "{answer:?}"
    );

    // Add the spare node as a learner: a new member, filled by a snapshot.
    let added = change(&mut cluster, ReplicaChange::AddLearner { node: spare }).await;
    assert_eq!(added.epoch.conf_ver, initial.epoch.conf_ver + 1);
    let learner = added.replica_on(spare).copied().unwrap();
    assert_eq!(learner.role, ReplicaRole::Learner);
    assert_eq!(learner.member, ringkv_types::member_id(spare, 2));
    wait_for_keys(&mut cluster, index_of(spare), &first).await;

    // Promote it, then remove an old follower.
    let promoted = change(&mut cluster, ReplicaChange::Promote { node: spare }).await;
    assert_eq!(promoted.replica_on(spare).unwrap().role, ReplicaRole::Voter);
    let (victim, removed) = remove_a_follower(&mut cluster, &[spare]).await;
    assert!(removed.replica_on(victim).is_none());
    assert_eq!(removed.replicas.len(), 3);
    assert_eq!(removed.epoch.conf_ver, initial.epoch.conf_ver + 3);
    wait_until_gone(&mut cluster, index_of(victim)).await;
    let answer = cluster
        .call(
            index_of(victim),
            kv(&removed, None, get(&first[0], ReadConsistency::Stale)),
        )
        .await;
    assert!(
        matches!(answer, Response::Error(WireError::ShardNotFound { .. })),
        "{answer:?}"
    );

    // Writes go on; the new replica follows.
    let second = keys("second", 10);
    write_keys(&mut cluster, &second, 8).await;
    wait_for_keys(&mut cluster, index_of(spare), &second).await;

    // A full restart keeps the new layout.
    cluster.stop_all().await;
    assert!(
        store_holds(&cluster, index_of(victim), &first)
            .iter()
            .all(|held| !held),
        "the removed replica's data is still on node {victim}"
    );
    assert!(
        store_holds(&cluster, index_of(spare), &first)
            .iter()
            .all(|held| *held),
        "the new replica lacks data"
    );
    for index in 0..4 {
        cluster.start_node(index).await;
    }
    cluster.wait_for_leaders(1, Duration::from_secs(30)).await;
    let (_, after) = leader_descriptor(&mut cluster, SHARD).await;
    assert_eq!(after, removed);
    assert!(!hosts(&mut cluster, index_of(victim)).await);
    wait_for_keys(&mut cluster, index_of(spare), &second).await;
    let third = keys("third", 5);
    write_keys(&mut cluster, &third, 9).await;
    wait_for_keys(&mut cluster, index_of(spare), &third).await;
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_rejoins_under_a_new_member_id_and_leadership_moves() {
    let mut cluster = Cluster::start(3, 1, "").await;
    cluster.wait_for_leaders(1, Duration::from_secs(30)).await;
    let first = keys("first", 20);
    write_keys(&mut cluster, &first, 7).await;
    let (_, initial) = leader_descriptor(&mut cluster, SHARD).await;
    let (victim, removed) = remove_a_follower(&mut cluster, &[]).await;
    let old_member = initial.replica_on(victim).unwrap().member;
    assert_eq!(removed.replicas.len(), 2);
    wait_until_gone(&mut cluster, index_of(victim)).await;
    // Two voters left: removing another one is refused.
    let (leader, _) = leader_descriptor(&mut cluster, SHARD).await;
    let leader_node = NodeId(leader as u64 + 1);
    let survivor = removed
        .replicas
        .iter()
        .map(|r| r.node)
        .find(|node| *node != leader_node)
        .unwrap();
    let answer = to_leader(&mut cluster, SHARD, |descriptor| {
        AdminRequest::ChangeReplica {
            shard: SHARD,
            epoch: descriptor.epoch,
            change: ReplicaChange::Remove { node: survivor },
        }
    })
    .await;
    assert!(
        matches!(&answer, Response::Error(WireError::InvalidRequest { reason }) if reason.contains("fewer than 2 voters")),
        "{answer:?}"
    );
    let second = keys("second", 10);
    write_keys(&mut cluster, &second, 8).await;

    // Re-add it: a fresh member id, caught up by a snapshot, then a voter again.
    let added = change(&mut cluster, ReplicaChange::AddLearner { node: victim }).await;
    let new_member = added.replica_on(victim).unwrap().member;
    assert_ne!(new_member, old_member);
    assert!(new_member > old_member);
    wait_for_keys(&mut cluster, index_of(victim), &first).await;
    wait_for_keys(&mut cluster, index_of(victim), &second).await;
    let promoted = change(&mut cluster, ReplicaChange::Promote { node: victim }).await;
    assert_eq!(promoted.voters().count(), 3);

    // Leadership moves to the re-added node on request.
    let answer = to_leader(&mut cluster, SHARD, |_| AdminRequest::TransferLeader {
        shard: SHARD,
        to: victim,
    })
    .await;
    assert_eq!(
        answer,
        Response::Admin(AdminResult::LeaderTransferred {
            shard: SHARD,
            leader: victim
        })
    );
    assert_eq!(cluster.leader_of(SHARD).await, index_of(victim));
    let third = keys("third", 5);
    write_keys(&mut cluster, &third, 9).await;

    // The victim restarts alone: it keeps its new member and catches up.
    cluster.stop_node(index_of(victim)).await;
    // Meanwhile a transfer to it cannot finish: the Raft core abandons it after an election
    // timeout and the leader answers `Timeout` then (the caller may retry), well within the
    // call's own timeout, instead of holding the request for its 10 s limit.
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        assert!(Instant::now() < deadline, "no stable leader to ask");
        let (leader, _) = leader_descriptor(&mut cluster, SHARD).await;
        let request = Request::Admin(AdminRequest::TransferLeader {
            shard: SHARD,
            to: victim,
        });
        let answer = cluster.try_call(leader, &request).await;
        if !matches!(answer, Some(Response::Error(WireError::NotLeader { .. }))) {
            break answer;
        }
    };
    assert_eq!(answer, Some(Response::Error(WireError::Timeout)));
    let fourth = keys("fourth", 5);
    write_keys(&mut cluster, &fourth, 10).await;
    cluster.start_node(index_of(victim)).await;
    wait_for_keys(&mut cluster, index_of(victim), &fourth).await;
    let descriptor = descriptor_on(&mut cluster, index_of(victim), SHARD)
        .await
        .unwrap();
    assert_eq!(descriptor.replica_on(victim).unwrap().member, new_member);
    cluster.stop_all().await;
}

/// A replica removed while its node was down never receives the configuration entry; when the
/// node returns, its election attempts are answered with a removal notice and it deletes the
/// replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_removed_while_down_is_deleted_when_its_node_returns() {
    let mut cluster = Cluster::start(3, 1, "").await;
    cluster.wait_for_leaders(1, Duration::from_secs(30)).await;
    let first = keys("first", 10);
    write_keys(&mut cluster, &first, 7).await;
    let (leader, initial) = leader_descriptor(&mut cluster, SHARD).await;
    let leader_node = NodeId(leader as u64 + 1);
    let victim = initial
        .replicas
        .iter()
        .map(|r| r.node)
        .find(|node| *node != leader_node)
        .unwrap();
    wait_for_keys(&mut cluster, index_of(victim), &first).await;
    cluster.stop_node(index_of(victim)).await;
    let removed = change(&mut cluster, ReplicaChange::Remove { node: victim }).await;
    assert!(removed.replica_on(victim).is_none());
    cluster.start_node(index_of(victim)).await;
    wait_until_gone(&mut cluster, index_of(victim)).await;
    // The remaining two replicas still serve writes.
    let second = keys("second", 5);
    write_keys(&mut cluster, &second, 8).await;
    cluster.stop_all().await;
    assert!(
        store_holds(&cluster, index_of(victim), &first)
            .iter()
            .all(|held| !held),
        "the removed replica's data is still on node {victim}"
    );
}
