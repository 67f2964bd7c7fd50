//! The node registry: what PD knows about each `ringkvd` process.

use crate::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A node's state as PD sees it.
///
/// ```text
///            heartbeat timeout             SetNodeState(Draining)
///   ┌────┐ ─────────────────────▶ ┌──────┐         ┌──────────┐
///   │ Up │                        │ Down │         │ Draining │──┐
///   └────┘ ◀───────────────────── └──────┘         └──────────┘  │ SetNodeState(Removed)
///      │         heartbeat             │                 ▲       ▼
///      └─── SetNodeState(Draining) ────┼─────────────────┘   ┌─────────┐
///      └─── SetNodeState(Removed) ─────┴────────────────────▶│ Removed │ (final)
///                                                            └─────────┘
/// ```
///
/// `Up` and `Down` are set by PD from heartbeats (log time, see [`super::Command::Tick`]);
/// `Draining` and `Removed` are operator intent and are kept whatever the heartbeats say (a
/// draining node that stops heartbeating is tracked by [`NodeInfo::down_since_ms`]). `Draining`
/// can go back to `Up` (drain cancelled). `Removed` is final: the id is never reused and the
/// node's replicas are repaired elsewhere at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NodeState {
    /// Heartbeating; a placement target.
    Up,
    /// No heartbeat for `heartbeat_timeout_ms`; after `max_down_time_ms` its replicas are
    /// repaired elsewhere.
    Down,
    /// Being emptied: no new replicas; its replicas move elsewhere.
    Draining,
    /// Gone for good.
    Removed,
}

/// Load and capacity a node reports with each heartbeat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    /// Disk capacity in bytes.
    pub capacity_bytes: u64,
    /// Free disk bytes.
    pub available_bytes: u64,
    /// Replicas the node hosts (its own count; PD's count comes from the shard map).
    pub replicas: u64,
    /// Shards the node leads.
    pub leaders: u64,
    /// Client writes per second over the last reporting interval.
    pub writes_per_sec: u64,
    /// Client reads per second over the last reporting interval.
    pub reads_per_sec: u64,
    /// Snapshots being sent or received right now.
    pub snapshots_in_flight: u64,
}

/// One registered node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its id (never reused).
    pub id: NodeId,
    /// Address peers and clients dial (`host:port`).
    pub addr: String,
    /// State, see [`NodeState`].
    pub state: NodeState,
    /// Free-form labels (zone, rack, host), reserved for placement constraints.
    pub labels: BTreeMap<String, String>,
    /// Disk capacity in bytes, as registered or last reported.
    pub capacity_bytes: u64,
    /// Log time of the last heartbeat (or of registration).
    pub last_heartbeat_ms: u64,
    /// Log time at which the node was first seen missing heartbeats, while it still is.
    pub down_since_ms: Option<u64>,
    /// The last heartbeat's stats.
    pub stats: NodeStats,
}

impl NodeInfo {
    /// Whether the node can receive new replicas and leaderships: `Up` (and therefore
    /// heartbeating).
    pub fn is_placement_target(&self) -> bool {
        self.state == NodeState::Up
    }

    /// Whether a voter on this node can be counted on to vote: alive and not removed. A
    /// draining node still votes until its replicas have moved.
    pub fn is_alive(&self) -> bool {
        matches!(self.state, NodeState::Up | NodeState::Draining) && self.down_since_ms.is_none()
    }

    /// Whether the node's replicas must be rebuilt elsewhere: removed, or missing heartbeats
    /// for at least `max_down_time_ms` at log time `now_ms`.
    pub fn is_dead(&self, now_ms: u64, max_down_time_ms: u64) -> bool {
        self.state == NodeState::Removed
            || self
                .down_since_ms
                .is_some_and(|since| now_ms.saturating_sub(since) >= max_down_time_ms)
    }
}
