//! Applying commands: the PD state machine's only way to change.
//!
//! Every handler validates the whole command before changing anything, so an error leaves the
//! state untouched and every PD replica ends in the same state whatever the outcome.

use crate::command::{
    AdminOperator, Command, IdKind, MAX_IDS_PER_ALLOC, NodeRegistration, Response, ShardReport,
    TickOutcome,
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

impl PdState {
    /// Applies one committed command. Deterministic: the same commands in the same order give
    /// the same states and responses on every replica.
    ///
    /// # Errors
    /// A typed [`Error`] when the command is invalid or untimely; the state is then unchanged.
    pub fn apply(&mut self, command: &Command) -> Result<Response> {
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
            Command::SetNodeState {
                node,
                state,
                now_ms,
            } => self.set_node_state(*node, *state, *now_ms),
            Command::AddOperator { operator, now_ms } => self.add_admin_operator(operator, *now_ms),
            Command::CancelOperator { shard, now_ms } => {
                self.require_bootstrapped()?;
                let operator = self
                    .operators
                    .get(shard)
                    .map(|o| o.id)
                    .ok_or(Error::NoOperator { shard: *shard })?;
                self.advance_time(*now_ms);
                self.cancel_operator(*shard, OperatorEnd::Cancelled);
                Ok(Response::Operator(operator))
            }
            Command::SetScheduler { scheduler, enabled } => {
                self.settings.set_enabled(*scheduler, *enabled);
                Ok(Response::Done)
            }
            Command::SetSettings(settings) => {
                settings.validate()?;
                self.settings = settings.clone();
                Ok(Response::Done)
            }
            Command::AllocIds { kind, count } => self.alloc_ids(*kind, *count),
            Command::Auth { command, now_ms } => self.apply_auth(command, *now_ms),
            Command::ReportStore { node, incarnation } => self.report_store(*node, *incarnation),
            Command::SpaceAlarm { node, alarm } => self.space_alarm(*node, *alarm),
        }
    }

    /// Raises or clears a node's space alarm.
    fn space_alarm(
        &mut self,
        node: NodeId,
        alarm: Option<ringkv_types::SpaceAlarm>,
    ) -> Result<Response> {
        self.require_bootstrapped()?;
        let info = self.nodes.get(&node).ok_or(Error::UnknownNode { node })?;
        if info.state == NodeState::Removed {
            return Err(Error::NodeRemoved { node });
        }
        match alarm {
            Some(alarm) => self.space_alarms.insert(node, alarm),
            None => self.space_alarms.remove(&node),
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
            .nodes
            .get(&node)
            .is_some_and(|info| info.state == NodeState::Removed)
        {
            return Err(Error::NodeRemoved { node });
        }
        match self.store_incarnations.get(&node) {
            Some(&recorded) if recorded != incarnation => Err(Error::StoreMismatch {
                node,
                recorded,
                reported: incarnation,
            }),
            Some(_) => Ok(Response::Done),
            None => {
                self.store_incarnations.insert(node, incarnation);
                Ok(Response::Done)
            }
        }
    }

    fn advance_time(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    fn require_bootstrapped(&self) -> Result<()> {
        if self.cluster.is_some() {
            Ok(())
        } else {
            Err(Error::NotBootstrapped)
        }
    }

    // ------------------------------------------------------------ bootstrap and nodes

    fn bootstrap(
        &mut self,
        cluster_id: u64,
        cluster_name: &str,
        nodes: &[(NodeId, NodeRegistration)],
        shard_map: &ShardMap,
        settings: &Settings,
        now_ms: u64,
    ) -> Result<Response> {
        if self.cluster.is_some() {
            return Err(Error::AlreadyBootstrapped);
        }
        check_len("cluster name", cluster_name.len(), MAX_CLUSTER_NAME_BYTES)?;
        check_len("bootstrap nodes", nodes.len(), MAX_BOOTSTRAP_NODES)?;
        check_len(
            "bootstrap shards",
            shard_map.shards.len(),
            MAX_BOOTSTRAP_SHARDS,
        )?;
        settings.validate()?;
        let mut node_ids = BTreeSet::new();
        for (id, registration) in nodes {
            validate_registration(registration)?;
            if !id.is_some() || !node_ids.insert(*id) || id.get() >= u64::from(u32::MAX) {
                return Err(Error::UnknownNode { node: *id });
            }
        }
        if !shard_map.covers_ring() {
            return Err(invalid(InvalidReason::DoesNotCoverRing));
        }
        let mut shard_ids = BTreeSet::new();
        for descriptor in &shard_map.shards {
            if descriptor.id == ShardId::PD || !shard_ids.insert(descriptor.id) {
                return Err(invalid(InvalidReason::DuplicateOrReservedShardId));
            }
            validate_replicas(descriptor, |node| node_ids.contains(&node))?;
        }
        let now_ms = self.now_ms.max(now_ms);
        self.now_ms = now_ms;
        self.cluster = Some(ClusterInfo {
            id: cluster_id,
            name: cluster_name.to_string(),
        });
        for (id, registration) in nodes {
            self.nodes.insert(*id, new_node(*id, registration, now_ms));
        }
        let max_node = self.nodes.keys().next_back().map_or(0, |n| n.get());
        self.ids.next_node = self.ids.next_node.max(max_node + 1);
        let max_shard = shard_ids.iter().next_back().map_or(0, |s| s.get());
        self.ids.next_shard = self.ids.next_shard.max(max_shard + 1);
        self.shard_map = ShardMap {
            version: shard_map.version.max(1),
            shards: shard_map.shards.clone(),
        };
        self.settings = settings.clone();
        Ok(Response::Done)
    }

    fn register_node(&mut self, registration: &NodeRegistration, now_ms: u64) -> Result<Response> {
        self.require_bootstrapped()?;
        validate_registration(registration)?;
        // Ids stay below 2^32 so that `(node << 32) | incarnation` is a valid Raft member id.
        if self.ids.next_node >= u64::from(u32::MAX) {
            return Err(Error::IdsExhausted { count: 1 });
        }
        self.advance_time(now_ms);
        let existing = self
            .nodes
            .values()
            .find(|n| n.addr == registration.addr && n.state != NodeState::Removed)
            .map(|n| n.id);
        if let Some(id) = existing {
            if let Some(node) = self.nodes.get_mut(&id) {
                node.labels = registration.labels.clone();
                node.capacity_bytes = registration.capacity_bytes;
            }
            return Ok(Response::NodeId(id));
        }
        let id = NodeId(self.ids.next_node);
        self.ids.next_node += 1;
        self.nodes
            .insert(id, new_node(id, registration, self.now_ms));
        Ok(Response::NodeId(id))
    }

    fn register_node_as(
        &mut self,
        id: NodeId,
        registration: &NodeRegistration,
        now_ms: u64,
    ) -> Result<Response> {
        self.require_bootstrapped()?;
        validate_registration(registration)?;
        let conflict = |reason: &'static str| Error::RegistrationConflict {
            id,
            addr: registration.addr.clone(),
            reason: reason.into(),
        };
        // Ids stay below 2^32 so that `(node << 32) | incarnation` is a valid Raft member id.
        if id.get() == 0 || id.get() >= u64::from(u32::MAX) {
            return Err(conflict("node ids are 1 to 2^32 - 2"));
        }
        if let Some(node) = self.nodes.get(&id) {
            if node.state == NodeState::Removed {
                return Err(Error::NodeRemoved { node: id });
            }
            if node.addr != registration.addr {
                return Err(conflict("the id is registered at another address"));
            }
        } else if self
            .nodes
            .values()
            .any(|n| n.addr == registration.addr && n.state != NodeState::Removed)
        {
            return Err(conflict("the address belongs to another live node"));
        }
        self.advance_time(now_ms);
        match self.nodes.get_mut(&id) {
            Some(node) => {
                node.labels = registration.labels.clone();
                node.capacity_bytes = registration.capacity_bytes;
            }
            None => {
                self.nodes
                    .insert(id, new_node(id, registration, self.now_ms));
                self.ids.next_node = self.ids.next_node.max(id.get() + 1);
            }
        }
        Ok(Response::NodeId(id))
    }

    fn heartbeat(&mut self, id: NodeId, stats: &NodeStats, now_ms: u64) -> Result<Response> {
        let node = self.nodes.get(&id).ok_or(Error::UnknownNode { node: id })?;
        if node.state == NodeState::Removed {
            return Err(Error::NodeRemoved { node: id });
        }
        self.advance_time(now_ms);
        let now_ms = self.now_ms;
        let limit = self.settings.max_snapshot_bytes_per_sec;
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or(Error::UnknownNode { node: id })?;
        node.last_heartbeat_ms = now_ms;
        node.down_since_ms = None;
        node.stats = *stats;
        if stats.capacity_bytes > 0 {
            node.capacity_bytes = stats.capacity_bytes;
        }
        if node.state == NodeState::Down {
            node.state = NodeState::Up;
        }
        Ok(Response::Heartbeat {
            state: node.state,
            max_snapshot_bytes_per_sec: limit,
        })
    }

    fn set_node_state(&mut self, id: NodeId, to: NodeState, now_ms: u64) -> Result<Response> {
        let node = self.nodes.get(&id).ok_or(Error::UnknownNode { node: id })?;
        let from = node.state;
        let allowed = match (from, to) {
            (NodeState::Removed, _) | (_, NodeState::Down) => false,
            (_, NodeState::Removed | NodeState::Draining) => true,
            (_, NodeState::Up) => true,
        };
        if !allowed {
            return Err(Error::InvalidNodeTransition { node: id, from, to });
        }
        if to == NodeState::Removed {
            // A removed node never serves again: only an empty node may go, whatever its
            // state (an `Up` node that holds nothing is as safe to remove as a drained one).
            let replicas = self.replica_counts().get(&id).copied().unwrap_or(0);
            let operators =
                self.operators
                    .values()
                    .filter(|operator| {
                        operator.remaining().iter().any(
                            |step| matches!(step, Step::AddLearner { node, .. } if *node == id),
                        )
                    })
                    .count() as u64;
            if replicas > 0 || operators > 0 {
                return Err(Error::NodeHoldsReplicas {
                    node: id,
                    replicas,
                    operators,
                });
            }
        }
        self.advance_time(now_ms);
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or(Error::UnknownNode { node: id })?;
        node.state = match to {
            // Cancelling a drain on a silent node leaves it Down.
            NodeState::Up if node.down_since_ms.is_some() => NodeState::Down,
            other => other,
        };
        Ok(Response::Done)
    }

    fn alloc_ids(&mut self, kind: IdKind, count: u64) -> Result<Response> {
        if count == 0 || count > MAX_IDS_PER_ALLOC {
            return Err(Error::IdsExhausted { count });
        }
        let first = match kind {
            IdKind::Node => {
                let first = self.ids.next_node;
                let next = first
                    .checked_add(count)
                    .filter(|&n| n <= u64::from(u32::MAX))
                    .ok_or(Error::IdsExhausted { count })?;
                self.ids.next_node = next;
                first
            }
            IdKind::Shard => {
                let first = self.ids.next_shard;
                self.ids.next_shard = first
                    .checked_add(count)
                    .ok_or(Error::IdsExhausted { count })?;
                first
            }
            IdKind::Incarnation => {
                let first = self.ids.next_incarnation;
                let count32 = u32::try_from(count).map_err(|_| Error::IdsExhausted { count })?;
                self.ids.next_incarnation = first
                    .checked_add(count32)
                    .ok_or(Error::IdsExhausted { count })?;
                u64::from(first)
            }
        };
        Ok(Response::Ids { first, count })
    }

    // ------------------------------------------------------------ shard reports

    fn shard_report(&mut self, report: &ShardReport) -> Result<Response> {
        self.require_bootstrapped()?;
        let descriptor = &report.descriptor;
        let shard = descriptor.id;
        if shard == ShardId::PD {
            return Err(invalid(InvalidReason::DuplicateOrReservedShardId));
        }
        check_len(
            "caught-up learners",
            report.caught_up_learners.len(),
            MAX_REPLICAS,
        )?;
        validate_replicas(descriptor, |node| self.nodes.contains_key(&node))?;
        if !descriptor.voters().any(|v| v == report.leader) {
            return Err(Error::LeaderNotVoter {
                shard,
                leader: report.leader,
            });
        }
        let update = self.classify_report(descriptor)?;
        self.advance_time(report.now_ms);
        let descriptor_updated = !matches!(update, MapUpdate::StatsOnly);
        self.apply_map_update(descriptor, update);
        self.shards.insert(
            shard,
            ShardStatus {
                leader: report.leader,
                stats: report.stats,
                caught_up_learners: report.caught_up_learners.clone(),
                split_hint: report.split_hint,
                last_report_ms: self.now_ms,
            },
        );
        let order = self.progress_operator(shard);
        Ok(Response::ShardReport {
            descriptor_updated,
            order,
        })
    }

    /// Decides how a reported descriptor fits the known map, without changing anything.
    fn classify_report(&self, reported: &ShardDescriptor) -> Result<MapUpdate> {
        let shard = reported.id;
        let Some(known) = self.descriptor(shard) else {
            return self.classify_new_shard(reported);
        };
        if reported.epoch.is_stale_against(&known.epoch) {
            return Err(Error::StaleDescriptor {
                shard,
                reported: reported.epoch,
                known: known.epoch,
            });
        }
        if reported.epoch == known.epoch {
            return if same_layout(reported, known) {
                Ok(MapUpdate::StatsOnly)
            } else {
                Err(invalid(InvalidReason::EpochConflict))
            };
        }
        if reported.arc == known.arc {
            return Ok(MapUpdate::Replace);
        }
        // A split: the shard kept the left part of its arc. The right part must go to a known
        // shard id: the one the split operator allocated, else wait for the new shard's own
        // report (which carves it out, see `classify_new_shard`).
        let is_left_part = reported.arc.start == known.arc.start
            && reported.epoch.version > known.epoch.version
            && reported
                .arc
                .end
                .is_some_and(|end| known.arc.contains(end) && end > known.arc.start);
        if !is_left_part {
            return Err(invalid(InvalidReason::ArcMismatch));
        }
        let Some(at) = reported.arc.end else {
            return Err(invalid(InvalidReason::ArcMismatch));
        };
        let planned = self.operators.get(&shard).and_then(|operator| {
            operator.steps.iter().find_map(|step| match *step {
                Step::Split { new_shard, at: cut } if cut == at => Some(new_shard),
                _ => None,
            })
        });
        match planned {
            Some(new_shard) if self.descriptor(new_shard).is_none() => {
                Ok(MapUpdate::SplitLeft { new_shard })
            }
            _ => Err(invalid(InvalidReason::ArcMismatch)),
        }
    }

    /// A report from a shard PD does not know: accepted only as the right part of a split of
    /// a known shard (its arc is a tail of that shard's arc and its version is newer).
    fn classify_new_shard(&self, reported: &ShardDescriptor) -> Result<MapUpdate> {
        if reported.id.get() >= self.ids.next_shard {
            return Err(Error::UnknownShard { shard: reported.id });
        }
        let parent = self
            .shard_map
            .shard_for_position(reported.arc.start)
            .ok_or(invalid(InvalidReason::ArcMismatch))?;
        let is_tail = reported.arc.start > parent.arc.start
            && reported.arc.end == parent.arc.end
            && reported.epoch.version > parent.epoch.version;
        if is_tail {
            Ok(MapUpdate::CarveRight { parent: parent.id })
        } else {
            Err(invalid(InvalidReason::ArcMismatch))
        }
    }

    fn apply_map_update(&mut self, reported: &ShardDescriptor, update: MapUpdate) {
        match update {
            MapUpdate::StatsOnly => return,
            MapUpdate::Replace => {
                if let Some(slot) = self.descriptor_mut(reported.id) {
                    *slot = reported.clone();
                }
            }
            MapUpdate::SplitLeft { new_shard } => {
                let Some(slot) = self.descriptor_mut(reported.id) else {
                    return;
                };
                let right = ShardDescriptor {
                    id: new_shard,
                    arc: Arc {
                        start: reported.arc.end.unwrap_or(slot.arc.start),
                        end: slot.arc.end,
                    },
                    // Epoch zero until the new shard reports: any real report is newer, and a
                    // client routing with it gets `EpochMismatch` and the real descriptor.
                    epoch: Epoch::default(),
                    replicas: reported.replicas.clone(),
                };
                *slot = reported.clone();
                self.insert_sorted(right);
            }
            MapUpdate::CarveRight { parent } => {
                if let Some(slot) = self.descriptor_mut(parent) {
                    slot.arc.end = Some(reported.arc.start);
                }
                self.insert_sorted(reported.clone());
            }
        }
        self.shard_map.version += 1;
    }

    fn descriptor_mut(&mut self, shard: ShardId) -> Option<&mut ShardDescriptor> {
        self.shard_map.shards.iter_mut().find(|d| d.id == shard)
    }

    fn insert_sorted(&mut self, descriptor: ShardDescriptor) {
        let at = self
            .shard_map
            .shards
            .partition_point(|d| d.arc.start < descriptor.arc.start);
        self.shard_map.shards.insert(at, descriptor);
    }

    /// Advances the shard's operator past the steps its last report shows done and returns the
    /// order for the step now current, if it may be handed out.
    fn progress_operator(&mut self, shard: ShardId) -> Option<StepOrder> {
        let descriptor = self.descriptor(shard)?.clone();
        let leader = self.leader(shard).unwrap_or(NodeId::NONE);
        let now_ms = self.now_ms;
        let operator = self.operators.get_mut(&shard)?;
        if operator.advance(&descriptor, leader) {
            operator.step_started_ms = now_ms;
        }
        if operator.is_finished() {
            let kind = operator.kind;
            self.operators.remove(&shard);
            self.operator_counts.record(kind, OperatorEnd::Finished);
            return None;
        }
        let operator = self.operators.get(&shard)?;
        let step = operator.current_step()?;
        let id = operator.id;
        let order = |step| {
            Some(StepOrder {
                operator: id,
                shard,
                epoch: descriptor.epoch,
                step,
            })
        };
        match step {
            Step::AddLearner { node, .. } => {
                if self.is_placement_target(node) {
                    order(step)
                } else {
                    // The target went away before its learner appeared.
                    self.cancel_operator(shard, OperatorEnd::Abandoned);
                    self.progress_operator(shard)
                }
            }
            Step::PromoteLearner { node } => {
                let caught_up = self
                    .shards
                    .get(&shard)
                    .is_some_and(|s| s.caught_up_learners.contains(&node));
                (caught_up && self.is_alive(node))
                    .then_some(step)
                    .and_then(order)
            }
            Step::TransferLeader { to } => {
                let leaving = self
                    .nodes
                    .get(&to)
                    .is_none_or(|n| matches!(n.state, NodeState::Draining | NodeState::Removed));
                if leaving {
                    // The target is being emptied or is gone: waiting cannot help, and the
                    // operator would hold the shard (and its drain) until the step timeout.
                    self.cancel_operator(shard, OperatorEnd::Abandoned);
                    self.progress_operator(shard)
                } else if descriptor.voters().any(|v| v == to) && self.is_alive(to) {
                    order(step)
                } else {
                    None
                }
            }
            Step::RemoveReplica { node } => {
                if node == leader {
                    let to = self.transfer_target(&descriptor, node)?;
                    order(Step::TransferLeader { to })
                } else if self.removal_is_safe(&descriptor, node) {
                    order(step)
                } else {
                    None
                }
            }
            Step::Split { .. } => order(step),
        }
    }

    /// The live voter (other than `except`) to hand leadership to: the one leading the fewest
    /// shards, ties to the lowest id.
    fn transfer_target(&self, descriptor: &ShardDescriptor, except: NodeId) -> Option<NodeId> {
        let leaders = self.leader_counts();
        descriptor
            .voters()
            .filter(|&v| v != except && self.is_alive(v))
            .min_by_key(|v| (leaders.get(v).copied().unwrap_or(0), *v))
    }

    // ------------------------------------------------------------ operators

    /// Cancels the operator of `shard`: it is replaced by its rollback (see
    /// [`Operator::rollback_steps`]) unless it is itself a rollback or nothing needs undoing.
    pub(crate) fn cancel_operator(&mut self, shard: ShardId, why: OperatorEnd) {
        let Some(operator) = self.operators.remove(&shard) else {
            return;
        };
        self.operator_counts.record(operator.kind, why);
        if operator.kind == OperatorKind::Rollback {
            return;
        }
        let Some(descriptor) = self.descriptor(shard) else {
            return;
        };
        let leader = self.leader(shard).unwrap_or(NodeId::NONE);
        let mut rollback = Operator {
            id: OperatorId(self.ids.next_operator),
            shard,
            kind: OperatorKind::Rollback,
            steps: operator.rollback_steps(descriptor),
            current: 0,
            created_ms: self.now_ms,
            step_started_ms: self.now_ms,
            epoch: descriptor.epoch,
        };
        rollback.advance(descriptor, leader);
        if !rollback.is_finished() {
            self.ids.next_operator += 1;
            self.operators.insert(shard, rollback);
        }
    }

    /// Files `operator` (ids already taken from `self.ids`).
    pub(crate) fn insert_operator(&mut self, operator: Operator) {
        self.operators.insert(operator.shard, operator);
    }

    fn add_admin_operator(&mut self, admin: &AdminOperator, now_ms: u64) -> Result<Response> {
        self.require_bootstrapped()?;
        let (shard, steps) = self.admin_steps(admin)?;
        if let Some(operator) = self.operators.get(&shard) {
            return Err(Error::ShardBusy {
                shard,
                operator: operator.id,
            });
        }
        if self.operators.len() >= 2 * self.settings.max_operators as usize {
            return Err(Error::OperatorRejected {
                shard,
                reason: RejectReason::TooManyOperators,
            });
        }
        let epoch = self
            .descriptor(shard)
            .map(|d| d.epoch)
            .ok_or(Error::UnknownShard { shard })?;
        // Ids for the steps were validated; take them now.
        let steps = self.take_step_ids(steps)?;
        self.advance_time(now_ms);
        let id = OperatorId(self.ids.next_operator);
        self.ids.next_operator += 1;
        self.insert_operator(Operator {
            id,
            shard,
            kind: OperatorKind::Admin,
            steps,
            current: 0,
            created_ms: self.now_ms,
            step_started_ms: self.now_ms,
            epoch,
        });
        Ok(Response::Operator(id))
    }

    /// Validates an admin operator against the current map and returns its steps, with
    /// placeholder ids (0) for incarnations and new shards.
    fn admin_steps(&self, admin: &AdminOperator) -> Result<(ShardId, Vec<Step>)> {
        let reject = |shard, reason| Err(Error::OperatorRejected { shard, reason });
        match *admin {
            AdminOperator::MoveReplica { shard, from, to } => {
                let descriptor = self
                    .descriptor(shard)
                    .ok_or(Error::UnknownShard { shard })?;
                self.nodes.get(&to).ok_or(Error::UnknownNode { node: to })?;
                let Some(source) = descriptor.replica_on(from) else {
                    return reject(shard, RejectReason::SourceHasNoReplica);
                };
                if from == to {
                    return reject(shard, RejectReason::NoChange);
                }
                if source.role == ReplicaRole::Learner {
                    return reject(shard, RejectReason::SourceIsLearner);
                }
                if descriptor.replica_on(to).is_some() {
                    return reject(shard, RejectReason::TargetHasReplica);
                }
                if !self.is_placement_target(to) {
                    return reject(shard, RejectReason::TargetNotUp);
                }
                Ok((shard, scheduler::move_steps(from, to, source.role, 0)))
            }
            AdminOperator::TransferLeader { shard, to } => {
                let descriptor = self
                    .descriptor(shard)
                    .ok_or(Error::UnknownShard { shard })?;
                if !descriptor.voters().any(|v| v == to) {
                    return reject(shard, RejectReason::TargetNotVoter);
                }
                if self.leader(shard) == Some(to) {
                    return reject(shard, RejectReason::NoChange);
                }
                Ok((shard, vec![Step::TransferLeader { to }]))
            }
            AdminOperator::SplitShard { shard, at } => {
                let descriptor = self
                    .descriptor(shard)
                    .ok_or(Error::UnknownShard { shard })?;
                let hint = self.shards.get(&shard).and_then(|s| s.split_hint);
                let at = at
                    .or_else(|| scheduler::split_position(&descriptor.arc, hint))
                    .filter(|&at| descriptor.arc.split_at(at).is_some());
                let Some(at) = at else {
                    return reject(shard, RejectReason::SplitOutsideArc);
                };
                Ok((
                    shard,
                    vec![Step::Split {
                        new_shard: ShardId(0),
                        at,
                    }],
                ))
            }
        }
    }

    /// Replaces placeholder ids in `steps` with freshly allocated ones.
    fn take_step_ids(&mut self, mut steps: Vec<Step>) -> Result<Vec<Step>> {
        let mut ids = self.ids;
        for step in &mut steps {
            match step {
                Step::AddLearner { incarnation, .. } => {
                    *incarnation = ids.next_incarnation;
                    ids.next_incarnation = ids
                        .next_incarnation
                        .checked_add(1)
                        .ok_or(Error::IdsExhausted { count: 1 })?;
                }
                Step::Split { new_shard, .. } => {
                    *new_shard = ShardId(ids.next_shard);
                    ids.next_shard = ids
                        .next_shard
                        .checked_add(1)
                        .ok_or(Error::IdsExhausted { count: 1 })?;
                }
                _ => {}
            }
        }
        self.ids = ids;
        Ok(steps)
    }

    // ------------------------------------------------------------ tick

    fn tick(&mut self, now_ms: u64) -> Result<Response> {
        self.require_bootstrapped()?;
        self.advance_time(now_ms);
        let now_ms = self.now_ms;
        let mut outcome = TickOutcome::default();
        let timeout = self.settings.heartbeat_timeout_ms;
        for node in self.nodes.values_mut() {
            let silent = now_ms.saturating_sub(node.last_heartbeat_ms) >= timeout;
            if node.state == NodeState::Removed || !silent || node.down_since_ms.is_some() {
                continue;
            }
            node.down_since_ms = Some(now_ms);
            if node.state == NodeState::Up {
                node.state = NodeState::Down;
            }
            outcome.marked_down.push(node.id);
        }
        let step_timeout = self.settings.operator_step_timeout_ms;
        let stalled: Vec<(ShardId, OperatorId)> = self
            .operators
            .values()
            .filter(|o| now_ms.saturating_sub(o.step_started_ms) >= step_timeout)
            .map(|o| (o.shard, o.id))
            .collect();
        for (shard, id) in stalled {
            self.cancel_operator(shard, OperatorEnd::TimedOut);
            outcome.cancelled.push(id);
        }
        let (operators, ids) = scheduler::schedule(self);
        self.ids = ids;
        for operator in operators {
            outcome.created.push(operator.id);
            self.insert_operator(operator);
        }
        Ok(Response::Tick(outcome))
    }
}

/// How a reported descriptor changes the map.
enum MapUpdate {
    /// Same epoch: only the stats change.
    StatsOnly,
    /// Newer epoch, same arc.
    Replace,
    /// The shard split off `[end, old end)` as `new_shard` (known from its split operator).
    SplitLeft { new_shard: ShardId },
    /// A shard PD did not know yet: the right part of a split of `parent`.
    CarveRight { parent: ShardId },
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
fn same_layout(a: &ShardDescriptor, b: &ShardDescriptor) -> bool {
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
