//! Producing a consistent snapshot of one shard as a stream of chunks.

use crate::codec;
use crate::command::SessionRecord;
use crate::error::{Error, Result};
use crate::group_state::AppliedState;
use crate::keys;
use crate::snapshot_chunk::Chunk;
use crate::store::{Shared, Store, decode_value};
use bytes::Bytes;
use fjall::Readable;
use ringkv_types::ShardId;
use ringkv_types::raft::{ConfState, SnapshotMeta};
use ringkv_types::ring::Arc;
use std::ops::Bound;

/// A consistent snapshot of one shard, read as an iterator of encoded chunks (each an envelope
/// with its own crc32, ready to send). See [`Store::snapshot_chunks`].
///
/// It holds a fjall snapshot: the LSM keeps the versions it reads until the iterator is
/// dropped, so send it promptly and drop it.
pub struct SnapshotChunks {
    shared: std::sync::Arc<Shared>,
    shard: ShardId,
    snapshot: fjall::Snapshot,
    phase: Phase,
    header: Option<Chunk>,
    data: fjall::Iter,
    sessions: fjall::Iter,
    sequence: u64,
    pairs: u64,
    /// Key and value bytes read so far (checked against `snapshot_bytes_max`).
    bytes: u64,
    session_count: u64,
    scratch: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Header,
    Data,
    Sessions,
    Trailer,
    Done,
}

impl Store {
    /// A consistent snapshot of `shard`: the data in `arc`, its sessions, applied index and term
    /// and configuration, all as of one instant. The caller passes the shard's arc from its
    /// descriptor.
    ///
    /// # Errors
    /// Corrupt applied state or configuration; I/O. Later errors (a corrupt value) come from
    /// the iterator, which then ends.
    pub fn snapshot_chunks(&self, shard: ShardId, arc: Arc) -> Result<SnapshotChunks> {
        let shared = self.shared.clone();
        let snapshot = shared.db.snapshot();
        let max = shared.config.record_bytes_max;
        let read = |kind: u8| -> Result<Option<fjall::Slice>> {
            Ok(snapshot.get(&shared.raft_state, keys::state_key(shard, kind))?)
        };
        let applied: AppliedState = match read(keys::KIND_APPLIED)? {
            Some(bytes) => codec::decode(&bytes, max)
                .map_err(|reason| Error::corrupt_record("applied", Some(shard), reason))?,
            None => AppliedState::default(),
        };
        let conf: ConfState = match read(keys::KIND_CONF)? {
            Some(bytes) => codec::decode(&bytes, max)
                .map_err(|reason| Error::corrupt_record("conf_state", Some(shard), reason))?,
            None => match read(keys::KIND_SNAPSHOT_META)? {
                Some(bytes) => {
                    codec::decode::<SnapshotMeta>(&bytes, max)
                        .map_err(|reason| {
                            Error::corrupt_record("snapshot_meta", Some(shard), reason)
                        })?
                        .conf
                }
                None => ConfState::default(),
            },
        };
        let (lower, upper) = arc.storage_bounds();
        let upper = upper.map_or(Bound::Unbounded, Bound::Excluded);
        let data = snapshot.range(&shared.data, (Bound::Included(lower), upper));
        let sessions = snapshot.prefix(&shared.raft_state, keys::session_prefix(shard));
        let meta = SnapshotMeta {
            index: applied.index,
            term: applied.term,
            conf,
        };
        Ok(SnapshotChunks {
            shared,
            shard,
            snapshot,
            phase: Phase::Header,
            header: Some(Chunk::Header { shard, arc, meta }),
            data,
            sessions,
            sequence: 0,
            pairs: 0,
            bytes: 0,
            session_count: 0,
            scratch: Vec::new(),
        })
    }
}

impl SnapshotChunks {
    /// The metadata the stream's header carries: applied index and term and configuration.
    pub fn meta(&self) -> Option<&SnapshotMeta> {
        match &self.header {
            Some(Chunk::Header { meta, .. }) => Some(meta),
            _ => None,
        }
    }

    fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        let budget = self.shared.config.snapshot_chunk_bytes;
        let max = self.shared.config.record_bytes_max;
        loop {
            match self.phase {
                Phase::Header => {
                    self.phase = Phase::Data;
                    return Ok(self.header.clone());
                }
                Phase::Data => {
                    let mut pairs = Vec::new();
                    let mut bytes = 0usize;
                    while bytes < budget {
                        let Some(guard) = self.data.next() else { break };
                        let (key, value) = guard.into_inner()?;
                        let stored = decode_value(&value, max)?;
                        bytes += key.len() + stored.value.len() + 16;
                        pairs.push((
                            Bytes::copy_from_slice(&key),
                            stored.version,
                            stored.expires_at_ms,
                            stored.value,
                        ));
                    }
                    if pairs.is_empty() {
                        self.phase = Phase::Sessions;
                        continue;
                    }
                    self.pairs += pairs.len() as u64;
                    self.bytes += bytes as u64;
                    let max = self.shared.config.snapshot_bytes_max;
                    if self.bytes > max {
                        return Err(Error::SnapshotTooLarge {
                            shard: self.shard,
                            max,
                        });
                    }
                    let sequence = self.sequence;
                    if pairs
                        .iter()
                        .any(|(_, _, expires_at_ms, _)| *expires_at_ms != 0)
                    {
                        return Ok(Some(Chunk::ExpiringData { sequence, pairs }));
                    }
                    let pairs = pairs
                        .into_iter()
                        .map(|(key, version, _, value)| (key, version, value))
                        .collect();
                    return Ok(Some(Chunk::VersionedData { sequence, pairs }));
                }
                Phase::Sessions => {
                    let mut sessions = Vec::new();
                    let mut bytes = 0usize;
                    while bytes < budget {
                        let Some(guard) = self.sessions.next() else {
                            break;
                        };
                        let (key, value) = guard.into_inner()?;
                        let session = keys::parse_session_key(&key)?;
                        let record = SessionRecord::decode(&value, max).map_err(|reason| {
                            Error::corrupt_record("session", Some(self.shard), reason)
                        })?;
                        bytes += value.len() + 8;
                        sessions.push((session, record));
                    }
                    if sessions.is_empty() {
                        self.phase = Phase::Trailer;
                        continue;
                    }
                    self.session_count += sessions.len() as u64;
                    return Ok(Some(Chunk::Sessions {
                        sequence: self.sequence,
                        sessions,
                    }));
                }
                Phase::Trailer => {
                    self.phase = Phase::Done;
                    return Ok(Some(Chunk::Trailer {
                        sequence: self.sequence,
                        pairs: self.pairs,
                        sessions: self.session_count,
                    }));
                }
                Phase::Done => return Ok(None),
            }
        }
    }
}

impl Iterator for SnapshotChunks {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_chunk() {
            Ok(Some(chunk)) => {
                self.sequence += 1;
                let mut out = Vec::new();
                codec::encode_into(&chunk, &mut self.scratch, &mut out);
                Some(Ok(out))
            }
            Ok(None) => None,
            Err(error) => {
                self.phase = Phase::Done;
                Some(Err(error))
            }
        }
    }
}

impl std::fmt::Debug for SnapshotChunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotChunks")
            .field("shard", &self.shard)
            .field("sequence", &self.sequence)
            .field("seqno", &self.snapshot.seqno())
            .finish_non_exhaustive()
    }
}
