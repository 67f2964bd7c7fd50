//! One group's Raft log in memory, with the semantics of [`GroupStorage`](crate::GroupStorage):
//! for tests and the simulator, which run the node core with no disk.
//!
//! The log holds what its driver wrote. A driver that models a disk (the simulator) writes a
//! group's part of a batch here when it submits the batch, as the fjall writer's commit makes
//! it readable before its `fdatasync` returns, and writes it again into a [`MemoryLog::fork`]
//! that holds only what is durable; a simulated crash goes back to that copy, losing exactly
//! what was not durable. Cloning the handle shares the log (the core reads through one handle
//! while the driver writes through another).
//!
//! The write methods keep the order of a [`WriteBatchBuilder`](crate::WriteBatchBuilder)
//! batch when called in the order the batch applies: compaction point, then appends, then the
//! hard state.

use crate::group_state::AppliedState;
use ringkv_raft::{InitialState, Storage, StorageError};
use ringkv_types::raft::{ConfState, Entry, HardState, Snapshot, SnapshotMeta};
use ringkv_types::{LogIndex, NodeId, Term};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Clone, Debug, Default)]
struct Log {
    hard_state: HardState,
    /// The compaction point.
    snapshot: SnapshotMeta,
    /// Entries after `snapshot.index`, contiguous.
    entries: VecDeque<Entry>,
    /// The state machine's position, as the store saves it with each apply.
    applied: AppliedState,
    /// The configuration saved with `applied`, if any.
    conf: Option<ConfState>,
}

impl Log {
    fn first_index(&self) -> LogIndex {
        self.snapshot.index.next()
    }

    fn last_index(&self) -> LogIndex {
        self.entries.back().map_or(self.snapshot.index, |e| e.index)
    }

    /// Position of `index` in `entries` (saturating: past the end for an index too high).
    fn position(&self, index: LogIndex) -> usize {
        usize::try_from(index.distance_from(self.first_index())).unwrap_or(usize::MAX)
    }

    fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        if index < self.first_index() {
            return None;
        }
        self.entries.get(self.position(index)).map(|e| e.term)
    }
}

/// A shared in-memory log of one group; see the module docs.
#[derive(Clone, Debug, Default)]
pub struct MemoryLog {
    log: Arc<Mutex<Log>>,
}

impl MemoryLog {
    /// An empty log: no entry, no hard state, nothing applied.
    pub fn new() -> Self {
        Self::default()
    }

    /// An independent copy of the log as it is now (cloning the handle shares it instead): a
    /// simulator keeps what is durable apart from what was written, and a crash goes back to
    /// the durable copy.
    pub fn fork(&self) -> Self {
        Self {
            log: Arc::new(Mutex::new(self.lock().clone())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends `entries`, replacing stored entries at or after the first one's index. Entries
    /// at or below the compaction point are skipped (they are already covered by it).
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] when the entries would leave a gap after the last index
    /// or are not contiguous; nothing is written then.
    pub fn append(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let mut log = self.lock();
        let first_index = log.first_index();
        let skip = entries.iter().take_while(|e| e.index < first_index).count();
        let entries = entries.get(skip..).unwrap_or(&[]);
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let last_index = log.last_index();
        if first.index > last_index.next() {
            return Err(StorageError::Unavailable {
                requested: first.index,
                last_index,
            });
        }
        for pair in entries.windows(2) {
            if let [previous, next] = pair
                && next.index != previous.index.next()
            {
                return Err(StorageError::Unavailable {
                    requested: next.index,
                    last_index: previous.index,
                });
            }
        }
        let keep = log.position(first.index);
        log.entries.truncate(keep);
        log.entries.extend(entries.iter().cloned());
        Ok(())
    }

    /// Saves the hard state.
    pub fn set_hard_state(&self, hard_state: HardState) {
        self.lock().hard_state = hard_state;
    }

    /// Moves the compaction point to `meta`, as
    /// [`WriteBatchBuilder::set_snapshot_meta`](crate::WriteBatchBuilder::set_snapshot_meta):
    /// ignored at or below the current one; the entries after it are kept when the log holds
    /// `meta.index` with `meta.term`, otherwise the whole log is discarded.
    pub fn set_snapshot_meta(&self, meta: SnapshotMeta) {
        let mut log = self.lock();
        if meta.index <= log.snapshot.index {
            return;
        }
        if log.term_at(meta.index) == Some(meta.term) {
            let drop = log
                .position(meta.index)
                .saturating_add(1)
                .min(log.entries.len());
            log.entries.drain(..drop);
        } else {
            log.entries.clear();
        }
        log.snapshot = meta;
    }

    /// A snapshot install's log side: the compaction point moves to `meta` (as
    /// [`MemoryLog::set_snapshot_meta`]) and the applied position and configuration become the
    /// snapshot's.
    pub fn install(&self, meta: SnapshotMeta) {
        self.set_applied(
            AppliedState {
                index: meta.index,
                term: meta.term,
            },
            Some(meta.conf.clone()),
        );
        self.set_snapshot_meta(meta);
    }

    /// Records the state machine's position (and the configuration saved with it): what the
    /// store keeps beside the log, and what [`Storage::snapshot`] describes.
    pub fn set_applied(&self, applied: AppliedState, conf: Option<ConfState>) {
        let mut log = self.lock();
        log.applied = applied;
        if conf.is_some() {
            log.conf = conf;
        }
    }

    /// The saved hard state.
    pub fn hard_state(&self) -> HardState {
        self.lock().hard_state
    }

    /// The compaction point.
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        self.lock().snapshot.clone()
    }

    /// `(first_index, last_index, last_term)`.
    pub fn bounds(&self) -> (LogIndex, LogIndex, Term) {
        let log = self.lock();
        let last = log.last_index();
        (
            log.first_index(),
            last,
            log.term_at(last).unwrap_or(Term::ZERO),
        )
    }
}

impl Storage for MemoryLog {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        let log = self.lock();
        Ok(InitialState {
            hard_state: log.hard_state,
            snapshot_meta: log.snapshot.clone(),
        })
    }

    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let log = self.lock();
        if low < log.first_index() {
            return Err(StorageError::Compacted {
                requested: low,
                first_index: log.first_index(),
            });
        }
        if high > log.last_index().next() {
            return Err(StorageError::Unavailable {
                requested: high,
                last_index: log.last_index(),
            });
        }
        let mut out = Vec::new();
        let mut total_bytes = 0u64;
        let (start, end) = (log.position(low), log.position(high));
        for entry in log.entries.range(start..end.max(start)) {
            total_bytes = total_bytes.saturating_add(entry.size_bytes());
            if !out.is_empty() && total_bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
            if total_bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        let log = self.lock();
        if index < log.snapshot.index {
            return Err(StorageError::Compacted {
                requested: index,
                first_index: log.first_index(),
            });
        }
        log.term_at(index).ok_or(StorageError::Unavailable {
            requested: index,
            last_index: log.last_index(),
        })
    }

    fn first_index(&self) -> Result<LogIndex, StorageError> {
        Ok(self.lock().first_index())
    }

    fn last_index(&self) -> Result<LogIndex, StorageError> {
        Ok(self.lock().last_index())
    }

    /// The metadata of the state machine's position with empty `data`, as
    /// [`GroupStorage`](crate::GroupStorage): the data is streamed beside the message.
    fn snapshot(&self, _to: NodeId) -> Result<Snapshot, StorageError> {
        let log = self.lock();
        if log.applied.index < log.snapshot.index {
            return Err(StorageError::SnapshotTemporarilyUnavailable);
        }
        let conf = log
            .conf
            .clone()
            .unwrap_or_else(|| log.snapshot.conf.clone());
        Ok(Snapshot {
            meta: SnapshotMeta {
                index: log.applied.index,
                term: log.applied.term,
                conf,
            },
            data: bytes::Bytes::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test")]
    use super::*;
    use bytes::Bytes;
    use ringkv_types::raft::EntryPayload;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index: LogIndex(index),
            term: Term(term),
            payload: EntryPayload::Normal(Bytes::from_static(b"x")),
        }
    }

    #[test]
    fn appends_replace_a_conflicting_suffix_and_refuse_a_gap() {
        let log = MemoryLog::new();
        log.append(&[entry(1, 1), entry(2, 1), entry(3, 1)])
            .unwrap();
        log.append(&[entry(2, 2)]).unwrap();
        assert_eq!(log.bounds(), (LogIndex(1), LogIndex(2), Term(2)));
        assert!(log.append(&[entry(4, 2)]).is_err());
        assert!(log.append(&[entry(3, 2), entry(5, 2)]).is_err());
        assert_eq!(log.last_index().unwrap(), LogIndex(2));
        let read = log.entries(LogIndex(1), LogIndex(3), u64::MAX).unwrap();
        assert_eq!(read, vec![entry(1, 1), entry(2, 2)]);
        assert!(log.entries(LogIndex(1), LogIndex(4), u64::MAX).is_err());
    }

    #[test]
    fn compaction_keeps_the_suffix_of_a_matching_log_and_drops_a_different_history() {
        let log = MemoryLog::new();
        log.append(&[entry(1, 1), entry(2, 1), entry(3, 2)])
            .unwrap();
        log.set_snapshot_meta(SnapshotMeta {
            index: LogIndex(2),
            term: Term(1),
            conf: ConfState::default(),
        });
        assert_eq!(log.bounds(), (LogIndex(3), LogIndex(3), Term(2)));
        assert_eq!(log.term(LogIndex(2)).unwrap(), Term(1));
        assert!(matches!(
            log.term(LogIndex(1)),
            Err(StorageError::Compacted { .. })
        ));
        // A snapshot from a leader whose history differs: the log restarts after it.
        log.install(SnapshotMeta {
            index: LogIndex(5),
            term: Term(3),
            conf: ConfState::default(),
        });
        assert_eq!(log.bounds(), (LogIndex(6), LogIndex(5), Term(3)));
        let snapshot = log.snapshot(NodeId(2)).unwrap();
        assert_eq!(
            (snapshot.meta.index, snapshot.meta.term),
            (LogIndex(5), Term(3))
        );
        // Entries at or below the compaction point are skipped, the rest appended.
        log.append(&[entry(5, 3), entry(6, 3)]).unwrap();
        assert_eq!(log.bounds(), (LogIndex(6), LogIndex(6), Term(3)));
    }
}
