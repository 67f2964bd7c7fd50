//! Leader balancing: bring the leader counts of `Up` nodes to within one of each other where
//! the placement allows it (a leader can only move to a voter of its shard).
//!
//! Like replica balancing: fullest source, emptiest target (ties to the lowest id), the next
//! pairs when the first has no shard in common, the lowest-id idle shard led by the source
//! with a live voter on the target.

use super::View;
use crate::operator::{OperatorKind, Step};
use ringkv_types::{NodeId, ReplicaRole, ShardId};

pub(super) fn schedule(view: &mut View<'_>) {
    while view.has_budget() {
        let Some((shard, to)) = next_transfer(view) else {
            return;
        };
        if !view.propose(
            shard,
            OperatorKind::BalanceLeaders,
            vec![Step::TransferLeader { to }],
        ) {
            return;
        }
    }
}

fn next_transfer(view: &View<'_>) -> Option<(ShardId, NodeId)> {
    let counts = view.leader_counts();
    let mut sources: Vec<(NodeId, u64)> = counts.iter().map(|(n, c)| (*n, *c)).collect();
    sources.sort_by_key(|&(node, count)| (std::cmp::Reverse(count), node));
    let mut targets = sources.clone();
    targets.sort_by_key(|&(node, count)| (count, node));
    for &(from, from_count) in &sources {
        for &(to, to_count) in &targets {
            if from_count < to_count + 2 {
                break;
            }
            if !view.state.is_alive(to) {
                continue;
            }
            let shard = view.leaders.iter().find_map(|(shard, leader)| {
                let current_voter = view
                    .state
                    .descriptor(*shard)
                    .and_then(|d| d.replica_on(to))
                    .is_some_and(|r| r.role == ReplicaRole::Voter);
                let movable = *leader == from
                    && current_voter
                    && !view.busy.contains(shard)
                    && view
                        .placement
                        .get(shard)
                        .and_then(|r| r.get(&to))
                        .is_some_and(|role| *role == ReplicaRole::Voter);
                movable.then_some(*shard)
            });
            if let Some(shard) = shard {
                return Some((shard, to));
            }
        }
    }
    None
}
