//! Watches: a server-streaming subscription to the changes of one key or of every key under a
//! prefix, in one shard ([`Request::Watch`](crate::request::Request::Watch)).
//!
//! Every replica keeps a bounded history of the changes its shard applied, by log index; a
//! watch is served by the shard's leader from that history (catch-up) and then live, as the
//! leader applies. The stream is a sequence of [`WatchFrame`]s, each one codec frame: first
//! [`WatchFrame::Started`], then [`WatchFrame::Events`] in log order, and, when the server ends
//! the watch, one [`WatchFrame::End`] with the reason.
//!
//! Positions are the shard's log indexes: a watch resumes with `after` = the `index` of the
//! last event it saw (or of `Started`), and gets every change at a larger index exactly once,
//! as long as the history still holds it (else [`WatchEnd::Compacted`]).

use crate::ids::ShardId;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// What a watch covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WatchTarget {
    /// One key (a stored key: namespaced for users).
    Key(Bytes),
    /// Every key starting with these bytes (users: a namespaced prefix, `len ‖ namespace ‖ ..`).
    Prefix(Bytes),
}

impl WatchTarget {
    /// Whether `key` is covered.
    pub fn covers(&self, key: &[u8]) -> bool {
        match self {
            WatchTarget::Key(target) => target.as_ref() == key,
            WatchTarget::Prefix(prefix) => key.starts_with(prefix),
        }
    }

    /// The key or prefix bytes.
    pub fn bytes(&self) -> &Bytes {
        match self {
            WatchTarget::Key(bytes) | WatchTarget::Prefix(bytes) => bytes,
        }
    }
}

/// A watch of one shard.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WatchRequest {
    /// The shard to watch (a key watch: the key's shard).
    pub shard: ShardId,
    /// The key or prefix.
    pub target: WatchTarget,
    /// Resume point: every change at a log index larger than this one. `None`: from now (the
    /// leader's applied index, reported in [`WatchFrame::Started`]). [`FROM_CREATION`]: from
    /// the shard's creation (for a shard made by a split, after the split: the parent's
    /// watches delivered the changes before it).
    pub after: Option<u64>,
}

/// [`WatchRequest::after`] for "from the shard's creation". No change is at index 0 (a shard's
/// log starts at index 5 or at its split), so it is never a real resume point.
pub const FROM_CREATION: u64 = 0;

/// What happened to a key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WatchEventKind {
    /// Written (put, compare-and-swap, batch, persist).
    Put {
        /// The new value.
        value: Bytes,
    },
    /// Deleted by a client.
    Delete,
    /// Removed because its TTL ran out (the leader's `Expire` entry).
    Expire,
}

/// One change of one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WatchEvent {
    /// The stored key (namespaced for users).
    pub key: Bytes,
    /// What happened.
    pub kind: WatchEventKind,
    /// The key's version after a put (the value's version); for a delete, the version the
    /// deletion had (larger than the deleted value's).
    pub version: u64,
    /// The shard log index of the entry: the resume point.
    pub index: u64,
}

impl WatchEvent {
    /// Bytes the event holds, for the bounds on histories and buffers.
    pub fn size(&self) -> usize {
        let value = match &self.kind {
            WatchEventKind::Put { value } => value.len(),
            WatchEventKind::Delete | WatchEventKind::Expire => 0,
        };
        self.key.len() + value + 32
    }
}

/// Why the server ended a watch.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WatchEnd {
    /// The history no longer holds the changes after the asked `after`: the watch cannot
    /// resume without a gap. `oldest` is the smallest `after` the history can serve.
    Compacted {
        /// The smallest resume point this replica can serve now.
        oldest: u64,
    },
    /// The watcher did not read its events fast enough: its buffer
    /// (`watch.buffer_bytes_max`) filled and the watch was cancelled.
    SlowWatcher,
    /// The shard split at log index `index`; every change up to it was sent. The watcher
    /// refreshes its map and watches the shard(s) that own its keys now.
    ShardSplit {
        /// The split's log index.
        index: u64,
    },
    /// This replica stopped leading the shard (or lost it): resume at the new leader.
    NotLeader,
    /// The node is shutting down or dropped the shard's history (a snapshot was installed).
    Unavailable,
}

/// One frame of a watch stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchFrame {
    /// The watch is registered; changes after `index` follow (a resume: `index` is its
    /// `after`).
    Started {
        /// The shard watched.
        shard: ShardId,
        /// The position the stream starts after.
        index: u64,
    },
    /// Changes, in log order.
    Events(Vec<WatchEvent>),
    /// The server ended the watch; nothing follows.
    End(WatchEnd),
    /// The watch was refused (the first and only frame): not the leader, no such shard, a key
    /// outside the shard, permission denied, too many watchers (`Busy`).
    Refused(crate::wire_error::WireError),
}
