//! Leader behaviour: proposals, replication with flow control (Raft §5.3), commit (§5.4.2),
//! heartbeats and check-quorum (thesis §6.2), reads (§6.4), leader transfer (§3.10) and
//! membership changes (§4.1, one server at a time).

use crate::conf_change::ConfChange;
use crate::error::{Error, Result, StorageError};
use crate::progress::{Progress, ProgressState};
use crate::quorum;
use crate::raft::{Raft, Role};
use crate::read_only::{ReadMode, ReadState};
use crate::storage::Storage;
use bytes::Bytes;
use ringkv_types::raft::{Entry, EntryPayload, Message, MessageBody};
use ringkv_types::{LogIndex, NodeId};

impl<S: Storage> Raft<S> {
    pub(crate) fn tick_leader(&mut self) -> Result<()> {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_timeout_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_active() {
                // Thesis §6.2: a leader that cannot reach a quorum steps down, so clients
                // stop waiting on it.
                self.become_follower(self.term, NodeId::NONE);
                return Ok(());
            }
            for (&id, progress) in self.progress.iter_mut() {
                if id != self.id {
                    progress.recent_active = false;
                }
            }
        }
        if self.lead_transferee.is_some()
            && self.now - self.transfer_started_tick >= self.config.election_timeout_ticks
        {
            // Thesis §3.10: a transfer that did not finish within an election timeout is
            // abandoned, so the leader serves proposals again.
            self.lead_transferee = None;
        }
        // Retry snapshots that were lost on the way, unless the driver reports each one (then a
        // slow transfer is still under way, and a second copy would only compete with it).
        let retry_after = 2 * self.config.election_timeout_ticks;
        let now = self.now;
        let by_timer = !self.config.snapshot_reports;
        for progress in self.progress.values_mut() {
            if let ProgressState::Snapshot { sent_at_tick, .. } = progress.state
                && by_timer
                && now - sent_at_tick >= retry_after
            {
                progress.become_probe();
                progress.needs_send = true;
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            if !self.maybe_quiesce()? {
                self.broadcast_heartbeat();
            }
        }
        Ok(())
    }

    pub(crate) fn quorum_active(&self) -> bool {
        let active = self
            .conf
            .voters
            .iter()
            .filter(|id| {
                self.progress
                    .get(id)
                    .is_some_and(|p| p.recent_active || **id == self.id)
            })
            .count();
        active >= quorum::majority(self.conf.voters.len())
    }

    pub(crate) fn broadcast_heartbeat(&mut self) {
        let round = self.reads.sent_round(self.now);
        self.reads.broadcast_pending = false;
        let committed = self.log.committed;
        let targets: Vec<(NodeId, LogIndex)> = self
            .progress
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, p)| (*id, p.match_index.min(committed)))
            .collect();
        for (to, commit) in targets {
            self.send(
                to,
                self.term,
                MessageBody::Heartbeat {
                    commit,
                    context: round,
                },
            );
        }
        if let Some(progress) = self.progress.get_mut(&self.id) {
            progress.acked_round = round;
        }
        // A group whose only voter is this replica confirms its rounds by itself.
        self.advance_reads();
    }

    /// Appends an entry of the current term to the leader's log.
    pub(crate) fn append_entry(&mut self, payload: EntryPayload) -> Result<LogIndex> {
        let index = self.log.last_index()?.next();
        let entry = Entry {
            term: self.term,
            index,
            payload,
        };
        self.uncommitted_bytes += entry.size_bytes();
        let config = match &entry.payload {
            EntryPayload::Config(conf) => Some(conf.clone()),
            _ => None,
        };
        self.log.append(std::slice::from_ref(&entry));
        for (&id, progress) in self.progress.iter_mut() {
            if id != self.id {
                progress.needs_send = true;
            }
        }
        if let Some(conf) = config {
            self.apply_conf(conf, index);
        }
        // A single-voter group commits as soon as the entry is durable (see `on_persisted`).
        Ok(index)
    }

    /// Proposes an application command. Returns the index it was appended at; it is committed
    /// when a `Ready` hands out an entry at that index with the same term.
    pub(crate) fn propose(&mut self, data: Bytes) -> Result<LogIndex> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        if self.lead_transferee.is_some() {
            return Err(Error::TransferInProgress { group: self.group });
        }
        let size = data.len() as u64 + 24;
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + size > self.config.max_uncommitted_bytes
        {
            return Err(Error::ProposalDropped {
                group: self.group,
                uncommitted_bytes: self.uncommitted_bytes,
                limit: self.config.max_uncommitted_bytes,
            });
        }
        self.append_entry(EntryPayload::Normal(data))
    }

    /// Proposes a membership change (one server at a time, learners first; see
    /// [`ConfChange`]).
    pub(crate) fn propose_conf_change(&mut self, change: ConfChange) -> Result<LogIndex> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let refuse = |reason| {
            Err(Error::ConfChangeRefused {
                group: self.group,
                reason,
            })
        };
        if self.lead_transferee.is_some() {
            return refuse("a leader transfer is in progress");
        }
        if self.conf_index > self.log.committed {
            return refuse("another configuration change is not committed yet");
        }
        // Thesis §4.1 (and the 2015 single-server-change fix): a leader must commit an entry
        // of its own term before it changes the configuration.
        if self.log.term(self.log.committed)? != self.term {
            return refuse("the leader has not committed an entry in its term yet");
        }
        let next = match change.apply_to(&self.conf) {
            Ok(next) => next,
            Err(reason) => return refuse(reason),
        };
        self.append_entry(EntryPayload::Config(next))
    }

    /// Puts a new configuration in force on the leader: progress for new members, none for
    /// removed ones.
    pub(crate) fn apply_conf(&mut self, conf: ringkv_types::raft::ConfState, index: LogIndex) {
        self.set_conf(conf, index);
        if self.role != Role::Leader {
            return;
        }
        let next = index.next();
        let capacity = self.config.max_inflight_messages;
        let members: Vec<NodeId> = self.conf.members().collect();
        self.progress.retain(|id, _| members.contains(id));
        for member in members {
            self.progress.entry(member).or_insert_with(|| {
                let mut progress = Progress::new(next, capacity);
                progress.recent_active = true;
                progress
            });
        }
        if self.lead_transferee.is_some_and(|t| !self.conf.is_voter(t)) {
            self.lead_transferee = None;
        }
    }

    /// Starts handing leadership to `to` (thesis §3.10): bring it up to date, then tell it to
    /// start an election at once. Proposals are refused meanwhile.
    pub(crate) fn transfer_leader(&mut self, to: NodeId) -> Result<()> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        if to == self.id || !self.conf.is_voter(to) {
            return Ok(());
        }
        if self.lead_transferee == Some(to) {
            return Ok(());
        }
        self.lead_transferee = Some(to);
        self.transfer_started_tick = self.now;
        let last_index = self.log.last_index()?;
        if self
            .progress
            .get(&to)
            .is_some_and(|p| p.match_index == last_index)
        {
            self.send_timeout_now(to);
        } else if let Some(progress) = self.progress.get_mut(&to) {
            progress.needs_send = true;
        }
        Ok(())
    }

    fn send_timeout_now(&mut self, to: NodeId) {
        self.transfer_sent_in_term = true;
        self.send(to, self.term, MessageBody::TimeoutNow);
    }

    /// Starts a read confirmed by `mode`; its [`ReadState`] comes out of a later `Ready`.
    pub(crate) fn read_index(&mut self, context: u64, mode: ReadMode) -> Result<()> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        if self.reads.waiting() >= self.config.max_pending_reads {
            return Err(Error::ReadRefused {
                group: self.group,
                reason: "too many pending reads",
            });
        }
        if self.log.term(self.log.committed)? != self.term {
            // Thesis §6.4 step 1: until an entry of this term commits, the commit index may be
            // behind what earlier leaders committed.
            self.reads.waiting_for_commit.push((context, mode));
            return Ok(());
        }
        self.serve_read(context, mode);
        Ok(())
    }

    fn serve_read(&mut self, context: u64, mode: ReadMode) {
        let index = self.log.committed;
        if mode == ReadMode::Lease && self.lease_valid() {
            self.reads.ready.push(ReadState { context, index });
            return;
        }
        let round = self.reads.round + 1;
        self.reads.pending.push_back(crate::read_only::PendingRead {
            context,
            index,
            round,
        });
        self.reads.broadcast_pending = true;
    }

    /// The round acknowledged by a quorum of voters (this replica counts with its latest).
    fn quorum_round(&self) -> u64 {
        let round = quorum::committed_index(&self.conf.voters, |id| {
            LogIndex(self.progress.get(&id).map_or(0, |p| p.acked_round))
        });
        round.get()
    }

    fn advance_reads(&mut self) {
        let quorum_round = self.quorum_round();
        self.reads.advance(quorum_round);
    }

    /// Whether the leader lease holds now (see `read_only` module docs).
    pub(crate) fn lease_valid(&self) -> bool {
        #[cfg(feature = "planted-bugs")]
        if self.config.planted_bugs.lease_read_without_quorum {
            return self.is_leader();
        }
        // A quiescent leader's heartbeats renew nothing: ReadIndex until it wakes (and the
        // rounds it sent before quiescing were forgotten when it quiesced).
        if !self.is_leader()
            || !self.config.check_quorum
            || self.transfer_sent_in_term
            || self.quiescent
        {
            return false;
        }
        if self.conf.voters.len() == 1 && self.conf.is_voter(self.id) {
            return true;
        }
        let Some(sent_tick) = self.reads.tick_of_round(self.quorum_round()) else {
            return false;
        };
        let lease_ticks = self.config.election_timeout_ticks - self.config.lease_margin_ticks;
        self.now < sent_tick + lease_ticks
    }

    /// Sends what each follower is missing. Called once per `Ready`, so that all proposals and
    /// acknowledgements of a driver turn go out as one append per follower.
    pub(crate) fn flush(&mut self) -> Result<()> {
        if !self.is_leader() {
            return Ok(());
        }
        if self.reads.broadcast_pending {
            self.broadcast_heartbeat();
        }
        let targets: Vec<NodeId> = self
            .progress
            .iter()
            .filter(|(id, p)| **id != self.id && p.needs_send)
            .map(|(id, _)| *id)
            .collect();
        for to in targets {
            if let Some(progress) = self.progress.get_mut(&to) {
                progress.needs_send = false;
            }
            // The first append goes out even if empty: it carries the commit index.
            if self.send_append(to, true)? {
                while self.send_append(to, false)? {}
            }
        }
        Ok(())
    }

    /// Whether anything waits in `flush`.
    pub(crate) fn has_pending_flush(&self) -> bool {
        self.is_leader()
            && (self.reads.broadcast_pending
                || self
                    .progress
                    .iter()
                    .any(|(id, p)| *id != self.id && p.needs_send))
    }

    /// Sends one append (or a snapshot) to `to`. Returns whether a message went out.
    fn send_append(&mut self, to: NodeId, send_if_empty: bool) -> Result<bool> {
        let Some(progress) = self.progress.get(&to) else {
            return Ok(false);
        };
        if progress.is_paused() {
            return Ok(false);
        }
        let next = progress.next_index;
        let last_index = self.log.last_index()?;
        let prev_index = next.prev();
        let prev_term = match self.log.term(prev_index) {
            Ok(term) => term,
            Err(StorageError::Compacted { .. }) => return self.send_snapshot(to),
            Err(e) => return Err(e.into()),
        };
        let entries = match self
            .log
            .entries(next, last_index.next(), self.config.max_message_bytes)
        {
            Ok(entries) => entries,
            Err(StorageError::Compacted { .. }) => return self.send_snapshot(to),
            Err(e) => return Err(e.into()),
        };
        if entries.is_empty() && !send_if_empty {
            return Ok(false);
        }
        let count = entries.len();
        let sent_last = prev_index.plus(count as u64);
        let commit = self.log.committed;
        if let Some(progress) = self.progress.get_mut(&to) {
            progress.sent_append(sent_last, count);
        }
        self.send(
            to,
            self.term,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            },
        );
        Ok(true)
    }

    fn send_snapshot(&mut self, to: NodeId) -> Result<bool> {
        let snapshot = match self.log.storage.snapshot(to) {
            Ok(snapshot) => snapshot,
            Err(StorageError::SnapshotTemporarilyUnavailable) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let index = snapshot.meta.index;
        let now = self.now;
        if let Some(progress) = self.progress.get_mut(&to) {
            progress.become_snapshot(index, now);
        }
        self.stats.snapshots_sent += 1;
        self.send(to, self.term, MessageBody::InstallSnapshot { snapshot });
        Ok(true)
    }

    /// Advances the commit index to what a quorum has durably appended, counting only entries
    /// of the current term (Raft §5.4.2; earlier-term entries commit with them). Returns
    /// whether it moved.
    pub(crate) fn maybe_commit(&mut self) -> Result<bool> {
        let candidate = quorum::committed_index(&self.conf.voters, |id| {
            self.progress
                .get(&id)
                .map_or(LogIndex::ZERO, |p| p.match_index)
        });
        if candidate <= self.log.committed {
            return Ok(false);
        }
        let current_term = self.log.term(candidate)? == self.term;
        #[cfg(feature = "planted-bugs")]
        let current_term = current_term || self.config.planted_bugs.commit_previous_term_entries;
        if !current_term {
            return Ok(false);
        }
        self.log.commit_to(candidate);
        self.after_commit()?;
        Ok(true)
    }

    fn after_commit(&mut self) -> Result<()> {
        for (&id, progress) in self.progress.iter_mut() {
            if id != self.id {
                progress.needs_send = true;
            }
        }
        if !self.reads.waiting_for_commit.is_empty()
            && self.log.term(self.log.committed)? == self.term
        {
            for (context, mode) in std::mem::take(&mut self.reads.waiting_for_commit) {
                self.serve_read(context, mode);
            }
        }
        // A leader that removed itself steps down once the change is committed (thesis §4.2.2).
        if !self.conf.is_voter(self.id) && self.log.committed >= self.conf_index {
            self.become_follower(self.term, NodeId::NONE);
        }
        Ok(())
    }

    /// The leader's own entries up to `index` are durable: count them toward commit.
    pub(crate) fn leader_persisted(&mut self, index: LogIndex) -> Result<()> {
        let id = self.id;
        if let Some(progress) = self.progress.get_mut(&id) {
            progress.maybe_update(index);
        }
        self.maybe_commit()?;
        Ok(())
    }

    pub(crate) fn step_leader(&mut self, message: Message) -> Result<()> {
        let from = message.from;
        if !self.progress.contains_key(&from) {
            return Ok(());
        }
        match message.body {
            MessageBody::AppendResponse {
                reject,
                index,
                hint_index,
                hint_term,
            } => self.handle_append_response(from, reject, index, hint_index, hint_term),
            MessageBody::HeartbeatResponse { context } => {
                let last_index = self.log.last_index()?;
                if let Some(progress) = self.progress.get_mut(&from) {
                    progress.recent_active = true;
                    progress.acked_round = progress.acked_round.max(context);
                    match progress.state {
                        ProgressState::Probe => progress.probe_sent = false,
                        // Acknowledgements may have been lost: free one slot so the stream
                        // restarts (the next answer frees the rest).
                        ProgressState::Replicate if progress.inflights.is_full() => {
                            progress.inflights.free_first();
                        }
                        _ => {}
                    }
                    if progress.match_index < last_index {
                        progress.needs_send = true;
                    }
                }
                self.advance_reads();
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn handle_append_response(
        &mut self,
        from: NodeId,
        reject: bool,
        index: LogIndex,
        hint_index: LogIndex,
        hint_term: ringkv_types::Term,
    ) -> Result<()> {
        if reject {
            let probe_from = if hint_term > ringkv_types::Term::ZERO {
                self.log.find_conflict_by_term(hint_index, hint_term).0
            } else {
                hint_index
            };
            if let Some(progress) = self.progress.get_mut(&from) {
                progress.recent_active = true;
                if progress.maybe_decrease_to(index, probe_from) {
                    if progress.state == ProgressState::Replicate {
                        progress.become_probe();
                    }
                    progress.needs_send = true;
                }
            }
            return Ok(());
        }
        let last_index = self.log.last_index()?;
        if index > last_index {
            // An acknowledgement of entries this leader never had: counting it could commit
            // what does not exist.
            self.stats.invalid_messages_dropped += 1;
            return Ok(());
        }
        let Some(progress) = self.progress.get_mut(&from) else {
            return Ok(());
        };
        progress.recent_active = true;
        let was_paused = progress.is_paused();
        if !progress.maybe_update(index) {
            if was_paused && !progress.is_paused() {
                progress.needs_send = true;
            }
            return Ok(());
        }
        match progress.state {
            ProgressState::Probe => progress.become_replicate(),
            ProgressState::Snapshot { pending_index, .. }
                if progress.match_index >= pending_index =>
            {
                progress.become_probe();
                progress.become_replicate();
            }
            ProgressState::Replicate => progress.inflights.free_up_to(index),
            ProgressState::Snapshot { .. } => {}
        }
        if progress.match_index < last_index {
            progress.needs_send = true;
        }
        let caught_up = progress.match_index == last_index;
        self.maybe_commit()?;
        if self.lead_transferee == Some(from) && caught_up && self.is_leader() {
            self.send_timeout_now(from);
        }
        Ok(())
    }
}
