//! Snapshot installs with bounded memory: staged chunk by chunk, marked, moved in bounded
//! batches. A crash at any phase leaves the old state or (after recovery) the whole new one.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers")]

mod common;

use bytes::Bytes;
use ringkv_storage::{
    AppliedState, Command, Error, InstallFault, Operation, SessionRequest, Store, StoreConfig,
    WriteBatchBuilder,
};
use ringkv_types::raft::ConfState;
use ringkv_types::ring::{self, Arc};
use ringkv_types::{LogIndex, NodeId, ShardId, Term};
use std::path::Path;

const SHARD: ShardId = ShardId(1);
const NEIGHBOUR: ShardId = ShardId(2);

fn open(path: &Path) -> Store {
    let mut config = StoreConfig::new(path);
    // Small chunks and move batches: a few hundred keys make many of each.
    config.snapshot_chunk_bytes = 1024;
    config.removal_batch_keys = 50;
    Store::open(config).unwrap()
}

/// Puts `count` keys named `{prefix}-{n}` that fall in `arc`, with session 5 at `index`.
fn fill(
    store: &Store,
    shard: ShardId,
    arc: Arc,
    prefix: &str,
    count: usize,
    index: u64,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut operations = Vec::new();
    let mut pairs = Vec::new();
    let mut n = 0u64;
    while pairs.len() < count {
        let key = format!("{prefix}-{n}").into_bytes();
        n += 1;
        if !arc.contains(ring::position(&key)) {
            continue;
        }
        let value = format!("value-{n}-{index}").into_bytes();
        operations.push(Operation::Put {
            key: Bytes::from(key.clone()),
            value: Bytes::from(value.clone()),
        });
        pairs.push((key, value));
    }
    let command = Command {
        session: Some(SessionRequest {
            session: 5 + index,
            sequence: index,
        }),
        operations,
    };
    store
        .apply(
            shard,
            &[command],
            AppliedState {
                index: LogIndex(index),
                term: Term(2),
            },
            Some(&ConfState::with_voters([NodeId(1)])),
        )
        .unwrap();
    pairs
}

struct Setup {
    _source_dir: tempfile::TempDir,
    target_dir: tempfile::TempDir,
    chunks: Vec<Vec<u8>>,
    /// The snapshot's data (keys "shared-*" and "new-*", values of index 10).
    new: Vec<(Vec<u8>, Vec<u8>)>,
    /// The target's data before (keys "shared-*" and "old-*", values of index 3).
    old: Vec<(Vec<u8>, Vec<u8>)>,
    neighbour: Vec<(Vec<u8>, Vec<u8>)>,
}

fn setup() -> (Setup, Store) {
    let source_dir = tempfile::tempdir().unwrap();
    let target_dir = tempfile::tempdir().unwrap();
    let arcs = Arc::split_even(2);
    let source = open(source_dir.path());
    let mut new = fill(&source, SHARD, arcs[0], "shared", 200, 9);
    new.extend(fill(&source, SHARD, arcs[0], "new", 200, 10));
    let chunks: Vec<Vec<u8>> = source
        .snapshot_chunks(SHARD, arcs[0])
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(chunks.len() > 10, "only {} chunks", chunks.len());
    drop(source);
    let target = open(target_dir.path());
    let mut old = fill(&target, SHARD, arcs[0], "shared", 200, 2);
    old.extend(fill(&target, SHARD, arcs[0], "old", 200, 3));
    let neighbour = fill(&target, NEIGHBOUR, arcs[1], "other", 100, 4);
    (
        Setup {
            _source_dir: source_dir,
            target_dir,
            chunks,
            new,
            old,
            neighbour,
        },
        target,
    )
}

impl Setup {
    fn assert_old(&self, store: &Store) {
        for (key, value) in &self.old {
            assert_eq!(store.get(key).unwrap().as_deref(), Some(value.as_slice()));
        }
        for (key, _) in &self.new {
            if key.starts_with(b"new-") {
                assert_eq!(store.get(key).unwrap(), None, "new key in the old state");
            }
        }
        assert_eq!(store.applied(SHARD).unwrap().index, LogIndex(3));
        assert!(store.read_session(SHARD, 8).unwrap().is_some());
        assert!(store.read_session(SHARD, 15).unwrap().is_none());
        self.assert_common(store);
    }

    fn assert_new(&self, store: &Store) {
        for (key, value) in &self.new {
            assert_eq!(store.get(key).unwrap().as_deref(), Some(value.as_slice()));
        }
        for (key, _) in &self.old {
            if key.starts_with(b"old-") {
                assert_eq!(store.get(key).unwrap(), None, "old key in the new state");
            }
        }
        assert_eq!(
            store.applied(SHARD).unwrap(),
            AppliedState {
                index: LogIndex(10),
                term: Term(2)
            }
        );
        // The snapshot's sessions replaced the old ones.
        assert_eq!(store.read_session(SHARD, 15).unwrap().unwrap().sequence, 10);
        assert!(store.read_session(SHARD, 8).unwrap().is_none());
        self.assert_common(store);
    }

    fn assert_common(&self, store: &Store) {
        for (key, value) in &self.neighbour {
            assert_eq!(store.get(key).unwrap().as_deref(), Some(value.as_slice()));
        }
        assert_eq!(store.staging_key_count().unwrap(), 0, "staging left over");
    }

    fn stream(&self) -> impl Iterator<Item = Result<Vec<u8>, Error>> + '_ {
        self.chunks.iter().cloned().map(Ok)
    }
}

#[test]
fn a_streamed_install_replaces_the_range_and_leaves_no_staging() {
    let (setup, target) = setup();
    setup.assert_old(&target);
    target.install_snapshot(SHARD, setup.stream()).unwrap();
    setup.assert_new(&target);
    drop(target);
    setup.assert_new(&open(setup.target_dir.path()));
}

#[test]
fn a_crash_while_staging_leaves_the_old_state_and_no_staging() {
    let (setup, target) = setup();
    let mut stager = target.snapshot_stager(SHARD);
    for chunk in &setup.chunks[..setup.chunks.len() / 2] {
        stager.push(chunk).unwrap();
    }
    assert!(target.staging_key_count().unwrap() > 0);
    // The process dies: nothing cleans the staging up but the next open.
    stager.abandon();
    assert!(target.staging_key_count().unwrap() > 0);
    drop(target);
    setup.assert_old(&open(setup.target_dir.path()));
}

#[test]
fn a_crash_at_any_phase_of_the_move_recovers_the_whole_new_state() {
    let faults = [
        InstallFault::AfterMarker,
        InstallFault::AfterMoveBatches(1),
        InstallFault::AfterMoveBatches(5),
        InstallFault::AfterMoveBatches(10),
        InstallFault::BeforeFinal,
    ];
    for fault in faults {
        let (setup, target) = setup();
        target.inject_install_fault(Some(fault));
        let error = target.install_snapshot(SHARD, setup.stream()).unwrap_err();
        assert!(matches!(error, Error::Poisoned), "{fault:?}: {error}");
        assert!(target.is_poisoned());
        drop(target);
        let reopened = open(setup.target_dir.path());
        setup.assert_new(&reopened);
        // The group's log moved to the snapshot as well.
        let group = reopened.group(SHARD).unwrap();
        assert_eq!(group.bounds().0, LogIndex(11), "{fault:?}");
    }
}

#[test]
fn the_fault_points_are_inside_the_move() {
    // Without recovery, the store after a crash mid-move holds a mix: the marker is what makes
    // the next open finish the move (this guards the test above against vacuous faults).
    let (setup, target) = setup();
    target.inject_install_fault(Some(InstallFault::AfterMoveBatches(1)));
    target.install_snapshot(SHARD, setup.stream()).unwrap_err();
    let new_present = setup
        .new
        .iter()
        .filter(|(key, value)| target.get(key).unwrap().as_deref() == Some(value.as_slice()))
        .count();
    assert!(
        new_present > 0 && new_present < setup.new.len(),
        "{new_present} of {} new pairs moved after one batch",
        setup.new.len()
    );
    assert!(target.staging_key_count().unwrap() > 0);
}

#[test]
fn a_corrupt_chunk_in_the_middle_changes_nothing_and_cleans_the_staging() {
    let (setup, target) = setup();
    let mut bad = setup.chunks.clone();
    let middle = bad.len() / 2;
    let at = bad[middle].len() / 2;
    bad[middle][at] ^= 0x40;
    let error = target
        .install_snapshot(SHARD, bad.into_iter().map(Ok::<_, Error>))
        .unwrap_err();
    assert!(
        matches!(error, Error::BadSnapshot { chunk, .. } if chunk == middle as u64),
        "{error}"
    );
    setup.assert_old(&target);
    // A stream cut before its trailer too.
    let cut = setup.chunks[..setup.chunks.len() - 1].to_vec();
    let error = target
        .install_snapshot(SHARD, cut.into_iter().map(Ok::<_, Error>))
        .unwrap_err();
    assert!(matches!(error, Error::BadSnapshot { .. }), "{error}");
    setup.assert_old(&target);
    // The store is still usable: the good stream installs.
    target.install_snapshot(SHARD, setup.stream()).unwrap();
    setup.assert_new(&target);
}

#[test]
fn a_prepared_snapshot_dropped_uninstalled_is_deleted_by_the_writer() {
    let (setup, target) = setup();
    let prepared = target.prepare_snapshot(SHARD, setup.stream()).unwrap();
    assert_eq!(prepared.len(), setup.new.len());
    assert!(target.staging_key_count().unwrap() >= setup.new.len());
    drop(prepared);
    let mut batch = WriteBatchBuilder::new();
    batch.set_hard_state(NEIGHBOUR, ringkv_types::raft::HardState::default());
    target.write(batch).unwrap();
    setup.assert_old(&target);
}
