//! An in-memory [`Storage`] for tests, the simulator and benchmarks.
//!
//! Cloning the handle shares the log, so the driver writes through one handle while the core
//! reads through another, as with the on-disk store.

use crate::error::StorageError;
use crate::storage::{InitialState, Storage};
use ringkv_types::raft::{ConfState, Entry, HardState, Snapshot, SnapshotMeta};
use ringkv_types::{LogIndex, NodeId, Term};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct Core {
    hard_state: HardState,
    snapshot: Snapshot,
    /// Entries after `snapshot.meta.index`, contiguous.
    entries: Vec<Entry>,
}

impl Core {
    fn first_index(&self) -> LogIndex {
        self.snapshot.meta.index.next()
    }

    fn last_index(&self) -> LogIndex {
        self.entries
            .last()
            .map_or(self.snapshot.meta.index, |e| e.index)
    }

    fn position(&self, index: LogIndex) -> usize {
        usize::try_from(index.distance_from(self.first_index())).unwrap_or(usize::MAX)
    }
}

/// A shared in-memory log.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    core: Arc<Mutex<Core>>,
}

impl MemStorage {
    /// An empty log (a replica that will learn its configuration from the leader).
    pub fn new() -> Self {
        Self::default()
    }

    /// A new group's log: empty, with `conf` as the configuration at index 0.
    pub fn with_conf(conf: ConfState) -> Self {
        let storage = Self::new();
        storage.lock().snapshot.meta.conf = conf;
        storage
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Saves the hard state.
    pub fn set_hard_state(&self, hard_state: HardState) {
        self.lock().hard_state = hard_state;
    }

    /// The saved hard state.
    pub fn hard_state(&self) -> HardState {
        self.lock().hard_state
    }

    /// Appends entries, replacing any stored entries at or after the first one's index.
    ///
    /// # Panics
    /// If the entries would leave a gap or start inside the compacted prefix.
    pub fn append(&self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let mut core = self.lock();
        assert!(
            first.index >= core.first_index(),
            "append at {} below first index {}",
            first.index,
            core.first_index()
        );
        assert!(
            first.index <= core.last_index().next(),
            "append at {} leaves a gap after {}",
            first.index,
            core.last_index()
        );
        let keep = core.position(first.index);
        core.entries.truncate(keep);
        core.entries.extend_from_slice(entries);
    }

    /// Replaces the log with a snapshot (everything before and at its index is dropped; later
    /// entries too, since they belonged to a different history).
    pub fn apply_snapshot(&self, snapshot: Snapshot) {
        let mut core = self.lock();
        core.entries.clear();
        core.hard_state.commit = core.hard_state.commit.max(snapshot.meta.index);
        core.snapshot = snapshot;
    }

    /// Records a snapshot of the state machine at `index` (which must be in the log) and drops
    /// the entries up to it.
    ///
    /// # Panics
    /// If `index` is outside the stored log.
    pub fn compact(&self, index: LogIndex, conf: ConfState, data: bytes::Bytes) {
        let mut core = self.lock();
        if index <= core.snapshot.meta.index {
            return;
        }
        assert!(
            index <= core.last_index(),
            "compact {} past last {}",
            index,
            core.last_index()
        );
        let position = core.position(index);
        let term = core
            .entries
            .get(position)
            .map(|e| e.term)
            .unwrap_or(Term::ZERO);
        core.entries.drain(..=position);
        core.snapshot = Snapshot {
            meta: SnapshotMeta { index, term, conf },
            data,
        };
    }

    /// The stored snapshot.
    pub fn current_snapshot(&self) -> Snapshot {
        self.lock().snapshot.clone()
    }

    /// All stored entries (for checkers).
    pub fn all_entries(&self) -> Vec<Entry> {
        self.lock().entries.clone()
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        let core = self.lock();
        Ok(InitialState {
            hard_state: core.hard_state,
            snapshot_meta: core.snapshot.meta.clone(),
        })
    }

    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let core = self.lock();
        if low < core.first_index() {
            return Err(StorageError::Compacted {
                requested: low,
                first_index: core.first_index(),
            });
        }
        if high > core.last_index().next() {
            return Err(StorageError::Unavailable {
                requested: high.prev(),
                last_index: core.last_index(),
            });
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        let (start, end) = (core.position(low), core.position(high));
        for entry in core.entries.get(start..end).unwrap_or(&[]) {
            let size = entry.size_bytes();
            if !out.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        let core = self.lock();
        if index == core.snapshot.meta.index {
            return Ok(core.snapshot.meta.term);
        }
        if index < core.first_index() {
            return Err(StorageError::Compacted {
                requested: index,
                first_index: core.first_index(),
            });
        }
        core.entries
            .get(core.position(index))
            .map(|e| e.term)
            .ok_or(StorageError::Unavailable {
                requested: index,
                last_index: core.last_index(),
            })
    }

    fn first_index(&self) -> Result<LogIndex, StorageError> {
        Ok(self.lock().first_index())
    }

    fn last_index(&self) -> Result<LogIndex, StorageError> {
        Ok(self.lock().last_index())
    }

    fn snapshot(&self, _to: NodeId) -> Result<Snapshot, StorageError> {
        Ok(self.lock().snapshot.clone())
    }
}
