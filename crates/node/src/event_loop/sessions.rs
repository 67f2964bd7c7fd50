//! Client session expiry (exactly-once records bounded in log time).
//!
//! Every write carries its leader's clock (`LogCommand::KvAt`), which the store records as the
//! session's last write time. Now and then a leader whose shard may hold sessions proposes
//! `LogCommand::ExpireSessions { now_ms, idle_ms }`; every replica applies it at the same index
//! to the same table, dropping the same sessions, so the tables stay equal whatever the
//! replicas' own clocks say. A client retry that arrives after its session expired is applied
//! again: the documented limit of exactly-once (docs/node.md).

use super::EventLoop;
use crate::error::Result;
use crate::log_command::LogCommand;
use std::time::Duration;

/// The pause between a leader's expiry passes: a quarter of the idle limit, at least 1 s and
/// at most 5 minutes (so a session lives at most its limit plus one pause).
pub(super) fn expiry_interval(idle_ms: u64) -> Duration {
    Duration::from_millis((idle_ms / 4).clamp(1_000, 300_000))
}

impl EventLoop {
    /// Proposes an expiry pass in every shard this node leads that may hold sessions and has
    /// not had one for [`expiry_interval`]. A new leader waits one interval first.
    pub(super) fn propose_expiries(&mut self) -> Result<()> {
        let idle_ms = self.config.limits.session_idle_ms;
        if idle_ms == 0 {
            return Ok(());
        }
        let interval = expiry_interval(idle_ms);
        let now = self.mono_now();
        for (shard, group) in &mut self.core.groups {
            if !group.initialized || !group.raw.is_leader() {
                continue;
            }
            let Some(data) = group.machine.data_mut() else {
                continue;
            };
            if !data.sessions_live {
                continue;
            }
            match data.expiry_proposed {
                Some(at) if now.since(at) >= interval => {}
                Some(_) => continue,
                None => {
                    data.expiry_proposed = Some(now);
                    continue;
                }
            }
            data.expiry_proposed = Some(now);
            let data = LogCommand::ExpireSessions {
                now_ms: group.next_stamp(crate::pd_host::wall_clock_ms()),
                idle_ms,
            }
            .encode()?;
            // Refused proposals (a leadership change, a full log) wait for the next pass.
            if group.raw.propose(data).is_ok() {
                self.metrics.raft_proposals.inc();
                self.core.dirty.insert(*shard);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_come_a_quarter_of_the_limit_apart_within_bounds() {
        assert_eq!(expiry_interval(3_600_000), Duration::from_secs(300));
        assert_eq!(expiry_interval(60_000), Duration::from_secs(15));
        assert_eq!(expiry_interval(2_000), Duration::from_secs(1));
    }
}
