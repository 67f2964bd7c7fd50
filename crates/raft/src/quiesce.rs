//! Quiescence: an idle group stops ticking and heartbeating (like CockroachDB's quiesced ranges
//! and TiKV's hibernated regions), so that thousands of idle groups per node cost nothing.
//!
//! - **Going quiet.** At a heartbeat tick, a leader with nothing to do (everything committed in
//!   its term, every member's match index at its last index and streaming, no read, transfer or
//!   snapshot in flight) sends `Quiesce { commit, last_index, last_term }` instead of a
//!   heartbeat and becomes quiescent. A follower whose log ends at the same entry, and which
//!   then commits all of it, becomes quiescent silently; any other follower answers a
//!   `HeartbeatResponse`, which wakes the leader.
//! - **Quiescent.** `tick` does nothing (the driver may skip it: `RawNode::is_quiescent`); the
//!   election timer and the leader's logical clock stand still.
//! - **Waking.** Any message, proposal, read, transfer or campaign, `RawNode::wake`, and
//!   `RawNode::report_peer_down` (the driver's node-liveness signal) end quiescence. A woken
//!   leader heartbeats at once (unless a proposal or read sends its own messages) and restarts
//!   its check-quorum window; a woken follower restarts its election timer and, unless its
//!   leader's own message woke it, sends the leader `Wake`.
//!
//! Safety: quiescence changes when messages are sent, never what a message means; votes, commit
//! and the log are untouched. Two things keep the lease safe. A quiescent leader's clock stands
//! still, so the round send times it remembers would overstate its lease after waking: it
//! forgets them when it quiesces, and serves no lease read while quiescent (reads fall back to
//! ReadIndex, which wakes the group). A follower's stickiness is never shortened: its election
//! timer restarts from zero when it wakes. Liveness: a follower whose leader died while the
//! group was quiet learns it only from the driver's liveness report, after which it campaigns
//! as after any silent leader (one election timeout later); the simulator checks this with its
//! leader liveness checker and the planted bug `quiescent_follower_ignores_liveness`.

use crate::error::Result;
use crate::progress::ProgressState;
use crate::raft::{Raft, Role};
use crate::storage::Storage;
use ringkv_types::raft::{Message, MessageBody};
use ringkv_types::{LogIndex, NodeId, Term};

/// Why a quiescent replica wakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WakeReason {
    /// A proposal, read, transfer or campaign: on a leader the request sends its own messages.
    Request,
    /// The driver asked, reported a peer down, or a peer's message came: a leader heartbeats.
    Driver,
    /// An append, heartbeat or snapshot from the follower's own leader, which is awake.
    LeaderMessage,
}

impl<S: Storage> Raft<S> {
    /// At a heartbeat tick: goes quiescent if the group has nothing to do, sending every member
    /// the final `Quiesce` heartbeat. Returns whether it did.
    pub(crate) fn maybe_quiesce(&mut self) -> Result<bool> {
        if !self.can_quiesce()? {
            return Ok(false);
        }
        let last_index = self.log.last_index()?;
        let last_term = self.log.last_term()?;
        let commit = self.log.committed;
        let context = self.reads.round;
        let members: Vec<NodeId> = self
            .progress
            .keys()
            .copied()
            .filter(|id| *id != self.id)
            .collect();
        for to in members {
            self.send(
                to,
                self.term,
                MessageBody::Quiesce {
                    commit,
                    last_index,
                    last_term,
                    context,
                },
            );
        }
        self.quiescent = true;
        self.stats.quiesced += 1;
        // The clock stops: the send times of earlier rounds could back a lease past its end.
        self.reads.round_ticks.clear();
        Ok(true)
    }

    fn can_quiesce(&self) -> Result<bool> {
        if !self.config.quiesce
            || self.role != Role::Leader
            || self.quiescent
            || self.lead_transferee.is_some()
            || self.reads.waiting() > 0
            || !self.reads.ready.is_empty()
            || self.reads.broadcast_pending
        {
            return Ok(false);
        }
        let last_index = self.log.last_index()?;
        if self.log.committed != last_index
            || self.log.persisted != last_index
            || self.log.term(last_index)? != self.term
        {
            return Ok(false);
        }
        // Every member has the whole log and has answered within the check-quorum period, or
        // is a voter reported down: a dead voter need not keep the group awake (when it comes
        // back it campaigns, which wakes the leader, whose heartbeats then catch it up). A
        // learner never campaigns, so one that lacks entries keeps the group awake even when
        // reported down: quiet, nothing would ever send it the rest of the log, and the
        // placement driver waits for it to catch up before promoting it (a drain stalled on
        // this). And a quorum has answered, so that a leader cut off from its group steps
        // down instead of going quiet.
        let caught_up = self.progress.iter().all(|(&id, progress)| {
            if id == self.id {
                return progress.match_index == last_index;
            }
            let left_out = self.peers_down.contains(&id)
                && (self.conf.is_voter(id) || progress.match_index == last_index);
            left_out
                || (progress.match_index == last_index
                    && progress.state == ProgressState::Replicate
                    && !progress.needs_send
                    && progress.recent_active)
        });
        Ok(caught_up && self.quorum_active())
    }

    /// A follower's handling of the leader's `Quiesce` (the caller checked the term).
    pub(crate) fn handle_quiesce(
        &mut self,
        from: NodeId,
        commit: LogIndex,
        (last_index, last_term): (LogIndex, Term),
        context: u64,
    ) -> Result<()> {
        let our_last = self.log.last_index()?;
        if commit > our_last {
            // Like a heartbeat: a leader sends at most what it knows we have.
            self.stats.invalid_messages_dropped += 1;
            return Ok(());
        }
        self.heard_from_leader(from);
        // Commit only on a log known to match the leader's: the leader sends its own commit
        // index to every member, also to one it skipped as reported down, whose log may
        // differ (log matching: equal entries at `last_index` mean equal logs up to it).
        let matches = our_last == last_index && self.log.last_term()? == last_term;
        if matches {
            self.log.commit_to(commit);
        }
        let agrees = matches
            && self.log.committed == last_index
            && self.log.persisted == last_index
            && self.log.unstable.snapshot.is_none();
        if agrees {
            if !self.quiescent {
                self.quiescent = true;
                self.stats.quiesced += 1;
            }
            self.quiesced_round = context;
        } else {
            // Not the leader's log (yet): keep ticking, and wake the leader, which goes on
            // replicating and tries again at a later heartbeat.
            self.send(
                from,
                self.term,
                MessageBody::HeartbeatResponse { context: 0 },
            );
        }
        Ok(())
    }

    /// Leaves quiescence, if quiescent.
    pub(crate) fn wake(&mut self, reason: WakeReason) {
        if !self.quiescent {
            return;
        }
        self.quiescent = false;
        self.stats.woken += 1;
        if self.role == Role::Leader {
            // A fresh check-quorum window: members must answer within an election timeout of
            // now, not of when the group went quiet.
            self.election_elapsed = 0;
            self.heartbeat_elapsed = 0;
            let id = self.id;
            for (&member, progress) in self.progress.iter_mut() {
                if member != id {
                    progress.recent_active = false;
                }
            }
            if reason == WakeReason::Driver {
                self.broadcast_heartbeat();
            }
        } else {
            self.reset_election_timer();
            if reason != WakeReason::LeaderMessage && self.leader.is_some() {
                self.send(self.leader, self.term, MessageBody::Wake);
            }
        }
    }

    /// Wakes for an incoming message (the caller checked that we are quiescent). The leader's
    /// own messages need no `Wake` back; a duplicate `Quiesce` is left to its handler, and
    /// messages that were on their way when the group went quiet and say nothing new are
    /// handled without waking (else the answers to the last heartbeat round would wake the
    /// leader right after it quiesced, every time).
    pub(crate) fn wake_for_message(&mut self, message: &Message) {
        if matches!(message.body, MessageBody::Quiesce { .. }) || self.is_late(message) {
            return;
        }
        let from_leader = message.from == self.leader
            && matches!(
                message.body,
                MessageBody::Append { .. }
                    | MessageBody::Heartbeat { .. }
                    | MessageBody::InstallSnapshot { .. }
            );
        let reason = if from_leader {
            WakeReason::LeaderMessage
        } else {
            WakeReason::Driver
        };
        self.wake(reason);
    }

    /// Whether `message` was sent before the group went quiet and carries nothing new: on the
    /// leader, an acknowledgement from a member that was caught up (every member not reported
    /// down was); on a follower, a heartbeat of a round before the `Quiesce`, or an append of
    /// entries it has, from its leader in its term (a leader never truncates its own log, so
    /// such an append cannot conflict).
    fn is_late(&self, message: &Message) -> bool {
        if message.term != self.term {
            return false;
        }
        match (&message.body, self.role) {
            (MessageBody::HeartbeatResponse { context }, Role::Leader) => {
                // Context 0 is a follower's refusal of the `Quiesce`: it must wake us.
                *context != 0 && !self.peers_down.contains(&message.from)
            }
            (MessageBody::AppendResponse { reject: false, .. }, Role::Leader) => {
                !self.peers_down.contains(&message.from)
            }
            (MessageBody::Heartbeat { context, commit }, Role::Follower) => {
                message.from == self.leader
                    && *context <= self.quiesced_round
                    && *commit <= self.log.committed
            }
            (
                MessageBody::Append {
                    prev_index,
                    entries,
                    commit,
                    ..
                },
                Role::Follower,
            ) => {
                message.from == self.leader
                    && prev_index.plus(entries.len() as u64)
                        <= self.log.last_index().unwrap_or(LogIndex::ZERO)
                    && *commit <= self.log.committed
            }
            _ => false,
        }
    }

    /// The driver's liveness signal: the node hosting `member` is suspected dead (until a
    /// message from it arrives).
    pub(crate) fn report_peer_down(&mut self, member: NodeId) {
        if member != self.id {
            self.peers_down.insert(member);
        }
        #[cfg(feature = "planted-bugs")]
        if self.config.planted_bugs.quiescent_follower_ignores_liveness
            && self.quiescent
            && self.role == Role::Follower
            && member == self.leader
        {
            return;
        }
        let _ = member;
        self.wake(WakeReason::Driver);
    }
}
