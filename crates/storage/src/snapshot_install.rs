//! Validating a snapshot stream and installing it.
//!
//! Choice: validate everything first, then write everything in ONE batch. `prepare_snapshot`
//! decodes and checks every chunk (crc32, order, shard, arc, counts, trailer) and keeps the
//! contents in memory; only a fully valid stream becomes a [`PreparedSnapshot`], which the
//! group-commit writer turns into one atomic fjall batch: tombstones for keys of the old range
//! that the snapshot does not hold, the new data and sessions, applied state, configuration and
//! the log's new compaction point. A corrupt or truncated stream is rejected before anything is
//! written; a crash during the install leaves either the old or the new state.
//!
//! Memory bound: the whole snapshot (keys + values + sessions), limited by
//! [`StoreConfig::snapshot_bytes_max`](crate::StoreConfig::snapshot_bytes_max), plus the
//! old range's keys not in the snapshot while the batch is built. fjall's ingestion API would
//! avoid holding the data but bypasses the journal, so it cannot be atomic with the applied index;
//! shards are split well before they reach that size.

use crate::codec;
use crate::command::{KEY_BYTES_MAX, SessionRecord, VALUE_BYTES_MAX};
use crate::error::{Error, Result};
use crate::group_state::{AppliedState, GroupState};
use crate::keys;
use crate::snapshot_chunk::Chunk;
use crate::store::{Shared, Store};
use crate::write_batch::WriteBatchBuilder;
use crate::writer::Durable;
use bytes::Bytes;
use ringkv_types::ShardId;
use ringkv_types::envelope::{self, HEADER_LEN};
use ringkv_types::raft::SnapshotMeta;
use ringkv_types::ring::Arc;
use std::ops::Bound;

/// A fully validated snapshot, ready for [`WriteBatchBuilder::install_snapshot`].
#[derive(Debug)]
pub struct PreparedSnapshot {
    shard: ShardId,
    arc: Arc,
    meta: SnapshotMeta,
    pairs: Vec<(Bytes, Bytes)>,
    sessions: Vec<(u64, SessionRecord)>,
    bytes: u64,
}

impl PreparedSnapshot {
    /// The shard.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// The shard's arc.
    pub fn arc(&self) -> Arc {
        self.arc
    }

    /// Applied index and term and configuration of the snapshot.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// Data pairs held.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether the snapshot holds no data.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Key, value and session bytes held.
    pub fn size_bytes(&self) -> u64 {
        self.bytes
    }

    /// Adds the install to a group-commit batch and updates `state`'s applied position and
    /// configuration (the caller moves the log's compaction point).
    pub(crate) fn stage(
        self,
        shared: &Shared,
        batch: &mut fjall::OwnedWriteBatch,
        state: &mut GroupState,
    ) -> Result<()> {
        if self.meta.index < state.applied.index {
            return Err(Error::InvalidWrite {
                shard: self.shard,
                reason: format!(
                    "snapshot at {} is older than the applied index {}",
                    self.meta.index, state.applied.index
                ),
            });
        }
        let (lower, upper) = self.arc.storage_bounds();
        let upper = upper.map_or(Bound::Unbounded, Bound::Excluded);
        // Old keys the snapshot does not overwrite get a tombstone; a key must not be removed
        // and inserted in one batch (both would carry the same sequence number).
        let mut new_keys = self.pairs.iter().map(|(key, _)| key.as_ref()).peekable();
        for guard in shared.data.range((Bound::Included(lower), upper)) {
            let key = guard.key()?;
            while new_keys.next_if(|new| *new < key.as_ref()).is_some() {}
            if new_keys.peek() != Some(&key.as_ref()) {
                batch.remove(&shared.data, key);
            }
        }
        let mut new_sessions = self.sessions.iter().map(|(id, _)| *id).peekable();
        for guard in shared.raft_state.prefix(keys::session_prefix(self.shard)) {
            let key = guard.key()?;
            let id = keys::parse_session_key(&key)?;
            while new_sessions.next_if(|new| *new < id).is_some() {}
            if new_sessions.peek() != Some(&id) {
                batch.remove(&shared.raft_state, key);
            }
        }
        for (key, value) in self.pairs {
            batch.insert(&shared.data, key.to_vec(), envelope::encode(&value));
        }
        for (id, record) in &self.sessions {
            batch.insert(
                &shared.raft_state,
                keys::session_key(self.shard, *id).to_vec(),
                codec::encode(record),
            );
        }
        let applied = AppliedState {
            index: self.meta.index,
            term: self.meta.term,
        };
        batch.insert(
            &shared.raft_state,
            keys::state_key(self.shard, keys::KIND_APPLIED).to_vec(),
            codec::encode(&applied),
        );
        batch.insert(
            &shared.raft_state,
            keys::state_key(self.shard, keys::KIND_CONF).to_vec(),
            codec::encode(&self.meta.conf),
        );
        state.applied = applied;
        state.conf = Some(self.meta.conf);
        Ok(())
    }
}

impl Store {
    /// Validates a whole snapshot stream for `shard`. Nothing is written.
    ///
    /// # Errors
    /// [`Error::BadSnapshot`] for a chunk that fails its crc32 or does not decode, a stream for
    /// another shard, chunks out of order, keys outside the arc or not ascending, a stream that
    /// ends before its trailer or continues after it, counts that disagree with the trailer, or
    /// a snapshot over `snapshot_bytes_max`. Errors from the iterator itself are returned as is.
    pub fn prepare_snapshot<I, C>(&self, shard: ShardId, chunks: I) -> Result<PreparedSnapshot>
    where
        I: IntoIterator<Item = Result<C>>,
        C: AsRef<[u8]>,
    {
        let config = &self.shared.config;
        let chunk_max = config.snapshot_chunk_bytes as u64 + config.record_bytes_max + 4096;
        let mut prepared: Option<PreparedSnapshot> = None;
        let mut finished = false;
        let mut sessions_started = false;
        let mut position = 0u64;
        for chunk in chunks {
            let chunk = chunk?;
            let bad = |reason: String| Error::BadSnapshot {
                shard: Some(shard),
                chunk: position,
                reason,
            };
            if finished {
                return Err(bad("chunk after the trailer".into()));
            }
            let decoded: Chunk = codec::decode(chunk.as_ref(), chunk_max).map_err(bad)?;
            let check_sequence = |sequence: u64| {
                if sequence == position {
                    Ok(())
                } else {
                    Err(bad(format!("chunk carries sequence {sequence}")))
                }
            };
            match (decoded, prepared.as_mut()) {
                (
                    Chunk::Header {
                        shard: stream_shard,
                        arc,
                        meta,
                    },
                    None,
                ) => {
                    if stream_shard != shard {
                        return Err(bad(format!("stream is for shard {stream_shard}")));
                    }
                    prepared = Some(PreparedSnapshot {
                        shard,
                        arc,
                        meta,
                        pairs: Vec::new(),
                        sessions: Vec::new(),
                        bytes: 0,
                    });
                }
                (Chunk::Header { .. }, Some(_)) => return Err(bad("second header".into())),
                (_, None) => return Err(bad("stream does not start with a header".into())),
                (Chunk::Data { sequence, pairs }, Some(snapshot)) => {
                    check_sequence(sequence)?;
                    if sessions_started {
                        return Err(bad("data after sessions".into()));
                    }
                    for (key, value) in pairs {
                        let position_bytes: [u8; 8] = key
                            .get(..8)
                            .and_then(|bytes| bytes.try_into().ok())
                            .ok_or_else(|| bad(format!("data key of {} bytes", key.len())))?;
                        if !snapshot.arc.contains(u64::from_be_bytes(position_bytes)) {
                            return Err(bad("data key outside the shard's arc".into()));
                        }
                        if snapshot.pairs.last().is_some_and(|(last, _)| *last >= key) {
                            return Err(bad("data keys not strictly ascending".into()));
                        }
                        if key.len() > KEY_BYTES_MAX + 8 {
                            return Err(bad(format!("data key of {} bytes", key.len())));
                        }
                        if value.len() > VALUE_BYTES_MAX {
                            return Err(bad(format!("value of {} bytes", value.len())));
                        }
                        snapshot.bytes += (key.len() + value.len()) as u64;
                        snapshot.pairs.push((key, value));
                    }
                    if snapshot.bytes > config.snapshot_bytes_max {
                        return Err(bad(format!(
                            "snapshot exceeds snapshot_bytes_max ({})",
                            config.snapshot_bytes_max
                        )));
                    }
                }
                (Chunk::Sessions { sequence, sessions }, Some(snapshot)) => {
                    check_sequence(sequence)?;
                    sessions_started = true;
                    for (id, record) in sessions {
                        if snapshot
                            .sessions
                            .last()
                            .is_some_and(|(last, _)| *last >= id)
                        {
                            return Err(bad("session ids not strictly ascending".into()));
                        }
                        snapshot.bytes += 16 + 8 * record.result.len() as u64;
                        snapshot.sessions.push((id, record));
                    }
                }
                (
                    Chunk::Trailer {
                        sequence,
                        pairs,
                        sessions,
                    },
                    Some(snapshot),
                ) => {
                    check_sequence(sequence)?;
                    if pairs != snapshot.pairs.len() as u64
                        || sessions != snapshot.sessions.len() as u64
                    {
                        return Err(bad(format!(
                            "trailer counts {pairs} pairs and {sessions} sessions, stream had {} \
                             and {}",
                            snapshot.pairs.len(),
                            snapshot.sessions.len()
                        )));
                    }
                    finished = true;
                }
            }
            position += 1;
        }
        match prepared {
            Some(snapshot) if finished => Ok(snapshot),
            _ => Err(Error::BadSnapshot {
                shard: Some(shard),
                chunk: position,
                reason: "stream ended before its trailer".into(),
            }),
        }
    }

    /// Validates `chunks` and installs them in one durable group commit (see the module docs):
    /// [`Store::prepare_snapshot`], [`WriteBatchBuilder::install_snapshot`], [`Store::write`].
    /// Nothing else of the shard may be applied meanwhile.
    ///
    /// # Errors
    /// As [`Store::prepare_snapshot`] (the old data is then intact) and [`Store::write`].
    pub fn install_snapshot<I, C>(&self, shard: ShardId, chunks: I) -> Result<Durable>
    where
        I: IntoIterator<Item = Result<C>>,
        C: AsRef<[u8]>,
    {
        let snapshot = self.prepare_snapshot(shard, chunks)?;
        let mut batch = WriteBatchBuilder::new();
        batch.install_snapshot(snapshot);
        self.write(batch)
    }
}

const _: () = assert!(
    HEADER_LEN == 9,
    "chunk_max above assumes the 9-byte envelope header"
);
