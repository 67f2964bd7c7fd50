//! Scheduler switches and limits. Part of the replicated state: changed only by commands.

use super::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// One scheduler, for enabling and disabling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SchedulerKind {
    /// Rebuild replicas of dead nodes; remove orphan learners and excess voters.
    Repair,
    /// Even out replica counts across `Up` nodes.
    BalanceReplicas,
    /// Even out leader counts across `Up` nodes.
    BalanceLeaders,
    /// Move every replica off `Draining` nodes.
    Drain,
    /// Split shards that are too large or too hot.
    Split,
}

impl SchedulerKind {
    /// Every scheduler, in priority order: the first has the first pick of the operator budget.
    pub const ALL: [SchedulerKind; 5] = [
        SchedulerKind::Repair,
        SchedulerKind::Drain,
        SchedulerKind::Split,
        SchedulerKind::BalanceReplicas,
        SchedulerKind::BalanceLeaders,
    ];
}

/// Switches and limits of the schedulers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Voters per shard.
    pub replication_factor: u32,
    /// Replica repair on.
    pub repair: bool,
    /// Replica balancing on.
    pub balance_replicas: bool,
    /// Leader balancing on.
    pub balance_leaders: bool,
    /// Draining on. Off pauses every drain without forgetting which nodes are draining.
    pub drain: bool,
    /// Automatic splits on (admin splits work either way).
    pub split: bool,
    /// Operators in flight across the cluster. More moves data faster but competes with client
    /// traffic for disk and network; admin operators count too but are never refused below
    /// twice this limit.
    pub max_operators: u32,
    /// Snapshots (added learners) a node may receive at once. Each snapshot streams a whole
    /// shard; 2 keeps a 1 Gbit/s link busy with 64 MiB shards without starving Raft traffic.
    pub max_snapshots_per_node: u32,
    /// Snapshot bandwidth per node in bytes per second. Enforced by the sending node's snapshot
    /// stream; PD only carries the value to the nodes (heartbeat answers). 0 = unlimited.
    pub max_snapshot_bytes_per_sec: u64,
    /// A node with no heartbeat for this long (log time) is `Down`. Should be several heartbeat
    /// intervals, so one lost heartbeat does not flap the state.
    pub heartbeat_timeout_ms: u64,
    /// A node `Down` for this long is dead: its replicas are rebuilt elsewhere. Longer avoids
    /// copying whole shards for a reboot; shorter shortens the time a shard runs one failure
    /// away from unavailability.
    pub max_down_time_ms: u64,
    /// An operator step that makes no progress for this long is cancelled and rolled back.
    pub operator_step_timeout_ms: u64,
    /// Split shards larger than this many bytes. 0 disables the size trigger.
    pub split_size_bytes: u64,
    /// Split shards with more writes plus reads per second than this. 0 disables the load
    /// trigger.
    pub split_load_per_sec: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            replication_factor: 3,
            repair: true,
            balance_replicas: true,
            balance_leaders: true,
            drain: true,
            split: true,
            max_operators: 16,
            max_snapshots_per_node: 2,
            max_snapshot_bytes_per_sec: 64 << 20,
            heartbeat_timeout_ms: 10_000,
            max_down_time_ms: 30 * 60 * 1000,
            operator_step_timeout_ms: 10 * 60 * 1000,
            split_size_bytes: 512 << 20,
            split_load_per_sec: 0,
        }
    }
}

impl Settings {
    /// Whether `kind` is enabled.
    pub fn enabled(&self, kind: SchedulerKind) -> bool {
        match kind {
            SchedulerKind::Repair => self.repair,
            SchedulerKind::BalanceReplicas => self.balance_replicas,
            SchedulerKind::BalanceLeaders => self.balance_leaders,
            SchedulerKind::Drain => self.drain,
            SchedulerKind::Split => self.split,
        }
    }

    /// Turns `kind` on or off.
    pub fn set_enabled(&mut self, kind: SchedulerKind, enabled: bool) {
        let flag = match kind {
            SchedulerKind::Repair => &mut self.repair,
            SchedulerKind::BalanceReplicas => &mut self.balance_replicas,
            SchedulerKind::BalanceLeaders => &mut self.balance_leaders,
            SchedulerKind::Drain => &mut self.drain,
            SchedulerKind::Split => &mut self.split,
        };
        *flag = enabled;
    }

    /// Checks every limit.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        let checks: [(bool, &'static str, &'static str); 6] = [
            (
                (1..=7).contains(&self.replication_factor),
                "replication_factor",
                "1 to 7",
            ),
            (
                (1..=1024).contains(&self.max_operators),
                "max_operators",
                "1 to 1024",
            ),
            (
                (1..=64).contains(&self.max_snapshots_per_node),
                "max_snapshots_per_node",
                "1 to 64",
            ),
            (
                self.heartbeat_timeout_ms > 0,
                "heartbeat_timeout_ms",
                "above 0",
            ),
            (
                self.max_down_time_ms >= self.heartbeat_timeout_ms,
                "max_down_time_ms",
                "at least heartbeat_timeout_ms",
            ),
            (
                self.operator_step_timeout_ms > 0,
                "operator_step_timeout_ms",
                "above 0",
            ),
        ];
        for (ok, name, reason) in checks {
            if !ok {
                return Err(Error::InvalidSetting {
                    name: name.into(),
                    reason: reason.into(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_switches_toggle() {
        let mut settings = Settings::default();
        assert_eq!(settings.validate(), Ok(()));
        for kind in SchedulerKind::ALL {
            assert!(settings.enabled(kind));
            settings.set_enabled(kind, false);
            assert!(!settings.enabled(kind));
        }
    }

    #[test]
    fn out_of_range_settings_are_named() {
        type Mutation = fn(&mut Settings);
        let cases: [(&str, Mutation); 4] = [
            ("replication_factor", |s| s.replication_factor = 0),
            ("max_operators", |s| s.max_operators = 0),
            ("max_down_time_ms", |s| s.max_down_time_ms = 1),
            ("operator_step_timeout_ms", |s| {
                s.operator_step_timeout_ms = 0
            }),
        ];
        for (name, mutate) in cases {
            let mut settings = Settings::default();
            mutate(&mut settings);
            assert!(
                matches!(settings.validate(), Err(Error::InvalidSetting { name: n, .. }) if n == name),
                "{name}"
            );
        }
    }
}
