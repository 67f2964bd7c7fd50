//! A full disk on a real filesystem: a size-limited tmpfs mounted by the test (root only).
//! Without permission to mount, the tests are skipped with a message, except under `CI=true`,
//! where they fail.
#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "test")]

use bytes::Bytes;
use ringkv_raft::Storage;
use ringkv_storage::{Error, Store, StoreConfig, WriteBatchBuilder};
use ringkv_types::raft::{Entry, EntryPayload, HardState};
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

fn payload(shard: ShardId, index: u64) -> Bytes {
    let mut bytes = format!("{shard}/{index}/").into_bytes();
    bytes.resize(10_000, b'.');
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
