//! Drain: move every replica off `Draining` nodes, so they can be removed with no data loss.
//!
//! For each draining node (by id) and each shard on it (by id): a learner is removed; a voter is
//! moved to the best target (add learner, promote, remove); with no target, it is removed only
//! if enough voters remain without it. A drain stops making progress, without breaking anything,
//! when no other node can take a replica (e.g. three nodes, replication factor three).

use super::View;
use crate::node::NodeState;
use crate::operator::{OperatorKind, Step};
use ringkv_types::{NodeId, ReplicaRole};

pub(super) fn schedule(view: &mut View<'_>) {
    let state = view.state;
    let draining: Vec<NodeId> = state
        .nodes
        .values()
        .filter(|n| n.state == NodeState::Draining)
        .map(|n| n.id)
        .collect();
    for node in draining {
        for descriptor in &state.shard_map.shards {
            if !view.has_budget() {
                return;
            }
            let shard = descriptor.id;
            let Some(replica) = descriptor.replica_on(node) else {
                continue;
            };
            if view.busy.contains(&shard) {
                continue;
            }
            let steps = if replica.role == ReplicaRole::Learner {
                vec![Step::RemoveReplica { node }]
            } else if let Some(target) = view.pick_target(shard) {
                super::move_steps(node, target, ReplicaRole::Voter, 0)
            } else if state.removal_is_safe(descriptor, node) {
                vec![Step::RemoveReplica { node }]
            } else {
                continue;
            };
            view.propose(shard, OperatorKind::Drain, steps);
        }
    }
}
