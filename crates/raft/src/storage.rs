//! The read side of a group's durable log, as the Raft core sees it.
//!
//! The core never writes storage itself: it hands entries, hard state and snapshots to the driver
//! in a [`Ready`](crate::Ready), and the driver persists them. The core then reads the persisted
//! log back through this trait (to send entries to followers, to check terms). Contract:
//!
//! - By the time the driver calls [`RawNode::on_persisted`](crate::RawNode::on_persisted) for a
//!   Ready, everything that Ready asked to persist is visible through these methods.
//! - The log is contiguous: it holds every entry in `[first_index, last_index]`. Entries below
//!   `first_index` were compacted into a snapshot whose metadata `snapshot_meta` returns; the term
//!   of `first_index - 1` is that snapshot's term.
//! - An empty log after a snapshot at index `s` has `first_index = s + 1`, `last_index = s`.
//! - Methods are called on the driver's thread; they should be fast (memory or block cache).

use crate::error::StorageError;
use ringkv_types::raft::{Entry, HardState, Snapshot, SnapshotMeta};
use ringkv_types::{LogIndex, NodeId, Term};

/// What a group starts from after a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitialState {
    /// Last persisted hard state.
    pub hard_state: HardState,
    /// Metadata of the last snapshot installed or compaction point (index, term and the
    /// configuration at that index). All zero and empty for a new group.
    pub snapshot_meta: SnapshotMeta,
}

/// Read access to one group's persisted log. See the module docs for the contract.
pub trait Storage {
    /// The persisted hard state and compaction point.
    ///
    /// # Errors
    /// Storage failures (corruption, I/O).
    fn initial_state(&self) -> Result<InitialState, StorageError>;

    /// Entries in `[low, high)`, stopping once their total [`Entry::size_bytes`] exceeds
    /// `max_bytes`, but always returning at least one entry when `low < high`.
    ///
    /// # Errors
    /// [`StorageError::Compacted`] when `low < first_index`; [`StorageError::Unavailable`] when
    /// `high > last_index + 1`.
    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError>;

    /// Term of the entry at `index`, for `index` in `[first_index - 1, last_index]`.
    ///
    /// # Errors
    /// [`StorageError::Compacted`] below that range, [`StorageError::Unavailable`] above it.
    fn term(&self, index: LogIndex) -> Result<Term, StorageError>;

    /// Index of the first entry still in the log (compaction point + 1).
    ///
    /// # Errors
    /// Storage failures.
    fn first_index(&self) -> Result<LogIndex, StorageError>;

    /// Index of the last entry in the log (the compaction point when the log is empty).
    ///
    /// # Errors
    /// Storage failures.
    fn last_index(&self) -> Result<LogIndex, StorageError>;

    /// A snapshot to send to follower `to`, covering at least up to `first_index - 1`.
    ///
    /// # Errors
    /// [`StorageError::SnapshotTemporarilyUnavailable`] when one is being built; the core retries
    /// later.
    fn snapshot(&self, to: NodeId) -> Result<Snapshot, StorageError>;
}
