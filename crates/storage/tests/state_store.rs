//! The state-machine storage seam ([`StateStore`]): one test body per behaviour, run over both
//! implementations (the fjall [`Store`] and the [`MemoryState`] the simulator uses), plus the
//! crash behaviour of the memory store (what the simulator's disk faults rely on).
#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use bytes::Bytes;
use ringkv_storage::kv_machine::{self, CommandRun};
use ringkv_storage::{
    AppliedState, ApplyBatch, Command, CommandResult, Error, MemoryState, Operation,
    OperationResult, SessionRequest, StateStore, Versioned,
};
use ringkv_types::raft::ConfState;
use ringkv_types::{LogIndex, NodeId, ShardId, Term, ring};

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

fn session_write(session: u64, sequence: u64, key: &str, value: &str) -> Command {
    Command {
        session: Some(SessionRequest { session, sequence }),
        operations: vec![put(key, value)],
    }
}

/// Applies `commands` at `index` (each at its own index from `index`) and commits the batch.
fn apply<S: StateStore>(
    store: &mut S,
    commands: &[Command],
    stamps: &[u64],
    index: u64,
) -> Vec<CommandResult> {
    let last = index + commands.len().saturating_sub(1) as u64;
    let indexes: Vec<u64> = (index..=last).take(commands.len()).collect();
    let run = CommandRun {
        commands,
        stamps,
        indexes: &indexes,
        versions_follow_index: false,
    };
    let (batch, results) =
        kv_machine::apply_commands(&*store, SHARD, run, applied(last), None, &[]).unwrap();
    store.commit_apply(batch).unwrap();
    results
}

fn value<S: StateStore>(store: &S, key: &str) -> Option<Versioned> {
    store.value(&ring::storage_key(key.as_bytes())).unwrap()
}

/// Runs `body` over a fresh fjall store and a fresh memory store.
fn both(body: impl Fn(&mut dyn FnMut() -> Box<dyn Erased>)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let mut fjall = move || -> Box<dyn Erased> { Box::new(common::open(&path)) };
    body(&mut fjall);
    let mut memory = || -> Box<dyn Erased> { Box::new(MemoryState::new()) };
    body(&mut memory);
}

/// [`StateStore`] behind a box (the test bodies are written once, over the trait).
trait Erased: StateStore {}
impl<S: StateStore> Erased for S {}

impl StateStore for Box<dyn Erased> {
    fn applied(&self, shard: ShardId) -> ringkv_storage::Result<AppliedState> {
        (**self).applied(shard)
    }
    fn value(&self, key: &[u8]) -> ringkv_storage::Result<Option<Versioned>> {
        (**self).value(key)
    }
    fn session(
        &self,
        shard: ShardId,
        session: u64,
    ) -> ringkv_storage::Result<Option<ringkv_storage::SessionRecord>> {
        (**self).session(shard, session)
    }
    fn sessions(
        &self,
        shard: ShardId,
    ) -> ringkv_storage::Result<Vec<(u64, ringkv_storage::SessionRecord)>> {
        (**self).sessions(shard)
    }
    fn meta(&self, name: &[u8]) -> ringkv_storage::Result<Option<Bytes>> {
        (**self).meta(name)
    }
    fn scan_page(
        &self,
        request: &ringkv_storage::ScanRequest<'_>,
    ) -> ringkv_storage::Result<ringkv_storage::ScanPage> {
        (**self).scan_page(request)
    }
    fn expired_keys(
        &self,
        arc: ring::Arc,
        start: &[u8],
        now_ms: u64,
        examine_max: usize,
        keys_max: usize,
    ) -> ringkv_storage::Result<ringkv_storage::ExpiredKeys> {
        (**self).expired_keys(arc, start, now_ms, examine_max, keys_max)
    }
    fn record_bytes_max(&self) -> u64 {
        (**self).record_bytes_max()
    }
    fn commit_apply(&mut self, batch: ApplyBatch) -> ringkv_storage::Result<()> {
        (**self).commit_apply(batch)
    }
    fn journal_mark(&self) -> u64 {
        (**self).journal_mark()
    }
    fn batches_durable(&mut self, mark: u64) {
        (**self).batches_durable(mark);
    }
}

#[test]
fn writes_and_compare_and_swaps_read_back_with_versions() {
    both(|open| {
        let mut store = open();
        let cas = |expected: Option<&str>, new: &str| Command {
            session: None,
            operations: vec![Operation::CompareAndSwap {
                key: Bytes::from_static(b"k"),
                expected: expected.map(|e| Bytes::from(e.to_owned())),
                new: Some(Bytes::from(new.to_owned())),
            }],
        };
        let plain = |operations| Command {
            session: None,
            operations,
        };
        let results = apply(
            &mut store,
            &[
                plain(vec![put("k", "a")]),
                cas(Some("zzz"), "b"),
                cas(Some("a"), "c"),
            ],
            &[],
            5,
        );
        assert_eq!(
            results[0],
            CommandResult::Applied(vec![OperationResult::Put])
        );
        assert_eq!(
            results[1],
            CommandResult::Applied(vec![OperationResult::CompareAndSwap {
                swapped: false,
                previous: Some(Bytes::from_static(b"a")),
            }])
        );
        assert_eq!(
            value(&store, "k"),
            Some(Versioned {
                value: Bytes::from_static(b"c"),
                version: 7,
                expires_at_ms: 0,
            })
        );
        assert_eq!(store.applied(SHARD).unwrap(), applied(7));
        let results = apply(
            &mut store,
            &[plain(vec![Operation::Delete {
                key: Bytes::from_static(b"k"),
            }])],
            &[],
            8,
        );
        assert_eq!(
            results[0],
            CommandResult::Applied(vec![OperationResult::Deleted { existed: true }])
        );
        assert_eq!(value(&store, "k"), None);
    });
}

#[test]
fn a_session_sequence_applies_once_and_older_ones_are_stale() {
    both(|open| {
        let mut store = open();
        apply(&mut store, &[session_write(9, 2, "k", "first")], &[100], 3);
        // The retry of sequence 2 (in the same batch as a new write, and alone) answers the
        // saved result without writing, with the index of the entry that applied it.
        let results = apply(
            &mut store,
            &[
                session_write(9, 2, "k", "retry"),
                session_write(9, 3, "j", "x"),
                session_write(9, 3, "j", "retry"),
            ],
            &[200, 200, 200],
            4,
        );
        let repeated = |index| CommandResult::Repeated {
            results: vec![OperationResult::Put],
            index,
        };
        assert_eq!(results[0], repeated(3));
        assert_eq!(
            results[1],
            CommandResult::Applied(vec![OperationResult::Put])
        );
        assert_eq!(results[2], repeated(5));
        assert_eq!(value(&store, "k").unwrap().value, "first");
        assert_eq!(value(&store, "j").unwrap().value, "x");
        let results = apply(&mut store, &[session_write(9, 1, "k", "old")], &[300], 7);
        assert_eq!(results[0], CommandResult::StaleSequence { last_applied: 3 });
        let record = store.session(SHARD, 9).unwrap().unwrap();
        assert_eq!((record.sequence, record.last_ms, record.index), (3, 200, 5));
        assert_eq!(store.sessions(SHARD).unwrap().len(), 1);
        assert!(store.sessions(ShardId(2)).unwrap().is_empty());
    });
}

#[test]
fn an_expiry_pass_drops_idle_sessions_and_stamps_unknown_ones() {
    both(|open| {
        let mut store = open();
        apply(
            &mut store,
            &[
                session_write(1, 1, "a", "x"),
                session_write(2, 1, "b", "x"),
                session_write(3, 1, "c", "x"),
            ],
            &[1_000, 50_000, 0],
            1,
        );
        let (batch, outcome) =
            kv_machine::expire_sessions(&store, SHARD, 61_000, 60_000, applied(4)).unwrap();
        store.commit_apply(batch).unwrap();
        assert_eq!((outcome.dropped, outcome.remaining), (1, 2));
        let sessions = store.sessions(SHARD).unwrap();
        let ids: Vec<u64> = sessions.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [2, 3]);
        assert_eq!(store.session(SHARD, 3).unwrap().unwrap().last_ms, 61_000);
        assert!(store.session(SHARD, 1).unwrap().is_none());
        // The retry of the dropped session applies again (the documented limit).
        let results = apply(
            &mut store,
            &[session_write(1, 1, "a", "again")],
            &[62_000],
            5,
        );
        assert_eq!(
            results[0],
            CommandResult::Applied(vec![OperationResult::Put])
        );
        assert_eq!(value(&store, "a").unwrap().value, "again");
    });
}

#[test]
fn the_applied_index_must_advance_and_oversized_meta_writes_nothing() {
    both(|open| {
        let mut store = open();
        apply(&mut store, &[session_write(1, 1, "a", "x")], &[], 5);
        let write = [session_write(1, 2, "a", "y")];
        let again = kv_machine::apply_commands(
            &store,
            SHARD,
            CommandRun::plain(&write),
            applied(5),
            None,
            &[],
        );
        assert!(
            matches!(again, Err(Error::InvalidWrite { .. })),
            "{again:?}"
        );
        // An empty run may repeat the position (with meta: a skipped split's record).
        let (batch, _) = kv_machine::apply_commands(
            &store,
            SHARD,
            CommandRun::plain(&[]),
            applied(5),
            None,
            &[(b"descriptor", b"d1")],
        )
        .unwrap();
        store.commit_apply(batch).unwrap();
        assert_eq!(store.meta(b"descriptor").unwrap().unwrap(), "d1");
        // A batch that moves the position back is refused by the store itself.
        let back = store.commit_apply(ApplyBatch::new(SHARD, applied(4)));
        assert!(matches!(back, Err(Error::InvalidWrite { .. })), "{back:?}");
        let huge = vec![0u8; store.record_bytes_max() as usize + 1];
        let conf = ConfState {
            voters: vec![NodeId(1)],
            ..ConfState::default()
        };
        let too_large = kv_machine::apply_commands(
            &store,
            SHARD,
            CommandRun::plain(&write),
            applied(6),
            Some(&conf),
            &[(b"descriptor", huge.as_slice())],
        );
        assert!(
            matches!(too_large, Err(Error::TooLarge { .. })),
            "{too_large:?}"
        );
        assert_eq!(store.applied(SHARD).unwrap(), applied(5));
        assert_eq!(value(&store, "a").unwrap().value, "x");
    });
}

#[test]
fn the_fjall_store_keeps_committed_batches_across_a_clean_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = common::open(dir.path());
        apply(&mut store, &[session_write(4, 1, "k", "v")], &[10], 3);
        store.persist().unwrap();
    }
    let store = common::open(dir.path());
    assert_eq!(StateStore::applied(&store, SHARD).unwrap(), applied(3));
    assert_eq!(value(&store, "k").unwrap().value, "v");
    assert_eq!(store.session(SHARD, 4).unwrap().unwrap().sequence, 1);
}

#[test]
fn a_memory_crash_loses_exactly_the_batches_after_the_durability_point() {
    let mut store = MemoryState::new();
    apply(&mut store, &[session_write(1, 1, "a", "1")], &[], 1);
    let mark = store.journal_mark();
    apply(&mut store, &[session_write(1, 2, "a", "2")], &[], 2);
    // The group commit submitted at `mark` covers the first batch only.
    store.batches_durable(mark);
    assert_eq!(store.unsynced_count(), 1);
    apply(&mut store, &[session_write(1, 3, "a", "3")], &[], 3);
    assert_eq!(value(&store, "a").unwrap().value, "3");
    assert_eq!(store.crash(0), 2);
    assert_eq!(value(&store, "a").unwrap().value, "1");
    assert_eq!(store.applied(SHARD).unwrap(), applied(1));
    assert_eq!(store.session(SHARD, 1).unwrap().unwrap().sequence, 1);
    // Re-applying the lost entries after the crash gives the same state again.
    apply(&mut store, &[session_write(1, 2, "a", "2")], &[], 2);
    apply(&mut store, &[session_write(1, 3, "a", "3")], &[], 3);
    assert_eq!(value(&store, "a").unwrap().value, "3");
    // A crash may keep an older prefix of the unsynced batches, never a newer one alone.
    assert_eq!(store.crash(1), 1);
    assert_eq!(value(&store, "a").unwrap().value, "2");
    assert_eq!(store.applied(SHARD).unwrap(), applied(2));
    // Durable batches survive any crash.
    let mark = store.journal_mark();
    store.batches_durable(mark);
    assert_eq!(store.crash(0), 0);
    assert_eq!(value(&store, "a").unwrap().value, "2");
}

/// Scans page through both stores alike: storage order, the page limit, a prefix, a delete in
/// a later (for memory: unsynced) batch, and a cursor that resumes where the page ended.
#[test]
fn scan_pages_agree_over_both_stores() {
    both(|open| {
        let mut store = open();
        let plain = |operations| Command {
            session: None,
            operations,
        };
        let names: Vec<String> = (0..12).map(|i| format!("key{i}")).collect();
        let puts: Vec<Command> = names.iter().map(|n| plain(vec![put(n, "v")])).collect();
        apply(&mut store, &puts, &[], 1);
        apply(
            &mut store,
            &[
                plain(vec![Operation::Delete {
                    key: Bytes::from_static(b"key3"),
                }]),
                plain(vec![put("other", "w")]),
            ],
            &[],
            13,
        );
        let mut expected: Vec<Vec<u8>> = names
            .iter()
            .filter(|n| n.as_str() != "key3")
            .map(|n| ring::storage_key(n.as_bytes()))
            .collect();
        expected.sort();
        let expected: Vec<Bytes> = expected
            .into_iter()
            .map(|k| Bytes::copy_from_slice(&k[8..]))
            .collect();
        let mut cursor: Vec<u8> = Vec::new();
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page = store
                .scan_page(&ringkv_storage::ScanRequest {
                    arc: ring::Arc::FULL,
                    start: &cursor,
                    prefix: b"key",
                    limit: 4,
                    keys_only: false,
                    examine_max: 100,
                    bytes_max: 1 << 20,
                    now_ms: 0,
                })
                .unwrap();
            pages += 1;
            assert!(page.items.len() <= 4);
            for item in &page.items {
                assert_eq!(item.value.as_deref(), Some(&b"v"[..]));
                seen.push(item.key.clone());
            }
            match page.next {
                Some(next) => cursor = next,
                None => break,
            }
        }
        assert_eq!(seen, expected);
        assert_eq!(pages, 3);
    });
}

/// A sweep steps through both stores alike: the keys expired at the step's log time (not the
/// ones still live, without a TTL, or deleted in a later, for memory unsynced, batch), at most
/// `examine_max` keys examined per step, and whether a TTL was seen at all.
#[test]
fn sweep_steps_agree_over_both_stores() {
    both(|open| {
        let mut store = open();
        let plain = |operations| Command {
            session: None,
            operations,
        };
        let commands: Vec<Command> = (0..10)
            .map(|n| {
                let key = Bytes::from(format!("k{n}"));
                let value = Bytes::from_static(b"v");
                plain(vec![match n % 3 {
                    0 => Operation::PutWithTtl {
                        key,
                        value,
                        ttl_ms: 100,
                    },
                    1 => Operation::PutWithTtl {
                        key,
                        value,
                        ttl_ms: 10_000,
                    },
                    _ => Operation::Put { key, value },
                }])
            })
            .collect();
        apply(&mut store, &commands, &[1_000; 10], 1);
        let delete = plain(vec![Operation::Delete {
            key: Bytes::from_static(b"k3"),
        }]);
        apply(&mut store, &[delete], &[1_050], 11);
        let mut start: Vec<u8> = Vec::new();
        let mut expired = Vec::new();
        let mut steps = 0;
        loop {
            let step = store
                .expired_keys(ring::Arc::FULL, &start, 1_100, 4, 100)
                .unwrap();
            steps += 1;
            expired.extend(step.keys);
            match step.next {
                Some(next) => start = next,
                None => break,
            }
        }
        expired.sort();
        let want: Vec<Bytes> = ["k0", "k6", "k9"]
            .iter()
            .map(|k| Bytes::from_static(k.as_bytes()))
            .collect();
        assert_eq!(expired, want);
        assert_eq!(steps, 3, "9 keys, 4 examined per step");
        // Before the expiry nothing is due, but the TTLs are seen; at most `keys_max` a step.
        let early = store
            .expired_keys(ring::Arc::FULL, &[], 1_099, 100, 100)
            .unwrap();
        assert!(early.keys.is_empty() && early.expiring_seen && early.next.is_none());
        let capped = store
            .expired_keys(ring::Arc::FULL, &[], u64::MAX, 100, 2)
            .unwrap();
        assert_eq!(capped.keys.len(), 2);
        assert!(capped.next.is_some());
    });
}

/// Applies `commands` to `shard` one per index from `index` with `versions_follow_index` set as
/// given; returns the results and the batch's watch events.
fn apply_claiming<S: StateStore>(
    store: &mut S,
    shard: ShardId,
    commands: &[Command],
    index: u64,
    versions_follow_index: bool,
) -> (Vec<CommandResult>, Vec<ringkv_types::WatchEvent>) {
    let indexes: Vec<u64> = (index..).take(commands.len()).collect();
    let stamps = vec![1_000; commands.len()];
    let run = CommandRun {
        commands,
        stamps: &stamps,
        indexes: &indexes,
        versions_follow_index,
    };
    let last = index + commands.len() as u64 - 1;
    let (mut batch, results) =
        kv_machine::apply_commands(&*store, shard, run, applied(last), None, &[]).unwrap();
    let events = std::mem::take(&mut batch.events);
    store.commit_apply(batch).unwrap();
    (results, events)
}

#[test]
fn a_shard_whose_versions_follow_its_index_applies_exactly_as_one_that_reads_them() {
    // The claim changes how a put's version is found (not read back), never what is stored,
    // answered or watched: a mixed run over two stores, one claiming, one not.
    both(|open| {
        let (mut reading, mut claiming) = (open(), Box::new(MemoryState::new()) as Box<dyn Erased>);
        let one = |operation| Command {
            session: None,
            operations: vec![operation],
        };
        let key = |name: &str| Bytes::from(name.to_owned());
        let mut index = 6;
        for round in 0..4u64 {
            let commands = vec![
                one(put("a", &format!("a{round}"))),
                session_write(7, round + 1, "b", &format!("b{round}")),
                one(Operation::PutWithTtl {
                    key: key("t"),
                    value: key("ttl"),
                    ttl_ms: 5,
                }),
                one(Operation::CompareAndSwap {
                    key: key("a"),
                    expected: Some(key(&format!("a{round}"))),
                    new: Some(key("swapped")),
                }),
                one(Operation::CompareVersionAndSwap {
                    key: key("b"),
                    expected_version: index + 1,
                    new: Some(key("by-version")),
                }),
                Command {
                    session: None,
                    operations: vec![
                        put("c", "c1"),
                        put("c", "c2"),
                        Operation::Delete { key: key("a") },
                    ],
                },
            ];
            let read = apply_claiming(&mut reading, SHARD, &commands, index, false);
            let claimed = apply_claiming(&mut claiming, SHARD, &commands, index, true);
            assert_eq!(read, claimed, "round {round}");
            for name in ["a", "b", "c", "t"] {
                assert_eq!(value(&reading, name), value(&claiming, name), "{name}");
            }
            index += commands.len() as u64;
        }
        // The run wrote what it says: versions are the writing entries' indexes.
        assert_eq!(value(&claiming, "c").unwrap().version, index - 1);
    });
}

#[test]
fn a_put_over_a_version_above_the_index_counts_on_from_it() {
    // A shard of the first split format: its log restarted at 5 under its parent's versions.
    let mut store = MemoryState::new();
    apply_claiming(
        &mut store,
        SHARD,
        &[session_write(1, 1, "k", "v")],
        100,
        false,
    );
    apply_claiming(
        &mut store,
        ShardId(2),
        &[session_write(2, 1, "k", "w")],
        6,
        false,
    );
    assert_eq!(value(&store, "k").unwrap().version, 101);
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "above the log index 6 of a shard whose versions follow its log index")]
fn a_false_claim_that_versions_follow_the_index_is_caught_in_debug_builds() {
    // The same shard claiming its versions follow its index: the version would go backwards
    // from 100 to 6 (a stale version could match again); debug builds stop it.
    let mut store = MemoryState::new();
    apply_claiming(
        &mut store,
        SHARD,
        &[session_write(1, 1, "k", "v")],
        100,
        false,
    );
    apply_claiming(
        &mut store,
        ShardId(2),
        &[session_write(2, 1, "k", "w")],
        6,
        true,
    );
}
