//! The Raft log contract of `GroupStorage` (crates/raft/src/storage.rs) over the fjall store.
#![allow(clippy::unwrap_used, reason = "test helpers")]

mod common;

use common::{entries, entry, open};
use ringkv_raft::{Storage, StorageError};
use ringkv_storage::{Error, WriteBatchBuilder};
use ringkv_types::raft::{ConfState, HardState, SnapshotMeta};
use ringkv_types::{LogIndex, NodeId, ShardId, Term};

const SHARD: ShardId = ShardId(7);

fn append(store: &ringkv_storage::Store, shard: ShardId, list: &[ringkv_types::raft::Entry]) {
    let mut batch = WriteBatchBuilder::new();
    batch.append(shard, list).unwrap();
    store.write(batch).unwrap();
}

#[test]
fn new_group_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let group = store.group(SHARD).unwrap();
    assert_eq!(group.first_index().unwrap(), LogIndex(1));
    assert_eq!(group.last_index().unwrap(), LogIndex(0));
    assert_eq!(group.term(LogIndex(0)).unwrap(), Term(0));
    assert_eq!(group.initial_state().unwrap(), Default::default());
    assert!(
        group
            .entries(LogIndex(1), LogIndex(1), 100)
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        group.entries(LogIndex(1), LogIndex(2), 100),
        Err(StorageError::Unavailable { .. })
    ));
}

#[test]
fn append_read_and_conflicting_suffix_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append(&store, SHARD, &entries(1..=10, 1));
    let group = store.group(SHARD).unwrap();
    assert_eq!(group.last_index().unwrap(), LogIndex(10));
    assert_eq!(
        group.entries(LogIndex(3), LogIndex(6), u64::MAX).unwrap(),
        entries(3..=5, 1)
    );
    assert_eq!(group.term(LogIndex(4)).unwrap(), Term(1));

    // A leader of term 2 overwrites from index 6 with a shorter log.
    append(&store, SHARD, &entries(6..=7, 2));
    assert_eq!(group.last_index().unwrap(), LogIndex(7));
    assert_eq!(group.term(LogIndex(7)).unwrap(), Term(2));
    assert!(matches!(
        group.term(LogIndex(8)),
        Err(StorageError::Unavailable { .. })
    ));
    let mut expected = entries(1..=5, 1);
    expected.extend(entries(6..=7, 2));
    assert_eq!(
        group.entries(LogIndex(1), LogIndex(8), u64::MAX).unwrap(),
        expected
    );

    drop(group);
    drop(store);
    let store = open(dir.path());
    let group = store.group(SHARD).unwrap();
    assert_eq!(group.last_index().unwrap(), LogIndex(7));
    assert_eq!(
        group.entries(LogIndex(1), LogIndex(8), u64::MAX).unwrap(),
        expected
    );
}

#[test]
fn byte_limit_returns_at_least_one_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append(&store, SHARD, &entries(1..=10, 1));
    let group = store.group(SHARD).unwrap();
    let one = entry(1, 1).size_bytes();
    let cases = [
        (0, 1),
        (1, 1),
        (one, 1),
        (one + 1, 1),
        (2 * one, 2),
        (u64::MAX, 10),
    ];
    for (max_bytes, count) in cases {
        let got = group.entries(LogIndex(1), LogIndex(11), max_bytes).unwrap();
        assert_eq!(got.len(), count, "max_bytes {max_bytes}");
    }
}

#[test]
fn compaction_and_snapshot_meta_follow_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append(&store, SHARD, &entries(1..=10, 1));
    let conf = ConfState::with_voters([NodeId(1), NodeId(2), NodeId(3)]);

    // Compaction to 4 keeps 5..=10.
    let mut batch = WriteBatchBuilder::new();
    batch.set_snapshot_meta(
        SHARD,
        SnapshotMeta {
            index: LogIndex(4),
            term: Term(1),
            conf: conf.clone(),
        },
    );
    store.write(batch).unwrap();
    let group = store.group(SHARD).unwrap();
    assert_eq!(group.first_index().unwrap(), LogIndex(5));
    assert_eq!(group.last_index().unwrap(), LogIndex(10));
    assert_eq!(group.term(LogIndex(4)).unwrap(), Term(1));
    assert!(matches!(
        group.term(LogIndex(3)),
        Err(StorageError::Compacted { .. })
    ));
    assert!(matches!(
        group.entries(LogIndex(4), LogIndex(6), u64::MAX),
        Err(StorageError::Compacted { .. })
    ));
    assert_eq!(
        group.entries(LogIndex(5), LogIndex(11), u64::MAX).unwrap(),
        entries(5..=10, 1)
    );

    // A snapshot from a leader whose log differs at 12 discards everything.
    let mut batch = WriteBatchBuilder::new();
    batch.set_snapshot_meta(
        SHARD,
        SnapshotMeta {
            index: LogIndex(12),
            term: Term(3),
            conf: conf.clone(),
        },
    );
    store.write(batch).unwrap();
    assert_eq!(group.first_index().unwrap(), LogIndex(13));
    assert_eq!(group.last_index().unwrap(), LogIndex(12));
    assert_eq!(group.term(LogIndex(12)).unwrap(), Term(3));
    assert!(
        group
            .entries(LogIndex(13), LogIndex(13), 10)
            .unwrap()
            .is_empty()
    );

    // Appends continue after the snapshot; a stale compaction point is ignored.
    let mut batch = WriteBatchBuilder::new();
    batch.set_snapshot_meta(
        SHARD,
        SnapshotMeta {
            index: LogIndex(2),
            term: Term(1),
            conf,
        },
    );
    batch.append(SHARD, &entries(13..=14, 3)).unwrap();
    store.write(batch).unwrap();
    drop(group);
    drop(store);

    let store = open(dir.path());
    let group = store.group(SHARD).unwrap();
    let state = group.initial_state().unwrap();
    assert_eq!(state.snapshot_meta.index, LogIndex(12));
    assert_eq!(
        (group.first_index().unwrap(), group.last_index().unwrap()),
        (LogIndex(13), LogIndex(14))
    );
    assert_eq!(
        group.entries(LogIndex(13), LogIndex(15), u64::MAX).unwrap(),
        entries(13..=14, 3)
    );
}

#[test]
fn snapshot_inside_the_log_with_a_different_term_discards_the_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append(&store, SHARD, &entries(1..=10, 1));
    let mut batch = WriteBatchBuilder::new();
    batch.set_snapshot_meta(
        SHARD,
        SnapshotMeta {
            index: LogIndex(5),
            term: Term(2),
            ..Default::default()
        },
    );
    batch.append(SHARD, &entries(6..=7, 2)).unwrap();
    store.write(batch).unwrap();
    let group = store.group(SHARD).unwrap();
    assert_eq!(
        (group.first_index().unwrap(), group.last_index().unwrap()),
        (LogIndex(6), LogIndex(7))
    );
    drop(group);
    drop(store);
    let store = open(dir.path());
    let group = store.group(SHARD).unwrap();
    assert_eq!(
        (group.first_index().unwrap(), group.last_index().unwrap()),
        (LogIndex(6), LogIndex(7))
    );
    assert_eq!(
        group.entries(LogIndex(6), LogIndex(8), u64::MAX).unwrap(),
        entries(6..=7, 2)
    );
}

#[test]
fn hard_state_survives_reopen_and_groups_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let hard_state = HardState {
        term: Term(4),
        vote: NodeId(2),
        commit: LogIndex(3),
    };
    let mut batch = WriteBatchBuilder::new();
    batch.set_hard_state(SHARD, hard_state);
    batch.set_hard_state(ShardId(3), HardState::default());
    batch.append(SHARD, &entries(1..=3, 4)).unwrap();
    let durable = store.write(batch).unwrap();
    assert_eq!(
        durable.groups,
        vec![(ShardId(3), LogIndex(0)), (SHARD, LogIndex(3))]
    );
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.groups().unwrap(), vec![ShardId(3), SHARD]);
    assert_eq!(
        store
            .group(SHARD)
            .unwrap()
            .initial_state()
            .unwrap()
            .hard_state,
        hard_state
    );
}

#[test]
fn invalid_appends_are_rejected_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    append(&store, SHARD, &entries(1..=3, 1));
    let mut gap = vec![entry(4, 1)];
    gap.push(entry(6, 1));
    assert!(matches!(
        WriteBatchBuilder::new().append(SHARD, &gap),
        Err(Error::InvalidWrite { .. })
    ));

    let mut batch = WriteBatchBuilder::new();
    batch.set_hard_state(
        ShardId(9),
        HardState {
            term: Term(1),
            ..Default::default()
        },
    );
    batch.append(SHARD, &entries(5..=6, 1)).unwrap();
    let error = store.write(batch).unwrap_err();
    assert!(
        matches!(error, Error::InvalidWrite { shard: SHARD, .. }),
        "{error}"
    );
    assert!(!error.is_fatal());
    assert_eq!(
        store.group(ShardId(9)).unwrap().hard_state(),
        HardState::default()
    );
    assert_eq!(
        store.group(SHARD).unwrap().last_index().unwrap(),
        LogIndex(3)
    );
}

#[test]
fn appends_to_one_group_merge_within_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut batch = WriteBatchBuilder::new();
    batch.append(SHARD, &entries(1..=10, 1)).unwrap();
    batch.append(SHARD, &entries(8..=9, 2)).unwrap();
    assert_eq!(batch.entry_count(), 9);
    store.write(batch).unwrap();
    let group = store.group(SHARD).unwrap();
    assert_eq!(group.last_index().unwrap(), LogIndex(9));
    assert_eq!(group.term(LogIndex(9)).unwrap(), Term(2));
}

#[test]
fn pipelined_submissions_complete_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut tickets = Vec::new();
    for index in 1..=20u64 {
        let mut batch = WriteBatchBuilder::new();
        batch.append(SHARD, &[entry(index, 1)]).unwrap();
        tickets.push(store.submit(batch).unwrap());
    }
    for (position, ticket) in tickets.into_iter().enumerate() {
        let durable = ticket.wait().unwrap();
        assert_eq!(durable.sequence, position as u64 + 1);
        assert_eq!(durable.groups, vec![(SHARD, LogIndex(position as u64 + 1))]);
    }
}

/// The cache moves only after a batch is durable and visible, so a reader that trusts
/// `last_index` always finds those entries, even while the writer is committing more.
#[test]
fn concurrent_readers_see_every_entry_up_to_the_cached_last_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let group = store.group(SHARD).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut checks = 0u64;
            while !done.load(std::sync::atomic::Ordering::Acquire) || checks == 0 {
                let last = group.last_index().unwrap();
                let low = LogIndex(last.get().saturating_sub(20).max(1));
                let got = group.entries(low, last.next(), u64::MAX).unwrap();
                assert_eq!(got.len() as u64, last.next().distance_from(low));
                if last.get() > 0 {
                    assert_eq!(group.term(last).unwrap(), Term(1));
                }
                checks += 1;
            }
        });
        let mut tickets = std::collections::VecDeque::new();
        for start in (1..=2_000u64).step_by(10) {
            let mut batch = WriteBatchBuilder::new();
            batch.append(SHARD, &entries(start..=start + 9, 1)).unwrap();
            tickets.push_back(store.submit(batch).unwrap());
            if tickets.len() > 2 {
                tickets.pop_front().unwrap().wait().unwrap();
            }
        }
        for ticket in tickets {
            ticket.wait().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Release);
    });
    assert_eq!(group.last_index().unwrap(), LogIndex(2_000));
}
