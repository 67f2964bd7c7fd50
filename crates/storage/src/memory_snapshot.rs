//! A shard's snapshot in memory: what the fjall stream (`snapshot_reader.rs`) carries, held
//! whole, for the simulator and tests that run the node core over [`MemoryState`]. Taking one
//! reads a shard's applied state as of now; installing one replaces the shard's range and
//! session table and moves its applied position, atomically and durably, as the fjall
//! install's marker batch and move do together (`snapshot_install.rs`).

use crate::command::SessionRecord;
use crate::error::Result;
use crate::group_state::AppliedState;
use crate::memory_state::MemoryState;
use crate::state_store::StateStore;
use crate::value::Versioned;
use ringkv_types::ShardId;
use ringkv_types::raft::{ConfState, SnapshotMeta};
use ringkv_types::ring::Arc;

/// A whole snapshot of one shard, in memory (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct MemorySnapshot {
    /// The shard.
    pub shard: ShardId,
    /// Its arc: every value lies in it.
    pub arc: Arc,
    /// Applied index and term, and the configuration there.
    pub meta: SnapshotMeta,
    /// Storage keys and values, ascending.
    pub values: Vec<(Vec<u8>, Versioned)>,
    /// The session table, ascending by id.
    pub sessions: Vec<(u64, SessionRecord)>,
}

impl MemorySnapshot {
    /// Data pairs held.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the snapshot holds no data.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl MemoryState {
    /// A snapshot of `shard` as reads see it now: the values of `arc`, the sessions, and the
    /// applied position with the configuration saved with it (`conf` when none was saved: a
    /// shard that never applied a configuration entry, as the fjall store falls back to its
    /// compaction point's).
    ///
    /// # Errors
    /// None today (the memory store cannot be corrupt); the signature keeps the store's.
    pub fn snapshot(&self, shard: ShardId, arc: Arc, conf: ConfState) -> Result<MemorySnapshot> {
        let applied = self.applied(shard)?;
        let conf = self.conf_state(shard).unwrap_or(conf);
        let (lower, upper) = arc.storage_bounds();
        let values = self
            .values()
            .into_iter()
            .filter(|(key, _)| *key >= lower && upper.as_ref().is_none_or(|upper| key < upper))
            .collect();
        Ok(MemorySnapshot {
            shard,
            arc,
            meta: SnapshotMeta {
                index: applied.index,
                term: applied.term,
                conf,
            },
            values,
            sessions: self.sessions(shard)?,
        })
    }

    /// Installs `snapshot` (see the module docs): every batch committed so far becomes durable
    /// first (the install rides a synced group commit, which the one journal orders after
    /// them), then the shard's range and sessions become the snapshot's, durably. Values
    /// outside the arc are not touched.
    pub fn install(&mut self, snapshot: MemorySnapshot) {
        let mark = self.journal_mark();
        self.batches_durable(mark);
        let MemorySnapshot {
            shard,
            arc,
            meta,
            values,
            sessions,
        } = snapshot;
        let (lower, upper) = arc.storage_bounds();
        self.durable_image_mut().replace_shard(
            shard,
            (lower, upper),
            values,
            sessions,
            AppliedState {
                index: meta.index,
                term: meta.term,
            },
            meta.conf,
        );
    }
}
