//! Commands (PD Raft log entries) and their typed answers.
//!
//! Commands are postcard-encoded into group 0's log. postcard encodes an enum variant by its
//! index, so new variants are only ever appended, and the fields of an existing variant never
//! change: a new field means a new variant.
//!
//! Time enters only through the `now_ms` fields, filled in by the proposer (the PD leader's
//! clock). Applying never reads a clock; a `now_ms` older than the state's log time is treated
//! as the state's log time, so a leader change with a skewed clock cannot move time backwards.

use super::node::{NodeState, NodeStats};
use super::operator::{OperatorId, StepOrder};
use super::settings::{SchedulerKind, Settings};
use crate::{NodeId, ShardDescriptor, ShardId, ShardMap};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A node as listed at bootstrap or registered later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRegistration {
    /// Address (`host:port`).
    pub addr: String,
    /// Labels (zone, rack, host).
    pub labels: BTreeMap<String, String>,
    /// Disk capacity in bytes.
    pub capacity_bytes: u64,
}

/// Size and load of one shard, measured by its leader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardStats {
    /// Approximate bytes of user data.
    pub size_bytes: u64,
    /// Approximate number of keys.
    pub keys: u64,
    /// Writes per second over the last reporting interval.
    pub writes_per_sec: u64,
    /// Reads per second over the last reporting interval.
    pub reads_per_sec: u64,
}

/// A shard leader's periodic report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardReport {
    /// The leader's applied descriptor.
    pub descriptor: ShardDescriptor,
    /// The reporting leader's node.
    pub leader: NodeId,
    /// Size and load.
    pub stats: ShardStats,
    /// Learners whose log has caught up with the leader's (matched within the leader's
    /// catch-up margin): only these are promoted.
    pub caught_up_learners: Vec<NodeId>,
    /// A ring position near the middle of the shard's data (by size), for splits. Ignored
    /// unless strictly inside the arc.
    pub split_hint: Option<u64>,
    /// Log time (proposer's clock).
    pub now_ms: u64,
}

/// One node's heartbeat carrying the reports of the shards it leads (sent as
/// [`Command::StoreHeartbeat`]). The PD leader answers it from memory: it keeps the node's load
/// and the shards' statistics in memory, not in PD's log, and names in its answer the shards
/// whose report must go through the log as a [`Command::ShardReport`] (a new epoch, a new
/// leader or caught-up learners, an operator in flight, a split threshold crossed). Only those
/// (and, at a slow rate, the node's liveness) are replicated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreHeartbeat {
    /// The reporting node.
    pub node: NodeId,
    /// Its load and capacity.
    pub stats: NodeStats,
    /// Reports of the shards it leads that changed since its last accepted heartbeat; every
    /// shard it leads when `full`.
    pub shards: Vec<ShardReport>,
    /// Whether `shards` lists every shard the node leads (sent periodically and after the PD
    /// leader changed, so a new PD leader's memory fills within one full-report interval).
    pub full: bool,
    /// Log time (proposer's clock).
    pub now_ms: u64,
}

/// Most shard reports in one [`StoreHeartbeat`].
pub const MAX_HEARTBEAT_SHARDS: usize = 65_536;

/// What an admin can ask for directly (`ringctl move`, `transfer`, `split`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminOperator {
    /// Move the replica of `shard` on `from` to `to` (add, promote, remove).
    MoveReplica {
        /// The shard.
        shard: ShardId,
        /// Node holding the replica.
        from: NodeId,
        /// Node to receive it.
        to: NodeId,
    },
    /// Make the voter on `to` the leader of `shard`.
    TransferLeader {
        /// The shard.
        shard: ShardId,
        /// The new leader.
        to: NodeId,
    },
    /// Split `shard` at ring position `at` (default: the leader's split hint, else the arc's
    /// midpoint).
    SplitShard {
        /// The shard.
        shard: ShardId,
        /// Where to cut.
        at: Option<u64>,
    },
}

/// Which id counter [`Command::AllocIds`] draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdKind {
    /// Node ids.
    Node,
    /// Shard ids.
    Shard,
    /// Replica incarnations.
    Incarnation,
}

/// One PD log entry. Variants are only appended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Creates the cluster: the `initial_cluster` nodes (with their configured ids) and the
    /// initial shard map. Accepted once.
    Bootstrap {
        /// Cluster id (random, chosen by the bootstrapping node, the same on every member).
        cluster_id: u64,
        /// Human-readable cluster name.
        cluster_name: String,
        /// The initial nodes with their configured ids.
        nodes: Vec<(NodeId, NodeRegistration)>,
        /// The initial shard map (must cover the ring).
        shard_map: ShardMap,
        /// Initial settings.
        settings: Settings,
        /// Log time.
        now_ms: u64,
    },
    /// A new node joins; answered with its id ([`Response::NodeId`]). Idempotent by address:
    /// a live node registering again gets its old id back.
    RegisterNode {
        /// The node.
        node: NodeRegistration,
        /// Log time.
        now_ms: u64,
    },
    /// A node's heartbeat: refreshes its replicated last heartbeat and stats, marks a `Down`
    /// node `Up`. Proposed by the PD leader when a node's state changes (heard again while
    /// `Down`, a new capacity); by older leaders every quarter of `heartbeat_timeout_ms`.
    NodeHeartbeat {
        /// The node.
        node: NodeId,
        /// Its load.
        stats: NodeStats,
        /// Log time.
        now_ms: u64,
    },
    /// A shard leader's periodic report; answered with the next step for the shard, if any.
    ShardReport(ShardReport),
    /// Advances log time: marks silent nodes `Down`, cancels stalled operators, runs the
    /// schedulers (nodes count as silent by their replicated last heartbeat). PD leaders
    /// before 2026-12-08 proposed one every scheduling interval; now they propose
    /// [`Command::LeaderTick`]. Still applied as before.
    Tick {
        /// Log time.
        now_ms: u64,
    },
    /// Sets a node's operator-controlled state: `Draining`, `Up` (cancel a drain) or `Removed`.
    SetNodeState {
        /// The node.
        node: NodeId,
        /// The new state.
        state: NodeState,
        /// Log time.
        now_ms: u64,
    },
    /// Creates an admin operator.
    AddOperator {
        /// What to do.
        operator: AdminOperator,
        /// Log time.
        now_ms: u64,
    },
    /// Cancels the operator of `shard`, rolling back what it did.
    CancelOperator {
        /// The shard.
        shard: ShardId,
        /// Log time.
        now_ms: u64,
    },
    /// Turns a scheduler on or off.
    SetScheduler {
        /// The scheduler.
        scheduler: SchedulerKind,
        /// On or off.
        enabled: bool,
    },
    /// Replaces all settings (validated first).
    SetSettings(Settings),
    /// Allocates `count` consecutive ids; answered with the first.
    AllocIds {
        /// Which counter.
        kind: IdKind,
        /// How many (1 to [`MAX_IDS_PER_ALLOC`]).
        count: u64,
    },
    /// A node joins under the id its configuration (and certificate) names; answered with that
    /// id ([`Response::NodeId`]). Idempotent: the same id and address again is accepted. Refused
    /// when the address belongs to another live node or the id was ever used by another address
    /// (ids are never reused). Unlike [`Command::RegisterNode`], nodes started in any order get
    /// the ids they were configured with.
    RegisterNodeAs {
        /// The id the node is configured with.
        id: NodeId,
        /// The node.
        node: NodeRegistration,
        /// Log time.
        now_ms: u64,
    },
    /// A user-table or signing-key command (admin only; see [`super::auth`]).
    Auth {
        /// The command.
        command: super::auth::AuthCommand,
        /// Log time.
        now_ms: u64,
    },
    /// A node reports the store incarnation of its data dir (a random id written into the dir
    /// at its first start). The first report for a node id is recorded; later reports must
    /// carry the same incarnation, else [`super::Error::StoreMismatch`]: the node lost its data
    /// and must not rejoin as its old Raft members (it would forget votes and acknowledged
    /// entries). Answered `Done`. A removed node is answered [`super::Error::NodeRemoved`].
    ReportStore {
        /// The reporting node.
        node: NodeId,
        /// Its data dir's store incarnation.
        incarnation: u64,
    },
    /// A node's low-disk-space alarm rose (`Some`) or cleared (`None`), like etcd's `NOSPACE`
    /// alarm: while any replica of a shard sits on a node in alarm, the shard's leader refuses
    /// writes that add data, so a follower with a smaller disk does not fill up and stop. The
    /// node sends it when its alarm changes (and once at start). Answered `Done`.
    SpaceAlarm {
        /// The reporting node.
        node: NodeId,
        /// Its free space and reserve when the alarm rose; `None` clears it.
        alarm: Option<crate::SpaceAlarm>,
    },
    /// A node's heartbeat with the reports of the shards it leads ([`StoreHeartbeat`]),
    /// answered [`Response::StoreHeartbeat`]. The PD leader answers it from memory and does
    /// not put it in the log; applied from the log (a leader that could not triage it), it
    /// counts as a [`Command::NodeHeartbeat`] and asks for every listed shard's report.
    StoreHeartbeat(StoreHeartbeat),
    /// The tick of a PD leader that keeps node liveness in its memory (`ringkv_pd::
    /// leader_stats`): raises each listed node's last heartbeat to the log time the leader last
    /// heard from it (never lowers it, never past `now_ms`; unknown and removed nodes are
    /// skipped), then does what [`Command::Tick`] does with it: marks nodes silent for
    /// `heartbeat_timeout_ms` `Down`, cancels stalled and hopeless operators, runs the
    /// schedulers. The leader proposes one only when it would change something beyond log time
    /// and last heartbeats, so an idle cluster writes no PD log entries.
    LeaderTick {
        /// Log time.
        now_ms: u64,
        /// `(node, log time the PD leader last heard from it)`, by node id.
        last_heard: Vec<(NodeId, u64)>,
    },
}

/// Most ids one [`Command::AllocIds`] may take.
pub const MAX_IDS_PER_ALLOC: u64 = 1 << 20;

/// Most nodes listed in one [`Command::LeaderTick`].
pub const MAX_TICK_NODES: usize = 65_536;

/// What a tick did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickOutcome {
    /// Nodes newly marked `Down`.
    pub marked_down: Vec<NodeId>,
    /// Operators cancelled for making no progress, or abandoned because their current step
    /// waits on a node that went away (their rollbacks, if any, were created).
    pub cancelled: Vec<OperatorId>,
    /// Operators the schedulers created.
    pub created: Vec<OperatorId>,
}

impl TickOutcome {
    /// Whether the tick changed nothing but log time (and last heartbeats).
    pub fn is_empty(&self) -> bool {
        self.marked_down.is_empty() && self.cancelled.is_empty() && self.created.is_empty()
    }
}

/// The answer to an applied command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The command was applied; nothing to report.
    Done,
    /// The node's id (`RegisterNode`).
    NodeId(NodeId),
    /// The node's state and the limits it enforces itself (`NodeHeartbeat`).
    Heartbeat {
        /// The node's state at PD: a `Draining` node keeps serving; a `Removed` one stops.
        state: NodeState,
        /// Snapshot bandwidth limit for the node's sender, bytes per second (0 = unlimited).
        max_snapshot_bytes_per_sec: u64,
    },
    /// The next step for the reporting shard (`ShardReport`).
    ShardReport {
        /// Whether the reported descriptor replaced PD's (newer epoch).
        descriptor_updated: bool,
        /// What the leader should do next, if anything.
        order: Option<StepOrder>,
    },
    /// What a tick did.
    Tick(TickOutcome),
    /// The created operator (`AddOperator`) or the cancelled one (`CancelOperator`).
    Operator(OperatorId),
    /// The first of the allocated ids (`AllocIds`).
    Ids {
        /// First id; the allocation is `first..first + count`.
        first: u64,
        /// How many.
        count: u64,
    },
    /// The answer to a [`Command::StoreHeartbeat`].
    StoreHeartbeat {
        /// The node's state at PD (as in [`Response::Heartbeat`]).
        state: NodeState,
        /// Snapshot bandwidth limit for the node's sender, bytes per second (0 = unlimited).
        max_snapshot_bytes_per_sec: u64,
        /// Shards whose report must go through PD's log: the node sends each as a
        /// [`Command::ShardReport`] (whose answer carries the shard's next step, if any).
        report_through_log: Vec<ShardId>,
    },
}
