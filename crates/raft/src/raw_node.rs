//! The driver-facing handle of one group: inputs in, one [`Ready`] out.

use crate::conf_change::ConfChange;
use crate::config::Config;
use crate::error::Result;
use crate::quiesce::WakeReason;
use crate::raft::{Raft, RaftStats, Role};
use crate::read_only::{ReadMode, ReadState};
use crate::storage::Storage;
use bytes::Bytes;
use ringkv_types::raft::{ConfState, Entry, HardState, Message, Snapshot};
use ringkv_types::{LogIndex, NodeId, Term};
use std::collections::VecDeque;

/// Volatile state the driver may want to observe (who leads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// Known leader, or `NodeId::NONE`.
    pub leader: NodeId,
    /// This replica's role.
    pub role: Role,
}

/// Everything the driver must do after feeding inputs to a group, in this order:
///
/// 1. Send `messages` (they may leave before persistence: a leader's appends and heartbeats).
/// 2. Persist `snapshot` (installing it in the state machine), then `entries` (replacing any
///    stored entries at or after the first one's index), then `hard_state`, durably (fsync).
///    Readies must be persisted in `number` order; the next Ready may be taken and its messages
///    sent while this one is still being persisted.
/// 3. Call [`RawNode::on_persisted`] with `number`.
/// 4. Send `persisted_messages` (votes and acknowledgements that promise durable state).
/// 5. Apply `committed_entries` in order, then call [`RawNode::on_applied`]. They are always
///    durable locally already. `read_states` may be served once applied reaches their index.
///
/// Nothing here may be skipped: dropping messages is allowed (Raft retries), but every
/// persistence step must happen before the acknowledgement that depends on it.
#[derive(Debug, Default)]
pub struct Ready {
    /// Sequence number for [`RawNode::on_persisted`].
    pub number: u64,
    /// New leader/role, when changed since the last Ready.
    pub soft_state: Option<SoftState>,
    /// Term, vote and commit to persist, when changed.
    pub hard_state: Option<HardState>,
    /// A snapshot from the leader to install and persist.
    pub snapshot: Option<Snapshot>,
    /// Entries to append durably.
    pub entries: Vec<Entry>,
    /// Messages to send now.
    pub messages: Vec<Message>,
    /// Messages to send only after this Ready is persisted.
    pub persisted_messages: Vec<Message>,
    /// Committed, locally durable entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Confirmed reads.
    pub read_states: Vec<ReadState>,
}

/// What a Ready promised to persist, remembered until the driver reports it durable.
#[derive(Debug)]
struct InFlightReady {
    number: u64,
    last_entry: Option<(LogIndex, Term)>,
    snapshot_index: Option<LogIndex>,
}

/// A point-in-time summary of a replica, for status pages and checkers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Node id.
    pub id: NodeId,
    /// Current term.
    pub term: Term,
    /// Vote in `term`.
    pub vote: NodeId,
    /// Role.
    pub role: Role,
    /// Known leader.
    pub leader: NodeId,
    /// Commit index.
    pub committed: LogIndex,
    /// Applied index.
    pub applied: LogIndex,
    /// Locally durable index.
    pub persisted: LogIndex,
    /// First index in the log.
    pub first_index: LogIndex,
    /// Last index in the log.
    pub last_index: LogIndex,
    /// Configuration in force.
    pub conf: ConfState,
    /// Index of the entry that set it.
    pub conf_index: LogIndex,
    /// Whether the leader lease holds (leader only).
    pub lease_valid: bool,
    /// Whether the replica is quiescent.
    pub quiescent: bool,
    /// Counters.
    pub stats: RaftStats,
}

/// One group's Raft replica, sans I/O. The driver feeds it ticks, messages and requests, then
/// drains a [`Ready`] and reports back; see [`Ready`] for the contract.
pub struct RawNode<S> {
    raft: Raft<S>,
    previous_soft: SoftState,
    previous_hard: HardState,
    next_number: u64,
    in_flight: VecDeque<InFlightReady>,
}

impl<S: Storage> RawNode<S> {
    /// Opens a replica over `storage`. A new group's storage must already hold its initial
    /// configuration as the snapshot metadata (index 0); a replica being added holds nothing
    /// and learns the configuration from the leader.
    ///
    /// # Errors
    /// Invalid configuration or unreadable storage.
    pub fn new(config: Config, storage: S) -> Result<Self> {
        let raft = Raft::new(config, storage)?;
        let previous_hard = raft.hard_state();
        let previous_soft = SoftState {
            leader: raft.leader,
            role: raft.role,
        };
        Ok(Self {
            raft,
            previous_soft,
            previous_hard,
            next_number: 1,
            in_flight: VecDeque::new(),
        })
    }

    /// Advances logical time by one tick (drives elections and heartbeats). Does nothing while
    /// the group is quiescent ([`RawNode::is_quiescent`]).
    ///
    /// # Errors
    /// Storage failures.
    pub fn tick(&mut self) -> Result<()> {
        self.raft.tick()
    }

    /// Hands a message from a peer to the replica. Messages for another group or node, or from
    /// stale terms, are ignored.
    ///
    /// # Errors
    /// Storage failures.
    pub fn step(&mut self, message: Message) -> Result<()> {
        self.raft.step(message)
    }

    /// Starts an election now, skipping pre-vote and asking voters to ignore leader
    /// stickiness (like a leader transfer). Only for bootstrapping a new group and for tests:
    /// on a group that may have a leader holding a lease, let the election timer act instead.
    ///
    /// # Errors
    /// Storage failures.
    pub fn campaign(&mut self) -> Result<()> {
        self.raft.wake(WakeReason::Request);
        if self.raft.role == Role::Leader {
            return Ok(());
        }
        self.raft.campaign(true)
    }

    /// Proposes an application command on the leader; returns its index. The command is
    /// committed when a `Ready` hands out the entry at that index with the term of this
    /// proposal ([`RawNode::term`] now); a different term there means it was lost.
    ///
    /// # Errors
    /// `NotLeader`, `TransferInProgress`, `ProposalDropped`.
    pub fn propose(&mut self, data: Bytes) -> Result<LogIndex> {
        self.raft.wake(WakeReason::Request);
        self.raft.propose(data)
    }

    /// Proposes a membership change (see [`ConfChange`]).
    ///
    /// # Errors
    /// `NotLeader` or `ConfChangeRefused`.
    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<LogIndex> {
        self.raft.wake(WakeReason::Request);
        self.raft.propose_conf_change(change)
    }

    /// Starts a linearizable read; a [`ReadState`] with `context` comes out of a later Ready.
    ///
    /// # Errors
    /// `NotLeader`, or `ReadRefused` when too many reads wait.
    pub fn read_index(&mut self, context: u64, mode: ReadMode) -> Result<()> {
        self.raft.wake(WakeReason::Request);
        self.raft.read_index(context, mode)
    }

    /// Asks the leader to hand leadership to `to`.
    ///
    /// # Errors
    /// `NotLeader`.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<()> {
        self.raft.wake(WakeReason::Request);
        self.raft.transfer_leader(to)
    }

    /// Leader only: the member leadership is being handed to, while a transfer is under way.
    /// `None` once it finished or was abandoned (a transfer that does not finish within an
    /// election timeout is abandoned, and the leader serves proposals again).
    pub fn transferring_to(&self) -> Option<NodeId> {
        self.raft.lead_transferee
    }

    /// Lengthens this replica's current election timer by `ticks` (until the timer is next
    /// reset: a leader heard, a vote granted, a campaign). Liveness only, never safety: a
    /// driver uses it so that a brand-new group's replicas leave its first election to the
    /// preferred leader, which may start a little later, instead of racing it.
    pub fn defer_election(&mut self, ticks: u64) {
        self.raft.randomized_election_timeout =
            self.raft.randomized_election_timeout.saturating_add(ticks);
    }

    /// Whether the group is quiescent ([`Config::quiesce`]): [`RawNode::tick`] does nothing
    /// until something wakes it, so the driver may skip it.
    pub fn is_quiescent(&self) -> bool {
        self.raft.quiescent
    }

    /// Ends quiescence, if quiescent: a leader heartbeats at once, a follower restarts its
    /// election timer and asks its leader to heartbeat (`Wake`). For a driver that wants the
    /// group awake (before a burst of requests, or on a node-liveness change).
    pub fn wake(&mut self) {
        self.raft.wake(WakeReason::Driver);
    }

    /// The driver's node-liveness signal: the node hosting member `peer` is suspected dead
    /// (its liveness record expired, or it has been unreachable for a while). Wakes the group:
    /// a follower whose leader died while the group was quiescent then campaigns after an
    /// election timeout, as if the leader had gone silent now; a leader restarts check-quorum.
    /// A false suspicion costs one heartbeat round, never safety.
    pub fn report_peer_down(&mut self, peer: NodeId) {
        self.raft.report_peer_down(peer);
    }

    /// Reports that `to` could not be reached: the leader stops streaming to it and probes.
    pub fn report_unreachable(&mut self, to: NodeId) {
        if let Some(progress) = self.raft.progress.get_mut(&to)
            && progress.state == crate::progress::ProgressState::Replicate
        {
            progress.become_probe();
        }
    }

    /// Reports whether a snapshot sent to `to` arrived (`false`: send again later).
    pub fn report_snapshot(&mut self, to: NodeId, delivered: bool) {
        if let Some(progress) = self.raft.progress.get_mut(&to)
            && let crate::progress::ProgressState::Snapshot { .. } = progress.state
        {
            progress.become_probe();
            if !delivered {
                progress.needs_send = true;
            }
        }
    }

    /// Whether a call to [`RawNode::ready`] would return anything.
    pub fn has_ready(&self) -> bool {
        let raft = &self.raft;
        !raft.msgs.is_empty()
            || !raft.msgs_after_persist.is_empty()
            || raft.has_pending_flush()
            || raft.hard_state() != self.previous_hard
            || self.soft_state() != self.previous_soft
            || !raft.log.unstable.entries_to_persist().is_empty()
            || (raft.log.unstable.snapshot.is_some() && !raft.log.unstable.snapshot_in_progress)
            || raft.log.has_next_committed_entries()
            || !raft.reads.ready.is_empty()
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            leader: self.raft.leader,
            role: self.raft.role,
        }
    }

    /// Takes everything there is to do; see [`Ready`] for the driving contract.
    ///
    /// # Errors
    /// Storage failures.
    pub fn ready(&mut self) -> Result<Ready> {
        self.raft.flush()?;
        let raft = &mut self.raft;
        let number = self.next_number;
        self.next_number += 1;
        let mut ready = Ready {
            number,
            ..Ready::default()
        };

        let soft = SoftState {
            leader: raft.leader,
            role: raft.role,
        };
        if soft != self.previous_soft {
            ready.soft_state = Some(soft);
            self.previous_soft = soft;
        }
        let hard = raft.hard_state();
        if hard != self.previous_hard {
            assert!(
                hard.term >= self.previous_hard.term,
                "group {}: term regressed from {} to {}",
                raft.group,
                self.previous_hard.term,
                hard.term
            );
            assert!(
                hard.commit >= self.previous_hard.commit,
                "group {}: commit regressed from {} to {}",
                raft.group,
                self.previous_hard.commit,
                hard.commit
            );
            ready.hard_state = Some(hard);
            self.previous_hard = hard;
        }
        let unstable = &mut raft.log.unstable;
        if unstable.snapshot.is_some() && !unstable.snapshot_in_progress {
            ready.snapshot = unstable.snapshot.clone();
        }
        ready.entries = unstable.entries_to_persist().to_vec();
        unstable.accept_in_progress();
        ready.messages = std::mem::take(&mut raft.msgs);
        ready.persisted_messages = std::mem::take(&mut raft.msgs_after_persist);
        ready.committed_entries = raft
            .log
            .take_next_committed_entries(raft.config.max_apply_bytes)?;
        // The planted bug hands out the entry before the batch again (an apply cursor off by
        // one), while it is still in the log.
        #[cfg(feature = "planted-bugs")]
        if raft.config.planted_bugs.apply_entry_twice
            && let Some(first) = ready.committed_entries.first()
            && first.index > raft.log.first_index()?
        {
            let again = raft
                .log
                .entries(first.index.prev(), first.index, u64::MAX)?;
            ready.committed_entries.splice(0..0, again);
        }
        if raft.is_leader() {
            let released: u64 = ready.committed_entries.iter().map(Entry::size_bytes).sum();
            raft.uncommitted_bytes = raft.uncommitted_bytes.saturating_sub(released);
        }
        ready.read_states = std::mem::take(&mut raft.reads.ready);

        let last_entry = ready.entries.last().map(|e| (e.index, e.term));
        let snapshot_index = ready.snapshot.as_ref().map(|s| s.meta.index);
        if last_entry.is_some() || snapshot_index.is_some() {
            self.in_flight.push_back(InFlightReady {
                number,
                last_entry,
                snapshot_index,
            });
        }
        Ok(ready)
    }

    /// Reports that Ready `number` (and every earlier one) is durable.
    ///
    /// # Errors
    /// Storage failures.
    pub fn on_persisted(&mut self, number: u64) -> Result<()> {
        while self.in_flight.front().is_some_and(|r| r.number <= number) {
            let Some(done) = self.in_flight.pop_front() else {
                break;
            };
            if let Some(index) = done.snapshot_index {
                self.raft.log.stable_snapshot_to(index);
            }
            if let Some((index, term)) = done.last_entry {
                self.raft.log.stable_to(index, term);
            }
        }
        if self.raft.is_leader() {
            let persisted = self.raft.log.persisted;
            self.raft.leader_persisted(persisted)?;
        }
        Ok(())
    }

    /// Reports that committed entries up to `index` were applied to the state machine.
    pub fn on_applied(&mut self, index: LogIndex) {
        self.raft.log.applied_to(index);
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.raft.term
    }

    /// Whether this replica leads its group.
    pub fn is_leader(&self) -> bool {
        self.raft.is_leader()
    }

    /// The configuration in force.
    pub fn conf_state(&self) -> &ConfState {
        &self.raft.conf
    }

    /// The log storage (for the driver's own reads and compaction).
    pub fn storage(&self) -> &S {
        &self.raft.log.storage
    }

    /// A summary of the replica.
    pub fn status(&self) -> Status {
        let raft = &self.raft;
        Status {
            id: raft.id,
            term: raft.term,
            vote: raft.vote,
            role: raft.role,
            leader: raft.leader,
            committed: raft.log.committed,
            applied: raft.log.applied,
            persisted: raft.log.persisted,
            first_index: raft.log.first_index().unwrap_or(LogIndex::ZERO),
            last_index: raft.log.last_index().unwrap_or(LogIndex::ZERO),
            conf: raft.conf.clone(),
            conf_index: raft.conf_index,
            lease_valid: raft.lease_valid(),
            quiescent: raft.quiescent,
            stats: raft.stats,
        }
    }

    /// Checks internal invariants; tests and the simulator call this after every step.
    ///
    /// # Panics
    /// On any violation.
    pub fn check_invariants(&self) {
        self.raft.check_invariants();
    }

    /// Leader only: the highest log index known to be replicated on member `id`, `None` when
    /// this replica does not lead or `id` is not a member. Drivers use it to promote a learner
    /// only once it has caught up.
    pub fn match_index(&self, id: NodeId) -> Option<LogIndex> {
        if !self.raft.is_leader() {
            return None;
        }
        self.raft
            .progress
            .get(&id)
            .map(|progress| progress.match_index)
    }

    /// Whether this replica considers its lease valid (leader only).
    pub fn lease_valid(&self) -> bool {
        self.raft.lease_valid()
    }

    /// Reads the entries `[low, high)` from the log (up to `max_bytes`).
    ///
    /// # Errors
    /// `Compacted` / `Unavailable` and storage failures.
    pub fn entries(&self, low: LogIndex, high: LogIndex, max_bytes: u64) -> Result<Vec<Entry>> {
        Ok(self.raft.log.entries(low, high, max_bytes)?)
    }
}
