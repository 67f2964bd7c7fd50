//! One simulated node running the real node core ([`NodeCore`] over [`MemoryLog`]s and a
//! [`MemoryState`]): the driver's part of a turn (deliver, poll Readies, apply, serve reads,
//! hand out messages, replies and the turn's writes) and a simulated disk. The disk makes a
//! turn's batch readable when it is submitted, enters it into the journal at a random time
//! before it is durable (the group-commit writer's commit: the loop's apply batches committed
//! meanwhile come before it in the journal) and makes it durable after a delay, in order. A
//! crash keeps a prefix of the journal: the durable batches, the oldest few unsynced apply
//! batches and the turn batches the journal holds before one of those; it loses the rest.

use super::replica_states::{Observation, ShardState};
use ringkv_node::config::LimitsConfig;
use ringkv_node::core::apply_plan::{self, Step};
use ringkv_node::core::node_core::NodeCore;
use ringkv_node::core::planted::PlantedNodeBugs;
use ringkv_node::core::replies::{Outcome, RequestId};
use ringkv_node::core::requests::KvRouted;
use ringkv_node::core::writes::TurnWrites;
use ringkv_node::group::{Group, NodeStorage};
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

type Logs = BTreeMap<ShardId, MemoryLog>;

/// A batch submitted to the simulated disk.
struct Submitted {
    writes: TurnWrites,
    /// The state store's journal mark at submission: the apply batches committed before it
    /// become durable with this batch.
    mark: u64,
    /// When the writer commits the batch into the journal (world time units).
    journal_at: u64,
    /// The batch's place in the journal once committed there: the apply batches with a
    /// sequence number below it come before it.
    journal: Option<u64>,
    /// When the batch is durable (world time units).
    durable_at: u64,
}

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
    durable_logs: BTreeMap<ShardId, MemoryLog>,
    /// The applied state (a crash loses its unsynced batches).
    pub state: MemoryState,
    /// The descriptors of the hosted shards (fixed membership).
    pub descriptors: BTreeMap<ShardId, ShardDescriptor>,
    disk: VecDeque<Submitted>,
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

    /// Starts (or restarts) the core from what is durable: each group's log and the applied
    /// position in the state store; Raft re-delivers the committed entries after it.
    pub fn start(&mut self) {
        let mut groups = BTreeMap::new();
        for (shard, descriptor) in &self.descriptors {
            let Some(log) = self.logs.get(shard) else {
                continue;
            };
            let member = member_id(self.id, 1);
            let applied = self.state.applied(*shard).unwrap_or_default().index;
            let mut config = Config::new(member, *shard);
            config.snapshot_reports = true;
            config.applied = applied;
            config.seed =
                self.raft_seed ^ shard.get().wrapping_mul(0x2545_F491_4F6C_DD1D) ^ member.get();
            let storage = NodeStorage::new(log.clone(), Group::conf_of(descriptor));
            let Ok(raw) = RawNode::new(config, storage) else {
                continue;
            };
            groups.insert(
                *shard,
                Group::new(*shard, member, Some(descriptor.clone()), raw, applied),
            );
        }
        let mut core = NodeCore::new(self.id, groups, BTreeMap::new());
        core.planted = self.planted;
        self.core = Some(core);
    }

    /// A crash: the core is gone, and the disk keeps a prefix of its journal. Of the apply
    /// batches not yet durable, the oldest `survivors` reached the disk anyway, and with them
    /// every submitted turn batch written before one of them (the one journal orders them);
    /// everything after is lost, and the logs go back to what is durable. Returns how many
    /// apply batches were lost.
    ///
    /// # Errors
    /// A kept batch that cannot be written, as text.
    pub fn crash(&mut self, survivors: usize) -> Result<usize, String> {
        self.core = None;
        let unsynced = self.state.unsynced_count();
        // Apply batches below `cut` (by journal sequence) survive.
        let cut = self.state.journal_mark() - unsynced as u64 + survivors.min(unsynced) as u64;
        let lost = self.state.crash(survivors);
        while self
            .disk
            .front()
            .is_some_and(|batch| batch.journal.is_some_and(|place| place < cut))
        {
            let Some(batch) = self.disk.pop_front() else {
                break;
            };
            self.make_durable(batch)?;
            self.batches_kept_by_crashes += 1;
        }
        self.disk.clear();
        for (shard, durable) in &self.durable_logs {
            self.logs.insert(*shard, durable.fork());
            sync_applied(&self.logs, &self.state, *shard);
        }
        Ok(lost)
    }

    /// Writes `batch` into the durable logs and the state store (its log part was written
    /// into the logs the core reads when it was submitted).
    fn make_durable(&mut self, batch: Submitted) -> Result<(), String> {
        let Submitted {
            writes,
            mark,
            journal,
            ..
        } = batch;
        // The apply batches before it in the journal are durable with it.
        self.state.batches_durable(journal.unwrap_or(mark));
        for (shard, mut group) in writes.into_groups() {
            if let Some(log) = self.durable_logs.get(&shard) {
                group.apply_to_log(log).map_err(|e| e.to_string())?;
            }
            group
                .apply_to_state(&mut self.state)
                .map_err(|e| e.to_string())?;
            sync_applied(&self.logs, &self.state, shard);
        }
        Ok(())
    }

    /// Steps a peer's Raft message into the core (dropped while down or for a shard not here).
    ///
    /// # Errors
    /// A core error, as text.
    pub fn receive(&mut self, message: Message) -> Result<(), String> {
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

    /// Makes the batches due by `now` durable, in order: their log part into the durable
    /// logs, their state part (snapshot installs, meta) into the state store, the apply
    /// batches before their mark durable, and the core told.
    ///
    /// # Errors
    /// A core error, as text.
    pub fn complete_disk_writes(&mut self, now: u64, now_ms: u64) -> Result<(), String> {
        let mark = self.state.journal_mark();
        for batch in &mut self.disk {
            if batch.journal.is_none() && batch.journal_at <= now {
                batch.journal = Some(mark);
            }
        }
        while self
            .disk
            .front()
            .is_some_and(|batch| batch.durable_at <= now)
        {
            let Some(batch) = self.disk.pop_front() else {
                break;
            };
            self.make_durable(batch)?;
            let Some(core) = self.core.as_mut() else {
                continue;
            };
            for shard in core.batch_durable().map_err(|e| e.to_string())? {
                super::ttl::serve_reads_timed(core, shard, &self.state, now_ms, &mut self.ttl_log);
                self.observed.push(observe(
                    &self.state,
                    (&self.descriptors, &self.durable_logs),
                    self.id,
                    shard,
                )?);
            }
        }
        Ok(())
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
        let mut output = TurnOutput::default();
        let Some(core) = self.core.as_mut() else {
            return Ok(output);
        };
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
                apply(core, &mut self.state, shard, ready.committed)?;
                sync_applied(&self.logs, &self.state, shard);
                if applied_any {
                    self.observed.push(observe(
                        &self.state,
                        (&self.descriptors, &self.durable_logs),
                        self.id,
                        shard,
                    )?);
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
        if !core.persist.is_full(WRITER_QUEUE_DEPTH)
            && let Some(writes) = core.take_writes()
        {
            // The writer's commit: readable now, durable at `durable_at`.
            for (shard, group) in writes.groups() {
                if let Some(log) = self.logs.get(shard) {
                    group.apply_to_log(log).map_err(|e| e.to_string())?;
                }
            }
            let durable_at = durable_at.max(self.disk.back().map_or(0, |b| b.durable_at));
            self.disk.push_back(Submitted {
                writes,
                mark: self.state.journal_mark(),
                journal_at: journal_at
                    .max(self.disk.back().map_or(0, |b| b.journal_at))
                    .min(durable_at),
                journal: None,
                durable_at,
            });
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

/// What `node` holds of `shard` now, at its applied index: the data of the shard's arc and
/// its session table.
fn observe(
    state: &MemoryState,
    (descriptors, durable_logs): (&BTreeMap<ShardId, ShardDescriptor>, &Logs),
    node: NodeId,
    shard: ShardId,
) -> Result<Observation, String> {
    let applied = state.applied(shard).map_err(|e| e.to_string())?;
    let sessions = state.sessions(shard).map_err(|e| e.to_string())?;
    let values = match descriptors.get(&shard) {
        Some(descriptor) => {
            let (lower, upper) = descriptor.arc.storage_bounds();
            state
                .values()
                .into_iter()
                .filter(|(k, _)| *k >= lower && upper.as_ref().is_none_or(|u| k < u))
                .collect()
        }
        None => BTreeMap::new(),
    };
    let durable_last_index = durable_logs
        .get(&shard)
        .map_or(LogIndex::ZERO, |log| log.bounds().1);
    Ok(Observation {
        shard,
        node,
        index: applied.index,
        durable_last_index,
        state: ShardState { values, sessions },
    })
}

/// Tells `shard`'s log where its state machine is (what [`ringkv_raft::Storage::snapshot`]
/// describes), as the fjall store's log reads the applied state beside it.
fn sync_applied(logs: &BTreeMap<ShardId, MemoryLog>, state: &MemoryState, shard: ShardId) {
    if let Some(log) = logs.get(&shard)
        && let Ok(applied) = state.applied(shard)
    {
        log.set_applied(applied, state.conf_state(shard));
    }
}

/// Applies committed entries of `shard` in the steps of [`apply_plan::steps`], as the event
/// loop's `apply`, then has the core compact the log.
fn apply(
    core: &mut NodeCore<MemoryLog>,
    state: &mut MemoryState,
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
                if let Some(applied) = core
                    .apply_run(state, shard, run)
                    .map_err(|e| e.to_string())?
                {
                    core.maybe_compact(shard, applied.last, LOG_COMPACTION_ENTRIES);
                }
            }
            Step::Expiry {
                index,
                term,
                now_ms,
                idle_ms,
            } => {
                core.apply_expiry(state, shard, (index, term), now_ms, idle_ms)
                    .map_err(|e| e.to_string())?;
            }
            Step::Split { index, .. } => {
                return Err(format!(
                    "shard {shard}: a split at {index}, which the simulator never proposes"
                ));
            }
        }
    }
    Ok(())
}
