//! Criterion benchmarks for ringkv-storage: durable group-commit appends at several batch sizes,
//! point reads from a loaded shard, and snapshot build and install throughput.
//!
//! Run: `cargo bench -p ringkv-bench --bench storage`.
//!
//! Figures on the shared 2-core dev VM (2026-11-23, load average ~2, mean of criterion's
//! estimate; fsync latency dominates and doubles or worse when other builds hit the disk):
//!
//! | bench                               | result                          |
//! |-------------------------------------|---------------------------------|
//! | append_durable, 1 entry / fsync     | 126 µs/batch, 7.9k entries/s    |
//! | append_durable, 16 entries / fsync  | 163 µs/batch, 98k entries/s     |
//! | append_durable, 64 entries / fsync  | 251 µs/batch, 255k entries/s    |
//! | append_durable, 256 entries / fsync | 573 µs/batch, 446k entries/s    |
//! | point_read, 1M keys, 256 MiB cache  | 5.9 µs, 170k reads/s            |
//! | snapshot build, 100k × 100 B        | 178 MiB/s                       |
//! | snapshot install, 100k × 100 B      | 78 MiB/s (into an empty store)  |
#![allow(missing_docs, clippy::unwrap_used)]

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringkv_storage::{
    AppliedState, Command, Error, Operation, Store, StoreConfig, WriteBatchBuilder,
};
use ringkv_types::raft::{Entry, EntryPayload};
use ringkv_types::ring::Arc;
use ringkv_types::{LogIndex, ShardId, Term};
use std::hint::black_box;
use std::time::Duration;

/// Keys loaded for the point-read bench.
const READ_KEYS: u64 = 1_000_000;
/// Keys in the shard whose snapshot is built and installed (100-byte values).
const SNAPSHOT_KEYS: u64 = 100_000;

/// Block cache of 256 MiB: the 1M-key shard (~130 MB) fits, as it would on a node whose cache
/// is sized to 20–25 % of RAM.
fn open(dir: &tempfile::TempDir) -> Store {
    let mut config = StoreConfig::new(dir.path());
    config.cache_bytes = 256 << 20;
    Store::open(config).unwrap()
}

fn value(n: u64) -> Bytes {
    let mut bytes = format!("value-{n}-").into_bytes();
    bytes.resize(100, b'v');
    Bytes::from(bytes)
}

/// Fills `shard` with `count` keys `key-<n>`, 1,000 per apply batch.
fn load(store: &Store, shard: ShardId, count: u64) {
    let mut applied = store.applied(shard).unwrap().index.get();
    for start in (0..count).step_by(1_000) {
        let operations = (start..(start + 1_000).min(count))
            .map(|n| Operation::Put {
                key: Bytes::from(format!("key-{n}")),
                value: value(n),
            })
            .collect();
        applied += 1;
        let command = Command {
            session: None,
            operations,
        };
        let state = AppliedState {
            index: LogIndex(applied),
            term: Term(1),
        };
        store.apply(shard, &[command], state, None).unwrap();
    }
    store.persist().unwrap();
}

fn append_durable(c: &mut Criterion) {
    let mut group = c.benchmark_group("storage/append_durable");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group.sample_size(20);
    let payload = Bytes::from(vec![0xabu8; 100]);
    for per_fsync in [1u64, 16, 64, 256] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let mut next = 1u64;
        group.throughput(Throughput::Elements(per_fsync));
        group.bench_with_input(
            BenchmarkId::from_parameter(per_fsync),
            &per_fsync,
            |b, &n| {
                b.iter(|| {
                    let entries: Vec<Entry> = (next..next + n)
                        .map(|index| Entry {
                            term: Term(1),
                            index: LogIndex(index),
                            payload: EntryPayload::Normal(payload.clone()),
                        })
                        .collect();
                    next += n;
                    let mut batch = WriteBatchBuilder::new();
                    batch.append(ShardId(1), &entries).unwrap();
                    black_box(store.write(batch).unwrap());
                });
            },
        );
    }
    group.finish();
}

fn point_read(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let started = std::time::Instant::now();
    load(&store, ShardId(1), READ_KEYS);
    eprintln!("loaded {READ_KEYS} keys in {:?}", started.elapsed());
    let keys: Vec<Vec<u8>> = (0..READ_KEYS)
        .map(|n| format!("key-{n}").into_bytes())
        .collect();
    let mut group = c.benchmark_group("storage/point_read");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(1));
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    group.bench_function(format!("{READ_KEYS}_keys"), |b| {
        b.iter(|| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let key = &keys[(state % READ_KEYS) as usize];
            black_box(store.get(key).unwrap().unwrap());
        });
    });
    group.finish();
}

fn snapshot(c: &mut Criterion) {
    let source_dir = tempfile::tempdir().unwrap();
    let source = open(&source_dir);
    load(&source, ShardId(1), SNAPSHOT_KEYS);
    let chunks: Vec<Vec<u8>> = source
        .snapshot_chunks(ShardId(1), Arc::FULL)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let bytes: u64 = chunks.iter().map(|chunk| chunk.len() as u64).sum();
    let mut group = c.benchmark_group("storage/snapshot");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group.sample_size(10);
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function(format!("build_{SNAPSHOT_KEYS}_keys"), |b| {
        b.iter(|| {
            let mut total = 0usize;
            for chunk in source.snapshot_chunks(ShardId(1), Arc::FULL).unwrap() {
                total += chunk.unwrap().len();
            }
            black_box(total)
        });
    });
    // Each install goes to a fresh store (an empty range, as when a replica is added); opening
    // it is outside the measurement.
    group.bench_function(format!("install_{SNAPSHOT_KEYS}_keys"), |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let store = open(&dir);
                (dir, store)
            },
            |(dir, store)| {
                let stream = chunks.iter().map(Ok::<_, Error>);
                black_box(store.install_snapshot(ShardId(1), stream).unwrap());
                (dir, store)
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, append_durable, point_read, snapshot);
criterion_main!(benches);
