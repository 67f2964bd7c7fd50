//! What idle groups cost: a cluster with many groups, no clients and no faults, run with and
//! without quiescence, counting replica ticks and Raft messages (`ringkv-sim --idle GROUPS`).

use super::World;
use super::quiet::Quiet;
use crate::checkers::Violation;
use crate::params::{Params, TICK_UNITS};
use ringkv_raft::SplitMix64;

/// Counts of one idle run, over its second half (after every group elected its leader and,
/// with quiescence, went quiet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdleReport {
    /// Groups.
    pub groups: u64,
    /// Whether quiescence was on.
    pub quiesce: bool,
    /// Replica ticks driven in the second half.
    pub ticks_run: u64,
    /// Replica ticks skipped (quiescent) in the second half.
    pub ticks_skipped: u64,
    /// Raft messages sent in the second half.
    pub messages: u64,
    /// Groups with a leader at the end.
    pub led_groups: u64,
}

impl IdleReport {
    /// Share of replica ticks skipped, 0 to 1.
    pub fn skipped_fraction(&self) -> f64 {
        let total = self.ticks_run + self.ticks_skipped;
        if total == 0 {
            return 0.0;
        }
        self.ticks_skipped as f64 / total as f64
    }
}

impl World {
    /// Runs `groups` idle groups on `nodes` nodes for `ticks` ticks.
    ///
    /// # Errors
    /// A checker's violation (the safety checkers and leader liveness run as in every seed).
    pub fn idle(
        seed: u64,
        nodes: u64,
        groups: u64,
        ticks: u64,
        quiesce: bool,
    ) -> Result<IdleReport, Violation> {
        let params = Params::idle(nodes, groups, ticks);
        let quiet = quiesce.then(Quiet::without_idle_windows);
        let mut world = Self::build(seed, None, params, SplitMix64::new(seed), quiet);
        let half = ticks / 2 * TICK_UNITS;
        let end = ticks * TICK_UNITS;
        let mut at_half = (0, 0, 0);
        while world.now < end {
            if world.now == half {
                at_half = (world.ticks_run, world.ticks_skipped, world.raft_messages);
            }
            if world.now.is_multiple_of(TICK_UNITS) {
                world.observe_liveness()?;
            }
            world.deliver_packets()?;
            world.complete_disk_writes()?;
            world.tick_nodes()?;
            world.process_readies()?;
            world.now += 1;
        }
        let led_groups = world
            .groups
            .iter()
            .filter(|g| world.leader_of(**g).is_some())
            .count() as u64;
        Ok(IdleReport {
            groups,
            quiesce,
            ticks_run: world.ticks_run - at_half.0,
            ticks_skipped: world.ticks_skipped - at_half.1,
            messages: world.raft_messages - at_half.2,
            led_groups,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 300 idle groups on 3 nodes: with quiescence every tick of the second half is skipped
    /// and no message is sent; without it every tick runs and heartbeats flow.
    #[test]
    fn idle_groups_cost_no_ticks_and_no_messages_when_quiescent() {
        let quiet = World::idle(7, 3, 300, 200, true).unwrap();
        assert_eq!(quiet.led_groups, 300);
        assert_eq!(quiet.ticks_run, 0, "{quiet:?}");
        assert_eq!(quiet.messages, 0, "{quiet:?}");
        assert_eq!(quiet.ticks_skipped, 300 * 3 * 100);
        let busy = World::idle(7, 3, 300, 200, false).unwrap();
        assert_eq!(busy.led_groups, 300);
        assert_eq!(busy.ticks_skipped, 0);
        assert_eq!(busy.ticks_run, 300 * 3 * 100);
        assert!(busy.messages > 300 * 100, "{busy:?}");
    }
}
