//! One simulated run: nodes, groups, network, disks, clients and checkers, all driven by one
//! seed in one thread.
//!
//! Phases: chaos (faults, membership changes, leader transfers, client load), then heal (all
//! links restored, all nodes up, no new faults) during which every group must elect a leader
//! and commit a new entry within a bounded number of ticks.

use crate::checkers::commit_monotonicity::CommitMonotonicity;
use crate::checkers::election_safety::ElectionSafety;
use crate::checkers::leader_completeness::LeaderCompleteness;
use crate::checkers::leader_liveness::LeaderLiveness;
use crate::checkers::linearizability::{KeyVerdict, check_key};
use crate::checkers::log_matching::{self, LogMatching, LogView, SNAPSHOT_POINT};
use crate::checkers::state_machine_safety::StateMachineSafety;
use crate::checkers::{Violation, payload_hash};
use crate::history::{History, Operation};
use crate::kv::{Command, Key, Op, OpResult};
use crate::params::{Params, TICK_UNITS};
use crate::replica::{DiskWrite, Replica, Tuning};
use crate::trace::Trace;
use ringkv_raft::{ConfChange, MemStorage, PlantedBugs, ReadMode, Role, SplitMix64};
use ringkv_types::raft::{ConfState, EntryPayload, Message};
use ringkv_types::{LogIndex, NodeId, ShardId, Term};
use std::collections::{BTreeMap, BTreeSet};

mod checks;
mod clients;
mod faults;
mod idle;
mod network;
mod nodes;
mod placement;
mod quiet;
pub use idle::IdleReport;
use placement::Placement;
use quiet::Quiet;

/// Which known bug to plant, for the simulator's self-test. Each one is caught by one checker
/// ([`PlantedBug::checker`]); `crates/sim/tests/simulation.rs` proves it, and
/// `docs/testing.md` lists how many seeds each needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// Count previous-term entries toward commit.
    CommitPreviousTerm,
    /// Grant votes without the up-to-date log check.
    VoteWithoutLogCheck,
    /// Acknowledge appends before persisting them.
    AckBeforePersist,
    /// Serve lease reads without a quorum-backed lease.
    LeaseWithoutQuorum,
    /// Grant a second vote in a term already voted in.
    VoteTwiceInATerm,
    /// Accept an append without comparing the term of the entry before it.
    AppendWithoutPrevCheck,
    /// Hand one committed entry to the state machine twice.
    ApplyEntryTwice,
    /// A quiescent follower ignores the report that its leader is down.
    QuiescentFollowerIgnoresLiveness,
}

impl PlantedBug {
    /// Every planted bug.
    pub const ALL: [PlantedBug; 8] = [
        PlantedBug::VoteTwiceInATerm,
        PlantedBug::AppendWithoutPrevCheck,
        PlantedBug::VoteWithoutLogCheck,
        PlantedBug::ApplyEntryTwice,
        PlantedBug::CommitPreviousTerm,
        PlantedBug::LeaseWithoutQuorum,
        PlantedBug::AckBeforePersist,
        PlantedBug::QuiescentFollowerIgnoresLiveness,
    ];

    /// The name `ringkv-sim --plant-bug` takes.
    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::VoteTwiceInATerm => "vote-twice-in-a-term",
            PlantedBug::AppendWithoutPrevCheck => "append-without-prev-check",
            PlantedBug::VoteWithoutLogCheck => "vote-without-log-check",
            PlantedBug::ApplyEntryTwice => "apply-entry-twice",
            PlantedBug::CommitPreviousTerm => "commit-previous-term",
            PlantedBug::LeaseWithoutQuorum => "lease-without-quorum",
            PlantedBug::AckBeforePersist => "ack-before-persist",
            PlantedBug::QuiescentFollowerIgnoresLiveness => "quiescent-follower-ignores-liveness",
        }
    }

    /// The bug called `name` (see [`PlantedBug::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|bug| bug.name() == name)
    }

    /// The checker ([`Violation::check`]) that catches this bug, and no other checker does.
    pub fn checker(self) -> &'static str {
        match self {
            PlantedBug::VoteTwiceInATerm => "election safety",
            PlantedBug::AppendWithoutPrevCheck => "log matching",
            PlantedBug::VoteWithoutLogCheck => "leader completeness",
            PlantedBug::ApplyEntryTwice => "state machine safety",
            PlantedBug::CommitPreviousTerm => "commit rule",
            PlantedBug::LeaseWithoutQuorum => "linearizability",
            PlantedBug::AckBeforePersist => "leader completeness",
            PlantedBug::QuiescentFollowerIgnoresLiveness => "leader liveness",
        }
    }

    fn switches(bug: Option<PlantedBug>) -> PlantedBugs {
        let mut switches = PlantedBugs::default();
        match bug {
            Some(PlantedBug::CommitPreviousTerm) => switches.commit_previous_term_entries = true,
            Some(PlantedBug::VoteWithoutLogCheck) => switches.vote_without_log_check = true,
            Some(PlantedBug::AckBeforePersist) => switches.ack_before_persist = true,
            Some(PlantedBug::LeaseWithoutQuorum) => switches.lease_read_without_quorum = true,
            Some(PlantedBug::VoteTwiceInATerm) => switches.vote_twice_in_a_term = true,
            Some(PlantedBug::AppendWithoutPrevCheck) => {
                switches.append_without_prev_term_check = true;
            }
            Some(PlantedBug::ApplyEntryTwice) => switches.apply_entry_twice = true,
            Some(PlantedBug::QuiescentFollowerIgnoresLiveness) => {
                switches.quiescent_follower_ignores_liveness = true;
            }
            None => {}
        }
        switches
    }
}

/// What one seed's run produced.
#[derive(Clone, Debug)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// The first violation, if any.
    pub violation: Option<Violation>,
    /// Client operations of keys the linearizability check decided (an undecided key's
    /// operations are not counted).
    pub ops_checked: u64,
    /// Elections started.
    pub elections: u64,
    /// Snapshots installed from leaders.
    pub snapshots: u64,
    /// Membership changes applied.
    pub conf_changes: u64,
    /// Keys whose linearizability search hit its largest budget without a verdict (each one
    /// fails the run as `linearizability inconclusive`).
    pub inconclusive_keys: u64,
    /// Hash of the whole run.
    pub trace_hash: u64,
    /// Events in the trace.
    pub trace_events: u64,
    /// Cluster size.
    pub nodes: u64,
    /// Steps of placement-driver operators carried out (0 when the random injector decides
    /// membership changes).
    pub pd_orders: u64,
    /// Whether the seed ran with quiescence.
    pub quiesce: bool,
    /// Replica ticks driven (`RawNode::tick` called).
    pub ticks_run: u64,
    /// Replica ticks skipped because the replica was quiescent.
    pub ticks_skipped: u64,
    /// The longest a group went without a leader while a majority of it was up and connected,
    /// in ticks.
    pub longest_leaderless: u64,
    /// Liveness reports (a peer suspected down) that reached a quiescent replica.
    pub quiescent_reports: u64,
    /// Nodes crashed because they led a quiescent group (a fault point of quiescing seeds).
    pub quiet_leaders_killed: u64,
}

#[derive(Clone, Debug)]
enum Packet {
    Raft(Message),
    Request {
        client: u64,
        node: NodeId,
        group: ShardId,
        op_id: u64,
        op: Op,
        mode: ReadMode,
    },
    Response {
        client: u64,
        op_id: u64,
        outcome: Outcome,
    },
}

#[derive(Clone, Copy, Debug)]
enum Outcome {
    Ok(OpResult),
    NotLeader(NodeId),
    Failed,
}

struct Node {
    up: bool,
    phase: u64,
    restart_at: Option<u64>,
    replicas: BTreeMap<ShardId, Replica>,
}

struct InFlight {
    op_id: u64,
    slot: usize,
    is_read: bool,
    deadline: u64,
}

struct Client {
    id: u64,
    in_flight: Option<InFlight>,
    leader_hint: BTreeMap<ShardId, NodeId>,
    next_op_at: u64,
    next_op_id: u64,
}

/// Client id used for the liveness probes of the heal phase.
const PROBE_CLIENT: u64 = u64::MAX;
/// Key the liveness probes write.
const PROBE_KEY: Key = 255;
/// Ticks a client waits for an answer.
const CLIENT_TIMEOUT_TICKS: u64 = 30;

/// A simulated run.
pub struct World {
    seed: u64,
    params: Params,
    tuning: Tuning,
    rng: SplitMix64,
    now: u64,
    clock: u64,
    nodes: BTreeMap<NodeId, Node>,
    groups: Vec<ShardId>,
    network: BTreeMap<(u64, u64), Packet>,
    sequence: u64,
    cut: BTreeSet<(NodeId, NodeId)>,
    partition_until: Option<u64>,
    clients: Vec<Client>,
    history: History,
    next_read_context: u64,
    election_safety: ElectionSafety,
    log_matching: LogMatching,
    leader_completeness: LeaderCompleteness,
    state_machine: StateMachineSafety,
    commits: CommitMonotonicity,
    trace: Trace,
    elections: u64,
    snapshots: u64,
    conf_changes: BTreeSet<(ShardId, LogIndex)>,
    healed: bool,
    live_groups: BTreeSet<ShardId>,
    /// A pending isolation of a new leader: (start, node, ticks).
    pending_isolation: Option<(u64, NodeId, u64)>,
    /// Which node hosts each Raft member id.
    member_node: BTreeMap<NodeId, NodeId>,
    next_member: u64,
    /// Print every event to stderr (`RINGKV_SIM_TRACE=1`), for debugging one seed.
    verbose: bool,
    /// The placement driver, in the seeds where it (not the random injector) decides
    /// membership changes.
    placement: Option<Placement>,
    /// Quiescence (in half of the seeds): idle windows, the liveness input.
    quiet: Option<Quiet>,
    leader_liveness: LeaderLiveness,
    ticks_run: u64,
    ticks_skipped: u64,
    /// Raft messages handed to the network.
    raft_messages: u64,
}

impl World {
    /// Builds the run for `seed`.
    pub fn new(seed: u64, bug: Option<PlantedBug>) -> Self {
        let mut rng = SplitMix64::new(seed);
        let params = Params::draw(&mut rng);
        let all_groups: Vec<ShardId> = (1..=params.groups).map(ShardId).collect();
        let quiet = Quiet::draw(
            seed,
            &all_groups,
            params.chaos_ticks + params.heal_ticks,
            bug == Some(PlantedBug::QuiescentFollowerIgnoresLiveness),
        );
        Self::build(seed, bug, params, rng, quiet)
    }

    /// Builds a run from its parameters (`quiet`: `None` runs without quiescence).
    fn build(
        seed: u64,
        bug: Option<PlantedBug>,
        params: Params,
        mut rng: SplitMix64,
        quiet: Option<Quiet>,
    ) -> Self {
        let tuning = Tuning {
            bugs: PlantedBug::switches(bug),
            max_message_bytes: params.max_message_bytes,
            max_inflight_messages: params.max_inflight_messages,
            quiesce: quiet.is_some(),
        };
        let mut nodes = BTreeMap::new();
        for id in 1..=params.nodes {
            let phase = rng.range(0, TICK_UNITS);
            nodes.insert(
                NodeId(id),
                Node {
                    up: true,
                    phase,
                    restart_at: None,
                    replicas: BTreeMap::new(),
                },
            );
        }
        let groups: Vec<ShardId> = (1..=params.groups).map(ShardId).collect();
        let mut initial_members = Vec::new();
        for &group in &groups {
            // Pick `replication` distinct nodes for the group's first voters.
            let mut members: Vec<NodeId> = (1..=params.nodes).map(NodeId).collect();
            while members.len() as u64 > params.replication {
                let victim = rng.range(0, members.len() as u64) as usize;
                members.remove(victim);
            }
            let conf = ConfState::with_voters(members.iter().copied());
            initial_members.push((group, members.clone()));
            for member in members {
                let mut replica =
                    Replica::new(group, member, member, MemStorage::with_conf(conf.clone()));
                replica.conf_applied = conf.clone();
                if let Some(node) = nodes.get_mut(&member) {
                    node.replicas.insert(group, replica);
                }
            }
        }
        let clients = (0..params.clients)
            .map(|id| Client {
                id,
                in_flight: None,
                leader_hint: BTreeMap::new(),
                next_op_at: 0,
                next_op_id: 1,
            })
            .collect();
        let params_nodes = params.nodes;
        // Seeds with spare nodes alternate: odd ones let the placement driver decide membership.
        let placement = if params.nodes > params.replication && seed % 2 == 1 {
            let drain = if rng.range(0, 3) > 0 {
                let start = rng.range(20, 150);
                let end = start + rng.range(100, 200);
                Some((start, end, NodeId(rng.range(1, params.nodes + 1))))
            } else {
                None
            };
            Placement::new(params.nodes, &initial_members, params.replication, drain)
        } else {
            None
        };
        let mut world = Self {
            seed,
            params,
            tuning,
            rng,
            now: 0,
            clock: 0,
            nodes,
            groups,
            network: BTreeMap::new(),
            sequence: 0,
            cut: BTreeSet::new(),
            partition_until: None,
            clients,
            history: History::default(),
            next_read_context: 1,
            election_safety: ElectionSafety::default(),
            log_matching: LogMatching::default(),
            leader_completeness: LeaderCompleteness::default(),
            state_machine: StateMachineSafety::default(),
            commits: CommitMonotonicity::default(),
            trace: Trace::default(),
            elections: 0,
            snapshots: 0,
            conf_changes: BTreeSet::new(),
            healed: false,
            live_groups: BTreeSet::new(),
            pending_isolation: None,
            member_node: (1..=params_nodes).map(|n| (NodeId(n), NodeId(n))).collect(),
            next_member: 1000,
            verbose: std::env::var_os("RINGKV_SIM_TRACE").is_some(),
            placement,
            quiet,
            leader_liveness: LeaderLiveness::default(),
            ticks_run: 0,
            ticks_skipped: 0,
            raft_messages: 0,
        };
        let ids: Vec<NodeId> = world.nodes.keys().copied().collect();
        for id in ids {
            world.start_node(id);
        }
        world
    }

    /// Runs both phases and all checks.
    pub fn run(mut self) -> SeedReport {
        let violation = self.run_phases().err();
        // Reads still unanswered when the run ends had no effect.
        for client in &mut self.clients {
            if let Some(flight) = client.in_flight.take()
                && flight.is_read
                && let Some(operation) = self.history.operations.get_mut(flight.slot)
            {
                operation.discarded = true;
            }
        }
        let (ops_checked, inconclusive, linearizability) = self.check_linearizability();
        let violation = violation.or(linearizability.err());
        SeedReport {
            seed: self.seed,
            violation,
            ops_checked,
            elections: self.elections,
            snapshots: self.snapshots,
            conf_changes: self.conf_changes.len() as u64,
            inconclusive_keys: inconclusive,
            trace_hash: self.trace.hash(),
            trace_events: self.trace.events(),
            nodes: self.params.nodes,
            pd_orders: self.placement.as_ref().map_or(0, |p| p.orders),
            quiesce: self.quiet.is_some(),
            ticks_run: self.ticks_run,
            ticks_skipped: self.ticks_skipped,
            longest_leaderless: self.leader_liveness.longest,
            quiescent_reports: self.quiet.as_ref().map_or(0, |q| q.quiescent_reports),
            quiet_leaders_killed: self.quiet.as_ref().map_or(0, |q| q.quiet_leaders_killed),
        }
    }

    fn run_phases(&mut self) -> Result<(), Violation> {
        let chaos_end = self.params.chaos_ticks * TICK_UNITS;
        let end = chaos_end + self.params.heal_ticks * TICK_UNITS;
        while self.now < end {
            if self.now == chaos_end {
                self.heal();
            }
            if self.now.is_multiple_of(TICK_UNITS) {
                if self.healed {
                    self.probe_liveness();
                } else {
                    self.inject_faults();
                }
                self.observe_liveness()?;
            }
            self.deliver_packets()?;
            self.complete_disk_writes()?;
            self.tick_nodes()?;
            self.run_clients();
            self.process_readies()?;
            if self.now.is_multiple_of(50 * TICK_UNITS) {
                self.check_log_matching()?;
            }
            if self.healed && self.live_groups.len() == self.groups.len() {
                break;
            }
            self.now += 1;
        }
        self.check_log_matching()?;
        if self.live_groups.len() != self.groups.len() {
            let stuck: Vec<ShardId> = self
                .groups
                .iter()
                .filter(|g| !self.live_groups.contains(g))
                .copied()
                .collect();
            let mut states = String::new();
            for group in &stuck {
                for (id, node) in &self.nodes {
                    if let Some(replica) = node.replicas.get(group)
                        && let Some(raw) = replica.raw.as_ref()
                    {
                        let s = raw.status();
                        states.push_str(&format!(
                            "\n  disk queue {} (next due {:?}), has_ready {}",
                            replica.disk.len(),
                            replica.disk.front().map(|w| w.done_at),
                            raw.has_ready()
                        ));
                        states.push_str(&format!(
                            "\n  {group} {id}: {:?} term {} vote {} leader {} commit {} applied {} \
                             persisted {} log [{}, {}] conf {:?}@{}",
                            s.role,
                            s.term,
                            s.vote,
                            s.leader,
                            s.committed,
                            s.applied,
                            s.persisted,
                            s.first_index,
                            s.last_index,
                            s.conf,
                            s.conf_index
                        ));
                    }
                }
            }
            return Err(Violation {
                check: "liveness",
                detail: format!(
                    "groups {stuck:?} did not elect a leader and commit within {} ticks of \
                     healing{states}",
                    self.params.heal_ticks
                ),
            });
        }
        Ok(())
    }

    fn tick_clock(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.rng.range(0, 1000) < per_mille
    }
}

fn raft_error(detail: String) -> Violation {
    Violation {
        check: "raft error",
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry applied anywhere at or below the highest commit index a leader reported
    /// must be known to the leader-completeness checker, even where the leader compacted its log
    /// in the same Ready that committed the entry.
    #[test]
    fn leader_completeness_records_every_entry_leaders_commit() {
        let mut gaps = Vec::new();
        for seed in 0..30 {
            let mut world = World::new(seed, None);
            if let Err(violation) = world.run_phases() {
                panic!("seed {seed}: {violation}");
            }
            for &group in &world.groups {
                let applied = world.state_machine.committed(group).map(|(index, _)| index);
                let missing = world.leader_completeness.unrecorded(group, applied);
                if !missing.is_empty() {
                    gaps.push((seed, group, missing));
                }
            }
        }
        assert!(
            gaps.is_empty(),
            "committed entries never recorded: {gaps:?}"
        );
    }
}
