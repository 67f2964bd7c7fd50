//! Membership changes decided by the placement driver (`ringkv-pd`) instead of the random fault
//! injector, in about half of the seeds with spare nodes.
//!
//! The world plays `ringkvd`'s part: nodes heartbeat, each group's leader reports its applied
//! configuration (only when its last conf change is committed) and carries out the step PD
//! answers with, through the same Raft calls the random injector uses (`propose_conf_change`,
//! `transfer_leader`). PD's state machine runs in-process as an oracle (group 0 itself is not
//! simulated). Crashes longer than `max_down_time` trigger repair; a random node is drained
//! for a while, which forces moves, and then un-drained, which lets balancing move replicas
//! back. The safety checkers therefore cover PD-driven changes under every fault the
//! simulator injects. Time for PD is the simulator's clock (`now`, in time units).

use super::World;
use crate::params::TICK_UNITS;
use crate::replica::Replica;
use ringkv_pd::{
    Apply, Command, NodeRegistration, NodeState, NodeStats, PdState, Response, Settings,
    ShardReport, ShardStats, Step,
};
use ringkv_raft::{ConfChange, MemStorage, Status};
use ringkv_types::ring::Arc;
use ringkv_types::{Epoch, NodeId, ReplicaRole, ShardDescriptor, ShardId, ShardMap};
use std::collections::BTreeMap;

/// Ticks between heartbeats (and PD ticks).
const HEARTBEAT_EVERY_TICKS: u64 = 5;
/// Ticks between a leader's reports.
const REPORT_EVERY_TICKS: u64 = 3;

/// PD and what the world needs to talk to it.
pub(super) struct Placement {
    pub(super) pd: PdState,
    /// Each group's arc, as bootstrapped.
    arcs: BTreeMap<ShardId, Arc>,
    /// The node to drain and when: (start tick, end tick, node).
    drain: Option<(u64, u64, NodeId)>,
    /// Orders carried out (proposed or started).
    pub(super) orders: u64,
}

impl Placement {
    /// Bootstraps PD with the world's nodes and groups (`members` are the initial voters, whose
    /// member ids equal their node ids).
    pub(super) fn new(
        nodes: u64,
        groups: &[(ShardId, Vec<NodeId>)],
        replication: u64,
        drain: Option<(u64, u64, NodeId)>,
    ) -> Option<Self> {
        let arcs: BTreeMap<ShardId, Arc> = groups
            .iter()
            .map(|(group, _)| *group)
            .zip(Arc::split_even(groups.len() as u64))
            .collect();
        let shards = groups
            .iter()
            .filter_map(|(group, members)| {
                Some(ShardDescriptor {
                    id: *group,
                    arc: *arcs.get(group)?,
                    epoch: epoch(0),
                    replicas: members
                        .iter()
                        .map(|&node| ringkv_types::Replica {
                            node,
                            role: ReplicaRole::Voter,
                            member: node,
                        })
                        .collect(),
                })
            })
            .collect();
        let settings = Settings {
            replication_factor: u32::try_from(replication).ok()?,
            max_operators: 4,
            max_snapshots_per_node: 2,
            heartbeat_timeout_ms: 20 * TICK_UNITS,
            max_down_time_ms: 30 * TICK_UNITS,
            operator_step_timeout_ms: 100 * TICK_UNITS,
            split: false,
            ..Settings::default()
        };
        let mut pd = PdState::new();
        let bootstrap = Command::Bootstrap {
            cluster_id: 1,
            cluster_name: "sim".to_string(),
            nodes: (1..=nodes)
                .map(|n| {
                    let registration = NodeRegistration {
                        addr: format!("n{n}"),
                        labels: BTreeMap::new(),
                        capacity_bytes: 1 << 30,
                    };
                    (NodeId(n), registration)
                })
                .collect(),
            shard_map: ShardMap { version: 1, shards },
            settings,
            now_ms: 0,
        };
        pd.apply(&bootstrap).ok()?;
        Some(Self {
            pd,
            arcs,
            drain,
            orders: 0,
        })
    }

    fn apply(&mut self, command: &Command) -> Option<Response> {
        let response = self.pd.apply(command).ok();
        self.pd.check_invariants();
        response
    }

    /// User-table commands interleaved with placement (the identity issue): a fixed cycle of
    /// add, grant, password change, revoke, key rotation and delete over a few users, so the
    /// PD model applies them between heartbeats, ticks and reports and `check_invariants`
    /// (user generations, key ids) runs after each.
    fn drive_users(&mut self, round: u64, now: u64) {
        use ringkv_pd::{AuthCommand, Role};
        const HASH: &str =
            "$argon2id$v=19$m=19456,t=2,p=1$c2ltc2FsdHNpbQ$c2ltaGFzaHNpbWhhc2hzaW1oYXNoc2ltaGFzaA";
        let user = format!("user{}", (round / 6) % 3);
        let role = Role::Read("shared".into());
        let command = match round % 6 {
            0 => AuthCommand::AddUser {
                name: user.clone(),
                password_hash: HASH.into(),
            },
            1 => AuthCommand::Grant {
                name: user.clone(),
                role,
            },
            2 => AuthCommand::SetPassword {
                name: user.clone(),
                password_hash: HASH.into(),
            },
            3 => AuthCommand::Revoke {
                name: user.clone(),
                role,
            },
            4 => AuthCommand::AddSigningKey {
                private_pkcs8: vec![u8::try_from(round % 251).unwrap_or(0); 48],
                public: vec![1; 32],
            },
            _ => AuthCommand::DeleteUser { name: user.clone() },
        };
        let before = self.pd.auth.users.get(&user).map(|u| u.generation);
        let applied = self.apply(&Command::Auth {
            command,
            now_ms: now,
        });
        // Every step of the cycle applies, and a password change or a revoke moves the user
        // to a newer generation (older tokens stop working).
        assert!(applied.is_some(), "user command of round {round} refused");
        let after = self.pd.auth.users.get(&user).map(|u| u.generation);
        if matches!(round % 6, 2 | 3) {
            assert!(after > before, "generation did not grow in round {round}");
        }
    }
}

/// The epoch the sim reports: the index of the entry that set the configuration orders conf
/// changes (it only grows across leaders once committed); there are no splits.
fn epoch(conf_index: u64) -> Epoch {
    Epoch {
        conf_ver: conf_index,
        version: 1,
    }
}

impl World {
    /// One chaos tick of PD driving: heartbeats, PD ticks, drains, leader reports and orders.
    pub(super) fn drive_placement(&mut self) {
        let tick = self.now / TICK_UNITS;
        let now = self.now;
        let up: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.up)
            .map(|(id, _)| *id)
            .collect();
        let Some(placement) = self.placement.as_mut() else {
            return;
        };
        if tick.is_multiple_of(HEARTBEAT_EVERY_TICKS) {
            for node in up {
                placement.apply(&Command::NodeHeartbeat {
                    node,
                    stats: NodeStats::default(),
                    now_ms: now,
                });
            }
            if let Some((start, end, node)) = placement.drain {
                let state = if tick >= end {
                    placement.drain = None;
                    Some(NodeState::Up)
                } else {
                    (tick >= start).then_some(NodeState::Draining)
                };
                if let Some(state) = state {
                    let current = placement.pd.nodes.get(&node).map(|n| n.state);
                    if current != Some(state) {
                        placement.apply(&Command::SetNodeState {
                            node,
                            state,
                            now_ms: now,
                        });
                        self.trace.record(&[now, 14, node.get(), state as u64]);
                    }
                }
            }
            placement.apply(&Command::Tick { now_ms: now });
            placement.drive_users(tick / HEARTBEAT_EVERY_TICKS, now);
        }
        if !tick.is_multiple_of(REPORT_EVERY_TICKS) {
            return;
        }
        for group in self.groups.clone() {
            self.report_to_placement(group);
        }
    }

    /// The group's leader reports its committed configuration and acts on PD's answer.
    fn report_to_placement(&mut self, group: ShardId) {
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
        // Only an applied (committed) configuration is reported: every later leader has it.
        if status.conf_index > status.committed {
            return;
        }
        let Some(report) = self.report_of(group, leader, &status) else {
            return;
        };
        let descriptor_epoch = report.descriptor.epoch;
        let Some(placement) = self.placement.as_mut() else {
            return;
        };
        let Some(Response::ShardReport {
            order: Some(order), ..
        }) = placement.apply(&Command::ShardReport(report))
        else {
            return;
        };
        if order.epoch != descriptor_epoch {
            return;
        }
        self.carry_out(group, leader, &status, order.step);
    }

    /// The leader's report: its configuration as a descriptor (member ids mapped to nodes),
    /// and the learners whose log reaches the leader's commit index.
    fn report_of(&self, group: ShardId, leader: NodeId, status: &Status) -> Option<ShardReport> {
        let placement = self.placement.as_ref()?;
        let mut replicas = Vec::new();
        let mut caught_up_learners = Vec::new();
        for (members, role) in [
            (&status.conf.voters, ReplicaRole::Voter),
            (&status.conf.learners, ReplicaRole::Learner),
        ] {
            for member in members {
                let node = *self.member_node.get(member)?;
                replicas.push(ringkv_types::Replica {
                    node,
                    role,
                    member: *member,
                });
                let caught_up = self
                    .nodes
                    .get(&node)
                    .filter(|n| n.up)
                    .and_then(|n| n.replicas.get(&group))
                    .filter(|r| r.member == *member)
                    .and_then(|r| r.raw.as_ref())
                    .is_some_and(|raw| raw.status().last_index >= status.committed);
                if role == ReplicaRole::Learner && caught_up {
                    caught_up_learners.push(node);
                }
            }
        }
        replicas.sort_by_key(|r| r.node);
        Some(ShardReport {
            descriptor: ShardDescriptor {
                id: group,
                arc: *placement.arcs.get(&group)?,
                epoch: epoch(status.conf_index.get()),
                replicas,
            },
            leader,
            stats: ShardStats::default(),
            caught_up_learners,
            split_hint: None,
            now_ms: self.now,
        })
    }

    /// Carries out one step as `ringkvd`'s leader would.
    fn carry_out(&mut self, group: ShardId, leader: NodeId, status: &Status, step: Step) {
        let member_on = |node: NodeId, members: &[NodeId]| {
            members
                .iter()
                .copied()
                .find(|m| self.member_node.get(m) == Some(&node))
        };
        let change = match step {
            Step::AddLearner { node, incarnation } => {
                let member = ringkv_pd::member_id(node, incarnation);
                if status.conf.members().any(|m| m == member) {
                    return;
                }
                self.host_new_member(group, node, member);
                Some(ConfChange::AddLearner(member))
            }
            Step::PromoteLearner { node } => {
                member_on(node, &status.conf.learners).map(ConfChange::PromoteLearner)
            }
            Step::RemoveReplica { node } => {
                let members: Vec<NodeId> = status.conf.members().collect();
                member_on(node, &members).map(ConfChange::Remove)
            }
            Step::TransferLeader { to } => {
                if let Some(member) = member_on(to, &status.conf.voters)
                    && let Some(raw) = self
                        .live_replica(leader, group)
                        .and_then(|r| r.raw.as_mut())
                {
                    let _ = raw.transfer_leader(member);
                    self.trace
                        .record(&[self.now, 13, group.get(), leader.get(), member.get()]);
                    if let Some(placement) = self.placement.as_mut() {
                        placement.orders += 1;
                    }
                }
                None
            }
            // Splits are off in the simulator's PD settings.
            Step::Split { .. } => None,
        };
        let Some(change) = change else {
            return;
        };
        if let Some(raw) = self
            .live_replica(leader, group)
            .and_then(|r| r.raw.as_mut())
        {
            let _ = raw.propose_conf_change(change);
            self.trace
                .record(&[self.now, 13, group.get(), leader.get()]);
            if let Some(placement) = self.placement.as_mut() {
                placement.orders += 1;
            }
        }
    }

    /// Puts a fresh, empty replica for `member` on `node` (once: a repeated order for the same
    /// member reuses it).
    fn host_new_member(&mut self, group: ShardId, node: NodeId, member: NodeId) {
        let hosted = self
            .nodes
            .get(&node)
            .and_then(|n| n.replicas.get(&group))
            .is_some_and(|r| r.member == member);
        if hosted {
            return;
        }
        self.member_node.insert(member, node);
        let seed = self.seed;
        let tuning = self.tuning;
        if let Some(host) = self.nodes.get_mut(&node) {
            let mut replica = Replica::new(group, node, member, MemStorage::new());
            if host.up
                && let Err(e) = replica.start(seed, &tuning)
            {
                panic!("new replica failed to start: {e}");
            }
            host.replicas.insert(group, replica);
        }
    }
}
