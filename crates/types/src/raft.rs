//! Raft wire and log types: entries, hard state, configuration, snapshots and messages.
//!
//! These live in `types` rather than in the Raft core because storage (which persists entries and
//! hard states) and transport (which carries messages) use them without depending on the core.
//! They are plain data; all behaviour is in `ringkv-raft`.

use crate::ids::{LogIndex, NodeId, ShardId, Term};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// The empty entry a new leader appends to commit entries of earlier terms (Raft §5.4.2,
    /// §8: also lets the leader learn its commit index and serve reads).
    Noop,
    /// An application command, opaque to Raft.
    Normal(Bytes),
    /// A membership change: the complete configuration that takes effect as soon as this entry is
    /// appended to a log (Raft thesis §4.1), whether or not it is committed.
    Config(ConfState),
}

/// One entry of a Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Term of the leader that created the entry.
    pub term: Term,
    /// Position in the log.
    pub index: LogIndex,
    /// What the entry carries.
    pub payload: EntryPayload,
}

impl Entry {
    /// Approximate in-memory and on-wire size, used for byte limits on messages and batches.
    pub fn size_bytes(&self) -> u64 {
        let payload = match &self.payload {
            EntryPayload::Noop => 0,
            EntryPayload::Normal(data) => data.len() as u64,
            EntryPayload::Config(conf) => 8 * (conf.voters.len() + conf.learners.len()) as u64,
        };
        payload + 24
    }
}

/// The state Raft must persist before answering any message (Raft Figure 2: currentTerm,
/// votedFor) plus the commit index, which may be persisted lazily (it is only a hint on restart).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// Latest term this node has seen.
    pub term: Term,
    /// Candidate this node voted for in `term`, or `NodeId::NONE`.
    pub vote: NodeId,
    /// Highest index known to be committed.
    pub commit: LogIndex,
}

/// A group's membership: voters decide elections and commits, learners only receive the log.
/// Both lists are sorted and disjoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConfState {
    /// Members that vote and count toward quorums.
    pub voters: Vec<NodeId>,
    /// Members that receive the log but do not vote.
    pub learners: Vec<NodeId>,
}

impl ConfState {
    /// A configuration of the given voters and no learners.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        let mut voters: Vec<NodeId> = voters.into_iter().collect();
        voters.sort_unstable();
        voters.dedup();
        Self {
            voters,
            learners: Vec::new(),
        }
    }

    /// Whether `id` is a voter.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.binary_search(&id).is_ok()
    }

    /// Whether `id` is a learner.
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.binary_search(&id).is_ok()
    }

    /// Whether `id` is a member at all.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Voters then learners.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }
}

/// What identifies a snapshot: the last entry it covers and the configuration at that entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Index of the last entry covered.
    pub index: LogIndex,
    /// Term of the last entry covered.
    pub term: Term,
    /// Configuration as of `index`.
    pub conf: ConfState,
}

/// A snapshot of a state machine. `data` is opaque to Raft; the node may leave it empty and
/// stream the shard's data beside the message instead.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Position and configuration.
    pub meta: SnapshotMeta,
    /// State machine contents.
    pub data: Bytes,
}

/// A Raft message between two replicas of one group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The group (shard) this message belongs to.
    pub group: ShardId,
    /// Sender.
    pub from: NodeId,
    /// Recipient.
    pub to: NodeId,
    /// Sender's term; for a pre-vote, the term the sender would campaign in.
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of Raft message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// Pre-vote request (thesis §9.6): would you vote for me? Changes no state on the receiver.
    PreVote {
        /// Candidate's last log index.
        last_index: LogIndex,
        /// Candidate's last log term.
        last_term: Term,
    },
    /// Answer to `PreVote`.
    PreVoteResponse {
        /// True when the pre-vote is refused.
        reject: bool,
    },
    /// RequestVote (Raft §5.2).
    Vote {
        /// Candidate's last log index.
        last_index: LogIndex,
        /// Candidate's last log term.
        last_term: Term,
        /// Set when the election follows a leader transfer: receivers drop leader stickiness.
        transfer: bool,
    },
    /// Answer to `Vote`.
    VoteResponse {
        /// True when the vote is refused.
        reject: bool,
    },
    /// AppendEntries (Raft §5.3).
    Append {
        /// Index of the entry just before `entries`.
        prev_index: LogIndex,
        /// Term of that entry.
        prev_term: Term,
        /// Entries to append (may be empty: a probe).
        entries: Vec<Entry>,
        /// Leader's commit index.
        commit: LogIndex,
    },
    /// Answer to `Append`.
    AppendResponse {
        /// True when `prev_index`/`prev_term` did not match.
        reject: bool,
        /// On success: the last index now known to match. On rejection: the rejected `prev_index`.
        index: LogIndex,
        /// On rejection: a hint for fast backtracking, the largest index `<= index` whose term is
        /// `<= hint_term` in the follower's log (or its last index if shorter).
        hint_index: LogIndex,
        /// On rejection: the term of the follower's entry at `hint_index`.
        hint_term: Term,
    },
    /// Leader heartbeat (Raft §5.2). `context` is echoed back and ties acknowledgements to
    /// ReadIndex rounds and the lease.
    Heartbeat {
        /// Leader's commit index, capped at what the follower is known to have.
        commit: LogIndex,
        /// Opaque round number, echoed in the response.
        context: u64,
    },
    /// Answer to `Heartbeat`.
    HeartbeatResponse {
        /// The request's `context`.
        context: u64,
    },
    /// InstallSnapshot (Raft §7).
    InstallSnapshot {
        /// The snapshot.
        snapshot: Snapshot,
    },
    /// Leader transfer (thesis §3.10): start an election now, ignoring the election timer.
    TimeoutNow,
    /// Node level, never stepped into the Raft core: the recipient member was removed from the
    /// group by a configuration entry the sender has applied. A removed member stops hearing
    /// from the leader (it is no longer replicated to), so without this it would never learn of
    /// its removal; member ids are never reused, so the fact is permanent.
    ReplicaRemoved,
    /// The leader's last heartbeat before its group goes quiet (quiescence, docs/raft.md):
    /// nothing is left to replicate and every member has the leader's whole log. A follower
    /// whose log ends at the same `(last_index, last_term)` and that commits up to `commit`
    /// stops its election timer and answers nothing; one that differs answers a
    /// `HeartbeatResponse`, which wakes the leader. Appended after `ReplicaRemoved`: postcard
    /// numbers variants by position, so older peers keep decoding every earlier kind.
    Quiesce {
        /// Leader's commit index (equal to `last_index`).
        commit: LogIndex,
        /// Leader's last log index.
        last_index: LogIndex,
        /// Term of that entry.
        last_term: Term,
        /// The last heartbeat round sent before it: a follower stays quiescent when a
        /// heartbeat of that round or an earlier one arrives late (the leader needs no answer
        /// to it: no read waited on it).
        context: u64,
    },
    /// A replica that left quiescence without its leader's doing (a liveness report, a request)
    /// asks the leader to resume heartbeats; receiving any message wakes a quiescent leader.
    Wake,
    /// Node level, never stepped into the Raft core: the sender's node is alive (node-level
    /// heartbeat, sent once per heartbeat interval to every node sharing a shard with it,
    /// whatever the number of shared shards). `group`, `term` and the member numbers carry no
    /// meaning; `from` names the sending node. A node that hears nothing from a peer node for
    /// an election timeout reports it down to its quiescent groups (docs/node.md,
    /// "Quiescence and node liveness"). Appended after `Wake` (wire numbers by position).
    NodeAlive,
}

impl Message {
    /// Whether the message goes from node `from` to node `to`. Groups address Raft member ids
    /// ([`member_id`](crate::ids::member_id)), whose node is
    /// [`member_node`](crate::ids::member_node); a plain node id (a group whose members are
    /// node ids, as in the transport's tests) matches too. A member id never equals a node id
    /// below 2^32, so neither form lets a peer speak for another node.
    pub fn is_between(&self, from: NodeId, to: NodeId) -> bool {
        let is = |member: NodeId, node: NodeId| {
            member == node || crate::ids::member_node(member) == node
        };
        is(self.from, from) && is(self.to, to)
    }
}

impl MessageBody {
    /// Short name of the message kind, for traces and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageBody::PreVote { .. } => "PreVote",
            MessageBody::PreVoteResponse { .. } => "PreVoteResponse",
            MessageBody::Vote { .. } => "Vote",
            MessageBody::VoteResponse { .. } => "VoteResponse",
            MessageBody::Append { .. } => "Append",
            MessageBody::AppendResponse { .. } => "AppendResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReplicaRemoved => "ReplicaRemoved",
            MessageBody::Quiesce { .. } => "Quiesce",
            MessageBody::Wake => "Wake",
            MessageBody::NodeAlive => "NodeAlive",
        }
    }
}
