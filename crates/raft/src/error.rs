//! Errors of the Raft core.

use ringkv_types::{LogIndex, NodeId, ShardId};
use thiserror::Error;

/// Errors a [`Storage`](crate::Storage) implementation returns to the core.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The requested index was compacted into a snapshot.
    #[error("index {requested} is compacted (first index {first_index})")]
    Compacted {
        /// Index asked for.
        requested: LogIndex,
        /// First index still present.
        first_index: LogIndex,
    },
    /// The requested index is past the end of the log.
    #[error("index {requested} is past the last index {last_index}")]
    Unavailable {
        /// Index asked for.
        requested: LogIndex,
        /// Last index present.
        last_index: LogIndex,
    },
    /// A snapshot is being prepared; ask again later.
    #[error("snapshot temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// Anything else (I/O, corruption). The core treats it as fatal for the group.
    #[error("storage failure: {0}")]
    Other(String),
}

/// Errors returned to callers of [`RawNode`](crate::RawNode).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Error {
    /// This replica is not the leader; retry at `leader_hint` when known.
    #[error("group {group}: not the leader (leader hint {leader_hint})")]
    NotLeader {
        /// The group.
        group: ShardId,
        /// The leader this replica knows of, or `NodeId::NONE`.
        leader_hint: NodeId,
    },
    /// A leader transfer is in progress; proposals are refused until it ends.
    #[error("group {group}: leader transfer in progress")]
    TransferInProgress {
        /// The group.
        group: ShardId,
    },
    /// Too many uncommitted bytes; retry later.
    #[error(
        "group {group}: proposal dropped, {uncommitted_bytes} uncommitted bytes (limit {limit})"
    )]
    ProposalDropped {
        /// The group.
        group: ShardId,
        /// Current uncommitted bytes.
        uncommitted_bytes: u64,
        /// Configured limit.
        limit: u64,
    },
    /// A configuration change was refused (bad change, or another is pending).
    #[error("group {group}: configuration change refused: {reason}")]
    ConfChangeRefused {
        /// The group.
        group: ShardId,
        /// Why.
        reason: &'static str,
    },
    /// A read could not be served now (no committed entry in this term yet, or no valid lease).
    #[error("group {group}: read refused: {reason}")]
    ReadRefused {
        /// The group.
        group: ShardId,
        /// Why.
        reason: &'static str,
    },
    /// Invalid configuration.
    #[error("invalid raft config: {0}")]
    InvalidConfig(&'static str),
    /// The log storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Result alias for the core.
pub type Result<T> = std::result::Result<T, Error>;
