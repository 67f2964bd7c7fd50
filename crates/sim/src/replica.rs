//! One simulated replica: a Raft core over a simulated disk, with the KV state machine.
//!
//! The disk is a FIFO: each Ready's writes become durable after a random latency, in order.
//! Until then they exist only in memory, and a crash loses them. Snapshots of the state
//! machine are taken every few applied entries and compact the log.

use crate::kv::{Key, KvState};
use ringkv_raft::{Config, MemStorage, PlantedBugs, RawNode};
use ringkv_types::raft::{ConfState, Entry, HardState, Message, Snapshot};
use ringkv_types::{LogIndex, NodeId, ShardId, Term};
use std::collections::{BTreeMap, VecDeque};

/// A Ready's writes on their way to the disk.
#[derive(Debug)]
pub struct DiskWrite {
    /// When the fsync covering this write starts.
    pub started_at: u64,
    /// When the write becomes durable.
    pub done_at: u64,
    /// The Ready's number.
    pub number: u64,
    /// Snapshot to install.
    pub snapshot: Option<Snapshot>,
    /// Entries to append.
    pub entries: Vec<Entry>,
    /// Hard state to save.
    pub hard_state: Option<HardState>,
    /// Messages to send once durable.
    pub messages: Vec<Message>,
}

/// A replica of one group on one node.
pub struct Replica {
    /// The group.
    pub group: ShardId,
    /// The node hosting it.
    pub node: NodeId,
    /// Its Raft member id. Distinct from the node id: a node removed from a group and added
    /// back gets a new member id, because its new replica starts with no log and no vote, and
    /// Raft's safety argument needs every member id to have one continuous durable history.
    pub member: NodeId,
    /// The Raft core; `None` while the node is down.
    pub raw: Option<RawNode<MemStorage>>,
    /// What survives a crash.
    pub storage: MemStorage,
    /// The state machine (volatile; rebuilt from the snapshot and log after a crash).
    pub kv: KvState,
    /// Last applied index.
    pub applied: LogIndex,
    /// Configuration as of `applied` (goes into snapshots).
    pub conf_applied: ConfState,
    /// Writes not yet durable.
    pub disk: VecDeque<DiskWrite>,
    /// Proposals this replica accepted as leader: index -> (client, op id, term).
    pub pending_writes: BTreeMap<LogIndex, (u64, u64, Term)>,
    /// Reads waiting for their ReadIndex: context -> (client, op id, key).
    pub pending_reads: BTreeMap<u64, (u64, u64, Key)>,
    /// Confirmed reads waiting for apply: (index, context).
    pub ready_reads: Vec<(LogIndex, u64)>,
}

/// Raft configuration for simulated replicas.
pub fn raft_config(node: NodeId, group: ShardId, seed: u64, tuning: &Tuning) -> Config {
    let mut config = Config::new(node, group);
    config.seed = seed;
    config.election_timeout_ticks = 10;
    config.heartbeat_ticks = 2;
    config.lease_margin_ticks = 1;
    config.max_inflight_messages = tuning.max_inflight_messages;
    config.max_message_bytes = tuning.max_message_bytes;
    config.planted_bugs = tuning.bugs;
    config.quiesce = tuning.quiesce;
    // Serving lease reads without check-quorum is one of the planted bugs.
    config.check_quorum = !tuning.bugs.lease_read_without_quorum;
    config
}

/// The per-seed knobs of the Raft configuration.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// Planted bugs.
    pub bugs: PlantedBugs,
    /// See `Config::max_message_bytes`.
    pub max_message_bytes: u64,
    /// See `Config::max_inflight_messages`.
    pub max_inflight_messages: usize,
    /// See `Config::quiesce`.
    pub quiesce: bool,
}

impl Replica {
    /// A replica over `storage` (a new group's members get the initial configuration in it;
    /// a replica being added gets an empty one).
    pub fn new(group: ShardId, node: NodeId, member: NodeId, storage: MemStorage) -> Self {
        Self {
            group,
            node,
            member,
            raw: None,
            storage,
            kv: KvState::default(),
            applied: LogIndex::ZERO,
            conf_applied: ConfState::default(),
            disk: VecDeque::new(),
            pending_writes: BTreeMap::new(),
            pending_reads: BTreeMap::new(),
            ready_reads: Vec::new(),
        }
    }

    /// (Re)starts from durable state: the snapshot gives the state machine, the log the rest.
    pub fn start(&mut self, seed: u64, tuning: &Tuning) -> Result<(), String> {
        let snapshot = self.storage.current_snapshot();
        self.kv = KvState::decode(&snapshot.data).ok_or("undecodable snapshot")?;
        self.applied = snapshot.meta.index;
        self.conf_applied = snapshot.meta.conf.clone();
        let mut config = raft_config(self.member, self.group, seed, tuning);
        config.applied = self.applied;
        self.raw = Some(RawNode::new(config, self.storage.clone()).map_err(|e| e.to_string())?);
        Ok(())
    }

    /// Loses everything volatile.
    pub fn crash(&mut self) {
        self.raw = None;
        self.disk.clear();
        self.pending_writes.clear();
        self.pending_reads.clear();
        self.ready_reads.clear();
        self.kv = KvState::default();
    }

    /// The term of `index` in this replica's log, if present.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        let raw = self.raw.as_ref()?;
        let snapshot = self.storage.current_snapshot();
        if index == snapshot.meta.index && index > LogIndex::ZERO {
            return Some(snapshot.meta.term);
        }
        raw.entries(index, index.next(), u64::MAX)
            .ok()?
            .first()
            .map(|e| e.term)
    }
}
