//! The simulated cluster under PD: what each shard really looks like (its replicas, leader,
//! epoch and the learners still receiving their snapshot), and each node's agent as `ringkvd`
//! runs it (`crates/node/src/agent`): heartbeats carrying the reports that changed, reports
//! through PD's log when PD asks or when a step ends, and PD's orders carried out with a
//! modelled latency.

use super::{PdScale, RuleBroken};
use ringkv_pd::{
    Command, NodeStats, Response, ShardReport, ShardStats, Step, StepOrder, StoreHeartbeat,
};
use ringkv_types::ring::Arc;
use ringkv_types::{Epoch, NodeId, ReplicaRole, ShardDescriptor, ShardId, member_id};
use std::collections::{BTreeMap, BTreeSet};

/// Heartbeats between two full reports (`FULL_REPORT_EVERY_HEARTBEATS` in the agent).
pub(super) const FULL_REPORT_EVERY_HEARTBEATS: u32 = 10;

/// One shard as it really is (the replicas' applied configuration).
#[derive(Clone, Debug)]
pub(super) struct Shard {
    pub(super) id: ShardId,
    pub(super) arc: Arc,
    /// Bumped by every conf change (the epoch's `conf_ver`).
    pub(super) conf_ver: u64,
    /// Role and member id per node.
    pub(super) replicas: BTreeMap<NodeId, (ReplicaRole, NodeId)>,
    pub(super) leader: Option<NodeId>,
    pub(super) size_bytes: u64,
    /// When each learner has caught up (its snapshot installed).
    pub(super) caught_up_at: BTreeMap<NodeId, u64>,
}

impl Shard {
    pub(super) fn descriptor(&self) -> ShardDescriptor {
        ShardDescriptor {
            id: self.id,
            arc: self.arc,
            epoch: Epoch {
                conf_ver: self.conf_ver,
                version: 1,
            },
            replicas: self
                .replicas
                .iter()
                .map(|(&node, &(role, member))| ringkv_types::Replica { node, role, member })
                .collect(),
        }
    }

    pub(super) fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.replicas
            .iter()
            .filter(|(_, (role, _))| *role == ReplicaRole::Voter)
            .map(|(node, _)| *node)
    }
}

/// One node and its agent.
#[derive(Clone, Debug, Default)]
pub(super) struct Node {
    pub(super) alive: bool,
    /// Registered with PD (initial nodes from the start, others once they joined).
    pub(super) joined: bool,
    /// The last report PD accepted per led shard.
    pub(super) accepted: BTreeMap<ShardId, ShardReport>,
    pub(super) since_full: u32,
    pub(super) full_due: bool,
    /// Shards with a step of this node's running.
    pub(super) in_flight: BTreeSet<ShardId>,
    /// When the node's incoming snapshot stream is free (snapshots to one node queue up).
    pub(super) snapshots_free_at: u64,
}

/// A step being carried out, ending at a later time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Running {
    pub(super) shard: ShardId,
    /// The node whose agent carries it out (the shard's leader when it started).
    pub(super) executor: NodeId,
    pub(super) step: Step,
}

impl PdScale {
    /// The report the leader `node` would send for `shard` now.
    fn report_of(&self, shard: &Shard, node: NodeId) -> ShardReport {
        let caught_up_learners = shard
            .caught_up_at
            .iter()
            .filter(|(learner, at)| **at <= self.now && self.is_alive(**learner))
            .map(|(learner, _)| *learner)
            .collect();
        ShardReport {
            descriptor: shard.descriptor(),
            leader: node,
            stats: ShardStats {
                size_bytes: shard.size_bytes,
                keys: shard.size_bytes / 128,
                writes_per_sec: 0,
                reads_per_sec: 0,
            },
            caught_up_learners,
            split_hint: None,
            now_ms: self.now,
        }
    }

    pub(super) fn is_alive(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|n| n.alive)
    }

    /// One heartbeat of `node`'s agent (`Running::heartbeat` in `ringkvd`).
    pub(super) fn heartbeat(&mut self, node: NodeId) -> Result<(), RuleBroken> {
        let Some(agent) = self.nodes.get(&node) else {
            return Ok(());
        };
        let full = agent.full_due || agent.since_full + 1 >= FULL_REPORT_EVERY_HEARTBEATS;
        let led = self.led.get(&node).cloned().unwrap_or_default();
        let mut sent = Vec::new();
        let mut unchanged = Vec::new();
        for shard in &led {
            if agent.in_flight.contains(shard) {
                continue;
            }
            let Some(truth) = self.shards.get(shard) else {
                continue;
            };
            let report = self.report_of(truth, node);
            if full || !same_report(agent.accepted.get(shard), &report) {
                sent.push(report);
            } else {
                unchanged.push(report);
            }
        }
        let stats = NodeStats {
            capacity_bytes: 1 << 40,
            available_bytes: 1 << 39,
            replicas: self.hosted.get(&node).copied().unwrap_or(0),
            leaders: led.len() as u64,
            ..NodeStats::default()
        };
        let heartbeat = StoreHeartbeat {
            node,
            stats,
            shards: sent,
            full,
            now_ms: self.now,
        };
        self.counts.heartbeats += 1;
        self.counts.heartbeat_reports += heartbeat.shards.len() as u64;
        let now = self.now;
        let triage = self.pd_call(|pd, stats| stats.handle(pd, &heartbeat, now));
        if let Some(command) = triage.propose {
            // The liveness refresh answers nobody; a refusal changes nothing.
            let _ = self.pd_apply(&command)?;
        }
        let wanted = match triage.answer {
            Ok(Response::StoreHeartbeat {
                report_through_log, ..
            }) => report_through_log,
            _ => {
                if let Some(agent) = self.nodes.get_mut(&node) {
                    agent.full_due = true;
                }
                return Ok(());
            }
        };
        if let Some(agent) = self.nodes.get_mut(&node) {
            agent.full_due = false;
            agent.since_full = if full { 0 } else { agent.since_full + 1 };
        }
        let wanted: BTreeSet<ShardId> = wanted.into_iter().collect();
        for report in heartbeat.shards {
            if wanted.contains(&report.descriptor.id) {
                self.report_through_log(node, report)?;
            } else if let Some(agent) = self.nodes.get_mut(&node) {
                agent.accepted.insert(report.descriptor.id, report);
            }
        }
        // Led shards left out as unchanged that PD names (an operator in flight).
        for report in unchanged {
            if wanted.contains(&report.descriptor.id) {
                self.report_through_log(node, report)?;
            }
        }
        Ok(())
    }

    /// Sends `report` as a `ShardReport` command and carries out the order PD answers with.
    pub(super) fn report_through_log(
        &mut self,
        node: NodeId,
        report: ShardReport,
    ) -> Result<(), RuleBroken> {
        let shard = report.descriptor.id;
        self.counts.log_reports += 1;
        let answer = self.pd_apply(&Command::ShardReport(report.clone()))?;
        let Some(agent) = self.nodes.get_mut(&node) else {
            return Ok(());
        };
        match answer {
            Ok(Response::ShardReport { order, .. }) => {
                agent.accepted.insert(shard, report.clone());
                if let Some(order) = order
                    && order.epoch == report.descriptor.epoch
                    && order.shard == shard
                {
                    self.execute(node, order);
                }
            }
            _ => {
                agent.accepted.remove(&shard);
            }
        }
        Ok(())
    }

    /// Starts carrying out `order` on `node` (the shard's leader), ending after its latency.
    fn execute(&mut self, node: NodeId, order: StepOrder) {
        let Some(shard) = self.shards.get(&order.shard) else {
            return;
        };
        let step = match order.step {
            // A leader cannot remove itself: the agent transfers leadership first.
            Step::RemoveReplica { node: target } if target == node => {
                let Some(to) = shard.voters().find(|v| *v != node) else {
                    return;
                };
                Step::TransferLeader { to }
            }
            // Splits are off in this model's settings.
            Step::Split { .. } => return,
            step => step,
        };
        let latency = match step {
            Step::TransferLeader { .. } => self.latency.transfer_ms,
            _ => self.latency.conf_change_ms,
        };
        if let Some(agent) = self.nodes.get_mut(&node) {
            agent.in_flight.insert(order.shard);
        }
        self.counts.steps += 1;
        let running = Running {
            shard: order.shard,
            executor: node,
            step,
        };
        self.schedule(self.now + latency, super::Event::StepDone(running));
    }

    /// A step ends: the shard changes if its leader (the executor) could carry it out, and the
    /// agent reports the shard through the log at once.
    pub(super) fn step_done(&mut self, running: Running) -> Result<(), RuleBroken> {
        let Running {
            shard: id,
            executor,
            step,
        } = running;
        let Some(agent) = self.nodes.get_mut(&executor) else {
            return Ok(());
        };
        agent.in_flight.remove(&id);
        if !agent.alive {
            return Ok(());
        }
        let now = self.now;
        let snapshot = self.latency.snapshot_ms_per_mib;
        let setup = self.latency.snapshot_setup_ms;
        let alive: BTreeSet<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.alive)
            .map(|(id, _)| *id)
            .collect();
        let Some(shard) = self.shards.get_mut(&id) else {
            return Ok(());
        };
        if shard.leader != Some(executor) {
            return Ok(());
        }
        let voters: Vec<NodeId> = shard.voters().collect();
        let quorum = voters.iter().filter(|v| alive.contains(v)).count() * 2 > voters.len();
        match step {
            Step::AddLearner { node, .. } if quorum && !shard.replicas.contains_key(&node) => {
                let member = member_id(node, u32::try_from(shard.conf_ver + 1).unwrap_or(0));
                shard.conf_ver += 1;
                shard.replicas.insert(node, (ReplicaRole::Learner, member));
                *self.hosted.entry(node).or_default() += 1;
                if let Some(target) = self.nodes.get_mut(&node) {
                    let mib = shard.size_bytes.div_ceil(1 << 20);
                    let start = target.snapshots_free_at.max(now);
                    let done = start + setup + mib * snapshot;
                    target.snapshots_free_at = done;
                    shard.caught_up_at.insert(node, done);
                }
            }
            Step::PromoteLearner { node }
                if quorum
                    && shard.replicas.get(&node).map(|r| r.0) == Some(ReplicaRole::Learner) =>
            {
                shard.conf_ver += 1;
                if let Some(replica) = shard.replicas.get_mut(&node) {
                    replica.0 = ReplicaRole::Voter;
                }
                shard.caught_up_at.remove(&node);
            }
            Step::RemoveReplica { node } if quorum && shard.replicas.contains_key(&node) => {
                shard.conf_ver += 1;
                shard.replicas.remove(&node);
                shard.caught_up_at.remove(&node);
                if let Some(count) = self.hosted.get_mut(&node) {
                    *count = count.saturating_sub(1);
                }
                self.counts.removals += 1;
            }
            Step::TransferLeader { to } if alive.contains(&to) && voters.contains(&to) => {
                shard.leader = Some(to);
                self.set_leader(id, Some(executor), Some(to));
            }
            _ => {}
        }
        self.check_shard(id)?;
        if self.shards.get(&id).and_then(|s| s.leader) == Some(executor)
            && let Some(shard) = self.shards.get(&id)
        {
            let report = self.report_of(shard, executor);
            self.report_through_log(executor, report)?;
        }
        Ok(())
    }

    /// Moves `shard` between the per-node sets of led shards.
    pub(super) fn set_leader(&mut self, shard: ShardId, from: Option<NodeId>, to: Option<NodeId>) {
        if let Some(from) = from
            && let Some(set) = self.led.get_mut(&from)
        {
            set.remove(&shard);
        }
        if let Some(to) = to {
            self.led.entry(to).or_default().insert(shard);
        }
    }

    /// The rule a conf change must keep: the shard never has fewer voters than its replication
    /// factor, nor fewer live voters, unless one of its replicas sits on a dead node.
    pub(super) fn check_shard(&self, id: ShardId) -> Result<(), RuleBroken> {
        let Some(shard) = self.shards.get(&id) else {
            return Ok(());
        };
        let replication = self.config.settings.replication_factor as usize;
        let voters = shard.voters().count();
        let live = shard.voters().filter(|v| self.is_alive(*v)).count();
        let on_dead_node = shard.replicas.keys().any(|n| !self.is_alive(*n));
        if voters < replication || (live < replication && !on_dead_node) {
            return Err(self.broken(format!(
                "shard {id} has {voters} voters ({live} live), replication factor {replication}"
            )));
        }
        Ok(())
    }
}

/// Whether `accepted` says the same as `report` (the agent compares whole reports; the model's
/// reports carry the time, which the agent's do not).
fn same_report(accepted: Option<&ShardReport>, report: &ShardReport) -> bool {
    accepted.is_some_and(|a| {
        a.descriptor == report.descriptor
            && a.leader == report.leader
            && a.stats == report.stats
            && a.caught_up_learners == report.caught_up_learners
            && a.split_hint == report.split_hint
    })
}
