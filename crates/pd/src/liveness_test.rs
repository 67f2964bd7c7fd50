//! Node liveness in the PD leader's memory (see `crate::leader_stats`): an idle cluster writes
//! nothing to PD's log, a silent node is still marked `Down` within the heartbeat timeout, a new
//! PD leader marks no live node `Down`, a node heard again is marked `Up`.

use crate::command::{Command, Response, StoreHeartbeat, TickOutcome};
use crate::leader_stats::{LeaderStats, tick_would_act};
use crate::node::{NodeState, NodeStats};
use crate::settings::SchedulerKind;
use crate::test_support::{cluster, report_ok};
use crate::{Apply, PdState};
use ringkv_types::{NodeId, ShardId};

/// Heartbeat and tick interval of these tests (`ringkvd`'s defaults).
const EVERY_MS: u64 = 1_000;

/// A PD leader: the applied state, the leader's memory, and every command it proposed (each
/// applied at once, as a single-replica group would).
struct Leader {
    state: PdState,
    stats: LeaderStats,
    proposed: Vec<Command>,
}

impl Leader {
    fn new(state: PdState) -> Self {
        Self {
            state,
            stats: LeaderStats::new(),
            proposed: Vec::new(),
        }
    }

    /// `node`'s heartbeat (no shard reports) at `now_ms`; its answered state.
    fn beat(&mut self, node: u64, now_ms: u64) -> NodeState {
        let heartbeat = StoreHeartbeat {
            node: NodeId(node),
            stats: NodeStats::default(),
            shards: Vec::new(),
            full: false,
            now_ms,
        };
        let triage = self.stats.handle(&self.state, &heartbeat, now_ms);
        if let Some(command) = triage.propose {
            self.commit(command);
        }
        match triage.answer {
            Ok(Response::StoreHeartbeat { state, .. }) => state,
            other => panic!("unexpected answer {other:?}"),
        }
    }

    /// The leader's tick at `now_ms`: what it did, if it was proposed.
    fn tick(&mut self, now_ms: u64) -> Option<TickOutcome> {
        let tick = self.stats.tick(&self.state, now_ms)?;
        match self.commit(tick) {
            Response::Tick(outcome) => Some(outcome),
            other => panic!("unexpected answer {other:?}"),
        }
    }

    fn commit(&mut self, command: Command) -> Response {
        let response = self.state.apply(&command).expect("applied");
        self.state.check_invariants();
        self.proposed.push(command);
        response
    }

    /// Every second from `from_ms` to `to_ms` (exclusive): `nodes` heartbeat, then a tick.
    fn run(&mut self, nodes: &[u64], from_ms: u64, to_ms: u64) -> Vec<(u64, TickOutcome)> {
        let mut ticks = Vec::new();
        for now in (from_ms..to_ms).step_by(EVERY_MS as usize) {
            for &node in nodes {
                self.beat(node, now);
            }
            if let Some(outcome) = self.tick(now) {
                ticks.push((now, outcome));
            }
        }
        ticks
    }

    fn node_state(&self, node: u64) -> NodeState {
        self.state.nodes[&NodeId(node)].state
    }
}

/// Three nodes, 12 shards on all three, leaderships spread evenly, every scheduler on: a
/// balanced cluster the schedulers leave alone.
fn balanced() -> PdState {
    let mut state = cluster(3, 12, 3);
    for kind in SchedulerKind::ALL {
        state.settings.set_enabled(kind, true);
    }
    for shard in 1..=12 {
        report_ok(&mut state, ShardId(shard), Some(NodeId(shard % 3 + 1)), 0);
    }
    state
}

#[test]
fn a_quiet_cluster_proposes_nothing() {
    let mut leader = Leader::new(balanced());
    let timeout = leader.state.settings.heartbeat_timeout_ms;
    // Twenty heartbeat timeouts (80 liveness refreshes per node before).
    let ticks = leader.run(&[1, 2, 3], 0, 20 * timeout);
    assert_eq!(ticks, Vec::new());
    assert_eq!(leader.proposed, Vec::new());
    for node in 1..=3 {
        assert_eq!(leader.node_state(node), NodeState::Up);
    }
}

#[test]
fn a_silent_node_is_marked_down_within_the_timeout() {
    let mut leader = Leader::new(balanced());
    let timeout = leader.state.settings.heartbeat_timeout_ms;
    let last_beat = 5 * EVERY_MS;
    assert_eq!(leader.run(&[1, 2, 3], 0, last_beat + EVERY_MS), Vec::new());
    // Node 3 falls silent after `last_beat`.
    let ticks = leader.run(&[1, 2], last_beat + EVERY_MS, last_beat + 3 * timeout);
    let (at, first) = ticks.first().expect("a tick proposed").clone();
    assert_eq!(first.marked_down, vec![NodeId(3)]);
    assert_eq!(
        at,
        last_beat + timeout,
        "marked down once silent for the timeout"
    );
    assert_eq!(leader.node_state(3), NodeState::Down);
    assert_eq!(leader.node_state(1), NodeState::Up);
    assert_eq!(leader.node_state(2), NodeState::Up);
}

/// A new PD leader (empty memory) after a long idle time (the replicated last heartbeats are
/// old): it gives every node a full timeout from the start of its memory, so live nodes stay
/// `Up`, and a node that stays silent is marked `Down` a timeout after that start.
#[test]
fn a_new_leader_does_not_mark_live_nodes_down() {
    let mut old = Leader::new(balanced());
    let timeout = old.state.settings.heartbeat_timeout_ms;
    let until = 30 * timeout;
    assert_eq!(old.run(&[1, 2, 3], 0, until), Vec::new());
    // The replicated heartbeats are as old as the cluster.
    assert_eq!(old.state.nodes[&NodeId(1)].last_heartbeat_ms, 0);
    let mut new = Leader::new(old.state.clone());
    let start = until + 3 * EVERY_MS;
    assert_eq!(new.tick(start), None, "nobody marked down at term start");
    // Nodes 1 and 2 heartbeat to the new leader; node 3 never does.
    let ticks = new.run(&[1, 2], start + EVERY_MS, start + 3 * timeout);
    let (at, first) = ticks.first().expect("node 3 marked down").clone();
    assert_eq!(first.marked_down, vec![NodeId(3)]);
    assert_eq!(
        at,
        start + timeout,
        "a full timeout of grace from the term start"
    );
    assert_eq!(new.node_state(1), NodeState::Up);
    assert_eq!(new.node_state(2), NodeState::Up);
}

#[test]
fn a_node_heard_again_is_marked_up() {
    let mut leader = Leader::new(balanced());
    let timeout = leader.state.settings.heartbeat_timeout_ms;
    leader.run(&[1, 2], 0, 2 * timeout);
    assert_eq!(leader.node_state(3), NodeState::Down);
    let proposed = leader.proposed.len();
    let back = 2 * timeout + EVERY_MS;
    assert_eq!(leader.beat(3, back), NodeState::Up, "answered Up at once");
    assert!(matches!(
        leader.proposed[proposed..],
        [Command::NodeHeartbeat {
            node: NodeId(3),
            ..
        }]
    ));
    assert_eq!(leader.node_state(3), NodeState::Up);
    assert_eq!(leader.state.nodes[&NodeId(3)].down_since_ms, None);
    // Back to quiet: nothing more is written.
    let proposed = leader.proposed.len();
    leader.run(&[1, 2, 3], back + EVERY_MS, back + 5 * timeout);
    assert_eq!(leader.proposed.len(), proposed);
}

/// Leader balancing hands leaderships only to nodes heard from recently: with liveness in
/// memory, the tick carries it, so an unbalanced idle cluster is still balanced.
#[test]
fn leader_balancing_sees_the_leaders_memory_of_heartbeats() {
    let mut state = cluster(3, 12, 3);
    state
        .settings
        .set_enabled(SchedulerKind::BalanceLeaders, true);
    // Node 1 leads every shard.
    let mut leader = Leader::new(state);
    let timeout = leader.state.settings.heartbeat_timeout_ms;
    let start = 10 * timeout;
    let ticks = leader.run(&[1, 2, 3], start, start + 2 * EVERY_MS);
    let Some((at, first)) = ticks.first() else {
        panic!("no tick proposed")
    };
    assert_eq!(*at, start, "scheduled at the first tick");
    assert_eq!(first.marked_down, Vec::new());
    assert!(!first.created.is_empty(), "no leader transfer: {ticks:?}");
}

/// A `LeaderTick` raises last heartbeats, never lowers them nor sets them past its time, and
/// skips unknown nodes; deciding it changes nothing.
#[test]
fn a_leader_tick_only_raises_last_heartbeats() {
    let mut state = cluster(3, 3, 3);
    state.nodes.get_mut(&NodeId(2)).unwrap().last_heartbeat_ms = 900;
    let tick = Command::LeaderTick {
        now_ms: 1_000,
        last_heard: vec![
            (NodeId(1), 500),
            (NodeId(2), 100),
            (NodeId(3), 5_000),
            (NodeId(9), 700),
        ],
    };
    let before = state.clone();
    assert!(!tick_would_act(&state, &tick));
    assert_eq!(state, before, "deciding is read-only");
    assert_eq!(
        state.apply(&tick),
        Ok(Response::Tick(TickOutcome::default()))
    );
    let heard = |node| state.nodes[&NodeId(node)].last_heartbeat_ms;
    assert_eq!((heard(1), heard(2), heard(3)), (500, 900, 1_000));
    assert_eq!(state.now_ms, 1_000);
}
