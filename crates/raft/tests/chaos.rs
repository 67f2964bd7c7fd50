//! Seeded random schedules over the scenario harness, checked against the Raft safety
//! properties (Raft §5.4, Figure 3): election safety (one leader per term), state machine
//! safety (no two replicas apply different data at an index), and linearizable reads (thesis
//! §6.4: a read returns an index at least as high as anything committed before it started).
//! Each schedule mixes ticks, out-of-order delivery, loss, duplication, partitions, crashes and
//! restarts, compaction, proposals, reads and leader transfers; then heals everything and
//! requires the group to converge (liveness). A failure names its seed.

mod common;

use bytes::Bytes;
use common::Network;
use ringkv_raft::{ConfChange, Config, ReadMode, Ready, Role, SplitMix64};
use ringkv_types::raft::EntryPayload;
use ringkv_types::{LogIndex, NodeId, Term};
use std::collections::{BTreeMap, VecDeque};

/// Names of the properties `Checker` checks, which start its reports.
const ELECTION_SAFETY: &str = "election safety";
const STATE_MACHINE_SAFETY: &str = "state machine safety";
const LINEARIZABLE_READS: &str = "linearizable reads";
const LIVENESS: &str = "liveness";

/// Times replicas went quiescent (as counted by the replicas alive at the end of a schedule),
/// over all schedules run in this process: only the quiescence test turns it on.
static QUIESCED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct Checker {
    leaders: BTreeMap<Term, NodeId>,
    applied: BTreeMap<LogIndex, Bytes>,
    checked_applied: BTreeMap<NodeId, usize>,
    /// Per (node, context): the highest index committed anywhere when the read started.
    reads: BTreeMap<(NodeId, u64), LogIndex>,
    checked_reads: BTreeMap<NodeId, usize>,
    served_reads: usize,
}

impl Checker {
    fn new() -> Self {
        Self {
            leaders: BTreeMap::new(),
            applied: BTreeMap::new(),
            checked_applied: BTreeMap::new(),
            reads: BTreeMap::new(),
            checked_reads: BTreeMap::new(),
            served_reads: 0,
        }
    }

    /// The first broken property, as `<checker>: <detail>`.
    fn check(&mut self, network: &Network, seed: u64, step: usize) -> Result<(), String> {
        for (&id, peer) in &network.peers {
            let status = peer.node.status();
            if status.role == Role::Leader {
                let leader = *self.leaders.entry(status.term).or_insert(id);
                if leader != id {
                    return Err(format!(
                        "{ELECTION_SAFETY}: seed {seed} step {step}: leaders {leader} and {id} in \
                         term {}",
                        status.term
                    ));
                }
            }
            let checked = self.checked_applied.entry(id).or_insert(0);
            if peer.applied.len() < *checked {
                *checked = 0; // Restarted or restored from a snapshot: check it all again.
            }
            for (index, data) in &peer.applied[*checked..] {
                let expected = self.applied.entry(*index).or_insert_with(|| data.clone());
                if expected != data {
                    return Err(format!(
                        "{STATE_MACHINE_SAFETY}: seed {seed} step {step}: node {id} applied \
                         different data at {index}"
                    ));
                }
            }
            *checked = peer.applied.len();
            let checked = self.checked_reads.entry(id).or_insert(0);
            if peer.read_states.len() < *checked {
                *checked = 0;
            }
            for read in &peer.read_states[*checked..] {
                let started = self.reads[&(id, read.context)];
                if read.index < started {
                    return Err(format!(
                        "{LINEARIZABLE_READS}: seed {seed} step {step}: node {id} read {} at \
                         index {} but {} was committed before it started",
                        read.context, read.index, started
                    ));
                }
                self.served_reads += 1;
            }
            *checked = peer.read_states.len();
        }
        Ok(())
    }
}

/// Pipelined driver: persists `id`'s oldest unpersisted Ready, reports it, sends its
/// `persisted_messages`, then applies its committed entries and serves its reads.
fn persist_oldest(
    network: &mut Network,
    pending: &mut BTreeMap<NodeId, VecDeque<Ready>>,
    id: NodeId,
) -> Result<(), String> {
    let Some(ready) = pending.get_mut(&id).and_then(VecDeque::pop_front) else {
        return Ok(());
    };
    let peer = network.peers.get_mut(&id).expect("peer");
    if let Some(snapshot) = &ready.snapshot {
        peer.storage.apply_snapshot(snapshot.clone());
        peer.applied = common::decode_applied(&snapshot.data);
        peer.applied_index = snapshot.meta.index;
    }
    peer.storage.append(&ready.entries);
    if let Some(hard_state) = ready.hard_state {
        peer.storage.set_hard_state(hard_state);
    }
    peer.node.on_persisted(ready.number).expect("on_persisted");
    network.queue.extend(ready.persisted_messages);
    for entry in &ready.committed_entries {
        if entry.index != peer.applied_index.next() {
            return Err(format!(
                "{STATE_MACHINE_SAFETY}: node {id} applies {} after {}",
                entry.index, peer.applied_index
            ));
        }
        if let EntryPayload::Normal(data) = &entry.payload {
            peer.applied.push((entry.index, data.clone()));
        }
        peer.applied_index = entry.index;
    }
    if let Some(last) = ready.committed_entries.last() {
        peer.node.on_applied(last.index);
    }
    peer.read_states.extend(ready.read_states);
    peer.node.check_invariants();
    Ok(())
}

fn defaults(_: &mut Config) {}

fn max_committed(network: &Network) -> LogIndex {
    network
        .peers
        .values()
        .map(|p| p.node.status().committed)
        .max()
        .unwrap_or(LogIndex::ZERO)
}

fn pick(rng: &mut SplitMix64, n: u64) -> u64 {
    rng.range(0, n)
}

/// Runs one schedule. With `spares`, nodes `voters + 1 ..= voters + spares` start empty and
/// outside the group, and the schedule also adds learners, promotes them and removes members
/// (never re-adding a removed node).
///
/// With `pipelined`, each replica's driver takes Readies without persisting them (sending only
/// their `messages`) and persists them later, in order, one at a time; a crash loses the
/// Readies not yet persisted (unsynced writes), though their early messages may be out.
fn run(
    seed: u64,
    voters: u64,
    spares: u64,
    steps: usize,
    pipelined: bool,
    configure: fn(&mut Config),
) -> Result<(usize, usize), String> {
    let mut rng = SplitMix64::new(seed);
    let mut pending: BTreeMap<NodeId, VecDeque<Ready>> = BTreeMap::new();
    let mut network = Network::with_config(voters, configure);
    for id in voters + 1..=voters + spares {
        network.add_peer(NodeId(id), ringkv_raft::MemStorage::new());
    }
    let mut removed: Vec<NodeId> = Vec::new();
    let nodes = voters + spares;
    let mut checker = Checker::new();
    let mut next_value = 0u64;
    let mut next_context = 0u64;
    let mut committed_proposals = 0;
    // With quiescence, every other stretch of 1,500 steps sends no request, so the group can go
    // quiet while the faults go on.
    let quiescing = {
        let mut config = common::config(1);
        configure(&mut config);
        config.quiesce
    };
    for step in 0..steps {
        let idle = quiescing && (step / 1500) % 2 == 1;
        let id = pick(&mut rng, nodes) + 1;
        let live = !network.down.contains(&NodeId(id));
        match pick(&mut rng, 100) {
            0..=24 if live => network.node(id).tick().expect("tick"),
            25..=54 if !network.queue.is_empty() => {
                let position = pick(&mut rng, network.queue.len() as u64) as usize;
                let message = network.queue.remove(position).expect("in range");
                if pick(&mut rng, 20) == 0 {
                    network.queue.push_back(message.clone()); // duplicate
                }
                network.queue.push_front(message);
                network.deliver_one();
            }
            55..=69 if live && !pipelined => {
                network.process_ready(NodeId(id));
            }
            55..=61 if live && network.node(id).has_ready() => {
                let ready = network.node(id).ready().expect("ready");
                network.queue.extend(ready.messages.iter().cloned());
                pending.entry(NodeId(id)).or_default().push_back(ready);
            }
            62..=69 if live => persist_oldest(&mut network, &mut pending, NodeId(id))?,
            70..=77 if live && !idle && network.node(id).is_leader() => {
                next_value += 1;
                let data = Bytes::from(format!("v{next_value}"));
                let _ = network.node(id).propose(data);
            }
            78..=80 if !network.queue.is_empty() => {
                let position = pick(&mut rng, network.queue.len() as u64) as usize;
                network.queue.remove(position);
            }
            81..=82 => {
                let other = pick(&mut rng, nodes) + 1;
                if other != id {
                    network.cut.insert((NodeId(id), NodeId(other)));
                    network.cut.insert((NodeId(other), NodeId(id)));
                }
            }
            83..=84 => network.heal(),
            85 if live && network.down.len() + 1 < nodes.div_ceil(2) as usize => {
                network.down.insert(NodeId(id));
                pending.remove(&NodeId(id));
            }
            86..=87 if !live => network.restart(id),
            // Compaction needs the configuration as of the applied index; without membership
            // changes that is the one in force unless a snapshot is still being installed.
            88 if live
                && network.peer(id).node.status().conf_index <= network.peer(id).applied_index =>
            {
                network.compact(id);
            }
            89..=93 if live && !idle && network.node(id).is_leader() => {
                next_context += 1;
                let started = max_committed(&network);
                let mode = if pick(&mut rng, 2) == 0 {
                    ReadMode::Safe
                } else {
                    ReadMode::Lease
                };
                if network.node(id).read_index(next_context, mode).is_ok() {
                    checker.reads.insert((NodeId(id), next_context), started);
                }
            }
            94 if live && !idle && network.node(id).is_leader() => {
                let to = pick(&mut rng, nodes) + 1;
                let _ = network.node(id).transfer_leader(NodeId(to));
            }
            95..=97 if spares > 0 && live && !idle && network.node(id).is_leader() => {
                let conf = network.node(id).conf_state().clone();
                let target = NodeId(pick(&mut rng, nodes) + 1);
                let change = if conf.is_learner(target) {
                    ConfChange::PromoteLearner(target)
                } else if conf.is_voter(target) {
                    if conf.voters.len() <= 3 {
                        continue;
                    }
                    ConfChange::Remove(target)
                } else if removed.contains(&target) {
                    continue;
                } else {
                    ConfChange::AddLearner(target)
                };
                if network.node(id).propose_conf_change(change).is_ok()
                    && let ConfChange::Remove(gone) = change
                {
                    removed.push(gone);
                }
            }
            _ => {}
        }
        checker.check(&network, seed, step)?;
    }

    // Liveness: persist what is in flight, heal everything and require convergence.
    for id in 1..=nodes {
        while pending.get(&NodeId(id)).is_some_and(|p| !p.is_empty()) {
            persist_oldest(&mut network, &mut pending, NodeId(id))?;
        }
    }
    let quiesced: u64 = network
        .peers
        .values()
        .map(|p| p.node.status().stats.quiesced)
        .sum();
    QUIESCED.fetch_add(quiesced, std::sync::atomic::Ordering::Relaxed);
    network.heal();
    for id in 1..=nodes {
        if network.down.contains(&NodeId(id)) {
            network.restart(id);
        }
        // The driver's liveness input: every node is up again (wakes a quiescent replica,
        // say a leader cut off while quiet, which learns it was replaced; a no-op otherwise).
        network.node(id).wake();
    }
    network.stabilize();
    network.tick_all(60);
    checker.check(&network, seed, steps)?;
    let leaders = network.leaders();
    if leaders.len() != 1 {
        return Err(format!(
            "{LIVENESS}: seed {seed}: no single leader after healing: {leaders:?}"
        ));
    }
    let leader = leaders[0].get();
    network.propose(leader, b"final");
    network.tick_all(5);
    checker.check(&network, seed, steps + 1)?;
    let applied = network.peer(leader).applied_index;
    let members: Vec<u64> = network
        .peer(leader)
        .node
        .conf_state()
        .members()
        .map(|m| m.get())
        .collect();
    for id in members {
        if network.peer(id).applied_index != applied {
            return Err(format!("{LIVENESS}: seed {seed}: node {id} lags"));
        }
        if network.applied_data(id) != network.applied_data(leader) {
            return Err(format!(
                "{STATE_MACHINE_SAFETY}: seed {seed}: node {id} applied other data than leader \
                 {leader}"
            ));
        }
    }
    committed_proposals += network.applied_data(leader).len();
    Ok((committed_proposals, checker.served_reads))
}

/// Runs one schedule that must pass.
fn run_ok(
    seed: u64,
    voters: u64,
    spares: u64,
    steps: usize,
    pipelined: bool,
    configure: fn(&mut Config),
) -> (usize, usize) {
    run(seed, voters, spares, steps, pipelined, configure).unwrap_or_else(|e| panic!("{e}"))
}

/// Many seeds of a 3-voter group.
#[test]
fn random_schedules_three_voters_stay_safe_and_converge() {
    let mut totals = (0, 0);
    for seed in 0..100 {
        let (proposals, reads) = run_ok(seed, 3, 0, 20_000, false, defaults);
        totals.0 += proposals;
        totals.1 += reads;
    }
    // The schedules must exercise something: data committed and reads served.
    assert!(
        totals.0 > 40,
        "only {} entries committed over all seeds",
        totals.0
    );
    assert!(
        totals.1 > 40,
        "only {} reads served over all seeds",
        totals.1
    );
}

/// Quiescence on: idle stretches of these schedules let the group go quiet and the chaos
/// strikes quiet groups (messages wake them; safety and reads are checked as always).
#[test]
fn random_schedules_with_quiescence_stay_safe_and_converge() {
    fn quiescing(config: &mut Config) {
        config.quiesce = true;
    }
    let mut totals = (0, 0);
    for seed in 0..60 {
        let (proposals, reads) = run_ok(seed, 3, 0, 20_000, false, quiescing);
        totals.0 += proposals;
        totals.1 += reads;
    }
    assert!(totals.0 > 20 && totals.1 > 20, "{totals:?}");
    let quiesced = QUIESCED.load(std::sync::atomic::Ordering::Relaxed);
    assert!(quiesced > 0, "no replica ever went quiescent");
}

/// ringkvd's default timing (election timeout 5 ticks, heartbeat 1, lease margin 1): half the
/// core's default in ticks, so the same schedules delay messages twice as long relative to the
/// timeout. Safety (logs, reads, leases) is checked inside `run` exactly as for the defaults;
/// progress is lower under this chaos, but must not vanish.
#[test]
fn random_schedules_at_the_node_timing_stay_safe_and_converge() {
    fn node_timing(config: &mut Config) {
        config.election_timeout_ticks = 5;
        config.heartbeat_ticks = 1;
        config.lease_margin_ticks = 1;
    }
    let mut totals = (0, 0);
    for seed in 5000..5100 {
        let (proposals, reads) = run_ok(seed, 3, 0, 20_000, false, node_timing);
        totals.0 += proposals;
        totals.1 += reads;
    }
    for seed in 5100..5140 {
        let (proposals, reads) = run_ok(seed, 3, 3, 20_000, true, node_timing);
        totals.0 += proposals;
        totals.1 += reads;
    }
    assert!(
        totals.0 > 40,
        "only {} entries committed over all seeds",
        totals.0
    );
    assert!(
        totals.1 > 10,
        "only {} reads served over all seeds",
        totals.1
    );
}

/// Many seeds of a 5-voter group.
#[test]
fn random_schedules_five_voters_stay_safe_and_converge() {
    let mut totals = (0, 0);
    for seed in 1000..1050 {
        let (proposals, reads) = run_ok(seed, 5, 0, 20_000, false, defaults);
        totals.0 += proposals;
        totals.1 += reads;
    }
    assert!(
        totals.0 > 20,
        "only {} entries committed over all seeds",
        totals.0
    );
    assert!(
        totals.1 > 20,
        "only {} reads served over all seeds",
        totals.1
    );
}

/// Many seeds of a group that starts with 3 voters and 3 spare nodes and changes membership
/// one server at a time (thesis §4.1-4.2) while everything else goes on.
#[test]
fn random_schedules_with_membership_changes_stay_safe_and_converge() {
    let mut totals = (0, 0);
    for seed in 2000..2060 {
        let (proposals, reads) = run_ok(seed, 3, 3, 20_000, false, defaults);
        totals.0 += proposals;
        totals.1 += reads;
    }
    assert!(
        totals.0 > 60,
        "only {} entries committed over all seeds",
        totals.0
    );
    assert!(
        totals.1 > 60,
        "only {} reads served over all seeds",
        totals.1
    );
}

/// Many seeds of a 3-voter group whose drivers pipeline Readies (take Ready N+1 before
/// persisting N) and lose unpersisted Readies on a crash (thesis §10.2.1; the `Ready`
/// contract).
#[test]
fn random_schedules_with_pipelined_drivers_stay_safe_and_converge() {
    let mut totals = (0, 0);
    for seed in 3000..3100 {
        let (proposals, reads) = run_ok(seed, 3, 0, 20_000, true, defaults);
        totals.0 += proposals;
        totals.1 += reads;
    }
    assert!(
        totals.0 > 100,
        "only {} entries committed over all seeds",
        totals.0
    );
    assert!(
        totals.1 > 100,
        "only {} reads served over all seeds",
        totals.1
    );
}

/// Pipelined drivers together with membership changes.
#[test]
fn random_schedules_with_pipelined_drivers_and_membership_changes() {
    let mut totals = (0, 0);
    for seed in 4000..4060 {
        let (proposals, reads) = run_ok(seed, 3, 3, 20_000, true, defaults);
        totals.0 += proposals;
        totals.1 += reads;
    }
    assert!(
        totals.0 > 60,
        "only {} entries committed over all seeds",
        totals.0
    );
    assert!(
        totals.1 > 60,
        "only {} reads served over all seeds",
        totals.1
    );
}

/// Runs one 3-voter schedule with a planted bug; returns the broken property's report
/// (`<checker>: <detail>`), if any. A panic inside the core (its own invariant assertions) is
/// reported as `invariant assertion: <message>`, except the harness's own liveness check
/// (`stabilize`: messages never stop flowing after healing), reported as `liveness`.
#[cfg(feature = "planted-bugs")]
fn report(seed: u64, pipelined: bool, configure: fn(&mut Config)) -> Option<String> {
    let outcome = std::panic::catch_unwind(|| run(seed, 3, 0, 20_000, pipelined, configure));
    match outcome {
        Ok(Ok(_)) => None,
        Ok(Err(report)) => Some(report),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_default();
            if message.contains("did not stabilize") {
                Some(format!("{LIVENESS}: seed {seed}: {message}"))
            } else {
                Some(format!("invariant assertion: seed {seed}: {message}"))
            }
        }
    }
}

/// The checkers can fail: with the planted lease bug (lease reads served whenever leader, with
/// check-quorum off) some schedule returns a stale read, and the read check is what says so.
#[cfg(feature = "planted-bugs")]
#[test]
fn checkers_catch_the_planted_stale_lease_read() {
    // Since the pre-vote tie-break made split votes rare, the first catching seed is above
    // 100 (it was below); 400 leaves room.
    let configure = |c: &mut Config| {
        c.planted_bugs.lease_read_without_quorum = true;
        c.check_quorum = false;
    };
    let (seed, report) = (0..400)
        .find_map(|seed| report(seed, false, configure).map(|r| (seed, r)))
        .expect("stale lease read not caught in 400 seeds");
    assert!(
        report.starts_with(LINEARIZABLE_READS),
        "seed {seed}: caught by another check: {report}"
    );
}

/// The checkers can fail: acknowledging entries before they are durable loses committed
/// entries when pipelined drivers crash; a replica that restarts without them can win an
/// election and another entry is applied at their index, which state machine safety reports.
/// The same loss also shows as a liveness failure in some schedules (a leader that believes a
/// follower holds entries it lost keeps the network busy after healing); no other check fires.
#[cfg(feature = "planted-bugs")]
#[test]
fn checkers_catch_the_planted_ack_before_persist() {
    let configure = |c: &mut Config| c.planted_bugs.ack_before_persist = true;
    let mut caught = Vec::new();
    for seed in 3000..3200 {
        let Some(report) = report(seed, true, configure) else {
            continue;
        };
        assert!(
            report.starts_with(STATE_MACHINE_SAFETY) || report.starts_with(LIVENESS),
            "seed {seed}: caught by another check: {report}"
        );
        if report.starts_with(STATE_MACHINE_SAFETY) {
            caught.push(seed);
            if caught.len() == 2 {
                return;
            }
        }
    }
    panic!("state machine safety caught ack before persist in {caught:?} of seeds 3000..3200");
}
