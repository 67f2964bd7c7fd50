//! Memory and size bounds: the store keeps fjall's memtables under `write_buffer_bytes`
//! (fjall 3.1 ignores its own setting), during group commits and during a snapshot's staging
//! and move; a snapshot over `snapshot_bytes_max` is refused on both sides with an error that
//! names the limit.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers")]

use bytes::Bytes;
use ringkv_storage::{
    AppliedState, Command, Error, Operation, Store, StoreConfig, WriteBatchBuilder,
};
use ringkv_types::raft::ConfState;
use ringkv_types::ring::{self, Arc};
use ringkv_types::{LogIndex, NodeId, ShardId, Term};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const SHARD: ShardId = ShardId(1);
const VALUE_BYTES: usize = 64 << 10;
/// 16 values of 64 KiB: one apply batch.
const BATCH_BYTES: u64 = 16 * VALUE_BYTES as u64;
const LIMIT: u64 = 8 << 20;

fn open(path: &Path, write_buffer_bytes: u64, snapshot_bytes_max: u64) -> Store {
    let mut config = StoreConfig::new(path);
    config.write_buffer_bytes = write_buffer_bytes;
    config.snapshot_bytes_max = snapshot_bytes_max;
    Store::open(config).unwrap()
}

/// Applies `mib` MiB of values under keys in `arc`, one batch of [`BATCH_BYTES`] per index,
/// calling `after` after each; returns the keys.
fn fill(store: &Store, arc: Arc, mib: u64, mut after: impl FnMut(&Store)) -> Vec<Vec<u8>> {
    let value = Bytes::from(vec![0xa5; VALUE_BYTES]);
    let mut keys = Vec::new();
    let mut n = 0u64;
    let mut index = 1;
    while (keys.len() * VALUE_BYTES) < (mib << 20) as usize {
        let mut operations = Vec::new();
        while operations.len() < 16 {
            let key = format!("key-{n}").into_bytes();
            n += 1;
            if arc.contains(ring::position(&key)) {
                keys.push(key.clone());
                operations.push(Operation::Put {
                    key: Bytes::from(key),
                    value: value.clone(),
                });
            }
        }
        let command = Command {
            session: None,
            operations,
        };
        let applied = AppliedState {
            index: LogIndex(index),
            term: Term(1),
        };
        let voters = ConfState::with_voters([NodeId(1)]);
        store
            .apply(SHARD, &[command], applied, Some(&voters))
            .unwrap();
        index += 1;
        after(store);
    }
    keys
}

#[test]
fn group_commits_keep_the_memtables_under_the_write_buffer_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), LIMIT, 1 << 30);
    let mut largest = 0;
    // 48 MiB: without the limit, all of it stays in the data keyspace's 64 MiB memtable.
    let keys = fill(&store, Arc::FULL, 48, |store| {
        largest = largest.max(store.write_buffer_bytes());
    });
    // A commit may take the buffer over the limit by its own size (plus its keys and the
    // applied state in other keyspaces) before the store stalls it.
    assert!(
        largest <= LIMIT + 2 * BATCH_BYTES,
        "write buffer reached {largest} bytes, limit {LIMIT}"
    );
    assert!(largest > LIMIT / 2, "the fill never came near the limit");
    for key in keys.iter().step_by(37) {
        assert_eq!(store.get(key).unwrap().map(|v| v.len()), Some(VALUE_BYTES));
    }
}

#[test]
fn a_snapshot_install_keeps_the_memtables_under_the_write_buffer_limit() {
    let source_dir = tempfile::tempdir().unwrap();
    let target_dir = tempfile::tempdir().unwrap();
    let arc = Arc::FULL;
    let source = open(source_dir.path(), 0, 1 << 30);
    let keys = fill(&source, arc, 48, |_| {});
    let target = open(target_dir.path(), LIMIT, 1 << 30);
    let largest = std::sync::Arc::new(AtomicU64::new(0));
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let sampler = {
        let (target, largest, stop) = (target.clone(), largest.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                largest.fetch_max(target.write_buffer_bytes(), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_micros(500));
            }
        })
    };
    // Staging on this thread (as the node stages off its event loop), the move on the writer.
    let prepared = target
        .prepare_snapshot(SHARD, source.snapshot_chunks(SHARD, arc).unwrap())
        .unwrap();
    let mut batch = WriteBatchBuilder::new();
    batch.install_snapshot(prepared);
    target.write(batch).unwrap();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let largest = largest.load(Ordering::Relaxed);
    // One staging batch and one move batch (1 MiB chunks) may be in flight at once.
    let chunk = StoreConfig::new("x").snapshot_chunk_bytes as u64;
    assert!(
        largest <= LIMIT + 4 * chunk,
        "write buffer reached {largest} bytes, limit {LIMIT}"
    );
    assert!(largest > LIMIT / 2, "the install never came near the limit");
    for key in keys.iter().step_by(37) {
        assert_eq!(target.get(key).unwrap().map(|v| v.len()), Some(VALUE_BYTES));
    }
    assert_eq!(target.staging_key_count().unwrap(), 0);
}

#[test]
fn a_snapshot_over_the_limit_is_refused_by_sender_and_receiver_naming_the_setting() {
    let source_dir = tempfile::tempdir().unwrap();
    let arc = Arc::FULL;
    let max = 3 << 20;
    let source = open(source_dir.path(), LIMIT, max);
    fill(&source, arc, 4, |_| {});
    let read: Result<Vec<Vec<u8>>, Error> = source.snapshot_chunks(SHARD, arc).unwrap().collect();
    let error = read.unwrap_err();
    assert!(
        matches!(error, Error::SnapshotTooLarge { shard: SHARD, max: m } if m == max),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("storage.snapshot_max_mib"),
        "{error}"
    );
    drop(source);

    // The same stream read under a larger limit, into a receiver with the small one.
    let source = open(source_dir.path(), LIMIT, 1 << 30);
    let target_dir = tempfile::tempdir().unwrap();
    let target = open(target_dir.path(), LIMIT, max);
    let error = target
        .prepare_snapshot(SHARD, source.snapshot_chunks(SHARD, arc).unwrap())
        .unwrap_err();
    assert!(
        matches!(error, Error::SnapshotTooLarge { shard: SHARD, max: m } if m == max),
        "{error:?}"
    );
    assert_eq!(target.staging_key_count().unwrap(), 0, "staging left over");
    assert!(target.get(b"key-0").unwrap().is_none());
}
