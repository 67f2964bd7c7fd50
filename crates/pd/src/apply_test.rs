//! Table and scenario tests for every command.

use crate::Apply;
use crate::command::{AdminOperator, Command, IdKind, Response, ShardReport};
use crate::error::{Error, InvalidReason, RejectReason};
use crate::node::{NodeState, NodeStats};
use crate::operator::{OperatorKind, Step, StepOrder};
use crate::settings::{SchedulerKind, Settings};
use crate::state::{OperatorEnd, PdState};
use crate::test_support::*;
use ringkv_types::ring::Arc;
use ringkv_types::{Epoch, NodeId, ReplicaRole, ShardId, ShardMap};

fn order_of(response: Response) -> Option<StepOrder> {
    match response {
        Response::ShardReport { order, .. } => order,
        other => panic!("not a report answer: {other:?}"),
    }
}

fn report_current(
    state: &mut PdState,
    shard: ShardId,
    leader: Option<NodeId>,
    now_ms: u64,
) -> Option<StepOrder> {
    let report = report_of(state, shard, leader, now_ms);
    apply_report(state, report)
}

fn apply_report(state: &mut PdState, report: ShardReport) -> Option<StepOrder> {
    let response = state
        .apply(&Command::ShardReport(report))
        .expect("report accepted");
    state.check_invariants();
    order_of(response)
}

#[test]
fn bootstrap_is_accepted_once_and_validated() {
    let good = bootstrap_command(3, round_robin_map(3, 4, 3), Settings::default());
    let mut hole = round_robin_map(3, 4, 3);
    hole.shards.remove(1);
    let mut unknown_node = round_robin_map(3, 4, 3);
    unknown_node.shards[0].replicas[0].node = NodeId(9);
    let mut reserved = round_robin_map(3, 4, 3);
    reserved.shards[0].id = ShardId::PD;
    let mut no_voter = round_robin_map(3, 4, 3);
    no_voter.shards[0].replicas = vec![learner(1)];
    let bad_settings = Settings {
        replication_factor: 0,
        ..Settings::default()
    };
    let cases = [
        (
            "hole",
            bootstrap_command(3, hole, Settings::default()),
            InvalidReason::DoesNotCoverRing,
        ),
        (
            "unknown node",
            bootstrap_command(3, unknown_node, Settings::default()),
            InvalidReason::BadReplicas,
        ),
        (
            "reserved id",
            bootstrap_command(3, reserved, Settings::default()),
            InvalidReason::DuplicateOrReservedShardId,
        ),
        (
            "no voter",
            bootstrap_command(3, no_voter, Settings::default()),
            InvalidReason::BadReplicas,
        ),
    ];
    for (name, command, reason) in cases {
        let mut state = PdState::new();
        assert_eq!(
            state.apply(&command),
            Err(Error::InvalidShardMap { reason }),
            "{name}"
        );
        assert_eq!(state, PdState::new(), "{name}: state changed");
    }
    let mut state = PdState::new();
    assert!(matches!(
        state.apply(&bootstrap_command(
            3,
            round_robin_map(3, 4, 3),
            bad_settings
        )),
        Err(Error::InvalidSetting { .. })
    ));
    assert_eq!(state.apply(&good), Ok(Response::Done));
    state.check_invariants();
    assert_eq!(state.apply(&good), Err(Error::AlreadyBootstrapped));
    assert_eq!(state.ids.next_node, 4);
    assert_eq!(state.ids.next_shard, 5);
}

#[test]
fn commands_before_bootstrap_are_refused() {
    let mut state = PdState::new();
    let commands = [
        Command::Tick { now_ms: 1 },
        Command::RegisterNode {
            node: registration("a:1"),
            now_ms: 1,
        },
        Command::ShardReport(ShardReport {
            descriptor: round_robin_map(3, 1, 3).shards[0].clone(),
            leader: NodeId(1),
            stats: Default::default(),
            caught_up_learners: vec![],
            split_hint: None,
            now_ms: 1,
        }),
    ];
    for command in commands {
        assert_eq!(
            state.apply(&command),
            Err(Error::NotBootstrapped),
            "{command:?}"
        );
    }
    assert_eq!(state, PdState::new());
}

#[test]
fn register_as_keeps_the_configured_id_in_any_order() {
    let mut state = cluster(3, 2, 3);
    let register = |id: u64, addr: &str| Command::RegisterNodeAs {
        id: NodeId(id),
        node: registration(addr),
        now_ms: 5,
    };
    // Node 5 registers before node 4: both keep their ids.
    assert_eq!(
        state.apply(&register(5, "10.0.0.5:7000")),
        Ok(Response::NodeId(NodeId(5)))
    );
    assert_eq!(
        state.apply(&register(4, "10.0.0.4:7000")),
        Ok(Response::NodeId(NodeId(4)))
    );
    // Idempotent; and the counter moved past them.
    assert_eq!(
        state.apply(&register(5, "10.0.0.5:7000")),
        Ok(Response::NodeId(NodeId(5)))
    );
    assert_eq!(state.ids.next_node, 6);
    let before = state.clone();
    for (command, why) in [
        (register(4, "10.0.0.44:7000"), "id at another address"),
        (register(6, "10.0.0.4:7000"), "address of a live node"),
        (register(0, "10.0.0.6:7000"), "id 0"),
        (register(1 << 32, "10.0.0.6:7000"), "id too large"),
    ] {
        assert!(
            matches!(
                state.apply(&command),
                Err(Error::RegistrationConflict { .. })
            ),
            "{why}"
        );
        assert_eq!(state, before, "{why}: refused commands change nothing");
    }
    state
        .apply(&Command::SetNodeState {
            node: NodeId(4),
            state: NodeState::Removed,
            now_ms: 6,
        })
        .expect("removed");
    assert_eq!(
        state.apply(&register(4, "10.0.0.4:7000")),
        Err(Error::NodeRemoved { node: NodeId(4) })
    );
}

#[test]
fn register_allocates_ids_and_is_idempotent_by_address() {
    let mut state = cluster(3, 2, 3);
    let register = |addr: &str| Command::RegisterNode {
        node: registration(addr),
        now_ms: 5,
    };
    assert_eq!(
        state.apply(&register("10.0.0.9:7000")),
        Ok(Response::NodeId(NodeId(4)))
    );
    assert_eq!(
        state.apply(&register("10.0.0.10:7000")),
        Ok(Response::NodeId(NodeId(5)))
    );
    assert_eq!(
        state.apply(&register("10.0.0.9:7000")),
        Ok(Response::NodeId(NodeId(4)))
    );
    assert_eq!(
        state.apply(&register("10.0.0.1:7000")),
        Ok(Response::NodeId(NodeId(1)))
    );
    let long = "x".repeat(300);
    assert!(matches!(
        state.apply(&register(&long)),
        Err(Error::TooLarge { .. })
    ));
    // A removed node's address gets a new id.
    state
        .apply(&Command::SetNodeState {
            node: NodeId(4),
            state: NodeState::Removed,
            now_ms: 6,
        })
        .expect("removed");
    assert_eq!(
        state.apply(&register("10.0.0.9:7000")),
        Ok(Response::NodeId(NodeId(6)))
    );
    state.check_invariants();
}

#[test]
fn heartbeats_and_ticks_move_nodes_between_up_and_down() {
    let mut state = cluster(3, 2, 3);
    let timeout = state.settings.heartbeat_timeout_ms;
    heartbeat_all(&mut state, 1000);
    let tick = |state: &mut PdState, now_ms| match state.apply(&Command::Tick { now_ms }) {
        Ok(Response::Tick(outcome)) => outcome,
        other => panic!("{other:?}"),
    };
    assert!(tick(&mut state, 1000 + timeout - 1).marked_down.is_empty());
    state
        .apply(&Command::NodeHeartbeat {
            node: NodeId(1),
            stats: NodeStats::default(),
            now_ms: 1000 + timeout,
        })
        .expect("heartbeat");
    let outcome = tick(&mut state, 1000 + timeout);
    assert_eq!(outcome.marked_down, vec![NodeId(2), NodeId(3)]);
    assert_eq!(state.nodes[&NodeId(2)].state, NodeState::Down);
    assert_eq!(state.nodes[&NodeId(2)].down_since_ms, Some(1000 + timeout));
    // Marked once only.
    assert!(tick(&mut state, 1000 + timeout + 1).marked_down.is_empty());
    let answer = state.apply(&Command::NodeHeartbeat {
        node: NodeId(2),
        stats: NodeStats::default(),
        now_ms: 5, // an old clock: log time does not go back
    });
    assert_eq!(
        answer,
        Ok(Response::Heartbeat {
            state: NodeState::Up,
            max_snapshot_bytes_per_sec: state.settings.max_snapshot_bytes_per_sec
        })
    );
    assert_eq!(state.nodes[&NodeId(2)].down_since_ms, None);
    assert_eq!(
        state.nodes[&NodeId(2)].last_heartbeat_ms,
        1000 + timeout + 1
    );
    let unknown = Command::NodeHeartbeat {
        node: NodeId(42),
        stats: NodeStats::default(),
        now_ms: 0,
    };
    assert_eq!(
        state.apply(&unknown),
        Err(Error::UnknownNode { node: NodeId(42) })
    );
}

#[test]
fn node_state_transitions() {
    use NodeState::{Down, Draining, Removed, Up};
    let cases = [
        (Up, Draining, Ok(Draining)),
        (Draining, Up, Ok(Up)),
        (Up, Down, Err(())),
        (Up, Removed, Ok(Removed)),
        (Draining, Removed, Ok(Removed)),
        (Removed, Up, Err(())),
        (Removed, Draining, Err(())),
    ];
    for (from, to, expected) in cases {
        // Node 4 holds no replica (one shard on nodes 1 to 3), so removing it is allowed.
        let mut state = cluster(4, 1, 3);
        state.nodes.get_mut(&NodeId(4)).expect("node").state = from;
        let result = state.apply(&Command::SetNodeState {
            node: NodeId(4),
            state: to,
            now_ms: 1,
        });
        match expected {
            Ok(now) => {
                assert_eq!(result, Ok(Response::Done), "{from:?} -> {to:?}");
                assert_eq!(state.nodes[&NodeId(4)].state, now);
            }
            Err(()) => assert!(
                matches!(result, Err(Error::InvalidNodeTransition { .. })),
                "{from:?} -> {to:?}: {result:?}"
            ),
        }
    }
    // Cancelling the drain of a silent node leaves it Down.
    let mut state = cluster(3, 1, 3);
    let node = state.nodes.get_mut(&NodeId(1)).expect("node");
    node.state = Draining;
    node.down_since_ms = Some(1);
    state
        .apply(&Command::SetNodeState {
            node: NodeId(1),
            state: Up,
            now_ms: 2,
        })
        .expect("allowed");
    assert_eq!(state.nodes[&NodeId(1)].state, Down);
}

#[test]
fn remove_node_is_refused_while_the_node_holds_or_is_getting_replicas() {
    use NodeState::{Down, Draining, Removed, Up};
    // Whatever its state, a node holding a replica cannot be removed: its replicas would be
    // stranded on a node that must never serve again.
    for from in [Up, Draining, Down] {
        let mut state = cluster(4, 2, 3);
        state.nodes.get_mut(&NodeId(2)).expect("node").state = from;
        let before = state.clone();
        let result = state.apply(&Command::SetNodeState {
            node: NodeId(2),
            state: Removed,
            now_ms: 1,
        });
        assert_eq!(
            result,
            Err(Error::NodeHoldsReplicas {
                node: NodeId(2),
                replicas: 2,
                operators: 0,
            }),
            "{from:?}"
        );
        assert_eq!(state, before, "a refused removal changes nothing");
    }
    // A node that an operator in flight is adding a learner to is refused too, until the
    // operator ends.
    let mut state = cluster(4, 1, 3);
    let shard = ShardId(1);
    state
        .apply(&Command::AddOperator {
            operator: AdminOperator::MoveReplica {
                shard,
                from: NodeId(3),
                to: NodeId(4),
            },
            now_ms: 0,
        })
        .expect("accepted");
    let remove_4 = Command::SetNodeState {
        node: NodeId(4),
        state: Removed,
        now_ms: 1,
    };
    let refused = state.apply(&remove_4);
    assert_eq!(
        refused,
        Err(Error::NodeHoldsReplicas {
            node: NodeId(4),
            replicas: 0,
            operators: 1,
        })
    );
    let message = refused.expect_err("refused").to_string();
    assert!(message.contains("drain-node 4"), "{message}");
    state
        .apply(&Command::CancelOperator { shard, now_ms: 2 })
        .expect("cancelled");
    assert_eq!(state.apply(&remove_4), Ok(Response::Done));
    assert_eq!(state.nodes[&NodeId(4)].state, Removed);
    state.check_invariants();
}

#[test]
fn ids_are_allocated_monotonically() {
    let mut state = cluster(3, 4, 3);
    let alloc = |state: &mut PdState, kind, count| state.apply(&Command::AllocIds { kind, count });
    assert_eq!(
        alloc(&mut state, IdKind::Shard, 3),
        Ok(Response::Ids { first: 5, count: 3 })
    );
    assert_eq!(
        alloc(&mut state, IdKind::Shard, 1),
        Ok(Response::Ids { first: 8, count: 1 })
    );
    assert_eq!(
        alloc(&mut state, IdKind::Node, 2),
        Ok(Response::Ids { first: 4, count: 2 })
    );
    assert_eq!(
        alloc(&mut state, IdKind::Incarnation, 1),
        Ok(Response::Ids { first: 1, count: 1 })
    );
    assert_eq!(
        alloc(&mut state, IdKind::Node, 0),
        Err(Error::IdsExhausted { count: 0 })
    );
    assert!(alloc(&mut state, IdKind::Node, u64::MAX).is_err());
    state.ids.next_incarnation = u32::MAX;
    assert!(alloc(&mut state, IdKind::Incarnation, 1).is_err());
    state.ids.next_node = u64::from(u32::MAX) - 1;
    assert!(alloc(&mut state, IdKind::Node, 2).is_err());
    assert_eq!(state.ids.next_node, u64::from(u32::MAX) - 1);
}

#[test]
fn reports_replace_newer_epochs_and_refuse_older_ones() {
    let mut state = cluster(4, 2, 3);
    let shard = ShardId(1);
    let known = state.descriptor(shard).cloned().expect("shard");
    // Same epoch, same layout: stats only.
    assert_eq!(
        state.apply(&Command::ShardReport(report_of(&state, shard, None, 1))),
        Ok(Response::ShardReport {
            descriptor_updated: false,
            order: None
        })
    );
    // Newer epoch replaces.
    let newer = with_replicas(
        &state,
        shard,
        vec![voter(1), voter(2), voter(3), learner(4)],
    );
    let mut report = report_of(&state, shard, Some(NodeId(1)), 2);
    report.descriptor = newer.clone();
    assert!(matches!(
        state.apply(&Command::ShardReport(report.clone())),
        Ok(Response::ShardReport {
            descriptor_updated: true,
            ..
        })
    ));
    assert_eq!(state.descriptor(shard), Some(&newer));
    assert_eq!(state.shard_map.version, 2);
    // Older epoch refused, state unchanged.
    let before = state.clone();
    report.descriptor = known.clone();
    assert_eq!(
        state.apply(&Command::ShardReport(report.clone())),
        Err(Error::StaleDescriptor {
            shard,
            reported: known.epoch,
            known: newer.epoch
        })
    );
    assert_eq!(state, before);
    // Same epoch, different replicas: conflict.
    let mut conflict = newer.clone();
    conflict.replicas.pop();
    report.descriptor = conflict;
    assert_eq!(
        state.apply(&Command::ShardReport(report.clone())),
        Err(Error::InvalidShardMap {
            reason: InvalidReason::EpochConflict
        })
    );
    // Leader must be a voter; replicas must be known nodes; shard must be known.
    let mut report = report_of(&state, shard, None, 3);
    report.leader = NodeId(4);
    assert!(matches!(
        state.apply(&Command::ShardReport(report.clone())),
        Err(Error::LeaderNotVoter { .. })
    ));
    report.leader = NodeId(1);
    report.descriptor.replicas.push(voter(99));
    assert!(matches!(
        state.apply(&Command::ShardReport(report.clone())),
        Err(Error::InvalidShardMap {
            reason: InvalidReason::BadReplicas
        })
    ));
    let mut report = report_of(&state, shard, None, 3);
    report.descriptor.id = ShardId(77);
    assert_eq!(
        state.apply(&Command::ShardReport(report)),
        Err(Error::UnknownShard { shard: ShardId(77) })
    );
    // A grown arc (a merge) is not understood.
    let mut report = report_of(&state, ShardId(2), None, 3);
    report.descriptor.arc.start -= 1;
    report.descriptor.epoch.version += 1;
    assert_eq!(
        state.apply(&Command::ShardReport(report)),
        Err(Error::InvalidShardMap {
            reason: InvalidReason::ArcMismatch
        })
    );
    assert_eq!(state, before);
}

/// Walks an admin move through add learner, promote, transfer (the source leads), remove.
#[test]
fn move_replica_walks_through_its_steps() {
    let mut state = cluster(4, 1, 3);
    let shard = ShardId(1);
    let response = state.apply(&Command::AddOperator {
        operator: AdminOperator::MoveReplica {
            shard,
            from: NodeId(1),
            to: NodeId(4),
        },
        now_ms: 10,
    });
    let Ok(Response::Operator(id)) = response else {
        panic!("{response:?}");
    };
    let operator = state.operator(shard).expect("in flight");
    assert_eq!(operator.kind, OperatorKind::Admin);
    let incarnation = match operator.steps[0] {
        Step::AddLearner { node, incarnation } => {
            assert_eq!(node, NodeId(4));
            incarnation
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(state.ids.next_incarnation, incarnation + 1);

    let order = report_current(&mut state, shard, Some(NodeId(1)), 11);
    assert_eq!(
        order.map(|o| (o.operator, o.step)),
        Some((
            id,
            Step::AddLearner {
                node: NodeId(4),
                incarnation
            }
        ))
    );

    // The learner appears but has not caught up: nothing to do yet.
    let added = with_replicas(
        &state,
        shard,
        vec![voter(1), voter(2), voter(3), learner(4)],
    );
    let mut report = report_of(&state, shard, Some(NodeId(1)), 12);
    report.descriptor = added;
    report.caught_up_learners.clear();
    assert_eq!(apply_report(&mut state, report.clone()), None);
    report.caught_up_learners = vec![NodeId(4)];
    report.now_ms = 13;
    let order = apply_report(&mut state, report);
    assert_eq!(
        order.map(|o| o.step),
        Some(Step::PromoteLearner { node: NodeId(4) })
    );

    // Promoted; the replica to remove leads, so PD asks for a transfer first.
    let promoted = with_replicas(&state, shard, vec![voter(1), voter(2), voter(3), voter(4)]);
    let mut report = report_of(&state, shard, Some(NodeId(1)), 14);
    report.descriptor = promoted;
    let order = apply_report(&mut state, report.clone());
    assert!(matches!(order.map(|o| o.step), Some(Step::TransferLeader { to }) if to != NodeId(1)));
    report.leader = NodeId(2);
    let order = apply_report(&mut state, report);
    assert_eq!(
        order.map(|o| o.step),
        Some(Step::RemoveReplica { node: NodeId(1) })
    );

    let removed = with_replicas(&state, shard, vec![voter(2), voter(3), voter(4)]);
    let mut report = report_of(&state, shard, Some(NodeId(2)), 15);
    report.descriptor = removed;
    assert_eq!(apply_report(&mut state, report), None);
    assert!(state.operator(shard).is_none());
    assert_eq!(state.operator_counts.finished, 1);
    let counts = &state.operator_counts;
    assert_eq!(counts.of(OperatorKind::Admin, OperatorEnd::Finished), 1);
    assert_eq!(counts.of(OperatorKind::Repair, OperatorEnd::Finished), 0);
    assert_eq!(counts.of(OperatorKind::Admin, OperatorEnd::Cancelled), 0);
}

#[test]
fn removal_is_withheld_while_it_would_leave_too_few_voters() {
    let mut state = cluster(4, 1, 3);
    let shard = ShardId(1);
    // A move whose learner was never promoted (a broken plan) must not remove a voter.
    let id = crate::operator::OperatorId(state.ids.next_operator);
    crate::apply::Machine(&mut state).insert_operator(crate::operator::Operator {
        id,
        shard,
        kind: OperatorKind::Admin,
        steps: vec![Step::RemoveReplica { node: NodeId(2) }],
        current: 0,
        created_ms: 0,
        step_started_ms: 0,
        epoch: Epoch::default(),
    });
    state.ids.next_operator += 1;
    assert_eq!(report_current(&mut state, shard, Some(NodeId(1)), 1), None);
    // With a fourth voter it goes ahead.
    let four = with_replicas(&state, shard, vec![voter(1), voter(2), voter(3), voter(4)]);
    let mut report = report_of(&state, shard, Some(NodeId(1)), 2);
    report.descriptor = four;
    assert_eq!(
        apply_report(&mut state, report).map(|o| o.step),
        Some(Step::RemoveReplica { node: NodeId(2) })
    );
}

#[test]
fn stalled_operator_is_cancelled_and_its_learner_removed() {
    let mut state = cluster(4, 1, 3);
    let shard = ShardId(1);
    state
        .apply(&Command::AddOperator {
            operator: AdminOperator::MoveReplica {
                shard,
                from: NodeId(3),
                to: NodeId(4),
            },
            now_ms: 0,
        })
        .expect("accepted");
    // The learner shows up but never catches up.
    let added = with_replicas(
        &state,
        shard,
        vec![voter(1), voter(2), voter(3), learner(4)],
    );
    let mut report = report_of(&state, shard, Some(NodeId(1)), 1);
    report.descriptor = added;
    report.caught_up_learners.clear();
    apply_report(&mut state, report.clone());
    let timeout = state.settings.operator_step_timeout_ms;
    heartbeat_all(&mut state, 1 + timeout);
    let Ok(Response::Tick(outcome)) = state.apply(&Command::Tick {
        now_ms: 1 + timeout,
    }) else {
        panic!("tick");
    };
    assert_eq!(outcome.cancelled.len(), 1);
    let counts = &state.operator_counts;
    assert_eq!(counts.of(OperatorKind::Admin, OperatorEnd::TimedOut), 1);
    assert_eq!(counts.of(OperatorKind::Admin, OperatorEnd::Cancelled), 0);
    assert_eq!(counts.cancelled, 1);
    let rollback = state.operator(shard).expect("rollback in flight");
    assert_eq!(rollback.kind, OperatorKind::Rollback);
    assert_eq!(
        rollback.steps,
        vec![Step::RemoveReplica { node: NodeId(4) }]
    );
    report.now_ms = 2 + timeout;
    assert_eq!(
        apply_report(&mut state, report).map(|o| o.step),
        Some(Step::RemoveReplica { node: NodeId(4) })
    );
    // Cancelling before the learner appeared leaves nothing to roll back.
    let mut state = cluster(4, 1, 3);
    state
        .apply(&Command::AddOperator {
            operator: AdminOperator::MoveReplica {
                shard,
                from: NodeId(3),
                to: NodeId(4),
            },
            now_ms: 0,
        })
        .expect("accepted");
    let id = state.operator(shard).map(|o| o.id).expect("op");
    assert_eq!(
        state.apply(&Command::CancelOperator { shard, now_ms: 1 }),
        Ok(Response::Operator(id))
    );
    assert!(state.operator(shard).is_none());
    let counts = &state.operator_counts;
    assert_eq!(counts.of(OperatorKind::Admin, OperatorEnd::Cancelled), 1);
    assert_eq!(counts.of(OperatorKind::Admin, OperatorEnd::TimedOut), 0);
    assert_eq!(
        state.apply(&Command::CancelOperator { shard, now_ms: 1 }),
        Err(Error::NoOperator { shard })
    );
}

#[test]
fn add_learner_to_a_node_that_went_away_is_cancelled() {
    let mut state = cluster(4, 1, 3);
    let shard = ShardId(1);
    state
        .apply(&Command::AddOperator {
            operator: AdminOperator::MoveReplica {
                shard,
                from: NodeId(3),
                to: NodeId(4),
            },
            now_ms: 0,
        })
        .expect("accepted");
    state
        .apply(&Command::SetNodeState {
            node: NodeId(4),
            state: NodeState::Draining,
            now_ms: 1,
        })
        .expect("drain");
    // The rollback removes the learner that may have been added (it was not): done at once.
    assert_eq!(report_current(&mut state, shard, None, 2), None);
    assert!(state.operator(shard).is_none());
    assert_eq!(state.operator_counts.cancelled, 1);
    assert_eq!(
        state
            .operator_counts
            .of(OperatorKind::Admin, OperatorEnd::Abandoned),
        1
    );
}

#[test]
fn admin_operators_are_validated() {
    let state = cluster(4, 2, 3);
    let shard = ShardId(1); // on nodes 1, 2, 3
    let cases = [
        (
            "unknown shard",
            AdminOperator::TransferLeader {
                shard: ShardId(9),
                to: NodeId(1),
            },
            Error::UnknownShard { shard: ShardId(9) },
        ),
        (
            "source without replica",
            AdminOperator::MoveReplica {
                shard,
                from: NodeId(4),
                to: NodeId(4),
            },
            Error::OperatorRejected {
                shard,
                reason: RejectReason::SourceHasNoReplica,
            },
        ),
        (
            "target has replica",
            AdminOperator::MoveReplica {
                shard,
                from: NodeId(1),
                to: NodeId(2),
            },
            Error::OperatorRejected {
                shard,
                reason: RejectReason::TargetHasReplica,
            },
        ),
        (
            "unknown target",
            AdminOperator::MoveReplica {
                shard,
                from: NodeId(1),
                to: NodeId(8),
            },
            Error::UnknownNode { node: NodeId(8) },
        ),
        (
            "transfer to non-voter",
            AdminOperator::TransferLeader {
                shard,
                to: NodeId(4),
            },
            Error::OperatorRejected {
                shard,
                reason: RejectReason::TargetNotVoter,
            },
        ),
        (
            "transfer to leader",
            AdminOperator::TransferLeader {
                shard,
                to: NodeId(1),
            },
            Error::OperatorRejected {
                shard,
                reason: RejectReason::NoChange,
            },
        ),
        (
            "split outside",
            AdminOperator::SplitShard { shard, at: Some(0) },
            Error::OperatorRejected {
                shard,
                reason: RejectReason::SplitOutsideArc,
            },
        ),
    ];
    for (name, operator, error) in cases {
        let mut state = state.clone();
        assert_eq!(
            state.apply(&Command::AddOperator {
                operator,
                now_ms: 1
            }),
            Err(error),
            "{name}"
        );
        assert!(state.operators.is_empty(), "{name}");
    }
    let mut state = state.clone();
    state.nodes.get_mut(&NodeId(4)).expect("n4").state = NodeState::Down;
    assert_eq!(
        state.apply(&Command::AddOperator {
            operator: AdminOperator::MoveReplica {
                shard,
                from: NodeId(1),
                to: NodeId(4)
            },
            now_ms: 1
        }),
        Err(Error::OperatorRejected {
            shard,
            reason: RejectReason::TargetNotUp
        })
    );
    let transfer = Command::AddOperator {
        operator: AdminOperator::TransferLeader {
            shard,
            to: NodeId(2),
        },
        now_ms: 1,
    };
    assert!(state.apply(&transfer).is_ok());
    assert!(matches!(
        state.apply(&transfer),
        Err(Error::ShardBusy { .. })
    ));
}

/// A planned split: the left part's report files the right part under the new id (epoch zero)
/// until the new shard reports itself.
#[test]
fn split_updates_the_map_from_the_left_report() {
    let mut state = cluster(3, 1, 3);
    let shard = ShardId(1);
    let at = 1u64 << 63;
    state
        .apply(&Command::AddOperator {
            operator: AdminOperator::SplitShard { shard, at: None },
            now_ms: 1,
        })
        .expect("split accepted");
    let order = report_current(&mut state, shard, None, 2);
    let Some(Step::Split { new_shard, at: cut }) = order.map(|o| o.step) else {
        panic!("{order:?}");
    };
    assert_eq!((new_shard, cut), (ShardId(2), at));
    let mut left = state.descriptor(shard).cloned().expect("shard");
    left.arc = Arc {
        start: 0,
        end: Some(at),
    };
    left.epoch.version += 1;
    let mut report = report_of(&state, shard, None, 3);
    report.descriptor = left.clone();
    assert_eq!(apply_report(&mut state, report), None);
    assert!(state.operator(shard).is_none());
    let right = state
        .descriptor(new_shard)
        .cloned()
        .expect("right part filed");
    assert_eq!(
        right.arc,
        Arc {
            start: at,
            end: None
        }
    );
    assert_eq!(right.epoch, Epoch::default());
    assert_eq!(state.shard_map.shards.len(), 2);
    // The new shard's own report replaces the placeholder.
    let mut own = right.clone();
    own.epoch = left.epoch;
    let mut report = report_of(&state, new_shard, None, 4);
    report.descriptor = own.clone();
    apply_report(&mut state, report);
    assert_eq!(state.descriptor(new_shard), Some(&own));
}

/// An unplanned (or cancelled) split: the left part waits until the right part has reported.
#[test]
fn split_without_operator_is_learned_from_the_right_part() {
    let mut state = cluster(3, 1, 3);
    let shard = ShardId(1);
    let at = 1u64 << 62;
    let Ok(Response::Ids { first, .. }) = state.apply(&Command::AllocIds {
        kind: IdKind::Shard,
        count: 1,
    }) else {
        panic!("alloc");
    };
    let new_shard = ShardId(first);
    let mut left = state.descriptor(shard).cloned().expect("shard");
    left.arc = Arc {
        start: 0,
        end: Some(at),
    };
    left.epoch.version += 1;
    let mut right = left.clone();
    right.id = new_shard;
    right.arc = Arc {
        start: at,
        end: None,
    };
    let mut report = report_of(&state, shard, None, 1);
    report.descriptor = left.clone();
    assert_eq!(
        state.apply(&Command::ShardReport(report.clone())),
        Err(Error::InvalidShardMap {
            reason: InvalidReason::ArcMismatch
        })
    );
    let mut right_report = report.clone();
    right_report.descriptor = right.clone();
    apply_report(&mut state, right_report);
    assert_eq!(state.descriptor(new_shard), Some(&right));
    apply_report(&mut state, report);
    assert_eq!(state.descriptor(shard), Some(&left));
    assert_eq!(state.shard_map.shards.len(), 2);
}

#[test]
fn settings_and_switches_are_applied_when_valid() {
    let mut state = cluster(3, 1, 3);
    assert_eq!(
        state.apply(&Command::SetScheduler {
            scheduler: SchedulerKind::Repair,
            enabled: true
        }),
        Ok(Response::Done)
    );
    assert!(state.settings.repair);
    let bad = Settings {
        max_operators: 0,
        ..Settings::default()
    };
    assert!(state.apply(&Command::SetSettings(bad)).is_err());
    assert!(state.settings.repair);
    let good = Settings {
        max_operators: 3,
        ..Settings::default()
    };
    assert_eq!(
        state.apply(&Command::SetSettings(good.clone())),
        Ok(Response::Done)
    );
    assert_eq!(state.settings, good);
}

#[test]
fn commands_and_responses_round_trip_through_postcard() {
    let state = cluster(3, 2, 3);
    let commands = vec![
        bootstrap_command(3, round_robin_map(3, 2, 3), Settings::default()),
        Command::ShardReport(report_of(&state, ShardId(1), None, 9)),
        Command::Tick { now_ms: 3 },
        Command::AddOperator {
            operator: AdminOperator::SplitShard {
                shard: ShardId(1),
                at: Some(5),
            },
            now_ms: 3,
        },
        Command::AllocIds {
            kind: IdKind::Incarnation,
            count: 2,
        },
    ];
    for command in commands {
        let bytes = postcard::to_allocvec(&command).expect("encode");
        let back: Command = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, command);
    }
    let bytes = postcard::to_allocvec(&state).expect("encode state");
    let back: PdState = postcard::from_bytes(&bytes).expect("decode state");
    assert_eq!(back, state);
    let error = Error::StaleDescriptor {
        shard: ShardId(1),
        reported: Epoch::default(),
        known: Epoch::default(),
    };
    let bytes = postcard::to_allocvec(&error).expect("encode error");
    assert_eq!(
        postcard::from_bytes::<Error>(&bytes).expect("decode"),
        error
    );
    // Garbage never panics.
    for len in 0..64 {
        let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        let _ = postcard::from_bytes::<Command>(&junk);
    }
    let _ = ShardMap::default();
    let _ = ReplicaRole::Voter;
}

#[test]
fn moving_a_learner_is_refused() {
    let mut state = cluster(4, 1, 3);
    let shard = ShardId(1);
    let with_learner = with_replicas(
        &state,
        shard,
        vec![voter(1), voter(2), voter(3), learner(4)],
    );
    let mut report = report_of(&state, shard, Some(NodeId(1)), 1);
    report.descriptor = with_learner;
    apply_report(&mut state, report);
    // A fifth node to move to.
    state.nodes.insert(
        NodeId(5),
        crate::node::NodeInfo {
            id: NodeId(5),
            ..state.nodes[&NodeId(4)].clone()
        },
    );
    state.ids.next_node = 6;
    let move_learner = Command::AddOperator {
        operator: AdminOperator::MoveReplica {
            shard,
            from: NodeId(4),
            to: NodeId(5),
        },
        now_ms: 2,
    };
    assert_eq!(
        state.apply(&move_learner),
        Err(Error::OperatorRejected {
            shard,
            reason: RejectReason::SourceIsLearner
        })
    );
}

/// The first store incarnation a node reports is kept; the same one again is accepted, another
/// one is refused (the node lost its data), and a removed node is told so.
#[test]
fn a_node_keeps_the_store_incarnation_it_reported_first() {
    let mut state = PdState::new();
    let report = |node: u64, incarnation: u64| Command::ReportStore {
        node: NodeId(node),
        incarnation,
    };
    assert_eq!(state.apply(&report(1, 7)), Err(Error::NotBootstrapped));
    let mut state = cluster(3, 4, 3);
    assert_eq!(state.apply(&report(1, 0xaa)), Ok(Response::Done));
    assert_eq!(state.apply(&report(1, 0xaa)), Ok(Response::Done));
    assert_eq!(
        state.apply(&report(1, 0xbb)),
        Err(Error::StoreMismatch {
            node: NodeId(1),
            recorded: 0xaa,
            reported: 0xbb,
        })
    );
    assert_eq!(state.store_incarnations.get(&NodeId(1)), Some(&0xaa));
    // Other nodes are independent; a node that has not registered yet may report first.
    assert_eq!(state.apply(&report(9, 0xbb)), Ok(Response::Done));
    assert_eq!(
        state.apply(&report(0, 1)),
        Err(Error::UnknownNode { node: NodeId(0) })
    );
    state.nodes.get_mut(&NodeId(2)).expect("node").state = NodeState::Removed;
    assert_eq!(
        state.apply(&report(2, 0xcc)),
        Err(Error::NodeRemoved { node: NodeId(2) })
    );
    state.check_invariants();
}

/// A leader transfer to a node that starts draining (or is removed) is abandoned at once
/// instead of holding the shard, and its drain, until the step timeout.
#[test]
fn a_leader_transfer_to_a_draining_node_is_abandoned() {
    let mut state = cluster(3, 1, 3);
    let shard = ShardId(1);
    report_current(&mut state, shard, Some(NodeId(1)), 1);
    state
        .apply(&Command::AddOperator {
            operator: AdminOperator::TransferLeader {
                shard,
                to: NodeId(3),
            },
            now_ms: 2,
        })
        .expect("accepted");
    state
        .apply(&Command::SetNodeState {
            node: NodeId(3),
            state: NodeState::Draining,
            now_ms: 3,
        })
        .expect("drain");
    assert_eq!(report_current(&mut state, shard, Some(NodeId(1)), 4), None);
    assert!(state.operator(shard).is_none());
    assert_eq!(
        state
            .operator_counts
            .of(OperatorKind::Admin, OperatorEnd::Abandoned),
        1
    );
}

/// A node's space alarm is recorded and cleared by `SpaceAlarm`; `space_alarm_of` names the
/// first node holding a replica of a shard whose alarm is up; unknown and removed nodes are
/// refused.
#[test]
fn space_alarms_are_recorded_per_node_and_found_through_a_shards_replicas() {
    let alarm = ringkv_types::SpaceAlarm {
        free_bytes: 5,
        reserve_bytes: 10,
    };
    let raise = |node: u64| Command::SpaceAlarm {
        node: NodeId(node),
        alarm: Some(alarm),
    };
    let clear = |node: u64| Command::SpaceAlarm {
        node: NodeId(node),
        alarm: None,
    };
    assert_eq!(PdState::new().apply(&raise(1)), Err(Error::NotBootstrapped));
    let mut state = cluster(4, 4, 3);
    let descriptor = state.shard_map.shards[0].clone();
    let holder = descriptor.replicas[1].node;
    let outsider = (1..=4)
        .map(NodeId)
        .find(|node| descriptor.replicas.iter().all(|r| r.node != *node))
        .expect("a node without a replica of the shard");
    assert_eq!(state.space_alarm_of(&descriptor), None);
    assert_eq!(state.apply(&raise(outsider.get())), Ok(Response::Done));
    assert_eq!(
        state.space_alarm_of(&descriptor),
        None,
        "not a replica's node"
    );
    assert_eq!(state.apply(&raise(holder.get())), Ok(Response::Done));
    assert_eq!(state.space_alarm_of(&descriptor), Some((holder, alarm)));
    assert_eq!(state.apply(&clear(holder.get())), Ok(Response::Done));
    assert_eq!(state.apply(&clear(holder.get())), Ok(Response::Done));
    assert_eq!(state.space_alarm_of(&descriptor), None);
    assert_eq!(state.space_alarms.len(), 1);
    assert_eq!(
        state.apply(&raise(42)),
        Err(Error::UnknownNode { node: NodeId(42) })
    );
    state.nodes.get_mut(&outsider).expect("node").state = NodeState::Removed;
    assert_eq!(
        state.apply(&clear(outsider.get())),
        Err(Error::NodeRemoved { node: outsider })
    );
    state.check_invariants();
}

/// A move whose learner was promoted just before a third voter went silent cannot remove its
/// source (two live voters would be left of three): the tick abandons it instead of holding
/// the shard until the step timeout, and repair takes the silent voter out instead. Seen in
/// the container replacement test: a balance move held this way kept `drain-node` of the
/// silent node from finishing for 10 minutes.
#[test]
fn a_removal_made_unsafe_by_a_silent_voter_is_abandoned_and_repair_trims_that_voter() {
    let mut state = cluster(4, 1, 3);
    state.settings.set_enabled(SchedulerKind::Repair, true);
    let shard = ShardId(1);
    state
        .apply(&Command::AddOperator {
            operator: AdminOperator::MoveReplica {
                shard,
                from: NodeId(1),
                to: NodeId(4),
            },
            now_ms: 10,
        })
        .expect("accepted");
    let promoted = with_replicas(&state, shard, vec![voter(1), voter(2), voter(3), voter(4)]);
    let mut report = report_of(&state, shard, Some(NodeId(2)), 11);
    report.descriptor = promoted;
    assert_eq!(
        apply_report(&mut state, report.clone()).map(|o| o.step),
        Some(Step::RemoveReplica { node: NodeId(1) }),
        "every voter alive: the removal is handed out"
    );

    // Node 3 goes silent; the others heartbeat on, and a tick past the timeout marks it down.
    let now = 12 + state.settings.heartbeat_timeout_ms;
    for node in [1, 2, 4] {
        state
            .apply(&Command::NodeHeartbeat {
                node: NodeId(node),
                stats: Default::default(),
                now_ms: now,
            })
            .expect("heartbeat");
    }
    let Ok(Response::Tick(outcome)) = state.apply(&Command::Tick { now_ms: now }) else {
        panic!("tick refused");
    };
    assert_eq!(outcome.marked_down, vec![NodeId(3)]);
    assert_eq!(outcome.cancelled.len(), 1, "{outcome:?}");
    assert_eq!(
        state
            .operator_counts
            .of(OperatorKind::Admin, OperatorEnd::Abandoned),
        1
    );
    let repair = state.operator(shard).expect("repair trims the extra voter");
    assert_eq!(repair.kind, OperatorKind::Repair);
    assert_eq!(repair.steps, vec![Step::RemoveReplica { node: NodeId(3) }]);
    report.now_ms = now + 1;
    assert_eq!(
        apply_report(&mut state, report).map(|o| o.step),
        Some(Step::RemoveReplica { node: NodeId(3) })
    );
    state.check_invariants();
}
