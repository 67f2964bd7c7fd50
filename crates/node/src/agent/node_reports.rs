//! The node's own dealings with PD: registration of a joining node, the store incarnation,
//! heartbeats, the space alarm, and stopping once PD removed the node.

use super::*;

impl Running {
    /// Registers a joining node. `Ok(true)` once PD confirmed the configured id, `Ok(false)`
    /// to retry later, `Err` when PD assigned another id (the node must stop).
    pub(super) async fn register(&mut self) -> Result<bool, String> {
        let addr = self.config.advertise_addr.clone();
        let command = Command::RegisterNodeAs {
            id: self.config.node_id,
            node: NodeRegistration {
                addr: addr.clone(),
                labels: BTreeMap::new(),
                capacity_bytes: 0,
            },
            now_ms: 0,
        };
        match self.call_pd(&command).await {
            Some(Ok(PdResponse::NodeId(id))) if id == self.config.node_id => {
                self.registered = true;
                Ok(true)
            }
            Some(Ok(PdResponse::NodeId(id))) => Err(format!(
                "PD assigned node id {} to this address ({addr}) but the config says {}",
                id.get(),
                self.config.node_id.get()
            )),
            Some(Ok(other)) => {
                warn!(?other, "unexpected answer to a registration");
                Ok(false)
            }
            // The id or address belongs to another node, or this node was removed: retrying
            // cannot help, the configuration must change.
            Some(Err(
                error @ (ringkv_pd::Error::RegistrationConflict { .. }
                | ringkv_pd::Error::NodeRemoved { .. }),
            )) => Err(format!(
                "the placement driver refused to register this node: {error}"
            )),
            Some(Err(error)) => {
                warn!(%error, "the placement driver refused the registration");
                Ok(false)
            }
            None => {
                debug!("no placement driver reachable yet; retrying the registration");
                Ok(false)
            }
        }
    }

    /// Reports the data dir's store incarnation. `Ok(true)` once PD accepted it, `Ok(false)` to
    /// retry at the next heartbeat, `Err` when PD recorded another one (the node must stop).
    pub(super) async fn report_store(&mut self, incarnation: u64) -> Result<bool, String> {
        let command = Command::ReportStore {
            node: self.config.node_id,
            incarnation,
        };
        match self.call_pd(&command).await {
            Some(Ok(_)) => {
                debug!("the placement driver accepted the store incarnation");
                Ok(true)
            }
            Some(Err(error @ ringkv_pd::Error::StoreMismatch { .. })) => {
                Err(crate::Error::StoreMismatch {
                    node: self.config.node_id.get(),
                    path: self.config.data_dir.clone(),
                    reason: error.to_string(),
                }
                .to_string())
            }
            // A removed node learns it from its heartbeat.
            Some(Err(error)) => {
                debug!(%error, "the placement driver refused the store report");
                Ok(matches!(error, ringkv_pd::Error::NodeRemoved { .. }))
            }
            None => Ok(false),
        }
    }

    /// One heartbeat round. `false` when the node must stop (PD removed it).
    pub(super) async fn heartbeat(&mut self) -> bool {
        let Some(view) = self.view().await else {
            return true;
        };
        if view.pd_leader.is_some() {
            self.pd_leader = view.pd_leader;
        }
        let sample = Sample {
            writes: view.writes_applied,
            reads: view.reads_served,
            at: Instant::now(),
        };
        let mut stats = view.stats;
        if let Some(previous) = self.node_sample.replace(sample) {
            (stats.writes_per_sec, stats.reads_per_sec) = previous.rates(sample);
        }
        let reports = self.build_reports(view.reports, None).await;
        let full =
            self.full_report_due || self.heartbeats_since_full + 1 >= FULL_REPORT_EVERY_HEARTBEATS;
        let (sent, unchanged): (Vec<ShardReport>, Vec<ShardReport>) = reports
            .into_iter()
            .partition(|report| full || self.accepted.get(&report.descriptor.id) != Some(report));
        let command = Command::StoreHeartbeat(StoreHeartbeat {
            node: self.config.node_id,
            stats,
            shards: sent,
            full,
            now_ms: 0,
        });
        let leader_before = self.pd_leader;
        let answer = self.call_pd(&command).await;
        let Command::StoreHeartbeat(StoreHeartbeat { shards: sent, .. }) = command else {
            return true;
        };
        // A new PD leader knows nothing of this node's shards yet: tell it everything next.
        self.full_report_due = self.pd_leader != leader_before;
        let through_log = match answer {
            Some(Ok(PdResponse::StoreHeartbeat {
                state,
                max_snapshot_bytes_per_sec,
                report_through_log,
            })) => {
                if state == NodeState::Removed {
                    return self.removed().await;
                }
                if self.snapshot_limit != Some(max_snapshot_bytes_per_sec) {
                    self.snapshot_limit = Some(max_snapshot_bytes_per_sec);
                    let call = AgentCall::SnapshotLimit(max_snapshot_bytes_per_sec);
                    let _ = self.loop_tx.send(call).await;
                }
                self.heartbeats_since_full = if full {
                    0
                } else {
                    self.heartbeats_since_full + 1
                };
                Some(report_through_log)
            }
            Some(Err(ringkv_pd::Error::NodeRemoved { .. })) => return self.removed().await,
            other => {
                match other {
                    Some(Err(error)) => warn!(%error, "heartbeat refused"),
                    _ => debug!("heartbeat not answered"),
                }
                self.full_report_due = true;
                None
            }
        };
        // Not answered: nothing was accepted (the next heartbeat is full).
        let answered = through_log.is_some();
        let wanted: BTreeSet<ShardId> = through_log.into_iter().flatten().collect();
        for report in sent.into_iter().filter(|_| answered) {
            if wanted.contains(&report.descriptor.id) {
                self.report_through_log(report).await;
            } else {
                self.accepted.insert(report.descriptor.id, report);
            }
        }
        // PD also names led shards left out as unchanged that have an operator in flight: their
        // next step comes in answer to a report through the log.
        for report in unchanged {
            if wanted.contains(&report.descriptor.id) {
                self.report_through_log(report).await;
            }
        }
        self.report_space_alarm().await;
        match view.pd_nodes {
            Some(nodes) => self.add_peers(nodes.into_iter()),
            None => self.refresh().await,
        }
        true
    }

    /// Tells PD when this node's low-space alarm rose or cleared (and once per start, which
    /// clears an alarm recorded before a restart), so the leaders of the shards it holds refuse
    /// writes that add data while it is up (`Command::SpaceAlarm`).
    pub(super) async fn report_space_alarm(&mut self) {
        let alarm = match self.store.space(false) {
            Ok(space) if space.alarm => Some(ringkv_types::SpaceAlarm {
                free_bytes: space.free_bytes,
                reserve_bytes: space.reserve_bytes,
            }),
            Ok(_) => None,
            Err(error) => {
                warn!(%error, "cannot measure the data dir's free space");
                return;
            }
        };
        if self.space_alarm_reported == Some(alarm.is_some()) {
            return;
        }
        let command = Command::SpaceAlarm {
            node: self.config.node_id,
            alarm,
        };
        match self.call_pd(&command).await {
            Some(Ok(_)) => {
                info!(
                    up = alarm.is_some(),
                    "space alarm reported to the placement driver"
                );
                self.space_alarm_reported = Some(alarm.is_some());
            }
            Some(Err(error)) => warn!(%error, "space alarm refused"),
            None => debug!("space alarm not answered"),
        }
    }

    /// PD removed this node (`ringctl remove-node`, or given up on as dead): its replicas live
    /// elsewhere now, so it stops (exit 1, with the reason) rather than serve stale copies. A PD
    /// host keeps running, since group 0's membership is static and stopping would cost the
    /// placement driver a replica; it only warns.
    pub(super) async fn removed(&mut self) -> bool {
        if self.config.hosts_pd() {
            warn!(
                "the placement driver has removed this node, but it hosts the placement driver \
                 (static membership), so it keeps running"
            );
            return true;
        }
        let reason = format!(
            "node {} was removed from the cluster by the placement driver; it no longer \
             serves. Delete its data dir before reusing the machine (under a new node id)",
            self.config.node_id.get()
        );
        warn!(%reason, "stopping the node");
        // So that a restart stops at once, and `ringctl local up` skips the node.
        if let Err(error) = crate::removed_marker::write(&self.config.data_dir, &reason) {
            warn!(%error, "cannot write the removal marker");
        }
        let _ = self.loop_tx.send(AgentCall::Fatal(reason)).await;
        false
    }
}
