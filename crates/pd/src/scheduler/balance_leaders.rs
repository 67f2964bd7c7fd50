//! Leader balancing: bring the leader counts of `Up` nodes to within one of each other where
//! the placement allows it (a leader can only move to a voter of its shard).
//!
//! Sources are taken fullest first (ties to the lowest id). From a source, a breadth-first
//! search over "leads an idle shard that has a live voter on" finds the reachable node with the
//! fewest leaderships (then the nearest, then the lowest id), if it has at least two fewer; the transfers along that path (usually one hop; more when the
//! two ends share no shard) move one leadership from the source to it. Each round lowers the
//! sum of squared counts, so the loop ends.

use super::View;
use crate::operator::{OperatorKind, Step};
use ringkv_types::{NodeId, ReplicaRole, ShardId};
use std::collections::{BTreeMap, VecDeque};

pub(super) fn schedule(view: &mut View<'_>) {
    while view.has_budget() {
        let Some(path) = next_path(view) else {
            return;
        };
        for (shard, to) in path {
            if !view.propose(
                shard,
                OperatorKind::BalanceLeaders,
                vec![Step::TransferLeader { to }],
            ) {
                return;
            }
        }
    }
}

/// A shortest chain of transfers that moves one leadership from a node with the most leaders
/// to the emptiest node it can reach, if that one has at least two fewer: `(shard, new leader)` per hop, each hop handing a
/// shard led by the previous node to a voter on the next. Intermediate nodes give one and take
/// one, so only the ends change. `None` when no such chain exists (balanced, or as balanced as
/// the placement allows).
fn next_path(view: &View<'_>) -> Option<Vec<(ShardId, NodeId)>> {
    let counts = view.leader_counts();
    let mut sources: Vec<(NodeId, u64)> = counts.iter().map(|(n, c)| (*n, *c)).collect();
    sources.sort_by_key(|&(node, count)| (std::cmp::Reverse(count), node));
    let min = sources.iter().map(|&(_, c)| c).min()?;
    for &(source, source_count) in &sources {
        if source_count < min + 2 {
            return None;
        }
        // Breadth-first over "leads a shard with a voter on"; deterministic order.
        let mut previous: BTreeMap<NodeId, (NodeId, ShardId)> = BTreeMap::new();
        let mut distance: BTreeMap<NodeId, usize> = BTreeMap::from([(source, 0)]);
        let mut queue = VecDeque::from([source]);
        while let Some(node) = queue.pop_front() {
            let next = distance.get(&node).copied().unwrap_or(0) + 1;
            for (shard, to) in transfers_from(view, node, &counts) {
                if let std::collections::btree_map::Entry::Vacant(slot) = distance.entry(to) {
                    slot.insert(next);
                    previous.insert(to, (node, shard));
                    queue.push_back(to);
                }
            }
        }
        // The emptiest reachable node, then the nearest, then the lowest id.
        let target = distance
            .iter()
            .filter_map(|(&node, &hops)| {
                let count = counts.get(&node).copied()?;
                (count + 2 <= source_count).then_some((count, hops, node))
            })
            .min()
            .map(|(_, _, node)| node);
        if let Some(target) = target {
            let mut path = Vec::new();
            let mut at = target;
            while at != source {
                let &(from, shard) = previous.get(&at)?;
                path.push((shard, at));
                at = from;
            }
            path.reverse();
            return Some(path);
        }
    }
    None
}

/// The part of `heartbeat_timeout_ms` a node may have been silent and still receive a
/// leadership: a quarter (2.5 s at the defaults: a node heartbeating every second has missed
/// two). A node killed a moment ago stays `Up` (and alive) until the whole timeout passes; a
/// leadership handed to it would leave the shard without a leader until an election.
const FRESH_HEARTBEAT_DIVISOR: u64 = 4;

/// Whether PD heard from `node` within the last [`FRESH_HEARTBEAT_DIVISOR`]th of the heartbeat
/// timeout (log time).
fn heard_from_recently(state: &crate::state::PdState, node: NodeId) -> bool {
    let window = state.settings.heartbeat_timeout_ms / FRESH_HEARTBEAT_DIVISOR;
    state
        .nodes
        .get(&node)
        .is_some_and(|info| state.now_ms.saturating_sub(info.last_heartbeat_ms) <= window)
}

/// Every `(shard, voter)` such that `from` leads the idle `shard` and `voter` is a live,
/// counted voter of it (in the current and the projected configuration) that PD heard from
/// recently.
fn transfers_from(
    view: &View<'_>,
    from: NodeId,
    counts: &BTreeMap<NodeId, u64>,
) -> Vec<(ShardId, NodeId)> {
    let mut edges = Vec::new();
    for (shard, leader) in &view.leaders {
        if *leader != from || view.busy.contains(shard) {
            continue;
        }
        let Some(descriptor) = view.descriptors.get(shard) else {
            continue;
        };
        for to in descriptor.voters() {
            let projected_voter = view
                .placement
                .get(shard)
                .and_then(|r| r.get(&to))
                .is_some_and(|role| *role == ReplicaRole::Voter);
            if to != from
                && projected_voter
                && counts.contains_key(&to)
                && view.state.is_alive(to)
                && heard_from_recently(view.state, to)
            {
                edges.push((*shard, to));
            }
        }
    }
    edges
}
