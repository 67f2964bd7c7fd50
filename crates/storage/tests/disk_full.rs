//! A full disk on a real filesystem: a size-limited tmpfs mounted by the test (root only).
//! Without permission to mount, the tests are skipped with a message, except under `CI=true`,
//! where they fail.
#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "test")]

use bytes::Bytes;
use ringkv_raft::Storage;
use ringkv_storage::{
    AppliedState, Command as StoreCommand, Error, Operation, SessionRequest, Store, StoreConfig,
    WriteBatchBuilder,
};
use ringkv_types::raft::ConfState;
use ringkv_types::raft::{Entry, EntryPayload, HardState};
use ringkv_types::ring::Arc;
use ringkv_types::{LogIndex, NodeId, ShardId, Term};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of a given size, unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    /// Mounts a tmpfs of `mib` MiB, or returns `None` (after saying why) when mounting is not
    /// permitted outside CI.
    fn mount(mib: u64) -> Option<SmallFs> {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output();
        let reason = match output {
            Ok(output) if output.status.success() => return Some(SmallFs { dir }),
            Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_string(),
            Err(error) => error.to_string(),
        };
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "cannot mount a tmpfs under CI: {reason}"
        );
        println!("SKIPPED: cannot mount a tmpfs ({reason}); run as root to test a full disk");
        None
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn resize(&self, mib: u64) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

const SHARDS: [ShardId; 3] = [ShardId(1), ShardId(2), ShardId(3)];

/// 10 KB that do not compress (table files then take as much room as the journal).
fn payload(shard: ShardId, index: u64) -> Bytes {
    let mut bytes = format!("{shard}/{index}/").into_bytes();
    let mut state = shard.get().wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ index;
    while bytes.len() < 10_000 {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        bytes.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    bytes.truncate(10_000);
    Bytes::from(bytes)
}

/// Four 10 KB entries per shard from `first`, and a hard state committing them.
fn batch(first: u64) -> WriteBatchBuilder {
    let mut batch = WriteBatchBuilder::new();
    for shard in SHARDS {
        let entries: Vec<Entry> = (first..first + 4)
            .map(|index| Entry {
                term: Term(1),
                index: LogIndex(index),
                payload: EntryPayload::Normal(payload(shard, index)),
            })
            .collect();
        batch.append(shard, &entries).unwrap();
        batch.set_hard_state(
            shard,
            HardState {
                term: Term(1),
                vote: NodeId(1),
                commit: LogIndex(first + 3),
            },
        );
    }
    batch
}

fn verify(store: &Store, acknowledged: u64) {
    for shard in SHARDS {
        let group = store.group(shard).unwrap();
        let last = group.last_index().unwrap().get();
        assert!(last >= acknowledged, "{shard}: {last} < {acknowledged}");
        assert!(group.hard_state().commit.get() >= acknowledged);
        let entries = group
            .entries(LogIndex(1), LogIndex(acknowledged + 1), u64::MAX)
            .unwrap();
        assert_eq!(entries.len() as u64, acknowledged);
        for entry in entries {
            assert_eq!(
                entry.payload,
                EntryPayload::Normal(payload(shard, entry.index.get()))
            );
        }
    }
}

fn store_in(path: PathBuf, reserve: u64) -> Store {
    let mut config = StoreConfig::new(path);
    config.space_reserve_bytes = reserve;
    config.cache_bytes = 4 << 20;
    Store::open(config).unwrap()
}

/// Group commits until the filesystem is full: the failing commit says "no space" (not a bare
/// "poisoned"), every later write is refused, nothing acknowledged is lost, and once the
/// filesystem has room again the store opens (no false journal-damage alarm) and accepts writes.
#[test]
fn disk_full_during_group_commit_loses_no_acknowledged_write() {
    let Some(fs) = SmallFs::mount(24) else {
        return;
    };
    let data = fs.path().join("data");
    let store = store_in(data.clone(), 4 << 20);
    let mut acknowledged = 0;
    let mut alarm_before_full = false;
    let error = loop {
        match store.write(batch(acknowledged + 1)) {
            Ok(_) => acknowledged += 4,
            Err(error) => break error,
        }
        alarm_before_full |= store.space(true).unwrap().alarm;
        assert!(acknowledged < 100_000, "the filesystem never filled");
    };
    println!("full after {acknowledged} entries per shard: {error}");
    assert!(
        matches!(error, Error::NoSpace { .. }),
        "expected NoSpace, got {error}"
    );
    assert!(error.to_string().contains("no space left"), "{error}");
    assert!(error.is_fatal());
    assert!(
        alarm_before_full,
        "the alarm did not rise before the disk was full"
    );
    assert!(matches!(
        store.write(batch(acknowledged + 1)),
        Err(Error::Poisoned)
    ));
    // Reads still work on the poisoned store.
    verify(&store, acknowledged);
    drop(store);

    fs.resize(64);
    let store = store_in(data.clone(), 4 << 20);
    verify(&store, acknowledged);
    let last = store.group(SHARDS[0]).unwrap().last_index().unwrap().get();
    store.write(batch(last + 1)).unwrap();
    drop(store);
    let store = store_in(data, 4 << 20);
    verify(&store, last + 4);
}

/// The alarm rises when free space falls under the reserve and clears once it is back above
/// the reserve plus a quarter.
#[test]
fn the_space_alarm_rises_below_the_reserve_and_clears_when_space_returns() {
    let Some(fs) = SmallFs::mount(32) else {
        return;
    };
    let store = store_in(fs.path().join("data"), 8 << 20);
    let status = store.space(true).unwrap();
    assert!(!status.alarm, "{status:?}");
    assert!(status.total_bytes <= 32 << 20 && status.free_bytes > 8 << 20);
    // Fill up to 6 MiB free.
    let filler = fs.path().join("filler");
    let fill = status.free_bytes - (6 << 20);
    std::fs::write(&filler, vec![1u8; fill as usize]).unwrap();
    let status = store.space(true).unwrap();
    assert!(status.alarm, "{status:?}");
    // Reads and writes of the store itself are not refused by the alarm (the node refuses
    // client writes); group commits still work inside the reserve.
    store.write(batch(1)).unwrap();
    // 9 MiB free: above the reserve but below reserve + 1/4: still up.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap();
    let free = store.space(true).unwrap().free_bytes;
    file.set_len(fill - ((9 << 20) - free)).unwrap();
    drop(file);
    let status = store.space(true).unwrap();
    assert!(status.free_bytes > 8 << 20, "{status:?}");
    assert!(status.alarm, "flapped: {status:?}");
    std::fs::remove_file(&filler).unwrap();
    let status = store.space(true).unwrap();
    assert!(!status.alarm, "{status:?}");
}

/// Leaves `free` bytes free on the filesystem of `fs` with a filler file (returned).
fn fill_to(fs: &SmallFs, store: &Store, free: u64) -> PathBuf {
    let filler = fs.path().join("filler");
    let now = store.space(true).unwrap().free_bytes;
    assert!(now > free, "only {now} bytes free, wanted {free}");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&filler)
        .unwrap();
    // Written, not sparse: tmpfs counts only written pages.
    let chunk = vec![3u8; 1 << 20];
    let mut left = now - free;
    let mut writer = std::io::BufWriter::new(file);
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        std::io::Write::write_all(&mut writer, &chunk[..n]).unwrap();
        left -= n as u64;
    }
    drop(writer);
    filler
}

/// Writes batches of `batch` until `acknowledged` reaches `target` entries per shard.
fn write_until(store: &Store, acknowledged: &mut u64, target: u64) {
    while *acknowledged < target {
        store.write(batch(*acknowledged + 1)).unwrap();
        *acknowledged += 4;
    }
}

/// The shard a snapshot is installed into (the group-commit shards hold only logs).
const INSTALLED: ShardId = ShardId(9);

/// A source store whose shard [`INSTALLED`] holds `values` incompressible 10 KB values over the
/// whole ring, applied at index 10; returns the keys.
fn snapshot_source(path: &Path, values: u64) -> (Store, Vec<Bytes>) {
    let store = Store::open(StoreConfig::new(path)).unwrap();
    let mut keys = Vec::new();
    for (index, start) in (1..).zip((0..values).step_by(100)) {
        let operations = (start..(start + 100).min(values))
            .map(|n| {
                let key = Bytes::from(format!("snap-{n}"));
                keys.push(key.clone());
                Operation::Put {
                    key,
                    value: payload(INSTALLED, n),
                }
            })
            .collect();
        let command = StoreCommand {
            session: Some(SessionRequest {
                session: 1,
                sequence: index,
            }),
            operations,
        };
        let applied = AppliedState {
            index: LogIndex(index),
            term: Term(1),
        };
        let conf = ConfState::with_voters([NodeId(1)]);
        store
            .apply(INSTALLED, &[command], applied, Some(&conf))
            .unwrap();
    }
    (store, keys)
}

/// A snapshot install (one group commit of 12 MB) on a filesystem with 6 MiB free: it fails
/// with `NoSpace`, nothing of it is visible, every acknowledged write is still readable; after
/// freeing space a restart finds the acknowledged writes and no half-installed snapshot, and
/// the install then succeeds.
#[test]
fn disk_full_during_snapshot_install_loses_nothing_and_the_install_succeeds_after_a_restart() {
    let Some(fs) = SmallFs::mount(40) else {
        return;
    };
    let source_dir = tempfile::tempdir().unwrap();
    let (source, keys) = snapshot_source(source_dir.path(), 1200);
    let chunks: Vec<Vec<u8>> = source
        .snapshot_chunks(INSTALLED, Arc::FULL)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let data = fs.path().join("data");
    let store = store_in(data.clone(), 4 << 20);
    let mut acknowledged = 0;
    write_until(&store, &mut acknowledged, 40);
    let filler = fill_to(&fs, &store, 6 << 20);

    let error = store
        .install_snapshot(INSTALLED, chunks.iter().cloned().map(Ok::<_, Error>))
        .unwrap_err();
    println!("install on a full disk: {error}");
    assert!(
        matches!(error, Error::NoSpace { .. }),
        "expected NoSpace, got {error}"
    );
    assert!(matches!(
        store.write(batch(acknowledged + 1)),
        Err(Error::Poisoned)
    ));
    verify(&store, acknowledged);
    assert_eq!(store.applied(INSTALLED).unwrap(), AppliedState::default());
    assert_eq!(store.get(&keys[0]).unwrap(), None);
    drop(store);

    std::fs::remove_file(&filler).unwrap();
    let store = store_in(data.clone(), 4 << 20);
    verify(&store, acknowledged);
    assert_eq!(store.applied(INSTALLED).unwrap(), AppliedState::default());
    assert_eq!(store.get(&keys[0]).unwrap(), None);
    store
        .install_snapshot(INSTALLED, chunks.iter().cloned().map(Ok::<_, Error>))
        .unwrap();
    let target = acknowledged + 4;
    write_until(&store, &mut acknowledged, target);
    drop(store);
    let store = store_in(data, 4 << 20);
    verify(&store, acknowledged);
    assert_eq!(store.applied(INSTALLED).unwrap().index, LogIndex(12));
    for (n, key) in keys.iter().enumerate() {
        assert_eq!(
            store.get(key).unwrap(),
            Some(payload(INSTALLED, n as u64)),
            "{key:?}"
        );
    }
}

/// Waits (at most 30 s) until the background work filled the filesystem (under 1 MiB free),
/// then a little more, so the failing worker has stopped the database before the next write
/// (which would otherwise fail on its own journal write, a plain `NoSpace` too).
fn wait_until_full(store: &Store) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store.space(true).unwrap().free_bytes >= 1 << 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "the background flush or compaction did not fill the filesystem"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
}

/// Waits (at most 30 s) for fjall's background workers to fail, writing one batch at a time:
/// every batch that succeeds is acknowledged. Returns the first error.
fn write_until_stopped(store: &Store, acknowledged: &mut u64) -> Error {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match store.write(batch(*acknowledged + 1)) {
            Ok(_) => *acknowledged += 4,
            Err(error) => return error,
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the background flush or compaction did not fail"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Reopens the store after freeing space: every acknowledged write is there, and it takes
/// writes again (and keeps them across one more restart).
fn recovers_after_freeing(filler: &Path, data: &Path, acknowledged: u64) {
    std::fs::remove_file(filler).unwrap();
    let store = store_in(data.to_path_buf(), 4 << 20);
    verify(&store, acknowledged);
    let last = store.group(SHARDS[0]).unwrap().last_index().unwrap().get();
    store.write(batch(last + 1)).unwrap();
    store.rotate_memtables().unwrap();
    store.write(batch(last + 5)).unwrap();
    drop(store);
    let store = store_in(data.to_path_buf(), 4 << 20);
    verify(&store, last + 8);
    println!(
        "{} bytes free after recovery",
        store.space(true).unwrap().free_bytes
    );
}

/// A memtable flush (fjall writes ~10 MB of table files in the background) on a filesystem
/// with 4 MiB free: fjall stops; the next write fails with `NoSpace` (not fjall's bare
/// `Poisoned`), nothing acknowledged is lost, and a restart after freeing space recovers
/// (the journal still holds what the failed flush could not write).
#[test]
fn disk_full_during_a_memtable_flush_reports_no_space_and_recovers_after_a_restart() {
    let Some(fs) = SmallFs::mount(48) else {
        return;
    };
    let data = fs.path().join("data");
    let store = store_in(data.clone(), 4 << 20);
    let mut acknowledged = 0;
    write_until(&store, &mut acknowledged, 320);
    let filler = fill_to(&fs, &store, 4 << 20);
    store.rotate_memtables().unwrap();
    wait_until_full(&store);
    let error = write_until_stopped(&store, &mut acknowledged);
    println!("after a flush on a full disk: {error}");
    assert!(
        matches!(error, Error::NoSpace { .. }),
        "expected NoSpace, got {error}"
    );
    assert!(error.to_string().contains("flush or compaction"), "{error}");
    verify(&store, acknowledged);
    drop(store);
    recovers_after_freeing(&filler, &data, acknowledged);
}

/// Five memtable flushes (tables of ~3.6 MB: the first moves to the last level, four stay in
/// level 0), with room for each flush but not for the compaction the fifth triggers (fjall
/// merges level 0 with what it overlaps below once level 0 holds four tables): the
/// compaction fails in the background, fjall stops, the next write fails with `NoSpace`,
/// nothing acknowledged is lost, and a restart after freeing space recovers.
#[test]
fn disk_full_during_compaction_reports_no_space_and_recovers_after_a_restart() {
    let Some(fs) = SmallFs::mount(64) else {
        return;
    };
    let data = fs.path().join("data");
    let store = store_in(data.clone(), 4 << 20);
    let mut acknowledged = 0;
    // The first table moves to the last level as it is; the next three stay in level 0.
    for round in 1..=4 {
        write_until(&store, &mut acknowledged, round * 120);
        store.rotate_memtables().unwrap();
        // Let the flush finish while there is room.
        std::thread::sleep(std::time::Duration::from_millis(1500));
    }
    write_until(&store, &mut acknowledged, 5 * 120);
    // Room for the fourth table (~3.6 MB) but not for the level-0 compaction (~14 MB).
    let filler = fill_to(&fs, &store, 8 << 20);
    store.rotate_memtables().unwrap();
    wait_until_full(&store);
    let error = write_until_stopped(&store, &mut acknowledged);
    println!("after a compaction on a full disk: {error}");
    assert!(
        matches!(error, Error::NoSpace { .. }),
        "expected NoSpace, got {error}"
    );
    assert!(error.to_string().contains("flush or compaction"), "{error}");
    verify(&store, acknowledged);
    drop(store);
    recovers_after_freeing(&filler, &data, acknowledged);
}
