//! The replicated PD state and the read-only queries schedulers and `ringctl` use.
//!
//! Commands change it through `ringkv_pd::Apply::apply`, in the `ringkv-pd` crate: this crate
//! holds the data and its queries, `ringkv-pd` the state machine and the schedulers.

use super::command::ShardStats;
use super::node::NodeInfo;
use super::operator::{Operator, OperatorId, OperatorKind};
use super::settings::Settings;
use crate::{NodeId, ReplicaRole, ShardDescriptor, ShardId, ShardMap};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Cluster identity, set at bootstrap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Cluster id.
    pub id: u64,
    /// Cluster name.
    pub name: String,
}

/// What the last leader report said about a shard, besides its descriptor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardStatus {
    /// The reporting leader (`NodeId::NONE` before the first report).
    pub leader: NodeId,
    /// Size and load.
    pub stats: ShardStats,
    /// Learners the leader reported caught up.
    pub caught_up_learners: Vec<NodeId>,
    /// The leader's split hint.
    pub split_hint: Option<u64>,
    /// Log time of the last report.
    pub last_report_ms: u64,
}

/// Monotonic id counters. Each holds the next value to hand out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdCounters {
    /// Next node id.
    pub next_node: u64,
    /// Next shard id.
    pub next_shard: u64,
    /// Next replica incarnation. Bootstrap replicas have incarnation 0.
    pub next_incarnation: u32,
    /// Next operator id.
    pub next_operator: u64,
}

impl Default for IdCounters {
    fn default() -> Self {
        Self {
            next_node: 1,
            next_shard: 1,
            next_incarnation: 1,
            next_operator: 1,
        }
    }
}

/// How operators ended, for `ringctl status`, metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorCounts {
    /// Operators whose every step completed.
    pub finished: u64,
    /// Operators cancelled (timeout, admin, or a step that became impossible).
    pub cancelled: u64,
    /// The same outcomes by the operator's kind, the cancellations by their reason.
    pub by_kind: BTreeMap<OperatorKind, KindCounts>,
}

/// Why an operator left the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatorEnd {
    /// Every step completed.
    Finished,
    /// An admin cancelled it (`ringctl operator cancel`).
    Cancelled,
    /// A step took longer than `operator_step_timeout_ms`.
    TimedOut,
    /// A step became impossible (its target went away).
    Abandoned,
}

impl OperatorEnd {
    /// Every end, in a fixed order (metrics pre-create a series for each).
    pub const ALL: [OperatorEnd; 4] = [
        OperatorEnd::Finished,
        OperatorEnd::Cancelled,
        OperatorEnd::TimedOut,
        OperatorEnd::Abandoned,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            OperatorEnd::Finished => "finished",
            OperatorEnd::Cancelled => "cancelled",
            OperatorEnd::TimedOut => "timed_out",
            OperatorEnd::Abandoned => "abandoned",
        }
    }
}

/// How the operators of one kind ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCounts {
    /// Every step completed.
    pub finished: u64,
    /// Cancelled by an admin.
    pub cancelled: u64,
    /// A step timed out.
    pub timed_out: u64,
    /// A step became impossible.
    pub abandoned: u64,
}

impl KindCounts {
    /// The count for one end.
    pub fn get(&self, end: OperatorEnd) -> u64 {
        match end {
            OperatorEnd::Finished => self.finished,
            OperatorEnd::Cancelled => self.cancelled,
            OperatorEnd::TimedOut => self.timed_out,
            OperatorEnd::Abandoned => self.abandoned,
        }
    }
}

impl OperatorCounts {
    /// Counts an operator of `kind` that ended with `end`.
    pub fn record(&mut self, kind: OperatorKind, end: OperatorEnd) {
        let by_kind = self.by_kind.entry(kind).or_default();
        match end {
            OperatorEnd::Finished => {
                self.finished += 1;
                by_kind.finished += 1;
            }
            OperatorEnd::Cancelled => {
                self.cancelled += 1;
                by_kind.cancelled += 1;
            }
            OperatorEnd::TimedOut => {
                self.cancelled += 1;
                by_kind.timed_out += 1;
            }
            OperatorEnd::Abandoned => {
                self.cancelled += 1;
                by_kind.abandoned += 1;
            }
        }
    }

    /// How many operators of `kind` ended with `end`.
    pub fn of(&self, kind: OperatorKind, end: OperatorEnd) -> u64 {
        self.by_kind.get(&kind).map_or(0, |c| c.get(end))
    }
}

/// The placement driver's replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PdState {
    /// Set at bootstrap.
    pub cluster: Option<ClusterInfo>,
    /// Log time: the largest `now_ms` of any applied command.
    pub now_ms: u64,
    /// Every node ever registered (removed ones stay, so their ids are never reused).
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// The shard map; `version` bumps on every change.
    pub shard_map: ShardMap,
    /// Leader reports per shard.
    pub shards: BTreeMap<ShardId, ShardStatus>,
    /// Operators in flight, at most one per shard.
    pub operators: BTreeMap<ShardId, Operator>,
    /// Scheduler switches and limits.
    pub settings: Settings,
    /// Id counters.
    pub ids: IdCounters,
    /// Operator outcomes.
    pub operator_counts: OperatorCounts,
    /// Users, roles and token-signing keys.
    pub auth: super::auth::AuthState,
    /// The store incarnation each node reported first ([`super::Command::ReportStore`]): a
    /// node whose data dir carries another one lost its data and is refused.
    #[serde(default)]
    pub store_incarnations: BTreeMap<NodeId, u64>,
    /// Nodes whose low-disk-space alarm is up ([`super::Command::SpaceAlarm`]), with their free
    /// space and reserve when it rose.
    #[serde(default)]
    pub space_alarms: BTreeMap<NodeId, crate::SpaceAlarm>,
}

impl PdState {
    /// An empty, not yet bootstrapped state.
    pub fn new() -> Self {
        Self::default()
    }

    /// The first node holding a replica of `shard` (per `descriptor`) whose space alarm is up.
    pub fn space_alarm_of(
        &self,
        descriptor: &ShardDescriptor,
    ) -> Option<(NodeId, crate::SpaceAlarm)> {
        descriptor.replicas.iter().find_map(|replica| {
            self.space_alarms
                .get(&replica.node)
                .map(|alarm| (replica.node, *alarm))
        })
    }

    /// The descriptor of `shard`.
    pub fn descriptor(&self, shard: ShardId) -> Option<&ShardDescriptor> {
        self.shard_map.shards.iter().find(|d| d.id == shard)
    }

    /// The descriptor of `shard`, looked up first at ring `position` (a binary search: pass a
    /// position the shard probably owns, such as its reported arc's start), else by id.
    pub fn descriptor_at(&self, shard: ShardId, position: u64) -> Option<&ShardDescriptor> {
        match self.shard_map.shard_for_position(position) {
            Some(found) if found.id == shard => Some(found),
            _ => self.descriptor(shard),
        }
    }

    /// The last reported leader of `shard`, if any.
    pub fn leader(&self, shard: ShardId) -> Option<NodeId> {
        self.shards
            .get(&shard)
            .map(|s| s.leader)
            .filter(|l| l.is_some())
    }

    /// The operator in flight for `shard`.
    pub fn operator(&self, shard: ShardId) -> Option<&Operator> {
        self.operators.get(&shard)
    }

    /// The operator with id `id`.
    pub fn operator_by_id(&self, id: OperatorId) -> Option<&Operator> {
        self.operators.values().find(|o| o.id == id)
    }

    /// Whether a voter on `node` can be counted on to vote.
    pub fn is_alive(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(NodeInfo::is_alive)
    }

    /// Whether `node` can receive new replicas.
    pub fn is_placement_target(&self, node: NodeId) -> bool {
        self.nodes
            .get(&node)
            .is_some_and(NodeInfo::is_placement_target)
    }

    /// Whether `node`'s replicas must be rebuilt elsewhere.
    pub fn is_dead(&self, node: NodeId) -> bool {
        self.nodes
            .get(&node)
            .is_none_or(|n| n.is_dead(self.now_ms, self.settings.max_down_time_ms))
    }

    /// Replicas per node in the current shard map (every registered, non-removed node listed).
    pub fn replica_counts(&self) -> BTreeMap<NodeId, u64> {
        let mut counts: BTreeMap<NodeId, u64> = self.live_node_ids().map(|id| (id, 0)).collect();
        for descriptor in &self.shard_map.shards {
            for replica in &descriptor.replicas {
                *counts.entry(replica.node).or_default() += 1;
            }
        }
        counts
    }

    /// Leaderships per node from the last reports (every registered, non-removed node listed).
    pub fn leader_counts(&self) -> BTreeMap<NodeId, u64> {
        let mut counts: BTreeMap<NodeId, u64> = self.live_node_ids().map(|id| (id, 0)).collect();
        for descriptor in &self.shard_map.shards {
            if let Some(leader) = self.leader(descriptor.id) {
                *counts.entry(leader).or_default() += 1;
            }
        }
        counts
    }

    fn live_node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes
            .values()
            .filter(|n| n.state != super::node::NodeState::Removed)
            .map(|n| n.id)
    }

    /// Whether removing the replica on `node` from `descriptor` keeps the shard safe: learners
    /// can always go; a voter only if at least `replication_factor` voters remain and the
    /// number of live voters does not drop below `min(replication_factor, live voters now)`.
    /// So a healthy voter is removed only once its replacement is a voter, and a dead one only
    /// once the shard has its full count of voters without it.
    pub fn removal_is_safe(&self, descriptor: &ShardDescriptor, node: NodeId) -> bool {
        let Some(replica) = descriptor.replica_on(node) else {
            return true;
        };
        if replica.role == ReplicaRole::Learner {
            return true;
        }
        let replication = self.settings.replication_factor as usize;
        let voters = descriptor.voters().count();
        let alive_before = descriptor.voters().filter(|&v| self.is_alive(v)).count();
        let alive_after = alive_before - usize::from(self.is_alive(node));
        voters > replication.max(1) && alive_after >= replication.min(alive_before)
    }

    /// Checks the state's invariants; panics with the broken one. Tests and the simulator call
    /// it after every command.
    ///
    /// # Panics
    /// When an invariant does not hold, which is a bug in this crate.
    pub fn check_invariants(&self) {
        if self.cluster.is_some() {
            assert!(
                self.shard_map.covers_ring(),
                "shard map does not cover the ring: {:?}",
                self.shard_map
                    .shards
                    .iter()
                    .map(|d| (d.id, d.arc))
                    .collect::<Vec<_>>()
            );
        }
        let mut ids = BTreeSet::new();
        for descriptor in &self.shard_map.shards {
            assert!(
                ids.insert(descriptor.id),
                "shard {} listed twice",
                descriptor.id
            );
            assert!(
                descriptor.id.get() < self.ids.next_shard,
                "shard {} not below the shard counter {}",
                descriptor.id,
                self.ids.next_shard
            );
        }
        for node in self.nodes.keys() {
            assert!(
                node.get() < self.ids.next_node,
                "node {node} not below the node counter {}",
                self.ids.next_node
            );
        }
        for (shard, operator) in &self.operators {
            assert_eq!(
                *shard, operator.shard,
                "operator filed under the wrong shard"
            );
            assert!(
                operator.id.0 < self.ids.next_operator,
                "operator {} not below the counter",
                operator.id
            );
            assert!(
                !operator.is_finished(),
                "finished operator {} still in flight",
                operator.id
            );
            assert!(
                self.descriptor(*shard).is_some(),
                "operator {} for unknown shard {shard}",
                operator.id
            );
        }
        for (name, user) in &self.auth.users {
            assert_eq!(name, &user.name, "user filed under the wrong name");
            assert!(
                user.generation < self.auth.next_generation,
                "user {name} has generation {} not below the counter {}",
                user.generation,
                self.auth.next_generation
            );
        }
        assert!(
            self.auth.signing_keys.len() <= super::auth::MAX_SIGNING_KEYS,
            "{} signing keys kept",
            self.auth.signing_keys.len()
        );
        assert!(
            self.auth
                .signing_keys
                .windows(2)
                .all(|pair| pair.first().map(|k| k.id) < pair.get(1).map(|k| k.id)),
            "signing key ids not increasing"
        );
        assert!(
            self.auth
                .signing_keys
                .iter()
                .all(|key| key.id < self.auth.next_key_id),
            "signing key id not below the counter"
        );
        let operator_ids: BTreeSet<OperatorId> = self.operators.values().map(|o| o.id).collect();
        assert_eq!(
            operator_ids.len(),
            self.operators.len(),
            "operator id reused"
        );
    }
}
