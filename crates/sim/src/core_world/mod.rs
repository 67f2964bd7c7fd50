//! The simulator running the real node core (`ringkv-sim --node-core`): every simulated node
//! is a [`NodeCore`](ringkv_node::core::node_core::NodeCore) over memory logs and a memory
//! state store ([`node::SimNode`]), driven as `ringkvd`'s event loop drives it (Readies through
//! the core, apply through the core, reads served by the core, the turn's writes made durable
//! by a simulated disk, `disk.rs`), with clients going through the core's request path
//! (sessions, epochs, `NotLeader`, `EpochMismatch`, `KeyNotInShard`). One seed decides the
//! cluster (3 or 5 nodes, 1 to 3 shards of 3 replicas on disjoint arcs), the faults (drop,
//! duplicate, delay and so reorder; one-node partitions; answers to clients lost; crash-restarts
//! that keep a prefix of the unsynced journal: 0-2 of the oldest unsynced apply batches and the
//! turn batches written before them, losing the rest; `network.rs`) and the workload.
//!
//! **Splits** (`split.rs`): about half the seeds split one shard mid-workload. The world asks
//! the shard's leader through the core's proposal path (`NodeCore::propose_split`) to split at
//! a workload key strictly inside the arc; every replica applies it through the core's two
//! halves (`NodeCore::begin_split`, `finish_split`) with the simulated disk's I/O between them
//! (`node_split.rs`: the turn's batch submitted, the new group written in one synchronous
//! durable write after every batch before it, its log opened). A node that just wrote the new
//! group may crash at once, before the parent's shrunken descriptor is durable; answers to
//! clients are lost more often around the split. Replicas of the new shard that a message
//! reaches first are created uninitialized (the core's routing) and filled by a snapshot. The
//! clients route by their own copy of the map and re-route on the nodes' refusals, sending the
//! same session and sequence again (`clients.rs`), as the real client does.
//!
//! Checks: the Raft core's own release assertions, durable before apply (no replica applies
//! past its durable log; [`durable_apply`]), the replica state comparison (replicas of a shard
//! at the same applied index hold the same data of the shard's arc then, and sessions, checked
//! whenever a replica applies or installs a snapshot; [`replica_states`]), exactly-once writes
//! (no value applied at two log indexes; every write answered at the first entry of its session
//! and sequence; [`exactly_once`]), linearizability of the client history (a key's history
//! spans the parent and the new shard), and after a heal phase, a leader per shard (the new
//! one too) and every replica of a shard holding the same applied index and the same data.
//! Each node has its own wall clock (an offset and steps), some keys carry TTLs, and the
//! leaders' sweep runs through the core; those keys are checked against the committed log
//! (`ttl.rs`, `ttl_model.rs`; across a split, the parent's log up to the split entry then the
//! new shard's, `lineage.rs`).
//!
//! Driver-only still (the World of `world.rs` covers these over bare Raft cores, not the node
//! core): membership changes, leader transfers, PD, quiescence and the liveness input,
//! session expiry proposals and replica removal.

mod checks;
mod clients;
mod disk;
pub mod durable_apply;
pub mod exactly_once;
mod lineage;
mod network;
mod node;
mod node_split;
pub mod planted;
pub mod replica_states;
mod split;
pub mod ttl;
mod ttl_model;

use crate::checkers::Violation;
use crate::params::TICK_UNITS;
use crate::trace::Trace;
use clients::{CLIENT_TIMEOUT_UNITS, Clients};
use exactly_once::ExactlyOnce;
use network::Packet;
use node::SimNode;
use replica_states::ReplicaStates;
use ringkv_node::core::planted::PlantedNodeBugs;
use ringkv_node::core::replies::RequestId;
use ringkv_raft::SplitMix64;
use ringkv_types::{
    Epoch, NodeId, Replica, ReplicaRole, ShardDescriptor, ShardId, member_id, ring,
};
use split::SplitPlan;
use std::collections::BTreeMap;

/// True time at the run's start (ms since the Unix epoch; one world time unit is a ms). Each
/// node's wall clock is true time plus its own offset (`ttl.rs`).
const EPOCH_MS: u64 = 1_700_000_000_000;

/// What one node-core seed's run produced.
#[derive(Clone, Debug)]
pub struct CoreSeedReport {
    /// The seed.
    pub seed: u64,
    /// The first violation, if any.
    pub violation: Option<Violation>,
    /// Client operations in keys the linearizability check decided.
    pub ops_checked: u64,
    /// Operations whose answer the client heard.
    pub ops_completed: u64,
    /// Snapshots handed to followers and taken.
    pub snapshots: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Apply batches a crash lost (re-applied from the log after the restart).
    pub apply_batches_lost: u64,
    /// Unsynced turn batches a crash kept (an apply batch after them in the journal survived).
    pub turn_batches_kept: u64,
    /// Applied states compared with another replica's at the same index.
    pub states_compared: u64,
    /// TTL-key operations the log-time checks judged.
    pub ttl_ops_checked: u64,
    /// Reads of a TTL key that found its value expired.
    pub ttl_expired_reads: u64,
    /// Keys the leaders' sweeps removed through the log.
    pub ttl_sweep_removals: u64,
    /// Clock steps taken.
    pub clock_steps: u64,
    /// Whether the seed split a shard (a replica applied the split).
    pub split: bool,
    /// Crashes of a node that had just written a split's new group.
    pub split_crashes: u64,
    /// Applied writes the exactly-once check compared.
    pub writes_compared: u64,
    /// Hash of the whole run.
    pub trace_hash: u64,
    /// Events in the trace.
    pub trace_events: u64,
}

/// The run's knobs, drawn from the seed.
#[derive(Clone, Copy, Debug)]
struct Knobs {
    nodes: u64,
    shards: u64,
    clients: u64,
    keys: u8,
    drop_per_mille: u64,
    duplicate_per_mille: u64,
    max_delay_units: u64,
    max_fsync_units: u64,
    crash_per_mille: u64,
    partition_per_mille: u64,
    /// Answers to clients lost on the way (a dropped connection): the client times out and
    /// sends the request again with the same session and sequence.
    reply_loss_per_mille: u64,
    chaos_ticks: u64,
    heal_ticks: u64,
}

impl Knobs {
    fn draw(rng: &mut SplitMix64) -> Self {
        Self {
            nodes: if rng.range(0, 2) == 0 { 3 } else { 5 },
            shards: rng.range(1, 4),
            clients: rng.range(2, 6),
            keys: rng.range(2, 6) as u8,
            drop_per_mille: rng.range(0, 60),
            duplicate_per_mille: rng.range(0, 30),
            max_delay_units: rng.range(1, 4 * TICK_UNITS),
            max_fsync_units: rng.range(1, 3 * TICK_UNITS),
            crash_per_mille: rng.range(0, 25),
            partition_per_mille: rng.range(0, 15),
            reply_loss_per_mille: rng.range(0, 40),
            chaos_ticks: 400,
            heal_ticks: 300,
        }
    }
}

/// A node-core run.
pub struct CoreWorld {
    seed: u64,
    knobs: Knobs,
    rng: SplitMix64,
    now: u64,
    /// History event counter.
    clock: u64,
    nodes: BTreeMap<NodeId, SimNode>,
    descriptors: Vec<ShardDescriptor>,
    /// Packets by (delivery time, sequence), to a node (`Some`) or a client (`None`).
    network: BTreeMap<(u64, u64), (Option<NodeId>, Packet)>,
    sequence: u64,
    /// Nodes cut off from every other node until the time given.
    isolated: BTreeMap<NodeId, u64>,
    restarts: BTreeMap<NodeId, u64>,
    clients: Clients,
    trace: Trace,
    snapshots: u64,
    crashes: u64,
    apply_batches_lost: u64,
    replica_states: ReplicaStates,
    /// The nodes' clocks, the committed log and the reads' log times (`ttl.rs`).
    ttl: ttl::TtlWorld,
    /// The seed's split (`split.rs`).
    split: Option<SplitPlan>,
    split_crashes: u64,
    exactly_once: ExactlyOnce,
}

impl CoreWorld {
    /// Builds the run for `seed`, with the node-core bugs `planted` switched on.
    pub fn new(seed: u64, planted: PlantedNodeBugs) -> Self {
        let mut rng = SplitMix64::new(seed ^ 0x6e6f_6465_636f_7265);
        let knobs = Knobs::draw(&mut rng);
        let node_ids: Vec<NodeId> = (1..=knobs.nodes).map(NodeId).collect();
        let width = u64::MAX / knobs.shards;
        let mut descriptors = Vec::new();
        for index in 0..knobs.shards {
            let start = index * width;
            let end = (index + 1 < knobs.shards).then(|| (index + 1) * width);
            let mut hosts = node_ids.clone();
            while hosts.len() > 3 {
                hosts.remove(rng.range(0, hosts.len() as u64) as usize);
            }
            descriptors.push(ShardDescriptor {
                id: ShardId(index + 1),
                arc: ring::Arc { start, end },
                epoch: Epoch {
                    conf_ver: 1,
                    version: 1,
                },
                replicas: hosts
                    .iter()
                    .map(|node| Replica {
                        node: *node,
                        role: ReplicaRole::Voter,
                        member: member_id(*node, 1),
                    })
                    .collect(),
            });
        }
        let nodes = node_ids
            .iter()
            .map(|id| {
                let hosted = descriptors
                    .iter()
                    .filter(|d| d.replicas.iter().any(|r| r.node == *id))
                    .map(|d| (d.id, d.clone()))
                    .collect();
                (*id, SimNode::new(*id, hosted, seed, planted))
            })
            .collect();
        let ttl = ttl::TtlWorld::new(seed, node_ids.iter().copied());
        let split = SplitPlan::draw(seed, &descriptors, knobs.keys, knobs.chaos_ticks);
        Self {
            split,
            split_crashes: 0,
            exactly_once: ExactlyOnce::default(),
            ttl,
            seed,
            knobs,
            rng,
            now: 0,
            clock: 0,
            nodes,
            descriptors,
            network: BTreeMap::new(),
            sequence: 0,
            isolated: BTreeMap::new(),
            restarts: BTreeMap::new(),
            clients: Clients::new(knobs.clients),
            trace: Trace::default(),
            snapshots: 0,
            crashes: 0,
            apply_batches_lost: 0,
            replica_states: ReplicaStates::default(),
        }
    }

    /// Runs the seed: chaos, then heal (no new faults, every node back), then the checks.
    pub fn run(mut self) -> CoreSeedReport {
        let outcome = self.run_phases();
        let (ttl_counts, outcome) = match outcome.and_then(|()| self.check_ttl()) {
            Ok(counts) => (counts, Ok(())),
            Err(violation) => ((0, 0, 0), Err(violation)),
        };
        let (ops_checked, linearizable) = self.check_linearizability();
        // The answers half of the exactly-once check last: a write answered at the wrong
        // index (before it was applied, say) is the other checks' finding first.
        let violation = outcome
            .and(linearizable)
            .and_then(|()| self.check_write_answers())
            .err();
        CoreSeedReport {
            seed: self.seed,
            violation,
            ops_checked,
            ops_completed: self.clients.completed(),
            snapshots: self.snapshots,
            crashes: self.crashes,
            apply_batches_lost: self.apply_batches_lost,
            turn_batches_kept: self
                .nodes
                .values()
                .map(|node| node.batches_kept_by_crashes)
                .sum(),
            states_compared: self.replica_states.compared,
            ttl_ops_checked: ttl_counts.0,
            ttl_expired_reads: ttl_counts.1,
            ttl_sweep_removals: ttl_counts.2,
            clock_steps: self.ttl.clock_steps,
            split: self.split.as_ref().is_some_and(|plan| plan.applied),
            split_crashes: self.split_crashes,
            writes_compared: self.exactly_once.compared,
            trace_hash: self.trace.hash(),
            trace_events: self.trace.events(),
        }
    }

    fn run_phases(&mut self) -> Result<(), Violation> {
        let chaos_end = self.knobs.chaos_ticks * TICK_UNITS;
        let heal_end = chaos_end + self.knobs.heal_ticks * TICK_UNITS;
        // The clients stop early enough for their last answers (or timeouts) to come in.
        let clients_end = heal_end - 2 * CLIENT_TIMEOUT_UNITS;
        while self.now < heal_end {
            if self.now.is_multiple_of(TICK_UNITS) {
                if self.now < chaos_end {
                    self.inject_faults()?;
                    self.request_split()?;
                } else if self.now == chaos_end {
                    self.heal();
                }
                self.restart_due();
                for node in self.nodes.values_mut() {
                    node.tick(1).map_err(fatal)?;
                }
                let sweeping = self.now + ttl::SWEEP_QUIET_UNITS < heal_end;
                self.ttl_tick(self.now < chaos_end, sweeping)?;
                if self.now < clients_end {
                    self.run_clients();
                }
            }
            self.deliver()?;
            let now = self.now;
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                let fsync = self.rng.range(1, self.knobs.max_fsync_units + 1);
                let journal = self.rng.range(0, fsync + 1);
                let now_ms = self.ttl.wall_ms(id, now);
                let Some(node) = self.nodes.get_mut(&id) else {
                    continue;
                };
                node.complete_disk_writes(now, now_ms).map_err(fatal)?;
                let output = node
                    .end_turn(now_ms, (now + journal, now + fsync))
                    .map_err(fatal)?;
                for observation in std::mem::take(&mut node.observed) {
                    durable_apply::check(&observation)?;
                    self.replica_states.check(observation)?;
                }
                self.ttl.record(id, now, std::mem::take(&mut node.ttl_log));
                for (to, message) in output.messages {
                    self.send(id, Some(to), Packet::Raft(message));
                }
                for (to, message, snapshot, descriptor) in output.snapshots {
                    let packet = Packet::Snapshot {
                        from: id,
                        message,
                        snapshot,
                        descriptor,
                    };
                    self.send(id, Some(to), packet);
                }
                for (RequestId(request_id), response) in output.replies {
                    self.send(
                        id,
                        None,
                        Packet::Response {
                            request_id,
                            response,
                        },
                    );
                }
                if let Some(node) = self.nodes.get_mut(&id) {
                    self.exactly_once.check(std::mem::take(&mut node.events))?;
                }
                self.after_split_turn(id)?;
            }
            self.now += 1;
        }
        self.check_convergence()
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.rng.range(0, 1000) < per_mille
    }

    fn run_clients(&mut self) {
        let requests = self.clients.run(
            self.now,
            &mut self.rng,
            &self.descriptors,
            self.knobs.keys,
            &mut self.clock,
        );
        for outgoing in requests {
            // Clients are not partitioned; their packets are delayed like any other.
            let delay = self.rng.range(1, self.knobs.max_delay_units + 1);
            self.enqueue(
                delay,
                Some(outgoing.node),
                Packet::Request {
                    request_id: outgoing.request_id,
                    request: outgoing.request,
                },
            );
        }
    }

    /// Crashes (a minority at a time) and one-node partitions.
    fn inject_faults(&mut self) -> Result<(), Violation> {
        if self.may_crash() && self.chance(self.knobs.crash_per_mille) {
            let id = NodeId(self.rng.range(1, self.knobs.nodes + 1));
            self.crash_node(id)?;
        }
        self.isolated.retain(|_, until| *until > self.now);
        if self.isolated.is_empty() && self.chance(self.knobs.partition_per_mille) {
            let id = NodeId(self.rng.range(1, self.knobs.nodes + 1));
            let until = self.now + self.rng.range(10, 60) * TICK_UNITS;
            self.isolated.insert(id, until);
            self.trace.record(&[6, self.now, id.get()]);
        }
        Ok(())
    }

    /// Whether one more node may go down (a minority at a time).
    fn may_crash(&self) -> bool {
        let down = self.nodes.values().filter(|n| !n.is_up()).count() as u64;
        down < (self.knobs.nodes - 1) / 2
    }

    /// Crashes node `id` (if up), keeping 0-2 of its unsynced apply batches, and schedules its
    /// restart.
    fn crash_node(&mut self, id: NodeId) -> Result<(), Violation> {
        if let Some(node) = self.nodes.get_mut(&id)
            && node.is_up()
        {
            let survivors = self.rng.range(0, 3) as usize;
            self.apply_batches_lost += node.crash(survivors).map_err(fatal)? as u64;
            self.crashes += 1;
            let back = self.now + self.rng.range(10, 80) * TICK_UNITS;
            self.restarts.insert(id, back);
            self.trace.record(&[5, self.now, id.get()]);
        }
        Ok(())
    }

    fn restart_due(&mut self) {
        let now = self.now;
        let due: Vec<NodeId> = self
            .restarts
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.restarts.remove(&id);
            if let Some(node) = self.nodes.get_mut(&id) {
                node.start();
                self.ttl.restarted(id);
                self.trace.record(&[7, now, id.get()]);
            }
        }
    }

    fn heal(&mut self) {
        self.isolated.clear();
        let now = self.now;
        for at in self.restarts.values_mut() {
            *at = now;
        }
    }
}

fn fatal(detail: String) -> Violation {
    Violation {
        check: "node core error",
        detail,
    }
}

fn liveness(detail: String) -> Violation {
    Violation {
        check: "liveness after heal",
        detail,
    }
}

/// Runs one node-core seed; a panic inside it (a Raft invariant assertion) is a violation.
pub fn run_core_seed(seed: u64) -> CoreSeedReport {
    run_core_seed_planted(seed, PlantedNodeBugs::default())
}

/// [`run_core_seed`] with the node-core bugs `planted` switched on (they act only in a build
/// with the `planted-bugs` feature: [`PlantedNodeBugs::COMPILED`]).
pub fn run_core_seed_planted(seed: u64, planted: PlantedNodeBugs) -> CoreSeedReport {
    match std::panic::catch_unwind(|| CoreWorld::new(seed, planted).run()) {
        Ok(report) => report,
        Err(panic) => CoreSeedReport {
            seed,
            violation: Some(Violation {
                check: "invariant assertion",
                detail: panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_else(|| "unknown panic".to_string()),
            }),
            ops_checked: 0,
            ops_completed: 0,
            snapshots: 0,
            crashes: 0,
            apply_batches_lost: 0,
            turn_batches_kept: 0,
            states_compared: 0,
            ttl_ops_checked: 0,
            ttl_expired_reads: 0,
            ttl_sweep_removals: 0,
            clock_steps: 0,
            split: false,
            split_crashes: 0,
            writes_compared: 0,
            trace_hash: 0,
            trace_events: 0,
        },
    }
}
