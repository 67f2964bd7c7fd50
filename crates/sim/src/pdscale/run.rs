//! Building the starting cluster, the event loop, the scenario and the balance check.

use super::cluster::{Node, Shard};
use super::{Event, PdScale, PdScaleConfig, RuleBroken, Scenario};
use ringkv_pd::{Command, LeaderStats, NodeRegistration, NodeState, PdState, Response};
use ringkv_raft::SplitMix64;
use ringkv_types::ring::Arc;
use ringkv_types::{NodeId, ReplicaRole, ShardId, ShardMap, member_id};
use std::collections::BTreeMap;
use std::time::Duration;

/// What one run measured.
#[derive(Clone, Debug)]
pub struct PdScaleReport {
    /// The configuration's scenario.
    pub scenario: Scenario,
    /// Nodes and shards.
    pub nodes: u64,
    /// See `nodes`.
    pub shards: u64,
    /// Simulated time from the start until PD first settled (balanced before the scenario).
    pub settled_after_ms: Option<u64>,
    /// Simulated time from the scenario's event until balanced; `None` if never.
    pub balanced_after_ms: Option<u64>,
    /// Operators PD created after the scenario's event, until balanced.
    pub operators_until_balanced: u64,
    /// Operators PD created in the `after_balanced_ms` that followed (0: no thrash).
    pub operators_after_balanced: u64,
    /// How long the run watched for thrash once balanced (`after_balanced_ms`).
    pub watched_after_ms: u64,
    /// Operators finished, cancelled or timed out over the whole run (PD's own counts).
    pub operators_finished: u64,
    /// See `operators_finished`.
    pub operators_cancelled: u64,
    /// Replica counts per `Up` node at the end: (min, max).
    pub replica_spread: (u64, u64),
    /// Leader counts per `Up` node at the end: (min, max).
    pub leader_spread: (u64, u64),
    /// Run counters.
    pub counts: super::Counts,
    /// Wall time spent inside PD's code (applies and heartbeat triage), over the whole run.
    pub pd_cpu: Duration,
    /// The slowest single PD call and what it was.
    pub pd_slowest: (Duration, &'static str),
    /// PD's replicated state, postcard-encoded, at the end.
    pub pd_state_bytes: usize,
    /// Shards in the PD leader's in-memory statistics at the end.
    pub leader_stats_shards: usize,
    /// Simulated time at the end.
    pub ended_ms: u64,
}

impl PdScale {
    /// Builds the starting cluster and bootstraps PD.
    ///
    /// # Errors
    /// When PD refuses the bootstrap (an invalid configuration).
    pub fn new(config: PdScaleConfig) -> Result<Self, RuleBroken> {
        let mut rng = SplitMix64::new(config.seed);
        let all: Vec<NodeId> = (1..=config.nodes.max(3)).map(NodeId).collect();
        let initial: Vec<NodeId> = match config.scenario {
            Scenario::Join => all.iter().copied().take(3).collect(),
            _ => all.clone(),
        };
        let replication = u64::from(config.settings.replication_factor).max(1);
        let mut shards = BTreeMap::new();
        let mut led: BTreeMap<NodeId, _> = BTreeMap::new();
        let mut hosted: BTreeMap<NodeId, u64> = BTreeMap::new();
        let count = initial.len() as u64;
        for (i, arc) in (0..config.shards).zip(Arc::split_even(config.shards)) {
            let id = ShardId(i + 1);
            // Replica k of shard i on node (i + k·count/replication) — spread evenly, and
            // the leader is replica i mod replication, so leaders spread as well.
            let stride = (count / replication).max(1);
            let mut replicas = BTreeMap::new();
            let mut k = 0;
            while (replicas.len() as u64) < replication.min(count) {
                let node = initial[((i + k * stride) % count) as usize];
                replicas.insert(node, (ReplicaRole::Voter, member_id(node, 0)));
                k += 1;
            }
            let voters: Vec<NodeId> = replicas.keys().copied().collect();
            let leader = voters[(i % voters.len() as u64) as usize];
            for node in &voters {
                *hosted.entry(*node).or_default() += 1;
            }
            led.entry(leader)
                .or_insert_with(std::collections::BTreeSet::new)
                .insert(id);
            let size_bytes = rng.range(0, (config.max_shard_mib << 20) + 1);
            shards.insert(
                id,
                Shard {
                    id,
                    arc,
                    conf_ver: 1,
                    replicas,
                    leader: Some(leader),
                    size_bytes,
                    caught_up_at: BTreeMap::new(),
                },
            );
        }
        let registration = |node: NodeId| NodeRegistration {
            addr: format!("10.0.{}.{}:7000", node.get() / 250, node.get() % 250),
            labels: BTreeMap::new(),
            capacity_bytes: 1 << 40,
        };
        let mut settings = config.settings.clone();
        settings.split = false;
        let bootstrap = Command::Bootstrap {
            cluster_id: 1,
            cluster_name: "pd-scale".into(),
            nodes: initial.iter().map(|&n| (n, registration(n))).collect(),
            shard_map: ShardMap {
                version: 1,
                shards: shards.values().map(Shard::descriptor).collect(),
            },
            settings,
            now_ms: 0,
        };
        let mut pd = PdState::new();
        ringkv_pd::Apply::apply(&mut pd, &bootstrap).map_err(|e| RuleBroken {
            at_ms: 0,
            rule: format!("bootstrap refused: {e}"),
        })?;
        let nodes = all
            .iter()
            .map(|&id| {
                let up = initial.contains(&id);
                let node = Node {
                    alive: up,
                    joined: up,
                    full_due: true,
                    ..Node::default()
                };
                (id, node)
            })
            .collect();
        let latency = config.latency;
        let mut model = Self {
            config,
            pd,
            stats: LeaderStats::new(),
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes,
            shards,
            led,
            hosted,
            latency,
            rng,
            counts: super::Counts::default(),
            pd_time: Duration::ZERO,
            pd_slowest: (Duration::ZERO, "nothing"),
        };
        for node in initial {
            let phase = model.rng.range(0, model.config.heartbeat_ms);
            model.schedule(phase, Event::Heartbeat(node));
        }
        model.schedule(model.config.tick_ms, Event::PdTick);
        Ok(model)
    }

    /// Runs until balanced after the scenario (plus `after_balanced_ms`), or the limit.
    ///
    /// # Errors
    /// The first rule broken.
    pub fn run(mut self) -> Result<PdScaleReport, RuleBroken> {
        let mut settled_at = None;
        let mut event_at = None;
        let mut balanced_at = None;
        let mut created_before_balanced = 0;
        let mut created_after_balanced = 0;
        // PD gave up: unbalanced, and no operator in flight or created for this long (the
        // wait for a dead node to count as dead included).
        let stall_ms = self.config.settings.max_down_time_ms + 600_000;
        let mut busy_at = 0;
        while let Some(((at, _), event)) = self.queue.pop_first() {
            if at > self.config.limit_ms {
                self.now = self.config.limit_ms;
                break;
            }
            self.now = at;
            match event {
                Event::Heartbeat(node) => {
                    if !self.is_alive(node) {
                        continue;
                    }
                    self.heartbeat(node)?;
                    self.schedule(at + self.config.heartbeat_ms, Event::Heartbeat(node));
                }
                Event::StepDone(running) => self.step_done(running)?,
                Event::Elect(shard) => self.elect(shard),
                Event::Scenario => {
                    self.start_scenario()?;
                    event_at = Some(at);
                }
                Event::PdTick => {
                    // As `ringkvd`'s PD leader: a tick only when it would change something.
                    let tick = self.pd_call(|pd, stats| stats.tick(pd, at));
                    let created = match tick {
                        Some(tick) => match self.pd_apply(&tick)? {
                            Ok(Response::Tick(outcome)) => outcome.created.len() as u64,
                            _ => 0,
                        },
                        None => 0,
                    };
                    self.check_snapshots()?;
                    if created > 0 || !self.pd.operators.is_empty() || event_at.is_none() {
                        busy_at = at;
                    }
                    if balanced_at.is_none() && at.saturating_sub(busy_at) > stall_ms {
                        break;
                    }
                    let balanced = created == 0 && self.is_balanced();
                    match (settled_at, event_at, balanced_at) {
                        (None, _, _) if balanced => {
                            settled_at = Some(at);
                            self.schedule(at, Event::Scenario);
                        }
                        (Some(_), Some(_), None) if balanced => balanced_at = Some(at),
                        (Some(_), Some(_), None) => created_before_balanced += created,
                        (Some(_), Some(_), Some(done)) => {
                            created_after_balanced += created;
                            if at >= done + self.config.after_balanced_ms {
                                break;
                            }
                        }
                        _ => {}
                    }
                    self.schedule(at + self.config.tick_ms, Event::PdTick);
                }
            }
        }
        let (replica_spread, leader_spread) = self.spreads();
        let ends = self.pd.operator_counts.clone();
        Ok(PdScaleReport {
            scenario: self.config.scenario,
            nodes: self.config.nodes,
            shards: self.config.shards,
            settled_after_ms: settled_at,
            balanced_after_ms: balanced_at.zip(event_at).map(|(b, e)| b - e),
            operators_until_balanced: created_before_balanced,
            operators_after_balanced: created_after_balanced,
            watched_after_ms: self.config.after_balanced_ms,
            operators_finished: ends.finished,
            operators_cancelled: ends.cancelled,
            replica_spread,
            leader_spread,
            counts: self.counts,
            pd_cpu: self.pd_time,
            pd_slowest: self.pd_slowest,
            pd_state_bytes: postcard::to_stdvec(&self.pd).map_or(0, |b| b.len()),
            leader_stats_shards: self.stats.shard_count(),
            ended_ms: self.now,
        })
    }

    /// Applies the scenario's event.
    fn start_scenario(&mut self) -> Result<(), RuleBroken> {
        match self.config.scenario {
            Scenario::Join => {
                let joining: Vec<NodeId> = self
                    .nodes
                    .iter()
                    .filter(|(_, n)| !n.joined)
                    .map(|(id, _)| *id)
                    .collect();
                for id in joining {
                    let command = Command::RegisterNodeAs {
                        id,
                        node: NodeRegistration {
                            addr: format!("10.0.{}.{}:7000", id.get() / 250, id.get() % 250),
                            labels: BTreeMap::new(),
                            capacity_bytes: 1 << 40,
                        },
                        now_ms: self.now,
                    };
                    if let Err(e) = self.pd_apply(&command)? {
                        return Err(self.broken(format!("registration of {id} refused: {e}")));
                    }
                    if let Some(node) = self.nodes.get_mut(&id) {
                        node.alive = true;
                        node.joined = true;
                    }
                    let phase = self.rng.range(1, self.config.heartbeat_ms + 1);
                    self.schedule(self.now + phase, Event::Heartbeat(id));
                }
            }
            Scenario::Drain { node } => {
                let command = Command::SetNodeState {
                    node: NodeId(node),
                    state: NodeState::Draining,
                    now_ms: self.now,
                };
                if let Err(e) = self.pd_apply(&command)? {
                    return Err(self.broken(format!("drain refused: {e}")));
                }
            }
            Scenario::Kill { node } => {
                let id = NodeId(node);
                if let Some(dead) = self.nodes.get_mut(&id) {
                    dead.alive = false;
                    dead.in_flight.clear();
                }
                let lost: Vec<ShardId> = self
                    .led
                    .get(&id)
                    .map(|set| set.iter().copied().collect())
                    .unwrap_or_default();
                for shard in lost {
                    if let Some(s) = self.shards.get_mut(&shard) {
                        s.leader = None;
                    }
                    self.set_leader(shard, Some(id), None);
                    let delay = self
                        .rng
                        .range(self.latency.election_min_ms, self.latency.election_max_ms);
                    self.schedule(self.now + delay, Event::Elect(shard));
                }
            }
        }
        Ok(())
    }

    /// A leaderless shard elects a live voter, if a majority of its voters is alive.
    fn elect(&mut self, id: ShardId) {
        let Some(shard) = self.shards.get(&id) else {
            return;
        };
        if shard.leader.is_some() {
            return;
        }
        let voters: Vec<NodeId> = shard.voters().collect();
        let live: Vec<NodeId> = voters
            .iter()
            .copied()
            .filter(|v| self.is_alive(*v))
            .collect();
        if live.len() * 2 <= voters.len() {
            let retry = self.now + self.latency.election_max_ms;
            self.schedule(retry, Event::Elect(id));
            return;
        }
        let winner = live[self.rng.range(0, live.len() as u64) as usize];
        if let Some(shard) = self.shards.get_mut(&id) {
            shard.leader = Some(winner);
        }
        self.set_leader(id, None, Some(winner));
    }

    /// At most `max_snapshots_per_node` learners still catching up on any node.
    fn check_snapshots(&mut self) -> Result<(), RuleBroken> {
        let mut streaming: BTreeMap<NodeId, u64> = BTreeMap::new();
        for shard in self.shards.values() {
            for (node, at) in &shard.caught_up_at {
                if *at > self.now && self.is_alive(*node) {
                    *streaming.entry(*node).or_default() += 1;
                }
            }
        }
        let most = streaming.values().copied().max().unwrap_or(0);
        self.counts.max_snapshots_to_a_node = self.counts.max_snapshots_to_a_node.max(most);
        let limit = u64::from(self.config.settings.max_snapshots_per_node);
        if most > limit {
            return Err(self.broken(format!(
                "{most} snapshots streaming to one node, max_snapshots_per_node {limit}"
            )));
        }
        Ok(())
    }

    /// Replica and leader counts per `Up` node, (min, max) each.
    fn spreads(&self) -> ((u64, u64), (u64, u64)) {
        let mut replicas: BTreeMap<NodeId, u64> = BTreeMap::new();
        let mut leaders: BTreeMap<NodeId, u64> = BTreeMap::new();
        for node in self.pd.nodes.values().filter(|n| n.is_placement_target()) {
            replicas.insert(node.id, 0);
            leaders.insert(node.id, 0);
        }
        for shard in self.shards.values() {
            for node in shard.replicas.keys() {
                if let Some(count) = replicas.get_mut(node) {
                    *count += 1;
                }
            }
            if let Some(count) = shard.leader.and_then(|l| leaders.get_mut(&l)) {
                *count += 1;
            }
        }
        let span = |counts: &BTreeMap<NodeId, u64>| {
            let min = counts.values().copied().min().unwrap_or(0);
            let max = counts.values().copied().max().unwrap_or(0);
            (min, max)
        };
        (span(&replicas), span(&leaders))
    }

    /// Balanced by the schedulers' own rule: no operator in flight; every shard led, with
    /// exactly its replication factor of voters, no learner, every replica on an `Up` node;
    /// replica counts and leader counts of `Up` nodes within one of each other.
    fn is_balanced(&self) -> bool {
        if !self.pd.operators.is_empty() {
            return false;
        }
        let replication = self.pd.settings.replication_factor as usize;
        let healthy = self.shards.values().all(|shard| {
            shard.leader.is_some()
                && shard.voters().count() == replication
                && shard.replicas.len() == replication
                && shard
                    .replicas
                    .keys()
                    .all(|n| self.pd.is_placement_target(*n) && self.is_alive(*n))
        });
        let (replicas, leaders) = self.spreads();
        healthy && replicas.1 <= replicas.0 + 1 && leaders.1 <= leaders.0 + 1
    }
}

impl std::fmt::Display for PdScaleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = |ms: Option<u64>| {
            ms.map_or("never".to_string(), |ms| {
                format!("{:.1} s", ms as f64 / 1000.0)
            })
        };
        writeln!(
            f,
            "{:?}, {} nodes, {} shards: settled after {}; balanced {} after the event \
             ({} operators created until then, {} in the {:.0} s that followed)",
            self.scenario,
            self.nodes,
            self.shards,
            secs(self.settled_after_ms),
            secs(self.balanced_after_ms),
            self.operators_until_balanced,
            self.operators_after_balanced,
            self.watched_after_ms as f64 / 1000.0,
        )?;
        writeln!(
            f,
            "operators finished {}, cancelled {}; most in flight {}, most snapshots to one node {}; \
             replicas per Up node {}-{}, leaders {}-{}",
            self.operators_finished,
            self.operators_cancelled,
            self.counts.max_operators,
            self.counts.max_snapshots_to_a_node,
            self.replica_spread.0,
            self.replica_spread.1,
            self.leader_spread.0,
            self.leader_spread.1,
        )?;
        writeln!(
            f,
            "traffic: {} heartbeats carrying {} reports, {} PD commands ({} shard reports), \
             {} steps",
            self.counts.heartbeats,
            self.counts.heartbeat_reports,
            self.counts.log_commands,
            self.counts.log_reports,
            self.counts.steps,
        )?;
        write!(
            f,
            "PD CPU (wall time in PD calls) {:.2} s over {:.0} s simulated, slowest call {:.2} ms \
             ({}); PD state {} KiB encoded, {} shards in the leader's memory",
            self.pd_cpu.as_secs_f64(),
            self.ended_ms as f64 / 1000.0,
            self.pd_slowest.0.as_secs_f64() * 1000.0,
            self.pd_slowest.1,
            self.pd_state_bytes / 1024,
            self.leader_stats_shards,
        )
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
