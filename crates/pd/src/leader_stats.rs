//! The PD leader's memory of node and shard statistics, and the triage of node heartbeats
//! ([`Command::StoreHeartbeat`]): what a heartbeat says goes to memory, and only what replicated
//! decisions depend on goes through PD's Raft log.
//!
//! Before, every shard leader proposed a [`Command::ShardReport`] per heartbeat interval, so an
//! idle cluster of 1,024 shards wrote ~1,000 PD log entries a second (issue 16). Now each node
//! sends one heartbeat per interval with the reports of the shards it leads that changed since
//! its last accepted heartbeat (and all of them periodically); the PD leader answers it from
//! its applied state and this memory, without the log. A report must still be replicated, and
//! the leader names its shard in [`Response::StoreHeartbeat`]`::report_through_log` (the node
//! then sends it as a `ShardReport` command, whose answer carries the shard's next step), when
//! it would change what applying a command decides:
//!
//! * the descriptor is unknown or differs from PD's (a new epoch, a split: the shard map);
//! * the shard has an operator in flight (steps advance on reports, in the log). Such a shard
//!   is named even when the heartbeat left it out as unchanged, if the node leads it, so its
//!   next step is handed out within a heartbeat, not at the next full report;
//! * the leader, the caught-up learners or the split hint differ from the replicated report
//!   (leader balance, transfers and promotions read them);
//! * the load or size crosses a split threshold either way (the split scheduler reads them).
//!
//! So the replicated statistics of a shard may be old, but never differ from the fresh ones in
//! anything a scheduler or an operator decides on, and every PD replica still decides the same
//! thing from the log alone (the schedulers run when `Tick` applies). The fresh figures live
//! here, on the PD leader only, for `PdState` answers (`ringctl status`); a new PD leader
//! starts with empty memory, which fills within one full-report interval, and needs nothing
//! from it to schedule.
//!
//! # Liveness
//!
//! Node liveness lives here too: the log time this leader last heard from each node. The log
//! carries only node *state changes* (issue 16: an idle cluster wrote ~48 KiB/s per node of
//! periodic liveness refreshes and ticks):
//!
//! * a node heard while `Down` (or while its silence is recorded, `down_since_ms`), or whose
//!   capacity changed, gets a [`Command::NodeHeartbeat`] proposed for it (at most one per
//!   eighth of `heartbeat_timeout_ms`), which marks it `Up` again;
//! * every tick interval the leader builds a [`Command::LeaderTick`] ([`LeaderStats::tick`])
//!   listing when it last heard each node, and proposes it only when applying it would change
//!   something beyond log time and last heartbeats ([`tick_would_act`]): a node silent for
//!   `heartbeat_timeout_ms` marked `Down`, an operator cancelled, an operator created. When it
//!   applies, every replica raises the nodes' replicated last heartbeats to the listed times
//!   and then runs the same tick as [`Command::Tick`], so every replica decides the same from
//!   the log alone.
//!
//! A node this leader has not heard from yet counts as heard at the start of its memory (the
//! first heartbeat or tick it handled, within a tick interval of its term start), so a new
//! leader gives every node a full `heartbeat_timeout_ms` before marking it `Down`, and a
//! leader change never marks a live node `Down`. Replicated last heartbeats (registrations, a
//! `NodeHeartbeat` in the log) count as well: the apply keeps the larger.
//!
//! [`tick_would_act`] applies the tick to a scratch copy of the applied state: the very code
//! every replica runs, so the decision cannot drift from the apply. It costs a copy of the
//! state and a scheduler pass per tick interval on the leader (before, every replica applied a
//! tick per interval, and wrote it).
//!
//! Old log entries replay as before: a [`Command::Tick`] still marks nodes `Down` by their
//! replicated last heartbeats, and [`Command::NodeHeartbeat`] still refreshes them.

use crate::Apply;
use crate::apply::same_layout;
use crate::command::{Command, MAX_HEARTBEAT_SHARDS, Response, ShardReport, StoreHeartbeat};
use crate::error::{Error, Result};
use crate::node::{NodeState, NodeStats};
use crate::scheduler::wants_split;
use crate::state::{PdState, ShardStatus};
use ringkv_types::{NodeId, ShardId};
use std::collections::{BTreeMap, BTreeSet};

/// What the PD leader heard from one node, in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeSeen {
    /// The last heartbeat's stats.
    pub stats: NodeStats,
    /// Log time of the last heartbeat.
    pub at_ms: u64,
}

/// The PD leader's in-memory statistics (see the module docs). Empty on every other replica
/// and after a leadership change.
#[derive(Clone, Debug, Default)]
pub struct LeaderStats {
    shards: BTreeMap<ShardId, ShardStatus>,
    nodes: BTreeMap<NodeId, NodeSeen>,
    /// Log time at which a [`Command::NodeHeartbeat`] (a node back `Up`, or a new capacity)
    /// was last proposed per node, so one in flight is not proposed again at every heartbeat.
    up_proposed_ms: BTreeMap<NodeId, u64>,
    /// Log time at which this memory began (its first heartbeat or tick): a node not heard
    /// since counts as heard then.
    since_ms: Option<u64>,
}

/// The PD leader's answer to a [`StoreHeartbeat`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Triage {
    /// The answer for the node.
    pub answer: Result<Response>,
    /// A command for the leader to propose on its own (the node back `Up`, or its new
    /// capacity), answered to nobody.
    pub propose: Option<Command>,
}

impl LeaderStats {
    /// Empty memory (a new PD leader).
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
            && self.nodes.is_empty()
            && self.up_proposed_ms.is_empty()
            && self.since_ms.is_none()
    }

    /// The last report of `shard` heard by this leader.
    pub fn shard(&self, shard: ShardId) -> Option<&ShardStatus> {
        self.shards.get(&shard)
    }

    /// What this leader heard from `node` last.
    pub fn node(&self, node: NodeId) -> Option<&NodeSeen> {
        self.nodes.get(&node)
    }

    /// Shards with statistics in memory.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Handles one node heartbeat against the applied `state` at log time `now_ms` (the
    /// leader's stamp): remembers its statistics and says which reports must go through the
    /// log. Costs O(reports × log shards), whatever the number of shards that stay quiet.
    pub fn handle(&mut self, state: &PdState, heartbeat: &StoreHeartbeat, now_ms: u64) -> Triage {
        match self.triage(state, heartbeat, now_ms) {
            Ok((answer, propose)) => Triage {
                answer: Ok(answer),
                propose,
            },
            Err(error) => Triage {
                answer: Err(error),
                propose: None,
            },
        }
    }

    fn triage(
        &mut self,
        state: &PdState,
        heartbeat: &StoreHeartbeat,
        now_ms: u64,
    ) -> Result<(Response, Option<Command>)> {
        if state.cluster.is_none() {
            return Err(Error::NotBootstrapped);
        }
        if heartbeat.shards.len() > MAX_HEARTBEAT_SHARDS {
            return Err(Error::TooLarge {
                what: "heartbeat shard reports".into(),
                size: heartbeat.shards.len() as u64,
                max: MAX_HEARTBEAT_SHARDS as u64,
            });
        }
        let id = heartbeat.node;
        let node = state
            .nodes
            .get(&id)
            .ok_or(Error::UnknownNode { node: id })?;
        if node.state == NodeState::Removed {
            return Err(Error::NodeRemoved { node: id });
        }
        let now_ms = now_ms.max(state.now_ms);
        self.since_ms.get_or_insert(now_ms);
        let capacity_changed = heartbeat.stats.capacity_bytes > 0
            && heartbeat.stats.capacity_bytes != node.capacity_bytes;
        let state_changes =
            node.down_since_ms.is_some() || node.state == NodeState::Down || capacity_changed;
        let dedupe_ms = (state.settings.heartbeat_timeout_ms / 8).max(1);
        let proposed_recently = self
            .up_proposed_ms
            .get(&id)
            .is_some_and(|&at| now_ms.saturating_sub(at) < dedupe_ms);
        let propose = (state_changes && !proposed_recently).then(|| {
            self.up_proposed_ms.insert(id, now_ms);
            Command::NodeHeartbeat {
                node: id,
                stats: heartbeat.stats,
                now_ms,
            }
        });
        self.nodes.insert(
            id,
            NodeSeen {
                stats: heartbeat.stats,
                at_ms: now_ms,
            },
        );
        let mut report_through_log = Vec::new();
        let mut reported = BTreeSet::new();
        for report in &heartbeat.shards {
            let shard = report.descriptor.id;
            // Only the node's own leaderships count: the sender is authenticated as `node`.
            if report.leader != id || !reported.insert(shard) {
                continue;
            }
            if needs_log(state, report) {
                report_through_log.push(shard);
            }
            self.shards.insert(
                shard,
                ShardStatus {
                    leader: report.leader,
                    stats: report.stats,
                    caught_up_learners: report.caught_up_learners.clone(),
                    split_hint: report.split_hint,
                    last_report_ms: now_ms,
                },
            );
        }
        // A shard with an operator in flight that this node leads (as last replicated) and
        // left out as unchanged: its next step is handed out only in answer to a report
        // through the log, so ask for one now rather than at the next full report (ten
        // heartbeats away: a drain of idle shards moved two of them per ten seconds).
        for shard in state.operators.keys() {
            if !reported.contains(shard) && state.leader(*shard) == Some(id) {
                report_through_log.push(*shard);
            }
        }
        if heartbeat.full {
            // The node no longer leads what it left out.
            self.shards
                .retain(|shard, status| status.leader != id || reported.contains(shard));
        }
        // What applying the heartbeat would answer: a `Down` node is `Up` again.
        let answered_state = match node.state {
            NodeState::Down => NodeState::Up,
            other => other,
        };
        Ok((
            Response::StoreHeartbeat {
                state: answered_state,
                max_snapshot_bytes_per_sec: state.settings.max_snapshot_bytes_per_sec,
                report_through_log,
            },
            propose,
        ))
    }

    /// The tick to propose at log time `now_ms` (the leader's stamp), if applying it would
    /// change anything (see the module docs): a [`Command::LeaderTick`] listing, for every node
    /// not removed, when this leader last heard from it (the start of its memory if never).
    pub fn tick(&mut self, state: &PdState, now_ms: u64) -> Option<Command> {
        state.cluster.as_ref()?;
        let now_ms = now_ms.max(state.now_ms);
        let since = *self.since_ms.get_or_insert(now_ms);
        let last_heard = state
            .nodes
            .values()
            .filter(|node| node.state != NodeState::Removed)
            .map(|node| {
                let heard = self.nodes.get(&node.id).map_or(since, |seen| seen.at_ms);
                (node.id, heard.max(since))
            })
            .collect();
        let tick = Command::LeaderTick { now_ms, last_heard };
        tick_would_act(state, &tick).then_some(tick)
    }

    /// Copies the remembered statistics into `state` (a copy of the applied state served to
    /// `ringctl status`), so readers see the fresh figures rather than the last replicated
    /// ones. Leaders, learners and hints are the same in both by construction.
    pub fn overlay(&self, state: &mut PdState) {
        for (shard, status) in &self.shards {
            if let Some(replicated) = state.shards.get_mut(shard)
                && replicated.leader == status.leader
            {
                replicated.stats = status.stats;
                replicated.last_report_ms = replicated.last_report_ms.max(status.last_report_ms);
            }
        }
        for (node, seen) in &self.nodes {
            if let Some(info) = state.nodes.get_mut(node) {
                info.stats = seen.stats;
                info.last_heartbeat_ms = info.last_heartbeat_ms.max(seen.at_ms);
                state.now_ms = state.now_ms.max(seen.at_ms);
            }
        }
    }
}

/// Whether applying `tick` (a [`Command::Tick`] or [`Command::LeaderTick`]) to `state` would
/// change anything beyond log time and last heartbeats: a node marked `Down`, an operator
/// cancelled or created. Applies it to a scratch copy, so it decides exactly what the apply
/// would (see the module docs).
pub fn tick_would_act(state: &PdState, tick: &Command) -> bool {
    let mut scratch = state.clone();
    matches!(scratch.apply(tick), Ok(Response::Tick(outcome)) if !outcome.is_empty())
}

/// Whether `report` must be replicated (see the module docs).
fn needs_log(state: &PdState, report: &ShardReport) -> bool {
    let shard = report.descriptor.id;
    let Some(known) = state.descriptor_at(shard, report.descriptor.arc.start) else {
        return true;
    };
    if known.epoch != report.descriptor.epoch || !same_layout(known, &report.descriptor) {
        return true;
    }
    if state.operators.contains_key(&shard) {
        return true;
    }
    let Some(replicated) = state.shards.get(&shard) else {
        return true;
    };
    let mut learners = report.caught_up_learners.clone();
    learners.sort_unstable();
    let mut replicated_learners = replicated.caught_up_learners.clone();
    replicated_learners.sort_unstable();
    replicated.leader != report.leader
        || replicated_learners != learners
        || replicated.split_hint != report.split_hint
        || wants_split(&state.settings, &replicated.stats)
            != wants_split(&state.settings, &report.stats)
}
