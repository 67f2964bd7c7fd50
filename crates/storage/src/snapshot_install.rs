//! Validating a snapshot stream and installing it with bounded memory.
//!
//! Choice: **stage, mark, move.** A snapshot is never held whole in memory and never written
//! in one batch; crash atomicity comes from a durable "install pending" marker instead.
//!
//! 1. **Staging** ([`SnapshotStager`](crate::SnapshotStager) in `snapshot_stager.rs`, off the
//!    node's event loop). Each chunk is checked as it arrives (crc32 of its envelope, order,
//!    shard, arc, key order and sizes) and its pairs and sessions are written at once, one
//!    fjall batch per chunk, into the `snapshot_staging` keyspace under the install's id (see
//!    [`keys`](crate::keys)). Only the last key and the counts stay in memory. When the
//!    trailer's counts agree, the journal is synced and the stager yields a
//!    [`PreparedSnapshot`]: a small handle (shard, arc, meta, staging id). An invalid or
//!    truncated stream deletes its staging data and changes nothing live.
//! 2. **Mark** (the group-commit writer). [`WriteBatchBuilder::install_snapshot`] puts into the
//!    ordinary, durable group-commit batch an *install pending* record (shard, arc, meta,
//!    staging id) together with the new applied state, configuration, compaction point and
//!    whatever else the caller adds (descriptor, hard state). This batch is small.
//! 3. **Move** (`snapshot_move.rs`; the writer, right after that commit, before it answers
//!    the ticket). The live range is merged with the staged data in bounded batches (`snapshot_chunk_bytes` each):
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
//! Costs: memory is one chunk and one move batch, plus the memtables the store caps at
//! `write_buffer_bytes` (`write_buffer.rs`) and the block cache; the writer (so every group's commits) waits
//! while a snapshot's data moves, about as long as writing the data once more. A
//! [`PreparedSnapshot`] dropped without being installed (the Raft core refused it) leaves its
//! id on a list the writer deletes before its next batch.

use crate::codec;
use crate::error::{Error, Result};
use crate::group_state::{AppliedState, GroupState};
use crate::keys;
use crate::store::{Shared, Store};
use crate::write_batch::WriteBatchBuilder;
use crate::writer::Durable;
use ringkv_types::ShardId;
use ringkv_types::raft::SnapshotMeta;
use ringkv_types::ring::Arc;
use serde::{Deserialize, Serialize};

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
    pub(crate) shard: ShardId,
    pub(crate) arc: Arc,
    pub(crate) meta: SnapshotMeta,
    pub(crate) staging: u64,
    pub(crate) pairs: u64,
    pub(crate) sessions: u64,
    pub(crate) bytes: u64,
    pub(crate) shared: Option<std::sync::Arc<Shared>>,
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

impl Store {
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
