//! A received snapshot, validated and waiting for the Ready that installs it: staged in the
//! fjall store's staging keyspace in `ringkvd` ([`PreparedSnapshot`], a small handle), or held
//! whole in memory in the simulator ([`MemorySnapshot`]). The core treats both alike: it keeps
//! one per group until its Ready, then puts it into the turn's writes
//! ([`super::writes::TurnWrites::install_snapshot`]); the driver that persists the writes
//! installs it its own way.

use super::node_core::NodeCore;
use crate::error::Result;
use crate::pd_host;
use ringkv_pd::PdState;
use ringkv_raft::Storage;
use ringkv_storage::{MemorySnapshot, PreparedSnapshot};
use ringkv_types::raft::{Message, SnapshotMeta};
use ringkv_types::ring::Arc;
use ringkv_types::{ShardDescriptor, ShardId};
use tracing::{info, warn};

/// A validated snapshot ready to install (see the module docs).
#[derive(Debug)]
pub enum StagedSnapshot {
    /// Staged in the fjall store (`ringkvd`).
    Store(PreparedSnapshot),
    /// Held in memory (the simulator, tests).
    Memory(MemorySnapshot),
}

impl StagedSnapshot {
    /// The shard.
    pub fn shard(&self) -> ShardId {
        match self {
            Self::Store(prepared) => prepared.shard(),
            Self::Memory(snapshot) => snapshot.shard,
        }
    }

    /// The shard's arc the data lies in.
    pub fn arc(&self) -> Arc {
        match self {
            Self::Store(prepared) => prepared.arc(),
            Self::Memory(snapshot) => snapshot.arc,
        }
    }

    /// Applied index and term and configuration of the snapshot.
    pub fn meta(&self) -> &SnapshotMeta {
        match self {
            Self::Store(prepared) => prepared.meta(),
            Self::Memory(snapshot) => &snapshot.meta,
        }
    }

    /// Data pairs held.
    pub fn len(&self) -> usize {
        match self {
            Self::Store(prepared) => prepared.len(),
            Self::Memory(snapshot) => snapshot.len(),
        }
    }

    /// Whether the snapshot holds no data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<PreparedSnapshot> for StagedSnapshot {
    fn from(prepared: PreparedSnapshot) -> Self {
        Self::Store(prepared)
    }
}

impl From<MemorySnapshot> for StagedSnapshot {
    fn from(snapshot: MemorySnapshot) -> Self {
        Self::Memory(snapshot)
    }
}

impl<L: Storage> NodeCore<L> {
    /// A received snapshot for an existing local replica: checked against the group (one
    /// install at a time; the data's arc must be the descriptor's, or PD's nominal arc for a
    /// PD state), kept with the `descriptor` (and PD state) it carries for the Ready that
    /// installs it, and `message` (its `InstallSnapshot`) stepped into the core. Returns false
    /// when it was dropped (the leader retries). The driver routed the message first (the
    /// replica may have been created for it) and checked that `descriptor` names its
    /// recipient.
    ///
    /// # Errors
    /// A Raft storage read failure.
    pub fn offer_snapshot(
        &mut self,
        message: Message,
        staged: StagedSnapshot,
        descriptor: ShardDescriptor,
        pd_state: Option<PdState>,
    ) -> Result<bool> {
        let shard = message.group;
        let Some(group) = self.groups.get_mut(&shard) else {
            return Ok(false);
        };
        if group.installing.is_some() {
            // One install at a time; the leader retries.
            return Ok(false);
        }
        let expected_arc = if pd_state.is_some() {
            pd_host::PD_SNAPSHOT_ARC
        } else {
            descriptor.arc
        };
        if staged.arc() != expected_arc || staged.shard() != shard {
            warn!(%shard, "snapshot data does not match its descriptor's arc");
            return Ok(false);
        }
        // IMPORTANT: the shards of one node share one keyspace. A snapshot of a split's new
        // shard reaching a replica whose parent has not applied the split yet (or a parent's
        // snapshot from before the split reaching a replica that holds the new shard) would
        // overwrite data the other group still applies to: refused until the parent here has
        // applied the split (which creates the new group itself) or installed a snapshot of
        // its shrunken arc.
        if pd_state.is_none()
            && let Some(other) = self.groups.values().find(|other| {
                other.shard != shard
                    && other.initialized
                    && other.machine.is_data()
                    && other.descriptor.arc.overlaps(&descriptor.arc)
            })
        {
            warn!(%shard, other = %other.shard,
                "snapshot overlaps the arc of another local shard; refused until it moves");
            return Ok(false);
        }
        let Some(group) = self.groups.get_mut(&shard) else {
            return Ok(false);
        };
        info!(
            %shard,
            index = %staged.meta().index,
            pairs = staged.len(),
            "received a snapshot"
        );
        group.pending_install = Some(staged);
        group.pending_descriptor = Some(descriptor);
        if let Some(host) = group.machine.pd_mut() {
            host.pending_install = pd_state;
        }
        group.raw.step(message)?;
        self.dirty.insert(shard);
        Ok(true)
    }
}
