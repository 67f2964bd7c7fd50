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

mod idle;
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

    // ---------------------------------------------------------------- network

    fn send(&mut self, packet: Packet) {
        if matches!(packet, Packet::Raft(_)) {
            self.raft_messages += 1;
        }
        if !self.healed && self.chance(self.params.drop_per_mille) {
            return;
        }
        // Raft must cope with duplicates; client requests are not duplicated, because without
        // sessions (ringkvd has them, this model does not) a duplicated write would apply twice.
        let duplicable = matches!(packet, Packet::Raft(_));
        let copies = if duplicable && !self.healed && self.chance(self.params.duplicate_per_mille) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.rng.range(1, self.params.max_delay_units + 1);
            self.sequence += 1;
            self.network
                .insert((self.now + delay, self.sequence), packet.clone());
        }
    }

    fn deliver_packets(&mut self) -> Result<(), Violation> {
        while let Some(entry) = self.network.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let packet = entry.remove();
            match packet {
                Packet::Raft(message) => {
                    let (Some(&from), Some(&to)) = (
                        self.member_node.get(&message.from),
                        self.member_node.get(&message.to),
                    ) else {
                        continue;
                    };
                    if self.cut.contains(&(from, to)) {
                        continue;
                    }
                    self.trace.record(&[
                        self.now,
                        1,
                        message.group.get(),
                        message.from.get(),
                        message.to.get(),
                        message.term.get(),
                        message.body.kind().len() as u64,
                    ]);
                    if self.verbose {
                        eprintln!(
                            "{} deliver {} {}->{} {:?} t{}",
                            self.now,
                            message.group,
                            message.from,
                            message.to,
                            message.body,
                            message.term.get()
                        );
                    }
                    let Some(replica) = self.live_replica(to, message.group) else {
                        continue;
                    };
                    if replica.member != message.to {
                        // For an earlier incarnation of this node's replica.
                        continue;
                    }
                    let Some(raw) = replica.raw.as_mut() else {
                        continue;
                    };
                    raw.step(message).map_err(|e| raft_error(e.to_string()))?;
                    raw.check_invariants();
                }
                Packet::Request {
                    client,
                    node,
                    group,
                    op_id,
                    op,
                    mode,
                } => {
                    self.trace.record(&[self.now, 2, client, node.get(), op_id]);
                    self.handle_request(client, node, group, op_id, op, mode);
                }
                Packet::Response {
                    client,
                    op_id,
                    outcome,
                } => {
                    self.trace.record(&[self.now, 3, client, op_id]);
                    self.handle_response(client, op_id, outcome);
                }
            }
        }
        Ok(())
    }

    fn live_replica(&mut self, node: NodeId, group: ShardId) -> Option<&mut Replica> {
        let node = self.nodes.get_mut(&node)?;
        if !node.up {
            return None;
        }
        node.replicas.get_mut(&group)
    }

    // ---------------------------------------------------------------- nodes and disks

    fn start_node(&mut self, id: NodeId) {
        if self.verbose {
            eprintln!("{} start {id}", self.now);
        }
        let seed = self.seed;
        let tuning = self.tuning;
        let groups: Vec<(ShardId, NodeId)> = match self.nodes.get_mut(&id) {
            Some(node) => {
                node.up = true;
                node.restart_at = None;
                for replica in node.replicas.values_mut() {
                    // Storage built by this simulator always decodes; a failure is a sim bug.
                    if let Err(e) = replica.start(seed, &tuning) {
                        panic!("replica {id} failed to start: {e}");
                    }
                }
                node.replicas
                    .iter()
                    .map(|(group, r)| (*group, r.member))
                    .collect()
            }
            None => Vec::new(),
        };
        for (group, member) in groups {
            self.commits.restarted(group, member);
        }
    }

    fn crash_node(&mut self, id: NodeId, restart_at: u64) {
        if self.verbose {
            eprintln!("{} crash {id}", self.now);
        }
        self.trace.record(&[self.now, 4, id.get()]);
        if let Some(node) = self.nodes.get_mut(&id) {
            node.up = false;
            node.restart_at = Some(restart_at);
            for replica in node.replicas.values_mut() {
                replica.crash();
            }
        }
    }

    fn complete_disk_writes(&mut self) -> Result<(), Violation> {
        let now = self.now;
        let mut outgoing = Vec::new();
        let mut installed = 0;
        for node in self.nodes.values_mut().filter(|n| n.up) {
            for replica in node.replicas.values_mut() {
                while replica.disk.front().is_some_and(|w| w.done_at <= now) {
                    let Some(write) = replica.disk.pop_front() else {
                        break;
                    };
                    if let Some(snapshot) = write.snapshot {
                        // IMPORTANT: the snapshot replaces state machine and log together.
                        replica.kv = crate::kv::KvState::decode(&snapshot.data)
                            .ok_or_else(|| raft_error("undecodable snapshot".into()))?;
                        replica.applied = snapshot.meta.index;
                        replica.conf_applied = snapshot.meta.conf.clone();
                        replica.storage.apply_snapshot(snapshot);
                        installed += 1;
                    }
                    replica.storage.append(&write.entries);
                    if let Some(hard_state) = write.hard_state {
                        replica.storage.set_hard_state(hard_state);
                    }
                    if let Some(raw) = replica.raw.as_mut() {
                        raw.on_persisted(write.number)
                            .map_err(|e| raft_error(e.to_string()))?;
                    }
                    outgoing.extend(write.messages);
                }
            }
        }
        self.snapshots += installed;
        for message in outgoing {
            self.send(Packet::Raft(message));
        }
        Ok(())
    }

    fn tick_nodes(&mut self) -> Result<(), Violation> {
        let now = self.now;
        for node in self.nodes.values_mut().filter(|n| n.up) {
            if !(now + node.phase).is_multiple_of(TICK_UNITS) {
                continue;
            }
            for replica in node.replicas.values_mut() {
                if let Some(raw) = replica.raw.as_mut() {
                    // A quiescent replica's tick does nothing: ringkvd skips it, so do we.
                    if raw.is_quiescent() {
                        self.ticks_skipped += 1;
                        continue;
                    }
                    self.ticks_run += 1;
                    raw.tick().map_err(|e| raft_error(e.to_string()))?;
                }
            }
        }
        Ok(())
    }

    fn process_readies(&mut self) -> Result<(), Violation> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let groups: Vec<ShardId> = match self.nodes.get(&id) {
                Some(node) if node.up => node.replicas.keys().copied().collect(),
                _ => continue,
            };
            for group in groups {
                for _ in 0..16 {
                    let has_ready = self
                        .live_replica(id, group)
                        .and_then(|r| r.raw.as_ref())
                        .is_some_and(|raw| raw.has_ready());
                    if !has_ready {
                        break;
                    }
                    self.handle_ready(id, group)?;
                }
            }
        }
        Ok(())
    }

    fn handle_ready(&mut self, id: NodeId, group: ShardId) -> Result<(), Violation> {
        let now = self.now;
        let fsync = self.rng.range(1, self.params.max_fsync_units + 1);
        let snapshot_every = self.params.snapshot_every;
        let verbose = self.verbose;
        let Some(replica) = self.live_replica(id, group) else {
            return Ok(());
        };
        let Some(raw) = replica.raw.as_mut() else {
            return Ok(());
        };
        let ready = raw.ready().map_err(|e| raft_error(e.to_string()))?;
        let status = raw.status();
        if verbose {
            eprintln!(
                "{now} ready {group} {id}: {:?} t{} commit {} last {} persisted {} entries {:?} hs {:?} snap {:?} committed {:?}",
                status.role,
                status.term.get(),
                status.committed,
                status.last_index,
                status.persisted,
                ready
                    .entries
                    .iter()
                    .map(|e| (e.index.get(), e.term.get()))
                    .collect::<Vec<_>>(),
                ready.hard_state,
                ready.snapshot.as_ref().map(|s| (s.meta.index, s.meta.term)),
                ready
                    .committed_entries
                    .iter()
                    .map(|e| (e.index.get(), e.term.get()))
                    .collect::<Vec<_>>()
            );
        }
        let mut responses: Vec<(u64, u64, Outcome)> = Vec::new();
        let mut applied_entries = Vec::new();

        // Disk: after the previous write, in order. A Ready with nothing to write still goes
        // through the queue, because `on_persisted(n)` vouches for every Ready up to `n`.
        let has_write = ready.snapshot.is_some()
            || !ready.entries.is_empty()
            || ready.hard_state.is_some()
            || !ready.persisted_messages.is_empty();
        // Group commit: a write that arrives while an fsync is running joins the next batch,
        // which starts when the running one ends; one fsync covers the whole batch.
        let (started_at, done_at) = match replica.disk.back() {
            Some(last) if last.started_at > now => (last.started_at, last.done_at),
            Some(last) => {
                let start = last.done_at.max(now);
                (start, start + if has_write { fsync } else { 0 })
            }
            None => (now, now + if has_write { fsync } else { 0 }),
        };
        replica.disk.push_back(DiskWrite {
            started_at,
            done_at,
            number: ready.number,
            snapshot: ready.snapshot.clone(),
            entries: ready.entries.clone(),
            hard_state: ready.hard_state,
            messages: ready.persisted_messages,
        });

        // Apply committed entries (already durable locally).
        for entry in &ready.committed_entries {
            applied_entries.push((
                replica.applied,
                entry.index,
                entry.term,
                payload_hash(&entry.payload),
            ));
            match &entry.payload {
                EntryPayload::Noop => {}
                EntryPayload::Config(conf) => replica.conf_applied = conf.clone(),
                EntryPayload::Normal(data) => {
                    let command = Command::decode(data).ok_or_else(|| {
                        raft_error(format!("undecodable command at {}", entry.index))
                    })?;
                    let result = replica.kv.apply(&command.op);
                    if let Some((client, op_id, term)) = replica.pending_writes.remove(&entry.index)
                    {
                        let outcome = if (client, op_id, term)
                            == (command.client, command.op_id, entry.term)
                        {
                            Outcome::Ok(result)
                        } else {
                            Outcome::Failed
                        };
                        responses.push((client, op_id, outcome));
                    }
                }
            }
            replica.applied = entry.index;
        }
        if let Some(last) = ready.committed_entries.last()
            && let Some(raw) = replica.raw.as_mut()
        {
            raw.on_applied(last.index);
        }
        // Reads confirmed and now applied far enough are answered.
        for read in ready.read_states {
            replica.ready_reads.push((read.index, read.context));
        }
        let applied = replica.applied;
        let mut still_waiting = Vec::new();
        for (index, context) in std::mem::take(&mut replica.ready_reads) {
            if index <= applied {
                if let Some((client, op_id, key)) = replica.pending_reads.remove(&context) {
                    let value = replica.kv.values.get(&key).copied();
                    responses.push((client, op_id, Outcome::Ok(OpResult::Value(value))));
                }
            } else {
                still_waiting.push((index, context));
            }
        }
        replica.ready_reads = still_waiting;
        let first_index = replica
            .raw
            .as_ref()
            .map_or(LogIndex::ZERO, |r| r.status().first_index);

        // Checkers. Election safety first: a second leader of a term shows in this Ready's
        // soft state, together with its first entry (which would clash with the other
        // leader's). Then log matching, whenever a replica's log took new entries: a bad append
        // can commit (and so apply) a mismatched entry in the same Ready.
        if ready
            .soft_state
            .as_ref()
            .is_some_and(|soft| soft.role == Role::Leader)
        {
            self.election_safety
                .became_leader(group, status.term, status.id)?;
        }
        if !ready.entries.is_empty() {
            self.check_group_log_matching(group)?;
        }
        self.trace.record(&[
            now,
            5,
            group.get(),
            id.get(),
            ready.number,
            status.term.get(),
            status.committed.get(),
            ready.entries.len() as u64,
            ready.messages.len() as u64,
        ]);
        self.commits.observe(group, status.id, status.committed)?;
        for (previous, index, term, hash) in applied_entries {
            self.state_machine
                .applied(group, status.id, previous, index, term, hash)?;
            if hash == payload_hash(&EntryPayload::Noop) {
                continue;
            }
            if let Some(replica) = self.live_replica(id, group)
                && let Some(entry) = replica
                    .raw
                    .as_ref()
                    .and_then(|r| r.entries(index, index.next(), u64::MAX).ok())
                    .and_then(|e| e.into_iter().next())
                && let EntryPayload::Config(_) = entry.payload
            {
                self.conf_changes.insert((group, index));
            }
        }
        if let Some(soft) = ready.soft_state {
            match soft.role {
                Role::Candidate => self.elections += 1,
                Role::Leader => {
                    if !self.healed
                        && self.pending_isolation.is_none()
                        && self.chance(self.params.isolate_new_leader_per_mille)
                    {
                        let start = now + self.rng.range(0, 4) * TICK_UNITS;
                        let ticks = self.rng.range(5, 40);
                        self.pending_isolation = Some((start, id, ticks));
                    }
                    if let Some(replica) = self.nodes.get(&id).and_then(|n| n.replicas.get(&group))
                    {
                        self.leader_completeness.became_leader(
                            group,
                            id,
                            status.term,
                            first_index,
                            |i| replica.term_at(i),
                        )?;
                    }
                }
                _ => {}
            }
        }
        if status.role == Role::Leader
            && let Some(replica) = self.nodes.get(&id).and_then(|n| n.replicas.get(&group))
        {
            self.commits.observe_leader(
                group,
                status.id,
                status.term,
                status.committed,
                replica.term_at(status.committed),
            )?;
            self.leader_completeness
                .leader_committed(group, status.term, status.committed, |i| replica.term_at(i));
        }
        // Snapshot and compact every few entries, after the checkers read the log: compacting
        // first would drop entries this Ready committed before leader completeness records
        // them.
        if let Some(replica) = self.live_replica(id, group)
            && applied.distance_from(replica.storage.current_snapshot().meta.index)
                >= snapshot_every
        {
            replica
                .storage
                .compact(applied, replica.conf_applied.clone(), replica.kv.encode());
        }
        for message in ready.messages {
            self.send(Packet::Raft(message));
        }
        for (client, op_id, outcome) in responses {
            if client == PROBE_CLIENT {
                if matches!(outcome, Outcome::Ok(_)) {
                    self.live_groups.insert(ShardId(op_id));
                }
                continue;
            }
            self.send(Packet::Response {
                client,
                op_id,
                outcome,
            });
        }
        Ok(())
    }

    // ---------------------------------------------------------------- faults

    fn inject_faults(&mut self) {
        let now = self.now;
        // Restarts due.
        let due: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.restart_at.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.trace.record(&[now, 6, id.get()]);
            self.start_node(id);
        }
        // Crashes: keep at least a majority of nodes up so the run stays interesting.
        let down = self.nodes.values().filter(|n| !n.up).count() as u64;
        if down < (self.params.nodes - 1) / 2 && self.chance(self.params.crash_per_mille) {
            let victim = NodeId(self.rng.range(1, self.params.nodes + 1));
            if self.nodes.get(&victim).is_some_and(|n| n.up) {
                let restart_at = now + self.rng.range(5, 60) * TICK_UNITS;
                self.crash_node(victim, restart_at);
            }
        }
        // Partitions.
        if self.partition_until.is_some_and(|t| t <= now) {
            self.cut.clear();
            self.partition_until = None;
            self.trace.record(&[now, 7]);
        }
        if self.partition_until.is_none() && self.chance(self.params.partition_per_mille) {
            self.start_partition();
        }
        if let Some((start, node, ticks)) = self.pending_isolation
            && start <= now
        {
            self.pending_isolation = None;
            if self.partition_until.is_none() {
                for &other in self.nodes.keys() {
                    if other != node {
                        self.cut.insert((node, other));
                        self.cut.insert((other, node));
                    }
                }
                self.partition_until = Some(now + ticks * TICK_UNITS);
                self.trace.record(&[now, 12, node.get()]);
                if self.verbose {
                    eprintln!("{now} isolate new leader {node}");
                }
            }
        }
        self.maybe_kill_quiet_leader();
        if self.placement.is_some() {
            self.drive_placement();
        } else if self.chance(self.params.conf_change_per_mille) {
            self.change_membership();
        }
        if self.chance(self.params.transfer_per_mille) {
            self.transfer_leadership();
        }
    }

    fn start_partition(&mut self) {
        let nodes: Vec<NodeId> = self.nodes.keys().copied().collect();
        let side: Vec<NodeId> = nodes
            .iter()
            .copied()
            .filter(|_| self.rng.range(0, 2) == 0)
            .collect();
        let one_way = self.rng.range(0, 3) == 0;
        for &a in &side {
            for &b in &nodes {
                if side.contains(&b) {
                    continue;
                }
                self.cut.insert((a, b));
                if !one_way {
                    self.cut.insert((b, a));
                }
            }
        }
        let until = self.now + self.rng.range(10, 80) * TICK_UNITS;
        if self.verbose {
            eprintln!("{} partition {:?} one_way {one_way}", self.now, side);
        }
        self.partition_until = Some(until);
        self.trace
            .record(&[self.now, 8, side.len() as u64, u64::from(one_way)]);
    }

    fn leader_of(&self, group: ShardId) -> Option<NodeId> {
        self.nodes.iter().find_map(|(id, node)| {
            let raw = node.replicas.get(&group)?.raw.as_ref()?;
            (node.up && raw.is_leader()).then_some(*id)
        })
    }

    fn change_membership(&mut self) {
        let group = self.groups[self.rng.range(0, self.groups.len() as u64) as usize];
        let Some(leader) = self.leader_of(group) else {
            return;
        };
        let Some(status) = self
            .nodes
            .get(&leader)
            .and_then(|n| n.replicas.get(&group))
            .and_then(|r| r.raw.as_ref())
            .map(|r| r.status())
        else {
            return;
        };
        if status.conf_index > status.committed {
            return;
        }
        let conf = status.conf.clone();
        let change = if let Some(&learner) = conf.learners.first() {
            ConfChange::PromoteLearner(learner)
        } else if conf.voters.len() >= 4 && self.rng.range(0, 2) == 0 {
            let victim = conf.voters[self.rng.range(0, conf.voters.len() as u64) as usize];
            ConfChange::Remove(victim)
        } else if conf.voters.len() < 5 {
            let hosting: BTreeSet<NodeId> = conf
                .members()
                .filter_map(|m| self.member_node.get(&m).copied())
                .collect();
            let candidates: Vec<NodeId> = self
                .nodes
                .keys()
                .copied()
                .filter(|id| !hosting.contains(id))
                .collect();
            if candidates.is_empty() {
                return;
            }
            let target = candidates[self.rng.range(0, candidates.len() as u64) as usize];
            // A fresh, empty replica under a new member id (see `Replica::member`); whatever
            // replica the node kept from an earlier membership is obsolete.
            let member = NodeId(self.next_member);
            self.next_member += 1;
            self.member_node.insert(member, target);
            let seed = self.seed;
            let tuning = self.tuning;
            if let Some(node) = self.nodes.get_mut(&target) {
                let mut replica = Replica::new(group, target, member, MemStorage::new());
                if node.up
                    && let Err(e) = replica.start(seed, &tuning)
                {
                    panic!("new replica failed to start: {e}");
                }
                node.replicas.insert(group, replica);
            }
            ConfChange::AddLearner(member)
        } else {
            return;
        };
        self.trace.record(&[self.now, 9, group.get(), leader.get()]);
        if let Some(raw) = self
            .live_replica(leader, group)
            .and_then(|r| r.raw.as_mut())
        {
            let _ = raw.propose_conf_change(change);
        }
    }

    fn transfer_leadership(&mut self) {
        let group = self.groups[self.rng.range(0, self.groups.len() as u64) as usize];
        let Some(leader) = self.leader_of(group) else {
            return;
        };
        let voters = self
            .live_replica(leader, group)
            .and_then(|r| r.raw.as_ref())
            .map(|r| r.conf_state().voters.clone())
            .unwrap_or_default();
        if voters.is_empty() {
            return;
        }
        let target = voters[self.rng.range(0, voters.len() as u64) as usize];
        self.trace
            .record(&[self.now, 10, group.get(), target.get()]);
        if let Some(raw) = self
            .live_replica(leader, group)
            .and_then(|r| r.raw.as_mut())
        {
            let _ = raw.transfer_leader(target);
        }
    }

    fn heal(&mut self) {
        self.healed = true;
        self.cut.clear();
        self.partition_until = None;
        let down: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.up)
            .map(|(id, _)| *id)
            .collect();
        for id in down {
            self.start_node(id);
        }
        self.trace.record(&[self.now, 11]);
    }

    /// Heal phase: ask each group's current leader to commit a marker; a group is live once
    /// its marker is applied by the leader that proposed it.
    fn probe_liveness(&mut self) {
        for group in self.groups.clone() {
            if self.live_groups.contains(&group) {
                continue;
            }
            let Some(leader) = self.leader_of(group) else {
                continue;
            };
            let Some(replica) = self.live_replica(leader, group) else {
                continue;
            };
            let Some(raw) = replica.raw.as_mut() else {
                continue;
            };
            if replica
                .pending_writes
                .values()
                .any(|(client, _, _)| *client == PROBE_CLIENT)
            {
                continue;
            }
            let command = Command {
                client: PROBE_CLIENT,
                op_id: group.get(),
                op: Op::Put(PROBE_KEY, 0),
            };
            let term = raw.term();
            if let Ok(index) = raw.propose(command.encode()) {
                replica
                    .pending_writes
                    .insert(index, (PROBE_CLIENT, group.get(), term));
            }
        }
    }

    // ---------------------------------------------------------------- clients

    fn run_clients(&mut self) {
        let now = self.now;
        for position in 0..self.clients.len() {
            // Timeouts.
            let timed_out = self.clients[position]
                .in_flight
                .as_ref()
                .is_some_and(|f| f.deadline <= now);
            if timed_out && let Some(flight) = self.clients[position].in_flight.take() {
                // Try elsewhere next time: the node may be down or cut off.
                if let Some(group) = self.history.operations.get(flight.slot).map(|o| o.group) {
                    self.clients[position].leader_hint.remove(&group);
                }
                if flight.is_read
                    && let Some(operation) = self.history.operations.get_mut(flight.slot)
                {
                    // A read with no answer had no effect.
                    operation.discarded = true;
                }
                self.clients[position].next_op_at = now + 1;
            }
            if self.clients[position].in_flight.is_some() || self.clients[position].next_op_at > now
            {
                continue;
            }
            self.issue_operation(position);
        }
    }

    fn issue_operation(&mut self, position: usize) {
        let group = self.groups[self.rng.range(0, self.groups.len() as u64) as usize];
        if self
            .quiet
            .as_ref()
            .is_some_and(|q| q.is_idle(group, self.now / TICK_UNITS))
        {
            // An idle window of this group: let it go quiet.
            self.clients[position].next_op_at = self.now + TICK_UNITS;
            return;
        }
        let key = self.rng.range(0, u64::from(self.params.keys)) as Key;
        let value = self.tick_clock();
        let op = match self.rng.range(0, 10) {
            0..=3 => Op::Get(key),
            4..=6 => Op::Put(key, value),
            7 => Op::Delete(key),
            _ => {
                let expected = self
                    .history
                    .operations
                    .iter()
                    .rev()
                    .find_map(|o| match o.op {
                        Op::Put(k, v) if k == key && o.group == group => Some(v),
                        _ => None,
                    });
                Op::Cas {
                    key,
                    expected,
                    new: value,
                }
            }
        };
        let mode = if self.chance(self.params.lease_reads_per_mille) {
            ReadMode::Lease
        } else {
            ReadMode::Safe
        };
        let hosts: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.replicas.contains_key(&group))
            .map(|(id, _)| *id)
            .collect();
        let hinted = self.clients[position].leader_hint.get(&group).copied();
        let node = match hinted {
            Some(node) if node.is_some() && self.rng.range(0, 10) > 0 => node,
            _ => hosts[self.rng.range(0, hosts.len() as u64) as usize],
        };
        let at = self.tick_clock();
        let client = &mut self.clients[position];
        let op_id = client.next_op_id;
        client.next_op_id += 1;
        let id = client.id;
        let slot = self.history.invoke(id, group, op, at);
        self.clients[position].in_flight = Some(InFlight {
            op_id,
            slot,
            is_read: matches!(op, Op::Get(_)),
            deadline: self.now + CLIENT_TIMEOUT_TICKS * TICK_UNITS,
        });
        self.send(Packet::Request {
            client: id,
            node,
            group,
            op_id,
            op,
            mode,
        });
    }

    fn handle_request(
        &mut self,
        client: u64,
        node: NodeId,
        group: ShardId,
        op_id: u64,
        op: Op,
        mode: ReadMode,
    ) {
        let context = self.next_read_context;
        let outcome = match self.live_replica(node, group) {
            None => return,
            Some(replica) => match replica.raw.as_mut() {
                None => return,
                Some(raw) if !raw.is_leader() => {
                    let leader = raw.status().leader;
                    Outcome::NotLeader(
                        self.member_node
                            .get(&leader)
                            .copied()
                            .unwrap_or(NodeId::NONE),
                    )
                }
                Some(raw) => match op {
                    Op::Get(key) => match raw.read_index(context, mode) {
                        Ok(()) => {
                            replica.pending_reads.insert(context, (client, op_id, key));
                            self.next_read_context += 1;
                            return;
                        }
                        Err(_) => Outcome::Failed,
                    },
                    _ => {
                        let term = raw.term();
                        match raw.propose(Command { client, op_id, op }.encode()) {
                            Ok(index) => {
                                replica.pending_writes.insert(index, (client, op_id, term));
                                return;
                            }
                            Err(_) => Outcome::Failed,
                        }
                    }
                },
            },
        };
        self.send(Packet::Response {
            client,
            op_id,
            outcome,
        });
    }

    fn handle_response(&mut self, client: u64, op_id: u64, outcome: Outcome) {
        let Some(position) = self.clients.iter().position(|c| c.id == client) else {
            return;
        };
        let matches = self.clients[position]
            .in_flight
            .as_ref()
            .is_some_and(|f| f.op_id == op_id);
        if !matches {
            return;
        }
        let Some(flight) = self.clients[position].in_flight.take() else {
            return;
        };
        let at = self.tick_clock();
        let group = self.history.operations.get(flight.slot).map(|o| o.group);
        if let Some(operation) = self.history.operations.get_mut(flight.slot) {
            match outcome {
                Outcome::Ok(result) => operation.completed = Some((at, result)),
                // Refused or lost for sure: it never took effect.
                Outcome::NotLeader(_) | Outcome::Failed => operation.discarded = true,
            }
        }
        if let (Outcome::NotLeader(hint), Some(group)) = (outcome, group) {
            self.clients[position].leader_hint.insert(group, hint);
        }
        self.clients[position].next_op_at = self.now + self.rng.range(0, 3 * TICK_UNITS);
    }

    // ---------------------------------------------------------------- checks

    fn check_log_matching(&mut self) -> Result<(), Violation> {
        for group in self.groups.clone() {
            self.check_group_log_matching(group)?;
        }
        Ok(())
    }

    fn check_group_log_matching(&mut self, group: ShardId) -> Result<(), Violation> {
        let mut logs: Vec<(NodeId, LogView)> = Vec::new();
        for (id, node) in &self.nodes {
            let Some(raw) = node.replicas.get(&group).and_then(|r| r.raw.as_ref()) else {
                continue;
            };
            let status = raw.status();
            let mut entries: Vec<(LogIndex, Term, u64)> = Vec::new();
            // The compaction point counts as the entry before the first one (its hash is not
            // known; only its term is compared).
            if let Some(replica) = node.replicas.get(&group)
                && let Some(term) = replica.term_at(status.first_index.prev())
            {
                entries.push((status.first_index.prev(), term, SNAPSHOT_POINT));
            }
            let stored = raw
                .entries(status.first_index, status.last_index.next(), u64::MAX)
                .map_err(|e| raft_error(e.to_string()))?;
            entries.extend(
                stored
                    .iter()
                    .map(|e| (e.index, e.term, payload_hash(&e.payload))),
            );
            logs.push((*id, entries));
        }
        log_matching::check(group, &logs)?;
        for (node, log) in &logs {
            self.log_matching.observe(group, *node, log)?;
        }
        Ok(())
    }

    fn keyed_operations(&self) -> BTreeMap<(ShardId, Key), Vec<&Operation>> {
        let mut by_key: BTreeMap<(ShardId, Key), Vec<&Operation>> = BTreeMap::new();
        for operation in self.history.operations.iter().filter(|o| !o.discarded) {
            by_key
                .entry((operation.group, operation.op.key()))
                .or_default()
                .push(operation);
        }
        by_key
    }

    /// Checks every key's history. Returns the operations of keys with a verdict, the keys
    /// without one (the search budget ran out even after raising it) and the outcome: the
    /// first key that admits no linearization, else the first undecided key (an undecided key
    /// proves nothing, so it fails the run too, under its own name).
    fn check_linearizability(&self) -> (u64, u64, Result<(), Violation>) {
        let mut decided_ops = 0u64;
        let mut undecided: Vec<(ShardId, Key, usize)> = Vec::new();
        let mut outcome = Ok(());
        for ((group, key), operations) in self.keyed_operations() {
            match check_key(&operations) {
                KeyVerdict::Linearizable => decided_ops += operations.len() as u64,
                KeyVerdict::Violation => {
                    decided_ops += operations.len() as u64;
                    if self.verbose {
                        for o in &operations {
                            eprintln!("{o:?}");
                        }
                    }
                    if outcome.is_ok() {
                        outcome = Err(Violation {
                            check: "linearizability",
                            detail: format!(
                                "group {group} key {key}: {} operations admit no linearization",
                                operations.len()
                            ),
                        });
                    }
                }
                KeyVerdict::Inconclusive => undecided.push((group, key, operations.len())),
            }
        }
        if outcome.is_ok()
            && let Some(&(group, key, count)) = undecided.first()
        {
            outcome = Err(Violation {
                check: "linearizability inconclusive",
                detail: format!(
                    "group {group} key {key}: the search found no verdict for {count} operations \
                     within its largest budget ({} keys undecided)",
                    undecided.len()
                ),
            });
        }
        (decided_ops, undecided.len() as u64, outcome)
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
