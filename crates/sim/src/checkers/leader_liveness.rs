//! Leader liveness: a group whose voters include a majority that is up and connected (every
//! pair can talk both ways) must not stay without a leader among them for long. Raft promises
//! this only with timing assumptions, so the bound is generous (many election timeouts); what
//! it catches is a group that waits for something that never comes, such as followers that
//! stay quiescent after their leader died (the planted bug
//! `quiescent-follower-ignores-liveness`).

use super::Violation;
use ringkv_types::ShardId;
use std::collections::BTreeMap;

/// Consecutive ticks a group may have a connected majority and no leader in it: 25 election
/// timeouts. Calibrated on correct runs: over seeds 0-599 the longest such stretch was 131
/// ticks with quiescence and 108 without (slow links where a 3-of-5 majority needs several
/// pre-vote rounds, drops, split votes). `ringkv-sim` prints the longest stretch of a run.
pub const LEADERLESS_TICKS_MAX: u64 = 250;

/// What the world saw of one group at one tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupLiveness {
    /// No majority of voters is up and connected: nothing is owed.
    NoConnectedMajority,
    /// A connected majority exists and one of its members leads.
    Led,
    /// A connected majority exists and none of its members leads.
    Leaderless,
}

/// Streaks of leaderless ticks per group.
#[derive(Debug, Default)]
pub struct LeaderLiveness {
    streaks: BTreeMap<ShardId, u64>,
    /// The longest streak seen (for calibrating the bound).
    pub longest: u64,
}

impl LeaderLiveness {
    /// Records `group`'s state at tick `tick`.
    ///
    /// # Errors
    /// When the group has been leaderless with a connected majority for more than
    /// [`LEADERLESS_TICKS_MAX`] ticks.
    pub fn observe(
        &mut self,
        group: ShardId,
        tick: u64,
        state: GroupLiveness,
    ) -> Result<(), Violation> {
        let streak = self.streaks.entry(group).or_insert(0);
        if state == GroupLiveness::Leaderless {
            *streak += 1;
        } else {
            *streak = 0;
        }
        self.longest = self.longest.max(*streak);
        if *streak > LEADERLESS_TICKS_MAX {
            return Err(Violation {
                check: "leader liveness",
                detail: format!(
                    "group {group}: no leader for {streak} ticks (up to tick {tick}) while a \
                     majority of its voters was up and connected"
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_leaderless_streak_is_reported_and_a_leader_resets_it() {
        let mut checker = LeaderLiveness::default();
        let group = ShardId(1);
        for tick in 0..LEADERLESS_TICKS_MAX {
            checker
                .observe(group, tick, GroupLiveness::Leaderless)
                .unwrap();
        }
        checker.observe(group, 100, GroupLiveness::Led).unwrap();
        for tick in 0..LEADERLESS_TICKS_MAX {
            checker
                .observe(group, tick, GroupLiveness::Leaderless)
                .unwrap();
        }
        checker
            .observe(group, 300, GroupLiveness::NoConnectedMajority)
            .unwrap();
        for tick in 0..LEADERLESS_TICKS_MAX {
            checker
                .observe(group, tick, GroupLiveness::Leaderless)
                .unwrap();
        }
        let violation = checker
            .observe(group, 500, GroupLiveness::Leaderless)
            .unwrap_err();
        assert_eq!(violation.check, "leader liveness");
    }
}
