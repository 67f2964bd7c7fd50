//! Ready handling in the core: a group's [`Ready`] becomes messages in the outbox, writes in
//! the turn's [`TurnWrites`], a place in the [`PersistQueue`] (persist before acknowledge),
//! answers to requests its role change fails, and what the driver must still do itself
//! ([`ReadyOutput`]: apply the committed entries, stream snapshots, count metrics).
//!
//! ```text
//!   Ready ──► soft state: fail reads and changes of a deposed leader, answer transfers
//!         ──► messages ──► outbox (InstallSnapshot ──► ReadyOutput::snapshots)
//!         ──► snapshot + staged data + descriptor + PD state ──► TurnWrites
//!         ──► entries, hard state ──► TurnWrites
//!         ──► number, persisted messages ──► PersistQueue (until the batch is durable)
//!         ──► committed entries ──► ReadyOutput::committed (the driver applies them)
//! ```

use super::answers::{answer_transfers, fail_change, fail_reads};
use super::node_core::NodeCore;
use super::persist::Persisted;
use crate::error::{Error, Result};
use crate::replica_meta;
use ringkv_raft::{Ready, Role, Storage};
use ringkv_types::raft::{Entry, Message};
use ringkv_types::{ShardId, ShardMap};
use tracing::info;

/// What a Ready left for the driver.
#[derive(Debug, Default)]
pub struct ReadyOutput {
    /// Committed entries to apply, in order (durable on this node).
    pub committed: Vec<Entry>,
    /// `InstallSnapshot` messages: the driver streams their data.
    pub snapshots: Vec<Message>,
    /// The group became leader in this Ready.
    pub became_leader: bool,
    /// The group learned of a new leader.
    pub leader_changed: bool,
    /// The group started campaigning.
    pub campaigned: bool,
    /// The Ready carried a new role or leader (the driver tells the watch registry).
    pub soft_state_changed: bool,
    /// The shard map of a PD state installed with a snapshot (group 0 only).
    pub pd_map: Option<ShardMap>,
}

impl<L: Storage> NodeCore<L> {
    /// Handles a Ready of `shard` (see the module docs). The writes wait in
    /// [`NodeCore::writes`] for the driver to submit them.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a snapshot the Ready installs without its staged data; a Raft
    /// storage read failure.
    pub fn handle_ready(&mut self, shard: ShardId, ready: Ready) -> Result<ReadyOutput> {
        let Ready {
            number,
            soft_state,
            hard_state,
            snapshot,
            entries,
            messages,
            persisted_messages,
            committed_entries,
            read_states,
        } = ready;
        let mut output = ReadyOutput::default();
        if let Some(soft) = soft_state
            && let Some(group) = self.groups.get_mut(&shard)
        {
            if soft.role == Role::Leader && group.role != Role::Leader {
                info!(%shard, term = %group.raw.term(), "became leader");
                output.became_leader = true;
            }
            output.leader_changed = soft.leader != group.leader && soft.leader.is_some();
            output.campaigned = soft.role == Role::Candidate && group.role != Role::Candidate;
            output.soft_state_changed = true;
            group.leader = soft.leader;
            group.role = soft.role;
            if soft.role != Role::Leader {
                fail_reads(&mut self.replies, group);
                fail_change(&mut self.replies, group);
            }
            answer_transfers(&mut self.replies, group);
        }
        for message in messages {
            if let Some(snapshot) = self.outbox.route(message) {
                output.snapshots.push(snapshot);
            }
        }
        let needs_persist = snapshot.is_some() || !entries.is_empty() || hard_state.is_some();
        if let Some(snapshot) = snapshot {
            output.pd_map = self.describe_install(shard, number, &snapshot.meta)?;
        } else if let Some(group) = self.groups.get_mut(&shard) {
            // The core refused the snapshot we stepped (it was stale): nothing to install.
            group.pending_install = None;
            group.pending_descriptor = None;
            if let Some(host) = group.machine.pd_mut() {
                host.pending_install = None;
            }
        }
        // IMPORTANT: entries and hard state go into the batch whose durability gates
        // `on_persisted` and the persisted messages (votes, append acknowledgements).
        self.writes.append(shard, entries);
        if let Some(hard_state) = hard_state {
            self.writes.set_hard_state(shard, hard_state);
        }
        self.attach(shard, number, persisted_messages, needs_persist)?;
        output.committed = committed_entries;
        if let Some(group) = self.groups.get_mut(&shard) {
            for read in read_states {
                if let Some(reads) = group.reads_sent.remove(&read.context) {
                    group.reads_ready.push((read.index, reads));
                }
            }
        }
        Ok(output)
    }

    /// Describes the install of the snapshot at `meta` that Ready `number` of `shard` holds:
    /// its staged data, the descriptor and PD state it carries, all in one batch. Returns the
    /// shard map of an installed PD state.
    fn describe_install(
        &mut self,
        shard: ShardId,
        number: u64,
        meta: &ringkv_types::raft::SnapshotMeta,
    ) -> Result<Option<ShardMap>> {
        let corrupt = || Error::Corrupt {
            what: "snapshot install",
            reason: format!(
                "shard {shard}: Ready holds snapshot at {} without its data",
                meta.index
            ),
        };
        // IMPORTANT: the snapshot's data was validated when it arrived and installs in the
        // same atomic batch as the new compaction point; without it we refuse to go on.
        let group = self.groups.get_mut(&shard).ok_or_else(corrupt)?;
        let prepared = match group.pending_install.take() {
            Some(prepared) if prepared.meta().index == meta.index => prepared,
            _ => return Err(corrupt()),
        };
        self.writes.install_snapshot(prepared);
        #[cfg(feature = "planted-bugs")]
        if self.planted.install_keeps_stale_data {
            self.writes.keep_stale_data(shard);
        }
        // IMPORTANT: the descriptor the snapshot carries is saved in the same batch.
        if let Some(descriptor) = group.pending_descriptor.take() {
            self.writes.set_meta(
                shard,
                &replica_meta::descriptor_key(shard),
                replica_meta::encode_descriptor(&descriptor)?,
            );
            group.descriptor = descriptor;
            group.initialized = true;
        }
        let mut pd_map = None;
        if let Some(host) = group.machine.pd_mut()
            && let Some(mut state) = host.pending_install.take()
        {
            // IMPORTANT: the PD state the snapshot carries is saved in the same batch as the
            // install (it matches the snapshot's applied index).
            for (name, value) in crate::pd_records::all_records(&mut state)? {
                self.writes.set_meta(shard, &name, value);
            }
            pd_map = Some(state.shard_map.clone());
            host.state = state;
        }
        // The data becomes readable when the batch is durable (see `batch_durable`).
        group.installing = Some((number, meta.index));
        group.conf_saved = true;
        Ok(pd_map)
    }

    /// Ties a Ready's `on_persisted` and persisted messages to the batch that makes it
    /// durable; with nothing pending before it, it is durable now.
    ///
    /// # Errors
    /// A Raft storage read failure.
    pub fn attach(
        &mut self,
        shard: ShardId,
        number: u64,
        messages: Vec<Message>,
        needs_persist: bool,
    ) -> Result<()> {
        let ready = Persisted {
            shard,
            number,
            messages,
        };
        if let Some(Persisted { messages, .. }) =
            self.persist
                .attach(ready, needs_persist, self.writes.is_empty())
        {
            if let Some(group) = self.groups.get_mut(&shard) {
                group.raw.on_persisted(number)?;
            }
            // Persisted messages are never snapshots (only leaders send those, from
            // `messages`).
            for message in messages {
                let _ = self.outbox.route(message);
            }
            self.dirty.insert(shard);
        }
        Ok(())
    }

    /// Takes the turn's writes for submission, `None` when there are none; the driver
    /// persists them and reports [`NodeCore::batch_durable`] in submission order.
    pub fn take_writes(&mut self) -> Option<super::writes::TurnWrites> {
        if self.writes.is_empty() {
            return None;
        }
        self.persist.submitted();
        Some(std::mem::take(&mut self.writes))
    }

    /// The oldest submitted batch is durable: its Readies are persisted and their held
    /// messages go out. Returns the groups whose snapshot install it completed (their data is
    /// readable now: the driver serves their waiting reads).
    ///
    /// # Errors
    /// A Raft storage read failure.
    pub fn batch_durable(&mut self) -> Result<Vec<ShardId>> {
        let mut installed = Vec::new();
        let Some(readies) = self.persist.durable() else {
            return Ok(installed);
        };
        for Persisted {
            shard,
            number,
            messages,
        } in readies
        {
            if let Some(group) = self.groups.get_mut(&shard) {
                group.raw.on_persisted(number)?;
                if let Some((ready, index)) = group.installing
                    && ready <= number
                {
                    group.installing = None;
                    group.applied = group.applied.max(index);
                    // IMPORTANT: a write proposed here (as leader) at or below the snapshot's
                    // index may be in the snapshot, committed by a later leader, or replaced:
                    // the log no longer tells which. Its outcome is unknown, so it is left
                    // unanswered; answering it as lost (`NotLeader`, on the next apply) would
                    // tell its client that a committed write never happened.
                    let covered: Vec<_> =
                        group.proposals.range(..=index).map(|(i, _)| *i).collect();
                    for at in covered {
                        if let Some(proposal) = group.proposals.remove(&at) {
                            self.replies.drop_request(proposal.reply);
                        }
                    }
                    if let Some(data) = group.machine.data_mut() {
                        // The snapshot may have brought values with a TTL.
                        data.ttl.possible = true;
                    }
                    installed.push(shard);
                }
                self.dirty.insert(shard);
            }
            for message in messages {
                let _ = self.outbox.route(message);
            }
        }
        #[cfg(feature = "planted-bugs")]
        if self.planted.apply_before_durable {
            self.plant_later_batches_persisted();
        }
        Ok(installed)
    }

    /// The planted [`super::planted::PlantedNodeBugs::apply_before_durable`]: the Readies of
    /// every batch still in flight are reported persisted to their Raft cores too, as if
    /// "batch N is durable" meant "everything submitted is durable" (their held messages
    /// still wait for their own batch); a group installing a snapshot is left alone.
    #[cfg(feature = "planted-bugs")]
    fn plant_later_batches_persisted(&mut self) {
        let readies: Vec<(ShardId, u64)> = self
            .persist
            .in_flight_readies()
            .map(|ready| (ready.shard, ready.number))
            .collect();
        for (shard, number) in readies {
            let Some(group) = self.groups.get_mut(&shard) else {
                continue;
            };
            if group.installing.is_some() {
                continue;
            }
            match group.raw.on_persisted(number) {
                Ok(()) => {
                    self.dirty.insert(shard);
                }
                Err(error) => tracing::warn!(%shard, %error, "planted early on_persisted failed"),
            }
        }
    }
}
