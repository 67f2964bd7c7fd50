//! Applying commands, exactly-once sessions, snapshots of a shard and replica removal.
#![allow(clippy::unwrap_used, reason = "test helpers")]

mod common;

use bytes::Bytes;
use common::{Rng, entries, open};
use ringkv_raft::Storage;
use ringkv_storage::{
    AppliedState, Command, CommandResult, Error, Operation, OperationResult, SessionRequest, Store,
    WriteBatchBuilder,
};
use ringkv_types::raft::ConfState;
use ringkv_types::ring::{self, Arc};
use ringkv_types::{LogIndex, NodeId, ShardId, Term};

const SHARD: ShardId = ShardId(1);

fn put(key: &str, value: &str) -> Operation {
    Operation::Put {
        key: Bytes::from(key.to_owned()),
        value: Bytes::from(value.to_owned()),
    }
}

fn command(operations: Vec<Operation>) -> Command {
    Command {
        session: None,
        operations,
    }
}

fn applied(index: u64) -> AppliedState {
    AppliedState {
        index: LogIndex(index),
        term: Term(1),
    }
}

#[test]
fn put_delete_and_compare_and_swap() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let cas = |expected: Option<&str>, new: Option<&str>| Operation::CompareAndSwap {
        key: Bytes::from_static(b"k"),
        expected: expected.map(|v| Bytes::from(v.to_owned())),
        new: new.map(|v| Bytes::from(v.to_owned())),
    };
    let results = store
        .apply(
            SHARD,
            &[
                command(vec![put("k", "1")]),
                command(vec![cas(Some("2"), Some("3")), cas(Some("1"), Some("2"))]),
                command(vec![Operation::Delete {
                    key: Bytes::from_static(b"gone"),
                }]),
            ],
            applied(3),
            None,
        )
        .unwrap();
    assert_eq!(
        results,
        vec![
            CommandResult::Applied(vec![OperationResult::Put]),
            CommandResult::Applied(vec![
                OperationResult::CompareAndSwap {
                    swapped: false,
                    previous: Some(Bytes::from_static(b"1"))
                },
                OperationResult::CompareAndSwap {
                    swapped: true,
                    previous: Some(Bytes::from_static(b"1"))
                },
            ]),
            CommandResult::Applied(vec![OperationResult::Deleted { existed: false }]),
        ]
    );
    assert_eq!(store.get(b"k").unwrap(), Some(Bytes::from_static(b"2")));
    let results = store
        .apply(
            SHARD,
            &[command(vec![
                cas(None, Some("x")),
                Operation::Delete {
                    key: Bytes::from_static(b"k"),
                },
            ])],
            applied(4),
            None,
        )
        .unwrap();
    assert_eq!(
        results,
        vec![CommandResult::Applied(vec![
            OperationResult::CompareAndSwap {
                swapped: false,
                previous: Some(Bytes::from_static(b"2"))
            },
            OperationResult::Deleted { existed: true },
        ])]
    );
    assert_eq!(store.get(b"k").unwrap(), None);
    assert_eq!(store.applied(SHARD).unwrap(), applied(4));
    // The applied index must advance.
    assert!(matches!(
        store.apply(SHARD, &[command(vec![put("a", "b")])], applied(4), None),
        Err(Error::InvalidWrite { .. })
    ));
}

#[test]
fn sessions_apply_each_sequence_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let with_session = |sequence: u64, operation: Operation| Command {
        session: Some(SessionRequest {
            session: 77,
            sequence,
        }),
        operations: vec![operation],
    };
    let cas = Operation::CompareAndSwap {
        key: Bytes::from_static(b"c"),
        expected: None,
        new: Some(Bytes::from_static(b"v")),
    };
    let first = store
        .apply(SHARD, &[with_session(1, cas.clone())], applied(1), None)
        .unwrap();
    // A retry in a later entry returns the saved result instead of failing the CAS, with the
    // index of the entry that applied it (the version it wrote), not its own.
    let retry = store
        .apply(SHARD, &[with_session(1, cas.clone())], applied(2), None)
        .unwrap();
    let [CommandResult::Applied(results)] = first.as_slice() else {
        panic!("{first:?}");
    };
    assert_eq!(
        retry,
        vec![CommandResult::Repeated {
            results: results.clone(),
            index: 1
        }]
    );
    drop(store);
    let store = open(dir.path());
    let both = store
        .apply(
            SHARD,
            &[
                with_session(2, put("c", "w")),
                with_session(2, put("c", "z")),
            ],
            applied(3),
            None,
        )
        .unwrap();
    let CommandResult::Applied(results) = &both[0] else {
        panic!("{both:?}");
    };
    assert_eq!(
        both[1],
        CommandResult::Repeated {
            results: results.clone(),
            index: 3
        }
    );
    assert_eq!(store.get(b"c").unwrap(), Some(Bytes::from_static(b"w")));
    let stale = store
        .apply(SHARD, &[with_session(1, put("c", "old"))], applied(4), None)
        .unwrap();
    assert_eq!(
        stale,
        vec![CommandResult::StaleSequence { last_applied: 2 }]
    );
    assert_eq!(store.read_session(SHARD, 77).unwrap().unwrap().sequence, 2);
}

/// Fills `shard` (owning `arc`) with keys until `count` of them fall in the arc.
fn fill(
    store: &Store,
    shard: ShardId,
    arc: Arc,
    count: usize,
    index: u64,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut operations = Vec::new();
    let mut pairs = Vec::new();
    let mut n = 0u64;
    while pairs.len() < count {
        let key = format!("key-{n}").into_bytes();
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
    let session = Command {
        session: Some(SessionRequest {
            session: 5,
            sequence: index,
        }),
        operations,
    };
    store
        .apply(
            shard,
            &[session],
            AppliedState {
                index: LogIndex(index),
                term: Term(2),
            },
            Some(&ConfState::with_voters([NodeId(1)])),
        )
        .unwrap();
    pairs
}

#[test]
fn snapshot_round_trip_replaces_the_range() {
    let source_dir = tempfile::tempdir().unwrap();
    let target_dir = tempfile::tempdir().unwrap();
    let arcs = Arc::split_even(4);
    let arc = arcs[1];
    let source = open(source_dir.path());
    let pairs = fill(&source, SHARD, arc, 3_000, 10);
    let mut config = ringkv_storage::StoreConfig::new(target_dir.path());
    config.snapshot_chunk_bytes = 4096;
    let target = Store::open(config).unwrap();
    // Old contents of the target: keys in the arc that the snapshot does not hold, and a
    // neighbour shard's keys that must survive.
    let stale = fill(&target, SHARD, arc, 50, 3);
    let neighbour = fill(&target, ShardId(2), arcs[2], 20, 4);
    let mut batch = WriteBatchBuilder::new();
    batch.append(SHARD, &entries(1..=20, 1)).unwrap();
    target.write(batch).unwrap();

    let chunks: Vec<Vec<u8>> = source
        .snapshot_chunks(SHARD, arc)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        chunks.len() > 3,
        "expected several chunks, got {}",
        chunks.len()
    );
    target
        .install_snapshot(SHARD, chunks.into_iter().map(Ok::<_, Error>))
        .unwrap();

    for (key, value) in &pairs {
        assert_eq!(target.get(key).unwrap().as_deref(), Some(value.as_slice()));
    }
    for (key, _) in &stale {
        if !pairs.iter().any(|(k, _)| k == key) {
            assert_eq!(target.get(key).unwrap(), None);
        }
    }
    for (key, value) in &neighbour {
        assert_eq!(target.get(key).unwrap().as_deref(), Some(value.as_slice()));
    }
    assert_eq!(
        target.applied(SHARD).unwrap(),
        AppliedState {
            index: LogIndex(10),
            term: Term(2)
        }
    );
    assert_eq!(target.read_session(SHARD, 5).unwrap().unwrap().sequence, 10);
    let group = target.group(SHARD).unwrap();
    // The log held index 10 with term 1, the snapshot says term 2: the log is discarded.
    assert_eq!(
        (group.first_index().unwrap(), group.last_index().unwrap()),
        (LogIndex(11), LogIndex(10))
    );
    assert_eq!(group.term(LogIndex(10)).unwrap(), Term(2));
    let meta = group.snapshot(NodeId(2)).unwrap().meta;
    assert_eq!(
        (meta.index, meta.conf),
        (LogIndex(10), ConfState::with_voters([NodeId(1)]))
    );
}

#[test]
fn corrupt_or_truncated_streams_are_rejected_and_leave_old_data() {
    let source_dir = tempfile::tempdir().unwrap();
    let target_dir = tempfile::tempdir().unwrap();
    let arc = Arc::FULL;
    let mut config = ringkv_storage::StoreConfig::new(source_dir.path());
    config.snapshot_chunk_bytes = 1024;
    let source = Store::open(config).unwrap();
    fill(&source, SHARD, arc, 500, 10);
    let chunks: Vec<Vec<u8>> = source
        .snapshot_chunks(SHARD, arc)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let target = open(target_dir.path());
    let old = fill(&target, SHARD, arc, 30, 3);

    let mut rng = Rng(0x5eed);
    let mut cases: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
    for _ in 0..20 {
        let mut bad = chunks.clone();
        let which = rng.below(bad.len() as u64) as usize;
        let at = rng.below(bad[which].len() as u64) as usize;
        bad[which][at] ^= 1 << rng.below(8);
        cases.push((format!("bit flip in chunk {which} byte {at}"), bad));
    }
    for cut in [0, 1, chunks.len() / 2, chunks.len() - 1] {
        cases.push((format!("first {cut} chunks"), chunks[..cut].to_vec()));
    }
    let mut torn = chunks.clone();
    let last = torn.len() - 2;
    let half = torn[last].len() / 2;
    torn[last].truncate(half);
    cases.push(("torn chunk".into(), torn));
    let mut swapped = chunks.clone();
    swapped.swap(1, 2);
    cases.push(("reordered".into(), swapped));
    let mut doubled = chunks.clone();
    doubled.push(chunks[1].clone());
    cases.push(("chunk after trailer".into(), doubled));

    for (name, stream) in cases {
        let error = target
            .install_snapshot(SHARD, stream.into_iter().map(Ok::<_, Error>))
            .unwrap_err();
        assert!(
            matches!(error, Error::BadSnapshot { .. }),
            "{name}: {error}"
        );
    }
    // Another shard's stream is refused too.
    let error = target
        .install_snapshot(ShardId(2), chunks.iter().cloned().map(Ok::<_, Error>))
        .unwrap_err();
    assert!(matches!(error, Error::BadSnapshot { .. }), "{error}");
    for (key, value) in &old {
        assert_eq!(target.get(key).unwrap().as_deref(), Some(value.as_slice()));
    }
    assert_eq!(target.applied(SHARD).unwrap().index, LogIndex(3));
}

#[test]
fn removing_a_replica_deletes_its_range_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ringkv_storage::StoreConfig::new(dir.path());
    config.removal_batch_keys = 64;
    let store = Store::open(config).unwrap();
    let arcs = Arc::split_even(2);
    let removed = fill(&store, SHARD, arcs[0], 1_000, 5);
    let kept = fill(&store, ShardId(2), arcs[1], 100, 5);
    let mut batch = WriteBatchBuilder::new();
    batch.append(SHARD, &entries(1..=300, 1)).unwrap();
    batch.append(ShardId(2), &entries(1..=3, 1)).unwrap();
    store.write(batch).unwrap();

    let handle = store.remove_replica(SHARD, arcs[0]).unwrap();
    let deleted = handle.join().unwrap();
    assert!(deleted >= 1_300, "deleted {deleted}");
    assert!(store.pending_removals().unwrap().is_empty());
    for (key, _) in &removed {
        assert_eq!(store.get(key).unwrap(), None);
    }
    for (key, value) in &kept {
        assert_eq!(store.get(key).unwrap().as_deref(), Some(value.as_slice()));
    }
    assert_eq!(store.groups().unwrap(), vec![ShardId(2)]);
    assert_eq!(
        store.group(SHARD).unwrap().last_index().unwrap(),
        LogIndex(0)
    );
    assert_eq!(
        store.group(ShardId(2)).unwrap().last_index().unwrap(),
        LogIndex(3)
    );
}

#[test]
fn oversized_keys_and_values_are_rejected_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let big_key = Bytes::from(vec![b'k'; ringkv_storage::KEY_BYTES_MAX + 1]);
    let big_value = Bytes::from(vec![b'v'; ringkv_storage::VALUE_BYTES_MAX + 1]);
    let results = store
        .apply(
            SHARD,
            &[command(vec![
                Operation::Put {
                    key: big_key,
                    value: Bytes::from_static(b"v"),
                },
                Operation::Put {
                    key: Bytes::from_static(b"k"),
                    value: big_value,
                },
                put("ok", "fine"),
            ])],
            applied(1),
            None,
        )
        .unwrap();
    assert_eq!(
        results,
        vec![CommandResult::Applied(vec![
            OperationResult::KeyTooLarge,
            OperationResult::ValueTooLarge,
            OperationResult::Put,
        ])]
    );
    assert_eq!(store.get(b"k").unwrap(), None);
    assert_eq!(store.get(b"ok").unwrap(), Some(Bytes::from_static(b"fine")));
}

/// A follower's Ready can carry a snapshot, the entries after it and a hard state: one batch
/// installs the data, moves the compaction point and appends.
#[test]
fn snapshot_and_following_entries_in_one_group_commit() {
    let source_dir = tempfile::tempdir().unwrap();
    let target_dir = tempfile::tempdir().unwrap();
    let source = open(source_dir.path());
    let pairs = fill(&source, SHARD, Arc::FULL, 100, 10);
    let chunks = source.snapshot_chunks(SHARD, Arc::FULL).unwrap();
    let target = open(target_dir.path());
    let prepared = target.prepare_snapshot(SHARD, chunks).unwrap();
    assert_eq!((prepared.len(), prepared.meta().index), (100, LogIndex(10)));
    let mut batch = WriteBatchBuilder::new();
    batch.install_snapshot(prepared);
    batch.append(SHARD, &entries(11..=12, 2)).unwrap();
    batch.set_hard_state(
        SHARD,
        ringkv_types::raft::HardState {
            term: Term(2),
            vote: NodeId(1),
            commit: LogIndex(10),
        },
    );
    target.write(batch).unwrap();
    drop(target);
    let target = open(target_dir.path());
    let group = target.group(SHARD).unwrap();
    assert_eq!(group.bounds(), (LogIndex(11), LogIndex(12), Term(2)));
    assert_eq!(group.term(LogIndex(10)).unwrap(), Term(2));
    assert_eq!(target.applied(SHARD).unwrap().index, LogIndex(10));
    for (key, value) in &pairs {
        assert_eq!(target.get(key).unwrap().as_deref(), Some(value.as_slice()));
    }
}

/// Sessions carry the log time of their last write; an expiry entry drops those idle for the
/// limit or longer, keeps the rest, stamps records of unknown time instead of dropping them, and
/// survives a restart. A retry of a dropped session's write applies again: the documented limit
/// of exactly-once.
#[test]
fn idle_sessions_expire_in_log_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let write = |session: u64, key: &str| Command {
        session: Some(SessionRequest {
            session,
            sequence: 1,
        }),
        operations: vec![put(key, "v")],
    };
    const MINUTE: u64 = 60_000;
    let t0 = 1_800_000_000_000;
    store
        .apply_with_meta(
            SHARD,
            &[write(1, "a"), write(2, "b")],
            &[t0, t0 + 5 * MINUTE],
            &[],
            applied(1),
            None,
            &[],
        )
        .unwrap();
    // A write applied without a stamp (an entry from before log time existed).
    store
        .apply(SHARD, &[write(3, "c")], applied(2), None)
        .unwrap();
    assert_eq!(store.read_session(SHARD, 1).unwrap().unwrap().last_ms, t0);
    assert_eq!(store.read_session(SHARD, 3).unwrap().unwrap().last_ms, 0);

    // Ten minutes idle at t0 + 10 min: session 1 goes, session 2 (5 min) stays, 3 is stamped.
    let expiry = store
        .expire_sessions(SHARD, t0 + 10 * MINUTE, 10 * MINUTE, applied(3))
        .unwrap();
    assert_eq!((expiry.dropped, expiry.remaining), (1, 2));
    assert!(store.read_session(SHARD, 1).unwrap().is_none());
    assert_eq!(
        store.read_session(SHARD, 3).unwrap().unwrap().last_ms,
        t0 + 10 * MINUTE
    );
    // The applied index moved with the expiry; a replayed one is refused.
    assert!(matches!(
        store.expire_sessions(SHARD, t0 + 11 * MINUTE, MINUTE, applied(3)),
        Err(Error::InvalidWrite { .. })
    ));
    drop(store);

    let store = open(dir.path());
    let sessions: Vec<u64> = store
        .sessions(SHARD)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(sessions, vec![2, 3]);
    // Session 1's retry is no longer recognised: it applies as a new write.
    let results = store
        .apply_with_meta(
            SHARD,
            &[write(1, "a")],
            &[t0 + 12 * MINUTE],
            &[],
            applied(4),
            None,
            &[],
        )
        .unwrap();
    assert_eq!(
        results,
        vec![CommandResult::Applied(vec![OperationResult::Put])]
    );
    let expiry = store
        .expire_sessions(SHARD, t0 + 40 * MINUTE, 10 * MINUTE, applied(5))
        .unwrap();
    assert_eq!((expiry.dropped, expiry.remaining), (3, 0));
    assert!(store.sessions(SHARD).unwrap().is_empty());
    // Stamps must match the commands one to one.
    assert!(matches!(
        store.apply_with_meta(SHARD, &[write(4, "d")], &[1, 2], &[], applied(6), None, &[]),
        Err(Error::InvalidWrite { .. })
    ));
}
