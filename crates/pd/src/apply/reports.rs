//! Shard reports: the shard map follows what shard leaders report, and operators advance.

use super::*;

impl Machine<'_> {
    pub(super) fn shard_report(&mut self, report: &ShardReport) -> Result<Response> {
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
        validate_replicas(descriptor, |node| self.0.nodes.contains_key(&node))?;
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
        self.0.shards.insert(
            shard,
            ShardStatus {
                leader: report.leader,
                stats: report.stats,
                caught_up_learners: report.caught_up_learners.clone(),
                split_hint: report.split_hint,
                last_report_ms: self.0.now_ms,
            },
        );
        let order = self.progress_operator(shard);
        Ok(Response::ShardReport {
            descriptor_updated,
            order,
        })
    }

    /// Decides how a reported descriptor fits the known map, without changing anything.
    pub(super) fn classify_report(&self, reported: &ShardDescriptor) -> Result<MapUpdate> {
        let shard = reported.id;
        let Some(known) = self.0.descriptor_at(shard, reported.arc.start) else {
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
        let planned = self.0.operators.get(&shard).and_then(|operator| {
            operator.steps.iter().find_map(|step| match *step {
                Step::Split { new_shard, at: cut } if cut == at => Some(new_shard),
                _ => None,
            })
        });
        match planned {
            Some(new_shard) if self.0.descriptor(new_shard).is_none() => {
                Ok(MapUpdate::SplitLeft { new_shard })
            }
            _ => Err(invalid(InvalidReason::ArcMismatch)),
        }
    }

    /// A report from a shard PD does not know: accepted only as the right part of a split of
    /// a known shard (its arc is a tail of that shard's arc and its version is newer).
    pub(super) fn classify_new_shard(&self, reported: &ShardDescriptor) -> Result<MapUpdate> {
        if reported.id.get() >= self.0.ids.next_shard {
            return Err(Error::UnknownShard { shard: reported.id });
        }
        let parent = self
            .0
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

    pub(super) fn apply_map_update(&mut self, reported: &ShardDescriptor, update: MapUpdate) {
        match update {
            MapUpdate::StatsOnly => return,
            MapUpdate::Replace => {
                if let Some(slot) = self.descriptor_mut_at(reported.id, reported.arc.start) {
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
        self.0.shard_map.version += 1;
    }

    /// [`PdState::descriptor_at`], to change.
    fn descriptor_mut_at(&mut self, shard: ShardId, position: u64) -> Option<&mut ShardDescriptor> {
        let shards = &self.0.shard_map.shards;
        let at = shards
            .partition_point(|d| d.arc.start <= position)
            .checked_sub(1)
            .filter(|&at| shards.get(at).is_some_and(|d| d.id == shard));
        match at {
            Some(at) => self.0.shard_map.shards.get_mut(at),
            None => self.descriptor_mut(shard),
        }
    }

    pub(super) fn descriptor_mut(&mut self, shard: ShardId) -> Option<&mut ShardDescriptor> {
        self.0.shard_map.shards.iter_mut().find(|d| d.id == shard)
    }

    pub(super) fn insert_sorted(&mut self, descriptor: ShardDescriptor) {
        let at = self
            .0
            .shard_map
            .shards
            .partition_point(|d| d.arc.start < descriptor.arc.start);
        self.0.shard_map.shards.insert(at, descriptor);
    }

    /// Advances the shard's operator past the steps its last report shows done and returns the
    /// order for the step now current, if it may be handed out.
    pub(super) fn progress_operator(&mut self, shard: ShardId) -> Option<StepOrder> {
        // Most reports find no operator: answer before looking the descriptor up.
        self.0.operators.get(&shard)?;
        let descriptor = self.0.descriptor(shard)?.clone();
        let leader = self.0.leader(shard).unwrap_or(NodeId::NONE);
        let now_ms = self.0.now_ms;
        let operator = self.0.operators.get_mut(&shard)?;
        if operator.advance(&descriptor, leader) {
            operator.step_started_ms = now_ms;
        }
        if operator.is_finished() {
            let kind = operator.kind;
            self.0.operators.remove(&shard);
            self.0.operator_counts.record(kind, OperatorEnd::Finished);
            return None;
        }
        let operator = self.0.operators.get(&shard)?;
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
                if self.0.is_placement_target(node) {
                    order(step)
                } else {
                    // The target went away before its learner appeared.
                    self.cancel_operator(shard, OperatorEnd::Abandoned);
                    self.progress_operator(shard)
                }
            }
            Step::PromoteLearner { node } => {
                let caught_up = self
                    .0
                    .shards
                    .get(&shard)
                    .is_some_and(|s| s.caught_up_learners.contains(&node));
                (caught_up && self.0.is_alive(node))
                    .then_some(step)
                    .and_then(order)
            }
            Step::TransferLeader { to } => {
                let leaving =
                    self.0.nodes.get(&to).is_none_or(|n| {
                        matches!(n.state, NodeState::Draining | NodeState::Removed)
                    });
                if leaving {
                    // The target is being emptied or is gone: waiting cannot help, and the
                    // operator would hold the shard (and its drain) until the step timeout.
                    self.cancel_operator(shard, OperatorEnd::Abandoned);
                    self.progress_operator(shard)
                } else if descriptor.voters().any(|v| v == to) && self.0.is_alive(to) {
                    order(step)
                } else {
                    None
                }
            }
            Step::RemoveReplica { node } => {
                if node == leader {
                    let to = self.transfer_target(&descriptor, node)?;
                    order(Step::TransferLeader { to })
                } else if self.0.removal_is_safe(&descriptor, node) {
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
    pub(super) fn transfer_target(
        &self,
        descriptor: &ShardDescriptor,
        except: NodeId,
    ) -> Option<NodeId> {
        let leaders = self.0.leader_counts();
        descriptor
            .voters()
            .filter(|&v| v != except && self.0.is_alive(v))
            .min_by_key(|v| (leaders.get(v).copied().unwrap_or(0), *v))
    }
}

/// How a reported descriptor changes the map.
pub(super) enum MapUpdate {
    /// Same epoch: only the stats change.
    StatsOnly,
    /// Newer epoch, same arc.
    Replace,
    /// The shard split off `[end, old end)` as `new_shard` (known from its split operator).
    SplitLeft { new_shard: ShardId },
    /// A shard PD did not know yet: the right part of a split of `parent`.
    CarveRight { parent: ShardId },
}
