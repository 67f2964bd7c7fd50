//! What the store's threads share ([`Shared`]): the database, its keyspace handles, the
//! per-group caches, the poison flag and the space monitor, and the commit path every write
//! takes.

use crate::codec;
use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::group_state::{AppliedState, GroupState};
use crate::keys;
use crate::mark::Marker;
use crate::session_table::SessionTables;
use crate::space::SpaceMonitor;
use fjall::{Database, Keyspace};
use ringkv_types::raft::{ConfState, Entry, HardState, SnapshotMeta};
use ringkv_types::{LogIndex, ShardId};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Free space under which a database that fjall stopped (a background flush or compaction
/// failed) is reported as full, whatever the configured reserve.
const LOW_SPACE_BYTES: u64 = 16 << 20;

/// What the store's threads share: the database, keyspace handles and group caches.
pub(crate) struct Shared {
    /// Declared first so it is dropped first: its last mark is written while `db` still holds
    /// the directory lock.
    pub marker: Marker,
    /// The last group commit's sequence number (see [`mark`]).
    pub commit_seq: AtomicU64,
    pub db: Database,
    pub raft_log: Keyspace,
    pub raft_state: Keyspace,
    pub data: Keyspace,
    pub meta: Keyspace,
    /// Snapshots being installed (see `snapshot_install`).
    pub staging: Keyspace,
    /// The next staging id (ids are unique within a run; staging is empty after open).
    pub next_staging: AtomicU64,
    /// Staging ids of prepared snapshots dropped uninstalled, for the writer to delete.
    pub staging_garbage: Mutex<Vec<u64>>,
    /// Where an install stops to imitate a crash (tests).
    pub install_fault: Mutex<Option<crate::snapshot_install::InstallFault>>,
    pub config: StoreConfig,
    pub poisoned: Arc<AtomicBool>,
    pub space: SpaceMonitor,
    pub groups: Mutex<HashMap<ShardId, Arc<Mutex<GroupState>>>>,
    /// Each shard's session table in memory (see `session_table`).
    pub sessions: SessionTables,
    /// Test fault injection: this many of the next commits fail as if their fsync returned EIO
    /// (after the write reached the journal, like a real fsync error).
    #[cfg(test)]
    pub fail_fsyncs: AtomicU64,
}

/// Locks a group cache. The cache holds plain values that are replaced whole, so a panic
/// elsewhere while the lock was held cannot leave it half-updated; poisoning is ignored.
pub(crate) fn lock_group(state: &Mutex<GroupState>) -> std::sync::MutexGuard<'_, GroupState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Fails with [`Error::Poisoned`] once any write failed.
    pub fn check_writable(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    /// Marks the store unusable for writes, forever.
    pub fn poison(&self) {
        // IMPORTANT: after a failed commit or fsync the journal's durable contents are unknown;
        // no later write may be acknowledged (fsyncgate: a retried fsync can "succeed" after the
        // kernel dropped the dirty pages).
        self.poisoned.store(true, Ordering::Release);
    }

    /// Commits a fjall batch; any failure poisons the store.
    pub fn commit(&self, batch: fjall::OwnedWriteBatch) -> Result<()> {
        self.check_writable()?;
        batch.commit().map_err(|error| {
            self.poison();
            self.write_error(error)
        })?;
        #[cfg(test)]
        self.injected_fsync_failure()?;
        self.limit_write_buffer();
        Ok(())
    }

    /// Test fault injection: fails (and poisons the store) when a failure was injected with
    /// [`Shared::fail_fsyncs`].
    #[cfg(test)]
    pub fn injected_fsync_failure(&self) -> Result<()> {
        let injected = self
            .fail_fsyncs
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if injected {
            self.poison();
            let eio = std::io::Error::from_raw_os_error(rustix::io::Errno::IO.raw_os_error());
            return Err(self.write_error(fjall::Error::Io(eio)));
        }
        Ok(())
    }

    /// The error for a failed write: [`Error::NoSpace`] when the filesystem was full,
    /// [`Error::DiskFailed`] for any other I/O error. fjall reports a background flush or
    /// compaction that failed (for lack of space, typically: it writes whole table files) as a
    /// bare `Poisoned` on the next write, with the cause only in its log; that counts as
    /// [`Error::NoSpace`] when the filesystem is low on space (under the reserve, or 16 MiB).
    pub fn write_error(&self, error: fjall::Error) -> Error {
        if Error::is_storage_full(&error) {
            return Error::NoSpace {
                path: self.config.path.clone(),
                reason: Error::io_error_text(&error).unwrap_or_else(|| error.to_string()),
            };
        }
        if matches!(error, fjall::Error::Poisoned)
            && let Ok(space) = self.space.status(&self.config.path, true)
            && space.free_bytes < space.reserve_bytes.max(LOW_SPACE_BYTES)
        {
            return Error::NoSpace {
                path: self.config.path.clone(),
                reason: format!(
                    "fjall stopped after a background flush or compaction failed, with {} bytes \
                     free on the filesystem (its table files did not fit)",
                    space.free_bytes
                ),
            };
        }
        if let Some(reason) = Error::io_error_text(&error) {
            return Error::DiskFailed {
                path: self.config.path.clone(),
                reason,
            };
        }
        Error::Fjall(error)
    }

    /// The cache of `shard`, loading it from disk on first use.
    pub fn group(&self, shard: ShardId) -> Result<Arc<Mutex<GroupState>>> {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = groups.get(&shard) {
            return Ok(state.clone());
        }
        let state = Arc::new(Mutex::new(self.load_group(shard)?));
        groups.insert(shard, state.clone());
        Ok(state)
    }

    /// Forgets the caches of `shard` (after its replica was removed).
    pub fn forget_group(&self, shard: ShardId) {
        self.sessions.forget(shard);
        self.groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&shard);
    }

    /// Reads a `raft_state` record of `shard`.
    pub fn read_state<T: DeserializeOwned>(
        &self,
        shard: ShardId,
        kind: u8,
        record: &'static str,
    ) -> Result<Option<T>> {
        let Some(bytes) = self.raft_state.get(keys::state_key(shard, kind))? else {
            return Ok(None);
        };
        codec::decode(&bytes, self.config.record_bytes_max)
            .map(Some)
            .map_err(|reason| Error::corrupt_record(record, Some(shard), reason))
    }

    /// Decodes a `raft_log` value and checks it is the entry its key names.
    pub fn decode_entry(&self, shard: ShardId, index: LogIndex, bytes: &[u8]) -> Result<Entry> {
        let entry: Entry = codec::decode(bytes, self.config.record_bytes_max)
            .map_err(|reason| Error::corrupt_entry(shard, index, reason))?;
        if entry.index != index {
            return Err(Error::corrupt_entry(
                shard,
                index,
                format!("record holds index {}", entry.index),
            ));
        }
        Ok(entry)
    }

    /// Reads one log entry.
    pub fn read_entry(&self, shard: ShardId, index: LogIndex) -> Result<Option<Entry>> {
        match self.raft_log.get(keys::log_key(shard, index))? {
            Some(bytes) => self.decode_entry(shard, index, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Rebuilds a group's cache from disk, checking that the pieces agree.
    fn load_group(&self, shard: ShardId) -> Result<GroupState> {
        let snapshot: SnapshotMeta = self
            .read_state(shard, keys::KIND_SNAPSHOT_META, "snapshot_meta")?
            .unwrap_or_default();
        let hard_state: HardState = self
            .read_state(shard, keys::KIND_HARD_STATE, "hard_state")?
            .unwrap_or_default();
        let applied: AppliedState = self
            .read_state(shard, keys::KIND_APPLIED, "applied")?
            .unwrap_or_default();
        let conf: Option<ConfState> = self.read_state(shard, keys::KIND_CONF, "conf_state")?;
        let mut state = GroupState {
            first_index: snapshot.index.next(),
            last_index: snapshot.index,
            last_term: snapshot.term,
            snapshot,
            hard_state,
            applied,
            conf,
        };
        let mut log = self.raft_log.prefix(keys::shard_prefix(shard));
        if let Some(first) = log.next() {
            let (_, first_index) = keys::parse_log_key(&first.key()?)?;
            if first_index != state.first_index {
                return Err(Error::corrupt_entry(
                    shard,
                    first_index,
                    format!(
                        "log starts at {first_index}, expected {}",
                        state.first_index
                    ),
                ));
            }
            let last = match log.next_back() {
                Some(last) => last,
                // The first entry is also the last one: read it again by key.
                None => self
                    .raft_log
                    .prefix(keys::shard_prefix(shard))
                    .next_back()
                    .ok_or_else(|| Error::corrupt_entry(shard, first_index, "entry vanished"))?,
            };
            let (key, value) = last.into_inner()?;
            let (_, last_index) = keys::parse_log_key(&key)?;
            let entry = self.decode_entry(shard, last_index, &value)?;
            state.last_index = last_index;
            state.last_term = entry.term;
        }
        state.check_invariants();
        Ok(state)
    }
}
