//! PD at scale (issue 16, item 5): a deterministic model of a large cluster driven by the
//! placement driver's real code (`ringkv-sim --pd-scale`).
//!
//! No Raft runs here: each shard is its applied configuration (replicas, leader, epoch), and
//! each node is its agent as `ringkvd` runs it (`crates/node/src/agent`): one `StoreHeartbeat`
//! per `heartbeat_ms` with the reports of its led shards that changed (all of them every
//! tenth), triaged by the PD leader's real [`LeaderStats`]; the reports PD names go through
//! [`Apply::apply`] as `ShardReport` commands, whose answer's order the leader carries out
//! (a step at a time, its shard left out of heartbeats while it runs, reported through the log
//! as soon as it ends); every `tick_ms` PD's leader proposes a `LeaderTick` (which runs the
//! schedulers) when one would change something. Steps
//! take modelled time ([`Latency`]): a conf change or a leader transfer a few milliseconds, a
//! learner's snapshot its shard's size at the snapshot rate (snapshots to one node queue up);
//! a killed node's leaderships move to another live voter after an election timeout.
//!
//! A run starts from a placement, lets PD settle (every shard reported, leaders balanced),
//! then applies its [`Scenario`] and measures the simulated time until the cluster is
//! balanced by the schedulers' own rule (no operator in flight or created, every replica on
//! an `Up` node, replica and leader counts within one of each other) and then keeps running
//! a while to see whether PD keeps moving things (thrash). Rules checked throughout: no shard
//! below its replication factor (live voters included, unless one of its nodes died), at most
//! `max_operators` operators, at most `max_snapshots_per_node` snapshots streaming to a node.
//! PD's CPU time (the wall time of the calls into PD, measured) and its state size are
//! reported, never asserted.

mod cluster;
mod run;

pub use run::PdScaleReport;

use cluster::{Node, Running, Shard};
use ringkv_pd::{Command, LeaderStats, PdState, Response, Settings};
use ringkv_raft::SplitMix64;
use ringkv_types::{NodeId, ShardId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// What happens once PD has settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Every shard starts on nodes 1-3; the other nodes join (register) at once.
    Join,
    /// Shards start spread over all nodes; `node` is set `Draining`.
    Drain {
        /// The node to drain.
        node: u64,
    },
    /// Shards start spread over all nodes; `node` dies (repair starts after
    /// `max_down_time_ms`).
    Kill {
        /// The node to kill.
        node: u64,
    },
}

/// Modelled durations, in simulated milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Latency {
    /// A conf change proposed, committed and applied (add learner, promote, remove).
    pub conf_change_ms: u64,
    /// A leader transfer until the new leader serves.
    pub transfer_ms: u64,
    /// A snapshot's fixed cost (checkpoint, connection).
    pub snapshot_setup_ms: u64,
    /// Streaming one MiB of snapshot (16 ms: PD's default 64 MiB/s limit).
    pub snapshot_ms_per_mib: u64,
    /// Election timeout range after a leader's node died.
    pub election_min_ms: u64,
    /// See `election_min_ms`.
    pub election_max_ms: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            conf_change_ms: 10,
            transfer_ms: 20,
            snapshot_setup_ms: 50,
            snapshot_ms_per_mib: 16,
            election_min_ms: 500,
            election_max_ms: 1000,
        }
    }
}

/// One run's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PdScaleConfig {
    /// Nodes (ids 1..=nodes).
    pub nodes: u64,
    /// Shards (replication factor from `settings`).
    pub shards: u64,
    /// Decides heartbeat phases, shard sizes and election delays.
    pub seed: u64,
    /// What happens after settling.
    pub scenario: Scenario,
    /// PD's settings (splits are forced off: nothing writes).
    pub settings: Settings,
    /// Step durations.
    pub latency: Latency,
    /// Shard sizes are uniform in `0..=max_shard_mib` MiB.
    pub max_shard_mib: u64,
    /// Interval of node heartbeats (`pd.heartbeat_interval_ms`).
    pub heartbeat_ms: u64,
    /// Interval of PD ticks (`pd.tick_interval_ms`).
    pub tick_ms: u64,
    /// How long to keep running once balanced, counting operators (thrash).
    pub after_balanced_ms: u64,
    /// Give up (not balanced) after this much simulated time; a run also stops, unbalanced,
    /// once PD has had no operator for `max_down_time_ms` plus ten minutes.
    pub limit_ms: u64,
    /// Run `PdState::check_invariants` after every PD command (slow at 10,000 shards).
    pub check_invariants: bool,
}

impl PdScaleConfig {
    /// `ringkvd`'s defaults (PD settings, 1 s heartbeats and ticks), shards up to 64 MiB.
    pub fn new(nodes: u64, shards: u64, scenario: Scenario) -> Self {
        Self {
            nodes,
            shards,
            seed: 1,
            scenario,
            settings: Settings {
                split: false,
                ..Settings::default()
            },
            latency: Latency::default(),
            max_shard_mib: 64,
            heartbeat_ms: 1000,
            tick_ms: 1000,
            after_balanced_ms: 60_000,
            limit_ms: 24 * 3600 * 1000,
            check_invariants: false,
        }
    }
}

/// A rule the cluster broke, with the simulated time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleBroken {
    /// Simulated milliseconds.
    pub at_ms: u64,
    /// What went wrong.
    pub rule: String,
}

impl std::fmt::Display for RuleBroken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at {} ms: {}", self.at_ms, self.rule)
    }
}

impl std::error::Error for RuleBroken {}

/// Something due at a simulated time.
#[derive(Clone, Debug)]
enum Event {
    Heartbeat(NodeId),
    PdTick,
    StepDone(Running),
    Elect(ShardId),
    Scenario,
}

/// Counters of one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Node heartbeats sent.
    pub heartbeats: u64,
    /// Shard reports carried by heartbeats.
    pub heartbeat_reports: u64,
    /// `ShardReport` commands through PD's log.
    pub log_reports: u64,
    /// Commands applied by PD (all kinds).
    pub log_commands: u64,
    /// Steps carried out by leaders.
    pub steps: u64,
    /// Replicas removed.
    pub removals: u64,
    /// Most operators in flight at once.
    pub max_operators: u64,
    /// Most snapshots streaming to one node at once.
    pub max_snapshots_to_a_node: u64,
}

/// The model.
pub struct PdScale {
    config: PdScaleConfig,
    pd: PdState,
    stats: LeaderStats,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    nodes: BTreeMap<NodeId, Node>,
    shards: BTreeMap<ShardId, Shard>,
    led: BTreeMap<NodeId, BTreeSet<ShardId>>,
    hosted: BTreeMap<NodeId, u64>,
    latency: Latency,
    rng: SplitMix64,
    counts: Counts,
    pd_time: Duration,
    pd_slowest: (Duration, &'static str),
}

impl PdScale {
    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), event);
    }

    fn broken(&self, rule: String) -> RuleBroken {
        RuleBroken {
            at_ms: self.now,
            rule,
        }
    }

    /// Calls into PD's leader memory, timed.
    fn pd_call<T>(&mut self, call: impl FnOnce(&PdState, &mut LeaderStats) -> T) -> T {
        let started = Instant::now();
        let out = call(&self.pd, &mut self.stats);
        self.add_pd_time(started.elapsed(), "heartbeat triage");
        out
    }

    fn add_pd_time(&mut self, spent: Duration, what: &'static str) {
        self.pd_time += spent;
        if spent > self.pd_slowest.0 {
            self.pd_slowest = (spent, what);
        }
    }

    /// Applies a command to PD (timed), then checks the operator limit.
    fn pd_apply(&mut self, command: &Command) -> Result<ringkv_pd::Result<Response>, RuleBroken> {
        use ringkv_pd::Apply;
        let what = match command {
            Command::Tick { .. } | Command::LeaderTick { .. } => "Tick",
            Command::ShardReport(_) => "ShardReport",
            Command::NodeHeartbeat { .. } => "NodeHeartbeat",
            _ => "other command",
        };
        let started = Instant::now();
        let answer = self.pd.apply(command);
        self.add_pd_time(started.elapsed(), what);
        self.counts.log_commands += 1;
        if self.config.check_invariants {
            self.pd.check_invariants();
        }
        let operators = self.pd.operators.len() as u64;
        self.counts.max_operators = self.counts.max_operators.max(operators);
        // Against the configured limit, not PD's copy: a PD that changed its own would pass.
        let limit = self.config.settings.max_operators;
        if operators > u64::from(limit) {
            return Err(self.broken(format!(
                "{operators} operators in flight, max_operators {limit}"
            )));
        }
        Ok(answer)
    }
}
