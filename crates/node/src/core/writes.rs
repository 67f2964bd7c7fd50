//! What a turn asks to persist, as the core describes it: per group, a snapshot install, a new
//! compaction point, log appends, a hard state and meta records (descriptor, PD state). The
//! driver turns it into one fjall write batch ([`TurnWrites::into_batch`]) and submits it to
//! the group-commit writer; the simulator writes its log part into memory when it submits it
//! and again into its durable copy once its simulated disk makes it durable
//! ([`GroupWrites::apply_to_log`]), and its state part then ([`GroupWrites::apply_to_state`]).
//!
//! Per group, a description applies in the order of a
//! [`WriteBatchBuilder`](ringkv_storage::WriteBatchBuilder) batch, whatever the order of the
//! calls: install, then compaction point, then the appends (in call order, a later one
//! replacing an earlier one's overlapping suffix, as two Readies would), then the hard state.
//! Each Ready's entries are moved in whole: describing them allocates nothing per entry.

use super::staged::StagedSnapshot;
use crate::error::Error;
use crate::error::Result;
use ringkv_storage::{MemoryLog, MemoryState, WriteBatchBuilder};
use ringkv_types::ShardId;
use ringkv_types::raft::{Entry, HardState, SnapshotMeta};
use std::collections::BTreeMap;

/// One group's writes in a turn.
#[derive(Debug, Default)]
pub struct GroupWrites {
    /// A validated, staged snapshot to install (its meta is also the new compaction point).
    pub install: Option<StagedSnapshot>,
    /// The new compaction point: the install's, or a log compaction's (the last one set wins).
    pub snapshot_meta: Option<SnapshotMeta>,
    /// Log appends, one per Ready, in order.
    pub appends: Vec<Vec<Entry>>,
    /// The hard state to save (the last one set wins).
    pub hard_state: Option<HardState>,
    /// Meta records `(name, value)` saved with the batch (a descriptor or PD state installed
    /// with a snapshot).
    pub meta: Vec<(Vec<u8>, Vec<u8>)>,
    /// The planted bug [`super::planted::PlantedNodeBugs::install_keeps_stale_data`] marked
    /// this install: the memory install keeps the replica's old values that the snapshot does
    /// not hold. Acts only in a build with the `planted-bugs` feature; never set otherwise.
    pub keep_stale_data: bool,
}

impl GroupWrites {
    /// Writes the log part (compaction point, appends, hard state) into `log`, as the fjall
    /// writer's commit does (readable at once, durable once the sync returns). The install's
    /// data and the meta records are the state store's part.
    ///
    /// # Errors
    /// [`ringkv_raft::StorageError::Unavailable`] for an append that leaves a gap (a bug in
    /// the caller: the Raft core never asks for one).
    pub fn apply_to_log(
        &self,
        log: &MemoryLog,
    ) -> std::result::Result<(), ringkv_raft::StorageError> {
        if let Some(meta) = &self.snapshot_meta {
            if self.install.is_some() {
                log.install(meta.clone());
            } else {
                log.set_snapshot_meta(meta.clone());
            }
        }
        for entries in &self.appends {
            log.append(entries)?;
        }
        if let Some(hard_state) = self.hard_state {
            log.set_hard_state(hard_state);
        }
        Ok(())
    }

    /// Writes the state store's part into `state`, as the fjall store would once the batch is
    /// durable: the snapshot install (its data, sessions and applied position, see
    /// [`MemoryState::install`]) and the meta records, both durable at once. Call it with
    /// [`GroupWrites::apply_to_log`] at the batch's durability point.
    ///
    /// # Errors
    /// [`Error::Fatal`] for a snapshot staged in the fjall store (a driver mixing stores).
    pub fn apply_to_state(&mut self, state: &mut MemoryState) -> Result<()> {
        match self.install.take() {
            #[cfg(feature = "planted-bugs")]
            Some(StagedSnapshot::Memory(snapshot)) if self.keep_stale_data => {
                state.install(super::planted::with_stale_values(state, snapshot));
            }
            Some(StagedSnapshot::Memory(snapshot)) => state.install(snapshot),
            Some(StagedSnapshot::Store(prepared)) => {
                return Err(Error::Fatal {
                    reason: format!(
                        "shard {}: a snapshot staged in the fjall store cannot install into memory",
                        prepared.shard()
                    ),
                });
            }
            None => {}
        }
        for (name, value) in &self.meta {
            state.write_meta_durable(name, value);
        }
        Ok(())
    }
}

/// Every group's writes of one turn: one batch, one sync.
#[derive(Debug, Default)]
pub struct TurnWrites {
    groups: BTreeMap<ShardId, GroupWrites>,
}

impl TurnWrites {
    /// Nothing to write.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether nothing was described.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    fn group(&mut self, shard: ShardId) -> &mut GroupWrites {
        self.groups.entry(shard).or_default()
    }

    /// Appends a Ready's `entries` to `shard`'s log (nothing for none).
    pub fn append(&mut self, shard: ShardId, entries: Vec<Entry>) {
        if !entries.is_empty() {
            self.group(shard).appends.push(entries);
        }
    }

    /// Saves `shard`'s hard state.
    pub fn set_hard_state(&mut self, shard: ShardId, hard_state: HardState) {
        self.group(shard).hard_state = Some(hard_state);
    }

    /// Moves `shard`'s compaction point to `meta` (see
    /// [`WriteBatchBuilder::set_snapshot_meta`]).
    pub fn set_snapshot_meta(&mut self, shard: ShardId, meta: SnapshotMeta) {
        self.group(shard).snapshot_meta = Some(meta);
    }

    /// Installs a validated, staged snapshot into its shard (see
    /// [`WriteBatchBuilder::install_snapshot`] and [`GroupWrites::apply_to_state`]).
    pub fn install_snapshot(&mut self, snapshot: StagedSnapshot) {
        let group = self.group(snapshot.shard());
        group.snapshot_meta = Some(snapshot.meta().clone());
        group.install = Some(snapshot);
    }

    /// Saves the meta record `name` with `shard`'s writes of this batch.
    pub fn set_meta(&mut self, shard: ShardId, name: &[u8], value: Vec<u8>) {
        self.group(shard).meta.push((name.to_vec(), value));
    }

    /// The groups' writes, for a driver that persists them itself (the simulator).
    pub fn into_groups(self) -> BTreeMap<ShardId, GroupWrites> {
        self.groups
    }

    /// The groups' writes, borrowed (the simulator writes their log part when it submits the
    /// batch, before the batch is durable).
    pub fn groups(&self) -> impl Iterator<Item = (&ShardId, &GroupWrites)> {
        self.groups.iter()
    }

    /// Marks `shard`'s install for the planted bug
    /// [`super::planted::PlantedNodeBugs::install_keeps_stale_data`].
    #[cfg(feature = "planted-bugs")]
    pub(crate) fn keep_stale_data(&mut self, shard: ShardId) {
        self.group(shard).keep_stale_data = true;
    }

    /// The fjall write batch that persists this description.
    ///
    /// # Errors
    /// [`ringkv_storage::Error::InvalidWrite`] for appends that are not contiguous (a bug:
    /// the Raft core never produces them); [`Error::Fatal`] for a snapshot held in memory (a
    /// driver mixing stores).
    pub fn into_batch(self) -> Result<WriteBatchBuilder> {
        let mut batch = WriteBatchBuilder::new();
        for (shard, group) in self.groups {
            let GroupWrites {
                install,
                snapshot_meta,
                appends,
                hard_state,
                meta,
                // The planted bug acts only in the memory install (`apply_to_state`).
                keep_stale_data: _,
            } = group;
            match install {
                Some(StagedSnapshot::Store(prepared)) => batch.install_snapshot(prepared),
                Some(StagedSnapshot::Memory(_)) => {
                    return Err(Error::Fatal {
                        reason: format!(
                            "shard {shard}: a snapshot held in memory cannot install into fjall"
                        ),
                    });
                }
                None => {}
            }
            if let Some(meta) = snapshot_meta {
                batch.set_snapshot_meta(shard, meta);
            }
            for entries in &appends {
                batch.append(shard, entries)?;
            }
            if let Some(hard_state) = hard_state {
                batch.set_hard_state(shard, hard_state);
            }
            for (name, value) in meta {
                batch.set_meta(shard, &name, value);
            }
        }
        Ok(batch)
    }
}
