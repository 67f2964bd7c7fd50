//! The PD leader's heartbeat triage: what stays in memory, what goes through the log.

use crate::command::{Command, Response, ShardReport, StoreHeartbeat};
use crate::leader_stats::LeaderStats;
use crate::node::{NodeState, NodeStats};
use crate::test_support::{cluster, report_of, report_ok, with_replicas};
use crate::{AdminOperator, Apply, Error, PdState};
use ringkv_types::{NodeId, ShardId};

/// Node 1's heartbeat with the given reports.
fn heartbeat(node: u64, shards: Vec<ShardReport>, full: bool) -> StoreHeartbeat {
    StoreHeartbeat {
        node: NodeId(node),
        stats: NodeStats::default(),
        shards,
        full,
        now_ms: 0,
    }
}

/// The reports of every shard `node` leads in `state`.
fn led_by(state: &PdState, node: u64) -> Vec<ShardReport> {
    state
        .shard_map
        .shards
        .iter()
        .filter(|d| state.leader(d.id) == Some(NodeId(node)))
        .map(|d| report_of(state, d.id, None, 0))
        .collect()
}

fn through_log(answer: &Result<Response, Error>) -> Vec<ShardId> {
    match answer {
        Ok(Response::StoreHeartbeat {
            report_through_log, ..
        }) => report_through_log.clone(),
        other => panic!("unexpected answer {other:?}"),
    }
}

#[test]
fn unchanged_reports_stay_in_memory() {
    let state = cluster(3, 12, 3);
    let mut stats = LeaderStats::new();
    let mut reports = led_by(&state, 1);
    assert!(!reports.is_empty());
    reports[0].stats.writes_per_sec = 7;
    let triage = stats.handle(&state, &heartbeat(1, reports.clone(), true), 1_000);
    assert_eq!(through_log(&triage.answer), Vec::<ShardId>::new());
    let shard = reports[0].descriptor.id;
    assert_eq!(stats.shard(shard).map(|s| s.stats.writes_per_sec), Some(7));
    // The replicated state still has the old figure; the overlay shows the fresh one.
    assert_eq!(state.shards[&shard].stats.writes_per_sec, 0);
    let mut shown = state.clone();
    stats.overlay(&mut shown);
    assert_eq!(shown.shards[&shard].stats.writes_per_sec, 7);
}

#[test]
fn what_decisions_depend_on_goes_through_the_log() {
    let mut state = cluster(4, 8, 3);
    state.settings.split_size_bytes = 1_000;
    let mut stats = LeaderStats::new();
    let mut reports = led_by(&state, 1);
    // 0: size above the split threshold.
    reports[0].stats.size_bytes = 5_000;
    // 1: a new epoch (a learner added).
    let grown = {
        let shard = reports[1].descriptor.id;
        let mut replicas = state.descriptor(shard).unwrap().replicas.clone();
        let spare = (1..=4)
            .map(NodeId)
            .find(|&n| replicas.iter().all(|r| r.node != n))
            .unwrap();
        replicas.push(crate::test_support::learner(spare.get()));
        with_replicas(&state, shard, replicas)
    };
    reports[1].descriptor = grown;
    // 2: another leader: a voter other than node 1 took over (its own heartbeat).
    let taken = reports.remove(2);
    let other = taken.descriptor.id;
    let new_leader = taken.descriptor.voters().find(|&v| v != NodeId(1)).unwrap();
    let takeover = report_of(&state, other, Some(new_leader), 0);
    let triage = stats.handle(
        &state,
        &heartbeat(new_leader.get(), vec![takeover.clone()], false),
        1_000,
    );
    assert_eq!(through_log(&triage.answer), vec![other]);
    state.apply(&Command::ShardReport(takeover)).unwrap();
    let expected: Vec<ShardId> = vec![reports[0].descriptor.id, reports[1].descriptor.id];
    let triage = stats.handle(&state, &heartbeat(1, reports.clone(), false), 1_000);
    assert_eq!(through_log(&triage.answer), expected);
    // Once they went through the log, the same reports stay in memory.
    for report in &reports {
        if expected.contains(&report.descriptor.id) {
            state.apply(&Command::ShardReport(report.clone())).unwrap();
        }
    }
    let triage = stats.handle(&state, &heartbeat(1, reports, false), 2_000);
    assert_eq!(through_log(&triage.answer), Vec::<ShardId>::new());
}

#[test]
fn a_shard_with_an_operator_reports_through_the_log() {
    let mut state = cluster(3, 6, 3);
    let report = led_by(&state, 1).remove(0);
    let shard = report.descriptor.id;
    let to = report
        .descriptor
        .voters()
        .find(|&v| v != NodeId(1))
        .unwrap();
    state
        .apply(&Command::AddOperator {
            operator: AdminOperator::TransferLeader { shard, to },
            now_ms: 0,
        })
        .unwrap();
    let mut stats = LeaderStats::new();
    let triage = stats.handle(&state, &heartbeat(1, vec![report], false), 1_000);
    assert_eq!(through_log(&triage.answer), vec![shard]);
}

#[test]
fn reports_for_another_leader_are_ignored() {
    let state = cluster(3, 6, 3);
    let mut stats = LeaderStats::new();
    let foreign = vec![report_of(&state, ShardId(1), Some(NodeId(2)), 0)];
    let triage = stats.handle(&state, &heartbeat(1, foreign.clone(), false), 1_000);
    assert_eq!(through_log(&triage.answer), Vec::<ShardId>::new());
    assert!(stats.shard(foreign[0].descriptor.id).is_none());
}

#[test]
fn unknown_and_removed_nodes_are_refused() {
    let mut state = cluster(3, 3, 1);
    let mut stats = LeaderStats::new();
    let triage = stats.handle(&state, &heartbeat(9, vec![], false), 1);
    assert_eq!(triage.answer, Err(Error::UnknownNode { node: NodeId(9) }));
    // Node 3 holds shard 3's only replica: move it away first.
    let shard = ShardId(3);
    let moved = with_replicas(&state, shard, vec![crate::test_support::voter(1)]);
    let mut report = report_of(&state, shard, Some(NodeId(3)), 0);
    report.descriptor = moved;
    report.leader = NodeId(1);
    state.apply(&Command::ShardReport(report)).unwrap();
    state
        .apply(&Command::SetNodeState {
            node: NodeId(3),
            state: NodeState::Removed,
            now_ms: 1,
        })
        .unwrap();
    let triage = stats.handle(&state, &heartbeat(3, vec![], false), 2);
    assert_eq!(triage.answer, Err(Error::NodeRemoved { node: NodeId(3) }));
    assert_eq!(triage.propose, None);
}

#[test]
fn a_full_report_forgets_shards_no_longer_led() {
    let mut state = cluster(3, 6, 3);
    let mut stats = LeaderStats::new();
    let reports = led_by(&state, 1);
    stats.handle(&state, &heartbeat(1, reports.clone(), true), 1);
    assert_eq!(stats.shard_count(), reports.len());
    // Node 1 lost the leadership of its first shard.
    let lost = reports[0].descriptor.id;
    let new_leader = reports[0]
        .descriptor
        .voters()
        .find(|&v| v != NodeId(1))
        .unwrap();
    report_ok(&mut state, lost, Some(new_leader), 2);
    stats.handle(&state, &heartbeat(1, reports[1..].to_vec(), true), 3);
    assert!(stats.shard(lost).is_none());
    assert_eq!(stats.shard_count(), reports.len() - 1);
}

/// Applied from the log (a leader that could not triage it), a heartbeat counts as the node's
/// heartbeat and asks for every listed report through the log.
#[test]
fn a_heartbeat_in_the_log_asks_for_every_report() {
    let mut state = cluster(3, 6, 3);
    let reports = led_by(&state, 1);
    let ids: Vec<ShardId> = reports.iter().map(|r| r.descriptor.id).collect();
    let mut beat = heartbeat(1, reports, false);
    beat.now_ms = 500;
    let answer = state.apply(&Command::StoreHeartbeat(beat));
    assert_eq!(through_log(&answer), ids);
    assert_eq!(state.nodes[&NodeId(1)].last_heartbeat_ms, 500);
}

/// A shard with an operator in flight that the node leads is named for a report through the
/// log even when the heartbeat left it out as unchanged, so its next step is handed out within
/// a heartbeat; a shard led elsewhere, or without an operator, is not.
#[test]
fn an_unchanged_led_shard_with_an_operator_is_asked_for_through_the_log() {
    let mut state = cluster(4, 8, 3);
    let mut stats = LeaderStats::new();
    let led = led_by(&state, 1);
    let mine = led[0].descriptor.id;
    let elsewhere = state
        .shard_map
        .shards
        .iter()
        .map(|d| d.id)
        .find(|&s| state.leader(s) != Some(NodeId(1)))
        .expect("a shard led by another node");
    for shard in [mine, elsewhere] {
        let descriptor = state.descriptor(shard).unwrap().clone();
        let to = state
            .leader(shard)
            .and_then(|l| descriptor.voters().find(|&v| v != l))
            .unwrap();
        state
            .apply(&Command::AddOperator {
                operator: AdminOperator::TransferLeader { shard, to },
                now_ms: 1,
            })
            .expect("accepted");
    }
    let triage = stats.handle(&state, &heartbeat(1, Vec::new(), false), 1_000);
    assert_eq!(through_log(&triage.answer), vec![mine]);
    // Sent in the heartbeat (changed), it is named once.
    let triage = stats.handle(&state, &heartbeat(1, led.clone(), false), 2_000);
    assert_eq!(through_log(&triage.answer), vec![mine]);
}
