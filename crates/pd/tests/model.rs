//! A deterministic model of a cluster driven by the placement driver.
//!
//! The model keeps the true descriptor of every shard (what its Raft group has applied) and a
//! leader, and plays the part of the shard leaders: it reports to PD, receives step orders, and
//! carries them out the way the Raft core would (one conf change at a time, after a random
//! delay, sometimes never: the proposal was lost), with learners catching up after a random
//! time. Nodes heartbeat, crash and restart. Everything comes from one seed.
//!
//! After every applied change the model checks that it changed one replica at most, kept a
//! quorum of the previous voters, and that a voter was only removed while enough voters remain.
//! After every command it checks PD's own invariants.

use ringkv_pd::{
    AdminOperator, Apply, Command, NodeRegistration, NodeState, NodeStats, PdState, Response,
    SchedulerKind, Settings, ShardReport, ShardStats, Step, StepOrder, plan, test_support,
};
use ringkv_types::{NodeId, Replica, ReplicaRole, ShardDescriptor, ShardId, ShardMap};
use std::collections::{BTreeMap, BTreeSet};

/// Simulated milliseconds per round.
const ROUND_MS: u64 = 500;

/// SplitMix64: a tiny seeded generator, so the model needs no dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high)`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low).max(1)
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.range(0, 1000) < per_mille
    }
}

/// Fault rates of a run.
#[derive(Clone, Copy)]
struct Faults {
    /// Chance that a step order is lost (never applied), per mille.
    lose_step: u64,
    /// Chance per round that a node crashes, per mille.
    crash: u64,
    /// Longest crash, ms.
    max_crash_ms: u64,
    /// Chance that a leader skips its report in a round, per mille.
    skip_report: u64,
    /// Chance that a heartbeat is lost, per mille.
    lose_heartbeat: u64,
}

const CALM: Faults = Faults {
    lose_step: 0,
    crash: 0,
    max_crash_ms: 0,
    skip_report: 0,
    lose_heartbeat: 0,
};

const FLAKY: Faults = Faults {
    lose_step: 150,
    crash: 0,
    max_crash_ms: 0,
    skip_report: 300,
    lose_heartbeat: 100,
};

struct SimNode {
    up: bool,
    restart_at: Option<u64>,
    /// Crashed for good.
    dead: bool,
}

struct SimShard {
    descriptor: ShardDescriptor,
    leader: Option<NodeId>,
    /// When each learner will have caught up.
    caught_up_at: BTreeMap<NodeId, u64>,
    /// A step being proposed: applied at the given time.
    pending: Option<(Step, u64)>,
    stats: ShardStats,
}

struct Model {
    pd: PdState,
    rng: Rng,
    now_ms: u64,
    nodes: BTreeMap<NodeId, SimNode>,
    shards: BTreeMap<ShardId, SimShard>,
    faults: Faults,
    replication: usize,
    applied_changes: u64,
}

fn settings(replication: u32) -> Settings {
    Settings {
        replication_factor: replication,
        max_operators: 8,
        max_snapshots_per_node: 2,
        heartbeat_timeout_ms: 3_000,
        max_down_time_ms: 20_000,
        operator_step_timeout_ms: 15_000,
        split_size_bytes: 0,
        split_load_per_sec: 0,
        ..Settings::default()
    }
}

fn registration(node: u64) -> NodeRegistration {
    test_support::registration(&format!("10.0.0.{node}:7000"))
}

fn voters(descriptor: &ShardDescriptor) -> BTreeSet<NodeId> {
    descriptor.voters().collect()
}

impl Model {
    /// `nodes` nodes and `shards` shards with `replication` round-robin voters.
    fn new(seed: u64, nodes: u64, shards: u64, replication: u64, faults: Faults) -> Self {
        let descriptors = test_support::round_robin_map(nodes, shards, replication).shards;
        let mut pd = PdState::new();
        let bootstrap = Command::Bootstrap {
            cluster_id: seed,
            cluster_name: "model".to_string(),
            nodes: (1..=nodes).map(|n| (NodeId(n), registration(n))).collect(),
            shard_map: ShardMap {
                version: 1,
                shards: descriptors.clone(),
            },
            settings: settings(replication as u32),
            now_ms: 0,
        };
        assert_eq!(pd.apply(&bootstrap), Ok(Response::Done));
        let shards = descriptors
            .into_iter()
            .map(|descriptor| {
                let leader = descriptor.voters().next();
                (
                    descriptor.id,
                    SimShard {
                        descriptor,
                        leader,
                        caught_up_at: BTreeMap::new(),
                        pending: None,
                        stats: ShardStats::default(),
                    },
                )
            })
            .collect();
        let nodes = (1..=nodes)
            .map(|n| {
                (
                    NodeId(n),
                    SimNode {
                        up: true,
                        restart_at: None,
                        dead: false,
                    },
                )
            })
            .collect();
        Self {
            pd,
            rng: Rng(seed),
            now_ms: 0,
            nodes,
            shards,
            faults,
            replication: replication as usize,
            applied_changes: 0,
        }
    }

    fn apply(&mut self, command: &Command) -> Result<Response, ringkv_pd::Error> {
        let result = self.pd.apply(command);
        self.pd.check_invariants();
        result
    }

    fn is_up(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|n| n.up)
    }

    fn add_node(&mut self) -> NodeId {
        let n = self.pd.ids.next_node;
        let command = Command::RegisterNode {
            node: registration(n),
            now_ms: self.now_ms,
        };
        let Ok(Response::NodeId(id)) = self.apply(&command) else {
            panic!("registration refused");
        };
        self.nodes.insert(
            id,
            SimNode {
                up: true,
                restart_at: None,
                dead: false,
            },
        );
        id
    }

    fn kill_for_good(&mut self, node: NodeId) {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.up = false;
            n.dead = true;
            n.restart_at = None;
        }
    }

    fn set_state(&mut self, node: NodeId, state: NodeState) {
        let command = Command::SetNodeState {
            node,
            state,
            now_ms: self.now_ms,
        };
        assert_eq!(self.apply(&command), Ok(Response::Done));
    }

    /// One round: crashes and restarts, heartbeats, elections, applying due steps, reports,
    /// a PD tick.
    fn round(&mut self) {
        self.now_ms += ROUND_MS;
        let now = self.now_ms;
        // Crashes and restarts.
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in &ids {
            let crash = self.faults.crash > 0 && self.rng.chance(self.faults.crash);
            let until = now
                + self
                    .rng
                    .range(ROUND_MS, self.faults.max_crash_ms.max(ROUND_MS + 1));
            let Some(node) = self.nodes.get_mut(id) else {
                continue;
            };
            if node.dead {
                continue;
            }
            if !node.up && node.restart_at.is_some_and(|t| t <= now) {
                node.up = true;
                node.restart_at = None;
            } else if node.up && crash {
                node.up = false;
                node.restart_at = Some(until);
            }
        }
        // Heartbeats.
        for id in &ids {
            if self.is_up(*id) && !self.rng.chance(self.faults.lose_heartbeat) {
                let _ = self.apply(&Command::NodeHeartbeat {
                    node: *id,
                    stats: NodeStats::default(),
                    now_ms: now,
                });
            }
        }
        let shard_ids: Vec<ShardId> = self.shards.keys().copied().collect();
        for shard in shard_ids {
            self.elect(shard);
            self.apply_due_step(shard);
            self.report(shard);
        }
        let _ = self.apply(&Command::Tick { now_ms: now });
        // PD only learns from reports: its map is never ahead of the shards themselves.
        for descriptor in &self.pd.shard_map.shards {
            let truth = self
                .shards
                .get(&descriptor.id)
                .map(|s| s.descriptor.epoch)
                .expect("PD knows only shards that exist");
            assert!(
                descriptor.epoch.conf_ver <= truth.conf_ver
                    && descriptor.epoch.version <= truth.version,
                "PD is ahead of {}: {:?} vs {truth:?}",
                descriptor.id,
                descriptor.epoch
            );
        }
    }

    /// A shard whose leader is down elects another live voter, if a majority is up.
    fn elect(&mut self, shard: ShardId) {
        let Some(sim) = self.shards.get(&shard) else {
            return;
        };
        let voters = voters(&sim.descriptor);
        let live: Vec<NodeId> = voters.iter().copied().filter(|v| self.is_up(*v)).collect();
        let has_quorum = live.len() > voters.len() / 2;
        let leader_ok = sim
            .leader
            .is_some_and(|l| self.is_up(l) && voters.contains(&l));
        if leader_ok && has_quorum {
            return;
        }
        let new_leader = if has_quorum {
            let pick = self.rng.range(0, live.len() as u64) as usize;
            live.get(pick).copied()
        } else {
            None
        };
        if let Some(sim) = self.shards.get_mut(&shard) {
            if sim.leader != new_leader {
                // An uncommitted proposal may die with its leader.
                if self.rng.chance(500) {
                    sim.pending = None;
                }
            }
            sim.leader = new_leader;
        }
    }

    /// The leader's report; the order that comes back is proposed (or lost).
    fn report(&mut self, shard: ShardId) {
        let skip = self.rng.chance(self.faults.skip_report);
        let Some(sim) = self.shards.get(&shard) else {
            return;
        };
        let Some(leader) = sim.leader else {
            return;
        };
        if skip {
            return;
        }
        let now = self.now_ms;
        let caught_up_learners = sim
            .caught_up_at
            .iter()
            .filter(|(node, at)| **at <= now && sim.descriptor.replica_on(**node).is_some())
            .map(|(node, _)| *node)
            .collect();
        let report = ShardReport {
            descriptor: sim.descriptor.clone(),
            leader,
            stats: sim.stats,
            caught_up_learners,
            split_hint: None,
            now_ms: now,
        };
        let order = match self.apply(&Command::ShardReport(report)) {
            Ok(Response::ShardReport { order, .. }) => order,
            Ok(other) => panic!("unexpected answer {other:?}"),
            // The right half of a split not known yet, or similar: retried next round.
            Err(_) => None,
        };
        if let Some(order) = order {
            self.propose(shard, order);
        }
    }

    fn propose(&mut self, shard: ShardId, order: StepOrder) {
        let lose = self.rng.chance(self.faults.lose_step);
        let delay = self.rng.range(0, 3 * ROUND_MS);
        let Some(sim) = self.shards.get_mut(&shard) else {
            return;
        };
        // The leader acts only on orders for its own epoch, one change at a time.
        if order.epoch != sim.descriptor.epoch || sim.pending.is_some() || lose {
            return;
        }
        sim.pending = Some((order.step, self.now_ms + delay));
    }

    /// Applies the pending step once due, as the Raft group would: only with a live quorum,
    /// and only if still valid against the current configuration.
    fn apply_due_step(&mut self, shard: ShardId) {
        let now = self.now_ms;
        let catch_up = self.rng.range(ROUND_MS, 8 * ROUND_MS);
        let Some(sim) = self.shards.get(&shard) else {
            return;
        };
        let Some((step, due)) = sim.pending else {
            return;
        };
        if due > now || sim.leader.is_none() {
            return;
        }
        let before = sim.descriptor.clone();
        let mut after = before.clone();
        let mut new_shard = None;
        let valid = match step {
            Step::AddLearner { node, incarnation } => {
                let ok = after.replica_on(node).is_none();
                if ok {
                    after.replicas.push(Replica {
                        node,
                        role: ReplicaRole::Learner,
                        member: ringkv_types::member_id(node, incarnation),
                    });
                }
                ok
            }
            Step::PromoteLearner { node } => {
                match after.replicas.iter_mut().find(|r| r.node == node) {
                    Some(replica) if replica.role == ReplicaRole::Learner => {
                        replica.role = ReplicaRole::Voter;
                        true
                    }
                    _ => false,
                }
            }
            Step::RemoveReplica { node } => {
                let ok = after.replica_on(node).is_some()
                    && (voters(&after).len() > 1 || !voters(&after).contains(&node));
                after.replicas.retain(|r| r.node != node);
                ok
            }
            Step::TransferLeader { to } => {
                let accepted = voters(&before).contains(&to) && self.is_up(to);
                if let Some(sim) = self.shards.get_mut(&shard) {
                    if accepted {
                        sim.leader = Some(to);
                    }
                    sim.pending = None;
                }
                return;
            }
            Step::Split { new_shard: id, at } => match before.arc.split_at(at) {
                Some((left, right)) if !self.shards.contains_key(&id) => {
                    after.arc = left;
                    after.epoch.version += 1;
                    let mut right_descriptor = after.clone();
                    right_descriptor.id = id;
                    right_descriptor.arc = right;
                    new_shard = Some(right_descriptor);
                    true
                }
                _ => false,
            },
        };
        let voters_before = voters(&before);
        let live = voters_before.iter().filter(|v| self.is_up(**v)).count();
        let Some(sim) = self.shards.get_mut(&shard) else {
            return;
        };
        sim.pending = None;
        if !valid || live <= voters_before.len() / 2 {
            return;
        }
        after.replicas.sort_by_key(|r| r.node);
        if new_shard.is_none() {
            after.epoch.conf_ver += 1;
        }
        check_change(&before, &after, self.replication);
        if let Step::AddLearner { node, .. } = step {
            sim.caught_up_at.insert(node, now + catch_up);
        }
        sim.caught_up_at
            .retain(|node, _| after.replica_on(*node).is_some());
        if sim.leader.is_some_and(|l| after.replica_on(l).is_none()) {
            sim.leader = None;
        }
        sim.descriptor = after;
        self.applied_changes += 1;
        if let Some(right) = new_shard {
            let leader = sim.leader;
            self.shards.insert(
                right.id,
                SimShard {
                    descriptor: right,
                    leader,
                    caught_up_at: BTreeMap::new(),
                    pending: None,
                    stats: ShardStats::default(),
                },
            );
        }
    }

    /// Whether nothing is in flight anywhere and PD has nothing more to do.
    fn quiescent(&self) -> bool {
        self.pd.operators.is_empty()
            && plan(&self.pd).is_empty()
            && self.shards.values().all(|s| s.pending.is_none())
            && self
                .shards
                .iter()
                .all(|(id, s)| self.pd.descriptor(*id) == Some(&s.descriptor))
    }

    /// Runs rounds until quiescent; returns the rounds taken.
    fn run_until_quiescent(&mut self, max_rounds: u64) -> u64 {
        for round in 0..max_rounds {
            self.round();
            if self.quiescent() {
                return round + 1;
            }
        }
        panic!(
            "no quiescence after {max_rounds} rounds: operators {:?}, plan {:?}",
            self.pd.operators,
            plan(&self.pd)
        );
    }

    fn replica_counts(&self) -> BTreeMap<NodeId, usize> {
        let mut counts: BTreeMap<NodeId, usize> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.dead)
            .map(|(id, _)| (*id, 0))
            .collect();
        for sim in self.shards.values() {
            for replica in &sim.descriptor.replicas {
                *counts.entry(replica.node).or_default() += 1;
            }
        }
        counts
    }

    fn leader_counts(&self) -> BTreeMap<NodeId, usize> {
        let mut counts: BTreeMap<NodeId, usize> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.dead)
            .map(|(id, _)| (*id, 0))
            .collect();
        for sim in self.shards.values() {
            if let Some(leader) = sim.leader {
                *counts.entry(leader).or_default() += 1;
            }
        }
        counts
    }

    /// Every shard: exactly `replication` voters, all on live nodes, no learners.
    fn assert_fully_replicated(&self) {
        for (id, sim) in &self.shards {
            let voters = voters(&sim.descriptor);
            assert_eq!(voters.len(), self.replication, "{id}: {:?}", sim.descriptor);
            assert!(
                sim.descriptor
                    .replicas
                    .iter()
                    .all(|r| r.role == ReplicaRole::Voter && self.is_up(r.node)),
                "{id}: {:?}",
                sim.descriptor
            );
        }
    }
}

/// The safety rule for one applied change: at most one replica changed; a quorum of the
/// previous voters is still voting; a voter is removed only while at least `replication`
/// voters remain (or the shard had fewer to begin with and did not shrink).
fn check_change(before: &ShardDescriptor, after: &ShardDescriptor, replication: usize) {
    let old: BTreeSet<(NodeId, ReplicaRole)> =
        before.replicas.iter().map(|r| (r.node, r.role)).collect();
    let new: BTreeSet<(NodeId, ReplicaRole)> =
        after.replicas.iter().map(|r| (r.node, r.role)).collect();
    let old_nodes: BTreeSet<NodeId> = old.iter().map(|(n, _)| *n).collect();
    let new_nodes: BTreeSet<NodeId> = new.iter().map(|(n, _)| *n).collect();
    let changed: BTreeSet<NodeId> = old_nodes
        .symmetric_difference(&new_nodes)
        .copied()
        .chain(old.symmetric_difference(&new).map(|(n, _)| *n))
        .collect();
    assert!(
        changed.len() <= 1,
        "{}: more than one replica changed: {before:?} -> {after:?}",
        before.id
    );
    let old_voters = voters(before);
    let new_voters = voters(after);
    let kept = old_voters.intersection(&new_voters).count();
    assert!(
        kept > old_voters.len() / 2,
        "{}: fewer than a quorum of the previous voters remain: {before:?} -> {after:?}",
        before.id
    );
    if new_voters.len() < old_voters.len() {
        assert!(
            new_voters.len() >= replication,
            "{}: a voter was removed below the replication factor: {before:?} -> {after:?}",
            before.id
        );
    }
}

fn spread(counts: &BTreeMap<NodeId, usize>) -> usize {
    let max = counts.values().copied().max().unwrap_or(0);
    let min = counts.values().copied().min().unwrap_or(0);
    max - min
}

#[test]
fn growing_three_to_five_nodes_balances_replicas_and_leaders() {
    for seed in 0..20 {
        let faults = if seed % 2 == 0 { CALM } else { FLAKY };
        let mut model = Model::new(seed, 3, 16, 3, faults);
        model.run_until_quiescent(200);
        model.add_node();
        model.add_node();
        let rounds = model.run_until_quiescent(3000);
        let replicas = model.replica_counts();
        let leaders = model.leader_counts();
        assert!(spread(&replicas) <= 1, "seed {seed}: replicas {replicas:?}");
        assert!(spread(&leaders) <= 1, "seed {seed}: leaders {leaders:?}");
        assert_eq!(replicas.len(), 5);
        model.assert_fully_replicated();
        assert!(rounds > 1 && model.applied_changes > 0, "seed {seed}");
    }
}

#[test]
fn a_node_down_past_max_down_time_is_repaired() {
    for seed in 0..20 {
        let faults = if seed % 2 == 0 { CALM } else { FLAKY };
        let mut model = Model::new(seed, 5, 12, 3, faults);
        model.run_until_quiescent(500);
        let victim = NodeId(seed % 5 + 1);
        let held = model.replica_counts()[&victim];
        assert!(held > 0);
        model.kill_for_good(victim);
        // Nothing moves before max_down_time.
        let down_at = model.now_ms;
        while model.now_ms < down_at + 15_000 {
            model.round();
            assert!(
                model.shards.values().all(|s| s.descriptor.replica_on(victim).is_some()
                    || !model.pd.is_dead(victim)),
                "seed {seed}: replicas moved before max_down_time"
            );
        }
        // Marked down after the heartbeat timeout, dead `max_down_time_ms` later.
        while !model.pd.is_dead(victim) {
            model.round();
        }
        assert!(model.now_ms <= down_at + 3_000 + 20_000 + 2 * ROUND_MS);
        model.run_until_quiescent(3000);
        assert_eq!(model.pd.nodes[&victim].state, NodeState::Down);
        for sim in model.shards.values() {
            assert!(sim.descriptor.replica_on(victim).is_none(), "seed {seed}");
        }
        model.assert_fully_replicated();
        let replicas = model.replica_counts();
        assert!(spread(&replicas) <= 1, "seed {seed}: {replicas:?}");
    }
}

#[test]
fn drain_empties_a_node_which_can_then_be_removed() {
    for seed in 0..20 {
        let faults = if seed % 2 == 0 { CALM } else { FLAKY };
        let mut model = Model::new(seed, 4, 12, 3, faults);
        model.run_until_quiescent(500);
        let drained = NodeId(seed % 4 + 1);
        model.set_state(drained, NodeState::Draining);
        model.run_until_quiescent(3000);
        assert_eq!(model.replica_counts()[&drained], 0, "seed {seed}");
        assert_eq!(model.leader_counts()[&drained], 0, "seed {seed}");
        model.set_state(drained, NodeState::Removed);
        model.kill_for_good(drained);
        model.run_until_quiescent(100);
        model.assert_fully_replicated();
        let mut replicas = model.replica_counts();
        replicas.remove(&drained);
        assert!(spread(&replicas) <= 1, "seed {seed}: {replicas:?}");
    }
}

/// Crashes, lost steps and reports, admin moves and splits, a node added, a node lost for
/// good: every change is safe throughout, and after healing every interrupted operator has
/// finished or rolled back and every shard is fully replicated again.
#[test]
fn chaos_then_heal_converges_safely() {
    let (mut cancelled, mut splits) = (0, 0);
    for seed in 0..40 {
        let faults = Faults {
            lose_step: 100,
            crash: 8,
            max_crash_ms: 30_000,
            skip_report: 200,
            lose_heartbeat: 50,
        };
        let mut model = Model::new(seed, 5, 8, 3, faults);
        let mut lost_for_good = None;
        for round in 0..600u64 {
            model.round();
            if round == 100 {
                model.add_node();
            }
            if round == 200 && seed % 3 == 0 {
                let victim = NodeId(model.rng.range(1, 6));
                model.kill_for_good(victim);
                lost_for_good = Some(victim);
            }
            if model.rng.chance(20) {
                admin_operation(&mut model);
            }
        }
        // Heal: everything not lost for good comes back, faults stop.
        model.faults = CALM;
        for node in model.nodes.values_mut() {
            if !node.dead {
                node.up = true;
                node.restart_at = None;
            }
        }
        if let Some(victim) = lost_for_good {
            model.set_state(victim, NodeState::Removed);
        }
        model.run_until_quiescent(5000);
        model.assert_fully_replicated();
        assert!(model.pd.shard_map.covers_ring(), "seed {seed}");
        assert_eq!(
            model.pd.shard_map.shards.len(),
            model.shards.len(),
            "seed {seed}"
        );
        let counts = model.pd.operator_counts.clone();
        assert!(counts.finished > 0, "seed {seed}: nothing finished");
        let replicas = model.replica_counts();
        let leaders = model.leader_counts();
        assert!(spread(&replicas) <= 1, "seed {seed}: replicas {replicas:?}");
        assert!(spread(&leaders) <= 1, "seed {seed}: leaders {leaders:?}");
        cancelled += counts.cancelled;
        splits += (model.shards.len() - 8) as u64;
    }
    // The runs must exercise cancellation (rollbacks) and splits, not pass vacuously.
    assert!(
        cancelled > 100 && splits > 40,
        "cancelled {cancelled}, splits {splits}"
    );
}

fn admin_operation(model: &mut Model) {
    let shard_ids: Vec<ShardId> = model.shards.keys().copied().collect();
    let shard = shard_ids[model.rng.range(0, shard_ids.len() as u64) as usize];
    let nodes: Vec<NodeId> = model.nodes.keys().copied().collect();
    let node = |model: &mut Model| nodes[model.rng.range(0, nodes.len() as u64) as usize];
    let operator = match model.rng.range(0, 3) {
        0 => AdminOperator::MoveReplica {
            shard,
            from: node(model),
            to: node(model),
        },
        1 => AdminOperator::TransferLeader {
            shard,
            to: node(model),
        },
        _ => AdminOperator::SplitShard { shard, at: None },
    };
    // Refusals (busy shard, bad target) are fine: the command is validated.
    let _ = model.apply(&Command::AddOperator {
        operator,
        now_ms: model.now_ms,
    });
}

#[test]
fn same_seed_same_run() {
    let run = |seed| {
        let mut model = Model::new(
            seed,
            4,
            8,
            3,
            Faults {
                crash: 5,
                max_crash_ms: 30_000,
                ..FLAKY
            },
        );
        for _ in 0..300 {
            model.round();
        }
        model.add_node();
        for _ in 0..300 {
            model.round();
        }
        model.pd
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11), run(12));
}

/// With automatic scheduling off, nothing moves however unbalanced the cluster is.
#[test]
fn disabled_schedulers_leave_the_cluster_alone() {
    let mut model = Model::new(1, 3, 8, 3, CALM);
    for kind in SchedulerKind::ALL {
        model
            .apply(&Command::SetScheduler {
                scheduler: kind,
                enabled: false,
            })
            .expect("switch");
    }
    model.add_node();
    for _ in 0..200 {
        model.round();
    }
    assert_eq!(model.applied_changes, 0);
    assert_eq!(
        model.replica_counts().values().filter(|c| **c == 0).count(),
        1
    );
}
