//! Step 3 of an install (see `snapshot_install`): the writer moves a marked install's staged
//! data into the live range in bounded batches; at open, unfinished moves are redone and
//! unmarked staging data is deleted.

use crate::codec;
use crate::error::{Error, Result};
use crate::keys;
use crate::snapshot_install::{InstallFault, InstallMarker};
use crate::store::Shared;
use fjall::{PersistMode, Readable};
use std::cmp::Ordering as CmpOrdering;
use std::ops::Bound;

impl Shared {
    fn check_fault(&self, at: InstallFault) -> Result<()> {
        let fault = *self
            .install_fault
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if fault == Some(at) {
            // Imitates a crash: nothing more may be written by this process.
            self.poison();
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    /// Moves a marked install's staged data into the live range and removes the marker (see
    /// the module docs). Idempotent: after a crash at any point it is simply run again.
    pub(crate) fn finish_install(&self, marker: &InstallMarker) -> Result<()> {
        self.check_fault(InstallFault::AfterMarker)?;
        let budget = self.config.snapshot_chunk_bytes.max(1);
        let mut moved = 0u64;
        let mut batch = self.db.batch();
        let mut bytes = 0usize;
        let mut flush = |batch: &mut fjall::OwnedWriteBatch, bytes: &mut usize| -> Result<()> {
            let full = std::mem::replace(batch, self.db.batch());
            self.commit(full)?;
            *bytes = 0;
            moved += 1;
            self.check_fault(InstallFault::AfterMoveBatches(moved))
        };
        // Data: merge the live range with the staged pairs (both ascending by storage key), one
        // window per move batch. Each window reads through its own fjall snapshot and starts
        // after the last key the window before it handled. IMPORTANT: not one snapshot for the
        // whole move: fjall keeps every memtable written while a snapshot is open in memory
        // (its version history is kept back to the oldest snapshot), so memory would grow with
        // the shard (2.1 GB for a 1 GiB shard). Nothing else writes the shard's range or this
        // staging id meanwhile (the writer runs the move; the shard applies nothing until its
        // install is answered), so the windows see what one snapshot would.
        let (lower, upper) = marker.arc.storage_bounds();
        let staged_prefix = keys::staged_data_prefix(marker.staging);
        let mut resume: Option<Vec<u8>> = None;
        'windows: loop {
            let snapshot = self.db.snapshot();
            let live_lower = match &resume {
                Some(key) => Bound::Excluded(key.clone()),
                None => Bound::Included(lower.clone()),
            };
            let live_upper = upper.clone().map_or(Bound::Unbounded, Bound::Excluded);
            let mut live = snapshot.range(&self.data, (live_lower, live_upper));
            let staged_lower = match &resume {
                Some(key) => Bound::Excluded([&staged_prefix[..], key].concat()),
                None => Bound::Included(staged_prefix.to_vec()),
            };
            let mut staged = snapshot.range(&self.staging, (staged_lower, Bound::Unbounded));
            let mut live_key = next_key(&mut live)?;
            let mut staged_pair = next_pair_within(&mut staged, &staged_prefix)?;
            loop {
                let order = match (&live_key, &staged_pair) {
                    (None, None) => break 'windows,
                    (Some(_), None) => CmpOrdering::Less,
                    (None, Some(_)) => CmpOrdering::Greater,
                    (Some(live), Some((staged, _))) => live
                        .as_ref()
                        .cmp(staged.get(staged_prefix.len()..).unwrap_or_default()),
                };
                let handled = if order == CmpOrdering::Less {
                    let key = live_key.take().map(|key| key.to_vec()).unwrap_or_default();
                    bytes += key.len();
                    batch.remove(&self.data, key.clone());
                    live_key = next_key(&mut live)?;
                    key
                } else {
                    if order == CmpOrdering::Equal {
                        live_key = next_key(&mut live)?;
                    }
                    let (key, value) = staged_pair.take().unwrap_or_default();
                    let key = key.get(staged_prefix.len()..).unwrap_or_default().to_vec();
                    bytes += key.len() + value.len();
                    // IMPORTANT: copied (`owned`): the staged value shares its table block.
                    batch.insert(&self.data, key.clone(), owned(&value));
                    staged_pair = next_pair_within(&mut staged, &staged_prefix)?;
                    key
                };
                if bytes >= budget {
                    flush(&mut batch, &mut bytes)?;
                    // Every key up to `handled` is moved, in both streams: go on after it.
                    resume = Some(handled);
                    continue 'windows;
                }
            }
        }
        let snapshot = self.db.snapshot();
        // Sessions: the same merge over the shard's session records.
        let mut live = snapshot.prefix(&self.raft_state, keys::session_prefix(marker.shard));
        let mut staged =
            snapshot.prefix(&self.staging, keys::staged_session_prefix(marker.staging));
        let mut live_key = next_key(&mut live)?;
        let mut staged_pair = next_pair(&mut staged)?;
        loop {
            let live_id = match &live_key {
                Some(key) => Some(keys::parse_session_key(key)?),
                None => None,
            };
            let staged_id = match &staged_pair {
                Some((key, _)) => Some(keys::parse_staged_session_key(key)?),
                None => None,
            };
            let order = match (live_id, staged_id) {
                (None, None) => break,
                (Some(_), None) => CmpOrdering::Less,
                (None, Some(_)) => CmpOrdering::Greater,
                (Some(live), Some(staged)) => live.cmp(&staged),
            };
            if order == CmpOrdering::Less {
                if let Some(key) = live_key.take() {
                    batch.remove(&self.raft_state, owned(&key));
                    bytes += 32;
                }
                live_key = next_key(&mut live)?;
            } else {
                if order == CmpOrdering::Equal {
                    live_key = next_key(&mut live)?;
                }
                if let (Some((_, value)), Some(id)) = (staged_pair.take(), staged_id) {
                    bytes += 32 + value.len();
                    batch.insert(
                        &self.raft_state,
                        keys::session_key(marker.shard, id).to_vec(),
                        owned(&value),
                    );
                }
                staged_pair = next_pair(&mut staged)?;
            }
            if bytes >= budget {
                flush(&mut batch, &mut bytes)?;
            }
        }
        if bytes > 0 {
            flush(&mut batch, &mut bytes)?;
        }
        self.check_fault(InstallFault::BeforeFinal)?;
        // IMPORTANT: the marker goes only once every moved key is in the journal before it; the
        // batch is synced, so a recovered store never redoes a move whose staging is gone.
        let mut last = self.db.batch().durability(Some(PersistMode::SyncData));
        last.remove(&self.staging, keys::marker_key(marker.shard).to_vec());
        self.commit(last)?;
        // The shard's session table changed under apply: it reloads on the next apply.
        self.sessions.forget(marker.shard);
        delete_staging(self, marker.staging)
    }

    /// At open: finishes every marked install, then deletes staging data nobody marked.
    pub(crate) fn recover_installs(&self) -> Result<()> {
        let mut markers = Vec::new();
        for guard in self.staging.prefix(keys::MARKER_PREFIX) {
            let (_, value) = guard.into_inner()?;
            let marker: InstallMarker = codec::decode(&value, self.config.record_bytes_max)
                .map_err(|reason| Error::corrupt_record("install_marker", None, reason))?;
            markers.push(marker);
        }
        for marker in &markers {
            self.finish_install(marker)?;
        }
        let mut batch = self.db.batch();
        let mut count = 0usize;
        for guard in self.staging.prefix(keys::STAGED_PREFIX) {
            batch.remove(&self.staging, owned(&guard.key()?));
            count += 1;
            if count >= self.config.removal_batch_keys {
                self.commit(std::mem::replace(&mut batch, self.db.batch()))?;
                count = 0;
            }
        }
        if count > 0 {
            self.commit(batch)?;
        }
        Ok(())
    }
}

/// A copy of a key or value read from the store, for writing it again. IMPORTANT: a slice
/// read from a table shares that table's whole block (a 4 KiB block, or one 128 KiB value);
/// written as is into a memtable (a moved value, a tombstone for a read key), it keeps the
/// block in memory until that memtable is flushed, unseen by the write buffer's accounting,
/// which counts only the slice. Deleting a 256 MiB staging area of 128 KiB values held
/// 250 MB of blocks that way (heaptrack, `examples/install_rss.rs`).
fn owned(slice: &fjall::Slice) -> Vec<u8> {
    slice.to_vec()
}

/// The next key of an iterator.
fn next_key(iter: &mut fjall::Iter) -> Result<Option<fjall::Slice>> {
    match iter.next() {
        Some(guard) => Ok(Some(guard.key()?)),
        None => Ok(None),
    }
}

/// The next key and value of an iterator.
fn next_pair(iter: &mut fjall::Iter) -> Result<Option<(fjall::Slice, fjall::Slice)>> {
    match iter.next() {
        Some(guard) => Ok(Some(guard.into_inner()?)),
        None => Ok(None),
    }
}

/// The next key and value of an iterator, if the key starts with `prefix` (the iterator runs
/// past the prefix's end).
fn next_pair_within(
    iter: &mut fjall::Iter,
    prefix: &[u8],
) -> Result<Option<(fjall::Slice, fjall::Slice)>> {
    Ok(next_pair(iter)?.filter(|(key, _)| key.starts_with(prefix)))
}

/// Deletes one install's staging data in bounded batches.
pub(crate) fn delete_staging(shared: &Shared, staging: u64) -> Result<()> {
    let mut batch = shared.db.batch();
    let mut count = 0usize;
    for guard in shared.staging.prefix(keys::staging_prefix(staging)) {
        batch.remove(&shared.staging, owned(&guard.key()?));
        count += 1;
        if count >= shared.config.removal_batch_keys {
            shared.commit_staging(std::mem::replace(&mut batch, shared.db.batch()))?;
            count = 0;
        }
    }
    if count > 0 {
        shared.commit_staging(batch)?;
    }
    Ok(())
}
