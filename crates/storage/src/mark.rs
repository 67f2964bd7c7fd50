//! The durable high-water mark: `durable.mark` in the data dir, outside fjall's journal.
//!
//! Every group commit carries a `commit_seq` (one more than the previous commit's) in the `meta`
//! keyspace, in the same fjall batch. After the batch's fdatasync returned, a background marker
//! thread writes the newest committed `commit_seq` (with the shards it covered and their last
//! indices) into one slot of this file and fdatasyncs it, concurrently with the writer's next
//! journal commit, so the writer never waits for it. The mark is therefore always at or below
//! what the journal made durable, and lags it by about one group commit.
//!
//! fjall's journal recovery cuts a journal at the first batch it cannot decode. When journal
//! damage (or a lost table) drops acknowledged batches, the `commit_seq` recovered from the
//! database is below the mark and [`Store::open`](crate::Store::open) refuses to start with
//! [`Error::LostWrites`](crate::Error::LostWrites) instead of forgetting votes and entries.
//!
//! ```text
//! file  = 64 slots of 128 bytes, written round-robin (a torn write spoils one slot at most)
//! slot  = magic "RKM1" (4) ‖ commit_seq LE (8) ‖ count (1) ‖ more (1)
//!         ‖ count × (shard LE (8) ‖ last index LE (8)), count ≤ 6 ‖ zero padding
//!         ‖ crc32 LE (4) of the 124 bytes before it
//! ```
//! The newest mark is the valid slot with the highest `commit_seq`.

use crate::error::{Error, Result};
use ringkv_types::{LogIndex, ShardId};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

/// File name of the mark in the data dir.
pub const MARK_FILE: &str = "durable.mark";
const SLOTS: usize = 64;
const SLOT_BYTES: usize = 128;
const MAGIC: [u8; 4] = *b"RKM1";
/// Shards listed per slot; more are summarised by the `more` flag.
const SHARDS_PER_SLOT: usize = 6;
const CRC_AT: usize = SLOT_BYTES - 4;

/// One mark: a group commit known durable, and some shards it covered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Mark {
    /// The newest group commit known durable.
    pub commit_seq: u64,
    /// Shards written by the commits this mark covers (since the previous mark), with their
    /// last log index after them; at most [`SHARDS_PER_SLOT`].
    pub shards: Vec<(ShardId, LogIndex)>,
    /// Whether more shards were written than listed.
    pub more: bool,
}

fn encode_slot(mark: &Mark) -> [u8; SLOT_BYTES] {
    let mut slot = [0u8; SLOT_BYTES];
    slot[..4].copy_from_slice(&MAGIC);
    slot[4..12].copy_from_slice(&mark.commit_seq.to_le_bytes());
    let count = mark.shards.len().min(SHARDS_PER_SLOT);
    slot[12] = count as u8;
    slot[13] = u8::from(mark.more || mark.shards.len() > SHARDS_PER_SLOT);
    for (n, (shard, index)) in mark.shards.iter().take(count).enumerate() {
        let at = 14 + n * 16;
        slot[at..at + 8].copy_from_slice(&shard.get().to_le_bytes());
        slot[at + 8..at + 16].copy_from_slice(&index.get().to_le_bytes());
    }
    let crc = crc32fast::hash(&slot[..CRC_AT]);
    slot[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    slot
}

fn decode_slot(slot: &[u8]) -> Option<Mark> {
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(slot.get(at..at + 8)?.try_into().ok()?))
    };
    if slot.len() != SLOT_BYTES || slot.get(..4)? != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(slot.get(CRC_AT..)?.try_into().ok()?);
    if crc != crc32fast::hash(slot.get(..CRC_AT)?) {
        return None;
    }
    let count = usize::from(*slot.get(12)?);
    if count > SHARDS_PER_SLOT {
        return None;
    }
    let shards = (0..count)
        .map(|n| {
            let at = 14 + n * 16;
            Some((ShardId(u64_at(at)?), LogIndex(u64_at(at + 8)?)))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Mark {
        commit_seq: u64_at(4)?,
        shards,
        more: *slot.get(13)? != 0,
    })
}

/// Reads the newest mark in `dir`: `Ok(None)` when the file does not exist.
///
/// # Errors
/// [`Error::MarkMissing`] when the file exists but holds no valid slot; I/O.
pub(crate) fn read(dir: &Path) -> Result<Option<Mark>> {
    let path = dir.join(MARK_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Error::Io(error)),
    };
    bytes
        .chunks(SLOT_BYTES)
        .filter_map(decode_slot)
        .max_by_key(|mark| mark.commit_seq)
        .map(Some)
        .ok_or_else(|| Error::MarkMissing {
            path,
            reason: format!("none of its slots is valid ({} bytes)", bytes.len()),
        })
}

/// Creates the mark file holding `mark` in every slot, durably (file and directory fsynced).
pub(crate) fn create(dir: &Path, mark: &Mark) -> Result<()> {
    let path = dir.join(MARK_FILE);
    let temporary = dir.join(format!("{MARK_FILE}.new"));
    let slot = encode_slot(mark);
    let mut bytes = Vec::with_capacity(SLOTS * SLOT_BYTES);
    for _ in 0..SLOTS {
        bytes.extend_from_slice(&slot);
    }
    let file = File::create(&temporary)?;
    file.write_all_at(&bytes, 0)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[derive(Default)]
struct Pending {
    /// The newest commit not yet in the file.
    commit_seq: Option<u64>,
    /// Shards written since the last mark written, with their last index.
    shards: BTreeMap<ShardId, LogIndex>,
    /// The last mark the thread made durable.
    written: u64,
    stop: bool,
    /// Set when writing the mark failed; the store is poisoned by the caller's callback.
    failed: Option<String>,
}

struct Inner {
    pending: Mutex<Pending>,
    wake: Condvar,
}

/// The marker thread. Dropping it writes the last pending mark and joins the thread.
pub(crate) struct Marker {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl Marker {
    /// Starts the thread appending to the mark file in `dir` (which [`create`] or an earlier
    /// run made). `on_error` runs once if a write or fsync of the mark fails.
    pub fn spawn(
        dir: &Path,
        written: u64,
        on_error: impl FnOnce(&std::io::Error) + Send + 'static,
    ) -> Result<Marker> {
        let path = dir.join(MARK_FILE);
        let file = OpenOptions::new().write(true).open(&path)?;
        let inner = Arc::new(Inner {
            pending: Mutex::new(Pending {
                written,
                ..Pending::default()
            }),
            wake: Condvar::new(),
        });
        let thread_inner = inner.clone();
        let thread = std::thread::Builder::new()
            .name("ringkv-storage-mark".into())
            .spawn(move || run(&thread_inner, &file, on_error))?;
        Ok(Marker {
            inner,
            thread: Some(thread),
            path,
        })
    }

    /// Records that group commit `commit_seq`, which wrote `groups`, is durable. Never blocks on
    /// I/O.
    pub fn advance(&self, commit_seq: u64, groups: &[(ShardId, LogIndex)]) {
        let mut pending = self
            .inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        pending.commit_seq = Some(commit_seq);
        for (shard, index) in groups {
            pending.shards.insert(*shard, *index);
        }
        drop(pending);
        self.inner.wake.notify_one();
    }

    /// Blocks until every commit passed to [`Marker::advance`] is in the file (for tests).
    pub fn flush(&self) -> std::result::Result<u64, String> {
        let mut pending = self
            .inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(reason) = &pending.failed {
                return Err(format!("{}: {reason}", self.path.display()));
            }
            if pending.commit_seq.is_none() {
                return Ok(pending.written);
            }
            pending = self
                .inner
                .wake
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stop = true;
        self.inner.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(inner: &Inner, file: &File, on_error: impl FnOnce(&std::io::Error)) {
    let mut on_error = Some(on_error);
    let mut next_slot = 0usize;
    loop {
        let mark = {
            let mut pending = inner.pending.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if pending.failed.is_none()
                    && let Some(commit_seq) = pending.commit_seq
                {
                    let shards = std::mem::take(&mut pending.shards);
                    break Mark {
                        commit_seq,
                        more: shards.len() > SHARDS_PER_SLOT,
                        shards: shards.into_iter().take(SHARDS_PER_SLOT).collect(),
                    };
                }
                if pending.stop {
                    return;
                }
                pending = inner
                    .wake
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        let slot = encode_slot(&mark);
        let offset = (next_slot * SLOT_BYTES) as u64;
        next_slot = (next_slot + 1) % SLOTS;
        // IMPORTANT: the mark may only name commits whose journal fsync already returned
        // (`advance` is called after it), so it never runs ahead of what recovery can find.
        let result = file
            .write_all_at(&slot, offset)
            .and_then(|()| file.sync_data());
        let mut pending = inner.pending.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(()) => {
                pending.written = mark.commit_seq;
                if pending.commit_seq == Some(mark.commit_seq) {
                    pending.commit_seq = None;
                }
            }
            Err(error) => {
                pending.failed = Some(error.to_string());
                pending.commit_seq = None;
                if let Some(on_error) = on_error.take() {
                    on_error(&error);
                }
            }
        }
        drop(pending);
        inner.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_reject_damage() {
        let mark = Mark {
            commit_seq: 77,
            shards: vec![(ShardId(3), LogIndex(9)), (ShardId(u64::MAX), LogIndex(1))],
            more: true,
        };
        let slot = encode_slot(&mark);
        assert_eq!(decode_slot(&slot), Some(mark));
        for at in 0..SLOT_BYTES {
            let mut bad = slot;
            bad[at] ^= 0x04;
            assert_eq!(decode_slot(&bad), None, "flip at {at}");
        }
        assert_eq!(decode_slot(&slot[..SLOT_BYTES - 1]), None);
    }

    #[test]
    fn the_newest_valid_slot_wins_and_torn_slots_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path(), &Mark::default()).unwrap();
        let marker = Marker::spawn(dir.path(), 0, |_| {}).unwrap();
        for seq in 1..=100 {
            marker.advance(seq, &[(ShardId(1), LogIndex(seq))]);
            if seq % 10 == 0 {
                // One mark per ten commits: the thread coalesces the others.
                assert_eq!(marker.flush().unwrap(), seq);
            }
        }
        drop(marker);
        assert_eq!(read(dir.path()).unwrap().unwrap().commit_seq, 100);
        // Spoil the slot holding 100: an older mark is still a valid lower bound.
        let path = dir.path().join(MARK_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let newest = bytes
            .chunks(SLOT_BYTES)
            .position(|s| decode_slot(s).is_some_and(|m| m.commit_seq == 100))
            .unwrap();
        bytes[newest * SLOT_BYTES + 5] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let older = read(dir.path()).unwrap().unwrap().commit_seq;
        assert!((10..100).contains(&older), "{older}");
        std::fs::write(&path, vec![0u8; bytes.len()]).unwrap();
        assert!(matches!(read(dir.path()), Err(Error::MarkMissing { .. })));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
    }
}
