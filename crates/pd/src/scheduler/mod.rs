//! Schedulers: pure functions from the PD state to new operators.
//!
//! Every scheduler works on a [`View`]: the shard map as it will be once the operators in
//! flight (and those created earlier in the same pass) are done. So a pass never schedules two
//! operators for one shard, never overfills a node, and the next pass does not redo the work of
//! the previous one. All iteration is over ordered maps, and every choice breaks ties by id, so
//! the same state always gives the same operators.
//!
//! Schedulers run in priority order ([`SchedulerKind::ALL`]): repair, drain, split, balance
//! replicas, balance leaders. They share one budget, `max_operators` minus the operators in
//! flight, and each node receives at most `max_snapshots_per_node` learners at once.

mod balance_leaders;
mod balance_replicas;
mod drain;
mod repair;
mod split;

pub(crate) use split::wants_split;

use crate::operator::{Operator, OperatorId, OperatorKind, Step};
use crate::settings::SchedulerKind;
use crate::state::{IdCounters, PdState};
use ringkv_types::ring::Arc;
use ringkv_types::{NodeId, ReplicaRole, ShardDescriptor, ShardId};
use std::collections::{BTreeMap, BTreeSet};

/// The operators the enabled schedulers would create now, without creating them: what
/// `ringctl rebalance --dry-run` prints. Ids in the result (operator ids, incarnations, new
/// shard ids) are the ones a tick applied now would use.
pub fn plan(state: &PdState) -> Vec<Operator> {
    schedule(state).0
}

/// [`plan`], and with `balancing` as if both balance schedulers were on whatever the settings
/// say: what the PD leader answers to `AdminRequest::PdPlan` (`ringctl rebalance --dry-run`
/// asks with `balancing`, since `rebalance` turns them on).
pub fn plan_with(state: &PdState, balancing: bool) -> Vec<Operator> {
    let balance = |kind| {
        balancing
            && matches!(
                kind,
                SchedulerKind::BalanceReplicas | SchedulerKind::BalanceLeaders
            )
    };
    schedule_some(state, |kind| state.settings.enabled(kind) || balance(kind)).0
}

/// Runs every enabled scheduler; returns the new operators and the id counters after
/// allocating their ids.
pub(crate) fn schedule(state: &PdState) -> (Vec<Operator>, IdCounters) {
    schedule_some(state, |kind| state.settings.enabled(kind))
}

/// Runs the schedulers `enabled` picks, in priority order.
fn schedule_some(
    state: &PdState,
    enabled: impl Fn(SchedulerKind) -> bool,
) -> (Vec<Operator>, IdCounters) {
    let mut view = View::new(state);
    for kind in SchedulerKind::ALL {
        if !enabled(kind) {
            continue;
        }
        match kind {
            SchedulerKind::Repair => repair::schedule(&mut view),
            SchedulerKind::Drain => drain::schedule(&mut view),
            SchedulerKind::Split => split::schedule(&mut view),
            SchedulerKind::BalanceReplicas => balance_replicas::schedule(&mut view),
            SchedulerKind::BalanceLeaders => balance_leaders::schedule(&mut view),
        }
    }
    (view.created, view.ids)
}

/// The steps that move a replica with `role` from `from` to `to`: add a learner, promote it if
/// the moved replica votes, then remove the old one (never the other way round).
pub fn move_steps(from: NodeId, to: NodeId, role: ReplicaRole, incarnation: u32) -> Vec<Step> {
    let mut steps = vec![Step::AddLearner {
        node: to,
        incarnation,
    }];
    if role == ReplicaRole::Voter {
        steps.push(Step::PromoteLearner { node: to });
    }
    steps.push(Step::RemoveReplica { node: from });
    steps
}

/// Where to split `arc`: the leader's `hint` if it lies strictly inside, else the midpoint;
/// `None` for an arc of one position.
pub fn split_position(arc: &Arc, hint: Option<u64>) -> Option<u64> {
    hint.filter(|&at| arc.split_at(at).is_some())
        .or_else(|| Some(arc.midpoint()).filter(|&at| arc.split_at(at).is_some()))
}

/// The cluster as it will be once the operators in flight are done.
pub(crate) struct View<'a> {
    pub(crate) state: &'a PdState,
    /// The current descriptors by id (the map is ordered by arc, so `PdState::descriptor`
    /// scans it; a pass looks shards up by id many times).
    pub(crate) descriptors: BTreeMap<ShardId, &'a ShardDescriptor>,
    /// Projected replicas per shard.
    pub(crate) placement: BTreeMap<ShardId, BTreeMap<NodeId, ReplicaRole>>,
    /// Projected leader per shard (absent when unknown).
    pub(crate) leaders: BTreeMap<ShardId, NodeId>,
    /// Shards with an operator (in flight or created in this pass).
    pub(crate) busy: BTreeSet<ShardId>,
    /// Learners being streamed to each node.
    snapshots: BTreeMap<NodeId, u32>,
    /// Operators this pass may still create.
    budget: usize,
    ids: IdCounters,
    created: Vec<Operator>,
}

impl<'a> View<'a> {
    fn new(state: &'a PdState) -> Self {
        let mut placement: BTreeMap<ShardId, BTreeMap<NodeId, ReplicaRole>> = state
            .shard_map
            .shards
            .iter()
            .map(|d| (d.id, d.replicas.iter().map(|r| (r.node, r.role)).collect()))
            .collect();
        let mut leaders: BTreeMap<ShardId, NodeId> = state
            .shard_map
            .shards
            .iter()
            .filter_map(|d| state.leader(d.id).map(|l| (d.id, l)))
            .collect();
        let mut snapshots: BTreeMap<NodeId, u32> = BTreeMap::new();
        for operator in state.operators.values() {
            if let Some(node) = operator.snapshot_target() {
                *snapshots.entry(node).or_default() += 1;
            }
            if let Some(replicas) = placement.get_mut(&operator.shard) {
                project(replicas, &mut leaders, operator.shard, operator.remaining());
            }
        }
        let budget = (state.settings.max_operators as usize).saturating_sub(state.operators.len());
        let descriptors = state.shard_map.shards.iter().map(|d| (d.id, d)).collect();
        Self {
            state,
            descriptors,
            placement,
            leaders,
            busy: state.operators.keys().copied().collect(),
            snapshots,
            budget,
            ids: state.ids,
            created: Vec::new(),
        }
    }

    /// Whether another operator may be created in this pass.
    pub(crate) fn has_budget(&self) -> bool {
        self.budget > 0
    }

    /// Projected replicas per placement-target (`Up`) node.
    pub(crate) fn replica_counts(&self) -> BTreeMap<NodeId, u64> {
        let mut counts: BTreeMap<NodeId, u64> = self
            .state
            .nodes
            .values()
            .filter(|n| n.is_placement_target())
            .map(|n| (n.id, 0))
            .collect();
        for replicas in self.placement.values() {
            for node in replicas.keys() {
                if let Some(count) = counts.get_mut(node) {
                    *count += 1;
                }
            }
        }
        counts
    }

    /// Projected leaderships per placement-target (`Up`) node.
    pub(crate) fn leader_counts(&self) -> BTreeMap<NodeId, u64> {
        let mut counts: BTreeMap<NodeId, u64> = self
            .state
            .nodes
            .values()
            .filter(|n| n.is_placement_target())
            .map(|n| (n.id, 0))
            .collect();
        for leader in self.leaders.values() {
            if let Some(count) = counts.get_mut(leader) {
                *count += 1;
            }
        }
        counts
    }

    /// Whether `node` may receive one more learner.
    pub(crate) fn can_receive(&self, node: NodeId) -> bool {
        self.state.is_placement_target(node)
            && self.snapshots.get(&node).copied().unwrap_or(0)
                < self.state.settings.max_snapshots_per_node
    }

    /// The best node for a new replica of `shard`: an `Up` node without one, with snapshot
    /// room, holding the fewest projected replicas; ties to the lowest id.
    pub(crate) fn pick_target(&self, shard: ShardId) -> Option<NodeId> {
        let holders = self.placement.get(&shard)?;
        self.replica_counts()
            .into_iter()
            .filter(|(node, _)| !holders.contains_key(node) && self.can_receive(*node))
            .min_by_key(|&(node, count)| (count, node))
            .map(|(node, _)| node)
    }

    /// Whether every projected voter of `shard` is alive: moving a replica of a shard that
    /// already lost one would run it with no slack, so balancing leaves it to repair.
    pub(crate) fn all_voters_alive(&self, shard: ShardId) -> bool {
        self.placement.get(&shard).is_some_and(|replicas| {
            replicas
                .iter()
                .filter(|(_, role)| **role == ReplicaRole::Voter)
                .all(|(node, _)| self.state.is_alive(*node))
        })
    }

    /// Creates an operator for `shard` with `steps` (placeholder ids are filled in), unless the
    /// shard is busy or the budget is spent. Returns whether it did.
    pub(crate) fn propose(&mut self, shard: ShardId, kind: OperatorKind, steps: Vec<Step>) -> bool {
        if !self.has_budget() || self.busy.contains(&shard) || steps.is_empty() {
            return false;
        }
        let Some(epoch) = self.descriptors.get(&shard).map(|d| d.epoch) else {
            return false;
        };
        let mut ids = self.ids;
        let mut filled = Vec::with_capacity(steps.len());
        for step in steps {
            filled.push(match step {
                Step::AddLearner { node, .. } => {
                    let Some(next) = ids.next_incarnation.checked_add(1) else {
                        return false;
                    };
                    let incarnation = ids.next_incarnation;
                    ids.next_incarnation = next;
                    Step::AddLearner { node, incarnation }
                }
                Step::Split { at, .. } => {
                    let Some(next) = ids.next_shard.checked_add(1) else {
                        return false;
                    };
                    let new_shard = ShardId(ids.next_shard);
                    ids.next_shard = next;
                    Step::Split { new_shard, at }
                }
                other => other,
            });
        }
        let id = OperatorId(ids.next_operator);
        ids.next_operator += 1;
        self.ids = ids;
        let operator = Operator {
            id,
            shard,
            kind,
            steps: filled,
            current: 0,
            created_ms: self.state.now_ms,
            step_started_ms: self.state.now_ms,
            epoch,
        };
        if let Some(node) = operator.snapshot_target() {
            *self.snapshots.entry(node).or_default() += 1;
        }
        if let Some(replicas) = self.placement.get_mut(&shard) {
            project(replicas, &mut self.leaders, shard, &operator.steps);
        }
        self.busy.insert(shard);
        self.budget -= 1;
        self.created.push(operator);
        true
    }
}

/// Applies `steps` to a projected replica set and leader.
fn project(
    replicas: &mut BTreeMap<NodeId, ReplicaRole>,
    leaders: &mut BTreeMap<ShardId, NodeId>,
    shard: ShardId,
    steps: &[Step],
) {
    for step in steps {
        match *step {
            Step::AddLearner { node, .. } => {
                replicas.insert(node, ReplicaRole::Learner);
            }
            Step::PromoteLearner { node } => {
                replicas.insert(node, ReplicaRole::Voter);
            }
            Step::RemoveReplica { node } => {
                replicas.remove(&node);
                if leaders.get(&shard) == Some(&node) {
                    leaders.remove(&shard);
                }
            }
            Step::TransferLeader { to } => {
                leaders.insert(shard, to);
            }
            Step::Split { .. } => {}
        }
    }
}
