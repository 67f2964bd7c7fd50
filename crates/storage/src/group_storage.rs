//! A cheap per-group handle implementing the Raft core's [`Storage`] trait.

use crate::error::{Error, Result};
use crate::group_state::GroupState;
use crate::keys;
use crate::store::{Shared, lock_group};
use ringkv_raft::{InitialState, Storage, StorageError};
use ringkv_types::raft::{Entry, HardState, Snapshot, SnapshotMeta};
use ringkv_types::{LogIndex, NodeId, ShardId, Term};
use std::sync::{Arc, Mutex};

/// One group's view of the store: the Raft core reads its persisted log through this handle.
///
/// Bounds (`first_index`, `last_index`, the last term, the compaction point and the hard state)
/// come from an in-memory cache that the group-commit writer updates after each durable commit;
/// only `entries` and `term` below the last index read the LSM tree (usually its memtable or
/// block cache).
///
/// Visibility: a write is visible here once its batch is durable, before its
/// [`Ticket`](crate::Ticket) completes. The driver must not read an index range that an
/// in-flight batch truncates (the Raft core reads only entries it knows are stable).
#[derive(Clone)]
pub struct GroupStorage {
    shared: Arc<Shared>,
    shard: ShardId,
    state: Arc<Mutex<GroupState>>,
}

impl GroupStorage {
    pub(crate) fn new(shared: Arc<Shared>, shard: ShardId, state: Arc<Mutex<GroupState>>) -> Self {
        Self {
            shared,
            shard,
            state,
        }
    }

    /// The group.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// The last durable hard state.
    pub fn hard_state(&self) -> HardState {
        lock_group(&self.state).hard_state
    }

    /// The log's compaction point.
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        lock_group(&self.state).snapshot.clone()
    }

    /// `(first_index, last_index, last_term)` in one lock.
    pub fn bounds(&self) -> (LogIndex, LogIndex, Term) {
        let state = lock_group(&self.state);
        (state.first_index, state.last_index, state.last_term)
    }

    /// Entries in `[low, high)` with the byte limit of [`Storage::entries`], as a crate result.
    ///
    /// # Errors
    /// [`Error::CorruptEntry`] for a record that fails its checks or is missing inside the
    /// log's bounds; I/O. Out-of-range requests are reported by the trait method.
    pub fn read_entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        let mut total_bytes = 0u64;
        let mut expected = low;
        let range = keys::log_key(self.shard, low)..keys::log_key(self.shard, high);
        for guard in self.shared.raft_log.range(range) {
            let (key, value) = guard.into_inner()?;
            let (_, index) = keys::parse_log_key(&key)?;
            if index != expected {
                return Err(Error::corrupt_entry(
                    self.shard,
                    expected,
                    format!("entry missing from the log (next present is {index})"),
                ));
            }
            let entry = self.shared.decode_entry(self.shard, index, &value)?;
            total_bytes = total_bytes.saturating_add(entry.size_bytes());
            if !entries.is_empty() && total_bytes > max_bytes {
                break;
            }
            entries.push(entry);
            expected = expected.next();
            if total_bytes >= max_bytes {
                break;
            }
        }
        if entries.is_empty() && low < high {
            return Err(Error::corrupt_entry(
                self.shard,
                low,
                "entry missing from the log",
            ));
        }
        if expected < high && total_bytes < max_bytes {
            return Err(Error::corrupt_entry(
                self.shard,
                expected,
                "entry missing from the log",
            ));
        }
        Ok(entries)
    }
}

impl Storage for GroupStorage {
    fn initial_state(&self) -> std::result::Result<InitialState, StorageError> {
        let state = lock_group(&self.state);
        Ok(InitialState {
            hard_state: state.hard_state,
            snapshot_meta: state.snapshot.clone(),
        })
    }

    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> std::result::Result<Vec<Entry>, StorageError> {
        let (first_index, last_index, _) = self.bounds();
        if low < first_index {
            return Err(StorageError::Compacted {
                requested: low,
                first_index,
            });
        }
        if high > last_index.next() {
            return Err(StorageError::Unavailable {
                requested: high,
                last_index,
            });
        }
        if low >= high {
            return Ok(Vec::new());
        }
        Ok(self.read_entries(low, high, max_bytes)?)
    }

    fn term(&self, index: LogIndex) -> std::result::Result<Term, StorageError> {
        let (snapshot_index, snapshot_term, first_index, last_index, last_term) = {
            let state = lock_group(&self.state);
            (
                state.snapshot.index,
                state.snapshot.term,
                state.first_index,
                state.last_index,
                state.last_term,
            )
        };
        if index < snapshot_index {
            return Err(StorageError::Compacted {
                requested: index,
                first_index,
            });
        }
        if index > last_index {
            return Err(StorageError::Unavailable {
                requested: index,
                last_index,
            });
        }
        if index == snapshot_index {
            return Ok(snapshot_term);
        }
        if index == last_index {
            return Ok(last_term);
        }
        match self.shared.read_entry(self.shard, index)? {
            Some(entry) => Ok(entry.term),
            None => {
                Err(Error::corrupt_entry(self.shard, index, "entry missing from the log").into())
            }
        }
    }

    fn first_index(&self) -> std::result::Result<LogIndex, StorageError> {
        Ok(lock_group(&self.state).first_index)
    }

    fn last_index(&self) -> std::result::Result<LogIndex, StorageError> {
        Ok(lock_group(&self.state).last_index)
    }

    /// The metadata of the state machine's current position (applied index, its term and the
    /// saved configuration) with empty `data`: the node streams the shard's contents beside the
    /// message with [`Store::snapshot_chunks`](crate::Store::snapshot_chunks).
    fn snapshot(&self, _to: NodeId) -> std::result::Result<Snapshot, StorageError> {
        let state = lock_group(&self.state);
        if state.applied.index < state.snapshot.index {
            return Err(StorageError::SnapshotTemporarilyUnavailable);
        }
        let conf = state
            .conf
            .clone()
            .unwrap_or_else(|| state.snapshot.conf.clone());
        Ok(Snapshot {
            meta: SnapshotMeta {
                index: state.applied.index,
                term: state.applied.term,
                conf,
            },
            data: bytes::Bytes::new(),
        })
    }
}
