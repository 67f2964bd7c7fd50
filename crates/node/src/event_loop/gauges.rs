//! Gauges (`/metrics`) and the health snapshot (`/readyz`), refreshed every `SLOW_TICKS`
//! timer turns (they loop over every local group).

use super::EventLoop;
use ringkv_raft::Role;
use ringkv_types::NodeId;
use std::collections::BTreeMap;

/// Every operator kind, for metrics that pre-create a series per kind.
const OPERATOR_KINDS: [ringkv_pd::OperatorKind; 7] = [
    ringkv_pd::OperatorKind::Repair,
    ringkv_pd::OperatorKind::Drain,
    ringkv_pd::OperatorKind::Split,
    ringkv_pd::OperatorKind::BalanceReplicas,
    ringkv_pd::OperatorKind::BalanceLeaders,
    ringkv_pd::OperatorKind::Admin,
    ringkv_pd::OperatorKind::Rollback,
];

fn operator_kind_label(kind: ringkv_pd::OperatorKind) -> &'static str {
    use ringkv_pd::OperatorKind as K;
    match kind {
        K::Repair => "repair",
        K::Drain => "drain",
        K::Split => "split",
        K::BalanceReplicas => "balance_replicas",
        K::BalanceLeaders => "balance_leaders",
        K::Admin => "admin",
        K::Rollback => "rollback",
    }
}

impl EventLoop {
    /// Sets the gauges: replicas by role, commit and apply lag, PD's operators.
    pub(super) fn update_gauges(&self) {
        let metrics = &self.metrics;
        let (mut leaders, mut followers, mut candidates, mut learners) = (0, 0, 0, 0);
        let (mut commit_lag, mut apply_lag) = (0u64, 0u64);
        for group in self.core.groups.values() {
            if !group.initialized {
                continue;
            }
            let is_learner =
                group.descriptor.replicas.iter().any(|r| {
                    r.member == group.member && r.role == ringkv_types::ReplicaRole::Learner
                });
            match group.role {
                Role::Leader => leaders += 1,
                Role::Follower if is_learner => learners += 1,
                Role::Follower => followers += 1,
                _ => candidates += 1,
            }
            let status = group.raw.status();
            commit_lag += status.last_index.0.saturating_sub(status.committed.0);
            apply_lag += status.committed.0.saturating_sub(group.applied.0);
        }
        for (role, count) in [
            ("leader", leaders),
            ("follower", followers),
            ("candidate", candidates),
            ("learner", learners),
        ] {
            metrics
                .raft_shards
                .get_or_create(&[("role", role)])
                .set(count);
        }
        let quiescent = self.core.groups.values().filter(|g| g.raw.is_quiescent());
        metrics
            .raft_shards_quiescent
            .set(i64::try_from(quiescent.count()).unwrap_or(i64::MAX));
        metrics
            .peer_nodes_down
            .set(i64::try_from(self.liveness.down_count()).unwrap_or(i64::MAX));
        metrics
            .raft_commit_lag
            .set(i64::try_from(commit_lag).unwrap_or(i64::MAX));
        metrics
            .raft_apply_lag
            .set(i64::try_from(apply_lag).unwrap_or(i64::MAX));
        if let Ok(space) = self.store.space(false) {
            metrics.storage_space_alarm.set(i64::from(space.alarm));
            metrics
                .storage_free_bytes
                .set(i64::try_from(space.free_bytes).unwrap_or(i64::MAX));
        }
        if let Some(state) = self.pd_view() {
            for kind in OPERATOR_KINDS {
                for end in ringkv_pd::OperatorEnd::ALL {
                    let count = state.operator_counts.of(kind, end);
                    metrics
                        .pd_operators
                        .get_or_create(&[
                            ("kind", operator_kind_label(kind)),
                            ("result", end.label()),
                        ])
                        .set(i64::try_from(count).unwrap_or(i64::MAX));
                }
            }
            let mut in_flight: BTreeMap<&'static str, i64> = OPERATOR_KINDS
                .into_iter()
                .map(|kind| (operator_kind_label(kind), 0))
                .collect();
            for operator in state.operators.values() {
                *in_flight
                    .entry(operator_kind_label(operator.kind))
                    .or_default() += 1;
            }
            for (kind, count) in in_flight {
                metrics
                    .pd_operators_in_flight
                    .get_or_create(&[("kind", kind)])
                    .set(count);
            }
            for info in state.nodes.values() {
                if info.state == ringkv_pd::NodeState::Removed {
                    continue;
                }
                let node = [("node", info.id.get().to_string())];
                let stats = &info.stats;
                metrics
                    .pd_node_replicas
                    .get_or_create(&node)
                    .set(i64::try_from(stats.replicas).unwrap_or(i64::MAX));
                metrics
                    .pd_node_leaders
                    .get_or_create(&node)
                    .set(i64::try_from(stats.leaders).unwrap_or(i64::MAX));
            }
        }
    }

    /// The health snapshot `/readyz` reads.
    pub(super) fn health_snapshot(&self) -> crate::health::HealthSnapshot {
        let me = self.config.node_id;
        let joined = self.pd_view().is_some_and(|state| {
            state
                .nodes
                .get(&me)
                .is_some_and(|info| info.state != ringkv_pd::NodeState::Removed)
        });
        let map_fresh = match self.pd_host() {
            Some(_) => self.pd_leader().is_some(),
            None => {
                let pd = &self.config.pd;
                let window = std::time::Duration::from_millis(
                    3 * pd.heartbeat_interval_ms + pd.request_timeout_ms,
                );
                self.pd_cache_at.is_some_and(|at| at.elapsed() <= window)
            }
        };
        let mut snapshot = crate::health::HealthSnapshot {
            started: true,
            joined,
            map_fresh,
            pd_leader: self.pd_leader().map(NodeId::get),
            ..crate::health::HealthSnapshot::default()
        };
        for (shard, group) in &self.core.groups {
            if !group.initialized {
                continue;
            }
            snapshot.groups += 1;
            if group.raw.is_leader() {
                snapshot.leaders += 1;
            }
            if group.leader_hint().is_none() {
                snapshot.leaderless_count += 1;
                if snapshot.leaderless.len() < crate::health::LEADERLESS_LISTED_MAX {
                    snapshot.leaderless.push(shard.get());
                }
            }
        }
        snapshot
    }
}
