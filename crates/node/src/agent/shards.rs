//! Shard reports and PD's orders: one report per led shard (with its measured size and load),
//! and the step PD answers with, run as the admin request a shard leader serves.

use super::*;

impl Running {
    /// Reports every shard in `reports` without a step in flight and executes the orders.
    pub(super) async fn report_shards(&mut self, reports: Vec<LeaderReport>) {
        let led: BTreeSet<ShardId> = reports.iter().map(|r| r.descriptor.id).collect();
        self.samples.retain(|shard, _| led.contains(shard));
        self.sizes.retain(|shard, _| led.contains(shard));
        self.measure_sizes(&reports).await;
        for report in reports {
            let shard = report.descriptor.id;
            if self.in_flight.values().any(|running| *running == shard) {
                continue;
            }
            let sample = Sample {
                writes: report.writes_applied,
                reads: report.reads_served,
                at: Instant::now(),
            };
            let mut stats = ShardStats::default();
            if let Some(previous) = self.samples.insert(shard, sample) {
                (stats.writes_per_sec, stats.reads_per_sec) = previous.rates(sample);
            }
            if let Some(measured) = self
                .sizes
                .get(&shard)
                .filter(|m| m.arc == report.descriptor.arc)
            {
                stats.size_bytes = measured.size.bytes;
                stats.keys = measured.size.keys;
            }
            let command = Command::ShardReport(ShardReport {
                descriptor: report.descriptor.clone(),
                leader: self.config.node_id,
                stats,
                caught_up_learners: report.caught_up_learners,
                split_hint: None,
                now_ms: 0,
            });
            match self.call_pd(&command).await {
                Some(Ok(PdResponse::ShardReport {
                    order: Some(order), ..
                })) => {
                    if order.epoch == report.descriptor.epoch && order.shard == shard {
                        self.execute(order, &report.descriptor);
                    } else {
                        debug!(%shard, ?order, "order for another epoch; reporting again later");
                    }
                }
                Some(Err(error)) => debug!(%shard, %error, "shard report refused"),
                _ => {}
            }
        }
    }

    /// Collects a finished size scan, then starts one for the led shard that most needs it (never
    /// measured, arc changed, or measured longest ago beyond the re-measure period).
    pub(super) async fn measure_sizes(&mut self, reports: &[LeaderReport]) {
        if let Some(scan) = self.size_scan.take_if(|scan| scan.is_finished()) {
            match scan.await {
                Ok((shard, arc, Ok(size))) => {
                    let at = Instant::now();
                    self.sizes.insert(shard, MeasuredSize { arc, at, size });
                }
                Ok((shard, _, Err(error))) => {
                    warn!(%shard, %error, "measuring the shard's size failed")
                }
                Err(error) => warn!(%error, "the size scan task failed"),
            }
        }
        if self.size_scan.is_some() {
            return;
        }
        let period =
            Duration::from_millis(self.config.pd.heartbeat_interval_ms) * SIZE_EVERY_HEARTBEATS;
        let due = reports
            .iter()
            .filter_map(|report| {
                let descriptor = &report.descriptor;
                match self.sizes.get(&descriptor.id) {
                    None => Some((None, descriptor)),
                    Some(m) if m.arc != descriptor.arc => Some((None, descriptor)),
                    Some(m) if m.at.elapsed() >= period => Some((Some(m.at), descriptor)),
                    Some(_) => None,
                }
            })
            .min_by_key(|(at, descriptor)| (*at, descriptor.id));
        if let Some((_, descriptor)) = due {
            let (shard, arc, store) = (descriptor.id, descriptor.arc, self.store.clone());
            self.size_scan = Some(tokio::task::spawn_blocking(move || {
                (shard, arc, store.data_size(arc).map_err(|e| e.to_string()))
            }));
        }
    }

    /// Starts carrying out `order` on the local leader of its shard.
    pub(super) fn execute(&mut self, order: StepOrder, descriptor: &ShardDescriptor) {
        let shard = order.shard;
        let epoch = descriptor.epoch;
        let me = self.config.node_id;
        let request = match order.step {
            // The node picks the member id itself (`member_id(node, conf_ver + 1)`, fresh in the
            // shard); PD's incarnation is not used. PD sees the step done when the node
            // appears as a learner.
            Step::AddLearner { node, .. } => AdminRequest::ChangeReplica {
                shard,
                epoch,
                change: ReplicaChange::AddLearner { node },
            },
            Step::PromoteLearner { node } => AdminRequest::ChangeReplica {
                shard,
                epoch,
                change: ReplicaChange::Promote { node },
            },
            Step::RemoveReplica { node } if node == me => {
                // A leader cannot remove itself: hand the leadership to another voter first.
                let Some(to) = descriptor
                    .replicas
                    .iter()
                    .find(|r| r.node != me && r.role == ReplicaRole::Voter)
                    .map(|r| r.node)
                else {
                    return;
                };
                AdminRequest::TransferLeader { shard, to }
            }
            Step::RemoveReplica { node } => AdminRequest::ChangeReplica {
                shard,
                epoch,
                change: ReplicaChange::Remove { node },
            },
            Step::TransferLeader { to } => AdminRequest::TransferLeader { shard, to },
            Step::Split { new_shard, at } => AdminRequest::SplitShard {
                shard,
                epoch,
                new_shard,
                at: Some(at),
            },
        };
        info!(%shard, operator = %order.operator, step = ?order.step, "executing a PD order");
        let calls = self.calls.clone();
        let task = self.steps.spawn(async move {
            let (slot, answer) = oneshot::channel();
            let call = ClientCall {
                request: Request::Admin(request),
                reply: slot,
            };
            if calls.send(call).await.is_err() {
                return;
            }
            match tokio::time::timeout(STEP_TIMEOUT, answer).await {
                Ok(Ok(Response::Admin(result))) => debug!(%shard, ?result, "PD order done"),
                Ok(Ok(Response::Error(error))) => {
                    info!(%shard, step = ?order.step, %error, "PD order not carried out")
                }
                _ => info!(%shard, step = ?order.step, "PD order without an answer"),
            }
        });
        self.in_flight.insert(task.id(), shard);
    }

    /// Forgets a step that ended (or failed) so its shard is reported again.
    pub(super) fn step_ended(
        &mut self,
        done: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
    ) {
        let id = match done {
            Ok((id, ())) => id,
            Err(error) => error.id(),
        };
        self.in_flight.remove(&id);
    }
}
