//! Versions of stored values (the log index of the last write), compare-and-swap on them,
//! snapshots carrying them, and scan pages.
#![allow(clippy::unwrap_used, reason = "test helpers")]

mod common;

use bytes::Bytes;
use common::open;
use ringkv_storage::{
    AppliedState, Command, CommandResult, Operation, OperationResult, ScanRequest, Store,
};
use ringkv_types::raft::ConfState;
use ringkv_types::ring::{self, Arc};
use ringkv_types::{LogIndex, NodeId, ShardId, Term};
use std::collections::BTreeSet;

const SHARD: ShardId = ShardId(1);

fn applied(index: u64) -> AppliedState {
    AppliedState {
        index: LogIndex(index),
        term: Term(1),
    }
}

fn put(key: &str, value: &str) -> Operation {
    Operation::Put {
        key: Bytes::from(key.to_owned()),
        value: Bytes::from(value.to_owned()),
    }
}

fn cas_version(key: &str, expected_version: u64, new: Option<&str>) -> Operation {
    Operation::CompareVersionAndSwap {
        key: Bytes::from(key.to_owned()),
        expected_version,
        new: new.map(|v| Bytes::from(v.to_owned())),
    }
}

fn command(operations: Vec<Operation>) -> Command {
    Command {
        session: None,
        operations,
    }
}

fn version(store: &Store, key: &str) -> Option<u64> {
    store
        .get_versioned(key.as_bytes())
        .unwrap()
        .map(|v| v.version)
}

/// Each command's entry index becomes the version of the keys it writes; a version compare
/// swaps only on the exact version (0 = absent) and answers what it found.
#[test]
fn versions_are_entry_indexes_and_compare_and_swap_uses_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .apply_with_meta(
            SHARD,
            &[command(vec![put("a", "1")]), command(vec![put("b", "1")])],
            &[],
            &[7, 8],
            applied(8),
            Some(&ConfState::with_voters([NodeId(1)])),
            &[],
        )
        .unwrap();
    assert_eq!(
        (version(&store, "a"), version(&store, "b")),
        (Some(7), Some(8))
    );

    let results = store
        .apply_with_meta(
            SHARD,
            &[
                command(vec![cas_version("a", 8, Some("x"))]),
                command(vec![cas_version("a", 7, Some("2"))]),
                command(vec![cas_version("new", 0, Some("n"))]),
                command(vec![cas_version("b", 8, None)]),
            ],
            &[],
            &[9, 10, 11, 12],
            applied(12),
            None,
            &[],
        )
        .unwrap();
    let outcome = |swapped: bool, previous: Option<&str>, previous_version: u64| {
        CommandResult::Applied(vec![OperationResult::CompareVersionAndSwap {
            swapped,
            previous: previous.map(|v| Bytes::from(v.to_owned())),
            previous_version,
        }])
    };
    assert_eq!(
        results,
        vec![
            outcome(false, Some("1"), 7),
            outcome(true, Some("1"), 7),
            outcome(true, None, 0),
            outcome(true, Some("1"), 8),
        ]
    );
    assert_eq!(version(&store, "a"), Some(10));
    assert_eq!(&store.get(b"a").unwrap().unwrap()[..], b"2");
    assert_eq!(version(&store, "new"), Some(11));
    assert_eq!(version(&store, "b"), None, "deleted by the version compare");
    // Versions survive a restart.
    drop(store);
    let store = open(dir.path());
    assert_eq!(version(&store, "a"), Some(10));
}

/// A key whose version is above the writing entry's index (a split's new shard restarts its
/// log low) still gets a larger version on every write, so an old version never matches again.
#[test]
fn a_version_never_goes_back_when_the_log_index_is_lower() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .apply_with_meta(
            SHARD,
            &[command(vec![put("k", "1")])],
            &[],
            &[1000],
            applied(1000),
            None,
            &[],
        )
        .unwrap();
    // The new shard, same store: its log starts at 5.
    let child = ShardId(2);
    store
        .apply_with_meta(
            child,
            &[command(vec![put("k", "2")])],
            &[],
            &[6],
            applied(6),
            None,
            &[],
        )
        .unwrap();
    assert_eq!(version(&store, "k"), Some(1001));
    let results = store
        .apply_with_meta(
            child,
            &[command(vec![cas_version("k", 1000, Some("stale"))])],
            &[],
            &[7],
            applied(7),
            None,
            &[],
        )
        .unwrap();
    assert!(matches!(
        &results[..],
        [CommandResult::Applied(r)] if matches!(r[..], [OperationResult::CompareVersionAndSwap { swapped: false, previous_version: 1001, .. }])
    ));
}

/// A snapshot carries each value's version to the replica that installs it.
#[test]
fn snapshots_carry_versions() {
    let source_dir = tempfile::tempdir().unwrap();
    let target_dir = tempfile::tempdir().unwrap();
    let source = open(source_dir.path());
    let keys: Vec<String> = (0..50).map(|n| format!("key-{n}")).collect();
    let commands: Vec<Command> = keys.iter().map(|k| command(vec![put(k, "v")])).collect();
    let indexes: Vec<u64> = (0..50).map(|n| 100 + n).collect();
    source
        .apply_with_meta(
            SHARD,
            &commands,
            &[],
            &indexes,
            applied(149),
            Some(&ConfState::with_voters([NodeId(1)])),
            &[],
        )
        .unwrap();
    let chunks: Vec<Vec<u8>> = source
        .snapshot_chunks(SHARD, Arc::FULL)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let target = open(target_dir.path());
    target
        .install_snapshot(SHARD, chunks.into_iter().map(Ok))
        .unwrap();
    for (key, index) in keys.iter().zip(&indexes) {
        assert_eq!(version(&target, key), Some(*index), "{key}");
    }
}

/// Pages that each start at the previous page's cursor return every key once, in storage
/// order, whatever the page size; a prefix filters; pages never leave the arc.
#[test]
fn scan_pages_cover_the_arc_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let keys: Vec<String> = (0..300)
        .map(|n| format!("{}-{n}", if n % 3 == 0 { "x" } else { "y" }))
        .collect();
    let commands: Vec<Command> = keys.iter().map(|k| command(vec![put(k, k)])).collect();
    store.apply(SHARD, &commands, applied(10), None).unwrap();
    let arcs = Arc::split_even(3);
    for (prefix, limit, examine_max) in [("", 7, 10_000), ("x-", 5, 10_000), ("y-", 1000, 13)] {
        let mut seen = Vec::new();
        for arc in &arcs {
            let mut start: Vec<u8> = Vec::new();
            loop {
                let page = store
                    .scan_page(&ScanRequest {
                        arc: *arc,
                        start: &start,
                        prefix: prefix.as_bytes(),
                        limit,
                        keys_only: prefix == "x-",
                        examine_max,
                        bytes_max: 1 << 20,
                        now_ms: 0,
                    })
                    .unwrap();
                assert!(page.items.len() <= limit);
                for item in page.items {
                    assert!(arc.contains(ring::position(&item.key)));
                    assert_eq!(item.version, 10);
                    assert_eq!(item.value.is_none(), prefix == "x-");
                    seen.push(item.key.to_vec());
                }
                match page.next {
                    Some(next)
                        if arc.end.map(|end| end.to_be_bytes().to_vec()) != Some(next.clone()) =>
                    {
                        start = next;
                    }
                    _ => break,
                }
            }
        }
        let expected: Vec<Vec<u8>> = {
            let mut keys: Vec<Vec<u8>> = keys
                .iter()
                .filter(|k| k.starts_with(prefix))
                .map(|k| k.as_bytes().to_vec())
                .collect();
            keys.sort_by_key(|k| ring::storage_key(k));
            keys
        };
        let unique: BTreeSet<&Vec<u8>> = seen.iter().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "a key twice with prefix {prefix:?}"
        );
        assert_eq!(seen, expected, "prefix {prefix:?}");
    }
}
