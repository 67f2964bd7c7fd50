//! Criterion benchmark of a whole cluster: three `ringkv-node`s in this process, on loopback
//! QUIC with mutual TLS, each with its own fjall store in a temporary directory and real fsync
//! (every group commit is a `SyncData`), 16 shards of three replicas. The smart client
//! (`ringkv-client`) routes every call to the shard leader.
//!
//! - `cluster/put/<n>_in_flight`: 100-byte puts on 1024 keys, `n` calls in flight.
//! - `cluster/get_linearizable/<n>_in_flight`: linearizable (ReadIndex) gets of those keys.
//!
//! Certificates, configs, node start, the wait for leaders, the client's connections and the
//! preload of the keys all happen before measuring; each measured iteration is one call.
//! Everything shares one 2-thread runtime, as on the 2-core machine the numbers come from.
#![allow(missing_docs)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark setup: a failure aborts the run"
)]

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringkv_client::{Client, ClientConfig, Endpoint, TlsSource};
use ringkv_node::{NodeConfig, NodeHandle};
use ringkv_transport::certs::{ClusterCa, TlsIdentity, Validity};
use ringkv_types::{NodeId, ShardId};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

const CLUSTER: &str = "bench";
const NODES: u64 = 3;
const SHARDS: u64 = 16;
const KEYS: u64 = 1024;
const VALUE_BYTES: usize = 100;

struct Bench {
    _dir: tempfile::TempDir,
    nodes: Vec<NodeHandle>,
    client: Client,
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn free_addr() -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

fn key(index: u64) -> Bytes {
    Bytes::from(format!("bench-{index:05}"))
}

/// Starts the cluster, waits until every shard has a leader the client can write through, and
/// preloads every key.
async fn start() -> Bench {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let validity = Validity::days_from_now(1);
    let ca = ClusterCa::generate(CLUSTER, validity).unwrap();
    ca.to_pem_pair().write(dir.path(), "ca").unwrap();
    let addrs: Vec<SocketAddr> = (0..NODES).map(|_| free_addr()).collect();
    let initial: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| format!("\"{}@{addr}\"", i + 1))
        .collect();
    let mut nodes = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let id = i as u64 + 1;
        ca.issue_node(NodeId(id), &[addr.ip()], validity)
            .unwrap()
            .write(dir.path(), &format!("node-{id}"))
            .unwrap();
        let text = format!(
            r#"node_id = {id}
cluster = "{CLUSTER}"
listen_addr = "{addr}"
data_dir = "node-{id}"
initial_cluster = [{initial}]
initial_shards = {SHARDS}
replication_factor = 3
[tls]
ca_cert = "ca.pem"
cert = "node-{id}.pem"
key = "node-{id}.key"
"#,
            initial = initial.join(", ")
        );
        let path = dir.path().join(format!("node-{id}.toml"));
        std::fs::write(&path, text).unwrap();
        let config = NodeConfig::load(&path).unwrap();
        // Together: a new initial node creates the cluster once a quorum of them is up.
        nodes.push(tokio::spawn(ringkv_node::start(config)));
    }
    let mut started = Vec::new();
    for node in nodes {
        started.push(node.await.unwrap().unwrap());
    }
    let nodes = started;
    let pair = ca.issue_client("ringctl", validity).unwrap();
    let identity = TlsIdentity::from_pem(ca.cert_pem(), &pair).unwrap();
    let endpoints = addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| Endpoint {
            node: NodeId(i as u64 + 1),
            addr: addr.to_string(),
        })
        .collect();
    let mut config = ClientConfig::new(endpoints, CLUSTER, TlsSource::Identity(identity));
    config.bind_addr = "127.0.0.1:0".parse().unwrap();
    config.request_timeout = Duration::from_secs(10);
    let deadline = Instant::now() + Duration::from_secs(60);
    let client = loop {
        match Client::connect(config.clone()).await {
            Ok(client) => break client,
            Err(error) => {
                assert!(Instant::now() < deadline, "no shard map: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_for_leaders(&client).await;
    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
    run(&client, KEYS, 64, move |client, index| {
        let value = value.clone();
        async move { client.put(key(index), value).await.unwrap() }
    })
    .await;
    Bench {
        _dir: dir,
        nodes,
        client,
    }
}

/// Waits (bounded) until every shard and the placement driver have a leader.
async fn wait_for_leaders(client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut led = std::collections::BTreeSet::new();
        for node in 1..=NODES {
            if let Ok(status) = client.node_status(NodeId(node)).await {
                led.extend(
                    status
                        .replicas
                        .iter()
                        .filter(|replica| replica.is_leader)
                        .map(|replica| replica.shard),
                );
            }
        }
        if (0..=SHARDS).all(|shard| led.contains(&ShardId(shard))) {
            return;
        }
        assert!(Instant::now() < deadline, "not every shard has a leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `iters` calls of `op` spread over `in_flight` tasks; returns the elapsed time.
async fn run<F, Fut>(client: &Client, iters: u64, in_flight: u64, op: F) -> Duration
where
    F: Fn(Client, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|worker| {
            let calls = iters / in_flight + u64::from(worker < iters % in_flight);
            let client = client.clone();
            let op = op.clone();
            tokio::spawn(async move {
                for call in 0..calls {
                    op(client.clone(), (worker + call * in_flight) % KEYS).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed()
}

fn cluster(c: &mut Criterion) {
    let runtime = runtime();
    let bench = runtime.block_on(start());
    let value = Bytes::from(vec![b'w'; VALUE_BYTES]);
    let mut group = c.benchmark_group("cluster");
    group.throughput(Throughput::Elements(1));
    for in_flight in [64u64, 256] {
        group.bench_function(format!("put/{in_flight}_in_flight"), |b| {
            b.iter_custom(|iters| {
                let value = value.clone();
                runtime.block_on(run(
                    &bench.client,
                    iters,
                    in_flight,
                    move |client, index| {
                        let value = value.clone();
                        async move { client.put(key(index), value).await.unwrap() }
                    },
                ))
            });
        });
        group.bench_function(format!("get_linearizable/{in_flight}_in_flight"), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(run(
                    &bench.client,
                    iters,
                    in_flight,
                    |client, index| async move {
                        let value = client.get(key(index)).await.unwrap();
                        assert!(value.is_some());
                        std::hint::black_box(value);
                    },
                ))
            });
        });
    }
    group.finish();
    runtime.block_on(async {
        bench.client.close().await;
        for node in bench.nodes {
            node.stop().await.unwrap();
        }
    });
}

fn short() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10)
}

criterion_group! {
    name = benches;
    config = short();
    targets = cluster
}
criterion_main!(benches);
