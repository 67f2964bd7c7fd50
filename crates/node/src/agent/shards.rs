//! Shard reports and PD's orders: the report of each led shard (with its measured size and
//! load) for the node's heartbeat, the reports PD wants through its log, and the step PD
//! answers those with, run as the admin request a shard leader serves.

use super::*;

impl Running {
    /// The reports of the led shards in `reports` without a step in flight (and in `only`,
    /// when given), with load rates since each shard's previous report and the last measured
    /// size. A full build (`only` = `None`) also forgets shards no longer led and starts a
    /// size scan when one is due.
    pub(super) async fn build_reports(
        &mut self,
        reports: Vec<LeaderReport>,
        only: Option<&BTreeSet<ShardId>>,
    ) -> Vec<ShardReport> {
        if only.is_none() {
            let led: BTreeSet<ShardId> = reports.iter().map(|r| r.descriptor.id).collect();
            self.samples.retain(|shard, _| led.contains(shard));
            self.sizes.retain(|shard, _| led.contains(shard));
            self.accepted.retain(|shard, _| led.contains(shard));
            self.measure_sizes(&reports).await;
        }
        let mut built = Vec::with_capacity(reports.len());
        for report in reports {
            let shard = report.descriptor.id;
            if only.is_some_and(|only| !only.contains(&shard))
                || self.in_flight.values().any(|running| *running == shard)
            {
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
            built.push(ShardReport {
                descriptor: report.descriptor,
                leader: self.config.node_id,
                stats,
                caught_up_learners: report.caught_up_learners,
                split_hint: None,
                now_ms: 0,
            });
        }
        built
    }

    /// Sends `report` through PD's log (`Command::ShardReport`) and executes the order PD
    /// answers with. Remembers it as accepted when PD took it (so the next heartbeat leaves it
    /// out unless it changes), forgets it otherwise (so the next heartbeat carries it again).
    pub(super) async fn report_through_log(&mut self, report: ShardReport) {
        let shard = report.descriptor.id;
        let command = Command::ShardReport(report.clone());
        match self.call_pd(&command).await {
            Some(Ok(answer)) => {
                if let PdResponse::ShardReport {
                    order: Some(order), ..
                } = answer
                {
                    if order.epoch == report.descriptor.epoch && order.shard == shard {
                        self.execute(order, &report.descriptor);
                    } else {
                        debug!(%shard, ?order, "order for another epoch; reporting again later");
                    }
                }
                self.accepted.insert(shard, report);
            }
            Some(Err(error)) => {
                debug!(%shard, %error, "shard report refused");
                self.accepted.remove(&shard);
            }
            None => {
                self.accepted.remove(&shard);
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
    /// Returns the step's shard.
    pub(super) fn step_ended(
        &mut self,
        done: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
    ) -> Option<ShardId> {
        let id = match done {
            Ok((id, ())) => id,
            Err(error) => error.id(),
        };
        self.in_flight.remove(&id)
    }
}
