//! Replica balancing: bring the projected replica counts of `Up` nodes to within one of each
//! other (max − min ≤ 1).
//!
//! Each round takes the fullest node as source and the emptiest as target (ties to the lowest
//! id), trying the next pairs in that order when no shard can move between the first, and
//! moves the lowest-id shard that is on the source, not on the target, idle, and has all its
//! voters alive. A round changes the counts by one on each side, so the loop ends: the sum of
//! squared counts strictly decreases.

use super::View;
use crate::operator::OperatorKind;
use ringkv_types::{NodeId, ReplicaRole, ShardId};

pub(super) fn schedule(view: &mut View<'_>) {
    while view.has_budget() {
        let Some((shard, from, to)) = next_move(view) else {
            return;
        };
        let Some(role) = view
            .placement
            .get(&shard)
            .and_then(|r| r.get(&from))
            .copied()
        else {
            return;
        };
        let steps = super::move_steps(from, to, role, 0);
        if !view.propose(shard, OperatorKind::BalanceReplicas, steps) {
            return;
        }
    }
}

fn next_move(view: &View<'_>) -> Option<(ShardId, NodeId, NodeId)> {
    let counts = view.replica_counts();
    let mut sources: Vec<(NodeId, u64)> = counts.iter().map(|(n, c)| (*n, *c)).collect();
    sources.sort_by_key(|&(node, count)| (std::cmp::Reverse(count), node));
    let mut targets = sources.clone();
    targets.sort_by_key(|&(node, count)| (count, node));
    for &(from, from_count) in &sources {
        for &(to, to_count) in &targets {
            if from_count < to_count + 2 {
                break;
            }
            if !view.can_receive(to) {
                continue;
            }
            let shard = view.placement.iter().find_map(|(shard, replicas)| {
                // Only voters move: a learner outside an operator is an orphan for repair.
                let movable = replicas.get(&from) == Some(&ReplicaRole::Voter)
                    && !replicas.contains_key(&to)
                    && !view.busy.contains(shard)
                    && view.all_voters_alive(*shard);
                movable.then_some(*shard)
            });
            if let Some(shard) = shard {
                return Some((shard, from, to));
            }
        }
    }
    None
}
