//! The Raft state of one replica and the role transitions. Message handling per role lives in
//! `election.rs` (votes), `leader.rs` (replication, commit, reads, transfer, membership) and
//! `follower.rs` (appends, heartbeats, snapshots).
//!
//! ```text
//!            timeout              pre-vote won           votes won
//!  Follower ─────────> PreCandidate ─────────> Candidate ─────────> Leader
//!     ^  ^                 │ lost / higher term   │ lost / leader seen  │
//!     │  └─────────────────┴──────────────────────┘                     │
//!     └──────── higher term, check-quorum failure, removed from voters ─┘
//! ```

use crate::config::Config;
use crate::error::{Error, Result};
use crate::log::RaftLog;
use crate::progress::Progress;
use crate::read_only::ReadOnly;
use crate::rng::SplitMix64;
use crate::storage::Storage;
use ringkv_types::raft::{ConfState, EntryPayload, HardState, Message, MessageBody};
use ringkv_types::{LogIndex, NodeId, ShardId, Term};
use std::collections::{BTreeMap, BTreeSet};

/// A replica's role in its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking for pre-votes before starting a real election (thesis §9.6).
    PreCandidate,
    /// Running an election (Raft §5.2).
    Candidate,
    /// Leading the group.
    Leader,
}

/// Counters for observability and the simulator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RaftStats {
    /// Elections started (became candidate).
    pub elections: u64,
    /// Times this replica became leader.
    pub became_leader: u64,
    /// Snapshots sent to followers.
    pub snapshots_sent: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Peer messages dropped as impossible: malformed (see [`crate::validate`]), a heartbeat
    /// committing past our log, or an acknowledgement of entries we never had.
    pub invalid_messages_dropped: u64,
    /// Times this replica went quiescent.
    pub quiesced: u64,
    /// Times this replica left quiescence.
    pub woken: u64,
}

/// The Raft state machine of one replica. Driven through [`RawNode`](crate::RawNode).
pub struct Raft<S> {
    pub(crate) id: NodeId,
    pub(crate) group: ShardId,
    pub(crate) config: Config,
    pub(crate) term: Term,
    pub(crate) vote: NodeId,
    pub(crate) log: RaftLog<S>,
    pub(crate) role: Role,
    pub(crate) leader: NodeId,
    /// Latest configuration in the log (thesis §4.1: used as soon as appended).
    pub(crate) conf: ConfState,
    /// Index of the entry (or snapshot) that set `conf`.
    pub(crate) conf_index: LogIndex,
    /// Whether this replica was a voter in the configuration `conf` replaced (see
    /// [`Raft::promotable`]).
    pub(crate) voter_before_conf: bool,
    /// Leader only: every member's progress, this replica included.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// Candidate only: votes received (`true` = granted).
    pub(crate) votes: BTreeMap<NodeId, bool>,
    pub(crate) election_elapsed: u64,
    pub(crate) heartbeat_elapsed: u64,
    pub(crate) randomized_election_timeout: u64,
    /// Ticks since this value was created; never reset.
    pub(crate) now: u64,
    /// Set at start: behave as if a leader was just heard from, so that a restarted voter does
    /// not hand out votes within an election timeout of a lease the leader may still hold.
    pub(crate) quiet_since_start: bool,
    pub(crate) lead_transferee: Option<NodeId>,
    pub(crate) transfer_started_tick: u64,
    /// A `TimeoutNow` was sent in this term: the lease can no longer be trusted in this term
    /// (a delayed `TimeoutNow` may start an election that bypasses follower stickiness).
    pub(crate) transfer_sent_in_term: bool,
    pub(crate) uncommitted_bytes: u64,
    /// Quiescent: ticks do nothing until an input wakes the group (see `quiesce.rs`).
    pub(crate) quiescent: bool,
    /// Follower: the leader's last heartbeat round before it quiesced (see `quiesce.rs`).
    pub(crate) quiesced_round: u64,
    /// Members the driver reported down and not heard from since (see `quiesce.rs`).
    pub(crate) peers_down: BTreeSet<NodeId>,
    pub(crate) reads: ReadOnly,
    pub(crate) msgs: Vec<Message>,
    pub(crate) msgs_after_persist: Vec<Message>,
    pub(crate) rng: SplitMix64,
    pub(crate) stats: RaftStats,
}

impl<S: Storage> Raft<S> {
    /// Loads a replica from `storage`.
    pub(crate) fn new(config: Config, storage: S) -> Result<Self> {
        config.validate()?;
        let initial = storage.initial_state()?;
        let hard_state = initial.hard_state;
        let log = RaftLog::new(storage, config.group, hard_state.commit, config.applied)?;
        let mut raft = Self {
            id: config.id,
            group: config.group,
            rng: SplitMix64::new(config.seed ^ config.id.get().wrapping_mul(0x9E37_79B9)),
            term: hard_state.term,
            vote: hard_state.vote,
            log,
            role: Role::Follower,
            leader: NodeId::NONE,
            conf: initial.snapshot_meta.conf.clone(),
            conf_index: initial.snapshot_meta.index,
            voter_before_conf: false,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: config.election_timeout_ticks,
            now: 0,
            quiet_since_start: true,
            lead_transferee: None,
            transfer_started_tick: 0,
            transfer_sent_in_term: false,
            uncommitted_bytes: 0,
            quiescent: false,
            quiesced_round: 0,
            peers_down: BTreeSet::new(),
            reads: ReadOnly::default(),
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            stats: RaftStats::default(),
            config,
        };
        raft.rescan_conf()?;
        raft.reset_election_timer();
        Ok(raft)
    }

    pub(crate) fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    /// Whether this replica may campaign: a voter in its latest configuration, or a voter of
    /// the configuration before it while the latest one is not committed. Thesis §4.2.2: a
    /// server that is not part of its own latest configuration should still start elections,
    /// as it may still be needed until that configuration commits; it does not count its own
    /// vote (`record_vote` counts voters of the latest configuration only). Without this, a
    /// leader cut off right after appending its own removal, once it stepped down, could
    /// neither campaign nor vote for the others (its log is longer than theirs), and they
    /// still count it as a voter: seen as a group without a leader for 250 ticks while three
    /// of its four voters could talk (ringkv-sim seed 7152).
    pub(crate) fn promotable(&self) -> bool {
        self.conf.is_voter(self.id)
            || (self.voter_before_conf && self.conf_index > self.log.committed)
    }

    /// Puts `conf`, set by the entry or snapshot at `index`, in force (thesis §4.1: as soon as
    /// it is in the log), remembering whether this replica was a voter before it.
    pub(crate) fn set_conf(&mut self, conf: ConfState, index: LogIndex) {
        self.voter_before_conf = self.conf.is_voter(self.id);
        self.conf = conf;
        self.conf_index = index;
    }

    pub(crate) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let timeout = self.config.election_timeout_ticks;
        self.randomized_election_timeout = self.rng.range(timeout, 2 * timeout);
    }

    /// Moves to `term`, clearing the vote when the term changes.
    ///
    /// # Panics
    /// If `term` is lower than the current term (terms never decrease, Raft §5.1).
    pub(crate) fn set_term(&mut self, term: Term) {
        assert!(
            term >= self.term,
            "group {} node {}: term would decrease from {} to {}",
            self.group,
            self.id,
            self.term,
            term
        );
        if term > self.term {
            self.term = term;
            self.vote = NodeId::NONE;
            self.transfer_sent_in_term = false;
        }
    }

    fn reset_role_state(&mut self) {
        self.quiescent = false;
        self.leader = NodeId::NONE;
        self.progress.clear();
        self.votes.clear();
        self.heartbeat_elapsed = 0;
        self.lead_transferee = None;
        self.uncommitted_bytes = 0;
        self.reads.reset();
        self.reset_election_timer();
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader: NodeId) {
        self.set_term(term);
        self.reset_role_state();
        self.role = Role::Follower;
        self.leader = leader;
    }

    pub(crate) fn become_pre_candidate(&mut self) {
        assert!(
            self.role != Role::Leader,
            "group {}: leader cannot pre-campaign",
            self.group
        );
        self.reset_role_state();
        self.role = Role::PreCandidate;
        self.quiet_since_start = false;
    }

    pub(crate) fn become_candidate(&mut self) {
        assert!(
            self.role != Role::Leader,
            "group {}: leader cannot campaign",
            self.group
        );
        let next = self.term.next();
        self.set_term(next);
        self.reset_role_state();
        self.vote = self.id;
        self.role = Role::Candidate;
        self.quiet_since_start = false;
        self.stats.elections += 1;
    }

    pub(crate) fn become_leader(&mut self) -> Result<()> {
        assert!(
            self.role == Role::Candidate,
            "group {}: leader must be elected",
            self.group
        );
        self.reset_role_state();
        self.role = Role::Leader;
        self.leader = self.id;
        self.stats.became_leader += 1;
        let last_index = self.log.last_index()?;
        for member in self.conf.members() {
            let mut progress = Progress::new(last_index.next(), self.config.max_inflight_messages);
            if member == self.id {
                progress.match_index = self.log.persisted;
                progress.become_replicate();
                progress.recent_active = true;
            }
            self.progress.insert(member, progress);
        }
        // Raft §8: a new leader commits a no-op to learn which entries are committed.
        self.append_entry(EntryPayload::Noop)?;
        Ok(())
    }

    /// Whether this replica is the leader.
    pub(crate) fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    pub(crate) fn not_leader(&self) -> Error {
        Error::NotLeader {
            group: self.group,
            leader_hint: self.leader,
        }
    }

    /// Queues a message. Messages a leader sends in its own term may leave before the Ready
    /// that produced them is persisted; everything else (votes, acknowledgements) waits for it.
    pub(crate) fn send(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let immediate = match &body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. }
            | MessageBody::TimeoutNow => true,
            #[cfg(feature = "planted-bugs")]
            MessageBody::AppendResponse { .. } => self.config.planted_bugs.ack_before_persist,
            _ => false,
        };
        let message = Message {
            group: self.group,
            from: self.id,
            to,
            term,
            body,
        };
        if immediate {
            self.msgs.push(message);
        } else {
            self.msgs_after_persist.push(message);
        }
    }

    /// Advances logical time by one tick.
    pub(crate) fn tick(&mut self) -> Result<()> {
        if self.quiescent {
            return Ok(());
        }
        self.now += 1;
        if self.role == Role::Leader {
            self.tick_leader()
        } else {
            self.tick_election()
        }
    }

    fn tick_election(&mut self) -> Result<()> {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_timeout_ticks {
            self.quiet_since_start = false;
        }
        if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
            self.reset_election_timer();
            self.campaign(false)?;
        }
        Ok(())
    }

    /// Whether a vote request should be ignored because a leader was heard from recently
    /// (thesis §4.2.3 / §6.2; required for the lease to be safe).
    pub(crate) fn in_lease(&self) -> bool {
        self.config.check_quorum
            && self.election_elapsed < self.config.election_timeout_ticks
            && (self.leader.is_some() || self.quiet_since_start)
    }

    /// Entry point for every message from a peer.
    pub(crate) fn step(&mut self, message: Message) -> Result<()> {
        if message.group != self.group || message.to != self.id {
            return Ok(());
        }
        if crate::validate::validate(&message).is_err() {
            self.stats.invalid_messages_dropped += 1;
            return Ok(());
        }
        if self.quiescent {
            self.wake_for_message(&message);
        }
        if !self.peers_down.is_empty() {
            self.peers_down.remove(&message.from);
        }
        if message.term > self.term {
            match &message.body {
                MessageBody::PreVote { .. }
                | MessageBody::Vote {
                    transfer: false, ..
                } if self.in_lease() => {
                    // Leader stickiness: ignore, do not even bump our term.
                    return Ok(());
                }
                // A pre-vote does not change the receiver's term; a granted pre-vote answer
                // carries the term the pre-candidate will campaign in.
                MessageBody::PreVote { .. } | MessageBody::PreVoteResponse { reject: false } => {}
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Quiesce { .. }
                | MessageBody::InstallSnapshot { .. } => {
                    self.become_follower(message.term, message.from);
                }
                _ => self.become_follower(message.term, NodeId::NONE),
            }
        } else if message.term < self.term {
            match &message.body {
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Quiesce { .. }
                    if self.config.check_quorum || self.config.pre_vote =>
                {
                    // A stale leader (say, back from a partition) learns the new term from this
                    // answer and steps down, instead of being ignored forever.
                    let hint = self.log.last_index()?;
                    self.send(
                        message.from,
                        self.term,
                        MessageBody::AppendResponse {
                            reject: true,
                            index: LogIndex::ZERO,
                            hint_index: hint,
                            hint_term: Term::ZERO,
                        },
                    );
                }
                MessageBody::PreVote { .. } => {
                    self.send(
                        message.from,
                        self.term,
                        MessageBody::PreVoteResponse { reject: true },
                    );
                }
                _ => {}
            }
            return Ok(());
        }

        match &message.body {
            MessageBody::PreVote { .. } | MessageBody::Vote { .. } => {
                return self.handle_vote_request(message);
            }
            _ => {}
        }
        match self.role {
            Role::Leader => self.step_leader(message),
            Role::Candidate | Role::PreCandidate => self.step_candidate(message),
            Role::Follower => self.step_follower(message),
        }
    }

    /// Re-derives the configuration from the log: the snapshot's, overridden by the latest
    /// `Config` entry (thesis §4.1). Used at start and when a truncation removes the entry
    /// that set the current configuration.
    pub(crate) fn rescan_conf(&mut self) -> Result<()> {
        let (mut conf, mut conf_index) = match &self.log.unstable.snapshot {
            Some(snapshot) => (snapshot.meta.conf.clone(), snapshot.meta.index),
            None => {
                let meta = self.log.storage.initial_state()?.snapshot_meta;
                (meta.conf, meta.index)
            }
        };
        let mut voter_before = false;
        let first = self.log.first_index()?;
        let last = self.log.last_index()?;
        let mut next = first;
        while next <= last {
            let batch = self.log.entries(next, last.next(), 1 << 20)?;
            let Some(last_entry) = batch.last() else {
                break;
            };
            next = last_entry.index.next();
            for entry in &batch {
                if let EntryPayload::Config(c) = &entry.payload {
                    voter_before = conf.is_voter(self.id);
                    conf = c.clone();
                    conf_index = entry.index;
                }
            }
        }
        self.conf = conf;
        self.conf_index = conf_index;
        self.voter_before_conf = voter_before;
        Ok(())
    }

    /// Checks the invariants that must hold between any two steps (STYLE §5).
    ///
    /// # Panics
    /// On any violation.
    pub fn check_invariants(&self) {
        self.log.check_invariants();
        if self.role == Role::Leader {
            assert_eq!(
                self.leader, self.id,
                "group {}: leader field on leader",
                self.group
            );
            assert!(
                self.vote == self.id,
                "group {} node {}: leader of term {} did not vote for itself",
                self.group,
                self.id,
                self.term
            );
        }
        if self.role == Role::Candidate {
            assert_eq!(
                self.vote, self.id,
                "group {}: candidate votes for itself",
                self.group
            );
        }
    }
}
