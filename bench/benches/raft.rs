//! Criterion benchmarks for ringkv-raft: entries committed per second through a 3-replica group
//! with in-memory delivery (`MemStorage`, synchronous persistence, no network, no fsync). This
//! measures the core's CPU cost per entry (proposal, Ready assembly, append handling, commit,
//! apply hand-out) and how batching amortizes it; it says nothing about disk or network latency.
#![allow(missing_docs)]

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringkv_raft::{Config, MemStorage, RawNode};
use ringkv_types::raft::{ConfState, Message};
use ringkv_types::{LogIndex, NodeId, ShardId};
use std::collections::VecDeque;
use std::time::Duration;

const GROUP: ShardId = ShardId(1);
const PAYLOAD: &[u8] = &[0xAB; 64];

struct Replica {
    node: RawNode<MemStorage>,
    storage: MemStorage,
    applied: LogIndex,
}

/// Three replicas and one message queue; every Ready is persisted synchronously.
struct Group {
    replicas: Vec<Replica>,
    queue: VecDeque<Message>,
}

impl Group {
    fn new() -> Self {
        let conf = ConfState::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
        let replicas = (1..=3u64)
            .map(|id| {
                let mut config = Config::new(NodeId(id), GROUP);
                config.seed = 7;
                // Large enough that batches of 256 never hit the flow-control limits.
                config.max_uncommitted_bytes = 1 << 30;
                let storage = MemStorage::with_conf(conf.clone());
                let node = RawNode::new(config, storage.clone()).expect("valid config");
                Replica {
                    node,
                    storage,
                    applied: LogIndex::ZERO,
                }
            })
            .collect();
        let mut group = Self {
            replicas,
            queue: VecDeque::new(),
        };
        group.replicas[0].node.campaign().expect("campaign");
        group.run_until(|g| {
            g.replicas[0].node.is_leader() && g.replicas[0].applied > LogIndex::ZERO
        });
        group
    }

    fn index(id: NodeId) -> usize {
        usize::try_from(id.get() - 1).expect("small id")
    }

    /// One driver turn per replica, then deliver everything queued.
    fn turn(&mut self) {
        for replica in &mut self.replicas {
            if !replica.node.has_ready() {
                continue;
            }
            let ready = replica.node.ready().expect("ready");
            self.queue.extend(ready.messages);
            if let Some(snapshot) = ready.snapshot {
                replica.storage.apply_snapshot(snapshot);
            }
            replica.storage.append(&ready.entries);
            if let Some(hard_state) = ready.hard_state {
                replica.storage.set_hard_state(hard_state);
            }
            replica
                .node
                .on_persisted(ready.number)
                .expect("on_persisted");
            self.queue.extend(ready.persisted_messages);
            if let Some(last) = ready.committed_entries.last() {
                replica.applied = last.index;
                replica.node.on_applied(last.index);
            }
        }
        while let Some(message) = self.queue.pop_front() {
            let to = Self::index(message.to);
            self.replicas[to].node.step(message).expect("step");
        }
    }

    fn run_until(&mut self, done: impl Fn(&Self) -> bool) {
        for _ in 0..10_000 {
            if done(self) {
                return;
            }
            self.turn();
        }
        panic!("group made no progress");
    }

    /// Proposes `batch` entries on the leader and runs until the leader has applied them all.
    fn commit_batch(&mut self, batch: u64) {
        let mut last = LogIndex::ZERO;
        for _ in 0..batch {
            last = self.replicas[0]
                .node
                .propose(Bytes::from_static(PAYLOAD))
                .expect("propose");
        }
        self.run_until(|g| g.replicas[0].applied >= last);
    }

    /// Keeps memory flat over a long run: drop applied entries from every log.
    fn compact(&mut self) {
        for replica in &self.replicas {
            let conf = replica.node.conf_state().clone();
            replica.storage.compact(replica.applied, conf, Bytes::new());
        }
    }
}

fn commit_throughput(c: &mut Criterion) {
    let mut bench_group = c.benchmark_group("raft/commit_3_replicas");
    bench_group.warm_up_time(Duration::from_millis(500));
    bench_group.measurement_time(Duration::from_secs(2));
    for batch in [1u64, 16, 256] {
        bench_group.throughput(Throughput::Elements(batch));
        bench_group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            let mut group = Group::new();
            let mut rounds = 0u64;
            b.iter(|| {
                group.commit_batch(batch);
                rounds += 1;
                if rounds.is_multiple_of(64) {
                    group.compact();
                }
            });
        });
    }
    bench_group.finish();
}

criterion_group!(benches, commit_throughput);
criterion_main!(benches);
