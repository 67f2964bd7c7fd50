//! Validating a snapshot stream and installing it with bounded memory.
//!
//! Choice: **stage, mark, move.** A snapshot is never held whole in memory and never written
//! in one batch; crash atomicity comes from a durable "install pending" marker instead.
//!
//! 1. **Staging** ([`SnapshotStager`], off the node's event loop). Each chunk is checked as it
//!    arrives (crc32 of its envelope, order, shard, arc, key order and sizes) and its pairs and
//!    sessions are written at once, one fjall batch per chunk, into the `snapshot_staging`
//!    keyspace under the install's id (see [`keys`](crate::keys)). Only the last key and the
//!    counts stay in memory. When the trailer's counts agree, the journal is synced and the
//!    stager yields a [`PreparedSnapshot`]: a small handle (shard, arc, meta, staging id).
//!    An invalid or truncated stream deletes its staging data and changes nothing live.
//! 2. **Mark** (the group-commit writer). [`WriteBatchBuilder::install_snapshot`] puts into the
//!    ordinary, durable group-commit batch an *install pending* record (shard, arc, meta,
//!    staging id) together with the new applied state, configuration, compaction point and
//!    whatever else the caller adds (descriptor, hard state). This batch is small.
//! 3. **Move** (the writer, right after that commit, before it answers the ticket). The live
//!    range is merged with the staged data in bounded batches (`snapshot_chunk_bytes` each):
//!    old keys absent from the snapshot are deleted, staged keys are put; sessions likewise.
//!    A final synced batch removes the marker, then the staging data is deleted in bounded
//!    batches.
//!
//! **Recovery** ([`Store::open`](crate::Store::open)): a present marker means its move is redone
//! (the merge is idempotent: it converges on the staged contents whatever part was done) before
//! anything else can read the store; staging data without a marker is garbage and is deleted.
//! So after a crash the shard is either in its old state (no marker: nothing live was touched)
//! or, once recovery ran, wholly in the new one. Within a running node, the move happens
//! before the writer answers the install's ticket, and the node serves the shard's reads and
//! applies its entries only after that ticket (see `installing` in the node's event loop), so
//! the half-moved range is never served.
//!
//! Costs: memory is one chunk and one move batch; the writer (so every group's commits) waits
//! while a snapshot's data moves, about as long as writing the data once more. A
//! [`PreparedSnapshot`] dropped without being installed (the Raft core refused it) leaves its
//! id on a list the writer deletes before its next batch.

use crate::codec;
use crate::command::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
use crate::error::{Error, Result};
use crate::group_state::{AppliedState, GroupState};
use crate::keys;
use crate::snapshot_chunk::Chunk;
use crate::store::{Shared, Store};
use crate::write_batch::WriteBatchBuilder;
use crate::writer::Durable;
use bytes::Bytes;
use fjall::{PersistMode, Readable};
use ringkv_types::ShardId;
use ringkv_types::envelope::HEADER_LEN;
use ringkv_types::raft::SnapshotMeta;
use ringkv_types::ring::Arc;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering as CmpOrdering;
use std::ops::Bound;
use std::sync::atomic::Ordering;

/// The durable "install pending" record (in the staging keyspace, see [`keys::marker_key`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InstallMarker {
    pub shard: ShardId,
    pub arc: Arc,
    pub meta: SnapshotMeta,
    pub staging: u64,
}

/// Where an install stops to imitate a crash (tests only; see [`Store::inject_install_fault`]).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallFault {
    /// Right after the marker's batch is durable, before any data moved.
    AfterMarker,
    /// After this many move batches.
    AfterMoveBatches(u64),
    /// After every move batch, before the final batch that removes the marker.
    BeforeFinal,
}

/// A fully validated and staged snapshot, ready for [`WriteBatchBuilder::install_snapshot`].
/// It holds no data: the data waits in the staging keyspace. Dropping it uninstalled has the
/// staging data deleted (by the writer, before its next batch).
pub struct PreparedSnapshot {
    shard: ShardId,
    arc: Arc,
    meta: SnapshotMeta,
    staging: u64,
    pairs: u64,
    sessions: u64,
    bytes: u64,
    shared: Option<std::sync::Arc<Shared>>,
}

impl std::fmt::Debug for PreparedSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedSnapshot")
            .field("shard", &self.shard)
            .field("arc", &self.arc)
            .field("meta", &self.meta)
            .field("staging", &self.staging)
            .field("pairs", &self.pairs)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
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

    /// Data pairs staged.
    pub fn len(&self) -> usize {
        usize::try_from(self.pairs).unwrap_or(usize::MAX)
    }

    /// Whether the snapshot holds no data.
    pub fn is_empty(&self) -> bool {
        self.pairs == 0
    }

    /// Sessions staged.
    pub fn session_count(&self) -> u64 {
        self.sessions
    }

    /// Key, value and session bytes staged.
    pub fn size_bytes(&self) -> u64 {
        self.bytes
    }

    /// Adds the install's marker, applied state and configuration to a group-commit batch and
    /// updates `state`; returns the marker whose data the writer moves after the commit.
    pub(crate) fn stage(
        mut self,
        shared: &Shared,
        batch: &mut fjall::OwnedWriteBatch,
        state: &mut GroupState,
    ) -> Result<InstallMarker> {
        if self.meta.index < state.applied.index {
            return Err(Error::InvalidWrite {
                shard: self.shard,
                reason: format!(
                    "snapshot at {} is older than the applied index {}",
                    self.meta.index, state.applied.index
                ),
            });
        }
        let marker = InstallMarker {
            shard: self.shard,
            arc: self.arc,
            meta: self.meta.clone(),
            staging: self.staging,
        };
        // From here the writer owns the staging data (a failed commit leaves it as garbage for
        // the next open, or the recovery of the marker).
        self.shared = None;
        batch.insert(
            &shared.staging,
            keys::marker_key(self.shard).to_vec(),
            codec::encode(&marker),
        );
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
        state.conf = Some(self.meta.conf.clone());
        Ok(marker)
    }
}

impl Drop for PreparedSnapshot {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.discard_staging(self.staging);
        }
    }
}

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
    fn commit_staging(&self, batch: fjall::OwnedWriteBatch) -> Result<()> {
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

    fn check_fault(&self, at: InstallFault) -> Result<()> {
        let fault = *self
            .install_fault
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if fault == Some(at) {
            // Imitates a crash: nothing more may be written by this process.
            self.poison();
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    /// Moves a marked install's staged data into the live range and removes the marker (see
    /// the module docs). Idempotent: after a crash at any point it is simply run again.
    pub(crate) fn finish_install(&self, marker: &InstallMarker) -> Result<()> {
        self.check_fault(InstallFault::AfterMarker)?;
        let budget = self.config.snapshot_chunk_bytes.max(1);
        let mut moved = 0u64;
        let mut batch = self.db.batch();
        let mut bytes = 0usize;
        let mut flush = |batch: &mut fjall::OwnedWriteBatch, bytes: &mut usize| -> Result<()> {
            let full = std::mem::replace(batch, self.db.batch());
            self.commit(full)?;
            *bytes = 0;
            moved += 1;
            self.check_fault(InstallFault::AfterMoveBatches(moved))
        };
        // Data: merge the live range with the staged pairs (both ascending by storage key), one
        // window per move batch. Each window reads through its own fjall snapshot and starts
        // after the last key the window before it handled. IMPORTANT: not one snapshot for the
        // whole move: fjall keeps every memtable written while a snapshot is open in memory
        // (its version history is kept back to the oldest snapshot), so memory would grow with
        // the shard (2.1 GB for a 1 GiB shard). Nothing else writes the shard's range or this
        // staging id meanwhile (the writer runs the move; the shard applies nothing until its
        // install is answered), so the windows see what one snapshot would.
        let (lower, upper) = marker.arc.storage_bounds();
        let staged_prefix = keys::staged_data_prefix(marker.staging);
        let mut resume: Option<Vec<u8>> = None;
        'windows: loop {
            let snapshot = self.db.snapshot();
            let live_lower = match &resume {
                Some(key) => Bound::Excluded(key.clone()),
                None => Bound::Included(lower.clone()),
            };
            let live_upper = upper.clone().map_or(Bound::Unbounded, Bound::Excluded);
            let mut live = snapshot.range(&self.data, (live_lower, live_upper));
            let staged_lower = match &resume {
                Some(key) => Bound::Excluded([&staged_prefix[..], key].concat()),
                None => Bound::Included(staged_prefix.to_vec()),
            };
            let mut staged = snapshot.range(&self.staging, (staged_lower, Bound::Unbounded));
            let mut live_key = next_key(&mut live)?;
            let mut staged_pair = next_pair_within(&mut staged, &staged_prefix)?;
            loop {
                let order = match (&live_key, &staged_pair) {
                    (None, None) => break 'windows,
                    (Some(_), None) => CmpOrdering::Less,
                    (None, Some(_)) => CmpOrdering::Greater,
                    (Some(live), Some((staged, _))) => live
                        .as_ref()
                        .cmp(staged.get(staged_prefix.len()..).unwrap_or_default()),
                };
                let handled = if order == CmpOrdering::Less {
                    let key = live_key.take().map(|key| key.to_vec()).unwrap_or_default();
                    bytes += key.len();
                    batch.remove(&self.data, key.clone());
                    live_key = next_key(&mut live)?;
                    key
                } else {
                    if order == CmpOrdering::Equal {
                        live_key = next_key(&mut live)?;
                    }
                    let (key, value) = staged_pair.take().unwrap_or_default();
                    let key = key.get(staged_prefix.len()..).unwrap_or_default().to_vec();
                    bytes += key.len() + value.len();
                    // IMPORTANT: copied (`owned`): the staged value shares its table block.
                    batch.insert(&self.data, key.clone(), owned(&value));
                    staged_pair = next_pair_within(&mut staged, &staged_prefix)?;
                    key
                };
                if bytes >= budget {
                    flush(&mut batch, &mut bytes)?;
                    // Every key up to `handled` is moved, in both streams: go on after it.
                    resume = Some(handled);
                    continue 'windows;
                }
            }
        }
        let snapshot = self.db.snapshot();
        // Sessions: the same merge over the shard's session records.
        let mut live = snapshot.prefix(&self.raft_state, keys::session_prefix(marker.shard));
        let mut staged =
            snapshot.prefix(&self.staging, keys::staged_session_prefix(marker.staging));
        let mut live_key = next_key(&mut live)?;
        let mut staged_pair = next_pair(&mut staged)?;
        loop {
            let live_id = match &live_key {
                Some(key) => Some(keys::parse_session_key(key)?),
                None => None,
            };
            let staged_id = match &staged_pair {
                Some((key, _)) => Some(keys::parse_staged_session_key(key)?),
                None => None,
            };
            let order = match (live_id, staged_id) {
                (None, None) => break,
                (Some(_), None) => CmpOrdering::Less,
                (None, Some(_)) => CmpOrdering::Greater,
                (Some(live), Some(staged)) => live.cmp(&staged),
            };
            if order == CmpOrdering::Less {
                if let Some(key) = live_key.take() {
                    batch.remove(&self.raft_state, owned(&key));
                    bytes += 32;
                }
                live_key = next_key(&mut live)?;
            } else {
                if order == CmpOrdering::Equal {
                    live_key = next_key(&mut live)?;
                }
                if let (Some((_, value)), Some(id)) = (staged_pair.take(), staged_id) {
                    bytes += 32 + value.len();
                    batch.insert(
                        &self.raft_state,
                        keys::session_key(marker.shard, id).to_vec(),
                        owned(&value),
                    );
                }
                staged_pair = next_pair(&mut staged)?;
            }
            if bytes >= budget {
                flush(&mut batch, &mut bytes)?;
            }
        }
        if bytes > 0 {
            flush(&mut batch, &mut bytes)?;
        }
        self.check_fault(InstallFault::BeforeFinal)?;
        // IMPORTANT: the marker goes only once every moved key is in the journal before it; the
        // batch is synced, so a recovered store never redoes a move whose staging is gone.
        let mut last = self.db.batch().durability(Some(PersistMode::SyncData));
        last.remove(&self.staging, keys::marker_key(marker.shard).to_vec());
        self.commit(last)?;
        // The shard's session table changed under apply: it reloads on the next apply.
        self.sessions.forget(marker.shard);
        delete_staging(self, marker.staging)
    }

    /// At open: finishes every marked install, then deletes staging data nobody marked.
    pub(crate) fn recover_installs(&self) -> Result<()> {
        let mut markers = Vec::new();
        for guard in self.staging.prefix(keys::MARKER_PREFIX) {
            let (_, value) = guard.into_inner()?;
            let marker: InstallMarker = codec::decode(&value, self.config.record_bytes_max)
                .map_err(|reason| Error::corrupt_record("install_marker", None, reason))?;
            markers.push(marker);
        }
        for marker in &markers {
            self.finish_install(marker)?;
        }
        let mut batch = self.db.batch();
        let mut count = 0usize;
        for guard in self.staging.prefix(keys::STAGED_PREFIX) {
            batch.remove(&self.staging, owned(&guard.key()?));
            count += 1;
            if count >= self.config.removal_batch_keys {
                self.commit(std::mem::replace(&mut batch, self.db.batch()))?;
                count = 0;
            }
        }
        if count > 0 {
            self.commit(batch)?;
        }
        Ok(())
    }
}

/// A copy of a key or value read from the store, for writing it again. IMPORTANT: a slice
/// read from a table shares that table's whole block (a 4 KiB block, or one 128 KiB value);
/// written as is into a memtable (a moved value, a tombstone for a read key), it keeps the
/// block in memory until that memtable is flushed, unseen by the write buffer's accounting,
/// which counts only the slice. Deleting a 256 MiB staging area of 128 KiB values held
/// 250 MB of blocks that way (heaptrack, `examples/install_rss.rs`).
fn owned(slice: &fjall::Slice) -> Vec<u8> {
    slice.to_vec()
}

/// The next key of an iterator.
fn next_key(iter: &mut fjall::Iter) -> Result<Option<fjall::Slice>> {
    match iter.next() {
        Some(guard) => Ok(Some(guard.key()?)),
        None => Ok(None),
    }
}

/// The next key and value of an iterator.
fn next_pair(iter: &mut fjall::Iter) -> Result<Option<(fjall::Slice, fjall::Slice)>> {
    match iter.next() {
        Some(guard) => Ok(Some(guard.into_inner()?)),
        None => Ok(None),
    }
}

/// The next key and value of an iterator, if the key starts with `prefix` (the iterator runs
/// past the prefix's end).
fn next_pair_within(
    iter: &mut fjall::Iter,
    prefix: &[u8],
) -> Result<Option<(fjall::Slice, fjall::Slice)>> {
    Ok(next_pair(iter)?.filter(|(key, _)| key.starts_with(prefix)))
}

/// Deletes one install's staging data in bounded batches.
fn delete_staging(shared: &Shared, staging: u64) -> Result<()> {
    let mut batch = shared.db.batch();
    let mut count = 0usize;
    for guard in shared.staging.prefix(keys::staging_prefix(staging)) {
        batch.remove(&shared.staging, owned(&guard.key()?));
        count += 1;
        if count >= shared.config.removal_batch_keys {
            shared.commit_staging(std::mem::replace(&mut batch, shared.db.batch()))?;
            count = 0;
        }
    }
    if count > 0 {
        shared.commit_staging(batch)?;
    }
    Ok(())
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

    /// Validates a whole snapshot stream for `shard` and stages it. Nothing live is written.
    ///
    /// # Errors
    /// [`Error::BadSnapshot`] for a chunk that fails its crc32 or does not decode, a stream for
    /// another shard, chunks out of order, keys outside the arc or not ascending, a stream that
    /// ends before its trailer or continues after it, counts that disagree with the trailer, or
    /// [`Error::SnapshotTooLarge`] for a snapshot over `snapshot_bytes_max`. Errors from the
    /// iterator itself are returned as is.
    /// The staged data is deleted on error.
    pub fn prepare_snapshot<I, C>(&self, shard: ShardId, chunks: I) -> Result<PreparedSnapshot>
    where
        I: IntoIterator<Item = Result<C>>,
        C: AsRef<[u8]>,
    {
        let mut stager = self.snapshot_stager(shard);
        for chunk in chunks {
            stager.push(chunk?.as_ref())?;
        }
        stager.finish()
    }

    /// Validates `chunks` and installs them (see the module docs):
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

    /// Makes the next install stop where `fault` says, as a crash would (the store is then
    /// poisoned); `None` clears it. For crash tests.
    #[doc(hidden)]
    pub fn inject_install_fault(&self, fault: Option<InstallFault>) {
        *self
            .shared
            .install_fault
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fault;
    }

    /// Staging keys present (for tests: an aborted or finished install leaves none).
    #[doc(hidden)]
    pub fn staging_key_count(&self) -> Result<usize> {
        let mut count = 0;
        for guard in self.shared.staging.iter() {
            guard.key()?;
            count += 1;
        }
        Ok(count)
    }
}

const _: () = assert!(
    HEADER_LEN == 9,
    "chunk_max above assumes the 9-byte envelope header"
);
