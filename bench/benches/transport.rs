//! Criterion benchmarks for ringkv-transport, over loopback QUIC with mutual TLS:
//! - `transport/raft_link`: batches of 64 Append messages (one 100-byte entry each) from node 1
//!   to node 2 over one peer link, measured until the receiver's node queue has them all.
//! - `transport/client_calls/<n>`: client round trips (one stream per request) with `n` calls in
//!   flight against a handler that answers at once.
#![allow(missing_docs)]
#![allow(
    clippy::unwrap_used,
    reason = "benchmark setup: a failure aborts the run"
)]

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringkv_transport::certs::{ClusterCa, TlsIdentity, Validity};
use ringkv_transport::{ClientEndpoint, SendOutcome, Transport, TransportConfig};
use ringkv_types::raft::{Entry, EntryPayload, Message, MessageBody};
use ringkv_types::{
    Epoch, KvOp, KvRequest, KvResult, LogIndex, NodeId, RaftBatch, ReadConsistency, Request,
    Response, ShardId, Term,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

const CLUSTER: &str = "bench";
const BATCH_MESSAGES: u64 = 64;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn loopback() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

fn identity(ca: &ClusterCa, node: u64) -> TlsIdentity {
    let validity = Validity::days_from_now(1);
    let pair = ca
        .issue_node(NodeId(node), &["127.0.0.1".parse().unwrap()], validity)
        .unwrap();
    TlsIdentity::from_pem(ca.cert_pem(), &pair).unwrap()
}

fn config(node: u64) -> TransportConfig {
    let mut config = TransportConfig::new(NodeId(node), CLUSTER, loopback());
    config.peer_queue_batches_max = 4096;
    config.raft_inbound_batches_max = 4096;
    config
}

fn batch() -> RaftBatch {
    RaftBatch::new(
        (0..BATCH_MESSAGES)
            .map(|i| Message {
                group: ShardId(1 + i % 16),
                from: NodeId(1),
                to: NodeId(2),
                term: Term(1),
                body: MessageBody::Append {
                    prev_index: LogIndex(i),
                    prev_term: Term(1),
                    entries: vec![Entry {
                        term: Term(1),
                        index: LogIndex(i + 1),
                        payload: EntryPayload::Normal(Bytes::from(vec![0x5a; 100])),
                    }],
                    commit: LogIndex(i),
                },
            })
            .collect(),
    )
}

fn raft_link(c: &mut Criterion) {
    let runtime = runtime();
    let ca = ClusterCa::generate(CLUSTER, Validity::days_from_now(1)).unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let (node_1, node_2) = runtime.block_on(async {
        let (node_1, _inbound_1) = Transport::builder(config(1), identity(&ca, 1))
            .start()
            .unwrap();
        let (node_2, mut inbound_2) = Transport::builder(config(2), identity(&ca, 2))
            .start()
            .unwrap();
        node_1.add_peer(NodeId(2), node_2.local_addr().unwrap());
        let counter = received.clone();
        tokio::spawn(async move {
            while let Some(batch) = inbound_2.raft.recv().await {
                counter.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
        });
        while received.load(Ordering::Relaxed) == 0 {
            let _ = node_1.send(NodeId(2), batch());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (node_1, node_2)
    });
    let template = batch();
    let mut group = c.benchmark_group("transport");
    group.throughput(Throughput::Elements(BATCH_MESSAGES));
    group.bench_function("raft_link/64x100B", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start_count = received.load(Ordering::Relaxed);
                let target = start_count + iters * BATCH_MESSAGES;
                let started = Instant::now();
                for _ in 0..iters {
                    // Back off while the link's queue is full instead of measuring drops.
                    while let SendOutcome::QueueFull { .. } =
                        node_1.send(NodeId(2), template.clone())
                    {
                        tokio::task::yield_now().await;
                    }
                }
                while received.load(Ordering::Relaxed) < target {
                    tokio::task::yield_now().await;
                }
                started.elapsed()
            })
        });
    });
    group.finish();
    let drops = node_1.peer_stats(NodeId(2)).unwrap().send_drops;
    println!("raft_link: {drops} messages dropped at full queues and re-sent");
    runtime.block_on(async {
        node_1.shutdown().await;
        node_2.shutdown().await;
    });
}

fn client_calls(c: &mut Criterion) {
    let runtime = runtime();
    let ca = ClusterCa::generate(CLUSTER, Validity::days_from_now(1)).unwrap();
    let (node, connection, client) = runtime.block_on(async {
        let handler = |_peer: ringkv_types::PeerIdentity, _request: Request| async {
            Response::Kv(KvResult::Written { index: LogIndex(1) })
        };
        let (node, _inbound) = Transport::builder(config(1), identity(&ca, 1))
            .handler(handler)
            .start()
            .unwrap();
        let pair = ca
            .issue_client("bench", Validity::days_from_now(1))
            .unwrap();
        let client_identity = TlsIdentity::from_pem(ca.cert_pem(), &pair).unwrap();
        let client = ClientEndpoint::new(&client_identity, CLUSTER, loopback()).unwrap();
        let connection = client
            .connect(NodeId(1), node.local_addr().unwrap())
            .await
            .unwrap();
        (node, connection, client)
    });
    let request = Request::Kv(KvRequest {
        shard: ShardId(1),
        epoch: Epoch::default(),
        session: None,
        timeout_ms: 0,
        op: KvOp::Get {
            key: Bytes::from_static(b"bench-key"),
            consistency: ReadConsistency::Stale,
        },
    });
    let mut group = c.benchmark_group("transport");
    group.throughput(Throughput::Elements(1));
    for in_flight in [1u64, 64, 256] {
        group.bench_function(format!("client_calls/{in_flight}_in_flight"), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let started = Instant::now();
                    let tasks: Vec<_> = (0..in_flight)
                        .map(|worker| {
                            let connection = connection.clone();
                            let request = request.clone();
                            // Spread `iters` calls over the workers.
                            let calls = iters / in_flight + u64::from(worker < iters % in_flight);
                            tokio::spawn(async move {
                                for _ in 0..calls {
                                    let response = connection
                                        .call(&request, Duration::from_secs(10))
                                        .await
                                        .unwrap();
                                    std::hint::black_box(response);
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                    started.elapsed()
                })
            });
        });
    }
    group.finish();
    runtime.block_on(async {
        client.close().await;
        node.shutdown().await;
    });
}

fn short() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = short();
    targets = raft_link, client_calls
}
criterion_main!(benches);
