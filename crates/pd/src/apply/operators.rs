//! Operators: admin operators, step ids, cancelling with rollback, and the tick that runs the
//! schedulers.

use super::*;

impl Machine<'_> {
    /// Cancels the operator of `shard`: it is replaced by its rollback (see
    /// [`Operator::rollback_steps`]) unless it is itself a rollback or nothing needs undoing.
    pub(crate) fn cancel_operator(&mut self, shard: ShardId, why: OperatorEnd) {
        let Some(operator) = self.0.operators.remove(&shard) else {
            return;
        };
        self.0.operator_counts.record(operator.kind, why);
        if operator.kind == OperatorKind::Rollback {
            return;
        }
        let Some(descriptor) = self.0.descriptor(shard) else {
            return;
        };
        let leader = self.0.leader(shard).unwrap_or(NodeId::NONE);
        let mut rollback = Operator {
            id: OperatorId(self.0.ids.next_operator),
            shard,
            kind: OperatorKind::Rollback,
            steps: operator.rollback_steps(descriptor),
            current: 0,
            created_ms: self.0.now_ms,
            step_started_ms: self.0.now_ms,
            epoch: descriptor.epoch,
        };
        rollback.advance(descriptor, leader);
        if !rollback.is_finished() {
            self.0.ids.next_operator += 1;
            self.0.operators.insert(shard, rollback);
        }
    }

    /// Files `operator` (ids already taken from `self.0.ids`).
    pub(crate) fn insert_operator(&mut self, operator: Operator) {
        self.0.operators.insert(operator.shard, operator);
    }

    pub(super) fn add_admin_operator(
        &mut self,
        admin: &AdminOperator,
        now_ms: u64,
    ) -> Result<Response> {
        self.require_bootstrapped()?;
        let (shard, steps) = self.admin_steps(admin)?;
        if let Some(operator) = self.0.operators.get(&shard) {
            return Err(Error::ShardBusy {
                shard,
                operator: operator.id,
            });
        }
        if self.0.operators.len() >= 2 * self.0.settings.max_operators as usize {
            return Err(Error::OperatorRejected {
                shard,
                reason: RejectReason::TooManyOperators,
            });
        }
        let epoch = self
            .0
            .descriptor(shard)
            .map(|d| d.epoch)
            .ok_or(Error::UnknownShard { shard })?;
        // Ids for the steps were validated; take them now.
        let steps = self.take_step_ids(steps)?;
        self.advance_time(now_ms);
        let id = OperatorId(self.0.ids.next_operator);
        self.0.ids.next_operator += 1;
        self.insert_operator(Operator {
            id,
            shard,
            kind: OperatorKind::Admin,
            steps,
            current: 0,
            created_ms: self.0.now_ms,
            step_started_ms: self.0.now_ms,
            epoch,
        });
        Ok(Response::Operator(id))
    }

    /// Validates an admin operator against the current map and returns its steps, with
    /// placeholder ids (0) for incarnations and new shards.
    pub(super) fn admin_steps(&self, admin: &AdminOperator) -> Result<(ShardId, Vec<Step>)> {
        let reject = |shard, reason| Err(Error::OperatorRejected { shard, reason });
        match *admin {
            AdminOperator::MoveReplica { shard, from, to } => {
                let descriptor = self
                    .0
                    .descriptor(shard)
                    .ok_or(Error::UnknownShard { shard })?;
                self.0
                    .nodes
                    .get(&to)
                    .ok_or(Error::UnknownNode { node: to })?;
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
                if !self.0.is_placement_target(to) {
                    return reject(shard, RejectReason::TargetNotUp);
                }
                Ok((shard, scheduler::move_steps(from, to, source.role, 0)))
            }
            AdminOperator::TransferLeader { shard, to } => {
                let descriptor = self
                    .0
                    .descriptor(shard)
                    .ok_or(Error::UnknownShard { shard })?;
                if !descriptor.voters().any(|v| v == to) {
                    return reject(shard, RejectReason::TargetNotVoter);
                }
                if self.0.leader(shard) == Some(to) {
                    return reject(shard, RejectReason::NoChange);
                }
                Ok((shard, vec![Step::TransferLeader { to }]))
            }
            AdminOperator::SplitShard { shard, at } => {
                let descriptor = self
                    .0
                    .descriptor(shard)
                    .ok_or(Error::UnknownShard { shard })?;
                let hint = self.0.shards.get(&shard).and_then(|s| s.split_hint);
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
    pub(super) fn take_step_ids(&mut self, mut steps: Vec<Step>) -> Result<Vec<Step>> {
        let mut ids = self.0.ids;
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
        self.0.ids = ids;
        Ok(steps)
    }

    // ------------------------------------------------------------ tick

    /// [`Command::LeaderTick`]: the leader's memory of heartbeats into the nodes' last
    /// heartbeats, then [`Command::Tick`].
    pub(super) fn leader_tick(
        &mut self,
        now_ms: u64,
        last_heard: &[(NodeId, u64)],
    ) -> Result<Response> {
        self.require_bootstrapped()?;
        check_len("tick nodes", last_heard.len(), MAX_TICK_NODES)?;
        self.advance_time(now_ms);
        let now_ms = self.0.now_ms;
        for &(id, at) in last_heard {
            if let Some(node) = self.0.nodes.get_mut(&id)
                && node.state != NodeState::Removed
            {
                node.last_heartbeat_ms = node.last_heartbeat_ms.max(at.min(now_ms));
            }
        }
        self.tick(now_ms)
    }

    pub(super) fn tick(&mut self, now_ms: u64) -> Result<Response> {
        self.require_bootstrapped()?;
        self.advance_time(now_ms);
        let now_ms = self.0.now_ms;
        let mut outcome = TickOutcome::default();
        let timeout = self.0.settings.heartbeat_timeout_ms;
        for node in self.0.nodes.values_mut() {
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
        // An operator waiting on a node that went away (silent, draining, removed) cannot
        // finish: a transfer or a promotion to it, or a learner still to be added on it. Left
        // alone it would hold its place until the step timeout (10 minutes by default), and
        // with a dead node's share of leader transfers in flight, the whole operator budget
        // (seen in `ringkv-sim --pd-scale --scenario kill`: repair of a dead node waited 10
        // minutes behind 16 transfers handed to it in the seconds before it was marked down).
        // The same for a removal that another voter's silence makes unsafe (a move whose
        // learner was promoted just before a third node died): it would hold the shard, so
        // neither repair nor a drain could take the silent voter out instead; abandoned, the
        // shard keeps one voter too many and repair removes the silent one first.
        let hopeless: Vec<(ShardId, OperatorId)> = self
            .0
            .operators
            .values()
            .filter(|o| match o.current_step() {
                Some(Step::TransferLeader { to }) => !self.0.is_placement_target(to),
                Some(Step::PromoteLearner { node }) => !self.0.is_alive(node),
                Some(Step::AddLearner { node, .. }) => !self.0.is_placement_target(node),
                Some(Step::RemoveReplica { node }) => self.0.descriptor(o.shard).is_some_and(|d| {
                    !self.0.removal_is_safe(d, node)
                        && d.voters().any(|v| v != node && !self.0.is_alive(v))
                }),
                _ => false,
            })
            .map(|o| (o.shard, o.id))
            .collect();
        for (shard, id) in hopeless {
            self.cancel_operator(shard, OperatorEnd::Abandoned);
            outcome.cancelled.push(id);
        }
        let step_timeout = self.0.settings.operator_step_timeout_ms;
        let stalled: Vec<(ShardId, OperatorId)> = self
            .0
            .operators
            .values()
            .filter(|o| now_ms.saturating_sub(o.step_started_ms) >= step_timeout)
            .map(|o| (o.shard, o.id))
            .collect();
        for (shard, id) in stalled {
            self.cancel_operator(shard, OperatorEnd::TimedOut);
            outcome.cancelled.push(id);
        }
        let (operators, ids) = scheduler::schedule(self.0);
        self.0.ids = ids;
        for operator in operators {
            outcome.created.push(operator.id);
            self.insert_operator(operator);
        }
        Ok(Response::Tick(outcome))
    }
}
