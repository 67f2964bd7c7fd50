//! Apply inside the core: a Ready's committed entries become one [`ApplyBatch`] per step
//! through the [`StateStore`] the core is given (the fjall store in `ringkvd`, the memory
//! store in tests and the simulator), and the requests they complete are answered. The KV and
//! session semantics are [`kv_machine`]'s; what is applied with them (configuration,
//! descriptor, PD state) and who is answered is decided here. The driver does what needs its
//! own I/O afterwards: PD answers to waiters, log compaction, replica removal. Splits apply in
//! [`super::split`].

use super::answers::{answer_change, lost_write, write_response};
use super::apply_plan::{self, RunPlan};
use super::machine::MachineKind;
use super::node_core::NodeCore;
use super::pd_machine::PdResults;
use crate::error::{Error, Result};
use crate::group::Group;
use crate::replica_meta;
use ringkv_storage::kv_machine::{self, CommandRun, SessionExpiry};
use ringkv_storage::{AppliedState, Operation, StateStore};
use ringkv_types::raft::{Entry, Message, MessageBody};
use ringkv_types::{LogIndex, Response, ShardId, Term, WireError};
use tracing::{debug, info};

/// What applying one run of entries left for the driver.
#[derive(Debug)]
pub struct RunApplied {
    /// The run's last index (the group's applied index now).
    pub last: LogIndex,
    /// Results of PD commands to answer (group 0 only).
    pub pd_results: Option<PdResults>,
    /// The applied configuration no longer holds this replica: the driver removes it.
    pub removed: bool,
    /// The changes of the run's keys, in log order (for watches).
    pub events: Vec<ringkv_types::WatchEvent>,
}

impl<L: ringkv_raft::Storage> NodeCore<L> {
    /// Applies ordinary committed `entries` of `shard` (one step of
    /// [`apply_plan::steps`]) in one atomic batch through `store` and answers the writes and
    /// membership changes they complete. `Ok(None)` when the group is not here or the run is
    /// empty.
    ///
    /// # Errors
    /// [`Error::Fatal`] for an entry this version cannot decode; store errors.
    pub fn apply_run<S: StateStore>(
        &mut self,
        store: &mut S,
        shard: ShardId,
        entries: Vec<Entry>,
    ) -> Result<Option<RunApplied>> {
        let Some(group) = self.groups.get_mut(&shard) else {
            return Ok(None);
        };
        let kind = group.machine.kind();
        let plan = apply_plan::plan_run(kind, shard, &group.descriptor, entries).map_err(
            |undecodable| Error::Fatal {
                reason: undecodable.to_string(),
            },
        )?;
        let Some(plan) = plan else {
            return Ok(None);
        };
        let RunPlan {
            last,
            commands,
            stamps,
            owners,
            outside,
            mut conf,
            conf_entries,
            descriptor,
            pd_entries,
            max_stamp_ms,
            has_session,
        } = plan;
        if let Some(data) = group.machine.data_mut()
            && !commands.is_empty()
        {
            data.last_stamp_ms = data.last_stamp_ms.max(max_stamp_ms);
            data.sessions_live |= has_session;
            data.ttl.possible |= commands.iter().any(|command| {
                command
                    .operations
                    .iter()
                    .any(|operation| matches!(operation, Operation::PutWithTtl { .. }))
            });
        }
        if conf.is_none() && !group.conf_saved {
            conf = Some(Group::conf_of(&group.descriptor));
        }
        let applied = AppliedState {
            index: last.0,
            term: last.1,
        };
        let descriptor_record = match &descriptor {
            Some(descriptor) if kind == MachineKind::Data && group.initialized => Some((
                replica_meta::descriptor_key(shard),
                replica_meta::encode_descriptor(descriptor)?,
            )),
            _ => None,
        };
        let mut pd_results = Vec::new();
        let mut pd_records = Vec::new();
        if let Some(host) = group.machine.pd_mut()
            && !pd_entries.is_empty()
        {
            (pd_results, pd_records) = host.apply(pd_entries)?;
        }
        let meta: Vec<(&[u8], &[u8])> = descriptor_record
            .iter()
            .chain(pd_records.iter())
            .map(|(name, value)| (name.as_slice(), value.as_slice()))
            .collect();
        // Each command's log index is the version of the keys it writes.
        let indexes: Vec<u64> = owners.iter().map(|(index, _)| index.0).collect();
        let run = CommandRun {
            commands: &commands,
            stamps: &stamps,
            indexes: &indexes,
            versions_follow_index: group
                .machine
                .data()
                .is_some_and(|data| data.versions_follow_index),
        };
        // IMPORTANT: the new descriptor (and the PD state) commits with the applied index in
        // one batch.
        let (mut batch, results) =
            kv_machine::apply_commands(&*store, shard, run, applied, conf.as_ref(), &meta)?;
        let events = std::mem::take(&mut batch.events);
        store.commit_apply(batch)?;
        if let Some(descriptor) = descriptor
            && group.initialized
        {
            if group.raw.is_leader() {
                // The removed members no longer hear from us: tell them (best effort; a
                // removed voter that campaigns is told again).
                for replica in &group.descriptor.replicas {
                    if descriptor.replica_of_member(replica.member).is_none() {
                        let notice = Message {
                            group: shard,
                            from: group.member,
                            to: replica.member,
                            term: group.raw.term(),
                            body: MessageBody::ReplicaRemoved,
                        };
                        self.outbox.push(replica.node, notice);
                    }
                }
            }
            info!(%shard, epoch = ?descriptor.epoch, replicas = descriptor.replicas.len(),
                "configuration applied");
            group.descriptor = descriptor;
        }
        group.writes_applied += commands.len() as u64;
        answer_change(&mut self.replies, group, &conf_entries, last.0);
        group.conf_saved = true;
        group.applied = last.0;
        group.raw.on_applied(last.0);
        for ((index, term), result) in owners.into_iter().zip(results) {
            let Some(proposal) = group.proposals.remove(&index) else {
                continue;
            };
            let response = if proposal.term == term {
                write_response(proposal.kind, index, result)
            } else {
                lost_write(group)
            };
            self.replies.send(proposal.reply, response);
        }
        for (index, term) in outside {
            if let Some(proposal) = group.proposals.remove(&index) {
                let response = if proposal.term == term {
                    Response::Error(WireError::KeyNotInShard { shard })
                } else {
                    lost_write(group)
                };
                self.replies.send(proposal.reply, response);
            }
        }
        // Proposals at applied indexes whose entries were not ours were overwritten: lost.
        self.answer_lost(shard, last.0);
        let removed = self.groups.get(&shard).is_some_and(|group| {
            group.machine.is_data()
                && group.initialized
                && group.descriptor.replica_of_member(group.member).is_none()
        });
        Ok(Some(RunApplied {
            last: last.0,
            pd_results: (kind == MachineKind::Pd).then_some(pd_results),
            removed,
            events,
        }))
    }

    /// Applies a session expiry entry of `shard` at `index` (on its own, like a split)
    /// through `store`: drops the sessions idle for `idle_ms` at log time `now_ms`.
    ///
    /// # Errors
    /// Store errors.
    pub fn apply_expiry<S: StateStore>(
        &mut self,
        store: &mut S,
        shard: ShardId,
        (index, term): (LogIndex, Term),
        now_ms: u64,
        idle_ms: u64,
    ) -> Result<SessionExpiry> {
        let applied = AppliedState { index, term };
        let (batch, outcome) =
            kv_machine::expire_sessions(&*store, shard, now_ms, idle_ms, applied)?;
        store.commit_apply(batch)?;
        let Some(group) = self.groups.get_mut(&shard) else {
            return Ok(outcome);
        };
        debug!(%shard, %index, dropped = outcome.dropped, remaining = outcome.remaining,
            "idle client sessions expired");
        if let Some(data) = group.machine.data_mut() {
            data.last_stamp_ms = data.last_stamp_ms.max(now_ms);
            data.sessions_live = outcome.remaining > 0;
        }
        group.applied = index;
        group.raw.on_applied(index);
        // A write proposed at this index or before whose entry is not there was overwritten.
        self.answer_lost(shard, index);
        Ok(outcome)
    }

    /// Answers the proposals of `shard` at or below `applied` that are still waiting: their
    /// entries were replaced by another leader's (lost writes, retried by the client).
    fn answer_lost(&mut self, shard: ShardId, applied: LogIndex) {
        let Some(group) = self.groups.get_mut(&shard) else {
            return;
        };
        while let Some(entry) = group.proposals.first_entry() {
            if *entry.key() > applied {
                break;
            }
            let proposal = entry.remove();
            self.replies.send(proposal.reply, lost_write(group));
        }
    }
}

/// Moves `shard`'s applied position to `applied` with `meta` records and no data writes.
pub(super) fn commit_position<S: StateStore>(
    store: &mut S,
    shard: ShardId,
    applied: AppliedState,
    meta: &[(&[u8], &[u8])],
) -> Result<()> {
    let (batch, _) =
        kv_machine::apply_commands(&*store, shard, CommandRun::plain(&[]), applied, None, meta)?;
    store.commit_apply(batch)?;
    Ok(())
}
