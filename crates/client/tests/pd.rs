//! The client against a fake cluster whose nodes share a real `ringkv_pd::PdState`: placement
//! driver calls find the PD leader (hints, no hints, a leader the client did not know), PD
//! refusals surface as `Error::Pd`, and key-value calls survive a split and a move to a node that
//! joined after the client loaded its map.
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, reason = "tests: a failure is a test failure")]

use bytes::Bytes;
use ringkv_client::test_support::FakeNodes;
use ringkv_client::{Client, Error};
use ringkv_pd::{
    self, AdminOperator, Apply, Command, NodeRegistration, NodeState, PdState, SchedulerKind,
    Settings, test_support,
};
use ringkv_types::{
    AdminRequest, AdminResult, KvOp, KvRequest, KvResult, LogIndex, NodeAddress, NodeId, Request,
    Response, ShardDescriptor, ShardId, ShardMap, WireError,
};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CLUSTER: &str = "test";

/// The fake cluster: PD's state is also the truth every replica checks requests against.
struct Cluster {
    pd: PdState,
    pd_leader: NodeId,
    /// Whether nodes that are not the PD leader name it in `NotLeader`.
    pd_hint: bool,
    /// Shard leaders (default: the first voter).
    leaders: HashMap<ShardId, NodeId>,
    data: HashMap<Bytes, Bytes>,
    /// Addresses of every fake node, registered or not.
    addrs: BTreeMap<NodeId, SocketAddr>,
    pd_calls: u64,
    /// A map served to the next `GetShardMap` calls instead of PD's (PD lagging behind a split
    /// its replicas already applied), and how many more times.
    lagging: Option<(ShardMap, u32)>,
    map_requests: u64,
}

type Shared = Arc<Mutex<Cluster>>;

fn shard_leader(cluster: &Cluster, descriptor: &ShardDescriptor) -> Option<NodeId> {
    cluster
        .leaders
        .get(&descriptor.id)
        .copied()
        .filter(|l| descriptor.replica_on(*l).is_some())
        .or_else(|| descriptor.voters().next())
}

fn encode<T: serde::Serialize>(value: &T) -> Bytes {
    Bytes::from(postcard::to_stdvec(value).unwrap())
}

fn answer(shared: &Shared, me: NodeId, request: Request) -> Response {
    let mut cluster = shared.lock().unwrap();
    let kv = match request {
        Request::Admin(AdminRequest::GetShardMap) => {
            cluster.map_requests += 1;
            if let Some((map, left)) = cluster.lagging.as_mut()
                && *left > 0
            {
                *left -= 1;
                let map = map.clone();
                return Response::Admin(AdminResult::ShardMap(map));
            }
            return Response::Admin(AdminResult::ShardMap(cluster.pd.shard_map.clone()));
        }
        Request::Admin(AdminRequest::GetNodes) => {
            let nodes = cluster
                .pd
                .nodes
                .values()
                .filter(|n| n.state != NodeState::Removed)
                .map(|n| NodeAddress {
                    node: n.id,
                    addr: n.addr.clone(),
                })
                .collect();
            return Response::Admin(AdminResult::Nodes(nodes));
        }
        Request::Admin(
            request @ (AdminRequest::Pd { .. }
            | AdminRequest::PdState
            | AdminRequest::PdPlan { .. }),
        ) => {
            cluster.pd_calls += 1;
            if me != cluster.pd_leader {
                return Response::Error(WireError::NotLeader {
                    leader_hint: cluster.pd_hint.then_some(cluster.pd_leader),
                    descriptor: None,
                });
            }
            let bytes = match request {
                AdminRequest::Pd { command } => {
                    let command: Command = postcard::from_bytes(&command).unwrap();
                    let result = cluster.pd.apply(&command);
                    cluster.pd.check_invariants();
                    encode(&result)
                }
                AdminRequest::PdPlan { balancing } => {
                    encode(&ringkv_pd::plan_with(&cluster.pd, balancing))
                }
                _ => encode(&cluster.pd),
            };
            return Response::Admin(AdminResult::Pd(bytes));
        }
        Request::Admin(_) | Request::WithToken { .. } | Request::Watch(_) => {
            return Response::Error(WireError::InvalidRequest {
                reason: "not faked".into(),
            });
        }
        Request::Kv(kv) => kv,
    };
    let KvRequest {
        shard, epoch, op, ..
    } = kv;
    let Some(truth) = cluster.pd.descriptor(shard).cloned() else {
        return Response::Error(WireError::ShardNotFound { shard });
    };
    if truth.replica_on(me).is_none() {
        return Response::Error(WireError::ShardNotFound { shard });
    }
    if epoch != truth.epoch {
        return Response::Error(WireError::EpochMismatch { descriptor: truth });
    }
    let leader = shard_leader(&cluster, &truth);
    if leader != Some(me) {
        return Response::Error(WireError::NotLeader {
            leader_hint: leader,
            descriptor: Some(truth),
        });
    }
    let key = match &op {
        KvOp::Get { key, .. } | KvOp::Put { key, .. } => key.clone(),
        _ => {
            return Response::Error(WireError::InvalidRequest {
                reason: "not faked".into(),
            });
        }
    };
    if !truth.contains_key(&key) {
        return Response::Error(WireError::KeyNotInShard { shard });
    }
    match op {
        KvOp::Put { key, value } => {
            cluster.data.insert(key, value);
            Response::Kv(KvResult::Written { index: LogIndex(1) })
        }
        _ => Response::Kv(KvResult::Value {
            value: cluster.data.get(&key).cloned(),
            applied: LogIndex(1),
        }),
    }
}

fn registration(addr: SocketAddr) -> NodeRegistration {
    NodeRegistration {
        addr: addr.to_string(),
        labels: BTreeMap::new(),
        capacity_bytes: 1 << 30,
    }
}

/// Starts fake nodes `1..=count`; PD is bootstrapped with nodes 1..=3 and two shards on them.
async fn start(count: u64, pd_leader: u64, pd_hint: bool) -> (Shared, FakeNodes) {
    let shared = Arc::new(Mutex::new(Cluster {
        pd: PdState::new(),
        pd_leader: NodeId(pd_leader),
        pd_hint,
        leaders: HashMap::new(),
        data: HashMap::new(),
        addrs: BTreeMap::new(),
        pd_calls: 0,
        lagging: None,
        map_requests: 0,
    }));
    let answering = shared.clone();
    let fake = FakeNodes::start(
        CLUSTER,
        1..=count,
        |_| {},
        move |node, request| answer(&answering, node, request),
    );
    for id in 1..=count {
        let node = NodeId(id);
        shared.lock().unwrap().addrs.insert(node, fake.addr(node));
    }
    {
        let mut cluster = shared.lock().unwrap();
        let nodes = (1..=3).map(|id| (NodeId(id), cluster.addrs[&NodeId(id)].to_string()));
        let map = test_support::round_robin_map(3, 2, 3);
        let bootstrap = test_support::bootstrap_at(CLUSTER, nodes, map, Settings::default());
        cluster.pd.apply(&bootstrap).unwrap();
    }
    (shared, fake)
}

async fn client(fake: &FakeNodes, seeds: &[u64]) -> Client {
    let seeds = fake
        .endpoints
        .iter()
        .filter(|e| seeds.contains(&e.node.get()))
        .cloned()
        .collect();
    fake.client(seeds).await
}

async fn bounded<F: std::future::Future>(test: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), test)
        .await
        .expect("test finished within 30 s")
}

/// A key whose ring position is in `[low, high)`.
fn key_between(low: u64, high: u64) -> Bytes {
    (0u32..)
        .map(|i| Bytes::from(format!("key-{i}")))
        .find(|k| (low..high).contains(&ringkv_types::ring::position(k)))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pd_calls_follow_hints_cache_the_leader_and_surface_refusals() {
    bounded(async {
        let (shared, fake) = start(3, 3, true).await;
        let client = client(&fake, &[1, 2, 3]).await;
        let answer = client
            .pd_call(Command::SetScheduler {
                scheduler: SchedulerKind::BalanceLeaders,
                enabled: false,
            })
            .await
            .unwrap();
        assert_eq!(answer, ringkv_pd::Response::Done);
        assert_eq!(client.cached_pd_leader(), Some(NodeId(3)));
        // The leader is cached: the next call is one request.
        let before = shared.lock().unwrap().pd_calls;
        let state = client.pd_state().await.unwrap();
        assert_eq!(shared.lock().unwrap().pd_calls - before, 1);
        assert!(!state.settings.balance_leaders);
        assert_eq!(state.nodes.len(), 3);
        // A refused command is a typed error, not retried.
        let error = client
            .pd_call(Command::AddOperator {
                operator: AdminOperator::TransferLeader {
                    shard: ShardId(99),
                    to: NodeId(1),
                },
                now_ms: 0,
            })
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                Error::Pd(ringkv_pd::Error::UnknownShard { shard }) if shard == ShardId(99)
            ),
            "{error}"
        );
        assert!(!error.is_retryable());
        // Registration is idempotent by address.
        let addr = SocketAddr::from(([127, 0, 0, 14], 7100));
        let register = Command::RegisterNode {
            node: registration(addr),
            now_ms: 0,
        };
        let first = client.pd_call(register.clone()).await.unwrap();
        let again = client.pd_call(register).await.unwrap();
        assert_eq!(first, ringkv_pd::Response::NodeId(NodeId(4)));
        assert_eq!(again, first);
        // The plan comes from the PD leader: node 4 joined empty, so balancing would fill it,
        // while the settings alone (balancing off) plan nothing for it.
        let balancing = client.pd_plan(true).await.unwrap();
        let expected = ringkv_pd::plan_with(&shared.lock().unwrap().pd, true);
        assert_eq!(balancing, expected);
        assert!(
            balancing.iter().any(|o| o.steps.iter().any(
                |s| matches!(s, ringkv_pd::Step::AddLearner { node, .. } if *node == NodeId(4))
            )),
            "{balancing:?}"
        );
        let settings_only = client.pd_plan(false).await.unwrap();
        assert_eq!(settings_only, ringkv_pd::plan(&shared.lock().unwrap().pd));
        // The leader moves: the stale cache is followed by the hint.
        shared.lock().unwrap().pd_leader = NodeId(1);
        client.pd_state().await.unwrap();
        assert_eq!(client.cached_pd_leader(), Some(NodeId(1)));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_hints_every_known_node_is_tried_learned_ones_included() {
    bounded(async {
        // PD leads on node 3, which is not a seed; nobody gives hints.
        let (_shared, fake) = start(3, 3, false).await;
        let client = client(&fake, &[1]).await;
        let state = client.pd_state().await.unwrap();
        assert_eq!(state.shard_map.shards.len(), 2);
        assert_eq!(client.cached_pd_leader(), Some(NodeId(3)));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pd_leader_exhausts_the_budget() {
    bounded(async {
        let (_shared, fake) = start(3, 9, false).await;
        let client = client(&fake, &[1, 2, 3]).await;
        let error = client.pd_state().await.unwrap_err();
        assert!(matches!(error, Error::Exhausted { .. }), "{error}");
        assert!(error.is_retryable());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_after_the_map_was_loaded_is_followed() {
    bounded(async {
        let (shared, fake) = start(3, 1, true).await;
        let client = client(&fake, &[1, 2, 3]).await;
        // Split shard 1 ([0, 2^63)) at 2^62; the key lives in the new right half, shard 3.
        let at = 1u64 << 62;
        let key = key_between(at, 1 << 63);
        let lag = 3;
        {
            let mut cluster = shared.lock().unwrap();
            // The first map reloads still serve the map from before the split.
            cluster.lagging = Some((cluster.pd.shard_map.clone(), lag));
            let map = &mut cluster.pd.shard_map;
            let left = map.shards.iter_mut().find(|d| d.id == ShardId(1)).unwrap();
            let (low, high) = left.arc.split_at(at).unwrap();
            left.arc = low;
            left.epoch.version += 1;
            let mut right = left.clone();
            right.id = ShardId(3);
            right.arc = high;
            map.shards.insert(1, right);
            map.version += 1;
            cluster.pd.ids.next_shard = 4;
            cluster.pd.check_invariants();
        }
        // The cached map routes the key to shard 1 with the old epoch: the mismatch carries a
        // descriptor that no longer holds the key, so the client reloads the map, backing off
        // while the reloads still serve the old map, until the new one arrives.
        assert_eq!(client.shard_for_key(&key).map(|d| d.id), Some(ShardId(1)));
        let before = shared.lock().unwrap().map_requests;
        client.put(key.clone(), "v").await.unwrap();
        assert!(shared.lock().unwrap().map_requests - before > u64::from(lag));
        assert_eq!(client.shard_for_key(&key).map(|d| d.id), Some(ShardId(3)));
        assert_eq!(client.get(key).await.unwrap(), Some(Bytes::from("v")));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_to_a_node_that_joined_later_is_followed() {
    bounded(async {
        // Four fake nodes, but PD and the client know only 1..=3 at first.
        let (shared, fake) = start(4, 1, true).await;
        let client = client(&fake, &[1, 2, 3]).await;
        assert_eq!(client.nodes().len(), 3);
        let key = key_between(0, u64::MAX);
        let shard = client.shard_for_key(&key).map(|d| d.id).unwrap();
        {
            // Node 4 joins, the shard's replica moves from node 2 to node 4, which leads. Node
            // 1 answers the old epoch with the new descriptor, then `NotLeader` naming node 4,
            // whose address the client must learn.
            let mut cluster = shared.lock().unwrap();
            let addr = cluster.addrs[&NodeId(4)];
            let joined = cluster.pd.apply(&Command::RegisterNode {
                node: registration(addr),
                now_ms: 2,
            });
            assert_eq!(joined, Ok(ringkv_pd::Response::NodeId(NodeId(4))));
            let map = &mut cluster.pd.shard_map;
            let descriptor = map.shards.iter_mut().find(|d| d.id == shard).unwrap();
            descriptor.replicas = [1, 3, 4].into_iter().map(test_support::voter).collect();
            descriptor.epoch.conf_ver += 1;
            map.version += 1;
            cluster.leaders.insert(shard, NodeId(4));
            cluster.pd.check_invariants();
        }
        client.put(key.clone(), "moved").await.unwrap();
        assert!(client.nodes().iter().any(|e| e.node == NodeId(4)));
        assert_eq!(client.get(key).await.unwrap(), Some(Bytes::from("moved")));
    })
    .await;
}
