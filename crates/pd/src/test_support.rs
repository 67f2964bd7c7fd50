//! Builders of PD states and commands for tests: this crate's unit tests, and with the
//! `test-support` feature (dev-dependencies only) the fake clusters of other crates' tests
//! (`ringkv-client`, `ringctl`) and this crate's model test. Bootstrap voters have incarnation 1
//! and epoch `{conf_ver: 1, version: 1}`.
#![allow(
    clippy::missing_panics_doc,
    clippy::unwrap_used,
    reason = "test fixtures: a failure is the test's failure"
)]

use crate::Apply;
use crate::command::{Command, NodeRegistration, Response, ShardReport, ShardStats};
use crate::node::NodeStats;
use crate::settings::Settings;
use crate::state::PdState;
use ringkv_types::ring::Arc;
use ringkv_types::{Epoch, NodeId, Replica, ReplicaRole, ShardDescriptor, ShardId, ShardMap};

/// A registration of a node at `addr` (1 TiB of capacity, no labels).
pub fn registration(addr: &str) -> NodeRegistration {
    NodeRegistration {
        addr: addr.to_string(),
        labels: Default::default(),
        capacity_bytes: 1 << 40,
    }
}

/// A bootstrap voter on `node` (incarnation 1).
pub fn voter(node: u64) -> Replica {
    Replica {
        node: NodeId(node),
        role: ReplicaRole::Voter,
        member: ringkv_types::member_id(NodeId(node), 1),
    }
}

/// A learner on `node` (incarnation 2).
pub fn learner(node: u64) -> Replica {
    Replica {
        node: NodeId(node),
        role: ReplicaRole::Learner,
        member: ringkv_types::member_id(NodeId(node), 2),
    }
}

/// `shards` equal arcs, shard `i` (from 0) on nodes `i, i+1, .., i+rf-1` (mod `nodes`, 1-based).
pub fn round_robin_map(nodes: u64, shards: u64, rf: u64) -> ShardMap {
    let shards = Arc::split_even(shards)
        .into_iter()
        .enumerate()
        .map(|(i, arc)| {
            let i = i as u64;
            let mut replicas: Vec<Replica> = (0..rf).map(|j| voter((i + j) % nodes + 1)).collect();
            replicas.sort_by_key(|r| r.node);
            ShardDescriptor {
                id: ShardId(i + 1),
                arc,
                epoch: Epoch {
                    conf_ver: 1,
                    version: 1,
                },
                replicas,
            }
        })
        .collect();
    ShardMap { version: 1, shards }
}

/// The bootstrap of nodes `1..=nodes` (addresses `10.0.0.N:7000`) with `map`.
pub fn bootstrap_command(nodes: u64, map: ShardMap, settings: Settings) -> Command {
    bootstrap_at(
        "test",
        (1..=nodes).map(|n| (NodeId(n), format!("10.0.0.{n}:7000"))),
        map,
        settings,
    )
}

/// The bootstrap of cluster `name` with `nodes` at their addresses and `map` (log time 0).
pub fn bootstrap_at(
    name: &str,
    nodes: impl IntoIterator<Item = (NodeId, String)>,
    map: ShardMap,
    settings: Settings,
) -> Command {
    Command::Bootstrap {
        cluster_id: 7,
        cluster_name: name.to_string(),
        nodes: nodes
            .into_iter()
            .map(|(node, addr)| (node, registration(&addr)))
            .collect(),
        shard_map: map,
        settings,
        now_ms: 0,
    }
}

/// A bootstrapped cluster: `nodes` nodes, `shards` shards with `rf` round-robin replicas, each
/// shard led by its first replica, every scheduler off.
pub fn cluster(nodes: u64, shards: u64, rf: u64) -> PdState {
    let mut state = PdState::new();
    let mut settings = Settings::default();
    for kind in crate::settings::SchedulerKind::ALL {
        settings.set_enabled(kind, false);
    }
    settings.replication_factor = rf as u32;
    let command = bootstrap_command(nodes, round_robin_map(nodes, shards, rf), settings);
    assert_eq!(state.apply(&command), Ok(Response::Done));
    for shard in 1..=shards {
        report_ok(&mut state, ShardId(shard), None, 0);
    }
    state.check_invariants();
    state
}

/// A report of `shard`'s current descriptor at PD, from `leader` (default: its first voter),
/// with every learner caught up.
pub fn report_of(
    state: &PdState,
    shard: ShardId,
    leader: Option<NodeId>,
    now_ms: u64,
) -> ShardReport {
    let descriptor = state.descriptor(shard).cloned().expect("shard exists");
    let leader = leader
        .or_else(|| state.leader(shard))
        .filter(|l| descriptor.voters().any(|v| v == *l))
        .or_else(|| descriptor.voters().next())
        .expect("a voter");
    let caught_up_learners = descriptor
        .replicas
        .iter()
        .filter(|r| r.role == ReplicaRole::Learner)
        .map(|r| r.node)
        .collect();
    ShardReport {
        descriptor,
        leader,
        stats: ShardStats::default(),
        caught_up_learners,
        split_hint: None,
        now_ms,
    }
}

/// Applies [`report_of`]; panics if PD refuses it.
pub fn report_ok(
    state: &mut PdState,
    shard: ShardId,
    leader: Option<NodeId>,
    now_ms: u64,
) -> Response {
    let report = report_of(state, shard, leader, now_ms);
    let response = state
        .apply(&Command::ShardReport(report))
        .expect("report accepted");
    state.check_invariants();
    response
}

/// A heartbeat from every node at `now_ms` (refusals ignored).
pub fn heartbeat_all(state: &mut PdState, now_ms: u64) {
    let nodes: Vec<NodeId> = state.nodes.keys().copied().collect();
    for node in nodes {
        let _ = state.apply(&Command::NodeHeartbeat {
            node,
            stats: NodeStats::default(),
            now_ms,
        });
    }
}

/// Changes `shard`'s descriptor as its leader would after a conf change, bumping `conf_ver`.
pub fn with_replicas(state: &PdState, shard: ShardId, replicas: Vec<Replica>) -> ShardDescriptor {
    let mut descriptor = state.descriptor(shard).cloned().expect("shard exists");
    descriptor.replicas = replicas;
    descriptor.replicas.sort_by_key(|r| r.node);
    descriptor.epoch.conf_ver += 1;
    descriptor
}
