//! Removing a replica: deleting its data, sessions, log and state in bounded batches.
//!
//! fjall has no range delete, so removal scans and writes one tombstone per key,
//! `removal_batch_keys` per batch, on a background thread. A marker in `meta` records the
//! removal first, so a restart resumes it ([`Store::resume_removals`]); the marker and the
//! group's small state records go last, in one batch.

use crate::codec;
use crate::error::{Error, Result};
use crate::keys;
use crate::store::{Shared, Store};
use fjall::{Keyspace, PersistMode};
use ringkv_types::ShardId;
use ringkv_types::ring::Arc;
use std::ops::Bound;
use std::thread::JoinHandle;

/// A background removal in progress.
#[derive(Debug)]
pub struct RemovalHandle {
    shard: ShardId,
    thread: JoinHandle<Result<u64>>,
}

impl RemovalHandle {
    /// The shard being removed.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// Whether the removal has finished (successfully or not).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the removal; returns the number of keys deleted.
    ///
    /// # Errors
    /// The error that stopped the removal; [`Error::WriterStopped`] if its thread panicked.
    pub fn join(self) -> Result<u64> {
        self.thread.join().map_err(|_| Error::WriterStopped)?
    }
}

impl Store {
    /// Starts removing `shard`'s replica: its data in `arc` (none for an empty arc, e.g. a
    /// replica that never received a snapshot), its sessions, log and state. The
    /// marker is durable when this returns; the rest runs in bounded batches on a thread.
    ///
    /// The node must have stopped the group (no more writes, applies or reads of it) and must not
    /// place another replica on an overlapping arc until the handle finished.
    ///
    /// # Errors
    /// [`Error::Poisoned`]; fjall errors writing the marker; failing to spawn the thread.
    pub fn remove_replica(&self, shard: ShardId, arc: Arc) -> Result<RemovalHandle> {
        let mut batch = self
            .shared
            .db
            .batch()
            .durability(Some(PersistMode::SyncData));
        batch.insert(
            &self.shared.meta,
            keys::removal_key(shard),
            codec::encode(&arc),
        );
        self.shared.commit(batch)?;
        self.spawn_removal(shard, arc)
    }

    /// Removals recorded but not finished (a crash interrupted them).
    ///
    /// # Errors
    /// Corrupt markers; I/O.
    pub fn pending_removals(&self) -> Result<Vec<(ShardId, Arc)>> {
        let mut pending = Vec::new();
        for guard in self.shared.meta.prefix(keys::REMOVAL_PREFIX) {
            let (key, value) = guard.into_inner()?;
            let shard = key
                .get(keys::REMOVAL_PREFIX.len()..)
                .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
                .map(|bytes| ShardId(u64::from_be_bytes(bytes)))
                .ok_or(Error::MalformedKey {
                    keyspace: keys::KEYSPACE_META,
                    len: key.len(),
                })?;
            let arc: Arc = codec::decode(&value, self.shared.config.record_bytes_max)
                .map_err(|reason| Error::corrupt_record("removal", Some(shard), reason))?;
            pending.push((shard, arc));
        }
        Ok(pending)
    }

    /// Restarts every pending removal; call once after opening.
    ///
    /// # Errors
    /// As [`Store::pending_removals`] and spawning threads.
    pub fn resume_removals(&self) -> Result<Vec<RemovalHandle>> {
        self.pending_removals()?
            .into_iter()
            .map(|(shard, arc)| self.spawn_removal(shard, arc))
            .collect()
    }

    fn spawn_removal(&self, shard: ShardId, arc: Arc) -> Result<RemovalHandle> {
        let shared = self.shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("ringkv-remove-{shard}"))
            .spawn(move || remove(&shared, shard, arc))?;
        Ok(RemovalHandle { shard, thread })
    }
}

fn remove(shared: &Shared, shard: ShardId, arc: Arc) -> Result<u64> {
    let (lower, upper) = arc.storage_bounds();
    let upper = upper.map_or(Bound::Unbounded, Bound::Excluded);
    let data_range = (Bound::Included(lower), upper);
    let prefix = keys::shard_prefix(shard);
    let mut deleted = 0u64;
    // An empty arc (a replica that never received its data) deletes no data.
    while arc.width() > 0 {
        let count = delete_batch(shared, &shared.data, shared.data.range(data_range.clone()))?;
        deleted += count as u64;
        if count == 0 {
            break;
        }
    }
    for keyspace in [&shared.raft_log, &shared.raft_state] {
        loop {
            let count = delete_batch(shared, keyspace, keyspace.prefix(prefix))?;
            deleted += count as u64;
            if count == 0 {
                break;
            }
        }
    }
    shared.forget_group(shard);
    let mut batch = shared.db.batch().durability(Some(PersistMode::SyncData));
    // IMPORTANT: the marker goes only after every key is gone, so a crash resumes the removal.
    batch.remove(&shared.meta, keys::removal_key(shard));
    shared.commit(batch)?;
    Ok(deleted)
}

/// Deletes up to `removal_batch_keys` keys of `iter` in one batch; returns how many.
fn delete_batch(shared: &Shared, keyspace: &Keyspace, iter: fjall::Iter) -> Result<usize> {
    let limit = shared.config.removal_batch_keys;
    let mut keys = Vec::with_capacity(limit.min(4096));
    for guard in iter.take(limit) {
        // IMPORTANT: copied; a key read from a table shares that table's block, which its
        // tombstone would keep in memory until the memtable is flushed (see `write_buffer`).
        keys.push(guard.key()?.to_vec());
    }
    let count = keys.len();
    if count > 0 {
        let mut batch = shared.db.batch();
        for key in keys {
            batch.remove(keyspace, key);
        }
        shared.commit(batch)?;
    }
    Ok(count)
}
