//! Criterion bench of the apply batch: committed client writes becoming one atomic store batch
//! (values, session records, applied index), shaped like a leader's apply under a put load: each
//! command a 100-byte put from one of 256 client sessions, its sequence one past the session's
//! last, keys spread over 100k. A regression in the write path's apply cost shows here without a
//! cluster.
//!
//! Run: `cargo bench -p ringkv-storage --bench apply` (`-- versions_follow_index` for the
//! put-without-read comparison). Figures: `docs/perf.md`.
#![allow(missing_docs, clippy::unwrap_used, reason = "bench")]

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringkv_storage::kv_machine::{self, CommandRun};
use ringkv_storage::{
    AppliedState, Command, Operation, SessionRequest, StateStore, Store, StoreConfig,
};
use ringkv_types::{LogIndex, ShardId, Term};
use std::hint::black_box;
use std::time::Duration;

const SHARD: ShardId = ShardId(1);
const SESSIONS: u64 = 256;
const KEYS: u64 = 100_000;

/// The state of the simulated clients: the next sequence per session and the log position.
struct Load {
    sequences: Vec<u64>,
    next_session: u64,
    rng: u64,
    applied: u64,
    value: Bytes,
}

impl Load {
    fn new() -> Self {
        Self {
            sequences: vec![0; SESSIONS as usize],
            next_session: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
            applied: 0,
            value: Bytes::from(vec![b'v'; 100]),
        }
    }

    /// The next `count` committed commands, as one apply run.
    fn batch(&mut self, count: u64) -> (Vec<Command>, Vec<u64>, AppliedState) {
        let mut commands = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let session = self.next_session % SESSIONS;
            self.next_session += 1;
            self.sequences[session as usize] += 1;
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            commands.push(Command {
                session: Some(SessionRequest {
                    session: session + 1,
                    sequence: self.sequences[session as usize],
                }),
                operations: vec![Operation::Put {
                    key: Bytes::from(format!("key-{}", self.rng % KEYS)),
                    value: self.value.clone(),
                }],
            });
        }
        self.applied += count;
        let stamps = vec![1_700_000_000_000 + self.applied; count as usize];
        let applied = AppliedState {
            index: LogIndex(self.applied),
            term: Term(1),
        };
        (commands, stamps, applied)
    }
}

fn apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("storage/apply");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for per_batch in [1u64, 16, 64] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let mut load = Load::new();
        // Every session has a record before the measurement, as on a node under load.
        let (commands, stamps, applied) = load.batch(SESSIONS);
        store
            .apply_with_meta(SHARD, &commands, &stamps, &[], applied, None, &[])
            .unwrap();
        group.throughput(Throughput::Elements(per_batch));
        group.bench_with_input(
            BenchmarkId::from_parameter(per_batch),
            &per_batch,
            |b, &n| {
                b.iter_batched(
                    || load.batch(n),
                    |(commands, stamps, applied)| {
                        black_box(
                            store
                                .apply_with_meta(SHARD, &commands, &stamps, &[], applied, None, &[])
                                .unwrap(),
                        )
                    },
                    criterion::BatchSize::SmallInput,
                );
            },
        );
    }
    group.finish();
}

/// The same load through `kv_machine` directly, with and without the claim that the shard's
/// versions follow its log index (then a put does not read its previous value back).
fn apply_claiming(c: &mut Criterion) {
    let mut group = c.benchmark_group("storage/apply_versions_follow_index");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for claim in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let mut load = Load::new();
        let run =
            |store: &mut Store,
             (commands, stamps, applied): (Vec<Command>, Vec<u64>, AppliedState)| {
                let indexes: Vec<u64> =
                    (applied.index.0 + 1 - commands.len() as u64..=applied.index.0).collect();
                let run = CommandRun {
                    commands: &commands,
                    stamps: &stamps,
                    indexes: &indexes,
                    versions_follow_index: claim,
                };
                let (batch, results) =
                    kv_machine::apply_commands(&*store, SHARD, run, applied, None, &[]).unwrap();
                store.commit_apply(batch).unwrap();
                results
            };
        run(&mut store, load.batch(SESSIONS));
        let per_batch = 64u64;
        group.throughput(Throughput::Elements(per_batch));
        group.bench_with_input(
            BenchmarkId::new(if claim { "claimed" } else { "read" }, per_batch),
            &per_batch,
            |b, &n| {
                b.iter_batched(
                    || load.batch(n),
                    |batch| black_box(run(&mut store, batch)),
                    criterion::BatchSize::SmallInput,
                );
            },
        );
    }
    group.finish();
}

criterion_group!(benches, apply, apply_claiming);
criterion_main!(benches);
