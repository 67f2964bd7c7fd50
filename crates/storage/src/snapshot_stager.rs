//! [`SnapshotStager`]: step 1 of an install (see `snapshot_install`), checking a snapshot
//! stream chunk by chunk and writing it into the staging keyspace, off the node's event loop.

use crate::codec;
use crate::command::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
use crate::error::{Error, Result};
use crate::keys;
use crate::snapshot_chunk::Chunk;
use crate::snapshot_install::PreparedSnapshot;
use crate::snapshot_move::delete_staging;
use crate::store::{Shared, Store};
use bytes::Bytes;
use fjall::PersistMode;
use ringkv_types::ShardId;
use ringkv_types::envelope::HEADER_LEN;
use ringkv_types::raft::SnapshotMeta;
use ringkv_types::ring::Arc;
use std::sync::atomic::Ordering;

/// Validates a snapshot stream chunk by chunk and writes it into the staging keyspace (see the
/// module docs). Made by [`Store::snapshot_stager`]; call [`push`](Self::push) per chunk, then
/// [`finish`](Self::finish). Dropped unfinished (or after an error), it deletes what it staged.
pub struct SnapshotStager {
    shared: std::sync::Arc<Shared>,
    shard: ShardId,
    staging: u64,
    header: Option<(Arc, SnapshotMeta)>,
    last_key: Option<Bytes>,
    last_session: Option<u64>,
    sessions_started: bool,
    finished: bool,
    failed: bool,
    position: u64,
    pairs: u64,
    sessions: u64,
    bytes: u64,
    chunk_max: u64,
    done: bool,
}

impl std::fmt::Debug for SnapshotStager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStager")
            .field("shard", &self.shard)
            .field("staging", &self.staging)
            .field("position", &self.position)
            .field("pairs", &self.pairs)
            .finish_non_exhaustive()
    }
}

impl SnapshotStager {
    /// The staging id of this install.
    pub fn staging_id(&self) -> u64 {
        self.staging
    }

    /// Drops the stager without deleting what it staged, as a crash would (tests).
    #[doc(hidden)]
    pub fn abandon(mut self) {
        self.done = true;
    }

    /// Chunks accepted so far.
    pub fn chunks(&self) -> u64 {
        self.position
    }

    /// Checks one encoded chunk and stages its contents.
    ///
    /// # Errors
    /// [`Error::BadSnapshot`] as [`Store::prepare_snapshot`] describes; I/O. After an error the
    /// stager refuses every further chunk.
    pub fn push(&mut self, chunk: &[u8]) -> Result<()> {
        if self.failed {
            return Err(self.bad("the stream already failed".into()));
        }
        let outcome = self.push_inner(chunk);
        if outcome.is_err() {
            self.failed = true;
        } else {
            self.position += 1;
        }
        outcome
    }

    fn bad(&self, reason: String) -> Error {
        Error::BadSnapshot {
            shard: Some(self.shard),
            chunk: self.position,
            reason,
        }
    }

    /// Stages one chunk of data pairs `(storage key, version, value)` in the stored value
    /// format, checking order, arc and sizes.
    fn stage_data(&mut self, sequence: u64, pairs: Vec<(Bytes, u64, u64, Bytes)>) -> Result<()> {
        if sequence != self.position {
            return Err(self.bad(format!("chunk carries sequence {sequence}")));
        }
        if self.sessions_started {
            return Err(self.bad("data after sessions".into()));
        }
        let Some((arc, _)) = self.header.as_ref() else {
            return Err(self.bad("stream does not start with a header".into()));
        };
        let arc = *arc;
        let shared = self.shared.clone();
        let max = shared.config.snapshot_bytes_max;
        let mut batch = shared.db.batch();
        for (key, version, expires_at_ms, value) in pairs {
            let position_bytes: [u8; 8] = key
                .get(..8)
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| self.bad(format!("data key of {} bytes", key.len())))?;
            if !arc.contains(u64::from_be_bytes(position_bytes)) {
                return Err(self.bad("data key outside the shard's arc".into()));
            }
            if self.last_key.as_ref().is_some_and(|last| *last >= key) {
                return Err(self.bad("data keys not strictly ascending".into()));
            }
            if key.len() > KEY_BYTES_MAX + 8 {
                return Err(self.bad(format!("data key of {} bytes", key.len())));
            }
            if value.len() > VALUE_BYTES_MAX {
                return Err(self.bad(format!("value of {} bytes", value.len())));
            }
            self.bytes += (key.len() + value.len()) as u64;
            if self.bytes > max {
                return Err(Error::SnapshotTooLarge {
                    shard: self.shard,
                    max,
                });
            }
            batch.insert(
                &shared.staging,
                keys::staged_data_key(self.staging, &key),
                crate::value::encode(&value, version, expires_at_ms),
            );
            self.pairs += 1;
            self.last_key = Some(key);
        }
        shared.commit_staging(batch)
    }

    fn push_inner(&mut self, chunk: &[u8]) -> Result<()> {
        if self.finished {
            return Err(self.bad("chunk after the trailer".into()));
        }
        let decoded: Chunk =
            codec::decode(chunk, self.chunk_max).map_err(|reason| self.bad(reason))?;
        let check_sequence = |sequence: u64| {
            if sequence == self.position {
                Ok(())
            } else {
                Err(self.bad(format!("chunk carries sequence {sequence}")))
            }
        };
        let shared = self.shared.clone();
        match (decoded, self.header.as_ref()) {
            (
                Chunk::Header {
                    shard: stream_shard,
                    arc,
                    meta,
                },
                None,
            ) => {
                if stream_shard != self.shard {
                    return Err(self.bad(format!("stream is for shard {stream_shard}")));
                }
                self.header = Some((arc, meta));
            }
            (Chunk::Header { .. }, Some(_)) => return Err(self.bad("second header".into())),
            (_, None) => return Err(self.bad("stream does not start with a header".into())),
            (Chunk::Data { sequence, pairs }, Some(_)) => {
                let pairs = pairs
                    .into_iter()
                    .map(|(key, value)| (key, 0, 0, value))
                    .collect();
                self.stage_data(sequence, pairs)?;
            }
            (Chunk::VersionedData { sequence, pairs }, Some(_)) => {
                let pairs = pairs
                    .into_iter()
                    .map(|(key, version, value)| (key, version, 0, value))
                    .collect();
                self.stage_data(sequence, pairs)?;
            }
            (Chunk::ExpiringData { sequence, pairs }, Some(_)) => {
                self.stage_data(sequence, pairs)?;
            }
            (Chunk::Sessions { sequence, sessions }, Some(_)) => {
                check_sequence(sequence)?;
                self.sessions_started = true;
                let mut batch = shared.db.batch();
                for (id, record) in sessions {
                    if self.last_session.is_some_and(|last| last >= id) {
                        return Err(self.bad("session ids not strictly ascending".into()));
                    }
                    self.bytes += 16 + 8 * record.result.len() as u64;
                    batch.insert(
                        &shared.staging,
                        keys::staged_session_key(self.staging, id).to_vec(),
                        codec::encode(&record),
                    );
                    self.sessions += 1;
                    self.last_session = Some(id);
                }
                shared.commit_staging(batch)?;
            }
            (
                Chunk::Trailer {
                    sequence,
                    pairs,
                    sessions,
                },
                Some(_),
            ) => {
                check_sequence(sequence)?;
                if pairs != self.pairs || sessions != self.sessions {
                    return Err(self.bad(format!(
                        "trailer counts {pairs} pairs and {sessions} sessions, stream had {} \
                         and {}",
                        self.pairs, self.sessions
                    )));
                }
                self.finished = true;
            }
        }
        Ok(())
    }

    /// Ends the stream: checks that the trailer came, makes the staged data durable and hands
    /// over the install.
    ///
    /// # Errors
    /// [`Error::BadSnapshot`] for a stream that ended before its trailer (or failed); I/O.
    pub fn finish(mut self) -> Result<PreparedSnapshot> {
        let Some((arc, meta)) = self.header.clone() else {
            return Err(self.bad("stream ended before its trailer".into()));
        };
        if !self.finished || self.failed {
            return Err(self.bad("stream ended before its trailer".into()));
        }
        // IMPORTANT: the staged data must be durable before a marker can point at it.
        self.shared
            .db
            .persist(PersistMode::SyncData)
            .map_err(|error| self.shared.write_error(error))?;
        self.done = true;
        Ok(PreparedSnapshot {
            shard: self.shard,
            arc,
            meta,
            staging: self.staging,
            pairs: self.pairs,
            sessions: self.sessions,
            bytes: self.bytes,
            shared: Some(self.shared.clone()),
        })
    }
}

impl Drop for SnapshotStager {
    fn drop(&mut self) {
        if !self.done {
            // Runs where the stager ran (off the event loop); a failure leaves garbage that the
            // next open deletes.
            let _ = delete_staging(&self.shared, self.staging);
        }
    }
}

impl Shared {
    /// Commits a staging batch: not synced (the stager syncs once at the end), and a failure
    /// does not poison the store (nothing acknowledged depends on staging data).
    pub(crate) fn commit_staging(&self, batch: fjall::OwnedWriteBatch) -> Result<()> {
        self.check_writable()?;
        batch.commit().map_err(|error| {
            // A failed journal write leaves the journal's contents unknown, as in the group
            // commit: nothing may be acknowledged after it.
            self.poison();
            self.write_error(error)
        })?;
        self.limit_write_buffer();
        Ok(())
    }

    /// Queues staging data for deletion by the writer (a prepared snapshot never installed).
    pub(crate) fn discard_staging(&self, staging: u64) {
        self.staging_garbage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(staging);
    }

    /// Deletes the staging data queued by [`discard_staging`](Self::discard_staging).
    pub(crate) fn collect_staging_garbage(&self) -> Result<()> {
        let ids = std::mem::take(
            &mut *self
                .staging_garbage
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for id in ids {
            delete_staging(self, id)?;
        }
        Ok(())
    }
}

impl Store {
    /// Starts staging a snapshot stream for `shard` (see the module docs). Use it off the
    /// node's event loop: every chunk is written to disk as it is pushed.
    pub fn snapshot_stager(&self, shard: ShardId) -> SnapshotStager {
        let config = &self.shared.config;
        SnapshotStager {
            shared: self.shared.clone(),
            shard,
            staging: self.shared.next_staging.fetch_add(1, Ordering::Relaxed),
            header: None,
            last_key: None,
            last_session: None,
            sessions_started: false,
            finished: false,
            failed: false,
            position: 0,
            pairs: 0,
            sessions: 0,
            bytes: 0,
            chunk_max: config.snapshot_chunk_bytes as u64 + config.record_bytes_max + 4096,
            done: false,
        }
    }
}

const _: () = assert!(
    HEADER_LEN == 9,
    "chunk_max above assumes the 9-byte envelope header"
);
