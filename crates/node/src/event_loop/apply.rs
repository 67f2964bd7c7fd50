//! Apply: committed entries become store writes (KV commands, session expiry, splits,
//! configuration, PD commands), and the writes they complete are answered.

use super::requests::{lost_write, write_response};
use super::{EventLoop, Internal, membership};
use crate::core::apply_plan::{self, RunPlan, Step};
use crate::core::machine::MachineKind;
use crate::error::{Error, Result};
use crate::group::Group;
use crate::replica_meta;
use ringkv_storage::{AppliedState, Operation};
use ringkv_types::raft::{Entry, Message, MessageBody, SnapshotMeta};
use ringkv_types::{LogIndex, Response, ShardId};
use tracing::{debug, info};

impl EventLoop {
    /// Applies one Ready's committed entries of `shard` in the steps of
    /// [`apply_plan::steps`]: runs of ordinary entries in one store batch each, cut at
    /// session expiries and splits, which apply on their own (see `split.rs`).
    pub(super) fn apply(
        &mut self,
        shard: ShardId,
        entries: Vec<Entry>,
        internal: &mut Internal,
    ) -> Result<()> {
        let kind = self
            .core
            .groups
            .get(&shard)
            .map_or(MachineKind::of(shard), |group| group.machine.kind());
        for step in apply_plan::steps(kind, entries) {
            match step {
                Step::Run(run) => self.apply_run(shard, run)?,
                Step::Expiry {
                    index,
                    term,
                    now_ms,
                    idle_ms,
                } => self.apply_expiry(shard, index, term, now_ms, idle_ms)?,
                Step::Split { index, term, split } => {
                    self.apply_split(shard, index, term, split, internal)?;
                }
            }
        }
        Ok(())
    }

    /// Applies ordinary committed entries of `shard` in one atomic store batch and answers the
    /// writes they complete.
    pub(super) fn apply_run(&mut self, shard: ShardId, entries: Vec<Entry>) -> Result<()> {
        let Some(group) = self.core.groups.get_mut(&shard) else {
            return Ok(());
        };
        let kind = group.machine.kind();
        let plan = apply_plan::plan_run(kind, shard, &group.descriptor, entries).map_err(
            |undecodable| Error::Fatal {
                reason: undecodable.to_string(),
            },
        )?;
        let Some(plan) = plan else {
            return Ok(());
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
        // IMPORTANT: the new descriptor (and the PD state) commits with the applied index in one
        // batch.
        // Each command's log index is the version of the keys it writes.
        let indexes: Vec<u64> = owners.iter().map(|(index, _)| index.0).collect();
        let results = self.store.apply_with_meta(
            shard,
            &commands,
            &stamps,
            &indexes,
            applied,
            conf.as_ref(),
            &meta,
        )?;
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
                        self.core.outbox.push(replica.node, notice);
                    }
                }
            }
            info!(%shard, epoch = ?descriptor.epoch, replicas = descriptor.replicas.len(),
                "configuration applied");
            group.descriptor = descriptor;
        }
        group.writes_applied += commands.len() as u64;
        membership::answer_change(&mut self.core.replies, group, &conf_entries, last.0);
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
            self.core.replies.send(proposal.reply, response);
        }
        for (index, term) in outside {
            if let Some(proposal) = group.proposals.remove(&index) {
                let response = if proposal.term == term {
                    Response::Error(ringkv_types::WireError::KeyNotInShard { shard })
                } else {
                    lost_write(group)
                };
                self.core.replies.send(proposal.reply, response);
            }
        }
        // Proposals at applied indexes whose entries were not ours were overwritten: lost.
        while let Some(entry) = group.proposals.first_entry() {
            if *entry.key() > last.0 {
                break;
            }
            let proposal = entry.remove();
            self.core.replies.send(proposal.reply, lost_write(group));
        }
        if kind == MachineKind::Pd {
            self.pd_answer(pd_results, last.0);
        }
        let storage = self
            .core
            .groups
            .get(&shard)
            .map(|g| g.raw.storage().clone());
        if let Some(storage) = storage {
            self.maybe_compact(shard, storage, last.0)?;
        }
        let removed = self.core.groups.get(&shard).is_some_and(|group| {
            group.machine.is_data()
                && group.initialized
                && group.descriptor.replica_of_member(group.member).is_none()
        });
        if removed {
            self.remove_group(shard)?;
        }
        Ok(())
    }

    /// Moves the compaction point to the applied index once the log holds more than
    /// `raft.log_compaction_entries` applied entries.
    pub(super) fn maybe_compact(
        &mut self,
        shard: ShardId,
        storage: crate::group::NodeStorage,
        applied: LogIndex,
    ) -> Result<()> {
        let threshold = self.config.raft.log_compaction_entries;
        if threshold == 0 {
            return Ok(());
        }
        use ringkv_raft::Storage as _;
        let Ok(first) = storage.first_index() else {
            return Ok(());
        };
        if applied.distance_from(first) < threshold {
            return Ok(());
        }
        let Ok(term) = storage.term(applied) else {
            return Ok(());
        };
        let Some(group) = self.core.groups.get(&shard) else {
            return Ok(());
        };
        let conf = group.raw.conf_state().clone();
        debug!(%shard, %applied, "compacting the log");
        self.batch.set_snapshot_meta(
            shard,
            SnapshotMeta {
                index: applied,
                term,
                conf,
            },
        );
        Ok(())
    }
}
