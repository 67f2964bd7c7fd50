//! Applying commands: the PD state machine's only way to change.
//!
//! Every handler validates the whole command before changing anything, so an error leaves the
//! state untouched and every PD replica ends in the same state whatever the outcome.
//!
//! The state ([`PdState`]) is plain data in `ringkv-types`; [`Apply`] is the one public way to
//! change it. Inside, [`Machine`] borrows the state for one command. The handlers are split by
//! what they change: `nodes.rs` (bootstrap, registration, heartbeats, node states, id
//! allocation, store incarnations, space alarms), `reports.rs` (shard reports and the map),
//! `operators.rs` (operators and the ticks); users and keys are in `crate::auth`.

use crate::command::{
    AdminOperator, Command, IdKind, MAX_HEARTBEAT_SHARDS, MAX_IDS_PER_ALLOC, MAX_TICK_NODES,
    NodeRegistration, Response, ShardReport, StoreHeartbeat, TickOutcome,
};
use crate::error::{Error, InvalidReason, RejectReason, Result};
use crate::node::{NodeInfo, NodeState, NodeStats};
use crate::operator::{Operator, OperatorId, OperatorKind, Step, StepOrder};
use crate::scheduler;
use crate::settings::Settings;
use crate::state::{ClusterInfo, OperatorEnd, PdState, ShardStatus};
use ringkv_types::ring::Arc;
use ringkv_types::{Epoch, NodeId, ReplicaRole, ShardDescriptor, ShardId, ShardMap};
use std::collections::BTreeSet;

/// Longest node address accepted.
pub const MAX_ADDR_BYTES: usize = 256;
/// Most labels per node.
pub const MAX_LABELS: usize = 32;
/// Longest label key or value.
pub const MAX_LABEL_BYTES: usize = 128;
/// Most replicas in one descriptor (7 voters plus learners being added).
pub const MAX_REPLICAS: usize = 16;
/// Most shards in a bootstrap map.
pub const MAX_BOOTSTRAP_SHARDS: usize = 65_536;
/// Most nodes in a bootstrap command.
pub const MAX_BOOTSTRAP_NODES: usize = 1024;
/// Longest cluster name.
pub const MAX_CLUSTER_NAME_BYTES: usize = 128;

mod nodes;
mod operators;
mod reports;

/// Changes the PD state by applying commands (implemented for [`PdState`]).
pub trait Apply {
    /// Applies one committed command. Deterministic: the same commands in the same order give
    /// the same states and responses on every replica.
    ///
    /// # Errors
    /// A typed [`Error`] when the command is invalid or untimely; the state is then unchanged.
    fn apply(&mut self, command: &Command) -> Result<Response>;
}

impl Apply for PdState {
    fn apply(&mut self, command: &Command) -> Result<Response> {
        Machine(self).apply(command)
    }
}

/// The state machine at work on one command: the handlers are its methods.
pub(crate) struct Machine<'a>(pub(crate) &'a mut PdState);

impl Machine<'_> {
    /// [`Apply::apply`].
    fn apply(&mut self, command: &Command) -> Result<Response> {
        match command {
            Command::Bootstrap {
                cluster_id,
                cluster_name,
                nodes,
                shard_map,
                settings,
                now_ms,
            } => self.bootstrap(
                *cluster_id,
                cluster_name,
                nodes,
                shard_map,
                settings,
                *now_ms,
            ),
            Command::RegisterNode { node, now_ms } => self.register_node(node, *now_ms),
            Command::RegisterNodeAs { id, node, now_ms } => {
                self.register_node_as(*id, node, *now_ms)
            }
            Command::NodeHeartbeat {
                node,
                stats,
                now_ms,
            } => self.heartbeat(*node, stats, *now_ms),
            Command::ShardReport(report) => self.shard_report(report),
            Command::Tick { now_ms } => self.tick(*now_ms),
            Command::LeaderTick { now_ms, last_heard } => self.leader_tick(*now_ms, last_heard),
            Command::SetNodeState {
                node,
                state,
                now_ms,
            } => self.set_node_state(*node, *state, *now_ms),
            Command::AddOperator { operator, now_ms } => self.add_admin_operator(operator, *now_ms),
            Command::CancelOperator { shard, now_ms } => {
                self.require_bootstrapped()?;
                let operator = self
                    .0
                    .operators
                    .get(shard)
                    .map(|o| o.id)
                    .ok_or(Error::NoOperator { shard: *shard })?;
                self.advance_time(*now_ms);
                self.cancel_operator(*shard, OperatorEnd::Cancelled);
                Ok(Response::Operator(operator))
            }
            Command::SetScheduler { scheduler, enabled } => {
                self.0.settings.set_enabled(*scheduler, *enabled);
                Ok(Response::Done)
            }
            Command::SetSettings(settings) => {
                settings.validate()?;
                self.0.settings = settings.clone();
                Ok(Response::Done)
            }
            Command::AllocIds { kind, count } => self.alloc_ids(*kind, *count),
            Command::Auth { command, now_ms } => self.apply_auth(command, *now_ms),
            Command::ReportStore { node, incarnation } => self.report_store(*node, *incarnation),
            Command::SpaceAlarm { node, alarm } => self.space_alarm(*node, *alarm),
            Command::StoreHeartbeat(heartbeat) => self.store_heartbeat(heartbeat),
        }
    }

    /// Raises or clears a node's space alarm.
    fn space_alarm(
        &mut self,
        node: NodeId,
        alarm: Option<ringkv_types::SpaceAlarm>,
    ) -> Result<Response> {
        self.require_bootstrapped()?;
        let info = self.0.nodes.get(&node).ok_or(Error::UnknownNode { node })?;
        if info.state == NodeState::Removed {
            return Err(Error::NodeRemoved { node });
        }
        match alarm {
            Some(alarm) => self.0.space_alarms.insert(node, alarm),
            None => self.0.space_alarms.remove(&node),
        };
        Ok(Response::Done)
    }

    /// Records a node's store incarnation at its first report; refuses another one later.
    fn report_store(&mut self, node: NodeId, incarnation: u64) -> Result<Response> {
        self.require_bootstrapped()?;
        if node.get() == 0 || node.get() >= u64::from(u32::MAX) {
            return Err(Error::UnknownNode { node });
        }
        if self
            .0
            .nodes
            .get(&node)
            .is_some_and(|info| info.state == NodeState::Removed)
        {
            return Err(Error::NodeRemoved { node });
        }
        match self.0.store_incarnations.get(&node) {
            Some(&recorded) if recorded != incarnation => Err(Error::StoreMismatch {
                node,
                recorded,
                reported: incarnation,
            }),
            Some(_) => Ok(Response::Done),
            None => {
                self.0.store_incarnations.insert(node, incarnation);
                Ok(Response::Done)
            }
        }
    }

    fn advance_time(&mut self, now_ms: u64) {
        self.0.now_ms = self.0.now_ms.max(now_ms);
    }

    fn require_bootstrapped(&self) -> Result<()> {
        if self.0.cluster.is_some() {
            Ok(())
        } else {
            Err(Error::NotBootstrapped)
        }
    }
}

fn invalid(reason: InvalidReason) -> Error {
    Error::InvalidShardMap { reason }
}

fn check_len(what: &'static str, size: usize, max: usize) -> Result<()> {
    if size > max {
        return Err(Error::TooLarge {
            what: what.into(),
            size: size as u64,
            max: max as u64,
        });
    }
    Ok(())
}

fn validate_registration(registration: &NodeRegistration) -> Result<()> {
    check_len("node address", registration.addr.len(), MAX_ADDR_BYTES)?;
    check_len("node labels", registration.labels.len(), MAX_LABELS)?;
    for (key, value) in &registration.labels {
        check_len("label", key.len().max(value.len()), MAX_LABEL_BYTES)?;
    }
    Ok(())
}

/// Replicas must name known nodes, each at most once, with at least one voter.
fn validate_replicas(descriptor: &ShardDescriptor, known: impl Fn(NodeId) -> bool) -> Result<()> {
    check_len("replicas", descriptor.replicas.len(), MAX_REPLICAS)?;
    let mut seen = BTreeSet::new();
    let all_known = descriptor
        .replicas
        .iter()
        .all(|r| known(r.node) && seen.insert(r.node));
    let has_voter = descriptor
        .replicas
        .iter()
        .any(|r| r.role == ReplicaRole::Voter);
    if all_known && has_voter {
        Ok(())
    } else {
        Err(invalid(InvalidReason::BadReplicas))
    }
}

/// Same arc and same replica set (order-insensitive).
pub(crate) fn same_layout(a: &ShardDescriptor, b: &ShardDescriptor) -> bool {
    let set = |d: &ShardDescriptor| {
        d.replicas
            .iter()
            .map(|r| (r.node, r.role))
            .collect::<BTreeSet<_>>()
    };
    a.arc == b.arc && set(a) == set(b)
}

fn new_node(id: NodeId, registration: &NodeRegistration, now_ms: u64) -> NodeInfo {
    NodeInfo {
        id,
        addr: registration.addr.clone(),
        state: NodeState::Up,
        labels: registration.labels.clone(),
        capacity_bytes: registration.capacity_bytes,
        last_heartbeat_ms: now_ms,
        down_since_ms: None,
        stats: NodeStats::default(),
    }
}
