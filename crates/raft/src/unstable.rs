//! Log entries and a snapshot that are not yet known to be durable.
//!
//! Entries enter here when appended (by a leader's proposal or a follower's AppendEntries), are
//! handed to the driver in a `Ready` ("in progress"), and leave once the driver reports them
//! persisted. Until then reads of these indexes are served from here, shadowing storage.

use ringkv_types::raft::{Entry, Snapshot};
use ringkv_types::{LogIndex, Term};

/// Not-yet-durable suffix of the log.
#[derive(Debug, Default)]
pub struct Unstable {
    /// A snapshot to install, when one arrived from the leader.
    pub snapshot: Option<Snapshot>,
    /// Whether `snapshot` was handed to the driver already.
    pub snapshot_in_progress: bool,
    /// Entries `[offset, offset + entries.len())`.
    pub entries: Vec<Entry>,
    /// Index of `entries[0]`.
    pub offset: LogIndex,
    /// Entries below this index were handed to the driver already.
    pub offset_in_progress: LogIndex,
}

impl Unstable {
    /// An empty suffix starting at `offset`.
    pub fn new(offset: LogIndex) -> Self {
        Self {
            offset,
            offset_in_progress: offset,
            ..Self::default()
        }
    }

    /// The first index, if a snapshot is pending (snapshot index + 1).
    pub fn maybe_first_index(&self) -> Option<LogIndex> {
        self.snapshot.as_ref().map(|s| s.meta.index.next())
    }

    /// The last index, if any entry or snapshot is held.
    pub fn maybe_last_index(&self) -> Option<LogIndex> {
        if let Some(last) = self.entries.last() {
            return Some(last.index);
        }
        self.snapshot.as_ref().map(|s| s.meta.index)
    }

    /// The term at `index`, if this suffix knows it.
    pub fn maybe_term(&self, index: LogIndex) -> Option<Term> {
        if index < self.offset {
            let snapshot = self.snapshot.as_ref()?;
            return (snapshot.meta.index == index).then_some(snapshot.meta.term);
        }
        let position = usize::try_from(index.distance_from(self.offset)).ok()?;
        self.entries.get(position).map(|e| e.term)
    }

    /// Entries not handed to the driver yet.
    pub fn entries_to_persist(&self) -> &[Entry] {
        let start = usize::try_from(self.offset_in_progress.distance_from(self.offset))
            .unwrap_or(usize::MAX)
            .min(self.entries.len());
        self.entries.get(start..).unwrap_or(&[])
    }

    /// Marks everything currently held as handed to the driver.
    pub fn accept_in_progress(&mut self) {
        if let Some(last) = self.entries.last() {
            self.offset_in_progress = last.index.next();
        }
        if self.snapshot.is_some() {
            self.snapshot_in_progress = true;
        }
    }

    /// The driver persisted entries up to `(index, term)`: drop them, unless the entry at
    /// `index` was replaced since (then a later report covers the replacement).
    pub fn stable_to(&mut self, index: LogIndex, term: Term) -> bool {
        if index < self.offset || self.maybe_term(index) != Some(term) {
            return false;
        }
        let count = usize::try_from(index.distance_from(self.offset) + 1).unwrap_or(usize::MAX);
        self.entries.drain(..count.min(self.entries.len()));
        self.offset = index.next();
        self.offset_in_progress = self.offset_in_progress.max(self.offset);
        true
    }

    /// The driver persisted the snapshot at `index`.
    pub fn stable_snapshot_to(&mut self, index: LogIndex) {
        if self
            .snapshot
            .as_ref()
            .is_some_and(|s| s.meta.index == index)
        {
            self.snapshot = None;
            self.snapshot_in_progress = false;
        }
    }

    /// Replaces everything with `snapshot`.
    pub fn restore(&mut self, snapshot: Snapshot) {
        self.offset = snapshot.meta.index.next();
        self.offset_in_progress = self.offset;
        self.entries.clear();
        self.snapshot = Some(snapshot);
        self.snapshot_in_progress = false;
    }

    /// Appends `entries` (contiguous), truncating whatever this suffix holds at or after the
    /// first new index. The caller guarantees `entries[0].index <= last_index + 1` and that
    /// nothing committed is replaced.
    pub fn truncate_and_append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let after = first.index;
        let end = self.offset.plus(self.entries.len() as u64);
        if after == end {
            // Plain append.
        } else if after <= self.offset {
            // Replaces the whole suffix (and, through storage, everything from `after` on).
            self.offset = after;
            self.entries.clear();
        } else {
            let keep = usize::try_from(after.distance_from(self.offset)).unwrap_or(usize::MAX);
            self.entries.truncate(keep);
        }
        self.offset_in_progress = self.offset_in_progress.min(after);
        self.entries.extend_from_slice(entries);
    }

    /// Entries in `[low, high)`, which must lie within this suffix.
    pub fn slice(&self, low: LogIndex, high: LogIndex) -> &[Entry] {
        let start = usize::try_from(low.distance_from(self.offset)).unwrap_or(usize::MAX);
        let end = usize::try_from(high.distance_from(self.offset)).unwrap_or(usize::MAX);
        self.entries
            .get(start..end.min(self.entries.len()))
            .unwrap_or(&[])
    }
}
