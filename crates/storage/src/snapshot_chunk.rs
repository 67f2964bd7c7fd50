//! The snapshot stream format: a sequence of chunks, each `envelope(postcard(Chunk))`.
//!
//! ```text
//! chunk 0      Header   { shard, arc, meta (applied index, term, conf) }
//! chunk 1..    VersionedData { sequence, pairs: [(storage key, version, value)] } keys
//!              ascending, in the arc (older builds wrote Data { pairs: [(key, value)] }: version 0)
//!              or ExpiringData { sequence, pairs: [(storage key, version, expires_at_ms, value)] }
//!              for a chunk holding a value with a TTL (written only then, so a snapshot of a
//!              store without TTLs stays readable by the build before them)
//! chunk ..     Sessions { sequence, sessions: [(session id, record)] } ids ascending
//! last chunk   Trailer  { sequence, pairs, sessions }                 counts of the whole stream
//! ```
//! Every chunk carries its position (`sequence`), so a dropped, repeated or reordered chunk is
//! detected; the trailer's counts detect a stream cut at a chunk boundary.

use crate::command::SessionRecord;
use bytes::Bytes;
use ringkv_types::ShardId;
use ringkv_types::raft::SnapshotMeta;
use ringkv_types::ring::Arc;
use serde::{Deserialize, Serialize};

/// One chunk of a snapshot stream (before the envelope).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Chunk {
    /// What the snapshot is of.
    Header {
        /// The shard.
        shard: ShardId,
        /// Its arc: every data key lies in it.
        arc: Arc,
        /// Applied index and term, and the configuration there.
        meta: SnapshotMeta,
    },
    /// A run of data.
    Data {
        /// Position of the chunk in the stream.
        sequence: u64,
        /// Storage keys and user values, ascending by key.
        pairs: Vec<(Bytes, Bytes)>,
    },
    /// A run of the session table.
    Sessions {
        /// Position of the chunk in the stream.
        sequence: u64,
        /// Session ids and records, ascending by id.
        sessions: Vec<(u64, SessionRecord)>,
    },
    /// End of the stream.
    Trailer {
        /// Position of the chunk in the stream.
        sequence: u64,
        /// Data pairs in the stream.
        pairs: u64,
        /// Sessions in the stream.
        sessions: u64,
    },
    /// A run of data with each value's version (written by builds with versions; a
    /// [`Chunk::Data`] pair installs as version 0). Appended last: postcard numbers variants.
    VersionedData {
        /// Position of the chunk in the stream.
        sequence: u64,
        /// Storage keys, versions and user values, ascending by key.
        pairs: Vec<(Bytes, u64, Bytes)>,
    },
    /// [`Chunk::VersionedData`] with each value's expiry (log time in ms, 0 = none); written
    /// for a chunk in which some value has a TTL. Appended last: postcard numbers variants.
    ExpiringData {
        /// Position of the chunk in the stream.
        sequence: u64,
        /// Storage keys, versions, expiries and user values, ascending by key.
        pairs: Vec<(Bytes, u64, u64, Bytes)>,
    },
}
