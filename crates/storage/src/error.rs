//! Errors of the storage crate.
//!
//! Two families: errors a caller can act on (a missing group, an invalid write, a corrupt or
//! truncated snapshot stream it can fetch again) and fatal ones ([`Error::Poisoned`],
//! [`Error::Fjall`] on a write path) after which the node must stop, because the state on disk
//! is no longer known. [`Error::is_fatal`] tells them apart.

use ringkv_types::{LogIndex, ShardId};
use thiserror::Error;

/// Errors returned by the store.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A commit or fsync failed earlier. Every later write fails with this error: the node must
    /// exit and recover from what is on disk.
    #[error("storage is poisoned by an earlier failed write; the node must restart")]
    Poisoned,
    /// An error of the fjall engine (I/O, journal recovery, lock held by another process).
    #[error("fjall: {0}")]
    Fjall(#[from] fjall::Error),
    /// An I/O error outside fjall (creating the data dir).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A Raft log entry failed its checksum, did not decode, or is not the entry its key names.
    #[error("corrupt raft log entry in shard {shard} at index {index}: {reason}")]
    CorruptEntry {
        /// The group whose log holds the entry.
        shard: ShardId,
        /// Index the key names.
        index: LogIndex,
        /// What was wrong.
        reason: String,
    },
    /// Any other record (hard state, snapshot meta, applied state, session, value, node meta)
    /// failed its checksum or did not decode.
    #[error("corrupt {record} record of shard {shard:?}: {reason}")]
    CorruptRecord {
        /// Kind of record (`"hard_state"`, `"value"`, ...).
        record: &'static str,
        /// The shard it belongs to, when it belongs to one (values and node meta do not).
        shard: Option<ShardId>,
        /// What was wrong.
        reason: String,
    },
    /// A key in a keyspace does not have the layout this crate writes.
    #[error("malformed key in keyspace {keyspace}: {len} bytes")]
    MalformedKey {
        /// The keyspace.
        keyspace: &'static str,
        /// Length of the key found.
        len: usize,
    },
    /// A snapshot stream was corrupt, truncated, out of order or for another shard. Nothing was
    /// written; the old data is intact.
    #[error("bad snapshot stream for shard {shard:?} at chunk {chunk}: {reason}")]
    BadSnapshot {
        /// The shard the stream claims (None when the header itself is unreadable).
        shard: Option<ShardId>,
        /// Zero-based position of the offending chunk in the stream.
        chunk: u64,
        /// What was wrong.
        reason: String,
    },
    /// A write that breaks the log's invariants (a gap, an append below the compaction point,
    /// entries out of order). This is a bug in the caller; nothing of the batch was written.
    #[error("invalid write to shard {shard}: {reason}")]
    InvalidWrite {
        /// The group.
        shard: ShardId,
        /// What was wrong.
        reason: String,
    },
    /// A record is larger than the configured maximum.
    #[error("record of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The configuration is invalid.
    #[error("invalid storage config: {0}")]
    InvalidConfig(&'static str),
    /// The writer thread is gone (it panicked or the store is shutting down).
    #[error("the storage writer thread has stopped")]
    WriterStopped,
    /// A write failed because the data dir's filesystem is full. The store is poisoned like for
    /// any failed write (the node must stop); nothing acknowledged is lost, and the node recovers
    /// on restart once space was freed.
    #[error(
        "no space left on the data dir's filesystem ({path}): {reason}; the store stopped accepting writes. Free space (or grow the filesystem) and restart the node"
    )]
    NoSpace {
        /// The data dir.
        path: std::path::PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// A write or fsync on the data dir failed with an I/O error other than a full disk (EIO from
    /// a failing device, for example). The store is poisoned: nothing written after it is ever
    /// acknowledged (after a failed fsync the kernel may have dropped the dirty pages, so a retried
    /// fsync proves nothing). Writes acknowledged before it are on disk; the node recovers them
    /// on restart, once the disk works again.
    #[error(
        "a write or fsync on the data dir ({path}) failed: {reason}; the store stopped accepting writes (none is acknowledged after this). Check the disk and restart the node"
    )]
    DiskFailed {
        /// The data dir.
        path: std::path::PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// Recovery found fewer group commits than the durable mark says were acknowledged: the
    /// journal (or a table file) was damaged and fjall dropped acknowledged writes (Raft entries,
    /// votes). The node must not start with this data dir; see docs/node.md ("Damaged journals").
    #[error(
        "acknowledged writes are missing from {path}: recovery found group commit {recovered}, \
         but commit {marked} was durable (durable.mark); shards affected: {}; the journal or a \
         table file is damaged. Replace this node's data (docs/node.md, \"Damaged journals\")",
        lost_shards(.shards, *.more)
    )]
    LostWrites {
        /// The data dir.
        path: std::path::PathBuf,
        /// The newest group commit recovery found.
        recovered: u64,
        /// The newest group commit the mark records as durable.
        marked: u64,
        /// Shards written by the last marked commits: last index the mark recorded, and last
        /// index recovered.
        shards: Vec<LostShard>,
        /// Whether more shards than listed were written by those commits.
        more: bool,
    },
    /// The durable mark is missing or unreadable while the data dir holds group commits: the
    /// store cannot tell whether recovery lost acknowledged writes.
    #[error(
        "durable mark {path} is unusable: {reason}; the data dir cannot be trusted (docs/node.md, \"Damaged journals\")"
    )]
    MarkMissing {
        /// The mark file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A shard's snapshot is larger than `StoreConfig::snapshot_bytes_max` (the node's
    /// `storage.snapshot_max_mib`), on the sending or the receiving side: the shard cannot gain
    /// a replica this way until the limit is raised on both nodes or the shard is split.
    #[error(
        "the snapshot of shard {shard} exceeds the limit of {max} bytes \
         (storage.snapshot_max_mib): raise it on every node, or split the shard"
    )]
    SnapshotTooLarge {
        /// The shard.
        shard: ShardId,
        /// The limit.
        max: u64,
    },
}

/// A shard named by [`Error::LostWrites`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LostShard {
    /// The shard.
    pub shard: ShardId,
    /// Its last log index as of the newest durable mark.
    pub marked_last: LogIndex,
    /// Its last log index after recovery.
    pub recovered_last: LogIndex,
}

fn lost_shards(shards: &[LostShard], more: bool) -> String {
    let mut text = shards
        .iter()
        .map(|s| {
            format!(
                "{} (log up to {} acknowledged, {} recovered)",
                s.shard, s.marked_last, s.recovered_last
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    if more {
        text.push_str(" and others");
    }
    if text.is_empty() {
        text.push_str("unknown");
    }
    text
}

impl Error {
    /// Whether the node must stop: the disk state after this error is unknown.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::Poisoned
                | Error::WriterStopped
                | Error::Fjall(_)
                | Error::Io(_)
                | Error::NoSpace { .. }
                | Error::DiskFailed { .. }
        )
    }

    /// Whether the store could not be opened because another process holds its directory
    /// lock (a running node).
    pub fn is_locked(&self) -> bool {
        matches!(self, Error::Fjall(fjall::Error::Locked))
    }

    /// Whether the filesystem was full (`ENOSPC`, `EDQUOT`) somewhere in `error`'s chain.
    pub(crate) fn is_storage_full(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut current = Some(error);
        while let Some(error) = current {
            if let Some(io) = error.downcast_ref::<std::io::Error>()
                && matches!(
                    io.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                )
            {
                return true;
            }
            current = error.source();
        }
        false
    }

    /// The first I/O error in `error`'s chain, as text (`Input/output error (os error 5)`).
    pub(crate) fn io_error_text(error: &(dyn std::error::Error + 'static)) -> Option<String> {
        let mut current = Some(error);
        while let Some(error) = current {
            if let Some(io) = error.downcast_ref::<std::io::Error>() {
                return Some(io.to_string());
            }
            current = error.source();
        }
        None
    }

    pub(crate) fn corrupt_entry(shard: ShardId, index: LogIndex, reason: impl ToString) -> Self {
        Error::CorruptEntry {
            shard,
            index,
            reason: reason.to_string(),
        }
    }

    pub(crate) fn corrupt_record(
        record: &'static str,
        shard: Option<ShardId>,
        reason: impl ToString,
    ) -> Self {
        Error::CorruptRecord {
            record,
            shard,
            reason: reason.to_string(),
        }
    }
}

impl From<Error> for ringkv_raft::StorageError {
    fn from(error: Error) -> Self {
        ringkv_raft::StorageError::Other(error.to_string())
    }
}

/// Result alias for the storage crate.
pub type Result<T> = std::result::Result<T, Error>;
