//! A group's log as the core sees it: the durable part (through [`Storage`]) plus the unstable
//! suffix, with the commit, apply and persist cursors.
//!
//! Cursors, always `applied <= applying <= committed` and `applying <= persisted`:
//! - `committed`: highest index known committed (Raft §5.3).
//! - `persisted`: highest index known durable in local storage.
//! - `applying`: highest index handed to the driver for applying.
//! - `applied`: highest index the driver reported applied.
//!
//! Committed entries are handed out only once they are durable locally, so a crash never leaves
//! the state machine ahead of the log.

use crate::error::StorageError;
use crate::storage::Storage;
use crate::unstable::Unstable;
use ringkv_types::raft::{Entry, Snapshot};
use ringkv_types::{LogIndex, ShardId, Term};

/// Storage plus unstable suffix plus cursors.
pub struct RaftLog<S> {
    /// Durable log.
    pub storage: S,
    /// Not-yet-durable suffix.
    pub unstable: Unstable,
    /// Highest committed index.
    pub committed: LogIndex,
    /// Highest locally durable index.
    pub persisted: LogIndex,
    /// Highest index handed out for applying.
    pub applying: LogIndex,
    /// Highest index reported applied.
    pub applied: LogIndex,
    group: ShardId,
}

impl<S: Storage> RaftLog<S> {
    /// Opens the log over `storage`, with the state machine at `applied` and the durable commit
    /// index `commit`.
    pub fn new(
        storage: S,
        group: ShardId,
        commit: LogIndex,
        applied: LogIndex,
    ) -> Result<Self, StorageError> {
        let first_index = storage.first_index()?;
        let last_index = storage.last_index()?;
        // Entries up to `applied` were committed, whatever the hard state says; the compaction
        // point is applied state too.
        let committed = commit.max(applied).max(first_index.prev());
        assert!(
            committed <= last_index,
            "group {group}: commit {committed} > last index {last_index} on restart"
        );
        let applied = applied.max(first_index.prev());
        Ok(Self {
            storage,
            unstable: Unstable::new(last_index.next()),
            committed,
            persisted: last_index,
            applying: applied,
            applied,
            group,
        })
    }

    /// First index still in the log.
    pub fn first_index(&self) -> Result<LogIndex, StorageError> {
        match self.unstable.maybe_first_index() {
            Some(index) => Ok(index),
            None => self.storage.first_index(),
        }
    }

    /// Last index in the log.
    pub fn last_index(&self) -> Result<LogIndex, StorageError> {
        match self.unstable.maybe_last_index() {
            Some(index) => Ok(index),
            None => self.storage.last_index(),
        }
    }

    /// Term of the entry at `index` (`first_index - 1` gives the snapshot's term).
    pub fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        let first_index = self.first_index()?;
        if index < first_index.prev() {
            return Err(StorageError::Compacted {
                requested: index,
                first_index,
            });
        }
        let last_index = self.last_index()?;
        if index > last_index {
            return Err(StorageError::Unavailable {
                requested: index,
                last_index,
            });
        }
        if let Some(term) = self.unstable.maybe_term(index) {
            return Ok(term);
        }
        self.storage.term(index)
    }

    /// Term of the last entry.
    pub fn last_term(&self) -> Result<Term, StorageError> {
        self.term(self.last_index()?)
    }

    /// Whether the log has an entry at `index` with `term`.
    pub fn match_term(&self, index: LogIndex, term: Term) -> bool {
        self.term(index).is_ok_and(|t| t == term)
    }

    /// Whether a log ending at `(last_index, last_term)` is at least as up to date as ours
    /// (Raft §5.4.1: compare last terms, then lengths).
    pub fn is_up_to_date(
        &self,
        last_index: LogIndex,
        last_term: Term,
    ) -> Result<bool, StorageError> {
        let our_term = self.last_term()?;
        Ok(last_term > our_term || (last_term == our_term && last_index >= self.last_index()?))
    }

    /// Index of the first of `entries` that is not already in the log with the same term, or
    /// `None` when all of them are present.
    pub fn find_conflict(&self, entries: &[Entry]) -> Option<LogIndex> {
        entries
            .iter()
            .find(|e| !self.match_term(e.index, e.term))
            .map(|e| e.index)
    }

    /// The largest index `<= index` whose term is `<= term`, with that term: the fast
    /// backtracking hint (the leader can skip every entry of a conflicting term at once).
    /// Stops at the compaction point.
    pub fn find_conflict_by_term(&self, index: LogIndex, term: Term) -> (LogIndex, Term) {
        let mut index = index;
        loop {
            match self.term(index) {
                Ok(t) if t > term && index > LogIndex::ZERO => index = index.prev(),
                Ok(t) => return (index, t),
                Err(_) => return (index, Term::ZERO),
            }
        }
    }

    /// Follower side of AppendEntries (Raft §5.3): when our log has `(prev_index, prev_term)`,
    /// append what is new in `entries` (truncating a conflicting suffix), advance commit to
    /// `min(commit, last new index)` and return the last new index. `None` on mismatch.
    ///
    /// # Panics
    /// If a conflicting entry lies at or below the commit index: two leaders disagreeing on a
    /// committed entry means Raft's safety is already lost.
    pub fn maybe_append(
        &mut self,
        prev_index: LogIndex,
        prev_term: Term,
        commit: LogIndex,
        entries: &[Entry],
    ) -> Option<LogIndex> {
        if !self.match_term(prev_index, prev_term) {
            return None;
        }
        let last_new = prev_index.plus(entries.len() as u64);
        if let Some(conflict) = self.find_conflict(entries) {
            assert!(
                conflict > self.committed,
                "group {}: entry {} conflicts with committed index {}",
                self.group,
                conflict,
                self.committed
            );
            let skip = usize::try_from(conflict.distance_from(prev_index.next())).unwrap_or(0);
            self.append(entries.get(skip..).unwrap_or(&[]));
        }
        self.commit_to(commit.min(last_new));
        Some(last_new)
    }

    /// Appends entries (replacing any suffix they overlap). Returns the new last index.
    ///
    /// # Panics
    /// If the entries would replace a committed entry or leave a gap.
    pub fn append(&mut self, entries: &[Entry]) -> LogIndex {
        let Some(first) = entries.first() else {
            return self.last_index().unwrap_or(LogIndex::ZERO);
        };
        assert!(
            first.index > self.committed,
            "group {}: append at {} would truncate committed index {}",
            self.group,
            first.index,
            self.committed
        );
        let last_index = self.last_index().unwrap_or(LogIndex::ZERO);
        assert!(
            first.index <= last_index.next(),
            "group {}: append at {} leaves a gap after {}",
            self.group,
            first.index,
            last_index
        );
        if first.index <= self.persisted {
            self.persisted = first.index.prev();
        }
        self.unstable.truncate_and_append(entries);
        self.last_index().unwrap_or(LogIndex::ZERO)
    }

    /// Advances the commit index (never backwards).
    ///
    /// # Panics
    /// If `index` is past the last index: nothing absent can be committed.
    pub fn commit_to(&mut self, index: LogIndex) {
        if index <= self.committed {
            return;
        }
        let last_index = self.last_index().unwrap_or(LogIndex::ZERO);
        assert!(
            index <= last_index,
            "group {}: commit {} > last index {}",
            self.group,
            index,
            last_index
        );
        self.committed = index;
    }

    /// Entries in `[low, high)` up to `max_bytes` (at least one when `low < high`).
    pub fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if low >= high {
            return Ok(Vec::new());
        }
        let first_index = self.first_index()?;
        if low < first_index {
            return Err(StorageError::Compacted {
                requested: low,
                first_index,
            });
        }
        let last_index = self.last_index()?;
        if high > last_index.next() {
            return Err(StorageError::Unavailable {
                requested: high.prev(),
                last_index,
            });
        }
        let offset = self.unstable.offset;
        let mut out = Vec::new();
        let mut bytes = 0u64;
        if low < offset {
            out = self.storage.entries(low, high.min(offset), max_bytes)?;
            bytes = out.iter().map(Entry::size_bytes).sum();
            let stored_end = low.plus(out.len() as u64);
            if stored_end < high.min(offset) || bytes >= max_bytes {
                return Ok(out);
            }
        }
        if high > offset {
            for entry in self.unstable.slice(low.max(offset), high) {
                let size = entry.size_bytes();
                if !out.is_empty() && bytes + size > max_bytes {
                    break;
                }
                bytes += size;
                out.push(entry.clone());
            }
        }
        Ok(out)
    }

    /// Whether committed, durable entries wait to be handed out.
    pub fn has_next_committed_entries(&self) -> bool {
        self.unstable.snapshot.is_none() && self.applying < self.committed.min(self.persisted)
    }

    /// Committed, locally durable entries not yet handed out, up to `max_bytes`; marks them
    /// handed out.
    pub fn take_next_committed_entries(
        &mut self,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if !self.has_next_committed_entries() {
            return Ok(Vec::new());
        }
        let high = self.committed.min(self.persisted).next();
        let entries = self.entries(self.applying.next(), high, max_bytes)?;
        if let Some(last) = entries.last() {
            self.applying = last.index;
        }
        Ok(entries)
    }

    /// The driver applied entries up to `index`.
    ///
    /// # Panics
    /// If `index` was never handed out.
    pub fn applied_to(&mut self, index: LogIndex) {
        assert!(
            index <= self.applying,
            "group {}: applied {} was never handed out (applying {})",
            self.group,
            index,
            self.applying
        );
        self.applied = self.applied.max(index);
    }

    /// Replaces the log with `snapshot` (follower install, Raft §7).
    pub fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        self.committed = self.committed.max(index);
        self.persisted = self.persisted.min(index);
        self.unstable.restore(snapshot);
    }

    /// Entries up to `(index, term)` are durable.
    pub fn stable_to(&mut self, index: LogIndex, term: Term) {
        if self.unstable.stable_to(index, term) || self.match_term(index, term) {
            self.persisted = self
                .persisted
                .max(index.min(self.last_index().unwrap_or(index)));
        }
    }

    /// The snapshot at `index` is durable and installed in the state machine.
    pub fn stable_snapshot_to(&mut self, index: LogIndex) {
        self.unstable.stable_snapshot_to(index);
        self.persisted = self.persisted.max(index);
        self.applying = self.applying.max(index);
        self.applied = self.applied.max(index);
    }

    /// Checks the cursor relations (STYLE §5).
    ///
    /// # Panics
    /// On any violation, naming the values.
    pub fn check_invariants(&self) {
        let last_index = self.last_index().unwrap_or(LogIndex::ZERO);
        assert!(
            self.committed <= last_index,
            "group {}: commit {} > last index {}",
            self.group,
            self.committed,
            last_index
        );
        assert!(
            self.applied <= self.applying && self.applying <= self.committed,
            "group {}: applied {} / applying {} / commit {} out of order",
            self.group,
            self.applied,
            self.applying,
            self.committed
        );
        assert!(
            self.applying <= self.persisted.max(self.applied),
            "group {}: applying {} ahead of persisted {}",
            self.group,
            self.applying,
            self.persisted
        );
    }
}
