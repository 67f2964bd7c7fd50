//! One local replica: its Raft core, its descriptor, and the client work waiting on it.

use crate::core::machine::StateMachine;
use crate::core::replies::RequestId;
use ringkv_raft::{InitialState, RawNode, Role, Storage, StorageError};
use ringkv_storage::GroupStorage;
use ringkv_types::raft::{ConfState, Entry, Snapshot};
use ringkv_types::{LogIndex, NodeId, ShardDescriptor, ShardId, Term};
use std::collections::BTreeMap;

/// The log storage the core reads: a group's durable log `L` (the store's [`GroupStorage`] in
/// `ringkvd`, a [`ringkv_storage::MemoryLog`] in tests and the simulator), plus the group's
/// initial configuration for a brand-new group.
///
/// The core expects a new group's configuration as the snapshot metadata at index 0, but the
/// store ignores compaction points at or below the current one (0). So the node supplies the
/// configuration from the shard's descriptor while nothing newer is on disk; the first apply
/// then saves it (`Store::apply(.., Some(conf))`), which is what snapshots sent to followers use.
#[derive(Clone)]
pub struct NodeStorage<L = GroupStorage> {
    inner: L,
    initial_conf: ConfState,
}

impl<L> NodeStorage<L> {
    /// Wraps `inner`; `initial_conf` is the descriptor's configuration.
    pub fn new(inner: L, initial_conf: ConfState) -> Self {
        Self {
            inner,
            initial_conf,
        }
    }

    /// The durable log underneath (the driver writes it; the core only reads).
    pub fn log(&self) -> &L {
        &self.inner
    }
}

impl<L: Storage> Storage for NodeStorage<L> {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        let mut state = self.inner.initial_state()?;
        if state.snapshot_meta.conf.voters.is_empty() && state.snapshot_meta.index == LogIndex::ZERO
        {
            state.snapshot_meta.conf = self.initial_conf.clone();
        }
        Ok(state)
    }

    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.inner.entries(low, high, max_bytes)
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        self.inner.term(index)
    }

    fn first_index(&self) -> Result<LogIndex, StorageError> {
        self.inner.first_index()
    }

    fn last_index(&self) -> Result<LogIndex, StorageError> {
        self.inner.last_index()
    }

    fn snapshot(&self, to: NodeId) -> Result<Snapshot, StorageError> {
        let mut snapshot = self.inner.snapshot(to)?;
        if snapshot.meta.conf.voters.is_empty() {
            snapshot.meta.conf = self.initial_conf.clone();
        }
        Ok(snapshot)
    }
}

/// What a write request becomes once applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// Put, delete or batch: answered `Written`.
    Write,
    /// Compare-and-swap: answered `Swapped`.
    CompareAndSwap,
}

/// A proposed write waiting to be applied.
#[derive(Debug)]
pub struct Proposal {
    /// Term the entry was proposed in: the entry at its index with another term means it was
    /// lost.
    pub term: Term,
    /// How to answer.
    pub kind: WriteKind,
    /// The client's answer slot.
    pub reply: RequestId,
}

/// A read waiting for its ReadIndex round or for the state machine to catch up.
#[derive(Debug)]
pub struct PendingRead {
    /// The read (`Get`, `Exists`, `GetMany` or `Scan`), served by `kv_read::read_now`.
    pub op: ringkv_types::KvOp,
    /// The client's answer slot.
    pub reply: RequestId,
}

/// A membership change proposed by this replica as leader, waiting for its entry to apply.
#[derive(Debug)]
pub struct PendingChange {
    /// Log index of the configuration entry.
    pub index: LogIndex,
    /// Term it was proposed in.
    pub term: Term,
    /// The admin caller's answer slot.
    pub reply: RequestId,
}

/// A leader transfer waiting for the target to lead.
#[derive(Debug)]
pub struct PendingTransfer {
    /// The target's member id.
    pub to: NodeId,
    /// Ticks left before answering `Timeout`.
    pub ticks_left: u64,
    /// The admin caller's answer slot.
    pub reply: RequestId,
}

/// One local replica, over the durable log `L` (see [`NodeStorage`]): generic so that the
/// same core runs over the fjall store in `ringkvd` and over memory in the simulator, with no
/// dynamic dispatch on the Raft core's log reads.
pub struct Group<L = GroupStorage> {
    /// The shard.
    pub shard: ShardId,
    /// This replica's Raft member id (see [`ringkv_types::member_id`]).
    pub member: NodeId,
    /// Whether the replica has a descriptor: false for a replica created by a message, until a
    /// snapshot from the leader fills it. An uninitialized replica serves no client request.
    pub initialized: bool,
    /// Its descriptor, owned by the shard's own log: saved with the apply of the entry that
    /// changes it (or the snapshot that carries it). Empty while uninitialized.
    pub descriptor: ShardDescriptor,
    /// A descriptor received with a snapshot, waiting for the Ready that installs it.
    pub pending_descriptor: Option<ShardDescriptor>,
    /// A membership change in flight (one at a time).
    pub pending_change: Option<PendingChange>,
    /// A split in flight (one at a time).
    pub pending_split: Option<PendingChange>,
    /// Leader transfers waiting for their target to lead.
    pub pending_transfers: Vec<PendingTransfer>,
    /// The Raft core.
    pub raw: RawNode<NodeStorage<L>>,
    /// Known leader (from the last soft state).
    pub leader: NodeId,
    /// Role (from the last soft state).
    pub role: Role,
    /// Last applied index and its term.
    pub applied: LogIndex,
    /// Whether the configuration has been saved with an applied index.
    pub conf_saved: bool,
    /// The group's state machine: a data shard's, or the placement driver's (group 0).
    pub machine: StateMachine,
    /// Writes waiting for their entry to apply, by log index.
    pub proposals: BTreeMap<LogIndex, Proposal>,
    /// Reads that arrived this turn (one ReadIndex request per group per turn).
    pub reads_new: Vec<(ringkv_raft::ReadMode, PendingRead)>,
    /// Reads waiting for their ReadIndex round, by context (ordered: they are answered in
    /// this order when the round is abandoned, and a replay must answer alike).
    pub reads_sent: BTreeMap<u64, Vec<PendingRead>>,
    /// Confirmed reads waiting for `applied` to reach their index.
    pub reads_ready: Vec<(LogIndex, Vec<PendingRead>)>,
    /// A received, validated snapshot waiting for the Ready that installs it.
    pub pending_install: Option<crate::core::staged::StagedSnapshot>,
    /// Ready number and index of a snapshot being installed by an in-flight batch.
    pub installing: Option<(u64, LogIndex)>,
    /// Client writes applied by this replica so far (load statistics for PD).
    pub writes_applied: u64,
    /// Client reads served by this replica so far (load statistics for PD).
    pub reads_served: u64,
}

impl Group {
    /// The descriptor's replicas as a configuration of Raft member ids.
    pub fn conf_of(descriptor: &ShardDescriptor) -> ConfState {
        let mut conf = ConfState::with_voters(descriptor.voter_members());
        conf.learners = descriptor
            .replicas
            .iter()
            .filter(|r| r.role == ringkv_types::ReplicaRole::Learner)
            .map(|r| r.member)
            .collect();
        conf.learners.sort_unstable();
        conf
    }
}

impl<L> Group<L> {
    /// A replica of `shard` as Raft member `member`, around `raw`.
    pub fn new(
        shard: ShardId,
        member: NodeId,
        descriptor: Option<ShardDescriptor>,
        raw: RawNode<NodeStorage<L>>,
        applied: LogIndex,
    ) -> Self {
        let initialized = descriptor.is_some();
        Self {
            shard,
            member,
            initialized,
            descriptor: descriptor.unwrap_or_else(|| ShardDescriptor {
                id: shard,
                // Empty: owns no key, and its removal deletes no data.
                arc: ringkv_types::ring::Arc {
                    start: 0,
                    end: Some(0),
                },
                epoch: ringkv_types::Epoch::default(),
                replicas: Vec::new(),
            }),
            pending_descriptor: None,
            pending_change: None,
            pending_split: None,
            pending_transfers: Vec::new(),
            raw,
            leader: NodeId::NONE,
            role: Role::Follower,
            applied,
            conf_saved: true,
            machine: StateMachine::for_shard(shard),
            proposals: BTreeMap::new(),
            reads_new: Vec::new(),
            reads_sent: BTreeMap::new(),
            reads_ready: Vec::new(),
            pending_install: None,
            installing: None,
            writes_applied: 0,
            reads_served: 0,
        }
    }

    /// Log time for a new entry of this data shard: `now_ms` (the wall clock, read by the
    /// driver), never below a stamp seen before (group 0's log time is the PD host's, see
    /// `PdHost::next_stamp`).
    pub fn next_stamp(&mut self, now_ms: u64) -> u64 {
        match self.machine.data_mut() {
            Some(data) => data.next_stamp(now_ms),
            None => now_ms,
        }
    }

    /// The node of the leader to name in a `NotLeader` answer (the core knows member ids).
    pub fn leader_hint(&self) -> Option<NodeId> {
        self.leader
            .is_some()
            .then_some(ringkv_types::member_node(self.leader))
    }
}
