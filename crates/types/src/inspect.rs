//! The database inspector (`ringctl inspect`): what it asks a node about its own data dir
//! ([`AdminRequest::Inspect`](crate::request::AdminRequest::Inspect)) and what it gets back.
//!
//! The same answers come from a running node (an admin request, read from a consistent view of
//! its store) and from a stopped node's data dir opened by `ringctl inspect --data-dir`. Every
//! answer is bounded: at most [`INSPECT_LIMIT_MAX`] items, and keys and values are cut to
//! [`EXCERPT_BYTES_MAX`] bytes (with their full length).

use crate::ids::{LogIndex, NodeId, ShardId, Term};
use crate::raft::{ConfState, HardState};
use crate::request::WriteSession;
use crate::ring::Arc;
use crate::shard::ShardDescriptor;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Most items (keys or log entries) in one answer.
pub const INSPECT_LIMIT_MAX: u32 = 1000;

/// Longest key or value excerpt in an answer, in bytes.
pub const EXCERPT_BYTES_MAX: usize = 1024;

/// What to inspect.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InspectRequest {
    /// The node's identity and a summary line per local shard.
    Status,
    /// Keys and values, in storage order (ring position, then key), of one shard or of every
    /// shard with a local descriptor; at most `limit` keys in all.
    Data {
        /// One shard, or every local shard.
        shard: Option<ShardId>,
        /// Most keys (capped at [`INSPECT_LIMIT_MAX`]).
        limit: u32,
    },
    /// Raft log entries of one shard, decoded, from index `from` (default: the first).
    Raft {
        /// The shard.
        shard: ShardId,
        /// First index shown.
        from: Option<LogIndex>,
        /// Most entries (capped at [`INSPECT_LIMIT_MAX`]).
        limit: u32,
    },
    /// Hard states, descriptors, applied indexes, configuration and log bounds, per shard.
    Meta {
        /// One shard, or every shard with records.
        shard: Option<ShardId>,
    },
}

/// A key or value, cut to [`EXCERPT_BYTES_MAX`] bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Excerpt {
    /// The first bytes.
    pub bytes: Bytes,
    /// The full length.
    pub len: u64,
}

impl Excerpt {
    /// The first [`EXCERPT_BYTES_MAX`] bytes of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let shown = bytes.get(..EXCERPT_BYTES_MAX).unwrap_or(bytes);
        Self {
            bytes: Bytes::copy_from_slice(shown),
            len: bytes.len() as u64,
        }
    }

    /// Whether bytes were cut off.
    pub fn is_truncated(&self) -> bool {
        (self.bytes.len() as u64) < self.len
    }
}

/// One shard's persisted Raft and state-machine records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecords {
    /// The shard.
    pub shard: ShardId,
    /// The local descriptor (`None` for a shard this node holds no replica of any more, or for
    /// the placement driver's group on a node that does not host it).
    pub descriptor: Option<ShardDescriptor>,
    /// The Raft hard state (term, vote, commit).
    pub hard_state: HardState,
    /// Index of the last applied entry.
    pub applied_index: LogIndex,
    /// Its term.
    pub applied_term: Term,
    /// The log's compaction point.
    pub snapshot_index: LogIndex,
    /// Its term.
    pub snapshot_term: Term,
    /// Configuration saved with the applied index, if any.
    pub conf: Option<ConfState>,
    /// First index in the log.
    pub first_index: LogIndex,
    /// Last index in the log (the compaction point when the log is empty).
    pub last_index: LogIndex,
    /// Highest member id removed from this shard on this node, if any.
    pub tombstone: Option<NodeId>,
    /// Why some records could not be read (corruption), if so; the other fields are then
    /// defaults.
    pub error: Option<String>,
}

/// Answer to [`InspectRequest::Status`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InspectStatus {
    /// The node id saved in the data dir.
    pub node: Option<NodeId>,
    /// The cluster id saved in the data dir.
    pub cluster_id: Option<u64>,
    /// Every shard with records, ascending.
    pub shards: Vec<ShardRecords>,
}

/// One key of a shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataEntry {
    /// The user key.
    pub key: Excerpt,
    /// Its value.
    pub value: Excerpt,
}

/// The keys of one shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardData {
    /// The shard.
    pub shard: ShardId,
    /// Its arc (from the local descriptor).
    pub arc: Arc,
    /// Keys in storage order.
    pub entries: Vec<DataEntry>,
    /// Whether the shard holds more keys than shown.
    pub more: bool,
}

/// What a log entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// The empty entry a new leader appends.
    Noop,
    /// A membership change (the new configuration).
    ConfChange,
    /// A command with one put.
    Put,
    /// A command with one delete.
    Delete,
    /// A command with one compare-and-swap.
    Cas,
    /// A command with several operations, applied atomically.
    Batch,
    /// A shard split.
    Split,
    /// A placement-driver command.
    Pd,
    /// A placement-driver shard map of the first format (never proposed any more).
    ShardMap,
    /// A payload that does not decode as a command.
    Undecodable,
    /// A pass that drops idle client sessions.
    SessionExpiry,
}

/// One operation of a key-value command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpView {
    /// Set a key.
    Put {
        /// Key.
        key: Excerpt,
        /// Value.
        value: Excerpt,
    },
    /// Remove a key.
    Delete {
        /// Key.
        key: Excerpt,
    },
    /// Compare-and-swap.
    Cas {
        /// Key.
        key: Excerpt,
        /// Required value (`None` = absent).
        expected: Option<Excerpt>,
        /// New value (`None` = delete).
        new: Option<Excerpt>,
    },
    /// Compare-and-swap on the version (appended: postcard numbers variants).
    CasVersion {
        /// Key.
        key: Excerpt,
        /// Required version (0 = absent).
        expected_version: u64,
        /// New value (`None` = delete).
        new: Option<Excerpt>,
    },
    /// Set a key with a time to live (appended: postcard numbers variants).
    PutTtl {
        /// Key.
        key: Excerpt,
        /// Value.
        value: Excerpt,
        /// Time to live in ms from the entry's log time.
        ttl_ms: u64,
    },
    /// Clear a key's time to live.
    Persist {
        /// Key.
        key: Excerpt,
    },
    /// Remove a key whose time to live has run out (proposed by the leader).
    Expire {
        /// Key.
        key: Excerpt,
    },
}

/// One decoded log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntryView {
    /// Position.
    pub index: LogIndex,
    /// Term.
    pub term: Term,
    /// What it is.
    pub kind: EntryKind,
    /// A key-value command's exactly-once identity.
    pub session: Option<WriteSession>,
    /// A key-value command's operations.
    pub ops: Vec<OpView>,
    /// Everything else in words: the configuration, the split, the PD command, or why the
    /// payload does not decode.
    pub detail: String,
}

/// Answer to [`InspectRequest::Raft`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftLogView {
    /// The shard.
    pub shard: ShardId,
    /// First index in the log.
    pub first_index: LogIndex,
    /// Last index in the log.
    pub last_index: LogIndex,
    /// The entries shown, ascending.
    pub entries: Vec<LogEntryView>,
    /// Whether the log goes on past the last entry shown.
    pub more: bool,
}

/// The inspector's answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InspectResult {
    /// Answer to [`InspectRequest::Status`].
    Status(InspectStatus),
    /// Answer to [`InspectRequest::Data`], one item per shard shown.
    Data(Vec<ShardData>),
    /// Answer to [`InspectRequest::Raft`].
    Raft(RaftLogView),
    /// Answer to [`InspectRequest::Meta`].
    Meta(Vec<ShardRecords>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_cut_long_bytes_and_keep_the_length() {
        let short = Excerpt::of(b"abc");
        assert_eq!((short.bytes.as_ref(), short.len), (&b"abc"[..], 3));
        assert!(!short.is_truncated());
        let long = Excerpt::of(&vec![7u8; EXCERPT_BYTES_MAX + 5]);
        assert_eq!(long.bytes.len(), EXCERPT_BYTES_MAX);
        assert_eq!(long.len, EXCERPT_BYTES_MAX as u64 + 5);
        assert!(long.is_truncated());
    }
}
