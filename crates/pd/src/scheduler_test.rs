//! Table and scenario tests for every scheduler, through `plan` and `Tick`.

use crate::Apply;
use crate::command::{Command, Response, ShardStats};
use crate::node::NodeState;
use crate::operator::{Operator, OperatorKind, Step};
use crate::scheduler::{plan, plan_with};
use crate::settings::SchedulerKind;
use crate::state::PdState;
use crate::test_support::*;
use ringkv_types::{NodeId, ShardId};
use std::collections::BTreeMap;

fn enable(state: &mut PdState, kind: SchedulerKind) {
    state.settings.set_enabled(kind, true);
}

/// Log time at which a node killed at 0 is dead (the default `max_down_time_ms`).
const DEAD_AT: u64 = 30 * 60 * 1000;

/// Heartbeats every node not killed, then ticks.
fn tick(state: &mut PdState, now_ms: u64) -> Vec<Operator> {
    let alive: Vec<NodeId> = state
        .nodes
        .values()
        .filter(|n| n.down_since_ms.is_none() && n.state != NodeState::Removed)
        .map(|n| n.id)
        .collect();
    for node in alive {
        state
            .apply(&Command::NodeHeartbeat {
                node,
                stats: Default::default(),
                now_ms,
            })
            .expect("heartbeat");
    }
    let Ok(Response::Tick(outcome)) = state.apply(&Command::Tick { now_ms }) else {
        panic!("tick refused");
    };
    state.check_invariants();
    outcome
        .created
        .iter()
        .map(|id| state.operator_by_id(*id).cloned().expect("created"))
        .collect()
}

fn add_node(state: &mut PdState, addr: &str) -> NodeId {
    match state.apply(&Command::RegisterNode {
        node: registration(addr),
        now_ms: state.now_ms,
    }) {
        Ok(Response::NodeId(id)) => id,
        other => panic!("{other:?}"),
    }
}

fn kill(state: &mut PdState, node: NodeId, since_ms: u64) {
    let info = state.nodes.get_mut(&node).expect("node");
    info.state = NodeState::Down;
    info.down_since_ms = Some(since_ms);
}

#[test]
fn plan_with_balancing_plans_as_if_both_balance_schedulers_were_on() {
    let mut state = cluster(3, 8, 3);
    add_node(&mut state, "new:1");
    state
        .settings
        .set_enabled(SchedulerKind::BalanceReplicas, false);
    state
        .settings
        .set_enabled(SchedulerKind::BalanceLeaders, false);
    let before = state.clone();
    assert_eq!(plan_with(&state, false), plan(&state));
    assert!(
        plan(&state)
            .iter()
            .all(|o| o.kind != OperatorKind::BalanceReplicas),
        "balance-replicas is off"
    );
    let balancing = plan_with(&state, true);
    assert_eq!(state, before, "plan_with changed the state");
    assert!(
        balancing
            .iter()
            .any(|o| o.kind == OperatorKind::BalanceReplicas),
        "the new node is empty: {balancing:?}"
    );
    enable(&mut state, SchedulerKind::BalanceReplicas);
    enable(&mut state, SchedulerKind::BalanceLeaders);
    assert_eq!(plan(&state), balancing);
}

#[test]
fn plan_is_pure_and_matches_what_a_tick_creates() {
    let mut state = cluster(3, 8, 3);
    add_node(&mut state, "new:1");
    enable(&mut state, SchedulerKind::BalanceReplicas);
    let before = state.clone();
    let planned = plan(&state);
    assert_eq!(state, before, "plan changed the state");
    assert!(!planned.is_empty());
    let created = tick(&mut state, 0);
    assert_eq!(planned, created);
    // Nothing scheduled twice: the next pass sees the operators in flight.
    assert!(
        plan(&state)
            .iter()
            .all(|o| !before.operators.contains_key(&o.shard))
    );
}

#[test]
fn disabled_schedulers_create_nothing() {
    let mut state = cluster(3, 8, 3);
    add_node(&mut state, "new:1");
    kill(&mut state, NodeId(1), 0);
    state.now_ms = state.settings.max_down_time_ms;
    state
        .shards
        .get_mut(&ShardId(1))
        .expect("s1")
        .stats
        .size_bytes = u64::MAX;
    assert!(plan(&state).is_empty());
}

#[test]
fn repair_replaces_voters_of_dead_nodes_add_first() {
    let mut state = cluster(4, 4, 3);
    enable(&mut state, SchedulerKind::Repair);
    state.settings.max_snapshots_per_node = 8;
    kill(&mut state, NodeId(2), 0);
    // Down, but not for long enough.
    state.now_ms = state.settings.max_down_time_ms - 1;
    assert!(plan(&state).is_empty());
    let created = tick(&mut state, DEAD_AT);
    // Shards on node 2: round robin puts shard i on i..i+2 (mod 4): shards 1, 2, 4.
    let shards: Vec<ShardId> = created.iter().map(|o| o.shard).collect();
    assert_eq!(shards, vec![ShardId(1), ShardId(2), ShardId(4)]);
    for operator in &created {
        assert_eq!(operator.kind, OperatorKind::Repair);
        let target = match operator.steps[0] {
            Step::AddLearner { node, .. } => node,
            other => panic!("repair must add first: {other:?}"),
        };
        assert_ne!(target, NodeId(2));
        assert_eq!(
            operator.steps[1..],
            [
                Step::PromoteLearner { node: target },
                Step::RemoveReplica { node: NodeId(2) }
            ]
        );
    }
}

#[test]
fn repair_respects_snapshot_and_operator_limits() {
    let mut state = cluster(4, 8, 3);
    enable(&mut state, SchedulerKind::Repair);
    kill(&mut state, NodeId(2), 0);
    state.settings.max_snapshots_per_node = 1;
    let created = tick(&mut state, DEAD_AT);
    let mut per_target: BTreeMap<NodeId, u32> = BTreeMap::new();
    for operator in &created {
        if let Some(node) = operator.snapshot_target() {
            *per_target.entry(node).or_default() += 1;
        }
    }
    assert!(!created.is_empty());
    assert!(per_target.values().all(|&n| n <= 1), "{per_target:?}");
    let mut state = cluster(6, 12, 3);
    enable(&mut state, SchedulerKind::Repair);
    kill(&mut state, NodeId(2), 0);
    state.settings.max_operators = 2;
    assert_eq!(tick(&mut state, DEAD_AT).len(), 2);
    assert!(tick(&mut state, DEAD_AT).is_empty());
}

#[test]
fn repair_table() {
    struct Case {
        name: &'static str,
        replicas: Vec<ringkv_types::Replica>,
        silent: Option<u64>,
        expected: Option<Vec<Step>>,
    }
    let cases = vec![
        Case {
            name: "orphan learner removed",
            replicas: vec![voter(1), voter(2), voter(3), learner(4)],
            silent: None,
            expected: Some(vec![Step::RemoveReplica { node: NodeId(4) }]),
        },
        Case {
            name: "missing voter added on the emptiest node, ties to the lowest id",
            replicas: vec![voter(1), voter(2)],
            silent: None,
            expected: Some(vec![
                Step::AddLearner {
                    node: NodeId(3),
                    incarnation: 1,
                },
                Step::PromoteLearner { node: NodeId(3) },
            ]),
        },
        Case {
            name: "excess voter on a silent node removed first",
            replicas: vec![voter(1), voter(2), voter(3), voter(4)],
            silent: Some(3),
            expected: Some(vec![Step::RemoveReplica { node: NodeId(3) }]),
        },
        Case {
            name: "excess voter: the most loaded non-leader, ties to the highest id",
            replicas: vec![voter(1), voter(2), voter(3), voter(4)],
            silent: None,
            expected: Some(vec![Step::RemoveReplica { node: NodeId(4) }]),
        },
        Case {
            name: "healthy shard left alone",
            replicas: vec![voter(1), voter(2), voter(3)],
            silent: None,
            expected: None,
        },
    ];
    for case in cases {
        let mut state = cluster(4, 2, 3);
        enable(&mut state, SchedulerKind::Repair);
        let descriptor = with_replicas(&state, ShardId(1), case.replicas);
        let mut report = report_of(&state, ShardId(1), Some(NodeId(1)), 0);
        report.descriptor = descriptor;
        state
            .apply(&Command::ShardReport(report))
            .expect("report accepted");
        if let Some(node) = case.silent {
            kill(&mut state, NodeId(node), 0);
        }
        let planned = plan(&state);
        let steps = planned
            .iter()
            .find(|o| o.shard == ShardId(1))
            .map(|o| o.steps.clone());
        assert_eq!(steps, case.expected, "{}", case.name);
    }
}

#[test]
fn dead_voter_without_a_target_is_kept() {
    // Three nodes, replication three: nowhere to rebuild, and removing would drop below it.
    let mut state = cluster(3, 2, 3);
    enable(&mut state, SchedulerKind::Repair);
    kill(&mut state, NodeId(1), 0);
    state.now_ms = state.settings.max_down_time_ms;
    assert!(plan(&state).is_empty());
}

#[test]
fn drain_moves_every_replica_off_the_node() {
    let mut state = cluster(4, 4, 3);
    enable(&mut state, SchedulerKind::Drain);
    state.settings.max_snapshots_per_node = 8;
    state
        .apply(&Command::SetNodeState {
            node: NodeId(1),
            state: NodeState::Draining,
            now_ms: 0,
        })
        .expect("drain");
    let created = tick(&mut state, 1);
    // Node 1 holds shards 1, 3, 4; only node... each shard has one node without a replica.
    assert_eq!(created.len(), 3);
    for operator in &created {
        assert_eq!(operator.kind, OperatorKind::Drain);
        assert_eq!(
            operator.steps.last(),
            Some(&Step::RemoveReplica { node: NodeId(1) })
        );
        assert!(matches!(operator.steps[0], Step::AddLearner { node, .. } if node != NodeId(1)));
    }
    // With three nodes there is nowhere to go: the drain waits.
    let mut state = cluster(3, 2, 3);
    enable(&mut state, SchedulerKind::Drain);
    state.nodes.get_mut(&NodeId(1)).expect("n1").state = NodeState::Draining;
    assert!(plan(&state).is_empty());
}

#[test]
fn split_by_size_or_load() {
    let cases = [
        ("small and cool", 10, 10, false),
        ("too large", 2000, 0, true),
        ("too hot", 0, 600, true),
    ];
    for (name, size_bytes, load, split) in cases {
        let mut state = cluster(3, 2, 3);
        enable(&mut state, SchedulerKind::Split);
        state.settings.split_size_bytes = 1000;
        state.settings.split_load_per_sec = 500;
        state.shards.get_mut(&ShardId(2)).expect("s2").stats = ShardStats {
            size_bytes,
            keys: 1,
            writes_per_sec: load / 2,
            reads_per_sec: load - load / 2,
        };
        let planned = plan(&state);
        if split {
            let descriptor = state.descriptor(ShardId(2)).expect("s2");
            assert_eq!(
                planned
                    .iter()
                    .map(|o| (o.shard, o.steps.clone()))
                    .collect::<Vec<_>>(),
                vec![(
                    ShardId(2),
                    vec![Step::Split {
                        new_shard: ShardId(3),
                        at: descriptor.arc.midpoint()
                    }]
                )],
                "{name}"
            );
        } else {
            assert!(planned.is_empty(), "{name}");
        }
    }
    // The leader's hint wins when it lies inside the arc.
    let mut state = cluster(3, 1, 3);
    enable(&mut state, SchedulerKind::Split);
    let status = state.shards.get_mut(&ShardId(1)).expect("s1");
    status.stats.size_bytes = u64::MAX;
    status.split_hint = Some(12345);
    assert_eq!(
        plan(&state)[0].steps,
        vec![Step::Split {
            new_shard: ShardId(2),
            at: 12345
        }]
    );
}

#[test]
fn balance_replicas_fills_a_new_node() {
    let mut state = cluster(3, 9, 3);
    enable(&mut state, SchedulerKind::BalanceReplicas);
    state.settings.max_snapshots_per_node = 100;
    state.settings.max_operators = 100;
    let new = add_node(&mut state, "new:1");
    let created = tick(&mut state, 0);
    // 27 replicas over 4 nodes: 7, 7, 7, 6 — the new node gets 6, one move per shard at most.
    assert_eq!(created.len(), 6);
    for operator in &created {
        assert_eq!(operator.kind, OperatorKind::BalanceReplicas);
        assert!(matches!(operator.steps[0], Step::AddLearner { node, .. } if node == new));
    }
    assert!(
        plan(&state).is_empty(),
        "already balanced once these finish"
    );
}

#[test]
fn balance_replicas_skips_shards_with_a_silent_voter() {
    let mut state = cluster(3, 3, 3);
    enable(&mut state, SchedulerKind::BalanceReplicas);
    add_node(&mut state, "new:1");
    kill(&mut state, NodeId(1), 0);
    // Every shard has a voter on node 1.
    assert!(plan(&state).is_empty());
}

#[test]
fn balance_leaders_spreads_leadership() {
    let mut state = cluster(3, 6, 3);
    enable(&mut state, SchedulerKind::BalanceLeaders);
    for shard in 1..=6 {
        let report = report_of(&state, ShardId(shard), Some(NodeId(1)), 1);
        state.apply(&Command::ShardReport(report)).expect("report");
    }
    let created = tick(&mut state, 2);
    let mut targets: BTreeMap<NodeId, u32> = BTreeMap::new();
    for operator in &created {
        let [Step::TransferLeader { to }] = operator.steps[..] else {
            panic!("{operator:?}");
        };
        *targets.entry(to).or_default() += 1;
    }
    assert_eq!(targets, BTreeMap::from([(NodeId(2), 2), (NodeId(3), 2)]));
    assert!(plan(&state).is_empty());
}

/// A node that stopped heartbeating a few seconds ago is still `Up` (the heartbeat timeout is
/// 10 s) but receives no leadership: it was probably just killed.
#[test]
fn balance_leaders_skips_a_node_silent_for_a_few_heartbeats() {
    let mut state = cluster(3, 6, 3);
    for shard in 1..=6 {
        let report = report_of(&state, ShardId(shard), Some(NodeId(1)), 1);
        state.apply(&Command::ShardReport(report)).expect("report");
    }
    let heartbeat = |state: &mut PdState, node: u64, now_ms: u64| {
        state
            .apply(&Command::NodeHeartbeat {
                node: NodeId(node),
                stats: Default::default(),
                now_ms,
            })
            .expect("heartbeat");
    };
    for node in 1..=3 {
        heartbeat(&mut state, node, 1_000);
    }
    // Node 3 goes silent; 1 and 2 keep heartbeating for 4 s.
    for now_ms in [2_000, 3_000, 4_000, 5_000] {
        heartbeat(&mut state, 1, now_ms);
        heartbeat(&mut state, 2, now_ms);
    }
    enable(&mut state, SchedulerKind::BalanceLeaders);
    let Ok(Response::Tick(outcome)) = state.apply(&Command::Tick { now_ms: 5_000 }) else {
        panic!("tick refused");
    };
    assert_eq!(state.nodes[&NodeId(3)].state, NodeState::Up);
    let targets: Vec<NodeId> = outcome
        .created
        .iter()
        .map(
            |id| match state.operator_by_id(*id).expect("created").steps[..] {
                [Step::TransferLeader { to }] => to,
                ref other => panic!("{other:?}"),
            },
        )
        .collect();
    assert!(!targets.is_empty(), "no leadership moved");
    assert!(
        targets.iter().all(|to| *to == NodeId(2)),
        "leadership handed to the silent node 3: {targets:?}"
    );
    // Once node 3 heartbeats again it takes leaderships.
    heartbeat(&mut state, 3, 6_000);
    state.operators.clear();
    assert!(
        plan(&state)
            .iter()
            .any(|o| o.steps == [Step::TransferLeader { to: NodeId(3) }]),
        "{:?}",
        plan(&state)
    );
}

#[test]
fn schedulers_are_deterministic() {
    let build = || {
        let mut state = cluster(5, 16, 3);
        for kind in SchedulerKind::ALL {
            enable(&mut state, kind);
        }
        add_node(&mut state, "a:1");
        add_node(&mut state, "b:1");
        kill(&mut state, NodeId(2), 0);
        state.now_ms = state.settings.max_down_time_ms;
        state
    };
    assert_eq!(plan(&build()), plan(&build()));
}

/// When the fullest and the emptiest node share no shard, leadership moves along a chain.
#[test]
fn balance_leaders_moves_through_an_intermediate_node() {
    let mut state = cluster(4, 4, 3);
    enable(&mut state, SchedulerKind::BalanceLeaders);
    let layout = [
        (1, [1, 2, 3], 1),
        (2, [1, 2, 3], 1),
        (3, [2, 3, 4], 2),
        (4, [2, 3, 4], 3),
    ];
    for (shard, nodes, leader) in layout {
        let descriptor = with_replicas(&state, ShardId(shard), nodes.map(voter).to_vec());
        let mut report = report_of(&state, ShardId(shard), None, 1);
        report.descriptor = descriptor;
        report.leader = NodeId(leader);
        state
            .apply(&Command::ShardReport(report))
            .expect("report accepted");
    }
    let transfers: Vec<(ShardId, Vec<Step>)> = plan(&state)
        .into_iter()
        .map(|o| (o.shard, o.steps))
        .collect();
    assert_eq!(
        transfers,
        vec![
            (ShardId(1), vec![Step::TransferLeader { to: NodeId(2) }]),
            (ShardId(3), vec![Step::TransferLeader { to: NodeId(4) }]),
        ]
    );
}

/// Leader transfers handed to a node that then dies are abandoned by the first tick that
/// marks it down, not held until the step timeout: with the budget full of them, repair (and
/// everything else) would wait 10 minutes (`ringkv-sim --pd-scale --scenario kill` found it).
#[test]
fn transfers_to_a_node_marked_down_free_the_budget_at_once() {
    let mut state = cluster(4, 8, 3);
    state.settings.max_operators = 2;
    let led_by_1: Vec<ShardId> = (1..=8)
        .map(ShardId)
        .filter(|s| {
            state
                .descriptor(*s)
                .is_some_and(|d| d.voters().any(|v| v == NodeId(4)))
        })
        .filter(|s| state.leader(*s) != Some(NodeId(4)))
        .take(2)
        .collect();
    assert_eq!(led_by_1.len(), 2);
    for shard in &led_by_1 {
        state
            .apply(&Command::AddOperator {
                operator: crate::command::AdminOperator::TransferLeader {
                    shard: *shard,
                    to: NodeId(4),
                },
                now_ms: 1,
            })
            .expect("accepted");
    }
    // Node 4 dies: everyone else keeps heartbeating; past the heartbeat timeout it is down.
    let killed_at = 1;
    let timeout = state.settings.heartbeat_timeout_ms;
    for now in [killed_at + timeout / 2, killed_at + timeout] {
        let alive: Vec<NodeId> = (1..=3).map(NodeId).collect();
        for node in alive {
            state
                .apply(&Command::NodeHeartbeat {
                    node,
                    stats: Default::default(),
                    now_ms: now,
                })
                .expect("heartbeat");
        }
        let Ok(Response::Tick(outcome)) = state.apply(&Command::Tick { now_ms: now }) else {
            panic!("tick refused");
        };
        if now < killed_at + timeout {
            assert!(outcome.cancelled.is_empty(), "{outcome:?}");
        } else {
            assert_eq!(outcome.marked_down, vec![NodeId(4)]);
            assert_eq!(outcome.cancelled.len(), 2, "{outcome:?}");
        }
    }
    assert!(state.operators.is_empty(), "{:?}", state.operators);
    assert_eq!(state.operator_counts.cancelled, 2);
    state.check_invariants();
}
