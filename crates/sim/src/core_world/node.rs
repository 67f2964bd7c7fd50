//! One simulated node running the real node core ([`NodeCore`] over [`MemoryLog`]s and a
//! [`MemoryState`]): the driver's part of a turn (deliver, poll Readies, apply, serve reads,
//! hand out messages, replies and the turn's writes) and a simulated disk. The disk makes a
//! turn's batch readable when it is submitted, enters it into the journal at a random time
//! before it is durable (the group-commit writer's commit: the loop's apply batches committed
//! meanwhile come before it in the journal) and makes it durable after a delay, in order. A
//! crash keeps a prefix of the journal: the durable batches, the oldest few unsynced apply
//! batches and the turn batches the journal holds before one of those; it loses the rest.

use super::disk::Submitted;
use super::replica_states::{Observation, ShardState};
use ringkv_node::config::LimitsConfig;
use ringkv_node::core::apply_plan::{self, Step};
use ringkv_node::core::node_core::NodeCore;
use ringkv_node::core::planted::PlantedNodeBugs;
use ringkv_node::core::replies::{Outcome, RequestId};
use ringkv_node::core::requests::KvRouted;
use ringkv_node::group::{Group, NodeStorage};
use ringkv_node::replica_meta;
use ringkv_raft::{Config, RawNode};
use ringkv_storage::{MemoryLog, MemorySnapshot, MemoryState, StateStore};
use ringkv_types::raft::{Message, MessageBody};
use ringkv_types::{KvRequest, LogIndex, NodeId, Response, ShardDescriptor, ShardId, member_id};
use std::collections::{BTreeMap, VecDeque};

/// Log entries past the compaction point before a group compacts (small, so that lagging and
/// restarted replicas need snapshots).
pub const LOG_COMPACTION_ENTRIES: u64 = 24;

/// Batches the simulated writer holds before the core waits (the writer queue depth).
const WRITER_QUEUE_DEPTH: usize = 4;

/// What a turn of a node produced for the world to carry.
#[derive(Default)]
pub struct TurnOutput {
    /// Raft messages per peer node.
    pub messages: Vec<(NodeId, Message)>,
    /// `InstallSnapshot` messages with their data, descriptor and recipient node.
    pub snapshots: Vec<(NodeId, Message, MemorySnapshot, ShardDescriptor)>,
    /// Answers to client requests.
    pub replies: Vec<(RequestId, Response)>,
}

/// A simulated node.
pub struct SimNode {
    /// The node id.
    pub id: NodeId,
    /// The running core; `None` while the node is down.
    pub core: Option<NodeCore<MemoryLog>>,
    /// The log of each hosted group as the core reads it: every submitted batch's log part,
    /// durable or not.
    pub logs: BTreeMap<ShardId, MemoryLog>,
    /// The durable log of each hosted group: only what a durable batch wrote. A crash goes
    /// back to it.
    pub(super) durable_logs: BTreeMap<ShardId, MemoryLog>,
    /// The applied state (a crash loses its unsynced batches).
    pub state: MemoryState,
    /// The descriptors of the shards hosted from the start (fixed membership); a shard's
    /// applied descriptor in the state store (a split's) takes precedence
    /// ([`SimNode::descriptor`]).
    pub descriptors: BTreeMap<ShardId, ShardDescriptor>,
    pub(super) disk: VecDeque<Submitted>,
    /// Batches made durable out of turn (a split's synchronous write waits for every batch
    /// submitted before it) that the core has not been told of yet.
    pub(super) durable_unreported: usize,
    /// The splits this node applied since the world last took them: (parent after, new
    /// shard, the split entry's index), for the world's shard map (what the placement driver
    /// learns) and the TTL checks.
    pub splits_applied: Vec<(ShardDescriptor, ShardDescriptor, u64)>,
    /// Whether the last turn created a split's new group (the world may crash the node
    /// before the parent's descriptor is durable).
    pub split_created: bool,
    /// The changes the node's applies made since the world last took them (for the
    /// exactly-once check).
    pub events: Vec<ringkv_types::WatchEvent>,
    raft_seed: u64,
    /// Deliberate node-core bugs, set on every (re)start.
    planted: PlantedNodeBugs,
    /// The applied states seen since the world last took them (for the replica state
    /// comparison): after each apply and each completed snapshot install.
    pub observed: Vec<Observation>,
    /// Unsynced turn batches a crash kept because an apply batch after them survived.
    pub batches_kept_by_crashes: u64,
    /// What the TTL checks need from this node's turns (taken by the world after each).
    pub ttl_log: super::ttl::NodeTtlLog,
}

impl SimNode {
    /// A node hosting `descriptors`, started.
    pub fn new(
        id: NodeId,
        descriptors: BTreeMap<ShardId, ShardDescriptor>,
        seed: u64,
        planted: PlantedNodeBugs,
    ) -> Self {
        let logs = descriptors
            .keys()
            .map(|shard| (*shard, MemoryLog::new()))
            .collect();
        let durable_logs = descriptors
            .keys()
            .map(|shard| (*shard, MemoryLog::new()))
            .collect();
        let mut node = Self {
            id,
            core: None,
            logs,
            durable_logs,
            state: MemoryState::new(),
            descriptors,
            disk: VecDeque::new(),
            durable_unreported: 0,
            splits_applied: Vec::new(),
            split_created: false,
            events: Vec::new(),
            raft_seed: seed,
            planted,
            observed: Vec::new(),
            batches_kept_by_crashes: 0,
            ttl_log: super::ttl::NodeTtlLog::default(),
        };
        node.start();
        node
    }

    /// Whether the node is up.
    pub fn is_up(&self) -> bool {
        self.core.is_some()
    }

    /// Starts (or restarts) the core from what is durable: each group with a descriptor (its
    /// applied one in the state store, else the initial one) over its log, at the applied
    /// position in the state store; Raft re-delivers the committed entries after it. A
    /// replica created for a message and never filled is not reopened (its log keeps its
    /// hard state for the next time).
    pub fn start(&mut self) {
        let mut groups = BTreeMap::new();
        let shards: Vec<ShardId> = self.logs.keys().copied().collect();
        for shard in shards {
            let Some(descriptor) = self.descriptor(shard) else {
                continue;
            };
            let Some(log) = self.logs.get(&shard) else {
                continue;
            };
            let member = descriptor
                .replica_on(self.id)
                .map_or(member_id(self.id, 1), |replica| replica.member);
            let applied = self.state.applied(shard).unwrap_or_default().index;
            let storage = NodeStorage::new(log.clone(), Group::conf_of(&descriptor));
            let Ok(raw) = RawNode::new(self.raft_config(shard, member, applied), storage) else {
                continue;
            };
            let mut group = Group::new(shard, member, Some(descriptor), raw, applied);
            if let Some(data) = group.machine.data_mut() {
                // A shard hosted from the start began empty (as a bootstrap shard); a split's
                // new shard says so in the record its creation wrote.
                data.versions_follow_index = self.descriptors.contains_key(&shard)
                    || replica_meta::versions_follow_index(&self.state, shard).unwrap_or(false);
            }
            groups.insert(shard, group);
        }
        let mut core = NodeCore::new(self.id, groups, BTreeMap::new());
        core.planted = self.planted;
        self.core = Some(core);
    }

    /// The Raft configuration of this node's member `member` of `shard`, applied up to
    /// `applied`.
    pub(super) fn raft_config(&self, shard: ShardId, member: NodeId, applied: LogIndex) -> Config {
        let mut config = Config::new(member, shard);
        config.snapshot_reports = true;
        config.applied = applied;
        config.seed =
            self.raft_seed ^ shard.get().wrapping_mul(0x2545_F491_4F6C_DD1D) ^ member.get();
        config
    }

    /// The applied descriptor of `shard` here: the one the state store holds (a split's or a
    /// snapshot's), else the initial one.
    pub fn descriptor(&self, shard: ShardId) -> Option<ShardDescriptor> {
        stored_descriptor(&self.state, shard).or_else(|| self.descriptors.get(&shard).cloned())
    }

    /// Steps a peer's Raft message into the core (dropped while down or for a shard not here).
    ///
    /// # Errors
    /// A core error, as text.
    pub fn receive(&mut self, message: Message) -> Result<(), String> {
        self.create_for(&message);
        let Some(core) = self.core.as_mut() else {
            return Ok(());
        };
        core.step(message).map(|_| ()).map_err(|e| e.to_string())
    }

    /// A snapshot from a leader: kept for the Ready that installs it, its message stepped.
    /// Returns whether it was taken.
    ///
    /// # Errors
    /// A core error, as text.
    pub fn receive_snapshot(
        &mut self,
        message: Message,
        snapshot: MemorySnapshot,
        descriptor: ShardDescriptor,
    ) -> Result<bool, String> {
        self.create_for(&message);
        let Some(core) = self.core.as_mut() else {
            return Ok(false);
        };
        core.offer_snapshot(message, snapshot.into(), descriptor, None)
            .map_err(|e| e.to_string())
    }

    /// Tells the leader of `shard` whether its snapshot to `to` arrived.
    pub fn report_snapshot(&mut self, shard: ShardId, to: NodeId, delivered: bool) {
        if let Some(core) = self.core.as_mut()
            && let Some(group) = core.groups.get_mut(&shard)
        {
            group.raw.report_snapshot(to, delivered);
            core.dirty.insert(shard);
        }
    }

    /// A client request through the core's request path. Stale reads are not issued by the
    /// simulated clients.
    ///
    /// # Errors
    /// A core error, as text.
    pub fn request(
        &mut self,
        request: KvRequest,
        id: RequestId,
        now_ms: u64,
    ) -> Result<(), String> {
        let Some(core) = self.core.as_mut() else {
            return Ok(());
        };
        match core
            .kv_request(request, id, now_ms, &LimitsConfig::default(), None)
            .map_err(|e| e.to_string())?
        {
            KvRouted::Done | KvRouted::Proposed => Ok(()),
            KvRouted::StaleRead {
                op,
                applied,
                arc,
                now_ms,
            } => {
                let response =
                    ringkv_node::kv_read::read_now(&self.state, &op, applied, arc, now_ms);
                core.replies.send(id, response);
                Ok(())
            }
        }
    }

    /// Gives every group `ticks` ticks.
    ///
    /// # Errors
    /// A core error, as text.
    pub fn tick(&mut self, ticks: u64) -> Result<(), String> {
        match self.core.as_mut() {
            Some(core) => core.tick(ticks).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// The end of a turn, as the event loop's: the turn's ReadIndex rounds, a few rounds of
    /// Readies (apply, reads served, snapshots taken), then what leaves the node. The turn's
    /// writes go to the simulated disk: into the journal at `journal_at`, durable at
    /// `durable_at` (neither before the previous batch's).
    ///
    /// # Errors
    /// A core error or an unexpected apply step, as text.
    pub fn end_turn(
        &mut self,
        now_ms: u64,
        (journal_at, durable_at): (u64, u64),
    ) -> Result<TurnOutput, String> {
        let Some(mut core) = self.core.take() else {
            return Ok(TurnOutput::default());
        };
        self.split_created = false;
        let output = self.turn(&mut core, now_ms, (journal_at, durable_at));
        self.core = Some(core);
        output
    }

    fn turn(
        &mut self,
        core: &mut NodeCore<MemoryLog>,
        now_ms: u64,
        (journal_at, durable_at): (u64, u64),
    ) -> Result<TurnOutput, String> {
        let mut output = TurnOutput::default();
        core.issue_reads();
        for _ in 0..4 {
            if core.dirty.is_empty() {
                break;
            }
            for shard in std::mem::take(&mut core.dirty) {
                core.note_polled(shard);
                let Some(group) = core.groups.get_mut(&shard) else {
                    continue;
                };
                if !group.raw.has_ready() {
                    continue;
                }
                let ready = group.raw.ready().map_err(|e| e.to_string())?;
                let ready = core.handle_ready(shard, ready).map_err(|e| e.to_string())?;
                let applied_any = !ready.committed.is_empty();
                let committed = ready.committed.iter().map(|e| (shard, e.clone()));
                self.ttl_log.applied.extend(committed);
                self.apply(core, shard, ready.committed)?;
                sync_applied(&self.logs, &self.state, shard);
                if applied_any {
                    let observation = self.observe(shard)?;
                    self.observed.push(observation);
                }
                super::ttl::serve_reads_timed(core, shard, &self.state, now_ms, &mut self.ttl_log);
                for message in ready.snapshots {
                    if let Some(snapshot) = snapshot_for(&self.state, core, message) {
                        output.snapshots.push(snapshot);
                    }
                }
                if core.groups.get(&shard).is_some_and(|g| g.raw.has_ready()) {
                    core.dirty.insert(shard);
                }
            }
        }
        for (to, messages) in core.outbox.take() {
            output
                .messages
                .extend(messages.into_iter().map(|message| (to, message)));
        }
        for (id, outcome) in core.replies.take() {
            if let Outcome::Answer(response) = outcome {
                output.replies.push((id, response));
            }
        }
        if !core.persist.is_full(WRITER_QUEUE_DEPTH) {
            self.submit(core, (journal_at, durable_at))?;
        }
        Ok(output)
    }
}

/// The data of an `InstallSnapshot` message, as the event loop's `send_snapshot` takes it:
/// the shard's applied state now, the message's meta made to describe exactly it, and the
/// descriptor. `None` (reported undelivered) when the state cannot be read.
fn snapshot_for(
    state: &MemoryState,
    core: &mut NodeCore<MemoryLog>,
    mut message: Message,
) -> Option<(NodeId, Message, MemorySnapshot, ShardDescriptor)> {
    let shard = message.group;
    let group = core.groups.get_mut(&shard)?;
    let descriptor = group.descriptor.clone();
    let conf = group.raw.conf_state().clone();
    let Ok(snapshot) = state.snapshot(shard, descriptor.arc, conf) else {
        group.raw.report_snapshot(message.to, false);
        return None;
    };
    if let MessageBody::InstallSnapshot { snapshot: meta } = &mut message.body {
        meta.meta = snapshot.meta.clone();
    }
    Some((
        ringkv_types::member_node(message.to),
        message,
        snapshot,
        descriptor,
    ))
}

impl SimNode {
    /// What this node holds of `shard` now, at its applied index: the data of the shard's
    /// arc (its applied descriptor's) and its session table.
    pub(super) fn observe(&self, shard: ShardId) -> Result<Observation, String> {
        let applied = self.state.applied(shard).map_err(|e| e.to_string())?;
        let sessions = self.state.sessions(shard).map_err(|e| e.to_string())?;
        let values = match self.descriptor(shard) {
            Some(descriptor) => {
                let (lower, upper) = descriptor.arc.storage_bounds();
                self.state
                    .values()
                    .into_iter()
                    .filter(|(k, _)| *k >= lower && upper.as_ref().is_none_or(|u| k < u))
                    .collect()
            }
            None => BTreeMap::new(),
        };
        let durable_last_index = self
            .durable_logs
            .get(&shard)
            .map_or(LogIndex::ZERO, |log| log.bounds().1);
        Ok(Observation {
            shard,
            node: self.id,
            index: applied.index,
            durable_last_index,
            state: ShardState { values, sessions },
        })
    }
}

/// The descriptor of `shard` the state store holds (saved with a split, a configuration
/// change or a snapshot install).
fn stored_descriptor(state: &MemoryState, shard: ShardId) -> Option<ShardDescriptor> {
    let bytes = state
        .meta(&ringkv_node::replica_meta::descriptor_key(shard))
        .ok()??;
    ringkv_node::replica_meta::decode_descriptor(&bytes).ok()
}

/// Tells `shard`'s log where its state machine is (what [`ringkv_raft::Storage::snapshot`]
/// describes), as the fjall store's log reads the applied state beside it.
pub(super) fn sync_applied(
    logs: &BTreeMap<ShardId, MemoryLog>,
    state: &MemoryState,
    shard: ShardId,
) {
    if let Some(log) = logs.get(&shard)
        && let Ok(applied) = state.applied(shard)
    {
        log.set_applied(applied, state.conf_state(shard));
    }
}

impl SimNode {
    /// Applies committed entries of `shard` in the steps of [`apply_plan::steps`], as the
    /// event loop's `apply`, then has the core compact the log; a split goes through the
    /// core's two halves with the simulated disk's I/O between them (`node_split.rs`).
    fn apply(
        &mut self,
        core: &mut NodeCore<MemoryLog>,
        shard: ShardId,
        entries: Vec<ringkv_types::raft::Entry>,
    ) -> Result<(), String> {
        if entries.is_empty() {
            return Ok(());
        }
        let Some(kind) = core.groups.get(&shard).map(|g| g.machine.kind()) else {
            return Ok(());
        };
        for step in apply_plan::steps(kind, entries) {
            match step {
                Step::Run(run) => {
                    if let Some(mut applied) = core
                        .apply_run(&mut self.state, shard, run)
                        .map_err(|e| e.to_string())?
                    {
                        self.events.append(&mut applied.events);
                        core.maybe_compact(shard, applied.last, LOG_COMPACTION_ENTRIES);
                    }
                }
                Step::Expiry {
                    index,
                    term,
                    now_ms,
                    idle_ms,
                } => {
                    core.apply_expiry(&mut self.state, shard, (index, term), now_ms, idle_ms)
                        .map_err(|e| e.to_string())?;
                }
                Step::Split { index, term, split } => {
                    self.apply_split(core, shard, (index, term), split)?;
                }
            }
        }
        Ok(())
    }
}
