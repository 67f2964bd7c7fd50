//! Time-to-live of stored values: expiry decided by the log time stamped in each entry (never a
//! replica's clock at apply), a put refreshing or clearing the TTL, `Persist`, the conditional
//! `Expire` a leader proposes, reads at a log time, the sweep step, and snapshots carrying
//! expiries.
#![allow(clippy::unwrap_used, reason = "test helpers")]

mod common;

use bytes::Bytes;
use common::open;
use ringkv_storage::{
    AppliedState, Command, CommandResult, Operation, OperationResult, ScanRequest, Store,
};
use ringkv_types::raft::ConfState;
use ringkv_types::ring::Arc;
use ringkv_types::{LogIndex, NodeId, ShardId, Term};

const SHARD: ShardId = ShardId(1);
/// A log time (ms since the Unix epoch) the tests count from.
const T0: u64 = 1_800_000_000_000;

fn key(name: &str) -> Bytes {
    Bytes::from(name.to_owned())
}

fn put(name: &str, value: &str) -> Operation {
    Operation::Put {
        key: key(name),
        value: Bytes::from(value.to_owned()),
    }
}

fn put_ttl(name: &str, value: &str, ttl_ms: u64) -> Operation {
    Operation::PutWithTtl {
        key: key(name),
        value: Bytes::from(value.to_owned()),
        ttl_ms,
    }
}

/// Applies one command per `(log time, operations)` at consecutive indexes from `first`, and
/// returns the operation results.
fn apply_at(
    store: &Store,
    first: u64,
    commands: Vec<(u64, Vec<Operation>)>,
) -> Vec<Vec<OperationResult>> {
    let stamps: Vec<u64> = commands.iter().map(|(stamp, _)| *stamp).collect();
    let indexes: Vec<u64> = (0..commands.len() as u64).map(|n| first + n).collect();
    let commands: Vec<Command> = commands
        .into_iter()
        .map(|(_, operations)| Command {
            session: None,
            operations,
        })
        .collect();
    let last = *indexes.last().unwrap();
    store
        .apply_with_meta(
            SHARD,
            &commands,
            &stamps,
            &indexes,
            AppliedState {
                index: LogIndex(last),
                term: Term(1),
            },
            Some(&ConfState::with_voters([NodeId(1)])),
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|result| match result {
            CommandResult::Applied(results) => results,
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

fn live(store: &Store, name: &str, now_ms: u64) -> Option<String> {
    store
        .get_live(name.as_bytes(), now_ms)
        .unwrap()
        .map(|found| String::from_utf8(found.value.to_vec()).unwrap())
}

/// A key with a TTL is there before its log time runs out and absent from then on, for reads
/// at a log time; writes in entries stamped later see it absent too, whatever the wall clock.
#[test]
fn a_key_is_absent_from_its_expiry_on_for_reads_and_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    apply_at(&store, 1, vec![(T0, vec![put_ttl("k", "v", 1_000)])]);
    let stored = store.get_versioned(b"k").unwrap().unwrap();
    assert_eq!((stored.version, stored.expires_at_ms), (1, T0 + 1_000));
    assert_eq!(live(&store, "k", T0 + 999).as_deref(), Some("v"));
    assert_eq!(live(&store, "k", T0 + 1_000), None);
    assert_eq!(stored.remaining_ms(T0 + 400), Some(600));

    // An entry stamped before the expiry sees the key; one stamped at or after does not: a
    // compare-and-swap expecting "absent" fails at T0+999 and succeeds at T0+1000.
    let absent = |stamp| {
        (
            stamp,
            vec![Operation::CompareAndSwap {
                key: key("k"),
                expected: None,
                new: Some(Bytes::from("new")),
            }],
        )
    };
    let results = apply_at(&store, 2, vec![absent(T0 + 999), absent(T0 + 1_000)]);
    assert_eq!(
        results,
        vec![
            vec![OperationResult::CompareAndSwap {
                swapped: false,
                previous: Some(Bytes::from("v"))
            }],
            vec![OperationResult::CompareAndSwap {
                swapped: true,
                previous: None
            }],
        ]
    );
    // The swap stored a value without a TTL, with a version above the expired one.
    let now = store.get_live(b"k", u64::MAX).unwrap().unwrap();
    assert_eq!((now.version, now.expires_at_ms), (3, 0));

    // A delete of an expired key reports it did not exist.
    apply_at(&store, 4, vec![(T0, vec![put_ttl("d", "v", 10)])]);
    let results = apply_at(
        &store,
        5,
        vec![(T0 + 10, vec![Operation::Delete { key: key("d") }])],
    );
    assert_eq!(
        results,
        vec![vec![OperationResult::Deleted { existed: false }]]
    );
    assert!(store.get_versioned(b"d").unwrap().is_none());
}

/// A put with a TTL replaces the previous TTL (refresh); a put without one clears it;
/// `Persist` clears it and bumps the version; a TTL of 0 or in an entry without log time is
/// refused.
#[test]
fn puts_refresh_or_clear_the_ttl_and_persist_clears_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    apply_at(
        &store,
        1,
        vec![
            (T0, vec![put_ttl("a", "1", 1_000)]),
            (T0 + 900, vec![put_ttl("a", "2", 1_000)]),
            (T0, vec![put_ttl("b", "1", 1_000)]),
            (T0 + 100, vec![put("b", "2")]),
            (T0, vec![put_ttl("c", "1", 1_000)]),
        ],
    );
    // Refreshed: lives until T0 + 1900.
    assert_eq!(live(&store, "a", T0 + 1_899).as_deref(), Some("2"));
    assert_eq!(live(&store, "a", T0 + 1_900), None);
    // Cleared by a plain put.
    assert_eq!(live(&store, "b", u64::MAX).as_deref(), Some("2"));

    let results = apply_at(
        &store,
        6,
        vec![
            (T0 + 10, vec![Operation::Persist { key: key("c") }]),
            (T0 + 20, vec![Operation::Persist { key: key("c") }]),
            (T0 + 30, vec![Operation::Persist { key: key("none") }]),
            (T0 + 40, vec![put_ttl("z", "1", 0)]),
            (0, vec![put_ttl("z", "1", 1_000)]),
        ],
    );
    assert_eq!(
        results,
        vec![
            vec![OperationResult::Persisted { had_ttl: true }],
            vec![OperationResult::Persisted { had_ttl: false }],
            vec![OperationResult::Persisted { had_ttl: false }],
            vec![OperationResult::InvalidTtl],
            vec![OperationResult::InvalidTtl],
        ]
    );
    let c = store.get_live(b"c", u64::MAX).unwrap().unwrap();
    assert_eq!((c.version, c.expires_at_ms), (6, 0), "persisted at index 6");
    assert!(store.get_versioned(b"z").unwrap().is_none());
}

/// `Expire` removes a key only if its TTL has run out at the entry's log time: a key written
/// again (or persisted) after the leader looked stays.
#[test]
fn expire_removes_only_keys_whose_time_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    apply_at(
        &store,
        1,
        vec![
            (T0, vec![put_ttl("gone", "v", 100)]),
            (T0, vec![put_ttl("early", "v", 100)]),
            (T0, vec![put_ttl("rewritten", "v", 100)]),
            (T0, vec![put("plain", "v")]),
        ],
    );
    let expire = |name: &str| Operation::Expire { key: key(name) };
    let results = apply_at(
        &store,
        5,
        vec![
            (T0 + 150, vec![put("rewritten", "w")]),
            (
                T0 + 200,
                vec![
                    expire("gone"),
                    expire("rewritten"),
                    expire("plain"),
                    expire("missing"),
                ],
            ),
            (T0 + 50, vec![expire("early")]),
        ],
    );
    assert_eq!(
        results[1..],
        [
            vec![
                OperationResult::Deleted { existed: true },
                OperationResult::Deleted { existed: false },
                OperationResult::Deleted { existed: false },
                OperationResult::Deleted { existed: false },
            ],
            vec![OperationResult::Deleted { existed: false }],
        ]
    );
    assert!(store.get_versioned(b"gone").unwrap().is_none());
    assert!(store.get_versioned(b"early").unwrap().is_some());
    assert_eq!(live(&store, "rewritten", u64::MAX).as_deref(), Some("w"));
    assert_eq!(live(&store, "plain", u64::MAX).as_deref(), Some("v"));
}

/// The sweep finds exactly the expired keys of the arc, step by step with a bounded budget;
/// scans at a log time leave them out.
#[test]
fn the_sweep_finds_expired_keys_and_scans_leave_them_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut commands = Vec::new();
    for n in 0..40 {
        let operation = match n % 3 {
            0 => put_ttl(&format!("k{n}"), "v", 100),
            1 => put_ttl(&format!("k{n}"), "v", 10_000),
            _ => put(&format!("k{n}"), "v"),
        };
        commands.push((T0, vec![operation]));
    }
    apply_at(&store, 1, commands);
    let mut expired = Vec::new();
    let mut start = Vec::new();
    let mut steps = 0;
    loop {
        let step = store
            .expired_keys(Arc::FULL, &start, T0 + 100, 7, 1_000)
            .unwrap();
        assert!(step.expiring_seen);
        steps += 1;
        expired.extend(step.keys);
        match step.next {
            Some(next) => start = next,
            None => break,
        }
    }
    assert_eq!(steps, 6, "40 keys, 7 examined per step");
    let mut names: Vec<String> = expired
        .iter()
        .map(|k| String::from_utf8(k.to_vec()).unwrap())
        .collect();
    names.sort();
    let mut want: Vec<String> = (0..40).step_by(3).map(|n| format!("k{n}")).collect();
    want.sort();
    assert_eq!(names, want);
    // A cursor past the end of a (shrunk) arc ends the pass.
    let low = Arc::split_even(2)[0];
    let (past, _) = Arc::split_even(2)[1].storage_bounds();
    let step = store.expired_keys(low, &past, T0 + 100, 7, 10).unwrap();
    assert!(step.keys.is_empty() && step.next.is_none());
    // A store without TTLs: nothing seen.
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = open(plain_dir.path());
    apply_at(&plain, 1, vec![(T0, vec![put("a", "v")])]);
    let step = plain
        .expired_keys(Arc::FULL, &[], u64::MAX, 10, 10)
        .unwrap();
    assert!(step.keys.is_empty() && step.next.is_none() && !step.expiring_seen);

    let page = store
        .scan_page(&ScanRequest {
            arc: Arc::FULL,
            start: &[],
            prefix: b"",
            limit: 1_000,
            keys_only: true,
            examine_max: 10_000,
            bytes_max: 1 << 20,
            now_ms: T0 + 100,
        })
        .unwrap();
    assert_eq!(page.items.len(), 40 - want.len());
    assert!(page.items.iter().all(|item| !expired.contains(&item.key)));
}

/// A snapshot carries each value's expiry.
#[test]
fn snapshots_carry_expiries() {
    let source_dir = tempfile::tempdir().unwrap();
    let target_dir = tempfile::tempdir().unwrap();
    let source = open(source_dir.path());
    apply_at(
        &source,
        1,
        vec![
            (T0, vec![put_ttl("t", "v", 5_000)]),
            (T0, vec![put("p", "v")]),
        ],
    );
    let chunks: Vec<Vec<u8>> = source
        .snapshot_chunks(SHARD, Arc::FULL)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let target = open(target_dir.path());
    target
        .install_snapshot(SHARD, chunks.into_iter().map(Ok))
        .unwrap();
    let t = target.get_versioned(b"t").unwrap().unwrap();
    assert_eq!((t.version, t.expires_at_ms), (1, T0 + 5_000));
    let p = target.get_versioned(b"p").unwrap().unwrap();
    assert_eq!((p.version, p.expires_at_ms), (2, 0));
}
