//! The client against fake nodes on loopback (real QUIC and mTLS, fake answers): reroutes on
//! `NotLeader` and `EpochMismatch`, failover from an unreachable node, exactly-once retries,
//! and the client-side checks of batches.
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, reason = "tests: a failure is a test failure")]

use bytes::Bytes;
use ringkv_client::test_support::FakeNodes;
use ringkv_client::{Client, Endpoint, Error};
use ringkv_transport::TransportConfig;
use ringkv_types::ring::Arc as RingArc;
use ringkv_types::{
    AdminRequest, AdminResult, BatchOp, Epoch, KvOp, KvRequest, KvResult, LogIndex, NodeAddress,
    NodeId, Replica, ReplicaRole, Request, Response, ShardDescriptor, ShardId, ShardMap, WireError,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CLUSTER: &str = "test";

/// What every fake node shares: the true descriptor of each shard, the map they serve (maybe
/// stale), the leader, the data and the writes applied.
struct Cluster {
    /// Descriptors as the replicas know them.
    truth: Vec<ShardDescriptor>,
    /// The map served to `GetShardMap` (may lag behind `truth`).
    served: ShardMap,
    leader: NodeId,
    /// How a non-leader answers: with or without a hint.
    hint: bool,
    data: HashMap<Bytes, Bytes>,
    /// The last applied sequence per session (the node keeps one per session and shard; these
    /// tests write one shard at a time), and how many applications happened.
    last_sequence: HashMap<u64, u64>,
    applications: u64,
    /// Writes to answer `Timeout` once *after* applying them (a lost acknowledgement).
    lose_next_acks: u32,
    requests: u64,
    /// Answer to `GetNodes`.
    nodes: Vec<NodeAddress>,
}

type Shared = Arc<Mutex<Cluster>>;

fn descriptor(id: u64, arc: RingArc, conf_ver: u64) -> ShardDescriptor {
    ShardDescriptor {
        id: ShardId(id),
        arc,
        epoch: Epoch {
            conf_ver,
            version: 1,
        },
        replicas: (1..=3)
            .map(|n| Replica::new(ringkv_types::member_id(NodeId(n), 1), ReplicaRole::Voter))
            .collect(),
    }
}

fn two_shards(conf_ver: u64) -> Vec<ShardDescriptor> {
    RingArc::split_even(2)
        .into_iter()
        .enumerate()
        .map(|(i, arc)| descriptor(i as u64 + 1, arc, conf_ver))
        .collect()
}

fn cluster(leader: u64, hint: bool) -> Shared {
    let truth = two_shards(1);
    Arc::new(Mutex::new(Cluster {
        served: ShardMap {
            version: 1,
            shards: truth.clone(),
        },
        truth,
        leader: NodeId(leader),
        hint,
        data: HashMap::new(),
        last_sequence: HashMap::new(),
        applications: 0,
        lose_next_acks: 0,
        requests: 0,
        nodes: Vec::new(),
    }))
}

fn answer(shared: &Shared, me: NodeId, request: Request) -> Response {
    let mut cluster = shared.lock().unwrap();
    cluster.requests += 1;
    let kv = match request {
        Request::Admin(AdminRequest::GetShardMap) => {
            return Response::Admin(AdminResult::ShardMap(cluster.served.clone()));
        }
        Request::Admin(AdminRequest::GetNodes) => {
            return Response::Admin(AdminResult::Nodes(cluster.nodes.clone()));
        }
        Request::Admin(_) | Request::WithToken { .. } | Request::Watch(_) => {
            return Response::Error(WireError::InvalidRequest {
                reason: "not faked".into(),
            });
        }
        Request::Kv(kv) => kv,
    };
    let KvRequest {
        shard,
        epoch,
        session,
        op,
        ..
    } = kv;
    let Some(truth) = cluster.truth.iter().find(|d| d.id == shard).cloned() else {
        return Response::Error(WireError::ShardNotFound { shard });
    };
    if epoch != truth.epoch {
        return Response::Error(WireError::EpochMismatch { descriptor: truth });
    }
    if me != cluster.leader {
        let leader_hint = cluster.hint.then_some(cluster.leader);
        return Response::Error(WireError::NotLeader {
            leader_hint,
            descriptor: Some(truth),
        });
    }
    let result = match op {
        KvOp::Get { key, .. } => {
            return Response::Kv(KvResult::Value {
                value: cluster.data.get(&key).cloned(),
                applied: LogIndex(cluster.applications),
            });
        }
        KvOp::Put { key, value } => {
            let Some(session) = session else {
                return Response::Error(WireError::InvalidRequest {
                    reason: "write without session".into(),
                });
            };
            let last = cluster
                .last_sequence
                .get(&session.session_id)
                .copied()
                .unwrap_or(0);
            if session.sequence < last {
                // As the node does: an older sequence's result is gone.
                return Response::Error(WireError::InvalidRequest {
                    reason: "session sequence already superseded".into(),
                });
            }
            if session.sequence > last {
                cluster
                    .last_sequence
                    .insert(session.session_id, session.sequence);
                cluster.data.insert(key, value);
                cluster.applications += 1;
            }
            KvResult::Written {
                index: LogIndex(cluster.applications),
            }
        }
        _ => {
            return Response::Error(WireError::InvalidRequest {
                reason: "not faked".into(),
            });
        }
    };
    if cluster.lose_next_acks > 0 {
        cluster.lose_next_acks -= 1;
        return Response::Error(WireError::Timeout);
    }
    Response::Kv(result)
}

/// Starts fake nodes 1..=3 on 127.0.0.1; nodes in `down` are started and stopped at once, so
/// their address answers nothing.
async fn start(shared: &Shared, down: &[u64]) -> FakeNodes {
    start_configured(shared, down, |_| {}).await
}

/// As [`start`], with each node's transport configuration adjusted by `adjust`.
async fn start_configured(
    shared: &Shared,
    down: &[u64],
    adjust: impl Fn(&mut TransportConfig),
) -> FakeNodes {
    let shared = shared.clone();
    let mut fake = FakeNodes::start(CLUSTER, 1..=3, adjust, move |node, request| {
        answer(&shared, node, request)
    });
    for id in down {
        fake.stop(NodeId(*id)).await;
    }
    fake
}

async fn client(fake: &FakeNodes) -> Client {
    fake.client(fake.endpoints.clone()).await
}

async fn client_with_seeds(fake: &FakeNodes, seeds: Vec<Endpoint>) -> Client {
    fake.client(seeds).await
}

async fn bounded<F: std::future::Future>(test: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), test)
        .await
        .expect("test finished within 30 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_leader_hints_reroute_and_the_leader_is_cached() {
    bounded(async {
        let shared = cluster(3, true);
        let fake = start(&shared, &[]).await;
        let client = client(&fake).await;
        client.put("a", "1").await.unwrap();
        assert_eq!(client.get("a").await.unwrap(), Some(Bytes::from("1")));
        assert_eq!(client.get("missing").await.unwrap(), None);
        // Routing learned the leader: the next calls go straight to node 3.
        let before = shared.lock().unwrap().requests;
        client.put("a", "2").await.unwrap();
        assert_eq!(shared.lock().unwrap().requests - before, 1);
        drop(fake);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_node_closed_as_idle_is_redialed_not_failed_over() {
    bounded(async {
        let shared = cluster(3, true);
        let fake = start_configured(&shared, &[], |config| {
            config.client_idle_timeout = Duration::from_millis(200);
        })
        .await;
        let client = client(&fake).await;
        client.put("i", "1").await.unwrap();
        // Idle long enough for the node to close the connection.
        tokio::time::sleep(Duration::from_millis(800)).await;
        let before = shared.lock().unwrap().requests;
        client.put("i", "2").await.unwrap();
        // Straight to the leader on a new connection: no failed call, no failover.
        assert_eq!(shared.lock().unwrap().requests - before, 1);
        assert_eq!(client.get("i").await.unwrap(), Some(Bytes::from("2")));
        drop(fake);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_hints_the_client_walks_the_voters() {
    bounded(async {
        let shared = cluster(3, false);
        let fake = start(&shared, &[]).await;
        let client = client(&fake).await;
        client.put("b", "1").await.unwrap();
        assert_eq!(client.get("b").await.unwrap(), Some(Bytes::from("1")));
        drop(fake);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_epoch_is_replaced_from_the_mismatch_answer() {
    bounded(async {
        let shared = cluster(2, true);
        let fake = start(&shared, &[]).await;
        let client = client(&fake).await;
        // Membership changed after the client loaded its map; the served map is stale too.
        shared.lock().unwrap().truth = two_shards(5);
        client.put("c", "1").await.unwrap();
        assert_eq!(client.get("c").await.unwrap(), Some(Bytes::from("1")));
        let cached = client.shard_for_key(b"c").unwrap();
        assert_eq!(cached.epoch.conf_ver, 5);
        drop(fake);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_first_voter_fails_over() {
    bounded(async {
        let shared = cluster(2, true);
        let fake = start(&shared, &[1]).await;
        // Node 1 is down but still a seed: connect must find the map on another node.
        let client = client(&fake).await;
        client.put("d", "1").await.unwrap();
        assert_eq!(client.get("d").await.unwrap(), Some(Bytes::from("1")));
        drop(fake);
    })
    .await;
}

/// A dead node is marked down from its refused probe and stays avoided: the leader (node 3)
/// is dead, and nodes 1 and 2 keep naming it as leader. The client must neither follow those
/// hints in a burst nor give up before the budget: once node 2 takes over, the call succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_to_a_dead_leader_wait_for_the_next_leader() {
    bounded(async {
        let shared = cluster(3, true);
        let fake = start(&shared, &[3]).await;
        let client = client(&fake).await;
        let elect = {
            let shared = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                shared.lock().unwrap().leader = NodeId(2);
            })
        };
        client.put("g", "1").await.unwrap();
        elect.await.unwrap();
        assert_eq!(client.get("g").await.unwrap(), Some(Bytes::from("1")));
        assert_eq!(client.nodes_down(), [NodeId(3)]);
        // Waiting 1.5 s for the election took paced retries, not a burst: at most a few
        // immediate reroutes between backoffs (10 ms doubling to 200 ms).
        let requests = shared.lock().unwrap().requests;
        assert!(
            requests < 60,
            "{requests} requests while waiting for a leader"
        );
        drop(fake);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_acknowledgement_is_retried_and_applied_once() {
    bounded(async {
        let shared = cluster(1, true);
        let fake = start(&shared, &[]).await;
        let client = client(&fake).await;
        shared.lock().unwrap().lose_next_acks = 2;
        client.put("e", "1").await.unwrap();
        client.put("e", "2").await.unwrap();
        {
            let cluster = shared.lock().unwrap();
            assert_eq!(cluster.applications, 2, "each write applied exactly once");
            assert_eq!(cluster.data.get(&Bytes::from("e")), Some(&Bytes::from("2")));
        }
        drop(fake);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_bounded_and_batches_are_checked() {
    bounded(async {
        let shared = cluster(1, true);
        let fake = start(&shared, &[]).await;
        let client = client(&fake).await;
        // Nobody leads: every replica says NotLeader without a hint, until the budget runs out.
        shared.lock().unwrap().leader = NodeId(9);
        let error = client.put("f", "1").await.unwrap_err();
        assert!(matches!(error, Error::Exhausted { .. }), "{error}");
        assert!(error.is_retryable());
        // Batches: empty, and spanning both shards.
        assert!(matches!(
            client.batch(Vec::new()).await,
            Err(Error::EmptyBatch)
        ));
        let keys: Vec<Bytes> = (0u32..64).map(|i| Bytes::from(i.to_string())).collect();
        let ops = keys
            .iter()
            .map(|key| BatchOp::Delete { key: key.clone() })
            .collect();
        assert!(matches!(
            client.batch(ops).await,
            Err(Error::CrossShardBatch { .. })
        ));
        drop(fake);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_never_overtake_each_other_in_a_session() {
    bounded(async {
        let shared = cluster(1, true);
        let fake = start(&shared, &[]).await;
        let client = client(&fake).await;
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..32u32 {
            let client = client.clone();
            tasks.spawn(async move {
                for round in 0..10u32 {
                    client
                        .put(format!("k{task}-{round}"), "v")
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.unwrap().unwrap();
        }
        assert_eq!(shared.lock().unwrap().applications, 320);
        drop(fake);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_seed_learns_the_other_nodes() {
    bounded(async {
        let shared = cluster(3, true);
        let fake = start(&shared, &[]).await;
        shared.lock().unwrap().nodes = fake
            .endpoints
            .iter()
            .map(|e| NodeAddress {
                node: e.node,
                addr: e.addr.clone(),
            })
            .collect();
        let seed = fake
            .endpoints
            .iter()
            .filter(|e| e.node == NodeId(2))
            .cloned()
            .collect();
        let client = client_with_seeds(&fake, seed).await;
        assert_eq!(client.nodes().len(), 3);
        client.put("g", "1").await.unwrap();
        assert_eq!(client.get("g").await.unwrap(), Some(Bytes::from("1")));
        drop(fake);
    })
    .await;
}
