//! Replica repair: every shard back to `replication_factor` voters on live nodes.
//!
//! Per shard (by id), the first rule that applies:
//! 1. A voter on a dead node (removed, or down for `max_down_time_ms`): add a learner on the
//!    best target, promote it, then remove the dead voter. Add first, remove last, so the
//!    shard never has fewer voters than before. With no target, the dead voter is removed only
//!    if enough voters remain without it.
//! 2. A learner with no operator behind it (left over by a cancelled operator): remove it.
//! 3. Fewer voters than the replication factor: add one (learner, then promote).
//! 4. More voters than the replication factor: remove one, preferring a silent node, then a
//!    draining one, then the node with the most replicas (ties to the highest id).

use super::View;
use crate::node::NodeState;
use crate::operator::{OperatorKind, Step};
use ringkv_types::{NodeId, ReplicaRole, ShardId};

pub(super) fn schedule(view: &mut View<'_>) {
    let state = view.state;
    let replication = state.settings.replication_factor as usize;
    for descriptor in &state.shard_map.shards {
        if !view.has_budget() {
            return;
        }
        let shard = descriptor.id;
        if view.busy.contains(&shard) {
            continue;
        }
        let voters: Vec<NodeId> = descriptor.voters().collect();
        if let Some(&dead) = voters.iter().find(|&&v| state.is_dead(v)) {
            if let Some(target) = view.pick_target(shard) {
                let steps = super::move_steps(dead, target, ReplicaRole::Voter, 0);
                view.propose(shard, OperatorKind::Repair, steps);
            } else if state.removal_is_safe(descriptor, dead) {
                view.propose(shard, OperatorKind::Repair, remove(dead));
            }
            continue;
        }
        if let Some(learner) = descriptor
            .replicas
            .iter()
            .find(|r| r.role == ReplicaRole::Learner)
        {
            view.propose(shard, OperatorKind::Repair, remove(learner.node));
            continue;
        }
        if voters.len() < replication {
            if let Some(target) = view.pick_target(shard) {
                let steps = vec![
                    Step::AddLearner {
                        node: target,
                        incarnation: 0,
                    },
                    Step::PromoteLearner { node: target },
                ];
                view.propose(shard, OperatorKind::Repair, steps);
            }
            continue;
        }
        if voters.len() > replication
            && let Some(victim) = excess_victim(view, shard, &voters)
            && state.removal_is_safe(descriptor, victim)
        {
            view.propose(shard, OperatorKind::Repair, remove(victim));
        }
    }
}

fn remove(node: NodeId) -> Vec<Step> {
    vec![Step::RemoveReplica { node }]
}

/// Which excess voter to drop: silent nodes first, then draining ones, then the most loaded.
fn excess_victim(view: &View<'_>, shard: ShardId, voters: &[NodeId]) -> Option<NodeId> {
    let counts = view.state.replica_counts();
    let leader = view.state.leader(shard);
    voters.iter().copied().max_by_key(|node| {
        let info = view.state.nodes.get(node);
        let silent = info.is_none_or(|n| !n.is_alive());
        let draining = info.is_some_and(|n| n.state == NodeState::Draining);
        let not_leader = leader != Some(*node);
        (
            silent,
            draining,
            not_leader,
            counts.get(node).copied().unwrap_or(0),
            *node,
        )
    })
}
