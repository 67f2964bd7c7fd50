//! A split's proposal, decided in the core: the leader checks an `AdminRequest::SplitShard`
//! and proposes `LogCommand::SplitFromEntry`; applying it is [`super::split`].

use super::answers::{not_leader, proposal_refused};
use super::machine::MachineKind;
use super::node_core::NodeCore;
use super::replies::RequestId;
use crate::error::Result;
use crate::group::PendingChange;
use crate::log_command::LogCommand;
use ringkv_types::{Epoch, Response, ShardId, WireError};
use tracing::info;

fn invalid(reason: String) -> Response {
    Response::Error(WireError::InvalidRequest { reason })
}

impl<L: ringkv_raft::Storage> NodeCore<L> {
    /// `AdminRequest::SplitShard`, on the shard's leader: checks the request (this replica
    /// leads, the epoch is current, no membership change or split is in progress, `new_shard`
    /// is free, `at` (default: the arc's midpoint) lies strictly inside the arc) and proposes
    /// `LogCommand::SplitFromEntry`; the answer comes when it applies. `in_map` says whether
    /// the driver's shard map already holds `new_shard`. Returns whether it was proposed.
    ///
    /// # Errors
    /// Encoding the command.
    pub fn propose_split(
        &mut self,
        shard: ShardId,
        epoch: Epoch,
        new_shard: ShardId,
        at: Option<u64>,
        slot: RequestId,
        in_map: bool,
    ) -> Result<bool> {
        let taken = self.groups.contains_key(&new_shard)
            || in_map
            || self.tombstones.contains_key(&new_shard);
        let group = match self.groups.get_mut(&shard) {
            Some(group) if group.machine.is_data() && group.initialized => group,
            _ => {
                self.replies
                    .send(slot, Response::Error(WireError::ShardNotFound { shard }));
                return Ok(false);
            }
        };
        if !group.raw.is_leader() {
            self.replies
                .send(slot, not_leader(group.leader_hint(), &group.descriptor));
            return Ok(false);
        }
        if epoch != group.descriptor.epoch {
            self.replies.send(
                slot,
                Response::Error(WireError::EpochMismatch {
                    descriptor: group.descriptor.clone(),
                }),
            );
            return Ok(false);
        }
        if group.pending_change.is_some() || group.pending_split.is_some() {
            self.replies.send(
                slot,
                invalid(format!(
                    "shard {shard}: a membership change or split is already in progress"
                )),
            );
            return Ok(false);
        }
        if MachineKind::of(new_shard) != MachineKind::Data || new_shard == shard || taken {
            self.replies.send(
                slot,
                invalid(format!("shard id {new_shard} is not free for a split")),
            );
            return Ok(false);
        }
        let at = at.unwrap_or_else(|| group.descriptor.arc.midpoint());
        if group.descriptor.arc.split_at(at).is_none() {
            self.replies.send(
                slot,
                invalid(format!(
                    "position {at} is not strictly inside the arc of shard {shard}"
                )),
            );
            return Ok(false);
        }
        let data = LogCommand::SplitFromEntry {
            epoch,
            new_shard,
            at,
        }
        .encode()?;
        match group.raw.propose(data) {
            Ok(index) => {
                info!(%shard, %new_shard, at, %index, "proposed a split");
                group.pending_split = Some(PendingChange {
                    index,
                    term: group.raw.term(),
                    reply: slot,
                });
                self.dirty.insert(shard);
                return Ok(true);
            }
            Err(error) => self.replies.send(slot, proposal_refused(group, &error)),
        }
        Ok(false)
    }
}
