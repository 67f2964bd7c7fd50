//! The in-memory cache of one group's log bounds and small state records.

use ringkv_types::raft::{ConfState, HardState, SnapshotMeta};
use ringkv_types::{LogIndex, Term};
use serde::{Deserialize, Serialize};

/// The state machine's position: the last applied entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedState {
    /// Index of the last applied entry.
    pub index: LogIndex,
    /// Its term.
    pub term: Term,
}

/// Cached view of one group's persisted state, so the Raft core's hot calls (`first_index`,
/// `last_index`, `term(last)`) never touch the LSM tree.
///
/// Invariants (checked by [`GroupState::check_invariants`]):
/// `first_index == snapshot.index + 1`, `last_index >= snapshot.index`, and `last_term` is the
/// term of `last_index` (the snapshot's term when the log is empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct GroupState {
    /// First index in the log.
    pub first_index: LogIndex,
    /// Last index in the log (the compaction point when empty).
    pub last_index: LogIndex,
    /// Term of `last_index`.
    pub last_term: Term,
    /// Compaction point.
    pub snapshot: SnapshotMeta,
    /// Last saved hard state.
    pub hard_state: HardState,
    /// Applied position of the state machine.
    pub applied: AppliedState,
    /// Configuration saved with the applied position, if any.
    pub conf: Option<ConfState>,
}

impl GroupState {
    /// Panics when a cache invariant is broken: a bug in this crate, never a disk problem (the
    /// loader checks disk contents and returns errors instead).
    pub fn check_invariants(&self) {
        assert_eq!(
            self.first_index,
            self.snapshot.index.next(),
            "first index {} is not snapshot index {} + 1",
            self.first_index,
            self.snapshot.index
        );
        assert!(
            self.last_index >= self.snapshot.index,
            "last index {} below snapshot index {}",
            self.last_index,
            self.snapshot.index
        );
        if self.last_index == self.snapshot.index {
            assert_eq!(self.last_term, self.snapshot.term, "empty log's last term");
        }
    }
}
