//! Apply keeps each shard's session table in memory; every other write of session records (a
//! snapshot install, a split child's copy of its parent's sessions, a replica removal) must
//! leave apply deciding from the new records, never from a stale copy.
#![allow(clippy::unwrap_used, reason = "test")]

mod common;

use bytes::Bytes;
use common::open;
use ringkv_storage::{
    AppliedState, Command, CommandResult, Error, Operation, OperationResult, SessionRecord,
    SessionRequest, WriteBatchBuilder,
};
use ringkv_types::ring::Arc;
use ringkv_types::{LogIndex, ShardId, Term};

const SHARD: ShardId = ShardId(1);

fn write(sequence: u64, key: &str) -> Command {
    Command {
        session: Some(SessionRequest {
            session: 5,
            sequence,
        }),
        operations: vec![Operation::Put {
            key: Bytes::from(key.to_owned()),
            value: Bytes::from_static(b"v"),
        }],
    }
}

fn applied(index: u64) -> AppliedState {
    AppliedState {
        index: LogIndex(index),
        term: Term(1),
    }
}

fn put_applied() -> CommandResult {
    CommandResult::Applied(vec![OperationResult::Put])
}

/// A retry of a put the session applied at `index`.
fn put_repeated(index: u64) -> CommandResult {
    CommandResult::Repeated {
        results: vec![OperationResult::Put],
        index,
    }
}

#[test]
fn a_snapshot_install_replaces_the_session_table_in_memory() {
    let source_dir = tempfile::tempdir().unwrap();
    let source = open(source_dir.path());
    source
        .apply(SHARD, &[write(3, "from-source")], applied(10), None)
        .unwrap();
    let target_dir = tempfile::tempdir().unwrap();
    let target = open(target_dir.path());
    // The target's table (in memory now) says session 5 is at 7.
    target
        .apply(SHARD, &[write(7, "from-target")], applied(5), None)
        .unwrap();
    let chunks: Vec<Vec<u8>> = source
        .snapshot_chunks(SHARD, Arc::FULL)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    target
        .install_snapshot(SHARD, chunks.into_iter().map(Ok::<_, Error>))
        .unwrap();
    // After the install the session is at 3: 3 is a retry (applied at 10 in the source, and
    // the snapshot keeps that), 4 is new (a stale table would call both stale).
    let results = target
        .apply(
            SHARD,
            &[write(3, "retry"), write(4, "new")],
            applied(11),
            None,
        )
        .unwrap();
    assert_eq!(results, vec![put_repeated(10), put_applied()]);
    assert_eq!(target.get(b"retry").unwrap(), None);
    assert!(target.get(b"new").unwrap().is_some());
    assert_eq!(target.get(b"from-target").unwrap(), None);
}

#[test]
fn sessions_written_by_a_group_commit_replace_the_table_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .apply(SHARD, &[write(1, "first")], applied(1), None)
        .unwrap();
    // As a split child's copy of its parent's sessions.
    let mut batch = WriteBatchBuilder::new();
    batch.set_sessions(
        SHARD,
        vec![(
            5,
            SessionRecord {
                sequence: 5,
                result: vec![OperationResult::Put],
                last_ms: 0,
                index: 0,
            },
        )],
    );
    store.write(batch).unwrap();
    let results = store
        .apply(
            SHARD,
            &[write(5, "retry"), write(4, "older"), write(6, "new")],
            applied(2),
            None,
        )
        .unwrap();
    assert_eq!(
        results,
        vec![
            put_repeated(0),
            CommandResult::StaleSequence { last_applied: 5 },
            put_applied()
        ]
    );
    assert_eq!(store.get(b"retry").unwrap(), None);
    assert!(store.get(b"new").unwrap().is_some());
}

#[test]
fn a_removed_replica_added_again_starts_with_no_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .apply(SHARD, &[write(3, "before")], applied(4), None)
        .unwrap();
    store
        .remove_replica(SHARD, Arc::FULL)
        .unwrap()
        .join()
        .unwrap();
    assert!(store.sessions(SHARD).unwrap().is_empty());
    let results = store
        .apply(SHARD, &[write(1, "again")], applied(1), None)
        .unwrap();
    assert_eq!(results, vec![put_applied()]);
    assert!(store.get(b"again").unwrap().is_some());
}

#[test]
fn session_expiry_updates_the_table_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .apply_with_meta(
            SHARD,
            &[write(2, "a")],
            &[1_000],
            &[],
            applied(1),
            None,
            &[],
        )
        .unwrap();
    let outcome = store
        .expire_sessions(SHARD, 10_000, 5_000, applied(2))
        .unwrap();
    assert_eq!((outcome.dropped, outcome.remaining), (1, 0));
    assert!(store.sessions(SHARD).unwrap().is_empty());
    // The dropped session starts over: sequence 1 is new again.
    let results = store
        .apply(SHARD, &[write(1, "b")], applied(3), None)
        .unwrap();
    assert_eq!(results, vec![put_applied()]);
    assert!(store.get(b"b").unwrap().is_some());
}
