//! Corruption injection: damaged records, flipped bytes in table files and a truncated journal
//! tail give errors (or an older consistent state), never panics and never wrong data.
#![allow(clippy::unwrap_used, reason = "test")]

mod common;

use bytes::Bytes;
use common::{Rng, entries, open};
use ringkv_raft::{Storage, StorageError};
use ringkv_storage::keys::{KEYSPACE_DATA, KEYSPACE_RAFT_LOG, KEYSPACE_RAFT_STATE};
use ringkv_storage::{
    AppliedState, Command, Error, Operation, Store, StoreConfig, WriteBatchBuilder,
};
use ringkv_types::raft::{Entry, HardState};
use ringkv_types::ring::Arc;
use ringkv_types::{LogIndex, NodeId, ShardId, Term};
use std::path::{Path, PathBuf};

const SHARDS: [ShardId; 3] = [ShardId(1), ShardId(2), ShardId(3)];
const BATCHES: u64 = 40;
const PER_BATCH: u64 = 5;

fn key(n: u64) -> String {
    format!("key-{n}")
}

fn value(n: u64) -> String {
    format!("value-{n}-{}", "x".repeat(50))
}

/// Writes `BATCHES` group commits (each `PER_BATCH` entries to every shard) and applies one put
/// per batch to shard 1.
fn populate(path: &Path) -> Vec<Entry> {
    populate_batches(path, 0..BATCHES)
}

/// [`populate`] for some of the batches only.
fn populate_batches(path: &Path, batches: std::ops::Range<u64>) -> Vec<Entry> {
    let store = open(path);
    for batch_number in batches {
        let first = batch_number * PER_BATCH + 1;
        let mut batch = WriteBatchBuilder::new();
        for shard in SHARDS {
            batch
                .append(shard, &entries(first..=first + PER_BATCH - 1, 1))
                .unwrap();
            batch.set_hard_state(
                shard,
                HardState {
                    term: Term(1),
                    vote: NodeId(1),
                    commit: LogIndex(first),
                },
            );
        }
        store.write(batch).unwrap();
        let command = Command {
            session: None,
            operations: vec![Operation::Put {
                key: Bytes::from(key(batch_number)),
                value: Bytes::from(value(batch_number)),
            }],
        };
        let applied = AppliedState {
            index: LogIndex(batch_number + 1),
            term: Term(1),
        };
        store.apply(SHARDS[0], &[command], applied, None).unwrap();
    }
    entries(1..=BATCHES * PER_BATCH, 1)
}

/// What the store acknowledged and so must still hold (or report as damaged): entries
/// `1..=entries` of every shard and the puts of batches `0..keys` (key `n` comes from batch `n`).
#[derive(Clone, Copy, Debug)]
struct Acknowledged {
    entries: u64,
    keys: u64,
}

/// Everything [`populate`] wrote and applied.
const ALL: Acknowledged = Acknowledged {
    entries: BATCHES * PER_BATCH,
    keys: BATCHES,
};

/// Reads everything through the store. Every acknowledged record must come back intact or as
/// an error (the read fails, or the shard fails to open); a record that silently vanished (an
/// index past the store's last index or below its first, a key read as absent) fails the
/// test, and so does wrong data anywhere. Entries the store holds past the acknowledged ones
/// must be intact too. Returns how many reads failed.
fn read_all(store: &Store, expected: &[Entry], acknowledged: Acknowledged) -> usize {
    let mut failures = 0;
    for shard in SHARDS {
        let group = match store.group(shard) {
            Ok(group) => group,
            Err(_) => {
                failures += 1;
                continue;
            }
        };
        let last = match group.last_index() {
            Ok(last) => last.get(),
            Err(_) => {
                failures += 1;
                continue;
            }
        };
        for index in 1..=last.max(acknowledged.entries) {
            match group.entries(LogIndex(index), LogIndex(index + 1), u64::MAX) {
                Ok(got) => assert_eq!(
                    got.as_slice(),
                    &expected[index as usize - 1..index as usize],
                    "{shard} index {index}: wrong data"
                ),
                Err(StorageError::Other(_)) => failures += 1,
                Err(silent) => panic!(
                    "{shard} index {index} was acknowledged (up to {}) but is gone without an \
                     error: {silent}",
                    acknowledged.entries
                ),
            }
        }
    }
    for n in 0..BATCHES {
        match store.get(key(n).as_bytes()) {
            Ok(Some(got)) => assert_eq!(got, value(n).as_bytes(), "key {n}: wrong data"),
            Ok(None) => assert!(
                n >= acknowledged.keys,
                "key {n} was acknowledged (keys below {}) but reads as absent without an error",
                acknowledged.keys
            ),
            Err(_) => failures += 1,
        }
    }
    failures
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for item in std::fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        let target = to.join(item.file_name());
        if item.file_type().unwrap().is_dir() {
            copy_dir(&item.path(), &target);
        } else {
            std::fs::copy(item.path(), target).unwrap();
        }
    }
}

fn files_under(path: &Path, filter: &dyn Fn(&Path) -> bool, out: &mut Vec<PathBuf>) {
    for item in std::fs::read_dir(path).unwrap() {
        let path = item.unwrap().path();
        if path.is_dir() {
            files_under(&path, filter, out);
        } else if filter(&path) {
            out.push(path);
        }
    }
}

/// Rewrites one record through fjall itself, as silent corruption that passed fjall's own
/// checks (a bug, or bit rot inside a block fjall does not checksum) would look.
fn rewrite_raw(path: &Path, keyspace: &str, key: &[u8], mutate: impl FnOnce(&mut Vec<u8>)) {
    let db = fjall::Database::builder(path).open().unwrap();
    let handle = db
        .keyspace(keyspace, fjall::KeyspaceCreateOptions::default)
        .unwrap();
    let mut value = handle.get(key).unwrap().unwrap().to_vec();
    mutate(&mut value);
    handle.insert(key, value).unwrap();
    db.persist(fjall::PersistMode::SyncData).unwrap();
}

fn log_key(shard: ShardId, index: u64) -> Vec<u8> {
    let mut key = shard.get().to_be_bytes().to_vec();
    key.extend_from_slice(&index.to_be_bytes());
    key
}

#[test]
fn corrupt_records_are_typed_errors_naming_shard_and_index() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    rewrite_raw(
        dir.path(),
        KEYSPACE_RAFT_LOG,
        &log_key(ShardId(2), 17),
        |v| {
            let at = v.len() - 3;
            v[at] ^= 0x10;
        },
    );
    // A record that is valid but sits under the wrong key.
    let moved = {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let handle = db
            .keyspace(KEYSPACE_RAFT_LOG, fjall::KeyspaceCreateOptions::default)
            .unwrap();
        handle
            .get(log_key(ShardId(3), 30))
            .unwrap()
            .unwrap()
            .to_vec()
    };
    rewrite_raw(
        dir.path(),
        KEYSPACE_RAFT_LOG,
        &log_key(ShardId(3), 31),
        |v| *v = moved,
    );
    let mut state_key = ShardId(1).get().to_be_bytes().to_vec();
    state_key.push(1);
    rewrite_raw(dir.path(), KEYSPACE_RAFT_STATE, &state_key, |v| {
        v.truncate(v.len() - 1)
    });
    rewrite_raw(
        dir.path(),
        KEYSPACE_DATA,
        &ringkv_types::ring::storage_key(key(3).as_bytes()),
        |v| {
            v[0] = 0xee;
        },
    );

    let store = open(dir.path());
    let group = store.group(ShardId(2)).unwrap();
    let error = group
        .read_entries(LogIndex(15), LogIndex(20), u64::MAX)
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::CorruptEntry {
                shard: ShardId(2),
                index: LogIndex(17),
                ..
            }
        ),
        "{error}"
    );
    assert!(matches!(
        group.entries(LogIndex(17), LogIndex(18), u64::MAX),
        Err(StorageError::Other(_))
    ));
    assert!(matches!(
        group.term(LogIndex(17)),
        Err(StorageError::Other(_))
    ));
    assert_eq!(group.term(LogIndex(16)).unwrap(), Term(1));

    let group = store.group(ShardId(3)).unwrap();
    let error = group
        .read_entries(LogIndex(31), LogIndex(32), u64::MAX)
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::CorruptEntry {
                shard: ShardId(3),
                index: LogIndex(31),
                ..
            }
        ),
        "{error}"
    );

    let error = store.group(ShardId(1)).err().unwrap();
    assert!(
        matches!(
            error,
            Error::CorruptRecord {
                record: "hard_state",
                shard: Some(ShardId(1)),
                ..
            }
        ),
        "{error}"
    );
    let error = store.get(key(3).as_bytes()).unwrap_err();
    assert!(
        matches!(
            error,
            Error::CorruptRecord {
                record: "value",
                ..
            }
        ),
        "{error}"
    );
    // A snapshot stream never carries the corrupt value: the iterator fails instead.
    let chunks: Result<Vec<_>, _> = store
        .snapshot_chunks(ShardId(1), Arc::FULL)
        .unwrap()
        .collect();
    assert!(matches!(
        chunks,
        Err(Error::CorruptRecord {
            record: "value",
            ..
        })
    ));
}

#[test]
fn flipped_bytes_in_table_files_give_errors_not_wrong_data() {
    let pristine = tempfile::tempdir().unwrap();
    let expected = populate(pristine.path());
    {
        let db = fjall::Database::builder(pristine.path()).open().unwrap();
        for name in [KEYSPACE_RAFT_LOG, KEYSPACE_RAFT_STATE, KEYSPACE_DATA] {
            let handle = db
                .keyspace(name, fjall::KeyspaceCreateOptions::default)
                .unwrap();
            handle.rotate_memtable_and_wait().unwrap();
        }
    }
    let mut rng = Rng(0xbad5eed);
    let mut detected = 0;
    for round in 0..12 {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), dir.path());
        let mut tables = Vec::new();
        files_under(
            &dir.path().join("keyspaces"),
            &|p| p.components().any(|c| c.as_os_str() == "tables"),
            &mut tables,
        );
        assert!(!tables.is_empty());
        for _ in 0..3 {
            let file = &tables[rng.below(tables.len() as u64) as usize];
            let mut bytes = std::fs::read(file).unwrap();
            let at = rng.below(bytes.len() as u64) as usize;
            bytes[at] ^= 1 << rng.below(8);
            std::fs::write(file, bytes).unwrap();
        }
        match Store::open(StoreConfig::new(dir.path())) {
            Ok(store) => {
                let failures = read_all(&store, &expected, ALL);
                println!("round {round}: {failures} reads failed, none lost silently");
                detected += failures;
            }
            Err(error) => {
                detected += 1;
                println!("round {round}: open failed: {error}");
            }
        }
    }
    assert!(detected > 0, "no flipped byte was detected");
}

/// Where the contents of the (preallocated) journal `0.jnl` in `dir` end.
fn journal_end(dir: &Path) -> usize {
    let bytes = std::fs::read(dir.join("0.jnl")).unwrap();
    bytes.iter().rposition(|b| *b != 0).unwrap() + 1
}

/// Checks that `store` holds a consistent prefix of what `populate` wrote, at least its first
/// `acknowledged` group commits: every read is the original, every shard has the same whole
/// batches, and applied data matches the applied index.
fn assert_consistent_prefix(store: &Store, expected: &[Entry], acknowledged: u64, round: usize) {
    let applied = store.applied(SHARDS[0]).unwrap().index.get();
    let must_hold = Acknowledged {
        entries: acknowledged * PER_BATCH,
        keys: applied,
    };
    assert_eq!(
        read_all(store, expected, must_hold),
        0,
        "round {round}: a torn tail is not corruption"
    );
    // Batches are atomic: every shard recovered the same prefix, hard state included.
    let lasts: Vec<LogIndex> = SHARDS
        .iter()
        .map(|s| store.group(*s).unwrap().last_index().unwrap())
        .collect();
    assert!(
        lasts.iter().all(|l| *l == lasts[0]),
        "round {round}: {lasts:?}"
    );
    assert_eq!(lasts[0].get() % PER_BATCH, 0, "round {round}: half a batch");
    let commit = store.group(SHARDS[0]).unwrap().hard_state().commit;
    assert_eq!(commit.get() + PER_BATCH - 1, lasts[0].get().max(PER_BATCH));
    let applied = store.applied(SHARDS[0]).unwrap().index.get();
    for n in 0..BATCHES {
        let present = store.get(key(n).as_bytes()).unwrap().is_some();
        assert_eq!(
            present,
            n < applied,
            "round {round}: key {n} vs applied {applied}"
        );
    }
}

/// Asserts that `error` is `LostWrites` naming every shard, with the acknowledged last index.
fn assert_lost_writes(error: &Error, round: usize) {
    let Error::LostWrites {
        recovered,
        marked,
        shards,
        ..
    } = error
    else {
        panic!("round {round}: expected LostWrites, got {error}");
    };
    assert!(recovered < marked, "round {round}: {error}");
    assert_eq!(
        *marked, BATCHES,
        "round {round}: every populated batch was marked"
    );
    let named: Vec<ShardId> = shards.iter().map(|s| s.shard).collect();
    assert_eq!(named, SHARDS, "round {round}: {error}");
    for shard in shards {
        assert_eq!(shard.marked_last, LogIndex(BATCHES * PER_BATCH));
        assert!(
            shard.recovered_last < shard.marked_last,
            "round {round}: {error}"
        );
    }
    let message = error.to_string();
    assert!(
        message.contains("s2") && message.contains("acknowledged"),
        "{message}"
    );
}

/// fjall stops journal recovery at the first batch it cannot decode and truncates the file
/// there: zeroed bytes in the middle of the journal would silently drop every later batch
/// (acknowledged entries and votes). The durable mark turns that into a refusal to open, which
/// stays a refusal on the next attempt although fjall has cut the file by then.
#[test]
fn zeroed_bytes_in_the_middle_of_the_journal_are_refused_naming_the_shards() {
    let pristine = tempfile::tempdir().unwrap();
    populate(pristine.path());
    let end = journal_end(pristine.path());
    let mut lost = 0;
    for (round, percent) in [20, 35, 50, 65, 80].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), dir.path());
        let journal = dir.path().join("0.jnl");
        let mut bytes = std::fs::read(&journal).unwrap();
        let at = end * percent / 100;
        bytes[at..at + 64].fill(0);
        std::fs::write(&journal, bytes).unwrap();
        // Without the mark fjall opens these with a shorter history; with it, never.
        let error = Store::open(StoreConfig::new(dir.path()))
            .err()
            .unwrap_or_else(|| panic!("round {round}: a journal damaged at {percent} % opened"));
        println!("round {round}: {error}");
        if matches!(error, Error::LostWrites { .. }) {
            assert_lost_writes(&error, round);
            lost += 1;
            let again = Store::open(StoreConfig::new(dir.path())).err().unwrap();
            assert_lost_writes(&again, round);
        }
    }
    assert!(lost >= 3, "only {lost} rounds were cut silently by fjall");
}

/// Damage at the journal's end: every group commit there was acknowledged and marked, so a cut
/// is refused; only an unsynced apply batch after the last group commit may go without notice.
#[test]
fn a_cut_journal_end_is_refused() {
    let pristine = tempfile::tempdir().unwrap();
    let expected = populate(pristine.path());
    let end = journal_end(pristine.path());
    let mut rng = Rng(0x7a11);
    let mut lost = 0;
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), dir.path());
        let cut = end - 1 - rng.below(4096.min(end as u64 - 1)) as usize;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("0.jnl"))
            .unwrap();
        file.set_len(cut as u64).unwrap();
        drop(file);
        match Store::open(StoreConfig::new(dir.path())) {
            Ok(store) => {
                // Only the last apply batch was cut: every group commit is there.
                assert_eq!(
                    store.group(SHARDS[0]).unwrap().last_index().unwrap(),
                    LogIndex(BATCHES * PER_BATCH),
                    "round {round}"
                );
                assert_consistent_prefix(&store, &expected, BATCHES, round);
            }
            Err(error) => {
                assert_lost_writes(&error, round);
                lost += 1;
            }
        }
    }
    assert!(lost >= 5, "only {lost} cuts were refused");
}

/// A torn tail past the mark (what a crash leaves: batches whose fsync never returned, or
/// returned after the last mark was written) is not damage: the store opens with a consistent
/// prefix at or after the mark.
#[test]
fn a_torn_tail_past_the_mark_recovers_a_consistent_prefix() {
    let pristine = tempfile::tempdir().unwrap();
    populate_batches(pristine.path(), 0..BATCHES / 2);
    // The mark as a crash would leave it: written for the first half only.
    let early_mark = std::fs::read(pristine.path().join(ringkv_storage::MARK_FILE)).unwrap();
    let expected = populate_batches(pristine.path(), BATCHES / 2..BATCHES);
    let end = journal_end(pristine.path());
    let mut rng = Rng(0x70a2);
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), dir.path());
        std::fs::write(dir.path().join(ringkv_storage::MARK_FILE), &early_mark).unwrap();
        let cut = end - 1 - rng.below(4096.min(end as u64 - 1)) as usize;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("0.jnl"))
            .unwrap();
        file.set_len(cut as u64).unwrap();
        drop(file);
        let store = Store::open(StoreConfig::new(dir.path()))
            .unwrap_or_else(|error| panic!("round {round}: {error}"));
        assert_consistent_prefix(&store, &expected, BATCHES / 2, round);
        assert!(
            store.group(SHARDS[0]).unwrap().last_index().unwrap()
                >= LogIndex(BATCHES / 2 * PER_BATCH)
        );
    }
}

/// Flushes every keyspace of the store in `path` to table files.
fn flush_tables(path: &Path) {
    let db = fjall::Database::builder(path).open().unwrap();
    for name in [
        KEYSPACE_RAFT_LOG,
        KEYSPACE_RAFT_STATE,
        KEYSPACE_DATA,
        "meta",
    ] {
        let handle = db
            .keyspace(name, fjall::KeyspaceCreateOptions::default)
            .unwrap();
        handle.rotate_memtable_and_wait().unwrap();
    }
}

/// Damage in table files: fjall's block checksums catch flipped or zeroed bytes and missing
/// tables (errors, never wrong data); a table set rolled back to an older version (a disk that
/// lost writes, a data dir restored from an old copy) passes every checksum and is caught by the
/// mark.
#[test]
fn damaged_or_rolled_back_table_files_never_open_behind_the_mark() {
    let old = tempfile::tempdir().unwrap();
    populate_batches(old.path(), 0..BATCHES / 2);
    flush_tables(old.path());
    let pristine = tempfile::tempdir().unwrap();
    copy_dir(old.path(), pristine.path());
    let expected = populate_batches(pristine.path(), BATCHES / 2..BATCHES);
    flush_tables(pristine.path());

    let mut tables = Vec::new();
    files_under(
        &pristine.path().join("keyspaces"),
        &|p| p.components().any(|c| c.as_os_str() == "tables"),
        &mut tables,
    );
    assert!(tables.len() >= 4, "{tables:?}");
    for (round, table) in tables.iter().enumerate() {
        for damage in ["zeroed", "removed"] {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(pristine.path(), dir.path());
            let target = dir
                .path()
                .join(table.strip_prefix(pristine.path()).unwrap());
            if damage == "zeroed" {
                let mut bytes = std::fs::read(&target).unwrap();
                let at = bytes.len() / 3;
                bytes[at..at + 64].fill(0);
                std::fs::write(&target, bytes).unwrap();
            } else {
                std::fs::remove_file(&target).unwrap();
            }
            match Store::open(StoreConfig::new(dir.path())) {
                Ok(store) => assert!(
                    read_all(&store, &expected, ALL) > 0,
                    "{damage} {}: opened and read everything",
                    table.display()
                ),
                Err(error) => println!("{damage} {}: {error}", table.display()),
            }
        }
        let _ = round;
    }

    // Everything but the mark rolled back to the copy taken half-way.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(old.path(), dir.path());
    std::fs::copy(
        pristine.path().join(ringkv_storage::MARK_FILE),
        dir.path().join(ringkv_storage::MARK_FILE),
    )
    .unwrap();
    let error = Store::open(StoreConfig::new(dir.path())).err().unwrap();
    assert_lost_writes(&error, 0);
    assert!(
        matches!(error, Error::LostWrites { recovered, .. } if recovered == BATCHES / 2),
        "{error}"
    );
}

/// A data dir with group commits but no mark (deleted, or a dir assembled by hand) is refused;
/// an empty one gets a new mark.
#[test]
fn a_missing_mark_is_refused_when_data_exists() {
    let dir = tempfile::tempdir().unwrap();
    populate_batches(dir.path(), 0..2);
    let mark = dir.path().join(ringkv_storage::MARK_FILE);
    std::fs::remove_file(&mark).unwrap();
    let error = Store::open(StoreConfig::new(dir.path())).err().unwrap();
    assert!(matches!(error, Error::MarkMissing { .. }), "{error}");
    assert!(error.to_string().contains("durable.mark"), "{error}");
    // A mark with no valid slot is no better.
    std::fs::write(&mark, vec![0xa5u8; 8192]).unwrap();
    let error = Store::open(StoreConfig::new(dir.path())).err().unwrap();
    assert!(matches!(error, Error::MarkMissing { .. }), "{error}");

    let fresh = tempfile::tempdir().unwrap();
    drop(open(fresh.path()));
    assert!(fresh.path().join(ringkv_storage::MARK_FILE).exists());
    drop(open(fresh.path()));
}
